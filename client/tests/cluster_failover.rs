//! The client against a cluster of in-process mock brokers that can be
//! killed (their runtime dropped, so connections close and the port
//! refuses): a bootstrap list with dead URLs, the death of the bootstrap
//! broker, and the `Cluster` admin calls.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use strata_batch::{Batch, BatchLimits};
use strata_client::{
    Admin, Error, ErrorInfo, ErrorReason, Producer, ProducerConfig, ProducerRecord,
};
use strata_proto::v1::cluster_server::{Cluster, ClusterServer};
use strata_proto::v1::strata_server::{Strata, StrataServer};
use strata_proto::v1::{
    BrokerInfo, BrokerStatus, ClusterStatus, ClusterStatusRequest, DrainRequest, DrainResponse,
    FetchRequest, FetchResponse, InitProducerRequest, InitProducerResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, MoveRequest, MoveResponse,
    NudgeRequest, NudgeResponse, PartitionAssignment, PartitionMetadata, ProduceRequest,
    ProduceResponse, TopicMetadata, produce_request,
};
use tonic::{Request, Response, Status};

/// What every mock broker of one cluster sees.
#[derive(Default)]
struct Shared {
    /// (id, advertised address) of every broker.
    brokers: Vec<(u32, String)>,
    /// Owner of the one partition, `t`/0.
    owner: u32,
    next_offset: i64,
    next_pid: i64,
    /// Calls per broker id.
    metadata_calls: HashMap<u32, usize>,
    produced: HashMap<u32, usize>,
    drained: Vec<u32>,
}

#[derive(Clone)]
struct Mock {
    id: u32,
    shared: Arc<Mutex<Shared>>,
}

#[tonic::async_trait]
impl Strata for Mock {
    async fn produce(
        &self,
        req: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let mut s = self.shared.lock().unwrap();
        if s.owner != self.id {
            return Err(ErrorInfo::new(ErrorReason::NotOwner, "not mine").into_status());
        }
        let Some(produce_request::Payload::Batch(bytes)) = req.into_inner().payload else {
            return Err(Status::invalid_argument("batch expected"));
        };
        let batch = Batch::validate(bytes, &BatchLimits::default())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let base = s.next_offset;
        let last = base + i64::from(batch.header().record_count) - 1;
        s.next_offset = last + 1;
        *s.produced.entry(self.id).or_default() += 1;
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
        let mut s = self.shared.lock().unwrap();
        *s.metadata_calls.entry(self.id).or_default() += 1;
        Ok(Response::new(MetadataResponse {
            brokers: s
                .brokers
                .iter()
                .map(|(id, address)| BrokerInfo {
                    broker_id: *id,
                    address: address.clone(),
                })
                .collect(),
            topics: vec![TopicMetadata {
                name: "t".into(),
                partitions: vec![PartitionMetadata {
                    partition: 0,
                    owner_broker_id: Some(s.owner),
                    leader_epoch: 1,
                }],
            }],
            broker_id: self.id,
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
        let mut s = self.shared.lock().unwrap();
        s.next_pid += 1;
        Ok(Response::new(InitProducerResponse {
            producer_id: s.next_pid,
            producer_epoch: 0,
        }))
    }
}

#[tonic::async_trait]
impl Cluster for Mock {
    async fn status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let s = self.shared.lock().unwrap();
        // Listed in reverse, to check that the client sorts.
        Ok(Response::new(ClusterStatus {
            broker_id: self.id,
            controller_id: Some(0),
            controller_term: 1,
            assignment_version: 1,
            brokers: s
                .brokers
                .iter()
                .rev()
                .map(|(id, address)| BrokerStatus {
                    broker_id: *id,
                    address: address.clone(),
                    alive: true,
                    controller: *id == 0,
                    ..Default::default()
                })
                .collect(),
            partitions: vec![
                PartitionAssignment {
                    topic: "u".into(),
                    partition: 0,
                    broker_id: Some(s.owner),
                    ..Default::default()
                },
                PartitionAssignment {
                    topic: "t".into(),
                    partition: 0,
                    broker_id: Some(s.owner),
                    ..Default::default()
                },
            ],
        }))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        let id = req.into_inner().broker_id;
        let mut s = self.shared.lock().unwrap();
        if !s.brokers.iter().any(|(b, _)| *b == id) {
            return Err(ErrorInfo::new(
                ErrorReason::InvalidRequest,
                format!("unknown broker: {id}"),
            )
            .into_status());
        }
        s.drained.push(id);
        Ok(Response::new(DrainResponse {
            message: format!("broker {id} is draining"),
        }))
    }

    async fn r#move(&self, req: Request<MoveRequest>) -> Result<Response<MoveResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.shared.lock().unwrap();
        let from = s.owner;
        s.owner = req.to_broker_id;
        Ok(Response::new(MoveResponse {
            assignment_version: 2,
            from_broker_id: Some(from),
        }))
    }

    async fn nudge(&self, _: Request<NudgeRequest>) -> Result<Response<NudgeResponse>, Status> {
        Ok(Response::new(NudgeResponse {}))
    }
}

/// A mock broker on its own thread and runtime, so killing it closes every
/// connection it holds, like `kill -9`.
struct Running {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(id: u32, shared: Arc<Mutex<Shared>>) -> Running {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = futures::stream::unfold(listener, |l| async move {
                    let conn = l.accept().await.map(|(s, _)| s);
                    Some((conn, l))
                });
                let mock = Mock { id, shared };
                let server = tonic::transport::Server::builder()
                    .add_service(StrataServer::new(mock.clone()))
                    .add_service(ClusterServer::new(mock))
                    .serve_with_incoming(incoming);
                tokio::select! {
                    _ = server => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task.
            drop(rt);
        });
        Running {
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A URL nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// Two brokers, 0 and 1, advertising their real URLs; 0 owns `t`/0.
fn two_brokers() -> (Arc<Mutex<Shared>>, Running, Running) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let a = Running::start(0, shared.clone());
    let b = Running::start(1, shared.clone());
    shared.lock().unwrap().brokers = vec![(0, a.url.clone()), (1, b.url.clone())];
    (shared, a, b)
}

fn config() -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(1),
        delivery_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

#[tokio::test]
async fn bootstrap_list_skips_dead_urls() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let a = Running::start(0, shared.clone());
    // Broker 0 advertises an address that does not route: the client must
    // keep reaching it at the URL it answered at.
    shared.lock().unwrap().brokers = vec![(0, dead_url())];
    let bootstrap = format!("{}, {}", dead_url(), a.url.trim_start_matches("http://"));

    let admin = Admin::connect(&bootstrap).await.unwrap();
    assert_eq!(admin.metadata(&[]).await.unwrap().broker_id, 0);

    let producer = Producer::connect(&bootstrap, config()).await.unwrap();
    for i in 0..3 {
        let meta = producer
            .send_and_wait(ProducerRecord::new("t", format!("v{i}")))
            .await
            .unwrap();
        assert_eq!(meta.offset, i);
    }
    assert_eq!(shared.lock().unwrap().produced.get(&0), Some(&3));
}

#[tokio::test]
async fn all_dead_bootstrap_urls_are_named() {
    let (one, two) = (dead_url(), dead_url());
    let e = Admin::connect(&format!("{one},{two}")).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains(&one) && message.contains(&two),
        "{message}"
    );
    let e = Admin::connect(" , ").await.unwrap_err();
    assert!(matches!(e, Error::InvalidUrl { .. }), "{e:?}");
}

#[tokio::test]
async fn producer_survives_the_death_of_the_bootstrap_broker() {
    let (shared, mut a, b) = two_brokers();
    // Only broker 0 is given; broker 1 is learned from its metadata.
    let producer = Producer::connect(&a.url, config()).await.unwrap();
    producer
        .send_and_wait(ProducerRecord::new("t", "before"))
        .await
        .unwrap();

    // Broker 0 dies; its partition moves to broker 1.
    a.kill();
    shared.lock().unwrap().owner = 1;
    let meta = producer
        .send_and_wait(ProducerRecord::new("t", "after"))
        .await
        .unwrap();
    assert_eq!(meta.offset, 1);
    {
        let s = shared.lock().unwrap();
        assert_eq!(s.produced.get(&1), Some(&1));
        assert!(s.metadata_calls.get(&1).copied().unwrap_or(0) >= 1);
    }

    // A new producer id also comes from the live broker.
    let producer = Producer::connect(&format!("{},{}", a.url, b.url), config())
        .await
        .unwrap();
    producer
        .send_and_wait(ProducerRecord::new("t", "fresh"))
        .await
        .unwrap();
}

#[tokio::test]
async fn metadata_refresh_moves_off_a_dead_bootstrap_broker() {
    let (shared, mut a, _b) = two_brokers();
    let admin = Admin::connect(&a.url).await.unwrap();
    assert_eq!(admin.metadata(&[]).await.unwrap().broker_id, 0);
    a.kill();
    for _ in 0..5 {
        assert_eq!(admin.metadata(&[]).await.unwrap().broker_id, 1);
    }
    assert_eq!(shared.lock().unwrap().metadata_calls.get(&1), Some(&5));
    // Admin calls follow the live broker too.
    assert_eq!(admin.cluster_status().await.unwrap().broker_id, 1);
}

#[tokio::test]
async fn cluster_admin_calls() {
    let (shared, mut a, b) = two_brokers();
    let admin = Admin::connect(&a.url).await.unwrap();

    let status = admin.cluster_status().await.unwrap();
    assert_eq!(status.broker_id, 0);
    let ids: Vec<u32> = status.brokers.iter().map(|b| b.broker_id).collect();
    assert_eq!(ids, [0, 1], "sorted by id");
    let topics: Vec<&str> = status.partitions.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["t", "u"], "sorted by topic");

    let moved = admin.move_partition("t", 0, 1).await.unwrap();
    assert_eq!(moved.from_broker_id, Some(0));
    assert_eq!(shared.lock().unwrap().owner, 1);

    assert_eq!(admin.drain_broker(0).await.unwrap(), "broker 0 is draining");
    let e = admin.drain_broker(7).await.unwrap_err();
    assert_eq!(e.reason(), Some(ErrorReason::InvalidRequest), "{e}");

    // Broker 1 was learned from the status alone: the admin fails over to it.
    a.kill();
    let status = admin.cluster_status().await.unwrap();
    assert_eq!(status.broker_id, 1);
    assert_eq!(shared.lock().unwrap().drained, [0]);
    drop(b);
}
