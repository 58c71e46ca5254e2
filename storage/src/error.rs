//! The crate's error type. Inside the crate errors are precise; at the edge
//! [`Error::kind`] gives the coarse [`ErrorKind`] that drives what a caller
//! does (retry, reroute, give up, fix the input).

use std::time::Duration;

use crate::batch::BatchError;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Another writer owns the object chain or WAL stream: stop serving the
    /// partition and reload it.
    Fenced,
    /// The requested offset is outside the log.
    OutOfRange,
    /// The caller sent something wrong; retrying the same request fails again.
    InvalidInput,
    /// A duplicate or out-of-order idempotent-producer sequence, or a stale
    /// producer epoch.
    Sequence,
    /// Try again later (the store is slow or down, a queue is full).
    Transient {
        /// A hint for how long to wait.
        retry_after: Duration,
    },
    /// A bug or corrupt data; needs an operator.
    Internal,
}

/// Every error this crate returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The batch bytes are not a valid RecordBatch v2.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// A create-only write found the key taken: someone else moved the chain
    /// or fenced this writer.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The offset is outside `[log_start, next_offset]`.
    #[error("offset {offset} is out of range: the log holds [{log_start}, {next_offset})")]
    OffsetOutOfRange {
        /// What was asked.
        offset: i64,
        /// The first offset still in the log.
        log_start: i64,
        /// The offset the next record will get.
        next_offset: i64,
    },
    /// An idempotent producer sent a sequence that does not follow the last one.
    #[error(
        "out-of-order sequence for producer {producer_id}: expected {expected}, got {got}; \
         the producer must restart its sequence or reset its id"
    )]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence the log expected.
        expected: i32,
        /// The sequence it got.
        got: i32,
    },
    /// An idempotent producer with an epoch older than one already seen.
    #[error(
        "producer {producer_id} epoch {got} is older than epoch {current}: a newer producer instance took over"
    )]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The epoch the log knows.
        current: i16,
        /// The epoch it got.
        got: i16,
    },
    /// The object store failed (after retries).
    #[error("object store error: {0}")]
    Store(#[from] object_store::Error),
    /// An object in the bucket is not what its key says it is.
    #[error("corrupt object {key}: {reason}")]
    Corrupt {
        /// The object key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store does not enforce create-only writes; using it could lose data.
    #[error("{0}")]
    UnsafeStore(String),
    /// A batch's timestamps are too far from the broker's clock.
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    /// The bucket holds keys in a layout this release cannot serve.
    #[error("{0}")]
    IncompatibleBucket(String),
    /// A configuration value is invalid.
    #[error("invalid setting {key}: {reason}")]
    Config {
        /// The setting's name.
        key: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The partition's manifest names a live owner that has not released it
    /// yet (a move in progress): wait for the release instead of fencing a
    /// broker that still serves.
    #[error(
        "{tp} is still owned by {owner}, which is alive; waiting for it to release the partition (retry shortly)"
    )]
    OwnedElsewhere {
        /// The partition.
        tp: String,
        /// The incarnation named as owner by the manifest.
        owner: crate::keys::WalStream,
    },
    /// The log or WAL writer was closed or failed earlier; it must be reopened.
    #[error("partition log unavailable: {0}")]
    Unavailable(String),
    /// The request is bigger than a limit allows.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A name (topic, ...) is not allowed.
    #[error("invalid {what}: {reason}: {value:?}")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
        /// The name.
        value: String,
    },
    /// Serialising or parsing JSON metadata failed.
    #[error("metadata encoding error in {key}: {source}")]
    Json {
        /// The object key.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl Error {
    /// The coarse kind that tells the caller what to do.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidBatch(_)
            | Error::TooLarge { .. }
            | Error::InvalidName { .. }
            | Error::InvalidTimestamp(_)
            | Error::Config { .. } => ErrorKind::InvalidInput,
            Error::Fenced(_) => ErrorKind::Fenced,
            Error::OffsetOutOfRange { .. } => ErrorKind::OutOfRange,
            Error::OutOfOrderSequence { .. } | Error::ProducerFenced { .. } => ErrorKind::Sequence,
            Error::Store(e) => match e {
                object_store::Error::NotFound { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => ErrorKind::Internal,
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => ErrorKind::Fenced,
                _ => ErrorKind::Transient {
                    retry_after: Duration::from_millis(500),
                },
            },
            Error::Unavailable(_) => ErrorKind::Transient {
                retry_after: Duration::from_millis(200),
            },
            Error::OwnedElsewhere { .. } => ErrorKind::Transient {
                retry_after: Duration::from_millis(50),
            },
            Error::Corrupt { .. }
            | Error::UnsafeStore(_)
            | Error::IncompatibleBucket(_)
            | Error::Json { .. } => ErrorKind::Internal,
        }
    }

    /// True when `self` means the writer lost ownership.
    pub fn is_fenced(&self) -> bool {
        self.kind() == ErrorKind::Fenced
    }

    /// The message without the variant's prefix ("fenced: ", "partition
    /// log unavailable: "), for wrapping into another error of the same
    /// kind without repeating the prefix.
    pub fn detail(&self) -> String {
        match self {
            Error::Fenced(m) | Error::Unavailable(m) => m.clone(),
            e => e.to_string(),
        }
    }

    pub(crate) fn corrupt(key: impl ToString, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
