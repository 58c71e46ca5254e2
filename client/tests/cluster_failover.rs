//! The client against a cluster of in-process mock brokers that can be
//! killed (their runtime dropped, so connections close and the port
//! refuses) or stopped gracefully (HTTP/2 GOAWAY): a bootstrap list with
//! dead URLs, the death of the bootstrap broker, producers riding through
//! graceful shutdowns, and the `Cluster` admin calls.

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
    /// How long a produce takes, so that requests are in flight when a
    /// broker stops.
    produce_delay: Duration,
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
        let delay = self.shared.lock().unwrap().produce_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
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
                max_batch_bytes: None,
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
    graceful: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(id: u32, shared: Arc<Mutex<Shared>>) -> Running {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (graceful, graceful_stop) = tokio::sync::oneshot::channel::<()>();
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
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = graceful_stop.await;
                    });
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
            graceful: Some(graceful),
            thread: Some(thread),
        }
    }

    /// Sends GOAWAY to every client; the server ends once in-flight
    /// requests finish.
    fn begin_graceful_stop(&mut self) {
        if let Some(graceful) = self.graceful.take() {
            let _ = graceful.send(());
        }
    }

    /// Stops like a draining broker: GOAWAY to every client, in-flight
    /// requests finish, then the server ends.
    fn stop_gracefully(&mut self) {
        self.begin_graceful_stop();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
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

/// A broker that stops gracefully sends GOAWAY: requests it never started
/// fail with an HTTP/2 error that tonic reports as `INTERNAL`. They were
/// not processed, so the producer must retry them (on the new owner), not
/// fail the records as if the broker had a bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_retry_what_a_gracefully_stopping_broker_refused() {
    const PRODUCERS: usize = 8;
    const STOPS: u32 = 10;
    let shared = Arc::new(Mutex::new(Shared {
        produce_delay: Duration::from_millis(2),
        ..Shared::default()
    }));
    // A broker that stays (and never owns the partition), so that every
    // producer always knows one live broker to refresh its metadata from,
    // however many brokers came and went since its last refresh.
    const ANCHOR: u32 = 99;
    let anchor = Running::start(ANCHOR, shared.clone());
    let mut current = Running::start(0, shared.clone());
    shared.lock().unwrap().brokers = vec![(ANCHOR, anchor.url.clone()), (0, current.url.clone())];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let producer = Producer::connect(&anchor.url, config()).await.unwrap();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match producer
                    .send_and_wait(ProducerRecord::new("t", format!("p{p}-{i}")))
                    .await
                {
                    Ok(meta) => acked.push(meta.offset),
                    Err(e) => failed.push(e.to_string()),
                }
                i += 1;
            }
            (acked, failed)
        }));
    }
    for id in 1..=STOPS {
        let next = Running::start(id, shared.clone());
        shared.lock().unwrap().brokers.push((id, next.url.clone()));
        tokio::time::sleep(Duration::from_millis(40)).await;
        // The old owner starts stopping while producers still send to it,
        // then the partition moves to the new broker.
        current.begin_graceful_stop();
        tokio::time::sleep(Duration::from_millis(20)).await;
        shared.lock().unwrap().owner = id;
        tokio::task::block_in_place(|| current.stop_gracefully());
        shared
            .lock()
            .unwrap()
            .brokers
            .retain(|(b, _)| *b == id || *b == ANCHOR);
        current = next;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut offsets = Vec::new();
    for task in tasks {
        let (acked, failed) = task.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} sends failed: {failed:?}",
            failed.len()
        );
        offsets.extend(acked);
    }
    offsets.sort_unstable();
    let produced = shared.lock().unwrap().next_offset;
    assert_eq!(offsets, (0..produced).collect::<Vec<_>>(), "every ack once");
    assert!(produced > i64::from(STOPS), "traffic flowed: {produced}");
}

/// A TCP proxy in front of a mock broker. It can cut every connection, and
/// answer the next ones with an HTTP/2 GOAWAY (`NO_ERROR`, last stream 0)
/// right after the handshake: exactly what a gracefully stopping broker
/// sends for requests it never started.
struct GoAwayProxy {
    url: String,
    refuse: Arc<std::sync::atomic::AtomicUsize>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl GoAwayProxy {
    async fn start(upstream: &str) -> GoAwayProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let refuse = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let task = {
            let (refuse, refused) = (refuse.clone(), refused.clone());
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let go_away = refuse
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if go_away {
                        let refused = refused.clone();
                        tokio::spawn(async move {
                            if refuse_after_headers(&mut socket).await.is_ok() {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                        });
                        continue;
                    }
                    let upstream = upstream.clone();
                    let mut cut = cut_rx.clone();
                    cut.mark_unchanged();
                    tokio::spawn(async move {
                        let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut socket, &mut up) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        GoAwayProxy {
            url,
            refuse,
            refused,
            cut,
            task,
        }
    }

    /// Cuts the open connections; the next `n` get a GOAWAY.
    fn cut_and_refuse(&self, n: usize) {
        self.refuse.store(n, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }
}

/// Speaks just enough HTTP/2 to refuse the first request: the server's
/// SETTINGS, then, once the client's HEADERS arrived, a GOAWAY with last
/// stream 0 and `NO_ERROR` (the request was never started), then close.
async fn refuse_after_headers(socket: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const GOAWAY: u8 = 0x7;
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    };
    socket.write_all(&frame(SETTINGS, 0, &[])).await?;
    let mut preface = [0u8; 24];
    socket.read_exact(&mut preface).await?;
    loop {
        let mut header = [0u8; 9];
        socket.read_exact(&mut header).await?;
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        socket.read_exact(&mut payload).await?;
        match header[3] {
            SETTINGS if header[4] & 0x1 == 0 => {
                socket.write_all(&frame(SETTINGS, 0x1, &[])).await?;
            }
            HEADERS => {
                socket.write_all(&frame(GOAWAY, 0, &[0; 8])).await?;
                socket.flush().await?;
                // Give the client time to read it before the close.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(());
            }
            _ => {}
        }
    }
}

impl Drop for GoAwayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// tonic reports a stream refused by GOAWAY as `INTERNAL` ("h2 protocol
/// error"), which reads like a broker bug; the broker never started it, so
/// the producer must retry it and deliver every record exactly once.
#[tokio::test]
async fn producer_retries_requests_refused_by_goaway() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let broker = Running::start(0, shared.clone());
    let proxy = GoAwayProxy::start(&broker.url).await;
    // Clients reach broker 0 only through the proxy.
    shared.lock().unwrap().brokers = vec![(0, proxy.url.clone())];
    let producer = Producer::connect(&proxy.url, config()).await.unwrap();
    for i in 0..6 {
        if i > 0 {
            proxy.cut_and_refuse(1);
        }
        let meta = producer
            .send_and_wait(ProducerRecord::new("t", format!("v{i}")))
            .await
            .unwrap_or_else(|e| panic!("send {i} failed: {e}"));
        assert_eq!(meta.offset, i, "each record once, in order");
    }
    assert!(
        proxy.refused.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the GOAWAY path was exercised"
    );
    assert_eq!(shared.lock().unwrap().next_offset, 6);
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
