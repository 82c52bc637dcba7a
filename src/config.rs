//! Broker and topic configuration: the TOML file, its embedded defaults, and
//! `key=value` topic overrides.
//!
//! Invariants: every setting has a default, so an empty file (or none) is a
//! valid config; every limit names its unit; `validate` runs before anything
//! is opened, so no layer below sees a nonsensical value.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The config the broker runs on when given no file: `corelog serve` alone.
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../corelog.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Everything `corelog serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's node id in a cluster (0 for a single node).
    pub node_id: i32,
    /// Root of all topic and partition data.
    pub data_dir: PathBuf,
    /// Address every shard listens on (SO_REUSEPORT); port 0 picks a free one.
    pub listen: SocketAddr,
    /// Number of shards (executors pinned to one CPU each). Absent or 0: one
    /// per CPU this process may run on.
    pub shards: Option<usize>,
    pub limits: Limits,
    pub shard: ShardTuning,
    /// Settings every new topic starts with; `topic create --config` overrides.
    pub topic_defaults: TopicConfig,
    /// The consumer-group coordinator (docs/consumer-groups.md).
    pub groups: GroupConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            data_dir: PathBuf::from("./corelog-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 9700)),
            shards: None,
            limits: Limits::default(),
            shard: ShardTuning::default(),
            topic_defaults: TopicConfig::default(),
            groups: GroupConfig::default(),
        }
    }
}

/// `[groups]`: the consumer-group coordinator and its internal topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Partitions of `__consumer_offsets`, fixed when it is first created.
    pub offsets_topic_partitions: u32,
    /// Segment size of `__consumer_offsets`, in bytes.
    pub offsets_topic_segment_bytes: u64,
    /// An empty group's offsets are deleted this long after its last
    /// commit, in ms (Kafka's offsets.retention.minutes, 7 days).
    pub offsets_retention_ms: u64,
    /// Bounds on a member's session timeout, in ms (Kafka's
    /// group.min/max.session.timeout.ms).
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
    /// A new group waits this long for more members before its first
    /// generation, in ms (Kafka's group.initial.rebalance.delay.ms).
    pub initial_rebalance_delay_ms: u32,
    /// Most members in one group.
    pub max_group_members: u32,
    /// Longest metadata string an offset commit may carry, in bytes.
    pub offset_metadata_max_bytes: u32,
    /// The internal log written since the last snapshot before a new one
    /// is taken (and the log before it dropped), in bytes.
    pub snapshot_min_bytes: u64,
    /// How often sessions and rebalance deadlines are checked, in ms.
    pub tick_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_topic_partitions: 16,
            offsets_topic_segment_bytes: 16 * MIB,
            offsets_retention_ms: 7 * DAY_MS,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_group_members: 1_000,
            offset_metadata_max_bytes: 4096,
            snapshot_min_bytes: 4 * MIB,
            tick_ms: 100,
        }
    }
}

impl GroupConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.offsets_topic_partitions == 0 || self.offsets_topic_partitions > 1024 {
            return Err(ConfigError::Invalid(
                "groups.offsets_topic_partitions must be in 1..=1024".into(),
            ));
        }
        if self.offsets_topic_segment_bytes < TopicConfig::MIN_SEGMENT_BYTES
            || self.offsets_topic_segment_bytes > u64::from(u32::MAX)
        {
            return Err(ConfigError::Invalid(format!(
                "groups.offsets_topic_segment_bytes must be in {}..={}",
                TopicConfig::MIN_SEGMENT_BYTES,
                u32::MAX
            )));
        }
        if self.min_session_timeout_ms == 0
            || self.min_session_timeout_ms > self.max_session_timeout_ms
        {
            return Err(ConfigError::Invalid(
                "groups.min_session_timeout_ms must be > 0 and <= max_session_timeout_ms".into(),
            ));
        }
        if self.max_group_members == 0 || self.tick_ms == 0 || self.offsets_retention_ms == 0 {
            return Err(ConfigError::Invalid(
                "groups.max_group_members, tick_ms and offsets_retention_ms must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// Limits checked at ingress, before anything is allocated for a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame (request) accepted, in bytes, excluding the 4-byte prefix.
    pub max_frame_bytes: u32,
    /// Largest single record batch accepted in a produce, in bytes.
    pub max_batch_bytes: u32,
    /// Most bytes a compressed batch's records may decompress to when the
    /// broker validates it (decompression-bomb limit; MessageTooLarge past it).
    pub max_decompressed_batch_bytes: u32,
    /// Largest fetch response the broker builds, in bytes.
    pub max_fetch_bytes: u32,
    /// Longest a fetch may wait for data, in ms (requests asking more are capped).
    pub max_fetch_wait_ms: u32,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: u32,
    /// Most requests one connection may have in flight before the broker stops
    /// reading from it.
    pub max_in_flight_per_connection: u32,
    /// Most bytes of request payload buffers a shard holds at once, across
    /// all its connections, counted as the bytes arrive and held until each
    /// response is written (Kafka's `queued.max.request.bytes`, per shard);
    /// past it the shard stops reading requests until some complete. When
    /// only partly read frames hold it, one frame at a time may exceed it to
    /// finish (so the bound is this plus `max_frame_bytes`).
    pub max_queued_request_bytes: u64,
    /// Most tables one FlatBuffer may contain (verifier limit).
    pub max_flatbuffer_tables: u32,
    /// Deepest nesting one FlatBuffer may have (verifier limit).
    pub max_flatbuffer_depth: u32,
    /// A connection with no request being handled and no bytes read or
    /// response written for this long is closed, in ms (Kafka's
    /// `connections.max.idle.ms`). A client that never reads its responses
    /// makes no progress and is closed after this too.
    pub connection_idle_timeout_ms: u64,
    /// A client that started sending a frame must finish it within this, in
    /// ms; otherwise the connection is closed (half-sent frames hold memory).
    pub frame_read_timeout_ms: u64,
    /// An idempotent producer id not seen on a partition for this long is
    /// forgotten there, in ms (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: (64 * MIB) as u32,
            max_batch_bytes: (16 * MIB) as u32,
            max_decompressed_batch_bytes: (64 * MIB) as u32,
            max_fetch_bytes: (64 * MIB) as u32,
            max_fetch_wait_ms: 30_000,
            max_partitions_per_topic: 4096,
            max_in_flight_per_connection: 128,
            max_queued_request_bytes: 256 * MIB,
            max_flatbuffer_tables: 1_000_000,
            max_flatbuffer_depth: 64,
            connection_idle_timeout_ms: 600_000,
            frame_read_timeout_ms: 30_000,
            producer_id_expiration_ms: 86_400_000,
        }
    }
}

/// Per-executor knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardTuning {
    /// io_uring-registered DMA memory per shard, in bytes.
    pub io_memory_bytes: u64,
    /// Entries in each io_uring submission queue.
    pub ring_depth: u32,
    /// Capacity of each cross-shard channel, in messages.
    pub mesh_channel_capacity: u32,
    /// How often each partition checks for segments to delete by retention, in ms.
    pub retention_check_interval_ms: u64,
    /// Memory per shard for recently written batches, so tailing consumers
    /// are served without a disk read, in bytes (0 turns the cache off).
    pub batch_cache_bytes: u64,
    /// What recovery CRC-checks at startup besides the active segment.
    pub recovery_scan: RecoveryScan,
}

/// `shard.recovery_scan`: which segments are CRC-checked at startup
/// (docs/durability.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryScan {
    /// The active segment before the partition opens, then every sealed
    /// segment in the background (one partition at a time per shard, at low
    /// priority); corrupt batches are logged, never truncated.
    Sealed,
    /// Only the active segment; a corrupt batch in a sealed segment is found
    /// when a fetch reaches it.
    Active,
}

impl Default for ShardTuning {
    fn default() -> Self {
        Self {
            io_memory_bytes: 2 * MIB,
            ring_depth: 128,
            mesh_channel_capacity: 1024,
            retention_check_interval_ms: 5000,
            batch_cache_bytes: 64 * MIB,
            recovery_scan: RecoveryScan::Sealed,
        }
    }
}

/// When an append becomes durable. In TOML, flags and messages it is spelled
/// `flush = "always"` or `flush.interval_ms = N` (TOML also accepts the
/// equivalent inline table `flush = { interval_ms = N }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FlushPolicy {
    /// `flush = "always"`: acknowledged only after fdatasync covers the batch.
    /// Concurrent appends to one partition share one fdatasync (group commit).
    Always(AlwaysTag),
    /// `flush.interval_ms = N`: acknowledged after the write; synced every N ms.
    Interval { interval_ms: u64 },
}

/// The string `"always"` (a unit variant that serde can match untagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlwaysTag {
    Always,
}

impl FlushPolicy {
    pub const ALWAYS: FlushPolicy = FlushPolicy::Always(AlwaysTag::Always);

    pub fn is_always(&self) -> bool {
        matches!(self, FlushPolicy::Always(_))
    }

    /// The sync period for interval flushing.
    pub fn interval_ms(&self) -> Option<u64> {
        match self {
            FlushPolicy::Always(_) => None,
            FlushPolicy::Interval { interval_ms } => Some(*interval_ms),
        }
    }
}

/// What a bad `flush` value is told (in TOML, topic.json and `--config`).
const FLUSH_EXPECTED: &str = "flush = \"always\" or flush.interval_ms = N (ms)";

/// Deserialized by hand so that a bad value names the accepted spellings
/// instead of serde's "did not match any variant of untagged enum".
impl<'de> Deserialize<'de> for FlushPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FlushPolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(FLUSH_EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FlushPolicy, E> {
                match v {
                    "always" => Ok(FlushPolicy::ALWAYS),
                    other => Err(E::custom(format!(
                        "flush = \"{other}\": expected {FLUSH_EXPECTED}"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FlushPolicy, A::Error> {
                use serde::de::Error;
                let mut interval_ms = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "interval_ms" {
                        return Err(A::Error::custom(format!(
                            "flush.{key}: unknown key; expected {FLUSH_EXPECTED}"
                        )));
                    }
                    let v: i64 = map.next_value().map_err(|_| {
                        A::Error::custom("flush.interval_ms: expected a positive integer (ms)")
                    })?;
                    let v = u64::try_from(v).map_err(|_| {
                        A::Error::custom(format!(
                            "flush.interval_ms = {v}: expected a positive integer (ms)"
                        ))
                    })?;
                    interval_ms = Some(v);
                }
                match interval_ms {
                    Some(interval_ms) => Ok(FlushPolicy::Interval { interval_ms }),
                    None => Err(A::Error::custom(format!(
                        "flush: missing interval_ms; expected {FLUSH_EXPECTED}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Per-topic settings. Stored with the topic, so they survive restarts.
///
/// Every setting has one spelling, the same in corelog.toml
/// (`[topic_defaults]`), in `--config KEY=VALUE`, in `topic describe` and in
/// error messages: see [`TOPIC_SETTINGS`]. Retention's "unlimited" is `-1`
/// everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// A segment rolls once it holds this many bytes.
    pub segment_bytes: u64,
    /// A segment rolls once its first batch is this old, in ms.
    pub segment_ms: u64,
    /// Bytes of log between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u32,
    pub flush: FlushPolicy,
    /// Sealed segments whose newest record is older than this are deleted, in
    /// ms; `u64::MAX` (written `-1`) means unlimited.
    #[serde(deserialize_with = "de_retention_ms")]
    pub retention_ms: u64,
    /// Per-partition size bound in bytes (whole sealed segments are deleted
    /// while the rest still holds at least this much); absent (written `-1`)
    /// means unlimited.
    #[serde(deserialize_with = "de_retention_bytes")]
    pub retention_bytes: Option<u64>,
}

/// The value that means "unlimited" for `retention_ms` and `retention_bytes`,
/// in TOML, flags and `topic describe`.
pub const UNLIMITED: &str = "-1";

/// A retention value: a non-negative integer, or -1 for unlimited (`None`).
/// JSON `null` (how topic.json stores an unlimited `retention_bytes`) is
/// unlimited too.
fn de_retention<'de, D: serde::Deserializer<'de>>(
    d: D,
    key: &'static str,
) -> Result<Option<u64>, D::Error> {
    struct V(&'static str);
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                f,
                "{} = a non-negative integer, or -1 for unlimited",
                self.0
            )
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Option<u64>, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Option<u64>, E> {
            match v {
                -1 => Ok(None),
                v => u64::try_from(v).map(Some).map_err(|_| {
                    E::custom(format!(
                        "{} = {v}: expected a non-negative integer, or -1 for unlimited",
                        self.0
                    ))
                }),
            }
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Option<u64>, D2::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_any(V(key))
}

fn de_retention_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(de_retention(d, "retention_ms")?.unwrap_or(u64::MAX))
}

fn de_retention_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_retention(d, "retention_bytes")
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1024 * MIB,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            flush: FlushPolicy::ALWAYS,
            retention_ms: 7 * DAY_MS,
            retention_bytes: None,
        }
    }
}

/// Every topic setting with what it means: the keys [`TopicConfig::set`]
/// accepts, spelled as in corelog.toml's `[topic_defaults]`
/// (`topic create --help` prints this list).
pub const TOPIC_SETTINGS: &[(&str, &str)] = &[
    (
        "segment_bytes",
        "roll to a new segment after this many bytes",
    ),
    (
        "segment_ms",
        "roll once the segment's first batch is this old, in ms",
    ),
    (
        "index_interval_bytes",
        "bytes of log between two sparse index entries",
    ),
    (
        "flush",
        "\"always\": acknowledge after fdatasync (group commit)",
    ),
    (
        "flush.interval_ms",
        "acknowledge after the write, fdatasync every N ms",
    ),
    (
        "retention_ms",
        "delete sealed segments older than this, in ms; -1 = unlimited",
    ),
    (
        "retention_bytes",
        "keep at most about this many bytes per partition; -1 = unlimited",
    ),
];

/// The settings as help text, one `KEY  meaning` line each.
pub fn topic_settings_help() -> String {
    let mut s = String::from(
        "Topic settings (--config KEY=VALUE; the same keys as corelog.toml's [topic_defaults]):\n",
    );
    for (k, what) in TOPIC_SETTINGS {
        s.push_str(&format!("  {k:<22}{what}\n"));
    }
    s
}

impl TopicConfig {
    /// Smallest segment accepted, in bytes (one aligned page plus headroom).
    pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

    /// Applies one `key=value` override. `flush=always` or
    /// `flush.interval_ms=N` choose the flush policy; `-1` ([`UNLIMITED`])
    /// means unlimited for `retention_ms` and `retention_bytes`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let num = |v: &str| -> Result<u64, ConfigError> {
            v.trim().parse::<u64>().map_err(|_| {
                ConfigError::Invalid(format!("{key}={v}: expected a non-negative integer"))
            })
        };
        let retention = |v: &str| -> Result<Option<u64>, ConfigError> {
            if v.trim() == UNLIMITED {
                return Ok(None);
            }
            v.trim().parse::<u64>().map(Some).map_err(|_| {
                ConfigError::Invalid(format!(
                    "{key}={v}: expected a non-negative integer, or {UNLIMITED} for unlimited"
                ))
            })
        };
        match key {
            "segment_bytes" => self.segment_bytes = num(value)?,
            "segment_ms" => self.segment_ms = num(value)?,
            "index_interval_bytes" => {
                self.index_interval_bytes = u32::try_from(num(value)?)
                    .map_err(|_| ConfigError::Invalid(format!("{key}={value}: too large")))?
            }
            "flush" => match value.trim() {
                "always" => self.flush = FlushPolicy::ALWAYS,
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "flush={other}: expected flush=always or flush.interval_ms=N"
                    )))
                }
            },
            "flush.interval_ms" => {
                self.flush = FlushPolicy::Interval {
                    interval_ms: num(value)?,
                }
            }
            "retention_ms" => self.retention_ms = retention(value)?.unwrap_or(u64::MAX),
            "retention_bytes" => self.retention_bytes = retention(value)?,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "unknown topic config key '{other}' (known: {})",
                    TOPIC_SETTINGS
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
        self.validate()
    }

    /// The settings as `key=value` pairs, the form `set` accepts.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("segment_bytes".to_string(), self.segment_bytes.to_string()),
            ("segment_ms".to_string(), self.segment_ms.to_string()),
            (
                "index_interval_bytes".to_string(),
                self.index_interval_bytes.to_string(),
            ),
        ];
        match self.flush {
            FlushPolicy::Always(_) => out.push(("flush".into(), "always".into())),
            FlushPolicy::Interval { interval_ms } => {
                out.push(("flush.interval_ms".into(), interval_ms.to_string()))
            }
        }
        out.push((
            "retention_ms".into(),
            if self.retention_ms == u64::MAX {
                UNLIMITED.into()
            } else {
                self.retention_ms.to_string()
            },
        ));
        out.push((
            "retention_bytes".into(),
            self.retention_bytes
                .map(|b| b.to_string())
                .unwrap_or_else(|| UNLIMITED.into()),
        ));
        out
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.segment_bytes < Self::MIN_SEGMENT_BYTES {
            return Err(ConfigError::Invalid(format!(
                "segment_bytes={} is below the minimum of {} bytes",
                self.segment_bytes,
                Self::MIN_SEGMENT_BYTES
            )));
        }
        if self.segment_bytes > u32::MAX as u64 {
            return Err(ConfigError::Invalid(format!(
                "segment_bytes={} exceeds the maximum of {} bytes (index positions are 32-bit)",
                self.segment_bytes,
                u32::MAX
            )));
        }
        if self.segment_ms == 0 {
            return Err(ConfigError::Invalid("segment_ms must be > 0".into()));
        }
        if self.index_interval_bytes == 0 {
            return Err(ConfigError::Invalid(
                "index_interval_bytes must be > 0".into(),
            ));
        }
        if let FlushPolicy::Interval { interval_ms: 0 } = self.flush {
            return Err(ConfigError::Invalid(
                "flush.interval_ms must be > 0 (use flush=always to sync every write)".into(),
            ));
        }
        Ok(())
    }
}

impl BrokerConfig {
    /// The embedded default config.
    pub fn embedded_default() -> Self {
        // The embedded file is checked by a unit test, so this cannot fail in a
        // released binary; fall back to the code defaults all the same.
        toml::from_str(EMBEDDED_DEFAULT_TOML).unwrap_or_default()
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: BrokerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.topic_defaults.validate()?;
        self.groups.validate()?;
        let l = &self.limits;
        if l.max_frame_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_frame_bytes must be at least 1024".into(),
            ));
        }
        if l.max_batch_bytes == 0 || l.max_batch_bytes > l.max_frame_bytes {
            return Err(ConfigError::Invalid(format!(
                "limits.max_batch_bytes={} must be in 1..=max_frame_bytes ({})",
                l.max_batch_bytes, l.max_frame_bytes
            )));
        }
        if l.max_queued_request_bytes == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_queued_request_bytes must be > 0".into(),
            ));
        }
        if l.max_decompressed_batch_bytes == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_decompressed_batch_bytes must be > 0".into(),
            ));
        }
        if l.max_partitions_per_topic == 0 || l.max_in_flight_per_connection == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_partitions_per_topic and max_in_flight_per_connection must be > 0"
                    .into(),
            ));
        }
        if l.connection_idle_timeout_ms == 0 || l.frame_read_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "limits.connection_idle_timeout_ms and frame_read_timeout_ms must be > 0".into(),
            ));
        }
        if l.producer_id_expiration_ms == 0 {
            return Err(ConfigError::Invalid(
                "limits.producer_id_expiration_ms must be > 0".into(),
            ));
        }
        if self.shard.mesh_channel_capacity == 0
            || self.shard.ring_depth == 0
            || self.shard.retention_check_interval_ms == 0
        {
            return Err(ConfigError::Invalid(
                "shard.mesh_channel_capacity, shard.ring_depth and shard.retention_check_interval_ms must be > 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_matches_code_defaults() {
        let parsed = BrokerConfig::from_toml(EMBEDDED_DEFAULT_TOML).expect("embedded config");
        assert_eq!(parsed, BrokerConfig::default());
    }

    #[test]
    fn empty_file_is_default() {
        assert_eq!(
            BrokerConfig::from_toml("").expect("empty"),
            BrokerConfig::default()
        );
    }

    #[test]
    fn flush_forms() {
        let c = BrokerConfig::from_toml("[topic_defaults]\nflush = { interval_ms = 50 }\n")
            .expect("interval");
        assert_eq!(c.topic_defaults.flush.interval_ms(), Some(50));
        let c = BrokerConfig::from_toml("[topic_defaults]\nflush = \"always\"\n").expect("always");
        assert!(c.topic_defaults.flush.is_always());
        assert!(BrokerConfig::from_toml("[topic_defaults]\nflush = \"never\"\n").is_err());
        assert!(BrokerConfig::from_toml("bogus = 1\n").is_err());
    }

    #[test]
    fn connection_timeouts() {
        let d = Limits::default();
        assert_eq!(d.connection_idle_timeout_ms, 600_000);
        assert_eq!(d.frame_read_timeout_ms, 30_000);
        let c = BrokerConfig::from_toml(
            "[limits]\nconnection_idle_timeout_ms = 300\nframe_read_timeout_ms = 200\n",
        )
        .expect("timeouts");
        assert_eq!(c.limits.connection_idle_timeout_ms, 300);
        assert_eq!(c.limits.frame_read_timeout_ms, 200);
        assert!(c.validate().is_ok());
        // from_toml validates: zero timeouts are refused.
        assert!(BrokerConfig::from_toml("[limits]\nconnection_idle_timeout_ms = 0\n").is_err());
        assert!(BrokerConfig::from_toml("[limits]\nframe_read_timeout_ms = 0\n").is_err());
        assert_eq!(d.producer_id_expiration_ms, 86_400_000);
        assert!(BrokerConfig::from_toml("[limits]\nproducer_id_expiration_ms = 0\n").is_err());
    }

    #[test]
    fn topic_overrides_round_trip() {
        let mut t = TopicConfig::default();
        t.set("flush.interval_ms", "20").expect("set");
        t.set("segment_bytes", "1048576").expect("set");
        t.set("retention_bytes", "1000").expect("set");
        let mut u = TopicConfig::default();
        for (k, v) in t.entries() {
            u.set(&k, &v).expect("round trip");
        }
        assert_eq!(t, u);
        assert!(t.set("segment_bytes", "10").is_err());
        assert!(t.set("nope", "1").is_err());
        assert!(t.set("flush", "sometimes").is_err());
    }

    #[test]
    fn one_spelling_in_toml_flags_and_messages() {
        // The flag spelling `flush.interval_ms` is valid TOML (a dotted key).
        let c =
            BrokerConfig::from_toml("[topic_defaults]\nflush.interval_ms = 50\n").expect("dotted");
        assert_eq!(c.topic_defaults.flush.interval_ms(), Some(50));
        let mut t = TopicConfig::default();
        t.set("flush.interval_ms", "50").expect("flag");
        assert_eq!(t.flush, c.topic_defaults.flush);
        // Every key `set` knows is a TOML key of [topic_defaults] and is
        // what `entries` prints.
        for (k, _) in TOPIC_SETTINGS {
            let v = match *k {
                "flush" => "\"always\"".to_string(),
                _ => "4096000".to_string(),
            };
            let toml = format!("[topic_defaults]\n{k} = {v}\n");
            BrokerConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{toml}: {e}"));
        }
        let keys: Vec<String> = TopicConfig::default()
            .entries()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            assert!(TOPIC_SETTINGS.iter().any(|(s, _)| s == k), "{k}");
        }
    }

    #[test]
    fn a_bad_flush_names_the_accepted_forms() {
        for bad in [
            "flush = \"never\"",
            "flush = 5",
            "flush = { every_ms = 5 }",
            "flush.interval_ms = -3",
        ] {
            let err = BrokerConfig::from_toml(&format!("[topic_defaults]\n{bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(!err.contains("untagged"), "{bad}: {err}");
            assert!(!err.contains("FlushPolicy"), "{bad}: {err}");
            assert!(err.contains("flush"), "{bad}: {err}");
        }
        let err = BrokerConfig::from_toml("[topic_defaults]\nflush = \"never\"\n")
            .expect_err("never")
            .to_string();
        assert!(err.contains("flush.interval_ms = N"), "{err}");
    }

    #[test]
    fn unlimited_retention_is_minus_one_everywhere() {
        let c =
            BrokerConfig::from_toml("[topic_defaults]\nretention_ms = -1\nretention_bytes = -1\n")
                .expect("toml -1");
        assert_eq!(c.topic_defaults.retention_ms, u64::MAX);
        assert_eq!(c.topic_defaults.retention_bytes, None);
        assert!(BrokerConfig::from_toml("[topic_defaults]\nretention_ms = -2\n").is_err());
        let mut t = TopicConfig::default();
        t.set("retention_ms", "-1").expect("flag -1");
        t.set("retention_bytes", "-1").expect("flag -1");
        assert_eq!(t, c.topic_defaults);
        let entries = t.entries();
        assert!(entries.contains(&("retention_ms".into(), "-1".into())));
        assert!(entries.contains(&("retention_bytes".into(), "-1".into())));
        // topic.json (JSON) round trip, and its older `null` form.
        let json = serde_json::to_string(&t).expect("json");
        assert_eq!(serde_json::from_str::<TopicConfig>(&json).expect("back"), t);
        let old = serde_json::json!({"retention_bytes": null, "retention_ms": 5});
        let back: TopicConfig = serde_json::from_value(old).expect("old topic.json");
        assert_eq!(back.retention_bytes, None);
        assert_eq!(back.retention_ms, 5);
        let err = t.set("retention_ms", "forever").expect_err("bad");
        assert!(err.to_string().contains("-1 for unlimited"), "{err}");
    }
}
