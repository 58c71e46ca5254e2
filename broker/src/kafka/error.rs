//! Kafka error codes for broker errors: the same classification the gRPC
//! front end uses ([`ErrorReason`], `proto/src/error.rs`), encoded as
//! Kafka's codes. The match is exhaustive, so a new reason cannot be added
//! without choosing its Kafka code.

use kafka_protocol::ResponseError;
use strata_proto::v1::ErrorReason;

use crate::error::BrokerError;

/// The Kafka error for `reason` on the data path (produce, fetch,
/// metadata, topics).
pub fn code(reason: ErrorReason) -> ResponseError {
    match reason {
        ErrorReason::Unspecified | ErrorReason::Internal => ResponseError::UnknownServerError,
        ErrorReason::UnknownTopic | ErrorReason::UnknownPartition => {
            ResponseError::UnknownTopicOrPartition
        }
        // Moved or fenced: the client refreshes metadata and follows.
        ErrorReason::NotOwner | ErrorReason::Fenced => ResponseError::NotLeaderOrFollower,
        ErrorReason::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        ErrorReason::DuplicateSequence => ResponseError::DuplicateSequenceNumber,
        ErrorReason::ProducerFenced => ResponseError::InvalidProducerEpoch,
        ErrorReason::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
        ErrorReason::InvalidBatch => ResponseError::CorruptMessage,
        ErrorReason::InvalidRequest => ResponseError::InvalidRequest,
        ErrorReason::InvalidRegularExpression => ResponseError::InvalidRegularExpression,
        ErrorReason::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
        ErrorReason::RecordTooLarge => ResponseError::MessageTooLarge,
        ErrorReason::TopicAlreadyExists => ResponseError::TopicAlreadyExists,
        // Retriable; clients back off and refresh metadata.
        ErrorReason::StoreUnavailable => ResponseError::KafkaStorageError,
        ErrorReason::BrokerUnavailable => ResponseError::LeaderNotAvailable,
        ErrorReason::NotCoordinator => ResponseError::NotCoordinator,
        ErrorReason::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        ErrorReason::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        ErrorReason::UnknownMemberId => ResponseError::UnknownMemberId,
        ErrorReason::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        ErrorReason::GroupIdNotFound => ResponseError::GroupIdNotFound,
        ErrorReason::NonEmptyGroup => ResponseError::NonEmptyGroup,
        ErrorReason::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
        ErrorReason::IllegalGeneration => ResponseError::IllegalGeneration,
        ErrorReason::RebalanceInProgress => ResponseError::RebalanceInProgress,
        ErrorReason::MemberIdRequired => ResponseError::MemberIdRequired,
        ErrorReason::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        ErrorReason::Unauthenticated => ResponseError::SaslAuthenticationFailed,
        ErrorReason::TopicAuthorizationFailed => ResponseError::TopicAuthorizationFailed,
        ErrorReason::GroupAuthorizationFailed => ResponseError::GroupAuthorizationFailed,
        ErrorReason::ClusterAuthorizationFailed => ResponseError::ClusterAuthorizationFailed,
    }
}

/// [`code`] of `e`, as the number a response carries.
pub fn code_of(e: &BrokerError) -> i16 {
    code(e.reason()).code()
}

/// The Kafka error for `e` about a topic a request named by name or
/// (`by_id`) by id: an unknown topic is `UNKNOWN_TOPIC_ID` in the latter.
pub fn topic_code_of(e: &BrokerError, by_id: bool) -> i16 {
    match e.reason() {
        ErrorReason::UnknownTopic if by_id => ResponseError::UnknownTopicId.code(),
        _ => code_of(e),
    }
}

/// The Kafka error for `e` from a group API: a broker that cannot serve
/// groups right now means "find the coordinator again".
pub fn group_code_of(e: &BrokerError) -> i16 {
    match e.reason() {
        ErrorReason::BrokerUnavailable | ErrorReason::StoreUnavailable => {
            ResponseError::CoordinatorNotAvailable.code()
        }
        reason => code(reason).code(),
    }
}
