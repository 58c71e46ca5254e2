//! Reading a partition: from its log on the owner, or from its sealed
//! segments on any other broker (read scaling without replicas, DESIGN §7).

use std::time::Duration;

use bytes::Bytes;
use strata_storage::batch::BatchHeader;
use strata_storage::hot_tier::SegmentCache;
use strata_storage::keys::{TopicId, TopicPartition};
use strata_storage::log::PartitionLog;
use strata_storage::manifest::{self, Manifest};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::service::Shared;

/// What to read.
#[derive(Debug, Clone, Copy)]
pub struct FetchParams {
    /// From this offset.
    pub offset: i64,
    /// About this many bytes (at least one whole batch).
    pub max_bytes: usize,
    /// Wait for at least this many bytes...
    pub min_bytes: usize,
    /// ...but no longer than this.
    pub max_wait: Duration,
}

/// Batches read from a partition.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Stored batches, in order; the first may start before the offset
    /// asked for (as in Kafka: readers skip its leading records).
    pub batches: Vec<Bytes>,
    /// The partition's high watermark (on a broker that only reads sealed
    /// segments: the sealed end, which the owner's is at least).
    pub high_watermark: i64,
    /// Its first offset.
    pub log_start_offset: i64,
    /// The offset after the last batch (the offset asked for if none).
    pub next_offset: i64,
}

impl Fetched {
    /// Bytes in the batches.
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// A partition opened for reading on this broker.
#[derive(Debug)]
pub enum Source {
    /// This broker owns it: the log, and a token cancelled when the log
    /// leaves the registry (fenced, deleted, storage restarted).
    Owned {
        /// The partition.
        tp: TopicPartition,
        /// Its log.
        log: PartitionLog,
        /// Cancelled when `log` is no longer the one in service.
        dropped: CancellationToken,
    },
    /// Another broker owns it and the offset is sealed: its segments, and
    /// the `NOT_OWNER` error (naming the owner) to answer at the tail.
    Sealed {
        /// The partition.
        tp: TopicPartition,
        /// The segment cache of this broker.
        cache: SegmentCache,
        /// The partition's manifest as last published.
        manifest: Box<Manifest>,
        /// Where to go for the unsealed tail.
        not_owner: BrokerError,
    },
}

/// Opens `topic`/`partition` to read from `offset`: the log when this
/// broker owns it; otherwise its sealed segments when `offset` is sealed;
/// otherwise `NOT_OWNER` naming the owner.
pub async fn open(shared: &Shared, topic: &str, partition: u32, offset: i64) -> Result<Source> {
    Ok(open_topic(shared, topic, partition, offset).await?.1)
}

/// [`open`], also returning the id of the topic opened (the live topic
/// named `topic` when it was opened).
pub async fn open_topic(
    shared: &Shared,
    topic: &str,
    partition: u32,
    offset: i64,
) -> Result<(TopicId, Source)> {
    match shared.partition_watched(topic, partition).await {
        Ok((topic, tp, log, dropped)) => Ok((topic.record.id, Source::Owned { tp, log, dropped })),
        Err(not_owner @ BrokerError::NotOwner { .. }) => {
            let (topic, tp) = shared.resolve(topic, partition).await?;
            let id = topic.record.id;
            let engine = shared.engine()?;
            let manifest = manifest::load_head(&shared.meta_store, &topic.partition(tp.partition))
                .await
                .map_err(|e| BrokerError::storage(&tp, e))?
                .map(|(_, m)| m);
            match manifest.filter(|m| offset >= m.log_start_offset && offset < m.sealed_end()) {
                Some(manifest) => Ok((
                    id,
                    Source::Sealed {
                        tp,
                        cache: engine.cache().clone(),
                        manifest: Box::new(manifest),
                        not_owner,
                    },
                )),
                None => Err(not_owner),
            }
        }
        Err(e) => Err(e),
    }
}

/// Reads from `p.offset` of an owned log, waiting up to `p.max_wait` for
/// `p.min_bytes`: answers when there is enough, when a catching-up reader
/// got what one read gives, or at the deadline (possibly empty).
pub async fn read_owned(
    log: &PartitionLog,
    tp: &TopicPartition,
    p: &FetchParams,
) -> Result<Fetched> {
    let deadline = Instant::now() + p.max_wait;
    loop {
        let read = log
            .read(p.offset, p.max_bytes)
            .await
            .map_err(|e| BrokerError::storage(tp, e))?;
        let fetched = Fetched {
            next_offset: next_offset(tp, p.offset, &read.batches)?,
            batches: read.batches,
            high_watermark: read.high_watermark,
            log_start_offset: read.log_start_offset,
        };
        let bytes = fetched.bytes();
        let caught_up = fetched.next_offset >= fetched.high_watermark;
        let now = Instant::now();
        if bytes >= p.min_bytes || (bytes > 0 && !caught_up) || now >= deadline {
            return Ok(fetched);
        }
        // Wait for the durable end to move past what we have (or time out).
        log.wait_for_data(fetched.high_watermark.max(p.offset), deadline - now)
            .await;
    }
}

/// Reads sealed segments from `offset`; `None` once the reader reached the
/// unsealed tail (continue on the owner).
pub async fn read_sealed(
    cache: &SegmentCache,
    manifest: &Manifest,
    tp: &TopicPartition,
    offset: i64,
    max_bytes: usize,
) -> Result<Option<Fetched>> {
    let batches = match manifest::read_sealed(cache, manifest, offset, max_bytes).await {
        Ok(Some(b)) if !b.is_empty() => b,
        Ok(_) => return Ok(None),
        Err(e) => return Err(BrokerError::storage(tp, e)),
    };
    Ok(Some(Fetched {
        next_offset: next_offset(tp, offset, &batches)?,
        batches,
        // What this broker knows: the sealed end (the owner's high
        // watermark is at least this).
        high_watermark: manifest.sealed_end().max(manifest.next_offset),
        log_start_offset: manifest.log_start_offset,
    }))
}

/// The offset after `batches` (or `offset` when there are none).
fn next_offset(tp: &TopicPartition, offset: i64, batches: &[Bytes]) -> Result<i64> {
    match batches.last() {
        Some(last) => {
            let header = BatchHeader::parse(last)
                .map_err(|e| BrokerError::storage(tp, strata_storage::Error::InvalidBatch(e)))?;
            Ok(offset.max(header.next_offset()))
        }
        None => Ok(offset),
    }
}
