//! A broker bound beyond loopback with authentication off says so: a loud
//! log line (not checked here) and `strata_exposed_without_auth 1` in
//! `/metrics`; on loopback, or with authentication on, it does not.

mod common;

use std::time::Duration;

use common::http_get;
use strata_broker::config::BrokerConfig;
use strata_broker::server::start;

fn config(dir: &std::path::Path, kafka: &str, auth: bool) -> BrokerConfig {
    let mut c = BrokerConfig {
        data_dir: dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        kafka_addr: kafka.parse().expect("addr"),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: Duration::from_secs(20),
        ..BrokerConfig::default()
    };
    c.auth.enabled = auth;
    c
}

async fn metrics_of(kafka: &str, auth: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), kafka, auth)).await.expect("start");
    let body = http_get(&broker, "/metrics").await;
    broker.shutdown().await.expect("shutdown");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposure_without_authentication_shows_in_metrics() {
    let exposed = metrics_of("0.0.0.0:0", false).await;
    assert!(
        exposed.contains("strata_exposed_without_auth 1"),
        "{exposed}"
    );
    assert!(exposed.contains("strata_auth_enabled 0"), "{exposed}");
    let loopback = metrics_of("127.0.0.1:0", false).await;
    assert!(
        loopback.contains("strata_exposed_without_auth 0"),
        "{loopback}"
    );
    let secured = metrics_of("0.0.0.0:0", true).await;
    assert!(
        secured.contains("strata_exposed_without_auth 0"),
        "{secured}"
    );
    assert!(secured.contains("strata_auth_enabled 1"), "{secured}");
}
