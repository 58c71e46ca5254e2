//! The storage engine of one broker incarnation: the store stack, the
//! conditional-write self-test, the WAL writer and the hot tier, built in
//! one place so a broker (or a test) opens partitions with one call.
//!
//! The store stack is `RetryStore(MetricsStore(store))`: retries are
//! counted as the requests they are (that is what the bucket bills), and
//! every request is counted once in [`Engine::store_stats`].

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::hot_tier::{HotTierConfig, SegmentCache};
use crate::keys::{BrokerId, Incarnation, TopicIdPartition, WalSeq, WalStream};
use crate::log::{LogConfig, PartitionLog};
use crate::store::{MetricsStore, RetryConfig, RetryStore, StoreStats};
use crate::wal::{WalConfig, WalWriter};

/// Every storage setting, one section each.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Write-ahead log.
    pub wal: WalConfig,
    /// Default per-partition log settings.
    pub log: LogConfig,
    /// Block cache of sealed segments.
    pub hot_tier: HotTierConfig,
    /// Retries of transient store errors.
    #[serde(skip)]
    pub retry: RetryConfig,
}

/// One broker incarnation's storage.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<dyn ObjectStore>,
    stats: Arc<StoreStats>,
    wal: WalWriter,
    cache: SegmentCache,
    log: LogConfig,
}

impl Engine {
    /// Wraps `store`, proves it enforces create-only writes (refusing it
    /// otherwise: see [`crate::selftest`]), and starts a new incarnation of
    /// broker `broker`. `store_name` names the store in errors (its URL).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        store_name: &str,
        broker: BrokerId,
        config: EngineConfig,
    ) -> Result<Self> {
        config.wal.validate()?;
        config.log.validate()?;
        let metrics = MetricsStore::new(store);
        let stats = metrics.stats();
        let store: Arc<dyn ObjectStore> =
            Arc::new(RetryStore::new(Arc::new(metrics), config.retry.clone()));
        crate::selftest::check_conditional_writes(&store, &Path::from("selftest"), store_name)
            .await?;
        crate::layout::check_or_init(&store, store_name).await?;
        let stream = WalStream {
            broker,
            incarnation: Incarnation::generate(),
        };
        let wal = WalWriter::start(store.clone(), stream, WalSeq(0), config.wal)?;
        let cache = SegmentCache::new(store.clone(), config.hot_tier).await?;
        tracing::info!(store = store_name, %stream, "storage engine started");
        Ok(Self {
            store,
            stats,
            wal,
            cache,
            log: config.log,
        })
    }

    /// Claims and recovers `tp` with the default log settings.
    pub async fn open_partition(&self, tp: TopicIdPartition) -> Result<PartitionLog> {
        self.open_partition_with(tp, self.log.clone()).await
    }

    /// Claims and recovers `tp` with its own settings (topic overrides).
    pub async fn open_partition_with(
        &self,
        tp: TopicIdPartition,
        config: LogConfig,
    ) -> Result<PartitionLog> {
        PartitionLog::open(
            self.store.clone(),
            self.cache.clone(),
            self.wal.clone(),
            tp,
            config,
        )
        .await
    }

    /// [`Self::open_partition_with`], fencing the current owner only if
    /// `may_fence` allows it (see [`PartitionLog::open_guarded`]).
    pub async fn open_partition_guarded(
        &self,
        tp: TopicIdPartition,
        config: LogConfig,
        may_fence: &(dyn Fn(&WalStream) -> bool + Send + Sync),
    ) -> Result<PartitionLog> {
        PartitionLog::open_guarded(
            self.store.clone(),
            self.cache.clone(),
            self.wal.clone(),
            tp,
            config,
            may_fence,
        )
        .await
    }

    /// The wrapped store (retries, metrics).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Request and byte counters of the store.
    pub fn store_stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// The WAL writer (its stream names this incarnation).
    pub fn wal(&self) -> &WalWriter {
        &self.wal
    }

    /// The hot tier.
    pub fn cache(&self) -> &SegmentCache {
        &self.cache
    }

    /// Flushes what is queued in the WAL and closes the hot tier. Release
    /// partitions first for a graceful hand-over.
    pub async fn shutdown(&self) {
        self.wal.close().await;
        self.cache.close().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use crate::log::Acks;

    #[tokio::test]
    async fn open_append_and_count_requests() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let engine = Engine::open(store, "memory://", BrokerId(1), EngineConfig::default())
            .await
            .unwrap();
        let log = engine
            .open_partition(TopicIdPartition::new(
                crate::keys::TopicId::random(),
                crate::keys::TopicPartition::new("t", 0).unwrap(),
            ))
            .await
            .unwrap();
        let mut b = BatchBuilder::new();
        b.push(1, None, Some(b"v"), &[]);
        assert_eq!(
            log.append(b.build(), Acks::All).await.unwrap().base_offset,
            0
        );
        assert!(engine.store_stats().snapshot().put_requests >= 3);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn opens_on_local_files() {
        // (Refusal of stores that ignore create-only is tested in `selftest`.)
        let dir = tempfile::tempdir().unwrap();
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let ok: Arc<dyn ObjectStore> = Arc::new(fs);
        assert!(
            Engine::open(ok, "file://", BrokerId(1), EngineConfig::default())
                .await
                .is_ok()
        );
    }
}
