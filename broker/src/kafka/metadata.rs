//! Metadata: the live brokers at their Kafka addresses, and each topic's
//! partitions with the broker that owns each as its leader (and only
//! replica: the bucket holds the data).

use std::time::Instant;

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
    ids: NodeIds,
) -> MetadataResponse {
    let arrived = Instant::now();
    let mut r = MetadataResponse::default();
    r.brokers = brokers(shared, ids);
    r.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    let controller = shared.cluster.controller_id().unwrap_or(shared.broker_id.0);
    r.controller_id = ids.node(controller, 0);
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
                .map(|t| topic(shared, t, ids))
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
                        out.push(by_id(shared, caller, id, ids, arrived).await);
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
                    Ok(t) => topic(shared, &t, ids),
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

/// The name of the topic a Produce or Fetch names, by `name` or (from
/// v13) `by_id`, and the error all its partitions get instead, if any: no
/// live topic has the id, it could not be looked up, or `caller` may not
/// do `operation` on it. `arrived` is when the request arrived (see
/// [`crate::topics::TopicRegistry::get_by_id`]).
pub async fn named_topic(
    shared: &Shared,
    caller: &Caller,
    operation: Operation,
    name: &str,
    by_id: Option<TopicId>,
    arrived: Instant,
) -> (String, Option<BrokerError>) {
    let name = match by_id {
        None => name.to_owned(),
        Some(id) => match data::metadata::name_by_id(shared, id, arrived).await {
            Ok(name) => name,
            Err(e) => return (String::new(), Some(e)),
        },
    };
    let refused = shared
        .authorize(caller, operation, &Resource::topic(&name))
        .err();
    (name, refused)
}

/// The topic with id `id`, or `UNKNOWN_TOPIC_ID` (also for a topic the
/// caller may not describe: its name is not shown).
async fn by_id(
    shared: &Shared,
    caller: &Caller,
    id: Uuid,
    ids: NodeIds,
    arrived: Instant,
) -> MetadataResponseTopic {
    let found = data::metadata::topic_by_id(shared, TopicId(id), arrived).await;
    match found {
        Ok(Some(t))
            if shared.auth.allows(
                caller,
                Operation::Describe,
                &Resource::topic(t.name.as_str()),
            ) =>
        {
            topic(shared, &t, ids)
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
fn brokers(shared: &Shared, ids: NodeIds) -> Vec<MetadataResponseBroker> {
    let mut live = shared.cluster.live_kafka_brokers();
    if !live.iter().any(|(id, _)| *id == shared.broker_id.0) {
        live.push((shared.broker_id.0, shared.kafka_advertised_addr.clone()));
    }
    live.sort_unstable();
    let n = ids.0;
    live.into_iter()
        .filter_map(|(id, address)| {
            let (host, port) = split_host_port(&address)?;
            let host = StrBytes::from_string(host.to_owned());
            Some((0..n).map(move |slot| {
                let mut b = MetadataResponseBroker::default();
                b.node_id = ids.node(id, slot);
                b.host = host.clone();
                b.port = i32::from(port);
                b
            }))
        })
        .flatten()
        .collect()
}

/// How many Kafka node ids each broker shows one connection's client:
/// broker `b` is `b * n` to `b * n + n - 1`, all at its address, its
/// partitions' leadership spread over them, so the client opens `n`
/// connections to it and keeps `n` times more produce requests in flight
/// (librdkafka puts one partition in each and keeps at most 5 in flight
/// per connection when idempotent). `kafka.node_ids_per_broker` for
/// clients known to handle node ids that share an address, one otherwise:
/// librdkafka 2.3 and older (Debian's kcat links 2.0) takes them for one
/// broker and stops fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIds(u32);

impl NodeIds {
    /// One node id per broker: what a client gets until it says who it is.
    pub const ONE: NodeIds = NodeIds(1);

    /// For a client that announced its software (ApiVersions v3+): the
    /// setting for librdkafka 2.4 or later (itself, or a binding that
    /// names its librdkafka as `...-rdkafka-X.Y.Z`), else one.
    pub fn for_client(setting: u32, name: &str, version: &str) -> NodeIds {
        match librdkafka_version(name, version) {
            Some(v) if v >= (2, 4) => NodeIds(setting.max(1)),
            _ => NodeIds::ONE,
        }
    }

    /// The node id of broker `broker` for slot `slot` (a partition
    /// number, or 0 for the controller and coordinators).
    pub fn node(self, broker: u32, slot: u32) -> BrokerId {
        let id = u64::from(broker) * u64::from(self.0) + u64::from(slot % self.0);
        BrokerId(i32::try_from(id).unwrap_or(i32::MAX))
    }
}

/// The librdkafka version (major, minor) a client's software name and
/// version tell, if they tell one.
fn librdkafka_version(name: &str, version: &str) -> Option<(u32, u32)> {
    let v = if name == "librdkafka" {
        version
    } else {
        version.rsplit_once("-rdkafka-")?.1
    };
    let mut parts = v.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor))
}

/// `host:port` (also `[v6]:port`) split in two.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// One topic's metadata.
fn topic(shared: &Shared, t: &Topic, ids: NodeIds) -> MetadataResponseTopic {
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
                    let leader = ids.node(owner, p.partition);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_node_ids_go_to_librdkafka_from_2_4_only() {
        let n = |name, version| NodeIds::for_client(4, name, version).0;
        assert_eq!(n("librdkafka", "2.0.2"), 1, "Debian's kcat");
        assert_eq!(n("librdkafka", "2.3.0"), 1);
        assert_eq!(n("librdkafka", "2.4.0"), 4);
        assert_eq!(n("librdkafka", "3.0.0-RC1"), 4);
        assert_eq!(n("confluent-kafka-python", "2.16.1-rdkafka-2.16.0"), 4);
        assert_eq!(n("confluent-kafka-python", "2.3.0-rdkafka-2.3.0"), 1);
        assert_eq!(n("apache-kafka-java", "3.9.0"), 1, "untested");
        assert_eq!(n("", ""), 1);
        assert_eq!(n("librdkafka", "garbage"), 1);
        assert_eq!(NodeIds::for_client(1, "librdkafka", "2.16.0"), NodeIds::ONE);
        let ids = NodeIds::for_client(4, "librdkafka", "2.16.0");
        assert_eq!(ids.node(2, 5).0, 9);
        assert_eq!(ids.node(2, 0).0, 8);
        assert_eq!(NodeIds::ONE.node(2, 5).0, 2);
    }
}
