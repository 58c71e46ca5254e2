//! `strata bench group`: how consumer groups behave on a real cluster.
//!
//! Starts its own brokers (this binary, `strata serve`, on loopback ports,
//! sharing one bucket) and a topic with a steady produce load, then
//! measures:
//!
//! 1. **Rebalance time**: with a stable group of 3 members, a 4th joins;
//!    the time until every partition was consumed again (each has
//!    delivered a record after the join to the member that holds it then,
//!    and the new member holds its share). The 4th member then leaves.
//!    Median and maximum of `--rounds`.
//! 2. **Commit latency**: `--committers` clients, each committing to a
//!    group of its own at an equal share of `--commit-rate`, for
//!    `--commit-for`: p50 / p99 / max from the call to the durable answer.
//! 3. **Store PUTs per 1,000 commits** during (2), from the brokers'
//!    `/metrics`, minus the PUTs of the same idle cluster over as long
//!    (heartbeats); every commit is durable before its answer, so this is
//!    how well commits share WAL flushes.
//! 4. **Coordinator failover**: kill -9 of the broker coordinating a group
//!    that commits steadily, until a commit succeeds again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use strata_client::{Admin, Consumer, ConsumerConfig, RebalanceListener};

use super::bench_cluster::{Broker, create_topic, percentile, spawn_broker};

/// Flags of `strata bench group`.
#[derive(Debug, clap::Args)]
pub struct GroupBench {
    /// The bucket the brokers share. Default: a `file://` bucket in the
    /// work directory. S3 settings come from the AWS_* variables.
    #[arg(long)]
    pub store: Option<String>,
    /// Work directory for the brokers' data and logs (default: a new
    /// directory under the system temp dir, kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Brokers to start.
    #[arg(long, default_value_t = 3)]
    pub brokers: u32,
    /// Partitions of the consumed topic.
    #[arg(long, default_value_t = 48)]
    pub partitions: u32,
    /// Records per second produced to it meanwhile.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Times a 4th member joins the stable group of 3.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Heartbeat interval the coordinator gives members (its
    /// `group.heartbeat_interval`).
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub member_heartbeat_interval: Duration,
    /// Clients committing at once.
    #[arg(long, default_value_t = 100)]
    pub committers: usize,
    /// Commits per second, all clients together.
    #[arg(long, default_value_t = 1000)]
    pub commit_rate: u64,
    /// How long to commit.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub commit_for: Duration,
    /// Heartbeat timeout of the brokers (coordinator failover waits this
    /// long).
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Skip the failover measurement.
    #[arg(long)]
    pub no_failover: bool,
}

const TOPIC: &str = "bench-group";

/// Who holds each partition and when it last delivered a record.
#[derive(Debug, Default)]
struct Watch {
    holder: Vec<Option<usize>>,
    last_record: Vec<Option<(usize, Instant)>>,
}

struct Listener {
    member: usize,
    watch: Arc<Mutex<Watch>>,
}

impl RebalanceListener for Listener {
    fn on_assigned(&self, partitions: &[(String, u32)]) {
        let mut w = self.watch.lock();
        for (_, p) in partitions {
            if let Some(h) = w.holder.get_mut(*p as usize) {
                *h = Some(self.member);
            }
        }
    }

    fn on_revoked(&self, partitions: &[(String, u32)]) {
        let mut w = self.watch.lock();
        for (_, p) in partitions {
            if let Some(h) = w.holder.get_mut(*p as usize)
                && *h == Some(self.member)
            {
                *h = None;
            }
        }
    }
}

/// A member reading in the background until dropped (then it closes).
struct Member {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_member(
    url: &str,
    group: &str,
    member: usize,
    watch: Arc<Mutex<Watch>>,
) -> anyhow::Result<Member> {
    let mut c = Consumer::connect(
        url,
        ConsumerConfig {
            client_id: format!("bench-{member}"),
            ..ConsumerConfig::default()
        },
    )
    .await?;
    c.subscribe(&[TOPIC], group).await?;
    c.set_rebalance_listener(Arc::new(Listener {
        member,
        watch: watch.clone(),
    }));
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                r = c.recv() => match r {
                    Some(Ok(rec)) => {
                        if let Some(slot) = watch.lock().last_record.get_mut(rec.partition as usize) {
                            *slot = Some((member, Instant::now()));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(member, error = %e, "bench member");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    None => break,
                },
                () = s.cancelled() => break,
            }
        }
        let _ = c.close().await;
    });
    Ok(Member { stop, task })
}

impl Member {
    async fn close(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Waits until every partition is held, `member` holds at least
/// `min_share`, and each partition delivered a record after `since` to its
/// holder. Returns when that happened.
async fn wait_consumed(
    watch: &Mutex<Watch>,
    since: Instant,
    member: Option<(usize, usize)>,
    limit: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        {
            let w = watch.lock();
            let all =
                w.holder.iter().zip(&w.last_record).all(
                    |(h, r)| matches!((h, r), (Some(h), Some((m, at))) if m == h && *at > since),
                );
            let share = member
                .is_none_or(|(m, min)| w.holder.iter().filter(|h| **h == Some(m)).count() >= min);
            if all && share {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("the group did not consume every partition again within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the benchmark and prints its tables.
pub async fn run(a: GroupBench) -> anyhow::Result<()> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("strata-bench-group-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let store = a
        .store
        .clone()
        .unwrap_or_else(|| format!("file://{}", dir.join("bucket").display()));
    eprintln!(
        "starting {} brokers on {store} (work dir {})",
        a.brokers,
        dir.display()
    );
    let env = vec![
        ("STRATA_CLUSTER__HEARTBEAT_INTERVAL", "200ms".to_owned()),
        (
            "STRATA_CLUSTER__HEARTBEAT_TIMEOUT",
            humantime::format_duration(a.heartbeat_timeout).to_string(),
        ),
        (
            "STRATA_GROUP__HEARTBEAT_INTERVAL",
            humantime::format_duration(a.member_heartbeat_interval).to_string(),
        ),
    ];
    let mut brokers: Vec<Broker> = Vec::new();
    for id in 1..=a.brokers {
        brokers.push(spawn_broker(&env, &dir, &store, id).await?);
    }
    let url = brokers
        .iter()
        .map(|b| b.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let admin = Admin::connect(&url).await?;
    create_topic(&admin, TOPIC, a.partitions).await?;

    let rebalance = rebalances(&a, &url).await?;
    let commits = commit_load(&a, &url, &brokers).await?;
    let failover = if a.no_failover {
        None
    } else {
        Some(failover(&a, &url, &mut brokers).await?)
    };

    println!(
        "\nConsumer groups on {} brokers ({store}), topic of {} partitions at {} records/s, members heartbeat every {}",
        a.brokers,
        a.partitions,
        a.rate,
        humantime::format_duration(a.member_heartbeat_interval)
    );
    println!("| measure | value |");
    println!("|---|---:|");
    let mut r = rebalance.clone();
    println!(
        "| every partition consumed again after a 4th member joins 3, median of {} | {:.0} ms |",
        r.len(),
        percentile(&mut r, 0.5)
    );
    println!("| same, slowest | {:.0} ms |", percentile(&mut r, 1.0));
    let (mut lat, puts, idle_puts, n) = commits;
    println!(
        "| commit latency p50 at {} commits/s from {} clients | {:.1} ms |",
        a.commit_rate,
        a.committers,
        percentile(&mut lat, 0.5)
    );
    println!(
        "| commit latency p99 | {:.1} ms |",
        percentile(&mut lat, 0.99)
    );
    println!(
        "| commit latency max | {:.1} ms |",
        percentile(&mut lat, 1.0)
    );
    let per_k = |p: f64| if n == 0 { 0.0 } else { p * 1000.0 / n as f64 };
    println!(
        "| store PUTs per 1,000 commits ({n} commits; net of {idle_puts:.0} idle PUTs over as long) | {:.1} |",
        per_k((puts - idle_puts).max(0.0))
    );
    println!("| store PUTs per 1,000 commits, raw | {:.1} |", per_k(puts));
    if let Some(f) = failover {
        println!(
            "| commits resume after kill -9 of the coordinator's broker (heartbeat timeout {}) | {:.0} ms |",
            humantime::format_duration(a.heartbeat_timeout),
            f.as_secs_f64() * 1000.0
        );
    }
    println!("\nwork directory (broker logs): {}", dir.display());
    Ok(())
}

/// (1): rebalance times in ms.
async fn rebalances(a: &GroupBench, url: &str) -> anyhow::Result<Vec<f64>> {
    let load = super::bench_cluster::SteadyLoad::start(url, TOPIC, a.partitions, a.rate).await?;
    let n = a.partitions as usize;
    let watch = Arc::new(Mutex::new(Watch {
        holder: vec![None; n],
        last_record: vec![None; n],
    }));
    let mut members = Vec::new();
    for m in 0..3 {
        members.push(start_member(url, "bench-rebalance", m, watch.clone()).await?);
    }
    let start = Instant::now();
    wait_consumed(&watch, start, None, Duration::from_secs(120))
        .await
        .context("the first 3 members")?;
    let mut times = Vec::new();
    for round in 0..a.rounds {
        let joined = Instant::now();
        let fourth = start_member(url, "bench-rebalance", 3, watch.clone()).await?;
        let done =
            wait_consumed(&watch, joined, Some((3, n / 4)), Duration::from_secs(120)).await?;
        let ms = (done - joined).as_secs_f64() * 1000.0;
        eprintln!(
            "round {}: every partition consumed again {ms:.0} ms after the 4th member joined",
            round + 1
        );
        times.push(ms);
        fourth.close().await;
        let left = Instant::now();
        wait_consumed(&watch, left, None, Duration::from_secs(120)).await?;
    }
    for m in members {
        m.close().await;
    }
    load.finish().await?;
    Ok(times)
}

/// Sum of `op` store requests over every broker's `/metrics`.
async fn store_requests(brokers: &[Broker], op: &str) -> f64 {
    let mut sum = 0.0;
    for b in brokers {
        if let Ok(m) = super::bench::scrape(&format!("{}/metrics", b.http)).await {
            sum += m
                .get(&("strata_store_requests_total".to_owned(), op.to_owned()))
                .copied()
                .unwrap_or(0.0);
        }
    }
    sum
}

/// (2) and (3): latencies (ms), PUTs during the load, idle PUTs over as
/// long, commits made.
async fn commit_load(
    a: &GroupBench,
    url: &str,
    brokers: &[Broker],
) -> anyhow::Result<(Vec<f64>, f64, f64, usize)> {
    let before = store_requests(brokers, "put").await;
    tokio::time::sleep(a.commit_for).await;
    let idle = store_requests(brokers, "put").await - before;
    let admin = Admin::connect(url).await?;
    // Find every group's coordinator first (and create the groups).
    for i in 0..a.committers {
        admin
            .alter_group_offsets(&format!("bench-commit-{i}"), &[(TOPIC.to_owned(), 0, 0)])
            .await?;
    }
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let period = Duration::from_secs_f64(a.committers as f64 / a.commit_rate.max(1) as f64);
    let before = store_requests(brokers, "put").await;
    let until = Instant::now() + a.commit_for;
    let mut tasks = Vec::new();
    for i in 0..a.committers {
        let (admin, latencies) = (admin.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let group = format!("bench-commit-{i}");
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut offset = 0i64;
            while Instant::now() < until {
                tick.tick().await;
                offset += 1;
                let t = Instant::now();
                if admin
                    .alter_group_offsets(&group, &[(TOPIC.to_owned(), 0, offset)])
                    .await
                    .is_ok()
                {
                    latencies.lock().push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let puts = store_requests(brokers, "put").await - before;
    let lat = std::mem::take(&mut *latencies.lock());
    let n = lat.len();
    Ok((lat, puts, idle, n))
}

/// (4): kill -9 of the coordinator of a committing group.
async fn failover(
    a: &GroupBench,
    url: &str,
    brokers: &mut Vec<Broker>,
) -> anyhow::Result<Duration> {
    let admin = Admin::connect(url).await?;
    // A group not coordinated by the first broker (the client's home).
    let mut group = None;
    for i in 0..256 {
        let g = format!("bench-failover-{i}");
        admin
            .alter_group_offsets(&g, &[(TOPIC.to_owned(), 0, 0)])
            .await?;
        let d = admin.describe_group(&g).await?;
        if d.coordinator_id != brokers[0].id {
            group = Some((g, d.coordinator_id));
            break;
        }
    }
    let (group, victim) = group.context("no group coordinated by another broker")?;
    let _ = a;
    let idx = brokers
        .iter()
        .position(|b| b.id == victim)
        .context("the coordinator is not one of ours")?;
    let mut b = brokers.remove(idx);
    let killed = Instant::now();
    b.child.start_kill()?;
    let _ = b.child.wait().await;
    let mut offset = 1;
    loop {
        offset += 1;
        if admin
            .alter_group_offsets(&group, &[(TOPIC.to_owned(), 0, offset)])
            .await
            .is_ok()
        {
            return Ok(killed.elapsed());
        }
        if killed.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("commits did not resume within 120s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
