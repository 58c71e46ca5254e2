//! The data-plane service `strata.v1.Strata`: produce, fetch (a long-poll
//! server stream), metadata, list offsets and producer ids.
//!
//! Fetch streams are one task each, writing into a bounded channel of
//! [`FETCH_QUEUE`] responses, so a slow consumer holds at most that many
//! responses in memory; the task ends when the client goes away, after one
//! response with `once`, on an error (sent as the stream's last item), when
//! the broker shuts down or when the partition's log leaves the registry
//! (fenced, deleted, or the storage restarted as a new incarnation): the
//! last two end with a retryable `BROKER_UNAVAILABLE`, so the client
//! resumes on the reopened log instead of reading a stale one.
//!
//! A fetch sent to a broker that does not own the partition is served from
//! the sealed segments when the offset is sealed (read scaling without
//! replicas, DESIGN §7), and ends with `NOT_OWNER` naming the owner when it
//! reaches the unsealed tail.

use crate::auth::Caller;
use crate::auth::acl::{Operation, Resource};
use crate::auth::grpc::caller;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use strata_proto::v1::strata_server::Strata;
use strata_proto::v1::{
    Acks as WireAcks, BrokerInfo, FetchRequest, FetchResponse, InitProducerRequest,
    InitProducerResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetSpec, PartitionMetadata, ProduceRequest, ProduceResponse,
    TopicMetadata, produce_request,
};
use strata_storage::batch::BatchBuilder;
use strata_storage::hot_tier::SegmentCache;
use strata_storage::keys::TopicPartition;
use strata_storage::log::{Acks, PartitionLog};
use strata_storage::manifest::Manifest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{Shared, now_ms};
use crate::data::fetch::{FetchParams, Fetched, Source};
use crate::data::{self, fetch};
use crate::error::{BrokerError, Result};
use crate::metrics::BrokerMetrics;
use crate::topics::Topic;

/// Responses a fetch stream may queue ahead of a slow client.
pub const FETCH_QUEUE: usize = 2;

/// The `strata.v1.Strata` service.
#[derive(Debug, Clone)]
pub struct StrataService {
    shared: Arc<Shared>,
}

impl StrataService {
    /// A service over the broker's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    async fn produce_inner(&self, caller: &Caller, req: ProduceRequest) -> Result<ProduceResponse> {
        let shared = &self.shared;
        shared.check_running()?;
        shared.authorize(caller, Operation::Write, &Resource::topic(&req.topic))?;
        let acks = match WireAcks::try_from(req.acks) {
            Ok(WireAcks::All) => Acks::All,
            Ok(WireAcks::Leader) => Acks::Leader,
            Err(_) => {
                return Err(BrokerError::InvalidRequest(format!(
                    "unknown acks value; use ACKS_ALL (0) or ACKS_LEADER (1): {}",
                    req.acks
                )));
            }
        };
        let bytes = match req.payload {
            None => {
                return Err(BrokerError::InvalidRequest(
                    "produce request has no payload; set `batch` or `records`".into(),
                ));
            }
            Some(produce_request::Payload::Batch(b)) => b,
            Some(produce_request::Payload::Records(list)) => {
                if list.records.is_empty() {
                    return Err(BrokerError::InvalidRequest(
                        "produce request has an empty record list; send at least one record".into(),
                    ));
                }
                encode_records(&list.records)
            }
        };
        let a = data::produce::append(shared, &req.topic, req.partition, bytes, acks).await?;
        Ok(ProduceResponse {
            base_offset: a.base_offset,
            last_offset: a.last_offset,
            duplicate: a.duplicate,
        })
    }

    async fn metadata_inner(
        &self,
        caller: &Caller,
        req: MetadataRequest,
    ) -> Result<MetadataResponse> {
        let shared = &self.shared;
        let topics: Vec<Topic> = if req.topics.is_empty() {
            data::metadata::all_topics(shared)
                .await?
                .into_iter()
                .filter(|t| {
                    shared.auth.allows(
                        caller,
                        Operation::Describe,
                        &Resource::topic(t.name.as_str()),
                    )
                })
                .collect()
        } else {
            let mut v = Vec::with_capacity(req.topics.len());
            for name in &req.topics {
                shared.authorize(caller, Operation::Describe, &Resource::topic(name))?;
                v.push(shared.topic(name).await?);
            }
            v
        };
        let me = shared.broker_id.0;
        let topics = topics
            .into_iter()
            .map(|t| TopicMetadata {
                partitions: data::metadata::partitions(shared, &t)
                    .into_iter()
                    .map(|p| PartitionMetadata {
                        partition: p.partition,
                        owner_broker_id: p.owner,
                        leader_epoch: p.leader_epoch,
                    })
                    .collect(),
                name: t.name.to_string(),
                max_batch_bytes: u32::try_from(t.log_config.max_batch_bytes).ok(),
            })
            .collect();
        let mut brokers: Vec<BrokerInfo> = shared
            .cluster
            .live_brokers()
            .into_iter()
            .map(|(broker_id, address)| BrokerInfo { broker_id, address })
            .collect();
        if !brokers.iter().any(|b| b.broker_id == me) {
            brokers.push(BrokerInfo {
                broker_id: me,
                address: shared.advertised_addr.clone(),
            });
        }
        Ok(MetadataResponse {
            brokers,
            topics,
            broker_id: me,
        })
    }

    async fn list_offsets_inner(
        &self,
        caller: &Caller,
        req: ListOffsetsRequest,
    ) -> Result<ListOffsetsResponse> {
        self.shared
            .authorize(caller, Operation::Describe, &Resource::topic(&req.topic))?;
        let spec = OffsetSpec::try_from(req.spec).map_err(|_| {
            BrokerError::InvalidRequest(format!(
                "unknown offset spec; use EARLIEST (0), LATEST (1) or TIMESTAMP (2): {}",
                req.spec
            ))
        })?;
        let spec = match spec {
            OffsetSpec::Earliest => data::offsets::OffsetSpec::Earliest,
            OffsetSpec::Latest => data::offsets::OffsetSpec::Latest,
            OffsetSpec::Timestamp => data::offsets::OffsetSpec::Timestamp(req.timestamp_ms),
        };
        let l = data::offsets::list(&self.shared, &req.topic, req.partition, spec).await?;
        Ok(ListOffsetsResponse {
            offset: l.offset,
            log_start_offset: l.log_start_offset,
            high_watermark: l.high_watermark,
        })
    }
}

/// Encodes plain records into one uncompressed batch without a producer id;
/// absent timestamps become the broker's clock.
fn encode_records(records: &[strata_proto::v1::Record]) -> Bytes {
    let now = now_ms();
    let mut b = BatchBuilder::new();
    for r in records {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()))
            .collect();
        b.push(
            r.timestamp_ms.unwrap_or(now),
            r.key.as_deref(),
            r.value.as_deref(),
            &headers,
        );
    }
    b.build()
}

/// Settings of one fetch stream, after defaults and limits.
#[derive(Debug, Clone, Copy)]
struct StreamParams {
    read: FetchParams,
    once: bool,
}

/// Runs one fetch stream until the client leaves, `once`, an error,
/// shutdown, or `dropped` (the log left the registry).
async fn fetch_loop(
    shared: Arc<Shared>,
    tp: TopicPartition,
    log: PartitionLog,
    dropped: CancellationToken,
    mut p: StreamParams,
    tx: mpsc::Sender<Result<FetchResponse, Status>>,
) {
    loop {
        let fetched = tokio::select! {
            r = fetch::read_owned(&log, &tp, &p.read) => r,
            () = tx.closed() => return,
            () = shared.shutdown.cancelled() => {
                let _ = tx.send(Err(BrokerError::Unavailable("shutting down").into_status())).await;
                return;
            }
            () = dropped.cancelled() => {
                let _ = tx.send(Err(BrokerError::Unavailable("reopening the partition").into_status())).await;
                return;
            }
        };
        let fetched = match fetched {
            Ok(r) => r,
            Err(e) => {
                shared.partitions.note_error(&tp, &e);
                let _ = tx.send(Err(e.into_status())).await;
                return;
            }
        };
        if !deliver(&shared, &tp, &mut p, &tx, fetched).await {
            return;
        }
    }
}

/// Sends `fetched` on a fetch stream, moves `p` past it and counts its
/// bytes. Returns false when the stream ends (the client left, or `once`).
async fn deliver(
    shared: &Shared,
    tp: &TopicPartition,
    p: &mut StreamParams,
    tx: &mpsc::Sender<Result<FetchResponse, Status>>,
    fetched: Fetched,
) -> bool {
    let bytes = fetched.bytes();
    p.read.offset = fetched.next_offset;
    let response = FetchResponse {
        batches: fetched.batches,
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
        next_offset: fetched.next_offset,
    };
    if tx.send(Ok(response)).await.is_err() {
        return false;
    }
    BrokerMetrics::add(&shared.metrics.fetch_bytes, bytes as u64);
    shared.cluster.count_bytes_out(tp, bytes as u64);
    !p.once
}

/// A fetch stream on a broker that does not own the partition: serves the
/// sealed segments `manifest` lists (any broker can), then ends with
/// `not_owner` (which names the owner) once the reader reaches the
/// unsealed tail, so the client continues on the owner.
async fn sealed_fetch_loop(
    shared: Arc<Shared>,
    tp: TopicPartition,
    cache: SegmentCache,
    manifest: Box<Manifest>,
    mut p: StreamParams,
    not_owner: BrokerError,
    tx: mpsc::Sender<Result<FetchResponse, Status>>,
) {
    loop {
        let read = tokio::select! {
            r = fetch::read_sealed(&cache, &manifest, &tp, p.read.offset, p.read.max_bytes) => r,
            () = tx.closed() => return,
            () = shared.shutdown.cancelled() => {
                let _ = tx.send(Err(BrokerError::Unavailable("shutting down").into_status())).await;
                return;
            }
        };
        let fetched = match read {
            Ok(Some(f)) => f,
            Ok(None) => {
                let _ = tx.send(Err(not_owner.into_status())).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(e.into_status())).await;
                return;
            }
        };
        if !deliver(&shared, &tp, &mut p, &tx, fetched).await {
            return;
        }
    }
}

#[tonic::async_trait]
impl Strata for StrataService {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let m = &self.shared.metrics;
        BrokerMetrics::add(&m.produce_requests, 1);
        let caller = caller(&request);
        match self.produce_inner(&caller, request.into_inner()).await {
            Ok(r) => Ok(Response::new(r)),
            Err(e) => {
                m.produce_error(e.reason().as_str_name());
                tracing::debug!(error = %e, "produce failed");
                Err(e.into_status())
            }
        }
    }

    type FetchStream = ReceiverStream<Result<FetchResponse, Status>>;

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let shared = &self.shared;
        shared.check_running()?;
        shared.authorize(&caller, Operation::Read, &Resource::topic(&req.topic))?;
        BrokerMetrics::add(&shared.metrics.fetch_requests, 1);
        let f = &shared.config.fetch;
        let max_bytes = match req.max_bytes {
            0 => f.max_bytes,
            n => n.min(f.max_bytes_limit),
        } as usize;
        let max_wait = match req.max_wait_ms {
            0 => f.max_wait,
            n => Duration::from_millis(u64::from(n)).min(f.max_wait_limit),
        };
        let params = StreamParams {
            read: FetchParams {
                offset: req.offset,
                max_bytes,
                min_bytes: (req.min_bytes as usize).clamp(1, max_bytes),
                max_wait,
            },
            once: req.once,
        };
        // Held by the stream's task for its life.
        let permit = shared.fetch_permit()?;
        let (tx, rx) = mpsc::channel(FETCH_QUEUE);
        let looping = match fetch::open(shared, &req.topic, req.partition, req.offset).await? {
            Source::Owned { tp, log, dropped } => {
                fetch_loop(shared.clone(), tp, log, dropped, params, tx).boxed()
            }
            Source::Sealed {
                tp,
                cache,
                manifest,
                not_owner,
            } => sealed_fetch_loop(shared.clone(), tp, cache, manifest, params, not_owner, tx)
                .boxed(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            looping.await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            self.metadata_inner(&caller, request.into_inner()).await?,
        ))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let caller = caller(&request);
        Ok(Response::new(
            self.list_offsets_inner(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn init_producer(
        &self,
        request: Request<InitProducerRequest>,
    ) -> Result<Response<InitProducerResponse>, Status> {
        self.shared.check_running()?;
        let caller = caller(&request);
        self.shared.authorize_producer_id(&caller)?;
        let (producer_id, producer_epoch) = self.shared.producer_ids.allocate().await?;
        Ok(Response::new(InitProducerResponse {
            producer_id,
            producer_epoch: i32::from(producer_epoch),
        }))
    }
}
