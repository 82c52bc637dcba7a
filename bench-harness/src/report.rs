//! Results: the JSON result file and the terminal table.
//!
//! Invariants: [`BenchResult`] always has `throughput.{msgs_per_s,mb_per_s}`,
//! `publish_latency_us` and `e2e_latency_us` (count 0 when the mode does not
//! measure it), `errors`, the per-second `series`, the full `workload` and
//! the `machine`; it round-trips through serde so `plot` can read it back.
//! MB is 10^6 bytes of message value (keys and framing excluded).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::limits::LimitsResult;
use crate::machine::MachineInfo;
use crate::runner::RunOutcome;
use crate::stats::{Interval, Percentiles, SecondPoint};
use crate::workload::{Mode, Workload};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// Records and value bytes counted in the measured window.
    pub msgs: u64,
    pub bytes: u64,
    pub window_s: f64,
}

impl Throughput {
    fn of(msgs: u64, bytes: u64, window_s: f64) -> Throughput {
        let per_s = |v: u64| {
            if window_s > 0.0 {
                v as f64 / window_s
            } else {
                0.0
            }
        };
        Throughput {
            msgs_per_s: round2(per_s(msgs)),
            mb_per_s: round2(per_s(bytes) / 1e6),
            msgs,
            bytes,
            window_s,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub send: u64,
    pub delivery: u64,
    pub consume: u64,
    /// Scheduled sends (open loop) never made because the run ended first.
    pub unsent_scheduled: u64,
    pub samples: Vec<String>,
}

/// Throughput as a fraction of the machine's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VsLimits {
    pub disk_write_mb_s: f64,
    pub loopback_tcp_mb_s: f64,
    /// Produced MB/s / disk write MB/s.
    pub produce_of_disk: Option<f64>,
    /// Produced MB/s / loopback TCP MB/s.
    pub produce_of_loopback: Option<f64>,
    /// Consumed MB/s / loopback TCP MB/s.
    pub consume_of_loopback: Option<f64>,
    /// The limits' durable request floor: one executor's CPU per request,
    /// µs (absent if not measured, and in older results).
    #[serde(default)]
    pub durable_floor_cpu_us_per_request: Option<f64>,
    /// Broker CPU per produce request / the durable request floor's.
    #[serde(default)]
    pub broker_cpu_per_request_of_floor: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// The broker process (with `--broker-pid`).
    pub broker_cores: Option<f64>,
    /// This load generator.
    pub bench_cores: Option<f64>,
}

/// What the produce path costs per request and per byte, over the measured
/// window (produce and e2e runs; the broker's figures need `--broker-pid`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Efficiency {
    /// Produce requests acknowledged per second (one per batch).
    pub produce_requests_per_s: f64,
    /// Mean produced bytes per request.
    pub bytes_per_request: f64,
    /// Broker CPU per produce request, in µs (all its work in the window,
    /// consumers' fetches included, divided by the produce requests).
    pub broker_cpu_us_per_request: Option<f64>,
    /// Broker cores per GB/s produced.
    pub broker_cores_per_gb_s: Option<f64>,
    /// Load-generator cores per GB/s produced.
    pub bench_cores_per_gb_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub tool: String,
    pub version: String,
    pub mode: Mode,
    pub label: Option<String>,
    pub started_at_unix_ms: u64,
    /// Produced (produce, e2e) or consumed (consume) throughput.
    pub throughput: Throughput,
    /// Consumed throughput (consume, e2e).
    pub consume_throughput: Option<Throughput>,
    pub publish_latency_us: Percentiles,
    /// From the actual send to the acknowledgement; differs from
    /// `publish_latency_us` only in open loop, where that one counts from
    /// the intended time (absent in results written before it existed).
    #[serde(default)]
    pub send_ack_latency_us: Percentiles,
    pub e2e_latency_us: Percentiles,
    /// Total of the failures in `error_detail` (send + delivery + consume).
    pub errors: u64,
    pub error_detail: ErrorDetail,
    pub series: Vec<SecondPoint>,
    pub topics: Vec<(String, u32)>,
    pub workload: Workload,
    pub machine: MachineInfo,
    pub vs_limits: Option<VsLimits>,
    /// Mean CPU cores used over the measured seconds.
    pub cpu: CpuUse,
    /// CPU per produce request and per GB/s (absent for consume runs and
    /// in results written before it existed).
    #[serde(default)]
    pub efficiency: Option<Efficiency>,
    /// Why the run was cut short, if it was.
    pub aborted: Option<String>,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| (a / b * 10_000.0).round() / 10_000.0)
}

impl BenchResult {
    pub fn build(
        w: Workload,
        outcome: RunOutcome,
        machine: MachineInfo,
        limits: Option<&LimitsResult>,
    ) -> BenchResult {
        let agg = &outcome.aggregate;
        let mode = w.mode;
        let window_s = w.duration_s;
        let win: &Interval = &agg.window;
        let produced = Throughput::of(win.produced_msgs, win.produced_bytes, window_s);
        let consumed = Throughput::of(win.consumed_msgs, win.consumed_bytes, window_s);
        let (throughput, consume_throughput) = match w.mode {
            Mode::Produce => (produced, None),
            Mode::Consume => (consumed, None),
            Mode::E2e => (produced, Some(consumed)),
        };
        let t = &agg.totals;
        let efficiency = (mode != Mode::Consume && win.produced_requests > 0).then(|| {
            let (broker_cores, bench_cores) = agg.mean_cpu();
            let rps = win.produced_requests as f64 / window_s;
            let gb_s = win.produced_bytes as f64 / window_s / 1e9;
            let per_gb = |cores: f64| (gb_s > 0.0).then(|| round2(cores / gb_s));
            Efficiency {
                produce_requests_per_s: round2(rps),
                bytes_per_request: round2(win.produced_bytes as f64 / win.produced_requests as f64),
                broker_cpu_us_per_request: broker_cores.map(|c| round2(c * 1e6 / rps)),
                broker_cores_per_gb_s: broker_cores.and_then(per_gb),
                bench_cores_per_gb_s: bench_cores.and_then(per_gb),
            }
        });
        let vs_limits = limits.map(|l| {
            let produce = (w.mode != Mode::Consume).then_some(throughput.mb_per_s);
            let consume = match w.mode {
                Mode::Consume => Some(throughput.mb_per_s),
                _ => consume_throughput.as_ref().map(|c| c.mb_per_s),
            };
            let floor = l.durable_floor().map(|f| f.server_cpu_us_per_request);
            VsLimits {
                disk_write_mb_s: l.disk_write_mb_s,
                loopback_tcp_mb_s: l.loopback_tcp_mb_s,
                produce_of_disk: produce.and_then(|p| ratio(p, l.disk_write_mb_s)),
                produce_of_loopback: produce.and_then(|p| ratio(p, l.loopback_tcp_mb_s)),
                consume_of_loopback: consume.and_then(|c| ratio(c, l.loopback_tcp_mb_s)),
                durable_floor_cpu_us_per_request: floor,
                broker_cpu_per_request_of_floor: efficiency
                    .as_ref()
                    .and_then(|e| e.broker_cpu_us_per_request)
                    .zip(floor)
                    .and_then(|(b, f)| ratio(b, f)),
            }
        });
        BenchResult {
            tool: "corelog-bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            mode: w.mode,
            label: w.label.clone(),
            started_at_unix_ms: outcome.started_at_unix_ms,
            throughput,
            consume_throughput,
            publish_latency_us: Percentiles::of(&t.publish),
            send_ack_latency_us: Percentiles::of(&t.send_ack),
            e2e_latency_us: Percentiles::of(&t.e2e),
            errors: t.errors(),
            error_detail: ErrorDetail {
                send: t.send_errors,
                delivery: t.delivery_errors,
                consume: t.consume_errors,
                unsent_scheduled: t.unsent_scheduled,
                samples: t.error_samples.clone(),
            },
            series: agg.series.clone(),
            topics: outcome
                .topics
                .iter()
                .map(|t| (t.name.clone(), t.partitions))
                .collect(),
            workload: w,
            machine,
            vs_limits,
            cpu: {
                let (broker_cores, bench_cores) = agg.mean_cpu();
                CpuUse {
                    broker_cores,
                    bench_cores,
                }
            },
            efficiency,
            aborted: outcome.aborted,
        }
    }

    /// A name for legends: the label, else the file stem.
    pub fn name(&self, path: &Path) -> String {
        self.label.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into())
        })
    }

    /// The readable table for the terminal.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = &self.workload;
        s.push_str(&format!("corelog-bench {}\n", w.summary()));
        s.push_str(&format!("machine: {}\n", self.machine.summary()));
        let topics: Vec<String> = self
            .topics
            .iter()
            .map(|(n, p)| format!("{n} ({p} partitions)"))
            .collect();
        s.push_str(&format!("topics: {}\n", topics.join(", ")));
        s.push_str(&format!(
            "measured {:.1} s after {:.0} s warm-up\n\n",
            w.duration_s,
            w.warmup_s.ceil()
        ));
        s.push_str(&format!(
            "{:<22}{:>14}{:>12}\n",
            "throughput", "msgs/s", "MB/s"
        ));
        let vs = self.vs_limits.as_ref();
        let mut row = |name: &str, t: &Throughput, note: Option<String>| {
            s.push_str(&format!(
                "{:<22}{:>14.0}{:>12.2}{}\n",
                name,
                t.msgs_per_s,
                t.mb_per_s,
                note.map(|n| format!("   {n}")).unwrap_or_default()
            ));
        };
        match self.mode {
            Mode::Consume => row(
                "consumed",
                &self.throughput,
                vs.and_then(|v| Some((v.consume_of_loopback?, v.loopback_tcp_mb_s)))
                    .map(|(r, l)| format!("{:.1}% of loopback TCP {l:.0} MB/s", r * 100.0)),
            ),
            _ => {
                row(
                    "produced (acked)",
                    &self.throughput,
                    vs.and_then(|v| Some((v.produce_of_disk?, v.disk_write_mb_s)))
                        .map(|(r, l)| format!("{:.1}% of disk write {l:.0} MB/s", r * 100.0)),
                );
                if let Some(c) = &self.consume_throughput {
                    row("consumed", c, None);
                }
            }
        }
        s.push_str(&format!(
            "\n{:<14}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>11}\n",
            "latency (µs)", "p50", "p90", "p99", "p99.9", "p99.99", "max", "count"
        ));
        let mut lat = |name: &str, p: &Percentiles| {
            s.push_str(&format!(
                "{:<14}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>11}\n",
                name, p.p50, p.p90, p.p99, p.p999, p.p9999, p.max, p.count
            ));
        };
        if self.mode != Mode::Consume {
            lat("publish", &self.publish_latency_us);
            if self.workload.rate_mb_s.is_some() {
                lat("send-to-ack", &self.send_ack_latency_us);
            }
        }
        if self.mode == Mode::E2e {
            lat("end-to-end", &self.e2e_latency_us);
        }
        if let Some(b) = self.cpu.bench_cores {
            let broker = self
                .cpu
                .broker_cores
                .map(|c| format!("broker {c:.2} cores, "))
                .unwrap_or_default();
            s.push_str(&format!(
                "\nCPU (measured seconds, mean): {broker}load generator {b:.2} cores\n"
            ));
        }
        if let Some(e) = &self.efficiency {
            let opt = |v: Option<f64>, unit: &str| {
                v.map(|v| format!("{v:.2} {unit}"))
                    .unwrap_or_else(|| "-".into())
            };
            s.push_str(&format!(
                "produce requests: {:.0}/s, {:.0} bytes each; broker {} per request, {}; load generator {}\n",
                e.produce_requests_per_s,
                e.bytes_per_request,
                opt(e.broker_cpu_us_per_request, "µs CPU"),
                opt(e.broker_cores_per_gb_s, "cores per GB/s"),
                opt(e.bench_cores_per_gb_s, "cores per GB/s"),
            ));
            if let Some((r, f)) = vs.and_then(|v| {
                Some((
                    v.broker_cpu_per_request_of_floor?,
                    v.durable_floor_cpu_us_per_request?,
                ))
            }) {
                s.push_str(&format!(
                    "broker CPU per request: {r:.2}x the durable request floor ({f:.1} µs on one executor)\n"
                ));
            }
        }
        let d = &self.error_detail;
        s.push_str(&format!(
            "\nerrors: {} (send {}, delivery {}, consume {})",
            self.errors, d.send, d.delivery, d.consume
        ));
        if d.unsent_scheduled > 0 {
            s.push_str(&format!(
                "; {} scheduled sends not made (generator or broker behind schedule)",
                d.unsent_scheduled
            ));
        }
        s.push('\n');
        for e in &d.samples {
            s.push_str(&format!("  {e}\n"));
        }
        if let Some(a) = &self.aborted {
            s.push_str(&format!("ABORTED: {a}\n"));
        }
        s
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| BenchError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = std::fs::File::create(path).map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .map_err(|source| BenchError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a JSON file into `T`.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| BenchError::Json {
        path: path.to_path_buf(),
        source,
    })
}
