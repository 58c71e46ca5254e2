//! Membership: this broker's heartbeat and the other brokers'.
//!
//! Every `cluster.heartbeat_interval` a broker overwrites
//! `cluster/brokers/{id}/heartbeat.json` ([`Heartbeat`]: addresses,
//! incarnation, draining, the partitions open here with the rates measured
//! since the last heartbeat, the load). After a pause longer than
//! `cluster.heartbeat_timeout` it first checks whether its WAL was fenced
//! meanwhile and, if so, restarts its storage as a new incarnation. Each
//! round reads the others' heartbeats into the [`ClusterView`]: a missing
//! heartbeat means the broker left, one that could not be read keeps its
//! member as it was (a failed GET is not a departure, nor a sign of life).
//! The controller deletes the heartbeats of brokers long dead that own
//! nothing; a broker that leaves deletes its own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use strata_storage::keys::{self, BrokerId, TopicPartition};
use strata_storage::log::PartitionLog;
use tokio_util::sync::CancellationToken;

use super::controller::storage_err;
use super::model::{Heartbeat, Load, OwnedPartition};
use super::view::{ClusterView, Member};
use crate::error::Result;
use crate::restart::{self, RestartReason};
use crate::service::{Shared, now_ms};

impl ClusterView {
    /// Counts `bytes` produced into `tp`.
    pub fn count_bytes_in(&self, tp: &TopicPartition, bytes: u64) {
        self.count(tp, |c| c.bytes_in += bytes);
    }

    /// Counts `bytes` fetched from `tp`.
    pub fn count_bytes_out(&self, tp: &TopicPartition, bytes: u64) {
        self.count(tp, |c| c.bytes_out += bytes);
    }

    /// Updates `tp`'s counters (cloning the key only on its first use).
    fn count(&self, tp: &TopicPartition, add: impl FnOnce(&mut TrafficCount)) {
        let mut traffic = self.traffic.lock();
        match traffic.get_mut(tp) {
            Some(c) => add(c),
            None => add(traffic.entry(tp.clone()).or_default()),
        }
    }

    /// The load last published in the heartbeat.
    pub fn load(&self) -> Load {
        *self.load.lock()
    }

    /// Updates the members from freshly read heartbeats (a broker whose
    /// heartbeat object is gone has left; one whose heartbeat could not be
    /// read stays as it was).
    pub(super) fn update_members(&self, heartbeats: Heartbeats) {
        let now = Instant::now();
        let mut st = self.state.write();
        let found: BTreeSet<u32> = heartbeats
            .read
            .iter()
            .map(|hb| hb.broker_id)
            .chain(heartbeats.unread.iter().copied())
            .collect();
        st.gone.retain(|b| !found.contains(b));
        for b in &heartbeats.asked_for {
            st.wanted.remove(b);
            if !found.contains(b) {
                st.gone.insert(*b);
            }
        }
        let mut next = BTreeMap::new();
        for b in heartbeats.unread {
            if let Some(m) = st.members.get(&b) {
                next.insert(b, m.clone());
            }
        }
        for hb in heartbeats.read {
            let changed_at = match st.members.get(&hb.broker_id) {
                Some(m) if m.hb.incarnation == hb.incarnation && m.hb.seq == hb.seq => m.changed_at,
                _ => now,
            };
            next.insert(hb.broker_id, Member { hb, changed_at });
        }
        st.members = next;
    }
}

/// Bytes produced into and fetched from one partition since start.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TrafficCount {
    bytes_in: u64,
    bytes_out: u64,
}

/// Rates computed between two heartbeats.
#[derive(Debug)]
pub(super) struct RateMeter {
    at: Instant,
    bytes_in: u64,
    bytes_out: u64,
    cpu: f64,
    partitions: HashMap<TopicPartition, TrafficCount>,
}

impl RateMeter {
    fn new(shared: &Shared) -> Self {
        Self {
            at: Instant::now(),
            bytes_in: shared.metrics.produce_bytes.load(Ordering::Relaxed),
            bytes_out: shared.metrics.fetch_bytes.load(Ordering::Relaxed),
            cpu: crate::metrics::process_cpu_seconds(),
            partitions: shared.cluster.traffic.lock().clone(),
        }
    }
}

/// Builds this broker's heartbeat, measuring rates since the last one.
fn build_heartbeat(shared: &Shared) -> Option<Heartbeat> {
    let engine = shared.partitions.engine()?;
    let view = &shared.cluster;
    let now = RateMeter::new(shared);
    let mut meter = view.meter.lock();
    let last = meter.get_or_insert_with(|| RateMeter::new(shared));
    let secs = now.at.duration_since(last.at).as_secs_f64();
    let rate = |after: u64, before: u64| {
        if secs < 1e-3 {
            0.0
        } else {
            after.saturating_sub(before) as f64 / secs
        }
    };
    let load = if secs < 1e-3 {
        *view.load.lock()
    } else {
        Load {
            bytes_in_per_sec: rate(now.bytes_in, last.bytes_in),
            bytes_out_per_sec: rate(now.bytes_out, last.bytes_out),
            cpu_cores: ((now.cpu - last.cpu) / secs).max(0.0),
        }
    };
    let open = shared.partitions.open_logs();
    let partitions = open
        .iter()
        .map(|log| {
            let tp = log.topic_partition();
            let before = last.partitions.get(tp).copied().unwrap_or_default();
            let after = now.partitions.get(tp).copied().unwrap_or_default();
            OwnedPartition {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                bytes_in_per_sec: rate(after.bytes_in, before.bytes_in),
                bytes_out_per_sec: rate(after.bytes_out, before.bytes_out),
            }
        })
        .collect();
    // Counters of partitions not open here (sealed reads served for other
    // owners, partitions gone) are reported by nobody: drop them, so the
    // map stays as small as the open set.
    let open: HashSet<&TopicPartition> = open.iter().map(PartitionLog::topic_partition).collect();
    let mut now = now;
    now.partitions.retain(|tp, _| open.contains(tp));
    view.traffic.lock().retain(|tp, _| open.contains(tp));
    *meter = Some(now);
    drop(meter);
    *view.load.lock() = load;
    let (controller_term, assignment_version) = {
        let st = view.state.read();
        (
            st.controller.as_ref().map(|(v, _)| v.0),
            st.assignment.as_ref().map(|(v, _)| v.0),
        )
    };
    Some(Heartbeat {
        broker_id: shared.broker_id.0,
        incarnation: engine.wal().stream().incarnation.0,
        address: shared.advertised_addr.clone(),
        http_address: shared.http_url.clone(),
        kafka_address: shared.kafka_advertised_addr.clone(),
        draining: view.is_draining(),
        seq: view.hb_seq.fetch_add(1, Ordering::SeqCst),
        written_at_ms: now_ms(),
        load,
        partitions,
        controller_term,
        assignment_version,
    })
}

/// Writes this broker's heartbeat now. Returns false when it could not
/// (or must not: its claimed id was taken over by another broker).
pub async fn write_heartbeat(shared: &Shared) -> bool {
    if shared.id_lost.is_cancelled() {
        return false;
    }
    let Some(hb) = build_heartbeat(shared) else {
        return false;
    };
    let Ok(json) = serde_json::to_vec(&hb) else {
        return false;
    };
    match shared
        .meta_store
        .put(
            &keys::heartbeat(shared.broker_id),
            PutPayload::from(Bytes::from(json)),
        )
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the heartbeat; other brokers take this broker's partitions over if it stays unwritten for cluster.heartbeat_timeout");
            false
        }
    }
}

pub(super) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let view = &shared.cluster;
    let interval = view.config.heartbeat_interval;
    let mut last = Instant::now();
    let mut last_written = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let gap = last.elapsed();
        last = Instant::now();
        let silent = last_written.elapsed();
        if silent > view.config.heartbeat_timeout {
            match check_claim(&shared, silent).await {
                ClaimCheck::Held => {}
                ClaimCheck::Unknown => continue,
                ClaimCheck::Lost => return,
            }
        }
        if gap > view.config.heartbeat_timeout {
            check_paused(&shared, gap).await;
        }
        if write_heartbeat(&shared).await {
            last_written = Instant::now();
        }
    }
}

/// What [`check_claim`] found.
enum ClaimCheck {
    /// The id is still this broker's (or it is a fixed id).
    Held,
    /// Another broker claimed the id: this one must stop.
    Lost,
    /// The claim could not be read (the store is still out): do not
    /// heartbeat yet, check again next round.
    Unknown,
}

/// After this broker could not heartbeat for longer than the heartbeat
/// timeout (a pause, a store outage), and before it writes its heartbeat
/// again: checks that its claimed id (`broker_id = "auto"`) is still its
/// own. Another broker may claim it once the heartbeat is
/// `cluster.forget_dead_after` old; then this one stops heartbeating and
/// [`Shared::id_lost`] tells the process to exit (a restart claims a free
/// id).
async fn check_claim(shared: &Shared, silent: Duration) -> ClaimCheck {
    let Some(claim) = &shared.id_claim else {
        return ClaimCheck::Held;
    };
    match claim.still_held().await {
        Ok(true) => ClaimCheck::Held,
        Ok(false) => {
            let silent = humantime::format_duration(Duration::from_secs(silent.as_secs()));
            tracing::error!(
                broker = %claim.id(),
                "this broker could not heartbeat for {silent} and another broker has claimed its id meanwhile; stopping (a restart claims a free id)"
            );
            shared.id_lost.cancel();
            ClaimCheck::Lost
        }
        Err(e) => {
            // Not writing meanwhile: if the id was taken, this broker's
            // heartbeat would overwrite its new holder's.
            tracing::warn!(error = %format!("{e:#}"), "cannot check this broker's id claim after a silence; not heartbeating until it can");
            ClaimCheck::Unknown
        }
    }
}

/// After this process did not run for longer than the heartbeat timeout
/// (SIGSTOP, a VM pause, starvation), other brokers may have taken its
/// partitions over and fenced its WAL. Find out now rather than at the
/// next WAL write, and come back as a new incarnation if so.
async fn check_paused(shared: &Shared, gap: Duration) {
    let Some(engine) = shared.partitions.engine() else {
        return;
    };
    let stream = engine.wal().stream();
    let paused = humantime::format_duration(Duration::from_millis(gap.as_millis() as u64));
    let restart_because = if gap >= shared.config.gc.grace {
        // The bucket sweep may have retired this incarnation's WAL
        // meanwhile (and, after gc.tombstone_retention, removed the
        // tombstone that would fence it): never write to it again.
        Some(format!(
            "paused for {paused}, longer than gc.grace: {stream} may have been collected"
        ))
    } else {
        // Fenced: another broker wrote at or above our next sequence.
        let next = engine.wal().next_seq();
        match strata_storage::wal::list_from(&shared.meta_store, stream, next).await {
            Ok(above) if !above.is_empty() => Some(format!(
                "paused for {paused}; another broker took the partitions over and fenced {stream}"
            )),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check whether this broker's WAL was fenced while it was paused");
                None
            }
        }
    };
    match restart_because {
        Some(reason) => {
            tracing::warn!(%stream, %paused, %reason, "this broker was paused too long; rejoining as a new incarnation");
            restart::restart_storage(shared, RestartReason::Fenced(reason)).await;
        }
        None => {
            tracing::warn!(%stream, %paused, "this broker was paused longer than cluster.heartbeat_timeout; its WAL was not fenced, carrying on");
        }
    }
}

/// Heartbeats read in one round.
#[derive(Debug, Default)]
pub(super) struct Heartbeats {
    /// Wanted brokers (see `ViewState::wanted`) this read looked for.
    pub(super) asked_for: Vec<u32>,
    pub(super) read: Vec<Heartbeat>,
    /// Brokers whose heartbeat exists but could not be read now: their
    /// members are kept as they were (a failed GET is not a departure).
    pub(super) unread: Vec<u32>,
}

/// Reads the heartbeats of `known` brokers (a GET each; a broker whose
/// heartbeat is gone has left), or of every broker (a LIST first).
pub(super) async fn read_heartbeats(
    store: &Arc<dyn ObjectStore>,
    known: Option<Vec<u32>>,
) -> Result<Heartbeats> {
    let ids: Vec<u32> = match known {
        Some(ids) => ids,
        None => store
            .list(Some(&keys::heartbeats_prefix()))
            .try_filter_map(|m| std::future::ready(Ok(heartbeat_owner(&m.location))))
            .try_collect()
            .await
            .map_err(|e| storage_err("listing heartbeats", e.into()))?,
    };
    let reads = ids.into_iter().map(|b| async move {
        let location = keys::heartbeat(BrokerId(b));
        let got = match store.get(&location).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match got {
            Ok(bytes) => match serde_json::from_slice::<Heartbeat>(&bytes) {
                Ok(hb) => Ok(Some(hb)),
                Err(e) => {
                    tracing::warn!(key = %location, error = %e, "ignoring an unreadable heartbeat");
                    Err(b)
                }
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => {
                tracing::debug!(key = %location, error = %e, "cannot read a heartbeat; keeping what was seen");
                Err(b)
            }
        }
    });
    let results: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(16)
        .collect()
        .await;
    let mut out = Heartbeats::default();
    for r in results {
        match r {
            Ok(Some(hb)) => out.read.push(hb),
            Ok(None) => {}
            Err(b) => out.unread.push(b),
        }
    }
    Ok(out)
}

/// The broker id of a `cluster/brokers/{id}/heartbeat.json` key.
pub(super) fn heartbeat_owner(location: &object_store::path::Path) -> Option<u32> {
    if location.filename() != Some("heartbeat.json") {
        return None;
    }
    let parts: Vec<_> = location.parts().collect();
    parts
        .len()
        .checked_sub(2)
        .and_then(|i| parts[i].as_ref().parse().ok())
}

/// Deletes the heartbeats of brokers dead for `cluster.forget_dead_after`
/// that own nothing in the assignment, so `cluster status` and every
/// broker's per-interval heartbeat reads stop carrying them. A broker that
/// was only paused writes its heartbeat again and reappears.
pub(super) async fn forget_dead(shared: &Shared) {
    let view = &shared.cluster;
    let doomed: Vec<u32> = {
        let st = view.state.read();
        let owns = |b: u32| {
            st.assignment
                .as_ref()
                .is_some_and(|(_, a)| a.partitions_of(b).next().is_some())
        };
        st.members
            .values()
            .filter(|m| m.changed_at.elapsed() >= view.config.forget_dead_after)
            .filter(|m| !view.alive(m) && !owns(m.hb.broker_id))
            .map(|m| m.hb.broker_id)
            .collect()
    };
    for id in doomed {
        match shared
            .meta_store
            .delete(&keys::heartbeat(BrokerId(id)))
            .await
        {
            Ok(()) => {
                view.state.write().members.remove(&id);
                tracing::info!(broker = id, after = %humantime::format_duration(view.config.forget_dead_after), "forgot a dead broker: deleted its heartbeat");
            }
            Err(e) => {
                tracing::debug!(broker = id, error = %e, "cannot delete a dead broker's heartbeat")
            }
        }
    }
}

/// Leaves the cluster: deletes the heartbeat so the others stop waiting
/// for it, gives a claimed id back (free for the next broker at once), and
/// nudges the others. A broker whose claimed id was taken over touches
/// neither: both are its successor's.
pub async fn leave(shared: &Shared) {
    if shared.id_lost.is_cancelled() {
        return;
    }
    if let Err(e) = shared
        .meta_store
        .delete(&keys::heartbeat(shared.broker_id))
        .await
    {
        tracing::debug!(error = %e, "cannot delete the heartbeat");
    }
    if let Some(claim) = &shared.id_claim {
        claim.release().await;
    }
    shared.cluster.nudge_all().await;
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    pub(in crate::cluster) fn hb(broker_id: u32, seq: u64) -> Heartbeat {
        Heartbeat {
            broker_id,
            incarnation: 1,
            address: format!("http://broker-{broker_id}"),
            http_address: String::new(),
            kafka_address: String::new(),
            draining: false,
            seq,
            written_at_ms: 0,
            load: Load::default(),
            partitions: Vec::new(),
            controller_term: Some(1),
            assignment_version: Some(broker_id.into()),
        }
    }

    #[test]
    fn a_heartbeat_that_could_not_be_read_keeps_its_member() {
        let view = ClusterView::new(BrokerId(1), ClusterConfig::default());
        let members = |view: &ClusterView| -> Vec<u32> {
            view.state.read().members.keys().copied().collect()
        };
        view.update_members(Heartbeats {
            read: vec![hb(1, 1), hb(2, 1)],
            ..Heartbeats::default()
        });
        let seen = view.state.read().members[&2].changed_at;
        // A failed GET is not a departure, nor a sign of life.
        view.update_members(Heartbeats {
            read: vec![hb(1, 2)],
            unread: vec![2],
            ..Heartbeats::default()
        });
        assert_eq!(members(&view), [1, 2]);
        assert_eq!(view.state.read().members[&2].changed_at, seen);
        // Not found: gone.
        view.update_members(Heartbeats {
            read: vec![hb(1, 3)],
            ..Heartbeats::default()
        });
        assert_eq!(members(&view), [1]);
        // A failed read of a broker never seen adds nothing.
        view.update_members(Heartbeats {
            read: vec![hb(1, 4)],
            unread: vec![7],
            ..Heartbeats::default()
        });
        assert_eq!(members(&view), [1]);
    }

    #[test]
    fn heartbeat_keys_name_their_broker() {
        assert_eq!(heartbeat_owner(&keys::heartbeat(BrokerId(42))), Some(42));
        let other = keys::heartbeats_prefix().join("42").join("other.json");
        assert_eq!(heartbeat_owner(&other), None);
    }
}
