//! The data plane, whatever the front end: the gRPC services
//! ([`crate::service`]) and the Kafka listener ([`crate::kafka`]) both call
//! these, so a record produced through one is the same record, at the same
//! offset, for the other.
//!
//! - [`produce`]: append one record batch to a partition this broker owns.
//! - [`fetch`]: open a partition for reading (the owned log, or its sealed
//!   segments on any other broker) and read from an offset, waiting for
//!   data.
//! - [`offsets`]: earliest / latest / by-timestamp offsets.
//! - [`metadata`]: topics, partitions and who owns them.
//! - [`topics`]: creating topics.
//!
//! Each takes the broker's [`crate::service::Shared`] but uses only the
//! registries it names; errors are [`crate::error::BrokerError`]s, which
//! each front end encodes its own way from one classification
//! ([`strata_proto::error::ErrorReason`]).

pub mod fetch;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod topics;
