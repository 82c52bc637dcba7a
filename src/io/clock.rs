//! Time as storage and partitions see it: [`Clock`], real or simulated.
//!
//! Owns: "what time is it" for decisions that depend on time (retention by
//! time, the age of the active segment that triggers a roll by
//! `segment_ms`, long-poll and produce-ack deadlines, connection idle,
//! frame-read and close-drain deadlines), and sleeping until such a
//! deadline ([`Clock::sleep_until`], [`Clock::sleep_once_until`]: on the
//! real clock, `crate::timer`'s per-thread wheel or its one-shot timer; on a
//! simulated clock, a future woken by [`Clock::advance`]). Measurements for
//! logs and metrics (how long recovery took) and periodic background ticks
//! (flush interval, retention checks) do not go through it.
//!
//! Invariants: a clock never goes backwards, real or simulated; a simulated
//! clock moves only when a test calls [`Clock::advance`]; a sleep resolves
//! no earlier than its instant on its own clock, and a simulated sleep
//! resolves once the clock is advanced past it, without real waiting.
//!
//! Must not know: storage, partitions, files, or the executor (beyond the
//! real sleep handed to `crate::timer`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
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
    /// Tasks sleeping on this clock, woken (all) by every advance. Tests
    /// only: the real clock sleeps on `crate::timer`, with no lock.
    sleepers: Mutex<Vec<Waker>>,
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
            sleepers: Mutex::new(Vec::new()),
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
                let woken =
                    std::mem::take(&mut *s.sleepers.lock().unwrap_or_else(|p| p.into_inner()));
                for w in woken {
                    w.wake();
                }
            }
        }
    }

    /// Resolves at `at` on this clock (at once if it has passed). Real:
    /// `crate::timer::sleep_until` (many deadlines on one timer).
    pub fn sleep_until(&self, at: Instant) -> Sleep {
        match self {
            Clock::Real => Sleep::Wheel(crate::timer::sleep_until(at)),
            Clock::Sim(s) => Sleep::Sim(s.clone(), at),
        }
    }

    /// Resolves `d` from now on this clock.
    pub fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(self.now() + d)
    }

    /// [`Clock::sleep_until`] for a sleep raced against a busy future (real:
    /// `crate::timer::sleep_once_until`, one reactor entry whatever the
    /// number of polls).
    pub fn sleep_once_until(&self, at: Instant) -> Sleep {
        match self {
            Clock::Real => Sleep::Once(crate::timer::sleep_once_until(at)),
            Clock::Sim(s) => Sleep::Sim(s.clone(), at),
        }
    }
}

/// A sleep on a [`Clock`] (see [`Clock::sleep_until`]).
pub enum Sleep {
    Wheel(crate::timer::Deadline),
    Once(crate::timer::Once),
    Sim(Arc<SimClock>, Instant),
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Sleep::Wheel(d) => Pin::new(d).poll(cx),
            Sleep::Once(o) => Pin::new(o).poll(cx),
            Sleep::Sim(s, at) => {
                let mut sleepers = s.sleepers.lock().unwrap_or_else(|p| p.into_inner());
                // Checked under the lock: an advance either happened before
                // (seen here) or wakes the waker registered here.
                let now = s.start + Duration::from_nanos(s.offset_ns.load(Ordering::Relaxed));
                if now >= *at {
                    return Poll::Ready(());
                }
                sleepers.push(cx.waker().clone());
                Poll::Pending
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

    #[test]
    fn sim_sleep_resolves_when_advanced_past_its_instant() {
        let c = Clock::sim(0);
        let mut sleep = Box::pin(c.sleep(Duration::from_secs(30)));
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        c.advance(Duration::from_secs(29));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        c.advance(Duration::from_secs(1));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
    }
}
