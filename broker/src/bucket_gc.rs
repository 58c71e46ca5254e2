//! Bucket garbage collection, run by the controller every `gc.interval`
//! ([`strata_storage::gc::sweep`] does the work and says what is safe to
//! delete). Every broker runs the loop; only the one holding the
//! controller term sweeps, so a cluster pays for one sweep per interval.
//! Two sweeps at once (a controller change) are harmless: deletes are
//! idempotent and the tombstone that closes a stream is create-only.
//!
//! The last sweep's inventory (objects and bytes per kind) and the running
//! total of what was deleted are what `/metrics` shows as
//! `strata_bucket_objects`, `strata_bucket_bytes` and
//! `strata_gc_deleted_*_total`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use strata_storage::gc::{self, GcConfig, Inventory, LiveSet, SweepReport};
use strata_storage::keys;
use tokio_util::sync::CancellationToken;

use crate::service::Shared;

/// The sweeper's settings, store and results.
#[derive(Debug)]
pub struct BucketGc {
    store: Arc<dyn ObjectStore>,
    config: GcConfig,
    inventory: Mutex<Option<Inventory>>,
    deleted: Mutex<Inventory>,
}

impl BucketGc {
    /// A sweeper of `store` (with retries and request metrics).
    pub fn new(store: Arc<dyn ObjectStore>, config: GcConfig) -> Self {
        Self {
            store,
            config,
            inventory: Mutex::new(None),
            deleted: Mutex::new(Inventory::default()),
        }
    }

    /// What the bucket held after the last sweep this broker ran.
    pub fn inventory(&self) -> Option<Inventory> {
        *self.inventory.lock()
    }

    /// Everything this broker's sweeps deleted.
    pub fn deleted(&self) -> Inventory {
        *self.deleted.lock()
    }

    /// One sweep with what is alive now, at `now` by the store's clock.
    pub async fn sweep(
        &self,
        live: &LiveSet,
        now: chrono::DateTime<chrono::Utc>,
    ) -> strata_storage::Result<SweepReport> {
        let report = gc::sweep(&self.store, live, &self.config, now).await?;
        *self.inventory.lock() = Some(report.inventory);
        let mut total = self.deleted.lock();
        *total = total.plus(&report.deleted);
        Ok(report)
    }
}

/// What is alive, as this broker knows it: the live topics (re-read from
/// the bucket) and the streams the heartbeats name.
async fn live_set(shared: &Shared) -> crate::error::Result<LiveSet> {
    let topics: HashMap<_, _> = shared
        .topics
        .list_fresh()
        .await?
        .into_iter()
        .map(|t| (t.name, t.record.id))
        .collect();
    let streams: HashSet<_> = shared.cluster.known_streams().into_iter().collect();
    Ok(LiveSet { topics, streams })
}

/// Sweeps every `gc.interval` while this broker is the controller, until
/// `stop` is cancelled.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let interval = shared.config.gc.interval;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if !shared.cluster.is_controller() {
            continue;
        }
        let live = match live_set(&shared).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live topics; skipping this bucket sweep");
                continue;
            }
        };
        // Object ages are judged by the store's clock, never this host's
        // (DESIGN: no correctness rests on clock sync): the time the store
        // gave this broker's own heartbeat, written every interval, is at
        // most an interval behind it.
        let now = match shared
            .meta_store
            .head(&keys::heartbeat(shared.broker_id))
            .await
        {
            Ok(meta) => meta.last_modified,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store's clock (this broker's heartbeat); skipping this bucket sweep");
                continue;
            }
        };
        let started = std::time::Instant::now();
        tokio::select! {
            () = stop.cancelled() => return,
            r = shared.bucket_gc.sweep(&live, now) => match r {
                Ok(report) => tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    deleted_wal = report.deleted.wal.objects + report.deleted.wal_tombstones.objects,
                    deleted_segments = report.deleted.segments.objects,
                    retired_streams = report.retired_streams,
                    wal_objects = report.inventory.wal.objects,
                    segments = report.inventory.segments.objects,
                    complete = report.heads_complete,
                    "bucket sweep done"
                ),
                Err(e) => tracing::warn!(error = %e, "bucket sweep failed; the next one tries again"),
            }
        }
    }
}
