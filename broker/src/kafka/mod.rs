//! The Kafka wire-protocol front end: a listener on `kafka_addr` that
//! serves Kafka clients from the same data plane ([`crate::data`]), topic
//! registry and group coordinator as the gRPC front end.
//!
//! - [`codec`] reads frames, decodes requests and encodes responses
//!   (`kafka-protocol` does the messages).
//! - [`versions`] answers ApiVersions and holds the version ranges served.
//! - [`metadata`] answers Metadata.
//! - [`produce`] answers Produce and InitProducerId.
//! - [`fetch`] answers Fetch and ListOffsets.
//! - [`topics`] answers CreateTopics, DeleteTopics and DescribeConfigs.
//! - [`groups`] answers FindCoordinator and the classic group protocol
//!   (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and ListGroups,
//!   DescribeGroups, DeleteGroups.
//! - [`offsets`] answers OffsetCommit and OffsetFetch.
//! - [`error`] turns broker errors into Kafka error codes.
//!
//! With TLS (`[tls]`), each connection's task runs the handshake first
//! (bounded by [`crate::tls::HANDSHAKE_TIMEOUT`]), and a verified client
//! certificate's principal is passed to [`connection`].
//!
//! Each connection is one task that reads a frame, answers it, and reads
//! the next: requests pipelined on a connection are answered in order (as
//! Kafka brokers do), and a connection holds at most one request and one
//! response in memory. A frame over `kafka.max_frame_bytes`, a frame that
//! does not decode, or an API or version this broker does not serve closes
//! the connection with a log line naming the peer; nothing else is
//! affected.

pub mod codec;
pub mod error;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod topics;
pub mod versions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::BrokerMetrics;
use crate::service::Shared;
use crate::tls::{Connection, TlsAcceptor};
use codec::{DecodeError, Request};

/// Accepts Kafka connections until the broker shuts down; over TLS when
/// `tls` is set.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<TlsAcceptor>>) {
    let permits = Arc::new(Semaphore::new(shared.config.kafka.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shared.shutdown.cancelled() => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = shared.config.kafka.max_connections,
                "kafka listener: kafka.max_connections reached; closing the new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tls {
                None => Connection::plain(stream, peer),
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok((stream, principal)) => Connection::tls(stream, peer, principal),
                    Err(e) => {
                        crate::tls::incoming::log_failed_handshake("Kafka", peer, &e);
                        return;
                    }
                },
            };
            let tls_principal = stream.peer().tls_principal.clone();
            let m = &shared.metrics;
            m.kafka_connections.fetch_add(1, Ordering::Relaxed);
            connection(shared.clone(), stream, peer, tls_principal).await;
            shared
                .metrics
                .kafka_connections
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Responses one connection may owe at once: past it, the connection
/// reads no more requests until the oldest is answered (backpressure, and
/// a bound on what a client that never reads can make the broker hold).
const MAX_PIPELINED: usize = 16;

/// A response on its way: what to encode it as and the response, or
/// `None` when none is due.
type Answer = BoxFuture<'static, Option<(ApiKey, i16, i32, ResponseKind)>>;

/// Serves one connection until the peer closes it, it misbehaves, it
/// stays idle for `kafka.idle_timeout`, or the broker shuts down.
/// `tls_principal` is the principal of the peer's verified client
/// certificate (mTLS), if any.
///
/// Requests are read and started in order; a Produce gets its offsets
/// before the next request starts, then waits for durability while the
/// requests behind it go on (up to [`MAX_PIPELINED`]). Responses are
/// written in request order by a task of their own.
async fn connection<S>(
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    tls_principal: Option<String>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    if let Some(principal) = &tls_principal {
        tracing::debug!(%peer, principal, "kafka connection with a client certificate");
    }
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Answer>(MAX_PIPELINED);
    let writer = tokio::spawn(write_answers(shared.clone(), rx, wr, peer));
    read_requests(&shared, rd, tx, peer).await;
    // The answers owed are written before the connection closes.
    let _ = writer.await;
}

/// Reads, decodes and starts requests until the connection ends; each
/// started request's answer goes to the writer, in order.
async fn read_requests(
    shared: &Arc<Shared>,
    rd: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Answer>,
    peer: SocketAddr,
) {
    let mut rd = BufReader::new(rd);
    let limits = &shared.config.kafka;
    loop {
        let frame = tokio::select! {
            r = tokio::time::timeout(limits.idle_timeout, codec::read_frame(&mut rd, limits.max_frame_bytes)) => r,
            () = shared.shutdown.cancelled() => return,
        };
        let frame = match frame {
            Err(_) => {
                tracing::debug!(%peer, "kafka connection idle for kafka.idle_timeout; closing it");
                return;
            }
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                BrokerMetrics::add(&shared.metrics.kafka_rejected_frames, 1);
                tracing::warn!(%peer, error = %e, "kafka connection: bad frame; closing it");
                return;
            }
        };
        let answer: Answer = match codec::decode(frame) {
            Ok(request) => start(shared, request, peer).await,
            // KIP-511: answer in v0 with the versions we serve.
            Err(DecodeError::Unsupported {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => Box::pin(std::future::ready(Some((
                ApiKey::ApiVersions,
                0,
                correlation_id,
                ResponseKind::ApiVersions(versions::response(Some(
                    ResponseError::UnsupportedVersion,
                ))),
            )))),
            Err(e) => {
                BrokerMetrics::add(&shared.metrics.kafka_rejected_frames, 1);
                tracing::warn!(%peer, error = %e, "kafka connection: cannot serve the request; closing it");
                return;
            }
        };
        if tx.send(answer).await.is_err() {
            // The writer stopped (the peer is gone).
            return;
        }
    }
}

/// Writes the answers in the order their requests came.
async fn write_answers(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Answer>,
    mut wr: impl AsyncWrite + Unpin,
    peer: SocketAddr,
) {
    while let Some(answer) = rx.recv().await {
        let answer = tokio::select! {
            a = answer => a,
            () = shared.shutdown.cancelled() => return,
        };
        let Some((api_key, version, correlation_id, response)) = answer else {
            continue;
        };
        let bytes = match codec::encode(api_key, version, correlation_id, &response) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%peer, ?api_key, version, error = %e, "kafka: cannot encode a response; closing the connection");
                return;
            }
        };
        if let Err(e) = wr.write_all(&bytes).await {
            tracing::debug!(%peer, error = %e, "kafka connection: write failed");
            return;
        }
    }
}

/// Starts one request: a Produce is staged (see [`produce::stage`]) and
/// answered once durable; any other request is served before the next one
/// is read.
async fn start(shared: &Arc<Shared>, request: Request, peer: SocketAddr) -> Answer {
    let (key, version, id) = (request.api_key, request.version, request.correlation_id);
    if let RequestKind::Produce(r) = request.body {
        shared.metrics.kafka_request(versions::name(key));
        BrokerMetrics::add(&shared.metrics.produce_requests, 1);
        let producing = produce::stage(shared, r).await;
        return Box::pin(async move {
            producing
                .await
                .map(|r| (key, version, id, ResponseKind::Produce(r)))
        });
    }
    let response = handle(shared, request, peer).await;
    Box::pin(std::future::ready(response.map(|r| (key, version, id, r))))
}

/// Answers one request; `None` when no response is due (Produce with
/// `acks=0`).
async fn handle(shared: &Shared, request: Request, peer: SocketAddr) -> Option<ResponseKind> {
    shared
        .metrics
        .kafka_request(versions::name(request.api_key));
    let version = request.version;
    let client_id = request.client_id.as_deref().unwrap_or_default();
    Some(match request.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(versions::response(None)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(shared, r, version).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(produce::init_producer_id(shared, r).await)
        }
        RequestKind::Fetch(r) => {
            BrokerMetrics::add(&shared.metrics.fetch_requests, 1);
            ResponseKind::Fetch(fetch::handle(shared, r).await)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(fetch::list_offsets(shared, r).await)
        }
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(topics::create(shared, r).await),
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(topics::delete(shared, r, version).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(topics::describe_configs(shared, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            topics::incremental_alter_configs(shared, r).await,
        ),
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(topics::alter_configs(shared, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(topics::create_partitions(shared, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(shared, r, version).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join(shared, r, version, client_id, peer).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync(shared, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(shared, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave(shared, r, version).await)
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list(shared, &r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe(shared, r).await)
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(groups::delete(shared, r).await),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offsets::commit(shared, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offsets::fetch(shared, r, version).await)
        }
        other => {
            // codec::decode only lets served APIs through.
            tracing::error!(api = ?request.api_key, "kafka: no handler for a served API");
            drop(other);
            return None;
        }
    })
}
