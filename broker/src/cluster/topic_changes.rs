//! Topic fan-out: how a topic created, deleted, re-created or reconfigured
//! on one broker reaches the others. The broker that made the change
//! announces it (a `Cluster.Nudge` naming the topic); each broker re-reads
//! the topic's head and brings the partitions open there in line (drops
//! those of a deleted or re-created topic, releases those of a
//! reconfigured one). Before a re-create, no live broker may still hold a
//! partition of the deleted topic open.

use std::time::Instant;

use strata_storage::keys::TopicName;

use crate::error::{BrokerError, Result};
use crate::service::Shared;

/// Brings the partitions open here in line with topic changes this broker
/// has seen.
///
/// Drops, without writing anything, the partitions whose topic was deleted
/// or re-created: those whose topic head this broker saw move
/// ([`crate::topics::TopicRegistry::take_changed`]), and any of a topic
/// its cache knows is deleted (an open that raced the delete). Their keys
/// are being purged, so a release would write stale state into them.
///
/// Releases (seals and hands back, as for a move) the partitions of a topic
/// whose settings changed ([`crate::topics::TopicRegistry::take_reconfigured`]):
/// the next request reopens them with the new settings.
pub async fn apply_topic_changes(shared: &Shared) {
    for topic in shared.topics.take_reconfigured() {
        shared.partitions.release_topic(&topic).await;
        tracing::info!(%topic, "released the partitions of a reconfigured topic; they reopen with its new settings");
    }
    let mut gone = shared.topics.take_changed();
    gone.extend(
        shared
            .partitions
            .open_topics()
            .into_iter()
            .filter(|t| shared.topics.cached_as_deleted(t)),
    );
    gone.sort();
    gone.dedup();
    for topic in gone {
        let n = shared
            .partitions
            .abandon_topic(&topic, "its topic was deleted or re-created")
            .await;
        if n > 0 {
            tracing::info!(%topic, partitions = n, "dropped the partitions of a deleted or re-created topic");
        }
    }
}

/// Before `topic` is created: if it is a re-create after a delete, makes
/// sure no live broker still has a partition of the deleted topic open, so
/// no old log can write into the new topic's keys. Drops this broker's own,
/// tells the others again ([`announce_topic_change`]), and waits until
/// every live broker that did not answer stops listing the topic in its
/// heartbeat; fails (retryable) after twice the heartbeat timeout. A topic
/// that never existed (or is live) costs one head read.
pub async fn await_topic_closed(shared: &Shared, topic: &TopicName) -> Result<()> {
    shared.topics.reread(topic).await?;
    if !shared.topics.cached_as_deleted(topic) {
        // Never created (or live): no old topic to close.
        return Ok(());
    }
    apply_topic_changes(shared).await;
    let view = &shared.cluster;
    let silent = announce_topic_change(shared, topic).await;
    let deadline = Instant::now() + 2 * view.config.heartbeat_timeout;
    loop {
        let holders: Vec<u32> = view
            .brokers_with_open(topic.as_str())
            .into_iter()
            .filter(|b| silent.contains(b))
            .collect();
        if holders.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BrokerError::storage(
                format!("re-creating topic {topic}"),
                strata_storage::Error::Unavailable(format!(
                    "brokers {holders:?} still have partitions of the deleted topic open and do not answer; retry in a few seconds"
                )),
            ));
        }
        tokio::time::sleep(view.config.heartbeat_interval / 4).await;
    }
}

/// Tells every live broker that `topic` was created, deleted or re-created: each
/// re-reads its head and drops its partitions of the old topic before it
/// answers (`Cluster.Nudge` with the topic), and the controller drops it
/// from the assignment at once. A broker that cannot be reached sees a
/// delete when the controller drops the topic from the assignment: it
/// re-reads the head of a topic before releasing an unassigned partition
/// of it (`ownership::hand_over`). Returns the brokers that did not answer.
pub async fn announce_topic_change(shared: &Shared, topic: &TopicName) -> Vec<u32> {
    let view = &shared.cluster;
    view.nudge();
    let others: Vec<(u32, String)> = view
        .live_brokers()
        .into_iter()
        .filter(|(b, _)| *b != shared.broker_id.0)
        .collect();
    let topics = vec![topic.to_string()];
    let answers = futures::future::join_all(
        others
            .iter()
            .map(|(_, a)| view.send_nudge(a, topics.clone())),
    )
    .await;
    others
        .iter()
        .zip(answers)
        .filter(|(_, ok)| !ok)
        .map(|((b, _), _)| *b)
        .collect()
}
