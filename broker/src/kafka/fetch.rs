//! Fetch (a long poll over many partitions) and ListOffsets.
//!
//! A fetch reads every partition asked for once; when together they hold
//! fewer than `min_bytes`, it waits (until `max_wait_ms`, capped by
//! `fetch.max_wait_limit`) for any owned partition's high watermark to move
//! and reads again. Sealed data is served by any broker (from the
//! segments in the bucket); the unsealed tail only by the owner, others
//! answer `NOT_LEADER_OR_FOLLOWER` so the client refreshes metadata.
//!
//! From v13 a fetch names topics by id (KIP-516): a topic deleted and
//! created again under its name is another topic, so a consumer of the old
//! one gets `UNKNOWN_TOPIC_ID` and never reads the new one's offsets as its
//! own.

use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use strata_storage::keys::TopicId;
use tokio::time::Instant;

use super::codec::RecordSets;
use super::error::{code_of, topic_code_of};
use super::metadata::named_topic;
use crate::auth::Caller;
use crate::auth::acl::{Operation, Resource};
use crate::data::fetch::{self, FetchParams, Fetched, Source};
use crate::data::metadata::unknown_topic_id;
use crate::data::offsets::{self, OffsetSpec};
use crate::error::{BrokerError, Result};
use crate::metrics::BrokerMetrics;
use crate::service::Shared;

/// One partition of a fetch, as it progresses.
struct Slot {
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// Opened on first read.
    source: Option<Source>,
    /// The partition's answer is this error.
    error: Option<BrokerError>,
    /// What was read (empty until something was).
    fetched: Option<Fetched>,
}

/// The first Fetch version that names topics by id.
const FETCH_BY_ID: i16 = 13;

/// One topic of a fetch.
struct FetchTopic {
    /// Its name (empty when its id is unknown).
    name: String,
    /// The id it was asked by (v13+).
    by_id: Option<TopicId>,
    /// What all its partitions answer instead of data: not readable by
    /// the caller, no live topic has the id, or the id could not be
    /// looked up.
    unusable: Option<BrokerError>,
}

/// Answers a Fetch request of `version`. Partitions of topics the caller
/// may not read get `TOPIC_AUTHORIZATION_FAILED` (and no data). The record
/// batches go by reference: the response holds markers for the encoder to
/// splice them in (see [`RecordSets`]).
pub async fn handle(
    shared: &Shared,
    caller: &Caller,
    req: FetchRequest,
    version: i16,
) -> (FetchResponse, RecordSets) {
    let f = &shared.config.fetch;
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(f.max_wait_limit);
    let deadline = Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(1) as usize;
    let total_max = (req.max_bytes.max(1) as usize).min(shared.config.kafka.max_frame_bytes / 2);
    let mut slots = Vec::new();
    let arrived = std::time::Instant::now();
    let mut topics = Vec::with_capacity(req.topics.len());
    for (i, t) in req.topics.iter().enumerate() {
        let by_id = (version >= FETCH_BY_ID).then_some(TopicId(t.topic_id));
        let (name, unusable) =
            named_topic(shared, caller, Operation::Read, &t.topic.0, by_id, arrived).await;
        for p in &t.partitions {
            slots.push(Slot {
                topic: i,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: (p.partition_max_bytes.max(1) as usize).min(f.max_bytes_limit as usize),
                source: None,
                error: None,
                fetched: None,
            });
        }
        topics.push(FetchTopic {
            name,
            by_id,
            unusable,
        });
    }
    loop {
        let mut total = 0usize;
        let mut errors = false;
        for slot in &mut slots {
            if slot.error.is_some() || topics[slot.topic].unusable.is_some() {
                errors = true;
                continue;
            }
            if slot.fetched.as_ref().is_some_and(|f| !f.batches.is_empty()) {
                total += slot.fetched.as_ref().map_or(0, Fetched::bytes);
                continue;
            }
            let budget = total_max.saturating_sub(total);
            if budget == 0 {
                continue;
            }
            match read(shared, &topics[slot.topic], slot, budget).await {
                Ok(fetched) => {
                    total += fetched.bytes();
                    slot.fetched = Some(fetched);
                }
                Err(e) => {
                    errors = true;
                    slot.error = Some(e);
                }
            }
        }
        let now = Instant::now();
        if total >= min_bytes || errors || now >= deadline || shared.shutdown.is_cancelled() {
            break;
        }
        // Wait for any owned partition to grow (or the deadline).
        let waits: Vec<_> = slots
            .iter()
            .filter_map(|s| match (&s.source, &s.fetched) {
                (Some(Source::Owned { log, .. }), Some(f)) => {
                    let log = log.clone();
                    let from = f.high_watermark.max(s.offset);
                    let left = deadline - now;
                    Some(Box::pin(async move { log.wait_for_data(from, left).await }))
                }
                _ => None,
            })
            .collect();
        if waits.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            tokio::select! {
                _ = select_all(waits) => {}
                () = shared.shutdown.cancelled() => {}
            }
        }
    }
    let mut r = FetchResponse::default();
    let mut sets = RecordSets::new();
    let mut answers: Vec<Vec<PartitionData>> = topics.iter().map(|_| Vec::new()).collect();
    for slot in slots {
        let topic = &topics[slot.topic];
        answers[slot.topic].push(partition_data(shared, topic, slot, &mut sets));
    }
    r.responses = req
        .topics
        .into_iter()
        .zip(answers)
        .map(|(t, partitions)| {
            let mut out = FetchableTopicResponse::default();
            out.topic = t.topic;
            out.topic_id = t.topic_id;
            out.partitions = partitions;
            out
        })
        .collect();
    (r, sets)
}

/// Reads one partition (opening it on first use) without waiting.
async fn read(
    shared: &Shared,
    topic: &FetchTopic,
    slot: &mut Slot,
    budget: usize,
) -> Result<Fetched> {
    if slot.source.is_none() {
        let name = topic.name.as_str();
        let partition = u32::try_from(slot.partition).map_err(|_| {
            BrokerError::InvalidRequest(format!("negative partition {} of {name}", slot.partition))
        })?;
        let (opened, source) = fetch::open_topic(shared, name, partition, slot.offset).await?;
        if let Some(id) = topic.by_id
            && opened != id
        {
            // Opened by name: the name's topic now is another one.
            return Err(unknown_topic_id(id));
        }
        slot.source = Some(source);
    }
    let max_bytes = slot.max_bytes.min(budget);
    let read = match slot.source.as_ref() {
        Some(Source::Owned { tp, log, .. }) => {
            let p = FetchParams {
                offset: slot.offset,
                max_bytes,
                min_bytes: 1,
                max_wait: Duration::ZERO,
            };
            return fetch::read_owned(log, tp, &p).await.inspect_err(|e| {
                shared.partitions.note_error(tp, e);
            });
        }
        Some(Source::Sealed {
            tp,
            cache,
            manifest,
            ..
        }) => fetch::read_sealed(cache, manifest, tp, slot.offset, max_bytes).await?,
        None => None,
    };
    match (read, slot.source.take()) {
        (Some(f), source) => {
            slot.source = source;
            Ok(f)
        }
        // The tail: only its owner serves it.
        (None, Some(Source::Sealed { not_owner, .. })) => Err(not_owner),
        (None, _) => Err(BrokerError::Unavailable("reopening the partition")),
    }
}

/// The answer for one partition.
fn partition_data(
    shared: &Shared,
    topic: &FetchTopic,
    slot: Slot,
    sets: &mut RecordSets,
) -> PartitionData {
    let mut out = PartitionData::default();
    out.partition_index = slot.partition;
    out.preferred_read_replica = BrokerId(-1);
    out.aborted_transactions = Some(Vec::new());
    match (
        topic.unusable.as_ref().or(slot.error.as_ref()),
        slot.fetched,
    ) {
        (Some(e), _) => {
            if !matches!(e, BrokerError::NotOwner { .. }) {
                tracing::debug!(topic = topic.name, partition = slot.partition, error = %e, "kafka fetch failed");
            }
            out.error_code = topic_code_of(e, topic.by_id.is_some());
            out.high_watermark = -1;
            out.last_stable_offset = -1;
            out.log_start_offset = -1;
        }
        (_, Some(f)) => {
            let bytes = f.bytes();
            if bytes > 0 {
                BrokerMetrics::add(&shared.metrics.fetch_bytes, bytes as u64);
            }
            out.high_watermark = f.high_watermark;
            out.last_stable_offset = f.high_watermark;
            out.log_start_offset = f.log_start_offset;
            out.records = Some(sets.stand_in(f.batches));
        }
        // Not read: the response was full before its turn.
        (_, None) => {
            out.high_watermark = -1;
            out.last_stable_offset = -1;
            out.log_start_offset = -1;
            out.records = Some(Bytes::new());
        }
    }
    out
}

/// Answers ListOffsets: `-2` earliest, `-1` latest, otherwise the first
/// offset at or after a timestamp. Needs `Describe` on the topic.
pub async fn list_offsets(
    shared: &Shared,
    caller: &Caller,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut r = ListOffsetsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let denied = shared
            .auth
            .check(caller, Operation::Describe, &Resource::topic(&name))
            .err();
        let mut out = ListOffsetsTopicResponse::default();
        for p in t.partitions {
            let mut a = ListOffsetsPartitionResponse::default();
            a.partition_index = p.partition_index;
            a.timestamp = -1;
            a.offset = -1;
            let spec = match p.timestamp {
                -2 => Ok(OffsetSpec::Earliest),
                -1 => Ok(OffsetSpec::Latest),
                ts if ts >= 0 => Ok(OffsetSpec::Timestamp(ts)),
                ts => Err(BrokerError::InvalidRequest(format!(
                    "timestamp {ts} is not supported: use -2 (earliest), -1 (latest) or a time in ms"
                ))),
            };
            let listed = match (spec, u32::try_from(p.partition_index)) {
                _ if denied.is_some() => Err(denied.as_ref().map_or_else(
                    || BrokerError::InvalidRequest(String::new()),
                    crate::auth::denied_again,
                )),
                (Ok(spec), Ok(partition)) => offsets::list(shared, &name, partition, spec).await,
                (Err(e), _) => Err(e),
                (_, Err(_)) => Err(BrokerError::InvalidRequest("negative partition".into())),
            };
            match listed {
                Ok(l) => a.offset = l.offset,
                Err(e) => a.error_code = code_of(&e),
            }
            out.partitions.push(a);
        }
        out.name = t.name;
        r.topics.push(out);
    }
    r
}
