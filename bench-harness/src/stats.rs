//! Measurements: latency histograms, per-second intervals, their merge.
//!
//! Each executor owns one [`Recorder`] (single-threaded, `RefCell`), records
//! into the current one-second interval, and at every tick hands the
//! finished [`Interval`] to the aggregator on the main thread, which merges
//! the executors' intervals second by second ([`Aggregate`]).
//!
//! Invariants:
//! - Latencies are microseconds (values below 1 µs are recorded as 1) in
//!   HdrHistograms with 3 significant digits that grow as needed, so no
//!   value is ever dropped or clamped ([`record`]).
//! - A value belongs to the second in which it completed (ack or consume).
//!   Seconds before `warmup_s` never reach a total; publish and e2e latency
//!   totals include every second from the end of warm-up on (also the
//!   drain after the producers stopped: a late ack is a real latency),
//!   throughput counts only the measured window `[warmup, warmup + duration)`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant digits of every histogram.
pub const HIST_SIGFIG: u8 = 3;
/// Error messages kept per interval (and in the result).
pub const MAX_ERROR_SAMPLES: usize = 10;

/// A new auto-resizing histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    // 3 significant digits is always a valid precision (1..=5).
    Histogram::new(HIST_SIGFIG).unwrap_or_else(|_| unreachable!("sigfig 3 is valid"))
}

/// Converts between `Instant` and wall-clock nanoseconds since the Unix
/// epoch, from one anchor taken at startup (stamps in messages are wall
/// clock so another process can read them).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant0: Instant,
    epoch0_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let instant0 = Instant::now();
        let epoch0_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            instant0,
            epoch0_ns,
        }
    }

    /// Wall-clock ns of `t`.
    pub fn epoch_ns(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.instant0);
        let before = self.instant0.saturating_duration_since(t);
        let add = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        let sub = u64::try_from(before.as_nanos()).unwrap_or(u64::MAX);
        self.epoch0_ns.saturating_add(add).saturating_sub(sub)
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch_ns(Instant::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Records `v` (growing the histogram as needed; only a value beyond what
/// any histogram can hold is clamped). `saturating_record` would clamp to
/// the current top instead of growing.
pub fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// A duration in whole microseconds, at least 1.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What one executor measured during one second.
#[derive(Debug)]
pub struct Interval {
    pub executor: usize,
    /// Seconds since the run's start: this interval is `[second, second+1)`.
    pub second: u64,
    pub publish: Histogram<u64>,
    /// Acknowledgement time minus the time the record was actually handed
    /// to the producer (equal to `publish` in closed loop; in open loop it
    /// leaves out the time a record waited behind the schedule).
    pub send_ack: Histogram<u64>,
    pub e2e: Histogram<u64>,
    /// Acknowledged records and their value bytes.
    pub produced_msgs: u64,
    pub produced_bytes: u64,
    /// Produce requests acknowledged (one per batch).
    pub produced_requests: u64,
    pub consumed_msgs: u64,
    pub consumed_bytes: u64,
    /// Sends the client refused, deliveries that failed, failed polls.
    pub send_errors: u64,
    pub delivery_errors: u64,
    pub consume_errors: u64,
    /// Scheduled sends never made because the run ended first (open loop).
    pub unsent_scheduled: u64,
    pub error_samples: Vec<String>,
    /// The executor's last interval: it has stopped.
    pub done: bool,
}

impl Interval {
    pub fn new(executor: usize, second: u64) -> Interval {
        Interval {
            executor,
            second,
            publish: new_histogram(),
            send_ack: new_histogram(),
            e2e: new_histogram(),
            produced_msgs: 0,
            produced_bytes: 0,
            produced_requests: 0,
            consumed_msgs: 0,
            consumed_bytes: 0,
            send_errors: 0,
            delivery_errors: 0,
            consume_errors: 0,
            unsent_scheduled: 0,
            error_samples: Vec::new(),
            done: false,
        }
    }

    pub fn errors(&self) -> u64 {
        self.send_errors + self.delivery_errors + self.consume_errors
    }

    /// Adds `other` into `self` (histograms, counters, samples).
    pub fn merge(&mut self, other: &Interval) {
        // Auto-resizing histograms of the same precision always merge.
        let _ = self.publish.add(&other.publish);
        let _ = self.send_ack.add(&other.send_ack);
        let _ = self.e2e.add(&other.e2e);
        self.produced_msgs += other.produced_msgs;
        self.produced_bytes += other.produced_bytes;
        self.produced_requests += other.produced_requests;
        self.consumed_msgs += other.consumed_msgs;
        self.consumed_bytes += other.consumed_bytes;
        self.send_errors += other.send_errors;
        self.delivery_errors += other.delivery_errors;
        self.consume_errors += other.consume_errors;
        self.unsent_scheduled += other.unsent_scheduled;
        for s in &other.error_samples {
            if self.error_samples.len() < MAX_ERROR_SAMPLES {
                self.error_samples.push(s.clone());
            }
        }
    }
}

/// Which kind of failure an error sample is.
#[derive(Debug, Clone, Copy)]
pub enum ErrorKind {
    Send,
    Delivery,
    Consume,
}

/// One executor's recorder (lives in an `Rc<RefCell<_>>`).
#[derive(Debug)]
pub struct Recorder {
    current: Interval,
}

impl Recorder {
    pub fn new(executor: usize) -> Recorder {
        Recorder {
            current: Interval::new(executor, 0),
        }
    }

    /// One acknowledged record: `latency` from its intended send time,
    /// `send_to_ack` from when it was handed to the producer.
    pub fn publish(&mut self, latency: Duration, send_to_ack: Duration, bytes: usize) {
        record(&mut self.current.publish, micros(latency));
        record(&mut self.current.send_ack, micros(send_to_ack));
        self.current.produced_msgs += 1;
        self.current.produced_bytes += bytes as u64;
    }

    /// `n` more produce requests acknowledged.
    pub fn requests(&mut self, n: u64) {
        self.current.produced_requests += n;
    }

    pub fn e2e_us(&mut self, latency_us: u64) {
        record(&mut self.current.e2e, latency_us.max(1));
    }

    pub fn consumed(&mut self, msgs: u64, bytes: u64) {
        self.current.consumed_msgs += msgs;
        self.current.consumed_bytes += bytes;
    }

    pub fn unsent(&mut self, n: u64) {
        self.current.unsent_scheduled += n;
    }

    pub fn error(&mut self, kind: ErrorKind, what: impl FnOnce() -> String) {
        match kind {
            ErrorKind::Send => self.current.send_errors += 1,
            ErrorKind::Delivery => self.current.delivery_errors += 1,
            ErrorKind::Consume => self.current.consume_errors += 1,
        }
        if self.current.error_samples.len() < MAX_ERROR_SAMPLES {
            self.current.error_samples.push(what());
        }
    }

    /// Ends the current interval as `second` and starts the next one.
    pub fn take(&mut self, second: u64, done: bool) -> Interval {
        let next = Interval::new(self.current.executor, second + 1);
        let mut out = std::mem::replace(&mut self.current, next);
        out.second = second;
        out.done = done;
        out
    }
}

/// Latency figures of one histogram, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    /// `[percentile, value_us]` pairs from 0 to 99.999 (the plot's curve).
    pub spectrum: Vec<[f64; 2]>,
}

/// Percentiles at which the spectrum is sampled.
const SPECTRUM: [f64; 19] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.975, 99.99,
    99.995, 99.999, 99.9995, 99.9999,
];

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |p: f64| h.value_at_quantile(p);
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max(),
            spectrum: SPECTRUM
                .iter()
                .map(|p| [*p, h.value_at_percentile(*p) as f64])
                .collect(),
        }
    }
}

/// Which part of the run a second belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Warmup,
    Measure,
    /// After the producers stopped (late acks, consumers catching up).
    Drain,
}

/// One point of the per-second series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondPoint {
    pub t_s: u64,
    pub phase: Phase,
    pub produced_msgs: u64,
    pub produced_mb: f64,
    pub consumed_msgs: u64,
    pub consumed_mb: f64,
    pub errors: u64,
    pub publish_p50_us: u64,
    pub publish_p99_us: u64,
    pub publish_max_us: u64,
    /// p99 from the actual send to the acknowledgement (0 in results
    /// written before it existed).
    #[serde(default)]
    pub send_ack_p99_us: u64,
    pub e2e_p50_us: u64,
    pub e2e_p99_us: u64,
    pub e2e_max_us: u64,
    /// CPU cores the broker used this second (with `--broker-pid`).
    pub broker_cpu_cores: Option<f64>,
    /// CPU cores this load generator used this second.
    pub bench_cpu_cores: Option<f64>,
}

/// The whole run, merged over executors and seconds.
#[derive(Debug)]
pub struct Aggregate {
    warmup_s: u64,
    measure_end_s: u64,
    /// Latency and errors of every second past the warm-up.
    pub totals: Interval,
    /// Produced / consumed counts of the measured window only.
    pub window: Interval,
    pub series: Vec<SecondPoint>,
}

impl Aggregate {
    /// `warmup_s` is whole seconds (the runner rounds it up); the measured
    /// window is the next `ceil(duration_s)` seconds.
    pub fn new(warmup_s: u64, duration_s: f64) -> Aggregate {
        Aggregate {
            warmup_s,
            measure_end_s: warmup_s + duration_s.ceil() as u64,
            totals: Interval::new(usize::MAX, 0),
            window: Interval::new(usize::MAX, 0),
            series: Vec::new(),
        }
    }

    pub fn phase(&self, second: u64) -> Phase {
        if second < self.warmup_s {
            Phase::Warmup
        } else if second < self.measure_end_s {
            Phase::Measure
        } else {
            Phase::Drain
        }
    }

    /// Adds one second, merged over executors (seconds arrive in order),
    /// with the CPU use sampled for it.
    pub fn add_second(&mut self, merged: &Interval, cpu: (Option<f64>, Option<f64>)) {
        let phase = self.phase(merged.second);
        let p = Percentiles::of(&merged.publish);
        let e = Percentiles::of(&merged.e2e);
        let sa = Percentiles::of(&merged.send_ack);
        self.series.push(SecondPoint {
            t_s: merged.second,
            phase,
            produced_msgs: merged.produced_msgs,
            produced_mb: merged.produced_bytes as f64 / 1e6,
            consumed_msgs: merged.consumed_msgs,
            consumed_mb: merged.consumed_bytes as f64 / 1e6,
            errors: merged.errors(),
            publish_p50_us: p.p50,
            publish_p99_us: p.p99,
            publish_max_us: p.max,
            send_ack_p99_us: sa.p99,
            e2e_p50_us: e.p50,
            e2e_p99_us: e.p99,
            e2e_max_us: e.max,
            broker_cpu_cores: cpu.0,
            bench_cpu_cores: cpu.1,
        });
        match phase {
            Phase::Warmup => {}
            Phase::Measure => {
                self.totals.merge(merged);
                self.window.merge(merged);
            }
            Phase::Drain => self.totals.merge(merged),
        }
    }

    /// Mean CPU cores over the measured seconds: (broker, this process).
    pub fn mean_cpu(&self) -> (Option<f64>, Option<f64>) {
        let mean = |f: &dyn Fn(&SecondPoint) -> Option<f64>| {
            let v: Vec<f64> = self
                .series
                .iter()
                .filter(|p| p.phase == Phase::Measure)
                .filter_map(f)
                .collect();
            (!v.is_empty())
                .then(|| (v.iter().sum::<f64>() / v.len() as f64 * 100.0).round() / 100.0)
        };
        (mean(&|p| p.broker_cpu_cores), mean(&|p| p.bench_cpu_cores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_intervals_and_phases() {
        let mut r = Recorder::new(0);
        r.publish(Duration::from_micros(100), Duration::from_micros(40), 10);
        r.publish(Duration::from_nanos(10), Duration::from_nanos(10), 10);
        r.error(ErrorKind::Send, || "x".into());
        r.requests(2);
        let a = r.take(0, false);
        assert_eq!((a.second, a.produced_msgs, a.errors()), (0, 2, 1));
        assert_eq!(a.produced_requests, 2);
        assert_eq!(a.publish.min(), 1);
        assert_eq!((a.send_ack.len(), a.send_ack.max()), (2, 40));
        r.e2e_us(5);
        let b = r.take(1, true);
        assert!(b.done && b.publish.is_empty() && b.e2e.len() == 1);

        let mut agg = Aggregate::new(1, 2.0);
        assert_eq!(agg.phase(0), Phase::Warmup);
        assert_eq!(agg.phase(1), Phase::Measure);
        assert_eq!(agg.phase(2), Phase::Measure);
        assert_eq!(agg.phase(3), Phase::Drain);
        agg.add_second(&a, (None, None));
        assert_eq!(agg.totals.produced_msgs, 0, "warm-up is excluded");
        let mut c = Interval::new(0, 1);
        record(&mut c.publish, 7);
        c.produced_msgs = 1;
        c.produced_requests = 1;
        agg.add_second(&c, (None, None));
        let mut d = Interval::new(0, 3);
        record(&mut d.publish, 2_000);
        d.produced_msgs = 1;
        d.produced_requests = 1;
        agg.add_second(&d, (None, None));
        assert_eq!(agg.totals.publish.len(), 2, "drain latency counts");
        assert_eq!(agg.window.produced_msgs, 1, "drain throughput does not");
        assert_eq!(agg.window.produced_requests, 1, "nor do drain requests");
        assert_eq!(agg.series.len(), 3);
        let p = Percentiles::of(&agg.totals.publish);
        assert_eq!((p.count, p.max), (2, 2_000));
    }

    #[test]
    fn clock_round_trip() {
        let c = Clock::new();
        let t = Instant::now();
        let later = t + Duration::from_millis(5);
        assert_eq!(c.epoch_ns(later) - c.epoch_ns(t), 5_000_000);
    }
}
