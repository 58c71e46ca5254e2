//! Ownership on this broker follows the assignment: partitions assigned
//! elsewhere are released (sealed, handed back, the new owner nudged), and
//! partitions assigned here are claimed: a claim waits for a live previous
//! owner's release and fences only a dead or replaced one, or a live one
//! that has not released within `cluster.release_timeout`. Also here: the
//! drain before a shutdown (wait until the controller moved everything
//! away) and the wait for a new topic's partitions to be assigned.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_storage::keys::{TopicName, TopicPartition, WalStream};

use super::membership::write_heartbeat;
use super::topic_changes::{announce_topic_change, apply_topic_changes};
use crate::error::BrokerError;
use crate::partitions::MayFence;
use crate::service::Shared;

/// Claims and releases in flight, so one round does not start them twice.
#[derive(Debug, Default)]
pub(super) struct Tasks {
    busy: Arc<Mutex<HashSet<TopicPartition>>>,
}

impl Tasks {
    /// Runs `work` for `tp` in its own task unless one is already running.
    fn spawn_once<F, Fut>(&self, shared: &Arc<Shared>, tp: TopicPartition, work: F)
    where
        F: FnOnce(Arc<Shared>, TopicPartition) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if !self.busy.lock().insert(tp.clone()) {
            return;
        }
        let busy = self.busy.clone();
        let done = tp.clone();
        let fut = work(shared.clone(), tp);
        tokio::spawn(async move {
            fut.await;
            busy.lock().remove(&done);
        });
    }
}

/// Follows the assignment: releases what is assigned elsewhere and claims
/// what is assigned here (each in its own task).
pub(super) fn reconcile(shared: &Shared, tasks: &mut Tasks) {
    let view = &shared.cluster;
    let Some((_, assignment)) = view.assignment() else {
        return;
    };
    let me = shared.broker_id.0;
    let Some(this) = shared.this.upgrade() else {
        return;
    };
    for log in shared.partitions.open_logs() {
        let tp = log.topic_partition().clone();
        if assignment.owner(tp.topic.as_str(), tp.partition) == Some(me) {
            continue;
        }
        tasks.spawn_once(&this, tp, |shared, tp| async move {
            hand_over(&shared, &tp).await
        });
    }
    if shared.shutdown.is_cancelled() {
        return;
    }
    for (topic, partition) in assignment.partitions_of(me) {
        let Ok(name) = TopicName::new(topic) else {
            continue;
        };
        let tp = TopicPartition {
            topic: name,
            partition,
        };
        if shared.partitions.get_open(&tp).is_some() {
            continue;
        }
        tasks.spawn_once(
            &this,
            tp,
            |shared, tp| async move { claim(&shared, &tp).await },
        );
    }
}

/// Releases `tp` (a graceful move away) and nudges its new owner.
async fn hand_over(shared: &Shared, tp: &TopicPartition) {
    let started = Instant::now();
    let to = shared.cluster.owner_of(tp.topic.as_str(), tp.partition);
    if to.is_none() {
        // The controller drops a topic from the assignment when it is
        // deleted. This broker may not have been told (it was unreachable
        // when the delete was announced): look at the topic's head before
        // writing anything into its keys, and drop the log without a word
        // if the topic is gone or was re-created.
        if let Err(e) = shared.topics.reread(&tp.topic).await {
            tracing::debug!(%tp, error = %e, "cannot re-read the topic of an unassigned partition; next round");
            return;
        }
        apply_topic_changes(shared).await;
        if shared.partitions.get_open(tp).is_none() {
            return;
        }
    }
    shared.partitions.release_one(tp).await;
    tracing::info!(%tp, to = ?to, took_ms = started.elapsed().as_millis() as u64, "released the partition to its new owner");
    if let Some(addr) = to.and_then(|b| shared.cluster.address_of(b)) {
        shared.cluster.nudge_broker(&addr).await;
    }
}

/// Claims `tp` while it stays assigned here: waits for a live previous
/// owner's release (woken by its nudge), fences a dead one.
async fn claim(shared: &Shared, tp: &TopicPartition) {
    let view = &shared.cluster;
    let started = Instant::now();
    let mut backoff = Duration::from_millis(20);
    let mut waiting_logged = false;
    loop {
        if shared.shutdown.is_cancelled()
            || view.owner_of(tp.topic.as_str(), tp.partition) != Some(shared.broker_id.0)
        {
            return;
        }
        let topic = match shared.topics.get(&tp.topic).await {
            Ok(t) => t,
            Err(BrokerError::UnknownTopic(_)) => return,
            Err(e) => {
                tracing::debug!(%tp, error = %e, "cannot read the topic to claim a partition; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let force = started.elapsed() >= view.config.release_timeout;
        // Register for the wake-up before trying, so a release that lands
        // between the try and the wait is not missed.
        let released = view.released.notified();
        match shared
            .partitions
            .get_or_open(&topic.partition(tp.partition), &topic.log_config, &{
                let guard = shared.fence_guard().clone();
                Arc::new(move |o: &WalStream| force || guard(o)) as MayFence
            })
            .await
        {
            Ok(log) => {
                let st = log.status();
                tracing::info!(%tp, epoch = st.leader_epoch, took_ms = started.elapsed().as_millis() as u64, sealed_bytes = st.sealed_bytes, "claimed the partition");
                return;
            }
            Err(e) => {
                let waiting = matches!(
                    &e,
                    BrokerError::Storage {
                        source: strata_storage::Error::OwnedElsewhere { .. },
                        ..
                    }
                );
                if waiting {
                    if !waiting_logged {
                        tracing::info!(%tp, error = %e, "waiting for the previous owner to release the partition");
                        waiting_logged = true;
                    }
                } else {
                    tracing::warn!(%tp, error = %e, "cannot claim the partition; retrying");
                }
                tokio::select! {
                    () = released => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(if waiting {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(2)
                });
            }
        }
    }
}

/// Drains this broker: marks it draining (heartbeat, not ready), lets the
/// controller move its partitions away, and returns once it serves none,
/// once no other broker can take them, or at `deadline`.
pub async fn drain(shared: &Shared, deadline: Instant) {
    let view = &shared.cluster;
    view.draining.store(true, Ordering::SeqCst);
    shared.set_ready(false);
    write_heartbeat(shared).await;
    tracing::info!(
        partitions = shared.partitions.len(),
        "draining: moving this broker's partitions to the other brokers"
    );
    view.nudge();
    view.nudge_all().await;
    let started = Instant::now();
    loop {
        let assigned_here = view
            .assignment()
            .is_some_and(|(_, a)| a.partitions_of(shared.broker_id.0).next().is_some());
        if !assigned_here && shared.partitions.is_empty() {
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "drained: every partition moved to another broker"
            );
            return;
        }
        if view.eligible_others().is_empty()
            && started.elapsed() > view.config.heartbeat_interval * 2
        {
            tracing::info!(
                "draining: no other live broker can take the partitions; releasing them"
            );
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                left = shared.partitions.len(),
                "draining took too long; releasing the remaining partitions"
            );
            return;
        }
        tokio::select! {
            () = view.released.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Waits (up to the heartbeat timeout) until every partition of `topic` is
/// assigned, nudging the controller so it plans now.
pub async fn await_assigned(shared: &Shared, topic: &crate::topics::Topic) {
    let view = &shared.cluster;
    let assigned = || {
        view.assignment().is_some_and(|(_, a)| {
            (0..topic.record.partitions).all(|p| a.owner(topic.name.as_str(), p).is_some())
        })
    };
    let deadline = Instant::now() + view.config.heartbeat_timeout;
    // Naming the topic makes every broker (the controller among them)
    // re-read it, even one whose cache says it was deleted.
    announce_topic_change(shared, &topic.name).await;
    while !assigned() && Instant::now() < deadline {
        tokio::select! {
            () = view.released.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    if !assigned() {
        tracing::warn!(topic = %topic.name, "the controller has not assigned the new topic's partitions yet; requests get a retryable NOT_OWNER meanwhile");
    }
}
