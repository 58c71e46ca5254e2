//! The gRPC services and the state they share.
//!
//! - [`strata`]: the data plane (`strata.v1.Strata`: produce, fetch,
//!   metadata, list offsets, producer ids).
//! - [`admin`]: topic administration (`strata.v1.Admin`).
//!
//! Both are thin: they validate the request, resolve the partition through
//! [`Shared::partition`] (topic registry, then partition registry, which is
//! where ownership is checked), call the storage engine, and convert every
//! error at the edge with [`crate::error::BrokerError::into_status`].

pub mod admin;
pub mod strata;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use object_store::ObjectStore;
use parking_lot::Mutex;
use strata_proto::v1::strata_server::StrataServer;
use strata_storage::engine::Engine;
use strata_storage::keys::{BrokerId, TopicPartition};
use strata_storage::log::PartitionLog;
use strata_storage::store::{StatsSnapshot, StoreStats};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::metrics::{BrokerMetrics, Gauges};
use crate::partitions::PartitionRegistry;
use crate::producer_ids::ProducerIds;
use crate::service::strata::StrataService;
use crate::topics::{self, Topic, TopicRegistry};

/// Everything the services, the HTTP endpoints and the background tasks of
/// one broker share.
#[derive(Debug)]
pub struct Shared {
    /// The effective configuration.
    pub config: BrokerConfig,
    /// This broker.
    pub broker_id: BrokerId,
    /// The gRPC address clients are told to use.
    pub advertised_addr: String,
    /// The bucket as given (without the engine's retry and metrics
    /// layers): new storage incarnations are opened on it.
    pub store: Arc<dyn ObjectStore>,
    /// The store's name in logs and errors (its URL).
    pub store_name: String,
    /// Topics (in the bucket, cached).
    pub topics: TopicRegistry,
    /// The storage engine in service and its open partitions.
    pub partitions: PartitionRegistry,
    /// Producer-id allocation.
    pub producer_ids: ProducerIds,
    /// Counters.
    pub metrics: BrokerMetrics,
    /// Cancelled when a graceful shutdown starts: produces are refused and
    /// fetch streams end.
    pub shutdown: CancellationToken,
    /// Set while [`crate::restart::restart_storage`] runs.
    pub(crate) restarting: AtomicBool,
    health: HealthReporter,
    /// The store counters of every engine this broker opened (the first
    /// one's store also serves topics and producer ids), so `/metrics`
    /// counters keep growing across storage restarts.
    store_stats: Mutex<Vec<Arc<StoreStats>>>,
    ready: AtomicBool,
}

impl Shared {
    /// Builds the shared state over an engine opened on `store` (named
    /// `store_name`); `health` is the gRPC health service's reporter.
    pub fn new(
        config: BrokerConfig,
        advertised_addr: String,
        store: Arc<dyn ObjectStore>,
        store_name: String,
        engine: Engine,
        health: HealthReporter,
    ) -> Self {
        let broker_id = BrokerId(config.broker_id);
        // The engine's store stack (retries, metrics) stays valid after the
        // engine is replaced: topics and producer ids keep using it.
        let engine_store = engine.store().clone();
        Self {
            broker_id,
            advertised_addr,
            store,
            store_name,
            topics: TopicRegistry::new(engine_store.clone(), broker_id, config.log.clone()),
            store_stats: Mutex::new(vec![engine.store_stats().clone()]),
            partitions: PartitionRegistry::new(engine),
            producer_ids: ProducerIds::new(engine_store, broker_id),
            metrics: BrokerMetrics::default(),
            shutdown: CancellationToken::new(),
            restarting: AtomicBool::new(false),
            health,
            ready: AtomicBool::new(false),
            config,
        }
    }

    /// True once serving and until shutdown starts (false while the
    /// storage restarts).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutdown.is_cancelled()
    }

    /// True while the storage restarts as a new incarnation.
    pub fn is_restarting(&self) -> bool {
        self.restarting.load(Ordering::SeqCst)
    }

    /// Marks the broker ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Sets the gRPC health status of the server and of `strata.v1.Strata`.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        if serving {
            self.health
                .set_serving::<StrataServer<StrataService>>()
                .await;
        } else {
            self.health
                .set_not_serving::<StrataServer<StrataService>>()
                .await;
        }
    }

    /// The storage engine in service, or `BROKER_UNAVAILABLE` while it is
    /// being replaced.
    pub fn engine(&self) -> Result<Engine> {
        self.partitions
            .engine()
            .ok_or(BrokerError::Unavailable(crate::partitions::RESTARTING))
    }

    /// Counts `engine`'s store requests in `/metrics` from now on.
    pub(crate) fn track_store_stats(&self, engine: &Engine) {
        self.store_stats.lock().push(engine.store_stats().clone());
    }

    /// Refuses work while shutting down.
    pub fn check_running(&self) -> Result<()> {
        if self.shutdown.is_cancelled() {
            Err(BrokerError::Unavailable("shutting down"))
        } else {
            Ok(())
        }
    }

    /// The live topic `name`.
    pub async fn topic(&self, name: &str) -> Result<Topic> {
        let name = topics::parse_name(name)?;
        self.topics.get(&name).await
    }

    /// Resolves `topic`/`partition` to an open log this broker serves.
    pub async fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(TopicPartition, PartitionLog)> {
        let (_, tp, log) = self.partition_of_topic(topic, partition).await?;
        Ok((tp, log))
    }

    /// [`Self::partition`], also returning a token cancelled when the log
    /// leaves the registry (see [`PartitionRegistry::get_or_open_watched`]).
    pub async fn partition_watched(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(TopicPartition, PartitionLog, CancellationToken)> {
        let (topic, tp) = self.resolve(topic, partition).await?;
        let (log, dropped) = self
            .partitions
            .get_or_open_watched(&tp, &topic.log_config)
            .await?;
        Ok((tp, log, dropped))
    }

    /// [`Self::partition`], also returning the topic.
    pub async fn partition_of_topic(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Topic, TopicPartition, PartitionLog)> {
        let (topic, tp) = self.resolve(topic, partition).await?;
        let log = self.partitions.get_or_open(&tp, &topic.log_config).await?;
        Ok((topic, tp, log))
    }

    /// The topic and the topic-partition, checked to exist.
    async fn resolve(&self, topic: &str, partition: u32) -> Result<(Topic, TopicPartition)> {
        let topic = self.topic(topic).await?;
        let count = topic.record.partitions;
        if partition >= count {
            return Err(BrokerError::UnknownPartition {
                topic: topic.name.to_string(),
                partition,
                count,
            });
        }
        let tp = TopicPartition {
            topic: topic.name.clone(),
            partition,
        };
        Ok((topic, tp))
    }

    /// Opens every partition of `topic` (bounded concurrency); failures are
    /// logged and retried lazily by the next request.
    pub async fn open_topic(&self, topic: &Topic) {
        use futures::StreamExt;
        let count = topic.record.partitions;
        let mut opens = futures::stream::iter(0..count)
            .map(|p| {
                let tp = TopicPartition {
                    topic: topic.name.clone(),
                    partition: p,
                };
                async move { self.partitions.get_or_open(&tp, &topic.log_config).await }
            })
            .buffer_unordered(16);
        while opens.next().await.is_some() {}
    }

    /// The scrape-time values for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            broker_id: self.broker_id.0,
            partitions_owned: self.partitions.len(),
            store: self
                .store_stats
                .lock()
                .iter()
                .fold(StatsSnapshot::default(), |sum, s| add(sum, s.snapshot())),
            hot_tier: self
                .partitions
                .engine()
                .map(|e| e.cache().stats())
                .unwrap_or_default(),
        }
    }
}

/// Field-by-field sum of two store snapshots.
fn add(a: StatsSnapshot, b: StatsSnapshot) -> StatsSnapshot {
    StatsSnapshot {
        put_requests: a.put_requests + b.put_requests,
        put_errors: a.put_errors + b.put_errors,
        multipart_requests: a.multipart_requests + b.multipart_requests,
        multipart_errors: a.multipart_errors + b.multipart_errors,
        get_requests: a.get_requests + b.get_requests,
        get_errors: a.get_errors + b.get_errors,
        head_requests: a.head_requests + b.head_requests,
        head_errors: a.head_errors + b.head_errors,
        list_requests: a.list_requests + b.list_requests,
        list_errors: a.list_errors + b.list_errors,
        delete_requests: a.delete_requests + b.delete_requests,
        delete_errors: a.delete_errors + b.delete_errors,
        copy_requests: a.copy_requests + b.copy_requests,
        copy_errors: a.copy_errors + b.copy_errors,
        rename_requests: a.rename_requests + b.rename_requests,
        rename_errors: a.rename_errors + b.rename_errors,
        bytes_written: a.bytes_written + b.bytes_written,
        bytes_read: a.bytes_read + b.bytes_read,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
