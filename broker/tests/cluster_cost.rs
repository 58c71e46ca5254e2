//! What an idle cluster costs in store requests. Two in-process brokers
//! share one bucket (in memory); each engine counts its own requests, the
//! cluster's included. At idle a round must cost one GET per member
//! heartbeat and, only every tenth round, the LISTs of the heartbeats and
//! of the controller and assignment chains (`cluster::Look`). Counted per
//! heartbeat written, so the figures do not depend on timing.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use strata_broker::config::BrokerConfig;
use strata_broker::server::{RunningBroker, start_with_store};
use strata_proto::v1::CreateTopicRequest;
use strata_proto::v1::admin_client::AdminClient;
use strata_storage::store::StatsSnapshot;

fn config(dir: &std::path::Path, id: u32) -> BrokerConfig {
    let mut c = BrokerConfig {
        broker_id: id.into(),
        data_dir: dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        kafka_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: Duration::from_secs(10),
        ..BrokerConfig::default()
    };
    c.cluster.heartbeat_interval = Duration::from_millis(50);
    c.cluster.heartbeat_timeout = Duration::from_secs(2);
    c.hot_tier.memory_bytes = 8 << 20;
    c.hot_tier.block_bytes = 64 << 10;
    c.hot_tier.disk_bytes = 16 << 20;
    c
}

fn stats(b: &RunningBroker) -> StatsSnapshot {
    b.shared()
        .partitions
        .engine()
        .expect("engine")
        .store_stats()
        .snapshot()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_round_gets_heartbeats_and_lists_rarely() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut brokers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let id = u32::try_from(i).expect("id") + 1;
        brokers.push(
            start_with_store(config(dir.path(), id), store.clone(), "memory://")
                .await
                .expect("start"),
        );
    }
    let channel = tonic::transport::Channel::from_shared(brokers[0].grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut admin = AdminClient::new(channel);
    admin
        .create_topic(CreateTopicRequest {
            name: "idle".into(),
            partitions: 4,
            ..CreateTopicRequest::default()
        })
        .await
        .expect("create");
    // Let the assignment settle and the claims finish.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before: Vec<StatsSnapshot> = brokers.iter().map(stats).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (b, before) in brokers.iter().zip(before) {
        let d = stats(b) - before;
        let beats = d.put_requests as f64;
        assert!(beats >= 20.0, "heartbeats were written: {d:?}");
        let (gets, lists) = (
            d.get_requests as f64 / beats,
            d.list_requests as f64 / beats,
        );
        let id = b.shared().broker_id.0;
        eprintln!("broker {id}: per heartbeat {gets:.2} GET, {lists:.2} LIST ({d:?})");
        // One GET per member; LISTs every tenth round (about 0.3 a round,
        // 0.5 on the controller, which also lists the topics). Before the
        // hints every round listed the heartbeats and both chains (3 LISTs
        // a round, 4 on the controller).
        assert!(
            lists <= 1.0,
            "broker {id} lists {lists:.2} times per round at idle: {d:?}"
        );
        assert!(
            (1.0..=3.0).contains(&gets),
            "broker {id} reads {gets:.2} objects per round at idle (2 members): {d:?}"
        );
    }
    for b in brokers {
        b.shutdown().await.expect("shutdown");
    }
}
