//! Metadata: the live brokers at their Kafka addresses, and each topic's
//! partitions with the broker that owns each as its leader (and only
//! replica: the bucket holds the data).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use strata_storage::keys::TopicId;
use uuid::Uuid;

use super::error::code_of;
use crate::auth::Caller;
use crate::auth::acl::{Operation, Resource};
use crate::data;
use crate::error::BrokerError;
use crate::service::Shared;
use crate::topics::{Topic, TopicOverrides};

/// The cluster id Kafka clients see.
pub const CLUSTER_ID: &str = "strata";

/// Answers a Metadata request.
///
/// Topics the caller may not describe are left out of "every topic" and
/// answered `TOPIC_AUTHORIZATION_FAILED` when named; a missing topic is
/// created only for a caller allowed to create it.
pub async fn handle(
    shared: &Shared,
    caller: &Caller,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut r = MetadataResponse::default();
    r.brokers = brokers(shared);
    r.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    let controller = shared.cluster.controller_id().unwrap_or(shared.broker_id.0);
    r.controller_id = node_id(shared, controller, 0);
    // v0: an empty list means every topic; v1+: null does. v10+ may name
    // a topic by id instead (KIP-848 consumers do, for their assignment).
    let wanted: Option<Vec<Wanted>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| match t.name {
                    Some(n) if !n.0.is_empty() || t.topic_id.is_nil() => {
                        Wanted::Name(n.0.to_string())
                    }
                    _ => Wanted::Id(t.topic_id),
                })
                .collect(),
        ),
    };
    let auto_create =
        shared.config.kafka.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    r.topics = match wanted {
        None => match data::metadata::all_topics(shared).await {
            Ok(topics) => topics
                .iter()
                .filter(|t| {
                    shared.auth.allows(
                        caller,
                        Operation::Describe,
                        &Resource::topic(t.name.as_str()),
                    )
                })
                .map(|t| topic(shared, t))
                .collect(),
            Err(e) => {
                // No per-topic slot to put it in: an empty list (clients
                // retry metadata).
                tracing::warn!(error = %e, "kafka metadata: cannot list topics");
                Vec::new()
            }
        },
        Some(wanted) => {
            let mut out = Vec::with_capacity(wanted.len());
            for w in wanted {
                let name = match w {
                    Wanted::Name(name) => name,
                    Wanted::Id(id) => {
                        out.push(by_id(shared, caller, id).await);
                        continue;
                    }
                };
                if let Err(e) =
                    shared.authorize(caller, Operation::Describe, &Resource::topic(&name))
                {
                    out.push(topic_failed(name, &e));
                    continue;
                }
                let auto_create = auto_create && shared.auth.may_create_topic(caller, &name);
                out.push(match lookup(shared, &name, auto_create).await {
                    Ok(t) => topic(shared, &t),
                    Err(e) => topic_failed(name, &e),
                });
            }
            out
        }
    };
    r
}

/// A topic a Metadata request asks for.
enum Wanted {
    Name(String),
    Id(Uuid),
}

/// The topic with id `id`, or `UNKNOWN_TOPIC_ID` (also for a topic the
/// caller may not describe: its name is not shown).
async fn by_id(shared: &Shared, caller: &Caller, id: Uuid) -> MetadataResponseTopic {
    let found = data::metadata::topic_by_id(shared, TopicId(id)).await;
    match found {
        Ok(Some(t))
            if shared.auth.allows(
                caller,
                Operation::Describe,
                &Resource::topic(t.name.as_str()),
            ) =>
        {
            topic(shared, &t)
        }
        Ok(_) => {
            let mut out = MetadataResponseTopic::default();
            out.topic_id = id;
            out.error_code = ResponseError::UnknownTopicId.code();
            out
        }
        Err(e) => {
            let mut out = MetadataResponseTopic::default();
            out.topic_id = id;
            out.error_code = code_of(&e);
            out
        }
    }
}

/// The topic `name`, created with the Kafka defaults when it does not
/// exist and `auto_create` allows.
pub async fn lookup(shared: &Shared, name: &str, auto_create: bool) -> crate::error::Result<Topic> {
    match shared.topic(name).await {
        Err(BrokerError::UnknownTopic(_)) if auto_create => {
            let partitions = shared.config.kafka.default_partitions;
            let (t, created) =
                data::topics::create(shared, name, partitions, TopicOverrides::default(), true)
                    .await?;
            if created {
                tracing::info!(
                    topic = name,
                    partitions,
                    "created topic on first use by a Kafka client"
                );
            }
            Ok(t)
        }
        r => r,
    }
}

/// A topic slot carrying an error.
fn topic_failed(name: String, e: &BrokerError) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(name)));
    t.error_code = topic_error(e);
    t
}

/// A topic error code: invalid names get Kafka's `INVALID_TOPIC_EXCEPTION`.
fn topic_error(e: &BrokerError) -> i16 {
    match e {
        BrokerError::InvalidRequest(_) => ResponseError::InvalidTopicException.code(),
        e => code_of(e),
    }
}

/// The live brokers at their Kafka addresses (this one always included).
fn brokers(shared: &Shared) -> Vec<MetadataResponseBroker> {
    let mut live = shared.cluster.live_kafka_brokers();
    if !live.iter().any(|(id, _)| *id == shared.broker_id.0) {
        live.push((shared.broker_id.0, shared.kafka_advertised_addr.clone()));
    }
    live.sort_unstable();
    let n = shared.config.kafka.node_ids_per_broker;
    live.into_iter()
        .filter_map(|(id, address)| {
            let (host, port) = split_host_port(&address)?;
            let host = StrBytes::from_string(host.to_owned());
            Some((0..n).map(move |slot| {
                let mut b = MetadataResponseBroker::default();
                b.node_id = node_id(shared, id, slot);
                b.host = host.clone();
                b.port = i32::from(port);
                b
            }))
        })
        .flatten()
        .collect()
}

/// The Kafka node id of broker `broker` that serves slot `slot` (a
/// partition number, or 0): each broker shows `kafka.node_ids_per_broker`
/// ids, `broker * n` to `broker * n + n - 1`, all at its address, so a
/// Kafka client opens that many connections to it and keeps that many
/// times more produce requests in flight.
pub fn node_id(shared: &Shared, broker: u32, slot: u32) -> BrokerId {
    let n = shared.config.kafka.node_ids_per_broker.max(1);
    let id = u64::from(broker) * u64::from(n) + u64::from(slot % n);
    BrokerId(i32::try_from(id).unwrap_or(i32::MAX))
}

/// `host:port` (also `[v6]:port`) split in two.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// One topic's metadata.
fn topic(shared: &Shared, t: &Topic) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(StrBytes::from_string(t.name.to_string())));
    out.topic_id = t.record.id.0;
    out.is_internal = t.name.as_str() == crate::groups::OFFSETS_TOPIC;
    out.partitions = data::metadata::partitions(shared, t)
        .into_iter()
        .map(|p| {
            let mut m = MetadataResponsePartition::default();
            m.partition_index = p.partition as i32;
            match p.owner {
                Some(owner) => {
                    let leader = node_id(shared, owner, p.partition);
                    m.leader_id = leader;
                    m.leader_epoch = p.leader_epoch;
                    m.replica_nodes = vec![leader];
                    m.isr_nodes = vec![leader];
                }
                None => {
                    m.error_code = ResponseError::LeaderNotAvailable.code();
                    m.leader_id = BrokerId(-1);
                }
            }
            m
        })
        .collect();
    out
}
