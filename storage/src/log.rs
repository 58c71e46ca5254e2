//! The partition log: the API the broker uses for one partition it owns.
//!
//! - [`PartitionLog::open`] claims the partition: reads the manifest head,
//!   fences the previous owner's WAL, replays the unsealed tail from it,
//!   seals that tail into a segment and writes the next manifest version
//!   naming this incarnation with `leader_epoch + 1`.
//! - [`PartitionLog::append`] validates a batch, checks idempotent-producer
//!   sequences, assigns offsets, stamps the batch in place and hands it to the
//!   broker's WAL; with [`Acks::All`] it resolves once the batch is durable.
//! - [`PartitionLog::read`] serves the durable prefix of the log: the
//!   unsealed tail from memory, sealed data through the hot tier.
//! - [`PartitionLog::seal`], [`PartitionLog::apply_retention`],
//!   [`PartitionLog::release`] move data into segments and the manifest.
//!
//! Invariants: offsets are assigned exactly once, contiguously; readers only
//! see durable records (so a crash never takes back a record someone read);
//! every manifest's `next_offset` is durable, and recovery refuses to serve a
//! partition whose WAL tail does not reach it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::batch::{Batch, BatchError, BatchLimits};
use crate::chain::Chain;
use crate::error::{Error, Result};
use crate::hot_tier::SegmentCache;
use crate::keys::{self, TopicIdPartition, TopicPartition, Version, WalSeq, WalStream};
use crate::manifest::{Manifest, SegmentMeta, TailPointer};
use crate::producers::{ProducerTable, SeqCheck};
use crate::segment;
use crate::wal::{self, WalEntry, WalSink, WalWriter};

/// WAL objects read ahead while replaying a tail on open. Each holds only
/// this partition's chunks of one object, so memory stays bounded.
const REPLAY_READ_AHEAD: usize = 16;

/// Seals and releases (a segment upload and a manifest write each) in
/// flight at once in this process. A broker that moves many partitions
/// away at once then finishes each release quickly, in turn, instead of
/// slowing them all down together past the new owners' release timeout
/// (which would fence its WAL and restart its storage).
pub const MAX_CONCURRENT_SEALS: usize = 16;
/// Appends to a partition are refused (retryably) while its tail holds more
/// than this many segments' worth of durable bytes that no seal is taking:
/// its seals are failing. Four leave room for a partition written at
/// hundreds of MiB/s while its seals take a few round trips each; the
/// broker-wide bound on unsealed bytes is `wal.max_unsealed_bytes`.
const TAIL_GUARD_SEGMENTS: u64 = 4;
static SEALS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_SEALS);

/// Compressed batches decompressed for validation at once in this
/// process: each may take up to 64 MiB while it is checked.
static DECOMPRESSIONS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(4)));

/// Batches up to this size that are not compressed are validated on the
/// async runtime (a CRC and a record walk take microseconds); bigger or
/// compressed ones on a blocking thread.
const INLINE_VALIDATION_BYTES: usize = 64 << 10;

/// Validates an untrusted batch (see [`Batch::validate`]), off the async
/// runtime when it is big or compressed (decompression is bounded, and
/// at most [`DECOMPRESSIONS`] run at once).
async fn validate(bytes: Bytes, limits: &BatchLimits) -> Result<Batch> {
    let compressed = crate::batch::BatchHeader::parse(&bytes)
        .and_then(|h| h.compression())
        .is_ok_and(|c| c != crate::batch::Compression::None);
    if !compressed && bytes.len() <= INLINE_VALIDATION_BYTES {
        return Ok(Batch::validate(bytes, limits)?);
    }
    // Held by the blocking task itself: a caller that goes away (a client
    // resets its stream) must not free the slot while the decompression
    // still runs. The semaphore is static and never closed.
    let permit = if compressed {
        DECOMPRESSIONS.clone().acquire_owned().await.ok()
    } else {
        None
    };
    let limits = *limits;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        Batch::validate(bytes, &limits)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("batch validation did not finish: {e}")))?
    .map_err(Error::from)
}

/// WAL object reads in flight across every replay of this process: a
/// failover claims many partitions at once, each replaying the same dead
/// broker's objects, and the store would answer a flood with SlowDown.
static REPLAY_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(64);

/// Largest `segment_bytes`: a segment's sparse index addresses batches
/// with 32-bit positions, and the tail may grow to twice this before
/// appends are refused.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// Once the batch is in a WAL object in the bucket (no loss, ever).
    #[default]
    All,
    /// Once the batch is appended in memory. A crash of the broker before
    /// the next WAL flush loses it: a bounded loss window for lower latency.
    Leader,
}

/// Whose clock timestamps a topic's records (Kafka's
/// `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampType {
    /// The producer's, checked against `timestamp_before_max` and
    /// `timestamp_after_max`.
    #[default]
    CreateTime,
    /// The broker's at append: retention and time lookups then never
    /// depend on a client's clock.
    LogAppendTime,
}

/// Per-partition log settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Seal the tail into a segment at this size. The unsealed tail is held
    /// in memory, so this bounds memory per partition; larger segments mean
    /// fewer objects.
    pub segment_bytes: u64,
    /// Seal the tail when its oldest batch is this old (needs `maintain`).
    #[serde(with = "humantime_serde")]
    pub segment_ms: Duration,
    /// Bytes between sparse-index entries in a segment.
    pub index_interval_bytes: usize,
    /// Delete segments whose newest record is older than this.
    #[serde(with = "humantime_serde")]
    pub retention_ms: Option<Duration>,
    /// Delete the oldest segments while what remains is still at least this
    /// (as Kafka: never below it; archived segments go a whole archive at a
    /// time).
    pub retention_bytes: Option<u64>,
    /// Largest batch accepted.
    pub max_batch_bytes: usize,
    /// Manifest versions kept behind the head.
    pub manifest_keep: u64,
    /// Most segment entries the manifest itself lists; past it, the oldest
    /// quarter moves into an archive object ([`crate::archive`]). Lower
    /// keeps every seal's manifest write small; higher means fewer archive
    /// reads for consumers of old data. Retention drops whole archives.
    pub manifest_max_segments: usize,
    /// Most WAL objects a partition's tail may keep from collection (and
    /// a takeover must replay): past this, a tail is sealed, and an empty
    /// tail's floor moves up with one manifest write. Lower means faster
    /// failover and a smaller WAL; higher means fewer manifest writes for
    /// idle partitions of a busy broker.
    pub tail_max_wal_objects: u64,
    /// Drop the idempotence state of a producer whose last batch is older
    /// than this (Kafka's `producer.id.expiration.ms`): the state is in
    /// every manifest, so this bounds manifest size by the producers
    /// active within it. A producer silent for longer must start over.
    #[serde(with = "humantime_serde")]
    pub producer_id_expiration: Duration,
    /// Whose clock timestamps the records.
    pub timestamp_type: TimestampType,
    /// A `CreateTime` batch with a record older than this by the broker's
    /// clock is refused (`None`: any age, Kafka's default). Old timestamps
    /// make retention delete a segment as soon as it is sealed.
    #[serde(with = "humantime_serde")]
    pub timestamp_before_max: Option<Duration>,
    /// A `CreateTime` batch with a record this far ahead of the broker's
    /// clock is refused (Kafka 4's default, 1h). Future timestamps keep a
    /// segment from retention until that time.
    #[serde(with = "humantime_serde")]
    pub timestamp_after_max: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 32 << 20,
            segment_ms: Duration::from_secs(600),
            index_interval_bytes: 4096,
            retention_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            max_batch_bytes: 1 << 20,
            manifest_keep: 8,
            manifest_max_segments: 256,
            tail_max_wal_objects: 4096,
            producer_id_expiration: Duration::from_secs(24 * 3600),
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max: None,
            timestamp_after_max: Some(Duration::from_secs(3600)),
        }
    }
}

impl LogConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<()> {
        if !(1024..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(Error::Config {
                key: "log.segment_bytes",
                reason: format!(
                    "must be between 1024 and {MAX_SEGMENT_BYTES} (1 GiB), got {}",
                    self.segment_bytes
                ),
            });
        }
        if self.max_batch_bytes < 1024 || self.max_batch_bytes as u64 > self.segment_bytes {
            return Err(Error::Config {
                key: "log.max_batch_bytes",
                reason: format!(
                    "must be between 1024 and log.segment_bytes ({}), got {}",
                    self.segment_bytes, self.max_batch_bytes
                ),
            });
        }
        if self.manifest_max_segments < 4 {
            return Err(Error::Config {
                key: "log.manifest_max_segments",
                reason: format!("must be at least 4, got {}", self.manifest_max_segments),
            });
        }
        if self.tail_max_wal_objects == 0 {
            return Err(Error::Config {
                key: "log.tail_max_wal_objects",
                reason: "must be at least 1".into(),
            });
        }
        if self.manifest_keep < 2 {
            return Err(Error::Config {
                key: "log.manifest_keep",
                reason: "must be at least 2".into(),
            });
        }
        Ok(())
    }
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// True when this was a retry of a batch already in the log; the
    /// offsets are the original ones and nothing was written.
    pub duplicate: bool,
}

/// The outcome of a read.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Stored batches, in order. The first may start before the requested
    /// offset (as in Kafka): skip its leading records.
    pub batches: Vec<Bytes>,
    /// The end of the durable log: the next offset to be made readable.
    pub high_watermark: i64,
    /// The first offset still in the log.
    pub log_start_offset: i64,
}

/// Durable progress, published to waiters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    durable_end: i64,
    failed: Option<(bool, String)>,
}

struct TailBatch {
    batch: Batch,
    /// WAL object of this incarnation's stream holding it, once durable.
    wal_seq: Option<WalSeq>,
    /// The broker's time when it was appended (producer expiry).
    appended_at_ms: i64,
}

/// Clears `State::sealing_bytes` when a seal ends, however it ends.
struct ClearSealingBytes<'a>(&'a Inner);

impl Drop for ClearSealingBytes<'_> {
    fn drop(&mut self) {
        self.0.state.lock().sealing_bytes = 0;
    }
}

impl State {
    /// Bytes of the unsealed tail that are durable: what a seal can take.
    fn durable_tail_bytes(&self) -> u64 {
        self.tail_bytes.saturating_sub(self.undurable_bytes)
    }
}

struct State {
    leader_epoch: i32,
    version: Version,
    manifest: Manifest,
    next_offset: i64,
    durable_end: i64,
    tail: VecDeque<TailBatch>,
    tail_bytes: u64,
    /// The part of `tail_bytes` not yet durable (in WAL flushes under way):
    /// the rest is what seals are behind on.
    undurable_bytes: u64,
    /// The part of `tail_bytes` a seal in progress is uploading.
    sealing_bytes: u64,
    tail_since: Option<Instant>,
    /// No tail record is in a WAL object of our stream below this.
    tail_floor: WalSeq,
    /// When the manifest naming `tail_floor` was written.
    floor_since: Instant,
    producers: ProducerTable,
    durable_producers: ProducerTable,
    closed: Option<Error>,
}

impl State {
    fn check_open(&self) -> Result<()> {
        match &self.closed {
            None => Ok(()),
            Some(Error::Fenced(m)) => Err(Error::Fenced(m.clone())),
            Some(e) => Err(Error::Unavailable(e.detail())),
        }
    }

    fn tail_start(&self) -> i64 {
        self.tail
            .front()
            .map_or(self.durable_end, |b| b.batch.base_offset())
    }
}

struct Inner {
    tp: TopicIdPartition,
    store: Arc<dyn ObjectStore>,
    cache: SegmentCache,
    wal: WalWriter,
    config: LogConfig,
    limits: BatchLimits,
    chain: Chain<Manifest>,
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
    seal_lock: tokio::sync::Mutex<()>,
    sealing: AtomicBool,
    /// Set by [`PartitionLog::abandon`]: never write a manifest again.
    abandoned: AtomicBool,
    /// Notified after every append (wakes batches that arrived ahead of
    /// their producer's previous one).
    appended: tokio::sync::Notify,
}

/// One partition's log, owned by this broker incarnation. Cheap to clone.
#[derive(Clone)]
pub struct PartitionLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("tp", &self.inner.tp)
            .finish()
    }
}

/// How long a batch that arrived ahead of its producer's previous batch
/// waits for it before it is refused as out of order.
const REORDER_WAIT: Duration = Duration::from_millis(500);

/// How long a background seal waits for the rest of a large tail to
/// become durable before leaving it to the next append or maintenance.
const RESEAL_WAIT: Duration = Duration::from_secs(60);

/// While `header` is ahead of its producer's next batch (a sequence gap),
/// waits up to [`REORDER_WAIT`] for the batches before it: with a
/// pipelining producer they may be in requests that this one overtook, as
/// requests are served concurrently. The sequence check after it refuses
/// the batch if the gap is still there.
async fn wait_for_predecessor(inner: &Inner, header: &crate::batch::BatchHeader) {
    let mut deadline = None;
    loop {
        let appended = {
            let st = inner.state.lock();
            match st.producers.check(header) {
                Err(Error::OutOfOrderSequence { expected, got, .. }) if got > expected => {
                    let mut appended = Box::pin(inner.appended.notified());
                    appended.as_mut().enable();
                    appended
                }
                _ => return,
            }
        };
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + REORDER_WAIT);
        if tokio::time::timeout_at(deadline, appended).await.is_err() {
            return;
        }
    }
}

/// A batch in the tail, durable or on its way: see
/// [`PartitionLog::append_staged`].
#[derive(Debug)]
#[must_use = "the append is acknowledged only once durable() returns"]
pub struct Appending {
    log: PartitionLog,
    result: AppendResult,
    wait: bool,
}

impl Appending {
    /// Where the batch landed (known before it is durable).
    pub fn result(&self) -> AppendResult {
        self.result
    }

    /// The log it went to.
    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    /// Waits until the batch is durable (with `Acks::All`; at once with
    /// `Acks::Leader`) and returns where it landed.
    pub async fn durable(self) -> Result<AppendResult> {
        if self.wait {
            self.log.wait_durable(self.result.last_offset + 1).await?;
        }
        Ok(self.result)
    }
}

/// A snapshot of a partition's offsets and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStatus {
    /// First readable offset.
    pub log_start_offset: i64,
    /// End of the durable log.
    pub high_watermark: i64,
    /// Next offset to assign (includes appends not yet durable).
    pub next_offset: i64,
    /// The leader epoch this incarnation claimed.
    pub leader_epoch: i32,
    /// Sealed segments.
    pub segments: usize,
    /// Bytes of sealed segments.
    pub sealed_bytes: u64,
    /// Bytes of the unsealed tail in memory.
    pub tail_bytes: u64,
    /// The manifest version last written.
    pub manifest_version: u64,
}

impl PartitionLog {
    /// Claims `tp` for the incarnation writing `wal`, recovering it from the
    /// bucket: see the module docs. Fails with [`Error::Fenced`] when another
    /// broker claims it at the same time.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        cache: SegmentCache,
        wal: WalWriter,
        tp: TopicIdPartition,
        config: LogConfig,
    ) -> Result<Self> {
        let me = wal.stream();
        Self::open_guarded(store, cache, wal, tp, config, &|o| *o != me).await
    }

    /// [`Self::open`], asking `may_fence` before fencing the incarnation
    /// the manifest names as owner: when it answers `false` (the owner is
    /// alive and is expected to release the partition), the open fails with
    /// [`Error::OwnedElsewhere`] and changes nothing. A manifest without an
    /// owner (released) is claimed without asking.
    ///
    /// A manifest naming *this* incarnation is a claim it lost track of (an
    /// open whose result never reached its caller, a release that failed
    /// halfway). `may_fence` is asked about this incarnation too: the
    /// caller answers `true` only when no log of the partition is in use or
    /// being released here, and the open then adopts the claim, replaying
    /// the tail from this incarnation's own WAL without fencing it.
    /// Otherwise the open fails with a retryable `Unavailable`.
    pub async fn open_guarded(
        store: Arc<dyn ObjectStore>,
        cache: SegmentCache,
        wal: WalWriter,
        tp: TopicIdPartition,
        config: LogConfig,
        may_fence: &(dyn Fn(&WalStream) -> bool + Send + Sync),
    ) -> Result<Self> {
        config.validate()?;
        wal.check()?;
        let chain: Chain<Manifest> = Chain::new(store.clone(), keys::manifest_chain(&tp));
        let me = wal.stream();
        let (version, mut manifest) = match chain.head(None).await? {
            Some((v, m)) => (Some(v), m),
            None => (None, Manifest::empty()),
        };
        let adopt = manifest.owner == Some(me);
        if adopt && !may_fence(&me) {
            return Err(Error::Unavailable(format!(
                "{tp} is already owned by this incarnation ({me}) and still in use here; retry once it is released"
            )));
        }
        if let Some(owner) = manifest.owner.filter(|o| *o != me)
            && !may_fence(&owner)
        {
            return Err(Error::OwnedElsewhere {
                tp: tp.to_string(),
                owner,
            });
        }
        // Replay the previous owner's unsealed tail, fencing it first.
        let mut replayed: Vec<Batch> = Vec::new();
        let mut end = manifest.sealed_end();
        if let Some(tail) = manifest.tail {
            if tail.from_offset != end {
                return Err(Error::corrupt(
                    chain_key(&tp, version),
                    format!(
                        "tail starts at {} but segments end at {end}",
                        tail.from_offset
                    ),
                ));
            }
            let objects = if adopt && tail.wal == me {
                tracing::warn!(%tp, "adopting a claim of this incarnation that no log holds");
                wal::own_objects(&store, me, tail.first_seq).await?
            } else {
                wal::fence(&store, tail.wal, tail.first_seq).await?
            };
            // Read ahead (in order): a replay of many small WAL objects is
            // bound by request latency, not bandwidth.
            // (Owned arguments: a closure over borrowed ones makes the
            // spawned open future fail the `Send` check, rust#102211.)
            let reads = objects.into_iter().map(|object| {
                let (store, tp) = (store.clone(), tp.clone());
                async move {
                    // The semaphore is static and never closed.
                    let _permit = REPLAY_READS.acquire().await.ok();
                    let read = wal::read_partition(&store, &object, &tp).await;
                    (object, read)
                }
            });
            let mut reads = futures::stream::iter(reads).buffered(REPLAY_READ_AHEAD);
            while let Some((object, chunks)) = reads.next().await {
                for (_, batches) in chunks? {
                    for b in batches {
                        if b.last_offset() < end {
                            continue; // sealed already
                        }
                        if b.base_offset() != end {
                            return Err(Error::corrupt(
                                object.key.as_ref(),
                                format!(
                                    "{tp}: expected a batch at offset {end}, found {}",
                                    b.base_offset()
                                ),
                            ));
                        }
                        end = b.last_offset() + 1;
                        manifest.producers.record(b.header());
                        replayed.push(b);
                    }
                }
            }
        }
        if end < manifest.next_offset {
            return Err(Error::corrupt(
                chain_key(&tp, version),
                format!(
                    "{tp}: the manifest says offsets below {} are durable but segments and WAL end at {end}; refusing to serve",
                    manifest.next_offset
                ),
            ));
        }
        if !replayed.is_empty() {
            let meta = segment::seal(
                &store,
                &tp,
                &replayed,
                config.index_interval_bytes,
                segment::Upload::Waited,
            )
            .await?;
            tracing::info!(%tp, base = meta.base_offset, last = meta.last_offset, "sealed the replayed WAL tail");
            manifest.segments.push(meta);
        }
        let floor = wal.next_seq();
        manifest.leader_epoch += 1;
        manifest.owner = Some(me);
        manifest.claim = Some(rand::random());
        manifest.next_offset = end;
        manifest.tail = Some(TailPointer {
            from_offset: end,
            wal: me,
            first_seq: floor,
        });
        let new_version = version.map_or(Version(0), Version::next);
        let manifest = create_manifest(&store, &tp, &chain, &config, new_version, manifest).await?;
        wal.retain_from(&tp, floor);
        tracing::info!(%tp, epoch = manifest.leader_epoch, next_offset = end, "partition opened");
        let state = State {
            leader_epoch: manifest.leader_epoch,
            version: new_version,
            next_offset: end,
            durable_end: end,
            tail: VecDeque::new(),
            tail_bytes: 0,
            undurable_bytes: 0,
            sealing_bytes: 0,
            tail_since: None,
            tail_floor: floor,
            floor_since: Instant::now(),
            producers: manifest.producers.clone(),
            durable_producers: manifest.producers.clone(),
            manifest,
            closed: None,
        };
        let (progress, _) = watch::channel(Progress {
            durable_end: end,
            failed: None,
        });
        let limits = BatchLimits {
            max_batch_bytes: config.max_batch_bytes,
            ..BatchLimits::default()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                tp,
                store,
                cache,
                wal,
                limits,
                config,
                chain,
                state: Mutex::new(state),
                progress,
                seal_lock: tokio::sync::Mutex::new(()),
                sealing: AtomicBool::new(false),
                abandoned: AtomicBool::new(false),
                appended: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.inner.tp.tp
    }

    /// The partition and its topic's id.
    pub fn id(&self) -> &TopicIdPartition {
        &self.inner.tp
    }

    /// Offsets and sizes now.
    pub fn status(&self) -> LogStatus {
        let st = self.inner.state.lock();
        LogStatus {
            log_start_offset: st.manifest.log_start_offset,
            high_watermark: st.durable_end,
            next_offset: st.next_offset,
            leader_epoch: st.leader_epoch,
            segments: st.manifest.segment_count(),
            sealed_bytes: st.manifest.sealed_bytes(),
            tail_bytes: st.tail_bytes,
            manifest_version: st.version.0,
        }
    }

    /// Appends one RecordBatch v2 (untrusted bytes: fully validated), at
    /// the wall clock's time (see [`Self::append_at`]).
    pub async fn append(&self, bytes: Bytes, acks: Acks) -> Result<AppendResult> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.append_at(bytes, acks, now_ms).await
    }

    /// Appends one RecordBatch v2 at broker time `now_ms`: validated,
    /// timestamped by `now_ms` for `LogAppendTime` topics or checked
    /// against it for `CreateTime` ones.
    pub async fn append_at(&self, bytes: Bytes, acks: Acks, now_ms: i64) -> Result<AppendResult> {
        self.append_staged_at(bytes, acks, now_ms)
            .await?
            .durable()
            .await
    }

    /// The first half of [`Self::append`]: the batch is checked, gets its
    /// offsets and is queued for the WAL when this returns; the returned
    /// [`Appending`] waits for durability (with `Acks::All`). Batches of
    /// one producer staged one after the other keep their order, while
    /// their durability waits overlap: a front end that pipelines requests
    /// stages them in order and awaits them in any order.
    pub async fn append_staged(&self, bytes: Bytes, acks: Acks) -> Result<Appending> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.append_staged_at(bytes, acks, now_ms).await
    }

    async fn append_staged_at(&self, bytes: Bytes, acks: Acks, now_ms: i64) -> Result<Appending> {
        let inner = &self.inner;
        let batch = validate(bytes, &inner.limits).await?;
        if batch.header().is_control() {
            return Err(Error::InvalidBatch(BatchError::ControlBatchNotAllowed));
        }
        let batch = self.apply_timestamp_type(batch, now_ms)?;
        let sealable = {
            let st = inner.state.lock();
            st.check_open()?;
            inner.wal.check_unsealed(batch.len())?;
            // Durable bytes no seal has taken (bytes still on their way
            // to the WAL do not count: a producer with several large
            // batches in flight is not a sign of trouble; nor do those a
            // seal is uploading: a busy partition is written while sealed).
            st.durable_tail_bytes().saturating_sub(st.sealing_bytes)
        };
        if sealable
            > inner
                .config
                .segment_bytes
                .saturating_mul(TAIL_GUARD_SEGMENTS)
        {
            // Past this many segments' worth, seals are failing or have not
            // been started since the tail became durable: start one (refused
            // appends must not leave the tail waiting for an append).
            self.seal_in_background();
            return Err(Error::Unavailable(format!(
                "{}: the unsealed tail holds {sealable} durable bytes because segments cannot be uploaded; retry later",
                inner.tp
            )));
        }
        let permit = inner.wal.reserve(batch.len()).await?;
        wait_for_predecessor(inner, batch.header()).await;
        let (result, seal_due) = {
            let mut st = inner.state.lock();
            st.check_open()?;
            match st.producers.check(batch.header())? {
                SeqCheck::Duplicate(meta) => (
                    AppendResult {
                        base_offset: meta.base_offset,
                        last_offset: meta.last_offset,
                        duplicate: true,
                    },
                    false,
                ),
                SeqCheck::Append => {
                    let base = st.next_offset;
                    let batch = batch.stamp(base, st.leader_epoch);
                    st.producers.record_at(batch.header(), now_ms);
                    st.next_offset = batch.last_offset() + 1;
                    st.tail_bytes += batch.len() as u64;
                    st.undurable_bytes += batch.len() as u64;
                    inner.wal.add_unsealed(batch.len() as i64);
                    if st.tail_since.is_none() {
                        st.tail_since = Some(Instant::now());
                    }
                    permit.submit(WalEntry {
                        partition: inner.tp.clone(),
                        leader_epoch: st.leader_epoch,
                        first_offset: base,
                        last_offset: batch.last_offset(),
                        bytes: batch.bytes().clone(),
                        sink: inner.clone(),
                    });
                    let result = AppendResult {
                        base_offset: base,
                        last_offset: batch.last_offset(),
                        duplicate: false,
                    };
                    st.tail.push_back(TailBatch {
                        batch,
                        wal_seq: None,
                        appended_at_ms: now_ms,
                    });
                    inner.appended.notify_waiters();
                    (result, st.tail_bytes >= inner.config.segment_bytes)
                }
            }
        };
        if seal_due {
            self.seal_in_background();
        }
        Ok(Appending {
            log: self.clone(),
            result,
            wait: acks == Acks::All,
        })
    }

    /// Stamps a `LogAppendTime` topic's batch with `now_ms`, or checks a
    /// `CreateTime` batch's timestamps against it.
    fn apply_timestamp_type(&self, batch: Batch, now_ms: i64) -> Result<Batch> {
        let config = &self.inner.config;
        if config.timestamp_type == TimestampType::LogAppendTime {
            return Ok(batch.with_log_append_time(now_ms));
        }
        let (first, max) = batch.timestamp_range();
        let checks = [
            (
                "ahead of",
                "timestamp_after_max",
                config.timestamp_after_max,
                max,
                max.saturating_sub(now_ms),
            ),
            (
                "behind",
                "timestamp_before_max",
                config.timestamp_before_max,
                first,
                now_ms.saturating_sub(first),
            ),
        ];
        for (side, key, limit, ts, off) in checks {
            if let Some(limit) = limit
                && off > i64::try_from(limit.as_millis()).unwrap_or(i64::MAX)
            {
                return Err(Error::InvalidTimestamp(format!(
                    "{}: a record is timestamped {off} ms {side} the broker's clock, more than the topic's {key} ({limit:?}); fix the producer's clock or use log_append_time: {ts}",
                    self.inner.tp
                )));
            }
        }
        Ok(batch)
    }

    /// Waits until every offset below `end` is durable.
    async fn wait_durable(&self, end: i64) -> Result<()> {
        let mut rx = self.inner.progress.subscribe();
        let p = rx
            .wait_for(|p| p.durable_end >= end || p.failed.is_some())
            .await
            .map_err(|_| Error::Unavailable("partition log dropped".into()))?;
        if p.durable_end >= end {
            return Ok(());
        }
        match &p.failed {
            Some((true, m)) => Err(Error::Fenced(m.clone())),
            Some((false, m)) => Err(Error::Unavailable(m.clone())),
            None => Ok(()),
        }
    }

    /// Waits (up to `timeout`) until the durable log reaches past `offset`,
    /// for long-polling fetches. Returns the high watermark.
    pub async fn wait_for_data(&self, offset: i64, timeout: Duration) -> i64 {
        let mut rx = self.inner.progress.subscribe();
        let _ = tokio::time::timeout(
            timeout,
            rx.wait_for(|p| p.durable_end > offset || p.failed.is_some()),
        )
        .await;
        rx.borrow().durable_end
    }

    /// Reads stored batches from `offset` on, up to about `max_bytes` (at
    /// least one whole batch). Only durable records are returned. An offset
    /// equal to the high watermark gives an empty result.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let seg = {
            let st = self.inner.state.lock();
            let hw = st.durable_end;
            let start = st.manifest.log_start_offset;
            if offset < start || offset > hw {
                return Err(Error::OffsetOutOfRange {
                    offset,
                    log_start: start,
                    next_offset: hw,
                });
            }
            let mut result = ReadResult {
                batches: Vec::new(),
                high_watermark: hw,
                log_start_offset: start,
            };
            if offset == hw {
                return Ok(result);
            }
            if offset >= st.tail_start() {
                let mut total = 0usize;
                let from = st.tail.partition_point(|b| b.batch.last_offset() < offset);
                for b in st.tail.range(from..) {
                    if b.batch.base_offset() >= hw
                        || (total > 0 && total + b.batch.len() > max_bytes)
                    {
                        break;
                    }
                    total += b.batch.len();
                    result.batches.push(b.batch.bytes().clone());
                }
                return Ok(result);
            }
            if offset < st.manifest.unarchived_start() {
                // In an archive: find its segment outside the lock.
                let reference = crate::archive::archive_of(&st.manifest.archives, offset);
                (Err(reference.cloned()), result)
            } else {
                let segs = &st.manifest.segments;
                let i = segs.partition_point(|s| s.last_offset < offset);
                let seg = segs.get(i).cloned();
                let next = seg
                    .as_ref()
                    .and_then(|s| st.manifest.next_segment(s).cloned());
                (Ok((seg, next)), result)
            }
        };
        let (found, mut result) = seg;
        let (seg, next) = match found {
            Ok(found) => found,
            Err(Some(a)) => {
                let seg = crate::archive::segment_in(&self.inner.store, &a, offset).await?;
                let next = {
                    let st = self.inner.state.lock();
                    seg.as_ref()
                        .and_then(|s| st.manifest.next_segment(s).cloned())
                };
                (seg, next)
            }
            Err(None) => (None, None),
        };
        let Some(seg) = seg else {
            return Err(Error::Unavailable(format!(
                "{}: offset {offset} is neither sealed nor in the tail",
                self.inner.tp
            )));
        };
        match segment::read(&self.inner.cache, &seg, next.as_ref(), offset, max_bytes).await {
            Ok(batches) => {
                result.batches = batches;
                Ok(result)
            }
            Err(Error::Store(object_store::Error::NotFound { .. })) => {
                let st = self.inner.state.lock();
                Err(Error::OffsetOutOfRange {
                    offset,
                    log_start: st.manifest.log_start_offset,
                    next_offset: st.durable_end,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The first offset whose record timestamp is `>= ts` (Kafka's
    /// ListOffsets by time), or `None` when all records are older.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>> {
        let (archives, segments, tail) = {
            let st = self.inner.state.lock();
            let tail: Vec<(i64, i64)> = st
                .tail
                .iter()
                .filter(|b| b.batch.base_offset() < st.durable_end)
                .map(|b| (b.batch.max_timestamp(), b.batch.base_offset()))
                .collect();
            (
                st.manifest.archives.clone(),
                st.manifest.segments.clone(),
                tail,
            )
        };
        // Only segments holding a record at or after `ts` are read.
        for a in archives.iter().filter(|a| a.max_timestamp >= ts) {
            let archived = crate::archive::load(&self.inner.store, &a.key).await?;
            for seg in archived.iter().filter(|s| s.max_timestamp >= ts) {
                if let Some(o) = segment::offset_for_timestamp(&self.inner.cache, seg, ts).await? {
                    return Ok(Some(o));
                }
            }
        }
        for seg in segments.iter().filter(|s| s.max_timestamp >= ts) {
            if let Some(o) = segment::offset_for_timestamp(&self.inner.cache, seg, ts).await? {
                return Ok(Some(o));
            }
        }
        Ok(tail
            .into_iter()
            .find(|(max_ts, _)| *max_ts >= ts)
            .map(|(_, o)| o))
    }

    fn seal_in_background(&self) {
        if self.inner.sealing.swap(true, Ordering::SeqCst) {
            return;
        }
        let log = self.clone();
        tokio::spawn(async move {
            loop {
                let sealed = match log.seal().await {
                    Ok(sealed) => sealed.is_some(),
                    Err(e) => {
                        tracing::warn!(tp = %log.inner.tp, error = %e, "background seal failed; will retry on the next append");
                        break;
                    }
                };
                // Under load a segment's worth may have become durable
                // while this seal uploaded: seal it at once (waiting for an
                // append would stall behind the tail guard).
                let (tail_bytes, durable_bytes, next) = {
                    let st = log.inner.state.lock();
                    (st.tail_bytes, st.durable_tail_bytes(), st.next_offset)
                };
                let segment_bytes = log.inner.config.segment_bytes;
                if tail_bytes < segment_bytes {
                    break;
                }
                if sealed && durable_bytes >= segment_bytes {
                    continue;
                }
                // A seal takes only what is durable: what was still on its
                // way to the WAL may be a segment's worth by itself (large
                // batches in flight), and no append may come to seal it.
                match tokio::time::timeout(RESEAL_WAIT, log.wait_durable(next)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            log.inner.sealing.store(false, Ordering::SeqCst);
        });
    }

    /// Seals the durable unsealed tail into a segment and writes the next
    /// manifest. Returns the new segment, or `None` when there was nothing
    /// durable to seal.
    pub async fn seal(&self) -> Result<Option<SegmentMeta>> {
        let inner = &self.inner;
        let _guard = inner.seal_lock.lock().await;
        let batches: Vec<Batch> = {
            let mut st = inner.state.lock();
            st.check_open()?;
            let batches: Vec<Batch> = st
                .tail
                .iter()
                .take_while(|b| b.batch.base_offset() < st.durable_end)
                .map(|b| b.batch.clone())
                .collect();
            st.sealing_bytes = batches.iter().map(|b| b.len() as u64).sum();
            batches
        };
        // However the seal ends, its bytes are no longer being sealed.
        let _sealing_bytes = ClearSealingBytes(inner);
        if batches.is_empty() {
            return Ok(None);
        }
        // The semaphore is static and never closed.
        let _sealing = SEALS.acquire().await.ok();
        let started = Instant::now();
        let meta = segment::seal(
            &inner.store,
            &inner.tp,
            &batches,
            inner.config.index_interval_bytes,
            segment::Upload::Background,
        )
        .await?;
        let uploaded = started.elapsed();
        let sealed_end = meta.last_offset + 1;
        let (version, manifest) = {
            let st = inner.state.lock();
            let mut m = st.manifest.clone();
            m.segments.push(meta.clone());
            let floor = if st.next_offset == sealed_end {
                // Nothing left unsealed, nothing in flight: whatever is
                // appended next lands at or above the writer's next
                // sequence, so the partition pins no older object.
                inner.wal.next_seq()
            } else {
                st.tail
                    .iter()
                    .take_while(|b| b.batch.base_offset() < sealed_end)
                    .filter_map(|b| b.wal_seq)
                    .max()
                    .unwrap_or(st.tail_floor)
            };
            m.tail = Some(TailPointer {
                from_offset: sealed_end,
                wal: inner.wal.stream(),
                first_seq: floor,
            });
            m.next_offset = st.durable_end;
            m.producers = st.durable_producers.clone();
            (st.version.next(), m)
        };
        let manifest = self.write_manifest(version, manifest).await?;
        let floor = manifest.tail.map_or(WalSeq(0), |t| t.first_seq);
        {
            let mut st = inner.state.lock();
            while st
                .tail
                .front()
                .is_some_and(|b| b.batch.base_offset() < sealed_end)
            {
                if let Some(b) = st.tail.pop_front() {
                    st.tail_bytes -= b.batch.len() as u64;
                    inner.wal.add_unsealed(-(b.batch.len() as i64));
                }
            }
            st.sealing_bytes = 0;
            st.tail_since = if st.tail.is_empty() {
                None
            } else {
                Some(Instant::now())
            };
            st.tail_floor = floor;
            st.floor_since = Instant::now();
            st.manifest = manifest;
            st.version = version;
        }
        let written = started.elapsed();
        inner.wal.retain_from(&inner.tp, floor);
        self.gc_manifests(version).await;
        tracing::debug!(
            tp = %inner.tp, bytes = meta.size, base = meta.base_offset, last = meta.last_offset,
            upload_ms = uploaded.as_millis() as u64, manifest_ms = (written - uploaded).as_millis() as u64,
            gc_ms = (started.elapsed() - written).as_millis() as u64,
            "sealed a segment"
        );
        Ok(Some(meta))
    }

    /// Moves an empty tail's WAL floor up to the writer's next sequence
    /// with one manifest write, so an idle partition stops keeping the
    /// broker's WAL from collection (and a takeover of it from replaying
    /// that history). Returns whether it wrote a manifest: `false` when
    /// the tail holds records (seal it instead) or the floor is current.
    pub async fn advance_floor(&self) -> Result<bool> {
        let inner = &self.inner;
        let _guard = inner.seal_lock.lock().await;
        let (version, manifest, floor) = {
            let st = inner.state.lock();
            st.check_open()?;
            if !st.tail.is_empty() || st.next_offset != st.durable_end {
                return Ok(false);
            }
            // Read under the lock: an append after it lands at or above.
            let floor = inner.wal.next_seq();
            if floor <= st.tail_floor {
                return Ok(false);
            }
            let mut m = st.manifest.clone();
            m.tail = Some(TailPointer {
                from_offset: st.durable_end,
                wal: inner.wal.stream(),
                first_seq: floor,
            });
            m.next_offset = st.durable_end;
            m.producers = st.durable_producers.clone();
            (st.version.next(), m, floor)
        };
        let manifest = self.write_manifest(version, manifest).await?;
        {
            let mut st = inner.state.lock();
            st.tail_floor = floor;
            st.floor_since = Instant::now();
            st.manifest = manifest;
            st.version = version;
        }
        inner.wal.retain_from(&inner.tp, floor);
        self.gc_manifests(version).await;
        Ok(true)
    }

    /// WAL objects this partition keeps from collection now.
    pub fn pinned_wal_objects(&self) -> u64 {
        let floor = self.inner.state.lock().tail_floor;
        self.inner.wal.next_seq().0.saturating_sub(floor.0)
    }

    async fn write_manifest(&self, version: Version, manifest: Manifest) -> Result<Manifest> {
        if self.inner.abandoned.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(format!(
                "{} was abandoned by this broker; not writing manifest {version}",
                self.inner.tp
            )));
        }
        let inner = &self.inner;
        match create_manifest(
            &inner.store,
            &inner.tp,
            &inner.chain,
            &inner.config,
            version,
            manifest,
        )
        .await
        {
            Ok(m) => Ok(m),
            Err(e) => {
                if e.is_fenced() {
                    tracing::warn!(tp = %self.inner.tp, error = %e, "partition taken over by another broker: stop serving it");
                    self.close_with(Error::Fenced(format!(
                        "{} was taken over by another broker: {}",
                        self.inner.tp,
                        e.detail()
                    )));
                }
                Err(e)
            }
        }
    }

    async fn gc_manifests(&self, head: Version) {
        if let Err(e) = self
            .inner
            .chain
            .gc(head, self.inner.config.manifest_keep)
            .await
        {
            tracing::debug!(tp = %self.inner.tp, error = %e, "manifest garbage collection failed");
        }
    }

    /// Time-based housekeeping: seals a tail older than `segment_ms` and
    /// applies retention. `now_ms` is wall-clock time in milliseconds.
    pub async fn maintain(&self, now_ms: i64) -> Result<()> {
        let config = &self.inner.config;
        {
            let mut st = self.inner.state.lock();
            let expired = st.producers.expire(now_ms, config.producer_id_expiration);
            st.durable_producers
                .expire(now_ms, config.producer_id_expiration);
            if expired > 0 {
                tracing::debug!(tp = %self.inner.tp, expired, "expired idle producers");
            }
        }
        let (seal, advance) = {
            let st = self.inner.state.lock();
            let pinned = self.inner.wal.next_seq().0.saturating_sub(st.tail_floor.0);
            let too_many = pinned >= config.tail_max_wal_objects;
            let idle = st.tail.is_empty() && st.next_offset == st.durable_end;
            let old_tail = st
                .tail_since
                .is_some_and(|t| t.elapsed() >= config.segment_ms);
            let old_floor = pinned > 0 && st.floor_since.elapsed() >= config.segment_ms;
            (
                !idle && (old_tail || too_many),
                idle && (old_floor || too_many),
            )
        };
        if seal {
            self.seal().await?;
        }
        if advance {
            self.advance_floor().await?;
        }
        self.apply_retention(now_ms).await?;
        Ok(())
    }

    /// Deletes whole segments past the retention limits (time: newest record
    /// older than `retention_ms` before `now_ms`; size: oldest first while
    /// sealed bytes exceed `retention_bytes`), advancing the log start.
    /// Returns the number of segments deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        self.delete_old_segments(Some(now_ms), None).await
    }

    /// Deletes the whole segments (and archives) whose records all lie
    /// below `offset`, advancing the log start (Kafka's DeleteRecords, at
    /// segment granularity: records of a segment that straddles `offset`
    /// and of the unsealed tail stay). Returns the number of segments
    /// deleted. Used by state kept as snapshot + log (consumer-group
    /// coordinators), once a snapshot covers everything below `offset`.
    pub async fn delete_records_before(&self, offset: i64) -> Result<usize> {
        self.delete_old_segments(None, Some(offset)).await
    }

    /// [`Self::apply_retention`] (with `now_ms`) and
    /// [`Self::delete_records_before`] (with `below`).
    async fn delete_old_segments(&self, now_ms: Option<i64>, below: Option<i64>) -> Result<usize> {
        let inner = &self.inner;
        let _guard = inner.seal_lock.lock().await;
        let (version, manifest, doomed, doomed_archives) = {
            let st = inner.state.lock();
            st.check_open()?;
            let old = &st.manifest;
            let cutoff = now_ms.and_then(|now_ms| {
                inner
                    .config
                    .retention_ms
                    .map(|ret| now_ms - i64::try_from(ret.as_millis()).unwrap_or(i64::MAX))
            });
            let expired = |max_timestamp: i64, last_offset: i64| {
                cutoff.is_some_and(|c| max_timestamp < c) || below.is_some_and(|b| last_offset < b)
            };
            // As Kafka: delete the oldest while what remains is still at
            // least the limit, never below it (a whole archive is a large
            // step).
            let over = |total: u64, size: u64| {
                now_ms.is_some()
                    && inner
                        .config
                        .retention_bytes
                        .is_some_and(|l| total.saturating_sub(size) >= l && total > l)
            };
            let mut total = old.sealed_bytes();
            // Oldest first: whole archives, then (once none is left) the
            // manifest's own segments.
            let mut archives = 0;
            for a in &old.archives {
                if !(expired(a.max_timestamp, a.last_offset) || over(total, a.size)) {
                    break;
                }
                total = total.saturating_sub(a.size);
                archives += 1;
            }
            let mut n = 0;
            if archives == old.archives.len() {
                for s in &old.segments {
                    if !(expired(s.max_timestamp, s.last_offset) || over(total, s.size)) {
                        break;
                    }
                    total = total.saturating_sub(s.size);
                    n += 1;
                }
            }
            if archives == 0 && n == 0 {
                return Ok(0);
            }
            let end = old.sealed_end();
            let mut m = old.clone();
            let doomed_archives: Vec<crate::manifest::ArchiveRef> =
                m.archives.drain(..archives).collect();
            let doomed: Vec<SegmentMeta> = m.segments.drain(..n).collect();
            let first = m
                .archives
                .first()
                .map(|a| a.base_offset)
                .or_else(|| m.segments.first().map(|s| s.base_offset))
                .unwrap_or(end);
            m.log_start_offset = m.log_start_offset.max(first);
            m.next_offset = m.next_offset.max(st.manifest.next_offset);
            (st.version.next(), m, doomed, doomed_archives)
        };
        let manifest = self.write_manifest(version, manifest).await?;
        {
            let mut st = inner.state.lock();
            st.manifest.archives = manifest.archives.clone();
            st.manifest.segments = manifest.segments.clone();
            st.manifest.log_start_offset = manifest.log_start_offset;
            st.version = version;
        }
        let mut keys: Vec<String> = doomed.iter().map(|s| s.key.clone()).collect();
        for a in &doomed_archives {
            match crate::archive::load(&inner.store, &a.key).await {
                Ok(segments) => keys.extend(segments.iter().map(|s| s.key.clone())),
                // Its segments are then left to the bucket sweep (below
                // the log start).
                Err(e) => {
                    tracing::debug!(key = %a.key, error = %e, "cannot read an expired archive")
                }
            }
            keys.push(a.key.clone());
        }
        let segments = doomed.len()
            + doomed_archives
                .iter()
                .map(|a| a.segments as usize)
                .sum::<usize>();
        for key in keys {
            let key = object_store::path::Path::from(key.as_str());
            if let Err(e) = inner.store.delete(&key).await {
                tracing::debug!(%key, error = %e, "could not delete an expired segment");
            }
        }
        tracing::info!(tp = %inner.tp, segments, log_start = manifest.log_start_offset, "retention deleted segments");
        Ok(segments)
    }

    /// Graceful hand-over: refuses new appends, waits for pending ones,
    /// seals the tail and writes a manifest with no owner, so the next
    /// owner opens it without fencing or replay.
    pub async fn release(&self) -> Result<()> {
        let inner = &self.inner;
        let next = {
            let mut st = inner.state.lock();
            st.check_open()?;
            st.closed = Some(Error::Unavailable(format!(
                "{} is being released by this broker",
                inner.tp
            )));
            st.next_offset
        };
        self.wait_durable(next).await?;
        let _guard = inner.seal_lock.lock().await;
        let _sealing = SEALS.acquire().await.ok();
        let batches: Vec<Batch> = inner
            .state
            .lock()
            .tail
            .iter()
            .map(|b| b.batch.clone())
            .collect();
        let mut m = inner.state.lock().manifest.clone();
        if !batches.is_empty() {
            m.segments.push(
                segment::seal(
                    &inner.store,
                    &inner.tp,
                    &batches,
                    inner.config.index_interval_bytes,
                    segment::Upload::Waited,
                )
                .await?,
            );
        }
        let version = {
            let st = inner.state.lock();
            m.owner = None;
            m.tail = None;
            m.next_offset = st.durable_end;
            m.producers = st.durable_producers.clone();
            st.version.next()
        };
        let m = self.write_manifest(version, m).await?;
        {
            let mut st = inner.state.lock();
            st.tail.clear();
            inner.wal.add_unsealed(-(st.tail_bytes as i64));
            st.tail_bytes = 0;
            st.undurable_bytes = 0;
            st.manifest = m;
            st.version = version;
        }
        inner.wal.release(&inner.tp);
        tracing::info!(tp = %inner.tp, "partition released");
        Ok(())
    }

    /// Stops using this log without writing anything more to the bucket:
    /// appends, reads and seals fail with `Unavailable(reason)`, and no
    /// manifest is written after this returns (it waits for a seal in
    /// progress). For a partition whose topic was deleted or re-created:
    /// its manifest chain and segments are being purged, so a release
    /// would write stale state into the next incarnation's keys.
    pub async fn abandon(&self, reason: &str) {
        let inner = &self.inner;
        inner.abandoned.store(true, Ordering::SeqCst);
        self.close_with(Error::Unavailable(format!("{}: {reason}", inner.tp)));
        // A seal or release that passed its checks holds the lock until its
        // manifest write returned.
        drop(inner.seal_lock.lock().await);
        inner.wal.release(&inner.tp);
        tracing::info!(tp = %inner.tp, reason, "partition abandoned");
    }

    fn close_with(&self, error: Error) {
        let fenced = error.is_fenced();
        let msg = error.detail();
        let mut st = self.inner.state.lock();
        if st.closed.is_none() {
            st.closed = Some(error);
        }
        drop(st);
        self.inner.progress.send_modify(|p| {
            p.failed.get_or_insert((fenced, msg));
        });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // What this log still held stops counting against the budget.
        let held = self.state.get_mut().tail_bytes;
        self.wal.add_unsealed(-(held as i64));
    }
}

impl WalSink for Inner {
    fn durable(&self, seq: WalSeq, last_offset: i64) {
        let new_end = {
            let mut st = self.state.lock();
            if last_offset < st.durable_end {
                return;
            }
            let st = &mut *st;
            let from = st
                .tail
                .partition_point(|b| b.batch.last_offset() < st.durable_end);
            for b in st.tail.range_mut(from..) {
                if b.batch.base_offset() > last_offset {
                    break;
                }
                b.wal_seq = Some(seq);
                st.undurable_bytes = st.undurable_bytes.saturating_sub(b.batch.len() as u64);
                st.durable_producers
                    .record_at(b.batch.header(), b.appended_at_ms);
            }
            st.durable_end = last_offset + 1;
            st.durable_end
        };
        self.progress.send_modify(|p| p.durable_end = new_end);
    }

    fn failed(&self, error: &Error) {
        let fenced = error.is_fenced();
        let msg = format!("{}: {}", self.tp, error.detail());
        {
            let mut st = self.state.lock();
            if st.closed.is_none() {
                st.closed = Some(if fenced {
                    Error::Fenced(msg.clone())
                } else {
                    Error::Unavailable(msg.clone())
                });
            }
        }
        self.progress.send_modify(|p| {
            p.failed.get_or_insert((fenced, msg));
        });
    }
}

fn chain_key(tp: &TopicIdPartition, version: Option<Version>) -> String {
    keys::manifest_chain(tp)
        .version(version.unwrap_or(Version(0)))
        .to_string()
}

/// Writes manifest `version`: first moves old segment entries of a long
/// manifest into an archive (every manifest write goes through here, so
/// none is ever long), then creates the version, retrying transient
/// errors a few times (the create is idempotent for identical content).
/// Returns the manifest as written.
async fn create_manifest(
    store: &Arc<dyn ObjectStore>,
    tp: &TopicIdPartition,
    chain: &Chain<Manifest>,
    config: &LogConfig,
    version: Version,
    mut m: Manifest,
) -> Result<Manifest> {
    crate::archive::archive_if_long(store, tp, &mut m, config.manifest_max_segments).await?;
    let (m, bytes) = encode_manifest(chain, m).await?;
    let mut backoff = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        match chain.create_encoded(version, bytes.clone()).await {
            Ok(()) => return Ok(m),
            Err(e) if e.is_fenced() || attempt >= 5 => return Err(e),
            Err(e) => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "manifest write failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Manifests with more segments than this are encoded on a blocking
/// thread: JSON of thousands of segments takes milliseconds.
const INLINE_MANIFEST_SEGMENTS: usize = 256;

/// Encodes `m` for `chain`, off the async runtime when it is large, and
/// hands it back.
async fn encode_manifest(chain: &Chain<Manifest>, m: Manifest) -> Result<(Manifest, Bytes)> {
    if m.segments.len() <= INLINE_MANIFEST_SEGMENTS {
        let bytes = chain.encode(&m)?;
        return Ok((m, bytes));
    }
    let chain = chain.clone();
    tokio::task::spawn_blocking(move || chain.encode(&m).map(|b| (m, b)))
        .await
        .map_err(|e| Error::Unavailable(format!("manifest encoding did not finish: {e}")))?
}
