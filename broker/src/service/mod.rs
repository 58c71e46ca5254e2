//! The gRPC services and the state they share.
//!
//! - [`strata`]: the data plane (`strata.v1.Strata`: produce, fetch,
//!   metadata, list offsets, producer ids).
//! - [`admin`]: topic administration (`strata.v1.Admin`).
//! - [`cluster`]: brokers and the partition table (`strata.v1.Cluster`).
//! - [`security`]: users and ACLs (`strata.v1.Security`).
//! - [`groups`]: consumer groups (`strata.v1.Groups`), over the
//!   [`crate::groups`] coordinator.
//!
//! Both are thin: they validate the request, resolve the partition through
//! [`Shared::partition`] (topic registry, ownership in the cluster
//! assignment, then the partition registry), call the storage engine, and convert every
//! error at the edge with [`crate::error::BrokerError::into_status`].

pub mod admin;
pub mod cluster;
pub mod groups;
pub mod security;
pub mod strata;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use object_store::ObjectStore;
use parking_lot::Mutex;
use strata_proto::v1::strata_server::StrataServer;
use strata_storage::engine::Engine;
use strata_storage::keys::{BrokerId, TopicPartition, WalStream};
use strata_storage::log::PartitionLog;
use strata_storage::store::{StatsSnapshot, StoreStats};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Auth;
use crate::bucket_gc::BucketGc;
use crate::cluster::ClusterView;
use crate::cluster::broker_id::IdClaim;
use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::groups::GroupCoordinator;
use crate::metrics::{BrokerMetrics, Gauges};
use crate::partitions::{MayFence, PartitionRegistry};
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
    /// The claim that makes `broker_id` this broker's, when it was claimed
    /// at start (`broker_id = "auto"`); released when the broker leaves.
    pub id_claim: Option<IdClaim>,
    /// Cancelled when another broker claimed this broker's id while this
    /// one could not heartbeat (a long pause): the process must exit.
    pub id_lost: CancellationToken,
    /// The gRPC address clients are told to use.
    pub advertised_addr: String,
    /// The HTTP address (metrics, health) other brokers and tools are told.
    pub http_url: String,
    /// The Kafka listener's `host:port` Kafka clients are told to use.
    pub kafka_advertised_addr: String,
    /// The bucket as given (without the engine's retry and metrics
    /// layers): new storage incarnations are opened on it.
    pub store: Arc<dyn ObjectStore>,
    /// The store's name in logs and errors (its URL).
    pub store_name: String,
    /// The bucket with retries and request metrics, for cluster metadata
    /// (heartbeats, terms, assignments, topics, producer ids). Survives
    /// storage restarts.
    pub meta_store: Arc<dyn ObjectStore>,
    /// This broker's view of the cluster.
    pub cluster: ClusterView,
    /// Cancelled when an operator asks this broker to drain and exit
    /// (`strata cluster drain`): the same as SIGTERM.
    pub drain_requested: CancellationToken,
    /// This value's own `Arc`, for background tasks.
    pub(crate) this: Weak<Shared>,
    /// [`Self::may_fence`] as the registry's owned guard, built once.
    fence_guard: FenceGuard,
    /// Topics (in the bucket, cached).
    pub topics: TopicRegistry,
    /// The storage engine in service and its open partitions.
    pub partitions: PartitionRegistry,
    /// Producer-id allocation.
    pub producer_ids: ProducerIds,
    /// The group coordinator.
    pub groups: GroupCoordinator,
    /// Counters.
    pub metrics: BrokerMetrics,
    /// Bucket garbage collection (sweeps on the controller) and inventory.
    pub bucket_gc: BucketGc,
    /// Users, ACLs and the allow/deny decision.
    pub auth: Auth,
    /// One permit per fetch stream served (`fetch.max_streams`).
    fetch_streams: Arc<tokio::sync::Semaphore>,
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

/// Who a broker is: its id, resolved at start (`broker_id = "auto"` is
/// claimed in the bucket before anything uses it).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The id.
    pub id: BrokerId,
    /// The claim that holds it, for a claimed id.
    pub claim: Option<IdClaim>,
}

/// The addresses a broker tells clients and other brokers to use.
#[derive(Debug, Clone)]
pub struct Advertised {
    /// The gRPC URL.
    pub grpc: String,
    /// The HTTP URL (metrics, health).
    pub http: String,
    /// The Kafka listener's `host:port`.
    pub kafka: String,
}

/// [`Shared::fence_guard`]'s closure (it has no `Debug` of its own).
struct FenceGuard(MayFence);

impl std::fmt::Debug for FenceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FenceGuard")
    }
}

impl Shared {
    /// Builds the shared state of broker `identity` over an engine opened
    /// on `store` (named `store_name`); `health` is the gRPC health
    /// service's reporter.
    pub fn new(
        config: BrokerConfig,
        identity: Identity,
        advertised: Advertised,
        store: Arc<dyn ObjectStore>,
        store_name: String,
        engine: Engine,
        health: HealthReporter,
    ) -> Arc<Self> {
        let broker_id = identity.id;
        // The engine's store stack (retries, metrics) stays valid after the
        // engine is replaced: topics, producer ids and the cluster state
        // keep using it.
        let engine_store = engine.store().clone();
        let cluster = ClusterView::new(broker_id, config.cluster.clone());
        cluster.set_incarnation(engine.wal().stream().incarnation.0);
        Arc::new_cyclic(|this| Self {
            broker_id,
            id_claim: identity.claim,
            id_lost: CancellationToken::new(),
            advertised_addr: advertised.grpc,
            http_url: advertised.http,
            kafka_advertised_addr: advertised.kafka,
            store,
            store_name,
            meta_store: engine_store.clone(),
            cluster,
            drain_requested: CancellationToken::new(),
            this: this.clone(),
            fence_guard: {
                let this = this.clone();
                FenceGuard(Arc::new(move |o: &WalStream| {
                    this.upgrade().is_some_and(|s| s.may_fence(o))
                }))
            },
            topics: TopicRegistry::new(engine_store.clone(), broker_id, config.log.clone()),
            store_stats: Mutex::new(vec![engine.store_stats().clone()]),
            partitions: PartitionRegistry::new(engine),
            producer_ids: ProducerIds::new(engine_store.clone(), broker_id),
            groups: GroupCoordinator::new(config.group.clone(), config.log.max_batch_bytes),
            metrics: BrokerMetrics::default(),
            bucket_gc: BucketGc::new(engine_store.clone(), config.gc.clone()),
            auth: Auth::new(
                &config.auth,
                engine_store.clone(),
                format!("broker {broker_id}"),
                config.cluster.heartbeat_interval,
            ),
            fetch_streams: Arc::new(tokio::sync::Semaphore::new(config.fetch.max_streams)),
            shutdown: CancellationToken::new(),
            restarting: AtomicBool::new(false),
            health,
            ready: AtomicBool::new(false),
            config,
        })
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

    /// Refuses (and counts) what `caller` may not do: see
    /// [`crate::auth::Auth::check`].
    pub fn authorize(
        &self,
        caller: &crate::auth::Caller,
        operation: crate::auth::acl::Operation,
        resource: &crate::auth::acl::Resource<'_>,
    ) -> Result<()> {
        self.auth
            .check(caller, operation, resource)
            .inspect_err(|_| BrokerMetrics::add(&self.metrics.auth_denied, 1))
    }

    /// Refuses (and counts) creating topic `name` unless `caller` may:
    /// see [`crate::auth::Auth::may_create_topic`].
    pub fn authorize_topic_create(&self, caller: &crate::auth::Caller, name: &str) -> Result<()> {
        use crate::auth::acl::{Operation, Resource};
        if self.auth.may_create_topic(caller, name) {
            return Ok(());
        }
        BrokerMetrics::add(&self.metrics.auth_denied, 1);
        Err(crate::auth::denied(
            caller,
            Operation::Create,
            &Resource::topic(name),
        ))
    }

    /// Refuses (and counts) a producer id unless `caller` may get one: see
    /// [`crate::auth::Auth::may_init_producer`].
    pub fn authorize_producer_id(&self, caller: &crate::auth::Caller) -> Result<()> {
        use crate::auth::acl::{Operation, Resource};
        if self.auth.may_init_producer(caller) {
            return Ok(());
        }
        BrokerMetrics::add(&self.metrics.auth_denied, 1);
        Err(crate::auth::denied(
            caller,
            Operation::IdempotentWrite,
            &Resource::cluster(),
        ))
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

    /// A permit to serve one more fetch stream, held for the stream's
    /// life; refused (retryably) at `fetch.max_streams`.
    pub fn fetch_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.fetch_streams.clone().try_acquire_owned().map_err(|_| {
            BrokerError::Busy(format!(
                "this broker serves fetch.max_streams ({}) fetch streams already; retry later or \
                 close streams that are not read",
                self.config.fetch.max_streams
            ))
        })
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
    ) -> Result<(Topic, TopicPartition, PartitionLog, CancellationToken)> {
        let (topic, tp) = self.resolve(topic, partition).await?;
        self.cluster.check_owner(&tp)?;
        let (log, dropped) = self
            .partitions
            .get_or_open_watched(
                &topic.partition(partition),
                &topic.log_config,
                self.fence_guard(),
            )
            .await?;
        Ok((topic, tp, log, dropped))
    }

    /// [`Self::partition`], also returning the topic.
    pub async fn partition_of_topic(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Topic, TopicPartition, PartitionLog)> {
        let (topic, tp) = self.resolve(topic, partition).await?;
        self.cluster.check_owner(&tp)?;
        let log = self
            .partitions
            .get_or_open(
                &topic.partition(partition),
                &topic.log_config,
                self.fence_guard(),
            )
            .await?;
        Ok((topic, tp, log))
    }

    /// Whether a claim by a request may fence `owner`: see
    /// [`ClusterView::may_fence`].
    pub fn may_fence(&self, owner: &WalStream) -> bool {
        self.cluster.may_fence(owner)
    }

    /// [`Self::may_fence`] as an owned guard for the registry's open task
    /// (`false` once the broker is gone).
    pub fn fence_guard(&self) -> &MayFence {
        &self.fence_guard.0
    }

    /// The topic and the topic-partition, checked to exist.
    pub async fn resolve(&self, topic: &str, partition: u32) -> Result<(Topic, TopicPartition)> {
        let mut topic = self.topic(topic).await?;
        if partition >= topic.record.partitions {
            // Partitions may have been added elsewhere since it was cached.
            self.topics.reread(&topic.name).await?;
            topic = self.topics.get(&topic.name).await?;
        }
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
            load: self.cluster.load(),
            draining: self.cluster.is_draining(),
            controller: self.cluster.is_controller(),
            brokers_alive: self.cluster.live_brokers().len(),
            unsealed_bytes: self
                .partitions
                .engine()
                .map_or(0, |e| e.wal().unsealed_bytes()),
            wal_objects: self.partitions.engine().map_or(0, |e| e.wal().puts()),
            wal_bytes: self.partitions.engine().map_or(0, |e| e.wal().put_bytes()),
            wal_hedged_puts: self
                .partitions
                .engine()
                .map_or(0, |e| e.wal().hedged_puts()),
            bucket: self.bucket_gc.inventory(),
            gc_deleted: self.bucket_gc.deleted(),
            groups: self.groups.gauges(self),
            auth_enabled: self.auth.enabled(),
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
