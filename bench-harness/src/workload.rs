//! The workload: what one `produce` / `consume` / `e2e` run does.
//!
//! Owns the value types of the flags (message size, key distribution, acks,
//! CPU list), the TOML workload file, and [`Workload::resolve`], which merges
//! defaults, the file and the flags (flags win) and validates the result.
//!
//! Invariants: a resolved [`Workload`] is valid (sizes, counts and durations
//! in range, CPUs exist); it serializes completely into the JSON result so a
//! run can be repeated from its result file; units are in every field name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cli::LoadArgs;
use crate::error::BenchError;

/// Smallest message: the first 8 bytes carry the intended send time.
pub const MIN_MESSAGE_BYTES: usize = 8;
/// Largest message accepted by the harness, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Most topics one run may use.
pub const MAX_TOPICS: u32 = 10_000;
/// In-flight budget, in bytes, used to derive the default `max_in_flight`.
pub const DEFAULT_IN_FLIGHT_BYTES: u64 = 32 * 1024 * 1024;

/// What the run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Producers only: publish latency and produce throughput.
    Produce,
    /// Consumers only (reading what is there): consume throughput.
    Consume,
    /// Producers and tailing consumers: also end-to-end latency.
    E2e,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

/// Message (record value) size: fixed, or uniform in an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageSize {
    Fixed(usize),
    Range { min: usize, max: usize },
}

impl MessageSize {
    pub fn min_bytes(self) -> usize {
        match self {
            MessageSize::Fixed(n) => n,
            MessageSize::Range { min, .. } => min,
        }
    }

    pub fn max_bytes(self) -> usize {
        match self {
            MessageSize::Fixed(n) => n,
            MessageSize::Range { max, .. } => max,
        }
    }

    pub fn mean_bytes(self) -> f64 {
        (self.min_bytes() + self.max_bytes()) as f64 / 2.0
    }
}

impl FromStr for MessageSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let num = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{s}': expected a byte count (1024) or a range (100..2000)"))
        };
        let size = match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (num(a)?, num(b.trim_start_matches('='))?);
                if min > max {
                    return Err(format!("'{s}': range start is above its end"));
                }
                if min == max {
                    MessageSize::Fixed(min)
                } else {
                    MessageSize::Range { min, max }
                }
            }
            None => MessageSize::Fixed(num(s)?),
        };
        if size.min_bytes() < MIN_MESSAGE_BYTES || size.max_bytes() > MAX_MESSAGE_BYTES {
            return Err(format!(
                "'{s}': message sizes must be within {MIN_MESSAGE_BYTES}..{MAX_MESSAGE_BYTES} bytes \
                 (the first 8 bytes carry the send time)"
            ));
        }
        Ok(size)
    }
}

impl fmt::Display for MessageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageSize::Fixed(n) => write!(f, "{n}"),
            MessageSize::Range { min, max } => write!(f, "{min}..{max}"),
        }
    }
}

impl Serialize for MessageSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MessageSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(n) => n.to_string(),
            Raw::Str(s) => s,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What message values hold (matters with compression).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ValueKind {
    /// One random payload per producer, reused for every record (the
    /// historical default; compresses across records).
    #[default]
    Same,
    /// Fresh random bytes per record: incompressible.
    Random,
    /// JSON-like text per record (field names repeat, numbers vary).
    Json,
}

/// How records are keyed (keyed records go to `partition_for_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDist {
    /// No key: each producer sends to the partitions round robin.
    None,
    /// Keys drawn uniformly from `key_space` values.
    Uniform,
    /// Log-uniform over `key_space` (a few keys are hot, most are cold):
    /// key = floor(key_space^u) - 1 with u uniform in [0, 1).
    #[value(name = "zipf")]
    #[serde(rename = "zipf")]
    Zipf,
    /// No key: producer i sends only to partition i mod P (counted over
    /// every topic's partitions), as Iggy's pinned producers do; with as
    /// many partitions as producers, each partition has one writer.
    Pinned,
}

/// Producer acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AcksArg {
    None,
    Leader,
    All,
}

impl AcksArg {
    pub fn to_client(self) -> corelog::protocol::messages::Acks {
        use corelog::protocol::messages::Acks;
        match self {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

/// Where consumers start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// A list of CPU ids: `1`, `0,2`, `0-3`, `0,2-3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CpuList(pub Vec<usize>);

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}': expected CPU ids like 1 or 0,2-3");
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: usize = a.trim().parse().map_err(|_| bad())?;
                    let b: usize = b.trim().parse().map_err(|_| bad())?;
                    if a > b || b - a > 4096 {
                        return Err(bad());
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(part.parse().map_err(|_| bad())?),
            }
        }
        if cpus.is_empty() {
            return Err(bad());
        }
        Ok(CpuList(cpus))
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<usize>),
            One(usize),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::List(v) if !v.is_empty() => Ok(CpuList(v)),
            Raw::List(_) => Err(serde::de::Error::custom("empty CPU list")),
            Raw::One(n) => Ok(CpuList(vec![n])),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The CPUs this process may run on (its affinity mask), sorted: the
/// broker's own helper, so both read the mask the same way.
pub use corelog::shard::startup::available_cpus;

/// A fully resolved, validated workload (serialized into the result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub mode: Mode,
    pub bootstrap: String,
    /// Topic name, or the name prefix when `topics > 1` (`T-0`, `T-1`, ...).
    pub topic: String,
    pub topics: u32,
    /// Create the topics with this many partitions (reused if they exist
    /// with that count).
    pub create_partitions: Option<u32>,
    /// `key=value` topic settings used when creating topics.
    pub topic_config: Vec<String>,
    pub producers: u32,
    pub consumers: u32,
    pub message_bytes: MessageSize,
    pub keys: KeyDist,
    pub key_space: u64,
    pub batch_bytes: usize,
    /// Producer compression codec.
    #[serde(default)]
    pub compression: corelog::client::Compression,
    /// What message values hold.
    #[serde(default)]
    pub values: ValueKind,
    pub linger_ms: u64,
    /// Producer requests in flight per partition (0 = no limit).
    pub partition_in_flight: usize,
    pub acks: AcksArg,
    /// Target rate over all producers, in MB/s (1 MB = 10^6 bytes of
    /// message value); `None` = closed loop (as fast as `max_in_flight` allows).
    pub rate_mb_s: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// After the producers stop, how long consumers may take to catch up, in s.
    pub drain_s: f64,
    /// Records each producer may have sent and not yet acknowledged.
    pub max_in_flight: u64,
    /// CPUs of the load generator's executors (one executor per entry).
    pub cpus: Vec<usize>,
    pub from: StartFrom,
    pub fetch_max_wait_ms: u32,
    pub fetch_max_partition_bytes: u32,
    pub request_timeout_ms: u64,
    /// The broker's pid, to sample its CPU use.
    pub broker_pid: Option<u32>,
    /// Free text carried into the result (plot legends use it).
    pub label: Option<String>,
    pub json: Option<PathBuf>,
    pub hdr_log: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub limits: Option<PathBuf>,
    pub quiet: bool,
}

impl Workload {
    /// Defaults, then the `--workload` file, then the flags.
    pub fn resolve(mode: Mode, flags: &LoadArgs) -> Result<Workload, BenchError> {
        let merged = match &flags.workload {
            Some(path) => flags.clone().or(read_workload_file(path)?),
            None => flags.clone(),
        };
        Self::from_args(mode, merged)
    }

    fn from_args(mode: Mode, a: LoadArgs) -> Result<Workload, BenchError> {
        let bad = |m: String| Err(BenchError::Workload(m));
        let producers = a.producers.unwrap_or(match mode {
            Mode::Consume => 0,
            _ => 1,
        });
        let consumers = a.consumers.unwrap_or(match mode {
            Mode::Produce => 0,
            _ => 1,
        });
        match mode {
            Mode::Produce if consumers > 0 => {
                return bad(
                    "produce runs no consumers (use e2e for producers and consumers)".into(),
                )
            }
            Mode::Consume if producers > 0 => {
                return bad(
                    "consume runs no producers (use e2e for producers and consumers)".into(),
                )
            }
            Mode::Produce | Mode::E2e if producers == 0 => {
                return bad(format!("{} needs --producers >= 1", mode.name()))
            }
            Mode::Consume | Mode::E2e if consumers == 0 => {
                return bad(format!("{} needs --consumers >= 1", mode.name()))
            }
            _ => {}
        }
        let message_bytes = a.message_bytes.unwrap_or(MessageSize::Fixed(1024));
        let topics = a.topics.unwrap_or(1);
        if topics == 0 || topics > MAX_TOPICS {
            return bad(format!("--topics must be within 1..={MAX_TOPICS}"));
        }
        if a.create_partitions == Some(0) {
            return bad("--create-partitions must be >= 1".into());
        }
        let batch_bytes = a.batch_bytes.unwrap_or(1024 * 1024);
        if batch_bytes == 0 || batch_bytes > MAX_MESSAGE_BYTES {
            return bad(format!(
                "--batch-bytes must be within 1..={MAX_MESSAGE_BYTES}"
            ));
        }
        let duration_s = a.duration_s.unwrap_or(10.0);
        let warmup_s = a.warmup_s.unwrap_or(2.0);
        let drain_s = a.drain_s.unwrap_or(5.0);
        for (name, v, min) in [
            ("--duration-s", duration_s, 0.001),
            ("--warmup-s", warmup_s, 0.0),
            ("--drain-s", drain_s, 0.0),
        ] {
            if !v.is_finite() || v < min || v > 7.0 * 86_400.0 {
                return bad(format!("{name} {v} is out of range"));
            }
        }
        if let Some(r) = a.rate_mb_s {
            if !r.is_finite() || r <= 0.0 || r > 1e6 {
                return bad(format!(
                    "--rate-mb-s {r} must be > 0 (leave it out for unlimited)"
                ));
            }
        }
        let key_space = a.key_space.unwrap_or(10_000);
        if key_space == 0 {
            return bad("--key-space must be >= 1".into());
        }
        let max_in_flight = a.max_in_flight.unwrap_or_else(|| {
            ((DEFAULT_IN_FLIGHT_BYTES as f64 / message_bytes.mean_bytes()) as u64).max(1000)
        });
        if max_in_flight == 0 {
            return bad("--max-in-flight must be >= 1".into());
        }
        let available = available_cpus();
        let cpus = match a.cpus {
            Some(CpuList(c)) => c,
            None => available.clone(),
        };
        if cpus.is_empty() {
            return bad("no CPU to run on (the affinity mask is empty)".into());
        }
        if let Some(c) = cpus.iter().find(|c| !available.contains(c)) {
            return bad(format!(
                "CPU {c} is not available to this process (available: {available:?})"
            ));
        }
        let request_timeout_ms = a.request_timeout_ms.unwrap_or(30_000);
        if request_timeout_ms == 0 {
            return bad("--request-timeout-ms must be >= 1".into());
        }
        for kv in &a.topic_config {
            if !kv.contains('=') {
                return bad(format!("--topic-config '{kv}': expected KEY=VALUE"));
            }
        }
        let topic = a.topic.unwrap_or_else(|| "corelog-bench".into());
        if topic.is_empty() {
            return bad("--topic must not be empty".into());
        }
        Ok(Workload {
            mode,
            bootstrap: a.bootstrap.unwrap_or_else(|| "127.0.0.1:9700".into()),
            topic,
            topics,
            create_partitions: a.create_partitions,
            topic_config: a.topic_config,
            producers,
            consumers,
            message_bytes,
            keys: a.keys.unwrap_or(KeyDist::None),
            key_space,
            batch_bytes,
            compression: a.compression.unwrap_or_default(),
            values: a.values.unwrap_or_default(),
            linger_ms: a.linger_ms.unwrap_or(1),
            partition_in_flight: a
                .partition_in_flight
                .unwrap_or(corelog::client::DEFAULT_MAX_IN_FLIGHT_PER_PARTITION),
            acks: a.acks.unwrap_or(AcksArg::Leader),
            rate_mb_s: a.rate_mb_s,
            duration_s,
            warmup_s,
            drain_s,
            max_in_flight,
            cpus,
            from: a.from.unwrap_or(match mode {
                Mode::Consume => StartFrom::Earliest,
                _ => StartFrom::Latest,
            }),
            fetch_max_wait_ms: a.fetch_max_wait_ms.unwrap_or(100),
            fetch_max_partition_bytes: a.fetch_max_partition_bytes.unwrap_or(4 * 1024 * 1024),
            request_timeout_ms,
            broker_pid: a.broker_pid,
            label: a.label,
            json: a.json,
            hdr_log: a.hdr_log,
            plot: a.plot,
            limits: a.limits,
            quiet: a.quiet,
        })
    }

    /// The topic names this run uses.
    pub fn topic_names(&self) -> Vec<String> {
        if self.topics == 1 {
            vec![self.topic.clone()]
        } else {
            (0..self.topics)
                .map(|i| format!("{}-{i}", self.topic))
                .collect()
        }
    }

    /// Topic settings as `(key, value)` pairs.
    pub fn topic_config_pairs(&self) -> Vec<(String, String)> {
        self.topic_config
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// Target rate of one producer in bytes/s, if open loop.
    pub fn rate_bytes_per_s_per_producer(&self) -> Option<f64> {
        self.rate_mb_s
            .map(|r| r * 1e6 / f64::from(self.producers.max(1)))
    }

    /// One-line description for the terminal.
    pub fn summary(&self) -> String {
        let rate = match self.rate_mb_s {
            Some(r) => format!("open loop at {r} MB/s"),
            None => format!("closed loop, {} in flight/producer", self.max_in_flight),
        };
        format!(
            "{}: {} producer(s), {} consumer(s), {} topic(s) '{}', {} B messages, keys {:?}, \
             values {:?}, compression {}, batch {} B, linger {} ms, {} in flight/partition, \
             acks {:?}, {rate}, CPUs {:?}",
            self.mode.name(),
            self.producers,
            self.consumers,
            self.topics,
            self.topic,
            self.message_bytes,
            self.keys,
            self.values,
            self.compression,
            self.batch_bytes,
            self.linger_ms,
            self.partition_in_flight,
            self.acks,
            self.cpus
        )
    }
}

/// Reads a TOML workload file: the same keys as the flags, with underscores
/// (`message_bytes = "100..2000"`, `rate_mb_s = 20.0`, `cpus = [1]`).
pub fn read_workload_file(path: &Path) -> Result<LoadArgs, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let args: LoadArgs = toml::from_str(&text).map_err(|source| BenchError::Toml {
        path: path.to_path_buf(),
        source,
    })?;
    if args.workload.is_some() {
        return Err(BenchError::Workload(format!(
            "{}: a workload file cannot name another workload file",
            path.display()
        )));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_sizes() {
        assert_eq!("1024".parse::<MessageSize>(), Ok(MessageSize::Fixed(1024)));
        assert_eq!(
            "100..2000".parse::<MessageSize>(),
            Ok(MessageSize::Range {
                min: 100,
                max: 2000
            })
        );
        assert_eq!("64..64".parse::<MessageSize>(), Ok(MessageSize::Fixed(64)));
        assert!("4".parse::<MessageSize>().is_err());
        assert!("2000..100".parse::<MessageSize>().is_err());
        assert!("x".parse::<MessageSize>().is_err());
        assert!("99999999999".parse::<MessageSize>().is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!("1".parse::<CpuList>(), Ok(CpuList(vec![1])));
        assert_eq!("0,2-4".parse::<CpuList>(), Ok(CpuList(vec![0, 2, 3, 4])));
        assert!("".parse::<CpuList>().is_err());
        assert!("3-1".parse::<CpuList>().is_err());
        assert!("a".parse::<CpuList>().is_err());
    }

    #[test]
    fn file_then_flags() {
        let file: LoadArgs = toml::from_str(
            "topic = \"from-file\"\nproducers = 3\nmessage_bytes = \"100..200\"\ncpus = [0]\nrate_mb_s = 5.0\n",
        )
        .expect("toml");
        let flags = LoadArgs {
            producers: Some(2),
            ..LoadArgs::default()
        };
        let w = Workload::from_args(Mode::E2e, flags.or(file)).expect("valid");
        assert_eq!(w.topic, "from-file");
        assert_eq!(w.producers, 2);
        assert_eq!(w.message_bytes, MessageSize::Range { min: 100, max: 200 });
        assert_eq!(w.cpus, vec![0]);
        assert_eq!(w.rate_mb_s, Some(5.0));
        assert_eq!(w.from, StartFrom::Latest);
        let round: Workload =
            serde_json::from_str(&serde_json::to_string(&w).expect("json")).expect("parse");
        assert_eq!(round, w);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(toml::from_str::<LoadArgs>("no_such_key = 1").is_err());
        let e = |a: LoadArgs, m: Mode| Workload::from_args(m, a).is_err();
        assert!(e(
            LoadArgs {
                consumers: Some(1),
                ..LoadArgs::default()
            },
            Mode::Produce
        ));
        assert!(e(
            LoadArgs {
                duration_s: Some(-1.0),
                ..LoadArgs::default()
            },
            Mode::Produce
        ));
        assert!(e(
            LoadArgs {
                cpus: Some(CpuList(vec![100_000])),
                ..LoadArgs::default()
            },
            Mode::Produce
        ));
        assert!(e(
            LoadArgs {
                topic_config: vec!["flush".into()],
                ..LoadArgs::default()
            },
            Mode::Produce
        ));
    }
}
