//! A partition's error type and its mapping to wire errors and from storage
//! errors (split out of [`super`]).
//!
//! Owns: `PartitionError`, `to_wire`, `from_storage`.
//!
//! Must not know: connections, other shards.

use std::path::PathBuf;

use crate::protocol::batch::BatchError;
use crate::protocol::{ErrorCode, Offset, TopicPartition, WireError};
use crate::storage::StorageError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    #[error("{tp}: offset {offset} is not in [{log_start}, {log_end}]")]
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
    /// A replica append that does not continue this log (offset gap or
    /// overlap, or an older leader epoch).
    #[error("replica append to {tp} refused: {reason}")]
    ReplicaMismatch { tp: TopicPartition, reason: String },
    /// A leader epoch older than the partition's current one.
    #[error("leader epoch {epoch} of {tp} is older than the current epoch {current}")]
    StaleLeaderEpoch {
        tp: TopicPartition,
        epoch: u32,
        current: u32,
    },
    /// An idempotent producer's batch that is not the next in its sequence
    /// (a gap, or a retry older than the batches the partition remembers).
    #[error("{tp}: producer {producer_id} sent sequence {got} where {expected} was expected")]
    OutOfOrderSequence {
        tp: TopicPartition,
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// An idempotent producer's batch with an epoch older than the
    /// producer's current one (a fenced, zombie instance).
    #[error("{tp}: producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    InvalidProducerEpoch {
        tp: TopicPartition,
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A batch of a producer id this partition does not know (never seen or
    /// expired) that does not start at sequence 0.
    #[error("{tp}: producer {producer_id} is unknown here (sequence {sequence}, not 0): bump the epoch to start again at 0")]
    UnknownProducerId {
        tp: TopicPartition,
        producer_id: i64,
        sequence: i32,
    },
}

impl PartitionError {
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            PartitionError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            PartitionError::CorruptBatch(BatchError::DecompressedTooLarge(_)) => {
                ErrorCode::MessageTooLarge
            }
            PartitionError::CorruptBatch(_) => ErrorCode::CorruptBatch,
            PartitionError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            PartitionError::StorageFull(_) => ErrorCode::StorageFull,
            PartitionError::CorruptData { .. } => ErrorCode::CorruptData,
            PartitionError::Storage(_) => ErrorCode::StorageError,
            // Closed: the partition is being deleted or the broker is
            // stopping; "not here (any more)", which clients treat as
            // retriable after a metadata refresh (as Kafka does). Not
            // NotLeader: that will mean another replica leads.
            PartitionError::Closed(_) => ErrorCode::UnknownTopicOrPartition,
            PartitionError::ReplicaMismatch { .. } => ErrorCode::InvalidRequest,
            PartitionError::StaleLeaderEpoch { .. } => ErrorCode::NotLeader,
            PartitionError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            PartitionError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            PartitionError::UnknownProducerId { .. } => ErrorCode::UnknownProducerId,
        };
        // The wire error's display already names the code ("storage full:
        // ..."): send the detail alone where this error's text would only
        // repeat it.
        let message = match self {
            PartitionError::StorageFull(detail) | PartitionError::Storage(detail) => detail.clone(),
            PartitionError::CorruptBatch(e) => e.to_string(),
            other => other.to_string(),
        };
        WireError::new(code, message)
    }
}

impl PartitionError {
    pub(super) fn from_storage(e: StorageError) -> Self {
        if e.is_storage_full() {
            return PartitionError::StorageFull(e.to_string());
        }
        match e {
            StorageError::Corrupt {
                file,
                offset,
                reason,
            } => PartitionError::CorruptData {
                file,
                offset,
                reason,
            },
            e @ (StorageError::Io { .. } | StorageError::UnknownFormat { .. }) => {
                PartitionError::Storage(e.to_string())
            }
        }
    }
}
