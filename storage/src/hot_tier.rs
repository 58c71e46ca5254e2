//! The hot tier: a foyer hybrid cache (memory, plus local disk when
//! configured) of fixed-size, aligned blocks of immutable segment objects.
//!
//! A read of bytes `range` of an object is served from the blocks
//! `range.start / block_bytes ..= (range.end - 1) / block_bytes`. Blocks are
//! looked up in memory, then on disk; the missing ones are fetched with one
//! ranged GET per run of contiguous missing blocks. Concurrent misses of the
//! same block share one fetch (foyer's `get_or_fetch`).
//!
//! Read-ahead, for consumers catching up on sealed data: after a read, the
//! window of the next `read_ahead_blocks` blocks is kept cached or in flight,
//! fetched in the background as parallel ranged GETs of up to
//! [`READ_AHEAD_RUN_BLOCKS`] blocks each, so that a sequential reader finds
//! its next blocks in memory and the store's bandwidth, not its latency, sets
//! the pace. A partition log also prefetches the start of the next segment
//! ([`SegmentCache::prefetch`]) as a reader nears the end of one. Read-ahead
//! in flight is bounded to a quarter of the memory tier, so it cannot push
//! out the blocks it fetched before they are read.
//!
//! Invariants:
//! - The cache only ever holds bytes of immutable objects, keyed by
//!   `(object key, block index)`. An object key must never be reused for
//!   different bytes; sealed segments never are.
//! - Every block has exactly `min(block_bytes, object_size - index *
//!   block_bytes)` bytes; a block of any other length is reported as corrupt,
//!   never sliced.
//! - The disk tier is only a cache: deleting `disk_dir` loses nothing. The
//!   hot tier owns `disk_dir`; when the block layout (block size, disk size,
//!   key encoding, foyer format) changes it discards the old disk cache rather
//!   than recover entries written with another layout.
//!
//! The one thing not to break: a cached block is served without checking the
//! bucket, so anything that changes what bytes a block key names (the key
//! encoding, block alignment) must bump `LAYOUT_VERSION`.

use std::{
    collections::HashSet,
    ops::Range,
    path::{Path as FsPath, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, PsyncIoEngineConfig, RecoverMode,
};
use futures::{FutureExt, future::join_all};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// Smallest allowed `block_bytes` (foyer aligns disk entries to 4 KiB pages).
const MIN_BLOCK_BYTES: usize = 4 * KIB;
/// Largest allowed `block_bytes`.
const MAX_BLOCK_BYTES: usize = 64 * MIB;
/// Largest allowed `read_ahead_blocks`.
const MAX_READ_AHEAD_BLOCKS: usize = 256;
/// Largest read-ahead GET, in blocks. The window is fetched as GETs of this
/// many blocks (fewer only at an object's end), so a sequential reader makes
/// one GET per `READ_AHEAD_RUN_BLOCKS` blocks rather than one per block.
pub const READ_AHEAD_RUN_BLOCKS: u64 = 4;
/// Byte copies larger than this leave the async runtime (`spawn_blocking`).
const INLINE_COPY_LIMIT: usize = MIB;
/// Memory charged per cached block on top of its key and bytes.
const ENTRY_OVERHEAD_BYTES: usize = 128;
/// Longest object key accepted when decoding a block key from disk.
const MAX_OBJECT_KEY_BYTES: usize = 64 * KIB;

/// Bump when the block key encoding or the meaning of a block changes, so
/// that disk caches written by older versions are discarded, not recovered.
const LAYOUT_VERSION: u32 = 1;
/// The on-disk format of foyer's block engine we write; part of the layout.
const FOYER_FORMAT: &str = "foyer-0.22";
/// File in `disk_dir` describing the layout of the blocks below it.
const LAYOUT_FILE: &str = "hot-tier-layout";
/// Directory in `disk_dir` that foyer owns.
const BLOCKS_DIR: &str = "blocks";

/// Settings of the hot tier (the block cache in front of segment reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct HotTierConfig {
    /// Bytes of blocks kept in memory. More memory serves more re-reads
    /// without disk IO or GETs, at the cost of broker RAM. Must hold at least
    /// two blocks; a quarter of it bounds read-ahead in flight. Default:
    /// 256 MiB.
    pub memory_bytes: usize,
    /// Directory of the disk tier, or `None` to cache in memory only. The hot
    /// tier owns this directory; deleting it loses nothing but warmth.
    pub disk_dir: Option<PathBuf>,
    /// Bytes of local disk used by the disk tier. More disk means fewer GETs
    /// (cost, latency) for data read again after it left memory. Must hold at
    /// least 16 blocks. Ignored without `disk_dir`. Default: 1 GiB.
    pub disk_bytes: usize,
    /// Size of a cached block, a power of two from 4 KiB to 64 MiB. Larger
    /// blocks mean fewer GETs for sequential reads but more bytes fetched and
    /// cached for small random reads. Default: 1 MiB.
    pub block_bytes: usize,
    /// Blocks after a read kept cached or in flight, for sequential readers
    /// (at most 256; 0 turns read-ahead off). They are fetched as parallel
    /// GETs of up to 4 blocks, so a consumer catching up reads at about
    /// `read_ahead_blocks × block_bytes` per GET round trip, at the cost of
    /// fetching blocks nobody may read when it stops. Read-ahead in flight
    /// never exceeds a quarter of `memory_bytes`. Default: 64 (64 MiB, 16
    /// GETs of 4 MiB, about what S3 needs to serve a reader at 300 MB/s).
    pub read_ahead_blocks: usize,
}

impl Default for HotTierConfig {
    fn default() -> Self {
        Self {
            memory_bytes: 256 * MIB,
            disk_dir: None,
            disk_bytes: GIB,
            block_bytes: MIB,
            read_ahead_blocks: 64,
        }
    }
}

impl HotTierConfig {
    /// Checks every setting; the error names the offending key.
    pub fn validate(&self) -> Result<()> {
        if !self.block_bytes.is_power_of_two()
            || !(MIN_BLOCK_BYTES..=MAX_BLOCK_BYTES).contains(&self.block_bytes)
        {
            return Err(Error::Config {
                key: "hot_tier.block_bytes",
                reason: format!(
                    "must be a power of two from {MIN_BLOCK_BYTES} to {MAX_BLOCK_BYTES}: {}",
                    self.block_bytes
                ),
            });
        }
        if self.memory_bytes < 2 * self.block_bytes {
            return Err(Error::Config {
                key: "hot_tier.memory_bytes",
                reason: format!(
                    "must hold at least two blocks of {} bytes: {}",
                    self.block_bytes, self.memory_bytes
                ),
            });
        }
        if self.read_ahead_blocks > MAX_READ_AHEAD_BLOCKS {
            return Err(Error::Config {
                key: "hot_tier.read_ahead_blocks",
                reason: format!(
                    "must be at most {MAX_READ_AHEAD_BLOCKS}: {}",
                    self.read_ahead_blocks
                ),
            });
        }
        if let Some(dir) = &self.disk_dir {
            if dir.as_os_str().is_empty() {
                return Err(Error::Config {
                    key: "hot_tier.disk_dir",
                    reason: "must not be empty (leave it unset for a memory-only cache)"
                        .to_string(),
                });
            }
            DiskLayout::new(self.block_bytes, self.disk_bytes)?;
        }
        Ok(())
    }
}

/// A snapshot of the hot tier's counters since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HotTierStats {
    /// Blocks of reads served from memory or local disk.
    pub hits: u64,
    /// Blocks of reads that had to be fetched from the object store.
    pub misses: u64,
    /// Ranged GETs issued (by reads and read-ahead).
    pub get_requests: u64,
    /// Bytes received from the object store.
    pub bytes_fetched: u64,
    /// Blocks fetched by read-ahead.
    pub read_ahead_blocks: u64,
    /// Bytes the memory tier currently charges for its blocks.
    pub memory_bytes_used: usize,
}

/// A block cache of immutable segment objects, in front of an object store.
///
/// Cheap to clone: clones share the cache.
#[derive(Debug, Clone)]
pub struct SegmentCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    cache: HybridCache<BlockKey, Bytes>,
    block_bytes: u64,
    read_ahead_blocks: u64,
    /// One permit per block of read-ahead in flight: a quarter of the
    /// memory tier.
    read_ahead_permits: Arc<Semaphore>,
    /// Blocks read-ahead is fetching, so that overlapping windows of
    /// consecutive reads do not GET them twice.
    read_ahead_in_flight: Mutex<HashSet<BlockKey>>,
    counters: Arc<Counters>,
    /// Cancelled by [`SegmentCache::close`]; stops read-ahead.
    closed: CancellationToken,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    get_requests: AtomicU64,
    bytes_fetched: AtomicU64,
    read_ahead_blocks: AtomicU64,
}

/// Why blocks are loaded: counted differently in the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Read,
    ReadAhead,
}

impl SegmentCache {
    /// The store it reads from.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// Opens the cache over `store`. With a `disk_dir`, blocks cached by an
    /// earlier run with the same layout are recovered; the directory is
    /// created if missing.
    pub async fn new(store: Arc<dyn ObjectStore>, config: HotTierConfig) -> Result<Self> {
        config.validate()?;
        let builder = HybridCacheBuilder::new()
            .with_name("strata-hot-tier")
            .with_policy(HybridCachePolicy::WriteOnEviction)
            .with_flush_on_close(true)
            .memory(config.memory_bytes)
            .with_shards(memory_shards(config.memory_bytes, config.block_bytes))
            .with_weighter(|key: &BlockKey, block: &Bytes| key.weight() + block.len())
            .storage();
        let cache = match &config.disk_dir {
            // No engine config: foyer runs its no-op disk engine.
            None => builder.build().await.map_err(|e| {
                Error::Unavailable(format!("cannot build the in-memory hot tier: {e}"))
            })?,
            Some(dir) => {
                let layout = DiskLayout::new(config.block_bytes, config.disk_bytes)?;
                let blocks_dir = prepare_disk_dir(dir, &layout).await?;
                let open_error = |e: foyer::Error| Error::Config {
                    key: "hot_tier.disk_dir",
                    reason: format!("cannot open the disk cache ({e}): {}", dir.display()),
                };
                let device = FsDeviceBuilder::new(&blocks_dir)
                    .with_capacity(config.disk_bytes)
                    .build()
                    .map_err(open_error)?;
                builder
                    .with_io_engine_config(PsyncIoEngineConfig::new())
                    .with_engine_config(
                        BlockEngineConfig::new(device)
                            .with_block_size(layout.region_bytes)
                            .with_buffer_pool_size(layout.buffer_bytes)
                            .with_submit_queue_size_threshold(2 * layout.buffer_bytes),
                    )
                    .with_recover_mode(RecoverMode::Quiet)
                    .build()
                    .await
                    .map_err(open_error)?
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                cache,
                block_bytes: config.block_bytes as u64,
                read_ahead_blocks: config.read_ahead_blocks as u64,
                read_ahead_permits: Arc::new(Semaphore::new(read_ahead_budget(&config))),
                read_ahead_in_flight: Mutex::default(),
                counters: Arc::default(),
                closed: CancellationToken::new(),
            }),
        })
    }

    /// Bytes `range` of the object `key`, whose total size is `object_size`
    /// (known from the manifest).
    ///
    /// Returns a zero-copy slice of a cached block when the range lies in one
    /// block, else a concatenation. An object shorter than `object_size` is
    /// reported as [`Error::Corrupt`]; a range outside `0..object_size` as
    /// [`Error::TooLarge`].
    pub async fn read(&self, key: &Path, object_size: u64, range: Range<u64>) -> Result<Bytes> {
        check_range(&range, object_size)?;
        if self.inner.closed.is_cancelled() {
            return Err(Error::Unavailable("the hot tier is closed".to_string()));
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let block_bytes = self.inner.block_bytes;
        let first = range.start / block_bytes;
        let last = (range.end - 1) / block_bytes;
        let object: Arc<str> = Arc::from(key.as_ref());
        let blocks = self
            .inner
            .load_blocks(key, &object, object_size, first, last, Purpose::Read)
            .await?;
        let window_end = last.saturating_add(self.inner.read_ahead_blocks);
        self.read_ahead(key, &object, object_size, last + 1, window_end, false);

        // Both fit in usize: they are offsets into blocks held in memory.
        let offset = (range.start - first * block_bytes) as usize;
        let len = (range.end - range.start) as usize;
        if let [block] = blocks.as_slice() {
            return Ok(block.slice(offset..offset + len));
        }
        off_runtime(len, move || {
            let mut out = BytesMut::with_capacity(len);
            let mut skip = offset;
            for block in &blocks {
                let take = (block.len() - skip).min(len - out.len());
                out.extend_from_slice(&block[skip..skip + take]);
                skip = 0;
            }
            out.freeze()
        })
        .await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> HotTierStats {
        let c = &self.inner.counters;
        HotTierStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            get_requests: c.get_requests.load(Ordering::Relaxed),
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
            read_ahead_blocks: c.read_ahead_blocks.load(Ordering::Relaxed),
            memory_bytes_used: self.inner.cache.memory().usage(),
        }
    }

    /// Stops read-ahead, writes the blocks in memory to the disk tier (if
    /// any) so that the next run finds them, and closes it. Reads after close
    /// fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.inner.closed.cancel();
        if let Err(e) = self.inner.cache.close().await {
            tracing::warn!(error = %e, "closing the hot tier's disk cache failed");
        }
    }

    /// Starts fetching, in the background, the blocks of the object `key`
    /// holding bytes `range` (at most `read_ahead_blocks` of them from the
    /// range's start), as read-ahead does after a read: for a reader about
    /// to move on to this object, such as the next segment of a partition.
    pub fn prefetch(&self, key: &Path, object_size: u64, range: Range<u64>) {
        let range = range.start..range.end.min(object_size);
        if range.is_empty() || self.inner.closed.is_cancelled() {
            return;
        }
        let block_bytes = self.inner.block_bytes;
        let first = range.start / block_bytes;
        let last = ((range.end - 1) / block_bytes)
            .min(first + self.inner.read_ahead_blocks.saturating_sub(1));
        let object: Arc<str> = Arc::from(key.as_ref());
        self.read_ahead(key, &object, object_size, first, last, true);
    }

    /// Bytes of read-ahead after a read: how close to the end of a segment
    /// a reader is when the next one is worth prefetching.
    pub fn read_ahead_bytes(&self) -> u64 {
        self.inner.read_ahead_blocks * self.inner.block_bytes
    }

    /// Fetches, in the background, the blocks of `first..=last` (clipped to
    /// the object) that are neither cached nor already being fetched by
    /// read-ahead, as GETs of [`READ_AHEAD_RUN_BLOCKS`] blocks (or the whole
    /// window if smaller). A shorter run waits for a later read unless it
    /// ends the object or `short_ok`, and runs beyond the read-ahead budget
    /// are skipped.
    fn read_ahead(
        &self,
        path: &Path,
        object: &Arc<str>,
        object_size: u64,
        first: u64,
        last: u64,
        short_ok: bool,
    ) {
        let inner = &self.inner;
        if inner.read_ahead_blocks == 0 || object_size == 0 {
            return;
        }
        let last_in_object = (object_size - 1) / inner.block_bytes;
        let last = last.min(last_in_object);
        if first > last {
            return;
        }
        // A full GET, unless the window is smaller.
        let run_blocks = READ_AHEAD_RUN_BLOCKS.min(inner.read_ahead_blocks);
        let mut in_flight = inner.read_ahead_in_flight.lock();
        let missing: Vec<u64> = (first..=last)
            .filter(|&index| {
                let key = BlockKey::new(object, index);
                !in_flight.contains(&key) && !inner.cache.contains(&key)
            })
            .collect();
        for (first, last) in chunks(&missing, run_blocks) {
            // A short chunk waits until the window has moved on far enough
            // for a full GET, unless it ends the object.
            let blocks = last - first + 1;
            if blocks < run_blocks && last < last_in_object && !short_ok {
                continue;
            }
            let Ok(permit) = inner
                .read_ahead_permits
                .clone()
                .try_acquire_many_owned(blocks as u32)
            else {
                return;
            };
            for index in first..=last {
                in_flight.insert(BlockKey::new(object, index));
            }
            let inner = inner.clone();
            let path = path.clone();
            let object = object.clone();
            tokio::spawn(async move {
                let _permit = permit;
                tokio::select! {
                    () = inner.closed.cancelled() => {}
                    res = inner.load_blocks(&path, &object, object_size, first, last, Purpose::ReadAhead) => {
                        if let Err(e) = res {
                            tracing::debug!(object = %path, first, last, error = %e, "hot tier read-ahead failed");
                        }
                    }
                }
                let mut in_flight = inner.read_ahead_in_flight.lock();
                for index in first..=last {
                    in_flight.remove(&BlockKey::new(&object, index));
                }
            });
        }
    }
}

/// Blocks of read-ahead allowed in flight: a quarter of the memory tier, and
/// at least one full read-ahead GET.
fn read_ahead_budget(config: &HotTierConfig) -> usize {
    (config.memory_bytes / 4 / config.block_bytes).max(READ_AHEAD_RUN_BLOCKS as usize)
}

impl Inner {
    /// Blocks `first..=last` of the object, each checked to have the length
    /// `object_size` implies.
    async fn load_blocks(
        &self,
        path: &Path,
        object: &Arc<str>,
        object_size: u64,
        first: u64,
        last: u64,
        purpose: Purpose,
    ) -> Result<Vec<Bytes>> {
        let slot = |index: u64| (index - first) as usize;
        // A cached block whose length disagrees with `object_size` was cached
        // under another recorded size (a caller's bug): drop it and refetch.
        let checked = |index: u64, block: Bytes| {
            let expected = block_len(index, self.block_bytes, object_size);
            if block.len() as u64 == expected {
                return Some(block);
            }
            tracing::debug!(
                object = %path, index, cached = block.len(), expected,
                "hot tier dropped a block cached under another object size"
            );
            self.cache.remove(&BlockKey::new(object, index));
            None
        };
        let mut blocks: Vec<Option<Bytes>> = (first..=last)
            .map(|index| {
                let entry = self.cache.memory().get(&BlockKey::new(object, index))?;
                checked(index, entry.value().clone())
            })
            .collect();

        if self.cache.is_hybrid() {
            let lookups = (first..=last)
                .filter(|&index| blocks[slot(index)].is_none())
                .map(|index| {
                    let get = self.cache.get(&BlockKey::new(object, index));
                    async move { (index, get.await) }
                })
                .collect::<Vec<_>>();
            for (index, found) in join_all(lookups).await {
                match found {
                    Ok(Some(entry)) => blocks[slot(index)] = checked(index, entry.value().clone()),
                    Ok(None) => {}
                    // The disk tier failed; fetch the block from the store instead.
                    Err(e) => {
                        tracing::debug!(object = %path, index, error = %e, "hot tier disk lookup failed")
                    }
                }
            }
        }

        let missing: Vec<u64> = (first..=last)
            .filter(|&index| blocks[slot(index)].is_none())
            .collect();
        let missing_count = missing.len() as u64;
        match purpose {
            Purpose::Read => {
                let hits = last - first + 1 - missing_count;
                self.counters.hits.fetch_add(hits, Ordering::Relaxed);
                self.counters
                    .misses
                    .fetch_add(missing_count, Ordering::Relaxed);
            }
            Purpose::ReadAhead => {
                self.counters
                    .read_ahead_blocks
                    .fetch_add(missing_count, Ordering::Relaxed);
            }
        }

        if !missing.is_empty() {
            // Errors of GETs this call issues land here with full detail; foyer
            // only passes a clonable summary to the waiters of a block.
            let error_slot: Arc<Mutex<Option<Error>>> = Arc::default();
            let mut fetches = Vec::with_capacity(missing.len());
            for (run_first, run_last) in runs(&missing) {
                let run = Run {
                    store: self.store.clone(),
                    path: path.clone(),
                    object_size,
                    first: run_first,
                    last: run_last,
                    block_bytes: self.block_bytes,
                    counters: self.counters.clone(),
                    error_slot: error_slot.clone(),
                };
                let fetched = run.fetch().boxed().shared();
                for index in run_first..=run_last {
                    let fetched = fetched.clone();
                    let at = (index - run_first) as usize;
                    // Coalesces with any in-flight fetch of the same block; the
                    // run's GET is issued once, by the first block that needs it.
                    let get = self.cache.get_or_fetch(
                        &BlockKey::new(object, index),
                        move || async move {
                            let run = fetched.await?;
                            run.get(at).cloned().ok_or_else(|| {
                                FetchFailed(Arc::from("a fetched run is missing a block"))
                            })
                        },
                    );
                    fetches.push(async move { (index, get.await) });
                }
            }
            for (index, fetched) in join_all(fetches).await {
                match fetched {
                    Ok(entry) => blocks[slot(index)] = Some(entry.value().clone()),
                    Err(e) => {
                        if let Some(error) = error_slot.lock().take() {
                            return Err(error);
                        }
                        return Err(match e.downcast_ref::<FetchFailed>() {
                            Some(FetchFailed(reason)) => Error::Unavailable(format!(
                                "a concurrent fetch of block {index} failed ({reason}): {path}"
                            )),
                            None => Error::Unavailable(format!(
                                "the hot tier failed on block {index} ({e}): {path}"
                            )),
                        });
                    }
                }
            }
        }

        blocks
            .into_iter()
            .zip(first..=last)
            .map(|(block, index)| {
                let expected = block_len(index, self.block_bytes, object_size);
                match block {
                    Some(block) if block.len() as u64 == expected => Ok(block),
                    // Only when a concurrent read fetched the block under
                    // another recorded size.
                    Some(block) => Err(Error::corrupt(
                        path,
                        format!(
                            "block {index} has {} bytes but object size {object_size} implies {expected}; \
                             the object's recorded size is inconsistent",
                            block.len()
                        ),
                    )),
                    None => Err(Error::Unavailable(format!("the hot tier lost block {index}: {path}"))),
                }
            })
            .collect()
    }
}

/// One ranged GET of the contiguous blocks `first..=last`.
struct Run {
    store: Arc<dyn ObjectStore>,
    path: Path,
    object_size: u64,
    first: u64,
    last: u64,
    block_bytes: u64,
    counters: Arc<Counters>,
    error_slot: Arc<Mutex<Option<Error>>>,
}

impl Run {
    /// The run's blocks, each in its own allocation (so that evicting one
    /// frees its memory). On failure the full error goes to the slot of the
    /// read that issued the GET.
    async fn fetch(self) -> Result<Arc<[Bytes]>, FetchFailed> {
        match self.fetch_inner().await {
            Ok(blocks) => Ok(blocks),
            Err(e) => {
                let failed = FetchFailed(Arc::from(e.to_string()));
                self.error_slot.lock().get_or_insert(e);
                Err(failed)
            }
        }
    }

    async fn fetch_inner(&self) -> Result<Arc<[Bytes]>> {
        let start = self.first.saturating_mul(self.block_bytes);
        let end = self
            .last
            .saturating_add(1)
            .saturating_mul(self.block_bytes)
            .min(self.object_size);
        self.counters.get_requests.fetch_add(1, Ordering::Relaxed);
        let bytes = match self.store.get_range(&self.path, start..end).await {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.classify(e).await),
        };
        self.counters
            .bytes_fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if bytes.len() as u64 != end - start {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "a read of bytes {start}..{end} returned {} bytes; the object does not have its recorded size \
                     {}",
                    bytes.len(),
                    self.object_size
                ),
            ));
        }
        let block_bytes = self.block_bytes as usize;
        off_runtime(bytes.len(), move || {
            bytes
                .chunks(block_bytes)
                .map(Bytes::copy_from_slice)
                .collect()
        })
        .await
    }

    /// A failed GET of a range inside `object_size` may mean the object is
    /// shorter than recorded (stores refuse ranges starting past the end).
    async fn classify(&self, error: object_store::Error) -> Error {
        if matches!(error, object_store::Error::NotFound { .. }) {
            return Error::Store(error);
        }
        match self.store.head(&self.path).await {
            Ok(meta) if meta.size < self.object_size => Error::corrupt(
                &self.path,
                format!(
                    "the object has {} bytes but its recorded size is {}",
                    meta.size, self.object_size
                ),
            ),
            _ => Error::Store(error),
        }
    }
}

/// The summary of a failed fetch that foyer hands to every waiter of a block.
#[derive(Debug, Clone)]
struct FetchFailed(Arc<str>);

impl std::fmt::Display for FetchFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchFailed {}

/// The cache key: block `index` of the object `object`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BlockKey {
    object: Arc<str>,
    index: u64,
}

impl BlockKey {
    fn new(object: &Arc<str>, index: u64) -> Self {
        Self {
            object: object.clone(),
            index,
        }
    }

    /// Memory charged for the key and the entry around it.
    fn weight(&self) -> usize {
        self.object.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// Disk encoding: `u32` key length (LE), key bytes, `u64` index (LE). Changing
/// it requires bumping `LAYOUT_VERSION`.
impl Code for BlockKey {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        let len = u32::try_from(self.object.len())
            .map_err(|_| foyer::Error::new(foyer::ErrorKind::Unsupported, "object key too long"))?;
        writer
            .write_all(&len.to_le_bytes())
            .map_err(foyer::Error::io_error)?;
        writer
            .write_all(self.object.as_bytes())
            .map_err(foyer::Error::io_error)?;
        writer
            .write_all(&self.index.to_le_bytes())
            .map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        let mut len = [0; 4];
        reader
            .read_exact(&mut len)
            .map_err(foyer::Error::io_error)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_OBJECT_KEY_BYTES {
            return Err(
                foyer::Error::new(foyer::ErrorKind::Parse, "block key too long")
                    .with_context("len", len),
            );
        }
        let mut object = vec![0; len];
        reader
            .read_exact(&mut object)
            .map_err(foyer::Error::io_error)?;
        let object = String::from_utf8(object).map_err(|e| {
            foyer::Error::new(foyer::ErrorKind::Parse, "block key is not utf-8").with_source(e)
        })?;
        let mut index = [0; 8];
        reader
            .read_exact(&mut index)
            .map_err(foyer::Error::io_error)?;
        Ok(Self {
            object: Arc::from(object),
            index: u64::from_le_bytes(index),
        })
    }

    fn estimated_size(&self) -> usize {
        4 + self.object.len() + 8
    }
}

/// How the disk tier is cut up. foyer's block engine writes and evicts whole
/// "regions" (its blocks), each one file; an entry must fit in a region and in
/// the flush buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DiskLayout {
    block_bytes: usize,
    disk_bytes: usize,
    /// foyer's block size: the unit of disk writes and eviction.
    region_bytes: usize,
    /// foyer's flush buffer (taken twice from RAM, besides `memory_bytes`).
    buffer_bytes: usize,
}

impl DiskLayout {
    fn new(block_bytes: usize, disk_bytes: usize) -> Result<Self> {
        // At least 8 regions, so that eviction frees a small part of the disk;
        // at most 16 MiB (or 4 blocks) per region.
        let upper = (4 * block_bytes).max(16 * MIB);
        let region_bytes = upper.min(disk_bytes / 8) / block_bytes * block_bytes;
        if region_bytes < 2 * block_bytes {
            return Err(Error::Config {
                key: "hot_tier.disk_bytes",
                reason: format!(
                    "must hold at least 16 blocks of {block_bytes} bytes ({} bytes): {disk_bytes}",
                    16 * block_bytes
                ),
            });
        }
        Ok(Self {
            block_bytes,
            disk_bytes,
            region_bytes,
            buffer_bytes: region_bytes.min((4 * block_bytes).max(4 * MIB)),
        })
    }

    /// The contents of the layout file; any difference discards the cache.
    fn describe(&self) -> String {
        format!(
            "strata hot tier layout {LAYOUT_VERSION}\nformat = {FOYER_FORMAT}\nblock_bytes = {}\nregion_bytes = {}\n\
             disk_bytes = {}\n",
            self.block_bytes, self.region_bytes, self.disk_bytes
        )
    }
}

/// Creates `dir` and its blocks directory, discarding the blocks if they were
/// written with another layout. Returns the blocks directory.
async fn prepare_disk_dir(dir: &FsPath, layout: &DiskLayout) -> Result<PathBuf> {
    let fail = |what: &str, e: std::io::Error| Error::Config {
        key: "hot_tier.disk_dir",
        reason: format!("cannot {what} ({e}): {}", dir.display()),
    };
    let blocks_dir = dir.join(BLOCKS_DIR);
    let layout_file = dir.join(LAYOUT_FILE);
    let expected = layout.describe();
    let found = match tokio::fs::read_to_string(&layout_file).await {
        Ok(found) => Some(found),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Unreadable or not UTF-8: treat as another layout.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Some(String::new()),
        Err(e) => return Err(fail("read the layout file", e)),
    };
    if found.as_deref() != Some(expected.as_str()) {
        if found.is_some() {
            tracing::info!(dir = %dir.display(), "hot tier layout changed; discarding the disk cache");
        }
        match tokio::fs::remove_dir_all(&blocks_dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("discard the old disk cache", e)),
        }
        tokio::fs::create_dir_all(&blocks_dir)
            .await
            .map_err(|e| fail("create the directory", e))?;
        tokio::fs::write(&layout_file, expected)
            .await
            .map_err(|e| fail("write the layout file", e))?;
    } else {
        tokio::fs::create_dir_all(&blocks_dir)
            .await
            .map_err(|e| fail("create the directory", e))?;
    }
    Ok(blocks_dir)
}

/// Shards of the memory tier: as many as possible (less lock contention) up
/// to 16, while each shard (capacity `memory_bytes / shards`) still holds at
/// least 8 blocks.
fn memory_shards(memory_bytes: usize, block_bytes: usize) -> usize {
    (memory_bytes / (8 * block_bytes)).clamp(1, 16)
}

/// Checks that `range` lies in `0..object_size`.
fn check_range(range: &Range<u64>, object_size: u64) -> Result<()> {
    if range.start > range.end {
        return Err(Error::TooLarge {
            what: "hot tier read start",
            size: usize::try_from(range.start).unwrap_or(usize::MAX),
            limit: usize::try_from(range.end).unwrap_or(usize::MAX),
        });
    }
    if range.end > object_size {
        return Err(Error::TooLarge {
            what: "hot tier read end",
            size: usize::try_from(range.end).unwrap_or(usize::MAX),
            limit: usize::try_from(object_size).unwrap_or(usize::MAX),
        });
    }
    Ok(())
}

/// The length of block `index` of an object of `object_size` bytes.
fn block_len(index: u64, block_bytes: u64, object_size: u64) -> u64 {
    object_size
        .saturating_sub(index.saturating_mul(block_bytes))
        .min(block_bytes)
}

/// Runs of contiguous indices in sorted `indices`, as `(first, last)`.
fn runs(indices: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &index in indices {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == index => *last = index,
            _ => runs.push((index, index)),
        }
    }
    runs
}

/// [`runs`] of `indices`, each cut into pieces of at most `max` blocks.
fn chunks(indices: &[u64], max: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (mut first, last) in runs(indices) {
        while first <= last {
            let end = last.min(first + max - 1);
            out.push((first, end));
            first = end + 1;
        }
    }
    out
}

/// Runs a copy of `len` bytes inline when small, else on the blocking pool.
async fn off_runtime<R: Send + 'static>(
    len: usize,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R> {
    if len <= INLINE_COPY_LIMIT {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Unavailable(format!("a hot tier copy task failed: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::{fmt, time::Duration};

    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use object_store::{
        GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions,
        PutOptions, PutPayload, PutResult, memory::InMemory,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::ErrorKind;

    const BLOCK: usize = 4 * KIB;

    /// Counts ranged GETs; each takes `delay`, so concurrent reads overlap.
    #[derive(Debug)]
    struct CountingStore {
        inner: InMemory,
        gets: AtomicU64,
        delay: Duration,
        /// GETs in flight now, and the most seen at once.
        in_flight: AtomicU64,
        max_in_flight: AtomicU64,
    }

    impl fmt::Display for CountingStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "CountingStore({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for CountingStore {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            if options.head {
                return self.inner.get_opts(location, options).await;
            }
            self.gets.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let got = self.inner.get_opts(location, options).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            got
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    impl CountingStore {
        fn gets(&self) -> u64 {
            self.gets.load(Ordering::SeqCst)
        }
    }

    /// A store holding one object of `size` pseudo-random bytes at `seg/0`.
    async fn store_with(size: usize, delay: Duration) -> (Arc<CountingStore>, Path, Bytes) {
        let data: Bytes = (0..size)
            .map(|i| (i as u64).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
            .collect::<Vec<u8>>()
            .into();
        let store = Arc::new(CountingStore {
            inner: InMemory::new(),
            gets: AtomicU64::new(0),
            delay,
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        });
        let path = Path::from("seg/0");
        store.put(&path, data.clone().into()).await.unwrap();
        (store, path, data)
    }

    fn memory_config(read_ahead_blocks: usize) -> HotTierConfig {
        HotTierConfig {
            memory_bytes: 4 * MIB,
            block_bytes: BLOCK,
            read_ahead_blocks,
            ..HotTierConfig::default()
        }
    }

    fn disk_config(dir: &FsPath) -> HotTierConfig {
        HotTierConfig {
            // Room for a few blocks only, so most reads go to disk.
            memory_bytes: 4 * BLOCK,
            disk_dir: Some(dir.to_path_buf()),
            disk_bytes: 8 * MIB,
            block_bytes: BLOCK,
            read_ahead_blocks: 0,
        }
    }

    fn ranges(size: u64) -> Vec<Range<u64>> {
        let b = BLOCK as u64;
        vec![
            0..1,
            0..b,
            10..100,
            b - 1..b + 1,
            b..3 * b,
            5..5 * b + 7,
            size - 1..size,
            size - 100..size,
            (size / b) * b..size,
            0..size,
            7..7,
        ]
    }

    async fn check_all(cache: &SegmentCache, path: &Path, data: &Bytes) {
        let size = data.len() as u64;
        for range in ranges(size) {
            let got = cache.read(path, size, range.clone()).await.unwrap();
            assert_eq!(
                got,
                data.slice(range.start as usize..range.end as usize),
                "range {range:?}"
            );
        }
    }

    #[test]
    fn config_defaults_and_validation() {
        let config: HotTierConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, HotTierConfig::default());
        assert_eq!(config.block_bytes, MIB);
        config.validate().unwrap();
        HotTierConfig {
            disk_dir: Some(PathBuf::from("/tmp/x")),
            ..HotTierConfig::default()
        }
        .validate()
        .unwrap();

        let bad = |config: HotTierConfig, key: &str| match config.validate() {
            Err(Error::Config { key: k, .. }) => assert_eq!(k, key),
            other => panic!("expected a config error on {key}, got {other:?}"),
        };
        bad(
            HotTierConfig {
                block_bytes: 3 * MIB,
                ..HotTierConfig::default()
            },
            "hot_tier.block_bytes",
        );
        bad(
            HotTierConfig {
                block_bytes: 1024,
                ..HotTierConfig::default()
            },
            "hot_tier.block_bytes",
        );
        bad(
            HotTierConfig {
                memory_bytes: 1000,
                ..HotTierConfig::default()
            },
            "hot_tier.memory_bytes",
        );
        bad(
            HotTierConfig {
                read_ahead_blocks: 1000,
                ..HotTierConfig::default()
            },
            "hot_tier.read_ahead_blocks",
        );
        bad(
            HotTierConfig {
                disk_dir: Some(PathBuf::from("/tmp/x")),
                disk_bytes: 4 * MIB,
                ..HotTierConfig::default()
            },
            "hot_tier.disk_bytes",
        );
    }

    #[test]
    fn disk_layout_fits_entries() {
        for (block, disk) in [
            (MIB, GIB),
            (4 * KIB, 8 * MIB),
            (64 * MIB, 16 * GIB),
            (MIB, 16 * MIB),
        ] {
            let layout = DiskLayout::new(block, disk).unwrap();
            assert!(layout.region_bytes >= 2 * block, "{layout:?}");
            assert!(layout.buffer_bytes >= 2 * block, "{layout:?}");
            assert!(disk / layout.region_bytes >= 8, "{layout:?}");
            assert_eq!(layout.region_bytes % (4 * KIB), 0);
        }
        assert_eq!(DiskLayout::new(MIB, GIB).unwrap().region_bytes, 16 * MIB);
    }

    #[test]
    fn block_key_round_trips() {
        let key = BlockKey::new(
            &Arc::from("topics/orders/0/segments/00000000000000000042"),
            7,
        );
        let mut buf = Vec::new();
        key.encode(&mut buf).unwrap();
        assert_eq!(buf.len(), key.estimated_size());
        assert_eq!(BlockKey::decode(&mut buf.as_slice()).unwrap(), key);
        assert!(BlockKey::decode(&mut &buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn runs_group_contiguous_indices() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[3]), vec![(3, 3)]);
        assert_eq!(runs(&[1, 2, 3, 5, 7, 8]), vec![(1, 3), (5, 5), (7, 8)]);
        assert_eq!(
            chunks(&[1, 2, 3, 4, 5, 7, 8], 2),
            vec![(1, 2), (3, 4), (5, 5), (7, 8)]
        );
    }

    #[tokio::test]
    async fn memory_only_reads_exact_bytes_and_caches_them() {
        let (store, path, data) = store_with(10 * BLOCK + 123, Duration::ZERO).await;
        let cache = SegmentCache::new(store.clone(), memory_config(0))
            .await
            .unwrap();
        let size = data.len() as u64;

        check_all(&cache, &path, &data).await;
        let gets = store.gets();
        assert!(gets > 0);
        check_all(&cache, &path, &data).await;
        assert_eq!(
            store.gets(),
            gets,
            "a second read of cached ranges makes no GET"
        );

        let stats = cache.stats();
        assert_eq!(stats.misses, 11, "every block was fetched once");
        assert!(stats.hits > 0);
        assert_eq!(stats.bytes_fetched, size);
        assert_eq!(stats.get_requests, gets);
        assert!(stats.memory_bytes_used >= data.len());
        cache.close().await;
    }

    #[tokio::test]
    async fn one_get_per_run_of_missing_blocks() {
        let (store, path, data) = store_with(8 * BLOCK, Duration::ZERO).await;
        let cache = SegmentCache::new(store.clone(), memory_config(0))
            .await
            .unwrap();
        let b = BLOCK as u64;
        cache
            .read(&path, data.len() as u64, 2 * b..2 * b + 1)
            .await
            .unwrap();
        cache
            .read(&path, data.len() as u64, 5 * b..5 * b + 1)
            .await
            .unwrap();
        assert_eq!(store.gets(), 2);
        // Blocks 0-1, 3-4 and 6-7 are missing: three runs, three GETs.
        let all = cache
            .read(&path, data.len() as u64, 0..8 * b)
            .await
            .unwrap();
        assert_eq!(all, data);
        assert_eq!(store.gets(), 5);
    }

    #[tokio::test]
    async fn single_block_reads_are_zero_copy() {
        let (store, path, data) = store_with(3 * BLOCK, Duration::ZERO).await;
        let cache = SegmentCache::new(store, memory_config(0)).await.unwrap();
        let size = data.len() as u64;
        let a = cache.read(&path, size, 10..20).await.unwrap();
        let b = cache.read(&path, size, 30..40).await.unwrap();
        // Both are views of the same cached block.
        assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 20);
    }

    #[tokio::test]
    async fn concurrent_misses_of_a_block_share_one_get() {
        let (store, path, data) = store_with(4 * BLOCK, Duration::from_millis(20)).await;
        let cache = SegmentCache::new(store.clone(), memory_config(0))
            .await
            .unwrap();
        let size = data.len() as u64;
        let reads = (0..8).map(|i| cache.read(&path, size, i * 10..i * 10 + 100));
        for (i, got) in join_all(reads).await.into_iter().enumerate() {
            let start = i * 10;
            assert_eq!(got.unwrap(), data.slice(start..start + 100));
        }
        assert_eq!(store.gets(), 1);
    }

    #[tokio::test]
    async fn read_ahead_caches_the_next_blocks() {
        let (store, path, data) = store_with(10 * BLOCK, Duration::ZERO).await;
        let cache = SegmentCache::new(store.clone(), memory_config(2))
            .await
            .unwrap();
        let size = data.len() as u64;
        let b = BLOCK as u64;
        cache.read(&path, size, 0..100).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while cache.stats().read_ahead_blocks < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(
            store.gets(),
            2,
            "one GET for the read, one for both read-ahead blocks"
        );
        let got = cache.read(&path, size, b..3 * b).await.unwrap();
        assert_eq!(got, data.slice(BLOCK..3 * BLOCK));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 1));

        // Read-ahead stops at the end of the object.
        cache.read(&path, size, 9 * b..size).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            cache.stats().read_ahead_blocks,
            4,
            "blocks 3 and 4, after the read of 1..=2"
        );
        cache.close().await;
    }

    /// Waits until read-ahead has started `blocks` blocks in all and has
    /// none in flight.
    async fn read_ahead_reaches(cache: &SegmentCache, blocks: u64) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while cache.stats().read_ahead_blocks < blocks
                || !cache.inner.read_ahead_in_flight.lock().is_empty()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "read-ahead fetched {:?}, not {blocks} blocks",
                cache.stats()
            )
        });
    }

    #[tokio::test]
    async fn read_ahead_keeps_a_window_in_flight_as_parallel_full_gets() {
        let (store, path, data) = store_with(40 * BLOCK, Duration::from_millis(50)).await;
        let cache = SegmentCache::new(store.clone(), memory_config(16))
            .await
            .unwrap();
        let size = data.len() as u64;
        let b = BLOCK as u64;
        cache.read(&path, size, 0..100).await.unwrap();
        read_ahead_reaches(&cache, 16).await;
        assert_eq!(
            store.gets(),
            5,
            "one GET for the read, four of four blocks for the window 1..=16"
        );
        assert_eq!(
            store.max_in_flight.load(Ordering::SeqCst),
            4,
            "the window's GETs run in parallel"
        );

        // Reads inside the window are hits; the window moves on by whole GETs.
        for block in 1..4u64 {
            let got = cache
                .read(&path, size, block * b..(block + 1) * b)
                .await
                .unwrap();
            assert_eq!(
                got,
                data.slice(block as usize * BLOCK..(block as usize + 1) * BLOCK)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.gets(), 5, "blocks 17..=19 wait for a full GET");
        cache.read(&path, size, 4 * b..5 * b).await.unwrap();
        read_ahead_reaches(&cache, 20).await;
        assert_eq!(store.gets(), 6, "blocks 17..=20 in one GET");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (4, 1));

        // Near the end the last, shorter run goes too.
        cache.read(&path, size, 36 * b..37 * b).await.unwrap();
        read_ahead_reaches(&cache, 23).await;
        let all = cache.read(&path, size, 0..size).await.unwrap();
        assert_eq!(all, data);
        assert_eq!(
            cache.stats().bytes_fetched,
            size,
            "no block was fetched twice"
        );
        cache.close().await;
    }

    #[tokio::test]
    async fn read_ahead_in_flight_is_bounded_by_a_quarter_of_memory() {
        let (store, path, data) = store_with(40 * BLOCK, Duration::from_millis(50)).await;
        let config = HotTierConfig {
            // A quarter of this is one GET of four blocks.
            memory_bytes: 16 * BLOCK,
            ..memory_config(16)
        };
        let cache = SegmentCache::new(store.clone(), config).await.unwrap();
        cache.read(&path, data.len() as u64, 0..100).await.unwrap();
        read_ahead_reaches(&cache, 4).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.gets(), 2, "the read, then one read-ahead GET");
        assert_eq!(cache.stats().read_ahead_blocks, 4);
        cache.close().await;
    }

    #[tokio::test]
    async fn prefetch_fetches_the_start_of_an_object_before_it_is_read() {
        let (store, path, data) = store_with(40 * BLOCK, Duration::ZERO).await;
        let cache = SegmentCache::new(store.clone(), memory_config(16))
            .await
            .unwrap();
        let size = data.len() as u64;
        let b = BLOCK as u64;
        cache.prefetch(&path, size, 0..2 * b + 1);
        read_ahead_reaches(&cache, 3).await;
        assert_eq!(store.gets(), 1, "blocks 0..=2 in one GET, short as it is");
        // A range past the end is clipped; an empty one does nothing.
        cache.prefetch(&path, size, 38 * b..100 * b);
        cache.prefetch(&path, size, 5 * b..5 * b);
        read_ahead_reaches(&cache, 5).await;
        assert_eq!(store.gets(), 2);
        // At most the read-ahead window: blocks 10..=25, in four GETs.
        cache.prefetch(&path, size, 10 * b..40 * b);
        read_ahead_reaches(&cache, 21).await;
        assert_eq!(store.gets(), 6);
        assert_eq!(cache.stats().read_ahead_blocks, 21);

        for range in [0..3 * b, 10 * b..26 * b, 38 * b..size] {
            let got = cache.read(&path, size, range.clone()).await.unwrap();
            assert_eq!(got, data.slice(range.start as usize..range.end as usize));
        }
        assert_eq!(cache.stats().misses, 0, "every prefetched block was a hit");
        cache.close().await;
    }

    #[tokio::test]
    async fn short_object_is_corrupt() {
        let (store, path, data) = store_with(10_000, Duration::ZERO).await;
        let cache = SegmentCache::new(store, memory_config(0)).await.unwrap();
        let recorded = 20_000;
        // Block 2 comes back short; block 3 starts past the end.
        for range in [9_000..9_100, 15_000..15_100] {
            let err = cache.read(&path, recorded, range).await.unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        }
        // The blocks wholly inside the object are fine.
        let got = cache.read(&path, recorded, 0..5_000).await.unwrap();
        assert_eq!(got, data.slice(0..5_000));
        // A block cached under another recorded size is refetched, not served.
        let got = cache.read(&path, 5_000, 4_096..5_000).await.unwrap();
        assert_eq!(got, data.slice(4_096..5_000));
        let got = cache.read(&path, 10_000, 4_096..8_192).await.unwrap();
        assert_eq!(got, data.slice(4_096..8_192));
    }

    #[tokio::test]
    async fn missing_object_and_bad_ranges() {
        let (store, _, _) = store_with(100, Duration::ZERO).await;
        let cache = SegmentCache::new(store, memory_config(0)).await.unwrap();
        let err = cache
            .read(&Path::from("nope"), 100, 0..10)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Store(object_store::Error::NotFound { .. })),
            "{err}"
        );
        let err = cache
            .read(&Path::from("seg/0"), 100, 50..101)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        #[allow(clippy::reversed_empty_ranges)]
        let err = cache
            .read(&Path::from("seg/0"), 100, 50..40)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);

        cache.close().await;
        let err = cache
            .read(&Path::from("seg/0"), 100, 0..10)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
    }

    #[tokio::test]
    async fn disk_tier_survives_reopen_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let disk_dir = dir.path().join("hot");
        let (store, path, data) = store_with(25 * BLOCK + 99, Duration::ZERO).await;

        let cache = SegmentCache::new(store.clone(), disk_config(&disk_dir))
            .await
            .unwrap();
        check_all(&cache, &path, &data).await;
        let gets = store.gets();
        // Memory holds 3 blocks of 26: the rest come back from disk.
        check_all(&cache, &path, &data).await;
        assert_eq!(store.gets(), gets, "evicted blocks are served from disk");
        cache.close().await;
        drop(cache);

        // Reopening recovers the blocks written to disk.
        let cache = SegmentCache::new(store.clone(), disk_config(&disk_dir))
            .await
            .unwrap();
        check_all(&cache, &path, &data).await;
        assert_eq!(store.gets(), gets, "a reopened cache serves from disk");
        cache.close().await;
        drop(cache);

        // Deleting the directory loses nothing.
        std::fs::remove_dir_all(&disk_dir).unwrap();
        let cache = SegmentCache::new(store.clone(), disk_config(&disk_dir))
            .await
            .unwrap();
        check_all(&cache, &path, &data).await;
        assert!(store.gets() > gets);
        cache.close().await;
        drop(cache);

        // A new layout discards the old blocks instead of recovering them.
        let config = HotTierConfig {
            block_bytes: 2 * BLOCK,
            ..disk_config(&disk_dir)
        };
        let cache = SegmentCache::new(store.clone(), config).await.unwrap();
        let gets = store.gets();
        check_all(&cache, &path, &data).await;
        assert!(store.gets() > gets);
        cache.close().await;
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn random_ranges_read_back_exactly(
            size in 1usize..12 * BLOCK,
            cuts in proptest::collection::vec((any::<u64>(), any::<u64>()), 1..16),
            read_ahead in 0usize..3,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (store, path, data) = store_with(size, Duration::ZERO).await;
                let cache = SegmentCache::new(store, memory_config(read_ahead)).await.unwrap();
                let size = size as u64;
                for (a, b) in cuts {
                    let (a, b) = (a % (size + 1), b % (size + 1));
                    let range = a.min(b)..a.max(b);
                    let got = cache.read(&path, size, range.clone()).await.unwrap();
                    prop_assert_eq!(got, data.slice(range.start as usize..range.end as usize));
                }
                cache.close().await;
                Ok(())
            })?;
        }
    }
}
