//! The partition manifest (DESIGN §5): the one document that says where every
//! record of a partition lives. Sealed records are in the listed segments;
//! unsealed ones in the owner's WAL stream from `tail.first_seq` on.
//! Manifests form a create-only [`Chain`](crate::chain::Chain): writing the
//! next version is how a broker claims, updates or releases a partition, and
//! losing that race is how it learns it was fenced.

use serde::{Deserialize, Serialize};

use crate::keys::{WalSeq, WalStream};
use crate::producers::ProducerTable;

/// One sealed segment object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Offset of its first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Largest record timestamp in it (ms), for time retention and lookups.
    pub max_timestamp: i64,
    /// Object size in bytes.
    pub size: u64,
    /// Bytes of batch data (the index starts here).
    pub index_pos: u64,
    /// Object key.
    pub key: String,
}

/// A run of old segments whose entries moved out of the manifest into an
/// immutable archive object ([`crate::archive`]), so that a long-lived
/// partition's manifest, rewritten on every seal, stays small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    /// The archive object's key.
    pub key: String,
    /// Offset of the first record of its first segment.
    pub base_offset: i64,
    /// Offset of the last record of its last segment.
    pub last_offset: i64,
    /// Largest record timestamp in its segments.
    pub max_timestamp: i64,
    /// How many segments it lists.
    pub segments: u32,
    /// Bytes of those segments.
    pub size: u64,
}

/// Where the unsealed records since the last segment can be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailPointer {
    /// The first offset not in a segment.
    pub from_offset: i64,
    /// The WAL stream holding the tail.
    pub wal: WalStream,
    /// No record of the tail is in a WAL object below this sequence.
    pub first_seq: WalSeq,
}

/// A partition manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Bumped by every change of owner.
    pub leader_epoch: i32,
    /// The incarnation serving the partition; `None` once released.
    pub owner: Option<WalStream>,
    /// First offset still readable (retention advances it).
    pub log_start_offset: i64,
    /// The durable end of the log when this version was written: recovery
    /// must find at least this much in segments and the WAL tail, or data
    /// was lost and it refuses to serve.
    pub next_offset: i64,
    /// Archived runs of the oldest sealed segments, ascending and
    /// contiguous, ending where `segments` begin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<ArchiveRef>,
    /// The newer sealed segments, ascending and contiguous.
    pub segments: Vec<SegmentMeta>,
    /// The unsealed tail, if the owner may have written one.
    pub tail: Option<TailPointer>,
    /// Idempotent-producer state of the durable records up to (at least)
    /// the segments' end; replaying the tail brings it up to date.
    pub producers: ProducerTable,
    /// Random id of the claim (open) that wrote this version. Two claims
    /// by the same incarnation would otherwise write byte-identical
    /// versions, and the chain counts an identical existing version as the
    /// writer's own (lost-response recovery): both would "win".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<u64>,
}

impl Manifest {
    /// The manifest of a partition that has never held a record.
    pub fn empty() -> Self {
        Self {
            leader_epoch: 0,
            owner: None,
            log_start_offset: 0,
            next_offset: 0,
            archives: Vec::new(),
            segments: Vec::new(),
            tail: None,
            producers: ProducerTable::default(),
            claim: None,
        }
    }

    /// The offset after the last sealed record.
    pub fn sealed_end(&self) -> i64 {
        match (self.segments.last(), self.archives.last()) {
            (Some(s), _) => s.last_offset + 1,
            (None, Some(a)) => a.last_offset + 1,
            (None, None) => self.log_start_offset,
        }
    }

    /// Total bytes of sealed segments (archived ones included).
    pub fn sealed_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum::<u64>()
            + self.archives.iter().map(|a| a.size).sum::<u64>()
    }

    /// How many sealed segments the partition has (archived ones included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
            + self
                .archives
                .iter()
                .map(|a| a.segments as usize)
                .sum::<usize>()
    }

    /// Where the segments listed in the manifest itself begin: offsets below
    /// are in archives (or below the log start).
    pub fn unarchived_start(&self) -> i64 {
        self.segments
            .first()
            .map_or_else(|| self.sealed_end(), |s| s.base_offset)
    }

    /// The first listed segment after `seg` (which may be listed or
    /// archived), for read-ahead across segments; [`crate::segment::read`]
    /// only prefetches it if it follows `seg` with no gap.
    pub fn next_segment(&self, seg: &SegmentMeta) -> Option<&SegmentMeta> {
        let i = self
            .segments
            .partition_point(|s| s.base_offset <= seg.base_offset);
        self.segments.get(i)
    }
}

/// The latest manifest of `tp`, read from the bucket (one LIST and one GET),
/// or `None` for a partition that was never opened. Any broker may read it:
/// this is how non-owners serve sealed data and describe partitions.
pub async fn load_head(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    tp: &crate::keys::TopicIdPartition,
) -> crate::error::Result<Option<(crate::keys::Version, Manifest)>> {
    crate::chain::Chain::<Manifest>::new(store.clone(), crate::keys::manifest_chain(tp))
        .head(None)
        .await
}

/// Reads sealed batches of the partition `manifest` describes from the
/// segment holding `offset` on, up to about `max_bytes` (at least one whole
/// batch), through `cache`. `None` when `offset` is not in a sealed segment
/// (below the log start or at/after [`Manifest::sealed_end`]): the unsealed
/// tail is only served by the owner.
pub async fn read_sealed(
    cache: &crate::hot_tier::SegmentCache,
    manifest: &Manifest,
    offset: i64,
    max_bytes: usize,
) -> crate::error::Result<Option<Vec<bytes::Bytes>>> {
    match crate::archive::find(cache.store(), manifest, offset).await? {
        Some(seg) => {
            crate::segment::read(cache, &seg, manifest.next_segment(&seg), offset, max_bytes)
                .await
                .map(Some)
        }
        None => Ok(None),
    }
}
