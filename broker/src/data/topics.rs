//! Creating, changing and deleting topics, whatever the front end.

use crate::cluster;
use crate::error::{BrokerError, Result};
use crate::service::{Shared, now_ms};
use crate::topics::{self, Topic, TopicOverrides, TopicRecord};

/// Creates `name` with `partitions` and `overrides` (or, with
/// `if_not_exists`, returns the existing topic); returns once the
/// controller assigned its partitions, so it is usable at once. The bool
/// is true when this call created it.
pub async fn create(
    shared: &Shared,
    name: &str,
    partitions: u32,
    overrides: TopicOverrides,
    if_not_exists: bool,
) -> Result<(Topic, bool)> {
    shared.check_running()?;
    let name = topics::parse_name(name)?;
    // A re-create: no log of the deleted topic may still be open.
    cluster::await_topic_closed(shared, &name).await?;
    let (topic, created) = shared
        .topics
        .create(&name, partitions, overrides, if_not_exists, now_ms())
        .await?;
    cluster::await_assigned(shared, &topic).await;
    Ok((topic, created))
}

/// Deletes `name`: releases its partitions here, marks it deleted in the
/// bucket, tells the other brokers, and purges its data in the background.
/// The internal `__consumer_offsets` cannot be deleted.
pub async fn delete(shared: &Shared, name: &str) -> Result<()> {
    shared.check_running()?;
    let name = topics::parse_name(name)?;
    if name.as_str() == crate::groups::OFFSETS_TOPIC {
        return Err(BrokerError::InvalidRequest(format!(
            "{name} is internal: it holds the consumer groups' committed offsets; delete \
             groups with `strata group delete` instead"
        )));
    }
    shared.topics.get(&name).await?;
    shared.partitions.release_topic(&name).await;
    let marker = shared.topics.mark_deleted(&name, now_ms()).await?;
    // A request that raced the delete may have reopened a partition.
    shared.partitions.release_topic(&name).await;
    // The other owners drop theirs before the purge starts, and the
    // controller drops the topic from the assignment.
    shared.groups.topic_changed();
    let silent = cluster::announce_topic_change(shared, &name).await;
    if !silent.is_empty() {
        tracing::warn!(topic = %name, brokers = ?silent, "could not tell every broker of the delete; they notice within a few heartbeat intervals");
    }
    if let Some(bg) = shared.this.upgrade() {
        tokio::spawn(async move {
            if let Err(e) = bg.topics.purge_deleted(&name, marker).await {
                tracing::warn!(topic = %name, error = %e, "could not delete the data of a deleted topic; it is removed when the topic is re-created");
            }
        });
    }
    Ok(())
}

/// Changes the settings of `name` with `change` (applied to its current
/// overrides; an error refuses the change). With `validate_only`, checks
/// and writes nothing. Brokers with partitions of the topic open release
/// them, and the next request reopens them with the new settings.
pub async fn alter_config(
    shared: &Shared,
    name: &str,
    change: impl Fn(&mut TopicOverrides) -> Result<()>,
    validate_only: bool,
) -> Result<Topic> {
    shared.check_running()?;
    let name = topics::parse_name(name)?;
    let apply = |r: &TopicRecord| {
        let mut r = r.clone();
        change(&mut r.config)?;
        Ok(r)
    };
    if validate_only {
        return shared.topics.check_update(&name, apply).await;
    }
    let topic = shared.topics.update(&name, apply).await?;
    cluster::apply_topic_changes(shared).await;
    let silent = cluster::announce_topic_change(shared, &name).await;
    if !silent.is_empty() {
        tracing::warn!(topic = %name, brokers = ?silent, "could not tell every broker of the new settings; their open partitions keep the old ones until they re-read the topic");
    }
    Ok(topic)
}

/// Grows `name` to `count` partitions (Kafka's CreatePartitions): the
/// existing ones keep their data, the new ones start empty and are placed
/// by the controller. Returns once they are assigned. A count at or below
/// the current one is refused.
pub async fn add_partitions(
    shared: &Shared,
    name: &str,
    count: u32,
    validate_only: bool,
) -> Result<Topic> {
    shared.check_running()?;
    let name = topics::parse_name(name)?;
    let check = |r: &TopicRecord| {
        if count <= r.partitions {
            return Err(BrokerError::InvalidRequest(format!(
                "{name} has {} partitions already; give a larger count (partitions can be \
                 added, never removed)",
                r.partitions
            )));
        }
        Ok(TopicRecord {
            partitions: count,
            ..r.clone()
        })
    };
    if validate_only {
        return shared.topics.check_update(&name, check).await;
    }
    let topic = shared.topics.update(&name, check).await?;
    // Group members subscribed to it get the new partitions.
    shared.groups.topic_changed();
    cluster::await_assigned(shared, &topic).await;
    Ok(topic)
}
