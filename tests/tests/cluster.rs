//! Cluster: several real `strata serve` processes over one bucket behave as
//! one service (issue #4). While an idempotent, acks=all producer and a
//! tailing consumer run, each test injects one kind of change:
//!
//! 1. kill -9 of a broker (and of the controller): its partitions are
//!    served again within the heartbeat timeout plus [`TAKEOVER_SLACK`];
//! 2. SIGSTOP of a broker until its partitions are taken over, then SIGCONT:
//!    the zombie acknowledges nothing, notices it is fenced, and rejoins;
//! 3. scaling 1 → 3 → 1 brokers, draining by SIGTERM and by `Cluster.Drain`;
//! 4. moving a partition with [`HISTORY_BYTES`] of sealed history back and
//!    forth with `Cluster.Move`.
//!
//! Each runs on a `file://` bucket and, as `s3_*`, on the S3-compatible
//! test server. Two more check the balancer and topic deletes: partitions
//! with busy readers are spread by bytes out, and a topic deleted and
//! re-created at once starts empty on every broker.
//!
//! One more starts brokers with `--broker-id auto`: they claim distinct ids,
//! and a dead broker's id is claimed again once it is forgotten.
//!
//! Each ends with the invariant of `strata_tests::workload`: every
//! acknowledged record read back exactly once, at the offset its ack named,
//! in order, with no offset gap, reuse or duplicate; and the tailing
//! consumer saw exactly the same log.
//!
//! Clients bootstrap from every running broker (a comma-separated list).
//! Only the controller kill-9 test may fault broker 1, the first URL of that
//! list; the others leave it alone. On failure the harness prints the end of
//! every broker's log and keeps their directories.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use strata_client::{Admin, Consumer, ConsumerConfig, Offset, ProducerConfig, TopicSettings};
use strata_proto::v1;
use strata_tests::broker::{BrokerOptions, BrokerProcess, http_get};
use strata_tests::cluster::{
    ClusterHarness, FORGET_DEAD_AFTER, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, StatusExt, describe,
};
use strata_tests::s3::TestS3;
use strata_tests::workload::{
    AckLog, Acked, Background, Placement, Tail, Workload, check_invariant, produce_range,
    wait_for_more_acks,
};

/// The topic every test produces to.
const TOPIC: &str = "orders";

/// Its partitions in the multi-broker tests (two per broker).
const PARTITIONS: u32 = 6;

/// Background produce rate, records per second: enough to keep every
/// partition busy, little enough that three debug brokers on two cores keep
/// their heartbeats.
const RATE: u32 = 1_000;

/// How long after the heartbeat timeout a dead broker's partitions must be
/// served again (detection, fencing, WAL replay, the client's retry backoff).
const TAKEOVER_SLACK: Duration = Duration::from_secs(6);

/// How much longer than [`TAKEOVER_SLACK`] the client library may take to
/// have its records acknowledged again: its retry backoff is capped at
/// about 2.5 s, so up to two more steps.
const CLIENT_RETRY_SLACK: Duration = Duration::from_secs(5);

/// How long a cluster may take to start, assign and balance partitions.
const SETTLE: Duration = Duration::from_secs(30);

/// How long a given number of acks may take.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// Acks to wait for between steps, so every fault lands mid-stream.
const STEP_ACKS: usize = 500;

/// How long a draining broker may take to exit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker's default `shutdown_timeout`: the bound a deploy relies on
/// (the Terraform module's lifecycle hook, systemd's stop timeout). A drain
/// that outlives it exits 1, so an exit 0 is a drain within it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the tailing consumer may take to catch up at the end.
const TAIL_CATCH_UP: Duration = Duration::from_secs(60);

/// Sealed history of the partition the move test moves.
const HISTORY_BYTES: usize = 32 << 20;

/// Value size of the history records.
const HISTORY_RECORD_BYTES: usize = 16 << 10;

/// Segment size of the move test's topic, so the history is sealed into
/// many segments and the unsealed tail stays small.
const SEGMENT_BYTES: u64 = 1 << 20;

/// How many times the move test moves the partition.
const MOVES: usize = 4;

/// How long one move may take until the partition is served by its new
/// owner. Independent of the history: a move seals the tail, it copies
/// nothing.
const MOVE_DEADLINE: Duration = Duration::from_secs(10);

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        delivery_timeout: Duration::from_secs(120),
        // Short, so requests stuck on a frozen broker are retried elsewhere.
        request_timeout: Duration::from_secs(5),
        linger: Duration::from_millis(2),
        ..ProducerConfig::default()
    }
}

/// A producer and a tailing consumer running against the cluster.
struct Traffic {
    topic: String,
    partitions: u32,
    acked: AckLog,
    background: Background,
    tail: Tail,
    /// First record index of the background producer.
    first: usize,
}

impl Traffic {
    /// Starts producing records `first..` round-robin over the topic's
    /// partitions, and a consumer tailing them from the beginning.
    async fn start(
        cluster: &ClusterHarness,
        topic: &str,
        partitions: u32,
        first: usize,
        acked: AckLog,
    ) -> Traffic {
        let url = cluster.client_url().await;
        let tail = Tail::start(&url, topic, partitions).await;
        let producer = cluster.producer(producer_config()).await;
        let background = Background::start(
            producer,
            Workload::round_robin(topic, partitions, RATE),
            first,
            acked.clone(),
        );
        Traffic {
            topic: topic.to_owned(),
            partitions,
            acked,
            background,
            tail,
            first,
        }
    }

    /// Waits for [`STEP_ACKS`] more acks.
    async fn more_acks(&self, what: &str) {
        wait_for_more_acks(&self.acked, STEP_ACKS, ACK_WAIT, what).await;
    }

    /// Waits until every partition in `partitions` acknowledged a record
    /// after `since`, at most until `deadline`; returns how long after
    /// `since` the last of them did.
    async fn served_after(
        &self,
        partitions: &[u32],
        since: Instant,
        deadline: Instant,
        what: &str,
    ) -> Duration {
        loop {
            let lagging: Vec<u32> = {
                let acked = self.acked.lock();
                partitions
                    .iter()
                    .copied()
                    .filter(|p| acked.last_ack(*p).is_none_or(|t| t <= since))
                    .collect()
            };
            if lagging.is_empty() {
                return since.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: partitions {lagging:?} of {} acknowledged nothing within {:?}",
                self.topic,
                deadline - since
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops producing and checks the invariant: nothing failed, every ack
    /// read back once, where it said, and the tail saw the same log.
    async fn finish(self, cluster: &ClusterHarness) {
        let (sent, failed) = self.background.finish().await;
        assert_eq!(
            failed, 0,
            "the producer retries through every fault within its delivery timeout"
        );
        let acked = std::mem::take(&mut *self.acked.lock());
        assert_eq!(
            acked.numbered(),
            self.first + sent,
            "every record was acknowledged once ({sent} sent from v{})",
            self.first
        );
        let url = cluster.client_url().await;
        let log = check_invariant(&url, &self.topic, self.partitions, &acked).await;
        self.tail.finish(&log, TAIL_CATCH_UP).await;
        eprintln!(
            "invariant holds: {} acknowledged records over {} partitions",
            acked.len(),
            self.partitions
        );
    }
}

/// Probes each of `partitions` of `TOPIC` with a raw produce to its owner
/// (`ClusterHarness::produce_to_owner`) every 50 ms until one is
/// acknowledged, at most until `deadline`, and notes the probes in
/// `acked`. Returns how long after `since` the last partition answered.
async fn probe_served(
    cluster: &ClusterHarness,
    acked: &AckLog,
    partitions: &[u32],
    since: Instant,
    deadline: Instant,
    what: &str,
) -> Duration {
    static PROBES: AtomicUsize = AtomicUsize::new(0);
    let mut pending = partitions.to_vec();
    let mut errors: BTreeMap<u32, String> = BTreeMap::new();
    loop {
        let mut still = Vec::new();
        for partition in pending {
            let id = format!("probe{}", PROBES.fetch_add(1, Ordering::Relaxed));
            match cluster
                .produce_to_owner(TOPIC, partition, id.as_bytes())
                .await
            {
                Ok((_, offset)) => acked.lock().insert_value(id, partition, offset),
                Err(e) => {
                    errors.insert(partition, e);
                    still.push(partition);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {TOPIC} partitions {pending:?} not served within {:?}; last errors: {errors:?}",
            deadline - since
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cluster of `n` brokers with `TOPIC` created and balanced.
async fn balanced_cluster(cluster: ClusterHarness, partitions: u32) -> ClusterHarness {
    cluster
        .admin()
        .await
        .create_topic(TOPIC, partitions, TopicSettings::default())
        .await
        .unwrap_or_else(|e| panic!("create {TOPIC}: {e}"));
    cluster
        .wait_until("the topic to be balanced over all brokers", SETTLE, |s| {
            s.alive().len() == cluster.running().len() && s.balanced(TOPIC, partitions)
        })
        .await;
    cluster
}

/// Which broker a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// Not broker 1 (the clients' bootstrap): the one owning the most
    /// partitions of `TOPIC`.
    NotBootstrap,
    /// The controller, whichever it is (often broker 1: then the clients
    /// must fail over from their first bootstrap URL to the others).
    Controller,
}

/// The broker to fault and the partitions of `TOPIC` it owns (at least one).
fn pick_victim(status: &v1::ClusterStatus, victim: Victim) -> (u32, Vec<u32>) {
    let id = match victim {
        Victim::NotBootstrap => status
            .alive()
            .into_iter()
            .filter(|id| *id != 1)
            .max_by_key(|id| status.partitions_of_topic(TOPIC, *id).len())
            .unwrap_or_else(|| {
                panic!("no broker to fault besides broker 1:\n{}", describe(status))
            }),
        Victim::Controller => status
            .controller_id
            .unwrap_or_else(|| panic!("no controller:\n{}", describe(status))),
    };
    let partitions = status.partitions_of_topic(TOPIC, id);
    assert!(
        !partitions.is_empty(),
        "broker {id} owns nothing to take over:\n{}",
        describe(status)
    );
    (id, partitions)
}

/// Scenario 1: kill -9 one broker under load; its partitions are served
/// again within the heartbeat timeout plus [`TAKEOVER_SLACK`]; it restarts
/// and rejoins.
async fn kill9_takeover(cluster: ClusterHarness, victim: Victim) {
    let mut cluster = balanced_cluster(cluster, PARTITIONS).await;
    let acked = Acked::shared();
    let traffic = Traffic::start(&cluster, TOPIC, PARTITIONS, 0, acked).await;
    traffic.more_acks("before the kill").await;

    let status = cluster.status().await.expect("status");
    let (victim, lost) = pick_victim(&status, victim);
    eprintln!(
        "killing broker {victim} (controller: {}), owner of {TOPIC} partitions {lost:?}",
        status.controller_id == Some(victim)
    );
    let killed_at = Instant::now();
    cluster.kill(victim).await;
    let deadline = killed_at + HEARTBEAT_TIMEOUT + TAKEOVER_SLACK;

    let remaining = deadline.saturating_duration_since(Instant::now());
    cluster
        .wait_until(
            &format!("broker {victim}'s partitions {lost:?} to be taken over"),
            remaining,
            |s| {
                !s.is_alive(victim)
                    && s.partitions_of(victim).is_empty()
                    && s.all_served(TOPIC, PARTITIONS)
                    && s.controller_id
                        .is_some_and(|c| c != victim && s.is_alive(c))
            },
        )
        .await;
    let reassigned = killed_at.elapsed();
    let served = probe_served(
        &cluster,
        &traffic.acked,
        &lost,
        killed_at,
        deadline,
        "after kill -9",
    )
    .await;
    let client = traffic
        .served_after(
            &lost,
            killed_at,
            deadline + CLIENT_RETRY_SLACK,
            "the producer after kill -9",
        )
        .await;
    eprintln!(
        "after kill -9: reassigned in {reassigned:?}, served in {served:?}, the producer's \
         records acknowledged again in {client:?}"
    );

    // The dead broker is listed until cluster.forget_dead_after, then its
    // heartbeat is deleted.
    cluster
        .wait_until(
            &format!("dead broker {victim} to be forgotten"),
            FORGET_DEAD_AFTER + TAKEOVER_SLACK,
            |s| s.broker(victim).is_none(),
        )
        .await;
    eprintln!(
        "dead broker {victim} forgotten {:?} after the kill",
        killed_at.elapsed()
    );

    // The killed broker comes back as a new incarnation and rejoins.
    cluster.restart(victim).await;
    cluster
        .wait_until(&format!("broker {victim} to rejoin"), SETTLE, |s| {
            s.is_alive(victim)
        })
        .await;
    traffic.more_acks("after the restart").await;
    traffic.finish(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_partitions_served_again_within_heartbeat_timeout() {
    kill9_takeover(ClusterHarness::on_files(3).await, Victim::NotBootstrap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_controller_partitions_served_again_within_heartbeat_timeout() {
    kill9_takeover(ClusterHarness::on_files(3).await, Victim::Controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_kill9_partitions_served_again_within_heartbeat_timeout() {
    let s3 = TestS3::shared().await;
    kill9_takeover(ClusterHarness::on_s3(3, s3).await, Victim::NotBootstrap).await;
}

fn batch_of(value: &[u8]) -> bytes::Bytes {
    let mut builder = strata_storage::batch::BatchBuilder::new();
    builder.push(0, None, Some(value), &[]);
    builder.build()
}

/// Scenario 2: a broker frozen by SIGSTOP loses its partitions; after
/// SIGCONT it acknowledges nothing (a produce sent to it while frozen
/// fails), notices it is fenced, and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_broker_is_fenced_acknowledges_nothing_and_rejoins() {
    sigstop_zombie(ClusterHarness::on_files(3).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sigstopped_broker_is_fenced_acknowledges_nothing_and_rejoins() {
    let s3 = TestS3::shared().await;
    sigstop_zombie(ClusterHarness::on_s3(3, s3).await).await;
}

async fn sigstop_zombie(cluster: ClusterHarness) {
    let mut cluster = balanced_cluster(cluster, PARTITIONS).await;
    let acked = Acked::shared();
    let traffic = Traffic::start(&cluster, TOPIC, PARTITIONS, 0, acked).await;
    traffic.more_acks("before the stop").await;

    let status = cluster.status().await.expect("status");
    let (victim, lost) = pick_victim(&status, Victim::NotBootstrap);
    let incarnation = status
        .broker(victim)
        .map(|b| b.incarnation)
        .expect("victim listed");
    // A connection to the victim made now, so a request can be written to
    // it while it is frozen.
    let channel = tonic::transport::Endpoint::from_shared(cluster.url(victim))
        .expect("url")
        .connect()
        .await
        .expect("connects to the victim");
    let mut zombie = v1::strata_client::StrataClient::new(channel);

    eprintln!(
        "stopping broker {victim} (controller: {}, incarnation {incarnation}), owner of {TOPIC} partitions {lost:?}",
        status.controller_id == Some(victim)
    );
    let stopped_at = Instant::now();
    cluster.stop(victim);
    let deadline = stopped_at + HEARTBEAT_TIMEOUT + TAKEOVER_SLACK;
    cluster
        .wait_until(
            &format!("frozen broker {victim}'s partitions {lost:?} to be taken over"),
            deadline.saturating_duration_since(Instant::now()),
            |s| {
                !s.is_alive(victim)
                    && s.partitions_of(victim).is_empty()
                    && s.all_served(TOPIC, PARTITIONS)
            },
        )
        .await;
    let taken_over = Instant::now();
    let served = probe_served(
        &cluster,
        &traffic.acked,
        &lost,
        stopped_at,
        deadline,
        "after SIGSTOP",
    )
    .await;
    let client = traffic
        .served_after(
            &lost,
            stopped_at,
            deadline + CLIENT_RETRY_SLACK,
            "the producer after SIGSTOP",
        )
        .await;
    eprintln!(
        "after SIGSTOP: taken over in {:?}, served in {served:?}, the producer's records \
         acknowledged again in {client:?}",
        taken_over - stopped_at
    );

    // A produce written to the frozen broker after the takeover: it reads
    // it when it wakes up, and must not acknowledge it.
    let probe_partition = lost[0];
    let probe = tokio::spawn(async move {
        let request = v1::ProduceRequest {
            topic: TOPIC.into(),
            partition: probe_partition,
            acks: v1::Acks::All as i32,
            payload: Some(v1::produce_request::Payload::Batch(batch_of(
                b"zombie-probe",
            ))),
        };
        tokio::time::timeout(Duration::from_secs(30), zombie.produce(request)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.resume(victim);
    match probe.await.expect("probe task") {
        Ok(Ok(response)) => panic!(
            "broker {victim} acknowledged a produce to {TOPIC}/{probe_partition} at offset {} \
             after its partitions were taken over",
            response.into_inner().base_offset
        ),
        Ok(Err(status)) => {
            let info = strata_proto::ErrorInfo::from_status(&status);
            eprintln!("the zombie refused the probe: {info}");
        }
        Err(_) => eprintln!("the zombie did not answer the probe within 30 s (not an ack)"),
    }

    // It notices it was fenced and rejoins.
    let rejoined = cluster
        .wait_until(
            &format!(
                "broker {victim} to notice it is fenced (\"fenced\" in its log or a new \
                 incarnation) and rejoin"
            ),
            SETTLE,
            |s| {
                s.is_alive(victim)
                    && (s
                        .broker(victim)
                        .is_some_and(|b| b.incarnation != incarnation)
                        || cluster
                            .broker(victim)
                            .log()
                            .to_lowercase()
                            .contains("fenced"))
            },
        )
        .await;
    eprintln!(
        "broker {victim} rejoined: incarnation {incarnation} -> {}, log mentions fencing: {}",
        rejoined.broker(victim).map_or(0, |b| b.incarnation),
        cluster
            .broker(victim)
            .log()
            .to_lowercase()
            .contains("fenced")
    );
    traffic.more_acks("after the zombie rejoined").await;
    traffic.finish(&cluster).await;
}

/// Scenario 3: 1 → 3 → 1 brokers under load; the new brokers get
/// partitions, and each leaving broker drains (one by SIGTERM, one by
/// `Cluster.Drain`) and exits 0, its partitions moved before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_one_to_three_to_one_with_drains() {
    scale_1_3_1(ClusterHarness::on_files(1).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_scale_one_to_three_to_one_with_drains() {
    let s3 = TestS3::shared().await;
    scale_1_3_1(ClusterHarness::on_s3(1, s3).await).await;
}

async fn scale_1_3_1(cluster: ClusterHarness) {
    let mut cluster = balanced_cluster(cluster, PARTITIONS).await;
    let acked = Acked::shared();
    let traffic = Traffic::start(&cluster, TOPIC, PARTITIONS, 0, acked).await;
    traffic.more_acks("on one broker").await;

    // Scale out.
    let started = Instant::now();
    let two = cluster.add_broker().await;
    let three = cluster.add_broker().await;
    cluster
        .wait_until("the two new brokers to take partitions", SETTLE, |s| {
            s.alive().len() == 3 && s.balanced(TOPIC, PARTITIONS)
        })
        .await;
    eprintln!("scaled out to 3 brokers in {:?}", started.elapsed());
    traffic.more_acks("on three brokers").await;
    // The balancer's inputs: owners report each partition's produce and
    // fetch rates (the tailing consumer reads what the producer writes).
    cluster
        .wait_until(
            "the status to show partition bytes in and out",
            SETTLE,
            |s| {
                s.partitions.iter().any(|p| {
                    p.topic == TOPIC && p.bytes_in_per_sec > 0.0 && p.bytes_out_per_sec > 0.0
                })
            },
        )
        .await;

    // Scale in: SIGTERM drains broker 3.
    let status = cluster.status().await.expect("status");
    let moving = status.partitions_of_topic(TOPIC, three);
    let signalled = Instant::now();
    let exit = cluster.terminate(three, DRAIN_TIMEOUT).await;
    assert!(
        exit.success(),
        "SIGTERM must drain broker {three} under load and exit 0 within shutdown_timeout, got \
         {exit}"
    );
    assert!(
        signalled.elapsed() < SHUTDOWN_TIMEOUT + Duration::from_secs(5),
        "the drain took {:?}",
        signalled.elapsed()
    );
    eprintln!(
        "broker {three} drained {moving:?} and exited in {:?}",
        signalled.elapsed()
    );
    drained(&cluster, three, &moving, signalled, &traffic).await;
    traffic.more_acks("after broker 3 drained").await;

    // Cluster.Drain, asked of broker 1, drains broker 2.
    let status = cluster.status().await.expect("status");
    let moving = status.partitions_of_topic(TOPIC, two);
    let asked = Instant::now();
    let response = cluster.drain(1, two).await;
    eprintln!("drain of broker {two}: {}", response.message);
    // Not ready while draining (or already gone).
    let http = cluster.broker(two).http_url();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match http_get(&http, "/readyz").await {
            Ok((503, _)) => {
                eprintln!("draining broker {two}: /readyz 503");
                break;
            }
            Err(e) => {
                eprintln!("draining broker {two}: /readyz unreachable ({e}), it is gone");
                break;
            }
            Ok((code, body)) => assert!(
                Instant::now() < deadline,
                "/readyz of draining broker {two} still answers {code} {body}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exit = cluster.wait_exit(two, DRAIN_TIMEOUT).await;
    assert!(exit.success(), "a drained broker exits 0, got {exit}");
    eprintln!(
        "broker {two} drained {moving:?} and exited in {:?}",
        asked.elapsed()
    );
    drained(&cluster, two, &moving, asked, &traffic).await;
    cluster
        .wait_until(
            "broker 1 to be the only live broker",
            HEARTBEAT_TIMEOUT + TAKEOVER_SLACK,
            |s| s.alive() == [1],
        )
        .await;
    traffic.more_acks("on one broker again").await;
    traffic.finish(&cluster).await;
}

/// After broker `gone` drained and exited: none of its partitions is
/// assigned to it, promptly (a drain moves them before the exit; a failure
/// takeover would need the heartbeat timeout), and `moved` are served again.
async fn drained(
    cluster: &ClusterHarness,
    gone: u32,
    moved: &[u32],
    since: Instant,
    traffic: &Traffic,
) {
    cluster
        .wait_until(
            &format!(
                "broker {gone}'s partitions to be elsewhere within the heartbeat timeout of \
                 its exit (it drained them first)"
            ),
            HEARTBEAT_TIMEOUT,
            |s| s.partitions_of(gone).is_empty() && s.all_served(TOPIC, PARTITIONS),
        )
        .await;
    let served = traffic
        .served_after(
            moved,
            since,
            Instant::now() + HEARTBEAT_TIMEOUT + TAKEOVER_SLACK,
            &format!("after broker {gone} drained"),
        )
        .await;
    eprintln!(
        "partitions {moved:?} of broker {gone} served again {served:?} after the drain began"
    );
}

/// Scenario 4: a partition with [`HISTORY_BYTES`] of sealed history moves
/// back and forth between two brokers under load; each move is served
/// within [`MOVE_DEADLINE`], and the whole history stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_partition_with_large_sealed_history_back_and_forth() {
    move_large_history(ClusterHarness::on_files(2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_move_partition_with_large_sealed_history_back_and_forth() {
    let s3 = TestS3::shared().await;
    move_large_history(ClusterHarness::on_s3(2, s3).await).await;
}

async fn move_large_history(cluster: ClusterHarness) {
    const PARTS: u32 = 4;
    const MOVED: u32 = 0;
    cluster
        .admin()
        .await
        .create_topic(
            TOPIC,
            PARTS,
            TopicSettings {
                segment_bytes: Some(SEGMENT_BYTES),
                ..TopicSettings::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("create {TOPIC}: {e}"));
    cluster
        .wait_until("the topic to be balanced over both brokers", SETTLE, |s| {
            s.alive().len() == 2 && s.balanced(TOPIC, PARTS)
        })
        .await;

    // The history: records of HISTORY_RECORD_BYTES into one partition.
    let acked = Acked::shared();
    let history = HISTORY_BYTES / HISTORY_RECORD_BYTES;
    let producer = cluster.producer(producer_config()).await;
    let filling = Instant::now();
    let failed = produce_range(
        &producer,
        &Workload {
            topic: TOPIC.to_owned(),
            placement: Placement::Fixed(MOVED),
            padding: HISTORY_RECORD_BYTES,
            rate: None,
        },
        0,
        history,
        &acked,
    )
    .await;
    assert_eq!(failed, 0, "nothing fails while writing the history");
    producer.flush().await.expect("flush");
    eprintln!(
        "wrote {} MiB of history to {TOPIC}/{MOVED} in {:?}",
        HISTORY_BYTES >> 20,
        filling.elapsed()
    );
    let admin = cluster.admin().await;
    let sealed_enough = (HISTORY_BYTES as u64).saturating_sub(2 * SEGMENT_BYTES);
    let deadline = Instant::now() + SETTLE;
    loop {
        let description = admin.describe_topic(TOPIC).await.expect("describe");
        let part = description
            .partition_details
            .iter()
            .find(|p| p.partition == MOVED)
            .cloned()
            .unwrap_or_default();
        if part.sealed_bytes >= sealed_enough {
            eprintln!(
                "{TOPIC}/{MOVED}: {} segments, {} sealed bytes, {} tail bytes",
                part.segments, part.sealed_bytes, part.tail_bytes
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{TOPIC}/{MOVED} should have about {HISTORY_BYTES} bytes sealed: {part:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let traffic = Traffic::start(&cluster, TOPIC, PARTS, history, acked).await;
    traffic.more_acks("before the moves").await;
    for round in 0..MOVES {
        let status = cluster.status().await.expect("status");
        let from = status
            .owner(TOPIC, MOVED)
            .unwrap_or_else(|| panic!("{TOPIC}/{MOVED} unassigned:\n{}", describe(&status)));
        let to = if from == 1 { 2 } else { 1 };
        let asked = Instant::now();
        let response = cluster.move_partition(1, TOPIC, MOVED, to).await;
        assert_eq!(
            response.from_broker_id,
            Some(from),
            "Move names where the partition was"
        );
        let deadline = asked + MOVE_DEADLINE;
        cluster
            .wait_until(
                &format!("{TOPIC}/{MOVED} to move from broker {from} to {to} (move {round})"),
                MOVE_DEADLINE,
                |s| {
                    s.owner(TOPIC, MOVED) == Some(to)
                        && s.partitions
                            .iter()
                            .any(|p| p.topic == TOPIC && p.partition == MOVED && p.pinned)
                        && s.all_served(TOPIC, PARTS)
                },
            )
            .await;
        let assigned = Instant::now();
        let served = traffic
            .served_after(
                &[MOVED],
                assigned,
                deadline.max(assigned + Duration::from_secs(2)),
                &format!("after move {round} to broker {to}"),
            )
            .await;
        eprintln!(
            "move {round}: {TOPIC}/{MOVED} broker {from} -> {to}: assigned in {:?}, served {:?} later",
            assigned - asked,
            served
        );
        traffic.more_acks("between moves").await;
    }
    traffic.finish(&cluster).await;
}

/// A topic deleted and at once re-created in a cluster starts empty on
/// every broker: the deleting broker tells the others, which drop the
/// deleted topic's partitions before the data is purged, so nothing of the
/// old topic (records, offsets, producer state) leaks into the new one, and
/// the new one's records are all acknowledged and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_recreated_topic_starts_empty_on_every_broker() {
    let cluster = balanced_cluster(ClusterHarness::on_files(3).await, PARTITIONS).await;
    let workload = Workload::round_robin(TOPIC, PARTITIONS, RATE);
    let old = Acked::shared();
    let producer = cluster.producer(producer_config()).await;
    let failed = produce_range(&producer, &workload, 0, 300, &old).await;
    assert_eq!(failed, 0, "the first topic takes every record");
    drop(producer);

    let admin = cluster.admin().await;
    admin.delete_topic(TOPIC).await.expect("delete");
    admin
        .create_topic(TOPIC, PARTITIONS, TopicSettings::default())
        .await
        .expect("re-create at once");

    // A new producer (its sequence numbers belonged to the old topic).
    let new = Acked::shared();
    let producer = cluster.producer(producer_config()).await;
    let failed = produce_range(&producer, &workload, 100_000, 300, &new).await;
    assert_eq!(failed, 0, "the re-created topic takes every record");
    let acked = std::mem::take(&mut *new.lock());
    // Whichever broker answers, describe shows every owner's live high
    // watermark (the unsealed tails are in no manifest yet).
    let desc = admin.describe_topic(TOPIC).await.expect("describe");
    let high: i64 = desc
        .partition_details
        .iter()
        .map(|d| d.high_watermark)
        .sum();
    assert_eq!(
        usize::try_from(high).expect("non-negative"),
        acked.len(),
        "describe: {desc:?}"
    );
    assert_only_the_new_records(&cluster, TOPIC, PARTITIONS, &acked, &old).await;
}

/// The controller balances fetch traffic, not only partition counts and
/// produce traffic: two partitions with busy readers that share a broker end
/// up on different brokers (counts stay even), and stay there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_with_busy_readers_are_spread_by_bytes_out() {
    const PARTS: u32 = 4;
    const RECORD_BYTES: usize = 8 << 10;
    const RECORDS: usize = 64; // 512 KiB per partition
    let cluster = balanced_cluster(ClusterHarness::on_files(2).await, PARTS).await;
    let status = cluster.status().await.expect("status");
    let hot = status.partitions_of_topic(TOPIC, 1);
    assert_eq!(
        hot.len(),
        2,
        "two partitions per broker:\n{}",
        describe(&status)
    );

    let producer = cluster.producer(producer_config()).await;
    let acked = Acked::shared();
    let workload = Workload {
        topic: TOPIC.to_owned(),
        placement: Placement::RoundRobin(PARTS),
        padding: RECORD_BYTES,
        rate: None,
    };
    let failed = produce_range(&producer, &workload, 0, RECORDS * PARTS as usize, &acked).await;
    assert_eq!(failed, 0);
    producer.flush().await.expect("flush");

    // Readers re-read the two hot partitions from the start, about
    // 1 MiB/s each, while the other two are idle.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = cluster.client_url().await;
    let readers: Vec<_> = hot
        .iter()
        .map(|&partition| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let mut consumer = Consumer::connect(&url, ConsumerConfig::default())
                    .await
                    .expect("consumer");
                consumer
                    .assign(TOPIC, partition, Offset::Earliest)
                    .await
                    .expect("assign");
                let mut read = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
                        Ok(Some(Ok(r))) => {
                            read += 1;
                            if r.offset + 1 >= RECORDS as i64 {
                                tokio::time::sleep(Duration::from_millis(400)).await;
                                let _ = consumer.seek(TOPIC, partition, Offset::Earliest).await;
                            }
                        }
                        Ok(Some(Err(e))) => eprintln!("reader of {partition}: {e}"),
                        Ok(None) => break,
                        Err(_) => eprintln!("reader of {partition}: nothing for 5s"),
                    }
                }
                read
            })
        })
        .collect();

    cluster
        .wait_until(
            "the busy partitions to be on different brokers",
            SETTLE,
            |s| {
                let (a, b) = (s.owner(TOPIC, hot[0]), s.owner(TOPIC, hot[1]));
                a.is_some() && b.is_some() && a != b && s.balanced(TOPIC, PARTS)
            },
        )
        .await;
    let spread = cluster.status().await.expect("status");
    eprintln!("spread by bytes out:\n{}", describe(&spread));
    // And they stay spread while the readers go on (no flapping).
    tokio::time::sleep(HEARTBEAT_TIMEOUT * 2).await;
    let later = cluster.status().await.expect("status");
    for p in 0..PARTS {
        assert_eq!(
            later.owner(TOPIC, p),
            spread.owner(TOPIC, p),
            "partition {p} moved again:\n{}",
            describe(&later)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let read = r.await.expect("reader");
        assert!(read > RECORDS, "a reader read its partition more than once");
    }
}

/// Topic identity (issue #10): the owner of a partition with ~30 sealed
/// segments is frozen (SIGSTOP) while its topic is deleted and re-created
/// at once; the re-created topic takes records on another broker; the
/// zombie wakes up with the old topic's log still open and nobody fenced
/// its WAL. Whatever it seals or releases goes into the deleted
/// incarnation's keys (another topic id), never into the new topic's
/// chain: the new topic keeps exactly its own acknowledged records, in
/// order, and its producer state is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_of_a_deleted_topic_never_touches_the_recreated_one() {
    const T: &str = "reborn";
    let mut cluster = ClusterHarness::on_files(2).await;
    let admin = cluster.admin().await;
    let settings = TopicSettings {
        segment_bytes: Some(2048),
        max_batch_bytes: Some(2048),
        ..TopicSettings::default()
    };
    admin
        .create_topic(T, 1, settings.clone())
        .await
        .expect("create");
    // About 30 seals: one 1.5 KiB record per batch, sent one at a time.
    let history = Workload {
        topic: T.to_owned(),
        placement: Placement::RoundRobin(1),
        padding: 1500,
        rate: None,
    };
    let old = Acked::shared();
    let producer = cluster.producer(producer_config()).await;
    for i in 0..40 {
        let failed = produce_range(&producer, &history, i, 1, &old).await;
        assert_eq!(failed, 0, "the first topic takes every record");
    }
    drop(producer);
    let sealed = {
        let deadline = Instant::now() + SETTLE;
        loop {
            let d = admin.describe_topic(T).await.expect("describe");
            let segments = d.partition_details[0].segments;
            if segments >= 25 || Instant::now() > deadline {
                break segments;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(sealed >= 25, "the old topic sealed {sealed} segments");
    let status = cluster.status().await.expect("status");
    let owner = status.owner(T, 0).expect("an owner");
    eprintln!("freezing broker {owner}, owner of {T}/0 with {sealed} segments");
    cluster.stop(owner);
    drop(admin);

    // Delete and re-create through the other broker. The re-create waits
    // (retryably) until the frozen broker is no longer counted alive.
    let admin = cluster.admin().await;
    admin.delete_topic(T).await.expect("delete");
    let settings = TopicSettings {
        segment_bytes: Some(64 << 10),
        max_batch_bytes: Some(64 << 10),
        ..TopicSettings::default()
    };
    let deadline = Instant::now() + SETTLE;
    loop {
        match admin.create_topic(T, 1, settings.clone()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("re-create not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("re-create failed: {e}"),
        }
    }
    let fresh = Workload {
        topic: T.to_owned(),
        placement: Placement::RoundRobin(1),
        padding: 100,
        rate: None,
    };
    let new = Acked::shared();
    let producer = cluster.producer(producer_config()).await;
    let failed = produce_range(&producer, &fresh, 100_000, 500, &new).await;
    assert_eq!(failed, 0, "the re-created topic takes every record");

    // The zombie wakes with the old log open and its WAL unfenced.
    cluster.resume(owner);
    cluster
        .wait_until(
            &format!("broker {owner} to rejoin after SIGCONT"),
            SETTLE,
            |s| s.is_alive(owner),
        )
        .await;
    // Give it time to act on its stale log (seal, release, hand over).
    tokio::time::sleep(HEARTBEAT_TIMEOUT).await;
    let failed = produce_range(&producer, &fresh, 100_500, 500, &new).await;
    assert_eq!(
        failed, 0,
        "the re-created topic keeps taking records after the zombie woke"
    );
    drop(producer);
    let acked = std::mem::take(&mut *new.lock());
    assert_only_the_new_records(&cluster, T, 1, &acked, &old).await;
}

/// The invariant for a re-created topic: it holds exactly the records
/// acknowledged since (`acked`), none of the deleted topic's (`old`).
async fn assert_only_the_new_records(
    cluster: &ClusterHarness,
    topic: &str,
    partitions: u32,
    acked: &strata_tests::workload::Acked,
    old: &AckLog,
) {
    let url = cluster.client_url().await;
    let log = check_invariant(&url, topic, partitions, acked).await;
    let total: usize = log.values().map(Vec::len).sum();
    let leaked: Vec<&str> = log
        .values()
        .flatten()
        .map(|(_, v)| v.as_str())
        .filter(|v| old.lock().get(v).is_some())
        .collect();
    assert!(
        leaked.is_empty() && total == acked.len(),
        "the re-created topic must hold exactly its {} records, but it holds {total}, {} of them from the deleted topic: {leaked:?}",
        acked.len(),
        leaked.len()
    );
}

/// `--broker-id auto` (issue #14): three brokers started at the same moment
/// on one bucket claim the lowest ids, 0, 1 and 2, one each. After kill -9
/// of one, its id stays taken while its heartbeat is fresh (a broker
/// started at once claims 3, and gives it back on SIGTERM); once the
/// heartbeat is `cluster.forget_dead_after` old, a broker started again
/// claims the dead one's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_broker_ids_are_distinct_and_reclaimed_after_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("bucket directory");
    let options = BrokerOptions {
        auto_id: true,
        store: Some(format!("file://{}", bucket.display())),
        env: vec![
            (
                "STRATA_CLUSTER__HEARTBEAT_INTERVAL".to_owned(),
                format!("{}ms", HEARTBEAT_INTERVAL.as_millis()),
            ),
            (
                "STRATA_CLUSTER__HEARTBEAT_TIMEOUT".to_owned(),
                format!("{}ms", HEARTBEAT_TIMEOUT.as_millis()),
            ),
            (
                "STRATA_CLUSTER__FORGET_DEAD_AFTER".to_owned(),
                format!("{}ms", FORGET_DEAD_AFTER.as_millis()),
            ),
        ],
        ..BrokerOptions::default()
    };
    let start = |name: &str| {
        let (data_dir, options) = (dir.path().join(name), options.clone());
        async move { BrokerProcess::start(&data_dir, options).await }
    };
    let (a, b, c) = tokio::join!(start("a"), start("b"), start("c"));
    let mut brokers = [a, b, c];
    let mut ids: Vec<u32> = brokers.iter().map(BrokerProcess::broker_id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [0, 1, 2],
        "three brokers started at once claim 0, 1 and 2"
    );
    for broker in &brokers {
        let claimed = format!("claimed broker id {}", broker.broker_id());
        assert!(
            broker.log().contains(&claimed),
            "its log says {claimed:?}:\n{}",
            broker.log()
        );
    }
    // The admin client asks the broker with id 0, which the test leaves alone.
    let zero = brokers
        .iter()
        .find(|b| b.broker_id() == 0)
        .expect("a broker holds id 0");
    let admin = Admin::connect(&zero.url()).await.expect("admin");
    let listed = || async {
        let status = admin.cluster_status().await.expect("cluster status");
        let mut alive: Vec<u32> = status
            .brokers
            .iter()
            .filter(|b| b.alive)
            .map(|b| b.broker_id)
            .collect();
        alive.sort_unstable();
        alive
    };
    let deadline = Instant::now() + SETTLE;
    while listed().await != [0, 1, 2] {
        assert!(
            Instant::now() < deadline,
            "the cluster lists {:?}",
            listed().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 the broker holding id 1.
    let victim = brokers
        .iter()
        .position(|b| b.broker_id() == 1)
        .expect("a broker holds id 1");
    brokers[victim].kill().await;
    let killed_at = Instant::now();

    // Its heartbeat is fresh: a broker started now gets the next id.
    let mut newcomer = start("d").await;
    assert_eq!(
        newcomer.broker_id(),
        3,
        "id 1 stays taken while its heartbeat is fresh"
    );
    let status = newcomer.terminate(DRAIN_TIMEOUT).await;
    assert!(status.success(), "SIGTERM exits 0: {status}");

    // Once the heartbeat is forget_dead_after old, id 1 is free again (and
    // 3 was given back on SIGTERM, but 1 is lower).
    let forgotten = killed_at + FORGET_DEAD_AFTER + Duration::from_millis(500);
    tokio::time::sleep_until(forgotten.into()).await;
    brokers[victim].restart().await;
    assert_eq!(
        brokers[victim].broker_id(),
        1,
        "the restarted broker claims the dead one's id; its log:\n{}",
        brokers[victim].log()
    );
    let deadline = Instant::now() + SETTLE;
    while listed().await != [0, 1, 2] {
        assert!(
            Instant::now() < deadline,
            "the cluster lists {:?}",
            listed().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for broker in &mut brokers {
        let status = broker.terminate(DRAIN_TIMEOUT).await;
        assert!(status.success(), "SIGTERM exits 0: {status}");
    }
}
