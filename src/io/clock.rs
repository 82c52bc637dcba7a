//! Time as storage and partitions see it: [`Clock`], real or simulated.
//!
//! Owns: "what time is it" for decisions that depend on time (retention by
//! time, the age of the active segment that triggers a roll by
//! `segment_ms`). Measurements for logs and metrics (how long recovery took)
//! and sleeps (`crate::timer`) do not go through it.
//!
//! Invariants: a clock never goes backwards, real or simulated; a simulated
//! clock moves only when a test calls [`Clock::advance`].
//!
//! Must not know: storage, partitions, files, or the executor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where time comes from. Cheap to clone; `Send` so the registry's blocking
/// work can carry it.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The operating system's clocks.
    #[default]
    Real,
    /// A clock that only moves when told to (tests).
    Sim(Arc<SimClock>),
}

/// A simulated clock: a fixed start plus an offset a test advances.
#[derive(Debug)]
pub struct SimClock {
    start: Instant,
    start_wall_ms: i64,
    offset_ns: AtomicU64,
}

fn real_wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

impl Clock {
    /// A simulated clock whose wall time starts at `start_wall_ms`.
    pub fn sim(start_wall_ms: i64) -> Clock {
        Clock::Sim(Arc::new(SimClock {
            start: Instant::now(),
            start_wall_ms,
            offset_ns: AtomicU64::new(0),
        }))
    }

    /// Monotonic now.
    pub fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Sim(s) => s.start + Duration::from_nanos(s.offset_ns.load(Ordering::Relaxed)),
        }
    }

    /// Wall-clock now in milliseconds since the Unix epoch (0 if the system
    /// clock is before the epoch).
    pub fn wall_ms(&self) -> i64 {
        match self {
            Clock::Real => real_wall_ms(),
            Clock::Sim(s) => s
                .start_wall_ms
                .saturating_add((s.offset_ns.load(Ordering::Relaxed) / 1_000_000) as i64),
        }
    }

    /// Time since `earlier` (zero if `earlier` is in the future).
    pub fn elapsed(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }

    /// Moves a simulated clock forward; a real clock cannot be moved.
    pub fn advance(&self, by: Duration) {
        match self {
            Clock::Real => panic!("Clock::advance on the real clock"),
            Clock::Sim(s) => {
                let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
                s.offset_ns.fetch_add(ns, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_clock_moves_only_when_advanced() {
        let c = Clock::sim(1_000);
        let (t0, w0) = (c.now(), c.wall_ms());
        assert_eq!(w0, 1_000);
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.wall_ms(), 1_250);
        assert_eq!(c.elapsed(t0), Duration::from_millis(250));
    }
}
