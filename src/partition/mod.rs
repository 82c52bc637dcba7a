//! One partition's log state and its append/fetch paths.
//! TODO(helper: storage): implement the API below.
//!
//! Owned by exactly one shard (it is `!Send`: `Rc`, `RefCell`).
//! Invariants: log_start_offset <= high_watermark <= log_end_offset;
//! offsets are assigned synchronously in `append` call order.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::TopicConfig;
use crate::protocol::batch::BatchError;
use crate::protocol::messages::OffsetSpec;
use crate::protocol::{ErrorCode, Offset, TopicPartition, WireError};

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("offset {offset} is out of range [{log_start}, {log_end}] for {tp}")]
    OffsetOutOfRange {
        tp: TopicPartition,
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("corrupt batch: {0}")]
    CorruptBatch(#[from] BatchError),
    #[error("batch of {bytes} bytes exceeds max_batch_bytes ({max_batch_bytes})")]
    MessageTooLarge { bytes: usize, max_batch_bytes: u32 },
    #[error("storage full: {0}")]
    StorageFull(String),
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    CorruptData {
        file: PathBuf,
        offset: Offset,
        reason: String,
    },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("partition {0} is closed")]
    Closed(TopicPartition),
}

impl PartitionError {
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            PartitionError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            PartitionError::CorruptBatch(_) => ErrorCode::CorruptBatch,
            PartitionError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            PartitionError::StorageFull(_) => ErrorCode::StorageFull,
            PartitionError::CorruptData { .. } => ErrorCode::CorruptData,
            PartitionError::Storage(_) => ErrorCode::StorageError,
            PartitionError::Closed(_) => ErrorCode::NotLeader,
        };
        WireError::new(code, self.to_string())
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub log_start_offset: Offset,
}

/// Returned by `Partition::append` once offsets are assigned; `wait` resolves
/// when the batch is as durable as the topic's flush policy requires.
pub struct AppendTicket {
    _todo: (),
}

impl AppendTicket {
    pub fn result(&self) -> AppendResult {
        todo!()
    }
    pub async fn wait(self) -> Result<AppendResult, PartitionError> {
        todo!()
    }
}

#[derive(Debug, Clone)]
pub struct FetchData {
    /// Whole batches, the first one containing `fetch_offset`, none at or
    /// beyond the high watermark.
    pub records: Bytes,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

#[derive(Debug, Clone, Copy)]
pub struct PartitionLimits {
    pub max_batch_bytes: u32,
}

pub struct Partition {
    _todo: (),
}

impl Partition {
    /// Opens (creating if absent) the partition stored in `dir`, recovering
    /// the active segment's tail and rebuilding missing indexes.
    pub async fn open(
        _tp: TopicPartition,
        _dir: PathBuf,
        _config: TopicConfig,
        _limits: PartitionLimits,
    ) -> Result<Rc<Partition>, PartitionError> {
        todo!()
    }
    /// Validates the batch, assigns offsets and queues it (synchronously, so
    /// call order is offset order).
    pub fn append(self: &Rc<Self>, _batch: Bytes) -> Result<AppendTicket, PartitionError> {
        todo!()
    }
    pub async fn fetch(
        &self,
        _offset: Offset,
        _max_bytes: u32,
    ) -> Result<FetchData, PartitionError> {
        todo!()
    }
    /// Resolves when the high watermark passes `offset` or at `deadline`.
    pub async fn wait_for_data(&self, _offset: Offset, _deadline: Instant) {
        todo!()
    }
    pub async fn list_offset(&self, _spec: OffsetSpec) -> Result<(Offset, i64), PartitionError> {
        todo!()
    }
    pub fn log_start_offset(&self) -> Offset {
        todo!()
    }
    pub fn log_end_offset(&self) -> Offset {
        todo!()
    }
    pub fn high_watermark(&self) -> Offset {
        todo!()
    }
    pub fn config(&self) -> TopicConfig {
        todo!()
    }
    /// Syncs, writes indexes and stops the writer; later calls fail `Closed`.
    pub async fn close(&self) -> Result<(), PartitionError> {
        todo!()
    }
}
