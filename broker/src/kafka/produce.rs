//! Produce and InitProducerId. Record batches are appended as the bytes
//! the client sent (RecordBatch v2 is Strata's batch format); partitions of
//! one request are appended concurrently, the batches of one partition in
//! order.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, join_all};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use strata_storage::keys::TopicId;
use strata_storage::log::Acks;

use super::error::{code_of, topic_code_of};
use super::metadata::named_topic;
use crate::auth::Caller;
use crate::auth::acl::Operation;
use crate::data;
use crate::error::BrokerError;
use crate::service::Shared;

/// A Produce request whose batches have their offsets; awaiting it waits
/// for durability and gives the response (`None` for `acks=0`).
pub type Producing = BoxFuture<'static, Option<ProduceResponse>>;

/// Stages every batch of a Produce request (partitions concurrently, the
/// batches of one partition in order): when this returns they have their
/// offsets, so the next request of the connection can be staged behind
/// them; the returned future waits until they are durable and answers.
/// This is what lets a client keep several produce requests in flight on
/// one connection (librdkafka's `max.in.flight`) without reordering.
///
/// A topic the caller may not write to gets `TOPIC_AUTHORIZATION_FAILED`
/// on every partition, and nothing of it is appended. From v13 topics go
/// by id (KIP-516): an id no live topic has is `UNKNOWN_TOPIC_ID`, and a
/// batch never lands in a topic created again under the same name.
pub async fn stage(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: ProduceRequest,
    version: i16,
) -> Producing {
    let acks = match req.acks {
        0 | 1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let rejected = match (&req.transactional_id, acks) {
        (Some(_), _) => Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported by Strata yet; produce without transactional.id \
             (idempotence works)",
        )),
        (None, None) => Some((
            ResponseError::InvalidRequiredAcks,
            "acks must be 0, 1 or -1 (all)",
        )),
        (None, Some(_)) => None,
    };
    let no_response = req.acks == 0;
    let arrived = std::time::Instant::now();
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let by_id = (version >= PRODUCE_BY_ID).then_some(TopicId(topic.topic_id));
        let (name, unusable) = named_topic(
            shared,
            caller,
            Operation::Write,
            &topic.name.0,
            by_id,
            arrived,
        )
        .await;
        let denied = unusable.map(|e| failure(shared, &name, by_id, &e));
        let partitions = topic.partition_data.into_iter().map(|p| {
            let name = name.clone();
            let denied = denied.clone();
            async move {
                let staged = match (rejected, acks) {
                    _ if denied.is_some() => Err(denied.unwrap_or_default()),
                    (Some((code, why)), _) => Err((code.code(), why.to_owned())),
                    (None, Some(acks)) => {
                        stage_partition(shared, &name, by_id, p.index, p.records, acks)
                            .await
                            .map_err(|e| failure(shared, &name, by_id, &e))
                    }
                    (None, None) => unreachable!("acks checked above"),
                };
                (p.index, name, staged)
            }
        });
        let staged = join_all(partitions).await;
        topics.push((topic.name, by_id, staged));
    }
    let shared = shared.clone();
    Box::pin(async move {
        let mut r = ProduceResponse::default();
        for (name, by_id, partitions) in topics {
            let mut t = TopicProduceResponse::default();
            for (index, topic, staged) in partitions {
                let result = match staged {
                    Ok(batches) => finish_partition(&shared, batches)
                        .await
                        .map_err(|e| failure(&shared, &topic, by_id, &e)),
                    Err(e) => Err(e),
                };
                t.partition_responses
                    .push(partition_response(index, result));
            }
            t.name = name;
            t.topic_id = by_id.map_or(uuid::Uuid::nil(), |id| id.0);
            r.responses.push(t);
        }
        (!no_response).then_some(r)
    })
}

/// The first Produce version that names topics by id.
const PRODUCE_BY_ID: i16 = 13;

/// Counts and logs a failed partition; its error code (as Kafka encodes it
/// for a request by name or by id) and message.
fn failure(shared: &Shared, topic: &str, by_id: Option<TopicId>, e: &BrokerError) -> (i16, String) {
    shared.metrics.produce_error(e.reason().as_str_name());
    tracing::debug!(error = %e, %topic, "kafka produce failed");
    (topic_code_of(e, by_id.is_some()), e.to_string())
}

fn partition_response(
    index: i32,
    result: Result<data::produce::Appended, (i16, String)>,
) -> PartitionProduceResponse {
    let mut out = PartitionProduceResponse::default();
    out.index = index;
    out.log_append_time_ms = -1;
    match result {
        Ok(a) => {
            out.base_offset = a.base_offset;
            out.log_start_offset = a.log_start_offset;
        }
        Err((code, message)) => {
            out.error_code = code;
            out.base_offset = -1;
            out.log_start_offset = -1;
            out.error_message = Some(StrBytes::from_string(message));
        }
    }
    out
}

/// Stages every batch in `records`, in order.
async fn stage_partition(
    shared: &Shared,
    topic: &str,
    topic_id: Option<TopicId>,
    partition: i32,
    records: Option<Bytes>,
    acks: Acks,
) -> crate::error::Result<Vec<data::produce::Staged>> {
    let partition = u32::try_from(partition).map_err(|_| {
        BrokerError::InvalidRequest(format!("negative partition {partition} of {topic}"))
    })?;
    let batches = split_batches(records.unwrap_or_default())?;
    if batches.is_empty() {
        return Err(BrokerError::CorruptBatch(
            "produce request has no record batch".into(),
        ));
    }
    let mut staged = Vec::with_capacity(batches.len());
    for batch in batches {
        staged.push(data::produce::stage(shared, topic, topic_id, partition, batch, acks).await?);
    }
    Ok(staged)
}

/// Waits for a partition's staged batches; the answer is the first batch's
/// placement.
async fn finish_partition(
    shared: &Shared,
    batches: Vec<data::produce::Staged>,
) -> crate::error::Result<data::produce::Appended> {
    let mut first = None;
    for b in batches {
        let a = b.finish(shared).await?;
        first.get_or_insert(a);
    }
    first.ok_or_else(|| BrokerError::CorruptBatch("produce request has no record batch".into()))
}

/// Splits a produce request's records into its RecordBatches (each
/// `batchLength` at bytes 8..12 plus the 12 bytes before it), zero-copy.
pub fn split_batches(mut records: Bytes) -> crate::error::Result<Vec<Bytes>> {
    let mut out = Vec::with_capacity(1);
    while !records.is_empty() {
        let Some(len) = records.get(8..12) else {
            return Err(BrokerError::CorruptBatch(format!(
                "truncated record batch: {} bytes left, a batch header needs 12",
                records.len()
            )));
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|&t| t <= records.len())
            .ok_or_else(|| {
                BrokerError::CorruptBatch(format!(
                    "record batch length {len} does not fit the {} bytes sent",
                    records.len()
                ))
            })?;
        out.push(records.split_to(total));
    }
    Ok(out)
}

/// Answers InitProducerId: a fresh idempotent producer id and epoch 0
/// (transactions are not supported). Needs `IdempotentWrite` on the
/// cluster or `Write` on some topic (as Kafka since KIP-679).
pub async fn init_producer_id(
    shared: &Shared,
    caller: &Caller,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if req.transactional_id.is_some() {
        r.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return r;
    }
    if let Err(e) = shared.authorize_producer_id(caller) {
        r.error_code = code_of(&e);
        return r;
    }
    match async {
        shared.check_running()?;
        shared.producer_ids.allocate().await
    }
    .await
    {
        Ok((id, epoch)) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = epoch;
        }
        Err(e) => {
            tracing::debug!(error = %e, "kafka init producer id failed");
            r.error_code = code_of(&e);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len_field: i32, total: usize) -> Vec<u8> {
        let mut b = vec![0u8; total];
        b[8..12].copy_from_slice(&len_field.to_be_bytes());
        b
    }

    #[test]
    fn batches_split_on_their_length_fields() {
        let mut bytes = batch(20, 32);
        bytes.extend(batch(40, 52));
        let parts = split_batches(Bytes::from(bytes)).expect("split");
        assert_eq!(
            parts.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![32, 52]
        );
    }

    #[test]
    fn truncated_or_lying_lengths_are_corrupt() {
        for bytes in [vec![0u8; 5], batch(100, 32), batch(-5, 32)] {
            let err = split_batches(Bytes::from(bytes)).expect_err("corrupt");
            assert!(matches!(err, BrokerError::CorruptBatch(_)), "{err}");
        }
    }
}
