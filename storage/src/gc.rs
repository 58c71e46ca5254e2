//! Bucket garbage collection and inventory: what no manifest can name any
//! more is deleted, and what the bucket holds is counted per kind, so an
//! operator sees it plateau over months.
//!
//! A [`sweep`] lists the bucket one topic and one broker at a time (memory
//! bounded by the largest of them) and collects:
//!
//! - **Stale topic incarnations**: data under `topics/{topic}/{id}/` whose
//!   id is not the topic's live id (deleted or re-created; a purge that did
//!   not finish, or what a zombie of the old incarnation wrote after it).
//! - **Orphaned segments**: segments of a live partition that its manifest
//!   head does not list (a seal or claim that uploaded its segment and then
//!   lost the manifest race or failed).
//! - **WAL streams of dead incarnations**: a stream that no live broker
//!   writes (`LiveSet::streams`) loses every object below the lowest
//!   `tail.first_seq` any manifest head names it with. A stream no head
//!   names at all is *retired*: a tombstone goes at its end, so a zombie
//!   of it that wakes up is fenced on its next write, and everything below
//!   is deleted. The last tombstone goes after `tombstone_retention`.
//!
//! Safety rests on three rules; the one thing not to break is the first.
//! 1. WAL objects are deleted only when every partition head was read in
//!    this sweep: a head not read might name the stream lower down. Heads
//!    only move up for a dead stream (only its own incarnation writes a
//!    manifest naming it at a floor), so a takeover running at the same
//!    moment reads at or above what the sweep keeps.
//! 2. Nothing younger than `grace` (by the store's clock: the objects' own
//!    timestamps, against the caller's `now`) is collected: a seal's
//!    segment before its manifest lands, a topic created after the caller
//!    read the live set, a broker that the caller's view has not met yet.
//! 3. A retired stream ends in a tombstone written create-only: if the
//!    stream's writer is alive after all, the tombstone PUT finds its data
//!    object and the stream is left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::chain::Chain;
use crate::error::{Error, Result};
use crate::keys::{
    self, ObjectKind, TopicId, TopicIdPartition, TopicName, Version, WalSeq, WalStream,
};
use crate::manifest::Manifest;
use crate::wal::format::{self, HEADER_LEN};

/// Garbage-collection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// How often the controller sweeps the bucket (one LIST per topic and
    /// broker prefix per 1,000 objects, one manifest head read per
    /// partition). Longer is cheaper; shorter frees space sooner.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Objects younger than this are never collected. It must exceed the
    /// longest a seal can take between its segment upload and its manifest
    /// write, and the time a new broker takes to appear in every view.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How long the tombstone that closes a retired WAL stream stays. A
    /// zombie of that incarnation paused longer than this finds no
    /// tombstone to fence it: brokers therefore restart their storage as a
    /// new incarnation after any pause longer than `gc.grace`, before
    /// writing to their WAL again.
    #[serde(with = "humantime_serde")]
    pub tombstone_retention: Duration,
}

impl GcConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<()> {
        if self.interval < Duration::from_secs(1) {
            return Err(Error::Config {
                key: "gc.interval",
                reason: format!("must be at least 1s, got {:?}", self.interval),
            });
        }
        if self.grace < Duration::from_secs(60) {
            return Err(Error::Config {
                key: "gc.grace",
                reason: format!(
                    "must be at least 1m (a seal between its segment and its manifest, a new broker not yet seen), got {:?}",
                    self.grace
                ),
            });
        }
        Ok(())
    }
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15 * 60),
            grace: Duration::from_secs(3600),
            tombstone_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What is alive now, as the caller knows it.
#[derive(Debug, Clone, Default)]
pub struct LiveSet {
    /// Every live topic and the id of its live incarnation.
    pub topics: HashMap<TopicName, TopicId>,
    /// Every WAL stream a broker may still be writing (the incarnations
    /// the brokers' heartbeats name, this broker's own included).
    pub streams: HashSet<WalStream>,
}

/// Objects and bytes of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

/// Objects and bytes per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inventory {
    /// WAL data objects.
    pub wal: Count,
    /// WAL tombstones.
    pub wal_tombstones: Count,
    /// Sealed segments.
    pub segments: Count,
    /// Archives of old segment entries.
    pub archives: Count,
    /// Partition manifests.
    pub manifests: Count,
    /// Snapshots of state kept beside a partition's log (group
    /// coordinators').
    pub snapshots: Count,
    /// Topic config versions.
    pub topic_configs: Count,
    /// Cluster documents (heartbeats, terms, assignments, ids).
    pub cluster: Count,
    /// Anything else.
    pub other: Count,
}

impl Inventory {
    fn add(&mut self, kind: &ObjectKind, size: u64) {
        match kind {
            ObjectKind::Wal(..) if size as usize == HEADER_LEN => self.wal_tombstones.add(size),
            ObjectKind::Wal(..) => self.wal.add(size),
            ObjectKind::Segment(_) => self.segments.add(size),
            ObjectKind::Archive(_) => self.archives.add(size),
            ObjectKind::Manifest(..) => self.manifests.add(size),
            ObjectKind::Snapshot(..) => self.snapshots.add(size),
            ObjectKind::TopicConfig(_) => self.topic_configs.add(size),
            ObjectKind::Cluster => self.cluster.add(size),
            ObjectKind::Other => self.other.add(size),
        }
    }

    /// Each kind with its metric label.
    pub fn kinds(&self) -> [(&'static str, Count); 9] {
        [
            ("wal", self.wal),
            ("wal_tombstone", self.wal_tombstones),
            ("segment", self.segments),
            ("segment_archive", self.archives),
            ("manifest", self.manifests),
            ("snapshot", self.snapshots),
            ("topic_config", self.topic_configs),
            ("cluster", self.cluster),
            ("other", self.other),
        ]
    }

    /// Kind by kind, `f(self's count, other's count)`.
    fn zip_with(mut self, other: &Inventory, f: impl Fn(u64, u64) -> u64) -> Inventory {
        for (a, b) in [
            (&mut self.wal, other.wal),
            (&mut self.wal_tombstones, other.wal_tombstones),
            (&mut self.segments, other.segments),
            (&mut self.archives, other.archives),
            (&mut self.manifests, other.manifests),
            (&mut self.snapshots, other.snapshots),
            (&mut self.topic_configs, other.topic_configs),
            (&mut self.cluster, other.cluster),
            (&mut self.other, other.other),
        ] {
            a.objects = f(a.objects, b.objects);
            a.bytes = f(a.bytes, b.bytes);
        }
        self
    }

    /// Kind by kind, `self - gone` (saturating).
    pub fn minus(self, gone: &Inventory) -> Inventory {
        self.zip_with(gone, u64::saturating_sub)
    }

    /// Kind by kind, `self + more`.
    pub fn plus(self, more: &Inventory) -> Inventory {
        self.zip_with(more, u64::saturating_add)
    }
}

/// The outcome of a sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepReport {
    /// What the bucket holds after the sweep.
    pub inventory: Inventory,
    /// What the sweep deleted.
    pub deleted: Inventory,
    /// WAL streams retired (closed with a tombstone) by this sweep.
    pub retired_streams: u64,
    /// False when some partition head could not be read: no WAL object was
    /// deleted (rule 1), the next sweep tries again.
    pub heads_complete: bool,
}

/// Sweeps `store`: see the module docs. `now` is the store's clock (e.g.
/// the last-modified time of an object just written), compared with the
/// objects' last-modified times: never a host clock, which may be skewed.
pub async fn sweep(
    store: &Arc<dyn ObjectStore>,
    live: &LiveSet,
    config: &GcConfig,
    now: DateTime<Utc>,
) -> Result<SweepReport> {
    let mut sweep = Sweep {
        store,
        live,
        config,
        now,
        listed: Inventory::default(),
        deleted: Inventory::default(),
        named: HashMap::new(),
        heads_complete: true,
        retired: 0,
    };
    let top = store.list_with_delimiter(None).await?;
    for meta in &top.objects {
        sweep.listed.add(&ObjectKind::of(&meta.location), meta.size);
    }
    for prefix in top.common_prefixes {
        match prefix.as_ref() {
            "topics" | "wal" => {}
            _ => {
                let metas: Vec<ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
                for m in metas {
                    sweep.listed.add(&ObjectKind::of(&m.location), m.size);
                }
            }
        }
    }
    let topics = store
        .list_with_delimiter(Some(&keys::topics_prefix()))
        .await?;
    for prefix in topics.common_prefixes {
        let Some(Ok(name)) = prefix.filename().map(TopicName::new) else {
            continue;
        };
        sweep.topic(&name).await?;
    }
    let brokers = store.list_with_delimiter(Some(&Path::from("wal"))).await?;
    for prefix in brokers.common_prefixes {
        sweep.broker_wal(&prefix).await?;
    }
    Ok(SweepReport {
        inventory: sweep.listed.minus(&sweep.deleted),
        deleted: sweep.deleted,
        retired_streams: sweep.retired,
        heads_complete: sweep.heads_complete,
    })
}

struct Sweep<'a> {
    store: &'a Arc<dyn ObjectStore>,
    live: &'a LiveSet,
    config: &'a GcConfig,
    now: DateTime<Utc>,
    listed: Inventory,
    deleted: Inventory,
    /// Per dead-or-alive stream, the lowest `first_seq` a head names it with.
    named: HashMap<WalStream, WalSeq>,
    heads_complete: bool,
    retired: u64,
}

/// A partition's objects, as listed.
#[derive(Default)]
struct PartitionObjects {
    head: Option<Version>,
    segments: Vec<ObjectMeta>,
    archives: Vec<ObjectMeta>,
}

impl Sweep<'_> {
    fn old(&self, meta: &ObjectMeta) -> bool {
        let age = self.now.signed_duration_since(meta.last_modified);
        age.to_std().is_ok_and(|age| age >= self.config.grace)
    }

    async fn delete(&mut self, metas: Vec<(ObjectMeta, ObjectKind)>) -> Result<()> {
        if metas.is_empty() {
            return Ok(());
        }
        let paths: Vec<Path> = metas.iter().map(|(m, _)| m.location.clone()).collect();
        let results: Vec<_> = self
            .store
            .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed())
            .collect()
            .await;
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for (m, kind) in &metas {
            self.deleted.add(kind, m.size);
        }
        Ok(())
    }

    async fn topic(&mut self, name: &TopicName) -> Result<()> {
        let live_id = self.live.topics.get(name).copied();
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&keys::topic_root(name)))
            .try_collect()
            .await?;
        let mut partitions: BTreeMap<TopicIdPartition, PartitionObjects> = BTreeMap::new();
        let mut stale: BTreeMap<TopicId, Vec<(ObjectMeta, ObjectKind)>> = BTreeMap::new();
        for meta in metas {
            let kind = ObjectKind::of(&meta.location);
            self.listed.add(&kind, meta.size);
            let partition = match &kind {
                ObjectKind::Manifest(p, _)
                | ObjectKind::Segment(p)
                | ObjectKind::Archive(p)
                | ObjectKind::Snapshot(p, _) => p.clone(),
                _ => continue,
            };
            if Some(partition.topic_id) != live_id {
                stale
                    .entry(partition.topic_id)
                    .or_default()
                    .push((meta, kind));
                continue;
            }
            let entry = partitions.entry(partition).or_default();
            match kind {
                ObjectKind::Manifest(_, v) => entry.head = entry.head.max(Some(v)),
                ObjectKind::Archive(_) => entry.archives.push(meta),
                // Pruned by the partition's owner, which knows which one
                // its state needs.
                ObjectKind::Snapshot(..) => {}
                _ => entry.segments.push(meta),
            }
        }
        for (id, objects) in stale {
            if objects.iter().all(|(m, _)| self.old(m)) {
                tracing::info!(topic = %name, %id, objects = objects.len(), "collecting the data of a deleted topic incarnation");
                self.delete(objects).await?;
            } else {
                // Young: maybe a topic created after the live set was
                // read. Its heads still count for the WAL.
                let mut heads: BTreeMap<TopicIdPartition, Version> = BTreeMap::new();
                for (_, kind) in &objects {
                    if let ObjectKind::Manifest(p, v) = kind {
                        let h = heads.entry(p.clone()).or_insert(*v);
                        *h = (*h).max(*v);
                    }
                }
                for (p, v) in heads {
                    self.read_head(&p, v).await;
                }
            }
        }
        for (p, objects) in partitions {
            let head = match objects.head {
                Some(v) => match self.read_head(&p, v).await {
                    Some(m) => Some(m),
                    // Unreadable: keep its segments too.
                    None => continue,
                },
                None => None,
            };
            let listed: HashSet<&str> = head
                .iter()
                .flat_map(|m| m.segments.iter().map(|s| s.key.as_str()))
                .collect();
            // A manifest only ever adds segments at its sealed end, so an
            // unlisted segment starting below the head's sealed end can never
            // be listed: a seal that lost its race, or left by retention
            // below the log start. One starting at or after it may be a seal
            // whose manifest is on its way, and is left alone whatever its
            // age. Segments in archived ranges are listed in archives, which
            // the sweep does not read: an orphan there goes once retention
            // passes it.
            let (log_start, unarchived, sealed_end) =
                head.as_ref().map_or((i64::MAX, i64::MIN, i64::MIN), |m| {
                    (m.log_start_offset, m.unarchived_start(), m.sealed_end())
                });
            let judged = |m: &ObjectMeta| {
                keys::base_offset_of(&m.location).is_some_and(|base| {
                    base < log_start || (base >= unarchived && base < sealed_end)
                })
            };
            let orphans: Vec<(ObjectMeta, ObjectKind)> = objects
                .segments
                .into_iter()
                .filter(|m| !listed.contains(m.location.as_ref()) && judged(m) && self.old(m))
                .map(|m| (m, ObjectKind::Segment(p.clone())))
                .collect();
            if !orphans.is_empty() {
                tracing::info!(%p, segments = orphans.len(), "collecting segments no manifest lists");
                self.delete(orphans).await?;
            }
            let archived: HashSet<&str> = head
                .iter()
                .flat_map(|m| m.archives.iter().map(|a| a.key.as_str()))
                .collect();
            // Likewise an archive is written just before the manifest that
            // references it, starting where the manifest's own entries start.
            let stray: Vec<(ObjectMeta, ObjectKind)> = objects
                .archives
                .into_iter()
                .filter(|m| {
                    !archived.contains(m.location.as_ref())
                        && keys::base_offset_of(&m.location).is_some_and(|b| b < unarchived)
                        && self.old(m)
                })
                .map(|m| (m, ObjectKind::Archive(p.clone())))
                .collect();
            self.delete(stray).await?;
        }
        Ok(())
    }

    /// Reads `p`'s manifest head (listing from `from`) and notes the WAL
    /// stream its tail names. `None` (and an incomplete sweep) on error.
    async fn read_head(&mut self, p: &TopicIdPartition, from: Version) -> Option<Manifest> {
        let chain: Chain<Manifest> = Chain::new(self.store.clone(), keys::manifest_chain(p));
        match chain.head(Some(from)).await {
            Ok(Some((_, m))) => {
                if let Some(tail) = m.tail {
                    let floor = self.named.entry(tail.wal).or_insert(tail.first_seq);
                    *floor = (*floor).min(tail.first_seq);
                }
                Some(m)
            }
            Ok(None) => {
                // Collected since the listing: the head moved on. Its new
                // tail is unknown here.
                self.heads_complete = false;
                None
            }
            Err(e) => {
                tracing::warn!(%p, error = %e, "cannot read a manifest head; collecting no WAL object this sweep");
                self.heads_complete = false;
                None
            }
        }
    }

    async fn broker_wal(&mut self, prefix: &Path) -> Result<()> {
        let metas: Vec<ObjectMeta> = self.store.list(Some(prefix)).try_collect().await?;
        let mut streams: BTreeMap<(u32, u64), Vec<(WalSeq, ObjectMeta)>> = BTreeMap::new();
        for meta in metas {
            let kind = ObjectKind::of(&meta.location);
            self.listed.add(&kind, meta.size);
            if let ObjectKind::Wal(stream, seq) = kind {
                streams
                    .entry((stream.broker.0, stream.incarnation.0))
                    .or_default()
                    .push((seq, meta));
            }
        }
        for ((broker, incarnation), mut objects) in streams {
            let stream = WalStream {
                broker: keys::BrokerId(broker),
                incarnation: keys::Incarnation(incarnation),
            };
            if self.live.streams.contains(&stream)
                || !self.heads_complete
                || !objects.iter().all(|(_, m)| self.old(m))
            {
                continue;
            }
            objects.sort_by_key(|(seq, _)| *seq);
            match self.named.get(&stream).copied() {
                Some(floor) => {
                    let below: Vec<_> = objects
                        .into_iter()
                        .filter(|(seq, _)| *seq < floor)
                        .map(|(seq, m)| (m, ObjectKind::Wal(stream, seq)))
                        .collect();
                    self.delete(below).await?;
                }
                None => self.retire(stream, objects).await?,
            }
        }
        Ok(())
    }

    /// Closes a stream no head names with a tombstone and deletes the rest.
    async fn retire(
        &mut self,
        stream: WalStream,
        objects: Vec<(WalSeq, ObjectMeta)>,
    ) -> Result<()> {
        let Some((last, last_meta)) = objects.last().cloned() else {
            return Ok(());
        };
        let tombstone = last_meta.size as usize == HEADER_LEN;
        let (end, keep_end) = if tombstone {
            let expired = self
                .now
                .signed_duration_since(last_meta.last_modified)
                .to_std()
                .is_ok_and(|age| age >= self.config.tombstone_retention);
            (last, !expired)
        } else {
            // Close it: a zombie of this incarnation is fenced on its next
            // write. A data object already there means it is alive.
            let end = WalSeq(last.0 + 1);
            let write_id: u64 = rand::random();
            let put = crate::wal::writer::put_create(
                self.store.as_ref(),
                &stream.object(end),
                format::encode_header(true, write_id, end).into(),
                write_id,
                Duration::from_secs(30),
            )
            .await;
            match put {
                Ok(()) => {
                    self.listed.wal_tombstones.add(HEADER_LEN as u64);
                    self.retired += 1;
                }
                Err(e @ (Error::Fenced(_) | Error::Corrupt { .. })) => {
                    tracing::warn!(%stream, error = %e, "a WAL stream thought dead has an object where its closing tombstone goes; leaving it alone");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            (end, true)
        };
        let doomed: Vec<_> = objects
            .into_iter()
            .filter(|(seq, _)| *seq < end || (*seq == end && !keep_end))
            .map(|(seq, m)| (m, ObjectKind::Wal(stream, seq)))
            .collect();
        if !doomed.is_empty() {
            tracing::info!(%stream, objects = doomed.len(), "collecting the WAL of a dead incarnation");
        }
        self.delete(doomed).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;
    use crate::keys::{BrokerId, Incarnation, TopicPartition};
    use crate::manifest::{SegmentMeta, TailPointer};

    fn stream(broker: u32, inc: u64) -> WalStream {
        WalStream {
            broker: BrokerId(broker),
            incarnation: Incarnation(inc),
        }
    }

    fn config(grace: Duration) -> GcConfig {
        GcConfig {
            grace,
            tombstone_retention: Duration::from_secs(3600),
            ..GcConfig::default()
        }
    }

    async fn put(store: &Arc<dyn ObjectStore>, key: &Path, len: usize) {
        store
            .put(key, PutPayload::from(vec![0u8; len]))
            .await
            .unwrap();
    }

    async fn exists(store: &Arc<dyn ObjectStore>, key: &Path) -> bool {
        store.head(key).await.is_ok()
    }

    fn later() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(120)
    }

    /// A partition whose head names `tail` from `first_seq` and lists `segment`.
    async fn partition(
        store: &Arc<dyn ObjectStore>,
        p: &TopicIdPartition,
        tail: Option<(WalStream, u64)>,
        segment: &Path,
    ) {
        put(store, segment, 100).await;
        let mut m = Manifest::empty();
        m.segments.push(SegmentMeta {
            base_offset: 0,
            last_offset: 9,
            max_timestamp: 0,
            size: 100,
            index_pos: 90,
            key: segment.to_string(),
        });
        m.tail = tail.map(|(wal, seq)| TailPointer {
            from_offset: 10,
            wal,
            first_seq: WalSeq(seq),
        });
        let chain: Chain<Manifest> = Chain::new(store.clone(), keys::manifest_chain(p));
        chain.create(Version(0), &Manifest::empty()).await.unwrap();
        chain.create(Version(1), &m).await.unwrap();
    }

    #[tokio::test]
    async fn collects_only_what_no_manifest_can_name() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let name = TopicName::new("t").unwrap();
        let live_id = TopicId::random();
        let p0 = TopicIdPartition::new(live_id, TopicPartition::new("t", 0).unwrap());
        let p1 = TopicIdPartition::new(live_id, TopicPartition::new("t", 1).unwrap());
        let (alive, named, dead, closed) =
            (stream(1, 10), stream(2, 20), stream(3, 30), stream(4, 40));
        // p0's tail is in the dead-but-named stream from seq 3 on.
        let kept_segment = keys::new_segment(&p0, 0);
        partition(&store, &p0, Some((named, 3)), &kept_segment).await;
        // A seal of offsets 0.. that lost the manifest race, and one of
        // offsets 10.. whose manifest is still on its way (kept: it starts
        // at the head's sealed end).
        let orphan = keys::new_segment(&p0, 0);
        put(&store, &orphan, 50).await;
        let pending = keys::new_segment(&p0, 10);
        put(&store, &pending, 60).await;
        partition(&store, &p1, Some((alive, 0)), &keys::new_segment(&p1, 0)).await;
        for seq in 0..5 {
            put(&store, &alive.object(WalSeq(seq)), 100).await;
            put(&store, &named.object(WalSeq(seq)), 100).await;
            put(&store, &dead.object(WalSeq(seq)), 100).await;
        }
        // A stream fenced by a takeover long ago: data then a tombstone.
        put(&store, &closed.object(WalSeq(0)), 100).await;
        put(&store, &closed.object(WalSeq(1)), HEADER_LEN).await;
        // A deleted incarnation of the topic that a zombie wrote into.
        let stale = TopicIdPartition::new(TopicId::random(), TopicPartition::new("t", 0).unwrap());
        let stale_segment = keys::new_segment(&stale, 0);
        put(&store, &stale_segment, 70).await;

        let live = LiveSet {
            topics: HashMap::from([(name, live_id)]),
            streams: HashSet::from([alive]),
        };
        // Young objects are never collected.
        let report = sweep(
            &store,
            &live,
            &config(Duration::from_secs(3600)),
            Utc::now(),
        )
        .await
        .unwrap();
        assert_eq!(report.deleted, Inventory::default());
        assert_eq!(report.inventory.wal.objects, 16);
        assert_eq!(report.inventory.wal_tombstones.objects, 1);
        assert_eq!(report.inventory.segments.objects, 5);
        assert_eq!(report.inventory.manifests.objects, 4);

        let report = sweep(&store, &live, &config(Duration::from_secs(60)), later())
            .await
            .unwrap();
        assert!(report.heads_complete);
        // The live stream is its writer's business.
        for seq in 0..5 {
            assert!(exists(&store, &alive.object(WalSeq(seq))).await);
        }
        // The named dead stream keeps what p0's tail needs.
        for seq in 0..5 {
            assert_eq!(
                exists(&store, &named.object(WalSeq(seq))).await,
                seq >= 3,
                "{seq}"
            );
        }
        // The unnamed dead stream is closed by a tombstone, the rest goes.
        for seq in 0..5 {
            assert!(!exists(&store, &dead.object(WalSeq(seq))).await);
        }
        let end = store.head(&dead.object(WalSeq(5))).await.unwrap();
        assert_eq!(end.size as usize, HEADER_LEN, "the closing tombstone");
        assert!(!exists(&store, &closed.object(WalSeq(0))).await);
        assert!(exists(&store, &closed.object(WalSeq(1))).await);
        assert_eq!(report.retired_streams, 1);
        // Segments: the orphan and the stale incarnation's go.
        assert!(exists(&store, &kept_segment).await);
        assert!(exists(&store, &pending).await, "a seal on its way is kept");
        assert!(!exists(&store, &orphan).await);
        assert!(!exists(&store, &stale_segment).await);
        assert_eq!(report.deleted.segments.objects, 2);
        assert_eq!(report.deleted.wal.objects, 3 + 5 + 1);
        assert_eq!(report.inventory.wal.objects, 5 + 2);
        assert_eq!(report.inventory.wal_tombstones.objects, 2);

        // Once their retention passed, the closing tombstones go too, and
        // a sweep of a quiet bucket finds nothing more.
        let mut c = config(Duration::from_secs(60));
        c.tombstone_retention = Duration::from_secs(60);
        let report = sweep(&store, &live, &c, later()).await.unwrap();
        assert_eq!(report.deleted.wal_tombstones.objects, 2);
        let report = sweep(&store, &live, &c, later()).await.unwrap();
        assert_eq!(report.deleted, Inventory::default());
    }

    #[tokio::test]
    async fn a_stream_that_writes_again_is_left_alone() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let s = stream(5, 50);
        put(&store, &s.object(WalSeq(0)), 100).await;
        // Its writer lands the next object first.
        let mut data = format::encode_header(false, 1, WalSeq(1)).to_vec();
        data.resize(100, 0);
        store
            .put(&s.object(WalSeq(1)), PutPayload::from(data))
            .await
            .unwrap();
        let objects = vec![(WalSeq(0), store.head(&s.object(WalSeq(0))).await.unwrap())];
        let live = LiveSet::default();
        let c = config(Duration::ZERO);
        let mut sweep = Sweep {
            store: &store,
            live: &live,
            config: &c,
            now: later(),
            listed: Inventory::default(),
            deleted: Inventory::default(),
            named: HashMap::new(),
            heads_complete: true,
            retired: 0,
        };
        sweep.retire(s, objects).await.unwrap();
        assert!(exists(&store, &s.object(WalSeq(0))).await);
        assert_eq!(store.head(&s.object(WalSeq(1))).await.unwrap().size, 100);
    }

    #[tokio::test]
    async fn an_unreadable_head_keeps_every_wal_object() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let id = TopicId::random();
        let p = TopicIdPartition::new(id, TopicPartition::new("t", 0).unwrap());
        put(&store, &keys::manifest_chain(&p).version(Version(0)), 3).await; // not JSON
        let dead = stream(3, 30);
        put(&store, &dead.object(WalSeq(0)), 100).await;
        let live = LiveSet {
            topics: HashMap::from([(TopicName::new("t").unwrap(), id)]),
            streams: HashSet::new(),
        };
        let report = sweep(&store, &live, &config(Duration::ZERO), later())
            .await
            .unwrap();
        assert!(!report.heads_complete);
        assert!(exists(&store, &dead.object(WalSeq(0))).await);
    }
}
