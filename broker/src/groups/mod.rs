//! Consumer groups: the group coordinator (DESIGN §9).
//!
//! - **Placement.** Group `g` lives in partition `hash(g) % N` of the
//!   internal topic [`OFFSETS_TOPIC`] (Kafka's hash: Java's
//!   `String.hashCode`); its coordinator is that partition's owner, so
//!   coordinators move, fail over and are fenced like any partition. The
//!   topic is created with `group.offsets_partitions` partitions on first
//!   use and cannot be deleted.
//! - **State.** Each partition of the topic this broker owns is loaded
//!   into a [`shard::Shard`] on first use (requests meanwhile get a
//!   retryable `COORDINATOR_LOAD_IN_PROGRESS`) and by the coordinator's
//!   own timer. Membership is in memory ([`state`]); what must survive
//!   ([`records`]) goes through the shard's writer into the partition's
//!   log, so commits of many groups share WAL flushes.
//! - **Timer.** [`run`] expires members whose session timed out, notices
//!   partition counts that changed, deletes the offsets of empty groups
//!   after `group.offsets_retention` and those of deleted topics, loads the
//!   shards of partitions newly assigned here, and (every
//!   [`lag::REFRESH_EVERY`]) asks partition owners for the high watermarks
//!   the lag metrics need.
//!
//! What a newcomer must not break: a reply that depends on a state change
//! (a grant, a commit) is sent only after the shard's writer made the
//! change durable, and the hand-over rule of [`state`].

pub mod assignor;
pub mod classic;
pub mod lag;
pub mod pattern;
pub mod records;
pub mod shard;
pub mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared as SharedFuture};
use parking_lot::Mutex;
use strata_storage::keys::{TopicName, TopicPartition};
use tokio_util::sync::CancellationToken;

use self::records::GroupRecord;
use self::shard::{Shard, Write};
pub use self::state::GroupError;
use self::state::{
    Committed, Group, GroupStateName, Heartbeat, HeartbeatReply, Limits, Listing, TopicsView, Tp,
};
use crate::auth::Caller;
use crate::auth::acl::{Operation, Resource};
use crate::config::GroupConfig;
use crate::error::{BrokerError, Result};
use crate::service::{Shared, now_ms};
use crate::topics::{Topic, TopicOverrides};

/// The internal topic holding groups and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How old the unsealed tail of a `__consumer_offsets` partition may get
/// (ms). A coordinator's failover replays the dead broker's WAL objects
/// from its tail's start, so this bounds it (about 30 s of the dead
/// broker's flushes), at one seal (a segment and a manifest PUT) per busy
/// partition per 30 s.
const OFFSETS_SEGMENT_MS: i64 = 30_000;

/// Longest group id accepted.
pub const MAX_GROUP_ID_LEN: usize = 255;

/// How long a request waits for its shard to load before it is told to
/// retry.
const LOAD_WAIT: Duration = Duration::from_secs(2);

/// How long a topic found missing is not looked up again (heartbeats of a
/// group subscribed to it cost no store request).
const UNKNOWN_TOPIC_TTL: Duration = Duration::from_secs(10);

/// Most topics remembered as missing at once.
const MAX_UNKNOWN_TOPICS: usize = 10_000;

/// How often (at most) the topic names that subscription patterns resolve
/// against are read again from this broker's topic cache.
const NAMES_REBUILD: Duration = Duration::from_secs(1);

/// How often (at most) they are completed by a listing of the bucket (a
/// topic whose announcement this broker missed; any topic after a
/// restart): one LIST, only while some group here subscribes by pattern.
const NAMES_RELIST: Duration = Duration::from_secs(10);

/// How often (at most) the timer looks for offsets of deleted topics and
/// expired empty groups; more often when `group.offsets_retention` is short.
const CLEANUP_EVERY: Duration = Duration::from_secs(30);

/// Kafka's placement: `abs(javaHashCode(group)) % partitions`.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    let h = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's `Utils.abs`: MIN_VALUE maps to 0.
    h.checked_abs().unwrap_or(0).unsigned_abs() % partitions.max(1)
}

/// Checks a group id from a request.
pub fn validate_group_id(id: &str) -> std::result::Result<(), GroupError> {
    if id.is_empty() {
        return Err(GroupError::Invalid(
            "group id is empty; name the group (e.g. --group orders-service)".into(),
        ));
    }
    if id.len() > MAX_GROUP_ID_LEN {
        return Err(GroupError::Invalid(format!(
            "group id is longer than {MAX_GROUP_ID_LEN} bytes: {}…",
            id.chars().take(32).collect::<String>()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(GroupError::Invalid(format!(
            "group id contains control characters: {id:?}"
        )));
    }
    Ok(())
}

/// A request's committed offset, before validation.
#[derive(Debug, Clone)]
pub struct OffsetCommit {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset to read.
    pub offset: i64,
    /// Free text.
    pub metadata: String,
}

/// A group's summary, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group.
    pub group: String,
    /// Its state.
    pub state: GroupStateName,
    /// Its members.
    pub members: usize,
}

/// Per-group figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct GroupGauges {
    /// The group.
    pub group: String,
    /// Members.
    pub members: usize,
    /// Target recomputations since this coordinator loaded it.
    pub rebalances: u64,
    /// Committed offsets and, where known, the partition's end.
    pub offsets: Vec<(String, u32, i64, Option<i64>)>,
}

type LoadFuture = SharedFuture<BoxFuture<'static, std::result::Result<Arc<Shard>, LoadFail>>>;

/// Why a shard could not be loaded (cloneable, for every waiter).
#[derive(Debug, Clone)]
enum LoadFail {
    NotCoordinator(Option<(u32, String)>, String),
    Failed(String),
}

enum Slot {
    Loading(u64, LoadFuture),
    Loaded(Arc<Shard>),
}

/// The group coordinator of one broker: the shards of the
/// `__consumer_offsets` partitions it owns.
pub struct GroupCoordinator {
    config: GroupConfig,
    limits: Limits,
    shards: Mutex<HashMap<u32, Slot>>,
    next_load: AtomicU64,
    offsets_topic: Mutex<Option<Topic>>,
    unknown_topics: Mutex<HashMap<String, Instant>>,
    /// A topic was deleted or re-created: look for offsets to delete at
    /// the next tick.
    topics_changed: AtomicBool,
    /// High watermarks of partitions other brokers own, for lag metrics
    /// ([`lag::refresh`]).
    watermarks: Mutex<HashMap<(String, u32), i64>>,
    /// Live topic names for subscription patterns ([`Self::topic_names`]).
    topic_names: Mutex<TopicNames>,
}

/// The live topic names subscription patterns resolve against.
#[derive(Default)]
struct TopicNames {
    names: Arc<Vec<String>>,
    /// Bumped whenever `names` changes.
    generation: u64,
    built: Option<Instant>,
    /// When a listing of the bucket last started, and last succeeded.
    list_started: Option<Instant>,
    listed: Option<Instant>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("shards", &self.shards.lock().len())
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl GroupCoordinator {
    /// A coordinator with `config`; records are appended in batches of at
    /// most `max_batch_bytes` (the broker's `log.max_batch_bytes`).
    pub fn new(config: GroupConfig, max_batch_bytes: usize) -> Self {
        let limits = Limits {
            session_timeout_ms: ms(config.session_timeout),
            min_session_timeout_ms: ms(config.min_session_timeout),
            max_session_timeout_ms: ms(config.max_session_timeout),
            rebalance_timeout_ms: ms(config.rebalance_timeout),
            heartbeat_interval_ms: ms(config.heartbeat_interval),
            reconcile_interval_ms: ms(config.heartbeat_interval).min(200),
            max_members: config.max_members,
            // A group record must fit the internal topic's batches.
            max_group_bytes: (max_batch_bytes / 2).max(64 * 1024),
        };
        Self {
            config,
            limits,
            shards: Mutex::new(HashMap::new()),
            next_load: AtomicU64::new(0),
            offsets_topic: Mutex::new(None),
            unknown_topics: Mutex::new(HashMap::new()),
            topics_changed: AtomicBool::new(false),
            watermarks: Mutex::new(HashMap::new()),
            topic_names: Mutex::new(TopicNames::default()),
        }
    }

    /// The live topic names subscription patterns resolve against, in
    /// order, with a generation bumped whenever they change: this broker's
    /// topic cache (topic changes reach it through the cluster's fan-out),
    /// read again at most every [`NAMES_REBUILD`] and completed by a
    /// listing of the bucket every [`NAMES_RELIST`] (one at a time: who
    /// finds it due claims it, the others use what is known). Until a
    /// first listing succeeded, what the cache knows may be a fraction of
    /// the topics, so callers are told to retry shortly instead.
    async fn topic_names(&self, shared: &Shared) -> Result<(u64, Arc<Vec<String>>)> {
        let (list, rebuild) = {
            let mut t = self.topic_names.lock();
            let now = Instant::now();
            let due =
                |at: Option<Instant>, after| at.is_none_or(|at| now.duration_since(at) >= after);
            let every = if t.listed.is_some() {
                NAMES_RELIST
            } else {
                NAMES_REBUILD
            };
            let list = due(t.list_started, every);
            if list {
                t.list_started = Some(now);
            } else if t.listed.is_none() {
                return Err(BrokerError::CoordinatorLoading(
                    "the coordinator is listing the topics subscription patterns match".into(),
                ));
            }
            (list, due(t.built, NAMES_REBUILD))
        };
        if list {
            let listed = shared.topics.list().await;
            let mut t = self.topic_names.lock();
            match listed {
                Ok(_) => t.listed = Some(Instant::now()),
                Err(e) if t.listed.is_none() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "could not list topics for subscription patterns; they keep what they matched");
                }
            }
        }
        if list || rebuild {
            let names: Vec<String> = shared
                .topics
                .cached_names()
                .iter()
                .map(ToString::to_string)
                .collect();
            let mut t = self.topic_names.lock();
            if *t.names != names {
                t.names = Arc::new(names);
                t.generation += 1;
            }
            t.built = Some(Instant::now());
        }
        let t = self.topic_names.lock();
        Ok((t.generation, t.names.clone()))
    }

    /// The settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Notes that a topic was deleted or re-created (its offsets go at
    /// the next tick).
    pub fn topic_changed(&self) {
        self.topics_changed.store(true, Ordering::SeqCst);
        self.unknown_topics.lock().clear();
    }

    /// The internal topic, created on first use.
    async fn offsets_topic(&self, shared: &Shared) -> Result<Topic> {
        if let Some(t) = self.offsets_topic.lock().clone() {
            return Ok(t);
        }
        let name = TopicName::new(OFFSETS_TOPIC).map_err(|e| BrokerError::storage("groups", e))?;
        let topic = match shared.topics.get(&name).await {
            Ok(t) => t,
            Err(BrokerError::UnknownTopic(_)) => {
                let overrides = TopicOverrides {
                    // Kept by snapshots, not by retention.
                    retention_ms: Some(-1),
                    retention_bytes: Some(-1),
                    // Sealed often, so a failover replays little WAL.
                    segment_ms: Some(OFFSETS_SEGMENT_MS),
                    ..TopicOverrides::default()
                };
                let (topic, created) = shared
                    .topics
                    .create(
                        &name,
                        self.config.offsets_partitions,
                        overrides,
                        true,
                        now_ms(),
                    )
                    .await?;
                if created {
                    tracing::info!(
                        partitions = topic.record.partitions,
                        "created {OFFSETS_TOPIC} for the first consumer group"
                    );
                }
                crate::cluster::await_assigned(shared, &topic).await;
                topic
            }
            Err(e) => return Err(e),
        };
        *self.offsets_topic.lock() = Some(topic.clone());
        Ok(topic)
    }

    /// The coordinator of `group`: broker id, address, partition.
    pub async fn find_coordinator(
        &self,
        shared: &Shared,
        group: &str,
    ) -> Result<(u32, String, u32)> {
        validate_group_id(group)?;
        let topic = self.offsets_topic(shared).await?;
        let p = partition_for(group, topic.record.partitions);
        let unavailable = |detail: &str| BrokerError::NotCoordinator {
            group: group.to_owned(),
            coordinator: None,
            detail: detail.to_owned(),
        };
        let Some(owner) = shared.cluster.owner_of(OFFSETS_TOPIC, p) else {
            return Err(unavailable(
                "its partition of __consumer_offsets is not assigned to a broker yet; retry shortly",
            ));
        };
        let address = if owner == shared.broker_id.0 {
            shared.advertised_addr.clone()
        } else {
            shared.cluster.address_of(owner).ok_or_else(|| {
                unavailable("its coordinator's address is not known yet; retry shortly")
            })?
        };
        Ok((owner, address, p))
    }

    /// The loaded shard holding `group`, loading it if needed.
    async fn shard_for(&self, shared: &Shared, group: &str) -> Result<Arc<Shard>> {
        validate_group_id(group)?;
        let topic = self.offsets_topic(shared).await?;
        let p = partition_for(group, topic.record.partitions);
        self.shard(shared, p).await.map_err(|e| match e {
            LoadFail::NotCoordinator(coordinator, detail) => BrokerError::NotCoordinator {
                group: group.to_owned(),
                coordinator,
                detail,
            },
            LoadFail::Failed(detail) => {
                tracing::debug!(group, %detail, "group coordinator not loaded yet");
                BrokerError::CoordinatorLoading(group.to_owned())
            }
        })
    }

    /// The loaded shard of partition `p`, loading it (waiting at most
    /// [`LOAD_WAIT`]).
    async fn shard(&self, shared: &Shared, p: u32) -> std::result::Result<Arc<Shard>, LoadFail> {
        let tp =
            TopicPartition::new(OFFSETS_TOPIC, p).map_err(|e| LoadFail::Failed(e.to_string()))?;
        if let Err(e) = shared.cluster.check_owner(&tp) {
            let (owner, detail) = match e {
                BrokerError::NotOwner { owner, detail, .. } => (owner, detail),
                other => (None, other.to_string()),
            };
            return Err(LoadFail::NotCoordinator(owner, detail));
        }
        let (id, future) = {
            let mut shards = self.shards.lock();
            match shards.get(&p) {
                Some(Slot::Loaded(s)) if s.is_alive() => return Ok(s.clone()),
                Some(Slot::Loading(id, f)) => (*id, f.clone()),
                _ => {
                    let id = self.next_load.fetch_add(1, Ordering::SeqCst);
                    let Some(shared) = shared.this.upgrade() else {
                        return Err(LoadFail::Failed("shutting down".into()));
                    };
                    let snapshot_records = self.config.snapshot_records;
                    let task = tokio::spawn(async move {
                        let (_, _, log, dropped) = shared
                            .partition_watched(OFFSETS_TOPIC, p)
                            .await
                            .map_err(|e| match e {
                                BrokerError::NotOwner { owner, detail, .. } => {
                                    LoadFail::NotCoordinator(owner, detail)
                                }
                                other => LoadFail::Failed(other.to_string()),
                            })?;
                        let shard = Shard::load(
                            p,
                            log,
                            dropped,
                            shared.meta_store.clone(),
                            snapshot_records,
                        )
                        .await
                        .map_err(|e| LoadFail::Failed(e.to_string()))?;
                        // Learn the subscribed topics before the first
                        // tick, which would otherwise find them unknown.
                        let topics: BTreeSet<String> = {
                            let st = shard.state.lock();
                            st.groups
                                .values()
                                .flat_map(Group::subscribed_topics)
                                .collect()
                        };
                        for t in topics {
                            if let Ok(name) = TopicName::new(&t) {
                                let _ = shared.topics.get(&name).await;
                            }
                        }
                        Ok(shard)
                    });
                    let f: LoadFuture = async move {
                        task.await
                            .unwrap_or_else(|e| Err(LoadFail::Failed(e.to_string())))
                    }
                    .boxed()
                    .shared();
                    shards.insert(p, Slot::Loading(id, f.clone()));
                    (id, f)
                }
            }
        };
        let result = tokio::time::timeout(LOAD_WAIT, future)
            .await
            .unwrap_or_else(|_| Err(LoadFail::Failed("still loading".into())));
        let mut shards = self.shards.lock();
        let ours = matches!(shards.get(&p), Some(Slot::Loading(i, _)) if *i == id);
        match &result {
            Ok(shard) if ours => {
                shards.insert(p, Slot::Loaded(shard.clone()));
            }
            Err(LoadFail::Failed(m)) if m == "still loading" => {}
            Err(_) if ours => {
                shards.remove(&p);
            }
            _ => {}
        }
        result
    }

    /// Partition counts of `topics`, looked up (and cached) before the
    /// group's lock is taken.
    async fn learn_topics(&self, shared: &Shared, topics: &BTreeSet<String>) -> Result<()> {
        for t in topics {
            let name = crate::topics::parse_name(t)?;
            if shared.topics.cached(&name).is_some() {
                continue;
            }
            let recent = self
                .unknown_topics
                .lock()
                .get(t)
                .is_some_and(|at| at.elapsed() < UNKNOWN_TOPIC_TTL);
            if recent {
                continue;
            }
            match shared.topics.get(&name).await {
                Ok(_) => {}
                Err(BrokerError::UnknownTopic(_)) => {
                    let mut unknown = self.unknown_topics.lock();
                    unknown.retain(|_, at| at.elapsed() < UNKNOWN_TOPIC_TTL);
                    if unknown.len() < MAX_UNKNOWN_TOPICS {
                        unknown.insert(t.clone(), Instant::now());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A heartbeat of `hb.member_id` in `group`.
    pub async fn heartbeat(
        &self,
        shared: &Shared,
        group: &str,
        hb: Heartbeat,
    ) -> Result<HeartbeatReply> {
        if let (Some(topics), Some(caller)) = (&hb.topics, &hb.caller)
            && hb.epoch >= 0
        {
            // As Kafka: a member subscribes by name only to topics it may
            // describe (what its pattern matches is filtered instead); a
            // leave is never refused.
            for t in topics {
                shared.authorize(caller, Operation::Describe, &Resource::topic(t))?;
            }
        }
        let shard = self.shard_for(shared, group).await?;
        if let Some(topics) = &hb.topics {
            self.learn_topics(shared, topics).await?;
        }
        let by_pattern = hb.pattern.as_deref().is_some_and(|p| !p.is_empty())
            || shard
                .state
                .lock()
                .groups
                .get(group)
                .is_some_and(Group::has_patterns);
        let names = if by_pattern {
            Some(self.topic_names(shared).await?)
        } else {
            None
        };
        let counts = |t: &str| partition_count(shared, t);
        let may_describe = |c: &Caller, t: &str| describable(shared, c, t);
        let view = TopicsView {
            partitions_of: &counts,
            listing: names
                .as_ref()
                .map(|(g, n)| listing(shared, *g, n.as_slice(), &may_describe)),
        };
        let (reply, write) = {
            let mut st = shard.state.lock();
            let g = st
                .groups
                .entry(group.to_owned())
                .or_insert_with(|| Group::new(group.to_owned()));
            let reply = g.heartbeat(hb, now_ms(), &self.limits, view, || {
                uuid::Uuid::new_v4().simple().to_string()
            });
            let write = g.needs_write();
            if g.forgettable() {
                st.groups.remove(group);
            }
            (reply?, write)
        };
        if write {
            // Answer only once the change (ours, or one in flight that the
            // answer depends on) is durable.
            shard
                .write(group, Write::GroupState(group.to_owned()))
                .await?;
        }
        Ok(reply)
    }

    /// A JoinGroup of Kafka's classic protocol; waits until the round
    /// completes.
    pub async fn classic_join(
        &self,
        shared: &Shared,
        group: &str,
        req: classic::JoinRequest,
    ) -> Result<classic::JoinResult> {
        let shard = self.shard_for(shared, group).await?;
        let (outcome, write) = {
            let mut st = shard.state.lock();
            let g = st
                .groups
                .entry(group.to_owned())
                .or_insert_with(|| Group::new(group.to_owned()));
            if g.members().next().is_some() {
                return Err(GroupError::InconsistentProtocol {
                    group: group.to_owned(),
                    detail: "it has members of the consumer protocol (KIP-848); a classic \
                             member cannot join until they left"
                        .into(),
                }
                .into());
            }
            let now = now_ms();
            let outcome = g.classic.join(req, now, &self.limits, || {
                format!("strata-{}", uuid::Uuid::new_v4().simple())
            });
            g.note_classic(now);
            (outcome, g.needs_write())
        };
        if write {
            shard.write_later(Write::GroupState(group.to_owned())).await;
        }
        settle(group, outcome).await
    }

    /// A SyncGroup of Kafka's classic protocol; waits for the leader's
    /// assignment.
    pub async fn classic_sync(
        &self,
        shared: &Shared,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
    ) -> Result<classic::SyncResult> {
        let shard = self.shard_for(shared, group).await?;
        let (outcome, new_generation) = {
            let mut st = shard.state.lock();
            let Some(g) = st.groups.get_mut(group) else {
                return Err(unknown_member(group, member));
            };
            let before = g.classic.unreleased();
            let now = now_ms();
            let outcome = g.classic.sync(member, generation, assignments, now);
            g.note_classic(now);
            let token = g.classic.unreleased().filter(|t| before != Some(*t));
            (outcome, token)
        };
        if let Some(token) = new_generation {
            // The leader's assignment made a new generation: every member's
            // answer waits until it is durable. A task of its own writes it,
            // so a leader that hangs up leaves no one waiting.
            let shard = shard.clone();
            let group = group.to_owned();
            tokio::spawn(async move {
                let written = shard.write(&group, Write::GroupState(group.clone())).await;
                let mut st = shard.state.lock();
                let Some(g) = st.groups.get_mut(&group) else {
                    return;
                };
                match written {
                    Ok(_) => g.classic.release(token),
                    Err(e) => {
                        tracing::warn!(%group, error = %e, "a classic group's new generation could not be written; its members rejoin");
                        let now = now_ms();
                        g.classic.abandon(token, now);
                        g.note_classic(now);
                    }
                }
            });
        }
        settle(group, outcome).await
    }

    /// A Heartbeat of Kafka's classic protocol.
    pub async fn classic_heartbeat(
        &self,
        shared: &Shared,
        group: &str,
        member: &str,
        generation: i32,
    ) -> Result<()> {
        let shard = self.shard_for(shared, group).await?;
        let mut st = shard.state.lock();
        let Some(g) = st.groups.get_mut(group) else {
            return Err(unknown_member(group, member));
        };
        Ok(g.classic.heartbeat(member, generation, now_ms())?)
    }

    /// A LeaveGroup of Kafka's classic protocol: each member by id (or by
    /// instance id when the id is empty), with its own result.
    pub async fn classic_leave(
        &self,
        shared: &Shared,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<()>>> {
        let shard = self.shard_for(shared, group).await?;
        let (results, write) = {
            let mut st = shard.state.lock();
            let Some(g) = st.groups.get_mut(group) else {
                return Ok(members
                    .iter()
                    .map(|(m, _)| Err(unknown_member(group, m)))
                    .collect());
            };
            let now = now_ms();
            let results = members
                .iter()
                .map(|(m, i)| g.classic.leave(m, i.as_deref(), now).map_err(Into::into))
                .collect();
            g.note_classic(now);
            let write = g.needs_write();
            if g.forgettable() {
                st.groups.remove(group);
            }
            (results, write)
        };
        if write {
            // The last member left: the group is written empty, so a new
            // coordinator does not wait for its sessions to run out.
            shard
                .write(group, Write::GroupState(group.to_owned()))
                .await?;
        }
        Ok(results)
    }

    /// Commits `offsets` for `member` at `epoch`; returns once durable.
    pub async fn commit(
        &self,
        shared: &Shared,
        group: &str,
        member: &str,
        epoch: i32,
        offsets: Vec<OffsetCommit>,
    ) -> Result<()> {
        validate_group_id(group)?;
        if offsets.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut records = Vec::with_capacity(offsets.len());
        let mut topics: HashMap<String, Topic> = HashMap::new();
        for o in offsets {
            if o.offset < 0 {
                return Err(BrokerError::InvalidRequest(format!(
                    "committed offsets are never negative (commit the next offset to read): {}/{} at {}",
                    o.topic, o.partition, o.offset
                )));
            }
            if o.metadata.len() > self.config.max_metadata_bytes {
                return Err(BrokerError::TooLarge(format!(
                    "offset metadata of {}/{} is larger than group.max_metadata_bytes ({}): {} bytes",
                    o.topic,
                    o.partition,
                    self.config.max_metadata_bytes,
                    o.metadata.len()
                )));
            }
            let topic = match topics.get(&o.topic) {
                Some(t) => t.clone(),
                None => {
                    let t = shared.topic(&o.topic).await?;
                    topics.insert(o.topic.clone(), t.clone());
                    t
                }
            };
            if o.partition >= topic.record.partitions {
                return Err(BrokerError::UnknownPartition {
                    topic: o.topic,
                    partition: o.partition,
                    count: topic.record.partitions,
                });
            }
            records.push(GroupRecord::Offset {
                group: group.to_owned(),
                topic: o.topic,
                partition: o.partition,
                value: Some(Committed {
                    offset: o.offset,
                    metadata: o.metadata,
                    commit_ms: now,
                    topic_id: topic.record.id.to_string(),
                }),
            });
        }
        let shard = self.shard_for(shared, group).await?;
        {
            let st = shard.state.lock();
            let tps = records.iter().filter_map(|r| match r {
                GroupRecord::Offset {
                    topic, partition, ..
                } => Some((topic.clone(), *partition)),
                GroupRecord::Group { .. } => None,
            });
            match st.groups.get(group) {
                Some(g) => g.check_commit(member, epoch, tps)?,
                None if member.is_empty() => {}
                None => {
                    return Err(GroupError::UnknownMember {
                        group: group.to_owned(),
                        member: member.to_owned(),
                    }
                    .into());
                }
            }
        }
        shard.write(group, Write::Commits(records)).await.map(drop)
    }

    /// The committed offsets of `group` (of `filter` only, if not empty)
    /// for the live incarnations of their topics.
    pub async fn fetch_offsets(
        &self,
        shared: &Shared,
        group: &str,
        filter: &BTreeSet<Tp>,
    ) -> Result<Vec<(Tp, Committed)>> {
        let shard = self.shard_for(shared, group).await?;
        let offsets: Vec<(Tp, Committed)> = {
            let st = shard.state.lock();
            match st.groups.get(group) {
                Some(g) => g
                    .offsets
                    .iter()
                    .filter(|(tp, _)| filter.is_empty() || filter.contains(*tp))
                    .map(|(tp, c)| (tp.clone(), c.clone()))
                    .collect(),
                None => return Ok(Vec::new()),
            }
        };
        let mut out = Vec::with_capacity(offsets.len());
        // One lookup per topic, not per partition.
        let mut live: HashMap<String, Option<String>> = HashMap::new();
        for (tp, c) in offsets {
            if !live.contains_key(&tp.0) {
                let id = live_topic_id(shared, &tp.0).await;
                live.insert(tp.0.clone(), id);
            }
            if live.get(&tp.0).and_then(Option::as_deref) == Some(c.topic_id.as_str()) {
                out.push((tp, c));
            }
        }
        Ok(out)
    }

    /// Deletes committed offsets (all of the group's if `filter` is empty)
    /// of a group without members. Returns how many.
    pub async fn delete_offsets(
        &self,
        shared: &Shared,
        group: &str,
        filter: &BTreeSet<Tp>,
    ) -> Result<usize> {
        let shard = self.shard_for(shared, group).await?;
        shard
            .write(
                group,
                Write::DeleteOffsets {
                    group: group.to_owned(),
                    filter: filter.clone(),
                },
            )
            .await
    }

    /// Deletes a group without members, with its offsets.
    pub async fn delete_group(&self, shared: &Shared, group: &str) -> Result<()> {
        let shard = self.shard_for(shared, group).await?;
        shard
            .write(group, Write::DeleteGroup(group.to_owned()))
            .await
            .map(drop)
    }

    /// A copy of `group` as the coordinator sees it.
    pub async fn describe(&self, shared: &Shared, group: &str) -> Result<Group> {
        let shard = self.shard_for(shared, group).await?;
        let st = shard.state.lock();
        st.groups
            .get(group)
            .cloned()
            .ok_or_else(|| BrokerError::GroupNotFound(group.to_owned()))
    }

    /// The groups of the shards loaded here.
    pub fn list_local(&self) -> Vec<GroupSummary> {
        let mut out: Vec<GroupSummary> = self
            .loaded()
            .iter()
            .flat_map(|s| {
                let st = s.state.lock();
                st.groups
                    .values()
                    .map(|g| GroupSummary {
                        group: g.id.clone(),
                        state: g.state(),
                        members: g.member_count(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Per-group figures for `/metrics`.
    pub fn gauges(&self, shared: &Shared) -> Vec<GroupGauges> {
        let mut out = Vec::new();
        for s in self.loaded() {
            let st = s.state.lock();
            for g in st.groups.values() {
                out.push(GroupGauges {
                    group: g.id.clone(),
                    members: g.member_count(),
                    rebalances: g.rebalances,
                    offsets: g
                        .offsets
                        .iter()
                        .map(|((t, p), c)| {
                            let end = TopicPartition::new(t, *p)
                                .ok()
                                .and_then(|tp| shared.partitions.get_open(&tp))
                                .map(|log| log.status().high_watermark)
                                .or_else(|| self.watermarks.lock().get(&(t.clone(), *p)).copied());
                            (t.clone(), *p, c.offset, end)
                        })
                        .collect(),
                });
            }
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// The topics the loaded groups committed offsets for.
    fn committed_topics(&self) -> BTreeSet<String> {
        self.loaded()
            .iter()
            .flat_map(|s| {
                let st = s.state.lock();
                st.groups
                    .values()
                    .flat_map(|g| g.offsets.keys().map(|(t, _)| t.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The live loaded shards (dead ones are dropped).
    fn loaded(&self) -> Vec<Arc<Shard>> {
        let mut shards = self.shards.lock();
        shards.retain(|_, s| !matches!(s, Slot::Loaded(s) if !s.is_alive()));
        shards
            .values()
            .filter_map(|s| match s {
                Slot::Loaded(s) => Some(s.clone()),
                Slot::Loading(..) => None,
            })
            .collect()
    }

    /// One round of the timer: see the module docs.
    async fn tick(&self, shared: &Shared, cleanup: bool) {
        let now = now_ms();
        let counts = |t: &str| partition_count(shared, t);
        let shards = self.loaded();
        let by_pattern = shards
            .iter()
            .any(|s| s.state.lock().groups.values().any(Group::has_patterns));
        let names = if by_pattern {
            self.topic_names(shared)
                .await
                .inspect_err(|e| tracing::debug!(error = %e, "subscription patterns not resolved this round"))
                .ok()
        } else {
            None
        };
        let may_describe = |c: &Caller, t: &str| describable(shared, c, t);
        let view = TopicsView {
            partitions_of: &counts,
            listing: names
                .as_ref()
                .map(|(g, n)| listing(shared, *g, n.as_slice(), &may_describe)),
        };
        for shard in &shards {
            let mut writes = Vec::new();
            {
                let mut st = shard.state.lock();
                for g in st.groups.values_mut() {
                    let gone = g.expire(now);
                    if !gone.is_empty() {
                        tracing::info!(group = %g.id, members = ?gone, "members left the group (session or rebalance timeout)");
                    }
                    g.refresh_target(view);
                    if g.needs_write() {
                        writes.push(g.id.clone());
                    }
                }
            }
            for g in writes {
                shard.write_later(Write::GroupState(g)).await;
            }
        }
        if cleanup {
            for shard in &shards {
                self.cleanup(shared, shard, now).await;
            }
        }
        // Load the partitions assigned here that no request loaded yet.
        let topic = self.offsets_topic.lock().clone();
        if let Some(topic) = topic {
            for p in 0..topic.record.partitions {
                let mine = shared.cluster.owner_of(OFFSETS_TOPIC, p) == Some(shared.broker_id.0);
                let loaded = self.shards.lock().contains_key(&p);
                if mine && !loaded {
                    let _ = self.shard(shared, p).await;
                }
            }
        } else if shared.cluster.owner_of(OFFSETS_TOPIC, 0).is_some() {
            // Created by another broker: learn it.
            let _ = self.offsets_topic(shared).await;
        }
    }

    /// Deletes the offsets of topic incarnations that are gone and of
    /// groups empty for longer than `group.offsets_retention`; the writer
    /// decides which, against the state when it takes the request.
    async fn cleanup(&self, shared: &Shared, shard: &Shard, now: i64) {
        let retention =
            i64::try_from(self.config.offsets_retention.as_millis()).unwrap_or(i64::MAX);
        let topics: BTreeSet<(String, String)> = {
            let st = shard.state.lock();
            st.groups
                .values()
                .flat_map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, _), c)| (t.clone(), c.topic_id.clone()))
                })
                .collect()
        };
        let mut stale = BTreeSet::new();
        for (topic, id) in topics {
            if live_topic_id(shared, &topic).await.as_deref() != Some(id.as_str()) {
                stale.insert((topic, id));
            }
        }
        if !stale.is_empty() {
            tracing::info!(topics = ?stale, "deleting committed offsets of deleted topics");
        }
        shard
            .write_later(Write::Cleanup {
                stale,
                expire_before_ms: now.saturating_sub(retention),
            })
            .await;
    }
}

/// Waits for a classic request's answer. A dropped sender means the
/// shard went away (the coordinator moved) or a newer request of the same
/// member replaced this one.
async fn settle<T>(group: &str, outcome: classic::Outcome<T>) -> Result<T> {
    match outcome {
        classic::Outcome::Now(r) => Ok(r?),
        classic::Outcome::Later(rx) => match rx.await {
            Ok(r) => Ok(r?),
            Err(_) => Err(BrokerError::NotCoordinator {
                group: group.to_owned(),
                coordinator: None,
                detail: "the group's coordinator moved or the request was replaced; find the \
                         coordinator again and rejoin"
                    .into(),
            }),
        },
    }
}

fn unknown_member(group: &str, member: &str) -> BrokerError {
    GroupError::UnknownMember {
        group: group.to_owned(),
        member: member.to_owned(),
    }
    .into()
}

/// The topics patterns resolve against: `names` at `generation`, and the
/// permissions as they are now.
fn listing<'a>(
    shared: &Shared,
    generation: u64,
    names: &'a [String],
    may_describe: &'a (dyn Fn(&Caller, &str) -> bool + Sync),
) -> Listing<'a> {
    Listing {
        generation,
        names,
        acl_version: shared.auth.acls.version().map_or(0, |v| v.0),
        may_describe,
    }
}

/// Whether `caller` may describe `topic` (a pattern gives a member only
/// those).
fn describable(shared: &Shared, caller: &Caller, topic: &str) -> bool {
    shared
        .auth
        .allows(caller, Operation::Describe, &Resource::topic(topic))
}

/// A topic's partition count from the registry's cache: `Some(0)` when it
/// is known to be gone, `None` when this broker has not looked it up yet.
fn partition_count(shared: &Shared, topic: &str) -> Option<u32> {
    let name = TopicName::new(topic).ok()?;
    match shared.topics.cached(&name) {
        Some(t) => Some(t.record.partitions),
        None if shared.topics.cached_as_deleted(&name) => Some(0),
        None => None,
    }
}

/// The id of the live incarnation of `topic`, if it exists.
async fn live_topic_id(shared: &Shared, topic: &str) -> Option<String> {
    let name = TopicName::new(topic).ok()?;
    if let Some(t) = shared.topics.cached(&name) {
        return Some(t.record.id.to_string());
    }
    shared
        .topics
        .get(&name)
        .await
        .ok()
        .map(|t| t.record.id.to_string())
}

/// The coordinator's timer: every 500 ms, with cleanup every
/// [`CLEANUP_EVERY`] or a quarter of `group.offsets_retention` if shorter
/// (and right after a topic changed).
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cleanup = Instant::now();
    let mut last_lag = Instant::now();
    let cleanup_every = CLEANUP_EVERY
        .min(shared.groups.config.offsets_retention / 4)
        .max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        let groups = &shared.groups;
        let cleanup = last_cleanup.elapsed() >= cleanup_every
            || groups.topics_changed.swap(false, Ordering::SeqCst);
        if cleanup {
            last_cleanup = Instant::now();
        }
        groups.tick(&shared, cleanup).await;
        if last_lag.elapsed() >= lag::REFRESH_EVERY {
            last_lag = Instant::now();
            let topics = groups.committed_topics();
            let ends = lag::refresh(&shared, &topics).await;
            *groups.watermarks.lock() = ends;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_kafka() {
        // Kafka: Utils.abs("my-group".hashCode()) % 50, with
        // "my-group".hashCode() == -1906497762.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
        for g in ["a", "orders-service", "ü-gruppe"] {
            assert!(partition_for(g, 16) < 16);
        }
    }

    #[test]
    fn group_ids_are_checked() {
        assert!(validate_group_id("orders-service").is_ok());
        assert!(validate_group_id("").is_err());
        assert!(validate_group_id("a\nb").is_err());
        assert!(validate_group_id(&"x".repeat(256)).is_err());
    }
}
