//! Background housekeeping, one task per broker: every
//! `maintenance_interval` it checks that the storage engine's WAL writer
//! still runs, restarting the storage as a new incarnation when it stopped
//! ([`crate::restart`]); then it runs `maintain` on each open partition
//! (time-based sealing and retention), seals the largest tails first while
//! the broker's unsealed tails hold more than half of
//! `wal.max_unsealed_bytes` (appends are refused at the whole of it), and
//! garbage-collects this incarnation's WAL objects that no partition
//! needs any more.
//!
//! Errors are logged and never fatal; a partition whose log reports
//! `Fenced` is dropped from the registry (it is reopened, or in a cluster
//! redirected, by the next request).

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;
use crate::restart::{self, RestartReason};
use crate::service::{Shared, now_ms};

/// Partitions maintained concurrently.
const CONCURRENCY: usize = 16;

/// Runs until `stop` is cancelled, with the bucket sweep
/// ([`crate::bucket_gc::run`]) beside it.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let sweeper = tokio::spawn(crate::bucket_gc::run(shared.clone(), stop.clone()));
    let mut tick = tokio::time::interval(shared.config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = once(&shared) => {}
        }
    }
    let _ = sweeper.await;
}

/// One round of maintenance.
pub async fn once(shared: &Shared) {
    let Some(engine) = shared.partitions.engine() else {
        // A restart is under way (or the broker is shutting down).
        return;
    };
    if let Some(reason) = RestartReason::of_engine(&engine) {
        drop(engine);
        restart::restart_storage(shared, reason).await;
        return;
    }
    let now = now_ms();
    let mut rounds = futures::stream::iter(shared.partitions.open_logs())
        .map(|log| async move {
            let r = log.maintain(now).await;
            (log, r)
        })
        .buffer_unordered(CONCURRENCY);
    while let Some((log, r)) = rounds.next().await {
        if let Err(e) = r {
            let tp = log.topic_partition().clone();
            let err = BrokerError::storage(&tp, e);
            tracing::warn!(%tp, error = %err, "partition maintenance failed");
            shared.partitions.note_error(&tp, &err);
        }
    }
    seal_under_pressure(shared, &engine).await;
    match engine.wal().gc().await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(objects = n, "deleted WAL objects no partition needs"),
        Err(e) => tracing::warn!(error = %e, "WAL garbage collection failed"),
    }
}

/// Seals the largest tails, one at a time, until the broker's unsealed
/// tails are back under half their budget (appends are refused at the
/// whole of it, so this keeps producers from ever meeting that wall when
/// seals keep up).
async fn seal_under_pressure(shared: &Shared, engine: &strata_storage::engine::Engine) {
    let wal = engine.wal();
    let target = wal.max_unsealed_bytes() / 2;
    if wal.unsealed_bytes() <= target {
        return;
    }
    let mut logs = shared.partitions.open_logs();
    logs.sort_by_key(|l| std::cmp::Reverse(l.status().tail_bytes));
    let before = wal.unsealed_bytes();
    let mut sealed = 0;
    for log in logs {
        if wal.unsealed_bytes() <= target || log.status().tail_bytes == 0 {
            break;
        }
        match log.seal().await {
            Ok(_) => sealed += 1,
            Err(e) => {
                let tp = log.topic_partition().clone();
                let err = BrokerError::storage(&tp, e);
                tracing::warn!(%tp, error = %err, "sealing a large tail under memory pressure failed");
                shared.partitions.note_error(&tp, &err);
            }
        }
    }
    tracing::info!(
        sealed,
        before,
        after = wal.unsealed_bytes(),
        budget = wal.max_unsealed_bytes(),
        "sealed the largest tails: unsealed tails were over half of wal.max_unsealed_bytes"
    );
}
