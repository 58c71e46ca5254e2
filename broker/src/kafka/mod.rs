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
//! - [`consumer_groups`] answers ConsumerGroupHeartbeat and
//!   ConsumerGroupDescribe (KIP-848's consumer protocol, on the same
//!   coordinator).
//! - [`offsets`] answers OffsetCommit and OffsetFetch.
//! - [`sasl`] answers SaslHandshake and SaslAuthenticate and keeps each
//!   connection's caller; every other API asks [`crate::auth`] before
//!   touching a topic, group or the cluster.
//! - [`acls`] answers CreateAcls, DescribeAcls and DeleteAcls.
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

pub mod acls;
pub mod codec;
pub mod consumer_groups;
pub mod error;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod sasl;
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

use crate::auth::Caller;
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

/// A response on its way, or `None` when none is due.
type Answer = BoxFuture<'static, Option<Reply>>;

/// A response and what to encode it as.
struct Reply {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: ResponseKind,
    /// The record batches a Fetch response carries by reference.
    sets: codec::RecordSets,
}

impl Reply {
    fn new(api_key: ApiKey, version: i16, correlation_id: i32, body: ResponseKind) -> Self {
        Self {
            api_key,
            version,
            correlation_id,
            body,
            sets: codec::RecordSets::default(),
        }
    }
}

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
    let session = sasl::Session::new(Some(peer.ip()), tls_principal);
    read_requests(&shared, rd, tx, peer, session).await;
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
    mut session: sasl::Session,
) {
    let mut rd = BufReader::new(rd);
    let limits = &shared.config.kafka;
    // What this connection's client is shown (set by its ApiVersions).
    let mut ids = metadata::NodeIds::ONE;
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
        let mut close = false;
        let answer: Answer = match codec::decode(frame) {
            Ok(request) => match start(shared, request, peer, &mut session, &mut ids).await {
                Flow::Answer(a) => a,
                Flow::AnswerThenClose(a) => {
                    close = true;
                    a
                }
                Flow::Close => return,
            },
            // KIP-511: answer in v0 with the versions we serve.
            Err(DecodeError::Unsupported {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => ready(
                ApiKey::ApiVersions,
                0,
                correlation_id,
                ResponseKind::ApiVersions(versions::response(Some(
                    ResponseError::UnsupportedVersion,
                ))),
            ),
            Err(e) => {
                BrokerMetrics::add(&shared.metrics.kafka_rejected_frames, 1);
                tracing::warn!(%peer, error = %e, "kafka connection: cannot serve the request; closing it");
                return;
            }
        };
        if tx.send(answer).await.is_err() || close {
            // The writer stopped (the peer is gone), or the request ends
            // the connection once answered.
            return;
        }
    }
}

/// What a request leads to.
enum Flow {
    /// Its answer; then the next request.
    Answer(Answer),
    /// Its answer; then the connection closes (a failed authentication).
    AnswerThenClose(Answer),
    /// No answer: the connection closes (a request before authentication).
    Close,
}

fn ready(key: ApiKey, version: i16, id: i32, response: ResponseKind) -> Answer {
    Box::pin(std::future::ready(Some(Reply::new(
        key, version, id, response,
    ))))
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
        let Some(reply) = answer else {
            continue;
        };
        let (api_key, version) = (reply.api_key, reply.version);
        let frame = match codec::encode(
            api_key,
            version,
            reply.correlation_id,
            &reply.body,
            &reply.sets,
        ) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(%peer, ?api_key, version, error = %e, "kafka: cannot encode a response; closing the connection");
                return;
            }
        };
        for piece in frame.pieces() {
            if let Err(e) = wr.write_all(piece).await {
                tracing::debug!(%peer, error = %e, "kafka connection: write failed");
                return;
            }
        }
    }
}

/// Starts one request: SASL requests move the session along; before
/// authentication (with `auth.enabled`) nothing else is served; a Produce
/// is staged (see [`produce::stage`]) and answered once durable; any other
/// request is served before the next one is read.
async fn start(
    shared: &Arc<Shared>,
    request: Request,
    peer: SocketAddr,
    session: &mut sasl::Session,
    ids: &mut metadata::NodeIds,
) -> Flow {
    let (key, version, id) = (request.api_key, request.version, request.correlation_id);
    match request.body {
        RequestKind::SaslHandshake(r) => {
            shared.metrics.kafka_request(versions::name(key));
            let response = sasl::handshake(session, &r);
            return Flow::Answer(ready(
                key,
                version,
                id,
                ResponseKind::SaslHandshake(response),
            ));
        }
        RequestKind::SaslAuthenticate(r) => {
            shared.metrics.kafka_request(versions::name(key));
            let outcome = sasl::authenticate(shared, session, r, peer).await;
            let answer = ready(
                key,
                version,
                id,
                ResponseKind::SaslAuthenticate(outcome.response),
            );
            return if outcome.close {
                Flow::AnswerThenClose(answer)
            } else {
                Flow::Answer(answer)
            };
        }
        RequestKind::ApiVersions(ref r) => {
            *ids = metadata::NodeIds::for_client(
                shared.config.kafka.node_ids_per_broker,
                &r.client_software_name,
                &r.client_software_version,
            );
        }
        _ if session.in_exchange() || (shared.auth.enabled() && !session.authenticated()) => {
            BrokerMetrics::add(&shared.metrics.auth_failures, 1);
            tracing::info!(%peer, api = versions::name(key),
                "kafka connection: request before SASL authentication finished (auth.enabled is on: \
                 configure the client with security.protocol=SASL_PLAINTEXT or SASL_SSL and a \
                 sasl.mechanism); closing it");
            return Flow::Close;
        }
        _ => {}
    }
    let caller = &session.caller;
    if let RequestKind::Produce(r) = request.body {
        shared.metrics.kafka_request(versions::name(key));
        BrokerMetrics::add(&shared.metrics.produce_requests, 1);
        let producing = produce::stage(shared, caller, r, version).await;
        return Flow::Answer(Box::pin(async move {
            producing
                .await
                .map(|r| Reply::new(key, version, id, ResponseKind::Produce(r)))
        }));
    }
    if let RequestKind::Fetch(r) = request.body {
        shared.metrics.kafka_request(versions::name(key));
        BrokerMetrics::add(&shared.metrics.fetch_requests, 1);
        let (response, sets) = fetch::handle(shared, caller, r, version).await;
        let mut reply = Reply::new(key, version, id, ResponseKind::Fetch(response));
        reply.sets = sets;
        return Flow::Answer(Box::pin(std::future::ready(Some(reply))));
    }
    let response = handle(shared, caller, request, peer, *ids).await;
    Flow::Answer(Box::pin(std::future::ready(
        response.map(|r| Reply::new(key, version, id, r)),
    )))
}

/// Answers one request; `None` when no response is due (Produce with
/// `acks=0`).
async fn handle(
    shared: &Shared,
    caller: &Caller,
    request: Request,
    peer: SocketAddr,
    ids: metadata::NodeIds,
) -> Option<ResponseKind> {
    shared
        .metrics
        .kafka_request(versions::name(request.api_key));
    let version = request.version;
    let client_id = request.client_id.as_deref().unwrap_or_default();
    Some(match request.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(versions::response(None)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(shared, caller, r, version, ids).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(produce::init_producer_id(shared, caller, r).await)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(fetch::list_offsets(shared, caller, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(topics::create(shared, caller, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(topics::delete(shared, caller, r, version).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(topics::describe_configs(shared, caller, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            topics::incremental_alter_configs(shared, caller, r).await,
        ),
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(topics::alter_configs(shared, caller, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(topics::create_partitions(shared, caller, r).await)
        }
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(
            groups::find_coordinator(shared, caller, r, version, ids).await,
        ),
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join(shared, caller, r, version, client_id, peer).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync(shared, caller, r).await),
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(groups::heartbeat(shared, caller, r).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave(shared, caller, r, version).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
            consumer_groups::heartbeat(shared, caller, r, client_id, peer).await,
        ),
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumer_groups::describe(shared, caller, r).await)
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list(shared, caller, &r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe(shared, caller, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete(shared, caller, r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offsets::commit(shared, caller, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offsets::fetch(shared, caller, r, version).await)
        }
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(acls::create(shared, caller, r).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(acls::describe(shared, caller, r).await)
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(acls::delete(shared, caller, r).await)
        }
        other => {
            // codec::decode only lets served APIs through.
            tracing::error!(api = ?request.api_key, "kafka: no handler for a served API");
            drop(other);
            return None;
        }
    })
}
