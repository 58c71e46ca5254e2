//! Two brokers started with the same `broker_id` on one bucket (issue
//! #10): the second refuses to run, saying so; once the first is gone the
//! id is free again. Brokers with `broker_id = "auto"` (issue #14) claim
//! the lowest free ids, beside fixed ones, and give them back on a
//! graceful stop.

use std::time::Duration;

use strata_broker::config::{BrokerConfig, BrokerIdSetting};
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
    other.broker_id = 1.into();
    let second = start(other).await.expect("another id starts");
    first.shutdown().await.expect("shutdown");
    // Once its broker is gone, the id is free again.
    let again = start(config(&dir.path().join("b"), &bucket))
        .await
        .expect("the id is free once its broker stopped");
    again.shutdown().await.expect("shutdown");
    second.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_brokers_claim_the_lowest_free_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let auto = |name: &str| {
        let mut c = config(&dir.path().join(name), &bucket);
        c.broker_id = BrokerIdSetting::Auto;
        c
    };
    // A fixed id 1 is running: the auto brokers go around it.
    let mut fixed = config(&dir.path().join("fixed"), &bucket);
    fixed.broker_id = 1.into();
    let fixed = start(fixed).await.expect("fixed id 1 starts");
    let (a, b) = tokio::join!(start(auto("a")), start(auto("b")));
    let (a, b) = (a.expect("a starts"), b.expect("b starts"));
    let mut ids = [a.shared().broker_id.0, b.shared().broker_id.0];
    ids.sort_unstable();
    assert_eq!(ids, [0, 2], "the lowest ids beside the fixed one");
    assert!(
        a.ready_line()
            .contains(&format!("broker={}", a.shared().broker_id)),
        "{}",
        a.ready_line()
    );
    assert_eq!(
        a.shared().config.broker_id,
        BrokerIdSetting::Fixed(a.shared().broker_id.0),
        "the configuration names the id in use"
    );
    // A graceful stop gives the id back at once.
    let freed = a.shared().broker_id;
    a.shutdown().await.expect("shutdown");
    let c = start(auto("c")).await.expect("c starts");
    assert_eq!(c.shared().broker_id, freed, "a released id is reused");
    c.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
    fixed.shutdown().await.expect("shutdown");
}
