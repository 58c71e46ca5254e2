//! # strata-storage
//!
//! The storage engine every other part of Strata stands on. It owns the
//! byte layouts (Kafka RecordBatch v2 validation, WAL objects, segment
//! objects, manifests), all access to the object store, the hot tier, and the
//! [`PartitionLog`](log::PartitionLog) API. It knows nothing of gRPC or of the
//! cluster.
//!
//! The one invariant a newcomer must not break: **every acknowledged record is
//! read back exactly once, in order, with no offset gap or reuse**, through
//! crashes, zombies and object-store errors. Everything here is built so that
//! the bucket alone (never local disk) is enough to rebuild a partition.
//!
//! Map of the crate:
//! - [`batch`]: RecordBatch v2 parsing, validation and in-place offset stamping.
//! - [`keys`]: every object key, built from typed parts.
//! - [`chain`]: create-only versioned chains (manifests, topic configs).
//! - [`layout`]: which key layout a bucket holds, checked at start.
//! - [`manifest`]: the partition manifest.
//! - [`archive`]: old segment entries moved out of long manifests.
//! - [`wal`]: the broker-wide write-ahead log with group commit and fencing.
//! - [`segment`]: sealed segment objects with a sparse index.
//! - [`hot_tier`]: the foyer block cache in front of segment reads.
//! - [`log`]: the partition log (append, read, seal, retention, recovery).
//! - [`store`]: object-store wrappers (metrics, retry, fault injection).
//! - [`selftest`]: proof that a store enforces create-only writes.
//! - [`gc`]: bucket garbage collection and the inventory per kind.
//! - [`engine`]: one broker incarnation's storage, opened in one call.

pub mod archive;
pub mod chain;
pub mod engine;
pub mod error;
pub mod gc;
pub mod hot_tier;
pub mod keys;
pub mod layout;
pub mod log;
pub mod manifest;
pub mod producers;
pub mod segment;
pub mod selftest;
pub mod snapshot;
pub mod store;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
/// The RecordBatch v2 codec (crate `strata-batch`), re-exported.
pub use strata_batch as batch;
