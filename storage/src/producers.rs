//! Idempotent-producer state of one partition: for each producer id its epoch
//! and the metadata of its last few batches, so that a retried batch (its ack
//! was lost) is recognised and answered with its original offsets instead of
//! being written twice, and a gap in sequences is refused.
//!
//! The table is snapshotted in every manifest and rebuilt from the WAL on
//! recovery by replaying batches through [`ProducerTable::record`].
//! Producers silent for longer than the log's `producer_id_expiration` (by
//! the broker's clock at their last append, as Kafka's
//! `producer.id.expiration.ms`; a producer backfilling old timestamps is
//! not silent) are dropped ([`ProducerTable::expire`]), so the table, and
//! every manifest, stays as small as the set of active producers. State
//! rebuilt from the WAL on takeover, where that time is unknown, uses the
//! batches' own timestamps.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::batch::BatchHeader;
use crate::error::{Error, Result};

/// How many recent batches per producer are remembered for de-duplication:
/// the most batches an idempotent producer may have in flight per
/// partition. Kafka remembers 5 (and Kafka clients send at most 5); Strata
/// remembers 16 so that its own producer can keep a partition busy across
/// an object store's round trip (`strata_client::MAX_IN_FLIGHT_IDEMPOTENT`
/// must not exceed this).
pub const RETAINED_BATCHES: usize = 16;

/// Offsets and sequences of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    /// First sequence number of the batch.
    pub first_seq: i32,
    /// Last sequence number of the batch.
    pub last_seq: i32,
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset given to the last record.
    pub last_offset: i64,
}

/// What the log knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// The producer's current epoch.
    pub epoch: i16,
    /// Its last batches, oldest first.
    pub batches: VecDeque<BatchMeta>,
    /// When it last appended, by the broker's clock (ms; the batch's own
    /// largest timestamp when rebuilt from the WAL), for expiry.
    #[serde(default)]
    pub last_timestamp: i64,
}

/// The verdict on an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Not idempotent, or the next sequence: append it.
    Append,
    /// A retry of a batch already in the log: answer with these offsets.
    Duplicate(BatchMeta),
}

/// Producer id → state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProducerTable(BTreeMap<i64, ProducerEntry>);

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerTable {
    /// Checks `header` (an incoming, not yet stamped batch) against the table.
    pub fn check(&self, header: &BatchHeader) -> Result<SeqCheck> {
        if !header.has_producer() {
            return Ok(SeqCheck::Append);
        }
        let pid = header.producer_id;
        let first_seq = header.base_sequence;
        let Some(entry) = self.0.get(&pid) else {
            return if first_seq == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(Error::OutOfOrderSequence {
                    producer_id: pid,
                    expected: 0,
                    got: first_seq,
                })
            };
        };
        if header.producer_epoch < entry.epoch {
            return Err(Error::ProducerFenced {
                producer_id: pid,
                current: entry.epoch,
                got: header.producer_epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            return if first_seq == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(Error::OutOfOrderSequence {
                    producer_id: pid,
                    expected: 0,
                    got: first_seq,
                })
            };
        }
        let last_seq = header.last_sequence();
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SeqCheck::Duplicate(*dup));
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if first_seq == expected {
            Ok(SeqCheck::Append)
        } else {
            Err(Error::OutOfOrderSequence {
                producer_id: pid,
                expected,
                got: first_seq,
            })
        }
    }

    /// [`Self::record`] for a batch appended at broker time `now_ms`.
    pub fn record_at(&mut self, header: &BatchHeader, now_ms: i64) {
        self.record(header);
        if let Some(entry) = self.0.get_mut(&header.producer_id) {
            entry.last_timestamp = entry.last_timestamp.max(now_ms);
        }
    }

    /// Records a batch that was appended (its header already stamped with
    /// its base offset). Idempotent: recording a batch at or below the
    /// producer's last known offset does nothing.
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer() {
            return;
        }
        let meta = BatchMeta {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        };
        let entry = self
            .0
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: header.max_timestamp,
            });
        entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        } else if entry
            .batches
            .back()
            .is_some_and(|b| b.last_offset >= meta.base_offset)
        {
            // Already known: replaying a WAL tail over a snapshot that
            // includes part of it must not record a batch twice.
            return;
        }
        if entry.batches.len() == RETAINED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(meta);
    }

    /// Drops producers whose last batch is older than `expiration` at
    /// `now_ms`. Returns how many were dropped.
    pub fn expire(&mut self, now_ms: i64, expiration: std::time::Duration) -> usize {
        let horizon =
            now_ms.saturating_sub(i64::try_from(expiration.as_millis()).unwrap_or(i64::MAX));
        let before = self.0.len();
        self.0.retain(|_, e| e.last_timestamp >= horizon);
        before - self.0.len()
    }

    /// How many producers are tracked.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
