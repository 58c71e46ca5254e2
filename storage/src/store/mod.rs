//! Object-store wrappers: each cross-cutting behaviour is one layer over an
//! `Arc<dyn ObjectStore>` (metrics, retry with backoff, fault injection).
//!
//! - [`metrics`]: [`MetricsStore`] counts requests, errors and bytes.
//! - [`retry`]: [`RetryStore`] retries transient errors with backoff and a
//!   per-request timeout.
//! - [`fault`]: [`FaultStore`] injects seeded errors, latency and outages.
//!
//! Stack them as `RetryStore(MetricsStore(FaultStore?(backend)))`: metrics
//! under retry count every attempt that reaches the store (what is billed),
//! and faults under metrics show up as errors. Each layer takes and is an
//! `Arc<dyn ObjectStore>`, so any order compiles; this one measures what you
//! pay for.

pub mod fault;
pub mod metrics;
pub mod retry;

pub use fault::{FaultConfig, FaultRule, FaultStore, FaultTiming, Op, OpSet};
pub use metrics::{MetricsStore, StatsSnapshot, StoreStats};
pub use retry::{RetryConfig, RetryStore, is_transient};
