//! The per-partition queue of records waiting to be batched, and the batch
//! encoder. Pure logic, no IO: the sender task ([`super::sender`]) feeds
//! the queue, asks it when a batch is due, and drains batches from it.
//!
//! A batch is due when the queue holds at least `batch_bytes`, when its
//! oldest record has waited `linger`, or when the producer is flushing or
//! closing. A batch takes records in arrival order up to `batch_bytes`
//! (always at least one record, however big).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_batch::BatchBuilder;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::{Compression, ProducerRecord, RecordMetadata};
use crate::error::Result;

/// Bytes a record costs beyond its key, value and headers (for memory
/// accounting and batch sizing; about what the v2 record framing takes).
pub(crate) const RECORD_OVERHEAD: usize = 24;

/// The memory a record is charged for while it is buffered.
pub(crate) fn record_size(r: &ProducerRecord) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 4)
        .sum();
    RECORD_OVERHEAD
        + r.key.as_ref().map_or(0, Bytes::len)
        + r.value.as_ref().map_or(0, Bytes::len)
        + headers
}

/// A record accepted by `send` and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: ProducerRecord,
    /// The record's timestamp (given, or the time it was sent).
    pub(crate) timestamp_ms: i64,
    /// What [`record_size`] charged.
    pub(crate) size: usize,
    /// Its share of the producer's buffer, released when it completes.
    pub(crate) _permit: Option<OwnedSemaphorePermit>,
    /// Where its outcome goes.
    pub(crate) tx: oneshot::Sender<Result<RecordMetadata>>,
    /// When `send` accepted it (for linger and the delivery timeout).
    pub(crate) enqueued: Instant,
}

/// Records of one partition waiting to be batched.
#[derive(Debug, Default)]
pub(crate) struct PartitionQueue {
    records: VecDeque<Pending>,
    bytes: usize,
}

impl PartitionQueue {
    pub(crate) fn push(&mut self, r: Pending) {
        self.bytes += r.size;
        self.records.push_back(r);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes queued.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the oldest record's linger runs out.
    pub(crate) fn linger_deadline(&self, linger: Duration) -> Option<Instant> {
        self.records.front().map(|r| r.enqueued + linger)
    }

    /// True when a batch should be sent now.
    pub(crate) fn ready(
        &self,
        now: Instant,
        linger: Duration,
        batch_bytes: usize,
        flushing: bool,
    ) -> bool {
        match self.linger_deadline(linger) {
            None => false,
            Some(deadline) => flushing || self.bytes >= batch_bytes || now >= deadline,
        }
    }

    /// Takes the next batch: records in order up to `batch_bytes`, at least
    /// one.
    pub(crate) fn drain_batch(&mut self, batch_bytes: usize) -> Vec<Pending> {
        let mut out = Vec::new();
        let mut taken = 0usize;
        while let Some(front) = self.records.front() {
            if !out.is_empty() && taken + front.size > batch_bytes {
                break;
            }
            let Some(r) = self.records.pop_front() else {
                break;
            };
            taken += r.size;
            out.push(r);
        }
        self.bytes -= taken;
        out
    }
}

/// Producer id, epoch and first sequence of an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sequence {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) base_sequence: i32,
}

/// Encodes `records` into one RecordBatch v2, compressed with `compression`.
/// CPU-bound: run it off the runtime for big batches.
pub(crate) fn encode_batch<'a>(
    records: impl IntoIterator<Item = (i64, &'a ProducerRecord)>,
    seq: Option<Sequence>,
    compression: Compression,
) -> Result<Bytes> {
    let mut b = match seq {
        Some(s) => BatchBuilder::new().producer(s.producer_id, s.epoch, s.base_sequence),
        None => BatchBuilder::new(),
    };
    for (ts, r) in records {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        b.push(ts, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    Ok(b.build_compressed(compression.codec())?)
}

/// The sequence after a batch of `count` records starting at `seq`, wrapping
/// from `i32::MAX` to 0 as Kafka does.
pub(crate) fn next_sequence(seq: i32, count: usize) -> i32 {
    let span = i64::from(i32::MAX) + 1;
    let count = i64::try_from(count).unwrap_or(0);
    // rem_euclid keeps it in [0, i32::MAX].
    (i64::from(seq) + count).rem_euclid(span) as i32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_batch::{Batch, BatchLimits, decode_records_any};

    fn pending(value: &str, at: Instant) -> Pending {
        let record = ProducerRecord::new("t", value.to_owned()).key("k");
        let (tx, _rx) = oneshot::channel();
        Pending {
            size: record_size(&record),
            record,
            timestamp_ms: 5,
            _permit: None,
            tx,
            enqueued: at,
        }
    }

    #[test]
    fn linger_and_size_trigger_batches() {
        let t0 = Instant::now();
        let linger = Duration::from_millis(5);
        let mut q = PartitionQueue::default();
        assert!(!q.ready(t0, linger, 100, true), "empty is never ready");
        q.push(pending("a", t0));
        assert!(!q.ready(t0, linger, 1000, false));
        assert!(q.ready(t0 + linger, linger, 1000, false), "linger expired");
        assert!(q.ready(t0, linger, 1000, true), "flushing");
        assert!(q.ready(t0, linger, q.bytes(), false), "full");
        assert_eq!(q.linger_deadline(linger), Some(t0 + linger));
    }

    #[test]
    fn drain_respects_batch_bytes_and_order() {
        let t0 = Instant::now();
        let mut q = PartitionQueue::default();
        for i in 0..10 {
            q.push(pending(&format!("{i:0>10}"), t0));
        }
        let one = record_size(&ProducerRecord::new("t", "0000000000").key("k"));
        let b = q.drain_batch(one * 3 + 1);
        assert_eq!(b.len(), 3);
        assert_eq!(q.bytes(), one * 7);
        let values: Vec<_> = b.iter().map(|p| p.record.value.clone().unwrap()).collect();
        assert_eq!(values, ["0000000000", "0000000001", "0000000002"]);
        // A limit below one record still takes one.
        assert_eq!(q.drain_batch(1).len(), 1);
        assert_eq!(q.drain_batch(usize::MAX).len(), 6);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn encoded_batches_carry_sequences_and_decode() {
        let records: Vec<(i64, ProducerRecord)> = (0..5)
            .map(|i| {
                (
                    100 + i,
                    ProducerRecord::new("t", format!("v{i}"))
                        .key(format!("k{i}"))
                        .header("h", "x"),
                )
            })
            .collect();
        for c in [
            Compression::None,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Gzip,
            Compression::Snappy,
        ] {
            let seq = Sequence {
                producer_id: 9,
                epoch: 2,
                base_sequence: 40,
            };
            let bytes = encode_batch(records.iter().map(|(t, r)| (*t, r)), Some(seq), c).unwrap();
            let batch = Batch::validate(bytes, &BatchLimits::default()).unwrap();
            let h = batch.header();
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (9, 2, 40)
            );
            assert_eq!(h.last_sequence(), 44);
            let decoded = decode_records_any(&batch).unwrap();
            assert_eq!(decoded.len(), 5);
            assert_eq!(decoded[3].value.as_deref(), Some(&b"v3"[..]));
            assert_eq!(decoded[3].key.as_deref(), Some(&b"k3"[..]));
            assert_eq!(decoded[3].timestamp, 103);
            assert_eq!(decoded[3].headers[0].0, "h");
        }
        let plain = encode_batch(
            records.iter().map(|(t, r)| (*t, r)),
            None,
            Compression::None,
        )
        .unwrap();
        let batch = Batch::validate(plain, &BatchLimits::default()).unwrap();
        assert_eq!(batch.header().producer_id, -1);
        assert_eq!(batch.header().base_sequence, -1);
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 4), 2);
    }
}
