//! A broker id belongs to one running broker: a broker that starts with
//! the id of another one that is running refuses to start, with a message
//! saying so. Two brokers writing one heartbeat key would make every view
//! of the cluster flap between them (data stays safe: each has a WAL
//! stream of its own, and claims fence).
//!
//! The check reads the id's heartbeat. Missing, or written (by its
//! writer's clock) longer than `heartbeat_timeout` ago: the id is free. A
//! fresh one may be the last words of this broker's previous process (a
//! restart after kill -9), so the check watches it for a few heartbeat
//! intervals: a running broker rewrites it every interval, a dead one
//! never does. That wait only happens right after a crash.

use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt};
use strata_storage::keys::{self, BrokerId};

use super::model::Heartbeat;
use crate::config::ClusterConfig;
use crate::service::now_ms;

/// Heartbeat intervals a fresh heartbeat is watched for a change.
const WATCH_INTERVALS: u32 = 3;

async fn read(store: &Arc<dyn ObjectStore>, id: BrokerId) -> anyhow::Result<Option<Heartbeat>> {
    match store.get(&keys::heartbeat(id)).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            // An unreadable heartbeat is nobody's: it is overwritten.
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Fails when a running broker holds `id` (see the module docs).
pub async fn check_free(
    store: &Arc<dyn ObjectStore>,
    id: BrokerId,
    config: &ClusterConfig,
) -> anyhow::Result<()> {
    let Some(first) = read(store, id).await? else {
        return Ok(());
    };
    let age = now_ms().saturating_sub(first.written_at_ms);
    if age > i64::try_from(config.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX) {
        return Ok(());
    }
    let watch = (config.heartbeat_interval * WATCH_INTERVALS).min(config.heartbeat_timeout);
    let deadline = tokio::time::Instant::now() + watch;
    let step = (config.heartbeat_interval / 4).max(Duration::from_millis(20));
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(step).await;
        match read(store, id).await? {
            Some(hb) if hb.incarnation != first.incarnation || hb.seq != first.seq => {
                anyhow::bail!(
                    "broker id {id} is in use by a running broker at {} (incarnation {}); give \
                     every broker of a cluster its own broker_id (--broker-id, STRATA_BROKER_ID)",
                    hb.address,
                    hb.incarnation
                );
            }
            _ => {}
        }
    }
    tracing::info!(broker = %id, "the last heartbeat of this broker id stopped changing: its previous process is gone");
    Ok(())
}
