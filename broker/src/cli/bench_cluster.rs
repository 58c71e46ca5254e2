//! `strata bench cluster`: how fast partitions move and fail over.
//!
//! Starts its own brokers (this binary, `strata serve`, on loopback ports,
//! sharing one bucket), then measures:
//!
//! 1. **Move time** for a partition holding each `--sizes` of sealed data:
//!    from the `Move` call until the new owner acknowledges a produce. A
//!    warm-up move seals the tail first, so the figure is about the sealed
//!    history alone; it should not depend on its size (nothing is copied).
//! 2. **Produce dip during a move**: a producer offers `--rate` records/s to
//!    the moving partition; the longest ack latency and the longest gap
//!    between two acks during the moves.
//! 3. **Failover time** after `kill -9` of a partition's owner: the gap
//!    between the last ack before the kill and the first ack after, with
//!    `--heartbeat-timeout` (the dominant term).
//! 4. **Idle cost** first of all: store requests per broker per heartbeat
//!    interval while nothing is produced (heartbeats, membership, controller
//!    and assignment reads), from each broker's `/metrics`, with what that
//!    costs a month at S3 Standard request prices.
//!
//! Brokers' logs stay in the work directory (printed at the end).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use parking_lot::Mutex;
use strata_client::{Admin, Producer, ProducerConfig, ProducerRecord, TopicSettings};
use strata_proto::v1::strata_client::StrataClient;
use strata_proto::v1::{ListOffsetsRequest, OffsetSpec};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Flags of `strata bench cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterBench {
    /// The bucket the brokers share. Default: a `file://` bucket in the
    /// work directory. S3 settings come from the AWS_* variables.
    #[arg(long)]
    pub store: Option<String>,
    /// Work directory for the brokers' data and logs (default: a new
    /// directory under the system temp dir, kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Sealed history sizes to move, in MiB.
    #[arg(long, value_delimiter = ',', default_value = "10,1024")]
    pub sizes_mib: Vec<u64>,
    /// Moves per size (back and forth between two brokers).
    #[arg(long, default_value_t = 6)]
    pub moves: usize,
    /// Records per second offered to the moving partition during moves.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Heartbeat interval of the brokers.
    #[arg(long, default_value = "200ms", value_parser = super::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Heartbeat timeout of the brokers (failover waits this long).
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Skip the failover measurement.
    #[arg(long)]
    pub no_failover: bool,
    /// How long to count store requests of the idle cluster (0 skips it).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub idle: Duration,
}

/// A broker process started by a benchmark (killed when dropped).
pub(super) struct Broker {
    pub(super) id: u32,
    pub(super) url: String,
    pub(super) http: String,
    pub(super) child: Child,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The cluster timings of `a` as broker environment variables.
fn timing_env(a: &ClusterBench) -> Vec<(&'static str, String)> {
    vec![
        (
            "STRATA_CLUSTER__HEARTBEAT_INTERVAL",
            humantime::format_duration(a.heartbeat_interval).to_string(),
        ),
        (
            "STRATA_CLUSTER__HEARTBEAT_TIMEOUT",
            humantime::format_duration(a.heartbeat_timeout).to_string(),
        ),
    ]
}

/// Starts broker `id` of this binary on loopback ports over `store`, with
/// `env`, its data and log under `dir`; returns once it is ready.
pub(super) async fn spawn_broker(
    env: &[(&str, String)],
    dir: &Path,
    store: &str,
    id: u32,
) -> anyhow::Result<Broker> {
    let exe = std::env::current_exe().context("cannot find the strata binary")?;
    let data = dir.join(format!("broker-{id}"));
    std::fs::create_dir_all(&data)?;
    let log = std::fs::File::create(data.join("broker.log"))?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--broker-id",
            &id.to_string(),
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"])
        .args(["--store", store])
        .arg("--data-dir")
        .arg(&data)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a broker")?;
    let stdout = child.stdout.take().context("broker stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("a broker did not become ready within 60s")??
        .context("a broker exited before becoming ready")?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
            .with_context(|| format!("no {name} in the ready line: {line}"))
    };
    let url = field("grpc=")?;
    let http = field("http=")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Broker {
        id,
        url,
        http,
        child,
    })
}

/// Acks seen by the background producer: (partition, sent at, acked at).
type Acks = Arc<Mutex<Vec<(u32, Instant, Instant)>>>;

/// A producer offering a steady load in the background, recording acks.
pub(super) struct SteadyLoad {
    producer: Producer,
    acks: Acks,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<u64>,
}

impl SteadyLoad {
    /// Connects to `bootstrap` and offers `rate` records/s round-robin
    /// over `topic`'s first `partitions` partitions.
    pub(super) async fn start(
        bootstrap: &str,
        topic: &str,
        partitions: u32,
        rate: u64,
    ) -> anyhow::Result<Self> {
        let producer = Producer::connect(bootstrap, ProducerConfig::default()).await?;
        let acks: Acks = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = steady_producer(
            producer.clone(),
            topic.to_owned(),
            partitions,
            rate,
            acks.clone(),
            stop.clone(),
        );
        Ok(Self {
            producer,
            acks,
            stop,
            task,
        })
    }

    /// Stops the load; returns the acks and the number of failed sends.
    pub(super) async fn finish(self) -> anyhow::Result<(Vec<(u32, Instant, Instant)>, u64)> {
        self.stop.cancel();
        let failed = self.task.await.unwrap_or(0);
        self.producer.close().await?;
        let acks = std::mem::take(&mut *self.acks.lock());
        Ok((acks, failed))
    }
}

/// Offers `rate` records/s to `topic` until `stop`, recording acks.
fn steady_producer(
    producer: Producer,
    topic: String,
    partitions: u32,
    rate: u64,
    acks: Acks,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let mut tick = tokio::time::interval(period);
        let value = Bytes::from(vec![7u8; 256]);
        let mut failed = 0u64;
        let mut i: u64 = 0;
        let mut inflight = tokio::task::JoinSet::new();
        while !stop.is_cancelled() {
            tick.tick().await;
            let p = (i % u64::from(partitions)) as u32;
            i += 1;
            let rec = ProducerRecord::new(&topic, value.clone()).partition(p);
            let sent = Instant::now();
            match producer.send(rec).await {
                Ok(f) => {
                    let acks = acks.clone();
                    inflight.spawn(async move {
                        let ok = f.await.is_ok();
                        if ok {
                            acks.lock().push((p, sent, Instant::now()));
                        }
                        ok
                    });
                }
                Err(_) => failed += 1,
            }
            while let Some(r) = inflight.try_join_next() {
                failed += u64::from(!r.unwrap_or(false));
            }
        }
        while let Some(r) = inflight.join_next().await {
            failed += u64::from(!r.unwrap_or(false));
        }
        failed
    })
}

/// Waits until `url` serves `topic`/`partition` (ListOffsets answers).
async fn wait_served(
    url: &str,
    topic: &str,
    partition: u32,
    limit: Duration,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await?;
    let mut client = StrataClient::new(channel);
    let deadline = Instant::now() + limit;
    loop {
        let req = ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec: OffsetSpec::Latest as i32,
            timestamp_ms: 0,
        };
        if client.list_offsets(req).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not serve {topic}/{partition} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The `q` quantile of `v` (sorted in place).
pub(super) fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Longest gap between consecutive acks of `partition` within `[from, to]`
/// (counting from `from` to the first ack).
fn longest_gap(
    acks: &[(u32, Instant, Instant)],
    partition: u32,
    from: Instant,
    to: Instant,
) -> Duration {
    let mut times: Vec<Instant> = acks
        .iter()
        .filter(|(p, _, at)| *p == partition && *at >= from && *at <= to)
        .map(|(_, _, at)| *at)
        .collect();
    times.sort();
    let mut prev = from;
    let mut gap = Duration::ZERO;
    for t in times {
        gap = gap.max(t.duration_since(prev));
        prev = t;
    }
    gap
}

/// Runs the benchmark and prints its tables.
pub async fn run(a: ClusterBench) -> anyhow::Result<()> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("strata-bench-cluster-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let store = a
        .store
        .clone()
        .unwrap_or_else(|| format!("file://{}", dir.join("bucket").display()));
    eprintln!("starting 3 brokers on {store} (work dir {})", dir.display());
    let mut brokers = Vec::new();
    for id in 1..=3 {
        brokers.push(spawn_broker(&timing_env(&a), &dir, &store, id).await?);
    }
    let urls: Vec<String> = brokers.iter().map(|b| b.url.clone()).collect();
    let admin = Admin::connect(&urls[0]).await?;

    // 4 (first, while the cluster is quiet): idle cost.
    if !a.idle.is_zero() {
        create_topic(&admin, "idle", 6).await?;
        // Let the assignment settle and the claims finish.
        tokio::time::sleep(a.heartbeat_timeout).await;
        idle_cost(&a, &brokers).await;
    }

    // 1 + 2: moves with a large sealed history.
    let mut rows = Vec::new();
    for &mib in &a.sizes_mib {
        let topic = format!("move-{mib}mib");
        create_topic(&admin, &topic, 1).await?;
        admin.move_partition(&topic, 0, 1).await?;
        wait_served(&urls[0], &topic, 0, Duration::from_secs(30)).await?;
        fill(&urls[0], &topic, mib << 20).await?;
        // Warm-up move: seals the tail, so the measured moves carry only
        // the sealed history.
        admin.move_partition(&topic, 0, 2).await?;
        wait_served(&urls[1], &topic, 0, Duration::from_secs(60)).await?;
        let desc = admin.describe_topic(&topic).await?;
        let sealed = desc.partition_details.first().map_or(0, |d| d.sealed_bytes);

        let load = SteadyLoad::start(&urls.join(","), &topic, 1, a.rate).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut times = Vec::new();
        let mut gaps = Vec::new();
        let mut owner = 2u32;
        for _ in 0..a.moves {
            let to = if owner == 2 { 1 } else { 2 };
            let t0 = Instant::now();
            admin.move_partition(&topic, 0, to).await?;
            wait_served(&urls[to as usize - 1], &topic, 0, Duration::from_secs(60)).await?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            owner = to;
            tokio::time::sleep(Duration::from_millis(700)).await;
            gaps.push(longest_gap(&load.acks.lock(), 0, t0, Instant::now()).as_secs_f64() * 1000.0);
        }
        let (acked, failed) = load.finish().await?;
        let mut lat: Vec<f64> = acked
            .iter()
            .map(|(_, s, at)| at.duration_since(*s).as_secs_f64() * 1000.0)
            .collect();
        rows.push((
            mib,
            sealed,
            percentile(&mut times.clone(), 0.5),
            times.iter().copied().fold(0.0, f64::max),
            gaps.iter().copied().fold(0.0, f64::max),
            percentile(&mut lat, 0.99),
            lat.iter().copied().fold(0.0, f64::max),
            failed,
        ));
    }
    println!(
        "\nPartition moves ({} per size, {} records/s produced to the partition meanwhile)",
        a.moves, a.rate
    );
    println!(
        "| sealed history | move p50 | move max | longest ack gap | ack p99 | ack max | failed sends |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (mib, sealed, p50, max, gap, p99, lmax, failed) in &rows {
        println!(
            "| {} ({mib} MiB asked) | {p50:.0} ms | {max:.0} ms | {gap:.0} ms | {p99:.1} ms | {lmax:.0} ms | {failed} |",
            super::human_bytes(*sealed)
        );
    }

    // 3: failover after kill -9.
    if !a.no_failover {
        let topic = "failover".to_string();
        create_topic(&admin, &topic, 3).await?;
        for p in 0..3u32 {
            admin.move_partition(&topic, p, p + 1).await?;
        }
        for p in 0..3u32 {
            wait_served(&urls[p as usize], &topic, p, Duration::from_secs(30)).await?;
        }
        let load = SteadyLoad::start(&urls[..2].join(","), &topic, 3, a.rate).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = brokers.pop().context("three brokers")?;
        let killed_id = victim.id;
        let t0 = Instant::now();
        drop(victim); // SIGKILL
        let limit = a.heartbeat_timeout * 5 + Duration::from_secs(10);
        let recovered = loop {
            let got = load.acks.lock().iter().any(|(p, s, _)| *p == 2 && *s > t0);
            if got || t0.elapsed() > limit {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (acked, failed) = load.finish().await?;
        let last_before = acked
            .iter()
            .filter(|(p, _, at)| *p == 2 && *at <= t0)
            .map(|(_, _, at)| *at)
            .max()
            .unwrap_or(t0);
        let first_after = acked
            .iter()
            .filter(|(p, s, _)| *p == 2 && *s > t0)
            .map(|(_, _, at)| *at)
            .min();
        println!(
            "\nFailover after kill -9 of broker {killed_id} (heartbeat timeout {})",
            humantime::format_duration(a.heartbeat_timeout)
        );
        println!("| partition | served again after the kill | longest ack gap | failed sends |");
        println!("|---|---:|---:|---:|");
        match (recovered, first_after) {
            (true, Some(first)) => println!(
                "| failover/2 | {:.0} ms | {:.0} ms | {failed} |",
                first.duration_since(t0).as_secs_f64() * 1000.0,
                first.duration_since(last_before).as_secs_f64() * 1000.0,
            ),
            _ => println!("| failover/2 | not within {limit:?} | – | {failed} |"),
        }
    }
    eprintln!("broker logs: {}/broker-*/broker.log", dir.display());
    Ok(())
}

/// S3 Standard request prices (us-east-1), dollars per 1,000 requests.
pub(super) const PUT_LIST_PRICE: f64 = 0.005;
const GET_PRICE: f64 = 0.0004;

/// Counts each broker's store requests over `a.idle` and prints them per
/// heartbeat interval, with their monthly price at a 1s interval.
async fn idle_cost(a: &ClusterBench, brokers: &[Broker]) {
    let metrics = |b: &Broker| format!("{}/metrics", b.http);
    let scrape_all = || {
        futures::future::join_all(
            brokers
                .iter()
                .map(|b| async move { super::bench::scrape(&metrics(b)).await }),
        )
    };
    let before = scrape_all().await;
    tokio::time::sleep(a.idle).await;
    let after = scrape_all().await;
    let intervals = a.idle.as_secs_f64() / a.heartbeat_interval.as_secs_f64();
    println!(
        "\nIdle cluster: store requests per broker per heartbeat interval ({} brokers, 1 topic of 6 partitions, nothing produced, counted over {})",
        brokers.len(),
        humantime::format_duration(a.idle)
    );
    println!("| broker | PUT | GET | LIST | other | $/month at a 1s interval |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let month_intervals = 30.0 * 24.0 * 3600.0;
    for ((b, before), after) in brokers.iter().zip(&before).zip(&after) {
        let Some(cost) = super::bench::StoreCost::between(before, after, 0) else {
            println!("| {} | cannot scrape {} | | | | |", b.id, metrics(b));
            continue;
        };
        let per_interval = |op: &str| cost.requests.get(op).copied().unwrap_or(0.0) / intervals;
        let (put, get, list) = (
            per_interval("put"),
            per_interval("get"),
            per_interval("list"),
        );
        let other = cost
            .requests
            .iter()
            .filter(|(op, _)| !matches!(op.as_str(), "put" | "get" | "list"))
            // (A fold from +0.0: an empty f64 sum is -0.0.)
            .fold(0.0, |sum, (_, n)| sum + n / intervals);
        let dollars =
            month_intervals * ((put + list + other) * PUT_LIST_PRICE + get * GET_PRICE) / 1000.0;
        println!(
            "| {} | {put:.2} | {get:.2} | {list:.2} | {other:.2} | {dollars:.2} |",
            b.id
        );
    }
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub(super) async fn create_topic(
    admin: &Admin,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    let settings = TopicSettings {
        if_not_exists: true,
        ..Default::default()
    };
    admin.create_topic(topic, partitions, settings).await?;
    Ok(())
}

/// Writes about `bytes` of 1 KiB records to partition 0 of `topic`.
async fn fill(url: &str, topic: &str, bytes: u64) -> anyhow::Result<()> {
    let config = ProducerConfig {
        buffer_bytes: 64 << 20,
        ..Default::default()
    };
    let producer = Producer::connect(url, config).await?;
    let value = Bytes::from(vec![0x42u8; 1024]);
    let n = bytes / 1024;
    let bar = indicatif::ProgressBar::new(n);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} filling {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(topic.to_string());
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let f = producer
            .send(ProducerRecord::new(topic, value.clone()).partition(0))
            .await?;
        pending.push_back(f);
        if pending.len() > 8192
            && let Some(f) = pending.pop_front()
        {
            f.await?;
        }
        if i % 1024 == 0 {
            bar.set_position(i);
        }
    }
    for f in pending {
        f.await?;
    }
    producer.close().await?;
    bar.finish_and_clear();
    Ok(())
}
