//! The broker's error type and the one place where errors become gRPC
//! statuses.
//!
//! Domain modules (topics, partitions, producer ids) return [`BrokerError`];
//! the services convert it at their edge with [`BrokerError::into_status`],
//! which builds every status through the proto error table
//! (`strata_proto::ErrorInfo`), so the client can map the machine-readable
//! reason back. Storage errors are mapped by [`storage_status`]:
//!
//! | storage error                                 | reason                 |
//! |-----------------------------------------------|------------------------|
//! | `InvalidBatch(TooLarge / TooManyRecords)`     | `RECORD_TOO_LARGE`     |
//! | `InvalidBatch(_)`                             | `INVALID_BATCH`        |
//! | `TooLarge`                                    | `RECORD_TOO_LARGE`     |
//! | `OffsetOutOfRange`                            | `OFFSET_OUT_OF_RANGE`  |
//! | `OutOfOrderSequence` got < expected           | `DUPLICATE_SEQUENCE`   |
//! | `OutOfOrderSequence` otherwise                | `OUT_OF_ORDER_SEQUENCE`|
//! | `ProducerFenced`                              | `PRODUCER_FENCED`      |
//! | `Fenced` (and store `AlreadyExists`)          | `FENCED`               |
//! | `Unavailable`                                 | `BROKER_UNAVAILABLE`   |
//! | `OwnedElsewhere` (a move in progress)         | `NOT_OWNER` + retry-after |
//! | `Store` of kind `Transient`                   | `STORE_UNAVAILABLE` + retry-after |
//! | `InvalidName`, `Config`                       | `INVALID_REQUEST`      |
//! | anything else                                 | `INTERNAL`             |
//!
//! Messages keep the storage error's text and name the topic-partition.

use std::time::Duration;

use axum::http;
use strata_proto::ErrorInfo;
use strata_proto::v1::ErrorReason;
use strata_storage::batch::BatchError;
use strata_storage::{Error as StorageError, ErrorKind};

use crate::auth::acl::ResourceType;
use crate::groups::GroupError;

/// Result alias of the broker's domain modules.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// How long clients are asked to wait when the broker is not ready.
const BROKER_RETRY_AFTER: Duration = Duration::from_millis(500);

/// How long group members are asked to wait while their coordinator
/// loads or moves.
const COORDINATOR_RETRY_AFTER: Duration = Duration::from_millis(200);

/// How long clients are asked to wait when a partition has no owner yet
/// (moving, or not assigned yet).
const NOT_OWNER_RETRY_AFTER: Duration = Duration::from_millis(50);

/// Everything a broker request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The topic does not exist.
    #[error("unknown topic; create it first (strata topic create {0}): {0}")]
    UnknownTopic(String),
    /// The topic exists but has fewer partitions.
    #[error("unknown partition: topic {topic} has partitions 0..{count}, got {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        count: u32,
    },
    /// Create of a topic that exists.
    #[error("topic already exists; use if_not_exists to accept it: {0}")]
    TopicAlreadyExists(String),
    /// A malformed request.
    #[error("{0}")]
    InvalidRequest(String),
    /// The request is bigger than a limit.
    #[error("{0}")]
    TooLarge(String),
    /// Record batches that do not parse (framing the front end checks
    /// before the storage engine validates each batch).
    #[error("{0}")]
    CorruptBatch(String),
    /// Another broker serves the partition (or none does yet, during a
    /// move or before the controller assigned it).
    #[error("{tp} is not served by this broker: {detail}")]
    NotOwner {
        /// The partition.
        tp: String,
        /// The broker it is assigned to, and that broker's address.
        owner: Option<(u32, String)>,
        /// What is going on, for people.
        detail: String,
    },
    /// The broker is starting or shutting down.
    #[error("broker is {0}; retry, possibly on another broker")]
    Unavailable(&'static str),
    /// A limit of this broker is reached (fetch streams, ...); the message
    /// names it. Retryable.
    #[error("{0}")]
    Busy(String),
    /// A consumer-group rule refused the request.
    #[error(transparent)]
    Group(#[from] crate::groups::GroupError),
    /// This broker does not coordinate the group.
    #[error("group {group} is not coordinated by this broker: {detail}")]
    NotCoordinator {
        /// The group.
        group: String,
        /// The coordinator and its address, if known.
        coordinator: Option<(u32, String)>,
        /// What is going on, for people.
        detail: String,
    },
    /// The coordinator is loading the group's state.
    #[error(
        "the coordinator of group {0} is loading its state (after a move or a restart); retry shortly"
    )]
    CoordinatorLoading(String),
    /// The group does not exist.
    #[error("unknown group; list groups with `strata group list`: {0}")]
    GroupNotFound(String),
    /// The caller did not authenticate, or with wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// An ACL denies the operation (or none allows it); the message names
    /// the principal, the operation, the resource and how to allow it.
    #[error("{message}")]
    Denied {
        /// The kind of resource refused.
        kind: crate::auth::acl::ResourceType,
        /// For people.
        message: String,
    },
    /// The storage engine failed; `context` names what was being done
    /// (usually the topic-partition).
    #[error("{context}: {source}")]
    Storage {
        /// What the broker was doing.
        context: String,
        /// The storage error.
        source: StorageError,
    },
}

impl BrokerError {
    /// Wraps a storage error with what was being done.
    pub fn storage(context: impl std::fmt::Display, source: StorageError) -> Self {
        BrokerError::Storage {
            context: context.to_string(),
            source,
        }
    }

    /// True when the storage error means this broker lost the partition.
    pub fn is_fenced(&self) -> bool {
        matches!(self, BrokerError::Storage { source, .. } if source.is_fenced())
    }

    /// The machine-readable reason.
    pub fn reason(&self) -> ErrorReason {
        match self {
            BrokerError::UnknownTopic(_) => ErrorReason::UnknownTopic,
            BrokerError::UnknownPartition { .. } => ErrorReason::UnknownPartition,
            BrokerError::TopicAlreadyExists(_) => ErrorReason::TopicAlreadyExists,
            BrokerError::InvalidRequest(_) => ErrorReason::InvalidRequest,
            BrokerError::TooLarge(_) => ErrorReason::RecordTooLarge,
            BrokerError::CorruptBatch(_) => ErrorReason::InvalidBatch,
            BrokerError::Unavailable(_) | BrokerError::Busy(_) => ErrorReason::BrokerUnavailable,
            BrokerError::NotOwner { .. } => ErrorReason::NotOwner,
            BrokerError::Group(e) => group_reason(e),
            BrokerError::NotCoordinator {
                coordinator: Some(_),
                ..
            } => ErrorReason::NotCoordinator,
            BrokerError::NotCoordinator { .. } => ErrorReason::CoordinatorNotAvailable,
            BrokerError::CoordinatorLoading(_) => ErrorReason::CoordinatorLoadInProgress,
            BrokerError::GroupNotFound(_) => ErrorReason::GroupIdNotFound,
            BrokerError::Unauthenticated(_) => ErrorReason::Unauthenticated,
            BrokerError::Denied { kind, .. } => match kind {
                ResourceType::Topic => ErrorReason::TopicAuthorizationFailed,
                ResourceType::Group => ErrorReason::GroupAuthorizationFailed,
                ResourceType::Cluster => ErrorReason::ClusterAuthorizationFailed,
            },
            BrokerError::Storage { source, .. } => storage_reason(source).0,
        }
    }

    /// The gRPC status for this error.
    pub fn into_status(self) -> tonic::Status {
        match self {
            BrokerError::Storage { context, source } => storage_status(&context, &source),
            BrokerError::Unavailable(_) | BrokerError::Busy(_) => {
                ErrorInfo::new(ErrorReason::BrokerUnavailable, self.to_string())
                    .with_retry_after(BROKER_RETRY_AFTER)
                    .into_status()
            }
            BrokerError::NotOwner { ref owner, .. } => {
                let info = ErrorInfo::new(ErrorReason::NotOwner, self.to_string());
                match owner {
                    Some((id, address)) => info.with_owner(*id, Some(address.clone())),
                    None => info.with_retry_after(NOT_OWNER_RETRY_AFTER),
                }
                .into_status()
            }
            BrokerError::NotCoordinator {
                ref coordinator, ..
            } => {
                let info = ErrorInfo::new(self.reason(), self.to_string());
                match coordinator {
                    Some((id, address)) => info.with_owner(*id, Some(address.clone())),
                    None => info.with_retry_after(COORDINATOR_RETRY_AFTER),
                }
                .into_status()
            }
            BrokerError::CoordinatorLoading(_) | BrokerError::Group(GroupError::Full { .. }) => {
                ErrorInfo::new(self.reason(), self.to_string())
                    .with_retry_after(COORDINATOR_RETRY_AFTER)
                    .into_status()
            }
            other => ErrorInfo::new(other.reason(), other.to_string()).into_status(),
        }
    }
}

impl From<BrokerError> for tonic::Status {
    fn from(e: BrokerError) -> Self {
        e.into_status()
    }
}

/// The reason for a refusal by the group rules.
fn group_reason(e: &GroupError) -> ErrorReason {
    match e {
        GroupError::UnknownMember { .. } => ErrorReason::UnknownMemberId,
        GroupError::FencedEpoch { .. } => ErrorReason::FencedMemberEpoch,
        GroupError::NotEmpty { .. } => ErrorReason::NonEmptyGroup,
        GroupError::UnreleasedInstance { .. } => ErrorReason::UnreleasedInstanceId,
        GroupError::IllegalGeneration { .. } => ErrorReason::IllegalGeneration,
        GroupError::RebalanceInProgress { .. } => ErrorReason::RebalanceInProgress,
        GroupError::MemberIdRequired { .. } => ErrorReason::MemberIdRequired,
        GroupError::InconsistentProtocol { .. } => ErrorReason::InconsistentGroupProtocol,
        GroupError::InvalidPattern { .. } => ErrorReason::InvalidRegularExpression,
        GroupError::UnsupportedAssignor(_) => ErrorReason::UnsupportedAssignor,
        GroupError::NotAssigned { .. } | GroupError::Invalid(_) => ErrorReason::InvalidRequest,
        GroupError::Full { .. } => ErrorReason::BrokerUnavailable,
    }
}

/// The reason and retry hint for a storage error.
fn storage_reason(e: &StorageError) -> (ErrorReason, Option<Duration>) {
    match e {
        StorageError::InvalidBatch(
            BatchError::TooLarge { .. } | BatchError::TooManyRecords { .. },
        )
        | StorageError::TooLarge { .. } => (ErrorReason::RecordTooLarge, None),
        StorageError::InvalidBatch(_) => (ErrorReason::InvalidBatch, None),
        StorageError::OffsetOutOfRange { .. } => (ErrorReason::OffsetOutOfRange, None),
        StorageError::OutOfOrderSequence { expected, got, .. } => {
            if got < expected {
                (ErrorReason::DuplicateSequence, None)
            } else {
                (ErrorReason::OutOfOrderSequence, None)
            }
        }
        StorageError::ProducerFenced { .. } => (ErrorReason::ProducerFenced, None),
        StorageError::Fenced(_) => (ErrorReason::Fenced, None),
        StorageError::Unavailable(_) => (ErrorReason::BrokerUnavailable, Some(BROKER_RETRY_AFTER)),
        StorageError::OwnedElsewhere { .. } => (ErrorReason::NotOwner, Some(NOT_OWNER_RETRY_AFTER)),
        StorageError::InvalidName { .. } | StorageError::Config { .. } => {
            (ErrorReason::InvalidRequest, None)
        }
        StorageError::InvalidTimestamp(_) => (ErrorReason::InvalidBatch, None),
        StorageError::Store(_) => match e.kind() {
            ErrorKind::Transient { retry_after } => {
                (ErrorReason::StoreUnavailable, Some(retry_after))
            }
            ErrorKind::Fenced => (ErrorReason::Fenced, None),
            _ => (ErrorReason::Internal, None),
        },
        StorageError::Corrupt { .. }
        | StorageError::UnsafeStore(_)
        | StorageError::IncompatibleBucket(_)
        | StorageError::Json { .. } => (ErrorReason::Internal, None),
    }
}

/// Rewrites tonic's own answer to a request above the decoding limit, for
/// the gRPC server's responses (a tower response mapper).
///
/// tonic refuses an oversized message with `OUT_OF_RANGE` and no Strata
/// details, which a client would read as `OFFSET_OUT_OF_RANGE`; this turns
/// it into `RECORD_TOO_LARGE`. The status travels in the trailers (or, for
/// a trailers-only response, in the headers): both are checked.
pub fn fix_oversized_request(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<OversizeFixBody> {
    rewrite_oversized(response.headers_mut());
    response.map(|inner| OversizeFixBody { inner })
}

/// A response body whose trailers go through [`fix_oversized_request`]'s
/// rewrite.
#[derive(Debug)]
pub struct OversizeFixBody {
    inner: tonic::body::Body,
}

impl http_body::Body for OversizeFixBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    rewrite_oversized(&mut trailers);
                    Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

fn rewrite_oversized(headers: &mut http::HeaderMap) {
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| m.replace("%20", " "));
    let is_tonic_limit = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11")
        && headers.get(strata_proto::REASON_METADATA_KEY).is_none()
        && message
            .as_deref()
            .is_some_and(|m| m.contains("message length too large"));
    if !is_tonic_limit {
        return;
    }
    let status = ErrorInfo::new(
        ErrorReason::RecordTooLarge,
        format!(
            "request too large; send batches no larger than the topic's max_batch_bytes: {}",
            message.unwrap_or_default()
        ),
    )
    .into_status();
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if let Err(e) = status.add_header(headers) {
        tracing::warn!(error = %e, "cannot rewrite an oversized-request status");
    }
}

/// The status for storage error `e` met while serving `context` (usually
/// the topic-partition).
pub fn storage_status(context: &str, e: &StorageError) -> tonic::Status {
    let (reason, retry_after) = storage_reason(e);
    let mut info = ErrorInfo::new(reason, format!("{context}: {e}"));
    if let Some(after) = retry_after {
        info = info.with_retry_after(after);
    }
    info.into_status()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(e: StorageError) -> (ErrorReason, String, Option<Duration>) {
        let status = storage_status("t/0", &e);
        let info = ErrorInfo::from_status(&status);
        assert_eq!(status.code(), info.reason.code());
        (info.reason, info.message, info.retry_after)
    }

    #[test]
    fn storage_errors_map_through_the_table() {
        let cases: Vec<(StorageError, ErrorReason)> = vec![
            (
                StorageError::InvalidBatch(BatchError::CrcMismatch {
                    expected: 1,
                    actual: 2,
                }),
                ErrorReason::InvalidBatch,
            ),
            (
                StorageError::InvalidBatch(BatchError::TooLarge { size: 9, limit: 1 }),
                ErrorReason::RecordTooLarge,
            ),
            (
                StorageError::TooLarge {
                    what: "batch",
                    size: 9,
                    limit: 1,
                },
                ErrorReason::RecordTooLarge,
            ),
            (
                StorageError::OffsetOutOfRange {
                    offset: 9,
                    log_start: 0,
                    next_offset: 1,
                },
                ErrorReason::OffsetOutOfRange,
            ),
            (
                StorageError::OutOfOrderSequence {
                    producer_id: 1,
                    expected: 5,
                    got: 2,
                },
                ErrorReason::DuplicateSequence,
            ),
            (
                StorageError::OutOfOrderSequence {
                    producer_id: 1,
                    expected: 5,
                    got: 7,
                },
                ErrorReason::OutOfOrderSequence,
            ),
            (
                StorageError::ProducerFenced {
                    producer_id: 1,
                    current: 2,
                    got: 1,
                },
                ErrorReason::ProducerFenced,
            ),
            (StorageError::Fenced("x".into()), ErrorReason::Fenced),
            (
                StorageError::Unavailable("closed".into()),
                ErrorReason::BrokerUnavailable,
            ),
            (
                StorageError::Store(object_store::Error::Generic {
                    store: "s3",
                    source: "timeout".into(),
                }),
                ErrorReason::StoreUnavailable,
            ),
            (
                StorageError::Store(object_store::Error::PermissionDenied {
                    path: "p".into(),
                    source: "denied".into(),
                }),
                ErrorReason::Internal,
            ),
            (
                StorageError::Config {
                    key: "log.segment_bytes",
                    reason: "too small".into(),
                },
                ErrorReason::InvalidRequest,
            ),
            (
                StorageError::InvalidName {
                    what: "topic name",
                    reason: "it is empty",
                    value: String::new(),
                },
                ErrorReason::InvalidRequest,
            ),
            (
                StorageError::Corrupt {
                    key: "k".into(),
                    reason: "r".into(),
                },
                ErrorReason::Internal,
            ),
        ];
        for (err, want) in cases {
            let text = err.to_string();
            let (got, message, _) = reason_of(err);
            assert_eq!(got, want, "{text}");
            assert!(
                message.starts_with("t/0: ") && message.contains(&text),
                "{message}"
            );
        }
    }

    #[test]
    fn transient_store_errors_carry_retry_after() {
        let (reason, _, after) = reason_of(StorageError::Store(object_store::Error::Generic {
            store: "s3",
            source: "503".into(),
        }));
        assert_eq!(reason, ErrorReason::StoreUnavailable);
        assert!(after.is_some());
    }

    #[test]
    fn broker_errors_have_reasons() {
        let s = BrokerError::UnknownTopic("orders".into()).into_status();
        let info = ErrorInfo::from_status(&s);
        assert_eq!(info.reason, ErrorReason::UnknownTopic);
        assert!(info.message.ends_with("orders"), "{}", info.message);
        let s = BrokerError::Unavailable("shutting down").into_status();
        let info = ErrorInfo::from_status(&s);
        assert_eq!(info.reason, ErrorReason::BrokerUnavailable);
        assert!(info.retry_after.is_some());
    }
}
