//! Consumer groups over Kafka's consumer protocol (KIP-848, librdkafka's
//! `group.protocol=consumer`): ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe.
//!
//! It is the coordinator's own protocol ([`crate::groups::state`]: member
//! epochs, server-side assignment, a partition granted only once its
//! previous owner revoked it), so this file only translates: partitions go
//! by topic id on the wire and by name inside, and a field the client
//! leaves null (the subscription, what it owns) means "unchanged since my
//! last heartbeat".

use std::net::SocketAddr;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
    TopicPartitions as DescribedTopic,
};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as OwnedTopic;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strata_storage::keys::TopicId;
use uuid::Uuid;

use super::error::group_code_of;
use super::groups::check;
use crate::auth::Caller;
use crate::auth::acl::Operation;
use crate::data;
use crate::error::{BrokerError, Result};
use crate::groups::state::{GroupStateName, Heartbeat, Partitions, to_topic_map};
use crate::service::Shared;

/// Answers ConsumerGroupHeartbeat (v0: the coordinator names a joining
/// member; v1: the member names itself).
pub async fn heartbeat(
    shared: &Shared,
    caller: &Caller,
    req: ConsumerGroupHeartbeatRequest,
    client_id: &str,
    peer: SocketAddr,
) -> ConsumerGroupHeartbeatResponse {
    let mut r = ConsumerGroupHeartbeatResponse::default();
    let group = req.group_id.0.to_string();
    let answer = match check(shared, caller, Operation::Read, &group) {
        Ok(()) => beat(shared, caller, &group, req, client_id, peer).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(reply) => {
            r.member_id = Some(StrBytes::from_string(reply.member_id));
            r.member_epoch = reply.epoch;
            r.heartbeat_interval_ms = i32::try_from(reply.interval_ms).unwrap_or(i32::MAX);
            if reply.epoch >= 0 {
                r.assignment = Some(assignment(shared, &reply.assignment).await);
            }
        }
        Err(e) => {
            tracing::debug!(group, error = %e, "kafka consumer group heartbeat refused");
            r.error_code = group_code_of(&e);
            r.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
    r
}

/// The heartbeat, as the coordinator takes it.
async fn beat(
    shared: &Shared,
    caller: &Caller,
    group: &str,
    req: ConsumerGroupHeartbeatRequest,
    client_id: &str,
    peer: SocketAddr,
) -> Result<crate::groups::state::HeartbeatReply> {
    let owned = match req.topic_partitions {
        Some(owned) => owned_by_name(shared, owned).await?,
        None => None,
    };
    let hb = Heartbeat {
        member_id: req.member_id.to_string(),
        epoch: req.member_epoch,
        instance_id: req.instance_id.map(|i| i.to_string()),
        topics: req
            .subscribed_topic_names
            .map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect()),
        pattern: req.subscribed_topic_regex.map(|p| p.to_string()),
        assignor: req.server_assignor.map(|a| a.to_string()),
        owned,
        // Kafka's consumer protocol sets the session timeout on the
        // coordinator (group.session_timeout), not in the client.
        session_timeout_ms: 0,
        rebalance_timeout_ms: u32::try_from(req.rebalance_timeout_ms).unwrap_or(0),
        client_id: client_id.to_owned(),
        host: format!("/{}", peer.ip()),
        caller: Some(caller.clone()),
    };
    shared.groups.heartbeat(shared, group, hb).await
}

/// What the member says it owns, by topic name. A topic id no live topic
/// has is a deleted topic, which nobody can read: left out. `None` when a
/// lookup failed (the coordinator then keeps what it knew). Each topic is
/// listed once; a lookup by id is a hash lookup in the registry's cache
/// (ids it lacks cost one fresh listing for the whole heartbeat, or two
/// if another was under way).
async fn owned_by_name(shared: &Shared, owned: Vec<OwnedTopic>) -> Result<Option<Partitions>> {
    let arrived = std::time::Instant::now();
    let mut out = Partitions::new();
    for t in owned {
        let name = match data::metadata::topic_by_id(shared, TopicId(t.topic_id), arrived).await {
            Ok(Some(topic)) => topic.name.to_string(),
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "kafka consumer group heartbeat: topic ids unresolved");
                return Ok(None);
            }
        };
        for p in t.partitions {
            let p = u32::try_from(p).map_err(|_| {
                BrokerError::InvalidRequest(format!("negative partition {p} of topic {name}"))
            })?;
            out.insert((name.clone(), p));
        }
    }
    Ok(Some(out))
}

/// `partitions` grouped by topic, with each topic's id: `(name, id,
/// partitions)`; a topic deleted meanwhile is left out.
async fn by_topic(shared: &Shared, partitions: &Partitions) -> Vec<(String, Uuid, Vec<i32>)> {
    let mut out = Vec::new();
    for (name, ps) in to_topic_map(partitions) {
        let Ok(topic) = shared.topic(&name).await else {
            continue;
        };
        let ps = ps.into_iter().map(|p| p as i32).collect();
        out.push((name, topic.record.id.0, ps));
    }
    out
}

/// `partitions` as a heartbeat's assignment (by topic id).
async fn assignment(shared: &Shared, partitions: &Partitions) -> Assignment {
    let mut a = Assignment::default();
    for (_, id, ps) in by_topic(shared, partitions).await {
        let mut t = TopicPartitions::default();
        t.topic_id = id;
        t.partitions = ps;
        a.topic_partitions.push(t);
    }
    a
}

/// Answers ConsumerGroupDescribe: each group's epochs, and each member's
/// subscription, epoch, assignment and target assignment.
pub async fn describe(
    shared: &Shared,
    caller: &Caller,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut r = ConsumerGroupDescribeResponse::default();
    for id in req.group_ids {
        let mut d = DescribedGroup::default();
        d.authorized_operations = i32::MIN;
        let described = match check(shared, caller, Operation::Describe, &id.0) {
            Ok(()) => shared.groups.describe(shared, &id.0).await,
            Err(e) => Err(e),
        };
        match described {
            Ok(g) if !g.classic.is_empty() => {
                d.error_code = ResponseError::GroupIdNotFound.code();
                d.error_message = Some(StrBytes::from_string(format!(
                    "group {} uses Kafka's classic protocol; describe it with DescribeGroups",
                    id.0
                )));
            }
            Ok(g) => {
                d.group_state = StrBytes::from_static_str(match g.state() {
                    GroupStateName::Empty => "Empty",
                    GroupStateName::Reconciling => "Reconciling",
                    GroupStateName::Stable => "Stable",
                });
                d.group_epoch = g.epoch();
                d.assignment_epoch = g.assignment_epoch();
                d.assignor_name = StrBytes::from_static_str(g.assignor().name());
                for m in g.members() {
                    let v = &m.value;
                    let mut out = DescribedMember::default();
                    out.member_id = StrBytes::from_string(v.id.clone());
                    out.instance_id = v.instance_id.clone().map(StrBytes::from_string);
                    out.member_epoch = v.epoch;
                    out.client_id = StrBytes::from_string(v.client_id.clone());
                    out.client_host = StrBytes::from_string(v.host.clone());
                    out.subscribed_topic_names = v
                        .topics
                        .iter()
                        .map(|t| TopicName(StrBytes::from_string(t.clone())))
                        .collect();
                    out.subscribed_topic_regex = v.pattern.clone().map(StrBytes::from_string);
                    out.assignment = shown(shared, &m.assigned()).await;
                    out.target_assignment = shown(shared, &g.target_of(&v.id)).await;
                    out.member_type = 1;
                    d.members.push(out);
                }
            }
            Err(e) => {
                d.error_code = group_code_of(&e);
                d.error_message = Some(StrBytes::from_string(e.to_string()));
            }
        }
        d.group_id = id;
        r.groups.push(d);
    }
    r
}

/// `partitions` as ConsumerGroupDescribe shows them (by id and name).
async fn shown(shared: &Shared, partitions: &Partitions) -> DescribedAssignment {
    let mut a = DescribedAssignment::default();
    for (name, id, ps) in by_topic(shared, partitions).await {
        let mut t = DescribedTopic::default();
        t.topic_id = id;
        t.topic_name = TopicName(StrBytes::from_string(name));
        t.partitions = ps;
        a.topic_partitions.push(t);
    }
    a
}
