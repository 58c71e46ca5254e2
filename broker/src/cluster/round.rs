//! The cluster loop. [`run`] starts the heartbeat writer and runs a round
//! every `cluster.heartbeat_interval`, or at once when nudged: read the
//! members' heartbeats, elect, plan and publish (on the controller), apply
//! topic changes, follow the assignment. [`Look`] decides how much a round
//! reads, which is what a cluster costs at idle.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::controller::{control, elect, refresh_assignment};
use super::membership::{heartbeat_loop, read_heartbeats};
use super::ownership::{Tasks, reconcile};
use super::topic_changes::apply_topic_changes;
use crate::error::Result;
use crate::service::Shared;

/// Every this many rounds a broker LISTs the heartbeats and reads every
/// chain head even when no heartbeat hints at a change (see [`Look`]).
const LOOK_EVERY: u64 = 10;

/// Runs the cluster tasks (heartbeat writer, cluster loop) until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), stop.clone()));
    state_loop(&shared, &stop).await;
    let _ = heartbeats.await;
}

async fn state_loop(shared: &Shared, stop: &CancellationToken) {
    let view = &shared.cluster;
    let mut tasks = Tasks::default();
    // The first round looks at everything, and so does the one after a
    // failed round.
    let mut nudged = true;
    let mut failed = false;
    for n in 0u64.. {
        let blind = view.state.read().members.is_empty();
        let look = if nudged || failed || blind || n.is_multiple_of(LOOK_EVERY) {
            Look::Everything
        } else {
            Look::Hinted
        };
        failed = false;
        if let Err(e) = round(shared, &mut tasks, look).await {
            tracing::warn!(error = %e, "cluster round failed; retrying at the next one");
            failed = true;
        }
        if n == 0 {
            // The others discover this broker now rather than at their
            // next full look.
            view.nudge_all().await;
        }
        nudged = tokio::select! {
            () = stop.cancelled() => return,
            () = view.round.notified() => true,
            () = tokio::time::sleep(view.config.heartbeat_interval) => false,
        };
    }
}

/// How much a round reads.
///
/// At idle, a round costs one GET per member heartbeat and nothing else:
/// the controller term and the assignment version are read only when a
/// heartbeat names a newer one than this broker knows ([`Look::Hinted`]).
/// Every [`LOOK_EVERY`]th round, and every round woken by a nudge, also
/// LISTs the heartbeats (new brokers), the term and the assignment chains
/// ([`Look::Everything`]). Correctness does not rest on this: ownership is
/// decided by manifests and WAL fencing, and a stale view only delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Look {
    /// GET the known members' heartbeats; follow their hints.
    Hinted,
    /// LIST the heartbeats and read every chain head.
    Everything,
}

/// One round: read members, elect, plan (if controller), follow.
async fn round(shared: &Shared, tasks: &mut Tasks, look: Look) -> Result<()> {
    let view = &shared.cluster;
    let store = &shared.meta_store;
    let (known, wanted) = {
        let st = view.state.read();
        let wanted: Vec<u32> = st.wanted.iter().copied().collect();
        let known = match look {
            Look::Everything => None,
            Look::Hinted => Some(st.members.keys().chain(&wanted).copied().collect()),
        };
        (known, wanted)
    };
    let mut heartbeats = read_heartbeats(store, known).await?;
    heartbeats.asked_for = wanted;
    view.update_members(heartbeats);
    elect(shared, look).await?;
    let changed = refresh_assignment(shared, look).await?;
    if view.is_controller() && !view.is_draining() {
        control(shared, look).await?;
    }
    if changed {
        tracing::debug!("the partition assignment changed");
    }
    apply_topic_changes(shared).await;
    reconcile(shared, tasks);
    Ok(())
}
