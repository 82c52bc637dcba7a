//! Error codes carried on the wire, and the typed error every layer maps to them.
//!
//! Invariant: the numeric values equal `corelog.fb.ErrorCode` in
//! flatbuffers/corelog.fbs; `from_wire` accepts unknown values as `Internal`.

use super::generated::fb;

/// Wire error code (mirror of `fb::ErrorCode`, as a Rust enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    None,
    UnknownTopicOrPartition,
    OffsetOutOfRange,
    InvalidRequest,
    MessageTooLarge,
    CorruptBatch,
    StorageError,
    TopicAlreadyExists,
    InvalidConfig,
    InvalidPartitions,
    UnsupportedVersion,
    RequestTimedOut,
    NotLeader,
    StorageFull,
    CorruptData,
    Internal,
    OutOfOrderSequence,
    InvalidProducerEpoch,
    UnknownProducerId,
}

impl ErrorCode {
    pub fn to_wire(self) -> fb::ErrorCode {
        match self {
            ErrorCode::None => fb::ErrorCode::None,
            ErrorCode::UnknownTopicOrPartition => fb::ErrorCode::UnknownTopicOrPartition,
            ErrorCode::OffsetOutOfRange => fb::ErrorCode::OffsetOutOfRange,
            ErrorCode::InvalidRequest => fb::ErrorCode::InvalidRequest,
            ErrorCode::MessageTooLarge => fb::ErrorCode::MessageTooLarge,
            ErrorCode::CorruptBatch => fb::ErrorCode::CorruptBatch,
            ErrorCode::StorageError => fb::ErrorCode::StorageError,
            ErrorCode::TopicAlreadyExists => fb::ErrorCode::TopicAlreadyExists,
            ErrorCode::InvalidConfig => fb::ErrorCode::InvalidConfig,
            ErrorCode::InvalidPartitions => fb::ErrorCode::InvalidPartitions,
            ErrorCode::UnsupportedVersion => fb::ErrorCode::UnsupportedVersion,
            ErrorCode::RequestTimedOut => fb::ErrorCode::RequestTimedOut,
            ErrorCode::NotLeader => fb::ErrorCode::NotLeader,
            ErrorCode::StorageFull => fb::ErrorCode::StorageFull,
            ErrorCode::CorruptData => fb::ErrorCode::CorruptData,
            ErrorCode::Internal => fb::ErrorCode::Internal,
            ErrorCode::OutOfOrderSequence => fb::ErrorCode::OutOfOrderSequence,
            ErrorCode::InvalidProducerEpoch => fb::ErrorCode::InvalidProducerEpoch,
            ErrorCode::UnknownProducerId => fb::ErrorCode::UnknownProducerId,
        }
    }

    pub fn from_wire(code: fb::ErrorCode) -> Self {
        match code {
            fb::ErrorCode::None => ErrorCode::None,
            fb::ErrorCode::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
            fb::ErrorCode::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
            fb::ErrorCode::InvalidRequest => ErrorCode::InvalidRequest,
            fb::ErrorCode::MessageTooLarge => ErrorCode::MessageTooLarge,
            fb::ErrorCode::CorruptBatch => ErrorCode::CorruptBatch,
            fb::ErrorCode::StorageError => ErrorCode::StorageError,
            fb::ErrorCode::TopicAlreadyExists => ErrorCode::TopicAlreadyExists,
            fb::ErrorCode::InvalidConfig => ErrorCode::InvalidConfig,
            fb::ErrorCode::InvalidPartitions => ErrorCode::InvalidPartitions,
            fb::ErrorCode::UnsupportedVersion => ErrorCode::UnsupportedVersion,
            fb::ErrorCode::RequestTimedOut => ErrorCode::RequestTimedOut,
            fb::ErrorCode::NotLeader => ErrorCode::NotLeader,
            fb::ErrorCode::StorageFull => ErrorCode::StorageFull,
            fb::ErrorCode::CorruptData => ErrorCode::CorruptData,
            fb::ErrorCode::OutOfOrderSequence => ErrorCode::OutOfOrderSequence,
            fb::ErrorCode::InvalidProducerEpoch => ErrorCode::InvalidProducerEpoch,
            fb::ErrorCode::UnknownProducerId => ErrorCode::UnknownProducerId,
            _ => ErrorCode::Internal,
        }
    }

    /// A short stable name, used in CLI messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "none",
            ErrorCode::UnknownTopicOrPartition => "unknown topic or partition",
            ErrorCode::OffsetOutOfRange => "offset out of range",
            ErrorCode::InvalidRequest => "invalid request",
            ErrorCode::MessageTooLarge => "message too large",
            ErrorCode::CorruptBatch => "corrupt batch",
            ErrorCode::StorageError => "storage error",
            ErrorCode::TopicAlreadyExists => "topic already exists",
            ErrorCode::InvalidConfig => "invalid config",
            ErrorCode::InvalidPartitions => "invalid partitions",
            ErrorCode::UnsupportedVersion => "unsupported version",
            ErrorCode::RequestTimedOut => "request timed out",
            ErrorCode::NotLeader => "not leader",
            ErrorCode::StorageFull => "storage full",
            ErrorCode::CorruptData => "corrupt data",
            ErrorCode::Internal => "internal error",
            ErrorCode::OutOfOrderSequence => "out of order sequence",
            ErrorCode::InvalidProducerEpoch => "invalid producer epoch (fenced)",
            ErrorCode::UnknownProducerId => "unknown producer id",
        }
    }
}

/// An error as it travels on the wire: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
