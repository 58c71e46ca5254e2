//! Sealed segment objects (DESIGN §5): a partition's batches exactly as
//! stored, then a sparse index and a footer.
//!
//! ```text
//! batches            the stored RecordBatch bytes, contiguous offsets
//! index              every ~index_interval bytes: relative offset u32,
//!                    byte position u32, max timestamp so far i64 (16 B each)
//! footer      48 B   magic "STRSEG01", base_offset i64, last_offset i64,
//!                    max_timestamp i64, index_pos u64, index_count u32,
//!                    index crc32c u32
//! ```
//! The manifest records `size` and `index_pos`, so a reader goes straight to
//! the index without reading the footer. All reads go through the hot tier.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::batch::{Batch, BatchHeader, RECORD_BATCH_OVERHEAD};
use crate::error::{Error, Result};
use crate::hot_tier::SegmentCache;
use crate::manifest::SegmentMeta;

const MAGIC: &[u8; 8] = b"STRSEG01";
/// Footer size.
pub const FOOTER_LEN: usize = 48;
const INDEX_ENTRY_LEN: usize = 16;
/// How a seal's upload trades requests (each billed like a PUT) for
/// latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// Nothing waits for it (a seal by size, age or memory pressure): one
    /// PUT up to [`MULTIPART_THRESHOLD`], so a segment of the default
    /// `log.segment_bytes` (32 MiB) and the bit more a seal under load
    /// takes costs one request, not the six of 8 MiB parts (which made
    /// segments cost more requests per GiB than the WAL). One stream's
    /// bandwidth is enough in the background; a partition whose seals
    /// fall behind it (its tail grows past the threshold) uploads in
    /// parallel 16 MiB parts and catches up.
    Background,
    /// A hand-over or a takeover waits for it, and the partition with it:
    /// parallel 8 MiB parts above 16 MiB, a few requests more for about
    /// one round trip instead of one stream's transfer time.
    Waited,
}

/// Background seals larger than this upload with multipart.
pub const MULTIPART_THRESHOLD: usize = 48 << 20;

impl Upload {
    /// Above which size the upload goes in parts, and their size.
    fn multipart(self) -> (usize, usize) {
        match self {
            Self::Background => (MULTIPART_THRESHOLD, 16 << 20),
            Self::Waited => (16 << 20, 8 << 20),
        }
    }
}

/// Parts of one segment uploaded at once: a 128 MiB segment goes up in
/// one round trip.
const UPLOAD_PARTS_IN_FLIGHT: usize = 8;

/// One sparse-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the indexed batch's first record, relative to the base.
    pub rel_offset: u32,
    /// Byte position of that batch in the object.
    pub pos: u32,
    /// Largest timestamp of all batches up to and including it.
    pub max_timestamp: i64,
}

/// A segment ready to upload.
#[derive(Debug)]
pub struct SegmentData {
    parts: Vec<Bytes>,
    /// Its manifest entry, minus the key.
    pub meta: SegmentMeta,
}

/// Lays out `batches` (stamped, contiguous, non-empty) as a segment.
pub fn build(batches: &[Batch], index_interval: usize) -> Result<SegmentData> {
    let first = batches
        .first()
        .ok_or_else(|| Error::Unavailable("cannot seal an empty segment".into()))?;
    let base = first.base_offset();
    let mut parts = Vec::with_capacity(batches.len() + 1);
    let mut index = BytesMut::new();
    let mut pos = 0u64;
    let mut since_index = usize::MAX;
    let mut max_ts = i64::MIN;
    let mut expected = base;
    for b in batches {
        if b.base_offset() != expected {
            return Err(Error::Unavailable(format!(
                "segment batches are not contiguous: expected offset {expected}, got {}",
                b.base_offset()
            )));
        }
        expected = b.last_offset() + 1;
        max_ts = max_ts.max(b.max_timestamp());
        if since_index >= index_interval {
            index.put_u32((b.base_offset() - base) as u32);
            index.put_u32(pos as u32);
            index.put_i64(max_ts);
            since_index = 0;
        }
        since_index += b.len();
        pos += b.len() as u64;
        parts.push(b.bytes().clone());
    }
    if pos > u64::from(u32::MAX) {
        return Err(Error::TooLarge {
            what: "segment",
            size: pos as usize,
            limit: u32::MAX as usize,
        });
    }
    let last = expected - 1;
    let index_pos = pos;
    let index_count = (index.len() / INDEX_ENTRY_LEN) as u32;
    let crc = crc32c::crc32c(&index);
    index.put_slice(MAGIC);
    index.put_i64(base);
    index.put_i64(last);
    index.put_i64(max_ts);
    index.put_u64(index_pos);
    index.put_u32(index_count);
    index.put_u32(crc);
    let size = index_pos + index.len() as u64;
    parts.push(index.freeze());
    Ok(SegmentData {
        parts,
        meta: SegmentMeta {
            base_offset: base,
            last_offset: last,
            max_timestamp: max_ts,
            size,
            index_pos,
            key: String::new(),
        },
    })
}

/// Uploads a built segment to `key` (multipart when large, as `how` says)
/// and returns its manifest entry.
pub async fn upload(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    data: SegmentData,
    how: Upload,
) -> Result<SegmentMeta> {
    let mut meta = data.meta;
    meta.key = key.to_string();
    let (threshold, part_size) = how.multipart();
    if meta.size as usize <= threshold {
        let payload: PutPayload = data.parts.into_iter().collect();
        store.put(key, payload).await?;
    } else {
        let upload = store.put_multipart(key).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, part_size);
        for p in data.parts {
            w.wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT).await?;
            w.put(p);
        }
        w.finish().await?;
    }
    Ok(meta)
}

/// Builds `batches` into a segment under a new unique key of `tp` and
/// uploads it: the one way every caller seals.
pub async fn seal(
    store: &Arc<dyn ObjectStore>,
    tp: &crate::keys::TopicIdPartition,
    batches: &[Batch],
    index_interval: usize,
    how: Upload,
) -> Result<SegmentMeta> {
    let data = build(batches, index_interval)?;
    let key = crate::keys::new_segment(tp, data.meta.base_offset);
    upload(store, &key, data, how).await
}

/// Parses a segment's index section (`index_pos .. size - FOOTER_LEN`).
pub fn parse_index(key: &str, buf: &[u8]) -> Result<Vec<IndexEntry>> {
    if !buf.len().is_multiple_of(INDEX_ENTRY_LEN) {
        return Err(Error::corrupt(key, "segment index has a partial entry"));
    }
    Ok(buf
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|c| IndexEntry {
            rel_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            pos: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            max_timestamp: i64::from_be_bytes([
                c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15],
            ]),
        })
        .collect())
}

/// Reads stored batches of `seg` from the one holding `offset` on, up to
/// `max_bytes` (at least one whole batch, however large), through the cache.
///
/// `next` is the segment after `seg`, if known: when the read ends within
/// the cache's read-ahead of `seg`'s end, the index and first blocks of
/// `next` are prefetched, so that a consumer catching up crosses segments
/// without waiting for a GET.
pub async fn read(
    cache: &SegmentCache,
    seg: &SegmentMeta,
    next: Option<&SegmentMeta>,
    offset: i64,
    max_bytes: usize,
) -> Result<Vec<Bytes>> {
    let key = Path::from(seg.key.as_str());
    let index = load_index(cache, &key, seg).await?;
    let rel = (offset - seg.base_offset).max(0);
    let start = index
        .partition_point(|e| i64::from(e.rel_offset) <= rel)
        .checked_sub(1)
        .map_or(0, |i| u64::from(index[i].pos));
    let (batches, end) = scan(cache, &key, seg, start, offset, max_bytes).await?;
    if let Some(next) = next.filter(|n| n.base_offset == seg.last_offset + 1)
        && seg.index_pos.saturating_sub(end) <= cache.read_ahead_bytes()
    {
        let next_key = Path::from(next.key.as_str());
        cache.prefetch(&next_key, next.size, next.index_pos..next.size);
        cache.prefetch(&next_key, next.size, 0..next.index_pos);
    }
    Ok(batches)
}

/// Finds the first offset whose batch has a timestamp `>= ts` in `seg`, if any.
pub async fn offset_for_timestamp(
    cache: &SegmentCache,
    seg: &SegmentMeta,
    ts: i64,
) -> Result<Option<i64>> {
    if seg.max_timestamp < ts {
        return Ok(None);
    }
    let key = Path::from(seg.key.as_str());
    let index = load_index(cache, &key, seg).await?;
    // Entries carry the running max timestamp: start from the last entry
    // whose running max is still below `ts`.
    let i = index.partition_point(|e| e.max_timestamp < ts);
    let mut pos = if i == 0 {
        0
    } else {
        u64::from(index[i - 1].pos)
    };
    while pos < seg.index_pos {
        let header = read_header(cache, &key, seg, pos).await?;
        if header.max_timestamp >= ts {
            return Ok(Some(header.base_offset));
        }
        pos += header.total_size() as u64;
    }
    Ok(None)
}

async fn load_index(
    cache: &SegmentCache,
    key: &Path,
    seg: &SegmentMeta,
) -> Result<Vec<IndexEntry>> {
    let bytes = cache
        .read(key, seg.size, seg.index_pos..seg.size - FOOTER_LEN as u64)
        .await?;
    parse_index(&seg.key, &bytes)
}

async fn read_header(
    cache: &SegmentCache,
    key: &Path,
    seg: &SegmentMeta,
    pos: u64,
) -> Result<BatchHeader> {
    let end = (pos + RECORD_BATCH_OVERHEAD as u64).min(seg.index_pos);
    let b = cache.read(key, seg.size, pos..end).await?;
    BatchHeader::parse(&b).map_err(|e| Error::corrupt(key, format!("batch at byte {pos}: {e}")))
}

async fn scan(
    cache: &SegmentCache,
    key: &Path,
    seg: &SegmentMeta,
    mut pos: u64,
    offset: i64,
    max_bytes: usize,
) -> Result<(Vec<Bytes>, u64)> {
    let mut out = Vec::new();
    let mut total = 0usize;
    while pos < seg.index_pos {
        let header = read_header(cache, key, seg, pos).await?;
        let len = header.total_size();
        if header.last_offset() < offset {
            pos += len as u64;
            continue;
        }
        if !out.is_empty() && total + len > max_bytes {
            break;
        }
        let end = pos + len as u64;
        if end > seg.index_pos {
            return Err(Error::corrupt(
                key,
                format!("batch at byte {pos} runs past the data"),
            ));
        }
        out.push(cache.read(key, seg.size, pos..end).await?);
        total += len;
        pos = end;
        if total >= max_bytes {
            break;
        }
    }
    Ok((out, pos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use object_store::memory::InMemory;

    use super::*;
    use crate::batch::{BatchBuilder, BatchLimits};
    use crate::hot_tier::HotTierConfig;

    /// `count` batches of `records` 1 KiB records each, from `base` on.
    fn batches(base: i64, count: usize, records: usize) -> Vec<Batch> {
        (0..count)
            .map(|i| {
                let first = base + (i * records) as i64;
                let mut b = BatchBuilder::new();
                for r in 0..records {
                    b.push(1000, None, Some(&[(first + r as i64) as u8; 1024]), &[]);
                }
                Batch::validate(b.build(), &BatchLimits::default())
                    .unwrap()
                    .stamp(first, 1)
            })
            .collect()
    }

    async fn segment(store: &Arc<dyn ObjectStore>, name: &str, batches: &[Batch]) -> SegmentMeta {
        uploaded(store, name, batches, Upload::Background).await
    }

    async fn uploaded(
        store: &Arc<dyn ObjectStore>,
        name: &str,
        batches: &[Batch],
        how: Upload,
    ) -> SegmentMeta {
        let data = build(batches, 4096).unwrap();
        upload(store, &Path::from(name), data, how).await.unwrap()
    }

    #[tokio::test]
    async fn a_reader_near_a_segments_end_prefetches_the_next_one() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // Two segments of 32 batches of 16 records of 1 KiB: about 34
        // blocks of 16 KiB each; read-ahead of 8 blocks.
        let first = segment(&store, "seg/a", &batches(0, 32, 16)).await;
        let second = segment(&store, "seg/b", &batches(512, 32, 16)).await;
        let cache = SegmentCache::new(
            store.clone(),
            HotTierConfig {
                memory_bytes: 8 << 20,
                block_bytes: 16 << 10,
                read_ahead_blocks: 8,
                ..HotTierConfig::default()
            },
        )
        .await
        .unwrap();

        // Far from the end: nothing of the next segment is fetched.
        let got = read(&cache, &first, Some(&second), 0, 64 << 10)
            .await
            .unwrap();
        assert_eq!(
            got.first().map(|b| b.len()),
            Some(first.index_pos as usize / 32)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = cache.stats();

        // The last batch: the index and first blocks of the next one come in.
        let got = read(&cache, &first, Some(&second), 496, 64 << 10)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        tokio::time::timeout(Duration::from_secs(10), async {
            // Its index (the last block) and its first 8 blocks.
            while cache.stats().read_ahead_blocks < before.read_ahead_blocks + 9 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let misses = cache.stats().misses;
        let got = read(&cache, &second, None, 512, 64 << 10).await.unwrap();
        assert_eq!(got.len(), 3, "64 KiB of batches of about 17 KiB");
        assert_eq!(got[0], batches(512, 1, 16)[0].bytes().clone());
        assert_eq!(
            cache.stats().misses,
            misses,
            "the next segment's first read is served from the cache"
        );

        // A `next` that does not follow the segment is not prefetched.
        let third = segment(&store, "seg/c", &batches(5000, 4, 16)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ahead = cache.stats().read_ahead_blocks;
        read(&cache, &first, Some(&third), 496, 64 << 10)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.stats().read_ahead_blocks, ahead);
        cache.close().await;
    }

    /// Every request of an upload is billed like a PUT: a background
    /// seal of the default size (32 MiB, and the bit more a seal under
    /// load takes) goes up in one PUT, not a multipart upload of six
    /// requests; only a tail that grew past [`MULTIPART_THRESHOLD`] (its
    /// seals fell behind) uploads in parts, in parallel, to catch up. A
    /// seal that a hand-over waits for takes parallel parts from 16 MiB.
    #[tokio::test]
    async fn a_background_seal_is_one_put_and_a_large_or_waited_one_goes_in_parts() {
        use crate::store::MetricsStore;
        let metered = Arc::new(MetricsStore::new(Arc::new(InMemory::new())));
        let stats = metered.stats();
        let store: Arc<dyn ObjectStore> = metered;
        let requests = || {
            let s = stats.snapshot();
            (s.put_requests, s.multipart_requests)
        };
        // About 40 MiB: 80 batches of 512 records of 1 KiB.
        let default_size = batches(0, 80, 512);
        let meta = segment(&store, "s/40", &default_size).await;
        assert_eq!(requests(), (1, 0), "{meta:?}");

        let large = batches(0, 2 * (MULTIPART_THRESHOLD >> 20) + 16, 512);
        let meta = segment(&store, "s/large", &large).await;
        let parts = (meta.size as usize).div_ceil(16 << 20) as u64;
        assert_eq!(requests(), (1, parts + 2), "start, parts, complete");
        let back = store.get(&Path::from("s/large")).await.unwrap();
        assert_eq!(back.bytes().await.unwrap().len() as u64, meta.size);

        let meta = uploaded(&store, "s/waited", &default_size, Upload::Waited).await;
        let waited = (meta.size as usize).div_ceil(8 << 20) as u64;
        assert_eq!(requests(), (1, parts + 2 + waited + 2));
    }
}
