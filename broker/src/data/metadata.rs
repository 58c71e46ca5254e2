//! Topics, their partitions and who owns each.

use std::time::Instant;

use strata_storage::keys::{TopicId, TopicPartition};

use crate::error::{BrokerError, Result};
use crate::service::Shared;
use crate::topics::Topic;

/// One partition as metadata shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Its number.
    pub partition: u32,
    /// The broker that owns it in the cluster assignment, if any.
    pub owner: Option<u32>,
    /// Its leader epoch when open here (0 otherwise).
    pub leader_epoch: i32,
}

/// Every live topic.
pub async fn all_topics(shared: &Shared) -> Result<Vec<Topic>> {
    shared.topics.list().await
}

/// The live topic with id `id`, if any, for a request that arrived at
/// `since` (see [`crate::topics::TopicRegistry::get_by_id`]).
pub async fn topic_by_id(shared: &Shared, id: TopicId, since: Instant) -> Result<Option<Topic>> {
    shared.topics.get_by_id(id, since).await
}

/// The name of the live topic with id `id`; [`unknown_topic_id`] if none.
pub async fn name_by_id(shared: &Shared, id: TopicId, since: Instant) -> Result<String> {
    match topic_by_id(shared, id, since).await? {
        Some(t) => Ok(t.name.to_string()),
        None => Err(unknown_topic_id(id)),
    }
}

/// The error for a request by an id no live topic has.
pub fn unknown_topic_id(id: TopicId) -> BrokerError {
    BrokerError::UnknownTopic(format!(
        "with id {} (deleted, or created again under its name: refresh metadata)",
        id.0
    ))
}

/// The partitions of `topic`, with owners from this broker's view of the
/// cluster assignment.
pub fn partitions(shared: &Shared, topic: &Topic) -> Vec<PartitionInfo> {
    (0..topic.record.partitions)
        .map(|p| {
            let tp = TopicPartition {
                topic: topic.name.clone(),
                partition: p,
            };
            PartitionInfo {
                partition: p,
                owner: shared.cluster.owner_of(topic.name.as_str(), p),
                leader_epoch: shared
                    .partitions
                    .get_open(&tp)
                    .map_or(0, |log| log.status().leader_epoch),
            }
        })
        .collect()
}
