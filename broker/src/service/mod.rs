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

use std::sync::atomic::{AtomicBool, Ordering};

use strata_storage::engine::Engine;
use strata_storage::keys::{BrokerId, TopicPartition};
use strata_storage::log::PartitionLog;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::metrics::{BrokerMetrics, Gauges};
use crate::partitions::PartitionRegistry;
use crate::producer_ids::ProducerIds;
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
    /// The storage engine.
    pub engine: Engine,
    /// Topics (in the bucket, cached).
    pub topics: TopicRegistry,
    /// Open partitions.
    pub partitions: PartitionRegistry,
    /// Producer-id allocation.
    pub producer_ids: ProducerIds,
    /// Counters.
    pub metrics: BrokerMetrics,
    /// Cancelled when a graceful shutdown starts: produces are refused and
    /// fetch streams end.
    pub shutdown: CancellationToken,
    ready: AtomicBool,
}

impl Shared {
    /// Builds the shared state over an opened engine.
    pub fn new(config: BrokerConfig, advertised_addr: String, engine: Engine) -> Self {
        let broker_id = BrokerId(config.broker_id);
        let store = engine.store().clone();
        Self {
            broker_id,
            advertised_addr,
            topics: TopicRegistry::new(store.clone(), broker_id, config.log.clone()),
            partitions: PartitionRegistry::new(engine.clone()),
            producer_ids: ProducerIds::new(store, broker_id),
            metrics: BrokerMetrics::default(),
            shutdown: CancellationToken::new(),
            ready: AtomicBool::new(false),
            engine,
            config,
        }
    }

    /// True once serving and until shutdown starts.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Marks the broker ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
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

    /// [`Self::partition`], also returning the topic.
    pub async fn partition_of_topic(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Topic, TopicPartition, PartitionLog)> {
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
        let log = self.partitions.get_or_open(&tp, &topic.log_config).await?;
        Ok((topic, tp, log))
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
            store: self.engine.store_stats().snapshot(),
            hot_tier: self.engine.cache().stats(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
