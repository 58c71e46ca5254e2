//! A process-wide cache of WAL object tails for replays. When a broker
//! takes over many partitions of one dead incarnation at once (a restart
//! after `kill -9`, a failover), every partition replays the same WAL
//! objects, and each needs the object's footer and directory (and, for a
//! small object, its chunks, which lie in the same last 64 KiB). Without
//! sharing, a takeover of N partitions costs N GETs per object; with it,
//! one: each tail is fetched once (single flight: concurrent readers of
//! one object wait for the same GET) and kept, oldest first out, within
//! [`BUDGET`] bytes.
//!
//! WAL objects are written create-only and never change, so a cached tail
//! is never stale; entries are keyed by key, size and last-modified time,
//! and by the store they came from (tests run several stores, with the
//! same keys, in one process).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::format::{self, ChunkEntry, FOOTER_LEN, HEADER_LEN};
use super::reader::WalObject;
use crate::error::{Error, Result};

/// Bytes of tails kept at most.
pub const BUDGET: usize = 64 << 20;

/// Entries kept at most, loaded or not (a load that failed leaves an empty
/// one behind).
const MAX_ENTRIES: usize = 16 * 1024;

/// How much of an object's end one GET fetches.
pub(crate) const TAIL_BYTES: u64 = 64 * 1024;

/// The end of one WAL object: its last [`TAIL_BYTES`] and its directory.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The bytes from `start` to the object's end.
    pub(crate) bytes: Bytes,
    /// Where `bytes` starts in the object.
    pub(crate) start: u64,
    /// The chunk directory.
    pub(crate) dir: Vec<ChunkEntry>,
}

type Key = (usize, Path, u64, i64);
type Cell = Arc<OnceCell<Arc<Tail>>>;

#[derive(Default)]
struct Cache {
    cells: HashMap<Key, Cell>,
    order: VecDeque<Key>,
    bytes: usize,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Cache::default()));

/// The tail of `object`, from the cache or one GET (two when its
/// directory does not fit in the last 64 KiB).
pub(crate) async fn get(store: &Arc<dyn ObjectStore>, object: &WalObject) -> Result<Arc<Tail>> {
    let store_id = Arc::as_ptr(store).cast::<()>() as usize;
    let key = (
        store_id,
        object.key.clone(),
        object.size,
        object
            .last_modified
            .timestamp_nanos_opt()
            .unwrap_or_else(|| object.last_modified.timestamp_micros()),
    );
    let cell = {
        let mut cache = CACHE.lock();
        if let Some(cell) = cache.cells.get(&key) {
            cell.clone()
        } else {
            let cell = Cell::default();
            cache.cells.insert(key.clone(), cell.clone());
            cache.order.push_back(key.clone());
            while cache.order.len() > MAX_ENTRIES {
                if let Some(old) = cache.order.pop_front()
                    && let Some(c) = cache.cells.remove(&old)
                {
                    let n = c.get().map_or(0, |t| t.bytes.len());
                    cache.bytes = cache.bytes.saturating_sub(n);
                }
            }
            cell
        }
    };
    let mut loaded = false;
    let tail = cell
        .get_or_try_init(|| async {
            loaded = true;
            load(store, object).await.map(Arc::new)
        })
        .await?
        .clone();
    if loaded {
        let mut cache = CACHE.lock();
        // Counted only while its own cell is in the map: an entry evicted
        // while it loaded is not cached, so it must not count.
        if cache.cells.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            cache.bytes += tail.bytes.len();
        }
        // Oldest first; loads still in flight are kept (they count once
        // they finish) and looked at again later.
        let mut skipped = 0;
        while cache.bytes > BUDGET && skipped < cache.order.len() {
            let Some(old) = cache.order.pop_front() else {
                break;
            };
            let loaded_bytes = cache
                .cells
                .get(&old)
                .map(|c| c.get().map(|t| t.bytes.len()));
            match loaded_bytes {
                Some(Some(n)) => {
                    cache.cells.remove(&old);
                    cache.bytes = cache.bytes.saturating_sub(n);
                }
                Some(None) => {
                    cache.order.push_back(old);
                    skipped += 1;
                }
                None => {}
            }
        }
    }
    Ok(tail)
}

async fn load(store: &Arc<dyn ObjectStore>, object: &WalObject) -> Result<Tail> {
    let key = object.key.as_ref();
    if object.size < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(Error::corrupt(key, "WAL object too small"));
    }
    let len = object.size.min(TAIL_BYTES);
    let start = object.size - len;
    let bytes = store.get_range(&object.key, start..object.size).await?;
    if bytes.len() as u64 != len {
        return Err(Error::corrupt(key, "WAL object shorter than listed"));
    }
    let footer = format::decode_footer(key, &bytes[bytes.len() - FOOTER_LEN..], object.size)?;
    let dir_bytes: Bytes = if footer.dir_pos >= start {
        let at = (footer.dir_pos - start) as usize;
        bytes.slice(at..at + footer.dir_len as usize)
    } else {
        store
            .get_range(
                &object.key,
                footer.dir_pos..footer.dir_pos + u64::from(footer.dir_len),
            )
            .await?
    };
    let dir = format::decode_directory(key, &dir_bytes, &footer)?;
    Ok(Tail { bytes, start, dir })
}
