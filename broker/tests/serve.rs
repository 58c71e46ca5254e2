//! In-process broker test: start a broker on loopback with a `file://`
//! store in a temporary directory and drive it through the generated tonic
//! clients, then restart it on the same directory and read everything back.

mod common;

use std::time::Duration;

use common::{batch_request, clients, fetch_once, http_get, reason, values};

use bytes::Bytes;
use strata_broker::config::BrokerConfig;
use strata_broker::server::start;
use strata_proto::v1::{
    CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest, ErrorReason, FetchRequest,
    InitProducerRequest, ListOffsetsRequest, ListTopicsRequest, MetadataRequest, OffsetSpec,
    ProduceRequest, Record, RecordList, produce_request,
};
use strata_storage::batch::BatchBuilder;

const MAX_BATCH: usize = 16 * 1024;

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig {
        data_dir: dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        kafka_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: Duration::from_secs(20),
        ..BrokerConfig::default()
    };
    c.log.max_batch_bytes = MAX_BATCH;
    c.log.segment_bytes = 1 << 20;
    c.hot_tier.memory_bytes = 8 << 20;
    c.hot_tier.block_bytes = 64 << 10;
    c.hot_tier.disk_bytes = 16 << 20;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_produce_fetch_errors_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path())).await.expect("start");
    assert!(broker.ready_line().starts_with(&format!(
        "strata: serving broker=0 grpc=http://{} http=http://{} store=file://",
        broker.grpc_addr(),
        broker.http_addr()
    )));
    let (mut c, mut admin) = clients(&broker).await;

    // Topics.
    let created = admin
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 2,
            ..CreateTopicRequest::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.partitions, 2);
    let cfg = created.config.expect("effective config");
    assert_eq!(cfg.max_batch_bytes, Some(MAX_BATCH as i32));
    let err = admin
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 2,
            ..CreateTopicRequest::default()
        })
        .await
        .expect_err("exists");
    assert_eq!(reason(&err), ErrorReason::TopicAlreadyExists);
    admin
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 2,
            if_not_exists: true,
            ..CreateTopicRequest::default()
        })
        .await
        .expect("if_not_exists");
    let err = admin
        .create_topic(CreateTopicRequest {
            name: "bad/name".into(),
            partitions: 1,
            ..CreateTopicRequest::default()
        })
        .await
        .expect_err("bad name");
    assert_eq!(reason(&err), ErrorReason::InvalidRequest);

    // Produce a client-built batch, then plain records.
    let mut b = BatchBuilder::new();
    for i in 0..3 {
        b.push(1_000 + i, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
    }
    let r = c
        .produce(batch_request("orders", 0, b.build()))
        .await
        .expect("produce batch")
        .into_inner();
    assert_eq!((r.base_offset, r.last_offset, r.duplicate), (0, 2, false));
    let records = (3..5)
        .map(|i| Record {
            value: Some(Bytes::from(format!("v{i}"))),
            ..Record::default()
        })
        .collect();
    let r = c
        .produce(ProduceRequest {
            topic: "orders".into(),
            partition: 0,
            acks: 0,
            payload: Some(produce_request::Payload::Records(RecordList { records })),
        })
        .await
        .expect("produce records")
        .into_inner();
    assert_eq!((r.base_offset, r.last_offset), (3, 4));

    // Fetch them back.
    let f = fetch_once(&mut c, "orders", 0).await;
    let want: Vec<(i64, String)> = (0..5).map(|i| (i, format!("v{i}"))).collect();
    assert_eq!(values(&f), want);
    assert_eq!(
        (f.high_watermark, f.log_start_offset, f.next_offset),
        (5, 0, 5)
    );

    // List offsets.
    let lo = |spec: OffsetSpec, ts: i64| ListOffsetsRequest {
        topic: "orders".into(),
        partition: 0,
        spec: spec as i32,
        timestamp_ms: ts,
    };
    let e = c
        .list_offsets(lo(OffsetSpec::Earliest, 0))
        .await
        .expect("lo");
    assert_eq!(e.into_inner().offset, 0);
    let l = c.list_offsets(lo(OffsetSpec::Latest, 0)).await.expect("lo");
    assert_eq!(l.into_inner().offset, 5);
    let t = c
        .list_offsets(lo(OffsetSpec::Timestamp, 1_001))
        .await
        .expect("lo");
    assert_eq!(t.into_inner().offset, 0, "the first batch holds ts 1001");
    let t = c
        .list_offsets(lo(OffsetSpec::Timestamp, i64::MAX))
        .await
        .expect("lo");
    assert_eq!(t.into_inner().offset, 5, "past the end: the high watermark");

    // Errors, with reasons.
    let mut one = BatchBuilder::new();
    one.push(1, None, Some(b"x"), &[]);
    let err = c
        .produce(batch_request("nope", 0, one.build()))
        .await
        .expect_err("unknown topic");
    assert_eq!(reason(&err), ErrorReason::UnknownTopic);
    assert!(err.message().contains("nope"), "{}", err.message());
    let err = c
        .produce(batch_request("orders", 7, one.build()))
        .await
        .expect_err("unknown partition");
    assert_eq!(reason(&err), ErrorReason::UnknownPartition);
    let mut corrupt = one.build().to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let err = c
        .produce(batch_request("orders", 0, Bytes::from(corrupt)))
        .await
        .expect_err("corrupt");
    assert_eq!(reason(&err), ErrorReason::InvalidBatch);
    assert!(err.message().contains("crc"), "{}", err.message());
    let mut big = BatchBuilder::new();
    big.push(1, None, Some(&vec![7u8; MAX_BATCH + 100]), &[]);
    let err = c
        .produce(batch_request("orders", 0, big.build()))
        .await
        .expect_err("too large");
    assert_eq!(reason(&err), ErrorReason::RecordTooLarge);
    let mut huge = BatchBuilder::new();
    huge.push(1, None, Some(&vec![7u8; MAX_BATCH + 128 * 1024]), &[]);
    let err = c
        .produce(batch_request("orders", 0, huge.build()))
        .await
        .expect_err("over the gRPC limit");
    assert_eq!(reason(&err), ErrorReason::RecordTooLarge);
    let err = c
        .produce(ProduceRequest {
            topic: "orders".into(),
            ..ProduceRequest::default()
        })
        .await
        .expect_err("no payload");
    assert_eq!(reason(&err), ErrorReason::InvalidRequest);
    let mut s = c
        .fetch(FetchRequest {
            topic: "orders".into(),
            offset: 100,
            ..FetchRequest::default()
        })
        .await
        .expect("stream opens")
        .into_inner();
    let err = s.message().await.expect_err("out of range");
    assert_eq!(reason(&err), ErrorReason::OffsetOutOfRange);

    // The broker still works after all that: a long-poll stream sees a new
    // produce.
    let mut stream = c
        .fetch(FetchRequest {
            topic: "orders".into(),
            offset: 5,
            max_wait_ms: 100,
            ..FetchRequest::default()
        })
        .await
        .expect("stream")
        .into_inner();
    let mut five = BatchBuilder::new();
    five.push(2_000, None, Some(b"v5"), &[]);
    c.produce(batch_request("orders", 0, five.build()))
        .await
        .expect("produce");
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = stream.message().await.expect("stream ok").expect("open");
            if !r.batches.is_empty() {
                return r;
            }
            assert_eq!(r.next_offset, 5, "heartbeats keep the offset");
        }
    })
    .await
    .expect("long poll delivers");
    assert_eq!(values(&got), vec![(5, "v5".to_string())]);
    assert_eq!(got.next_offset, 6);
    drop(stream);

    // Metadata, producer ids, describe.
    let md = c
        .metadata(MetadataRequest::default())
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(md.brokers.len(), 1);
    assert_eq!(md.brokers[0].address, broker.grpc_url());
    assert_eq!(md.topics.len(), 1);
    assert_eq!(md.topics[0].partitions.len(), 2);
    assert_eq!(md.topics[0].partitions[0].owner_broker_id, Some(0));
    let err = c
        .metadata(MetadataRequest {
            topics: vec!["nope".into()],
        })
        .await
        .expect_err("unknown");
    assert_eq!(reason(&err), ErrorReason::UnknownTopic);
    let p1 = c
        .init_producer(InitProducerRequest {})
        .await
        .expect("pid")
        .into_inner();
    let p2 = c
        .init_producer(InitProducerRequest {})
        .await
        .expect("pid")
        .into_inner();
    assert_ne!(p1.producer_id, p2.producer_id);
    let d = admin
        .describe_topic(DescribeTopicRequest {
            name: "orders".into(),
            local_only: false,
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(d.partition_details[0].high_watermark, 6);

    // Delete and re-create starts empty.
    admin
        .create_topic(CreateTopicRequest {
            name: "scratch".into(),
            partitions: 1,
            ..CreateTopicRequest::default()
        })
        .await
        .expect("create scratch");
    c.produce(batch_request("scratch", 0, one.build()))
        .await
        .expect("produce scratch");
    admin
        .delete_topic(DeleteTopicRequest {
            name: "scratch".into(),
        })
        .await
        .expect("delete");
    let err = c
        .produce(batch_request("scratch", 0, one.build()))
        .await
        .expect_err("deleted");
    assert_eq!(reason(&err), ErrorReason::UnknownTopic);
    admin
        .create_topic(CreateTopicRequest {
            name: "scratch".into(),
            partitions: 1,
            ..CreateTopicRequest::default()
        })
        .await
        .expect("re-create");
    let r = c
        .produce(batch_request("scratch", 0, one.build()))
        .await
        .expect("produce again")
        .into_inner();
    assert_eq!(r.base_offset, 0, "a re-created topic starts empty");

    // HTTP.
    let ready = http_get(&broker, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let health = http_get(&broker, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(&broker, "/metrics").await;
    for needle in [
        "strata_produce_requests_total ",
        "strata_produce_records_total ",
        "strata_produce_errors_total{reason=\"INVALID_BATCH\"} 1",
        "strata_store_requests_total{op=\"put\"} ",
        "strata_partitions_owned 3",
        "strata_broker_info{broker_id=\"0\"",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in {metrics}");
    }
    // Every acknowledged produce is in the ack latency histogram.
    let acks: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_produce_ack_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no strata_produce_ack_seconds_count in {metrics}"));
    assert!(acks >= 3, "{acks} acks counted in {metrics}");

    // Graceful shutdown, then a restart on the same directory reads
    // everything back.
    drop((c, admin));
    broker.shutdown().await.expect("graceful shutdown");

    let broker = start(config(dir.path())).await.expect("restart");
    let (mut c, mut admin) = clients(&broker).await;
    let topics = admin
        .list_topics(ListTopicsRequest {})
        .await
        .expect("list")
        .into_inner();
    let names: Vec<&str> = topics.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["orders", "scratch"]);
    let mut all = Vec::new();
    let mut offset = 0;
    while offset < 6 {
        let f = fetch_once(&mut c, "orders", offset).await;
        assert_eq!(f.high_watermark, 6);
        all.extend(values(&f).into_iter().filter(|(o, _)| *o >= offset));
        offset = f.next_offset;
    }
    let want: Vec<(i64, String)> = (0..6).map(|i| (i, format!("v{i}"))).collect();
    assert_eq!(all, want, "every acknowledged record, exactly once");
    let r = c
        .produce(batch_request("orders", 0, one.build()))
        .await
        .expect("produce after restart")
        .into_inner();
    assert_eq!(r.base_offset, 6, "offsets continue");
    let p3 = c
        .init_producer(InitProducerRequest {})
        .await
        .expect("pid")
        .into_inner();
    assert!(p3.producer_id > p2.producer_id, "ids never reused");
    drop((c, admin));
    broker.shutdown().await.expect("second shutdown");
}

#[tokio::test]
async fn address_in_use_names_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut c = config(dir.path());
    c.grpc_addr = taken.local_addr().expect("addr");
    let err = start(c).await.expect_err("in use");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--grpc-addr") && msg.contains(&taken.local_addr().expect("addr").to_string()),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_fetch_streams_and_releases_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path())).await.expect("start");
    let (mut c, mut admin) = clients(&broker).await;
    admin
        .create_topic(CreateTopicRequest {
            name: "t".into(),
            partitions: 1,
            ..CreateTopicRequest::default()
        })
        .await
        .expect("create");
    let mut one = BatchBuilder::new();
    one.push(1, None, Some(b"x"), &[]);
    c.produce(batch_request("t", 0, one.build()))
        .await
        .expect("produce");
    let mut stream = c
        .fetch(FetchRequest {
            topic: "t".into(),
            offset: 1,
            max_wait_ms: 10_000,
            ..FetchRequest::default()
        })
        .await
        .expect("stream")
        .into_inner();
    let shared = broker.shared().clone();
    let stopping = tokio::spawn(broker.shutdown());
    let err = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends promptly")
        .expect_err("ended by shutdown");
    assert_eq!(reason(&err), ErrorReason::BrokerUnavailable);
    assert!(!shared.is_ready());
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finishes")
        .expect("task")
        .expect("graceful");
    assert!(shared.partitions.is_empty(), "every partition was released");
    // The released partition reopens on the next start with its data.
    let broker = start(config(dir.path())).await.expect("restart");
    let (mut c, _admin) = clients(&broker).await;
    let f = fetch_once(&mut c, "t", 0).await;
    assert_eq!(values(&f), vec![(0, "x".to_string())]);
    broker.shutdown().await.expect("shutdown");
}
