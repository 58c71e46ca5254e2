//! In-process test of the broker's recovery from a store outage: the store
//! (in memory, behind a `FaultStore`) goes down for longer than
//! `wal.flush_timeout`, so the storage engine's WAL writer stops for good;
//! the broker must restart its storage as a new incarnation by itself once
//! the store is back, and serve every acknowledged record exactly once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{fetch_once, http_get, reason, values};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use strata_broker::config::BrokerConfig;
use strata_broker::server::{RunningBroker, start_with_store};
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::strata_client::StrataClient;
use strata_proto::v1::{
    CreateTopicRequest, ErrorReason, FetchRequest, ProduceRequest, Record, RecordList,
    produce_request,
};
use strata_storage::store::{FaultConfig, FaultStore};
use tokio::time::{Instant, timeout};
use tonic::transport::Channel;

const TOPIC: &str = "events";

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig {
        data_dir: dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        kafka_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: Duration::from_secs(10),
        maintenance_interval: Duration::from_millis(100),
        storage_restart_backoff: Duration::from_millis(300),
        ..BrokerConfig::default()
    };
    c.wal.flush_timeout = Duration::from_secs(1);
    c.log.segment_bytes = 1 << 20;
    c.hot_tier.memory_bytes = 8 << 20;
    c.hot_tier.block_bytes = 64 << 10;
    c.hot_tier.disk_bytes = 16 << 20;
    c
}

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        reason(status),
        ErrorReason::StoreUnavailable | ErrorReason::BrokerUnavailable
    )
}

/// Produces `values` as one batch (acks all). `Ok(base offset)` when acked.
async fn produce(c: &mut StrataClient<Channel>, values: &[String]) -> Result<i64, tonic::Status> {
    let records = values
        .iter()
        .map(|v| Record {
            value: Some(Bytes::from(v.clone())),
            ..Record::default()
        })
        .collect();
    let r = c
        .produce(ProduceRequest {
            topic: TOPIC.into(),
            partition: 0,
            acks: 0,
            payload: Some(produce_request::Payload::Records(RecordList { records })),
        })
        .await?
        .into_inner();
    assert_eq!(r.last_offset - r.base_offset + 1, values.len() as i64);
    Ok(r.base_offset)
}

/// The status line of `GET path` on the admin endpoint.
async fn status_line(b: &RunningBroker, path: &str) -> String {
    let out = http_get(b, path).await;
    out.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_storage_after_a_store_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = Arc::new(FaultStore::new(
        Arc::new(InMemory::new()),
        FaultConfig::default(),
    ));
    let store: Arc<dyn ObjectStore> = fault.clone();
    let broker = start_with_store(config(dir.path()), store, "memory://faulty")
        .await
        .expect("start");
    let channel = Channel::from_shared(broker.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut c = StrataClient::new(channel.clone());
    let mut admin = AdminClient::new(channel);
    admin
        .create_topic(CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 1,
            ..CreateTopicRequest::default()
        })
        .await
        .expect("create topic");

    // value -> offset of every acknowledged record; values that failed.
    let mut acked: HashMap<String, i64> = HashMap::new();
    let mut failed: Vec<String> = Vec::new();
    let mut next = 0u32;
    let mut batch = |n: u32| -> Vec<String> {
        let v = (next..next + n).map(|i| format!("r{i}")).collect();
        next += n;
        v
    };
    let ack = |acked: &mut HashMap<String, i64>, vals: &[String], base: i64| {
        for (i, v) in vals.iter().enumerate() {
            assert!(acked.insert(v.clone(), base + i as i64).is_none());
        }
    };

    for _ in 0..10 {
        let vals = batch(3);
        let base = produce(&mut c, &vals).await.expect("produce before outage");
        ack(&mut acked, &vals, base);
    }

    // A long-poll fetch stream at the end of the log, open across the
    // restart: it must end with a retryable error, not read a stale log.
    let mut stream = c
        .fetch(FetchRequest {
            topic: TOPIC.into(),
            partition: 0,
            offset: 30,
            max_wait_ms: 200,
            ..FetchRequest::default()
        })
        .await
        .expect("fetch stream")
        .into_inner();

    // Outage: produces fail with a retryable reason, in bounded time, and
    // the WAL writer stops (flush timeout), so the broker goes not ready.
    fault.set_down(true);
    let outage = Instant::now();
    let mut saw_not_ready = false;
    while outage.elapsed() < Duration::from_secs(3) || !saw_not_ready {
        assert!(
            outage.elapsed() < Duration::from_secs(20),
            "the broker never reported not ready during the outage"
        );
        let vals = batch(2);
        let started = Instant::now();
        let r = timeout(Duration::from_secs(10), produce(&mut c, &vals))
            .await
            .expect("produce during the outage must answer in bounded time");
        let status = r.expect_err("produce must fail while the store is down");
        assert!(retryable(&status), "not retryable: {status:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        failed.extend(vals);
        if status_line(&broker, "/readyz").await.contains("503") {
            saw_not_ready = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Store back: within bounded time produce succeeds again.
    fault.set_down(false);
    let back = Instant::now();
    loop {
        let vals = batch(2);
        match produce(&mut c, &vals).await {
            Ok(base) => {
                ack(&mut acked, &vals, base);
                break;
            }
            Err(status) => {
                assert!(retryable(&status), "not retryable: {status:?}");
                failed.extend(vals);
            }
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "produce did not recover within 30s of the store coming back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_in = back.elapsed();
    for _ in 0..5 {
        let vals = batch(3);
        let base = produce(&mut c, &vals)
            .await
            .expect("produce after recovery");
        ack(&mut acked, &vals, base);
    }
    assert!(status_line(&broker, "/readyz").await.contains("200"));
    assert!(
        broker.shared().partitions.generation() >= 1,
        "the storage was not restarted as a new incarnation"
    );

    // The fetch stream opened before the outage ended with a retryable error.
    let ended = timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the old fetch stream must end");
    let status = ended.expect("the old fetch stream must end with an error");
    assert_eq!(
        reason(&status),
        ErrorReason::BrokerUnavailable,
        "{status:?}"
    );

    // Read everything back from 0.
    let mut log: BTreeMap<i64, String> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let r = fetch_once(&mut c, TOPIC, offset).await;
        for (o, v) in values(&r) {
            assert!(log.insert(o, v).is_none(), "offset {o} read twice");
        }
        if r.next_offset >= r.high_watermark {
            break;
        }
        assert!(r.next_offset > offset, "fetch made no progress at {offset}");
        offset = r.next_offset;
    }
    // No gaps.
    let offsets: Vec<i64> = log.keys().copied().collect();
    let contiguous: Vec<i64> = (0..offsets.len() as i64).collect();
    assert_eq!(offsets, contiguous, "offsets have gaps");
    // Every acked record exactly once, at its acked offset.
    let mut seen: HashMap<&str, i64> = HashMap::new();
    for (o, v) in &log {
        assert!(seen.insert(v, *o).is_none(), "record {v} duplicated");
    }
    for (v, o) in &acked {
        assert_eq!(
            seen.get(v.as_str()),
            Some(o),
            "acked record {v} lost or moved"
        );
    }
    // Everything else is a record whose produce failed (present once).
    for v in seen.keys() {
        assert!(
            acked.contains_key(*v) || failed.iter().any(|f| f == v),
            "unknown record {v}"
        );
    }
    eprintln!(
        "acked {}, failed {}, log {}, recovered {recovered_in:?} after the store came back",
        acked.len(),
        failed.len(),
        log.len()
    );

    broker.shutdown().await.expect("shutdown");
}
