//! Strata's gRPC API, package `strata.v1`, built from
//! `proto/strata/v1/strata.proto` by protox + tonic (no system `protoc`).
//!
//! - [`v1`]: the generated messages, clients
//!   ([`v1::strata_client::StrataClient`], [`v1::admin_client::AdminClient`])
//!   and servers.
//! - [`error`]: the one table from [`v1::ErrorReason`] to gRPC codes and
//!   retryability, and the helpers that put an [`v1::ErrorDetail`] into a
//!   [`tonic::Status`] and read it back.
//!
//! The one thing a newcomer must not break: field numbers in the `.proto`
//! file are forever. Add fields, never renumber or reuse them.

pub mod error;

/// Generated code for package `strata.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("strata.v1");
}

pub use error::{ErrorInfo, REASON_METADATA_KEY};
