//! Reading and fencing another incarnation's WAL stream (DESIGN §6).
//!
//! [`fence`] makes a stream immutable from a sequence on: it fills every gap
//! from there up with a tombstone (create-only), so the old incarnation,
//! whose flushes may still be in flight, can neither write into a gap nor
//! acknowledge anything above it. Everything the old incarnation ever
//! acknowledged then lies in the contiguous run of objects below the first
//! tombstone, which is what [`fence`] returns.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::format::{self, ChunkEntry, HEADER_LEN};
use super::writer::put_create;
use crate::batch::{Batch, split_batches};
use crate::error::{Error, Result};
use crate::keys::{TopicIdPartition, WalSeq, WalStream};

/// A data object of a fenced stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    /// Its sequence number.
    pub seq: WalSeq,
    /// Its key.
    pub key: Path,
    /// Its size in bytes.
    pub size: u64,
    /// When the store says it was written (with key and size, what tells
    /// one object from another in the shared tail cache).
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// The objects of `stream` from `from` on, ascending, as listed now (no
/// fencing: for reading this incarnation's own stream).
pub async fn list_from(
    store: &Arc<dyn ObjectStore>,
    stream: WalStream,
    from: WalSeq,
) -> Result<Vec<WalObject>> {
    // LIST from the key before `from`: a long-lived stream's older objects
    // (or, before they were collected, its whole history) cost nothing.
    let listing = match from.0.checked_sub(1) {
        Some(before) => {
            store.list_with_offset(Some(&stream.prefix()), &stream.object(WalSeq(before)))
        }
        None => store.list(Some(&stream.prefix())),
    };
    let mut objects: Vec<WalObject> = listing
        .try_filter_map(|m| {
            let seq = stream.parse(&m.location);
            futures::future::ready(Ok(seq.filter(|s| *s >= from).map(|seq| WalObject {
                seq,
                key: m.location,
                size: m.size,
                last_modified: m.last_modified,
            })))
        })
        .try_collect()
        .await?;
    objects.sort_by_key(|o| o.seq);
    Ok(objects)
}

/// The data objects of this incarnation's own `stream` from `from` on, for
/// re-adopting a partition it claimed but lost track of (no fencing: that
/// would stop its own writer). Fails with [`Error::Fenced`] if another
/// broker fenced the stream.
pub async fn own_objects(
    store: &Arc<dyn ObjectStore>,
    stream: WalStream,
    from: WalSeq,
) -> Result<Vec<WalObject>> {
    let objects = list_from(store, stream, from).await?;
    if let Some(t) = objects.iter().find(|o| o.size as usize == HEADER_LEN) {
        return Err(Error::Fenced(format!(
            "{stream} was fenced at {} by another broker",
            t.seq
        )));
    }
    Ok(objects)
}

/// A fenced run of one stream: every object from `from` up to the
/// tombstone, contiguous. Nothing can be added below the tombstone (every
/// position is taken), so the run from any later sequence up to it is a
/// suffix of this one.
struct FencedRun {
    stream: WalStream,
    from: WalSeq,
    objects: Vec<WalObject>,
    tombstone: WalObject,
}

/// Runs fenced lately by this process: a takeover of many partitions of one
/// dead incarnation fences it once and lists it once, not once per
/// partition.
static FENCED: std::sync::LazyLock<parking_lot::Mutex<std::collections::VecDeque<Arc<FencedRun>>>> =
    std::sync::LazyLock::new(Default::default);

/// Fenced runs kept.
const FENCED_KEPT: usize = 16;

/// One lock per stream being fenced: the claims of many partitions of one
/// dead incarnation start together, and all but the first then take the
/// run it fenced instead of each listing the whole stream at once.
static FENCING: std::sync::LazyLock<
    parking_lot::Mutex<std::collections::HashMap<WalStream, Arc<tokio::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(Default::default);

/// The data objects of `stream` from `from` up to a tombstone that this
/// process saw fence it, if the tombstone is still there (one HEAD).
async fn fenced_suffix(
    store: &Arc<dyn ObjectStore>,
    stream: WalStream,
    from: WalSeq,
) -> Result<Option<Vec<WalObject>>> {
    let run = FENCED
        .lock()
        .iter()
        .rev()
        .find(|r| r.stream == stream && r.from <= from && from <= r.tombstone.seq)
        .cloned();
    let Some(run) = run else {
        return Ok(None);
    };
    // The same object (another store of this process has other objects
    // under the same keys in tests).
    match store.head(&run.tombstone.key).await {
        Ok(meta)
            if meta.size == run.tombstone.size
                && meta.last_modified == run.tombstone.last_modified => {}
        Ok(_) | Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    Ok(Some(
        run.objects
            .iter()
            .filter(|o| o.seq >= from)
            .cloned()
            .collect(),
    ))
}

/// Fences `stream` from `from` on and returns its data objects from `from`
/// up to the first tombstone, contiguous and ascending.
pub async fn fence(
    store: &Arc<dyn ObjectStore>,
    stream: WalStream,
    from: WalSeq,
) -> Result<Vec<WalObject>> {
    let lock = {
        let mut locks = FENCING.lock();
        // Forget the locks nobody holds (streams fenced long ago).
        if locks.len() > 64 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(stream).or_default().clone()
    };
    let _fencing = lock.lock().await;
    if let Some(run) = fenced_suffix(store, stream, from).await? {
        return Ok(run);
    }
    for _ in 0..1000 {
        let objects = list_from(store, stream, from).await?;
        let mut expected = from;
        let mut run = Vec::new();
        let mut gap = None;
        for o in objects {
            if o.seq != expected {
                gap = Some(expected);
                break;
            }
            if o.size as usize == HEADER_LEN {
                let mut fenced = FENCED.lock();
                fenced.push_back(Arc::new(FencedRun {
                    stream,
                    from,
                    objects: run.clone(),
                    tombstone: o,
                }));
                while fenced.len() > FENCED_KEPT {
                    fenced.pop_front();
                }
                return Ok(run);
            }
            run.push(o);
            expected = WalSeq(expected.0 + 1);
        }
        let gap = gap.unwrap_or(expected);
        let write_id: u64 = rand::random();
        let tombstone = format::encode_header(true, write_id, gap);
        match put_create(
            store.as_ref(),
            &stream.object(gap),
            tombstone.into(),
            write_id,
            Duration::from_secs(30),
        )
        .await
        {
            // Our tombstone, or the old writer got there first: list again.
            Ok(()) | Err(Error::Fenced(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Unavailable(format!(
        "could not fence {stream}: its writer kept winning the race for the next sequence"
    )))
}

/// The batches of `tp` in one WAL object, in offset order, each checked
/// against its chunk CRC. The object's footer and directory (and the
/// chunks in its last 64 KiB) come from one ranged GET shared by every
/// partition replaying the object ([`super::tails`]); other chunks of `tp`
/// cost one more ranged GET.
pub async fn read_partition(
    store: &Arc<dyn ObjectStore>,
    object: &WalObject,
    tp: &TopicIdPartition,
) -> Result<Vec<(ChunkEntry, Vec<Batch>)>> {
    let key = object.key.as_ref();
    let tail = super::tails::get(store, object).await?;
    let wanted: Vec<&ChunkEntry> = tail.dir.iter().filter(|c| &c.partition == tp).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let in_tail = |c: &ChunkEntry| c.pos >= tail.start;
    let ranges: Vec<_> = wanted
        .iter()
        .filter(|c| !in_tail(c))
        .map(|c| c.pos..c.pos + u64::from(c.len))
        .collect();
    let mut fetched = if ranges.is_empty() {
        Vec::new()
    } else {
        store.get_ranges(&object.key, &ranges).await?
    }
    .into_iter();
    let mut out = Vec::with_capacity(wanted.len());
    for chunk in wanted {
        let data = if in_tail(chunk) {
            // Clamped: a directory pointing past the object reads short
            // and fails the length check below, never panics.
            let at = usize::try_from(chunk.pos - tail.start)
                .unwrap_or(usize::MAX)
                .min(tail.bytes.len());
            let end = at.saturating_add(chunk.len as usize).min(tail.bytes.len());
            tail.bytes.slice(at..end)
        } else {
            fetched.next().unwrap_or_default()
        };
        if data.len() != chunk.len as usize || crc32c::crc32c(&data) != chunk.crc {
            return Err(Error::corrupt(
                key,
                format!("chunk of {tp} fails its checksum"),
            ));
        }
        let batches = split_batches(data)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::corrupt(key, format!("chunk of {tp}: {e}")))?;
        out.push((chunk.clone(), batches));
    }
    Ok(out)
}
