//! Kafka clients against real `strata serve` processes (issue #12):
//! kafka-python and confluent-kafka (librdkafka) produce and consume
//! through the Kafka listener, and what one front end writes the other
//! reads at the same offsets with the same keys, headers and timestamps.
//!
//! Skipped (with a message) when no Python with both clients is found; see
//! `strata_tests::python`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use strata_client::{Admin, Producer, ProducerConfig, ProducerRecord, TopicSettings};
use strata_tests::broker::{BrokerOptions, BrokerProcess, run_cli};
use strata_tests::cluster::ClusterHarness;
use strata_tests::python::kafka_clients;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_and_consumes_on_a_default_broker_and_the_native_side_agrees() {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), BrokerOptions::default()).await;
    let count = 300;

    // The topic does not exist: the producer's metadata request creates it
    // (auto.create.topics.enable, one partition), as on a Kafka broker.
    let out = python
        .run(
            "kafka_python_roundtrip.py",
            &[
                broker.kafka_addr(),
                "events",
                &count.to_string(),
                "example_group",
            ],
            SCRIPT_TIMEOUT,
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("script output");
    let acked = v["acked"].as_array().expect("acked");
    let consumed = v["consumed"].as_array().expect("consumed");
    assert_eq!(acked.len(), count);
    // One partition: offsets 0..count in send order.
    for (i, a) in acked.iter().enumerate() {
        assert_eq!(a[0], 0, "auto-created topics have one partition");
        assert_eq!(a[1], i as i64, "acked offsets are dense and in order");
    }
    assert_eq!(consumed.len(), count, "every acked record is consumed");
    for (i, c) in consumed.iter().enumerate() {
        assert_eq!(c[1], i as i64);
        assert_eq!(c[2], format!("k{}", i % 5));
        assert_eq!(c[3], format!("value-{i}"));
        assert_eq!(c[4], 1_700_000_000_000i64 + i as i64);
        assert_eq!(c[5], serde_json::json!([["seq", i.to_string()]]));
    }

    // The Kafka group's commit is the group's committed offset for the
    // native tools too.
    let (status, stdout, stderr) = run_cli(
        &[
            "group",
            "describe",
            "example_group",
            "--broker",
            &broker.url(),
        ],
        "",
        Duration::from_secs(60),
    )
    .await;
    assert!(status.success(), "strata group describe failed: {stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("events "))
        .unwrap_or_else(|| panic!("no row for events:\n{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..5], ["0", "300", "300", "0"], "{stdout}");

    // The native CLI reads the same records at the same offsets.
    let (status, stdout, stderr) = run_cli(
        &[
            "consume",
            "events",
            "--broker",
            &broker.url(),
            "--from-beginning",
            "-n",
            "3",
            "--property",
            "print.timestamp=true",
            "--property",
            "print.offset=true",
            "--property",
            "print.headers=true",
            "--property",
            "print.key=true",
        ],
        "",
        Duration::from_secs(60),
    )
    .await;
    assert!(status.success(), "strata consume failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "CreateTime:1700000000000\tOffset:0\tseq:0\tk0\tvalue-0",
            "CreateTime:1700000000001\tOffset:1\tseq:1\tk1\tvalue-1",
            "CreateTime:1700000000002\tOffset:2\tseq:2\tk2\tvalue-2",
        ]
    );

    // And the other way round: a record from the native producer is read
    // by kafka-python after the ones it wrote, with its key and header.
    let producer = Producer::connect(&broker.url(), ProducerConfig::default())
        .await
        .expect("producer");
    let md = producer
        .send_and_wait(
            ProducerRecord::new("events", "from-native")
                .key("native-key")
                .header("origin", "grpc")
                .timestamp(1_750_000_000_000),
        )
        .await
        .expect("native produce");
    assert_eq!(md.offset, count as i64);
    let out = python
        .run(
            "confluent_read.py",
            &[broker.kafka_addr(), "events", "1"],
            SCRIPT_TIMEOUT,
        )
        .await;
    let last: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("records")).expect("json");
    assert_eq!(last["o"], count as i64);
    assert_eq!(last["k"], "native-key");
    assert_eq!(last["v"], "from-native");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_idempotent_producer_rides_through_kill9_exactly_once_in_order() {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(&dir.path().join("b"), BrokerOptions::default()).await;
    let admin = Admin::connect(&broker.url()).await.expect("admin");
    admin
        .create_topic("orders", 4, TopicSettings::default())
        .await
        .expect("create topic");
    let count = 6000;
    let acks_file = dir.path().join("acks.jsonl");
    let acks_path = acks_file.to_str().expect("utf-8 path").to_owned();
    let mut producer = python.spawn(
        "confluent_idempotent.py",
        &[
            broker.kafka_addr(),
            "orders",
            &count.to_string(),
            &acks_path,
        ],
    );

    // Kill the broker mid-stream, twice, and bring it back on the same ports.
    for _ in 0..2 {
        let seen = wait_for_lines(&acks_file, 1000).await;
        assert!(seen, "the producer made no progress:\n{}", broker.log());
        broker.kill().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        broker.restart().await;
    }
    let status = tokio::time::timeout(SCRIPT_TIMEOUT, producer.wait())
        .await
        .expect("the producer finishes")
        .expect("wait");
    assert!(status.success(), "producer failed");

    check_exactly_once_in_order(&python, broker.kafka_addr(), "orders", 4, &acks_file, count).await;
}

/// Checks what `confluent_idempotent.py` reported in `acks_file` against
/// what the topic holds: every one of `count` records acked exactly once,
/// at its acked offset, dense offsets, and per key in send order.
async fn check_exactly_once_in_order(
    python: &strata_tests::python::Python,
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    acks_file: &std::path::Path,
    count: usize,
) {
    let text = std::fs::read_to_string(acks_file).expect("acks");
    let mut acked: HashMap<i64, (i64, i64)> = HashMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        if let Some(e) = v.get("error") {
            panic!("a record failed: {e}");
        }
        if let (Some(i), Some(p), Some(o)) = (v["i"].as_i64(), v["p"].as_i64(), v["o"].as_i64()) {
            assert!(acked.insert(i, (p, o)).is_none(), "record {i} acked twice");
        }
    }
    assert_eq!(
        acked.len(),
        count,
        "every record is acked (message.timeout.ms is 120 s)"
    );
    let out = python
        .run(
            "confluent_read.py",
            &[bootstrap, topic, &partitions.to_string()],
            SCRIPT_TIMEOUT,
        )
        .await;
    let mut by_offset: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(v.get("error").is_none(), "consumer error: {line}");
        let i: i64 = v["v"].as_str().expect("value")[2..].parse().expect("i");
        let p = v["p"].as_i64().expect("p");
        let o = v["o"].as_i64().expect("o");
        assert!(
            by_offset.insert((p, o), i).is_none(),
            "offset {p}/{o} read twice"
        );
    }
    assert_eq!(by_offset.len(), count, "no duplicates, nothing lost");
    for (i, (p, o)) in &acked {
        assert_eq!(
            by_offset.get(&(*p, *o)),
            Some(i),
            "record {i} is not at its acked offset {p}/{o}"
        );
    }
    let mut last_i_per_key: HashMap<i64, i64> = HashMap::new();
    let mut next_offset: HashMap<i64, i64> = HashMap::new();
    for ((p, o), i) in &by_offset {
        let expected = next_offset.entry(*p).or_insert(0);
        assert_eq!(o, expected, "offset gap in partition {p}");
        *expected += 1;
        let last = last_i_per_key.entry(i % 16).or_insert(-1);
        assert!(*last < *i, "key {} out of order: {i} after {last}", i % 16);
        *last = *i;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_ride_through_a_partition_move_and_a_broker_kill9_on_three_brokers() {
    ride_through_a_move_and_a_kill9(1).await;
}

/// The same with each broker shown to librdkafka as four Kafka node ids
/// (`kafka.node_ids_per_broker = 4`; the test above sets 1, the default):
/// leaders spread over a broker's node ids follow a move and a restart
/// like plain ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_ride_through_a_move_and_a_kill9_with_four_node_ids_per_broker() {
    ride_through_a_move_and_a_kill9(4).await;
}

async fn ride_through_a_move_and_a_kill9(node_ids_per_broker: u32) {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let env = vec![(
        "STRATA_KAFKA__NODE_IDS_PER_BROKER".to_owned(),
        node_ids_per_broker.to_string(),
    )];
    let mut cluster = ClusterHarness::on_files_with(3, env).await;
    let admin = cluster.admin().await;
    admin
        .create_topic("ride", 4, TopicSettings::default())
        .await
        .expect("create topic");
    let bootstrap = cluster
        .running()
        .iter()
        .map(|id| cluster.broker(*id).kafka_addr().to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().expect("tempdir");
    let acks_file = dir.path().join("acks.jsonl");
    let out = dir.path().join("consumed.jsonl");
    let count = 6000;
    let mut producer = python.spawn(
        "confluent_idempotent.py",
        &[
            &bootstrap,
            "ride",
            &count.to_string(),
            acks_file.to_str().expect("utf-8"),
        ],
    );
    let member = Member::start_on(
        &python,
        &bootstrap,
        ("ride", "riders", Protocol::Classic),
        "m1",
        &out,
    );

    // Move partition 0 to another broker mid-stream.
    assert!(wait_for_lines(&acks_file, 1000).await, "no progress");
    let status = cluster.status().await.expect("status");
    let owner = status
        .partitions
        .iter()
        .find(|p| p.topic == "ride" && p.partition == 0)
        .and_then(|p| p.broker_id)
        .expect("ride/0 assigned");
    let to = if owner == 3 { 2 } else { 3 };
    cluster.move_partition(1, "ride", 0, to).await;

    // Then kill -9 a broker other than the first (the tests' bootstrap
    // anchor) and bring it back.
    assert!(
        wait_for_lines(&acks_file, 1000).await,
        "no progress after the move"
    );
    cluster.kill(2).await;
    assert!(
        wait_for_lines(&acks_file, 1000).await,
        "no progress after the kill"
    );
    cluster.restart(2).await;
    let status = tokio::time::timeout(SCRIPT_TIMEOUT, producer.wait())
        .await
        .expect("the producer finishes")
        .expect("wait");
    assert!(status.success(), "producer failed");
    check_exactly_once_in_order(&python, &bootstrap, "ride", 4, &acks_file, count).await;

    // The group member read every record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (seen, _) = consumed(&out);
        let values: std::collections::HashSet<&str> = seen.values().map(String::as_str).collect();
        let missing = (0..count)
            .filter(|i| !values.contains(format!("v-{i}").as_str()))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group member is missing {missing} records"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    member.stop().await;
}

/// Kafka's two consumer-group protocols (librdkafka's `group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// JoinGroup/SyncGroup, client-side assignment.
    Classic,
    /// KIP-848's ConsumerGroupHeartbeat, server-side assignment.
    Consumer,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Classic => "classic",
            Protocol::Consumer => "consumer",
        }
    }
}

/// One `confluent_member.py` process.
struct Member {
    name: String,
    child: tokio::process::Child,
}

impl Member {
    /// A member of group `workers` on topic `jobs`.
    fn start(
        python: &strata_tests::python::Python,
        bootstrap: &str,
        protocol: Protocol,
        name: &str,
        out: &std::path::Path,
    ) -> Member {
        Self::start_on(python, bootstrap, ("jobs", "workers", protocol), name, out)
    }

    /// A member of `(topic, group, protocol)`.
    fn start_on(
        python: &strata_tests::python::Python,
        bootstrap: &str,
        on: (&str, &str, Protocol),
        name: &str,
        out: &std::path::Path,
    ) -> Member {
        Self::start_asking(python, bootstrap, on, None, name, out)
    }

    /// A member of `(topic, group, protocol)` that asks for the
    /// server-side `assignor`, if any.
    fn start_asking(
        python: &strata_tests::python::Python,
        bootstrap: &str,
        (topic, group, protocol): (&str, &str, Protocol),
        assignor: Option<&str>,
        name: &str,
        out: &std::path::Path,
    ) -> Member {
        let out = out.to_str().expect("utf-8 path");
        let mut args = vec![bootstrap, topic, group, name, out, protocol.name()];
        args.extend(assignor);
        let child = python.spawn("confluent_member.py", &args);
        Member {
            name: name.to_owned(),
            child,
        }
    }

    /// SIGTERM: commit, leave the group, exit 0.
    async fn stop(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("member {} did not leave within 60 s", self.name))
            .expect("wait");
        assert!(exit.success(), "member {} exited with {exit}", self.name);
    }
}

/// Records (`partition`, `offset`) → values the members printed, and the
/// errors they reported.
fn consumed(path: &std::path::Path) -> (HashMap<(i64, i64), String>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = HashMap::new();
    let mut errors = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        if let (Some(p), Some(o), Some(val)) = (v["p"].as_i64(), v["o"].as_i64(), v["v"].as_str()) {
            out.insert((p, o), val.to_owned());
        }
        if v.get("error").is_some() || v.get("commit_error").is_some() {
            errors.push(line.to_owned());
        }
    }
    (out, errors)
}

/// The group's committed offset per partition, from `strata group describe`.
async fn committed(broker: &BrokerProcess, group: &str) -> BTreeMap<i64, i64> {
    let (status, stdout, stderr) = run_cli(
        &["group", "describe", group, "--broker", &broker.url()],
        "",
        Duration::from_secs(60),
    )
    .await;
    assert!(status.success(), "strata group describe failed: {stderr}");
    stdout
        .lines()
        .filter(|l| l.starts_with("jobs "))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (
                cols[1].parse().expect("partition"),
                cols[2].parse().unwrap_or(-1),
            )
        })
        .collect()
}

/// Kafka's classic protocol (JoinGroup/SyncGroup): its last stable
/// generation is persisted, so membership survives the coordinator's kill
/// -9 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_consumer_group_members_join_and_leave_and_commits_survive_kill9() {
    group_members_join_and_leave(Protocol::Classic).await;
}

/// The same over KIP-848's consumer protocol (`group.protocol=consumer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_consumer_group_members_join_and_leave_and_membership_survives_kill9() {
    group_members_join_and_leave(Protocol::Consumer).await;
}

/// Four members of group `workers` come and go while records are produced
/// to `jobs`: every acked record is consumed; after a kill -9 of the
/// coordinator the members keep their partitions without a rebalance;
/// committed offsets survive another kill -9, and a member started after
/// it resumes at them.
async fn group_members_join_and_leave(protocol: Protocol) {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(&dir.path().join("b"), BrokerOptions::default()).await;
    let admin = Admin::connect(&broker.url()).await.expect("admin");
    admin
        .create_topic("jobs", 6, TopicSettings::default())
        .await
        .expect("create topic");
    let producer = Producer::connect(&broker.url(), ProducerConfig::default())
        .await
        .expect("producer");
    let out = dir.path().join("consumed.jsonl");
    let bootstrap = broker.kafka_addr().to_owned();

    // Produce for a while; members come and go meanwhile.
    let total = 3000;
    let producing = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut acked = HashMap::new();
            for i in 0..total {
                let md = producer
                    .send_and_wait(
                        ProducerRecord::new("jobs", i.to_string()).key(format!("k{}", i % 31)),
                    )
                    .await
                    .expect("produce");
                acked.insert((i64::from(md.partition), md.offset), i.to_string());
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            acked
        })
    };
    let a = Member::start(&python, &bootstrap, protocol, "a", &out);
    let b = Member::start(&python, &bootstrap, protocol, "b", &out);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = Member::start(&python, &bootstrap, protocol, "c", &out);
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let d = Member::start(&python, &bootstrap, protocol, "d", &out);
    let acked = producing.await.expect("producer task");

    // Every acked record is consumed (at least once) by the group.
    let keys: Vec<(i64, i64)> = acked.keys().copied().collect();
    let seen = wait_consumed(&out, &keys, "acked records", &broker).await;
    for (k, v) in &acked {
        assert_eq!(seen.get(k), Some(v), "record at {k:?}");
    }
    // `strata group describe` shows the Kafka members and what each holds.
    let (status, stdout, stderr) = run_cli(
        &["group", "describe", "workers", "--broker", &broker.url()],
        "",
        Duration::from_secs(60),
    )
    .await;
    assert!(status.success(), "strata group describe failed: {stderr}");
    let clients: BTreeSet<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("jobs "))
        .map(|l| l.split_whitespace().nth(6).unwrap_or("-"))
        .collect();
    let members: BTreeSet<&str> = ["a", "c", "d"].into();
    assert!(
        !clients.is_empty() && clients.is_subset(&members),
        "every partition is held by a live member:\n{stdout}"
    );
    // The group's membership is durable, on either protocol: after a
    // kill -9 of its coordinator the members carry on with what they hold.
    wait_until_stable(&broker, "workers").await;
    if protocol == Protocol::Consumer {
        // Kafka's admin client describes it (ConsumerGroupDescribe): every
        // partition held by one live member.
        let described = describe_group(&python, &bootstrap, "workers").await;
        assert_eq!(
            described["type"], "ConsumerGroupType.CONSUMER",
            "{described}"
        );
        assert_eq!(
            described["state"], "ConsumerGroupState.STABLE",
            "{described}"
        );
        let mut held = Vec::new();
        for m in described["members"].as_array().expect("members") {
            assert!(
                ["a", "c", "d"].contains(&m["client_id"].as_str().unwrap_or_default()),
                "{described}"
            );
            for tp in m["partitions"].as_array().expect("partitions") {
                held.push(tp[1].as_i64().expect("partition"));
            }
        }
        held.sort_unstable();
        assert_eq!(held, (0..6).collect::<Vec<_>>(), "{described}");
    }
    let changes = assignment_changes(&out);
    broker.kill().await;
    broker.restart().await;
    let after = Producer::connect(&broker.url(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut more = Vec::new();
    for i in 0..300 {
        let md = after
            .send_and_wait(
                ProducerRecord::new("jobs", format!("after-{i}")).key(format!("k{}", i % 31)),
            )
            .await
            .expect("produce after the restart");
        more.push((i64::from(md.partition), md.offset));
    }
    wait_consumed(
        &out,
        &more,
        "records produced after the coordinator's restart",
        &broker,
    )
    .await;
    assert_eq!(
        assignment_changes(&out),
        changes,
        "members' partitions moved across the coordinator's kill -9"
    );
    let acked_after = more;
    for m in [a, c, d] {
        m.stop().await;
    }

    // After the members committed and left, the group's offsets are the
    // log ends; they survive a kill -9 of the coordinator's broker.
    let mut ends: BTreeMap<i64, i64> = BTreeMap::new();
    for (p, o) in acked.keys().chain(&acked_after) {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    assert_eq!(committed(&broker, "workers").await, ends);
    broker.kill().await;
    broker.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let after = committed(&broker, "workers").await;
        if after == ends {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed offsets after kill -9: {after:?}, before: {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A member started now resumes at the committed offsets: it reads
    // only what is produced after them.
    let e = Member::start(&python, broker.kafka_addr(), protocol, "e", &out);
    let fresh = Producer::connect(&broker.url(), ProducerConfig::default())
        .await
        .expect("producer");
    let md = fresh
        .send_and_wait(ProducerRecord::new("jobs", "after-restart").partition(0))
        .await
        .expect("produce");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let mine: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .filter(|v| v["m"] == "e" && v.get("o").is_some())
            .collect();
        if !mine.is_empty() {
            assert_eq!(
                mine.len(),
                1,
                "the new member re-read committed records: {mine:?}"
            );
            assert_eq!(mine[0]["v"], "after-restart");
            assert_eq!(mine[0]["o"], md.offset);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new member read nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    e.stop().await;
}

/// KIP-848 pattern subscriptions: librdkafka sends `^events-.*` as the
/// member's SubscribedTopicRegex and the coordinator resolves it. Two
/// members get every matching topic (one created after they subscribed
/// too) and never another; after a kill -9 of the coordinator they keep
/// their partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_pattern_subscription_follows_new_topics_and_survives_kill9() {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, admin) =
        broker_with_topics(dir.path(), &[("events-a", 2), ("other", 1)]).await;
    let producer = Producer::connect(&broker.url(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut expected = produce_n(&producer, "events-a", 40).await;
    produce_n(&producer, "other", 20).await;
    let out = dir.path().join("consumed.jsonl");
    let bootstrap = broker.kafka_addr().to_owned();
    let on = ("^events-.*", "watchers", Protocol::Consumer);
    let x = Member::start_on(&python, &bootstrap, on, "x", &out);
    let y = Member::start_on(&python, &bootstrap, on, "y", &out);
    wait_consumed_by_topic(&out, &expected, "records of events-a", &broker).await;

    admin
        .create_topic("events-b", 3, TopicSettings::default())
        .await
        .expect("create topic");
    expected.extend(produce_n(&producer, "events-b", 60).await);
    wait_consumed_by_topic(
        &out,
        &expected,
        "records of events-b, created after the members subscribed",
        &broker,
    )
    .await;

    wait_until_stable(&broker, "watchers").await;
    let changes = assignment_changes(&out);
    broker.kill().await;
    broker.restart().await;
    let producer = Producer::connect(&broker.url(), ProducerConfig::default())
        .await
        .expect("producer");
    expected.extend(produce_n(&producer, "events-a", 20).await);
    expected.extend(produce_n(&producer, "events-b", 20).await);
    wait_consumed_by_topic(
        &out,
        &expected,
        "records produced after the coordinator's restart",
        &broker,
    )
    .await;
    assert_eq!(
        assignment_changes(&out),
        changes,
        "members' partitions moved across the coordinator's kill -9"
    );
    let seen = consumed_by_topic(&out);
    assert!(
        seen.keys().all(|(t, _, _)| t.starts_with("events-")),
        "a topic the pattern does not match was consumed: {:?}",
        seen.keys()
            .filter(|(t, _, _)| !t.starts_with("events-"))
            .collect::<Vec<_>>()
    );
    x.stop().await;
    y.stop().await;
}

/// KIP-848's `range` assignor (`group.remote.assignor=range`): two members
/// subscribed by pattern to two topics with as many partitions hold the
/// same partition numbers of both (co-partitioned), and Kafka's admin
/// client sees the group's assignor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_range_assignor_co_partitions_topics() {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _admin) =
        broker_with_topics(dir.path(), &[("cp-orders", 6), ("cp-payments", 6)]).await;
    let out = dir.path().join("consumed.jsonl");
    let bootstrap = broker.kafka_addr().to_owned();
    let on = ("^cp-.*", "joiners", Protocol::Consumer);
    let x = Member::start_asking(&python, &bootstrap, on, Some("range"), "x", &out);
    let y = Member::start_asking(&python, &bootstrap, on, Some("range"), "y", &out);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let described = loop {
        let d = describe_group(&python, &bootstrap, "joiners").await;
        let members = d["members"].as_array().map_or(0, Vec::len);
        if d["state"] == "ConsumerGroupState.STABLE" && members == 2 {
            break d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never became stable with two members: {d}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(described["assignor"], "range", "{described}");
    let mut all = Vec::new();
    for m in described["members"].as_array().expect("members") {
        let of = |topic: &str| -> Vec<i64> {
            let mut ps: Vec<i64> = m["partitions"]
                .as_array()
                .expect("partitions")
                .iter()
                .filter(|tp| tp[0] == topic)
                .map(|tp| tp[1].as_i64().expect("partition"))
                .collect();
            ps.sort_unstable();
            ps
        };
        assert_eq!(
            of("cp-orders"),
            of("cp-payments"),
            "not co-partitioned: {described}"
        );
        assert_eq!(of("cp-orders").len(), 3, "{described}");
        all.extend(of("cp-orders"));
    }
    all.sort_unstable();
    assert_eq!(all, (0..6).collect::<Vec<_>>(), "{described}");
    x.stop().await;
    y.stop().await;
}

/// A `strata serve` with defaults in `dir`, with `topics` (name, partitions)
/// created, and an admin client.
async fn broker_with_topics(
    dir: &std::path::Path,
    topics: &[(&str, u32)],
) -> (BrokerProcess, Admin) {
    let broker = BrokerProcess::start(&dir.join("b"), BrokerOptions::default()).await;
    let admin = Admin::connect(&broker.url()).await.expect("admin");
    for (topic, partitions) in topics {
        admin
            .create_topic(topic, *partitions, TopicSettings::default())
            .await
            .expect("create topic");
    }
    (broker, admin)
}

/// Produces `n` records to `topic`; returns where each landed.
async fn produce_n(producer: &Producer, topic: &str, n: usize) -> Vec<(String, i64, i64)> {
    let mut at = Vec::new();
    for i in 0..n {
        let md = producer
            .send_and_wait(ProducerRecord::new(topic, format!("{topic}-{i}")).key(format!("k{i}")))
            .await
            .expect("produce");
        at.push((topic.to_owned(), i64::from(md.partition), md.offset));
    }
    at
}

/// Records (`topic`, `partition`, `offset`) → value the members printed.
fn consumed_by_topic(path: &std::path::Path) -> HashMap<(String, i64, i64), String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            let at = (
                v["t"].as_str()?.to_owned(),
                v["p"].as_i64()?,
                v["o"].as_i64()?,
            );
            Some((at, v["v"].as_str()?.to_owned()))
        })
        .collect()
}

/// Waits up to 90 s until the members logged in `out` have consumed every
/// record at `keys`, failing at once on an error a member reported.
async fn wait_consumed_by_topic(
    out: &std::path::Path,
    keys: &[(String, i64, i64)],
    what: &str,
    broker: &BrokerProcess,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, errors) = consumed(out);
        assert!(errors.is_empty(), "members reported errors: {errors:?}");
        let seen = consumed_by_topic(out);
        let missing = keys.iter().filter(|k| !seen.contains_key(k)).count();
        if missing == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} {what} never consumed:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits up to 90 s until the members logged in `out` have consumed the
/// records at every `(partition, offset)` of `keys` (`what` names them in
/// the failure), failing at once on an error a member reported; returns
/// what they consumed.
async fn wait_consumed(
    out: &std::path::Path,
    keys: &[(i64, i64)],
    what: &str,
    broker: &BrokerProcess,
) -> HashMap<(i64, i64), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (seen, errors) = consumed(out);
        assert!(errors.is_empty(), "members reported errors: {errors:?}");
        let missing = keys.iter().filter(|k| !seen.contains_key(k)).count();
        if missing == 0 {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} {what} never consumed:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The assignment changes members reported (`assigned` / `revoked` lines).
fn assignment_changes(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"assigned\"") || l.contains("\"revoked\""))
        .count()
}

/// Waits until `strata group describe` says `group` is STABLE.
async fn wait_until_stable(broker: &BrokerProcess, group: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, stdout, _) = run_cli(
            &["group", "describe", group, "--broker", &broker.url()],
            "",
            Duration::from_secs(60),
        )
        .await;
        if status.success() && stdout.contains(" is STABLE") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group} never became stable:\n{stdout}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `path` has `n` more lines than when called.
async fn wait_for_lines(path: &std::path::Path, n: usize) -> bool {
    let count = || {
        std::fs::read_to_string(path)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let start = count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if count() >= start + n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_admin_creates_describes_and_deletes_topics() {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), BrokerOptions::default()).await;
    let out = python
        .run(
            "kafka_python_admin.py",
            &[broker.kafka_addr(), "settings"],
            SCRIPT_TIMEOUT,
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("script output");
    assert_eq!(v["duplicate"], "TopicAlreadyExistsError");
    assert_eq!(v["bad_config"], "InvalidConfigurationError");
    assert_eq!(v["listed"], true);
    assert_eq!(v["configs"]["retention.ms"], "3600000");
    assert_eq!(v["configs"]["cleanup.policy"], "delete");
    assert_eq!(v["altered"]["segment.ms"], "60000", "{v}");
    assert_eq!(v["altered"]["retention.ms"], "3600000", "{v}");
    assert_eq!(v["reset"]["segment.ms"], "60000", "{v}");
    // (kafka-python lists only the settings a topic overrides.)
    assert_eq!(
        v["reset"]["retention.ms"],
        serde_json::Value::Null,
        "back to the default: {v}"
    );
    assert_eq!(v["altered_whole"]["segment.ms"], "60000", "{v}");
    assert_eq!(v["altered_whole"]["retention.ms"], "7200000", "{v}");
    assert_eq!(v["listed_after_delete"], false);
    // The native side agrees: the topic is gone.
    let admin = Admin::connect(&broker.url()).await.expect("admin");
    let topics = admin.list_topics().await.expect("list");
    assert!(!topics.iter().any(|t| t.name == "settings"), "{topics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_admin_alters_settings_and_adds_partitions_under_a_running_topic() {
    let Some(python) = kafka_clients().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), BrokerOptions::default()).await;
    let out = python
        .run(
            "confluent_alter.py",
            &[broker.kafka_addr(), "altered"],
            SCRIPT_TIMEOUT,
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("script output");
    let set = &v["after_set"];
    assert_eq!(
        set["message.timestamp.type"]["value"], "LogAppendTime",
        "{v}"
    );
    assert_eq!(set["retention.ms"]["value"], "86400000", "{v}");
    assert_eq!(set["retention.ms"]["default"], false, "{v}");
    assert_eq!(v["bad_value"], "INVALID_CONFIG", "{v}");
    assert_eq!(v["unknown_topic"], "UNKNOWN_TOPIC_OR_PART", "{v}");
    let deleted = &v["after_delete"];
    assert_eq!(deleted["retention.ms"]["default"], true, "{v}");
    assert_eq!(
        deleted["message.timestamp.type"]["value"], "LogAppendTime",
        "DELETE of one setting leaves the others: {v}"
    );
    assert_eq!(v["shrink"], "INVALID_PARTITIONS", "{v}");
    assert_eq!(v["partitions"], 4, "{v}");
    // The open partition took the new timestamp type: the record produced
    // before keeps its CreateTime, the one after got the broker's clock.
    let records = v["records"].as_array().expect("records");
    assert_eq!(records.len(), 3, "{v}");
    assert_eq!(records[0]["v"], "before");
    assert_eq!(records[0]["ts_type"], 1, "CreateTime: {v}");
    let create_time = v["create_time"].as_i64().expect("create_time");
    assert_eq!(records[0]["ts"], create_time, "{v}");
    assert_eq!(records[1]["v"], "after");
    assert_eq!(records[1]["ts_type"], 2, "LogAppendTime: {v}");
    assert!(
        records[1]["ts"].as_i64().expect("ts") > create_time + 30_000,
        "{v}"
    );
    assert_eq!(records[2]["p"], 3, "the new partition takes records: {v}");

    // The native side sees the same topic.
    let admin = Admin::connect(&broker.url()).await.expect("admin");
    let topics = admin.list_topics().await.expect("list");
    let t = topics.iter().find(|t| t.name == "altered").expect("listed");
    assert_eq!(t.partitions, 4, "{t:?}");
}

/// kcat, when installed (`scripts/test.sh` installs it from the Debian
/// packages where it can).
async fn kcat() -> bool {
    let ok = tokio::process::Command::new("kcat")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: kcat is not installed (apt-get install kcat)");
    }
    ok
}

/// Runs kcat with `args` and `stdin`; returns its stdout.
async fn run_kcat(args: &[&str], stdin: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kcat")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kcat");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("write");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kcat finishes within 60 s")
        .expect("kcat output");
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_produces_and_consumes_with_and_without_a_group() {
    if !kcat().await {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), BrokerOptions::default()).await;
    let b = broker.kafka_addr().to_owned();
    run_kcat(
        &["-b", &b, "-P", "-t", "kc", "-K:"],
        "k1:one\nk2:two\nk3:three\n",
    )
    .await;

    let meta = run_kcat(&["-b", &b, "-L", "-J"], "").await;
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("kcat -L -J");
    let port = b.rsplit_once(':').expect("port").1;
    assert_eq!(meta["brokers"][0]["name"], format!("127.0.0.1:{port}"));
    let topic = meta["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == "kc")
        .expect("kc listed");
    assert_eq!(topic["partitions"][0]["leader"], 0);

    let fmt = "%k=%s@%o\n";
    let plain = run_kcat(
        &[
            "-b",
            &b,
            "-C",
            "-t",
            "kc",
            "-o",
            "beginning",
            "-e",
            "-f",
            fmt,
        ],
        "",
    )
    .await;
    assert_eq!(plain, "k1=one@0\nk2=two@1\nk3=three@2\n");
    let grouped = run_kcat(
        &[
            "-b",
            &b,
            "-G",
            "kcat-group",
            "kc",
            "-o",
            "beginning",
            "-c",
            "3",
            "-f",
            fmt,
        ],
        "",
    )
    .await;
    assert_eq!(grouped, "k1=one@0\nk2=two@1\nk3=three@2\n");
}

/// `group` as confluent-kafka's admin client describes it
/// (`confluent_describe_group.py`: ConsumerGroupDescribe for a
/// consumer-protocol group).
async fn describe_group(
    python: &strata_tests::python::Python,
    bootstrap: &str,
    group: &str,
) -> serde_json::Value {
    let out = python
        .run(
            "confluent_describe_group.py",
            &[bootstrap, group],
            SCRIPT_TIMEOUT,
        )
        .await;
    serde_json::from_str(out.trim()).expect("json")
}
