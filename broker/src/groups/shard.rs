//! One loaded partition of `__consumer_offsets`: the groups it holds, in
//! memory, and the one task that writes to its log.
//!
//! - **Loading** reads the newest snapshot and replays the records after
//!   it ([`Shard::load`]); its cost is bounded by `group.snapshot_records`,
//!   not by the history of commits.
//! - **Writing**: every change goes through the shard's writer task, one
//!   append at a time, so records land (and are applied) in the order they
//!   were queued. Writes queued while an append is in flight share the
//!   next append, and appends of every shard share the broker's WAL
//!   flushes: many commits, one PUT. Callers answer their clients only
//!   once the writer reports the append durable.
//! - A group record is built from the group's state when the writer takes
//!   it, not when it was queued, so a durable record is never older than
//!   a reply that waited for it.
//! - Any failed append kills the shard (`dead`): the in-memory state may
//!   be ahead of the log, so the next request reloads it from the log (on
//!   whichever broker owns the partition by then).
//! - After `group.snapshot_records` records the writer hands a copy of
//!   the durable state to a snapshot task; once the snapshot is stored,
//!   the log below the previous snapshot is deleted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use object_store::ObjectStore;
use parking_lot::Mutex;
use strata_storage::batch::Batch;
use strata_storage::keys::TopicIdPartition;
use strata_storage::log::{Acks, PartitionLog};
use strata_storage::snapshot;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::records::{self, GroupRecord, ShardState, Snapshot};
use super::state::{Group, GroupError, GroupValue, Tp};
use crate::error::{BrokerError, Result};
use crate::service::now_ms;

/// Writes a shard's writer takes into one append at most.
const MAX_WRITES_PER_APPEND: usize = 512;

/// Bytes of records per batch (the internal topic's batches stay well
/// below `log.max_batch_bytes`).
const BATCH_BYTES: usize = 256 * 1024;

/// Writes queued per shard before callers wait (backpressure).
const WRITE_QUEUE: usize = 4096;

/// Bytes read per step while loading.
const LOAD_READ_BYTES: usize = 4 << 20;

/// What to write. Deletes are decided when the writer takes them (their
/// conditions checked again against the state then), so they land in the
/// log after exactly the records they were decided against.
#[derive(Debug)]
pub enum Write {
    /// Offset commits (checked by the caller).
    Commits(Vec<GroupRecord>),
    /// The group's record as it is when the writer takes it.
    GroupState(String),
    /// Delete committed offsets (all when `filter` is empty) of a group
    /// that has no members.
    DeleteOffsets {
        /// The group.
        group: String,
        /// Which partitions.
        filter: BTreeSet<Tp>,
    },
    /// Delete a group that has no members, with its offsets.
    DeleteGroup(String),
    /// Delete the offsets of topic incarnations that are gone (topic, id),
    /// and groups without members whose last activity is older than
    /// `expire_before_ms`.
    Cleanup {
        /// Gone (topic, topic id) pairs.
        stale: BTreeSet<(String, String)>,
        /// Expiry cut-off.
        expire_before_ms: i64,
    },
}

/// Why a write was not done.
#[derive(Debug, Clone)]
pub enum WriteError {
    /// A group rule refused it when the writer took it.
    Refused(GroupError),
    /// The group does not exist.
    NotFound,
    /// The append failed: the shard is dead.
    Failed(String),
}

/// What a write did: how many records it deleted.
type WriteResult = std::result::Result<usize, WriteError>;

struct Queued {
    write: Write,
    reply: oneshot::Sender<WriteResult>,
}

/// The records one round of the writer appends, and what to do once they
/// are durable.
#[derive(Default)]
struct Round {
    records: Vec<GroupRecord>,
    /// Group values taken, with their versions.
    taken: Vec<(String, GroupValue, u64)>,
    /// Per queued write, its outcome if the append succeeds.
    outcomes: Vec<WriteResult>,
}

/// A loaded coordinator partition.
pub struct Shard {
    /// The partition of `__consumer_offsets`.
    pub partition: u32,
    /// Its log (owned by this broker while the shard lives).
    pub log: PartitionLog,
    /// Groups, by id.
    pub state: Arc<Mutex<ShardState>>,
    /// Cancelled when the shard must not serve any more (the log left the
    /// registry, or an append failed).
    pub dead: CancellationToken,
    writes: mpsc::Sender<Queued>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("partition", &self.partition)
            .field("dead", &self.dead.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// What a writer needs besides its queue.
struct Writer {
    log: PartitionLog,
    id: TopicIdPartition,
    store: Arc<dyn ObjectStore>,
    state: Arc<Mutex<ShardState>>,
    dead: CancellationToken,
    snapshot_records: u64,
    since_snapshot: u64,
    /// The newest snapshot's offset (the log below the one before it may
    /// go).
    last_snapshot: Option<i64>,
    snapshotting: Arc<AtomicBool>,
}

impl Shard {
    /// Loads `log` (a partition of `__consumer_offsets` this broker just
    /// opened): the newest snapshot in `store`, then the records after it.
    /// `dropped` is the registry's token for the log.
    pub async fn load(
        partition: u32,
        log: PartitionLog,
        dropped: CancellationToken,
        store: Arc<dyn ObjectStore>,
        snapshot_records: u64,
    ) -> Result<Arc<Shard>> {
        let id = log.id().clone();
        let tp = id.tp.clone();
        let now = now_ms();
        let storage = |e| BrokerError::storage(&tp, e);
        let (from, mut state) = match snapshot::latest(&store, &id).await.map_err(storage)? {
            Some((offset, bytes)) => {
                let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
                    storage(strata_storage::Error::Corrupt {
                        key: strata_storage::keys::snapshot(&id, offset).to_string(),
                        reason: format!("not a group snapshot: {e}"),
                    })
                })?;
                (offset, ShardState::from_snapshot(snap, now))
            }
            None => (0, ShardState::default()),
        };
        let status = log.status();
        if from < status.log_start_offset {
            return Err(storage(strata_storage::Error::Corrupt {
                key: tp.to_string(),
                reason: format!(
                    "the log starts at {} but the newest snapshot covers only the records below {from}",
                    status.log_start_offset
                ),
            }));
        }
        let end = status.high_watermark;
        let mut offset = from;
        let mut replayed = 0u64;
        while offset < end {
            let read = log.read(offset, LOAD_READ_BYTES).await.map_err(storage)?;
            if read.batches.is_empty() {
                break;
            }
            for bytes in read.batches {
                let batch = Batch::from_trusted(bytes)
                    .map_err(|e| storage(strata_storage::Error::InvalidBatch(e)))?;
                let next = batch.header().next_offset();
                let decoded = records::decode(&batch).map_err(|reason| {
                    storage(strata_storage::Error::Corrupt {
                        key: tp.to_string(),
                        reason,
                    })
                })?;
                for (o, r) in decoded {
                    if o >= from {
                        state.apply(r, now);
                        replayed += 1;
                    }
                }
                offset = offset.max(next);
            }
        }
        tracing::info!(%tp, snapshot = from, replayed, groups = state.groups.len(), "group coordinator loaded");
        let state = Arc::new(Mutex::new(state));
        let dead = dropped.child_token();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            log: log.clone(),
            id,
            store,
            state: state.clone(),
            dead: dead.clone(),
            snapshot_records,
            since_snapshot: replayed,
            last_snapshot: (from > 0).then_some(from),
            snapshotting: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(writer.run(rx));
        Ok(Arc::new(Shard {
            partition,
            log,
            state,
            dead,
            writes: tx,
        }))
    }

    /// True while the shard may serve.
    pub fn is_alive(&self) -> bool {
        !self.dead.is_cancelled()
    }

    /// Queues `write` and waits until it is durable; returns how many
    /// records it deleted.
    pub async fn write(&self, group: &str, write: Write) -> Result<usize> {
        let lost = |detail: String| BrokerError::NotCoordinator {
            group: group.to_owned(),
            coordinator: None,
            detail,
        };
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(Queued { write, reply })
            .await
            .map_err(|_| {
                lost(
                    "this broker just lost the group's partition; find the coordinator again"
                        .into(),
                )
            })?;
        match rx.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(WriteError::Refused(e))) => Err(e.into()),
            Ok(Err(WriteError::NotFound)) => Err(BrokerError::GroupNotFound(group.to_owned())),
            Ok(Err(WriteError::Failed(e))) => Err(lost(format!(
                "writing to the group's partition failed ({e}); find the coordinator again"
            ))),
            Err(_) => Err(lost(
                "this broker just lost the group's partition; find the coordinator again".into(),
            )),
        }
    }

    /// Queues `write` without waiting for it to be done (the
    /// coordinator's own timer: expiries, cleanup). Waits for room in the
    /// queue, never drops it.
    pub async fn write_later(&self, write: Write) {
        let (reply, _) = oneshot::channel();
        if self.writes.send(Queued { write, reply }).await.is_err() {
            tracing::debug!(
                partition = self.partition,
                "group shard closed; write dropped"
            );
        }
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        loop {
            let first = tokio::select! {
                q = rx.recv() => match q {
                    Some(q) => q,
                    None => return,
                },
                () = self.dead.cancelled() => return,
            };
            let mut queued = vec![first];
            while queued.len() < MAX_WRITES_PER_APPEND {
                match rx.try_recv() {
                    Ok(q) => queued.push(q),
                    Err(_) => break,
                }
            }
            let round = self.collect(&queued);
            let Round {
                records,
                taken,
                outcomes,
            } = round;
            let result = self.append(records, taken).await;
            let failed = result.is_err();
            for (q, outcome) in queued.into_iter().zip(outcomes) {
                let r = match &result {
                    Ok(()) => outcome,
                    Err(e) => Err(WriteError::Failed(e.clone())),
                };
                let _ = q.reply.send(r);
            }
            if failed {
                self.dead.cancel();
                return;
            }
        }
    }

    /// The records of `queued`, decided against the state now: group
    /// records are built from the groups as they are, deletes checked
    /// again. Groups deleted here leave the state at once, so anything a
    /// request does to them afterwards lands after their tombstones.
    fn collect(&self, queued: &[Queued]) -> Round {
        let mut st = self.state.lock();
        let mut round = Round::default();
        // Offsets committed earlier in this round: a delete decided against
        // the state must not cover them.
        let mut committed: HashMap<(String, String, u32), String> = HashMap::new();
        for q in queued {
            let outcome = match &q.write {
                Write::Commits(r) => {
                    for rec in r {
                        if let GroupRecord::Offset {
                            group,
                            topic,
                            partition,
                            value: Some(v),
                        } = rec
                        {
                            committed.insert(
                                (group.clone(), topic.clone(), *partition),
                                v.topic_id.clone(),
                            );
                        }
                    }
                    round.records.extend(r.iter().cloned());
                    Ok(0)
                }
                Write::GroupState(g) => {
                    if let Some((value, version)) = st.groups.get_mut(g).and_then(Group::take) {
                        round.records.push(GroupRecord::Group {
                            group: g.clone(),
                            value: Some(value.clone()),
                        });
                        round.taken.push((g.clone(), value, version));
                    }
                    Ok(0)
                }
                Write::DeleteOffsets { group, filter } => match st.groups.get(group) {
                    None => Err(WriteError::NotFound),
                    Some(g) => match g.check_empty("deleting offsets") {
                        Err(e) => Err(WriteError::Refused(e)),
                        Ok(()) => {
                            let doomed: Vec<GroupRecord> = g
                                .offsets
                                .keys()
                                .filter(|tp| filter.is_empty() || filter.contains(*tp))
                                .map(|(t, p)| tombstone(group, t, *p))
                                .collect();
                            let n = doomed.len();
                            round.records.extend(doomed);
                            Ok(n)
                        }
                    },
                },
                Write::DeleteGroup(group) => match st.groups.get(group) {
                    None => Err(WriteError::NotFound),
                    Some(g) => match g.check_empty("deleting the group") {
                        Err(e) => Err(WriteError::Refused(e)),
                        Ok(()) => {
                            let n = g.offsets.len();
                            if let Some(g) = st.groups.remove(group) {
                                round.records.extend(group_tombstones(&g));
                            }
                            Ok(n)
                        }
                    },
                },
                Write::Cleanup {
                    stale,
                    expire_before_ms,
                } => {
                    let mut n = 0;
                    let recommitted = |g: &str, t: &str, p: u32| {
                        committed.contains_key(&(g.to_owned(), t.to_owned(), p))
                    };
                    let expired: Vec<String> = st
                        .groups
                        .values()
                        .filter(|g| {
                            let last_commit = g.offsets.values().map(|c| c.commit_ms).max();
                            let since = g.empty_since_ms().max(last_commit);
                            g.member_count() == 0
                                && since.is_some_and(|t| t < *expire_before_ms)
                                && !committed.keys().any(|(cg, _, _)| cg == &g.id)
                        })
                        .map(|g| g.id.clone())
                        .collect();
                    for id in expired {
                        if let Some(g) = st.groups.remove(&id) {
                            tracing::info!(group = %id, offsets = g.offsets.len(), "deleting a group empty for longer than group.offsets_retention");
                            n += g.offsets.len();
                            round.records.extend(group_tombstones(&g));
                        }
                    }
                    for g in st.groups.values() {
                        for ((t, p), c) in &g.offsets {
                            if stale.contains(&(t.clone(), c.topic_id.clone()))
                                && !recommitted(&g.id, t, *p)
                            {
                                round.records.push(tombstone(&g.id, t, *p));
                                n += 1;
                            }
                        }
                    }
                    Ok(n)
                }
            };
            round.outcomes.push(outcome);
        }
        round
    }

    /// Appends `records` (in batches of at most [`BATCH_BYTES`]), applies
    /// them once durable, and starts a snapshot when one is due.
    async fn append(
        &mut self,
        records: Vec<GroupRecord>,
        taken: Vec<(String, GroupValue, u64)>,
    ) -> std::result::Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let mut next_offset = None;
        for chunk in chunks(records) {
            let bytes = records::encode(&chunk, now_ms()).map_err(|e| e.to_string())?;
            let r = self
                .log
                .append(bytes, Acks::All)
                .await
                .map_err(|e| e.to_string())?;
            next_offset = Some(r.last_offset + 1);
            self.since_snapshot += chunk.len() as u64;
            let mut st = self.state.lock();
            for record in chunk {
                apply_durable(&mut st, record);
            }
        }
        {
            let mut st = self.state.lock();
            for (g, value, version) in taken {
                if let Some(g) = st.groups.get_mut(&g) {
                    g.made_durable(value, version);
                }
            }
        }
        if let Some(offset) = next_offset
            && self.since_snapshot >= self.snapshot_records
            && !self.snapshotting.load(Ordering::SeqCst)
        {
            self.start_snapshot(offset);
        }
        Ok(())
    }

    /// Snapshots the durable state (everything below `offset`) in a task
    /// of its own, then prunes older snapshots and the log below the
    /// previous one.
    fn start_snapshot(&mut self, offset: i64) {
        let snap = self.state.lock().snapshot();
        self.since_snapshot = 0;
        let previous = self.last_snapshot.replace(offset);
        self.snapshotting.store(true, Ordering::SeqCst);
        let (store, id, log, flag) = (
            self.store.clone(),
            self.id.clone(),
            self.log.clone(),
            self.snapshotting.clone(),
        );
        tokio::spawn(async move {
            let result = async {
                let bytes = tokio::task::spawn_blocking(move || serde_json::to_vec(&snap))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let size = bytes.len();
                snapshot::write(&store, &id, offset, bytes.into())
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::debug!(tp = %id.tp, offset, size, "group coordinator snapshot written");
                if let Some(previous) = previous {
                    snapshot::prune(&store, &id, previous)
                        .await
                        .map_err(|e| e.to_string())?;
                    log.delete_records_before(previous)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(tp = %id.tp, offset, error = %e, "group coordinator snapshot failed; the next one retries");
            }
            flag.store(false, Ordering::SeqCst);
        });
    }
}

/// The tombstone of one committed offset.
fn tombstone(group: &str, topic: &str, partition: u32) -> GroupRecord {
    GroupRecord::Offset {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
        value: None,
    }
}

/// The records that delete `g` and its offsets.
fn group_tombstones(g: &Group) -> Vec<GroupRecord> {
    let mut out: Vec<GroupRecord> = g
        .offsets
        .keys()
        .map(|(t, p)| tombstone(&g.id, t, *p))
        .collect();
    out.push(GroupRecord::Group {
        group: g.id.clone(),
        value: None,
    });
    out
}

/// Splits `records` into runs of about [`BATCH_BYTES`].
fn chunks(records: Vec<GroupRecord>) -> Vec<Vec<GroupRecord>> {
    let mut out = vec![];
    let mut current = vec![];
    let mut bytes = 0usize;
    for r in records {
        let size = approximate_size(&r);
        if !current.is_empty() && bytes + size > BATCH_BYTES {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(r);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn approximate_size(r: &GroupRecord) -> usize {
    match r {
        GroupRecord::Offset {
            group,
            topic,
            value,
            ..
        } => 96 + group.len() + topic.len() + value.as_ref().map_or(0, |v| v.metadata.len()),
        GroupRecord::Group { group, value } => {
            64 + group.len()
                + value.as_ref().map_or(0, |v| {
                    v.members.len() * 256
                        + v.members
                            .iter()
                            .flat_map(|m| m.assigned.iter())
                            .map(|(t, ps)| t.len() + ps.len() * 6)
                            .sum::<usize>()
                            * 2
                })
        }
    }
}

/// Applies a record the writer made durable: offsets take effect now;
/// a group record marks what is durable (the live group is ahead of it or
/// equal).
fn apply_durable(st: &mut ShardState, record: GroupRecord) {
    match record {
        GroupRecord::Offset {
            group,
            topic,
            partition,
            value,
        } => st.apply_offset(group, topic, partition, value),
        // Marked durable by the writer with its version; a tombstone's
        // group left the state when the writer took it.
        GroupRecord::Group { .. } => {}
    }
}
