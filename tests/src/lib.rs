//! Test support for Strata: the S3-compatible test fixture and helpers shared
//! by the end-to-end, cluster, conformance and fault tests in `tests/tests/`.

pub mod broker;
pub mod cluster;
pub mod harness;
pub mod python;
pub mod s3;
pub mod scenarios;
pub mod workload;
