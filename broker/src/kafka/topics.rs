//! CreateTopics, with the topic settings Strata has under Kafka's names.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::error::code_of;
use crate::data;
use crate::error::BrokerError;
use crate::service::Shared;
use crate::topics::{self, TopicOverrides};

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
pub async fn create(shared: &Shared, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    for t in req.topics {
        let mut out = CreatableTopicResult::default();
        out.name = t.name.clone();
        match create_one(shared, t, req.validate_only).await {
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
