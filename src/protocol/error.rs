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
    // Consumer groups.
    CoordinatorLoadInProgress,
    CoordinatorNotAvailable,
    NotCoordinator,
    IllegalGeneration,
    InconsistentGroupProtocol,
    UnknownMemberId,
    InvalidSessionTimeout,
    RebalanceInProgress,
    MemberIdRequired,
    GroupIdNotFound,
    NonEmptyGroup,
    FencedInstanceId,
    OffsetMetadataTooLarge,
    InvalidGroupId,
    GroupMaxSizeReached,
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
            ErrorCode::CoordinatorLoadInProgress => fb::ErrorCode::CoordinatorLoadInProgress,
            ErrorCode::CoordinatorNotAvailable => fb::ErrorCode::CoordinatorNotAvailable,
            ErrorCode::NotCoordinator => fb::ErrorCode::NotCoordinator,
            ErrorCode::IllegalGeneration => fb::ErrorCode::IllegalGeneration,
            ErrorCode::InconsistentGroupProtocol => fb::ErrorCode::InconsistentGroupProtocol,
            ErrorCode::UnknownMemberId => fb::ErrorCode::UnknownMemberId,
            ErrorCode::InvalidSessionTimeout => fb::ErrorCode::InvalidSessionTimeout,
            ErrorCode::RebalanceInProgress => fb::ErrorCode::RebalanceInProgress,
            ErrorCode::MemberIdRequired => fb::ErrorCode::MemberIdRequired,
            ErrorCode::GroupIdNotFound => fb::ErrorCode::GroupIdNotFound,
            ErrorCode::NonEmptyGroup => fb::ErrorCode::NonEmptyGroup,
            ErrorCode::FencedInstanceId => fb::ErrorCode::FencedInstanceId,
            ErrorCode::OffsetMetadataTooLarge => fb::ErrorCode::OffsetMetadataTooLarge,
            ErrorCode::InvalidGroupId => fb::ErrorCode::InvalidGroupId,
            ErrorCode::GroupMaxSizeReached => fb::ErrorCode::GroupMaxSizeReached,
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
            fb::ErrorCode::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress,
            fb::ErrorCode::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
            fb::ErrorCode::NotCoordinator => ErrorCode::NotCoordinator,
            fb::ErrorCode::IllegalGeneration => ErrorCode::IllegalGeneration,
            fb::ErrorCode::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
            fb::ErrorCode::UnknownMemberId => ErrorCode::UnknownMemberId,
            fb::ErrorCode::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout,
            fb::ErrorCode::RebalanceInProgress => ErrorCode::RebalanceInProgress,
            fb::ErrorCode::MemberIdRequired => ErrorCode::MemberIdRequired,
            fb::ErrorCode::GroupIdNotFound => ErrorCode::GroupIdNotFound,
            fb::ErrorCode::NonEmptyGroup => ErrorCode::NonEmptyGroup,
            fb::ErrorCode::FencedInstanceId => ErrorCode::FencedInstanceId,
            fb::ErrorCode::OffsetMetadataTooLarge => ErrorCode::OffsetMetadataTooLarge,
            fb::ErrorCode::InvalidGroupId => ErrorCode::InvalidGroupId,
            fb::ErrorCode::GroupMaxSizeReached => ErrorCode::GroupMaxSizeReached,
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
            ErrorCode::CoordinatorLoadInProgress => "coordinator load in progress",
            ErrorCode::CoordinatorNotAvailable => "coordinator not available",
            ErrorCode::NotCoordinator => "not coordinator",
            ErrorCode::IllegalGeneration => "illegal generation",
            ErrorCode::InconsistentGroupProtocol => "inconsistent group protocol",
            ErrorCode::UnknownMemberId => "unknown member id",
            ErrorCode::InvalidSessionTimeout => "invalid session timeout",
            ErrorCode::RebalanceInProgress => "rebalance in progress",
            ErrorCode::MemberIdRequired => "member id required",
            ErrorCode::GroupIdNotFound => "group id not found",
            ErrorCode::NonEmptyGroup => "non-empty group",
            ErrorCode::FencedInstanceId => "fenced instance id",
            ErrorCode::OffsetMetadataTooLarge => "offset metadata too large",
            ErrorCode::InvalidGroupId => "invalid group id",
            ErrorCode::GroupMaxSizeReached => "group max size reached",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code the schema defines maps to a distinct Rust code and back
    /// to the same number; the next number (a newer peer's) reads as Internal.
    #[test]
    fn every_wire_code_round_trips() {
        let last = fb::ErrorCode::ENUM_MAX;
        let mut seen = std::collections::HashSet::new();
        for n in fb::ErrorCode::ENUM_MIN..=last {
            let code = ErrorCode::from_wire(fb::ErrorCode(n));
            assert_eq!(code.to_wire().0, n, "{code:?}");
            assert!(seen.insert(code), "{code:?} twice");
            assert!(!code.name().is_empty());
        }
        assert_eq!(
            ErrorCode::from_wire(fb::ErrorCode(last + 1)),
            ErrorCode::Internal
        );
    }
}
