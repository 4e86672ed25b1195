//! Kafka error codes and the one place where Sluice's errors are mapped to them.

use storage::batch::BatchError;

/// Kafka protocol error codes used by this broker (see the protocol guide, "Error Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum ErrorCode {
    None = 0,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    LeaderNotAvailable = 5,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    OffsetMetadataTooLarge = 12,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    InvalidTopicException = 17,
    RecordListTooLarge = 18,
    InvalidRequiredAcks = 21,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    InvalidTimestamp = 32,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    InvalidRequest = 42,
    UnsupportedForMessageFormat = 43,
    PolicyViolation = 44,
    OutOfOrderSequenceNumber = 45,
    DuplicateSequenceNumber = 46,
    InvalidProducerEpoch = 47,
    InvalidTxnState = 48,
    TransactionalIdAuthorizationFailed = 53,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    KafkaStorageError = 56,
    FencedLeaderEpoch = 74,
    UnknownLeaderEpoch = 75,
    UnsupportedCompressionType = 76,
    MemberIdRequired = 79,
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    GroupSubscribedToTopic = 86,
    UnknownTopicId = 100,
    InconsistentTopicId = 110,
    MismatchedEndpointType = 114,
    UnsupportedEndpointType = 115,
    UnknownServerError = -1,
    InvalidRecord = 87,
}

impl ErrorCode {
    pub fn code(self) -> i16 {
        self as i16
    }
}

/// Maps a storage error to the Kafka error a client should see for that partition.
pub fn storage_error_code(error: &storage::Error) -> ErrorCode {
    match error {
        storage::Error::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
        storage::Error::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
        storage::Error::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        storage::Error::InvalidBatch(batch) => batch_error_code(batch),
        // Durability could not be established: retriable for the client, never a false ack.
        storage::Error::Wal(_) => ErrorCode::KafkaStorageError,
        storage::Error::ObjectStore(_) | storage::Error::CorruptSegment { .. } => {
            ErrorCode::KafkaStorageError
        }
        storage::Error::Metadata(_) => ErrorCode::RequestTimedOut,
        storage::Error::Rejected(metadata::Rejection::StaleLeaderEpoch { .. }) => {
            ErrorCode::NotLeaderOrFollower
        }
        storage::Error::Rejected(metadata::Rejection::UnknownTopicOrPartition) => {
            ErrorCode::UnknownTopicOrPartition
        }
        storage::Error::Rejected(_) => ErrorCode::UnknownServerError,
        storage::Error::ShuttingDown => ErrorCode::NotLeaderOrFollower,
        storage::Error::TimedOut => ErrorCode::RequestTimedOut,
        storage::Error::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
        storage::Error::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
        storage::Error::DuplicateSequence { .. } => ErrorCode::DuplicateSequenceNumber,
    }
}

pub fn batch_error_code(error: &BatchError) -> ErrorCode {
    match error {
        BatchError::CrcMismatch { .. } | BatchError::Malformed(_) => ErrorCode::CorruptMessage,
        BatchError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
        BatchError::InvalidRecord(_) => ErrorCode::InvalidRecord,
        BatchError::UnsupportedCompression(_) => ErrorCode::CorruptMessage,
    }
}

/// Maps a metadata rejection (from a proposed command) to a Kafka error.
pub fn rejection_code(rejection: &metadata::Rejection) -> ErrorCode {
    match rejection {
        metadata::Rejection::TopicExists => ErrorCode::TopicAlreadyExists,
        metadata::Rejection::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
        metadata::Rejection::StaleLeaderEpoch { .. } => ErrorCode::NotLeaderOrFollower,
        metadata::Rejection::NonContiguousSegment(_) => ErrorCode::UnknownServerError,
        metadata::Rejection::Invalid(_) => ErrorCode::InvalidRequest,
        metadata::Rejection::Fenced(_) => ErrorCode::NotLeaderOrFollower,
    }
}
