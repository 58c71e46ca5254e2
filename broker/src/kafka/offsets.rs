//! OffsetCommit and OffsetFetch: the same committed offsets native
//! consumers and `strata group` use.

use std::collections::BTreeSet;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use kafka_protocol::ResponseError;

use super::error::{code_of, group_code_of};
use crate::auth::Caller;
use crate::auth::acl::{Operation, Resource};
use crate::error::BrokerError;
use crate::groups::OffsetCommit;
use crate::groups::state::{Committed, Tp};
use crate::metrics::BrokerMetrics;
use crate::service::Shared;

/// Answers OffsetCommit: all partitions commit together (one durable
/// write), so they share one result. Generation -1 with no member id
/// commits for a group without members (`assign()` consumers). Needs
/// `Read` on the group and on each topic; partitions of a topic the
/// caller may not read get `TOPIC_AUTHORIZATION_FAILED` and are not
/// committed.
pub async fn commit(
    shared: &Shared,
    caller: &Caller,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let mut offsets = Vec::new();
    let mut bad = super::groups::check(shared, caller, Operation::Read, &group).err();
    let mut denied_topics: Vec<(String, i16)> = Vec::new();
    for t in &req.topics {
        if let Err(e) =
            shared.authorize(caller, Operation::Read, &Resource::topic(t.name.0.as_str()))
        {
            denied_topics.push((t.name.0.to_string(), code_of(&e)));
            continue;
        }
        for p in &t.partitions {
            match u32::try_from(p.partition_index) {
                Ok(partition) => offsets.push(OffsetCommit {
                    topic: t.name.0.to_string(),
                    partition,
                    offset: p.committed_offset,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                }),
                Err(_) => {
                    bad = Some(BrokerError::InvalidRequest(format!(
                        "negative partition {} of {}",
                        p.partition_index, t.name.0
                    )));
                }
            }
        }
    }
    let result = match bad {
        Some(e) => Err(e),
        None if offsets.is_empty() => Ok(()),
        None => {
            shared
                .groups
                .commit(
                    shared,
                    &group,
                    &req.member_id,
                    req.generation_id_or_member_epoch,
                    offsets,
                )
                .await
        }
    };
    let code = match &result {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(group, error = %e, "kafka offset commit refused");
            group_code_of(e)
        }
    };
    let mut r = OffsetCommitResponse::default();
    r.topics = req
        .topics
        .into_iter()
        .map(|t| {
            let mut out = OffsetCommitResponseTopic::default();
            let code = denied_topics
                .iter()
                .find(|(n, _)| n.as_str() == t.name.0.as_str())
                .map_or(code, |(_, c)| *c);
            out.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut a = OffsetCommitResponsePartition::default();
                    a.partition_index = p.partition_index;
                    a.error_code = code;
                    a
                })
                .collect();
            out.name = t.name;
            out.topic_id = t.topic_id;
            out
        })
        .collect();
    r
}

/// What one group's fetch found: per topic, per partition, the committed
/// offset (`None`: nothing committed), or the group-level error.
type Found = Result<Vec<TopicOffsets>, BrokerError>;

/// A topic's partitions with their committed offsets, or the topic's
/// error code (not authorized).
type TopicOffsets = (String, Vec<(i32, Option<Committed>)>, i16);

/// Committed offsets of `group` for `topics` (`None`: every committed
/// one the caller may describe). Needs `Read` on the group; named topics
/// the caller may not describe get `TOPIC_AUTHORIZATION_FAILED`.
async fn find(
    shared: &Shared,
    caller: &Caller,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Found {
    super::groups::check(shared, caller, Operation::Read, group)?;
    let may_describe = |t: &str| {
        shared
            .auth
            .allows(caller, Operation::Describe, &Resource::topic(t))
    };
    let filter: BTreeSet<Tp> = topics
        .iter()
        .flatten()
        .flat_map(|(t, ps)| {
            ps.iter()
                .filter_map(|p| u32::try_from(*p).ok())
                .map(|p| (t.clone(), p))
        })
        .collect();
    let found = shared.groups.fetch_offsets(shared, group, &filter).await?;
    Ok(match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(t, ps)| {
                if !may_describe(&t) {
                    BrokerMetrics::add(&shared.metrics.auth_denied, 1);
                    let code = ResponseError::TopicAuthorizationFailed.code();
                    return (t, ps.into_iter().map(|p| (p, None)).collect(), code);
                }
                let partitions = ps
                    .into_iter()
                    .map(|p| {
                        let c = u32::try_from(p).ok().and_then(|p| {
                            found
                                .iter()
                                .find(|((ft, fp), _)| *ft == t && *fp == p)
                                .map(|(_, c)| c.clone())
                        });
                        (p, c)
                    })
                    .collect();
                (t, partitions, 0)
            })
            .collect(),
        None => {
            let mut by_topic: Vec<TopicOffsets> = Vec::new();
            for ((t, p), c) in found {
                match by_topic.last_mut() {
                    Some((last, ps, _)) if *last == t => ps.push((p as i32, Some(c))),
                    _ if !may_describe(&t) => {}
                    _ => by_topic.push((t, vec![(p as i32, Some(c))], 0)),
                }
            }
            by_topic
        }
    })
}

/// Answers OffsetFetch (v1–7: one group; v8: several).
pub async fn fetch(
    shared: &Shared,
    caller: &Caller,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut r = OffsetFetchResponse::default();
    if version >= 8 {
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut out = OffsetFetchResponseGroup::default();
            match find(shared, caller, &g.group_id.0, topics).await {
                Ok(found) => {
                    out.topics = found
                        .into_iter()
                        .map(|(t, ps, code)| {
                            let mut topic = OffsetFetchResponseTopics::default();
                            topic.name = TopicName(StrBytes::from_string(t));
                            topic.partitions = ps
                                .into_iter()
                                .map(|(p, c)| {
                                    let mut a = OffsetFetchResponsePartitions::default();
                                    a.partition_index = p;
                                    a.error_code = code;
                                    a.committed_leader_epoch = -1;
                                    a.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                                    a.metadata = Some(StrBytes::from_string(
                                        c.map(|c| c.metadata).unwrap_or_default(),
                                    ));
                                    a
                                })
                                .collect();
                            topic
                        })
                        .collect();
                }
                Err(e) => out.error_code = group_code_of(&e),
            }
            out.group_id = g.group_id;
            r.groups.push(out);
        }
        return r;
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let asked = topics.clone();
    match find(shared, caller, &req.group_id.0, topics).await {
        Ok(found) => {
            r.topics = found
                .into_iter()
                .map(|(t, ps, code)| {
                    let mut topic = OffsetFetchResponseTopic::default();
                    topic.name = TopicName(StrBytes::from_string(t));
                    topic.partitions = ps
                        .into_iter()
                        .map(|(p, c)| {
                            let mut a = OffsetFetchResponsePartition::default();
                            a.partition_index = p;
                            a.error_code = code;
                            a.committed_leader_epoch = -1;
                            a.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                            a.metadata = Some(StrBytes::from_string(
                                c.map(|c| c.metadata).unwrap_or_default(),
                            ));
                            a
                        })
                        .collect();
                    topic
                })
                .collect();
        }
        Err(e) => {
            let code = group_code_of(&e);
            // v2+: the group-level error; v1 has only per-partition ones.
            r.error_code = code;
            r.topics = asked
                .into_iter()
                .flatten()
                .map(|(t, ps)| {
                    let mut topic = OffsetFetchResponseTopic::default();
                    topic.name = TopicName(StrBytes::from_string(t));
                    topic.partitions = ps
                        .into_iter()
                        .map(|p| {
                            let mut a = OffsetFetchResponsePartition::default();
                            a.partition_index = p;
                            a.committed_offset = -1;
                            a.error_code = code;
                            a
                        })
                        .collect();
                    topic
                })
                .collect();
        }
    }
    r
}
