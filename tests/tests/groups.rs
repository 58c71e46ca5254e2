//! Consumer groups (issue #11) against real `strata serve` processes, on
//! files and (as `s3_*`) on the S3-compatible test server.
//!
//! Members are either in-process [`strata_client::Consumer`]s, whose
//! rebalance listener records which member holds each partition (two at
//! once is a violation), or `strata consume --group` processes, which a
//! test can kill -9 or SIGSTOP. Records are produced by an idempotent,
//! acks=all producer; every test ends by checking that every acknowledged
//! record was processed, and how often.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_client::proto::v1::groups_client::GroupsClient;
use strata_client::proto::v1::{
    CommitOffsetsRequest, DeleteGroupRequest, DescribeGroupRequest, ErrorReason,
    FetchOffsetsRequest, FindCoordinatorRequest, GroupHeartbeatRequest, OffsetCommit,
    TopicPartitions,
};
use strata_client::{
    Admin, Consumer, ConsumerConfig, ErrorInfo, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, RebalanceListener, TopicSettings,
};
use strata_tests::broker::{run_cli, strata_binary};
use strata_tests::cluster::ClusterHarness;
use strata_tests::s3::TestS3;
use strata_tests::workload::{AckLog, Acked, Background, Workload, produce_range, wait_for};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 12;
const RATE: u32 = 300;

/// Who holds each partition, as members' listeners report it.
#[derive(Debug, Default)]
struct Ownership {
    holder: HashMap<u32, String>,
    violations: Vec<String>,
}

/// What members processed: (partition, offset) → how many times, and
/// value ids seen.
#[derive(Debug, Default)]
struct Processed {
    times: HashMap<(u32, i64), u32>,
    values: HashSet<String>,
    by_member: HashMap<String, usize>,
}

type Shared<T> = Arc<Mutex<T>>;

struct Listener {
    name: String,
    owned: Shared<Ownership>,
}

impl RebalanceListener for Listener {
    fn on_assigned(&self, partitions: &[(String, u32)]) {
        let mut o = self.owned.lock();
        for (_, p) in partitions {
            if let Some(other) = o.holder.get(p).cloned() {
                o.violations.push(format!(
                    "{} got partition {p} while {other} holds it",
                    self.name
                ));
            }
            o.holder.insert(*p, self.name.clone());
        }
    }

    fn on_revoked(&self, partitions: &[(String, u32)]) {
        let mut o = self.owned.lock();
        for (_, p) in partitions {
            if o.holder.get(p) == Some(&self.name) {
                o.holder.remove(p);
            }
        }
    }
}

/// An in-process member reading until stopped, then closing (final commit
/// and a clean leave).
struct Member {
    name: String,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn member_config() -> ConsumerConfig {
    ConsumerConfig {
        auto_commit_interval: Duration::from_millis(300),
        session_timeout: Duration::from_secs(10),
        client_id: "groups-test".into(),
        ..ConsumerConfig::default()
    }
}

async fn start_member(
    url: &str,
    group: &str,
    name: &str,
    config: ConsumerConfig,
    owned: Shared<Ownership>,
    processed: Shared<Processed>,
) -> Member {
    let mut consumer = Consumer::connect(url, config)
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}"));
    consumer
        .subscribe(&[TOPIC], group)
        .await
        .unwrap_or_else(|e| panic!("{name} subscribes: {e}"));
    consumer.set_rebalance_listener(Arc::new(Listener {
        name: name.to_owned(),
        owned,
    }));
    let stop = tokio_util::sync::CancellationToken::new();
    let (n, s) = (name.to_owned(), stop.clone());
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                r = consumer.recv() => match r {
                    Some(Ok(rec)) => {
                        let mut p = processed.lock();
                        *p.times.entry((rec.partition, rec.offset)).or_default() += 1;
                        p.values.insert(strata_tests::workload::value_id(rec.value.as_deref().unwrap_or_default()));
                        *p.by_member.entry(n.clone()).or_default() += 1;
                    }
                    Some(Err(e)) => {
                        eprintln!("{n}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    None => break,
                },
                () = s.cancelled() => break,
            }
        }
        if let Err(e) = consumer.close().await {
            eprintln!("{n}: close: {e}");
        }
    });
    Member {
        name: name.to_owned(),
        stop,
        task,
    }
}

impl Member {
    async fn close(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap_or_else(|_| panic!("{} did not close in time", self.name))
            .expect("member task");
    }
}

/// Waits until the listeners report `counts` (member → partitions held).
async fn wait_for_spread(owned: &Shared<Ownership>, members: &[&str], timeout: Duration) {
    let per = PARTITIONS as usize / members.len();
    wait_for(
        &format!("{members:?} to hold about {per} partitions each"),
        timeout,
        || {
            let o = owned.lock();
            o.holder.len() == PARTITIONS as usize
                && members.iter().all(|m| {
                    let n = o.holder.values().filter(|h| h == m).count();
                    n >= per && n <= per + 1
                })
        },
    )
    .await;
}

async fn create_topic(cluster: &ClusterHarness) {
    cluster
        .admin()
        .await
        .create_topic(TOPIC, PARTITIONS, TopicSettings::default())
        .await
        .expect("create topic");
}

fn acked_ids(acked: &AckLog) -> Vec<String> {
    let a = acked.lock();
    (0..a.numbered() * 2)
        .map(|i| format!("v{i}"))
        .filter(|id| a.get(id).is_some())
        .collect()
}

/// Every acknowledged record was processed, and nothing twice.
async fn check_processed_exactly_once(acked: &AckLog, processed: &Shared<Processed>) {
    let ids = acked_ids(acked);
    wait_for(
        "every acknowledged record to be processed",
        Duration::from_secs(30),
        || {
            let p = processed.lock();
            ids.iter().all(|id| p.values.contains(id))
        },
    )
    .await;
    let p = processed.lock();
    let twice: Vec<_> = p.times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "records processed twice after clean hand-overs: {twice:?}"
    );
}

/// Three members over twelve partitions while a producer runs: the
/// partitions spread 4/4/4, never two members hold one, every acknowledged
/// record is processed once (hand-overs commit what was read), and the
/// committed offsets end at the log end.
async fn three_members(cluster: ClusterHarness) {
    create_topic(&cluster).await;
    let url = cluster.client_url().await;
    let acked = Acked::shared();
    let producer = Background::start(
        cluster.producer(ProducerConfig::default()).await,
        Workload::round_robin(TOPIC, PARTITIONS, RATE),
        0,
        acked.clone(),
    );
    let owned: Shared<Ownership> = Arc::default();
    let processed: Shared<Processed> = Arc::default();
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        members.push(
            start_member(
                &url,
                "billing",
                name,
                member_config(),
                owned.clone(),
                processed.clone(),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    wait_for_spread(&owned, &["a", "b", "c"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, failed) = producer.finish().await;
    assert_eq!(failed, 0);
    check_processed_exactly_once(&acked, &processed).await;
    let admin = cluster.admin().await;
    let d = admin.describe_group("billing").await.expect("describe");
    assert_eq!(d.state, "STABLE", "{d:?}");
    assert_eq!(d.members.len(), 3);
    // A stable group costs no store request: heartbeats append nothing
    // (once the last positions are committed, auto-commit has nothing to
    // send either).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let appended = || async {
        admin
            .describe_topic("__consumer_offsets")
            .await
            .expect("describe __consumer_offsets")
            .partition_details
            .iter()
            .map(|p| p.high_watermark)
            .sum::<i64>()
    };
    let before = appended().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        appended().await,
        before,
        "heartbeats of a stable group wrote records"
    );
    // The coordinator exports the lag of every partition, its own or not.
    let metrics = cluster.broker(d.coordinator_id).http_url();
    wait_for_async(
        "lag series for every partition",
        Duration::from_secs(20),
        || async {
            let body = strata_tests::broker::http_get(&metrics, "/metrics")
                .await
                .map(|(_, b)| b)
                .unwrap_or_default();
            body.lines()
                .filter(|l| l.starts_with("strata_group_lag{group=\"billing\""))
                .filter(|l| l.ends_with(" 0"))
                .count()
                == PARTITIONS as usize
        },
    )
    .await;
    for m in members {
        m.close().await;
    }
    let violations = owned.lock().violations.clone();
    assert!(violations.is_empty(), "{violations:?}");
    // Closing committed every position: the offsets are the log ends.
    let d = admin.describe_group("billing").await.expect("describe");
    assert_eq!(d.state, "EMPTY");
    let ends: HashMap<u32, i64> = admin
        .describe_topic(TOPIC)
        .await
        .expect("describe topic")
        .partition_details
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    for o in &d.offsets {
        assert_eq!(Some(&o.offset), ends.get(&o.partition), "{o:?}");
    }
    assert_eq!(d.offsets.len(), PARTITIONS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_twelve_partitions_while_producing() {
    three_members(ClusterHarness::on_files(2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_three_members_share_twelve_partitions_while_producing() {
    let s3 = TestS3::shared().await;
    three_members(ClusterHarness::on_s3(2, s3).await).await;
}

/// Members scaled 1 → 4 → 1 while producing, with partitions of the topic
/// and the group's coordinator partition moved between brokers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_scale_one_to_four_to_one_while_partitions_move() {
    let cluster = ClusterHarness::on_files(2).await;
    create_topic(&cluster).await;
    let url = cluster.client_url().await;
    let acked = Acked::shared();
    let producer = Background::start(
        cluster.producer(ProducerConfig::default()).await,
        Workload::round_robin(TOPIC, PARTITIONS, RATE),
        0,
        acked.clone(),
    );
    let owned: Shared<Ownership> = Arc::default();
    let processed: Shared<Processed> = Arc::default();
    let start = |name: &'static str| {
        start_member(
            &url,
            "scaling",
            name,
            member_config(),
            owned.clone(),
            processed.clone(),
        )
    };
    let a = start("a").await;
    wait_for_spread(&owned, &["a"], Duration::from_secs(30)).await;
    let mut others = Vec::new();
    for name in ["b", "c", "d"] {
        others.push(start(name).await);
    }
    wait_for_spread(&owned, &["a", "b", "c", "d"], Duration::from_secs(30)).await;
    // Move two partitions of the topic and the group's coordinator.
    let coordinator = find_coordinator(&url, "scaling").await;
    let status = cluster.status().await.expect("status");
    let owner_of = |topic: &str, p: u32| {
        status
            .partitions
            .iter()
            .find(|x| x.topic == topic && x.partition == p)
            .and_then(|x| x.broker_id)
            .expect("assigned")
    };
    for (topic, p) in [
        (TOPIC, 0),
        (TOPIC, 5),
        ("__consumer_offsets", coordinator.partition),
    ] {
        let to = if owner_of(topic, p) == 1 { 2 } else { 1 };
        cluster.move_partition(1, topic, p, to).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for m in others {
        m.close().await;
    }
    wait_for_spread(&owned, &["a"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, failed) = producer.finish().await;
    assert_eq!(failed, 0);
    check_processed_exactly_once(&acked, &processed).await;
    a.close().await;
    let o = owned.lock();
    assert!(o.violations.is_empty(), "{:?}", o.violations);
    let p = processed.lock();
    for m in ["a", "b", "c", "d"] {
        assert!(
            p.by_member.get(m).copied().unwrap_or(0) > 0,
            "{m} processed nothing: {:?}",
            p.by_member
        );
    }
}

async fn find_coordinator(
    url: &str,
    group: &str,
) -> strata_client::proto::v1::FindCoordinatorResponse {
    let first = url.split(',').next().expect("a url").to_owned();
    let mut client = groups_client(&first);
    client
        .find_coordinator(FindCoordinatorRequest {
            group_id: group.to_owned(),
        })
        .await
        .expect("find coordinator")
        .into_inner()
}

/// kill -9 of the coordinator's broker under a steady commit load: no
/// acknowledged commit is lost or goes backwards, and the members carry on
/// once the coordinator's partition is served again.
async fn coordinator_kill9(mut cluster: ClusterHarness) {
    create_topic(&cluster).await;
    let url = cluster.client_url().await;
    // A group whose coordinator is not broker 1 (the tests never fault
    // the first bootstrap broker).
    let mut group = String::new();
    for i in 0..64 {
        let g = format!("payments-{i}");
        if find_coordinator(&url, &g).await.broker_id != 1 {
            group = g;
            break;
        }
    }
    let victim = find_coordinator(&url, &group).await.broker_id;
    let acked = Acked::shared();
    let producer = Background::start(
        cluster.producer(ProducerConfig::default()).await,
        Workload::round_robin(TOPIC, PARTITIONS, RATE),
        0,
        acked.clone(),
    );
    // Two members committing after every record they read.
    let commits: Shared<BTreeMap<u32, i64>> = Arc::default();
    let progress: Shared<Vec<Instant>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for name in ["x", "y"] {
        let mut consumer = Consumer::connect(
            &url,
            ConsumerConfig {
                auto_commit: false,
                session_timeout: Duration::from_secs(20),
                ..member_config()
            },
        )
        .await
        .expect("connect");
        consumer
            .subscribe(&[TOPIC], &group)
            .await
            .expect("subscribe");
        let (commits, progress, stop) = (commits.clone(), progress.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let rec = tokio::select! {
                    r = consumer.recv() => r,
                    () = stop.cancelled() => break,
                };
                let Some(Ok(rec)) = rec else { continue };
                let entry = (TOPIC.to_owned(), rec.partition, rec.offset + 1);
                match consumer.commit_offsets(&[entry]).await {
                    Ok(()) => {
                        let mut c = commits.lock();
                        let e = c.entry(rec.partition).or_default();
                        *e = (*e).max(rec.offset + 1);
                        progress.lock().push(Instant::now());
                    }
                    Err(e) => eprintln!("{name}: commit failed: {e}"),
                }
            }
            drop(consumer);
        }));
    }
    wait_for("commits to flow", Duration::from_secs(30), || {
        progress.lock().len() > 200
    })
    .await;
    let killed_at = Instant::now();
    cluster.kill(victim).await;
    wait_for(
        "commits to flow again after the coordinator's broker died",
        Duration::from_secs(60),
        || progress.lock().iter().filter(|t| **t > killed_at).count() > 200,
    )
    .await;
    let first_after = progress
        .lock()
        .iter()
        .copied()
        .find(|t| *t > killed_at)
        .expect("a commit after the kill");
    eprintln!(
        "coordinator failover: commits resumed {:?} after kill -9",
        first_after - killed_at
    );
    stop.cancel();
    for t in tasks {
        t.await.expect("member task");
    }
    producer.finish().await;
    let admin = Admin::connect(&cluster.client_url().await)
        .await
        .expect("admin");
    let d = admin.describe_group(&group).await.expect("describe");
    let committed: BTreeMap<u32, i64> = d.offsets.iter().map(|o| (o.partition, o.offset)).collect();
    for (p, acked) in commits.lock().iter() {
        let now = committed.get(p).copied().unwrap_or(-1);
        assert!(
            now >= *acked,
            "partition {p}: an acknowledged commit of {acked} was lost (committed now: {now})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_kill9_loses_no_committed_offset() {
    coordinator_kill9(ClusterHarness::on_files(3).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_coordinator_kill9_loses_no_committed_offset() {
    let s3 = TestS3::shared().await;
    coordinator_kill9(ClusterHarness::on_s3(3, s3).await).await;
}

/// A `strata consume --group` process.
struct CliMember {
    child: tokio::process::Child,
    out: PathBuf,
    err: PathBuf,
}

impl CliMember {
    fn start(dir: &Path, name: &str, url: &str, group: &str, session_ms: u64) -> CliMember {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let child = tokio::process::Command::new(strata_binary())
            .args([
                "consume",
                TOPIC,
                "--group",
                group,
                "--from-beginning",
                "--property",
                "print.partition=true",
                "--property",
                "print.offset=true",
                "--consumer-property",
                &format!("session.timeout.ms={session_ms}"),
                "--consumer-property",
                "auto.commit.interval.ms=200",
                "--consumer-property",
                &format!("client.id={name}"),
                "--broker",
                url,
            ])
            .env("RUST_LOG", "strata_client=info")
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&err).expect("err file"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn strata consume");
        CliMember { child, out, err }
    }

    fn pid(&self) -> String {
        self.child.id().expect("running").to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Value ids printed, with (partition, offset).
    fn printed(&self) -> Vec<(u32, i64, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let p = f.next()?.strip_prefix("Partition:")?.parse().ok()?;
                let o = f.next()?.strip_prefix("Offset:")?.parse().ok()?;
                Some((p, o, f.next()?.to_owned()))
            })
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

/// Waits until the group has `n` members holding all partitions.
async fn wait_for_members(admin: &Admin, group: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(d) = admin.describe_group(group).await {
            let held: usize = d
                .members
                .iter()
                .flat_map(|m| m.assignment.iter())
                .map(|t| t.partitions.len())
                .sum();
            if d.members.len() == n && held == PARTITIONS as usize && d.state == "STABLE" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} members holding every partition: {d:?}"
            );
        }
        assert!(Instant::now() < deadline, "timed out describing {group}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kill -9 of a member process: after its session times out, its
/// partitions go to the others and every acknowledged record is printed by
/// some member (duplicates only where the dead member had not committed).
/// Then a SIGSTOPped member resumed after its session expired cannot
/// commit: it is told it lost its partitions, and committed offsets never
/// go backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_frozen_members_lose_their_partitions_and_nothing_else() {
    killed_and_frozen(ClusterHarness::on_files(2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_killed_and_frozen_members_lose_their_partitions_and_nothing_else() {
    let s3 = TestS3::shared().await;
    killed_and_frozen(ClusterHarness::on_s3(2, s3).await).await;
}

async fn killed_and_frozen(cluster: ClusterHarness) {
    create_topic(&cluster).await;
    let url = cluster.client_url().await;
    let admin = cluster.admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let session_ms = 3_000;
    let members: Vec<CliMember> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| CliMember::start(dir.path(), n, &url, "printers", session_ms))
        .collect();
    wait_for_members(&admin, "printers", 3, Duration::from_secs(60)).await;
    let acked = Acked::shared();
    let producer = cluster.producer(ProducerConfig::default()).await;
    let workload = Workload::round_robin(TOPIC, PARTITIONS, RATE);
    assert_eq!(produce_range(&producer, &workload, 0, 600, &acked).await, 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // kill -9 of m1.
    let mut members = members;
    let mut m1 = members.remove(0);
    m1.child.kill().await.expect("kill -9");
    assert_eq!(
        produce_range(&producer, &workload, 600, 600, &acked).await,
        0
    );
    wait_for_members(
        &admin,
        "printers",
        2,
        Duration::from_millis(session_ms) + Duration::from_secs(30),
    )
    .await;
    let all = || {
        let mut v: Vec<(u32, i64, String)> = m1.printed();
        for m in &members {
            v.extend(m.printed());
        }
        v
    };
    let ids = acked_ids(&acked);
    wait_for(
        "every record printed by some member",
        Duration::from_secs(30),
        || {
            let printed: HashSet<String> = all().into_iter().map(|(_, _, v)| v).collect();
            ids.iter().all(|id| printed.contains(id))
        },
    )
    .await;
    // SIGSTOP m2 for longer than its session; m3 takes everything.
    let before = {
        let d = admin.describe_group("printers").await.expect("describe");
        d.offsets
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect::<BTreeMap<_, _>>()
    };
    members[0].signal("-STOP");
    wait_for_members(&admin, "printers", 1, Duration::from_secs(30)).await;
    assert_eq!(
        produce_range(&producer, &workload, 1200, 300, &acked).await,
        0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    members[0].signal("-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = members[0].stderr();
    assert!(
        err.contains("lost its partitions") || err.contains("without a hand-over"),
        "the resumed member was not told it lost its partitions:\n{err}"
    );
    let after = admin.describe_group("printers").await.expect("describe");
    for o in &after.offsets {
        let b = before.get(&o.partition).copied().unwrap_or(0);
        assert!(
            o.offset >= b,
            "partition {}: committed offset went back from {b} to {}",
            o.partition,
            o.offset
        );
    }
    let ids = acked_ids(&acked);
    wait_for("every record printed", Duration::from_secs(30), || {
        let printed: HashSet<String> = all().into_iter().map(|(_, _, v)| v).collect();
        ids.iter().all(|id| printed.contains(id))
    })
    .await;
    for m in &mut members {
        m.signal("-INT");
    }
    for m in &mut members {
        let status = tokio::time::timeout(Duration::from_secs(20), m.child.wait())
            .await
            .expect("member exits on Ctrl-C")
            .expect("wait");
        assert!(status.success(), "{status}: {}", m.stderr());
    }
    // Both left cleanly: the group is empty.
    let d = admin.describe_group("printers").await.expect("describe");
    assert_eq!(d.members.len(), 0, "{d:?}");
}

fn groups_client(url: &str) -> GroupsClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .timeout(Duration::from_secs(20))
        .connect_lazy();
    GroupsClient::new(channel)
}

/// A static member that restarts within its session timeout gets its
/// partitions back without a rebalance: the group epoch does not move and
/// the other member keeps its partitions throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarts_without_a_rebalance() {
    let cluster = ClusterHarness::on_files(1).await;
    create_topic(&cluster).await;
    let url = cluster.client_url().await;
    let admin = cluster.admin().await;
    let owned: Shared<Ownership> = Arc::default();
    let processed: Shared<Processed> = Arc::default();
    let static_config = |instance: &str| ConsumerConfig {
        instance_id: Some(instance.to_owned()),
        ..member_config()
    };
    let a = start_member(
        &url,
        "static",
        "a",
        static_config("host-a"),
        owned.clone(),
        processed.clone(),
    )
    .await;
    let b = start_member(
        &url,
        "static",
        "b",
        static_config("host-b"),
        owned.clone(),
        processed.clone(),
    )
    .await;
    wait_for_spread(&owned, &["a", "b"], Duration::from_secs(30)).await;
    let held = |d: &strata_client::proto::v1::GroupDescription, instance: &str| {
        d.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .and_then(|m| m.assignment.first().map(|t| t.partitions.clone()))
    };
    let before = admin.describe_group("static").await.expect("describe");
    b.close().await;
    // b left for a restart: a keeps its partitions, b's wait for it.
    let during = admin.describe_group("static").await.expect("describe");
    assert_eq!(during.group_epoch, before.group_epoch, "{during:?}");
    assert_eq!(held(&during, "host-a"), held(&before, "host-a"));
    let b2 = start_member(
        &url,
        "static",
        "b2",
        static_config("host-b"),
        owned.clone(),
        processed.clone(),
    )
    .await;
    wait_for_spread(&owned, &["a", "b2"], Duration::from_secs(30)).await;
    let after = admin.describe_group("static").await.expect("describe");
    assert_eq!(
        after.group_epoch, before.group_epoch,
        "no rebalance: {after:?}"
    );
    assert_eq!(held(&after, "host-b"), held(&before, "host-b"));
    assert_eq!(held(&after, "host-a"), held(&before, "host-a"));
    a.close().await;
    b2.close().await;
    let violations = owned.lock().violations.clone();
    assert!(violations.is_empty(), "{violations:?}");
}

/// A native member subscribed by pattern ([`Consumer::subscribe_pattern`],
/// `strata consume --include`) reads every topic whose name matches, one
/// created after it joined too, and no other; a pattern that does not
/// compile is reported by `recv`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_subscriptions_follow_new_topics_and_bad_patterns_are_reported() {
    let cluster = ClusterHarness::on_files(1).await;
    let url = cluster.client_url().await;
    let admin = cluster.admin().await;
    for (topic, partitions) in [("metrics-cpu", 2), ("logs", 1)] {
        admin
            .create_topic(topic, partitions, TopicSettings::default())
            .await
            .expect("create topic");
    }
    let producer = Producer::connect(&url, ProducerConfig::default())
        .await
        .expect("producer");
    let produce = |topic: &'static str, n: usize| {
        let producer = producer.clone();
        async move {
            for i in 0..n {
                producer
                    .send_and_wait(ProducerRecord::new(topic, format!("{topic}-{i}")))
                    .await
                    .expect("produce");
            }
        }
    };
    produce("metrics-cpu", 10).await;
    produce("logs", 10).await;
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        ..member_config()
    };
    let mut consumer = Consumer::connect(&url, config.clone())
        .await
        .expect("connect");
    consumer
        .subscribe_pattern("metrics-.*", "dashboards")
        .await
        .expect("subscribe");
    let first = read_values(&mut consumer, 10).await;
    assert!(
        first.iter().all(|v| v.starts_with("metrics-cpu-")),
        "{first:?}"
    );
    admin
        .create_topic("metrics-mem", 1, TopicSettings::default())
        .await
        .expect("create topic");
    produce("metrics-mem", 5).await;
    let more = read_values(&mut consumer, 5).await;
    assert_eq!(
        more,
        (0..5)
            .map(|i| format!("metrics-mem-{i}"))
            .collect::<Vec<_>>()
    );
    let d = admin.describe_group("dashboards").await.expect("describe");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].topic_pattern.as_deref(), Some("metrics-.*"));
    let held: Vec<&str> = d.members[0]
        .assignment
        .iter()
        .map(|t| t.topic.as_str())
        .collect();
    assert_eq!(held, ["metrics-cpu", "metrics-mem"]);
    consumer.close().await.expect("close");

    // The CLI's --include, as kafka-console-consumer's.
    let (status, stdout, stderr) = run_cli(
        &[
            "consume",
            "--group",
            "cli",
            "--include",
            "metrics-.*",
            "--from-beginning",
            "-n",
            "15",
            "--broker",
            &url,
        ],
        "",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        status.success(),
        "strata consume --include failed: {stderr}"
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 15, "{stdout}");
    assert!(lines.iter().all(|l| l.starts_with("metrics-")), "{stdout}");

    // A pattern that does not compile: recv says what is wrong.
    let mut bad = Consumer::connect(&url, config).await.expect("connect");
    bad.subscribe_pattern("metrics-(", "broken")
        .await
        .expect("subscribe");
    let e = tokio::time::timeout(Duration::from_secs(30), bad.recv())
        .await
        .expect("an answer within 30 s")
        .expect("an item")
        .expect_err("the coordinator refuses the pattern");
    assert_eq!(
        e.reason(),
        Some(ErrorReason::InvalidRegularExpression),
        "{e}"
    );
    assert!(
        e.to_string().contains("not a valid regular expression"),
        "{e}"
    );
    bad.close().await.expect("close");
}

/// The values of the next `n` records `consumer` receives, sorted.
async fn read_values(consumer: &mut Consumer, n: usize) -> Vec<String> {
    let mut values = Vec::new();
    while values.len() < n {
        let r = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records: {values:?}", values.len()))
            .expect("a record")
            .expect("no error");
        values.push(String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned());
    }
    values.sort();
    values
}

fn reason(status: &tonic::Status) -> ErrorReason {
    ErrorInfo::from_status(status).reason
}

/// Bad input gets a clear error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_are_refused_and_change_nothing() {
    let cluster = ClusterHarness::on_files(2).await;
    create_topic(&cluster).await;
    let url = cluster.client_url().await;
    let coordinator = find_coordinator(&url, "strict").await;
    let mut c = groups_client(&coordinator.address);
    let other = if coordinator.broker_id == 1 { 2 } else { 1 };
    let mut wrong = groups_client(&cluster.url(other));
    let hb = |member: &str, epoch: i32, owned: Vec<TopicPartitions>| GroupHeartbeatRequest {
        group_id: "strict".into(),
        member_id: member.into(),
        member_epoch: epoch,
        topics: vec![TOPIC.into()],
        owned,
        ..GroupHeartbeatRequest::default()
    };
    // The wrong broker names the coordinator.
    let s = wrong
        .heartbeat(hb("", 0, vec![]))
        .await
        .expect_err("not the coordinator");
    assert_eq!(reason(&s), ErrorReason::NotCoordinator, "{s}");
    assert_eq!(
        ErrorInfo::from_status(&s).owner_broker_id,
        Some(coordinator.broker_id)
    );
    // A member joins (once the coordinator loaded) and gets every
    // partition.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut joined = loop {
        match c.heartbeat(hb("", 0, vec![])).await {
            Ok(r) => break r.into_inner(),
            Err(s) if ErrorInfo::from_status(&s).is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("join: {s}"),
        }
    };
    for _ in 0..10 {
        let n: usize = joined.assignment.iter().map(|t| t.partitions.len()).sum();
        if n == PARTITIONS as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        joined = c
            .heartbeat(hb(&joined.member_id, joined.member_epoch, vec![]))
            .await
            .expect("heartbeat")
            .into_inner();
    }
    let commit = |member: &str, epoch: i32, offsets: Vec<OffsetCommit>| CommitOffsetsRequest {
        group_id: "strict".into(),
        member_id: member.into(),
        member_epoch: epoch,
        offsets,
    };
    let oc = |topic: &str, partition: u32, offset: i64, metadata: &str| OffsetCommit {
        topic: topic.into(),
        partition,
        offset,
        metadata: metadata.into(),
    };
    let (m, e) = (joined.member_id.clone(), joined.member_epoch);
    c.commit_offsets(commit(&m, e, vec![oc(TOPIC, 1, 5, "ok")]))
        .await
        .expect("a valid commit");
    let cases: Vec<(&str, CommitOffsetsRequest, ErrorReason)> = vec![
        (
            "negative offset",
            commit(&m, e, vec![oc(TOPIC, 1, -3, "")]),
            ErrorReason::InvalidRequest,
        ),
        (
            "oversized metadata",
            commit(&m, e, vec![oc(TOPIC, 1, 9, &"x".repeat(5000))]),
            ErrorReason::RecordTooLarge,
        ),
        (
            "unknown topic",
            commit(&m, e, vec![oc("nope", 0, 9, "")]),
            ErrorReason::UnknownTopic,
        ),
        (
            "unknown partition",
            commit(&m, e, vec![oc(TOPIC, 99, 9, "")]),
            ErrorReason::UnknownPartition,
        ),
        (
            "unknown member",
            commit("ghost", 1, vec![oc(TOPIC, 1, 9, "")]),
            ErrorReason::UnknownMemberId,
        ),
        (
            "future epoch",
            commit(&m, e + 5, vec![oc(TOPIC, 1, 9, "")]),
            ErrorReason::FencedMemberEpoch,
        ),
        (
            "commit from outside a group with members",
            commit("", -1, vec![oc(TOPIC, 1, 9, "")]),
            ErrorReason::NonEmptyGroup,
        ),
    ];
    for (what, req, want) in cases {
        let s = c.commit_offsets(req).await.expect_err(what);
        assert_eq!(reason(&s), want, "{what}: {s}");
        assert!(!s.message().is_empty());
    }
    // A second member: commits for partitions it does not own are refused.
    let second = c
        .heartbeat(hb("", 0, vec![]))
        .await
        .expect("join")
        .into_inner();
    let s = c
        .commit_offsets(commit(
            &second.member_id,
            second.member_epoch,
            vec![oc(TOPIC, 1, 9, "")],
        ))
        .await
        .expect_err("not its partition");
    assert_eq!(reason(&s), ErrorReason::InvalidRequest, "{s}");
    assert!(s.message().contains("does not own"), "{s}");
    // Invalid group ids.
    for id in ["", "a\u{7}b", &"g".repeat(300)] {
        let s = c
            .fetch_offsets(FetchOffsetsRequest {
                group_id: id.into(),
                partitions: vec![],
            })
            .await
            .expect_err("invalid id");
        assert_eq!(reason(&s), ErrorReason::InvalidRequest, "{id:?}: {s}");
    }
    // Unknown members, unknown groups, groups with members.
    let s = c
        .heartbeat(hb("ghost", 3, vec![]))
        .await
        .expect_err("ghost");
    assert_eq!(reason(&s), ErrorReason::UnknownMemberId, "{s}");
    let unknown = find_coordinator(&url, "never-seen").await;
    let s = groups_client(&unknown.address)
        .describe_group(DescribeGroupRequest {
            group_id: "never-seen".into(),
        })
        .await
        .expect_err("unknown group");
    assert_eq!(reason(&s), ErrorReason::GroupIdNotFound, "{s}");
    let s = c
        .delete_group(DeleteGroupRequest {
            group_id: "strict".into(),
        })
        .await
        .expect_err("members");
    assert_eq!(reason(&s), ErrorReason::NonEmptyGroup, "{s}");
    // Nothing changed: the one valid commit stands.
    let offsets = c
        .fetch_offsets(FetchOffsetsRequest {
            group_id: "strict".into(),
            partitions: vec![],
        })
        .await
        .expect("fetch")
        .into_inner()
        .offsets;
    assert_eq!(offsets.len(), 1, "{offsets:?}");
    assert_eq!((offsets[0].partition, offsets[0].offset), (1, 5));
    assert_eq!(offsets[0].metadata, "ok");
}

/// A coordinator restarted after many commits loads them from its
/// snapshot and the log after it (the log below older snapshots is gone);
/// offsets of an empty group expire; deleting a topic deletes its offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_survive_restarts_through_snapshots_and_go_with_topics_and_retention() {
    let mut cluster = ClusterHarness::on_files(1).await;
    create_topic(&cluster).await;
    let admin = cluster.admin().await;
    // 1,000 commits (5 snapshots' worth) by an empty group, from outside.
    for i in 0..1000i64 {
        let p = (i % i64::from(PARTITIONS)) as u32;
        admin
            .alter_group_offsets("ledger", &[(TOPIC.to_owned(), p, i)])
            .await
            .expect("commit");
    }
    let expect = |d: &strata_client::proto::v1::GroupDescription| {
        let got: BTreeMap<u32, i64> = d.offsets.iter().map(|o| (o.partition, o.offset)).collect();
        for p in 0..PARTITIONS {
            let last = (0..1000i64)
                .filter(|i| i % i64::from(PARTITIONS) == i64::from(p))
                .max();
            assert_eq!(got.get(&p).copied(), last, "partition {p}: {got:?}");
        }
    };
    expect(&admin.describe_group("ledger").await.expect("describe"));
    let bucket = PathBuf::from(cluster.store().trim_start_matches("file://"));
    let snapshots = walk(&bucket)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/snapshots/"))
        .count();
    assert!(
        snapshots >= 1,
        "no coordinator snapshot in {}",
        bucket.display()
    );
    cluster.restart(1).await;
    let admin = Admin::connect(&cluster.client_url().await)
        .await
        .expect("admin");
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        match admin.describe_group("ledger").await {
            Ok(d) => break d,
            Err(e) if Instant::now() < deadline => {
                eprintln!("describe after restart: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("describe after restart: {e}"),
        }
    };
    expect(&d);
    // Deleting the topic deletes its committed offsets.
    admin.delete_topic(TOPIC).await.expect("delete topic");
    wait_for_async(
        "the deleted topic's offsets to go",
        Duration::from_secs(20),
        || async {
            match admin.describe_group("ledger").await {
                Ok(d) => d.offsets.is_empty(),
                Err(e) => e.reason() == Some(ErrorReason::GroupIdNotFound),
            }
        },
    )
    .await;
}

/// Offsets of a group without members expire after
/// `group.offsets_retention`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_an_empty_group_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let cluster = ClusterHarness::start(
        1,
        format!("file://{}", bucket.display()),
        vec![("STRATA_GROUP__OFFSETS_RETENTION".into(), "3s".into())],
    )
    .await;
    create_topic(&cluster).await;
    let admin = cluster.admin().await;
    admin
        .alter_group_offsets("short-lived", &[(TOPIC.to_owned(), 0, 1)])
        .await
        .expect("commit");
    assert_eq!(
        admin
            .describe_group("short-lived")
            .await
            .expect("describe")
            .offsets
            .len(),
        1
    );
    wait_for_async("the offsets to expire", Duration::from_secs(20), || async {
        matches!(admin.describe_group("short-lived").await, Err(e) if e.reason() == Some(ErrorReason::GroupIdNotFound))
    })
    .await;
}

async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
