//! The Kafka listener at the byte level (issue #12): bad frames close only
//! their own connection, never the broker; ApiVersions at an unknown
//! version gets a v0 answer (KIP-511); pipelined requests are answered in
//! order, and pipelined produce requests land in order.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::loopback_config;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ConsumerGroupDescribeRequest,
    ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strata_broker::server::{RunningBroker, start};
use strata_storage::batch::BatchBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request frame (length prefix included).
fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("wire-test")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Raw bytes after a length prefix.
fn raw(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Reads one response frame: its correlation id and the rest (header v0).
async fn read_response(s: &mut TcpStream) -> (i32, Bytes) {
    let len = tokio::time::timeout(Duration::from_secs(10), s.read_i32())
        .await
        .expect("a response within 10 s")
        .expect("a response");
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.expect("response body");
    let mut b = Bytes::from(buf);
    let id = b.get_i32();
    (id, b)
}

async fn connect(broker: &RunningBroker) -> TcpStream {
    TcpStream::connect(broker.kafka_addr())
        .await
        .expect("connect to the Kafka listener")
}

/// Asks for ApiVersions v3 on a new connection: the broker is serving.
async fn api_versions(broker: &RunningBroker) -> ApiVersionsResponse {
    let mut s = connect(broker).await;
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("t"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    s.write_all(&frame(ApiKey::ApiVersions, 3, 1, &req))
        .await
        .expect("write");
    let (id, mut body) = read_response(&mut s).await;
    assert_eq!(id, 1);
    ApiVersionsResponse::decode(&mut body, 3).expect("ApiVersions v3")
}

/// True once the broker closed `s` (EOF) within 10 s.
/// The version range `versions` advertises for `key`.
fn advertised(versions: &ApiVersionsResponse, key: ApiKey) -> (i16, i16) {
    let k = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == key as i16)
        .unwrap_or_else(|| panic!("{key:?} advertised"));
    (k.min_version, k.max_version)
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_their_connection_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_config(dir.path());
    config.kafka.max_frame_bytes = 64 << 10;
    let broker = start(config).await.expect("start");

    // Metadata v1 whose topic array claims 2^31-1 entries: the decoder
    // must not reserve for them (it used to abort the process).
    let mut forged = vec![0, 3, 0, 1, 0, 0, 0, 7, 0, 1, b'x'];
    forged.extend_from_slice(&i32::MAX.to_be_bytes());
    // A compact-array version of the same lie (Metadata v9, flexible).
    let mut forged_compact = vec![0, 3, 0, 9, 0, 0, 0, 8, 0, 1, b'x', 0];
    forged_compact.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("forged array length", raw(&forged)),
        ("forged compact array length", raw(&forged_compact)),
        (
            "frame over kafka.max_frame_bytes",
            (1i32 << 20).to_be_bytes().to_vec(),
        ),
        ("negative frame length", (-5i32).to_be_bytes().to_vec()),
        ("shorter than a header", raw(&[0, 18])),
        (
            "unknown API key",
            raw(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0]),
        ),
        (
            "unsupported Produce version",
            raw(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0]),
        ),
        (
            "garbage",
            raw(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
        ),
    ];
    for (what, bytes) in cases {
        let mut s = connect(&broker).await;
        s.write_all(&bytes).await.expect("write");
        assert!(closed(&mut s).await, "{what}: the connection stays open");
        let versions = api_versions(&broker).await;
        assert_eq!(versions.error_code, 0, "{what}: the broker stopped serving");
    }
    // Every refusal is counted, and so is every request served.
    let metrics = common::http_get(&broker, "/metrics").await;
    let value = |series: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<u64>()
                .ok()
        })
    };
    assert_eq!(
        value("strata_kafka_rejected_frames_total"),
        Some(8),
        "{metrics}"
    );
    assert_eq!(
        value("strata_kafka_requests_total{api=\"ApiVersions\"}"),
        Some(8),
        "{metrics}"
    );
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_at_an_unknown_version_gets_a_v0_answer_with_our_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(loopback_config(dir.path())).await.expect("start");
    let mut s = connect(&broker).await;
    // v42 with a body we cannot know the layout of.
    s.write_all(&raw(&[0, 18, 0, 42, 0, 0, 0, 9, 0, 0, 1, 2, 3]))
        .await
        .expect("write");
    let (id, mut body) = read_response(&mut s).await;
    assert_eq!(id, 9);
    let r = ApiVersionsResponse::decode(&mut body, 0).expect("a v0 answer");
    assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
    assert_eq!(advertised(&r, ApiKey::Produce), (3, 13));
    // The connection stays usable.
    let req = ApiVersionsRequest::default();
    s.write_all(&frame(ApiKey::ApiVersions, 0, 10, &req))
        .await
        .expect("write");
    assert_eq!(read_response(&mut s).await.0, 10);
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(loopback_config(dir.path())).await.expect("start");
    let mut s = connect(&broker).await;
    let mut all = BytesMut::new();
    for id in 0..20 {
        if id % 2 == 0 {
            all.extend_from_slice(&frame(
                ApiKey::ApiVersions,
                2,
                id,
                &ApiVersionsRequest::default(),
            ));
        } else {
            let md = MetadataRequest::default().with_topics(None);
            all.extend_from_slice(&frame(ApiKey::Metadata, 9, id, &md));
        }
    }
    s.write_all(&all).await.expect("write");
    for id in 0..20 {
        let (got, mut body) = read_response(&mut s).await;
        assert_eq!(got, id, "answers come in request order");
        if id % 2 == 1 {
            // Flexible versions carry a tagged-field byte in the header.
            body.advance(1);
            let md = MetadataResponse::decode(&mut body, 9).expect("Metadata v9");
            assert_eq!(md.brokers.len(), 1);
            assert_eq!(md.brokers[0].port, i32::from(broker.kafka_addr().port()));
        }
    }
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_idempotent_produces_land_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_config(dir.path());
    // Slow flushes: several produce requests wait for one at a time.
    config.wal.min_interval = Some(Duration::from_millis(50));
    let broker = start(config).await.expect("start");
    let (mut data, mut admin) = common::clients(&broker).await;
    common::create_topic(&mut admin, "pipe", 1).await;
    let mut s = connect(&broker).await;

    s.write_all(&frame(
        ApiKey::InitProducerId,
        1,
        0,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    ))
    .await
    .expect("write");
    let (_, mut body) = read_response(&mut s).await;
    let ids = InitProducerIdResponse::decode(&mut body, 1).expect("InitProducerId v1");
    assert_eq!(ids.error_code, 0);

    // Ten produce requests back to back, one record each, sequences 0..10,
    // without waiting for an answer.
    const N: i32 = 10;
    let mut all = BytesMut::new();
    for i in 0..N {
        let mut b = BatchBuilder::new().producer(ids.producer_id.0, ids.producer_epoch, i);
        b.push(0, None, Some(format!("v{i}").as_bytes()), &[]);
        let partition = PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(b.build()));
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("pipe")))
            .with_partition_data(vec![partition]);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![topic]);
        all.extend_from_slice(&frame(ApiKey::Produce, 8, 100 + i, &req));
    }
    s.write_all(&all).await.expect("write");
    for i in 0..N {
        let (id, mut body) = read_response(&mut s).await;
        assert_eq!(id, 100 + i, "answers in request order");
        let r = ProduceResponse::decode(&mut body, 8).expect("Produce v8");
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "request {i}: {:?}", p.error_message);
        assert_eq!(p.base_offset, i64::from(i), "offsets follow the sequences");
    }
    let got = common::values(&common::fetch_once(&mut data, "pipe", 0).await);
    let want: Vec<(i64, String)> = (0..N).map(|i| (i64::from(i), format!("v{i}"))).collect();
    assert_eq!(got, want, "each record once, in order");
    broker.shutdown().await.expect("shutdown");
}

/// Sends `body` as `key` at `version` on `s` and returns the response
/// body (header tag byte skipped for flexible versions).
async fn call<T: Encodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Bytes {
    s.write_all(&frame(key, version, correlation_id, body))
        .await
        .expect("write");
    let (got, mut body) = read_response(s).await;
    assert_eq!(got, correlation_id);
    if key.response_header_version(version) >= 1 {
        body.advance(1);
    }
    body
}

/// Metadata v12 for `topic` by name (created on first use).
async fn metadata_of(
    s: &mut TcpStream,
    topic: &'static str,
    correlation_id: i32,
) -> MetadataResponse {
    let by_name = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str(topic)))),
        ]))
        .with_allow_auto_topic_creation(true);
    let mut body = call(s, ApiKey::Metadata, 12, correlation_id, &by_name).await;
    MetadataResponse::decode(&mut body, 12).expect("Metadata v12")
}

/// Creates `topic` by asking Metadata v12 for it (created on first use)
/// and returns its id.
async fn create_by_metadata(
    s: &mut TcpStream,
    topic: &'static str,
    correlation_id: i32,
) -> uuid::Uuid {
    let md = metadata_of(s, topic, correlation_id).await;
    assert_eq!(md.topics[0].error_code, 0);
    let id = md.topics[0].topic_id;
    assert!(!id.is_nil());
    id
}

/// Produces `n` records to partition 0 of a topic at `version`: by `id`
/// from v13, else by `name`. Returns the partition's error code.
async fn produce_n(
    s: &mut TcpStream,
    version: i16,
    name: &'static str,
    id: uuid::Uuid,
    n: usize,
    correlation_id: i32,
) -> i16 {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(0, None, Some(format!("{name}-{i}").as_bytes()), &[]);
    }
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_topic_id(id)
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(b.build())),
                ]),
        ]);
    let mut body = call(s, ApiKey::Produce, version, correlation_id, &req).await;
    let r = ProduceResponse::decode(&mut body, version).expect("Produce");
    if version >= 13 {
        assert_eq!(r.responses[0].topic_id, id, "answered by the id asked");
    }
    r.responses[0].partition_responses[0].error_code
}

/// Fetches partition 0 of a topic from offset 0 at `version`: by `id` from
/// v13, else by `name`. Returns (error code, high watermark, bytes).
async fn fetch_p0(
    s: &mut TcpStream,
    version: i16,
    name: &'static str,
    id: uuid::Uuid,
    correlation_id: i32,
) -> (i16, i64, usize) {
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str(name)))
        .with_topic_id(id)
        .with_partitions(vec![
            FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20),
        ]);
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![topic]);
    let mut body = call(s, ApiKey::Fetch, version, correlation_id, &req).await;
    let r = FetchResponse::decode(&mut body, version).expect("Fetch");
    assert_eq!(r.responses.len(), 1);
    if version >= 13 {
        assert_eq!(r.responses[0].topic_id, id, "answered by the id asked");
    }
    let p = &r.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.as_ref().map_or(0, Bytes::len),
    )
}

/// Fetch v13+ and Produce v13 name topics by id (KIP-516): a client of a
/// topic that was deleted and created again under its name gets
/// UNKNOWN_TOPIC_ID; it never reads the new topic's records as the old
/// one's, nor writes the old one's into the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_topic_id_a_client_never_mixes_up_a_topic_created_again_under_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(loopback_config(dir.path())).await.expect("start");
    let (_, mut admin) = common::clients(&broker).await;
    let versions = api_versions(&broker).await;
    assert_eq!(advertised(&versions, ApiKey::Fetch), (4, 16));

    let mut s = connect(&broker).await;
    let old = create_by_metadata(&mut s, "churn", 1).await;
    assert_eq!(
        produce_n(&mut s, 8, "churn", uuid::Uuid::nil(), 2, 2).await,
        0
    );
    assert_eq!(produce_n(&mut s, 13, "", old, 1, 20).await, 0, "v13 by id");
    for version in [13, 16] {
        let (code, hw, bytes) = fetch_p0(&mut s, version, "", old, 3).await;
        assert_eq!((code, hw), (0, 3), "v{version} by id");
        assert!(bytes > 0);
    }

    admin
        .delete_topic(strata_proto::v1::DeleteTopicRequest {
            name: "churn".into(),
        })
        .await
        .expect("delete");
    let new = create_by_metadata(&mut s, "churn", 4).await;
    assert_ne!(new, old, "a new topic, a new id");
    let code = produce_n(&mut s, 13, "", old, 1, 5).await;
    assert_eq!(
        code,
        ResponseError::UnknownTopicId.code(),
        "not into the new topic"
    );
    assert_eq!(produce_n(&mut s, 13, "", new, 1, 50).await, 0);

    let (code, _, bytes) = fetch_p0(&mut s, 16, "", old, 6).await;
    assert_eq!(
        code,
        ResponseError::UnknownTopicId.code(),
        "the old id is gone"
    );
    assert_eq!(bytes, 0);
    let (code, hw, _) = fetch_p0(&mut s, 16, "", new, 7).await;
    assert_eq!((code, hw), (0, 1), "the new id reads the new topic");
    // By name (v12 and older), the name's live topic.
    let (code, hw, _) = fetch_p0(&mut s, 12, "churn", uuid::Uuid::nil(), 8).await;
    assert_eq!((code, hw), (0, 1));
    let nobody = uuid::Uuid::new_v4();
    let (code, _, _) = fetch_p0(&mut s, 16, "", nobody, 9).await;
    assert_eq!(code, ResponseError::UnknownTopicId.code());
    let code = produce_n(&mut s, 13, "", nobody, 1, 10).await;
    assert_eq!(code, ResponseError::UnknownTopicId.code());
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_finds_a_topic_by_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(loopback_config(dir.path())).await.expect("start");
    let mut s = connect(&broker).await;
    // By name (created on first use), which tells its id.
    let id = create_by_metadata(&mut s, "orders", 1).await;
    // By id: the same topic, with its name; an id nobody has: UNKNOWN_TOPIC_ID.
    let unknown = uuid::Uuid::new_v4();
    let by_id = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(id),
        MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(unknown),
    ]));
    let mut body = call(&mut s, ApiKey::Metadata, 12, 2, &by_id).await;
    let md = MetadataResponse::decode(&mut body, 12).expect("Metadata v12");
    assert_eq!(md.topics.len(), 2);
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(
        md.topics[0].name.as_ref().map(|n| n.0.as_str()),
        Some("orders")
    );
    assert_eq!(md.topics[0].topic_id, id);
    assert_eq!(md.topics[0].partitions.len(), 1);
    assert_eq!(md.topics[1].topic_id, unknown);
    assert_eq!(
        md.topics[1].error_code,
        ResponseError::UnknownTopicId.code()
    );
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_heartbeat_assigns_by_topic_id_keeps_what_is_not_resent_and_describes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(loopback_config(dir.path())).await.expect("start");
    let mut s = connect(&broker).await;
    let topic_id = create_by_metadata(&mut s, "jobs", 1).await;
    let heartbeat = |epoch: i32, topics: Option<&str>| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_member_id(StrBytes::from_static_str("member-1"))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(if topics.is_some() { 30_000 } else { -1 })
            .with_subscribed_topic_names(
                topics.map(|t| vec![TopicName(StrBytes::from_string(t.to_owned()))]),
            )
    };
    // The coordinator's shard loads on first use: retry while it says so.
    let mut id = 10;
    let joined = loop {
        id += 1;
        let mut body = call(
            &mut s,
            ApiKey::ConsumerGroupHeartbeat,
            1,
            id,
            &heartbeat(0, Some("jobs")).with_topic_partitions(Some(Vec::new())),
        )
        .await;
        let r = ConsumerGroupHeartbeatResponse::decode(&mut body, 1).expect("heartbeat");
        if r.error_code != ResponseError::CoordinatorLoadInProgress.code() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(joined.error_code, 0, "{:?}", joined.error_message);
    assert_eq!(joined.member_id.as_deref(), Some("member-1"));
    assert_eq!(joined.member_epoch, 1);
    let assignment = joined.assignment.expect("an assignment");
    assert_eq!(assignment.topic_partitions.len(), 1);
    assert_eq!(assignment.topic_partitions[0].topic_id, topic_id);
    assert_eq!(assignment.topic_partitions[0].partitions, vec![0]);
    // Nothing re-sent (subscription and owned partitions null): the same
    // member, epoch and assignment.
    let mut body = call(
        &mut s,
        ApiKey::ConsumerGroupHeartbeat,
        1,
        50,
        &heartbeat(1, None),
    )
    .await;
    let r = ConsumerGroupHeartbeatResponse::decode(&mut body, 1).expect("heartbeat");
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(
        r.assignment.expect("assignment").topic_partitions[0].partitions,
        vec![0]
    );
    // ConsumerGroupDescribe shows the member, its subscription and what it
    // holds; an unknown group is GROUP_ID_NOT_FOUND.
    let describe = ConsumerGroupDescribeRequest::default().with_group_ids(vec![
        GroupId(StrBytes::from_static_str("g")),
        GroupId(StrBytes::from_static_str("nobody")),
    ]);
    let mut body = call(&mut s, ApiKey::ConsumerGroupDescribe, 1, 40, &describe).await;
    let d = ConsumerGroupDescribeResponse::decode(&mut body, 1).expect("describe");
    let g = &d.groups[0];
    assert_eq!(g.error_code, 0, "{:?}", g.error_message);
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert_eq!(g.members.len(), 1);
    let m = &g.members[0];
    assert_eq!(m.member_id.as_str(), "member-1");
    assert_eq!(m.member_epoch, 1);
    assert_eq!(m.subscribed_topic_names[0].0.as_str(), "jobs");
    let held = &m.assignment.topic_partitions[0];
    assert_eq!(
        (held.topic_id, held.topic_name.0.as_str()),
        (topic_id, "jobs")
    );
    assert_eq!(held.partitions, vec![0]);
    assert_eq!(m.target_assignment.topic_partitions[0].partitions, vec![0]);
    assert_eq!(
        d.groups[1].error_code,
        ResponseError::GroupIdNotFound.code()
    );
    // A pattern that does not compile is INVALID_REGULAR_EXPRESSION and
    // changes nothing; one that does replaces the topic names (sent
    // empty, as librdkafka does) and the member keeps what it matches.
    let bad =
        heartbeat(1, None).with_subscribed_topic_regex(Some(StrBytes::from_static_str("jo(")));
    let mut body = call(&mut s, ApiKey::ConsumerGroupHeartbeat, 1, 51, &bad).await;
    let r = ConsumerGroupHeartbeatResponse::decode(&mut body, 1).expect("heartbeat");
    assert_eq!(r.error_code, ResponseError::InvalidRegularExpression.code());
    assert!(
        r.error_message
            .expect("message")
            .contains("not a valid regular expression")
    );
    let by_pattern = heartbeat(1, Some("jobs"))
        .with_subscribed_topic_names(Some(Vec::new()))
        .with_subscribed_topic_regex(Some(StrBytes::from_static_str("(^jo.*)")));
    let mut body = call(&mut s, ApiKey::ConsumerGroupHeartbeat, 1, 54, &by_pattern).await;
    let r = ConsumerGroupHeartbeatResponse::decode(&mut body, 1).expect("heartbeat");
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let held = r.assignment.expect("assignment").topic_partitions;
    assert_eq!(
        (held[0].topic_id, &held[0].partitions),
        (topic_id, &vec![0])
    );
    let epoch = r.member_epoch;
    let mut body = call(&mut s, ApiKey::ConsumerGroupDescribe, 1, 55, &describe).await;
    let d = ConsumerGroupDescribeResponse::decode(&mut body, 1).expect("describe");
    let m = &d.groups[0].members[0];
    assert!(m.subscribed_topic_names.is_empty());
    assert_eq!(m.subscribed_topic_regex.as_deref(), Some("(^jo.*)"));
    // An assignor Strata does not have is refused with a message saying
    // what to do; `range` is taken, and the group uses it.
    let sticky =
        heartbeat(epoch, None).with_server_assignor(Some(StrBytes::from_static_str("sticky")));
    let mut body = call(&mut s, ApiKey::ConsumerGroupHeartbeat, 1, 52, &sticky).await;
    let r = ConsumerGroupHeartbeatResponse::decode(&mut body, 1).expect("heartbeat");
    assert_eq!(r.error_code, ResponseError::UnsupportedAssignor.code());
    assert!(r.error_message.expect("message").contains("`range`"));
    let range =
        heartbeat(epoch, None).with_server_assignor(Some(StrBytes::from_static_str("range")));
    let mut body = call(&mut s, ApiKey::ConsumerGroupHeartbeat, 1, 56, &range).await;
    let r = ConsumerGroupHeartbeatResponse::decode(&mut body, 1).expect("heartbeat");
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let mut body = call(&mut s, ApiKey::ConsumerGroupDescribe, 1, 57, &describe).await;
    let d = ConsumerGroupDescribeResponse::decode(&mut body, 1).expect("describe");
    assert_eq!(d.groups[0].assignor_name.as_str(), "range");
    // Leaving.
    let mut body = call(
        &mut s,
        ApiKey::ConsumerGroupHeartbeat,
        1,
        53,
        &heartbeat(-1, None),
    )
    .await;
    let r = ConsumerGroupHeartbeatResponse::decode(&mut body, 1).expect("heartbeat");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.member_epoch, -1);
    broker.shutdown().await.expect("shutdown");
}

/// Announces the client's software (ApiVersions v3) on `s`.
async fn hello(s: &mut TcpStream, name: &'static str, version: &'static str) {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(name))
        .with_client_software_version(StrBytes::from_static_str(version));
    let mut body = call(s, ApiKey::ApiVersions, 3, 100, &req).await;
    let r = ApiVersionsResponse::decode(&mut body, 3).expect("ApiVersions v3");
    assert_eq!(r.error_code, 0);
}

/// Node ids (one Metadata v12 on a new connection, after `software` if
/// given), and the partitions' leaders of `topic`.
async fn node_ids_seen(
    broker: &RunningBroker,
    software: Option<(&'static str, &'static str)>,
    topic: &'static str,
) -> (Vec<i32>, Vec<i32>) {
    let mut s = connect(broker).await;
    if let Some((name, version)) = software {
        hello(&mut s, name, version).await;
    }
    create_by_metadata(&mut s, topic, 1).await;
    let md = metadata_of(&mut s, topic, 2).await;
    let nodes = md.brokers.iter().map(|b| b.node_id.0).collect();
    let leaders = md.topics[0]
        .partitions
        .iter()
        .map(|p| p.leader_id.0)
        .collect();
    (nodes, leaders)
}

/// A client that announces librdkafka 2.4 or later sees each broker as
/// `kafka.node_ids_per_broker` node ids at its one address, its
/// partitions' leadership spread over them (so it opens that many
/// connections and keeps that many times more produce requests in
/// flight); the coordinator is the first of them. Older librdkafka (it
/// stops fetching when node ids share an address) and clients that do not
/// say see one node id per broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_librdkafka_sees_several_node_ids_per_broker_and_others_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_config(dir.path());
    config.kafka.default_partitions = 6;
    config.kafka.node_ids_per_broker = 4;
    let broker = start(config).await.expect("start");
    for (software, nodes, leaders) in [
        (None, vec![0], vec![0; 6]),
        (Some(("librdkafka", "2.0.2")), vec![0], vec![0; 6]),
        (
            Some(("librdkafka", "2.4.0")),
            vec![0, 1, 2, 3],
            vec![0, 1, 2, 3, 0, 1],
        ),
        (
            Some(("confluent-kafka-python", "2.16.1-rdkafka-2.16.0")),
            vec![0, 1, 2, 3],
            vec![0, 1, 2, 3, 0, 1],
        ),
        (Some(("apache-kafka-java", "3.9.0")), vec![0], vec![0; 6]),
    ] {
        assert_eq!(
            node_ids_seen(&broker, software, "spread").await,
            (nodes, leaders),
            "{software:?}"
        );
    }
    let mut s = connect(&broker).await;
    hello(&mut s, "librdkafka", "2.16.0").await;
    let md = metadata_of(&mut s, "spread", 2).await;
    assert!(
        md.brokers
            .iter()
            .all(|b| b.port == i32::from(broker.kafka_addr().port())),
        "every node id at the broker's address"
    );
    assert_eq!(md.controller_id.0, 0);
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
    let mut body = call(&mut s, ApiKey::FindCoordinator, 2, 3, &find).await;
    let c = FindCoordinatorResponse::decode(&mut body, 2).expect("FindCoordinator v2");
    assert_eq!(c.error_code, 0);
    assert_eq!(c.node_id.0, 0);
    assert_eq!(c.port, i32::from(broker.kafka_addr().port()));
    broker.shutdown().await.expect("shutdown");
}
