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

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::format::{self, ChunkEntry, FOOTER_LEN, HEADER_LEN};
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

/// Fences `stream` from `from` on and returns its data objects from `from`
/// up to the first tombstone, contiguous and ascending.
pub async fn fence(
    store: &Arc<dyn ObjectStore>,
    stream: WalStream,
    from: WalSeq,
) -> Result<Vec<WalObject>> {
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
/// against its chunk CRC. Fetches the footer and directory with one ranged
/// GET, then only `tp`'s chunks.
pub async fn read_partition(
    store: &Arc<dyn ObjectStore>,
    object: &WalObject,
    tp: &TopicIdPartition,
) -> Result<Vec<(ChunkEntry, Vec<Batch>)>> {
    let key = object.key.as_ref();
    if object.size < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(Error::corrupt(key, "WAL object too small"));
    }
    // One GET for the tail: footer plus (usually) the whole directory.
    let tail_len = object.size.min(64 * 1024);
    let tail = store
        .get_range(&object.key, object.size - tail_len..object.size)
        .await?;
    let footer = format::decode_footer(key, &tail[tail.len() - FOOTER_LEN..], object.size)?;
    let dir_bytes: Bytes = if footer.dir_pos >= object.size - tail_len {
        let start = (footer.dir_pos - (object.size - tail_len)) as usize;
        tail.slice(start..start + footer.dir_len as usize)
    } else {
        store
            .get_range(
                &object.key,
                footer.dir_pos..footer.dir_pos + u64::from(footer.dir_len),
            )
            .await?
    };
    let dir = format::decode_directory(key, &dir_bytes, &footer)?;
    let wanted: Vec<ChunkEntry> = dir.into_iter().filter(|c| &c.partition == tp).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // Chunks inside the tail already read (all of them, for an object of
    // up to 64 KiB) cost no second GET.
    let tail_start = object.size - tail_len;
    let in_tail = |c: &ChunkEntry| c.pos >= tail_start;
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
        let data = if in_tail(&chunk) {
            // Clamped: a directory pointing past the object reads short
            // and fails the length check below, never panics.
            let start = usize::try_from(chunk.pos - tail_start)
                .unwrap_or(usize::MAX)
                .min(tail.len());
            let end = start.saturating_add(chunk.len as usize).min(tail.len());
            tail.slice(start..end)
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
        out.push((chunk, batches));
    }
    Ok(out)
}
