//! Several brokers sharing one bucket behave as one cluster (DESIGN §6, §8).
//!
//! Everything goes through the bucket; brokers only talk to each other for
//! hints ([`Nudge`](strata_proto::v1::NudgeRequest): "look now") and to
//! forward an operator's drain.
//!
//! - **Membership**: every broker overwrites `cluster/brokers/{id}/heartbeat.json`
//!   every `cluster.heartbeat_interval` ([`model::Heartbeat`]: address,
//!   incarnation, draining, owned partitions, load). A reader judges a
//!   heartbeat alive if it saw it *change* within `cluster.heartbeat_timeout`
//!   on its own monotonic clock: no clock comparison between machines, and
//!   a broker that just started gives everyone the full timeout.
//! - **Controller**: the broker that created the highest
//!   `cluster/controller/{term}` (create-only) while its heartbeat is alive,
//!   with the same incarnation, and not draining. Otherwise any other
//!   broker creates the next term; create-only picks one winner.
//! - **Assignment**: the controller computes [`model::plan`] every round
//!   and, when the placement changed, creates the next
//!   `cluster/assignment/{version}`, then nudges every broker. Brokers follow
//!   the highest version ([`reconcile`]): they release partitions assigned
//!   elsewhere (seal the tail, owner-less manifest, nudge the new owner) and
//!   claim partitions assigned to them.
//! - **Claims never fence a live owner**: a claim asks [`ClusterView::may_fence`]
//!   before fencing the incarnation a manifest names; while that incarnation
//!   is alive the claim waits for its release (a graceful move), and only a
//!   dead or replaced incarnation is fenced (a failure takeover), or a live
//!   one that has not released within `cluster.release_timeout`.
//! - **Zombies**: a broker that was paused longer than the heartbeat
//!   timeout checks whether its WAL stream was fenced meanwhile and, if so,
//!   restarts its storage as a new incarnation at once (it would also find
//!   out at its next WAL write). Either way it never acknowledges anything
//!   after the takeover: its WAL writes fail.
//!
//! - **Cost at idle**: a round GETs the known members' heartbeats and
//!   nothing else. Heartbeats carry the controller term and assignment
//!   version their writer knows, so the chains are read only when someone
//!   names a newer version; every tenth round and every nudged round also
//!   LIST the heartbeats (new brokers) and the chains ([`Look`]). A new
//!   broker nudges the others after its first round.
//!
//! Correctness never rests on the controller being unique or the views
//! being fresh: ownership is decided by create-only manifest versions and
//! WAL fencing (storage). The cluster layer only decides who *tries*.
//!
//! The one thing not to break: a broker must never fence an incarnation it
//! believes alive unless `release_timeout` passed (that would make a
//! healthy broker restart its storage on every move).

pub mod broker_id;
pub mod model;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::{Mutex, RwLock};
use strata_proto::v1::cluster_client::ClusterClient;
use strata_proto::v1::{BrokerStatus, ClusterStatus, NudgeRequest, PartitionAssignment};
use strata_storage::chain::Chain;
use strata_storage::keys::{self, BrokerId, TopicName, TopicPartition, Version, WalStream};
use strata_storage::log::PartitionLog;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::config::ClusterConfig;
use crate::error::{BrokerError, Result};
use crate::partitions::MayFence;
use crate::restart::{self, RestartReason};
use crate::service::{Shared, now_ms};
use model::{
    Assignment, ControllerTerm, Heartbeat, Load, OwnedPartition, PlanInput, Slot, Traffic,
};

/// The controller re-reads every topic's head (to see deletes made on other
/// brokers that were not announced to it) once in this many of its rounds;
/// other rounds trust its cache.
const FRESH_TOPICS_EVERY: u64 = 10;

/// Weight of a round's rate reports in the controller's running estimates
/// (`model::smooth`).
const RATE_SMOOTHING: f64 = 0.3;

/// After a rebalance moved partitions, the controller only places orphans
/// for this many heartbeat intervals: the moved partitions' rates are
/// measured afresh by their new owners meanwhile, and the estimates settle
/// instead of making partitions flap.
const REBALANCE_COOLDOWN_INTERVALS: u32 = 10;

/// Every this many rounds a broker LISTs the heartbeats and reads every
/// chain head even when no heartbeat hints at a change (see [`Look`]).
const LOOK_EVERY: u64 = 10;

/// Keep this many old controller terms and assignment versions.
const CHAIN_KEEP: u64 = 20;

/// What the controller keeps between rounds to keep the balancer calm.
#[derive(Debug, Default)]
struct Balancer {
    /// Smoothed traffic per partition.
    rates: HashMap<(String, u32), Traffic>,
    /// When a rebalance last moved partitions.
    moved_at: Option<Instant>,
}

/// A member as this broker sees it.
#[derive(Debug, Clone)]
struct Member {
    hb: Heartbeat,
    /// When this broker last saw the heartbeat change.
    changed_at: Instant,
}

#[derive(Debug, Default)]
struct ViewState {
    members: BTreeMap<u32, Member>,
    /// Brokers a claim found named in a manifest but this view does not
    /// know (hinted rounds only read known members): the next round reads
    /// their heartbeats.
    wanted: BTreeSet<u32>,
    /// Brokers whose heartbeat a read found gone: they left (or were
    /// forgotten), so a claim may fence them.
    gone: BTreeSet<u32>,
    controller: Option<(Version, ControllerTerm)>,
    assignment: Option<(Version, Arc<Assignment>)>,
}

/// This broker's view of the cluster, refreshed every round; read by the
/// request path (ownership, metadata) without IO.
#[derive(Debug)]
pub struct ClusterView {
    me: BrokerId,
    config: ClusterConfig,
    state: RwLock<ViewState>,
    /// Incarnation of the storage engine in service.
    incarnation: AtomicU64,
    draining: AtomicBool,
    /// Wakes the cluster loop for an early round.
    round: Notify,
    /// Wakes claims waiting for a previous owner's release.
    released: Notify,
    /// Per-partition produce and fetch bytes (for the heartbeat's rates).
    traffic: Mutex<HashMap<TopicPartition, TrafficCount>>,
    /// The load last published.
    load: Mutex<Load>,
    /// Controller rounds run in the current term.
    control_rounds: AtomicU64,
    /// The term those rounds ran in.
    controlling_term: Mutex<Option<u64>>,
    /// Sequence number of the next heartbeat.
    hb_seq: AtomicU64,
    /// Counters at the last heartbeat, for rates.
    meter: Mutex<Option<RateMeter>>,
    /// The controller's memory between rounds.
    balancer: Mutex<Balancer>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ClusterView {
    /// An empty view for broker `me`.
    pub fn new(me: BrokerId, config: ClusterConfig) -> Self {
        Self {
            me,
            config,
            state: RwLock::new(ViewState::default()),
            incarnation: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            round: Notify::new(),
            released: Notify::new(),
            traffic: Mutex::new(HashMap::new()),
            load: Mutex::new(Load::default()),
            control_rounds: AtomicU64::new(0),
            controlling_term: Mutex::new(None),
            hb_seq: AtomicU64::new(1),
            meter: Mutex::new(None),
            balancer: Mutex::new(Balancer::default()),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Records the incarnation of the engine put in service.
    pub fn set_incarnation(&self, incarnation: u64) {
        self.incarnation.store(incarnation, Ordering::SeqCst);
    }

    /// The WAL streams the known heartbeats name (dead brokers' last
    /// incarnations included until they are forgotten), and this broker's
    /// own: streams a broker may still write.
    pub fn known_streams(&self) -> Vec<WalStream> {
        let me = WalStream {
            broker: self.me,
            incarnation: strata_storage::keys::Incarnation(self.incarnation.load(Ordering::SeqCst)),
        };
        let st = self.state.read();
        st.members
            .values()
            .map(|m| WalStream {
                broker: BrokerId(m.hb.broker_id),
                incarnation: strata_storage::keys::Incarnation(m.hb.incarnation),
            })
            .chain(std::iter::once(me))
            .collect()
    }

    /// True once this broker started draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Asks for an early round of the cluster loop, and wakes waiting claims.
    pub fn nudge(&self) {
        self.round.notify_one();
        self.released.notify_waiters();
    }

    /// Counts `bytes` produced into `tp`.
    pub fn count_bytes_in(&self, tp: &TopicPartition, bytes: u64) {
        self.count(tp, |c| c.bytes_in += bytes);
    }

    /// Counts `bytes` fetched from `tp`.
    pub fn count_bytes_out(&self, tp: &TopicPartition, bytes: u64) {
        self.count(tp, |c| c.bytes_out += bytes);
    }

    /// Updates `tp`'s counters (cloning the key only on its first use).
    fn count(&self, tp: &TopicPartition, add: impl FnOnce(&mut TrafficCount)) {
        let mut traffic = self.traffic.lock();
        match traffic.get_mut(tp) {
            Some(c) => add(c),
            None => add(traffic.entry(tp.clone()).or_default()),
        }
    }

    /// The load last published in the heartbeat.
    pub fn load(&self) -> Load {
        *self.load.lock()
    }

    fn alive(&self, m: &Member) -> bool {
        m.changed_at.elapsed() < self.config.heartbeat_timeout
    }

    /// Whether a claim may fence `owner` (see the module docs): yes unless
    /// it is another broker's incarnation that is alive now.
    pub fn may_fence(&self, owner: &WalStream) -> bool {
        if owner.broker == self.me {
            // Our own earlier incarnation: gone, since ours is in service.
            return owner.incarnation.0 != self.incarnation.load(Ordering::SeqCst);
        }
        let id = owner.broker.0;
        {
            let st = self.state.read();
            match st.members.get(&id) {
                Some(m) => return m.hb.incarnation != owner.incarnation.0 || !self.alive(m),
                // Known to have left.
                None if st.gone.contains(&id) => return true,
                None => {}
            }
        }
        // Not known yet (a new broker this view has not listed): look
        // before fencing it; the claim retries after the round.
        self.state.write().wanted.insert(id);
        self.round.notify_one();
        false
    }

    /// The broker `topic`/`partition` is assigned to.
    pub fn owner_of(&self, topic: &str, partition: u32) -> Option<u32> {
        self.state
            .read()
            .assignment
            .as_ref()
            .and_then(|(_, a)| a.owner(topic, partition))
    }

    /// The gRPC address of `broker`, from its heartbeat.
    pub fn address_of(&self, broker: u32) -> Option<String> {
        self.state
            .read()
            .members
            .get(&broker)
            .map(|m| m.hb.address.clone())
    }

    /// Live brokers and their addresses.
    pub fn live_brokers(&self) -> Vec<(u32, String)> {
        let st = self.state.read();
        st.members
            .values()
            .filter(|m| self.alive(m))
            .map(|m| (m.hb.broker_id, m.hb.address.clone()))
            .collect()
    }

    /// The Kafka listener address (`host:port`) of `broker`, from its
    /// heartbeat.
    pub fn kafka_address_of(&self, broker: u32) -> Option<String> {
        self.state
            .read()
            .members
            .get(&broker)
            .map(|m| m.hb.kafka_address.clone())
            .filter(|a| !a.is_empty())
    }

    /// Live brokers and their Kafka listener addresses (`host:port`).
    pub fn live_kafka_brokers(&self) -> Vec<(u32, String)> {
        let st = self.state.read();
        st.members
            .values()
            .filter(|m| self.alive(m))
            .map(|m| (m.hb.broker_id, m.hb.kafka_address.clone()))
            .collect()
    }

    /// The controller's broker id, as this broker last read the term
    /// chain.
    pub fn controller_id(&self) -> Option<u32> {
        self.state
            .read()
            .controller
            .as_ref()
            .map(|(_, term)| term.broker_id)
    }

    /// Live brokers other than this one whose last heartbeat lists a
    /// partition of `topic` open.
    fn brokers_with_open(&self, topic: &str) -> Vec<u32> {
        let st = self.state.read();
        st.members
            .values()
            .filter(|m| m.hb.broker_id != self.me.0 && self.alive(m))
            .filter(|m| m.hb.partitions.iter().any(|p| p.topic == topic))
            .map(|m| m.hb.broker_id)
            .collect()
    }

    /// Live, non-draining brokers other than this one.
    pub fn eligible_others(&self) -> Vec<u32> {
        let st = self.state.read();
        st.members
            .values()
            .filter(|m| m.hb.broker_id != self.me.0 && self.alive(m) && !m.hb.draining)
            .map(|m| m.hb.broker_id)
            .collect()
    }

    /// The assignment in force, if one was read.
    pub fn assignment(&self) -> Option<(Version, Arc<Assignment>)> {
        self.state.read().assignment.clone()
    }

    /// True while this broker holds the controller term.
    pub fn is_controller(&self) -> bool {
        let st = self.state.read();
        st.controller.as_ref().is_some_and(|(_, c)| {
            c.broker_id == self.me.0 && c.incarnation == self.incarnation.load(Ordering::SeqCst)
        })
    }

    /// Fails with `NOT_OWNER` unless `tp` is assigned to this broker.
    pub fn check_owner(&self, tp: &TopicPartition) -> Result<()> {
        let st = self.state.read();
        let Some((_, a)) = &st.assignment else {
            return Err(BrokerError::NotOwner {
                tp: tp.to_string(),
                owner: None,
                detail: "this broker is joining the cluster and has not read the partition assignment yet; retry shortly".into(),
            });
        };
        match a.owner(tp.topic.as_str(), tp.partition) {
            Some(b) if b == self.me.0 => Ok(()),
            Some(b) => Err(BrokerError::NotOwner {
                tp: tp.to_string(),
                owner: st.members.get(&b).map(|m| (b, m.hb.address.clone())),
                detail: format!("it is assigned to broker {b}; send requests there"),
            }),
            None => Err(BrokerError::NotOwner {
                tp: tp.to_string(),
                owner: None,
                detail: "no broker is assigned to it yet (the controller assigns new partitions within a heartbeat interval); retry shortly".into(),
            }),
        }
    }

    /// Updates the members from freshly read heartbeats (a broker whose
    /// heartbeat object is gone has left; one whose heartbeat could not be
    /// read stays as it was).
    fn update_members(&self, heartbeats: Heartbeats) {
        let now = Instant::now();
        let mut st = self.state.write();
        let found: BTreeSet<u32> = heartbeats
            .read
            .iter()
            .map(|hb| hb.broker_id)
            .chain(heartbeats.unread.iter().copied())
            .collect();
        st.gone.retain(|b| !found.contains(b));
        for b in &heartbeats.asked_for {
            st.wanted.remove(b);
            if !found.contains(b) {
                st.gone.insert(*b);
            }
        }
        let mut next = BTreeMap::new();
        for b in heartbeats.unread {
            if let Some(m) = st.members.get(&b) {
                next.insert(b, m.clone());
            }
        }
        for hb in heartbeats.read {
            let changed_at = match st.members.get(&hb.broker_id) {
                Some(m) if m.hb.incarnation == hb.incarnation && m.hb.seq == hb.seq => m.changed_at,
                _ => now,
            };
            next.insert(hb.broker_id, Member { hb, changed_at });
        }
        st.members = next;
    }

    /// True when a member's heartbeat names a newer chain version (read by
    /// `field`) than `known`.
    fn newer_hint(
        &self,
        known: Option<Version>,
        field: impl Fn(&Heartbeat) -> Option<u64>,
    ) -> bool {
        let st = self.state.read();
        st.members
            .values()
            .filter_map(|m| field(&m.hb))
            .any(|v| known.is_none_or(|k| v > k.0))
    }

    /// The cluster status for `strata cluster status`.
    pub fn status(&self) -> ClusterStatus {
        let st = self.state.read();
        let controller = st
            .controller
            .as_ref()
            .filter(|(_, c)| {
                st.members
                    .get(&c.broker_id)
                    .is_some_and(|m| m.hb.incarnation == c.incarnation && self.alive(m))
            })
            .map(|(_, c)| c.broker_id);
        let brokers = st
            .members
            .values()
            .map(|m| BrokerStatus {
                broker_id: m.hb.broker_id,
                address: m.hb.address.clone(),
                http_address: m.hb.http_address.clone(),
                incarnation: m.hb.incarnation,
                alive: self.alive(m),
                draining: m.hb.draining,
                controller: controller == Some(m.hb.broker_id),
                partitions_owned: u32::try_from(m.hb.partitions.len()).unwrap_or(u32::MAX),
                bytes_in_per_sec: m.hb.load.bytes_in_per_sec,
                bytes_out_per_sec: m.hb.load.bytes_out_per_sec,
                cpu_cores: m.hb.load.cpu_cores,
                heartbeat_age_ms: u64::try_from(m.changed_at.elapsed().as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        let rates = partition_rates(&st.members);
        let partitions = st
            .assignment
            .as_ref()
            .map(|(_, a)| {
                a.topics
                    .iter()
                    .flat_map(|(t, slots)| {
                        let rates = &rates;
                        slots.iter().enumerate().map(move |(p, s)| {
                            let r = rates
                                .get(&(t.clone(), p as u32))
                                .copied()
                                .unwrap_or_default();
                            PartitionAssignment {
                                topic: t.clone(),
                                partition: p as u32,
                                broker_id: s.broker,
                                pinned: s.pinned,
                                bytes_in_per_sec: r.bytes_in_per_sec,
                                bytes_out_per_sec: r.bytes_out_per_sec,
                            }
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClusterStatus {
            broker_id: self.me.0,
            controller_id: controller,
            controller_term: st.controller.as_ref().map_or(0, |(v, _)| v.0),
            assignment_version: st.assignment.as_ref().map_or(0, |(v, _)| v.0),
            brokers,
            partitions,
        }
    }

    /// A (cached) channel to a broker.
    pub(crate) async fn channel(&self, address: &str) -> Option<Channel> {
        if let Some(c) = self.channels.lock().get(address) {
            return Some(c.clone());
        }
        let endpoint = Endpoint::from_shared(address.to_string())
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.ok()?;
        self.channels
            .lock()
            .insert(address.to_string(), channel.clone());
        Some(channel)
    }

    /// Tells the broker at `address` to look at the cluster state now (best
    /// effort: it looks at its next round anyway).
    pub async fn nudge_broker(&self, address: &str) {
        self.send_nudge(address, Vec::new()).await;
    }

    /// Sends `Cluster.Nudge` naming `topics` that changed. Returns whether
    /// the broker answered.
    async fn send_nudge(&self, address: &str, topics: Vec<String>) -> bool {
        let Some(channel) = self.channel(address).await else {
            return false;
        };
        let req = NudgeRequest {
            from_broker_id: self.me.0,
            topics,
        };
        match ClusterClient::new(channel).nudge(req).await {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(address, error = %e, "nudge failed");
                self.channels.lock().remove(address);
                false
            }
        }
    }

    /// Nudges every other live broker.
    pub async fn nudge_all(&self) {
        let others: Vec<String> = self
            .live_brokers()
            .into_iter()
            .filter(|(b, _)| *b != self.me.0)
            .map(|(_, a)| a)
            .collect();
        futures::future::join_all(others.iter().map(|a| self.nudge_broker(a))).await;
    }
}

/// Traffic per partition, from the owners' heartbeats.
fn partition_rates(members: &BTreeMap<u32, Member>) -> HashMap<(String, u32), Traffic> {
    members
        .values()
        .flat_map(|m| m.hb.partitions.iter())
        .map(|p| ((p.topic.clone(), p.partition), p.traffic()))
        .collect()
}

/// Runs the cluster tasks (heartbeat writer, cluster loop) until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), stop.clone()));
    state_loop(&shared, &stop).await;
    let _ = heartbeats.await;
}

/// Bytes produced into and fetched from one partition since start.
#[derive(Debug, Clone, Copy, Default)]
struct TrafficCount {
    bytes_in: u64,
    bytes_out: u64,
}

/// Rates computed between two heartbeats.
#[derive(Debug)]
struct RateMeter {
    at: Instant,
    bytes_in: u64,
    bytes_out: u64,
    cpu: f64,
    partitions: HashMap<TopicPartition, TrafficCount>,
}

impl RateMeter {
    fn new(shared: &Shared) -> Self {
        Self {
            at: Instant::now(),
            bytes_in: shared.metrics.produce_bytes.load(Ordering::Relaxed),
            bytes_out: shared.metrics.fetch_bytes.load(Ordering::Relaxed),
            cpu: crate::metrics::process_cpu_seconds(),
            partitions: shared.cluster.traffic.lock().clone(),
        }
    }
}

/// Builds this broker's heartbeat, measuring rates since the last one.
fn build_heartbeat(shared: &Shared) -> Option<Heartbeat> {
    let engine = shared.partitions.engine()?;
    let view = &shared.cluster;
    let now = RateMeter::new(shared);
    let mut meter = view.meter.lock();
    let last = meter.get_or_insert_with(|| RateMeter::new(shared));
    let secs = now.at.duration_since(last.at).as_secs_f64();
    let rate = |after: u64, before: u64| {
        if secs < 1e-3 {
            0.0
        } else {
            after.saturating_sub(before) as f64 / secs
        }
    };
    let load = if secs < 1e-3 {
        *view.load.lock()
    } else {
        Load {
            bytes_in_per_sec: rate(now.bytes_in, last.bytes_in),
            bytes_out_per_sec: rate(now.bytes_out, last.bytes_out),
            cpu_cores: ((now.cpu - last.cpu) / secs).max(0.0),
        }
    };
    let open = shared.partitions.open_logs();
    let partitions = open
        .iter()
        .map(|log| {
            let tp = log.topic_partition();
            let before = last.partitions.get(tp).copied().unwrap_or_default();
            let after = now.partitions.get(tp).copied().unwrap_or_default();
            OwnedPartition {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                bytes_in_per_sec: rate(after.bytes_in, before.bytes_in),
                bytes_out_per_sec: rate(after.bytes_out, before.bytes_out),
            }
        })
        .collect();
    // Counters of partitions not open here (sealed reads served for other
    // owners, partitions gone) are reported by nobody: drop them, so the
    // map stays as small as the open set.
    let open: HashSet<&TopicPartition> = open.iter().map(PartitionLog::topic_partition).collect();
    let mut now = now;
    now.partitions.retain(|tp, _| open.contains(tp));
    view.traffic.lock().retain(|tp, _| open.contains(tp));
    *meter = Some(now);
    drop(meter);
    *view.load.lock() = load;
    let (controller_term, assignment_version) = {
        let st = view.state.read();
        (
            st.controller.as_ref().map(|(v, _)| v.0),
            st.assignment.as_ref().map(|(v, _)| v.0),
        )
    };
    Some(Heartbeat {
        broker_id: shared.broker_id.0,
        incarnation: engine.wal().stream().incarnation.0,
        address: shared.advertised_addr.clone(),
        http_address: shared.http_url.clone(),
        kafka_address: shared.kafka_advertised_addr.clone(),
        draining: view.is_draining(),
        seq: view.hb_seq.fetch_add(1, Ordering::SeqCst),
        written_at_ms: now_ms(),
        load,
        partitions,
        controller_term,
        assignment_version,
    })
}

/// Writes this broker's heartbeat now. Returns false when it could not.
pub async fn write_heartbeat(shared: &Shared) -> bool {
    let Some(hb) = build_heartbeat(shared) else {
        return false;
    };
    let Ok(json) = serde_json::to_vec(&hb) else {
        return false;
    };
    match shared
        .meta_store
        .put(
            &keys::heartbeat(shared.broker_id),
            PutPayload::from(Bytes::from(json)),
        )
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the heartbeat; other brokers take this broker's partitions over if it stays unwritten for cluster.heartbeat_timeout");
            false
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let view = &shared.cluster;
    let interval = view.config.heartbeat_interval;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let gap = last.elapsed();
        last = Instant::now();
        if gap > view.config.heartbeat_timeout {
            check_paused(&shared, gap).await;
        }
        write_heartbeat(&shared).await;
    }
}

/// After this process did not run for longer than the heartbeat timeout
/// (SIGSTOP, a VM pause, starvation), other brokers may have taken its
/// partitions over and fenced its WAL. Find out now rather than at the
/// next WAL write, and come back as a new incarnation if so.
async fn check_paused(shared: &Shared, gap: Duration) {
    let Some(engine) = shared.partitions.engine() else {
        return;
    };
    let stream = engine.wal().stream();
    let paused = humantime::format_duration(Duration::from_millis(gap.as_millis() as u64));
    let restart_because = if gap >= shared.config.gc.grace {
        // The bucket sweep may have retired this incarnation's WAL
        // meanwhile (and, after gc.tombstone_retention, removed the
        // tombstone that would fence it): never write to it again.
        Some(format!(
            "paused for {paused}, longer than gc.grace: {stream} may have been collected"
        ))
    } else {
        // Fenced: another broker wrote at or above our next sequence.
        let next = engine.wal().next_seq();
        match strata_storage::wal::list_from(&shared.meta_store, stream, next).await {
            Ok(above) if !above.is_empty() => Some(format!(
                "paused for {paused}; another broker took the partitions over and fenced {stream}"
            )),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check whether this broker's WAL was fenced while it was paused");
                None
            }
        }
    };
    match restart_because {
        Some(reason) => {
            tracing::warn!(%stream, %paused, %reason, "this broker was paused too long; rejoining as a new incarnation");
            restart::restart_storage(shared, RestartReason::Fenced(reason)).await;
        }
        None => {
            tracing::warn!(%stream, %paused, "this broker was paused longer than cluster.heartbeat_timeout; its WAL was not fenced, carrying on");
        }
    }
}

async fn state_loop(shared: &Shared, stop: &CancellationToken) {
    let view = &shared.cluster;
    let mut tasks = Tasks::default();
    // The first round looks at everything, and so does the one after a
    // failed round.
    let mut nudged = true;
    let mut failed = false;
    for n in 0u64.. {
        let blind = view.state.read().members.is_empty();
        let look = if nudged || failed || blind || n.is_multiple_of(LOOK_EVERY) {
            Look::Everything
        } else {
            Look::Hinted
        };
        failed = false;
        if let Err(e) = round(shared, &mut tasks, look).await {
            tracing::warn!(error = %e, "cluster round failed; retrying at the next one");
            failed = true;
        }
        if n == 0 {
            // The others discover this broker now rather than at their
            // next full look.
            view.nudge_all().await;
        }
        nudged = tokio::select! {
            () = stop.cancelled() => return,
            () = view.round.notified() => true,
            () = tokio::time::sleep(view.config.heartbeat_interval) => false,
        };
    }
}

/// How much a round reads.
///
/// At idle, a round costs one GET per member heartbeat and nothing else:
/// the controller term and the assignment version are read only when a
/// heartbeat names a newer one than this broker knows ([`Look::Hinted`]).
/// Every [`LOOK_EVERY`]th round, and every round woken by a nudge, also
/// LISTs the heartbeats (new brokers), the term and the assignment chains
/// ([`Look::Everything`]). Correctness does not rest on this: ownership is
/// decided by manifests and WAL fencing, and a stale view only delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// GET the known members' heartbeats; follow their hints.
    Hinted,
    /// LIST the heartbeats and read every chain head.
    Everything,
}

/// Claims and releases in flight, so one round does not start them twice.
#[derive(Debug, Default)]
struct Tasks {
    busy: Arc<Mutex<HashSet<TopicPartition>>>,
}

impl Tasks {
    /// Runs `work` for `tp` in its own task unless one is already running.
    fn spawn_once<F, Fut>(&self, shared: &Arc<Shared>, tp: TopicPartition, work: F)
    where
        F: FnOnce(Arc<Shared>, TopicPartition) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if !self.busy.lock().insert(tp.clone()) {
            return;
        }
        let busy = self.busy.clone();
        let done = tp.clone();
        let fut = work(shared.clone(), tp);
        tokio::spawn(async move {
            fut.await;
            busy.lock().remove(&done);
        });
    }
}

/// One round: read members, elect, plan (if controller), follow.
async fn round(shared: &Shared, tasks: &mut Tasks, look: Look) -> Result<()> {
    let view = &shared.cluster;
    let store = &shared.meta_store;
    let (known, wanted) = {
        let st = view.state.read();
        let wanted: Vec<u32> = st.wanted.iter().copied().collect();
        let known = match look {
            Look::Everything => None,
            Look::Hinted => Some(st.members.keys().chain(&wanted).copied().collect()),
        };
        (known, wanted)
    };
    let mut heartbeats = read_heartbeats(store, known).await?;
    heartbeats.asked_for = wanted;
    view.update_members(heartbeats);
    elect(shared, look).await?;
    let changed = refresh_assignment(shared, look).await?;
    if view.is_controller() && !view.is_draining() {
        control(shared, look).await?;
    }
    if changed {
        tracing::debug!("the partition assignment changed");
    }
    apply_topic_changes(shared).await;
    reconcile(shared, tasks);
    Ok(())
}

/// Deletes the heartbeats of brokers dead for `cluster.forget_dead_after`
/// that own nothing in the assignment, so `cluster status` and every
/// broker's per-interval heartbeat reads stop carrying them. A broker that
/// was only paused writes its heartbeat again and reappears.
async fn forget_dead(shared: &Shared) {
    let view = &shared.cluster;
    let doomed: Vec<u32> = {
        let st = view.state.read();
        let owns = |b: u32| {
            st.assignment
                .as_ref()
                .is_some_and(|(_, a)| a.partitions_of(b).next().is_some())
        };
        st.members
            .values()
            .filter(|m| m.changed_at.elapsed() >= view.config.forget_dead_after)
            .filter(|m| !view.alive(m) && !owns(m.hb.broker_id))
            .map(|m| m.hb.broker_id)
            .collect()
    };
    for id in doomed {
        match shared
            .meta_store
            .delete(&keys::heartbeat(BrokerId(id)))
            .await
        {
            Ok(()) => {
                view.state.write().members.remove(&id);
                tracing::info!(broker = id, after = %humantime::format_duration(view.config.forget_dead_after), "forgot a dead broker: deleted its heartbeat");
            }
            Err(e) => {
                tracing::debug!(broker = id, error = %e, "cannot delete a dead broker's heartbeat")
            }
        }
    }
}

/// Brings the partitions open here in line with topic changes this broker
/// has seen.
///
/// Drops, without writing anything, the partitions whose topic was deleted
/// or re-created: those whose topic head this broker saw move
/// ([`crate::topics::TopicRegistry::take_changed`]), and any of a topic
/// its cache knows is deleted (an open that raced the delete). Their keys
/// are being purged, so a release would write stale state into them.
///
/// Releases (seals and hands back, as for a move) the partitions of a topic
/// whose settings changed ([`crate::topics::TopicRegistry::take_reconfigured`]):
/// the next request reopens them with the new settings.
pub async fn apply_topic_changes(shared: &Shared) {
    for topic in shared.topics.take_reconfigured() {
        shared.partitions.release_topic(&topic).await;
        tracing::info!(%topic, "released the partitions of a reconfigured topic; they reopen with its new settings");
    }
    let mut gone = shared.topics.take_changed();
    gone.extend(
        shared
            .partitions
            .open_topics()
            .into_iter()
            .filter(|t| shared.topics.cached_as_deleted(t)),
    );
    gone.sort();
    gone.dedup();
    for topic in gone {
        let n = shared
            .partitions
            .abandon_topic(&topic, "its topic was deleted or re-created")
            .await;
        if n > 0 {
            tracing::info!(%topic, partitions = n, "dropped the partitions of a deleted or re-created topic");
        }
    }
}

/// Before `topic` is created: if it is a re-create after a delete, makes
/// sure no live broker still has a partition of the deleted topic open, so
/// no old log can write into the new topic's keys. Drops this broker's own,
/// tells the others again ([`announce_topic_change`]), and waits until
/// every live broker that did not answer stops listing the topic in its
/// heartbeat; fails (retryable) after twice the heartbeat timeout. A topic
/// that never existed (or is live) costs one head read.
pub async fn await_topic_closed(shared: &Shared, topic: &TopicName) -> Result<()> {
    shared.topics.reread(topic).await?;
    if !shared.topics.cached_as_deleted(topic) {
        // Never created (or live): no old topic to close.
        return Ok(());
    }
    apply_topic_changes(shared).await;
    let view = &shared.cluster;
    let silent = announce_topic_change(shared, topic).await;
    let deadline = Instant::now() + 2 * view.config.heartbeat_timeout;
    loop {
        let holders: Vec<u32> = view
            .brokers_with_open(topic.as_str())
            .into_iter()
            .filter(|b| silent.contains(b))
            .collect();
        if holders.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BrokerError::storage(
                format!("re-creating topic {topic}"),
                strata_storage::Error::Unavailable(format!(
                    "brokers {holders:?} still have partitions of the deleted topic open and do not answer; retry in a few seconds"
                )),
            ));
        }
        tokio::time::sleep(view.config.heartbeat_interval / 4).await;
    }
}

/// Tells every live broker that `topic` was created, deleted or re-created: each
/// re-reads its head and drops its partitions of the old topic before it
/// answers (`Cluster.Nudge` with the topic), and the controller drops it
/// from the assignment at once. A broker that cannot be reached sees a
/// delete when the controller drops the topic from the assignment: it
/// re-reads the head of a topic before releasing an unassigned partition
/// of it ([`hand_over`]). Returns the brokers that did not answer.
pub async fn announce_topic_change(shared: &Shared, topic: &TopicName) -> Vec<u32> {
    let view = &shared.cluster;
    view.nudge();
    let others: Vec<(u32, String)> = view
        .live_brokers()
        .into_iter()
        .filter(|(b, _)| *b != shared.broker_id.0)
        .collect();
    let topics = vec![topic.to_string()];
    let answers = futures::future::join_all(
        others
            .iter()
            .map(|(_, a)| view.send_nudge(a, topics.clone())),
    )
    .await;
    others
        .iter()
        .zip(answers)
        .filter(|(_, ok)| !ok)
        .map(|((b, _), _)| *b)
        .collect()
}

fn storage_err(what: &str, e: strata_storage::Error) -> BrokerError {
    BrokerError::storage(what, e)
}

/// Heartbeats read in one round.
#[derive(Debug, Default)]
struct Heartbeats {
    /// Wanted brokers (see `ViewState::wanted`) this read looked for.
    asked_for: Vec<u32>,
    read: Vec<Heartbeat>,
    /// Brokers whose heartbeat exists but could not be read now: their
    /// members are kept as they were (a failed GET is not a departure).
    unread: Vec<u32>,
}

/// Reads the heartbeats of `known` brokers (a GET each; a broker whose
/// heartbeat is gone has left), or of every broker (a LIST first).
async fn read_heartbeats(
    store: &Arc<dyn ObjectStore>,
    known: Option<Vec<u32>>,
) -> Result<Heartbeats> {
    let ids: Vec<u32> = match known {
        Some(ids) => ids,
        None => store
            .list(Some(&keys::heartbeats_prefix()))
            .try_filter_map(|m| std::future::ready(Ok(heartbeat_owner(&m.location))))
            .try_collect()
            .await
            .map_err(|e| storage_err("listing heartbeats", e.into()))?,
    };
    let reads = ids.into_iter().map(|b| async move {
        let location = keys::heartbeat(BrokerId(b));
        let got = match store.get(&location).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match got {
            Ok(bytes) => match serde_json::from_slice::<Heartbeat>(&bytes) {
                Ok(hb) => Ok(Some(hb)),
                Err(e) => {
                    tracing::warn!(key = %location, error = %e, "ignoring an unreadable heartbeat");
                    Err(b)
                }
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => {
                tracing::debug!(key = %location, error = %e, "cannot read a heartbeat; keeping what was seen");
                Err(b)
            }
        }
    });
    let results: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(16)
        .collect()
        .await;
    let mut out = Heartbeats::default();
    for r in results {
        match r {
            Ok(Some(hb)) => out.read.push(hb),
            Ok(None) => {}
            Err(b) => out.unread.push(b),
        }
    }
    Ok(out)
}

/// The broker id of a `cluster/brokers/{id}/heartbeat.json` key.
fn heartbeat_owner(location: &object_store::path::Path) -> Option<u32> {
    if location.filename() != Some("heartbeat.json") {
        return None;
    }
    let parts: Vec<_> = location.parts().collect();
    parts
        .len()
        .checked_sub(2)
        .and_then(|i| parts[i].as_ref().parse().ok())
}

/// Reads the controller term and, when its holder is gone, runs for the
/// next one.
async fn elect(shared: &Shared, look: Look) -> Result<()> {
    let view = &shared.cluster;
    let chain: Chain<ControllerTerm> =
        Chain::new(shared.meta_store.clone(), keys::controller_chain());
    let me = shared.broker_id.0;
    let incarnation = view.incarnation.load(Ordering::SeqCst);
    let valid = || {
        let st = view.state.read();
        st.controller.as_ref().is_some_and(|(_, c)| {
            if c.broker_id == me {
                return c.incarnation == incarnation && !view.is_draining();
            }
            st.members.get(&c.broker_id).is_some_and(|m| {
                m.hb.incarnation == c.incarnation && view.alive(m) && !m.hb.draining
            })
        })
    };
    let known = view.state.read().controller.as_ref().map(|(v, _)| *v);
    // A valid term is re-read only when someone names a newer one (or at a
    // full look); before running for a term, always.
    let hinted = view.newer_hint(known, |hb| hb.controller_term);
    if look == Look::Everything || hinted || !valid() {
        let versions = chain
            .versions(known)
            .await
            .map_err(|e| storage_err("reading the controller term", e))?;
        if let Some(&last) = versions.last()
            && Some(last) != known
        {
            match chain.read(last).await {
                Ok(term) => view.state.write().controller = Some((last, term)),
                Err(e) => return Err(storage_err("reading the controller term", e)),
            }
        }
    }
    let head = view.state.read().controller.as_ref().map(|(v, _)| *v);
    if valid() || view.is_draining() || incarnation == 0 {
        return Ok(());
    }
    if look == Look::Hinted {
        // The holder may be a broker this view has not listed yet: look
        // at everything (at once) before running for a term.
        view.round.notify_one();
        return Ok(());
    }
    let term = head.map_or(Version(0), Version::next);
    let doc = ControllerTerm {
        broker_id: me,
        incarnation,
    };
    match chain.create(term, &doc).await {
        Ok(()) => {
            tracing::info!(term = term.0, "this broker is the controller now");
            view.state.write().controller = Some((term, doc));
            if let Err(e) = chain.gc(term, CHAIN_KEEP).await {
                tracing::debug!(error = %e, "controller term garbage collection failed");
            }
            Ok(())
        }
        Err(e) if e.is_fenced() => {
            tracing::debug!(term = term.0, "another broker won the controller term");
            Ok(())
        }
        Err(e) => Err(storage_err("creating a controller term", e)),
    }
}

fn assignment_chain(shared: &Shared) -> Chain<Assignment> {
    Chain::new(shared.meta_store.clone(), keys::assignment_chain())
}

/// Reads the assignment head if it moved. Returns true when it changed.
async fn refresh_assignment(shared: &Shared, look: Look) -> Result<bool> {
    let view = &shared.cluster;
    let chain = assignment_chain(shared);
    let known = view.state.read().assignment.as_ref().map(|(v, _)| *v);
    let hinted = view.newer_hint(known, |hb| hb.assignment_version);
    if look == Look::Hinted && known.is_some() && !hinted {
        return Ok(false);
    }
    let versions = chain
        .versions(known)
        .await
        .map_err(|e| storage_err("reading the partition assignment", e))?;
    match versions.last() {
        Some(&last) if Some(last) != known => {
            let a = chain
                .read(last)
                .await
                .map_err(|e| storage_err("reading the partition assignment", e))?;
            view.state.write().assignment = Some((last, Arc::new(a)));
            Ok(true)
        }
        // Unchanged, or no assignment was ever written (a new cluster).
        _ => Ok(false),
    }
}

/// The controller's part of a round: plan and publish.
async fn control(shared: &Shared, look: Look) -> Result<()> {
    let view = &shared.cluster;
    // A new term starts with a fresh listing: as a follower this broker
    // only cached the topics it was told of or served.
    let term = view.state.read().controller.as_ref().map(|(v, _)| v.0);
    let new_term = std::mem::replace(&mut *view.controlling_term.lock(), term) != term;
    if new_term {
        view.control_rounds.store(0, Ordering::Relaxed);
    }
    let fresh = view
        .control_rounds
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(FRESH_TOPICS_EVERY);
    if fresh {
        forget_dead(shared).await;
    }
    // Creates and deletes on any broker reach the controller's cache by
    // their announcement (a nudge naming the topic); the listings catch
    // what an announcement missed.
    let listed = if fresh {
        shared.topics.list_fresh().await?
    } else if look == Look::Everything {
        shared.topics.list().await?
    } else {
        shared.topics.list_cached()?
    };
    let topics: Vec<(String, u32)> = listed
        .iter()
        .map(|t| (t.name.to_string(), t.record.partitions))
        .collect();
    let (current, eligible, rates, head) = {
        let st = view.state.read();
        let eligible: Vec<u32> = st
            .members
            .values()
            .filter(|m| view.alive(m) && !m.hb.draining)
            .map(|m| m.hb.broker_id)
            .collect();
        (
            st.assignment
                .as_ref()
                .map(|(_, a)| (**a).clone())
                .unwrap_or_default(),
            eligible,
            partition_rates(&st.members),
            st.assignment.as_ref().map(|(v, _)| *v),
        )
    };
    let (rates, cooling) = {
        let mut b = view.balancer.lock();
        model::smooth(&mut b.rates, &rates, RATE_SMOOTHING);
        b.rates
            .retain(|(t, _), _| topics.iter().any(|(name, _)| name == t));
        let cooldown = view.config.heartbeat_interval * REBALANCE_COOLDOWN_INTERVALS;
        (
            b.rates.clone(),
            b.moved_at.is_some_and(|t| t.elapsed() < cooldown),
        )
    };
    let input = |rebalance| PlanInput {
        current: &current,
        topics: &topics,
        eligible: &eligible,
        rates: &rates,
        rebalance,
    };
    let placed = model::plan(&input(false));
    let mut next = if cooling {
        placed
    } else {
        let balanced = model::plan(&input(true));
        if !balanced.same_placement(&placed) {
            view.balancer.lock().moved_at = Some(Instant::now());
        }
        balanced
    };
    if head.is_some() && next.same_placement(&current) {
        return Ok(());
    }
    next.term = view
        .state
        .read()
        .controller
        .as_ref()
        .map_or(0, |(v, _)| v.0);
    publish(shared, head, next, "controller").await?;
    Ok(())
}

/// Creates the assignment version after `head`; on success installs it in
/// the view, nudges every broker and returns the new version.
async fn publish(
    shared: &Shared,
    head: Option<Version>,
    next: Assignment,
    why: &str,
) -> Result<Version> {
    let view = &shared.cluster;
    let chain = assignment_chain(shared);
    let version = head.map_or(Version(0), Version::next);
    chain
        .create(version, &next)
        .await
        .map_err(|e| storage_err("publishing the partition assignment", e))?;
    let moved = {
        let st = view.state.read();
        let old = st.assignment.as_ref().map(|(_, a)| a.clone());
        count_moves(old.as_deref(), &next)
    };
    tracing::info!(
        version = version.0,
        moved,
        by = why,
        "published a new partition assignment"
    );
    view.state.write().assignment = Some((version, Arc::new(next)));
    if let Err(e) = chain.gc(version, CHAIN_KEEP).await {
        tracing::debug!(error = %e, "assignment garbage collection failed");
    }
    view.nudge();
    view.nudge_all().await;
    Ok(version)
}

fn count_moves(old: Option<&Assignment>, new: &Assignment) -> usize {
    new.topics
        .iter()
        .map(|(t, slots)| {
            slots
                .iter()
                .enumerate()
                .filter(|(p, s)| old.and_then(|o| o.owner(t, *p as u32)) != s.broker)
                .count()
        })
        .sum()
}

/// An operator's move: assigns `tp` to `to` (pinned) in a new assignment
/// version, retrying when another writer moved the chain meanwhile.
pub async fn move_partition(
    shared: &Shared,
    tp: &TopicPartition,
    to: u32,
) -> Result<(Version, Option<u32>)> {
    let view = &shared.cluster;
    let topic = shared.topics.get(&tp.topic).await?;
    if tp.partition >= topic.record.partitions {
        return Err(BrokerError::UnknownPartition {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            count: topic.record.partitions,
        });
    }
    let eligible = {
        let st = view.state.read();
        st.members
            .get(&to)
            .is_some_and(|m| view.alive(m) && !m.hb.draining)
    };
    if !eligible {
        let live: Vec<String> = view
            .live_brokers()
            .iter()
            .map(|(b, _)| b.to_string())
            .collect();
        return Err(BrokerError::InvalidRequest(format!(
            "broker {to} is not alive or is draining; live brokers: [{}] (see strata cluster status)",
            live.join(", ")
        )));
    }
    for _ in 0..10 {
        refresh_assignment(shared, Look::Everything).await?;
        let (head, current) = match view.assignment() {
            Some((v, a)) => (Some(v), (*a).clone()),
            None => (None, Assignment::default()),
        };
        let from = current.owner(tp.topic.as_str(), tp.partition);
        let mut next = current.clone();
        next.term = 0;
        let slots = next.topics.entry(tp.topic.to_string()).or_default();
        if slots.len() < topic.record.partitions as usize {
            slots.resize(topic.record.partitions as usize, Slot::default());
        }
        slots[tp.partition as usize] = Slot {
            broker: Some(to),
            pinned: true,
        };
        if head.is_some() && next.same_placement(&current) {
            return Ok((head.unwrap_or(Version(0)), from));
        }
        match publish(shared, head, next, "operator").await {
            Ok(v) => return Ok((v, from)),
            Err(e) if e.is_fenced() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(BrokerError::Unavailable(
        "too busy: the assignment kept changing during the move; retry",
    ))
}

/// Follows the assignment: releases what is assigned elsewhere and claims
/// what is assigned here (each in its own task).
fn reconcile(shared: &Shared, tasks: &mut Tasks) {
    let view = &shared.cluster;
    let Some((_, assignment)) = view.assignment() else {
        return;
    };
    let me = shared.broker_id.0;
    let Some(this) = shared.this.upgrade() else {
        return;
    };
    for log in shared.partitions.open_logs() {
        let tp = log.topic_partition().clone();
        if assignment.owner(tp.topic.as_str(), tp.partition) == Some(me) {
            continue;
        }
        tasks.spawn_once(&this, tp, |shared, tp| async move {
            hand_over(&shared, &tp).await
        });
    }
    if shared.shutdown.is_cancelled() {
        return;
    }
    for (topic, partition) in assignment.partitions_of(me) {
        let Ok(name) = TopicName::new(topic) else {
            continue;
        };
        let tp = TopicPartition {
            topic: name,
            partition,
        };
        if shared.partitions.get_open(&tp).is_some() {
            continue;
        }
        tasks.spawn_once(
            &this,
            tp,
            |shared, tp| async move { claim(&shared, &tp).await },
        );
    }
}

/// Releases `tp` (a graceful move away) and nudges its new owner.
async fn hand_over(shared: &Shared, tp: &TopicPartition) {
    let started = Instant::now();
    let to = shared.cluster.owner_of(tp.topic.as_str(), tp.partition);
    if to.is_none() {
        // The controller drops a topic from the assignment when it is
        // deleted. This broker may not have been told (it was unreachable
        // when the delete was announced): look at the topic's head before
        // writing anything into its keys, and drop the log without a word
        // if the topic is gone or was re-created.
        if let Err(e) = shared.topics.reread(&tp.topic).await {
            tracing::debug!(%tp, error = %e, "cannot re-read the topic of an unassigned partition; next round");
            return;
        }
        apply_topic_changes(shared).await;
        if shared.partitions.get_open(tp).is_none() {
            return;
        }
    }
    shared.partitions.release_one(tp).await;
    tracing::info!(%tp, to = ?to, took_ms = started.elapsed().as_millis() as u64, "released the partition to its new owner");
    if let Some(addr) = to.and_then(|b| shared.cluster.address_of(b)) {
        shared.cluster.nudge_broker(&addr).await;
    }
}

/// Claims `tp` while it stays assigned here: waits for a live previous
/// owner's release (woken by its nudge), fences a dead one.
async fn claim(shared: &Shared, tp: &TopicPartition) {
    let view = &shared.cluster;
    let started = Instant::now();
    let mut backoff = Duration::from_millis(20);
    let mut waiting_logged = false;
    loop {
        if shared.shutdown.is_cancelled()
            || view.owner_of(tp.topic.as_str(), tp.partition) != Some(shared.broker_id.0)
        {
            return;
        }
        let topic = match shared.topics.get(&tp.topic).await {
            Ok(t) => t,
            Err(BrokerError::UnknownTopic(_)) => return,
            Err(e) => {
                tracing::debug!(%tp, error = %e, "cannot read the topic to claim a partition; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let force = started.elapsed() >= view.config.release_timeout;
        // Register for the wake-up before trying, so a release that lands
        // between the try and the wait is not missed.
        let released = view.released.notified();
        match shared
            .partitions
            .get_or_open(&topic.partition(tp.partition), &topic.log_config, &{
                let guard = shared.fence_guard().clone();
                Arc::new(move |o: &WalStream| force || guard(o)) as MayFence
            })
            .await
        {
            Ok(log) => {
                let st = log.status();
                tracing::info!(%tp, epoch = st.leader_epoch, took_ms = started.elapsed().as_millis() as u64, sealed_bytes = st.sealed_bytes, "claimed the partition");
                return;
            }
            Err(e) => {
                let waiting = matches!(
                    &e,
                    BrokerError::Storage {
                        source: strata_storage::Error::OwnedElsewhere { .. },
                        ..
                    }
                );
                if waiting {
                    if !waiting_logged {
                        tracing::info!(%tp, error = %e, "waiting for the previous owner to release the partition");
                        waiting_logged = true;
                    }
                } else {
                    tracing::warn!(%tp, error = %e, "cannot claim the partition; retrying");
                }
                tokio::select! {
                    () = released => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(if waiting {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(2)
                });
            }
        }
    }
}

/// Drains this broker: marks it draining (heartbeat, not ready), lets the
/// controller move its partitions away, and returns once it serves none,
/// once no other broker can take them, or at `deadline`.
pub async fn drain(shared: &Shared, deadline: Instant) {
    let view = &shared.cluster;
    view.draining.store(true, Ordering::SeqCst);
    shared.set_ready(false);
    write_heartbeat(shared).await;
    tracing::info!(
        partitions = shared.partitions.len(),
        "draining: moving this broker's partitions to the other brokers"
    );
    view.nudge();
    view.nudge_all().await;
    let started = Instant::now();
    loop {
        let assigned_here = view
            .assignment()
            .is_some_and(|(_, a)| a.partitions_of(shared.broker_id.0).next().is_some());
        if !assigned_here && shared.partitions.is_empty() {
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "drained: every partition moved to another broker"
            );
            return;
        }
        if view.eligible_others().is_empty()
            && started.elapsed() > view.config.heartbeat_interval * 2
        {
            tracing::info!(
                "draining: no other live broker can take the partitions; releasing them"
            );
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                left = shared.partitions.len(),
                "draining took too long; releasing the remaining partitions"
            );
            return;
        }
        tokio::select! {
            () = view.released.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Leaves the cluster: deletes the heartbeat so the others stop waiting
/// for it, and nudges them.
pub async fn leave(shared: &Shared) {
    if let Err(e) = shared
        .meta_store
        .delete(&keys::heartbeat(shared.broker_id))
        .await
    {
        tracing::debug!(error = %e, "cannot delete the heartbeat");
    }
    shared.cluster.nudge_all().await;
}

/// Waits (up to the heartbeat timeout) until every partition of `topic` is
/// assigned, nudging the controller so it plans now.
pub async fn await_assigned(shared: &Shared, topic: &crate::topics::Topic) {
    let view = &shared.cluster;
    let assigned = || {
        view.assignment().is_some_and(|(_, a)| {
            (0..topic.record.partitions).all(|p| a.owner(topic.name.as_str(), p).is_some())
        })
    };
    let deadline = Instant::now() + view.config.heartbeat_timeout;
    // Naming the topic makes every broker (the controller among them)
    // re-read it, even one whose cache says it was deleted.
    announce_topic_change(shared, &topic.name).await;
    while !assigned() && Instant::now() < deadline {
        tokio::select! {
            () = view.released.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    if !assigned() {
        tracing::warn!(topic = %topic.name, "the controller has not assigned the new topic's partitions yet; requests get a retryable NOT_OWNER meanwhile");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(broker_id: u32, seq: u64) -> Heartbeat {
        Heartbeat {
            broker_id,
            incarnation: 1,
            address: format!("http://broker-{broker_id}"),
            http_address: String::new(),
            kafka_address: String::new(),
            draining: false,
            seq,
            written_at_ms: 0,
            load: Load::default(),
            partitions: Vec::new(),
            controller_term: Some(1),
            assignment_version: Some(broker_id.into()),
        }
    }

    #[test]
    fn a_heartbeat_that_could_not_be_read_keeps_its_member() {
        let view = ClusterView::new(BrokerId(1), ClusterConfig::default());
        let members = |view: &ClusterView| -> Vec<u32> {
            view.state.read().members.keys().copied().collect()
        };
        view.update_members(Heartbeats {
            read: vec![hb(1, 1), hb(2, 1)],
            ..Heartbeats::default()
        });
        let seen = view.state.read().members[&2].changed_at;
        // A failed GET is not a departure, nor a sign of life.
        view.update_members(Heartbeats {
            read: vec![hb(1, 2)],
            unread: vec![2],
            ..Heartbeats::default()
        });
        assert_eq!(members(&view), [1, 2]);
        assert_eq!(view.state.read().members[&2].changed_at, seen);
        // Not found: gone.
        view.update_members(Heartbeats {
            read: vec![hb(1, 3)],
            ..Heartbeats::default()
        });
        assert_eq!(members(&view), [1]);
        // A failed read of a broker never seen adds nothing.
        view.update_members(Heartbeats {
            read: vec![hb(1, 4)],
            unread: vec![7],
            ..Heartbeats::default()
        });
        assert_eq!(members(&view), [1]);
    }

    fn stream(broker: u32, incarnation: u64) -> WalStream {
        WalStream {
            broker: BrokerId(broker),
            incarnation: keys::Incarnation(incarnation),
        }
    }

    /// A manifest may name a broker this view has not listed yet (hinted
    /// rounds read known members only): never fence it before looking.
    #[test]
    fn an_unknown_owner_is_looked_up_before_it_is_fenced() {
        let view = ClusterView::new(BrokerId(1), ClusterConfig::default());
        view.update_members(Heartbeats {
            read: vec![hb(1, 1)],
            ..Heartbeats::default()
        });
        assert!(!view.may_fence(&stream(5, 1)), "unknown: look first");
        assert!(!view.may_fence(&stream(6, 1)));
        let wanted: Vec<u32> = view.state.read().wanted.iter().copied().collect();
        assert_eq!(wanted, [5, 6]);
        // The next round asks for them: 5 is alive, 6 is gone.
        view.update_members(Heartbeats {
            asked_for: wanted,
            read: vec![hb(1, 2), hb(5, 1)],
            unread: Vec::new(),
        });
        assert!(!view.may_fence(&stream(5, 1)), "alive");
        assert!(view.may_fence(&stream(5, 0)), "an older incarnation");
        assert!(view.may_fence(&stream(6, 1)), "its heartbeat is gone");
        assert!(view.state.read().wanted.is_empty());
        // A gone broker that comes back is a member again.
        view.update_members(Heartbeats {
            read: vec![hb(1, 3), hb(5, 2), hb(6, 1)],
            ..Heartbeats::default()
        });
        assert!(!view.state.read().gone.contains(&6));
        assert!(!view.may_fence(&stream(6, 1)));
    }

    #[test]
    fn heartbeats_hint_at_newer_chain_versions() {
        let view = ClusterView::new(BrokerId(1), ClusterConfig::default());
        view.update_members(Heartbeats {
            read: vec![hb(1, 1), hb(3, 1)],
            ..Heartbeats::default()
        });
        let assignment = |h: &Heartbeat| h.assignment_version;
        assert!(view.newer_hint(None, assignment));
        assert!(view.newer_hint(Some(Version(2)), assignment));
        assert!(!view.newer_hint(Some(Version(3)), assignment));
        assert!(!view.newer_hint(Some(Version(1)), |h| h.controller_term));
    }

    #[test]
    fn heartbeat_keys_name_their_broker() {
        assert_eq!(heartbeat_owner(&keys::heartbeat(BrokerId(42))), Some(42));
        let other = keys::heartbeats_prefix().join("42").join("other.json");
        assert_eq!(heartbeat_owner(&other), None);
    }
}
