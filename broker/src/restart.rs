//! Restarting the broker's storage as a new incarnation, without
//! restarting the process.
//!
//! The storage engine's WAL writer stops for good when a WAL object cannot
//! be written for `wal.flush_timeout` (a store outage) or when another
//! incarnation fenced its stream. From then on every append fails. Instead
//! of staying dead until someone restarts it, the broker
//! ([`restart_storage`]):
//!
//! 1. marks itself not ready (`/readyz` 503, gRPC health `NOT_SERVING`);
//! 2. takes the engine out of the partition registry, which drops every
//!    open partition **without releasing it** (the failed writer cannot make
//!    a tail durable) and ends their fetch streams and in-flight opens;
//!    requests meanwhile get a retryable `BROKER_UNAVAILABLE`;
//! 3. shuts the old engine down in a background task, and waits for it (up
//!    to `shutdown_timeout`) before opening the new one, because both would
//!    use the hot tier's disk directory;
//! 4. opens a new [`Engine`] on the same store and broker id, which starts
//!    a new incarnation (a new WAL stream), retrying with exponential backoff
//!    up to `storage_restart_backoff` while the store is down;
//! 5. puts it in service and marks the broker ready again.
//!
//! Partitions reopen lazily on their next request: `PartitionLog::open`
//! fences the old incarnation's WAL stream and replays its tail, so every
//! record the old incarnation acknowledged is served again, once, at its
//! offset; records it never acknowledged are either absent or recovered
//! once (never duplicated, as offsets are only assigned from the manifest
//! and the fenced stream).
//!
//! The maintenance task ([`crate::maintenance`]) notices a stopped writer;
//! the cluster work calls the same operation when a takeover fenced this
//! broker ([`RestartReason::Fenced`]).
//!
//! The one thing not to break: never release (seal) a log of the taken
//! engine, and never let an open on it run after the new engine exists.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_storage::engine::Engine;

use crate::service::Shared;

/// The first wait after a failed attempt; doubles up to
/// `storage_restart_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Why the storage is restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartReason {
    /// The WAL writer stopped after a write kept failing (store outage).
    WalStopped(String),
    /// Another incarnation fenced this one (a takeover of a zombie).
    Fenced(String),
    /// An operator or a test asked for it.
    Requested(String),
}

impl std::fmt::Display for RestartReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartReason::WalStopped(e) => write!(f, "the WAL writer stopped: {e}"),
            RestartReason::Fenced(e) => write!(f, "this incarnation was fenced: {e}"),
            RestartReason::Requested(why) => write!(f, "requested: {why}"),
        }
    }
}

impl RestartReason {
    /// The reason to restart for, if `engine`'s WAL writer has stopped.
    pub fn of_engine(engine: &Engine) -> Option<Self> {
        let err = engine.wal().check().err()?;
        Some(if err.is_fenced() {
            RestartReason::Fenced(err.to_string())
        } else {
            RestartReason::WalStopped(err.to_string())
        })
    }
}

/// What a call to [`restart_storage`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartOutcome {
    /// A new incarnation is in service.
    Restarted,
    /// Another restart was under way; this call did nothing.
    AlreadyRestarting,
    /// The broker started shutting down; no engine is in service.
    ShuttingDown,
}

/// Clears the "restarting" flag however the restart ends (cancellation
/// included).
struct Restarting<'a>(&'a AtomicBool);

impl Drop for Restarting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Replaces the storage engine by a new incarnation: see the module docs.
/// Returns once the new engine is in service, or when shutdown starts.
/// Cancel-safe: dropped half-way, the broker stays unavailable with no
/// engine, which is what a shutdown (the only canceller) wants.
pub async fn restart_storage(shared: &Shared, reason: RestartReason) -> RestartOutcome {
    if shared.restarting.swap(true, Ordering::SeqCst) {
        return RestartOutcome::AlreadyRestarting;
    }
    let _flag = Restarting(&shared.restarting);
    if shared.shutdown.is_cancelled() {
        return RestartOutcome::ShuttingDown;
    }
    tracing::warn!(%reason, "restarting storage as a new incarnation; open partitions are dropped and reopen on their next request");
    shared.set_ready(false);
    shared.set_serving(false).await;

    if let Some(old) = shared.partitions.take_engine() {
        let stream = old.wal().stream();
        let closing = tokio::spawn(async move { old.shutdown().await });
        let limit = shared.config.shutdown_timeout;
        tokio::select! {
            () = shared.shutdown.cancelled() => return RestartOutcome::ShuttingDown,
            r = tokio::time::timeout(limit, closing) => match r {
                Ok(Ok(())) => tracing::info!(%stream, "old storage incarnation shut down"),
                Ok(Err(e)) => tracing::warn!(%stream, error = %e, "shutting the old storage incarnation down failed"),
                Err(_) => tracing::warn!(%stream, timeout = %humantime::format_duration(limit), "the old storage incarnation did not shut down in time; starting the new one anyway"),
            },
        }
    }

    let mut backoff = INITIAL_BACKOFF.min(shared.config.storage_restart_backoff);
    let mut attempt: u32 = 0;
    let engine = loop {
        attempt += 1;
        let open = Engine::open(
            shared.store.clone(),
            &shared.store_name,
            shared.broker_id,
            shared.config.engine_config(),
        );
        let opened = tokio::select! {
            () = shared.shutdown.cancelled() => return RestartOutcome::ShuttingDown,
            r = open => r,
        };
        match opened {
            Ok(engine) => break engine,
            Err(e) => tracing::warn!(
                attempt,
                retry_in = %humantime::format_duration(backoff),
                error = %e,
                "cannot start a new storage incarnation (is the store down?); retrying"
            ),
        }
        tokio::select! {
            () = shared.shutdown.cancelled() => return RestartOutcome::ShuttingDown,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(shared.config.storage_restart_backoff);
    };

    let stream = engine.wal().stream();
    shared.track_store_stats(&engine);
    shared.cluster.set_incarnation(stream.incarnation.0);
    if let Some(stray) = shared.partitions.install(engine) {
        // Only `restart_storage` takes and installs engines, one at a time.
        tracing::error!(stream = %stray.wal().stream(), "an engine was installed during a restart; shutting it down");
        tokio::spawn(async move { stray.shutdown().await });
    }
    if shared.shutdown.is_cancelled() {
        // The drain shuts the new engine down.
        return RestartOutcome::ShuttingDown;
    }
    shared.set_ready(true);
    shared.set_serving(true).await;
    if shared.shutdown.is_cancelled() {
        // A drain started meanwhile: do not advertise a stopping broker.
        shared.set_ready(false);
        shared.set_serving(false).await;
        return RestartOutcome::ShuttingDown;
    }
    tracing::info!(%stream, attempts = attempt, generation = shared.partitions.generation(), "storage restarted as a new incarnation; broker ready");
    RestartOutcome::Restarted
}
