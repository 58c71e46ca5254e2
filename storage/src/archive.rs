//! Archives of old segment entries: a long-lived partition's manifest is
//! rewritten on every seal, so it keeps only its newest segments. When it
//! lists more than `log.manifest_max_segments`, the oldest quarter of them
//! moves into an immutable archive object
//! (`…/{partition}/archive/{base_offset}-{uuid}.json`, create-only) that the
//! manifest references by offset range, size and newest timestamp
//! ([`ArchiveRef`]). Segments themselves never move.
//!
//! Readers find an offset's segment through the references ([`find`]);
//! archives are loaded once per process and shared, within a budget
//! (single flight, oldest out first), since they never change. Retention
//! drops whole archives; the bucket sweep (`crate::gc`) collects archives
//! no manifest references.
//!
//! The one thing not to break: an archive is written before the manifest
//! that references it, and never changed or deleted while a manifest head
//! references it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::keys::{self, TopicIdPartition};
use crate::manifest::{ArchiveRef, Manifest, SegmentMeta};

/// Archives kept loaded at most (each lists a quarter of
/// `log.manifest_max_segments` segments).
const CACHED_ARCHIVES: usize = 1024;

/// The stored form of an archive.
#[derive(Debug, Serialize, Deserialize)]
struct Archive {
    segments: Vec<SegmentMeta>,
}

type Cell = Arc<OnceCell<Arc<Vec<SegmentMeta>>>>;

#[derive(Default)]
struct Cache {
    cells: HashMap<String, Cell>,
    order: VecDeque<String>,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Cache::default()));

/// Moves the oldest segments of `manifest` into a new archive object when
/// it lists more than `max_segments`: writes the archive (create-only) and
/// replaces the entries by a reference. The caller writes the manifest.
pub async fn archive_if_long(
    store: &Arc<dyn ObjectStore>,
    tp: &TopicIdPartition,
    manifest: &mut Manifest,
    max_segments: usize,
) -> Result<()> {
    if manifest.segments.len() <= max_segments {
        return Ok(());
    }
    let run = (max_segments / 4).max(1);
    let moved: Vec<SegmentMeta> = manifest.segments.iter().take(run).cloned().collect();
    let (Some(first), Some(last)) = (moved.first(), moved.last()) else {
        return Ok(());
    };
    let key = keys::new_archive(tp, first.base_offset);
    let reference = ArchiveRef {
        key: key.to_string(),
        base_offset: first.base_offset,
        last_offset: last.last_offset,
        max_timestamp: moved
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(i64::MIN),
        segments: u32::try_from(moved.len()).unwrap_or(u32::MAX),
        size: moved.iter().map(|s| s.size).sum(),
    };
    let doc = Archive { segments: moved };
    let bytes = Bytes::from(serde_json::to_vec(&doc).map_err(|source| Error::Json {
        key: key.to_string(),
        source,
    })?);
    store
        .put_opts(
            &key,
            PutPayload::from(bytes),
            PutOptions::from(PutMode::Create),
        )
        .await?;
    // Later readers of this process need not fetch what they just wrote.
    remember(reference.key.clone(), Arc::new(doc.segments));
    manifest.segments.drain(..run);
    manifest.archives.push(reference);
    Ok(())
}

fn remember(key: String, segments: Arc<Vec<SegmentMeta>>) {
    let cell = Cell::new(OnceCell::new_with(Some(segments)));
    let mut cache = CACHE.lock();
    if cache.cells.insert(key.clone(), cell).is_none() {
        cache.order.push_back(key);
    }
    evict(&mut cache);
}

fn evict(cache: &mut Cache) {
    while cache.order.len() > CACHED_ARCHIVES {
        if let Some(old) = cache.order.pop_front() {
            cache.cells.remove(&old);
        }
    }
}

/// The segment entries of the archive `reference` names, loaded once per
/// process.
pub async fn load(store: &Arc<dyn ObjectStore>, key: &str) -> Result<Arc<Vec<SegmentMeta>>> {
    let cell = {
        let mut cache = CACHE.lock();
        if let Some(cell) = cache.cells.get(key) {
            cell.clone()
        } else {
            let cell = Cell::default();
            cache.cells.insert(key.to_string(), cell.clone());
            cache.order.push_back(key.to_string());
            evict(&mut cache);
            cell
        }
    };
    cell.get_or_try_init(|| async {
        let path = Path::from(key);
        let bytes = store.get(&path).await?.bytes().await?;
        let doc: Archive = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            key: key.to_string(),
            source,
        })?;
        Ok::<_, Error>(Arc::new(doc.segments))
    })
    .await
    .cloned()
}

/// The segment holding `offset`, from the manifest's own entries or its
/// archives; `None` when `offset` is not in a sealed segment (below the
/// log start or at/after [`Manifest::sealed_end`]).
pub async fn find(
    store: &Arc<dyn ObjectStore>,
    manifest: &Manifest,
    offset: i64,
) -> Result<Option<SegmentMeta>> {
    if offset < manifest.log_start_offset || offset >= manifest.sealed_end() {
        return Ok(None);
    }
    if offset >= manifest.unarchived_start() {
        let i = manifest
            .segments
            .partition_point(|s| s.last_offset < offset);
        return Ok(manifest.segments.get(i).cloned());
    }
    match archive_of(&manifest.archives, offset) {
        Some(reference) => segment_in(store, reference, offset).await,
        None => Ok(None),
    }
}

/// The archive of `archives` (ascending) covering `offset`, if any.
pub fn archive_of(archives: &[ArchiveRef], offset: i64) -> Option<&ArchiveRef> {
    archives.get(archives.partition_point(|a| a.last_offset < offset))
}

/// The segment of archive `reference` holding `offset`.
pub async fn segment_in(
    store: &Arc<dyn ObjectStore>,
    reference: &ArchiveRef,
    offset: i64,
) -> Result<Option<SegmentMeta>> {
    let segments = load(store, &reference.key).await?;
    let i = segments.partition_point(|s| s.last_offset < offset);
    Ok(segments.get(i).cloned())
}
