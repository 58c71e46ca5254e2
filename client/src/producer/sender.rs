//! One task per partition that turns queued records into produce requests.
//!
//! The task owns the partition's [`PartitionQueue`] and its idempotence
//! state (producer id, next sequence). It loops: wait until a batch is due
//! (size, linger, flush or close), drain it, send it with retries until it
//! is acknowledged or its delivery timeout passes, complete the records'
//! futures, repeat. Exactly one batch per partition is in flight, so
//! sequences are acknowledged in order and a retry can never overtake the
//! batch after it.

use std::sync::Arc;
use std::time::Instant;

use strata_proto::v1::{ProduceRequest, produce_request};
use tokio::sync::mpsc;

use super::accumulator::{PartitionQueue, Pending, Sequence, encode_batch, next_sequence};
use super::{Compression, RecordMetadata, Shared};
use crate::cluster::backoff;
use crate::error::{Error, Result};

/// Batches bigger than this are encoded on the blocking pool.
const ENCODE_INLINE_MAX: usize = 128 * 1024;

pub(crate) struct PartitionSender {
    shared: Arc<Shared>,
    topic: String,
    partition: u32,
    rx: mpsc::UnboundedReceiver<Pending>,
    queue: PartitionQueue,
    /// Producer id and epoch for this partition's batches; `None` until a
    /// fresh one is fetched after a failure.
    ids: Option<(i64, i16)>,
    next_seq: i32,
}

impl PartitionSender {
    pub(crate) fn new(
        shared: Arc<Shared>,
        topic: String,
        partition: u32,
        rx: mpsc::UnboundedReceiver<Pending>,
    ) -> Self {
        let ids = shared.ids;
        PartitionSender {
            shared,
            topic,
            partition,
            rx,
            queue: PartitionQueue::default(),
            ids,
            next_seq: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut flush_rx = self.shared.flush_signal.subscribe();
        let mut closed = false;
        let linger = self.shared.config.linger;
        let batch_bytes = self.shared.config.batch_bytes;
        loop {
            // Take whatever is queued without waiting.
            while let Ok(r) = self.rx.try_recv() {
                self.queue.push(r);
                if self.queue.bytes() >= batch_bytes {
                    break;
                }
            }
            let flushing = closed || self.shared.flushing();
            if self
                .queue
                .ready(Instant::now(), linger, batch_bytes, flushing)
            {
                let batch = self.queue.drain_batch(batch_bytes);
                self.close_sticky_batch();
                self.deliver(batch).await;
                continue;
            }
            if closed && self.queue.is_empty() {
                return;
            }
            let deadline = self.queue.linger_deadline(linger);
            tokio::select! {
                r = self.rx.recv(), if !closed => match r {
                    Some(r) => self.queue.push(r),
                    None => closed = true,
                },
                _ = sleep_until_opt(deadline) => {}
                changed = flush_rx.changed() => {
                    if changed.is_err() {
                        // The producer is gone: send everything now.
                        closed = true;
                    }
                }
            }
        }
    }

    fn close_sticky_batch(&self) {
        let partitions = self
            .shared
            .cluster
            .cached_partition_count(&self.topic)
            .unwrap_or(1);
        self.shared.sticky.lock().batch_closed(
            &self.topic,
            self.partition,
            partitions,
            &mut rand::rng(),
        );
    }

    /// Sends one batch and completes its records.
    async fn deliver(&mut self, batch: Vec<Pending>) {
        let n = batch.len();
        let first = batch.iter().map(|p| p.enqueued).min();
        let deadline = first.unwrap_or_else(Instant::now) + self.shared.config.delivery_timeout;
        let (batch, outcome) = match self.sequence(deadline).await {
            Ok(seq) => {
                let (batch, bytes) = encode(batch, seq, self.shared.config.compression).await;
                match bytes {
                    Ok(bytes) => {
                        let outcome = self.produce(bytes, n, seq, deadline).await;
                        (batch, outcome)
                    }
                    Err(e) => (batch, Err(e)),
                }
            }
            Err(e) => (batch, Err(e)),
        };
        match outcome {
            Ok(base_offset) => {
                for (i, p) in batch.into_iter().enumerate() {
                    let meta = RecordMetadata {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        offset: base_offset + i as i64,
                        timestamp_ms: p.timestamp_ms,
                    };
                    let _ = p.tx.send(Ok(meta));
                }
            }
            Err(e) => {
                tracing::warn!(
                    topic = %self.topic,
                    partition = self.partition,
                    records = n,
                    error = %e,
                    "produce failed"
                );
                if self.shared.config.idempotent {
                    // The broker may or may not hold the batch: continue
                    // with a fresh producer id so no later batch can be
                    // mistaken for it.
                    self.ids = None;
                }
                for p in batch {
                    let _ = p.tx.send(Err(e.clone()));
                }
            }
        }
        self.shared.completed(n);
    }

    /// The producer id, epoch and first sequence of the next batch (`None`
    /// for a non-idempotent producer). Fetches a fresh producer id after a
    /// failure.
    async fn sequence(&mut self, deadline: Instant) -> Result<Option<Sequence>> {
        if !self.shared.config.idempotent {
            return Ok(None);
        }
        let (producer_id, epoch) = match self.ids {
            Some(ids) => ids,
            None => {
                let mut attempt = 0u32;
                let ids = loop {
                    match self.shared.init_producer().await {
                        Ok(ids) => break ids,
                        Err(e) => {
                            let wait = backoff(attempt, &e);
                            if !e.is_retryable() || Instant::now() + wait >= deadline {
                                return Err(e);
                            }
                            tokio::time::sleep(wait).await;
                            attempt = attempt.saturating_add(1);
                        }
                    }
                };
                self.ids = Some(ids);
                self.next_seq = 0;
                ids
            }
        };
        Ok(Some(Sequence {
            producer_id,
            epoch,
            base_sequence: self.next_seq,
        }))
    }

    /// Sends the encoded batch of `n` records until it is acknowledged, a
    /// non-retryable error, or `deadline`. Returns the base offset.
    async fn produce(
        &mut self,
        bytes: bytes::Bytes,
        n: usize,
        seq: Option<Sequence>,
        deadline: Instant,
    ) -> Result<i64> {
        let config = &self.shared.config;
        let acks = config.acks.proto() as i32;
        let mut attempt = 0u32;
        loop {
            let addr = self
                .shared
                .cluster
                .owner_address(&self.topic, self.partition);
            let req = ProduceRequest {
                topic: self.topic.clone(),
                partition: self.partition,
                acks,
                payload: Some(produce_request::Payload::Batch(bytes.clone())),
            };
            let result = async {
                let mut client = self.shared.cluster.strata(&addr)?;
                let req = self.shared.cluster.request(req);
                self.shared
                    .cluster
                    .unary(&addr, "produce", client.produce(req))
                    .await
            }
            .await;
            let error = match result {
                Ok(resp) => {
                    let span = resp.last_offset - resp.base_offset + 1;
                    if span != n as i64 || resp.base_offset < 0 {
                        return Err(Error::InvalidResponse(format!(
                            "produce of {n} records acknowledged offsets {}..={}",
                            resp.base_offset, resp.last_offset
                        )));
                    }
                    if resp.duplicate {
                        tracing::debug!(
                            topic = %self.topic,
                            partition = self.partition,
                            base_offset = resp.base_offset,
                            "retried batch was already written; using its original offsets"
                        );
                    }
                    if let Some(s) = seq {
                        self.next_seq = next_sequence(s.base_sequence, n);
                    }
                    return Ok(resp.base_offset);
                }
                Err(e) => e,
            };
            if !error.is_retryable() {
                return Err(error);
            }
            let wait = backoff(attempt, &error);
            if Instant::now() + wait >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "delivery of {n} records to {}/{} (delivery_timeout); last error: {error}",
                        self.topic, self.partition
                    ),
                    after: config.delivery_timeout,
                });
            }
            tracing::debug!(
                topic = %self.topic,
                partition = self.partition,
                attempt,
                error = %error,
                "retrying produce"
            );
            self.shared
                .cluster
                .on_error(&self.topic, self.partition, &error)
                .await;
            tokio::time::sleep(wait).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Encodes the batch, on the blocking pool when it is big or compressed.
/// Hands the records back with the result.
async fn encode(
    batch: Vec<Pending>,
    seq: Option<Sequence>,
    compression: Compression,
) -> (Vec<Pending>, Result<bytes::Bytes>) {
    let size: usize = batch.iter().map(|p| p.size).sum();
    let run = move |batch: Vec<Pending>| {
        let bytes = encode_batch(
            batch.iter().map(|p| (p.timestamp_ms, &p.record)),
            seq,
            compression,
        );
        (batch, bytes)
    };
    if compression == Compression::None && size <= ENCODE_INLINE_MAX {
        return run(batch);
    }
    // On a join error the records are lost with the task; their futures
    // resolve to `Closed`.
    match tokio::task::spawn_blocking(move || run(batch)).await {
        Ok(out) => out,
        Err(e) => (
            Vec::new(),
            Err(Error::InvalidResponse(format!(
                "batch encoding task failed: {e}"
            ))),
        ),
    }
}
