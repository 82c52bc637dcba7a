//! The partition service's requests and responses: plain Rust, no wire
//! shape. A front end maps its protocol's (nested) messages to these flat,
//! per-partition lists and back; results always come in input order.
//!
//! Must not know: any wire shape (FlatBuffers tables, Kafka versions).

use std::time::Duration;

use bytes::Bytes;

use crate::protocol::messages::{Acks, ConfigEntry, OffsetSpec};
use crate::protocol::records::Records;
use crate::protocol::{Offset, PartitionId, ShardId, WireError};

pub use crate::shard::PartResult;

/// One batch to append to one partition.
#[derive(Debug, Clone)]
pub struct ProduceItem {
    pub topic: String,
    pub partition: PartitionId,
    /// One record batch, as received (validated and stamped by the partition).
    pub batch: Bytes,
}

#[derive(Debug, Clone)]
pub struct ProduceRequest {
    pub acks: Acks,
    /// Longest wait for acknowledgement; `None`: no limit.
    pub timeout: Option<Duration>,
    pub items: Vec<ProduceItem>,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub log_start_offset: Offset,
}

/// One partition of a fetch.
#[derive(Debug, Clone)]
pub struct FetchItem {
    pub topic: String,
    pub partition: PartitionId,
    pub offset: Offset,
    /// Most record bytes for this partition (capped by the total budget).
    pub max_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub items: Vec<FetchItem>,
    /// Most record bytes in the whole response (capped by
    /// `limits.max_fetch_bytes`); the first non-empty partition always gets
    /// at least one whole batch, so a consumer always progresses.
    pub max_bytes: u32,
    /// Wait until at least this many record bytes are available...
    pub min_bytes: u32,
    /// ...or this long (capped by `limits.max_fetch_wait_ms`).
    pub max_wait: Duration,
}

/// What one partition of a fetch returned.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Whole batches back to back, as stored, as the pieces the partitions
    /// served (over one or more long-poll rounds): never copied or joined.
    pub records: Records,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

/// One partition of a list-offsets.
#[derive(Debug, Clone)]
pub struct OffsetQuery {
    pub topic: String,
    pub partition: PartitionId,
    pub spec: OffsetSpec,
}

/// `(offset, timestamp_ms)`: the timestamp is -1 unless a timestamp lookup
/// found a record.
pub type ListedOffset = (Offset, i64);

/// One partition of a metadata answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: PartitionId,
    pub owner_shard: ShardId,
    /// Offsets, or why they are unknown (offline partition).
    pub offsets: PartResult<PartitionOffsets>,
}

/// A partition's `log_start_offset <= high_watermark <= log_end_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    pub high_watermark: Offset,
}

/// One topic of a metadata answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionDescription>,
    pub configs: Vec<ConfigEntry>,
}

/// Per requested topic (all topics when none was named), in request order:
/// its description or why it has none.
pub type Metadata = Vec<(String, Result<TopicDescription, WireError>)>;
