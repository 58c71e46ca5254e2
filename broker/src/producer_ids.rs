//! Producer-id allocation for idempotent producers (Kafka's
//! InitProducerId).
//!
//! Ids are handed out from blocks reserved in the bucket: the chain
//! `cluster/producer-ids/{version:020}.json` (`keys::producer_id_chain`)
//! holds one [`IdBlock`] per version, and version *v* reserves ids
//! `[v * BLOCK_SIZE, (v + 1) * BLOCK_SIZE)`. A broker reserves a block by
//! creating the next version (create-only), so two brokers, or two runs of
//! one broker, never hand out the same id. Ids left in a block when the
//! broker stops are simply skipped. Every id starts at epoch 0.
//!
//! Invariant: an id is handed out only from a block whose version this
//! broker created itself.
//!
//! Produces are only accepted from ids some broker handed out
//! ([`ProducerIds::check`]): id `i` was handed out only if block version
//! `i / BLOCK_SIZE` was reserved, which a broker learns from its own
//! reservations or, for an id it does not know, from the chain's head (read
//! at most once a second; requests with unknown ids wait for that read). Epochs start at 0 and are never bumped yet, so
//! a batch with a higher epoch is forged: it could otherwise fence the real
//! producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use strata_storage::chain::Chain;
use strata_storage::keys::{self, BrokerId, Version};

use crate::error::{BrokerError, Result};

/// Ids per block.
pub const BLOCK_SIZE: i64 = 1000;

/// Attempts to reserve a block when other brokers keep winning the race.
const MAX_ATTEMPTS: usize = 16;

/// Least time between two reads of the chain head for an unknown id.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// An id this many blocks past the newest known one is refused without a
/// read (once this broker has read the chain): no cluster reserves blocks
/// that fast.
const MAX_BLOCKS_AHEAD: u64 = 1000;

/// One reserved block, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdBlock {
    /// First id of the block.
    pub first: i64,
    /// Ids in the block.
    pub size: i64,
    /// The broker that reserved it.
    pub broker_id: u32,
    /// A random token, so two reservations never have the same bytes.
    pub token: u64,
}

#[derive(Debug, Default)]
struct Current {
    next: i64,
    end: i64,
}

/// Hands out producer ids from blocks reserved in the bucket.
#[derive(Debug)]
pub struct ProducerIds {
    chain: Chain<IdBlock>,
    broker: BrokerId,
    /// Held across the reservation await on purpose: an async mutex, so
    /// concurrent requests queue for the one reservation instead of
    /// reserving a block each.
    current: tokio::sync::Mutex<Current>,
    /// The highest block version known to be reserved.
    known: AtomicU64,
    /// When the chain head was last read for an unknown id. An async
    /// mutex, held across that read on purpose: requests with ids of a
    /// block reserved elsewhere wait for the one read instead of failing
    /// while it runs.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl ProducerIds {
    /// An allocator over `store`.
    pub fn new(store: Arc<dyn ObjectStore>, broker: BrokerId) -> Self {
        Self {
            chain: Chain::new(store, keys::producer_id_chain()),
            broker,
            current: tokio::sync::Mutex::new(Current::default()),
            known: AtomicU64::new(0),
            refreshed: tokio::sync::Mutex::new(None),
        }
    }

    /// Fails when a batch's producer id and epoch were never handed out
    /// (see the module docs). Ids below 0 are not idempotent producers.
    pub async fn check(&self, id: i64, epoch: i16) -> Result<()> {
        if id < 0 {
            return Ok(());
        }
        let unknown = || {
            BrokerError::InvalidRequest(format!(
                "producer id {id} was never handed out by this cluster; ask a broker for one \
                 (Strata.InitProducer) instead of making one up"
            ))
        };
        let block = u64::try_from(id / BLOCK_SIZE).unwrap_or(0);
        if block == 0 {
            return Err(unknown());
        }
        if block > self.known.load(Ordering::Relaxed) {
            let arrived = Instant::now();
            let known = self.known.load(Ordering::Relaxed);
            if known > 0 && block > known.saturating_add(MAX_BLOCKS_AHEAD) {
                return Err(unknown());
            }
            let mut last = self.refreshed.lock().await;
            // A read that started after this request arrived saw every
            // block reserved before the id was handed out: if the block is
            // still unknown, the id is made up, and needs no read of its own.
            let read_since = last.is_some_and(|t| t >= arrived);
            if block > self.known.load(Ordering::Relaxed) && !read_since {
                // At most one read a second: a block reserved elsewhere
                // since the last read is found after a short wait; a flood
                // of made-up ids queues here instead of costing a LIST each.
                if let Some(t) = *last {
                    tokio::time::sleep(REFRESH_EVERY.saturating_sub(t.elapsed())).await;
                }
                *last = Some(Instant::now());
                let head = self
                    .chain
                    .versions(None)
                    .await
                    .map_err(|e| BrokerError::storage("reading producer id blocks", e))?;
                if let Some(v) = head.last() {
                    self.known.fetch_max(v.0, Ordering::Relaxed);
                }
            }
            if block > self.known.load(Ordering::Relaxed) {
                return Err(unknown());
            }
        }
        if epoch != 0 {
            return Err(BrokerError::InvalidRequest(format!(
                "producer {id} was handed out at epoch 0 and no broker raised it; a batch at \
                 epoch {epoch} is refused (it would fence the real producer)"
            )));
        }
        Ok(())
    }

    /// The next unused producer id and its epoch (always 0).
    pub async fn allocate(&self) -> Result<(i64, i16)> {
        let mut cur = self.current.lock().await;
        if cur.next >= cur.end {
            let block = self.reserve().await?;
            cur.next = block.first;
            cur.end = block.first + block.size;
        }
        let id = cur.next;
        cur.next += 1;
        Ok((id, 0))
    }

    async fn reserve(&self) -> Result<IdBlock> {
        let mut last_err = None;
        for _ in 0..MAX_ATTEMPTS {
            let head = self
                .chain
                .head(None)
                .await
                .map_err(|e| BrokerError::storage("reading producer id blocks", e))?;
            // Version 0 is never written, so id 0 is never handed out.
            let version = head.map_or(Version(1), |(v, _)| v.next());
            let first = i64::try_from(version.0)
                .ok()
                .and_then(|v| v.checked_mul(BLOCK_SIZE))
                .ok_or_else(|| {
                    BrokerError::InvalidRequest("producer ids are exhausted".to_string())
                })?;
            let block = IdBlock {
                first,
                size: BLOCK_SIZE,
                broker_id: self.broker.0,
                token: rand::random(),
            };
            match self.chain.create(version, &block).await {
                Ok(()) => {
                    self.known.fetch_max(version.0, Ordering::Relaxed);
                    tracing::info!(first, size = BLOCK_SIZE, "reserved a block of producer ids");
                    if let Err(e) = self.chain.gc(version, 4).await {
                        tracing::debug!(error = %e, "producer id chain gc failed");
                    }
                    return Ok(block);
                }
                Err(e) if e.is_fenced() => last_err = Some(e),
                Err(e) => return Err(BrokerError::storage("reserving producer ids", e)),
            }
        }
        Err(BrokerError::storage(
            "reserving producer ids (other brokers kept winning)",
            last_err.unwrap_or_else(|| {
                strata_storage::Error::Unavailable("no attempt was made".to_string())
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn ids_are_unique_across_allocators() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = ProducerIds::new(store.clone(), BrokerId(0));
        let b = ProducerIds::new(store.clone(), BrokerId(1));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1500 {
            assert!(seen.insert(a.allocate().await.expect("a").0));
        }
        for _ in 0..10 {
            assert!(seen.insert(b.allocate().await.expect("b").0));
        }
        // A restart (a new allocator) continues after every reserved block.
        let a2 = ProducerIds::new(store, BrokerId(0));
        let (id, epoch) = a2.allocate().await.expect("a2");
        assert!(seen.insert(id) && epoch == 0);
        assert!(!seen.contains(&0));
    }

    #[tokio::test]
    async fn only_handed_out_ids_at_epoch_0_are_accepted() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = ProducerIds::new(store.clone(), BrokerId(0));
        let b = ProducerIds::new(store, BrokerId(1));
        let (mine, _) = a.allocate().await.expect("a");
        a.check(mine, 0).await.expect("its own id");
        a.check(-1, -1).await.expect("not an idempotent producer");
        // Another broker learns the block from the bucket.
        b.check(mine, 0)
            .await
            .expect("an id another broker handed out");
        for forged in [0, 7, 999, 5 * BLOCK_SIZE] {
            let err = b.check(forged, 0).await.expect_err("forged");
            assert!(
                err.to_string().contains("never handed out"),
                "{forged}: {err}"
            );
        }
        let err = a.check(mine, 3).await.expect_err("forged epoch");
        assert!(err.to_string().contains("epoch 3"), "{err}");
    }

    /// Concurrent produces with an id from a block another broker reserved
    /// right after this one last read the chain all succeed: they wait for
    /// the next read instead of failing while one runs.
    #[tokio::test]
    async fn ids_of_a_block_reserved_elsewhere_just_now_are_accepted() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let b = Arc::new(ProducerIds::new(store.clone(), BrokerId(1)));
        // b reads the chain (a made-up id), then another broker reserves.
        assert!(b.check(50 * BLOCK_SIZE, 0).await.is_err());
        let c = ProducerIds::new(store, BrokerId(2));
        let (fresh, _) = c.allocate().await.expect("c");
        let checks: Vec<_> = (0..20)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.check(fresh, 0).await })
            })
            .collect();
        for check in checks {
            check
                .await
                .expect("task")
                .expect("a handed-out id is accepted");
        }
    }
}
