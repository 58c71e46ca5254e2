//! A cluster of real `strata serve` processes sharing one bucket, for the
//! cluster tests (`tests/tests/cluster.rs`).
//!
//! [`ClusterHarness::start`] runs `n` brokers (ids 1, 2, …), each with its
//! own data directory under one temporary directory and the same `--store`,
//! on free loopback ports, with fast cluster timings ([`HEARTBEAT_INTERVAL`],
//! [`HEARTBEAT_TIMEOUT`]). [`ClusterHarness::status`] asks the first broker
//! that is running (not stopped, not gone) for `Cluster.Status`, and
//! [`ClusterHarness::wait_until`] polls it until a condition holds, within a
//! deadline. Faults are per broker: kill -9, SIGSTOP / SIGCONT, SIGTERM.
//!
//! When a test panics, dropping the harness prints the end of every
//! broker's log and keeps the temporary directory (its path is printed), so
//! a failure in CI can be read without running it again.
//!
//! What a newcomer must not break: every wait is bounded, and every broker
//! runs on port 0 in its own directory, so tests can run in parallel.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use strata_client::{Admin, Producer, ProducerConfig};
use strata_proto::v1::cluster_client::ClusterClient;
use strata_proto::v1::strata_client::StrataClient;
use strata_proto::v1::{
    Acks, BrokerStatus, ClusterStatus, ClusterStatusRequest, DrainRequest, DrainResponse,
    MoveRequest, MoveResponse, ProduceRequest, produce_request,
};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use crate::broker::{BrokerOptions, BrokerProcess};
use crate::s3::TestS3;

/// How often brokers heartbeat in these tests.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);

/// How long without a heartbeat change before a broker is declared dead.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// `cluster.forget_dead_after` of the test brokers.
pub const FORGET_DEAD_AFTER: Duration = Duration::from_secs(3);

/// How often group members heartbeat in the test clusters.
pub const GROUP_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(300);

/// How long one `Cluster` call may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`ClusterHarness::wait_until`] asks for the status.
const POLL: Duration = Duration::from_millis(100);

/// Lines of each broker's log printed when a test fails.
const LOG_TAIL_LINES: usize = 150;

/// What a member process is doing, as far as the harness knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Running (it may be draining).
    Running,
    /// Frozen by SIGSTOP.
    Stopped,
    /// Exited or killed.
    Gone,
}

#[derive(Debug)]
struct Member {
    process: BrokerProcess,
    state: State,
    channel: Channel,
}

/// Several brokers over one bucket.
#[derive(Debug)]
pub struct ClusterHarness {
    members: Vec<Member>,
    store: String,
    env: Vec<(String, String)>,
    dir: TempDir,
}

impl ClusterHarness {
    /// `n` brokers over a fresh `file://` bucket in the harness's directory.
    pub async fn on_files(n: u32) -> ClusterHarness {
        Self::on_files_with(n, Vec::new()).await
    }

    /// `n` brokers over a fresh `file://` bucket, each with `env` (STRATA_*
    /// settings).
    pub async fn on_files_with(n: u32, env: Vec<(String, String)>) -> ClusterHarness {
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = dir.path().join("bucket");
        std::fs::create_dir_all(&bucket).expect("bucket directory");
        let store = format!("file://{}", bucket.display());
        Self::start_in(dir, n, store, env).await
    }

    /// `n` brokers over a fresh bucket of `s3`.
    pub async fn on_s3(n: u32, s3: &TestS3) -> ClusterHarness {
        let (store, env) = s3.bucket_url().await;
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, n, store, env).await
    }

    /// `n` brokers over `store` (a `--store` URL), with `env` (e.g. AWS_*)
    /// for each.
    pub async fn start(n: u32, store: String, env: Vec<(String, String)>) -> ClusterHarness {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, n, store, env).await
    }

    async fn start_in(
        dir: TempDir,
        n: u32,
        store: String,
        env: Vec<(String, String)>,
    ) -> ClusterHarness {
        let mut cluster = ClusterHarness {
            members: Vec::new(),
            store,
            env,
            dir,
        };
        for _ in 0..n {
            cluster.add_broker().await;
        }
        cluster
    }

    /// Starts one more broker (the next id) and returns its id. Waits for
    /// its ready line, not for it to own anything.
    pub async fn add_broker(&mut self) -> u32 {
        let id = self.members.len() as u32 + 1;
        let mut env = vec![
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
            // Groups at test speed: members heartbeat often, may ask for
            // short sessions, and coordinators snapshot (and truncate
            // their logs) often.
            (
                "STRATA_GROUP__HEARTBEAT_INTERVAL".to_owned(),
                format!("{}ms", GROUP_HEARTBEAT_INTERVAL.as_millis()),
            ),
            (
                "STRATA_GROUP__MIN_SESSION_TIMEOUT".to_owned(),
                "500ms".to_owned(),
            ),
            (
                "STRATA_GROUP__OFFSETS_PARTITIONS".to_owned(),
                "4".to_owned(),
            ),
            (
                "STRATA_GROUP__SNAPSHOT_RECORDS".to_owned(),
                "200".to_owned(),
            ),
        ];
        env.extend(self.env.iter().cloned());
        let process = BrokerProcess::start(
            &self.dir.path().join(format!("broker-{id}")),
            BrokerOptions {
                broker_id: id,
                store: Some(self.store.clone()),
                env,
                ..BrokerOptions::default()
            },
        )
        .await;
        let channel = Endpoint::from_shared(process.url())
            .expect("broker url")
            .connect_timeout(Duration::from_secs(2))
            .timeout(RPC_TIMEOUT)
            .connect_lazy();
        self.members.push(Member {
            process,
            state: State::Running,
            channel,
        });
        id
    }

    fn member(&self, id: u32) -> &Member {
        self.members
            .get(id.wrapping_sub(1) as usize)
            .unwrap_or_else(|| panic!("no broker {id} in this cluster"))
    }

    fn member_mut(&mut self, id: u32) -> &mut Member {
        self.members
            .get_mut(id.wrapping_sub(1) as usize)
            .unwrap_or_else(|| panic!("no broker {id} in this cluster"))
    }

    /// The process of broker `id`.
    pub fn broker(&self, id: u32) -> &BrokerProcess {
        &self.member(id).process
    }

    /// What broker `id` is doing.
    pub fn state(&self, id: u32) -> State {
        self.member(id).state
    }

    /// Ids of the brokers that are running.
    pub fn running(&self) -> Vec<u32> {
        (1..=self.members.len() as u32)
            .filter(|id| self.state(*id) == State::Running)
            .collect()
    }

    /// The gRPC URL of broker `id`.
    pub fn url(&self, id: u32) -> String {
        self.broker(id).url()
    }

    /// The store URL every broker uses.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The URL clients should bootstrap from: every running broker,
    /// comma-separated, when the client accepts a list, else the first
    /// running broker. (The tests never fault broker 1, so a single
    /// bootstrap URL is enough for them to work.)
    pub async fn client_url(&self) -> String {
        let running = self.running();
        let first = self.url(*running.first().expect("a running broker"));
        if running.len() > 1 {
            let all = running
                .iter()
                .map(|id| self.url(*id))
                .collect::<Vec<_>>()
                .join(",");
            if Admin::connect(&all).await.is_ok() {
                return all;
            }
        }
        first
    }

    /// A producer bootstrapped from [`ClusterHarness::client_url`].
    pub async fn producer(&self, config: ProducerConfig) -> Producer {
        let url = self.client_url().await;
        Producer::connect(&url, config)
            .await
            .unwrap_or_else(|e| panic!("producer connects to {url}: {e}"))
    }

    /// An admin client bootstrapped from [`ClusterHarness::client_url`].
    pub async fn admin(&self) -> Admin {
        let url = self.client_url().await;
        Admin::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("admin connects to {url}: {e}"))
    }

    /// A `Cluster` client for broker `id`.
    pub fn cluster_client(&self, id: u32) -> ClusterClient<Channel> {
        ClusterClient::new(self.member(id).channel.clone())
    }

    /// kill -9 broker `id`.
    pub async fn kill(&mut self, id: u32) {
        let member = self.member_mut(id);
        member.process.kill().await;
        member.state = State::Gone;
    }

    /// SIGSTOP broker `id`.
    pub fn stop(&mut self, id: u32) {
        let member = self.member_mut(id);
        member.process.stop();
        member.state = State::Stopped;
    }

    /// SIGCONT broker `id`.
    pub fn resume(&mut self, id: u32) {
        let member = self.member_mut(id);
        member.process.resume();
        member.state = State::Running;
    }

    /// SIGTERM broker `id` and wait (at most `timeout`) for it to exit.
    pub async fn terminate(&mut self, id: u32, timeout: Duration) -> ExitStatus {
        let member = self.member_mut(id);
        member.state = State::Gone;
        member.process.terminate(timeout).await
    }

    /// Waits (at most `timeout`) for broker `id` to exit by itself (after a
    /// `Drain`).
    pub async fn wait_exit(&mut self, id: u32, timeout: Duration) -> ExitStatus {
        let member = self.member_mut(id);
        member.state = State::Gone;
        member.process.wait_exit(timeout, "Cluster.Drain").await
    }

    /// Starts broker `id` again (same directory, same ports) after it died.
    pub async fn restart(&mut self, id: u32) {
        let member = self.member_mut(id);
        member.process.restart().await;
        member.state = State::Running;
    }

    /// `Cluster.Status` from the first running broker that answers.
    ///
    /// # Errors
    /// What each running broker answered, when none did.
    pub async fn status(&self) -> Result<ClusterStatus, String> {
        let mut errors = Vec::new();
        for id in self.running() {
            let mut client = self.cluster_client(id);
            match tokio::time::timeout(RPC_TIMEOUT, client.status(ClusterStatusRequest {})).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => errors.push(format!("broker {id}: {status}")),
                Err(_) => errors.push(format!("broker {id}: no answer within {RPC_TIMEOUT:?}")),
            }
        }
        Err(if errors.is_empty() {
            "no broker is running".to_owned()
        } else {
            errors.join("; ")
        })
    }

    /// Polls the status until `done` holds, at most `timeout`; returns the
    /// status that satisfied it.
    ///
    /// # Panics
    /// When it does not hold in time; the message has the last status and
    /// the last error.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&ClusterStatus) -> bool,
    ) -> ClusterStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: Option<ClusterStatus> = None;
        let mut last_error = None;
        loop {
            match self.status().await {
                Ok(status) => {
                    if done(&status) {
                        return status;
                    }
                    last = Some(status);
                }
                Err(e) => last_error = Some(e),
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nlast status: {}\nlast error: {}",
                    last.as_ref().map_or("none".to_owned(), describe),
                    last_error.as_deref().unwrap_or("none"),
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `Cluster.Move` of `topic/partition` to broker `to`, asked of broker `via`.
    ///
    /// # Panics
    /// When the call fails.
    pub async fn move_partition(
        &self,
        via: u32,
        topic: &str,
        partition: u32,
        to: u32,
    ) -> MoveResponse {
        let mut client = self.cluster_client(via);
        let request = MoveRequest {
            topic: topic.to_owned(),
            partition,
            to_broker_id: to,
        };
        match tokio::time::timeout(RPC_TIMEOUT, client.r#move(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                panic!("move of {topic}/{partition} to broker {to} via {via} failed: {status}")
            }
            Err(_) => panic!("move of {topic}/{partition} to broker {to} via {via}: no answer"),
        }
    }

    /// `Cluster.Drain` of broker `id`, asked of broker `via`.
    ///
    /// # Panics
    /// When the call fails.
    pub async fn drain(&self, via: u32, id: u32) -> DrainResponse {
        let mut client = self.cluster_client(via);
        match tokio::time::timeout(RPC_TIMEOUT, client.drain(DrainRequest { broker_id: id })).await
        {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => panic!("drain of broker {id} via {via} failed: {status}"),
            Err(_) => panic!("drain of broker {id} via {via}: no answer"),
        }
    }

    /// Produces one record with value `value` (acks=all, no producer id)
    /// straight to the broker the current status names as the owner of
    /// `topic/partition`: a probe of whether the partition is served,
    /// without the client library's routing and retry backoff. Returns the
    /// owner and the record's offset.
    ///
    /// # Errors
    /// Why it was not acknowledged (no status, no owner, the owner refused).
    pub async fn produce_to_owner(
        &self,
        topic: &str,
        partition: u32,
        value: &[u8],
    ) -> Result<(u32, i64), String> {
        let status = self.status().await?;
        let owner = status
            .owner(topic, partition)
            .ok_or_else(|| format!("{topic}/{partition} is unassigned"))?;
        if self.members.get(owner.wrapping_sub(1) as usize).is_none() {
            return Err(format!(
                "{topic}/{partition} is assigned to unknown broker {owner}"
            ));
        }
        let mut builder = strata_storage::batch::BatchBuilder::new();
        builder.push(0, None, Some(value), &[]);
        let request = ProduceRequest {
            topic: topic.to_owned(),
            partition,
            acks: Acks::All as i32,
            payload: Some(produce_request::Payload::Batch(builder.build())),
        };
        let mut client = StrataClient::new(self.member(owner).channel.clone());
        match tokio::time::timeout(RPC_TIMEOUT, client.produce(request)).await {
            Ok(Ok(response)) => Ok((owner, response.into_inner().base_offset)),
            Ok(Err(status)) => Err(format!(
                "broker {owner}: {}",
                strata_proto::ErrorInfo::from_status(&status)
            )),
            Err(_) => Err(format!("broker {owner}: no answer within {RPC_TIMEOUT:?}")),
        }
    }

    /// The end of every broker's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let log = member.process.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            let _ = writeln!(
                out,
                "----- broker {} ({:?}), last {} of {} lines of {} -----",
                member.process.broker_id(),
                member.state,
                lines.len() - from,
                lines.len(),
                member.process.log_path().display()
            );
            for line in &lines[from..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// The directory holding every broker's data directory (and a `file://`
    /// bucket).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for ClusterHarness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
            self.dir.disable_cleanup(true);
            eprintln!(
                "cluster test failed; broker logs and data kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// Questions about a [`ClusterStatus`].
pub trait StatusExt {
    /// The broker's entry, if it is listed.
    fn broker(&self, id: u32) -> Option<&BrokerStatus>;
    /// Whether the broker is listed and alive.
    fn is_alive(&self, id: u32) -> bool;
    /// Ids of the alive brokers.
    fn alive(&self) -> Vec<u32>;
    /// The broker `topic/partition` is assigned to.
    fn owner(&self, topic: &str, partition: u32) -> Option<u32>;
    /// Partitions (of every topic) assigned to the broker.
    fn partitions_of(&self, id: u32) -> Vec<(String, u32)>;
    /// Partitions of `topic` assigned to the broker.
    fn partitions_of_topic(&self, topic: &str, id: u32) -> Vec<u32>;
    /// Whether all `partitions` of `topic` are assigned to alive brokers.
    fn all_served(&self, topic: &str, partitions: u32) -> bool;
    /// [`StatusExt::all_served`], and every alive, non-draining broker has
    /// at least one partition of `topic`.
    fn balanced(&self, topic: &str, partitions: u32) -> bool;
}

impl StatusExt for ClusterStatus {
    fn broker(&self, id: u32) -> Option<&BrokerStatus> {
        self.brokers.iter().find(|b| b.broker_id == id)
    }

    fn is_alive(&self, id: u32) -> bool {
        self.broker(id).is_some_and(|b| b.alive)
    }

    fn alive(&self) -> Vec<u32> {
        self.brokers
            .iter()
            .filter(|b| b.alive)
            .map(|b| b.broker_id)
            .collect()
    }

    fn owner(&self, topic: &str, partition: u32) -> Option<u32> {
        self.partitions
            .iter()
            .find(|p| p.topic == topic && p.partition == partition)
            .and_then(|p| p.broker_id)
    }

    fn partitions_of(&self, id: u32) -> Vec<(String, u32)> {
        self.partitions
            .iter()
            .filter(|p| p.broker_id == Some(id))
            .map(|p| (p.topic.clone(), p.partition))
            .collect()
    }

    fn partitions_of_topic(&self, topic: &str, id: u32) -> Vec<u32> {
        self.partitions
            .iter()
            .filter(|p| p.topic == topic && p.broker_id == Some(id))
            .map(|p| p.partition)
            .collect()
    }

    fn all_served(&self, topic: &str, partitions: u32) -> bool {
        (0..partitions).all(|p| self.owner(topic, p).is_some_and(|b| self.is_alive(b)))
    }

    fn balanced(&self, topic: &str, partitions: u32) -> bool {
        self.all_served(topic, partitions)
            && self
                .brokers
                .iter()
                .filter(|b| b.alive && !b.draining)
                .all(|b| !self.partitions_of_topic(topic, b.broker_id).is_empty())
    }
}

/// One line per broker and per partition, for failure messages.
pub fn describe(status: &ClusterStatus) -> String {
    let mut out = format!(
        "answered by {}, controller {:?} (term {}), assignment v{}",
        status.broker_id, status.controller_id, status.controller_term, status.assignment_version
    );
    for b in &status.brokers {
        let _ = write!(
            out,
            "\n  broker {} {} inc={} owns={} hb_age={}ms{}{} {}",
            b.broker_id,
            if b.alive { "alive" } else { "DEAD" },
            b.incarnation,
            b.partitions_owned,
            b.heartbeat_age_ms,
            if b.draining { " draining" } else { "" },
            if b.controller { " controller" } else { "" },
            b.address
        );
    }
    for p in &status.partitions {
        let _ = write!(
            out,
            "\n  {}/{} -> {}{}",
            p.topic,
            p.partition,
            p.broker_id
                .map_or("unassigned".to_owned(), |b| format!("broker {b}")),
            if p.pinned { " (pinned)" } else { "" }
        );
    }
    out
}
