//! The WAL writer: group commit of every partition's appends into one object
//! per flush (see `README.md` beside this file for the life of a produce).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::format::{self, ChunkEntry, HEADER_LEN};
use crate::error::{Error, Result};
use crate::keys::{TopicIdPartition, WalSeq, WalStream};

/// WAL settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Size of a full WAL object. A flush starts early when this much is
    /// waiting. An object ends with the entry (produced batch) that fills
    /// it, so it can exceed this by less than one batch. Larger objects
    /// mean fewer PUTs (cost) but more latency per flush.
    pub max_bytes: usize,
    /// The cost policy at light load: least time between the starts of two
    /// flushes of less than `pipeline_bytes`, so a lightly loaded broker
    /// makes at most one PUT per interval (and so a bounded request bill)
    /// at the price of up to this much added latency. Under load, flushes
    /// of `pipeline_bytes` or more start at once: their cost per byte is
    /// already bounded. Unset: [`DEFAULT_MIN_INTERVAL`] (a broker sets it
    /// from its store: see [`MIN_INTERVAL_PAID_STORE`]).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub min_interval: Option<Duration>,
    /// Flushes in flight at once. More hides PUT latency under load.
    pub max_in_flight: usize,
    /// The cost policy under load: with no flush in flight, whatever waits
    /// is flushed (group commit: at light load, about one PUT per PUT
    /// latency, however small); while flushes are in flight, another starts
    /// only once this much waits, so a loaded broker keeps up to
    /// `max_in_flight` PUTs of at least this size going (throughput
    /// follows the store's bandwidth, not its latency) and never pays more
    /// than one PUT per `pipeline_bytes` for it. Once data is due and every
    /// slot is busy (the store is the limit), flushes wait for full
    /// `max_bytes` objects until the pipeline drains a second after the
    /// last such moment, so a saturated broker pays only what full objects
    /// need.
    pub pipeline_bytes: usize,
    /// Bytes accepted but not yet durable. Appends wait (backpressure) when
    /// this is reached.
    pub max_pending_bytes: usize,
    /// How long one WAL object may keep failing to upload before the writer
    /// gives up, fails every pending append and must be replaced.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Broker-wide budget for unsealed tails: bytes appended (durable in
    /// WAL objects) but not yet sealed into segments, all of which the
    /// broker keeps in memory. Past half of it, maintenance seals the
    /// largest tails first; at it, appends are refused (retryably) until
    /// seals catch up. Larger means fewer, bigger segments under many
    /// partitions; smaller bounds the broker's memory.
    pub max_unsealed_bytes: u64,
    /// Hedged PUTs: a WAL PUT still unanswered after 1.5 times the median
    /// of the last PUTs (and at least 50 ms) is sent again, and the first
    /// answer wins (the object is create-only and carries a write id, so
    /// the copy is harmless).
    /// Acks follow WAL objects in order, so one slow PUT delays every ack
    /// behind it: hedging cuts that tail for the few percent of PUTs that
    /// are slow.
    pub hedge: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 20,
            min_interval: None,
            max_in_flight: 4,
            pipeline_bytes: 1 << 20,
            max_pending_bytes: 64 << 20,
            flush_timeout: Duration::from_secs(30),
            max_unsealed_bytes: 1 << 30,
            hedge: true,
        }
    }
}

/// `wal.min_interval` where requests cost nothing (a local disk, memory):
/// a flush as soon as the previous one is done, whatever its size.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(5);

/// `wal.min_interval` on an object store that bills per request: at light
/// load at most 10 PUTs a second (about 26 M a month, $131 at S3's $0.005
/// per 1,000) for about 50 ms more ack latency than flushing at once; a
/// loaded broker is not held back (full flushes skip the interval). The
/// table behind this choice: `scripts/bench_latency.py`.
pub const MIN_INTERVAL_PAID_STORE: Duration = Duration::from_millis(100);

impl WalConfig {
    /// The least time between two small flushes (see `min_interval`).
    pub fn min_interval(&self) -> Duration {
        self.min_interval.unwrap_or(DEFAULT_MIN_INTERVAL)
    }

    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<()> {
        if self.max_bytes < 1024 {
            return Err(Error::Config {
                key: "wal.max_bytes",
                reason: format!("must be at least 1024, got {}", self.max_bytes),
            });
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config {
                key: "wal.max_in_flight",
                reason: "must be at least 1".into(),
            });
        }
        if self.pipeline_bytes == 0 {
            return Err(Error::Config {
                key: "wal.pipeline_bytes",
                reason: "must be at least 1 (values above wal.max_bytes act as wal.max_bytes)"
                    .into(),
            });
        }
        if self.max_unsealed_bytes < self.max_pending_bytes as u64 {
            return Err(Error::Config {
                key: "wal.max_unsealed_bytes",
                reason: format!(
                    "must be at least wal.max_pending_bytes ({})",
                    self.max_pending_bytes
                ),
            });
        }
        if self.max_pending_bytes < self.max_bytes {
            return Err(Error::Config {
                key: "wal.max_pending_bytes",
                reason: format!("must be at least wal.max_bytes ({})", self.max_bytes),
            });
        }
        Ok(())
    }
}

/// Told about the fate of each submitted entry, in submission order per
/// partition. Called from the WAL's flush task: must not block.
pub trait WalSink: Send + Sync + 'static {
    /// The entry ending at `last_offset` is durable in WAL object `seq`
    /// (and so is every entry submitted before it).
    fn durable(&self, seq: WalSeq, last_offset: i64);
    /// The writer failed; no entry from now on will become durable.
    fn failed(&self, error: &Error);
}

/// One partition's appended batch, on its way into a WAL object.
pub struct WalEntry {
    /// The partition.
    pub partition: TopicIdPartition,
    /// The leader epoch it was appended under.
    pub leader_epoch: i32,
    /// Offset of its first record.
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// The stamped batch bytes (shared, not copied).
    pub bytes: Bytes,
    /// Who to tell when it is durable.
    pub sink: Arc<dyn WalSink>,
}

#[derive(Debug)]
struct Pending {
    entry: WalEntry,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
enum Msg {
    Entry(Pending),
    Close,
}

impl std::fmt::Debug for WalEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalEntry")
            .field("partition", &self.partition)
            .field("first_offset", &self.first_offset)
            .field("last_offset", &self.last_offset)
            .finish()
    }
}

/// Room reserved for one entry; submitting it cannot block or fail.
#[derive(Debug)]
pub struct WalPermit {
    permit: OwnedSemaphorePermit,
    tx: mpsc::UnboundedSender<Msg>,
}

impl WalPermit {
    /// Hands the entry to the writer. Entries of one partition must be
    /// submitted in offset order (callers submit under their partition lock).
    pub fn submit(self, entry: WalEntry) {
        let pending = Pending {
            entry,
            _permit: self.permit,
        };
        if let Err(mpsc::error::SendError(Msg::Entry(p))) = self.tx.send(Msg::Entry(pending)) {
            p.entry
                .sink
                .failed(&Error::Unavailable("the WAL writer has stopped".into()));
        }
    }
}

struct Shared {
    stream: WalStream,
    /// Lowest sequence a not-yet-flushed entry can still get.
    next_seq: AtomicU64,
    failed: Mutex<Option<String>>,
    fenced: std::sync::atomic::AtomicBool,
    budget: Arc<Semaphore>,
    max_entry: usize,
    puts: AtomicU64,
    /// Record bytes in the objects counted by `puts`.
    put_bytes: AtomicU64,
    /// Bytes of every partition's unsealed tail (see
    /// [`WalConfig::max_unsealed_bytes`]).
    unsealed: AtomicU64,
    max_unsealed: u64,
    retained: Mutex<RetainState>,
    store: Arc<dyn ObjectStore>,
    /// Durations of the last successful WAL PUTs (hedging's yardstick);
    /// `None` when hedging is off.
    put_latency: Option<Mutex<VecDeque<Duration>>>,
    /// PUTs sent again because the first was slow.
    hedged: AtomicU64,
}

struct RetainState {
    /// Per partition, the lowest sequence its manifest still points at.
    floors: HashMap<TopicIdPartition, WalSeq>,
    /// Objects below this were deleted already.
    deleted_below: WalSeq,
}

/// A broker incarnation's WAL writer. Cheap to clone.
#[derive(Clone)]
pub struct WalWriter {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Msg>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter")
            .field("stream", &self.shared.stream)
            .field("next_seq", &self.shared.next_seq)
            .finish()
    }
}

impl WalWriter {
    /// Starts the writer of `stream`, whose first object will be `first_seq`
    /// (0 for a new incarnation). Spawns the flush task.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        stream: WalStream,
        first_seq: WalSeq,
        config: WalConfig,
    ) -> Result<Self> {
        config.validate()?;
        let permits = config.max_pending_bytes.min(Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            stream,
            next_seq: AtomicU64::new(first_seq.0),
            failed: Mutex::new(None),
            fenced: std::sync::atomic::AtomicBool::new(false),
            budget: Arc::new(Semaphore::new(permits)),
            max_entry: permits,
            puts: AtomicU64::new(0),
            put_bytes: AtomicU64::new(0),
            unsealed: AtomicU64::new(0),
            max_unsealed: config.max_unsealed_bytes,
            retained: Mutex::new(RetainState {
                floors: HashMap::new(),
                deleted_below: first_seq,
            }),
            store,
            put_latency: config.hedge.then(Mutex::default),
            hedged: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(flush_loop(shared.clone(), config, rx));
        Ok(Self {
            shared,
            tx,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// The stream this writer appends to.
    pub fn stream(&self) -> WalStream {
        self.shared.stream
    }

    /// No entry submitted from now on lands in an object below this.
    pub fn next_seq(&self) -> WalSeq {
        WalSeq(self.shared.next_seq.load(Ordering::SeqCst))
    }

    /// WAL objects written so far.
    pub fn puts(&self) -> u64 {
        self.shared.puts.load(Ordering::Relaxed)
    }

    /// WAL PUTs sent a second time because the first was slow (hedged).
    pub fn hedged_puts(&self) -> u64 {
        self.shared.hedged.load(Ordering::Relaxed)
    }

    /// Record bytes in the WAL objects written so far (how full objects
    /// are: `put_bytes() / puts()` against `wal.max_bytes`).
    pub fn put_bytes(&self) -> u64 {
        self.shared.put_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of unsealed tails of every partition writing to this WAL.
    pub fn unsealed_bytes(&self) -> u64 {
        self.shared.unsealed.load(Ordering::Relaxed)
    }

    /// The broker-wide budget for unsealed tails.
    pub fn max_unsealed_bytes(&self) -> u64 {
        self.shared.max_unsealed
    }

    /// Fails (retryably) when `bytes` more of unsealed tails would go over
    /// the budget. Reserves nothing: concurrent appends may overshoot it
    /// by a batch each.
    pub(crate) fn check_unsealed(&self, bytes: usize) -> Result<()> {
        let used = self.unsealed_bytes();
        if used.saturating_add(bytes as u64) > self.shared.max_unsealed {
            return Err(Error::Unavailable(format!(
                "this broker holds {used} bytes of unsealed tails, its limit \
                 (wal.max_unsealed_bytes = {}); retry shortly, the largest tails are being sealed",
                self.shared.max_unsealed
            )));
        }
        Ok(())
    }

    /// Counts `bytes` more (or, negative, fewer) of unsealed tails.
    pub(crate) fn add_unsealed(&self, bytes: i64) {
        if bytes >= 0 {
            self.shared
                .unsealed
                .fetch_add(bytes as u64, Ordering::Relaxed);
        } else {
            self.shared
                .unsealed
                .fetch_sub(bytes.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// The error that stopped the writer, if it has stopped.
    pub fn check(&self) -> Result<()> {
        match &*self.shared.failed.lock() {
            None => Ok(()),
            Some(msg) if self.shared.fenced.load(Ordering::SeqCst) => {
                Err(Error::Fenced(msg.clone()))
            }
            Some(msg) => Err(Error::Unavailable(msg.clone())),
        }
    }

    /// Waits for room for `bytes` (backpressure), then returns a permit to
    /// submit one entry of that size.
    pub async fn reserve(&self, bytes: usize) -> Result<WalPermit> {
        self.check()?;
        if bytes > self.shared.max_entry {
            return Err(Error::TooLarge {
                what: "WAL entry",
                size: bytes,
                limit: self.shared.max_entry,
            });
        }
        let permit = self
            .shared
            .budget
            .clone()
            .acquire_many_owned(bytes.max(1) as u32)
            .await
            .map_err(|_| Error::Unavailable("the WAL writer has stopped".into()))?;
        self.check()?;
        Ok(WalPermit {
            permit,
            tx: self.tx.clone(),
        })
    }

    /// Records that `tp`'s manifest needs WAL objects from `floor` on.
    pub fn retain_from(&self, p: &TopicIdPartition, floor: WalSeq) {
        self.shared.retained.lock().floors.insert(p.clone(), floor);
    }

    /// `p` no longer needs this WAL (sealed and released).
    pub fn release(&self, p: &TopicIdPartition) {
        self.shared.retained.lock().floors.remove(p);
    }

    /// Deletes this stream's objects that no partition needs any more.
    /// Returns how many were deleted.
    pub async fn gc(&self) -> Result<usize> {
        let (from, to) = {
            let r = self.shared.retained.lock();
            let flushed = self.next_seq();
            let floor = r
                .floors
                .values()
                .copied()
                .min()
                .unwrap_or(flushed)
                .min(flushed);
            (r.deleted_below, floor)
        };
        let mut n = 0;
        for seq in from.0..to.0 {
            match self
                .shared
                .store
                .delete(&self.shared.stream.object(WalSeq(seq)))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                Err(e) => return Err(e.into()),
            }
            let mut r = self.shared.retained.lock();
            r.deleted_below = r.deleted_below.max(WalSeq(seq + 1));
        }
        Ok(n)
    }

    /// Kills the flush task at once, as a crash would: nothing queued is
    /// flushed and no pending entry is ever reported (PUTs already sent may
    /// still land). For tests and for a broker that was fenced.
    pub fn abort(&self) {
        self.shared.budget.close();
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }

    /// Stops accepting entries, finishes the flushes under way and waits for
    /// the flush task to end.
    pub async fn close(&self) {
        self.shared.budget.close();
        let task = self.task.lock().take();
        // Dropping our sender is not enough (permits hold clones): tell the
        // loop to flush what is queued and stop.
        let _ = self.tx.send(Msg::Close);
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

type FlushResult = (WalSeq, Result<()>, Vec<Pending>);

async fn flush_loop(shared: Arc<Shared>, config: WalConfig, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut buf: Vec<Pending> = Vec::new();
    let mut buf_bytes = 0usize;
    let mut in_flight: FuturesOrdered<JoinHandle<FlushResult>> = FuturesOrdered::new();
    let min_interval = config.min_interval();
    let mut last_start = Instant::now() - min_interval;
    let mut closing = false;
    let mut size = FlushSize::new(&config);
    loop {
        let now = Instant::now();
        let interval_ok = now >= last_start + min_interval;
        let slot_free = in_flight.len() < config.max_in_flight;
        let due = size.due(buf_bytes, in_flight.len(), slot_free);
        if !buf.is_empty() && slot_free && (due || closing || (in_flight.is_empty() && interval_ok))
        {
            let target = size.object_target(config.max_bytes);
            size.started(in_flight.len());
            let (batch, rest_bytes) = take_object(&mut buf, target);
            buf_bytes = rest_bytes;
            let seq = WalSeq(shared.next_seq.fetch_add(1, Ordering::SeqCst));
            last_start = now;
            let shared2 = shared.clone();
            let timeout = config.flush_timeout;
            in_flight.push_back(tokio::spawn(async move {
                let res = write_object(&shared2, seq, &batch, timeout).await;
                (seq, res, batch)
            }));
            continue;
        }
        if closing && buf.is_empty() && in_flight.is_empty() {
            break;
        }
        // A small flush waits out the interval (with one in flight, its
        // completion wakes us instead).
        let wait_interval = !buf.is_empty() && !interval_ok && in_flight.is_empty();
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let (seq, res, batch) = match done {
                    Ok(d) => d,
                    Err(join) => {
                        fail_all(&shared, &Error::Unavailable(format!("WAL flush task failed: {join}")), Vec::new(), &mut in_flight, &buf, &mut rx).await;
                        return;
                    }
                };
                match res {
                    Ok(()) => {
                        shared.puts.fetch_add(1, Ordering::Relaxed);
                        let bytes: usize = batch.iter().map(|p| p.entry.bytes.len()).sum();
                        shared.put_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                        for p in &batch {
                            p.entry.sink.durable(seq, p.entry.last_offset);
                        }
                    }
                    Err(e) => {
                        fail_all(&shared, &e, batch, &mut in_flight, &buf, &mut rx).await;
                        return;
                    }
                }
            }
            msg = rx.recv(), if !closing => {
                match msg {
                    Some(Msg::Close) | None => closing = true,
                    Some(Msg::Entry(p)) => {
                        buf_bytes += p.entry.bytes.len();
                        buf.push(p);
                        while buf_bytes < config.max_bytes {
                            match rx.try_recv() {
                                Ok(Msg::Close) => { closing = true; break; }
                                Ok(Msg::Entry(p)) => { buf_bytes += p.entry.bytes.len(); buf.push(p); }
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(last_start + min_interval), if wait_interval => {}
        }
    }
}

/// How much must wait before a flush starts while others are in flight:
/// the cost policy under load, which adapts to it.
///
/// Normally `pipeline_bytes`, so a loaded broker overlaps PUTs of at least
/// that size and its acks wait about one PUT latency. Once data is due but
/// every slot is busy, the store (not the arrival rate) is the limit:
/// waiting costs no throughput there, so flushes then wait for full
/// `max_bytes` objects, which cuts the PUTs (and the request bill) per GiB
/// at saturation to what full objects need. That lasts until the pipeline
/// drains (a flush starts with none in flight) with no sign of saturation
/// for [`STORE_BOUND_HOLD`]: the load fell below one full object per PUT
/// latency, and latency matters again. A pipeline that drains sooner is a
/// producer that paused (a GC, a CPU shared with the broker): what waits
/// is flushed at once, and the flushes after it still wait for full
/// objects.
#[derive(Debug)]
struct FlushSize {
    pipeline: usize,
    full: usize,
    saturated: bool,
    /// When data was last due with every slot busy.
    store_bound_at: Instant,
}

/// How long after its last sign a store-bound pipeline that drains keeps
/// waiting for full objects (see [`FlushSize`]).
const STORE_BOUND_HOLD: Duration = Duration::from_secs(1);

impl FlushSize {
    fn new(config: &WalConfig) -> Self {
        let pipeline = config.pipeline_bytes.min(config.max_bytes);
        // Full objects for every slot and one filling must fit the pending
        // budget, or appends would block before an object fills. (An
        // object ends with the entry that fills it, so each holds up to one
        // entry more; with the defaults, 4 × (8 + 1) + 8 MiB of 64. Where
        // that does not fit, fewer PUTs overlap; nothing blocks for good.)
        let fits = config.max_pending_bytes / (config.max_in_flight + 1);
        Self {
            pipeline,
            full: config.max_bytes.min(fits).max(pipeline),
            saturated: false,
            store_bound_at: Instant::now(),
        }
    }

    /// Whether `waiting` bytes are worth a PUT now, with `in_flight`
    /// flushes under way; notes saturation when they are due and no slot
    /// is free.
    fn due(&mut self, waiting: usize, in_flight: usize, slot_free: bool) -> bool {
        if waiting < self.pipeline {
            return false;
        }
        if !slot_free {
            self.store_bound_at = Instant::now();
            if !self.saturated {
                self.saturated = true;
                tracing::debug!(
                    bytes = self.full,
                    "WAL flushes wait for full objects (store-bound)"
                );
            }
        }
        !self.saturated || waiting >= self.full || in_flight == 0
    }

    /// The size of object to fill now: while saturated, `full`, so full
    /// objects in every slot and one filling fit the pending budget.
    fn object_target(&self, max_bytes: usize) -> usize {
        if self.saturated { self.full } else { max_bytes }
    }

    /// A flush starts with `in_flight` others under way.
    fn started(&mut self, in_flight: usize) {
        if in_flight == 0 && self.saturated && self.store_bound_at.elapsed() >= STORE_BOUND_HOLD {
            self.saturated = false;
            tracing::debug!(
                bytes = self.pipeline,
                "WAL flushes overlap again from pipeline_bytes"
            );
        }
    }
}

/// Takes entries from the front of `buf` until they reach `target` bytes
/// (or `buf` ends). An object ends with the entry that fills it, so a full
/// one holds `target` bytes and less than one entry more, whatever the
/// entries' size: stopping short of `target` instead would leave 1,000,000
/// byte client batches filling 8 MiB objects to 7.63 MiB, 5% more PUTs per
/// GiB for nothing.
fn take_object(buf: &mut Vec<Pending>, target: usize) -> (Vec<Pending>, usize) {
    debug_assert!(target > 0, "a zero target would PUT empty objects");
    let mut size = 0;
    let mut n = 0;
    for p in buf.iter() {
        if size >= target {
            break;
        }
        size += p.entry.bytes.len();
        n += 1;
    }
    let rest: Vec<Pending> = buf.split_off(n);
    let taken = std::mem::replace(buf, rest);
    let rest_bytes = buf.iter().map(|p| p.entry.bytes.len()).sum();
    (taken, rest_bytes)
}

async fn fail_all(
    shared: &Shared,
    error: &Error,
    batch: Vec<Pending>,
    in_flight: &mut FuturesOrdered<JoinHandle<FlushResult>>,
    buf: &[Pending],
    rx: &mut mpsc::UnboundedReceiver<Msg>,
) {
    let fenced = error.is_fenced();
    tracing::error!(stream = %shared.stream, %error, "WAL writer stopped: every pending append fails");
    *shared.failed.lock() = Some(error.to_string());
    shared.fenced.store(fenced, Ordering::SeqCst);
    shared.budget.close();
    let fail = |p: &Pending| p.entry.sink.failed(error);
    batch.iter().for_each(fail);
    // Later flushes may succeed, but their entries must not be acknowledged:
    // an ack promises that every earlier object is written.
    while let Some(done) = in_flight.next().await {
        if let Ok((_, _, b)) = done {
            b.iter().for_each(fail);
        }
    }
    buf.iter().for_each(fail);
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Entry(p) = msg {
            fail(&p);
        }
    }
}

/// A create-only PUT found its key taken (stores answer either way).
fn already_exists(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

/// One create-only PUT; with `hedge`, sent again if unanswered after
/// `hedge.0`, and the first success (or the last failure) answers. Both
/// carry the same bytes and write id: whichever lands first creates the
/// object, and the other finds it (`AlreadyExists`, which the caller checks
/// is ours).
async fn put_hedged(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
    payload: &PutPayload,
    hedge: Option<(Duration, &AtomicU64)>,
) -> object_store::Result<object_store::PutResult> {
    let put = || store.put_opts(key, payload.clone(), PutOptions::from(PutMode::Create));
    let first = put();
    let Some((after, hedged)) = hedge else {
        return first.await;
    };
    tokio::pin!(first);
    tokio::select! {
        res = &mut first => return res,
        () = tokio::time::sleep(after) => {}
    }
    hedged.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%key, after_ms = after.as_millis() as u64, "WAL PUT is slow: sending it again (hedged)");
    let second = put();
    tokio::pin!(second);
    // A success answers, and so does an object found already there (the
    // caller checks whose it is); any other failure waits for the other.
    let answers = |res: &object_store::Result<object_store::PutResult>| match res {
        Ok(_) => true,
        Err(e) => already_exists(e),
    };
    tokio::select! {
        res = &mut first => if answers(&res) { res } else { second.await },
        res = &mut second => if answers(&res) { res } else { first.await },
    }
}

/// Uploads one WAL object with a create-only PUT, retrying transient errors
/// until `timeout`. `AlreadyExists` is ours (an earlier attempt landed) when
/// the stored header carries our write id; otherwise we were fenced.
async fn write_object(
    shared: &Shared,
    seq: WalSeq,
    batch: &[Pending],
    timeout: Duration,
) -> Result<()> {
    let write_id: u64 = rand::random();
    let key = shared.stream.object(seq);
    let mut parts: Vec<Bytes> = Vec::with_capacity(batch.len() + 2);
    parts.push(format::encode_header(false, write_id, seq));
    let mut chunks: Vec<ChunkEntry> = Vec::new();
    let mut index: HashMap<&TopicIdPartition, Vec<&WalEntry>> = HashMap::new();
    let mut order: Vec<&TopicIdPartition> = Vec::new();
    for p in batch {
        let e = &p.entry;
        index
            .entry(&e.partition)
            .or_insert_with(|| {
                order.push(&e.partition);
                Vec::new()
            })
            .push(e);
    }
    let mut pos = HEADER_LEN as u64;
    for tp in order {
        let entries = &index[tp];
        let mut crc = 0u32;
        let mut len = 0u64;
        for e in entries {
            crc = crc32c::crc32c_append(crc, &e.bytes);
            len += e.bytes.len() as u64;
            parts.push(e.bytes.clone());
        }
        chunks.push(ChunkEntry {
            partition: tp.clone(),
            leader_epoch: entries[0].leader_epoch,
            first_offset: entries[0].first_offset,
            last_offset: entries[entries.len() - 1].last_offset,
            pos,
            len: len as u32,
            crc,
        });
        pos += len;
    }
    parts.push(format::encode_trailer(&chunks));
    let payload: PutPayload = parts.into_iter().collect();
    let hedge = shared.hedge_after().map(|after| (after, &shared.hedged));
    let started = Instant::now();
    put_create_with(
        shared.store.as_ref(),
        &key,
        payload,
        write_id,
        timeout,
        hedge,
    )
    .await?;
    shared.record_put(started.elapsed());
    Ok(())
}

/// PUTs remembered for hedging's yardstick.
const HEDGE_SAMPLES: usize = 64;
/// PUTs seen before the first hedge: no yardstick, no hedge.
const HEDGE_MIN_SAMPLES: usize = 16;
/// Least wait before a hedge, so that a local store's scheduling jitter
/// (PUTs of a millisecond) does not send PUTs twice.
const HEDGE_FLOOR: Duration = Duration::from_millis(50);

impl Shared {
    /// How long a WAL PUT may go unanswered before it is sent again:
    /// 1.5 times the median of the recent ones (at least [`HEDGE_FLOOR`]),
    /// once there are enough.
    fn hedge_after(&self) -> Option<Duration> {
        let samples = self.put_latency.as_ref()?.lock();
        if samples.len() < HEDGE_MIN_SAMPLES {
            return None;
        }
        let mut sorted: Vec<Duration> = samples.iter().copied().collect();
        drop(samples);
        let mid = sorted.len() / 2;
        let (_, median, _) = sorted.select_nth_unstable(mid);
        Some((*median * 3 / 2).max(HEDGE_FLOOR))
    }

    fn record_put(&self, took: Duration) {
        if let Some(samples) = &self.put_latency {
            let mut samples = samples.lock();
            if samples.len() == HEDGE_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(took);
        }
    }
}

/// Create-only PUT of a WAL object (data or tombstone) with bounded retries.
pub(crate) async fn put_create(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
    payload: PutPayload,
    write_id: u64,
    timeout: Duration,
) -> Result<()> {
    put_create_with(store, key, payload, write_id, timeout, None).await
}

/// [`put_create`], each attempt hedged after `hedge.0` (counted in
/// `hedge.1`) when given.
async fn put_create_with(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
    payload: PutPayload,
    write_id: u64,
    timeout: Duration,
    hedge: Option<(Duration, &AtomicU64)>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        let res = put_hedged(store, key, &payload, hedge).await;
        match res {
            Ok(_) => return Ok(()),
            Err(e) if already_exists(&e) => {
                let head = store.get_range(key, 0..HEADER_LEN as u64).await?;
                let header = format::decode_header(key.as_ref(), &head)?;
                return if header.write_id == write_id && !header.tombstone {
                    Ok(())
                } else {
                    Err(Error::Fenced(format!(
                        "WAL object {key} was written by another incarnation ({}): this writer is fenced",
                        if header.tombstone {
                            "tombstone"
                        } else {
                            "data"
                        }
                    )))
                };
            }
            Err(e) => {
                if Instant::now() + backoff > deadline {
                    return Err(Error::Unavailable(format!(
                        "WAL object {key} could not be written for {timeout:?}: {e}"
                    )));
                }
                tracing::warn!(%key, error = %e, "WAL PUT failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
