//! The partitions this broker serves, and the storage engine incarnation
//! that serves them: a registry of open [`PartitionLog`]s keyed by
//! topic-partition, next to the current [`Engine`].
//!
//! - [`PartitionRegistry::get_or_open`] returns the open log or opens
//!   (claims and recovers) it; concurrent opens of one partition are
//!   deduplicated through a `tokio::sync::OnceCell` per partition kept in a
//!   `parking_lot::Mutex`. The mutex is never held across an await: it
//!   only hands out the engine and the cell.
//! - Every slot has a "dropped" [`CancellationToken`]: it is cancelled when
//!   the log leaves the registry (fenced, released, or its engine was
//!   replaced), so fetch streams reading it end and clients resume on the
//!   reopened log ([`PartitionRegistry::get_or_open_watched`]).
//! - A log that failed with `Fenced` is dropped ([`PartitionRegistry::drop_fenced`])
//!   and reopened by the next request.
//! - Opens run in a task of their own, so a caller that goes away (a client
//!   cancels) never cuts a claim off halfway; a log nobody took is released
//!   again. Opens and releases in flight are counted per partition, and a
//!   manifest that names this incarnation (a claim it lost track of) is
//!   adopted only when none is in flight besides the open itself.
//! - The engine can be swapped for a new incarnation
//!   ([`PartitionRegistry::take_engine`], then [`PartitionRegistry::install`];
//!   see [`crate::restart`]). Taking it drops every open partition **without
//!   releasing it** (a failed WAL writer cannot make its tail durable) and
//!   cancels opens still running on it, so a late open of the old
//!   incarnation can never claim a partition after the new one did. Between
//!   the two calls every request fails with a retryable `BROKER_UNAVAILABLE`.
//! - [`PartitionRegistry::release_all`] hands every partition over cleanly
//!   (seals tails, writes an owner-less manifest) on shutdown.
//!
//! Ownership: the registry opens what it is asked to; whether this broker
//! should serve a partition is decided by the cluster assignment
//! ([`crate::cluster::ClusterView::check_owner`], checked by the callers),
//! and whether a claim may fence the previous owner by the `may_fence`
//! guard they pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use strata_storage::engine::Engine;
use strata_storage::keys::{TopicId, TopicIdPartition, TopicName, TopicPartition, WalStream};
use strata_storage::log::{LogConfig, PartitionLog};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};

/// Decides whether a claim may fence the owner a manifest names (see
/// `crate::cluster::ClusterView::may_fence`). Shared with the open's own
/// task, hence `Arc` and `'static`.
pub type MayFence = Arc<dyn Fn(&WalStream) -> bool + Send + Sync>;

/// What [`BrokerError::Unavailable`] says while the engine is replaced.
pub const RESTARTING: &str = "restarting its storage as a new incarnation";

/// One partition's place in the registry.
#[derive(Debug)]
struct SlotCell {
    /// The incarnation of the topic this slot opens: a request for another
    /// (the topic was re-created) replaces the slot.
    topic_id: TopicId,
    log: OnceCell<PartitionLog>,
    /// Set when an open of this slot failed and the slot left the
    /// registry: callers still waiting on the cell must not retry the open
    /// (tokio's `OnceCell` lets the next waiter retry a failed init), or it
    /// would run beside an open of the slot that replaced this one.
    dead: AtomicBool,
    /// Cancelled when this slot leaves the registry.
    dropped: CancellationToken,
}

type Slot = Arc<SlotCell>;

/// The engine in service and the token its slots descend from.
#[derive(Debug)]
struct Current {
    engine: Engine,
    token: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    /// `None` while the engine is being replaced.
    current: Option<Current>,
    /// Bumped every time the engine is taken away.
    generation: u64,
    slots: HashMap<TopicPartition, Slot>,
}

/// The open partitions of this broker and the engine they belong to.
#[derive(Debug)]
pub struct PartitionRegistry {
    inner: Mutex<Inner>,
    closing: AtomicBool,
    busy: Busy,
}

/// Partitions with an open or a release in flight here, counted: a claim of
/// this incarnation found in a manifest may be adopted only when no other
/// log of the partition can still write (see `PartitionLog::open_guarded`).
#[derive(Debug, Clone, Default)]
struct Busy(Arc<Mutex<HashMap<TopicPartition, usize>>>);

impl Busy {
    fn enter(&self, tp: &TopicPartition) -> BusyGuard {
        *self.0.lock().entry(tp.clone()).or_default() += 1;
        BusyGuard {
            busy: self.clone(),
            tp: tp.clone(),
        }
    }

    fn count(&self, tp: &TopicPartition) -> usize {
        self.0.lock().get(tp).copied().unwrap_or(0)
    }
}

/// One open or release in flight; counted out when dropped.
#[derive(Debug)]
struct BusyGuard {
    busy: Busy,
    tp: TopicPartition,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut map = self.busy.0.lock();
        if let Some(n) = map.get_mut(&self.tp) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.tp);
            }
        }
    }
}

impl PartitionRegistry {
    /// An empty registry over `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            inner: Mutex::new(Inner {
                current: Some(Current {
                    engine,
                    token: CancellationToken::new(),
                }),
                generation: 0,
                slots: HashMap::new(),
            }),
            closing: AtomicBool::new(false),
            busy: Busy::default(),
        }
    }

    /// The engine in service, or `None` while it is being replaced.
    pub fn engine(&self) -> Option<Engine> {
        self.inner.lock().current.as_ref().map(|c| c.engine.clone())
    }

    /// How many times the engine was taken away (0 for the first one).
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Takes the engine out of service: every open partition is dropped
    /// (not released), their fetch streams and the opens still running on
    /// the engine are cancelled, and requests get `BROKER_UNAVAILABLE`
    /// until [`Self::install`]. Returns the engine to shut down, `None` if
    /// it was already taken.
    pub fn take_engine(&self) -> Option<Engine> {
        let (current, slots) = {
            let mut inner = self.inner.lock();
            let current = inner.current.take();
            if current.is_some() {
                inner.generation += 1;
            }
            let slots: Vec<Slot> = inner.slots.drain().map(|(_, s)| s).collect();
            (current, slots)
        };
        for s in &slots {
            s.dropped.cancel();
        }
        let current = current?;
        current.token.cancel();
        tracing::info!(
            stream = %current.engine.wal().stream(),
            dropped = slots.iter().filter(|s| s.log.initialized()).count(),
            "storage engine taken out of service; its partitions were dropped"
        );
        Some(current.engine)
    }

    /// Puts `engine` in service; partitions reopen on it lazily. Replaces
    /// (and returns) an engine still in service, which should not happen:
    /// take it first.
    pub fn install(&self, engine: Engine) -> Option<Engine> {
        let previous = {
            let mut inner = self.inner.lock();
            inner.current.replace(Current {
                engine,
                token: CancellationToken::new(),
            })
        };
        previous.map(|p| {
            p.token.cancel();
            p.engine
        })
    }

    /// The open log of `tp`, opening (claiming) it with `config` if needed.
    /// A claim fences the incarnation the manifest names as owner only if
    /// `may_fence` allows it (see `crate::cluster::ClusterView::may_fence`);
    /// otherwise it fails with the retryable `OwnedElsewhere` and changes
    /// nothing. Ownership in the assignment is checked by the caller.
    pub async fn get_or_open(
        &self,
        tp: &TopicIdPartition,
        config: &LogConfig,
        may_fence: &MayFence,
    ) -> Result<PartitionLog> {
        Ok(self.get_or_open_watched(tp, config, may_fence).await?.0)
    }

    /// [`Self::get_or_open`], also returning a token cancelled when the log
    /// leaves the registry: whoever keeps the log (a fetch stream) stops
    /// using it then and lets its client resume on the reopened one.
    ///
    /// The open (a claim: it writes a manifest naming this incarnation)
    /// runs in its own task, so it is never cut off halfway when the caller
    /// goes away (a client cancels, the slot is dropped). Should nobody take
    /// the log it opened, that task releases it again, so the manifest never
    /// names this incarnation with no log behind it.
    pub async fn get_or_open_watched(
        &self,
        id: &TopicIdPartition,
        config: &LogConfig,
        may_fence: &MayFence,
    ) -> Result<(PartitionLog, CancellationToken)> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(BrokerError::Unavailable("shutting down"));
        }
        let tp = &id.tp;
        let (engine, slot, stale) = {
            let mut inner = self.inner.lock();
            let (engine, token) = match &inner.current {
                Some(c) => (c.engine.clone(), c.token.clone()),
                None => return Err(BrokerError::Unavailable(RESTARTING)),
            };
            // A slot of another incarnation of the topic (deleted and
            // re-created since it opened) is dropped without a write.
            let stale = if inner
                .slots
                .get(tp)
                .is_some_and(|s| s.topic_id != id.topic_id)
            {
                inner.slots.remove(tp)
            } else {
                None
            };
            let slot = inner
                .slots
                .entry(tp.clone())
                .or_insert_with(|| {
                    Arc::new(SlotCell {
                        topic_id: id.topic_id,
                        log: OnceCell::new(),
                        dead: AtomicBool::new(false),
                        dropped: token.child_token(),
                    })
                })
                .clone();
            (engine, slot, stale)
        };
        if let Some(stale) = stale {
            self.abandon(vec![stale], "its topic was re-created").await;
        }
        // Cancelled when the engine is taken away: an open of the old
        // incarnation must not go on claiming the partition.
        let opened = tokio::select! {
            biased;
            () = slot.dropped.cancelled() => None,
            r = slot.log.get_or_try_init(|| async {
                if slot.dead.load(Ordering::SeqCst) {
                    return Err(strata_storage::Error::Unavailable(format!(
                        "{tp}: a concurrent open failed; retry"
                    )));
                }
                let r = self.open_detached(&engine, id, config, may_fence, &slot.dropped).await;
                if r.is_err() {
                    // Before the next waiter may retry the init.
                    slot.dead.store(true, Ordering::SeqCst);
                }
                r
            }) => Some(r),
        };
        match opened {
            None => Err(BrokerError::Unavailable(RESTARTING)),
            Some(Ok(log)) => Ok((log.clone(), slot.dropped.clone())),
            Some(Err(e)) => {
                if matches!(e, strata_storage::Error::OwnedElsewhere { .. }) {
                    tracing::debug!(%tp, error = %e, "partition still owned elsewhere");
                } else {
                    tracing::warn!(%tp, error = %e, "cannot open partition");
                }
                self.remove_slot(tp, &slot);
                Err(BrokerError::storage(tp, e))
            }
        }
    }

    /// Opens `tp` in a task of its own and waits for it. If this waiter is gone
    /// by the time the open succeeds, the task releases the log it opened (an
    /// owner-less manifest), since nobody will serve or release it.
    async fn open_detached(
        &self,
        engine: &Engine,
        id: &TopicIdPartition,
        config: &LogConfig,
        may_fence: &MayFence,
        dropped: &CancellationToken,
    ) -> strata_storage::Result<PartitionLog> {
        let tp = &id.tp;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (engine, config, dropped) = (engine.clone(), config.clone(), dropped.clone());
        // Counted busy until the log is handed over or released again.
        let busy = self.busy.enter(tp);
        // This incarnation's own claim is adopted only if no other open or
        // release of the partition is in flight here (this one counts 1).
        let me = engine.wal().stream();
        let may_fence: MayFence = {
            let (busy, tp, may_fence) = (self.busy.clone(), tp.clone(), may_fence.clone());
            Arc::new(move |o: &WalStream| {
                if *o == me {
                    busy.count(&tp) <= 1
                } else {
                    may_fence(o)
                }
            })
        };
        let task_id = id.clone();
        tokio::spawn(async move {
            let _busy = busy;
            let tp = task_id.tp.clone();
            if dropped.is_cancelled() {
                // Released or its engine replaced before the task ran: nothing
                // to claim any more.
                return;
            }
            let r = engine
                .open_partition_guarded(task_id, config, &*may_fence)
                .await;
            if let Err(Ok(log)) = tx.send(r) {
                tracing::info!(%tp, "the open finished after its caller left; releasing the partition again");
                if let Err(e) = log.release().await {
                    tracing::warn!(%tp, error = %e, "cannot release a partition nobody took");
                }
            }
        });
        rx.await.unwrap_or_else(|_| {
            Err(strata_storage::Error::Unavailable(format!(
                "{tp}: the open was dropped before it claimed anything; retry"
            )))
        })
    }

    /// Removes `tp` and releases its log (a graceful move away): appends
    /// are refused from now on, the tail is sealed and an owner-less
    /// manifest written, so the next owner claims it without fencing.
    pub async fn release_one(&self, tp: &TopicPartition) {
        let slot = self.inner.lock().slots.remove(tp);
        if let Some(slot) = slot {
            release(&self.busy, vec![slot]).await;
        }
    }

    /// The log of `tp` if it is open (no IO).
    pub fn get_open(&self, tp: &TopicPartition) -> Option<PartitionLog> {
        self.inner
            .lock()
            .slots
            .get(tp)
            .and_then(|s| s.log.get().cloned())
    }

    fn remove_slot(&self, tp: &TopicPartition, slot: &Slot) {
        let mut inner = self.inner.lock();
        if !slot.log.initialized() && inner.slots.get(tp).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            inner.slots.remove(tp);
        }
    }

    /// Drops `tp` after its log reported `Fenced`: another broker owns it
    /// now; the next request reopens (or, in a cluster, redirects).
    pub fn drop_fenced(&self, tp: &TopicPartition) {
        let removed = self.inner.lock().slots.remove(tp);
        if let Some(slot) = removed {
            slot.dropped.cancel();
            tracing::warn!(%tp, "partition fenced by another writer; dropped");
        }
    }

    /// Calls [`Self::drop_fenced`] when `err` means the partition was lost.
    pub fn note_error(&self, tp: &TopicPartition, err: &BrokerError) {
        if err.is_fenced() {
            self.drop_fenced(tp);
        }
    }

    /// The topics with a partition open here.
    pub fn open_topics(&self) -> Vec<TopicName> {
        let mut topics: Vec<TopicName> = self
            .inner
            .lock()
            .slots
            .keys()
            .map(|tp| tp.topic.clone())
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Every open log.
    pub fn open_logs(&self) -> Vec<PartitionLog> {
        self.inner
            .lock()
            .slots
            .values()
            .filter_map(|s| s.log.get().cloned())
            .collect()
    }

    /// Number of open partitions.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .slots
            .values()
            .filter(|s| s.log.initialized())
            .count()
    }

    /// True when no partition is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and releases every open partition of `topic` (before a
    /// delete). Errors are logged: the topic goes away either way.
    pub async fn release_topic(&self, topic: &TopicName) {
        release(&self.busy, self.take_topic(topic)).await;
    }

    /// Removes every slot of `topic`.
    fn take_topic(&self, topic: &TopicName) -> Vec<Slot> {
        let mut inner = self.inner.lock();
        let tps: Vec<TopicPartition> = inner
            .slots
            .keys()
            .filter(|tp| &tp.topic == topic)
            .cloned()
            .collect();
        tps.iter().filter_map(|tp| inner.slots.remove(tp)).collect()
    }

    /// Removes every open partition of `topic` and abandons its log
    /// without writing to the bucket (`PartitionLog::abandon`): the topic
    /// was deleted or re-created elsewhere, and its old keys are being
    /// purged. Returns how many were open.
    pub async fn abandon_topic(&self, topic: &TopicName, reason: &str) -> usize {
        self.abandon(self.take_topic(topic), reason).await
    }

    /// Abandons the logs of `slots`, removed from the registry already.
    async fn abandon(&self, slots: Vec<Slot>, reason: &str) -> usize {
        let logs: Vec<PartitionLog> = slots
            .iter()
            .filter_map(|s| {
                s.dropped.cancel();
                s.log.get().cloned()
            })
            .collect();
        futures::future::join_all(logs.iter().map(|log| async move {
            let _busy = self.busy.enter(log.topic_partition());
            log.abandon(reason).await;
        }))
        .await;
        logs.len()
    }

    /// Refuses new opens and releases every open partition: seals tails
    /// and writes owner-less manifests so the next owner needs no replay.
    pub async fn release_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let slots: Vec<Slot> = self.inner.lock().slots.drain().map(|(_, s)| s).collect();
        release(&self.busy, slots).await;
    }
}

/// Releases at most this many partitions at once (each seals and writes a
/// manifest).
const RELEASE_CONCURRENCY: usize = 32;

/// Ends the users of `slots` and releases their logs.
async fn release(busy: &Busy, slots: Vec<Slot>) {
    use futures::StreamExt;
    let logs: Vec<(PartitionLog, BusyGuard)> = slots
        .iter()
        .filter_map(|s| {
            s.dropped.cancel();
            s.log.get().cloned()
        })
        .map(|log| {
            let guard = busy.enter(log.topic_partition());
            (log, guard)
        })
        .collect();
    let mut results = futures::stream::iter(logs)
        .map(|(log, busy)| async move {
            let r = log.release().await;
            drop(busy);
            (log.topic_partition().clone(), r)
        })
        .buffer_unordered(RELEASE_CONCURRENCY);
    while let Some((tp, r)) = results.next().await {
        if let Err(e) = r {
            tracing::warn!(%tp, error = %e, "partition release failed; the next owner recovers it from the WAL");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use object_store::ObjectStore;
    use object_store::memory::InMemory;
    use strata_storage::chain::Chain;
    use strata_storage::engine::EngineConfig;
    use strata_storage::keys::{self, BrokerId};
    use strata_storage::manifest::Manifest;
    use strata_storage::store::{FaultConfig, FaultRule, FaultStore, FaultTiming, Op, OpSet};

    use super::*;

    /// A caller that goes away after the claim manifest landed (a client
    /// cancels) must not leave the manifest naming this incarnation with no
    /// log behind it: the open finishes in its own task and, with nobody
    /// to take the log, releases it; the next open succeeds.
    #[tokio::test]
    async fn an_open_whose_caller_left_halfway_is_released_not_orphaned() {
        let tp =
            TopicIdPartition::new(TopicId::random(), TopicPartition::new("orphan", 0).unwrap());
        let manifests = keys::manifest_chain(&tp).path().to_string();
        let fault = Arc::new(FaultStore::new(
            Arc::new(InMemory::new()),
            FaultConfig {
                seed: 1,
                // Slow reads of the manifest chain: the claim's create,
                // whose response is lost, is confirmed by a read that the
                // caller does not wait for.
                rules: vec![
                    FaultRule::latency(
                        OpSet::from(Op::Get),
                        Duration::from_millis(300),
                        Duration::from_millis(300),
                    )
                    .with_key_prefix(manifests),
                ],
            },
        ));
        let store: Arc<dyn ObjectStore> = fault.clone();
        let engine = Engine::open(
            store.clone(),
            "memory",
            BrokerId(1),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        let registry = Arc::new(PartitionRegistry::new(engine));
        let always: MayFence = Arc::new(|_| true);

        fault.fail_next(Op::Put, FaultTiming::After);
        let caller = {
            let (registry, tp, always) = (registry.clone(), tp.clone(), always.clone());
            tokio::spawn(async move {
                registry
                    .get_or_open(&tp, &LogConfig::default(), &always)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());

        // The next open gets the partition, at a higher epoch than the
        // claim nobody took, and without waiting for a timeout.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let log = loop {
            match registry
                .get_or_open(&tp, &LogConfig::default(), &always)
                .await
            {
                Ok(log) => break log,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the partition stays unavailable: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let chain: Chain<Manifest> = Chain::new(store, keys::manifest_chain(&tp));
        let versions = chain.versions(None).await.unwrap();
        assert!(
            versions.len() >= 3,
            "claim, release by the open's task, claim: {versions:?}"
        );
        assert_eq!(log.status().leader_epoch, 2);
    }

    /// A claim of this incarnation that no log holds (lost by a race the
    /// registry cannot see) is adopted by the next open, not left to block
    /// the partition until the broker restarts.
    #[tokio::test]
    async fn a_lost_claim_of_this_incarnation_is_adopted() {
        let tp = TopicIdPartition::new(TopicId::random(), TopicPartition::new("lost", 0).unwrap());
        let engine = Engine::open(
            Arc::new(InMemory::new()),
            "memory",
            BrokerId(1),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        let lost = engine.open_partition(tp.clone()).await.unwrap();
        let epoch = lost.status().leader_epoch;
        drop(lost);
        let registry = PartitionRegistry::new(engine);
        // Fencing other brokers is refused: only our own claim is taken.
        let never: MayFence = Arc::new(|_: &WalStream| false);
        let log = registry
            .get_or_open(&tp, &LogConfig::default(), &never)
            .await
            .unwrap();
        assert_eq!(log.status().leader_epoch, epoch + 1);
    }
}
