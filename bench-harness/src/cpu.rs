//! CPU time of the broker process (`--broker-pid`) and of this load
//! generator, read from /proc/PID/stat, so a result can say whether the
//! broker or the generator ran out of CPU.
//!
//! Invariant: best effort; a process that cannot be read gives `None`,
//! never an error.

use std::time::Instant;

/// Clock ticks per second of /proc's utime/stime.
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid` (or of this process for `None`), in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may
    // contain spaces: state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s())
}

/// Samples CPU use of the broker and of this process between calls.
pub struct CpuSampler {
    broker_pid: Option<u32>,
    last: Option<(Instant, Option<f64>, Option<f64>)>,
}

impl CpuSampler {
    pub fn new(broker_pid: Option<u32>) -> CpuSampler {
        let mut s = CpuSampler {
            broker_pid,
            last: None,
        };
        s.sample();
        s
    }

    /// Cores used since the previous call: (broker, this process).
    pub fn sample(&mut self) -> (Option<f64>, Option<f64>) {
        let now = Instant::now();
        let broker = self.broker_pid.and_then(|p| cpu_seconds(Some(p)));
        let me = cpu_seconds(None);
        let out = match self.last {
            Some((t, b0, m0)) => {
                let dt = now.saturating_duration_since(t).as_secs_f64();
                let rate = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) if dt > 0.0 => Some(((b - a) / dt * 100.0).round() / 100.0),
                    _ => None,
                };
                (rate(b0, broker), rate(m0, me))
            }
            None => (None, None),
        };
        self.last = Some((now, broker, me));
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_cpu_time() {
        assert!(super::cpu_seconds(None).is_some());
        assert!(super::cpu_seconds(Some(u32::MAX)).is_none());
    }
}
