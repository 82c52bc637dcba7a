//! Command-line interface: subcommands and their flags (clap derive).
//!
//! Invariants: every load flag is an `Option` without a clap default, so
//! [`LoadArgs::or`] can tell a flag that was given (it wins) from one that
//! was not (the workload file, then the built-in default in
//! `Workload::resolve`, decides). The same struct is the TOML workload file
//! schema (underscored keys; unknown keys are an error). Bad flags are clap
//! errors, never panics.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::workload::{AcksArg, CpuList, KeyDist, MessageSize, StartFrom, ValueKind};
use corelog::client::Compression;

#[derive(Debug, Parser)]
#[command(
    name = "corelog-bench",
    version,
    about = "Load generator and benchmark harness for the Corelog broker",
    long_about = "Load generator and benchmark harness for the Corelog broker.\n\n\
        Latencies are HdrHistograms in microseconds; with --rate-mb-s every send has an \
        intended time on a fixed schedule and latency is measured from it (open loop, no \
        coordinated omission). 1 MB = 10^6 bytes of message value."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Producers only: publish latency and produce throughput.
    Produce(LoadArgs),
    /// Consumers only: consume throughput of what the topic holds.
    Consume(LoadArgs),
    /// Producers and tailing consumers: publish and end-to-end latency.
    E2e(LoadArgs),
    /// Measure the machine: disk write bandwidth and fdatasync latency (O_DIRECT,
    /// io_uring, as the broker writes), loopback TCP bandwidth, and the CPU floor of
    /// one request on one glommio executor.
    Limits(LimitsArgs),
    /// Draw result files (latency percentiles, throughput over time) into one SVG.
    Plot(PlotArgs),
}

/// Flags of produce / consume / e2e; also the TOML workload file schema.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadArgs {
    /// TOML workload file with any of these settings (flags override it).
    #[arg(long, value_name = "FILE.toml")]
    #[serde(skip)]
    pub workload: Option<PathBuf>,
    /// Broker address [default: 127.0.0.1:9700].
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// Topic name, or name prefix with --topics N (T-0 .. T-{N-1}) [default: corelog-bench].
    #[arg(long, value_name = "T")]
    pub topic: Option<String>,
    /// Number of topics [default: 1].
    #[arg(long, value_name = "N")]
    pub topics: Option<u32>,
    /// Create the topic(s) with P partitions (an existing topic with P partitions is reused).
    #[arg(long, value_name = "P")]
    pub create_partitions: Option<u32>,
    /// Topic setting for --create-partitions, repeatable (flush=always, flush.interval_ms=N, ...).
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    pub topic_config: Vec<String>,
    /// Producer connections [default: 1; 0 for consume].
    #[arg(long, value_name = "N")]
    pub producers: Option<u32>,
    /// Consumer connections [default: 1; 0 for produce].
    #[arg(long, value_name = "N")]
    pub consumers: Option<u32>,
    /// Message value size in bytes, fixed (1024) or uniform in a range (100..2000) [default: 1024].
    #[arg(long, value_name = "B|MIN..MAX")]
    pub message_bytes: Option<MessageSize>,
    /// Key distribution [default: none].
    #[arg(long, value_enum)]
    pub keys: Option<KeyDist>,
    /// Number of distinct keys for uniform/zipf [default: 10000].
    #[arg(long, value_name = "N")]
    pub key_space: Option<u64>,
    /// Producer batch size in bytes [default: 1048576].
    #[arg(long, value_name = "B")]
    pub batch_bytes: Option<usize>,
    /// Producer compression: none, gzip, snappy, lz4, zstd [default: none].
    #[arg(long, value_name = "CODEC")]
    pub compression: Option<Compression>,
    /// Message values: same (one random payload reused), random (fresh
    /// random bytes per record, incompressible), json (JSON-like text,
    /// compressible) [default: same].
    #[arg(long, value_enum)]
    pub values: Option<ValueKind>,
    /// Producer linger in ms [default: 1].
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// Producer requests in flight per partition; while a partition is at
    /// this window its batch keeps filling past the linger (0 = no limit).
    /// Up to 5 the producer is idempotent; above 5 (or 0) it is not
    /// [default: the client's, 5].
    #[arg(long, value_name = "N")]
    pub partition_in_flight: Option<usize>,
    /// Acknowledgement level [default: leader].
    #[arg(long, value_enum)]
    pub acks: Option<AcksArg>,
    /// Target rate over all producers in MB/s (open loop); unset = closed loop.
    #[arg(long, value_name = "R")]
    pub rate_mb_s: Option<f64>,
    /// Measured duration in seconds, after the warm-up [default: 10].
    #[arg(long, value_name = "S")]
    pub duration_s: Option<f64>,
    /// Warm-up in seconds, excluded from every figure [default: 2].
    #[arg(long, value_name = "S")]
    pub warmup_s: Option<f64>,
    /// Time consumers get to catch up after the producers stop, in s [default: 5].
    #[arg(long, value_name = "S")]
    pub drain_s: Option<f64>,
    /// Records one producer may have unacknowledged [default: 32 MiB / message size, >= 1000].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u64>,
    /// CPUs the load generator's executors are pinned to, one executor each (e.g. 1 or 0,2-3)
    /// [default: every CPU of the process].
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<CpuList>,
    /// Where consumers start [default: earliest for consume, latest for e2e].
    #[arg(long, value_enum)]
    pub from: Option<StartFrom>,
    /// Longest a consumer fetch waits at the broker, in ms [default: 100].
    #[arg(long, value_name = "MS")]
    pub fetch_max_wait_ms: Option<u32>,
    /// Most bytes per partition per fetch [default: 4194304].
    #[arg(long, value_name = "B")]
    pub fetch_max_partition_bytes: Option<u32>,
    /// Client request timeout in ms [default: 30000].
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Pid of the broker: report its CPU use (cores) per second and on average.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Label for this run in reports and plot legends.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the JSON result here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one histogram per second and metric) here.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Draw this run's plot (SVG) here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// A `limits` JSON result: report throughput as a fraction of it.
    #[arg(long, value_name = "FILE.json")]
    pub limits: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// Each setting from `self` if given, else from `other` (file).
    pub fn or(self, other: LoadArgs) -> LoadArgs {
        LoadArgs {
            workload: self.workload.or(other.workload),
            bootstrap: self.bootstrap.or(other.bootstrap),
            topic: self.topic.or(other.topic),
            topics: self.topics.or(other.topics),
            create_partitions: self.create_partitions.or(other.create_partitions),
            topic_config: if self.topic_config.is_empty() {
                other.topic_config
            } else {
                self.topic_config
            },
            producers: self.producers.or(other.producers),
            consumers: self.consumers.or(other.consumers),
            message_bytes: self.message_bytes.or(other.message_bytes),
            keys: self.keys.or(other.keys),
            key_space: self.key_space.or(other.key_space),
            batch_bytes: self.batch_bytes.or(other.batch_bytes),
            compression: self.compression.or(other.compression),
            values: self.values.or(other.values),
            linger_ms: self.linger_ms.or(other.linger_ms),
            partition_in_flight: self.partition_in_flight.or(other.partition_in_flight),
            acks: self.acks.or(other.acks),
            rate_mb_s: self.rate_mb_s.or(other.rate_mb_s),
            duration_s: self.duration_s.or(other.duration_s),
            warmup_s: self.warmup_s.or(other.warmup_s),
            drain_s: self.drain_s.or(other.drain_s),
            max_in_flight: self.max_in_flight.or(other.max_in_flight),
            cpus: self.cpus.or(other.cpus),
            from: self.from.or(other.from),
            fetch_max_wait_ms: self.fetch_max_wait_ms.or(other.fetch_max_wait_ms),
            fetch_max_partition_bytes: self
                .fetch_max_partition_bytes
                .or(other.fetch_max_partition_bytes),
            request_timeout_ms: self.request_timeout_ms.or(other.request_timeout_ms),
            broker_pid: self.broker_pid.or(other.broker_pid),
            label: self.label.or(other.label),
            json: self.json.or(other.json),
            hdr_log: self.hdr_log.or(other.hdr_log),
            plot: self.plot.or(other.plot),
            limits: self.limits.or(other.limits),
            quiet: self.quiet || other.quiet,
        }
    }
}

/// Flags of `limits`.
#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// Directory on the disk to measure (a temporary file is written and deleted).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Write the JSON result here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Bytes written by the bandwidth test, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub write_mib: u64,
    /// Size of each write of the bandwidth test, in KiB (a multiple of 4).
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(4..=65_536))]
    pub block_kib: u64,
    /// Writes in flight during the bandwidth test (the broker has one per partition).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub queue_depth: u64,
    /// Number of 4 KiB append + fdatasync rounds.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub fsyncs: u64,
    /// How long to stream over loopback TCP, in seconds.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub tcp_s: f64,
    /// How long to run each durable write strategy, in ms (0 skips them).
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub strategy_ms: u64,
    /// Size of each durable write of the strategy test, in KiB (a multiple of 4).
    #[arg(long, value_name = "KIB", default_value_t = 4, value_parser = clap::value_parser!(u64).range(4..=4096))]
    pub strategy_block_kib: u64,
    /// CPU to pin the disk test's executor to [default: unpinned]; the request
    /// floor's server executor [default: 0].
    #[arg(long, value_name = "CPU")]
    pub cpu: Option<usize>,
    /// How long to measure each request floor phase (echo, durable), in ms (0 skips it).
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub floor_ms: u64,
    /// Client connections of the request floor (one request in flight each).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub floor_connections: u64,
    /// Payload bytes of each request floor request (durable writes round it up to 4 KiB).
    #[arg(long, value_name = "B", default_value_t = 10240, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub floor_request_bytes: u64,
}

/// Flags of `plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Output SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub out: PathBuf,
    /// Title above the plots.
    #[arg(long)]
    pub title: Option<String>,
    /// Result JSON files to draw (overlaid).
    #[arg(required = true, value_name = "RESULT.json")]
    pub results: Vec<PathBuf>,
}
