//! Authentication and ACLs on real `strata serve` processes (issue #15):
//! users and ACLs created with the CLI in the bucket, Kafka clients
//! authenticating with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), and
//! every refusal a clear Kafka error that changes nothing.
//!
//! The Kafka tests skip (with a message) when no Python with both Kafka
//! clients is found; see `strata_tests::python`.

use std::time::Duration;

use strata_tests::broker::{BrokerOptions, BrokerProcess, http_get, run_cli};
use strata_tests::python::kafka_clients;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `strata args...`; panics with its output unless it succeeds.
async fn cli_ok(args: &[&str], stdin: &str) -> String {
    let (status, out, err) = run_cli(args, stdin, CLI_TIMEOUT).await;
    assert!(status.success(), "strata {args:?} failed: {out}\n{err}");
    out
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
        cli_ok(
            &[
                "acl",
                "add",
                "--allow",
                "User:alice",
                "--operation",
                op,
                "--topic",
                "orders",
                "--store",
                &store,
            ],
            "",
        )
        .await;
    }
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
    let why = v["py_wrong_password_log"].to_string();
    assert!(
        why.contains("SaslAuthenticationFailed") && why.contains("invalid user name or password"),
        "{why}"
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
