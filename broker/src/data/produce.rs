//! Appending a record batch (Kafka's RecordBatch v2, as the client sent it).

use bytes::Bytes;
use strata_storage::batch::BatchHeader;
use strata_storage::log::Acks;

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
    shared.check_running()?;
    if let Ok(h) = BatchHeader::parse(&batch) {
        shared
            .producer_ids
            .check(h.producer_id, h.producer_epoch)
            .await?;
    }
    let (topic, tp, log) = shared.partition_of_topic(topic, partition).await?;
    let limit = topic.log_config.max_batch_bytes;
    if batch.len() > limit {
        return Err(BrokerError::TooLarge(format!(
            "{tp}: batch exceeds the limit of {limit} bytes; split it into smaller batches: {} bytes",
            batch.len()
        )));
    }
    let size = batch.len() as u64;
    let result = log.append(batch, acks).await.map_err(|e| {
        let err = BrokerError::storage(&tp, e);
        shared.partitions.note_error(&tp, &err);
        err
    })?;
    if !result.duplicate {
        shared.cluster.count_bytes_in(&tp, size);
        let m = &shared.metrics;
        let records = (result.last_offset - result.base_offset + 1).max(0) as u64;
        BrokerMetrics::add(&m.produce_records, records);
        BrokerMetrics::add(&m.produce_bytes, size);
    }
    Ok(Appended {
        base_offset: result.base_offset,
        last_offset: result.last_offset,
        duplicate: result.duplicate,
        log_start_offset: log.status().log_start_offset,
    })
}
