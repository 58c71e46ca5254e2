//! TLS end to end, on in-process brokers with certificates generated into
//! a temporary directory (`common::certs`): the Rust client over
//! `https://` (and the errors without the CA or the client certificate),
//! mTLS principals in gRPC requests, `/readyz` over https, brokers calling
//! each other with mTLS, the `strata` CLI, and Kafka clients (kafka-python,
//! kcat) over SSL. The Kafka client tests skip, saying so, when the client
//! is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::certs::TestCerts;
use common::loopback_config;
use futures::StreamExt;
use strata_broker::config::{BrokerConfig, ClientAuth};
use strata_broker::server::{RunningBroker, start};
use strata_broker::tls::PeerIdentity;
use strata_client::{
    Admin, ConnectOptions, Consumer, ConsumerConfig, Error, Offset, Producer, ProducerConfig,
    ProducerRecord, TlsOptions, TopicSettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A broker serving TLS with the test certificates; with `client_ca`,
/// clients must present certificates signed by the test CA.
fn tls_config(dir: &Path, certs: &TestCerts, client_ca: bool) -> BrokerConfig {
    let mut c = loopback_config(dir);
    c.tls.cert = Some(certs.server_cert.clone());
    c.tls.key = Some(certs.server_key.clone());
    if client_ca {
        c.tls.client_ca = Some(certs.ca_cert.clone());
    }
    c
}

fn trusting(certs: &TestCerts, client_cert: bool) -> ConnectOptions {
    let (cert, key) = if client_cert {
        (Some(&*certs.client_cert), Some(&*certs.client_key))
    } else {
        (None, None)
    };
    ConnectOptions::default()
        .with_tls(TlsOptions::from_files(Some(&certs.ca_cert), cert, key).expect("read PEM files"))
}

/// Produces `n` records to a new topic `topic` and reads them back.
async fn roundtrip(url: &str, options: &ConnectOptions, topic: &str, n: usize) {
    let admin = Admin::connect_with(url, options).await.expect("admin");
    admin
        .create_topic(topic, 1, TopicSettings::default())
        .await
        .expect("create topic");
    let producer = Producer::connect(
        url,
        ProducerConfig {
            connection: options.clone(),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    for i in 0..n {
        producer
            .send_and_wait(ProducerRecord::new(topic, format!("v{i}")))
            .await
            .expect("produce");
    }
    let mut consumer = Consumer::connect(
        url,
        ConsumerConfig {
            connection: options.clone(),
            ..ConsumerConfig::default()
        },
    )
    .await
    .expect("consumer");
    consumer
        .assign(topic, 0, Offset::Earliest)
        .await
        .expect("assign");
    for i in 0..n {
        let record = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("a record in time")
            .expect("the stream goes on")
            .expect("record");
        assert_eq!(record.value.as_deref(), Some(format!("v{i}").as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_produces_and_consumes_over_https_and_says_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(certs_dir.path());
    let broker = start(tls_config(dir.path(), &certs, false))
        .await
        .expect("start");
    let url = broker.grpc_url();
    assert_eq!(url, format!("https://{}", broker.grpc_addr()));
    assert!(
        broker.ready_line().starts_with(&format!(
            "strata: serving broker=0 grpc=https://{} http=https://{} store=file://",
            broker.grpc_addr(),
            broker.http_addr()
        )),
        "{}",
        broker.ready_line()
    );
    // Metadata advertises the https URL.
    let admin = Admin::connect_with(&url, &trusting(&certs, false))
        .await
        .expect("admin");
    let md = admin.metadata(&[]).await.expect("metadata");
    assert!(
        md.brokers.iter().all(|b| b.address.starts_with("https://")),
        "{md:?}"
    );

    roundtrip(&url, &trusting(&certs, false), "secure", 3).await;

    // Without the CA: the system's roots do not know the test CA.
    let err = Admin::connect(&url).await.expect_err("untrusted");
    assert!(
        matches!(err, Error::Tls { .. } | Error::Config(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("--tls-ca"), "{err}");
    // Plain http:// to a TLS broker fails (without hanging) and says to use
    // https://, whether the request got as far as reading the broker's TLS
    // alert or was cancelled before it was sent.
    let plain = format!("http://{}", broker.grpc_addr());
    let err = tokio::time::timeout(Duration::from_secs(20), async {
        let admin = Admin::connect(&plain).await?;
        admin.list_topics().await
    })
    .await
    .expect("no hang")
    .expect_err("plain http to a TLS broker");
    assert!(err.to_string().contains("https://"), "{err}");

    // /readyz and /metrics over https, for load balancers.
    let (status, body) = https_get(&broker, "/readyz", &certs.ca_cert).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, body) = https_get(&broker, "/metrics", &certs.ca_cert).await;
    assert_eq!(status, 200);
    assert!(body.contains("strata_"), "{body}");
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_clients_need_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(certs_dir.path());
    let broker = start(tls_config(dir.path(), &certs, true))
        .await
        .expect("start");
    let url = broker.grpc_url();

    let err = async {
        let admin = Admin::connect_with(&url, &trusting(&certs, false)).await?;
        admin.list_topics().await
    }
    .await
    .expect_err("no client certificate");
    // With TLS 1.3 the server checks the client's certificate after the
    // client has finished its side of the handshake: usually the client
    // still reads the "certificate required" alert and says what to pass,
    // but when the connection is gone before the request is written it can
    // only say that the request was cancelled, and what usually causes it.
    let cancelled = matches!(&err, Error::Broker(info) if info.message.contains("canceled"));
    assert!(matches!(err, Error::Tls { .. }) || cancelled, "{err:?}");
    assert!(err.to_string().contains("--tls-cert"), "{err}");

    roundtrip(&url, &trusting(&certs, true), "mutual", 2).await;

    // The load balancer's health check needs a certificate too here:
    // operators who want it without one set client_auth = "requested".
    broker.shutdown().await.expect("shutdown");
    let mut config = tls_config(dir.path(), &certs, true);
    config.tls.client_auth = Some(ClientAuth::Requested);
    let broker = start(config).await.expect("restart");
    let (status, _) = https_get(&broker, "/readyz", &certs.ca_cert).await;
    assert_eq!(status, 200);
    let admin = Admin::connect_with(&broker.grpc_url(), &trusting(&certs, false))
        .await
        .expect("admin without a certificate");
    admin.list_topics().await.expect("served");
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_carry_the_peer_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(dir.path());
    let mut config = tls_config(dir.path(), &certs, true);
    config.tls.client_auth = Some(ClientAuth::Requested);
    let tls = strata_broker::tls::ListenerTls::load(&config.tls)
        .await
        .expect("load")
        .expect("TLS on");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = strata_broker::tls::incoming::incoming(
        tonic::transport::server::TcpIncoming::from(listener),
        Some(tls.grpc),
        addr,
        "gRPC",
    );
    let seen: Arc<parking_lot::Mutex<Vec<Option<PeerIdentity>>>> = Arc::default();
    let record = seen.clone();
    let (_, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tower::util::MapRequestLayer::new(
                move |req: axum::http::Request<tonic::body::Body>| {
                    record
                        .lock()
                        .push(req.extensions().get::<PeerIdentity>().cloned());
                    req
                },
            ))
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    let url = format!("https://localhost:{}", addr.port());
    for client_cert in [true, false] {
        let channel = trusting(&certs, client_cert)
            .endpoint(&url)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("check");
    }
    let seen = seen.lock().clone();
    let principals: Vec<Option<String>> = seen
        .iter()
        .map(|p| {
            p.as_ref()
                .expect("every request has one")
                .tls_principal
                .clone()
        })
        .collect();
    assert_eq!(principals, vec![Some("alice".to_owned()), None]);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_call_each_other_over_mtls() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(certs_dir.path());
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut brokers: Vec<RunningBroker> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = tls_config(dir.path(), &certs, true);
        config.broker_id = (u32::try_from(i).expect("id") + 1).into();
        config.cluster.heartbeat_interval = Duration::from_millis(50);
        config.cluster.heartbeat_timeout = Duration::from_secs(2);
        brokers.push(
            strata_broker::server::start_with_store(config, store.clone(), "memory://")
                .await
                .expect("start"),
        );
    }
    let admin = Admin::connect_with(&brokers[0].grpc_url(), &trusting(&certs, true))
        .await
        .expect("admin");
    // Both brokers know each other.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let status = admin.cluster_status().await.expect("status");
            if status.brokers.iter().filter(|b| b.alive).count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("two live brokers");
    // Broker 1 forwards the drain of broker 2 over mTLS.
    let said = admin.drain_broker(2).await.expect("drain forwarded");
    assert!(said.contains("draining"), "{said}");
    tokio::time::timeout(
        Duration::from_secs(5),
        brokers[1].shared().drain_requested.cancelled(),
    )
    .await
    .expect("broker 2 was asked to drain");
    for b in brokers {
        b.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_the_tls_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(certs_dir.path());
    let broker = start(tls_config(dir.path(), &certs, false))
        .await
        .expect("start");
    let url = broker.grpc_url();
    let ca = certs.ca_cert.to_string_lossy().into_owned();
    let (ok, _, stderr) = cli(&[
        "topic", "create", "clitls", "--broker", &url, "--tls-ca", &ca,
    ])
    .await;
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = cli(&["topic", "list", "--broker", &url, "--tls-ca", &ca]).await;
    assert!(ok && stdout.contains("clitls"), "{stdout}{stderr}");
    // The CA from the environment.
    let (ok, stdout, stderr) = cli_env(
        &["topic", "list", "--broker", &url],
        &[("STRATA_TLS_CA", &ca)],
    )
    .await;
    assert!(ok && stdout.contains("clitls"), "{stdout}{stderr}");
    // Without it, the error says what to pass.
    let (ok, _, stderr) = cli(&["topic", "list", "--broker", &url]).await;
    assert!(!ok && stderr.contains("--tls-ca"), "{stderr}");
    broker.shutdown().await.expect("shutdown");
}

async fn cli(args: &[&str]) -> (bool, String, String) {
    cli_env(args, &[]).await
}

async fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env_remove("STRATA_BROKER")
            .env_remove("STRATA_TLS_CA")
            .env_remove("STRATA_TLS_CLIENT_CERT")
            .env_remove("STRATA_TLS_CLIENT_KEY")
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the CLI finishes")
    .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET path` on the broker's admin endpoint over https, trusting `ca`;
/// returns (status, body).
async fn https_get(broker: &RunningBroker, path: &str, ca: &Path) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in strata_broker::tls::load::read_certs("ca", ca).expect("ca") {
        roots.add(cert).expect("root");
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(strata_broker::tls::load::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(broker.http_addr())
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    // A close without close_notify is fine here.
    let _ = tls.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The Python with kafka-python: `STRATA_TEST_PYTHON`, else the
/// workspace's `.venv`.
async fn python_with_kafka() -> Option<PathBuf> {
    let exe = std::env::var_os("STRATA_TEST_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        PathBuf::from,
    );
    let ok = tokio::process::Command::new(&exe)
        .args(["-c", "import kafka"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(exe)
    } else {
        eprintln!(
            "SKIPPED: no Python with kafka-python at {} (set STRATA_TEST_PYTHON)",
            exe.display()
        );
        None
    }
}

const KAFKA_PYTHON_SSL: &str = r#"
import json, sys
from kafka import KafkaConsumer, KafkaProducer
bootstrap, topic, ca = sys.argv[1], sys.argv[2], sys.argv[3]
ssl = dict(security_protocol="SSL", ssl_cafile=ca)
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **ssl)
offsets = [producer.send(topic, value=b"v%d" % i).get(timeout=60).offset for i in range(5)]
producer.close()
consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         consumer_timeout_ms=10000, **ssl)
values = []
for m in consumer:
    values.append(m.value.decode())
    if len(values) == 5:
        break
consumer.close()
print(json.dumps({"offsets": offsets, "values": values}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_and_consumes_over_ssl() {
    let Some(python) = python_with_kafka().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(certs_dir.path());
    let broker = start(tls_config(dir.path(), &certs, false))
        .await
        .expect("start");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&python)
            .args(["-c", KAFKA_PYTHON_SSL])
            .arg(broker.kafka_addr().to_string())
            .arg("sslevents")
            .arg(&certs.ca_cert)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kafka-python finishes")
    .expect("run python");
    assert!(
        out.status.success(),
        "kafka-python over SSL failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    assert_eq!(v["offsets"], serde_json::json!([0, 1, 2, 3, 4]));
    assert_eq!(
        v["values"],
        serde_json::json!(["v0", "v1", "v2", "v3", "v4"])
    );
    // A plain Kafka client gets nowhere (and the broker goes on).
    let mut plain = tokio::net::TcpStream::connect(broker.kafka_addr())
        .await
        .expect("connect");
    let _ = plain.write_all(&[0, 0, 0, 4, 0, 18, 0, 0]).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(15), plain.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a TLS alert or a close, not an answer"
    );
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes_over_ssl() {
    let found = tokio::process::Command::new("kcat")
        .arg("-V")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: kcat is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(certs_dir.path());
    let broker = start(tls_config(dir.path(), &certs, false))
        .await
        .expect("start");
    let bootstrap = broker.kafka_addr().to_string();
    let ca = certs.ca_cert.to_string_lossy().into_owned();
    let ssl = [
        "-X",
        "security.protocol=ssl",
        "-X",
        &format!("ssl.ca.location={ca}"),
    ];
    let run = |args: Vec<String>, input: &'static str| async move {
        let mut child = tokio::process::Command::new("kcat")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run kcat");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).await.expect("write");
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kcat finishes")
            .expect("kcat");
        assert!(
            out.status.success(),
            "kcat {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let with = |extra: &[&str]| -> Vec<String> {
        ["-b", bootstrap.as_str()]
            .iter()
            .chain(ssl.iter())
            .chain(extra.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    // The topic first, with the native client over https.
    Admin::connect_with(&broker.grpc_url(), &trusting(&certs, false))
        .await
        .expect("admin")
        .create_topic("kcatssl", 1, TopicSettings::default())
        .await
        .expect("create");
    run(with(&["-P", "-t", "kcatssl"]), "one\ntwo\nthree\n").await;
    let out = run(
        with(&["-C", "-t", "kcatssl", "-o", "beginning", "-c", "3", "-e"]),
        "",
    )
    .await;
    assert_eq!(out.lines().collect::<Vec<_>>(), ["one", "two", "three"]);
    broker.shutdown().await.expect("shutdown");
}
