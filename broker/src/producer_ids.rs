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

use std::sync::Arc;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use strata_storage::chain::Chain;
use strata_storage::keys::{self, BrokerId, Version};

use crate::error::{BrokerError, Result};

/// Ids per block.
pub const BLOCK_SIZE: i64 = 1000;

/// Attempts to reserve a block when other brokers keep winning the race.
const MAX_ATTEMPTS: usize = 16;

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
}

impl ProducerIds {
    /// An allocator over `store`.
    pub fn new(store: Arc<dyn ObjectStore>, broker: BrokerId) -> Self {
        Self {
            chain: Chain::new(store, keys::producer_id_chain()),
            broker,
            current: tokio::sync::Mutex::new(Current::default()),
        }
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
}
