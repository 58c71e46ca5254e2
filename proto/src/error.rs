//! Errors on the wire: one table maps every [`ErrorReason`] to a gRPC code
//! and says whether a client may retry it.
//!
//! A server builds a status with [`ErrorInfo::into_status`]; the encoded
//! [`ErrorDetail`] travels in the status details, and the reason's name also
//! in the `strata-error-reason` metadata entry for tools like grpcurl. A client
//! reads it back with [`ErrorInfo::from_status`], which also classifies
//! statuses that did not come from a Strata broker (a proxy, the transport).

use std::time::Duration;

use prost::Message;
use tonic::Code;

use crate::v1::{ErrorDetail, ErrorReason};

/// Response metadata key carrying the reason's name (`NOT_OWNER`, ...).
pub const REASON_METADATA_KEY: &str = "strata-error-reason";

impl ErrorReason {
    /// The gRPC code a status with this reason carries.
    pub fn code(self) -> Code {
        match self {
            ErrorReason::Unspecified => Code::Unknown,
            ErrorReason::UnknownTopic | ErrorReason::UnknownPartition => Code::NotFound,
            ErrorReason::NotOwner
            | ErrorReason::OutOfOrderSequence
            | ErrorReason::ProducerFenced
            | ErrorReason::NotCoordinator
            | ErrorReason::UnknownMemberId
            | ErrorReason::FencedMemberEpoch
            | ErrorReason::NonEmptyGroup
            | ErrorReason::UnreleasedInstanceId
            | ErrorReason::IllegalGeneration
            | ErrorReason::RebalanceInProgress
            | ErrorReason::MemberIdRequired
            | ErrorReason::InconsistentGroupProtocol => Code::FailedPrecondition,
            ErrorReason::GroupIdNotFound => Code::NotFound,
            ErrorReason::CoordinatorLoadInProgress | ErrorReason::CoordinatorNotAvailable => {
                Code::Unavailable
            }
            ErrorReason::Fenced => Code::Aborted,
            ErrorReason::OffsetOutOfRange => Code::OutOfRange,
            ErrorReason::InvalidBatch
            | ErrorReason::InvalidRequest
            | ErrorReason::InvalidRegularExpression
            | ErrorReason::UnsupportedAssignor => Code::InvalidArgument,
            ErrorReason::RecordTooLarge => Code::ResourceExhausted,
            ErrorReason::DuplicateSequence | ErrorReason::TopicAlreadyExists => Code::AlreadyExists,
            ErrorReason::StoreUnavailable | ErrorReason::BrokerUnavailable => Code::Unavailable,
            ErrorReason::Internal => Code::Internal,
            ErrorReason::Unauthenticated => Code::Unauthenticated,
            ErrorReason::TopicAuthorizationFailed
            | ErrorReason::GroupAuthorizationFailed
            | ErrorReason::ClusterAuthorizationFailed => Code::PermissionDenied,
        }
    }

    /// True when sending the same request again (after a metadata refresh
    /// for [`ErrorReason::NotOwner`] and [`ErrorReason::Fenced`], after
    /// finding the coordinator again for [`ErrorReason::NotCoordinator`])
    /// may succeed. [`ErrorReason::UnknownMemberId`] and
    /// [`ErrorReason::FencedMemberEpoch`] are not: the member must rejoin.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorReason::NotOwner
                | ErrorReason::Fenced
                | ErrorReason::StoreUnavailable
                | ErrorReason::BrokerUnavailable
                | ErrorReason::NotCoordinator
                | ErrorReason::CoordinatorLoadInProgress
                | ErrorReason::CoordinatorNotAvailable
        )
    }

    /// True when a group member should find its group's coordinator again
    /// before retrying.
    pub fn needs_coordinator_refresh(self) -> bool {
        matches!(
            self,
            ErrorReason::NotCoordinator
                | ErrorReason::CoordinatorNotAvailable
                | ErrorReason::BrokerUnavailable
        )
    }

    /// True when the client should refresh its metadata (partition owners)
    /// before retrying.
    pub fn needs_metadata_refresh(self) -> bool {
        matches!(
            self,
            ErrorReason::NotOwner | ErrorReason::Fenced | ErrorReason::BrokerUnavailable
        )
    }

    /// The reason a status without Strata details most likely means.
    fn from_code(code: Code) -> ErrorReason {
        match code {
            // A Strata broker always names its reason; a bare `Unknown` is
            // what tonic reports when the connection broke mid-request
            // ("transport error"): the broker died or restarted.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                ErrorReason::BrokerUnavailable
            }
            Code::ResourceExhausted => ErrorReason::RecordTooLarge,
            Code::InvalidArgument => ErrorReason::InvalidRequest,
            Code::NotFound => ErrorReason::UnknownTopic,
            Code::OutOfRange => ErrorReason::OffsetOutOfRange,
            Code::Aborted => ErrorReason::Fenced,
            Code::Internal | Code::DataLoss => ErrorReason::Internal,
            Code::Unauthenticated => ErrorReason::Unauthenticated,
            _ => ErrorReason::Unspecified,
        }
    }
}

/// A decoded Strata error: reason, message and hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// What went wrong, machine-readable.
    pub reason: ErrorReason,
    /// What went wrong, for people.
    pub message: String,
    /// For `NOT_OWNER` / `FENCED`: the partition's current owner, if known.
    pub owner_broker_id: Option<u32>,
    /// Its gRPC address.
    pub owner_address: Option<String>,
    /// For retryable errors: how long to wait first.
    pub retry_after: Option<Duration>,
}

impl ErrorInfo {
    /// An error with `reason` and `message` and no hints.
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            owner_broker_id: None,
            owner_address: None,
            retry_after: None,
        }
    }

    /// Names the partition's current owner.
    pub fn with_owner(mut self, broker_id: u32, address: Option<String>) -> Self {
        self.owner_broker_id = Some(broker_id);
        self.owner_address = address;
        self
    }

    /// Asks the client to wait before retrying.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// See [`ErrorReason::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.reason.is_retryable()
    }

    /// The status a server returns.
    pub fn into_status(self) -> tonic::Status {
        let detail = ErrorDetail {
            reason: self.reason as i32,
            owner_broker_id: self.owner_broker_id,
            owner_address: self.owner_address,
            retry_after_ms: self
                .retry_after
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            REASON_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static(self.reason.as_str_name()),
        );
        tonic::Status::with_details_and_metadata(
            self.reason.code(),
            self.message,
            detail.encode_to_vec().into(),
            metadata,
        )
    }

    /// Reads a status back, whoever sent it.
    pub fn from_status(status: &tonic::Status) -> Self {
        let detail = (!status.details().is_empty())
            .then(|| ErrorDetail::decode(status.details()).ok())
            .flatten();
        let reason = detail
            .as_ref()
            .and_then(|d| ErrorReason::try_from(d.reason).ok())
            .filter(|r| *r != ErrorReason::Unspecified)
            .or_else(|| {
                status
                    .metadata()
                    .get(REASON_METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(ErrorReason::from_str_name)
            })
            .unwrap_or_else(|| ErrorReason::from_code(status.code()));
        let detail = detail.unwrap_or_default();
        Self {
            reason,
            message: status.message().to_owned(),
            owner_broker_id: detail.owner_broker_id,
            owner_address: detail.owner_address,
            retry_after: (detail.retry_after_ms > 0)
                .then(|| Duration::from_millis(detail.retry_after_ms)),
        }
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.reason.as_str_name())
    }
}

impl std::error::Error for ErrorInfo {}

impl From<ErrorInfo> for tonic::Status {
    fn from(e: ErrorInfo) -> Self {
        e.into_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorReason; 24] = [
        ErrorReason::Unspecified,
        ErrorReason::UnknownTopic,
        ErrorReason::UnknownPartition,
        ErrorReason::NotOwner,
        ErrorReason::Fenced,
        ErrorReason::OffsetOutOfRange,
        ErrorReason::InvalidBatch,
        ErrorReason::RecordTooLarge,
        ErrorReason::DuplicateSequence,
        ErrorReason::OutOfOrderSequence,
        ErrorReason::ProducerFenced,
        ErrorReason::TopicAlreadyExists,
        ErrorReason::InvalidRequest,
        ErrorReason::StoreUnavailable,
        ErrorReason::BrokerUnavailable,
        ErrorReason::Internal,
        ErrorReason::NotCoordinator,
        ErrorReason::CoordinatorLoadInProgress,
        ErrorReason::CoordinatorNotAvailable,
        ErrorReason::UnknownMemberId,
        ErrorReason::FencedMemberEpoch,
        ErrorReason::GroupIdNotFound,
        ErrorReason::NonEmptyGroup,
        ErrorReason::UnreleasedInstanceId,
    ];

    #[test]
    fn every_reason_survives_a_status_round_trip() {
        for reason in ALL.into_iter().skip(1) {
            let sent = ErrorInfo::new(reason, format!("boom {reason:?}"))
                .with_owner(7, Some("http://127.0.0.1:1".into()))
                .with_retry_after(Duration::from_millis(250));
            let status = sent.clone().into_status();
            assert_eq!(status.code(), reason.code());
            assert_eq!(ErrorInfo::from_status(&status), sent);
        }
    }

    #[test]
    fn reason_falls_back_to_metadata_then_code() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(REASON_METADATA_KEY, "NOT_OWNER".parse().expect("ascii"));
        let s = tonic::Status::with_metadata(Code::FailedPrecondition, "x", md);
        assert_eq!(ErrorInfo::from_status(&s).reason, ErrorReason::NotOwner);
        for s in [
            tonic::Status::unavailable("connection refused"),
            tonic::Status::unknown("transport error"),
        ] {
            let info = ErrorInfo::from_status(&s);
            assert_eq!(info.reason, ErrorReason::BrokerUnavailable, "{s}");
            assert!(info.is_retryable());
        }
    }

    #[test]
    fn retryable_reasons_are_the_transient_ones() {
        let retryable: Vec<_> = ALL.into_iter().filter(|r| r.is_retryable()).collect();
        assert_eq!(
            retryable,
            [
                ErrorReason::NotOwner,
                ErrorReason::Fenced,
                ErrorReason::StoreUnavailable,
                ErrorReason::BrokerUnavailable,
                ErrorReason::NotCoordinator,
                ErrorReason::CoordinatorLoadInProgress,
                ErrorReason::CoordinatorNotAvailable,
            ]
        );
    }
}
