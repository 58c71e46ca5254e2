//! Memory stays bounded (issue #10): the broker-wide budget for unsealed
//! tails (`wal.max_unsealed_bytes`). With segments far larger than the
//! budget, a producer that writes more than the budget still has every
//! record acknowledged: past half of it the broker seals the largest
//! tails, and what it holds in memory never goes far over the budget.

mod common;

use std::time::{Duration, Instant};

use common::{batch_request, clients, create_topic, http_get, loopback_config, now_ms, reason};
use strata_broker::config::BrokerConfig;
use strata_broker::server::start;
use strata_proto::v1::{DescribeTopicRequest, ErrorReason};
use strata_storage::batch::BatchBuilder;

const BUDGET: u64 = 2 << 20;

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = loopback_config(dir);
    c.maintenance_interval = Duration::from_millis(50);
    c.log.segment_bytes = 256 << 20;
    c.wal.max_bytes = 256 << 10;
    c.wal.max_pending_bytes = 1 << 20;
    c.wal.max_unsealed_bytes = BUDGET;
    c
}

fn unsealed(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_unsealed_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(u64::MAX, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_writing_past_the_budget_is_served_by_sealing_the_largest_tails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path())).await.expect("start");
    let (mut c, mut admin) = clients(&broker).await;
    create_topic(&mut admin, "m", 4).await;
    let value = vec![b'v'; 32 << 10];
    let mut acked = 0u64;
    let mut refusals = 0;
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    // 8 MiB: four times the budget.
    for i in 0..256u32 {
        let mut b = BatchBuilder::new();
        b.push(now_ms(), None, Some(&value), &[]);
        let batch = b.build();
        loop {
            let r = c.produce(batch_request("m", i % 4, batch.clone())).await;
            match r {
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(reason(&e), ErrorReason::BrokerUnavailable, "{e:?}");
                    assert!(e.message().contains("wal.max_unsealed_bytes"), "{e:?}");
                    assert!(Instant::now() < deadline, "still refused after 60 s: {e:?}");
                    refusals += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        acked += value.len() as u64;
        if i % 16 == 0 {
            peak = peak.max(unsealed(&http_get(&broker, "/metrics").await));
        }
    }
    assert!(acked > 3 * BUDGET);
    assert!(
        peak <= BUDGET + (256 << 10),
        "unsealed tails peaked at {peak} bytes, budget {BUDGET}"
    );
    let d = admin
        .describe_topic(DescribeTopicRequest {
            name: "m".into(),
            ..DescribeTopicRequest::default()
        })
        .await
        .expect("describe")
        .into_inner();
    let segments: u32 = d.partition_details.iter().map(|p| p.segments).sum();
    assert!(
        segments >= 2,
        "tails far below segment_bytes were sealed under pressure: {d:?}"
    );
    eprintln!(
        "8 MiB written through a 2 MiB budget: peak {peak} B unsealed, {refusals} retryable refusals, {segments} segments"
    );
    drop((c, admin));
    broker.shutdown().await.expect("shutdown");
}

/// Consumers that open fetch streams and never read them hold at most
/// `fetch.max_streams` of them: the rest are refused, retryably and
/// naming the limit, and room comes back when streams close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_streams_that_are_never_read_are_bounded() {
    use strata_proto::v1::FetchRequest;
    use strata_proto::v1::strata_client::StrataClient;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path());
    c.fetch.max_streams = 40;
    let broker = start(c).await.expect("start");
    let (_, mut admin) = clients(&broker).await;
    create_topic(&mut admin, "idle", 1).await;
    let request = || FetchRequest {
        topic: "idle".into(),
        partition: 0,
        offset: 0,
        max_wait_ms: 30_000,
        ..FetchRequest::default()
    };
    let mut held = Vec::new();
    let mut refused = 0;
    // 100 streams over 10 connections, none of them read.
    for _ in 0..10 {
        let channel = tonic::transport::Channel::from_shared(broker.grpc_url())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut client = StrataClient::new(channel);
        for _ in 0..10 {
            match client.fetch(request()).await {
                Ok(stream) => held.push(stream.into_inner()),
                Err(e) => {
                    assert_eq!(reason(&e), ErrorReason::BrokerUnavailable, "{e:?}");
                    assert!(e.message().contains("fetch.max_streams (40)"), "{e:?}");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!((held.len(), refused), (40, 60));
    drop(held);
    // Room comes back once the streams are gone (their tasks end when
    // they next try to send).
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut client, _) = clients(&broker).await;
    loop {
        match client.fetch(request()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no room after the streams closed: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    broker.shutdown().await.expect("shutdown");
}
