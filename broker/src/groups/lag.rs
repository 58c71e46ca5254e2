//! High watermarks of the partitions groups committed offsets for, so the
//! coordinator can export `strata_group_lag` for partitions other brokers
//! own: one `DescribeTopic` (`local_only`) per owning broker and topic,
//! every [`REFRESH_EVERY`]. RPCs only, no store request; an owner that
//! does not answer leaves its partitions without a lag figure until the
//! next round.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use strata_proto::v1::DescribeTopicRequest;
use strata_proto::v1::admin_client::AdminClient;

use crate::service::Shared;

/// How often the watermarks are refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// The high watermarks of every partition of `topics` that another broker
/// owns, as its owner reports them.
pub async fn refresh(shared: &Shared, topics: &BTreeSet<String>) -> HashMap<(String, u32), i64> {
    let view = &shared.cluster;
    let me = shared.broker_id.0;
    let mut asks = Vec::new();
    for topic in topics {
        let Some(t) = strata_storage::keys::TopicName::new(topic)
            .ok()
            .and_then(|n| shared.topics.cached(&n))
        else {
            continue;
        };
        let mut owners: Vec<u32> = (0..t.record.partitions)
            .filter_map(|p| view.owner_of(topic, p))
            .filter(|b| *b != me)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        for owner in owners {
            let Some(address) = view.address_of(owner) else {
                continue;
            };
            let topic = topic.clone();
            asks.push(async move {
                let channel = view.channel(&address).await?;
                let req = DescribeTopicRequest {
                    name: topic.clone(),
                    local_only: true,
                };
                let d = AdminClient::new(channel).describe_topic(req).await.ok()?;
                Some(
                    d.into_inner()
                        .partition_details
                        .into_iter()
                        .filter(|p| p.leader_epoch > 0)
                        .map(|p| ((topic.clone(), p.partition), p.high_watermark))
                        .collect::<Vec<_>>(),
                )
            });
        }
    }
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect()
}
