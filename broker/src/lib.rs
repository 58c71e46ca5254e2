//! The Strata broker: gRPC services over the storage engine, topic
//! registry, admin HTTP (metrics, health), and the `strata` CLI's client
//! commands.
//!
//! `storage` knows nothing of gRPC; this crate converts at its edge (see
//! [`server`]'s error table use) and knows nothing of byte layouts beyond
//! what `strata-storage` exposes.

pub mod cli;
pub mod server;
