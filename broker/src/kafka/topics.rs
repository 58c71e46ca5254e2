//! Topics: CreateTopics, CreatePartitions, DeleteTopics, DescribeConfigs,
//! AlterConfigs and IncrementalAlterConfigs, with the topic settings Strata
//! has under Kafka's names.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, TopicName, alter_configs_response,
    incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error::code_of;
use crate::auth::Caller;
use crate::auth::acl::{Operation, Resource};
use crate::data;
use crate::error::BrokerError;
use crate::service::Shared;
use crate::topics::{self, Topic, TopicOverrides};

/// Checks `operation` on `resource` ([`Shared::authorize`]); a refusal
/// as a Kafka error code and message.
fn allowed(
    shared: &Shared,
    caller: &Caller,
    operation: Operation,
    resource: &Resource<'_>,
) -> Result<(), (i16, String)> {
    shared
        .authorize(caller, operation, resource)
        .map_err(|e| (code_of(&e), e.to_string()))
}

/// Topic settings by their Kafka names.
pub const CONFIGS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.type",
];

/// Answers CreateTopics.
pub async fn create(
    shared: &Shared,
    caller: &Caller,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    for t in req.topics {
        let mut out = CreatableTopicResult::default();
        out.name = t.name.clone();
        let created = match shared.authorize_topic_create(caller, t.name.0.as_str()) {
            Ok(()) => create_one(shared, t, req.validate_only).await,
            Err(e) => Err((code_of(&e), e.to_string())),
        };
        match created {
            Ok(partitions) => {
                out.num_partitions = partitions as i32;
                out.replication_factor = 1;
            }
            Err((code, message)) => {
                out.error_code = code;
                out.error_message = Some(StrBytes::from_string(message));
                out.num_partitions = -1;
                out.replication_factor = -1;
            }
        }
        r.topics.push(out);
    }
    r
}

async fn create_one(
    shared: &Shared,
    t: CreatableTopic,
    validate_only: bool,
) -> Result<u32, (i16, String)> {
    let invalid = |e: BrokerError| (code_of(&e), e.to_string());
    let name = t.name.0.to_string();
    topics::parse_name(&name)
        .map_err(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))?;
    if !t.assignments.is_empty() {
        return Err((
            ResponseError::InvalidReplicaAssignment.code(),
            "manual replica assignment is not supported: Strata places partitions itself; \
             give num_partitions instead"
                .into(),
        ));
    }
    let partitions = match t.num_partitions {
        -1 => shared.config.kafka.default_partitions,
        n if n > 0 => n as u32,
        n => {
            return Err((
                ResponseError::InvalidPartitions.code(),
                format!("num_partitions must be positive or -1 (the default), got {n}"),
            ));
        }
    };
    let mut overrides = TopicOverrides::default();
    for c in &t.configs {
        set(&mut overrides, c.name.as_str(), c.value.as_deref())
            .map_err(|m| (ResponseError::InvalidConfig.code(), m))?;
    }
    // Refuses bad values before anything is written.
    overrides
        .log_config(shared.topics.defaults())
        .map_err(|e| (ResponseError::InvalidConfig.code(), e.to_string()))?;
    if validate_only {
        return Ok(partitions);
    }
    data::topics::create(shared, &name, partitions, overrides, false)
        .await
        .map(|(topic, _)| topic.record.partitions)
        .map_err(invalid)
}

/// Sets the Kafka setting `key` to `value` in `o`.
pub fn set(o: &mut TopicOverrides, key: &str, value: Option<&str>) -> Result<(), String> {
    let Some(value) = value else {
        return Ok(());
    };
    let int = || {
        value
            .parse::<i64>()
            .map_err(|_| format!("{key} must be an integer, got {value:?}"))
    };
    match key {
        "retention.ms" => o.retention_ms = Some(int()?),
        "retention.bytes" => o.retention_bytes = Some(int()?),
        "segment.bytes" => o.segment_bytes = Some(int()?),
        "segment.ms" => o.segment_ms = Some(int()?),
        "max.message.bytes" => {
            o.max_batch_bytes =
                Some(i32::try_from(int()?).map_err(|_| format!("{key} is out of range: {value}"))?);
        }
        "message.timestamp.type" => o.timestamp_type = Some(value.to_owned()),
        // Accepted and meaningless here: every byte is in the bucket.
        "min.insync.replicas" | "unclean.leader.election.enable" => {}
        "cleanup.policy" if value == "delete" => {}
        _ => {
            return Err(format!(
                "unsupported topic setting {key}={value}; Strata supports {}",
                CONFIGS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Clears the Kafka setting `key` in `o` (back to the broker default).
pub fn reset(o: &mut TopicOverrides, key: &str) -> Result<(), String> {
    match key {
        "retention.ms" => o.retention_ms = None,
        "retention.bytes" => o.retention_bytes = None,
        "segment.bytes" => o.segment_bytes = None,
        "segment.ms" => o.segment_ms = None,
        "max.message.bytes" => o.max_batch_bytes = None,
        "message.timestamp.type" => o.timestamp_type = None,
        "min.insync.replicas" | "unclean.leader.election.enable" | "cleanup.policy" => {}
        _ => {
            return Err(format!(
                "unsupported topic setting {key}; Strata supports {}",
                CONFIGS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Answers CreatePartitions: grows each topic to the count asked for.
pub async fn create_partitions(
    shared: &Shared,
    caller: &Caller,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut r = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut out = CreatePartitionsTopicResult::default();
        let result = async {
            let name = t.name.0.as_str();
            allowed(shared, caller, Operation::Alter, &Resource::topic(name))?;
            topics::parse_name(name)
                .map_err(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))?;
            if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
                return Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    "manual replica assignment is not supported: Strata places partitions \
                     itself; give only the count"
                        .to_owned(),
                ));
            }
            let count = u32::try_from(t.count).map_err(|_| {
                (
                    ResponseError::InvalidPartitions.code(),
                    format!("the partition count must be positive, got {}", t.count),
                )
            })?;
            data::topics::add_partitions(shared, name, count, req.validate_only)
                .await
                .map_err(|e| match e {
                    // The only invalid request left is a count that does
                    // not grow the topic.
                    BrokerError::InvalidRequest(m) => (ResponseError::InvalidPartitions.code(), m),
                    e => (code_of(&e), e.to_string()),
                })
        }
        .await;
        if let Err((code, message)) = result {
            out.error_code = code;
            out.error_message = Some(StrBytes::from_string(message));
        }
        out.name = t.name;
        r.results.push(out);
    }
    r
}

/// Kafka's IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Answers IncrementalAlterConfigs: sets or deletes (back to the default)
/// the named topic settings, leaving the others as they are.
pub async fn incremental_alter_configs(
    shared: &Shared,
    caller: &Caller,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut r = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let change = |o: &mut TopicOverrides| -> Result<(), String> {
            for c in &res.configs {
                let key = c.name.as_str();
                match c.config_operation {
                    OP_SET => set(o, key, Some(c.value.as_deref().unwrap_or_default()))?,
                    OP_DELETE => reset(o, key)?,
                    op => {
                        return Err(format!(
                            "operation {op} on {key} is not supported: Strata's topic settings \
                             are single values; use SET (0) or DELETE (1)"
                        ));
                    }
                }
            }
            Ok(())
        };
        let (code, message) = alter(
            shared,
            caller,
            res.resource_type,
            &res.resource_name,
            change,
            req.validate_only,
        )
        .await;
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.error_code = code;
        out.error_message = message.map(StrBytes::from_string);
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        r.responses.push(out);
    }
    r
}

/// Answers AlterConfigs (the older, whole-set form): the topic's settings
/// become exactly the ones named; the others go back to the defaults.
pub async fn alter_configs(
    shared: &Shared,
    caller: &Caller,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut r = AlterConfigsResponse::default();
    for res in req.resources {
        let change = |o: &mut TopicOverrides| -> Result<(), String> {
            *o = TopicOverrides::default();
            for c in &res.configs {
                set(o, c.name.as_str(), c.value.as_deref())?;
            }
            Ok(())
        };
        let (code, message) = alter(
            shared,
            caller,
            res.resource_type,
            &res.resource_name,
            change,
            req.validate_only,
        )
        .await;
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        out.error_code = code;
        out.error_message = message.map(StrBytes::from_string);
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        r.responses.push(out);
    }
    r
}

/// Applies `change` to the settings of one resource: a topic's are
/// changed in the bucket; a broker's come from its config file.
async fn alter(
    shared: &Shared,
    caller: &Caller,
    resource_type: i8,
    resource_name: &str,
    change: impl Fn(&mut TopicOverrides) -> Result<(), String>,
    validate_only: bool,
) -> (i16, Option<String>) {
    match resource_type {
        RESOURCE_TOPIC => {
            if let Err((code, message)) = allowed(
                shared,
                caller,
                Operation::AlterConfigs,
                &Resource::topic(resource_name),
            ) {
                return (code, Some(message));
            }
            if let Err(e) = topics::parse_name(resource_name) {
                return (
                    ResponseError::InvalidTopicException.code(),
                    Some(e.to_string()),
                );
            }
            let change = |o: &mut TopicOverrides| change(o).map_err(BrokerError::InvalidRequest);
            match data::topics::alter_config(shared, resource_name, change, validate_only).await {
                Ok(_) => (0, None),
                Err(BrokerError::InvalidRequest(m)) => {
                    (ResponseError::InvalidConfig.code(), Some(m))
                }
                Err(e) => (code_of(&e), Some(e.to_string())),
            }
        }
        RESOURCE_BROKER => (
            ResponseError::InvalidRequest.code(),
            Some(
                "broker settings come from each broker's config file, flags and STRATA_* \
                 variables; they cannot be changed over the Kafka protocol"
                    .to_owned(),
            ),
        ),
        other => (
            ResponseError::InvalidRequest.code(),
            Some(format!(
                "resource type {other} is not supported: Strata alters topics (2)"
            )),
        ),
    }
}

/// Answers DeleteTopics (v0–5: names; v6: names or ids).
pub async fn delete(
    shared: &Shared,
    caller: &Caller,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut r = DeleteTopicsResponse::default();
    let names: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    for (name, id) in names {
        let mut out = DeletableTopicResult::default();
        out.topic_id = id;
        let name = match name {
            Some(n) => Some(n),
            None => data::metadata::all_topics(shared)
                .await
                .ok()
                .and_then(|ts| ts.into_iter().find(|t| t.record.id.0 == id))
                .map(|t| t.name.to_string()),
        };
        match name {
            Some(name) => {
                let deleted =
                    match shared.authorize(caller, Operation::Delete, &Resource::topic(&name)) {
                        Ok(()) => data::topics::delete(shared, &name).await,
                        Err(e) => Err(e),
                    };
                if let Err(e) = deleted {
                    out.error_code = match e {
                        BrokerError::InvalidRequest(_) => {
                            ResponseError::InvalidTopicException.code()
                        }
                        ref e => code_of(e),
                    };
                    out.error_message = Some(StrBytes::from_string(e.to_string()));
                }
                out.name = Some(TopicName(StrBytes::from_string(name)));
            }
            None => {
                out.error_code = ResponseError::UnknownTopicId.code();
                out.error_message = Some(StrBytes::from_string(format!("no topic has id {id}")));
            }
        }
        r.responses.push(out);
    }
    r
}

/// Kafka's resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Answers DescribeConfigs: a topic's settings as Kafka names them
/// (`config_source` says whether the topic overrides the default); a
/// broker has none to show.
pub async fn describe_configs(
    shared: &Shared,
    caller: &Caller,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut r = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        let topic = Resource::topic(&res.resource_name);
        let resource = if res.resource_type == RESOURCE_TOPIC {
            topic
        } else {
            Resource::cluster()
        };
        if let Err((code, message)) = allowed(shared, caller, Operation::DescribeConfigs, &resource)
        {
            out.error_code = code;
            out.error_message = Some(StrBytes::from_string(message));
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name;
            r.results.push(out);
            continue;
        }
        match res.resource_type {
            RESOURCE_TOPIC => match shared.topic(&res.resource_name).await {
                Ok(t) => {
                    out.configs = topic_configs(&t)
                        .into_iter()
                        .filter(|c| {
                            res.configuration_keys
                                .as_ref()
                                .is_none_or(|keys| keys.contains(&c.name))
                        })
                        .collect();
                }
                Err(e) => {
                    out.error_code = code_of(&e);
                    out.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            },
            RESOURCE_BROKER => {}
            other => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message = Some(StrBytes::from_string(format!(
                    "resource type {other} is not supported: Strata describes topics (2) and brokers (4)"
                )));
            }
        }
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        r.results.push(out);
    }
    r
}

/// Kafka's config sources and types.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

/// A topic's settings under Kafka's names.
fn topic_configs(t: &Topic) -> Vec<DescribeConfigsResourceResult> {
    let c = &t.log_config;
    let o = &t.overrides;
    let ms = |d: Option<std::time::Duration>| d.map_or(-1, |d| d.as_millis() as i64);
    let entry = |name: &'static str, value: String, overridden: bool, kind: i8, read_only: bool| {
        let mut e = DescribeConfigsResourceResult::default();
        e.name = StrBytes::from_static_str(name);
        e.value = Some(StrBytes::from_string(value));
        e.config_source = if overridden {
            SOURCE_TOPIC
        } else {
            SOURCE_DEFAULT
        };
        e.config_type = kind;
        e.read_only = read_only;
        e
    };
    vec![
        entry(
            "retention.ms",
            ms(c.retention_ms).to_string(),
            o.retention_ms.is_some(),
            TYPE_LONG,
            false,
        ),
        entry(
            "retention.bytes",
            c.retention_bytes.map_or(-1, |b| b as i64).to_string(),
            o.retention_bytes.is_some(),
            TYPE_LONG,
            false,
        ),
        entry(
            "segment.bytes",
            c.segment_bytes.to_string(),
            o.segment_bytes.is_some(),
            TYPE_INT,
            false,
        ),
        entry(
            "segment.ms",
            ms(Some(c.segment_ms)).to_string(),
            o.segment_ms.is_some(),
            TYPE_LONG,
            false,
        ),
        entry(
            "max.message.bytes",
            c.max_batch_bytes.to_string(),
            o.max_batch_bytes.is_some(),
            TYPE_INT,
            false,
        ),
        entry(
            "message.timestamp.type",
            topics::timestamp_type_name(c.timestamp_type).to_owned(),
            o.timestamp_type.is_some(),
            TYPE_STRING,
            false,
        ),
        entry("cleanup.policy", "delete".into(), false, TYPE_STRING, true),
    ]
}
