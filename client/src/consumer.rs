//! The consumer: assigned partitions read as one async [`Stream`] of records.
//!
//! [`Consumer::assign`] resolves the starting offset (`Earliest`, `Latest`
//! and `Timestamp` through `ListOffsets`) and starts one fetch task for the
//! partition. The task holds a server-streaming `Fetch` (a long poll) open
//! on the partition's owner, decodes (and decompresses) the batches, drops
//! the records before the wanted offset (a response may start mid-batch),
//! and hands the records to the consumer through a bounded channel. Each
//! chunk holds a share of `buffer_bytes` until the reader has taken all its
//! records, so a slow reader stops the fetches instead of growing memory.
//! After a retryable error the task refreshes metadata and resumes at the
//! next offset it has not delivered, so nothing is skipped or repeated.
//!
//! The one thing a newcomer must not break: records of a partition reach
//! the reader in offset order, each exactly once per assignment. A
//! [`Consumer::seek`] starts a new *generation*; chunks of the old one still
//! in the channel are dropped, never delivered.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use strata_batch::{Batch, decode_records_any};
use strata_proto::ErrorInfo;
use strata_proto::v1::{ErrorReason, FetchRequest, ListOffsetsRequest, OffsetSpec};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use futures::FutureExt;

use crate::cluster::{Cluster, backoff};
use crate::connect::ConnectOptions;
use crate::error::{Error, Result};
use crate::group::{Coordinator, GroupCalls, MemberSettings, Membership, Partitions};

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The first record still in the log.
    Earliest,
    /// The end of the log: only records produced from now on.
    Latest,
    /// This offset.
    At(i64),
    /// The first record whose timestamp is at or after this time (ms since
    /// the Unix epoch); the end of the log if there is none.
    Timestamp(i64),
}

/// What to do when the position is outside the log (retention deleted it,
/// or an offset past the end was asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Jump to the first record still in the log (the default: read what is
    /// left rather than skip to the end).
    #[default]
    Earliest,
    /// Jump to the end of the log.
    Latest,
    /// Stop the partition and yield [`ErrorReason::OffsetOutOfRange`].
    Error,
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Most bytes per fetch response. Bigger: fewer round trips, more
    /// memory per partition. Default 1 MiB.
    pub max_bytes: u32,
    /// Longest a fetch waits for `min_bytes` before answering. Default
    /// 500 ms.
    pub max_wait: Duration,
    /// Bytes a fetch waits for before answering. Default 1 (answer as soon
    /// as there is anything).
    pub min_bytes: u32,
    /// What to do when the position falls outside the log.
    pub auto_offset_reset: OffsetReset,
    /// Bound on bytes fetched but not yet read, across partitions. Default
    /// 16 MiB.
    pub buffer_bytes: usize,
    /// Timeout of unary requests (metadata, list offsets) and of a fetch
    /// response beyond `max_wait`. Default 30 s.
    pub request_timeout: Duration,
    /// Groups ([`Consumer::subscribe`]): commit the positions of the
    /// assigned partitions every `auto_commit_interval`, before a
    /// partition is revoked, and on [`Consumer::close`]. Default on
    /// (Kafka's `enable.auto.commit`). Off: commit with
    /// [`Consumer::commit`] after processing.
    pub auto_commit: bool,
    /// How often auto-commit commits. Default 5 s.
    pub auto_commit_interval: Duration,
    /// Groups: the coordinator gives this member's partitions to the
    /// others when it has not heard from it for this long. Default 45 s.
    pub session_timeout: Duration,
    /// Groups: how long this member may take to give up partitions
    /// during a rebalance (it must keep calling [`Consumer::recv`]).
    /// Default 60 s.
    pub rebalance_timeout: Duration,
    /// Groups: static membership. A member that comes back with the same
    /// instance id within the session timeout gets its partitions back
    /// without a rebalance (Kafka's `group.instance.id`).
    pub instance_id: Option<String>,
    /// Groups: the server-side assignor this member asks for, `uniform`
    /// (balanced and sticky) or `range` (co-partitioned: the same
    /// partition numbers of topics with as many partitions); the group
    /// uses the one most members ask for (Kafka's
    /// `group.remote.assignor`). Default: no preference (`uniform`).
    pub server_assignor: Option<String>,
    /// Shown by `strata group describe`. Default `strata-rust`.
    pub client_id: String,
    /// How to connect: TLS for `https://` brokers. Default: system roots.
    pub connection: ConnectOptions,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            auto_offset_reset: OffsetReset::Earliest,
            buffer_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(60),
            instance_id: None,
            server_assignor: None,
            client_id: "strata-rust".into(),
            connection: ConnectOptions::default(),
        }
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: i64,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// What a fetch task hands to the consumer.
struct Chunk {
    key: (String, u32),
    generation: u64,
    payload: Result<VecDeque<ConsumerRecord>>,
    _permit: Option<OwnedSemaphorePermit>,
}

struct Assignment {
    generation: u64,
    /// The offset of the next record the reader gets.
    position: i64,
    task: JoinHandle<()>,
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads assigned partitions as a [`Stream`] of records, in order per
/// partition.
///
/// ```no_run
/// # async fn demo() -> strata_client::Result<()> {
/// use futures::StreamExt;
/// use strata_client::{Consumer, ConsumerConfig, Offset};
///
/// let mut consumer = Consumer::connect("http://127.0.0.1:50051", ConsumerConfig::default()).await?;
/// consumer.assign("orders", 0, Offset::Earliest).await?;
/// while let Some(record) = consumer.next().await {
///     let record = record?;
///     println!("{}: {:?}", record.offset, record.value);
/// }
/// # Ok(()) }
/// ```
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    tx: mpsc::Sender<Chunk>,
    rx: mpsc::Receiver<Chunk>,
    memory: Arc<Semaphore>,
    assignments: HashMap<(String, u32), Assignment>,
    generation: u64,
    current: Option<Chunk>,
    group: Option<GroupState>,
}

/// Told when a subscribed consumer's partitions change (Kafka's
/// `ConsumerRebalanceListener`). Called from [`Consumer::recv`].
pub trait RebalanceListener: Send + Sync {
    /// Partitions assigned to this member; reading them starts at the
    /// committed offsets.
    fn on_assigned(&self, _partitions: &[(String, u32)]) {}
    /// Partitions about to be handed to another member: finish what you
    /// do with them now. With auto-commit their positions are committed
    /// right after this returns.
    fn on_revoked(&self, _partitions: &[(String, u32)]) {}
    /// Partitions this member lost without a hand-over (its session
    /// expired or it was fenced): another member may be reading them
    /// already, so nothing is committed. The member rejoins only after
    /// this returns. Defaults to `on_revoked`.
    fn on_lost(&self, partitions: &[(String, u32)]) {
        self.on_revoked(partitions);
    }
}

/// A subscribed consumer's group state.
struct GroupState {
    membership: Membership,
    listener: Option<Arc<dyn RebalanceListener>>,
    /// The last `View::lost` applied.
    seen_lost: u64,
    /// The last [`View::refused`] reported.
    seen_refused: Option<ErrorInfo>,
    next_auto_commit: tokio::time::Instant,
    /// Positions last committed, to skip commits that change nothing.
    committed: HashMap<(String, u32), i64>,
    /// The auto-commit in flight (one at a time, so commits never
    /// overtake each other).
    auto_commit: Option<JoinHandle<Result<Vec<CommitEntry>>>>,
}

/// (topic, partition, next offset to read).
type CommitEntry = (String, u32, i64);

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("broker", &self.cluster.bootstrap())
            .field("assignments", &self.assignment())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Connects to the cluster through `url`: one broker URL, or several
    /// separated by commas (`http://a:50051,http://b:50051`); any one that
    /// answers will do.
    pub async fn connect(url: &str, config: ConsumerConfig) -> Result<Consumer> {
        if config.buffer_bytes == 0 || config.max_bytes == 0 {
            return Err(Error::Config(
                "buffer_bytes and max_bytes must be above 0".into(),
            ));
        }
        let cluster = Cluster::connect(url, config.request_timeout, &config.connection).await?;
        Ok(Consumer::with_cluster(cluster, config))
    }

    fn with_cluster(cluster: Arc<Cluster>, config: ConsumerConfig) -> Consumer {
        let (tx, rx) = mpsc::channel(64);
        Consumer {
            cluster,
            memory: Arc::new(Semaphore::new(config.buffer_bytes)),
            config,
            tx,
            rx,
            assignments: HashMap::new(),
            generation: 0,
            current: None,
            group: None,
        }
    }

    /// Number of partitions of `topic`.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        self.cluster.refresh(topic).await?;
        self.cluster.partition_count(topic).await
    }

    /// Starts reading `topic`/`partition` at `offset` (replacing an earlier
    /// assignment of it).
    pub async fn assign(&mut self, topic: &str, partition: u32, offset: Offset) -> Result<()> {
        let partitions = self.cluster.partition_count(topic).await?;
        if partition >= partitions {
            return Err(Error::Broker(strata_proto::ErrorInfo::new(
                ErrorReason::UnknownPartition,
                format!("topic {topic} has {partitions} partitions: {partition}"),
            )));
        }
        let start = self.resolve(topic, partition, offset).await?;
        self.generation += 1;
        let task = FetchTask {
            cluster: self.cluster.clone(),
            config: self.config.clone(),
            key: (topic.to_owned(), partition),
            generation: self.generation,
            next: start,
            tx: self.tx.clone(),
            memory: self.memory.clone(),
        };
        let handle = tokio::spawn(task.run());
        self.assignments.insert(
            (topic.to_owned(), partition),
            Assignment {
                generation: self.generation,
                position: start,
                task: handle,
            },
        );
        Ok(())
    }

    /// Assigns every partition of `topic` at `offset`; returns how many.
    pub async fn assign_topic(&mut self, topic: &str, offset: Offset) -> Result<u32> {
        let n = self.partition_count(topic).await?;
        for p in 0..n {
            self.assign(topic, p, offset).await?;
        }
        Ok(n)
    }

    /// Moves an assigned partition to `offset`. Records of the old position
    /// not yet read are dropped.
    pub async fn seek(&mut self, topic: &str, partition: u32, offset: Offset) -> Result<()> {
        if !self
            .assignments
            .contains_key(&(topic.to_owned(), partition))
        {
            return Err(Error::Config(format!(
                "cannot seek a partition that is not assigned; assign it first: {topic}/{partition}"
            )));
        }
        self.assign(topic, partition, offset).await
    }

    /// Stops reading `topic`/`partition`.
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        self.assignments.remove(&(topic.to_owned(), partition));
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self.assignments.keys().cloned().collect();
        v.sort();
        v
    }

    /// The offset of the next record the stream yields for the partition,
    /// `None` when it is not assigned.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.assignments
            .get(&(topic.to_owned(), partition))
            .map(|a| a.position)
    }

    /// The offset `offset` stands for right now (through `ListOffsets` for
    /// all but [`Offset::At`]).
    pub async fn resolve(&self, topic: &str, partition: u32, offset: Offset) -> Result<i64> {
        let (spec, ts) = match offset {
            Offset::At(o) if o < 0 => {
                return Err(Error::Config(format!("offsets are never negative: {o}")));
            }
            Offset::At(o) => return Ok(o),
            Offset::Earliest => (OffsetSpec::Earliest, 0),
            Offset::Latest => (OffsetSpec::Latest, 0),
            Offset::Timestamp(ts) => (OffsetSpec::Timestamp, ts),
        };
        list_offset(&self.cluster, topic, partition, spec, ts).await
    }

    /// The earliest and latest offsets (log start, high watermark) of a
    /// partition.
    pub async fn watermarks(&self, topic: &str, partition: u32) -> Result<(i64, i64)> {
        let resp = list_offsets(&self.cluster, topic, partition, OffsetSpec::Latest, 0).await?;
        Ok((resp.log_start_offset, resp.high_watermark))
    }

    /// The next record (the same as `StreamExt::next` for assigned
    /// partitions). A subscribed consumer must read with `recv`: it also
    /// applies rebalances (revoking, committing, assigning) and
    /// auto-commits.
    pub async fn recv(&mut self) -> Option<Result<ConsumerRecord>> {
        if self.group.is_none() {
            return futures::StreamExt::next(self).await;
        }
        loop {
            if let Err(e) = self.sync_group().await {
                return Some(Err(e));
            }
            let Some(g) = &self.group else {
                return futures::StreamExt::next(self).await;
            };
            let mut view = g.membership.view.clone();
            let commit_at = g.next_auto_commit;
            let auto = self.config.auto_commit;
            // Woken at least every heartbeat interval, so a session that
            // runs out is noticed even when no record arrives.
            let look_again = g.membership.interval();
            tokio::select! {
                // A rebalance or a loss is applied before more records.
                biased;
                r = view.changed() => {
                    if r.is_err() {
                        return Some(Err(Error::Closed("group membership")));
                    }
                }
                () = tokio::time::sleep(look_again) => {}
                () = tokio::time::sleep_until(commit_at), if auto => self.start_auto_commit(),
                r = futures::StreamExt::next(&mut *self) => {
                    // The partitions may have been lost while these records
                    // came (fenced, or the session ran out): another member
                    // may be reading them already. They are dropped with
                    // the partition.
                    if self.loss_pending() {
                        continue;
                    }
                    return r;
                }
            }
        }
    }

    /// Joins `group` and reads the partitions of `topics` the group's
    /// coordinator assigns to this member, from the group's committed
    /// offsets (else per `auto_offset_reset`). Read with
    /// [`Consumer::recv`]; leave with [`Consumer::close`].
    ///
    /// ```no_run
    /// # async fn demo() -> strata_client::Result<()> {
    /// use strata_client::{Consumer, ConsumerConfig};
    ///
    /// let mut consumer = Consumer::connect("http://127.0.0.1:50051", ConsumerConfig::default()).await?;
    /// consumer.subscribe(&["orders"], "billing").await?;
    /// while let Some(record) = consumer.recv().await {
    ///     let record = record?;
    ///     println!("{}/{} {}: {:?}", record.topic, record.partition, record.offset, record.value);
    /// }
    /// consumer.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&mut self, topics: &[&str], group: &str) -> Result<()> {
        if topics.is_empty() {
            return Err(Error::Config("subscribe to at least one topic".into()));
        }
        self.subscribe_to(topics, None, group).await
    }

    /// Joins `group` subscribed to every topic whose whole name matches
    /// `pattern` (a regular expression, RE2 syntax, as Kafka's
    /// `subscribe(Pattern)`), and to topics created later that match. The
    /// group's coordinator resolves the pattern; one that does not compile
    /// is refused at the first heartbeat ([`Consumer::recv`] yields
    /// `INVALID_REGULAR_EXPRESSION`).
    ///
    /// ```no_run
    /// # async fn demo() -> strata_client::Result<()> {
    /// use strata_client::{Consumer, ConsumerConfig};
    ///
    /// let mut consumer = Consumer::connect("http://127.0.0.1:50051", ConsumerConfig::default()).await?;
    /// consumer.subscribe_pattern("orders-.*", "billing").await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_pattern(&mut self, pattern: &str, group: &str) -> Result<()> {
        if pattern.is_empty() {
            return Err(Error::Config(
                "the pattern is empty; match some topics, e.g. `orders-.*`".into(),
            ));
        }
        self.subscribe_to(&[], Some(pattern), group).await
    }

    async fn subscribe_to(
        &mut self,
        topics: &[&str],
        pattern: Option<&str>,
        group: &str,
    ) -> Result<()> {
        if self.group.is_some() {
            return Err(Error::Config(
                "this consumer is subscribed already; create another consumer for another group"
                    .into(),
            ));
        }
        if !self.assignments.is_empty() {
            return Err(Error::Config(
                "this consumer has partitions assigned by hand; subscribe with a new consumer"
                    .into(),
            ));
        }
        if group.is_empty() {
            return Err(Error::Config(
                "the group id is empty; name the group".into(),
            ));
        }
        for t in topics {
            // Unknown topics are reported now rather than never assigned.
            self.cluster.partition_count(t).await?;
        }
        let coordinator = Arc::new(Coordinator::new(self.cluster.clone(), group));
        self.join(coordinator, topics, pattern);
        Ok(())
    }

    /// Starts the membership (heartbeats) through `coordinator`.
    fn join(&mut self, coordinator: Arc<dyn GroupCalls>, topics: &[&str], pattern: Option<&str>) {
        let membership = Membership::start(
            coordinator,
            MemberSettings {
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                pattern: pattern.map(str::to_owned),
                assignor: self.config.server_assignor.clone(),
                instance_id: self.config.instance_id.clone(),
                session_timeout: self.config.session_timeout,
                rebalance_timeout: self.config.rebalance_timeout,
                client_id: self.config.client_id.clone(),
            },
        );
        self.group = Some(GroupState {
            membership,
            listener: None,
            seen_lost: 0,
            seen_refused: None,
            next_auto_commit: tokio::time::Instant::now() + self.config.auto_commit_interval,
            committed: HashMap::new(),
            auto_commit: None,
        });
    }

    /// Sets the listener told about assigned, revoked and lost partitions.
    pub fn set_rebalance_listener(&mut self, listener: Arc<dyn RebalanceListener>) {
        if let Some(g) = &mut self.group {
            g.listener = Some(listener);
        }
    }

    /// Commits the positions of every assigned partition (the offset of
    /// the next record [`Consumer::recv`] returns) and waits until they
    /// are durable: call it after processing for at-least-once delivery.
    /// Fails with `FENCED_MEMBER_EPOCH`, committing nothing, when the
    /// partitions were lost and [`Consumer::recv`] has not dropped them yet.
    pub async fn commit(&mut self) -> Result<()> {
        let positions = self.positions();
        self.commit_offsets(&positions).await
    }

    /// Commits the given (topic, partition, next offset to read) and waits
    /// until they are durable.
    pub async fn commit_offsets(&mut self, offsets: &[(String, u32, i64)]) -> Result<()> {
        let g = self.group.as_mut().ok_or_else(not_subscribed)?;
        if let Some(task) = g.auto_commit.take() {
            // Never let an older auto-commit land after this one.
            let _ = task.await;
        }
        if g.membership.loss_pending() {
            return Err(Error::Broker(ErrorInfo::new(
                ErrorReason::FencedMemberEpoch,
                format!(
                    "this member lost its partitions (fenced, or its session ran out), so \
                     nothing was committed; the next recv() drops them and rejoins: group {}",
                    g.membership.coordinator.group()
                ),
            )));
        }
        let (member, epoch) = g.membership.member();
        g.membership
            .coordinator
            .commit(&member, epoch, offsets)
            .await?;
        for (t, p, o) in offsets {
            g.committed.insert((t.clone(), *p), *o);
        }
        Ok(())
    }

    /// Starts committing the positions without waiting (at most one
    /// background commit at a time); errors are logged.
    pub fn commit_async(&mut self) {
        self.start_auto_commit();
    }

    /// The group's committed offset of a partition (`None`: none yet).
    pub async fn committed(&self, topic: &str, partition: u32) -> Result<Option<i64>> {
        let g = self.group.as_ref().ok_or_else(not_subscribed)?;
        let key = (topic.to_owned(), partition);
        let set: Partitions = [key.clone()].into_iter().collect();
        Ok(g.membership
            .coordinator
            .committed(&set)
            .await?
            .get(&key)
            .copied())
    }

    /// Leaves the group cleanly: tells the rebalance listener its
    /// partitions are revoked, commits the positions (with auto-commit),
    /// then tells the coordinator, so the partitions move at once. A
    /// consumer dropped without `close` leaves too, but without the
    /// commit.
    pub async fn close(mut self) -> Result<()> {
        // Lost partitions are reported lost and not committed.
        let lost = self.loss_pending();
        if let Some(l) = self.group.as_ref().and_then(|g| g.listener.clone()) {
            let mut held: Vec<(String, u32)> = self.assignments.keys().cloned().collect();
            held.sort();
            if !held.is_empty() {
                if lost {
                    l.on_lost(&held);
                } else {
                    l.on_revoked(&held);
                }
            }
        }
        let result = if self.config.auto_commit && self.group.is_some() && !lost {
            self.commit().await
        } else {
            Ok(())
        };
        self.assignments.clear();
        if let Some(mut g) = self.group.take() {
            g.membership.set_owned(Partitions::new());
            g.membership.leave().await;
        }
        result
    }

    /// True when the member lost its partitions and `recv` has not dropped
    /// them yet: nothing of theirs may be handed out or committed.
    fn loss_pending(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.membership.loss_pending())
    }

    /// The position of every assigned partition.
    fn positions(&self) -> Vec<(String, u32, i64)> {
        let mut v: Vec<(String, u32, i64)> = self
            .assignments
            .iter()
            .map(|((t, p), a)| (t.clone(), *p, a.position))
            .collect();
        v.sort();
        v
    }

    /// Commits the changed positions in the background, unless a commit
    /// is in flight.
    fn start_auto_commit(&mut self) {
        let positions = self.positions();
        let interval = self.config.auto_commit_interval;
        let Some(g) = &mut self.group else { return };
        g.next_auto_commit = tokio::time::Instant::now() + interval;
        if g.membership.loss_pending() {
            tracing::debug!(group = %g.membership.coordinator.group(), "not committing lost partitions");
            return;
        }
        if let Some(task) = &g.auto_commit {
            if !task.is_finished() {
                return;
            }
            if let Some(task) = g.auto_commit.take()
                && let Some(Ok(Ok(done))) = task.now_or_never()
            {
                for (t, p, o) in done {
                    g.committed.insert((t, p), o);
                }
            }
        }
        let changed: Vec<(String, u32, i64)> = positions
            .into_iter()
            .filter(|(t, p, o)| g.committed.get(&(t.clone(), *p)) != Some(o))
            .collect();
        if changed.is_empty() {
            return;
        }
        let (member, epoch) = g.membership.member();
        let coordinator = g.membership.coordinator.clone();
        g.auto_commit = Some(tokio::spawn(async move {
            match coordinator.commit(&member, epoch, &changed).await {
                Ok(()) => Ok(changed),
                Err(e) => {
                    tracing::warn!(group = %coordinator.group(), error = %e, "auto-commit failed; the next one retries");
                    Err(e)
                }
            }
        }));
    }

    /// Applies what the coordinator decided since the last call: drops
    /// lost partitions, revokes (committing first, with auto-commit) and
    /// reports it, then starts reading newly assigned partitions.
    /// Then reports a refusal of the member's heartbeats that no retry
    /// fixes (once).
    async fn sync_group(&mut self) -> Result<()> {
        self.apply_assignment().await?;
        if let Some(g) = &mut self.group {
            let refused = g.membership.view.borrow().refused.clone();
            if refused != g.seen_refused {
                g.seen_refused.clone_from(&refused);
                if let Some(info) = refused {
                    return Err(Error::Broker(info));
                }
            }
        }
        Ok(())
    }

    /// See [`Consumer::sync_group`].
    async fn apply_assignment(&mut self) -> Result<()> {
        let Some(g) = &mut self.group else {
            return Ok(());
        };
        // An expired session is declared a loss here, and handled below.
        g.membership.loss_pending();
        let view = g.membership.view.borrow_and_update().clone();
        if view.lost != g.seen_lost {
            g.seen_lost = view.lost;
            let lost: Vec<(String, u32)> = self.assignments.keys().cloned().collect();
            if !lost.is_empty() {
                tracing::warn!(group = %g.membership.coordinator.group(), partitions = lost.len(), "partitions lost without a hand-over; dropping them uncommitted");
                self.assignments.clear();
                g.committed.clear();
                if let Some(l) = &g.listener {
                    l.on_lost(&lost);
                }
            }
            // Only now may the member rejoin and be given partitions.
            g.membership.ack_lost(view.lost);
        }
        let current: Partitions = self.assignments.keys().cloned().collect();
        let revoked: Vec<(String, u32)> = current.difference(&view.assignment).cloned().collect();
        if !revoked.is_empty() {
            if let Some(l) = &g.listener {
                l.on_revoked(&revoked);
            }
            if self.config.auto_commit {
                let positions: Vec<(String, u32, i64)> = revoked
                    .iter()
                    .filter_map(|k| {
                        self.assignments
                            .get(k)
                            .map(|a| (k.0.clone(), k.1, a.position))
                    })
                    .filter(|(t, p, o)| g.committed.get(&(t.clone(), *p)) != Some(o))
                    .collect();
                if let Some(task) = g.auto_commit.take() {
                    let _ = task.await;
                }
                let (member, epoch) = g.membership.member();
                if g.membership.loss_pending() {
                    // Lost while revoking: the next sync drops them.
                    return Ok(());
                } else if let Err(e) = g
                    .membership
                    .coordinator
                    .commit(&member, epoch, &positions)
                    .await
                {
                    tracing::warn!(group = %g.membership.coordinator.group(), error = %e, "could not commit revoked partitions; their next owner re-reads from the last commit");
                }
            }
            for k in &revoked {
                self.assignments.remove(k);
                g.committed.remove(k);
            }
            let owned: Partitions = self.assignments.keys().cloned().collect();
            g.membership.set_owned(owned);
        }
        let current: Partitions = self.assignments.keys().cloned().collect();
        let added: Partitions = view.assignment.difference(&current).cloned().collect();
        if added.is_empty() {
            return Ok(());
        }
        let committed = g.membership.coordinator.committed(&added).await?;
        let reset = self.config.auto_offset_reset;
        let group_id = g.membership.coordinator.group().to_owned();
        for (t, p) in &added {
            let start = match committed.get(&(t.clone(), *p)) {
                Some(o) => Offset::At(*o),
                None => match reset {
                    OffsetReset::Earliest => Offset::Earliest,
                    OffsetReset::Latest => Offset::Latest,
                    OffsetReset::Error => {
                        return Err(Error::Config(format!(
                            "group {group_id} has no committed offset for {t}/{p} and \
                             auto_offset_reset is error; set one with `strata group \
                             reset-offsets {group_id} --topic {t} --to-earliest`"
                        )));
                    }
                },
            };
            self.assign(t, *p, start).await?;
            if let (Some(g), Offset::At(o)) = (&mut self.group, start) {
                g.committed.insert((t.clone(), *p), o);
            }
        }
        if let Some(g) = &self.group {
            g.membership
                .set_owned(self.assignments.keys().cloned().collect());
            if let Some(l) = &g.listener {
                let added: Vec<(String, u32)> = added.into_iter().collect();
                l.on_assigned(&added);
            }
        }
        Ok(())
    }
}

fn not_subscribed() -> Error {
    Error::Config("this consumer is not in a group; call subscribe(topics, group) first".into())
}

impl Consumer {
    /// The consumer as a `Stream` (it is one itself; this reads nicer in
    /// combinator chains). For assigned partitions only: a subscribed
    /// consumer reads with [`Consumer::recv`].
    pub fn stream(&mut self) -> &mut Self {
        self
    }
}

impl Stream for Consumer {
    type Item = Result<ConsumerRecord>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = &mut this.current {
                let live = this
                    .assignments
                    .get_mut(&chunk.key)
                    .filter(|a| a.generation == chunk.generation);
                if let (Some(a), Ok(records)) = (live, &mut chunk.payload)
                    && let Some(r) = records.pop_front()
                {
                    a.position = r.offset + 1;
                    return Poll::Ready(Some(Ok(r)));
                }
                this.current = None;
            }
            let Some(mut chunk) = std::task::ready!(this.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            let live = this
                .assignments
                .get(&chunk.key)
                .is_some_and(|a| a.generation == chunk.generation);
            if !live {
                continue;
            }
            if let Err(e) = &mut chunk.payload {
                let e = std::mem::replace(e, Error::Closed("consumer"));
                return Poll::Ready(Some(Err(e)));
            }
            this.current = Some(chunk);
        }
    }
}

async fn list_offsets(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
    timestamp_ms: i64,
) -> Result<strata_proto::v1::ListOffsetsResponse> {
    let mut attempt = 0u32;
    loop {
        let addr = cluster.owner_address(topic, partition);
        let result = async {
            let mut client = cluster.strata(&addr)?;
            let req = cluster.request(ListOffsetsRequest {
                topic: topic.to_owned(),
                partition,
                spec: spec as i32,
                timestamp_ms,
            });
            cluster
                .unary(&addr, "list offsets", client.list_offsets(req))
                .await
        }
        .await;
        match result {
            Ok(resp) => return Ok(resp),
            Err(e) if e.is_retryable() && attempt < 8 => {
                cluster.on_error(topic, partition, &e).await;
                tokio::time::sleep(backoff(attempt, &e)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn list_offset(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
    timestamp_ms: i64,
) -> Result<i64> {
    Ok(list_offsets(cluster, topic, partition, spec, timestamp_ms)
        .await?
        .offset)
}

/// Decodes fetched batches into the records at or after `*next`, moving
/// `*next` past every batch it reads. Pure: no IO.
pub(crate) fn records_from_batches(
    topic: &str,
    partition: u32,
    batches: Vec<Bytes>,
    next: &mut i64,
) -> Result<VecDeque<ConsumerRecord>> {
    let mut out = VecDeque::new();
    for bytes in batches {
        let batch = Batch::from_trusted(bytes)?;
        batch.verify_crc()?;
        let header = batch.header();
        if header.next_offset() <= *next {
            continue; // entirely before the position
        }
        if header.is_control() {
            *next = header.next_offset();
            continue;
        }
        for r in decode_records_any(&batch)? {
            if r.offset < *next {
                continue;
            }
            out.push_back(ConsumerRecord {
                topic: topic.to_owned(),
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
        *next = header.next_offset();
    }
    Ok(out)
}

/// Batches that are compressed or bigger than this in total are decoded on
/// the blocking pool.
const DECODE_INLINE_MAX: usize = 256 * 1024;

struct FetchTask {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    key: (String, u32),
    generation: u64,
    /// The next offset to hand out.
    next: i64,
    tx: mpsc::Sender<Chunk>,
    memory: Arc<Semaphore>,
}

enum Step {
    /// Carry on (reconnect and resume at `next`).
    Resume,
    /// The partition cannot be read any more.
    Stop,
}

impl FetchTask {
    async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            let error = match self.fetch_stream(&mut attempt).await {
                Ok(()) => continue, // the server ended the stream; resume
                Err(e) => e,
            };
            match self.on_error(error, attempt).await {
                Step::Resume => attempt = attempt.saturating_add(1),
                Step::Stop => return,
            }
        }
    }

    /// Opens a fetch stream at `next` and delivers its responses until it
    /// ends or fails.
    async fn fetch_stream(&mut self, attempt: &mut u32) -> Result<()> {
        let (topic, partition) = (self.key.0.clone(), self.key.1);
        let addr = self.cluster.owner_address(&topic, partition);
        let mut client = self.cluster.strata(&addr)?;
        let req = FetchRequest {
            topic: topic.clone(),
            partition,
            offset: self.next,
            max_bytes: self.config.max_bytes,
            min_bytes: self.config.min_bytes,
            max_wait_ms: u32::try_from(self.config.max_wait.as_millis()).unwrap_or(u32::MAX),
            once: false,
        };
        let timeout = self.config.request_timeout + self.config.max_wait;
        let mut stream = match tokio::time::timeout(timeout, client.fetch(req)).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => return Err(Error::from_status(&status, &addr)),
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("fetch of {topic}/{partition} at {addr}"),
                    after: timeout,
                });
            }
        };
        loop {
            let resp = match tokio::time::timeout(timeout, stream.message()).await {
                Ok(Ok(Some(resp))) => resp,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(status)) => return Err(Error::from_status(&status, &addr)),
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("fetch response for {topic}/{partition} from {addr}"),
                        after: timeout,
                    });
                }
            };
            *attempt = 0;
            if resp.batches.is_empty() {
                continue;
            }
            let bytes: usize = resp.batches.iter().map(Bytes::len).sum();
            let records = self.decode(resp.batches, bytes).await?;
            if records.is_empty() {
                continue;
            }
            let permits = u32::try_from(bytes.min(self.config.buffer_bytes)).unwrap_or(u32::MAX);
            let Ok(permit) = self.memory.clone().acquire_many_owned(permits).await else {
                return Ok(());
            };
            let chunk = Chunk {
                key: self.key.clone(),
                generation: self.generation,
                payload: Ok(records),
                _permit: Some(permit),
            };
            if self.tx.send(chunk).await.is_err() {
                // The consumer is gone; `run` will be aborted.
                std::future::pending::<()>().await;
            }
        }
    }

    async fn decode(
        &mut self,
        batches: Vec<Bytes>,
        bytes: usize,
    ) -> Result<VecDeque<ConsumerRecord>> {
        let compressed = batches.iter().any(|b| {
            strata_batch::BatchHeader::parse(b)
                .and_then(|h| h.compression())
                .is_ok_and(|c| c != strata_batch::Compression::None)
        });
        let (topic, partition) = (self.key.0.clone(), self.key.1);
        let mut next = self.next;
        let records = if compressed || bytes > DECODE_INLINE_MAX {
            let (records, n) = tokio::task::spawn_blocking(move || {
                let r = records_from_batches(&topic, partition, batches, &mut next);
                (r, next)
            })
            .await
            .map_err(|e| Error::InvalidResponse(format!("decoding task failed: {e}")))?;
            next = n;
            records?
        } else {
            records_from_batches(&topic, partition, batches, &mut next)?
        };
        self.next = next;
        Ok(records)
    }

    async fn on_error(&mut self, error: Error, attempt: u32) -> Step {
        let (topic, partition) = (self.key.0.clone(), self.key.1);
        if error.reason() == Some(ErrorReason::OffsetOutOfRange) {
            let spec = match self.config.auto_offset_reset {
                OffsetReset::Earliest => OffsetSpec::Earliest,
                OffsetReset::Latest => OffsetSpec::Latest,
                OffsetReset::Error => return self.fail(error).await,
            };
            match list_offset(&self.cluster, &topic, partition, spec, 0).await {
                Ok(o) => {
                    tracing::warn!(
                        topic = %topic,
                        partition,
                        from = self.next,
                        to = o,
                        "offset out of range; resetting"
                    );
                    self.next = o;
                    return Step::Resume;
                }
                Err(e) => return self.retry_or_fail(e, attempt).await,
            }
        }
        self.retry_or_fail(error, attempt).await
    }

    async fn retry_or_fail(&mut self, error: Error, attempt: u32) -> Step {
        if !error.is_retryable() {
            return self.fail(error).await;
        }
        let (topic, partition) = (&self.key.0, self.key.1);
        tracing::debug!(topic = %topic, partition, error = %error, "fetch failed; retrying");
        self.cluster.on_error(topic, partition, &error).await;
        tokio::time::sleep(backoff(attempt, &error)).await;
        Step::Resume
    }

    async fn fail(&mut self, error: Error) -> Step {
        let chunk = Chunk {
            key: self.key.clone(),
            generation: self.generation,
            payload: Err(error),
            _permit: None,
        };
        let _ = self.tx.send(chunk).await;
        Step::Stop
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_batch::{BatchBuilder, BatchLimits};

    fn stored(base: i64, values: &[&str], compression: strata_batch::Compression) -> Bytes {
        let mut b = BatchBuilder::new();
        for (i, v) in values.iter().enumerate() {
            b.push(
                1000 + i as i64,
                Some(b"k"),
                Some(v.as_bytes()),
                &[("h", None)],
            );
        }
        let bytes = b.build_compressed(compression).unwrap();
        Batch::validate(bytes, &BatchLimits::default())
            .unwrap()
            .stamp(base, 0)
            .into_bytes()
    }

    #[test]
    fn skips_records_before_the_position() {
        for c in [
            strata_batch::Compression::None,
            strata_batch::Compression::Zstd,
            strata_batch::Compression::Lz4,
            strata_batch::Compression::Gzip,
            strata_batch::Compression::Snappy,
        ] {
            let batches = vec![
                stored(0, &["a", "b", "c"], c),
                stored(3, &["d", "e"], c),
                stored(5, &["f"], c),
            ];
            // Start mid-way through the second batch.
            let mut next = 4;
            let got = records_from_batches("t", 2, batches.clone(), &mut next).unwrap();
            let values: Vec<_> = got.iter().map(|r| r.value.clone().unwrap()).collect();
            assert_eq!(values, ["e", "f"]);
            assert_eq!(got[0].offset, 4);
            assert_eq!(got[0].partition, 2);
            assert_eq!(got[0].topic, "t");
            assert_eq!(got[0].timestamp_ms, 1001);
            assert_eq!(got[0].key.as_deref(), Some(&b"k"[..]));
            assert_eq!(got[0].headers, vec![("h".to_owned(), None)]);
            assert_eq!(next, 6);
            // Reading the same batches again yields nothing.
            assert!(
                records_from_batches("t", 2, batches.clone(), &mut next)
                    .unwrap()
                    .is_empty()
            );
            // From the start: everything, in order.
            let mut next = 0;
            let got = records_from_batches("t", 2, batches, &mut next).unwrap();
            let offsets: Vec<_> = got.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, [0, 1, 2, 3, 4, 5]);
        }
    }

    #[test]
    fn corrupt_batches_are_errors() {
        let good = stored(0, &["a"], strata_batch::Compression::None);
        let mut v = good.to_vec();
        let last = v.len() - 1;
        v[last] ^= 0xff;
        let mut next = 0;
        assert!(matches!(
            records_from_batches("t", 0, vec![Bytes::from(v)], &mut next),
            Err(Error::Batch(_))
        ));
        assert!(records_from_batches("t", 0, vec![Bytes::from_static(b"xx")], &mut next).is_err());
    }

    mod group {
        use super::super::*;
        use crate::group::scripted::Scripted;
        use parking_lot::Mutex;

        /// Records what the listener was told, in order.
        #[derive(Default)]
        struct Told(Mutex<Vec<String>>);

        impl RebalanceListener for Told {
            fn on_assigned(&self, p: &[(String, u32)]) {
                self.0.lock().push(format!("assigned {p:?}"));
            }
            fn on_revoked(&self, p: &[(String, u32)]) {
                self.0.lock().push(format!("revoked {p:?}"));
            }
            fn on_lost(&self, p: &[(String, u32)]) {
                self.0.lock().push(format!("lost {p:?}"));
            }
        }

        fn config(auto_commit: bool) -> ConsumerConfig {
            ConsumerConfig {
                auto_commit,
                auto_commit_interval: Duration::from_millis(300),
                session_timeout: Duration::from_secs(10),
                ..ConsumerConfig::default()
            }
        }

        /// A consumer in group `g` of the scripted coordinator, holding
        /// t/0 from offset 0 (no record fetched: the broker is down).
        async fn holding_t0(
            coordinator: &Arc<Scripted>,
            auto_commit: bool,
        ) -> (Consumer, Arc<Told>) {
            coordinator.with(|s| {
                s.offsets.insert(("t".into(), 0), 0);
            });
            let mut c =
                Consumer::with_cluster(Cluster::for_tests(&[("t", 1)]), config(auto_commit));
            c.join(coordinator.clone(), &["t"], None);
            let told = Arc::new(Told::default());
            c.set_rebalance_listener(told.clone());
            let r = tokio::time::timeout(Duration::from_secs(3), c.recv()).await;
            assert!(r.is_err(), "no records yet: {r:?}");
            assert_eq!(c.assignment(), vec![("t".to_owned(), 0)]);
            (c, told)
        }

        /// Hands records `from..to` of t/0 to the consumer as if fetched.
        async fn fetched(c: &Consumer, from: i64, to: i64) {
            let key = ("t".to_owned(), 0);
            let generation = c.assignments[&key].generation;
            let records = (from..to)
                .map(|offset| ConsumerRecord {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                    timestamp_ms: 0,
                    key: None,
                    value: None,
                    headers: vec![],
                })
                .collect();
            let chunk = Chunk {
                key,
                generation,
                payload: Ok(records),
                _permit: None,
            };
            c.tx.send(chunk).await.unwrap();
        }

        async fn lost(c: &Consumer) {
            let mut view = c.group.as_ref().unwrap().membership.view.clone();
            tokio::time::timeout(Duration::from_secs(60), view.wait_for(|v| v.lost > 0))
                .await
                .unwrap()
                .unwrap();
        }

        #[tokio::test(start_paused = true)]
        async fn a_refusal_no_retry_fixes_is_reported_once_by_recv() {
            let coordinator = Scripted::new(1, &[("t", 0)]);
            let (mut c, _told) = holding_t0(&coordinator, false).await;
            coordinator.with(|s| s.fence = Some(ErrorReason::InvalidRegularExpression));
            let e = tokio::time::timeout(Duration::from_secs(60), c.recv())
                .await
                .expect("reported")
                .expect("an item")
                .expect_err("refused");
            assert_eq!(e.reason(), Some(ErrorReason::InvalidRegularExpression));
            // Once: the next recv waits (the member keeps heartbeating).
            let again = tokio::time::timeout(Duration::from_secs(8), c.recv()).await;
            assert!(again.is_err(), "{again:?}");
            // A retriable refusal is not reported.
            coordinator.with(|s| s.fence = Some(ErrorReason::CoordinatorLoadInProgress));
            let quiet = tokio::time::timeout(Duration::from_secs(4), c.recv()).await;
            assert!(quiet.is_err(), "{quiet:?}");
        }

        #[tokio::test(start_paused = true)]
        async fn records_of_lost_partitions_are_never_handed_out() {
            // The loss and the records arrive while recv() waits; which of
            // the two it sees first must not matter.
            for _ in 0..16 {
                let coordinator = Scripted::new(1, &[("t", 0)]);
                let (mut c, told) = holding_t0(&coordinator, false).await;
                let tx = c.tx.clone();
                let generation = c.assignments[&("t".to_owned(), 0)].generation;
                let mut view = c.group.as_ref().unwrap().membership.view.clone();
                let mut recv = Box::pin(c.recv());
                assert!(futures::poll!(recv.as_mut()).is_pending());
                coordinator.with(|s| s.fence = Some(ErrorReason::FencedMemberEpoch));
                tokio::time::timeout(Duration::from_secs(60), view.wait_for(|v| v.lost > 0))
                    .await
                    .expect("the loss is published")
                    .unwrap();
                coordinator.with(|s| s.fence = None);
                let record = ConsumerRecord {
                    topic: "t".into(),
                    partition: 0,
                    offset: 0,
                    timestamp_ms: 0,
                    key: None,
                    value: None,
                    headers: vec![],
                };
                let chunk = Chunk {
                    key: ("t".into(), 0),
                    generation,
                    payload: Ok([record].into()),
                    _permit: None,
                };
                tx.try_send(chunk).unwrap();
                let r = tokio::time::timeout(Duration::from_millis(500), recv).await;
                assert!(r.is_err(), "a record of a lost partition: {r:?}");
                assert!(told.0.lock().iter().any(|t| t.starts_with("lost")));
            }
        }

        #[tokio::test(start_paused = true)]
        async fn nothing_is_committed_while_a_loss_is_pending() {
            let coordinator = Scripted::new(1, &[("t", 0)]);
            let (mut c, told) = holding_t0(&coordinator, true).await;
            fetched(&c, 0, 5).await;
            for _ in 0..2 {
                c.recv().await.unwrap().unwrap();
            }
            coordinator.with(|s| s.fence = Some(ErrorReason::FencedMemberEpoch));
            lost(&c).await;
            // The consumer has not run on_lost yet: it must not commit.
            let e = c.commit().await.unwrap_err();
            assert_eq!(e.reason(), Some(ErrorReason::FencedMemberEpoch), "{e}");
            c.commit_async();
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(coordinator.with(|s| s.commits.clone()), vec![]);
            // Nor on close, which reports the partitions lost.
            c.close().await.unwrap();
            assert_eq!(coordinator.with(|s| s.commits.clone()), vec![]);
            assert_eq!(
                told.0.lock().last().unwrap(),
                &format!("lost {:?}", [("t".to_owned(), 0)])
            );
        }

        #[tokio::test(start_paused = true)]
        async fn recv_notices_an_expired_session_without_records() {
            let coordinator = Scripted::new(1, &[("t", 0)]);
            let (mut c, told) = holding_t0(&coordinator, false).await;
            // The coordinator stops answering (a heartbeat hangs).
            coordinator.with(|s| s.delay = Duration::from_secs(3_600));
            let r = tokio::time::timeout(Duration::from_secs(15), c.recv()).await;
            assert!(r.is_err(), "{r:?}");
            assert_eq!(
                told.0.lock().last().unwrap(),
                &format!("lost {:?}", [("t".to_owned(), 0)])
            );
            assert!(c.assignment().is_empty());
        }
    }
}
