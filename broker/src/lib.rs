//! The Strata broker: gRPC services over the storage engine, topic
//! registry, admin HTTP (metrics, health), and the `strata` CLI's client
//! commands.
//!
//! `storage` knows nothing of gRPC; this crate converts at its edge (see
//! [`error`], the one place where errors become statuses through the proto
//! error table) and knows nothing of byte layouts beyond what
//! `strata-storage` exposes.
//!
//! Map of the crate:
//! - [`server`]: `strata serve`, the broker's lifecycle and the in-process
//!   API ([`server::start`], [`server::RunningBroker`]).
//! - [`config`]: settings (defaults < TOML < `STRATA_*` env < flags).
//! - [`store_url`]: the store URL to an object store.
//! - [`s3_admin`]: signed bucket-level S3 requests (`strata bucket`).
//! - [`connections`]: the bound on open gRPC connections.
//! - [`tls`]: TLS on the listeners (reloading certificates, mTLS
//!   principals) and in calls to other brokers.
//! - [`topics`]: the topic registry (config chains in the bucket).
//! - [`partitions`]: the storage engine in service and its open
//!   partitions (and, later, ownership checks).
//! - [`restart`]: restarting the storage as a new incarnation after its
//!   WAL writer stopped (store outage, fencing).
//! - [`producer_ids`]: producer-id blocks reserved in the bucket.
//! - [`auth`]: users (SCRAM), ACLs and the allow/deny decision both
//!   front ends ask.
//! - [`groups`]: consumer groups (the group coordinator).
//! - [`data`]: the data plane any front end calls (produce, fetch,
//!   offsets, metadata).
//! - [`kafka`]: the Kafka wire-protocol front end.
//! - [`service`]: the gRPC front end (`Strata`, `Admin`, `Cluster`,
//!   `Groups`).
//! - [`http`], [`metrics`]: health, readiness and Prometheus metrics.
//! - [`maintenance`]: time-based sealing, retention, WAL GC.
//! - [`bucket_gc`]: the controller's bucket sweep and inventory.
//! - [`cli`]: the client subcommands.

pub mod auth;
pub mod bucket_gc;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod data;
pub mod error;
pub mod groups;
pub mod http;
pub mod kafka;
pub mod maintenance;
pub mod metrics;
pub mod partitions;
pub mod producer_ids;
pub mod restart;
pub mod s3_admin;
pub mod server;
pub mod service;
pub mod store_url;
pub mod tls;
pub mod topics;
