//! One task per partition that turns queued records into produce requests.
//!
//! The task owns the partition's [`PartitionQueue`] and its idempotence
//! state (producer id, next sequence). It loops: when a batch is due (size,
//! linger, flush or close) and fewer than `max_in_flight` are in flight, it
//! drains the batch, gives it the next sequence numbers, encodes it and
//! starts sending it; each batch retries on its own until acknowledged or
//! its delivery timeout passes. Batches complete in the order they were
//! drained, so records' futures resolve in order.
//!
//! Pipelining keeps the log in order through the broker's sequence check:
//! a batch that reaches the broker before the one ahead of it is refused
//! with `OUT_OF_ORDER_SEQUENCE`; it then waits for the batch ahead and is
//! sent again once that one is written, or fails with it. A retry of a
//! batch already written is answered from the broker's dedup window, which
//! holds the last 16 batches per producer (hence at most 16 in flight for
//! an idempotent producer; Kafka's window and limit are 5).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use strata_proto::v1::{ErrorReason, ProduceRequest, produce_request};
use tokio::sync::{mpsc, watch};

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
    /// Bytes queued here and not yet sent, shared with the partitioner.
    backlog: Arc<AtomicUsize>,
}

impl PartitionSender {
    pub(crate) fn new(
        shared: Arc<Shared>,
        topic: String,
        partition: u32,
        rx: mpsc::UnboundedReceiver<Pending>,
        backlog: Arc<AtomicUsize>,
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
            backlog,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut flush_rx = self.shared.flush_signal.subscribe();
        let mut closed = false;
        let linger = self.shared.config.linger;
        let max_in_flight = self.shared.config.max_in_flight;
        let mut in_flight: FuturesOrdered<BoxFuture<'static, Sent>> = FuturesOrdered::new();
        // The outcome of the batch sent last, for the one after it.
        let mut ahead: Option<watch::Receiver<Option<bool>>> = None;
        loop {
            // The topic's limit may change with metadata.
            let batch_bytes = self.shared.batch_bytes(&self.topic);
            // Take whatever is queued without waiting.
            while let Ok(r) = self.rx.try_recv() {
                self.queue.push(r);
                if self.queue.bytes() >= batch_bytes {
                    break;
                }
            }
            let flushing = closed || self.shared.flushing();
            let room = in_flight.len() < max_in_flight;
            if room
                && self
                    .queue
                    .ready(Instant::now(), linger, batch_bytes, flushing)
            {
                let batch = self.queue.drain_batch(batch_bytes);
                let drained = batch.iter().map(|p| p.size).sum();
                self.backlog.fetch_sub(drained, Ordering::Relaxed);
                let (done_tx, done_rx) = watch::channel(None);
                let send = self.start(batch, ahead.replace(done_rx), done_tx).await;
                in_flight.push_back(send);
                continue;
            }
            if closed && self.queue.is_empty() && in_flight.is_empty() {
                return;
            }
            let deadline = self.queue.linger_deadline(linger);
            tokio::select! {
                Some(sent) = in_flight.next(), if !in_flight.is_empty() => self.complete(sent),
                r = self.rx.recv(), if !closed => match r {
                    Some(r) => self.queue.push(r),
                    None => closed = true,
                },
                _ = sleep_until_opt(deadline), if room => {}
                changed = flush_rx.changed() => {
                    if changed.is_err() {
                        // The producer is gone: send everything now.
                        closed = true;
                    }
                }
            }
        }
    }

    /// Gives `batch` its sequence numbers, encodes it and returns the
    /// future that sends it. `ahead` reports the outcome of the batch sent
    /// before it (true: written); `done` reports this one's.
    async fn start(
        &mut self,
        batch: Vec<Pending>,
        ahead: Option<watch::Receiver<Option<bool>>>,
        done: watch::Sender<Option<bool>>,
    ) -> BoxFuture<'static, Sent> {
        let n = batch.len();
        let first = batch.iter().map(|p| p.enqueued).min();
        let deadline = first.unwrap_or_else(Instant::now) + self.shared.config.delivery_timeout;
        let seq = match self.sequence(deadline).await {
            Ok(seq) => seq,
            Err(e) => return failed(batch, e, done),
        };
        if let Some(s) = seq {
            self.next_seq = next_sequence(s.base_sequence, n);
        }
        let (batch, bytes) = encode(batch, seq, self.shared.config.compression).await;
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(e) => return failed(batch, e, done),
        };
        let send = Send {
            shared: self.shared.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            bytes,
            n,
            deadline,
        };
        Box::pin(async move {
            let outcome = send.run(ahead).await;
            let _ = done.send(Some(outcome.is_ok()));
            Sent { batch, outcome }
        })
    }

    /// Completes the records of a batch that was acknowledged or failed.
    fn complete(&mut self, sent: Sent) {
        let Sent { batch, outcome } = sent;
        let n = batch.len();
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
                    // mistaken for it. (Batches in flight behind it keep
                    // the old id: they land only if it did.)
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
}

/// A batch that was sent, with its outcome (the base offset).
struct Sent {
    batch: Vec<Pending>,
    outcome: Result<i64>,
}

/// A batch that failed before it could be sent.
fn failed(
    batch: Vec<Pending>,
    e: Error,
    done: watch::Sender<Option<bool>>,
) -> BoxFuture<'static, Sent> {
    let _ = done.send(Some(false));
    Box::pin(std::future::ready(Sent {
        batch,
        outcome: Err(e),
    }))
}

/// One encoded batch on its way to the partition's owner.
struct Send {
    shared: Arc<Shared>,
    topic: String,
    partition: u32,
    bytes: bytes::Bytes,
    n: usize,
    deadline: Instant,
}

impl Send {
    /// Sends the batch until it is acknowledged, a non-retryable error, or
    /// the deadline. Returns the base offset. `ahead` is the outcome of the
    /// batch sent before it: an out-of-order refusal while that one is
    /// unsettled means this one overtook it, so it waits and goes again.
    async fn run(&self, mut ahead: Option<watch::Receiver<Option<bool>>>) -> Result<i64> {
        let config = &self.shared.config;
        let n = self.n;
        let acks = config.acks.proto() as i32;
        let mut attempt = 0u32;
        loop {
            // Settled before this attempt: a refusal cannot be a reordering.
            let ahead_settled = ahead.as_ref().is_none_or(|a| a.borrow().is_some());
            let addr = self
                .shared
                .cluster
                .owner_address(&self.topic, self.partition);
            let req = ProduceRequest {
                topic: self.topic.clone(),
                partition: self.partition,
                acks,
                payload: Some(produce_request::Payload::Batch(self.bytes.clone())),
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
                    return Ok(resp.base_offset);
                }
                Err(e) => e,
            };
            if error.reason() == Some(ErrorReason::OutOfOrderSequence) && !ahead_settled {
                // Overtook the batch ahead: go again once it is written.
                let written = match ahead.as_mut() {
                    Some(a) => {
                        let settled = tokio::time::timeout_at(
                            self.deadline.into(),
                            a.wait_for(Option::is_some),
                        )
                        .await;
                        matches!(settled, Ok(Ok(v)) if *v == Some(true))
                    }
                    None => true,
                };
                if !written {
                    return Err(error);
                }
                ahead = None;
                continue;
            }
            if !error.is_retryable() {
                return Err(error);
            }
            let wait = backoff(attempt, &error);
            if Instant::now() + wait >= self.deadline {
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
