//! Consumer groups over Kafka's consumer protocol (KIP-848, librdkafka's
//! `group.protocol=consumer`): ConsumerGroupHeartbeat.
//!
//! It is the coordinator's own protocol ([`crate::groups::state`]: member
//! epochs, server-side assignment, a partition granted only once its
//! previous owner revoked it), so this file only translates: partitions go
//! by topic id on the wire and by name inside, and a field the client
//! leaves null (the subscription, what it owns) means "unchanged since my
//! last heartbeat".

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as OwnedTopic;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use strata_storage::keys::TopicId;
use uuid::Uuid;

use super::error::group_code_of;
use super::groups::check;
use crate::auth::Caller;
use crate::auth::acl::Operation;
use crate::data;
use crate::error::{BrokerError, Result};
use crate::groups::state::{Heartbeat, Partitions};
use crate::service::Shared;

/// The server-side assignor Strata runs (balanced and sticky:
/// [`crate::groups::assignor`]); Kafka's default has the same name.
pub const ASSIGNOR: &str = "uniform";

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
    if let Some(assignor) = req.server_assignor.as_deref()
        && assignor != ASSIGNOR
    {
        r.error_code = ResponseError::UnsupportedAssignor.code();
        r.error_message = Some(StrBytes::from_string(format!(
            "Strata assigns partitions with the `{ASSIGNOR}` assignor only; remove \
             group.remote.assignor ({assignor:?}) from the consumer's configuration"
        )));
        return r;
    }
    if req
        .subscribed_topic_regex
        .as_deref()
        .is_some_and(|re| !re.is_empty())
    {
        r.error_code = ResponseError::InvalidRequest.code();
        r.error_message = Some(StrBytes::from_static_str(
            "regular-expression subscriptions are not supported over group.protocol=consumer \
             yet; subscribe to topic names, or use group.protocol=classic",
        ));
        return r;
    }
    let answer = match check(shared, caller, Operation::Read, &group) {
        Ok(()) => beat(shared, &group, req, client_id, peer).await,
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
        owned,
        // Kafka's consumer protocol sets the session timeout on the
        // coordinator (group.session_timeout), not in the client.
        session_timeout_ms: 0,
        rebalance_timeout_ms: u32::try_from(req.rebalance_timeout_ms).unwrap_or(0),
        client_id: client_id.to_owned(),
        host: format!("/{}", peer.ip()),
    };
    shared.groups.heartbeat(shared, group, hb).await
}

/// What the member says it owns, by topic name. A topic id no live topic
/// has is a deleted topic, which nobody can read: left out. `None` when a
/// lookup failed (the coordinator then keeps what it knew).
async fn owned_by_name(shared: &Shared, owned: Vec<OwnedTopic>) -> Result<Option<Partitions>> {
    let mut names: HashMap<Uuid, Option<String>> = HashMap::new();
    let mut out = Partitions::new();
    for t in owned {
        let name = match names.get(&t.topic_id) {
            Some(name) => name.clone(),
            None => match data::metadata::topic_by_id(shared, TopicId(t.topic_id)).await {
                Ok(found) => {
                    let name = found.map(|t| t.name.to_string());
                    names.insert(t.topic_id, name.clone());
                    name
                }
                Err(e) => {
                    tracing::debug!(error = %e, "kafka consumer group heartbeat: topic ids unresolved");
                    return Ok(None);
                }
            },
        };
        let Some(name) = name else {
            continue;
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

/// `partitions` by topic id; a topic deleted meanwhile is left out.
async fn assignment(shared: &Shared, partitions: &Partitions) -> Assignment {
    let topics: BTreeSet<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
    let mut a = Assignment::default();
    for name in topics {
        let Ok(topic) = shared.topic(name).await else {
            continue;
        };
        let mut t = TopicPartitions::default();
        t.topic_id = topic.record.id.0;
        t.partitions = partitions
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, p)| *p as i32)
            .collect();
        a.topic_partitions.push(t);
    }
    a
}
