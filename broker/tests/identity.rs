//! Two brokers started with the same `broker_id` on one bucket (issue
//! #10): the second refuses to run, saying so; once the first is gone the
//! id is free again.

use std::time::Duration;

use strata_broker::config::BrokerConfig;
use strata_broker::server::start;

fn config(dir: &std::path::Path, bucket: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig {
        data_dir: dir.to_path_buf(),
        store: Some(format!("file://{}", bucket.display())),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        kafka_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: Duration::from_secs(20),
        ..BrokerConfig::default()
    };
    c.cluster.heartbeat_interval = Duration::from_millis(200);
    c.cluster.heartbeat_timeout = Duration::from_secs(2);
    c.hot_tier.memory_bytes = 8 << 20;
    c.hot_tier.disk_bytes = 16 << 20;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_with_the_same_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let first = start(config(&dir.path().join("a"), &bucket))
        .await
        .expect("the first broker starts");
    let Err(err) = start(config(&dir.path().join("b"), &bucket)).await else {
        panic!("the second broker with the same id must be refused");
    };
    let msg = format!("{err:#}");
    assert!(
        msg.contains("broker id 0 is in use by a running broker"),
        "{msg}"
    );
    assert!(msg.contains("--broker-id"), "{msg}");
    // Another id is fine beside it.
    let mut other = config(&dir.path().join("c"), &bucket);
    other.broker_id = 1;
    let second = start(other).await.expect("another id starts");
    first.shutdown().await.expect("shutdown");
    // Once its broker is gone, the id is free again.
    let again = start(config(&dir.path().join("b"), &bucket))
        .await
        .expect("the id is free once its broker stopped");
    again.shutdown().await.expect("shutdown");
    second.shutdown().await.expect("shutdown");
}
