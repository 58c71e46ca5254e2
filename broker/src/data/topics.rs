//! Creating topics, whatever the front end.

use crate::cluster;
use crate::error::Result;
use crate::service::{Shared, now_ms};
use crate::topics::{self, Topic, TopicOverrides};

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
