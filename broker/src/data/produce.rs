//! Appending a record batch (Kafka's RecordBatch v2, as the client sent it).

use std::time::Instant;

use bytes::Bytes;
use strata_storage::batch::BatchHeader;
use strata_storage::keys::{TopicId, TopicPartition};
use strata_storage::log::{Acks, AppendResult, Appending};

use crate::error::{BrokerError, Result};
use crate::metrics::BrokerMetrics;
use crate::service::Shared;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// A retry of a batch already in the log (same producer id, epoch and
    /// sequence): the original offsets, nothing written.
    pub duplicate: bool,
    /// The partition's first offset after the append.
    pub log_start_offset: i64,
}

/// Appends `batch` to `topic`/`partition`, which this broker must own:
/// checks the producer id (when the batch has one), the topic's batch size
/// limit, then appends with `acks` and counts it.
pub async fn append(
    shared: &Shared,
    topic: &str,
    partition: u32,
    batch: Bytes,
    acks: Acks,
) -> Result<Appended> {
    stage(shared, topic, None, partition, batch, acks)
        .await?
        .finish(shared)
        .await
}

/// A batch that has its offsets and is on its way to durability: see
/// [`stage`].
#[derive(Debug)]
pub struct Staged {
    tp: TopicPartition,
    appending: Appending,
    /// When the request reached [`stage`] (for the ack latency metric).
    arrived: Instant,
}

impl Staged {
    /// Where the batch landed, before it is durable.
    pub fn result(&self) -> AppendResult {
        self.appending.result()
    }

    /// Waits until the batch is durable (with `Acks::All`).
    pub async fn finish(self, shared: &Shared) -> Result<Appended> {
        let log = self.appending.log().clone();
        let result = self.appending.durable().await.map_err(|e| {
            let err = BrokerError::storage(&self.tp, e);
            shared.partitions.note_error(&self.tp, &err);
            err
        })?;
        shared.metrics.produce_ack.observe(self.arrived.elapsed());
        Ok(Appended {
            base_offset: result.base_offset,
            last_offset: result.last_offset,
            duplicate: result.duplicate,
            log_start_offset: log.status().log_start_offset,
        })
    }
}

/// The first half of [`append`]: when this returns, the batch has its
/// offsets and is queued for the WAL (and counted); [`Staged::finish`]
/// waits for durability. Batches of a partition staged one after another
/// keep that order while their durability waits overlap, which is how a
/// front end serves pipelined requests of one producer. With `topic_id`,
/// the batch goes only to the topic of that id (a request by id): a topic
/// created again under the name is [`BrokerError::UnknownTopic`].
pub async fn stage(
    shared: &Shared,
    topic: &str,
    topic_id: Option<TopicId>,
    partition: u32,
    batch: Bytes,
    acks: Acks,
) -> Result<Staged> {
    let arrived = Instant::now();
    shared.check_running()?;
    if let Ok(h) = BatchHeader::parse(&batch) {
        shared
            .producer_ids
            .check(h.producer_id, h.producer_epoch)
            .await?;
    }
    let (topic, tp, log) = shared.partition_of_topic(topic, partition).await?;
    if let Some(id) = topic_id
        && topic.record.id != id
    {
        return Err(super::metadata::unknown_topic_id(id));
    }
    let limit = topic.log_config.max_batch_bytes;
    if batch.len() > limit {
        return Err(BrokerError::TooLarge(format!(
            "{tp}: batch exceeds the limit of {limit} bytes; split it into smaller batches: {} bytes",
            batch.len()
        )));
    }
    let size = batch.len() as u64;
    let appending = log.append_staged(batch, acks).await.map_err(|e| {
        let err = BrokerError::storage(&tp, e);
        shared.partitions.note_error(&tp, &err);
        err
    })?;
    let result = appending.result();
    if !result.duplicate {
        shared.cluster.count_bytes_in(&tp, size);
        let m = &shared.metrics;
        let records = (result.last_offset - result.base_offset + 1).max(0) as u64;
        BrokerMetrics::add(&m.produce_records, records);
        BrokerMetrics::add(&m.produce_bytes, size);
    }
    Ok(Staged {
        tp,
        appending,
        arrived,
    })
}
