//! The producer against an in-process mock broker that loses acks,
//! redirects and reorders: retries must never duplicate a record,
//! `NOT_OWNER` must route to the owner it names, and pipelined batches that
//! overtake each other must still land in order.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use strata_batch::{Batch, BatchLimits};
use strata_client::{ErrorInfo, ErrorReason, Producer, ProducerConfig, ProducerRecord};
use strata_proto::v1::strata_server::{Strata, StrataServer};
use strata_proto::v1::{
    BrokerInfo, FetchRequest, FetchResponse, InitProducerRequest, InitProducerResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, PartitionMetadata,
    ProduceRequest, ProduceResponse, TopicMetadata, produce_request,
};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    /// Stored batches: (base offset, bytes).
    log: Vec<(i64, Bytes)>,
    next_offset: i64,
    /// (producer id, base sequence) -> (base, last) offsets.
    seen: HashMap<(i64, i32), (i64, i64)>,
    /// Produce calls whose batch is written but whose ack is "lost".
    lose_acks: usize,
    produce_calls: usize,
    duplicates: usize,
    next_pid: i64,
    /// Check sequences as the broker does (refuse a gap with
    /// OUT_OF_ORDER_SEQUENCE) and hold back the first attempt of every
    /// third batch, so the ones behind it overtake it.
    reorder: bool,
    /// Next expected sequence per producer id (with `reorder`).
    expected: HashMap<i64, i32>,
    /// Batches already held back once (producer id, base sequence).
    held: std::collections::HashSet<(i64, i32)>,
    out_of_order: usize,
    /// Produce calls under way, and the most seen at once.
    concurrent: usize,
    max_concurrent: usize,
}

#[derive(Clone)]
struct Mock {
    state: Arc<Mutex<State>>,
    /// Answer every produce with NOT_OWNER naming this address.
    redirect_to: Option<String>,
    self_addr: String,
}

#[tonic::async_trait]
impl Strata for Mock {
    async fn produce(
        &self,
        req: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        if let Some(owner) = &self.redirect_to {
            return Err(ErrorInfo::new(ErrorReason::NotOwner, "not mine")
                .with_owner(1, Some(owner.clone()))
                .into_status());
        }
        let req = req.into_inner();
        let Some(produce_request::Payload::Batch(bytes)) = req.payload else {
            return Err(Status::invalid_argument("batch expected"));
        };
        let batch = Batch::validate(bytes, &BatchLimits::default())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let h = *batch.header();
        let hold = {
            let mut s = self.state.lock().unwrap();
            s.concurrent += 1;
            s.max_concurrent = s.max_concurrent.max(s.concurrent);
            s.reorder && h.base_sequence % 3 == 0 && s.held.insert((h.producer_id, h.base_sequence))
        };
        if hold {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let mut s = self.state.lock().unwrap();
        s.concurrent -= 1;
        s.produce_calls += 1;
        if let Some(&(base, last)) = s.seen.get(&(h.producer_id, h.base_sequence)) {
            s.duplicates += 1;
            return Ok(Response::new(ProduceResponse {
                base_offset: base,
                last_offset: last,
                duplicate: true,
            }));
        }
        if s.reorder {
            let expected = s.expected.get(&h.producer_id).copied().unwrap_or(0);
            if h.base_sequence != expected {
                s.out_of_order += 1;
                return Err(ErrorInfo::new(
                    ErrorReason::OutOfOrderSequence,
                    format!("expected sequence {expected}, got {}", h.base_sequence),
                )
                .into_status());
            }
            s.expected
                .insert(h.producer_id, h.base_sequence + h.record_count);
        }
        let base = s.next_offset;
        let last = base + i64::from(h.record_count) - 1;
        s.next_offset = last + 1;
        s.log.push((base, batch.stamp(base, 0).into_bytes()));
        s.seen
            .insert((h.producer_id, h.base_sequence), (base, last));
        if s.lose_acks > 0 {
            s.lose_acks -= 1;
            return Err(Status::unavailable("connection reset by peer"));
        }
        Ok(Response::new(ProduceResponse {
            base_offset: base,
            last_offset: last,
            duplicate: false,
        }))
    }

    type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchResponse, Status>> + Send>>;

    async fn fetch(&self, _: Request<FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        Err(Status::unimplemented("fetch"))
    }

    async fn metadata(
        &self,
        _: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        Ok(Response::new(MetadataResponse {
            brokers: vec![BrokerInfo {
                broker_id: 0,
                address: self.self_addr.clone(),
            }],
            topics: vec![TopicMetadata {
                name: "t".into(),
                partitions: vec![PartitionMetadata {
                    partition: 0,
                    owner_broker_id: Some(0),
                    leader_epoch: 1,
                }],
                max_batch_bytes: None,
            }],
            broker_id: 0,
        }))
    }

    async fn list_offsets(
        &self,
        _: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("list offsets"))
    }

    async fn init_producer(
        &self,
        _: Request<InitProducerRequest>,
    ) -> Result<Response<InitProducerResponse>, Status> {
        let mut s = self.state.lock().unwrap();
        s.next_pid += 1;
        Ok(Response::new(InitProducerResponse {
            producer_id: s.next_pid,
            producer_epoch: 0,
        }))
    }
}

/// Serves `make(addr)` on a free loopback port; returns its URL.
async fn serve(make: impl FnOnce(String) -> Mock) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mock = make(url.clone());
    let incoming = futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StrataServer::new(mock))
            .serve_with_incoming(incoming),
    );
    url
}

fn config() -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(1),
        delivery_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_that_overtake_each_other_land_in_order() {
    let state = Arc::new(Mutex::new(State {
        reorder: true,
        ..Default::default()
    }));
    let url = serve(|addr| Mock {
        state: state.clone(),
        redirect_to: None,
        self_addr: addr,
    })
    .await;
    let producer = Producer::connect(
        &url,
        ProducerConfig {
            // Small batches, so many are in flight at once.
            batch_bytes: 512,
            ..config()
        },
    )
    .await
    .unwrap();
    let mut acks = Vec::new();
    for i in 0..600 {
        let record = ProducerRecord::new("t", format!("value-{i:04}")).partition(0);
        acks.push(producer.send(record).await.unwrap());
    }
    let mut offsets = Vec::new();
    for ack in acks {
        offsets.push(ack.await.unwrap().offset);
    }
    producer.close().await.unwrap();
    assert_eq!(
        offsets,
        (0..600).collect::<Vec<i64>>(),
        "in send order, no gap"
    );
    let s = state.lock().unwrap();
    assert_eq!(s.next_offset, 600, "every record written exactly once");
    assert!(s.max_concurrent > 1, "batches were pipelined");
    assert!(
        s.out_of_order > 0,
        "some batch overtook the one ahead of it"
    );
    let mut values = Vec::new();
    for (_, b) in &s.log {
        let batch = Batch::from_trusted(b.clone()).unwrap();
        for r in strata_batch::decode_records(&batch).unwrap() {
            values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    let want: Vec<String> = (0..600).map(|i| format!("value-{i:04}")).collect();
    assert_eq!(values, want, "the log holds the records in order");
}

#[tokio::test]
async fn lost_acks_never_duplicate_records() {
    let state = Arc::new(Mutex::new(State {
        lose_acks: 3,
        ..Default::default()
    }));
    let url = serve(|addr| Mock {
        state: state.clone(),
        redirect_to: None,
        self_addr: addr,
    })
    .await;
    let producer = Producer::connect(&url, config()).await.unwrap();
    let mut offsets = Vec::new();
    for i in 0..20 {
        // One at a time, so every lost ack hits a batch of its own.
        let meta = producer
            .send_and_wait(ProducerRecord::new("t", format!("v{i}")))
            .await
            .unwrap();
        offsets.push(meta.offset);
    }
    producer.close().await.unwrap();
    assert_eq!(offsets, (0..20).collect::<Vec<i64>>());
    let s = state.lock().unwrap();
    assert_eq!(s.next_offset, 20, "every record written exactly once");
    assert_eq!(s.duplicates, 3, "each lost ack was answered by dedup");
    assert_eq!(s.produce_calls, 23);
    // Sequences are consecutive under one producer id.
    let seqs: Vec<i32> = s
        .log
        .iter()
        .map(|(_, b)| {
            Batch::from_trusted(b.clone())
                .unwrap()
                .header()
                .base_sequence
        })
        .collect();
    assert_eq!(seqs, (0..20).collect::<Vec<i32>>());
}

#[tokio::test]
async fn not_owner_routes_to_the_named_owner() {
    let state = Arc::new(Mutex::new(State::default()));
    let owner = serve(|addr| Mock {
        state: state.clone(),
        redirect_to: None,
        self_addr: addr,
    })
    .await;
    let other = serve(|addr| Mock {
        state: Arc::new(Mutex::new(State::default())),
        redirect_to: Some(owner.clone()),
        self_addr: addr,
    })
    .await;
    let producer = Producer::connect(&other, config()).await.unwrap();
    let acks: Vec<_> = futures::future::join_all((0..50).map(|i| {
        let p = producer.clone();
        async move {
            p.send(ProducerRecord::new("t", format!("v{i}")))
                .await
                .unwrap()
                .await
        }
    }))
    .await;
    for a in &acks {
        assert!(a.is_ok(), "{a:?}");
    }
    assert_eq!(state.lock().unwrap().next_offset, 50);
}

#[tokio::test]
async fn backpressure_bounds_the_buffer() {
    let state = Arc::new(Mutex::new(State::default()));
    let url = serve(|addr| Mock {
        state: state.clone(),
        redirect_to: None,
        self_addr: addr,
    })
    .await;
    let producer = Producer::connect(
        &url,
        ProducerConfig {
            buffer_bytes: 64 * 1024,
            batch_bytes: 16 * 1024,
            ..config()
        },
    )
    .await
    .unwrap();
    let value = Bytes::from(vec![7u8; 4000]);
    let mut acks = Vec::new();
    for _ in 0..200 {
        acks.push(
            producer
                .send(ProducerRecord::new("t", value.clone()))
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    assert_eq!(state.lock().unwrap().next_offset, 200);
    let too_big = producer
        .send(ProducerRecord::new("t", Bytes::from(vec![0u8; 100_000])))
        .await
        .unwrap_err();
    assert!(too_big.to_string().contains("buffer_bytes"), "{too_big}");
}
