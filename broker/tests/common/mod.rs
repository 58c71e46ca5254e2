//! Helpers shared by the in-process broker tests: gRPC clients, fetching
//! and decoding, and a bare HTTP GET on the admin endpoint.
#![allow(dead_code, unreachable_pub)]

use strata_broker::server::RunningBroker;
use strata_proto::ErrorInfo;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::strata_client::StrataClient;
use strata_proto::v1::{ErrorReason, FetchRequest, FetchResponse};
use strata_storage::batch::{Batch, decode_records};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// gRPC clients of both services over one connection.
pub(crate) async fn clients(b: &RunningBroker) -> (StrataClient<Channel>, AdminClient<Channel>) {
    let channel = Channel::from_shared(b.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    (
        StrataClient::new(channel.clone()),
        AdminClient::new(channel),
    )
}

pub(crate) fn reason(status: &tonic::Status) -> ErrorReason {
    ErrorInfo::from_status(status).reason
}

pub(crate) async fn fetch_once(
    c: &mut StrataClient<Channel>,
    topic: &str,
    offset: i64,
) -> FetchResponse {
    let mut s = c
        .fetch(FetchRequest {
            topic: topic.into(),
            partition: 0,
            offset,
            once: true,
            max_wait_ms: 50,
            ..FetchRequest::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let r = s
        .message()
        .await
        .expect("fetch message")
        .expect("one response");
    assert!(
        s.message().await.expect("end").is_none(),
        "once ends the stream"
    );
    r
}

/// Every (offset, value) of a fetch response.
pub(crate) fn values(r: &FetchResponse) -> Vec<(i64, String)> {
    r.batches
        .iter()
        .flat_map(|b| {
            let batch = Batch::from_trusted(b.clone()).expect("stored batch");
            decode_records(&batch).expect("records")
        })
        .map(|r| {
            let v = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
            (r.offset, v.unwrap_or_default())
        })
        .collect()
}

pub(crate) async fn http_get(b: &RunningBroker, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(b.http_addr())
        .await
        .expect("http connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// A broker on loopback (free ports) with its bucket and a small hot tier
/// under `dir`.
pub(crate) fn loopback_config(dir: &std::path::Path) -> strata_broker::config::BrokerConfig {
    let mut c = strata_broker::config::BrokerConfig {
        data_dir: dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        kafka_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: std::time::Duration::from_secs(20),
        ..strata_broker::config::BrokerConfig::default()
    };
    c.hot_tier.memory_bytes = 8 << 20;
    c.hot_tier.disk_bytes = 16 << 20;
    c
}

/// Creates topic `name` with `partitions` and the broker's defaults.
pub(crate) async fn create_topic(admin: &mut AdminClient<Channel>, name: &str, partitions: u32) {
    admin
        .create_topic(strata_proto::v1::CreateTopicRequest {
            name: name.into(),
            partitions,
            ..strata_proto::v1::CreateTopicRequest::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
}

/// Wall-clock milliseconds, for record timestamps.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An acks=all produce of one stored-format `batch` to `topic`/`partition`.
pub(crate) fn batch_request(
    topic: &str,
    partition: u32,
    batch: bytes::Bytes,
) -> strata_proto::v1::ProduceRequest {
    strata_proto::v1::ProduceRequest {
        topic: topic.into(),
        partition,
        acks: 0,
        payload: Some(strata_proto::v1::produce_request::Payload::Batch(batch)),
    }
}

pub mod certs;
