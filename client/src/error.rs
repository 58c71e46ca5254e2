//! The client's one error type: what went wrong, and what to do about it.
//!
//! Errors from a broker keep the broker's machine-readable reason
//! ([`strata_proto::ErrorInfo`]) so callers can match on it; transport
//! failures, timeouts and bad configuration get their own variants.
//! [`Error::is_retryable`] drives every retry loop in this crate: the
//! producer and consumer retry only what it says is retryable.

use std::time::Duration;

use strata_proto::ErrorInfo;
use strata_proto::v1::ErrorReason;

/// A `Result` with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker answered with an error; the reason says which.
    #[error("broker refused the request: {}{}", .0, hint(.0))]
    Broker(ErrorInfo),
    /// The broker could not be reached at all.
    #[error("cannot connect to broker {url}: {message}; is `strata serve` running there?")]
    Connect {
        /// The broker's URL; several, comma-separated, when none of the
        /// brokers tried could be reached.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// TLS with the broker failed; the message says what to change (the
    /// CA to trust, the client certificate to present, the URL).
    #[error("TLS with broker {url} failed: {message}")]
    Tls {
        /// The broker's URL.
        url: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// The connection failed in the middle of a request.
    #[error(
        "lost the connection to broker {url}: {message}; the request is retried if it is safe to"
    )]
    Transport {
        /// The broker's URL.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// A broker URL that does not parse.
    #[error("invalid broker url, expected something like http://127.0.0.1:50051: {url}")]
    InvalidUrl {
        /// The URL given.
        url: String,
    },
    /// No answer within the configured time.
    #[error(
        "timed out after {}: {what}; check that the broker is healthy, or raise the timeout",
        humantime_ms(*.after)
    )]
    Timeout {
        /// What we were waiting for.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// The broker's answer does not make sense (a bug or a version mismatch).
    #[error("invalid response from the broker (version mismatch or bug): {0}")]
    InvalidResponse(String),
    /// A setting or argument that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A record batch that cannot be built or decoded.
    #[error("record batch error: {0}")]
    Batch(#[from] strata_batch::BatchError),
    /// The producer or consumer was closed.
    #[error("{0} is closed; create a new one")]
    Closed(&'static str),
}

fn humantime_ms(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What to do about a broker error, appended to its message unless the
/// broker's message already says (its advice follows a `;`).
fn hint(info: &ErrorInfo) -> &'static str {
    if info.message.contains("; ") {
        return "";
    }
    match info.reason {
        ErrorReason::UnknownTopic => "; create it first with `strata topic create`",
        ErrorReason::UnknownPartition => {
            "; the topic has fewer partitions, see `strata topic describe`"
        }
        ErrorReason::TopicAlreadyExists => "; pick another name or delete it first",
        ErrorReason::RecordTooLarge => "; send smaller records or raise the topic's max batch size",
        ErrorReason::OffsetOutOfRange => "; seek to a valid offset (earliest or latest)",
        ErrorReason::StoreUnavailable | ErrorReason::BrokerUnavailable => {
            "; retry later, the broker or its object store is unavailable"
        }
        ErrorReason::Internal => "; this is a bug or corrupt data, check the broker logs",
        _ => "",
    }
}

impl Error {
    /// True when the same request may succeed if sent again (possibly after
    /// a metadata refresh, see [`Error::needs_metadata_refresh`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Broker(info) => info.is_retryable(),
            Error::Connect { .. } | Error::Transport { .. } | Error::Timeout { .. } => true,
            Error::InvalidUrl { .. }
            | Error::Tls { .. }
            | Error::InvalidResponse(_)
            | Error::Config(_)
            | Error::Batch(_)
            | Error::Closed(_) => false,
        }
    }

    /// True when partition owners may have moved: refresh metadata before
    /// retrying.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            Error::Broker(info) => info.reason.needs_metadata_refresh(),
            Error::Connect { .. } | Error::Transport { .. } | Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The broker's reason, for [`Error::Broker`].
    pub fn reason(&self) -> Option<ErrorReason> {
        match self {
            Error::Broker(info) => Some(info.reason),
            _ => None,
        }
    }

    /// The broker's decoded error, for [`Error::Broker`].
    pub fn broker_info(&self) -> Option<&ErrorInfo> {
        match self {
            Error::Broker(info) => Some(info),
            _ => None,
        }
    }

    /// Converts a status from a call to the broker at `url`. Statuses that
    /// carry no Strata details and mean "could not talk to it" become
    /// [`Error::Connect`] / [`Error::Transport`], so the message names the URL.
    pub(crate) fn from_status(status: &tonic::Status, url: &str) -> Error {
        let from_strata = !status.details().is_empty()
            || status
                .metadata()
                .get(strata_proto::REASON_METADATA_KEY)
                .is_some();
        if !from_strata && let Some(message) = crate::connect::tls_problem(status) {
            return Error::Tls {
                url: url.to_owned(),
                message,
            };
        }
        if !from_strata
            && url.starts_with("http://")
            && h2_error(status)
                .is_some_and(|e| e.is_library() && e.reason() == Some(h2::Reason::FRAME_SIZE_ERROR))
        {
            // A TLS record read as an HTTP/2 frame: its length is absurd.
            return Error::Tls {
                url: url.to_owned(),
                message: "the broker does not answer in plain HTTP/2, it probably serves TLS: \
                          use an https:// URL (and --tls-ca FILE for a private CA)"
                    .to_owned(),
            };
        }
        let h2 = !from_strata && h2_error(status).is_some_and(connection_lost);
        if h2 || (!from_strata && status.code() == tonic::Code::Unavailable) {
            let message = transport_message(status);
            let connect = !h2 && (message.contains("connect") || message.contains("refused"));
            return if connect {
                Error::Connect {
                    url: url.to_owned(),
                    message,
                }
            } else {
                Error::Transport {
                    url: url.to_owned(),
                    message,
                }
            };
        }
        if !from_strata && status.code() == tonic::Code::DeadlineExceeded {
            return Error::Timeout {
                what: format!("broker {url}: {}", status.message()),
                after: Duration::ZERO,
            };
        }
        let mut info = ErrorInfo::from_status(status);
        if !from_strata && info.message.contains("operation was canceled") {
            // hyper cancels a request whose connection died before it was
            // sent and keeps no cause: say what usually closes it early.
            info.message = format!(
                "the connection to {url} closed before the request was sent (operation was \
                 canceled); {}",
                if url.starts_with("https://") {
                    "if the broker requires client certificates (mTLS), give one with \
                     --tls-cert FILE --tls-key FILE"
                } else {
                    "if the broker serves TLS, use an https:// URL"
                }
            );
        }
        Error::Broker(info)
    }
}

/// The HTTP/2 error under a status, if the connection failed rather than
/// the broker answering. tonic maps a GOAWAY with `NO_ERROR` (a broker
/// shutting down gracefully refuses streams it never started) and most
/// stream resets to `INTERNAL`, which would read as a bug; a Strata broker
/// always names its reason, so a bare status over an h2 error is the
/// connection's failure and safe to retry like any lost connection.
fn h2_error(status: &tonic::Status) -> Option<&h2::Error> {
    sources(status).find_map(|s| s.downcast_ref::<h2::Error>())
}

/// The chain of errors under `status`, outermost first.
fn sources(status: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |s| s.source())
}

/// True for the HTTP/2 errors that mean the connection (not the request)
/// failed: I/O errors, a graceful GOAWAY (`NO_ERROR`), a refused or
/// cancelled stream. Errors that would fail again the same way (a
/// `PROTOCOL_ERROR` for oversized headers, say) stay non-retryable.
fn connection_lost(e: &h2::Error) -> bool {
    e.is_io()
        || matches!(
            e.reason(),
            Some(h2::Reason::NO_ERROR | h2::Reason::REFUSED_STREAM | h2::Reason::CANCEL)
        )
}

/// The status message plus the innermost source, which says what really
/// failed ("connection refused").
fn transport_message(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    if let Some(inner) = sources(status).last().map(|s| s.to_string())
        && !message.contains(&inner)
    {
        message = format!("{message}: {inner}");
    }
    message.to_lowercase()
}

impl From<ErrorInfo> for Error {
    fn from(info: ErrorInfo) -> Self {
        Error::Broker(info)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = Error::Connect {
            url: "http://127.0.0.1:50051".into(),
            message: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to broker http://127.0.0.1:50051: connection refused; is `strata serve` running there?"
        );
        assert!(e.is_retryable());
        let e = Error::Broker(ErrorInfo::new(
            ErrorReason::UnknownTopic,
            "unknown topic: orders",
        ));
        assert!(e.to_string().contains("strata topic create"), "{e}");
        assert!(!e.is_retryable());
        assert_eq!(e.reason(), Some(ErrorReason::UnknownTopic));
    }

    #[test]
    fn statuses_map_to_variants() {
        let s = tonic::Status::unavailable("tcp connect error: connection refused");
        assert!(matches!(Error::from_status(&s, "u"), Error::Connect { .. }));
        let s = ErrorInfo::new(ErrorReason::NotOwner, "not mine").into_status();
        let e = Error::from_status(&s, "u");
        assert!(e.is_retryable() && e.needs_metadata_refresh());
        let s = ErrorInfo::new(ErrorReason::StoreUnavailable, "slow").into_status();
        let e = Error::from_status(&s, "u");
        assert!(e.is_retryable() && !e.needs_metadata_refresh());
        // tonic calls an HTTP/2 GOAWAY or reset INTERNAL; it is the
        // connection failing, not the broker.
        let s = tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::NO_ERROR)));
        assert_eq!(s.code(), tonic::Code::Internal);
        let e = Error::from_status(&s, "u");
        assert!(matches!(e, Error::Transport { .. }), "{e:?}");
        assert!(e.is_retryable() && e.needs_metadata_refresh());
        // A protocol error would fail the same way again.
        let s = tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::PROTOCOL_ERROR)));
        assert!(!Error::from_status(&s, "u").is_retryable());
        // A broker's own INTERNAL stays a broker error.
        let s = ErrorInfo::new(ErrorReason::Internal, "bug").into_status();
        assert!(!Error::from_status(&s, "u").is_retryable());
    }
}
