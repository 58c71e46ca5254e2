//! Authentication and ACLs on real `strata serve` processes (issue #15):
//! users and ACLs created with the CLI in the bucket, Kafka clients
//! authenticating with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), and
//! every refusal a clear Kafka error that changes nothing.
//!
//! The Kafka tests skip (with a message) when no Python with both Kafka
//! clients is found; see `strata_tests::python`.

use std::time::Duration;

use strata_client::{
    Admin, ConnectOptions, Consumer, ConsumerConfig, Credentials, ErrorReason, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, TopicSettings,
};
use strata_tests::broker::{BrokerOptions, BrokerProcess, http_get, run_cli, run_cli_with_env};
use strata_tests::python::kafka_clients;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `strata args...`; panics with its output unless it succeeds.
async fn cli_ok(args: &[&str], stdin: &str) -> String {
    let (status, out, err) = run_cli(args, stdin, CLI_TIMEOUT).await;
    assert!(status.success(), "strata {args:?} failed: {out}\n{err}");
    out
}

/// Lets alice do `operation` on `resource` (`["--topic", NAME]`,
/// `["--group", NAME]`, `["--cluster"]`) with the CLI, in the bucket at
/// `store`.
async fn allow_alice(store: &str, operation: &str, resource: &[&str]) {
    let mut args = vec![
        "acl",
        "add",
        "--allow",
        "User:alice",
        "--operation",
        operation,
    ];
    args.extend_from_slice(resource);
    args.extend_from_slice(&["--store", store]);
    cli_ok(&args, "").await;
}

/// A broker with `--auth --super-user admin` on a `file://` bucket under
/// `dir`, and users admin and alice (created in the bucket before it
/// starts, as an operator bootstraps a cluster).
async fn secured_broker(dir: &std::path::Path) -> (BrokerProcess, String) {
    let store = format!("file://{}", dir.join("bucket").display());
    for (user, password) in [("admin", "admin-secret"), ("alice", "alice-secret")] {
        let file = dir.join(format!("{user}.pw"));
        std::fs::write(&file, format!("{password}\n")).expect("password file");
        let file = file.to_str().expect("utf-8 path");
        cli_ok(
            &[
                "user",
                "add",
                user,
                "--password-file",
                file,
                "--store",
                &store,
            ],
            "",
        )
        .await;
    }
    let broker = BrokerProcess::start(
        &dir.join("broker"),
        BrokerOptions {
            store: Some(store.clone()),
            args: vec!["--auth".into(), "--super-user".into(), "admin".into()],
            ..BrokerOptions::default()
        },
    )
    .await;
    (broker, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_are_managed_in_the_bucket_with_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("file://{}", dir.path().join("bucket").display());
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").expect("password file");
    let pw = pw.to_str().expect("utf-8 path");
    cli_ok(
        &[
            "user",
            "add",
            "bob",
            "--password-file",
            pw,
            "--store",
            &store,
        ],
        "",
    )
    .await;
    let (status, _, err) = run_cli(
        &[
            "user",
            "add",
            "bob",
            "--password-file",
            pw,
            "--store",
            &store,
        ],
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("--update"), "{err}");
    cli_ok(
        &[
            "user",
            "add",
            "bob",
            "--password-file",
            "-",
            "--update",
            "--store",
            &store,
        ],
        "other\n",
    )
    .await;
    let stored = std::fs::read_to_string(dir.path().join("bucket/security/users/bob.json"))
        .expect("user object");
    assert!(
        !stored.contains("s3cret") && !stored.contains("other"),
        "{stored}"
    );
    assert!(stored.contains("scram_sha_512"), "{stored}");
    assert_eq!(
        cli_ok(&["user", "list", "--store", &store], "").await,
        "bob\n"
    );

    cli_ok(
        &[
            "acl",
            "add",
            "--allow",
            "User:bob",
            "--operation",
            "read",
            "--operation",
            "write",
            "--topic",
            "logs-",
            "--prefixed",
            "--store",
            &store,
        ],
        "",
    )
    .await;
    let (status, _, err) = run_cli(
        &[
            "acl",
            "add",
            "--allow",
            "bob",
            "--operation",
            "read",
            "--topic",
            "t",
            "--store",
            &store,
        ],
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("User:NAME"), "{err}");
    let listed = cli_ok(&["acl", "list", "--store", &store], "").await;
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.contains("User:bob") && listed.contains("prefixed"),
        "{listed}"
    );
    let removed = cli_ok(
        &["acl", "remove", "--operation", "write", "--store", &store],
        "",
    )
    .await;
    assert!(removed.contains("Write"), "{removed}");
    assert_eq!(
        cli_ok(&["acl", "list", "--store", &store], "")
            .await
            .lines()
            .count(),
        2
    );

    cli_ok(&["user", "delete", "bob", "--store", &store], "").await;
    let (status, _, err) = run_cli(
        &["user", "delete", "bob", "--store", &store],
        "",
        CLI_TIMEOUT,
    )
    .await;
    assert!(!status.success() && err.contains("no user bob"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_authenticate_with_sasl_and_acls_decide() {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, store) = secured_broker(dir.path()).await;
    for op in ["create", "write", "read"] {
        allow_alice(&store, op, &["--topic", "orders"]).await;
    }
    // For the consumer subscribed by pattern (KIP-848).
    allow_alice(&store, "read", &["--group", "billing-by-pattern"]).await;
    let (_, metrics) = http_get(&broker.http_url(), "/metrics")
        .await
        .expect("metrics");
    assert!(metrics.contains("strata_auth_enabled 1"), "{metrics}");
    assert!(
        metrics.contains("strata_exposed_without_auth 0"),
        "{metrics}"
    );
    // The broker follows the ACL chain every heartbeat interval.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let count = 50;
    let out = python
        .run(
            "sasl_clients.py",
            &[
                broker.kafka_addr(),
                "SASL_PLAINTEXT",
                "-",
                "admin-secret",
                "alice-secret",
                "orders",
                "secret",
                "billing",
                &count.to_string(),
            ],
            SCRIPT_TIMEOUT,
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("script output");
    eprintln!("{v:#}");

    // ACLs through the Kafka admin API, beside the CLI's.
    assert_eq!(v["create_acls_failed"], serde_json::json!([]));
    assert_eq!(
        v["alice_acls"],
        serde_json::json!([
            "GROUP billing READ ALLOW",
            "GROUP billing-by-pattern READ ALLOW",
            "TOPIC orders CREATE ALLOW",
            "TOPIC orders READ ALLOW",
            "TOPIC orders WRITE ALLOW"
        ])
    );
    assert_eq!(v["deleted_acls"], 1);

    // Allowed: every record acked once, in order, read back in the group;
    // the second consumer resumes at the first one's commit.
    let offsets = |k: &str| -> Vec<i64> {
        v[k].as_array()
            .expect("array")
            .iter()
            .map(|o| o.as_i64().expect("offset"))
            .collect()
    };
    assert_eq!(offsets("py_acked"), (0..count).collect::<Vec<_>>());
    assert_eq!(offsets("ck_acked"), (count..2 * count).collect::<Vec<_>>());
    let values = |k: &str| -> Vec<String> {
        v[k].as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("value").to_owned())
            .collect()
    };
    assert_eq!(
        values("py_consumed"),
        (0..count).map(|i| format!("py-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        values("ck_consumed"),
        (0..count).map(|i| format!("ck-{i}")).collect::<Vec<_>>()
    );

    // By pattern, alice is given only the topics she may describe:
    // orders-hidden matches too, but only the super user may see it.
    assert_eq!(v["pattern_assigned"], serde_json::json!(["orders"]));
    assert_eq!(v["pattern_topics"], serde_json::json!(["orders"]));
    assert_eq!(v["pattern_records"], 2 * count);
    assert_eq!(v["pattern_errors"], serde_json::json!([]));

    // Refused, with Kafka's errors, and nothing changed.
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    assert!(
        text("forbidden_produce").contains("TopicAuthorizationFailed"),
        "{}",
        text("forbidden_produce")
    );
    assert_eq!(text("forbidden_group"), "GROUP_AUTHORIZATION_FAILED");
    // kafka-python's bootstrap only says it timed out; its log says why.
    assert_ne!(text("py_wrong_password"), "connected");
    // When it got that far (under load its bootstrap may time out first),
    // kafka-python logs SASL_AUTHENTICATION_FAILED with the broker's
    // message; the broker logs every refusal.
    let why = v["py_wrong_password_log"].to_string();
    assert!(
        why == "[\"\"]"
            || (why.contains("SaslAuthenticationFailed")
                && why.contains("invalid user name or password")),
        "{why}"
    );
    let log = broker.log();
    assert!(
        log.contains("SASL authentication failed")
            && log.contains("authentication failed: invalid user name or password"),
        "{log}"
    );
    assert_ne!(text("ck_wrong_password"), "listed");
    assert!(
        v["ck_wrong_password_errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|n| n == "_AUTHENTICATION")),
        "{}",
        v["ck_wrong_password_errors"]
    );
    assert_ne!(text("no_sasl"), "accepted");
    let topics = v["admin_topics"].to_string();
    assert!(topics.contains("orders"), "{topics}");
    assert!(
        !topics.contains("secret"),
        "no topic 'secret' was created: {topics}"
    );

    let (_, metrics) = http_get(&broker.http_url(), "/metrics")
        .await
        .expect("metrics");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(value("strata_auth_failures_total") >= 3, "{metrics}");
    assert!(value("strata_auth_denied_total") >= 2, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_credentials_and_acls_decide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, store) = secured_broker(dir.path()).await;
    let url = broker.url();
    let alice_pw = dir.path().join("alice.pw");
    let alice_pw = alice_pw.to_str().expect("utf-8 path");
    let as_alice = ["--user", "alice", "--password-file", alice_pw];
    let admin_env = [
        ("STRATA_USER".to_owned(), "admin".to_owned()),
        ("STRATA_PASSWORD".to_owned(), "admin-secret".to_owned()),
    ];
    let run = |args: Vec<String>, env: Vec<(String, String)>, stdin: &'static str| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli_with_env(&args, &env, stdin, CLI_TIMEOUT).await
    };
    let args = |a: &[&str], extra: &[&str]| -> Vec<String> {
        a.iter()
            .chain(["--broker", url.as_str()].iter())
            .chain(extra.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };

    // No credentials, wrong ones: refused, saying what to pass.
    let (status, _, err) = run(args(&["topic", "list"], &[]), vec![], "").await;
    assert!(!status.success());
    assert!(
        err.contains("requires authentication") && err.contains("--user"),
        "{err}"
    );
    let wrong = dir.path().join("wrong.pw");
    std::fs::write(&wrong, "nope\n").expect("password file");
    let wrong = wrong.to_str().expect("utf-8 path");
    let (status, _, err) = run(
        args(
            &["topic", "list"],
            &["--user", "alice", "--password-file", wrong],
        ),
        vec![],
        "",
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("invalid user name or password"), "{err}");

    // The super user (credentials from the environment) may do anything.
    let (status, _, err) = run(
        args(&["topic", "create", "orders", "--partitions", "2"], &[]),
        admin_env.to_vec(),
        "",
    )
    .await;
    assert!(status.success(), "{err}");

    // alice without ACLs: sees nothing, may change nothing.
    let (status, out, err) = run(args(&["topic", "list"], &as_alice), vec![], "").await;
    assert!(status.success(), "{err}");
    assert!(!out.contains("orders"), "{out}");
    for (cmd, refusal) in [
        (
            vec!["topic", "delete", "orders"],
            "may not Delete topic orders",
        ),
        // The drain command reads the cluster's status first.
        (
            vec!["cluster", "drain", "0"],
            "may not Describe the cluster",
        ),
        // An idempotent producer needs a producer id first.
        (
            vec!["produce", "orders"],
            "may not IdempotentWrite the cluster",
        ),
    ] {
        let (status, _, err) = run(args(&cmd, &as_alice), vec![], "x\n").await;
        assert!(!status.success(), "{cmd:?} must be refused");
        assert!(
            err.contains(refusal) && err.contains("strata acl add"),
            "{cmd:?}: {err}"
        );
    }

    // With ACLs (followed within a heartbeat interval): produce and consume.
    for op in ["write", "read"] {
        allow_alice(&store, op, &["--topic", "orders"]).await;
    }
    allow_alice(&store, "describe", &["--cluster"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, err) = run(
            args(&["produce", "orders", "--partition", "0"], &as_alice),
            vec![],
            "a\nb\nc\n",
        )
        .await;
        if status.success() {
            break;
        }
        assert!(err.contains("may not"), "{err}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ACL never applied: {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, out, err) = run(
        args(
            &[
                "consume",
                "orders",
                "--partition",
                "0",
                "--from-beginning",
                "-n",
                "3",
                "--timeout",
                "20s",
            ],
            &as_alice,
        ),
        vec![],
        "",
    )
    .await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "a\nb\nc\n");
    // Seeing the cluster is not draining it.
    let (status, _, err) = run(args(&["cluster", "drain", "0"], &as_alice), vec![], "").await;
    assert!(!status.success());
    assert!(err.contains("may not ClusterAction the cluster"), "{err}");

    // Users and ACLs through the broker: as the administrator, not as alice.
    let carol_pw = dir.path().join("carol.pw");
    std::fs::write(&carol_pw, "carol-secret\n").expect("password file");
    let carol_pw = carol_pw.to_str().expect("utf-8 path");
    let alice_env = vec![
        ("STRATA_USER".to_owned(), "alice".to_owned()),
        ("STRATA_PASSWORD".to_owned(), "alice-secret".to_owned()),
    ];
    let (status, _, err) = run(
        args(
            &["user", "add", "mallory", "--password-file", carol_pw],
            &[],
        ),
        alice_env.clone(),
        "",
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("may not Alter the cluster"), "{err}");
    for cmd in [
        vec!["user", "add", "carol", "--password-file", carol_pw],
        vec![
            "acl",
            "add",
            "--allow",
            "User:carol",
            "--operation",
            "read",
            "--topic",
            "orders",
        ],
    ] {
        let (status, _, err) = run(args(&cmd, &[]), admin_env.to_vec(), "").await;
        assert!(status.success(), "{cmd:?}: {err}");
    }
    let (status, out, err) = run(
        args(&["acl", "list", "--principal", "User:carol"], &[]),
        admin_env.to_vec(),
        "",
    )
    .await;
    assert!(status.success() && out.contains("User:carol"), "{out}{err}");
    let (status, _, err) = run(
        args(&["acl", "remove", "--principal", "User:carol"], &as_alice),
        vec![],
        "",
    )
    .await;
    assert!(
        !status.success() && err.contains("may not Alter the cluster"),
        "{err}"
    );
    let (status, out, err) = run(
        args(
            &[
                "consume",
                "orders",
                "--partition",
                "0",
                "--from-beginning",
                "-n",
                "3",
                "--timeout",
                "20s",
            ],
            &["--user", "carol", "--password-file", carol_pw],
        ),
        vec![],
        "",
    )
    .await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "a\nb\nc\n");

    // Nothing the refusals touched changed: the topic is there, the broker serves.
    let (status, out, err) = run(args(&["topic", "list"], &[]), admin_env.to_vec(), "").await;
    assert!(status.success() && out.contains("orders"), "{out}{err}");
    let (_, metrics) = http_get(&broker.http_url(), "/metrics")
        .await
        .expect("metrics");
    assert!(metrics.contains("strata_draining 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_call_each_other_as_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b0, store) = secured_broker(dir.path()).await;
    let mut b1 = BrokerProcess::start(
        &dir.path().join("broker1"),
        BrokerOptions {
            broker_id: 1,
            store: Some(store.clone()),
            args: vec!["--auth".into(), "--super-user".into(), "admin".into()],
            ..BrokerOptions::default()
        },
    )
    .await;
    let admin = [
        ("STRATA_USER".to_owned(), "admin".to_owned()),
        ("STRATA_PASSWORD".to_owned(), "admin-secret".to_owned()),
    ];
    let url = b0.url();
    let strata = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend(["--broker".to_owned(), url.clone()]);
        let env = admin.to_vec();
        async move {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            run_cli_with_env(&args, &env, "", CLI_TIMEOUT).await
        }
    };
    let (status, _, err) = strata(&["topic", "create", "t", "--partitions", "8"]).await;
    assert!(status.success(), "{err}");
    // Both brokers own some partitions: describing the topic asks broker 1
    // over gRPC, as the cluster.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, out, err) = strata(&["topic", "describe", "t"]).await;
        assert!(status.success(), "{err}");
        let owners: std::collections::BTreeSet<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        if owners.contains("0") && owners.contains("1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!b1.log().contains("gRPC call refused"), "{}", b1.log());
    // A drain asked of broker 0 for broker 1 is forwarded as the cluster.
    let (status, out, err) = strata(&["cluster", "drain", "1", "--wait", "--timeout", "60s"]).await;
    assert!(status.success(), "{out}{err}");
    let exit = b1.wait_exit(Duration::from_secs(60), "drained").await;
    assert!(exit.success(), "{}", b1.log());
    assert!(!b0.log().contains("gRPC call refused"), "{}", b0.log());
}

/// A consumer subscribed by pattern gets only the topics its user may
/// describe, as in Kafka (a pattern must not reveal or hand out topics);
/// a topic allowed later joins its assignment within a heartbeat or two.
/// A subscription that names a topic the user may not describe is
/// refused with what to grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_gives_a_consumer_only_the_topics_its_user_may_describe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, store) = secured_broker(dir.path()).await;
    let url = broker.url();
    let as_user = |user: &str, password: &str| {
        ConnectOptions::default().with_credentials(Credentials::new(user, password))
    };
    let as_admin = as_user("admin", "admin-secret");
    let admin = Admin::connect_with(&url, &as_admin).await.expect("admin");
    let producer = Producer::connect(
        &url,
        ProducerConfig {
            connection: as_admin.clone(),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    for topic in ["metrics-cpu", "metrics-secret", "billing"] {
        admin
            .create_topic(topic, 1, TopicSettings::default())
            .await
            .expect("create topic");
        for i in 0..5 {
            producer
                .send_and_wait(ProducerRecord::new(topic, format!("{topic}-{i}")))
                .await
                .expect("produce");
        }
    }
    allow_alice(&store, "read", &["--group", "dash"]).await;
    allow_alice(&store, "read", &["--topic", "metrics-cpu"]).await;
    // The broker follows the ACL chain every heartbeat interval.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        session_timeout: Duration::from_secs(10),
        connection: as_user("alice", "alice-secret"),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(&url, config.clone())
        .await
        .expect("connect");
    consumer
        .subscribe_pattern("metrics-.*", "dash")
        .await
        .expect("subscribe");
    assert_eq!(
        next_values(&mut consumer, 5).await,
        (0..5)
            .map(|i| format!("metrics-cpu-{i}"))
            .collect::<Vec<_>>()
    );
    let held = |admin: Admin| async move {
        let d = admin.describe_group("dash").await.expect("describe");
        let mut held: Vec<String> = d
            .members
            .iter()
            .flat_map(|m| m.assignment.iter().map(|t| t.topic.clone()))
            .collect();
        held.sort();
        held
    };
    assert_eq!(
        held(admin.clone()).await,
        ["metrics-cpu"],
        "metrics-secret matches, but alice may not describe it"
    );

    // Allowed now: the group's coordinator sees the ACL change and gives
    // the topic to alice's consumer.
    allow_alice(&store, "read", &["--topic", "metrics-secret"]).await;
    assert_eq!(
        next_values(&mut consumer, 5).await,
        (0..5)
            .map(|i| format!("metrics-secret-{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(held(admin.clone()).await, ["metrics-cpu", "metrics-secret"]);
    consumer.close().await.expect("close");

    // By name, a topic alice may not describe: refused, saying what to
    // grant (and the group is left as it was).
    let mut named = Consumer::connect(&url, config).await.expect("connect");
    let e = named
        .subscribe(&["billing"], "dash")
        .await
        .expect_err("the coordinator refuses the subscription");
    assert_eq!(
        e.reason(),
        Some(ErrorReason::TopicAuthorizationFailed),
        "{e}"
    );
    assert!(
        e.to_string().contains("may not Describe topic billing")
            && e.to_string().contains("strata acl add"),
        "{e}"
    );
    named.close().await.expect("close");
    let d = admin.describe_group("dash").await.expect("describe");
    assert!(d.members.is_empty(), "nobody joined: {d:?}");
}

/// The values of the next `n` records `consumer` receives, in order of
/// arrival.
async fn next_values(consumer: &mut Consumer, n: usize) -> Vec<String> {
    let mut values = Vec::new();
    while values.len() < n {
        let r = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records: {values:?}", values.len()))
            .expect("an item")
            .expect("a record");
        values.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
    }
    values
}
