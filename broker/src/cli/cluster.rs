//! `strata cluster status|drain|move`: look at the brokers of a cluster and
//! move work between them.
//!
//! Every broker answers the `Cluster` service for the whole cluster, so
//! `--broker` may name any of them (or several, comma-separated: any one
//! that answers will do). `drain --wait` and `move --wait` poll until the
//! change has taken effect and say how long it took.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_client::ConnectOptions;
use strata_client::proto::v1::strata_client::StrataClient;
use strata_client::proto::v1::{BrokerStatus, ClusterStatus, ListOffsetsRequest, OffsetSpec};

use super::{BrokerArgs, human_bytes, print_stdout, table};

/// How often `drain --wait` asks for the cluster status.
const DRAIN_POLL: Duration = Duration::from_millis(500);
/// How often `move --wait` probes the new owner (moves take milliseconds).
const MOVE_POLL: Duration = Duration::from_millis(10);
/// Timeout of one probe of the new owner.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Brokers of the cluster: status, drain, move.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the brokers (liveness, load, controller) and which broker serves
    /// each partition.
    Status(StatusArgs),
    /// Move every partition off a broker, then stop it (what SIGTERM does).
    ///
    /// The broker's partitions go to the other live brokers; once it owns
    /// none it exits with status 0. With --wait, follows the drain until the
    /// broker is gone.
    ///
    /// Example: strata cluster drain 2 --wait
    Drain(DrainArgs),
    /// Move one partition to a broker and pin it there.
    ///
    /// The balancer leaves a pinned partition where it is until its broker
    /// drains or dies. With --wait, waits until the new broker serves the
    /// partition and prints how long the move took.
    ///
    /// Example: strata cluster move orders/3 --to 2 --wait
    Move(MoveArgs),
}

/// `strata cluster status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `strata cluster drain`.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// Id of the broker to drain (see `strata cluster status`).
    #[arg(value_name = "BROKER_ID")]
    pub broker_id: u32,
    /// Wait until the broker has handed over its partitions and stopped.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (`90s`, `5m`).
    #[arg(long, value_parser = super::parse_duration, default_value = "120s", value_name = "DUR", requires = "wait")]
    pub timeout: Duration,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `strata cluster move`.
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// The partition to move, as TOPIC/PARTITION (e.g. orders/3).
    #[arg(value_parser = parse_topic_partition, value_name = "TOPIC/PARTITION")]
    pub partition: TopicPartition,
    /// Id of the broker to move it to (see `strata cluster status`).
    #[arg(long = "to", value_name = "BROKER_ID")]
    pub to: u32,
    /// Wait until the new broker serves the partition, and print how long
    /// the move took.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long.
    #[arg(long, value_parser = super::parse_duration, default_value = "30s", value_name = "DUR", requires = "wait")]
    pub timeout: Duration,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// A partition named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Parses `orders/3`.
fn parse_topic_partition(s: &str) -> Result<TopicPartition, String> {
    const EXPECTED: &str = "expected TOPIC/PARTITION, like orders/3";
    let Some((topic, partition)) = s.trim().rsplit_once('/') else {
        return Err(format!("{EXPECTED}: {s}"));
    };
    if topic.is_empty() {
        return Err(format!("topic name is empty; {EXPECTED}: {s}"));
    }
    let partition = partition
        .parse::<u32>()
        .map_err(|_| format!("partition must be a number; {EXPECTED}: {s}"))?;
    Ok(TopicPartition {
        topic: topic.to_owned(),
        partition,
    })
}

/// Runs the command.
pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status(a) => status(a).await,
        ClusterCommand::Drain(a) => drain(a).await,
        ClusterCommand::Move(a) => move_partition(a).await,
    }
}

async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let status = admin
        .cluster_status()
        .await
        .context("cannot get the cluster status")?;
    let out = if a.json {
        let mut s = serde_json::to_string_pretty(&status_json(&status))?;
        s.push('\n');
        s
    } else {
        status_text(&status)
    };
    print_stdout(&out)
}

async fn drain(a: DrainArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let id = a.broker_id;
    let status = admin
        .cluster_status()
        .await
        .context("cannot get the cluster status")?;
    let b = find_broker(&status, id)?;
    if !b.alive {
        bail!(
            "broker {id} is not alive (last heartbeat {} ago), nothing to drain; \
             its partitions move to the live brokers by themselves",
            human_age(b.heartbeat_age_ms)
        );
    }
    let started = Instant::now();
    let message = admin
        .drain_broker(id)
        .await
        .with_context(|| format!("cannot drain broker {id}"))?;
    if message.is_empty() {
        eprintln!("broker {id} is draining");
    } else {
        eprintln!("{message}");
    }
    if !a.wait {
        eprintln!("follow it with `strata cluster status`, or pass --wait");
        return Ok(());
    }
    let deadline = started + a.timeout;
    let mut last_owned = None;
    loop {
        match admin.cluster_status().await {
            Ok(status) => match status.brokers.iter().find(|b| b.broker_id == id) {
                Some(b) if b.alive => {
                    if last_owned != Some(b.partitions_owned) {
                        eprintln!(
                            "broker {id} draining: {} still owned",
                            plural(b.partitions_owned, "partition")
                        );
                        last_owned = Some(b.partitions_owned);
                    }
                }
                _ => {
                    eprintln!(
                        "broker {id} drained and stopped in {}",
                        human_elapsed(started.elapsed())
                    );
                    return Ok(());
                }
            },
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "cluster status failed; retrying");
            }
            Err(e) => return Err(e).context("cannot get the cluster status"),
        }
        if Instant::now() + DRAIN_POLL > deadline {
            let owned = last_owned.map_or_else(
                || "unknown partitions".to_owned(),
                |n| plural(n, "partition"),
            );
            bail!(
                "broker {id} is still alive after {} ({owned} still owned); \
                 check its logs, or wait longer with --timeout",
                humantime::format_duration(a.timeout)
            );
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

async fn move_partition(a: MoveArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let tp = &a.partition;
    let to = a.to;
    let status = admin
        .cluster_status()
        .await
        .context("cannot get the cluster status")?;
    let target = find_broker(&status, to)?;
    if !target.alive {
        bail!("broker {to} is not alive; move {tp} to a live broker (see `strata cluster status`)");
    }
    let known_topic = status.partitions.iter().any(|p| p.topic == tp.topic);
    let known_partition = status
        .partitions
        .iter()
        .any(|p| p.topic == tp.topic && p.partition == tp.partition);
    if known_topic && !known_partition {
        bail!(
            "unknown partition; see `strata topic describe {}` for its partitions: {tp}",
            tp.topic
        );
    }
    let target_address = target.address.clone();
    let started = Instant::now();
    let moved = admin
        .move_partition(&tp.topic, tp.partition, to)
        .await
        .with_context(|| format!("cannot move {tp} to broker {to}"))?;
    let from = match moved.from_broker_id {
        Some(f) if f == to => {
            eprintln!("{tp} was already on broker {to}; it is pinned there now");
            return Ok(());
        }
        Some(f) => format!("from broker {f} "),
        None => String::new(),
    };
    if !a.wait {
        eprintln!(
            "moving {tp} {from}to broker {to} (assignment version {}); \
             pass --wait to wait for broker {to} to serve it",
            moved.assignment_version
        );
        return Ok(());
    }
    let options = a.broker.connect_options()?;
    wait_until_served(tp, to, &target_address, &options, started + a.timeout)
        .await
        .with_context(|| {
            format!("the move of {tp} to broker {to} is published, but not done yet")
        })?;
    eprintln!(
        "moved {tp} {from}to broker {to} in {}",
        human_elapsed(started.elapsed())
    );
    Ok(())
}

/// Polls `ListOffsets(LATEST)` on the broker at `address` until it answers
/// for `tp`, i.e. serves the partition.
async fn wait_until_served(
    tp: &TopicPartition,
    to: u32,
    address: &str,
    options: &ConnectOptions,
    deadline: Instant,
) -> anyhow::Result<()> {
    if address.is_empty() {
        bail!("broker {to} advertises no address; check its `advertised_address` setting");
    }
    let channel = options
        .endpoint(address)
        .with_context(|| format!("broker {to} advertises an invalid address: {address}"))?
        .connect_timeout(PROBE_TIMEOUT)
        .connect_lazy();
    let channel =
        tonic::service::interceptor::InterceptedService::new(channel, options.authorize()?);
    let mut client = StrataClient::new(channel);
    loop {
        let mut req = tonic::Request::new(ListOffsetsRequest {
            topic: tp.topic.clone(),
            partition: tp.partition,
            spec: OffsetSpec::Latest as i32,
            timestamp_ms: 0,
        });
        req.set_timeout(PROBE_TIMEOUT);
        let last_error = match tokio::time::timeout(PROBE_TIMEOUT, client.list_offsets(req)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(status)) => status.message().to_owned(),
            Err(_) => "no answer within 2s".to_owned(),
        };
        if Instant::now() + MOVE_POLL > deadline {
            bail!(
                "broker {to} at {address} does not serve {tp} yet (last error: {last_error}); \
                 check `strata cluster status` and the broker's logs, or wait longer with --timeout"
            );
        }
        tokio::time::sleep(MOVE_POLL).await;
    }
}

/// The broker with id `id`, or an error listing the ids there are.
fn find_broker(status: &ClusterStatus, id: u32) -> anyhow::Result<&BrokerStatus> {
    status
        .brokers
        .iter()
        .find(|b| b.broker_id == id)
        .ok_or_else(|| {
            let ids: Vec<String> = status
                .brokers
                .iter()
                .map(|b| b.broker_id.to_string())
                .collect();
            anyhow::anyhow!(
                "unknown broker id; the cluster has brokers {} (see `strata cluster status`): {id}",
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            )
        })
}

/// The status as tables: a summary line, the brokers, the partitions.
fn status_text(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let controller = s
        .controller_id
        .map_or_else(|| "none".to_owned(), |c| c.to_string());
    let _ = writeln!(
        out,
        "Controller: {controller} (term {})\tAssignment version: {}\tAnswered by: broker {}\n",
        s.controller_term, s.assignment_version, s.broker_id
    );
    let mut rows = vec![
        [
            "BROKER",
            "ADDRESS",
            "ALIVE",
            "DRAINING",
            "CONTROLLER",
            "PARTITIONS",
            "IN",
            "OUT",
            "CPU",
            "HEARTBEAT",
        ]
        .map(String::from),
    ];
    for b in &s.brokers {
        rows.push([
            b.broker_id.to_string(),
            if b.address.is_empty() {
                "-".to_owned()
            } else {
                b.address.clone()
            },
            yes_no(b.alive).to_owned(),
            yes_no(b.draining).to_owned(),
            if b.controller { "*" } else { "" }.to_owned(),
            b.partitions_owned.to_string(),
            human_rate(b.bytes_in_per_sec),
            human_rate(b.bytes_out_per_sec),
            human_cpu(b.cpu_cores),
            format!("{} ago", human_age(b.heartbeat_age_ms)),
        ]);
    }
    out.push_str(&table(&rows));
    out.push('\n');
    let mut rows = vec![["PARTITION", "BROKER", "PINNED", "IN", "OUT"].map(String::from)];
    for p in &s.partitions {
        rows.push([
            format!("{}/{}", p.topic, p.partition),
            p.broker_id
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
            if p.pinned { "pinned" } else { "" }.to_owned(),
            human_rate(p.bytes_in_per_sec),
            human_rate(p.bytes_out_per_sec),
        ]);
    }
    if s.partitions.is_empty() {
        out.push_str("no partitions assigned\n");
    } else {
        out.push_str(&table(&rows));
    }
    out
}

/// The status as a JSON value (the proto's field names).
fn status_json(s: &ClusterStatus) -> serde_json::Value {
    use serde_json::json;
    let brokers: Vec<serde_json::Value> = s
        .brokers
        .iter()
        .map(|b| {
            json!({
                "broker_id": b.broker_id,
                "address": b.address,
                "http_address": b.http_address,
                "incarnation": b.incarnation,
                "alive": b.alive,
                "draining": b.draining,
                "controller": b.controller,
                "partitions_owned": b.partitions_owned,
                "bytes_in_per_sec": b.bytes_in_per_sec,
                "bytes_out_per_sec": b.bytes_out_per_sec,
                "cpu_cores": b.cpu_cores,
                "heartbeat_age_ms": b.heartbeat_age_ms,
            })
        })
        .collect();
    let partitions: Vec<serde_json::Value> = s
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "broker_id": p.broker_id,
                "pinned": p.pinned,
                "bytes_in_per_sec": p.bytes_in_per_sec,
                "bytes_out_per_sec": p.bytes_out_per_sec,
            })
        })
        .collect();
    json!({
        "broker_id": s.broker_id,
        "controller_id": s.controller_id,
        "controller_term": s.controller_term,
        "assignment_version": s.assignment_version,
        "brokers": brokers,
        "partitions": partitions,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `1 partition`, `3 partitions`.
fn plural(n: u32, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Bytes per second with binary units (`1.5 MiB/s`); `-` when unknown.
fn human_rate(bytes_per_sec: f64) -> String {
    if !bytes_per_sec.is_finite() || bytes_per_sec < 0.0 {
        return "-".to_owned();
    }
    // Saturating: rates beyond u64 are not real.
    format!("{}/s", human_bytes(bytes_per_sec.round() as u64))
}

/// CPU cores used, two decimals; `-` when unknown.
fn human_cpu(cores: f64) -> String {
    if !cores.is_finite() || cores < 0.0 {
        return "-".to_owned();
    }
    format!("{cores:.2}")
}

/// A heartbeat age: `850ms`, `4.2s`, `3m 20s`.
fn human_age(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
}

/// How long an operation took: `48 ms`, `2.3 s`.
fn human_elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_client::proto::v1::PartitionAssignment;

    #[test]
    fn topic_partitions_parse() {
        assert_eq!(
            parse_topic_partition("orders/3"),
            Ok(TopicPartition {
                topic: "orders".into(),
                partition: 3
            })
        );
        // The last slash separates the partition.
        assert_eq!(
            parse_topic_partition("a/b/0").unwrap().topic,
            "a/b".to_owned()
        );
        for bad in ["orders", "orders/", "/3", "orders/x", "orders/-1", ""] {
            let e = parse_topic_partition(bad).unwrap_err();
            assert!(e.contains("TOPIC/PARTITION"), "{bad}: {e}");
            assert!(e.ends_with(bad), "names the value: {e}");
        }
        assert_eq!(
            TopicPartition {
                topic: "t".into(),
                partition: 7
            }
            .to_string(),
            "t/7"
        );
    }

    #[test]
    fn rates_and_ages_are_human() {
        assert_eq!(human_rate(0.0), "0 B/s");
        assert_eq!(human_rate(0.4), "0 B/s");
        assert_eq!(human_rate(1536.0), "1.5 KiB/s");
        assert_eq!(human_rate(12.5 * 1024.0 * 1024.0), "12.5 MiB/s");
        assert_eq!(human_rate(f64::NAN), "-");
        assert_eq!(human_rate(-1.0), "-");
        assert_eq!(human_cpu(0.5), "0.50");
        assert_eq!(human_age(850), "850ms");
        assert_eq!(human_age(4_200), "4.2s");
        assert_eq!(human_age(200_500), "3m 20s");
        assert_eq!(human_elapsed(Duration::from_millis(48)), "48 ms");
        assert_eq!(human_elapsed(Duration::from_millis(2_340)), "2.3 s");
        assert_eq!(plural(1, "partition"), "1 partition");
        assert_eq!(plural(0, "partition"), "0 partitions");
    }

    fn sample() -> ClusterStatus {
        ClusterStatus {
            broker_id: 1,
            controller_id: Some(0),
            controller_term: 3,
            assignment_version: 17,
            brokers: vec![
                BrokerStatus {
                    broker_id: 0,
                    address: "http://127.0.0.1:50051".into(),
                    alive: true,
                    controller: true,
                    partitions_owned: 1,
                    bytes_in_per_sec: 2048.0,
                    heartbeat_age_ms: 120,
                    ..Default::default()
                },
                BrokerStatus {
                    broker_id: 1,
                    address: "http://127.0.0.1:50052".into(),
                    alive: true,
                    draining: true,
                    ..Default::default()
                },
            ],
            partitions: vec![
                PartitionAssignment {
                    topic: "orders".into(),
                    partition: 0,
                    broker_id: Some(0),
                    pinned: true,
                    bytes_in_per_sec: 2048.0,
                    bytes_out_per_sec: 3.0 * 1024.0 * 1024.0,
                },
                PartitionAssignment {
                    topic: "orders".into(),
                    partition: 1,
                    broker_id: None,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn status_renders() {
        let s = sample();
        let text = status_text(&s);
        assert!(text.starts_with("Controller: 0 (term 3)"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("BROKER  ADDRESS"), "{text}");
        assert!(lines[3].contains("yes") && lines[3].contains("*"), "{text}");
        assert!(lines[3].contains("2.0 KiB/s") && lines[3].contains("120ms ago"));
        let draining: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(draining[..4], ["1", "http://127.0.0.1:50052", "yes", "yes"]);
        assert!(
            text.contains("orders/0   0       pinned  2.0 KiB/s  3.0 MiB/s"),
            "{text}"
        );
        assert!(text.contains("orders/1   -"), "{text}");

        let j = status_json(&s);
        assert_eq!(j["controller_id"], 0);
        assert_eq!(j["brokers"][1]["draining"], true);
        assert_eq!(j["partitions"][1]["broker_id"], serde_json::Value::Null);
        assert_eq!(
            j["partitions"][0]["bytes_out_per_sec"],
            3.0 * 1024.0 * 1024.0
        );
    }

    #[test]
    fn unknown_broker_ids_list_the_known_ones() {
        let s = sample();
        assert_eq!(find_broker(&s, 1).unwrap().broker_id, 1);
        let e = find_broker(&s, 7).unwrap_err().to_string();
        assert!(e.contains("brokers 0, 1") && e.ends_with(": 7"), "{e}");
    }

    #[test]
    fn clap_definitions_are_valid() {
        use clap::{CommandFactory, Parser};
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cluster: ClusterCommand,
        }
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["strata", "move", "orders/3", "--to", "2", "--wait"]);
        assert!(c.is_ok(), "{c:?}");
        let c = Cli::try_parse_from(["strata", "move", "orders", "--to", "2"]);
        assert!(c.is_err(), "malformed TOPIC/PARTITION");
        let c = Cli::try_parse_from(["strata", "move", "orders/3"]);
        assert!(c.is_err(), "--to is required");
        let c = Cli::try_parse_from(["strata", "drain", "2", "--timeout", "5s"]);
        assert!(c.is_err(), "--timeout needs --wait");
        let c = Cli::try_parse_from(["strata", "drain", "2", "--wait", "--timeout", "5s"]);
        assert!(c.is_ok(), "{c:?}");
        let c = Cli::try_parse_from(["strata", "status", "--json"]);
        assert!(c.is_ok(), "{c:?}");
    }
}
