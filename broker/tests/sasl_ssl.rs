//! The safe setup end to end (issue #15): a broker with TLS and
//! authentication on, Kafka clients on `SASL_SSL` with SCRAM, and the
//! native client over `https://` with credentials and the CA.
//!
//! The Kafka part runs `tests/kafka/sasl_clients.py` (kafka-python and
//! confluent-kafka); it is skipped with a message when no Python with both
//! is found (`STRATA_TEST_PYTHON`, else the workspace's `.venv`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::certs::TestCerts;
use common::loopback_config;
use futures::StreamExt;
use strata_broker::auth::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use strata_broker::auth::users::UserRecord;
use strata_broker::config::BrokerConfig;
use strata_broker::server::{RunningBroker, start};
use strata_client::{
    Admin, ConnectOptions, Consumer, ConsumerConfig, Credentials, Offset, Producer, ProducerConfig,
    ProducerRecord, TlsOptions, TopicSettings,
};

fn secured_config(dir: &Path, certs: &TestCerts) -> BrokerConfig {
    let mut c = loopback_config(dir);
    c.tls.cert = Some(certs.server_cert.clone());
    c.tls.key = Some(certs.server_key.clone());
    c.auth.enabled = true;
    c.auth.super_users = vec!["admin".into()];
    c
}

/// Users admin and alice; alice may create, write and read `orders`
/// (the group ACL is the script's to add, through the Kafka admin API).
async fn users_and_acls(broker: &RunningBroker) {
    let auth = &broker.shared().auth;
    for (user, password) in [("admin", "admin-secret"), ("alice", "alice-secret")] {
        let record = UserRecord::new(user, password, 0).expect("user");
        auth.users.put(&record, false).await.expect("store user");
    }
    let bindings: Vec<AclBinding> = [Operation::Create, Operation::Write, Operation::Read]
        .into_iter()
        .map(|operation| AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation,
            permission: Permission::Allow,
        })
        .collect();
    auth.acls
        .change(0, |set| set.add(bindings.iter().cloned()))
        .await
        .expect("store ACLs");
}

fn python() -> Option<PathBuf> {
    let exe = std::env::var_os("STRATA_TEST_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        PathBuf::from,
    );
    let ok = std::process::Command::new(&exe)
        .args(["-c", "import kafka, confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(exe)
    } else {
        eprintln!(
            "SKIPPED: no Python with kafka-python and confluent-kafka at {} (set STRATA_TEST_PYTHON)",
            exe.display()
        );
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_on_sasl_ssl_with_scram_produce_and_consume_in_a_group() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(certs_dir.path());
    let broker = start(secured_config(dir.path(), &certs))
        .await
        .expect("start");
    users_and_acls(&broker).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kafka/sasl_clients.py");
    let count = 20;
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(format!("localhost:{}", broker.kafka_addr().port()))
            .arg("SASL_SSL")
            .arg(&certs.ca_cert)
            .args([
                "admin-secret",
                "alice-secret",
                "orders",
                "secret",
                "billing",
            ])
            .arg(count.to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the clients finish")
    .expect("run python");
    assert!(
        out.status.success(),
        "the Kafka clients failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    let expect: Vec<i64> = (0..count).collect();
    assert_eq!(v["py_acked"], serde_json::json!(expect), "{v}");
    let expect: Vec<i64> = (count..2 * count).collect();
    assert_eq!(v["ck_acked"], serde_json::json!(expect), "{v}");
    let expect: Vec<String> = (0..count).map(|i| format!("py-{i}")).collect();
    assert_eq!(v["py_consumed"], serde_json::json!(expect), "{v}");
    let expect: Vec<String> = (0..count).map(|i| format!("ck-{i}")).collect();
    assert_eq!(v["ck_consumed"], serde_json::json!(expect), "{v}");
    assert_eq!(v["forbidden_group"], "GROUP_AUTHORIZATION_FAILED", "{v}");
    assert!(
        v["ck_wrong_password_errors"]
            .to_string()
            .contains("_AUTHENTICATION"),
        "{v}"
    );
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_client_over_https_with_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(certs_dir.path());
    let broker = start(secured_config(dir.path(), &certs))
        .await
        .expect("start");
    users_and_acls(&broker).await;
    let url = format!("https://localhost:{}", broker.grpc_addr().port());
    let tls = TlsOptions::from_files(Some(&certs.ca_cert), None, None).expect("CA");
    let as_user = |user: &str, password: &str| {
        ConnectOptions::default()
            .with_tls(tls.clone())
            .with_credentials(Credentials::new(user, password))
    };

    // Wrong password: refused with a reason that says so.
    let refused = Admin::connect_with(&url, &as_user("alice", "wrong"))
        .await
        .expect("connect")
        .list_topics()
        .await
        .expect_err("a wrong password is refused");
    assert!(
        refused
            .to_string()
            .contains("invalid user name or password"),
        "{refused}"
    );

    let admin = Admin::connect_with(&url, &as_user("admin", "admin-secret"))
        .await
        .expect("connect");
    admin
        .create_topic("orders", 1, TopicSettings::default())
        .await
        .expect("create");
    let producer = Producer::connect(
        &url,
        ProducerConfig {
            connection: as_user("alice", "alice-secret"),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    // alice may write, but an idempotent producer needs a producer id:
    // Write on some topic is enough (as in Kafka).
    let ack = producer
        .send_and_wait(ProducerRecord::new("orders", "hello"))
        .await
        .expect("alice writes");
    let mut consumer = Consumer::connect(
        &url,
        ConsumerConfig {
            connection: as_user("alice", "alice-secret"),
            ..ConsumerConfig::default()
        },
    )
    .await
    .expect("consumer");
    consumer
        .assign("orders", ack.partition, Offset::At(ack.offset))
        .await
        .expect("assign");
    let record = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a record in time")
        .expect("the stream goes on")
        .expect("alice reads");
    assert_eq!(record.value.as_deref(), Some(&b"hello"[..]));

    // alice may not delete it; the topic stays.
    let alice = Admin::connect_with(&url, &as_user("alice", "alice-secret"))
        .await
        .expect("connect");
    let denied = alice
        .delete_topic("orders")
        .await
        .expect_err("alice may not delete");
    assert!(
        denied.to_string().contains("may not Delete topic orders"),
        "{denied}"
    );
    assert!(
        admin
            .list_topics()
            .await
            .expect("list")
            .iter()
            .any(|t| t.name == "orders")
    );

    // The CLI, with the CA and credentials.
    let pw = dir.path().join("admin.pw");
    std::fs::write(&pw, "admin-secret\n").expect("password file");
    let ca = certs.ca_cert.to_string_lossy().into_owned();
    let pw = pw.to_string_lossy().into_owned();
    let base = ["topic", "list", "--broker", &url, "--tls-ca", &ca];
    let (ok, out, err) =
        cli(&[&base[..], &["--user", "admin", "--password-file", &pw]].concat()).await;
    assert!(ok && out.contains("orders"), "{out}{err}");
    let (ok, _, err) =
        cli(&[&base[..], &["--user", "alice", "--password-file", &pw]].concat()).await;
    assert!(
        !ok && err.contains("invalid user name or password"),
        "{err}"
    );
    let (ok, _, err) = cli(&base).await;
    assert!(!ok && err.contains("requires authentication"), "{err}");
    broker.shutdown().await.expect("shutdown");
}

/// Runs the `strata` binary with `args` (no `STRATA_*` from the
/// environment); whether it succeeded, its stdout and stderr.
async fn cli(args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata"));
    command.args(args).kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("STRATA_") {
            command.env_remove(key);
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the CLI finishes")
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
