//! Produce and InitProducerId. Record batches are appended as the bytes
//! the client sent (RecordBatch v2 is Strata's batch format); partitions of
//! one request are appended concurrently, the batches of one partition in
//! order.

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use strata_storage::log::Acks;

use super::error::code_of;
use crate::data;
use crate::error::BrokerError;
use crate::service::Shared;

/// Answers a Produce request; `None` for `acks=0` (no response is sent).
pub async fn handle(shared: &Shared, req: ProduceRequest) -> Option<ProduceResponse> {
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
    let mut r = ProduceResponse::default();
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let partitions = topic.partition_data.into_iter().map(|p| {
            let name = name.clone();
            async move {
                let mut out = PartitionProduceResponse::default();
                out.index = p.index;
                out.log_append_time_ms = -1;
                let result = match (rejected, acks) {
                    (Some((code, why)), _) => Err((code.code(), why.to_owned())),
                    (None, Some(acks)) => append(shared, &name, p.index, p.records, acks)
                        .await
                        .map_err(|e| {
                            shared.metrics.produce_error(e.reason().as_str_name());
                            tracing::debug!(error = %e, topic = %name, "kafka produce failed");
                            (code_of(&e), e.to_string())
                        }),
                    (None, None) => unreachable!("acks checked above"),
                };
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
        });
        let mut t = TopicProduceResponse::default();
        t.partition_responses = join_all(partitions).await;
        t.name = topic.name;
        t.topic_id = topic.topic_id;
        r.responses.push(t);
    }
    (!no_response).then_some(r)
}

/// Appends every batch in `records`, in order; the answer is the first
/// batch's placement.
async fn append(
    shared: &Shared,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    acks: Acks,
) -> crate::error::Result<data::produce::Appended> {
    let partition = u32::try_from(partition).map_err(|_| {
        BrokerError::InvalidRequest(format!("negative partition {partition} of {topic}"))
    })?;
    let batches = split_batches(records.unwrap_or_default())?;
    let mut first = None;
    for batch in batches {
        let a = data::produce::append(shared, topic, partition, batch, acks).await?;
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
/// (transactions are not supported).
pub async fn init_producer_id(
    shared: &Shared,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if req.transactional_id.is_some() {
        r.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
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
