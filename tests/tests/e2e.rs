//! End-to-end: real `strata serve` processes on loopback ports, driven by
//! the Rust client and the `strata` CLI. The invariant checked after every
//! fault: every acknowledged record is read back exactly once, at the
//! offset its ack named, in order, with no offset gap or reuse, and no
//! record is ever duplicated (idempotent producer).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata_client::{Admin, Producer, ProducerConfig, TopicSettings};
use strata_proto::v1::{self, ErrorReason};
use strata_tests::broker::{BrokerOptions, BrokerProcess, http_get, run_cli};
use strata_tests::s3::TestS3;
use strata_tests::workload::{
    Acked, Workload, check_invariant, produce_range, produce_until, wait_for,
};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// How long acks may take to reach a count.
const WAIT: Duration = Duration::from_secs(60);

fn batch_of(value: &[u8]) -> Bytes {
    let mut builder = strata_storage::batch::BatchBuilder::new();
    builder.push(0, None, Some(value), &[]);
    builder.build()
}

/// Produce with the idempotent producer while the broker is stopped with
/// SIGTERM and with kill -9 and restarted under it.
async fn survive_restarts(options: BrokerOptions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(dir.path(), options).await;
    let url = broker.url();
    let admin = Admin::connect(&url).await.expect("admin");
    admin
        .create_topic("orders", 3, TopicSettings::default())
        .await
        .expect("create topic");
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(120),
        linger: Duration::from_millis(2),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&url, config).await.expect("producer");
    let acked = Acked::shared();
    let workload = Workload::keyed("orders");

    // Phase 1: a clean run, then a graceful stop with nothing in flight.
    let failed = produce_range(&producer, &workload, 0, 600, &acked).await;
    assert_eq!(failed, 0, "nothing may fail while the broker is up");
    let status = broker.terminate(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}:\n{}",
        broker.log()
    );
    broker.restart().await;
    let mut sent = 600;

    // Phases 2 and 3: kill -9, then SIGTERM, while records are in flight.
    for graceful in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let background = tokio::spawn(produce_until(
            producer.clone(),
            workload.clone(),
            sent,
            500,
            stop.clone(),
            acked.clone(),
        ));
        // Let acks flow, so the fault lands mid-stream.
        let before = acked.lock().len();
        wait_for("acks before the fault", WAIT, || {
            acked.lock().len() >= before + 200
        })
        .await;
        if graceful {
            let status = broker.terminate(Duration::from_secs(60)).await;
            assert!(
                status.success(),
                "SIGTERM must exit 0, got {status}:\n{}",
                broker.log()
            );
        } else {
            broker.kill().await;
        }
        let at_fault = acked.lock().len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.restart().await;
        wait_for("acks after the restart", WAIT, || {
            acked.lock().len() >= at_fault + 200
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        let (count, failed) = background.await.expect("producer task");
        assert_eq!(
            failed, 0,
            "the producer retries through a restart within its delivery timeout"
        );
        sent += count;
    }
    producer.flush().await.expect("flush");

    let acked = std::mem::take(&mut *acked.lock());
    assert_eq!(acked.len(), sent, "every record was acknowledged once");
    check_invariant(&broker.url(), "orders", 3, &acked).await;

    // And once more after a kill -9 with nothing in flight.
    broker.kill().await;
    broker.restart().await;
    check_invariant(&broker.url(), "orders", 3, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_keeps_acked_records_through_sigterm_and_kill9() {
    survive_restarts(BrokerOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_keeps_acked_records_through_sigterm_and_kill9() {
    let s3 = TestS3::shared().await;
    let (store, env) = s3.bucket_url().await;
    survive_restarts(BrokerOptions {
        store: Some(store),
        env,
        ..BrokerOptions::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_topics_produce_and_consume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), BrokerOptions::default()).await;
    let url = broker.url();
    let b = ["--broker", url.as_str()];

    let (status, out, err) = run_cli(
        &[
            &[
                "topic",
                "create",
                "greetings",
                "--partitions",
                "2",
                "--retention",
                "1d",
            ][..],
            &b,
        ]
        .concat(),
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(status.success(), "topic create: {out}{err}");
    let (status, out, err) = run_cli(&[&["topic", "list"][..], &b].concat(), "", CLI_TIMEOUT).await;
    assert!(
        status.success() && out.contains("greetings"),
        "topic list: {out}{err}"
    );

    let input: String = (0..50)
        .map(|i| format!("key{}:hello {i}\n", i % 5))
        .collect();
    let (status, out, err) = run_cli(
        &[&["produce", "greetings", "--key-separator", ":"][..], &b].concat(),
        &input,
        CLI_TIMEOUT,
    )
    .await;
    assert!(status.success(), "produce: {out}{err}");

    let (status, out, err) = run_cli(
        &[
            &[
                "consume",
                "greetings",
                "--from-beginning",
                "-n",
                "50",
                "--timeout",
                "20s",
                "--print-key",
            ][..],
            &b,
        ]
        .concat(),
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(status.success(), "consume: {err}");
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 50, "consume printed:\n{out}\n{err}");
    // Per key, values come back in the order they were produced.
    for k in 0..5 {
        let key = format!("key{k}\t");
        let got: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with(&key))
            .copied()
            .collect();
        let want: Vec<String> = (0..50)
            .filter(|i| i % 5 == k)
            .map(|i| format!("key{k}\thello {i}"))
            .collect();
        assert_eq!(got, want, "key{k}");
    }
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 50, "no duplicates");

    let (status, out, err) = run_cli(
        &[&["topic", "describe", "greetings"][..], &b].concat(),
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(status.success(), "describe: {out}{err}");
    assert!(out.contains("greetings"), "describe: {out}");

    let (status, out, err) = run_cli(
        &[&["topic", "delete", "greetings"][..], &b].concat(),
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(status.success(), "delete: {out}{err}");
    let (status, _, err) = run_cli(
        &[
            &[
                "consume",
                "greetings",
                "--from-beginning",
                "--timeout",
                "2s",
            ][..],
            &b,
        ]
        .concat(),
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(!status.success(), "consuming a deleted topic must fail");
    assert!(
        err.to_lowercase().contains("unknown topic"),
        "error says why: {err}"
    );

    // No broker at all: a clear error, not a hang.
    let (status, _, err) = run_cli(
        &["topic", "list", "--broker", "http://127.0.0.1:1"],
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("127.0.0.1:1"), "error names the broker: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), BrokerOptions::default()).await;
    let url = broker.url();
    Admin::connect(&url)
        .await
        .expect("admin")
        .create_topic("good", 2, TopicSettings::default())
        .await
        .expect("create");
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .expect("url")
        .connect()
        .await
        .expect("grpc connects");
    let mut client = v1::strata_client::StrataClient::new(channel);
    let good_batch = batch_of(b"hello");
    let produce = |topic: &str, partition: u32, batch: Bytes| v1::ProduceRequest {
        topic: topic.into(),
        partition,
        acks: v1::Acks::All as i32,
        payload: Some(v1::produce_request::Payload::Batch(batch)),
    };
    let reason = |status: tonic::Status| strata_proto::ErrorInfo::from_status(&status);

    let e = reason(
        client
            .produce(produce("nope", 0, good_batch.clone()))
            .await
            .expect_err("unknown topic"),
    );
    assert_eq!(e.reason, ErrorReason::UnknownTopic, "{e}");
    assert!(e.message.contains("nope"), "{e}");
    let e = reason(
        client
            .produce(produce("good", 7, good_batch.clone()))
            .await
            .expect_err("partition"),
    );
    assert_eq!(e.reason, ErrorReason::UnknownPartition, "{e}");

    let mut corrupt = good_batch.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let e = reason(
        client
            .produce(produce("good", 0, corrupt.into()))
            .await
            .expect_err("corrupt"),
    );
    assert_eq!(e.reason, ErrorReason::InvalidBatch, "{e}");
    let e = reason(
        client
            .produce(produce("good", 0, Bytes::from_static(b"garbage")))
            .await
            .expect_err("garbage"),
    );
    assert_eq!(e.reason, ErrorReason::InvalidBatch, "{e}");

    let big = vec![7u8; 3 << 20];
    let big_batch = batch_of(&big);
    let status = client
        .produce(produce("good", 0, big_batch))
        .await
        .expect_err("too large");
    let e = reason(status);
    assert_eq!(e.reason, ErrorReason::RecordTooLarge, "{e}");

    let e = reason(
        client
            .produce(v1::ProduceRequest {
                topic: "good".into(),
                partition: 0,
                acks: 0,
                payload: None,
            })
            .await
            .expect_err("no payload"),
    );
    assert_eq!(e.reason, ErrorReason::InvalidRequest, "{e}");

    let fetch = v1::FetchRequest {
        topic: "good".into(),
        partition: 1,
        offset: 1000,
        once: true,
        ..Default::default()
    };
    let e = match client.fetch(fetch).await {
        Err(status) => reason(status),
        Ok(response) => {
            let mut stream = response.into_inner();
            reason(stream.message().await.expect_err("out of range"))
        }
    };
    assert_eq!(e.reason, ErrorReason::OffsetOutOfRange, "{e}");

    // After all that, the broker still serves both partitions.
    for partition in 0..2 {
        let r = client
            .produce(produce("good", partition, good_batch.clone()))
            .await
            .expect("good produce")
            .into_inner();
        assert_eq!(r.base_offset, 0);
    }
    let (status, body) = http_get(&broker.http_url(), "/healthz")
        .await
        .expect("/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&broker.http_url(), "/readyz")
        .await
        .expect("/readyz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&broker.http_url(), "/metrics")
        .await
        .expect("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("strata_store_requests_total"), "{body}");
    assert!(body.contains("strata_produce_errors_total"), "{body}");
}

/// A producer with default settings (batches of up to 1,000,000 bytes) on a
/// topic that accepts only 4 KiB batches: the producer learns the limit
/// from metadata and keeps its batches under it, so every record lands
/// (instead of whole batches refused as too large). Keyless records, so
/// the sticky partitioner sizes its stints by the same limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_producer_keeps_batches_under_the_topics_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), BrokerOptions::default()).await;
    let url = broker.url();
    let admin = Admin::connect(&url).await.expect("admin");
    let settings = TopicSettings {
        max_batch_bytes: Some(4096),
        ..TopicSettings::default()
    };
    admin
        .create_topic("small-batches", 2, settings)
        .await
        .expect("create topic");
    let producer = Producer::connect(&url, ProducerConfig::default())
        .await
        .expect("producer");
    let value = Bytes::from(vec![7u8; 300]);
    let mut acks = Vec::new();
    for _ in 0..400 {
        let record = strata_client::ProducerRecord::new("small-batches", value.clone());
        acks.push(producer.send(record).await.expect("send"));
    }
    producer.flush().await.expect("flush");
    let mut per_partition = [0usize; 2];
    for ack in acks {
        let meta = ack
            .await
            .expect("every record lands in a batch the topic accepts");
        per_partition[meta.partition as usize] += 1;
    }
    assert_eq!(per_partition.iter().sum::<usize>(), 400);
}
