//! The bucket as the broker sees it over months (issue #10): the
//! controller's sweep reports what the bucket holds per kind in
//! `/metrics`, and a bucket written in the layout before topic ids is
//! refused at start with what to do.

mod common;

use std::time::{Duration, Instant};

use common::{batch_request, clients, create_topic, http_get, loopback_config};

use strata_broker::config::BrokerConfig;
use strata_broker::server::start;
use strata_storage::batch::BatchBuilder;

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = loopback_config(dir);
    c.gc.interval = Duration::from_secs(1);
    c
}

/// The value of the first `/metrics` line starting with `series `.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reports_the_bucket_inventory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path())).await.expect("start");
    let (mut c, mut admin) = clients(&broker).await;
    create_topic(&mut admin, "inv", 2).await;
    for p in 0..2 {
        let mut b = BatchBuilder::new();
        b.push(0, None, Some(b"v"), &[]);
        c.produce(batch_request("inv", p, b.build()))
            .await
            .expect("produce");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = http_get(&broker, "/metrics").await;
        let wal = metric(&text, "strata_bucket_objects{kind=\"wal\"}");
        let manifests = metric(&text, "strata_bucket_objects{kind=\"manifest\"}");
        if wal.is_some_and(|n| n >= 1.0) && manifests.is_some_and(|n| n >= 2.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no bucket inventory with the produced WAL objects and manifests within 20s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for needle in [
        "strata_bucket_bytes{kind=\"wal\"} ",
        "strata_bucket_objects{kind=\"topic_config\"} 1",
        "strata_bucket_objects{kind=\"cluster\"} ",
        "strata_gc_deleted_objects_total{kind=\"segment\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in {text}");
    }
    drop((c, admin));
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_of_the_layout_before_topic_ids_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir
        .path()
        .join("bucket/topics/orders/0/manifest/00000000000000000000.json");
    std::fs::create_dir_all(old.parent().expect("parent")).expect("mkdir");
    std::fs::write(&old, "{}").expect("write");
    let Err(err) = start(config(dir.path())).await else {
        panic!("a bucket of the old layout must be refused");
    };
    let err = format!("{err:#}");
    assert!(err.contains("before topic ids"), "{err}");
    assert!(err.contains("empty bucket or prefix"), "{err}");
    assert!(old.exists(), "nothing of the old data is touched");
}
