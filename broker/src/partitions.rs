//! The partitions this broker serves: a registry of open
//! [`PartitionLog`]s keyed by topic-partition.
//!
//! - [`PartitionRegistry::get_or_open`] returns the open log or opens
//!   (claims and recovers) it; concurrent opens of one partition are
//!   deduplicated through a `tokio::sync::OnceCell` per partition kept in a
//!   `parking_lot::Mutex<HashMap>`. The mutex is never held across an
//!   await: it only hands out the cell.
//! - A log that failed with `Fenced` is dropped ([`PartitionRegistry::drop_fenced`])
//!   and reopened by the next request.
//! - [`PartitionRegistry::release_all`] hands every partition over cleanly
//!   (seals tails, writes an owner-less manifest) on shutdown.
//!
//! Ownership: today one broker owns every partition, so
//! [`PartitionRegistry::check_owner`] always says "local". The cluster work
//! replaces it with a lookup in the assignment that answers `NOT_OWNER`
//! with the owner; everything that serves a partition already calls it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use strata_storage::engine::Engine;
use strata_storage::keys::{TopicName, TopicPartition};
use strata_storage::log::{LogConfig, PartitionLog};
use tokio::sync::OnceCell;

use crate::error::{BrokerError, Result};

type Slot = Arc<OnceCell<PartitionLog>>;

/// The open partitions of this broker.
#[derive(Debug)]
pub struct PartitionRegistry {
    engine: Engine,
    slots: Mutex<HashMap<TopicPartition, Slot>>,
    closing: AtomicBool,
}

impl PartitionRegistry {
    /// An empty registry over `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            slots: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
        }
    }

    /// Whether this broker serves `tp`. Always true until the cluster
    /// assignment exists; then a partition owned elsewhere answers
    /// `NOT_OWNER` with its owner.
    pub fn check_owner(&self, _tp: &TopicPartition) -> Result<()> {
        Ok(())
    }

    /// The open log of `tp`, opening it with `config` if needed.
    pub async fn get_or_open(
        &self,
        tp: &TopicPartition,
        config: &LogConfig,
    ) -> Result<PartitionLog> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(BrokerError::Unavailable("shutting down"));
        }
        self.check_owner(tp)?;
        let slot = self.slots.lock().entry(tp.clone()).or_default().clone();
        let opened = slot
            .get_or_try_init(|| self.engine.open_partition_with(tp.clone(), config.clone()))
            .await;
        match opened {
            Ok(log) => Ok(log.clone()),
            Err(e) => {
                tracing::warn!(%tp, error = %e, "cannot open partition");
                self.remove_slot(tp, &slot);
                Err(BrokerError::storage(tp, e))
            }
        }
    }

    /// The log of `tp` if it is open (no IO).
    pub fn get_open(&self, tp: &TopicPartition) -> Option<PartitionLog> {
        self.slots.lock().get(tp).and_then(|s| s.get().cloned())
    }

    fn remove_slot(&self, tp: &TopicPartition, slot: &Slot) {
        let mut slots = self.slots.lock();
        if slots.get(tp).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(tp);
        }
    }

    /// Drops `tp` after its log reported `Fenced`: another broker owns it
    /// now; the next request reopens (or, in a cluster, redirects).
    pub fn drop_fenced(&self, tp: &TopicPartition) {
        if self.slots.lock().remove(tp).is_some() {
            tracing::warn!(%tp, "partition fenced by another writer; dropped");
        }
    }

    /// Calls [`Self::drop_fenced`] when `err` means the partition was lost.
    pub fn note_error(&self, tp: &TopicPartition, err: &BrokerError) {
        if err.is_fenced() {
            self.drop_fenced(tp);
        }
    }

    /// Every open log.
    pub fn open_logs(&self) -> Vec<PartitionLog> {
        self.slots
            .lock()
            .values()
            .filter_map(|s| s.get().cloned())
            .collect()
    }

    /// Number of open partitions.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .values()
            .filter(|s| s.initialized())
            .count()
    }

    /// True when no partition is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and releases every open partition of `topic` (before a
    /// delete). Errors are logged: the topic goes away either way.
    pub async fn release_topic(&self, topic: &TopicName) {
        let logs: Vec<PartitionLog> = {
            let mut slots = self.slots.lock();
            let tps: Vec<TopicPartition> = slots
                .keys()
                .filter(|tp| &tp.topic == topic)
                .cloned()
                .collect();
            tps.iter()
                .filter_map(|tp| slots.remove(tp))
                .filter_map(|s| s.get().cloned())
                .collect()
        };
        release(logs).await;
    }

    /// Refuses new opens and releases every open partition: seals tails
    /// and writes owner-less manifests so the next owner needs no replay.
    pub async fn release_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let logs: Vec<PartitionLog> = self
            .slots
            .lock()
            .drain()
            .filter_map(|(_, s)| s.get().cloned())
            .collect();
        release(logs).await;
    }
}

/// Releases at most this many partitions at once (each seals and writes a
/// manifest).
const RELEASE_CONCURRENCY: usize = 32;

async fn release(logs: Vec<PartitionLog>) {
    use futures::StreamExt;
    let mut results = futures::stream::iter(logs)
        .map(|log| async move { (log.topic_partition().clone(), log.release().await) })
        .buffer_unordered(RELEASE_CONCURRENCY);
    while let Some((tp, r)) = results.next().await {
        if let Err(e) = r {
            tracing::warn!(%tp, error = %e, "partition release failed; the next owner recovers it from the WAL");
        }
    }
}
