//! `strata bench produce|consume`: load generators with a progress bar, a
//! throughput and latency summary, and what the run cost in object-store
//! requests.
//!
//! Store requests are read from the broker's Prometheus endpoint
//! (`--metrics-url`) before and after the run; the difference is what the
//! run cost (plus whatever else the broker did meanwhile). The scrape is a
//! plain HTTP/1.0 GET over a TCP socket, so no HTTP client is needed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use strata_client::{
    Acks, Compression, Consumer, ConsumerConfig, ErrorReason, Offset, Producer, ProducerConfig,
    ProducerRecord, TopicSettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::produce::{parse_acks, parse_compression};
use super::{BrokerArgs, human_bytes};

/// Load generators.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as acks come back; report throughput, ack
    /// latency and store requests.
    Produce(ProduceBench),
    /// Read records from the beginning of a topic; report throughput.
    Consume(ConsumeBench),
    /// Raw PUT throughput of a store, with no broker: the yardstick for
    /// `bench produce` on the same store.
    Store(super::bench_store::StoreBench),
    /// Start a 3-broker cluster of this binary and measure partition move
    /// time (small vs large sealed history), the produce dip during moves,
    /// and failover time after kill -9.
    Cluster(super::bench_cluster::ClusterBench),
    /// Start a cluster of this binary and measure consumer groups:
    /// rebalance time when a member joins, commit latency and store PUTs
    /// per 1,000 commits, coordinator failover after kill -9.
    Group(super::bench_group::GroupBench),
}

/// Where the broker's Prometheus metrics are.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// The broker's Prometheus endpoint, scraped before and after the run.
    #[arg(
        id = "metrics_url",
        long = "metrics-url",
        env = "STRATA_METRICS_URL",
        default_value = "http://127.0.0.1:9464/metrics",
        value_name = "URL"
    )]
    pub url: String,
}

/// `strata bench produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceBench {
    /// Topic (created with --partitions if missing).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Records to produce.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Partitions of the topic, if it is created.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Producer tasks sending concurrently (sharing one producer).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// `all` or `leader`.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Producer linger.
    #[arg(long, default_value = "5ms", value_parser = super::parse_duration)]
    pub linger: Duration,
    /// Producer batch size in bytes (the producer's default).
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_bytes: usize,
    /// Batches in flight per partition (the producer's default; Kafka
    /// clients send at most 5).
    #[arg(long, default_value_t = strata_client::MAX_IN_FLIGHT_IDEMPOTENT)]
    pub max_in_flight: usize,
    /// Offered load in records per second (0: as fast as acks come back).
    /// Without a rate, ack latency includes time spent waiting in the
    /// producer's buffer; set a rate below the saturation throughput to
    /// measure the latency a producer at that load sees.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `strata bench consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeBench {
    /// Topic to read, all partitions from the beginning.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Records to read (stops earlier after --timeout without a record).
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Give up after this long without a record.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub timeout: Duration,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Runs the command.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(a) => produce(a).await,
        BenchCommand::Consume(a) => consume(a).await,
        BenchCommand::Store(a) => super::bench_store::run(a).await,
        BenchCommand::Cluster(a) => super::bench_cluster::run(a).await,
        BenchCommand::Group(a) => super::bench_group::run(a).await,
    }
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("cannot create the latency histogram")
}

async fn produce(a: ProduceBench) -> anyhow::Result<()> {
    anyhow::ensure!(a.concurrency > 0, "--concurrency must be at least 1");
    let admin = a.broker.admin().await?;
    match admin.describe_topic(&a.topic).await {
        Ok(_) => {}
        Err(e) if e.reason() == Some(ErrorReason::UnknownTopic) => {
            let settings = TopicSettings {
                if_not_exists: true,
                ..Default::default()
            };
            admin
                .create_topic(&a.topic, a.partitions, settings)
                .await
                .with_context(|| format!("cannot create topic {}", a.topic))?;
            eprintln!("created topic {} with {} partitions", a.topic, a.partitions);
        }
        Err(e) => return Err(e).context("cannot look up the bench topic"),
    }
    let config = ProducerConfig {
        acks: a.acks,
        compression: a.compression,
        linger: a.linger,
        batch_bytes: a.batch_bytes,
        max_in_flight: a.max_in_flight,
        buffer_bytes: (64 * 1024 * 1024).max(a.batch_bytes * 4),
        ..Default::default()
    };
    let producer = Producer::connect(
        a.broker.url(),
        ProducerConfig {
            connection: a.broker.connect_options()?,
            ..config
        },
    )
    .await?;
    // Half pseudo-random (incompressible), half zeros, so compression has
    // work to do.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let value: Bytes = (0..a.record_size)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 2 == 0 { x as u8 } else { 0 }
        })
        .collect::<Vec<u8>>()
        .into();
    let before = scrape(&a.metrics.url).await;
    let bar = progress(a.records);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per_task = a.records / a.concurrency as u64;
    let extra = a.records % a.concurrency as u64;
    for t in 0..a.concurrency {
        let n = per_task + u64::from((t as u64) < extra);
        // Each task offers an equal share of the rate.
        let period =
            (a.rate > 0).then(|| Duration::from_secs_f64(a.concurrency as f64 / a.rate as f64));
        tasks.push(tokio::spawn(produce_task(
            producer.clone(),
            a.topic.clone(),
            value.clone(),
            n,
            period,
            bar.clone(),
        )));
    }
    let mut hist = histogram()?;
    let mut failed = 0u64;
    let mut first_error = None;
    for t in tasks {
        let (h, f, e) = t.await.context("producer task panicked")??;
        hist.add(h).context("cannot merge histograms")?;
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    producer.close().await?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let after = scrape(&a.metrics.url).await;
    let acked = hist.len();
    let bytes = acked * a.record_size as u64;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let lat = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let store = StoreCost::between(&before, &after, bytes);
    if a.json {
        let mut v = serde_json::json!({
            "records": acked,
            "failed": failed,
            "record_size": a.record_size,
            "seconds": secs,
            "records_per_sec": acked as f64 / secs,
            "mib_per_sec": bytes as f64 / secs / 1_048_576.0,
            "latency_ms": {
                "p50": lat(0.5), "p99": lat(0.99), "p999": lat(0.999),
                "max": hist.max() as f64 / 1000.0,
            },
            "acks": format!("{:?}", a.acks).to_lowercase(),
            "compression": format!("{:?}", a.compression).to_lowercase(),
        });
        if let Some(s) = &store {
            v["store"] = s.json();
        }
        println!("{v}");
    } else {
        println!(
            "produced {acked} records ({}) in {:.2}s: {:.0} records/s, {:.2} MiB/s",
            human_bytes(bytes),
            secs,
            acked as f64 / secs,
            bytes as f64 / secs / 1_048_576.0
        );
        println!(
            "ack latency: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
            lat(0.5),
            lat(0.99),
            lat(0.999),
            hist.max() as f64 / 1000.0
        );
        print_store(&store, &a.metrics.url, &before, &after);
    }
    if let Some(e) = first_error {
        return Err(anyhow::Error::new(e).context(format!("{failed} records failed")));
    }
    Ok(())
}

type TaskResult = anyhow::Result<(Histogram<u64>, u64, Option<strata_client::Error>)>;

/// Sends `n` records, timing each from `send` to its ack.
async fn produce_task(
    producer: Producer,
    topic: String,
    value: Bytes,
    n: u64,
    period: Option<Duration>,
    bar: ProgressBar,
) -> TaskResult {
    let (tx, mut rx) = mpsc::channel::<(Instant, strata_client::DeliveryFuture)>(1024);
    let bar2 = bar.clone();
    let collector = tokio::spawn(async move {
        let mut hist = histogram()?;
        let mut pending = FuturesUnordered::new();
        let (mut failed, mut first) = (0u64, None);
        let mut open = true;
        loop {
            tokio::select! {
                f = rx.recv(), if open => match f {
                    Some((at, f)) => pending.push(async move { (at, f.await) }),
                    None => open = false,
                },
                Some((at, r)) = pending.next(), if !pending.is_empty() => {
                    match r {
                        Ok(_) => {
                            let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                            hist.saturating_record(us.max(1));
                        }
                        Err(e) => {
                            failed += 1;
                            first.get_or_insert(e);
                        }
                    }
                    bar2.inc(1);
                }
                else => break,
            }
        }
        Ok::<_, anyhow::Error>((hist, failed, first))
    });
    let start = tokio::time::Instant::now();
    for i in 0..n {
        if let Some(period) = period {
            tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        }
        let at = Instant::now();
        let f = producer
            .send(ProducerRecord::new(topic.clone(), value.clone()))
            .await?;
        if tx.send((at, f)).await.is_err() {
            break;
        }
    }
    drop(tx);
    collector.await.context("ack collector panicked")?
}

async fn consume(a: ConsumeBench) -> anyhow::Result<()> {
    let config = ConsumerConfig {
        max_bytes: 4 * 1024 * 1024,
        buffer_bytes: 64 * 1024 * 1024,
        ..Default::default()
    };
    let mut consumer = Consumer::connect(
        a.broker.url(),
        ConsumerConfig {
            connection: a.broker.connect_options()?,
            ..config
        },
    )
    .await?;
    let before = scrape(&a.metrics.url).await;
    // Fetching starts at assignment, so the clock does too.
    let started = Instant::now();
    let partitions = consumer
        .assign_topic(&a.topic, Offset::Earliest)
        .await
        .with_context(|| format!("cannot read topic {}", a.topic))?;
    let bar = progress(a.records);
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut timed_out = false;
    while count < a.records {
        match tokio::time::timeout(a.timeout, consumer.next()).await {
            Ok(Some(r)) => {
                let r = r.context("consume failed")?;
                count += 1;
                bytes += r.value.as_ref().map_or(0, |v| v.len() as u64)
                    + r.key.as_ref().map_or(0, |k| k.len() as u64);
                if count % 256 == 0 {
                    bar.set_position(count);
                }
            }
            Ok(None) => break,
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    // Time spent waiting for records that never came is not throughput.
    let elapsed = if timed_out {
        started.elapsed().saturating_sub(a.timeout)
    } else {
        started.elapsed()
    };
    bar.finish_and_clear();
    let after = scrape(&a.metrics.url).await;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let store = StoreCost::between(&before, &after, 0);
    if a.json {
        let mut v = serde_json::json!({
            "records": count,
            "bytes": bytes,
            "partitions": partitions,
            "seconds": secs,
            "records_per_sec": count as f64 / secs,
            "mib_per_sec": bytes as f64 / secs / 1_048_576.0,
            "timed_out": timed_out,
        });
        if let Some(s) = &store {
            v["store"] = s.json();
        }
        println!("{v}");
    } else {
        if timed_out {
            eprintln!(
                "no record for {}; stopping after {count} of {} records",
                humantime::format_duration(a.timeout),
                a.records
            );
        }
        println!(
            "consumed {count} records ({}) from {partitions} partitions in {:.2}s: {:.0} records/s, {:.2} MiB/s",
            human_bytes(bytes),
            secs,
            count as f64 / secs,
            bytes as f64 / secs / 1_048_576.0
        );
        print_store(&store, &a.metrics.url, &before, &after);
    }
    Ok(())
}

// ------------------------------------------------------------ store cost

/// Counter samples by name and `op` label.
pub(super) type Samples = BTreeMap<(String, String), f64>;

/// What a run cost in store requests.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StoreCost {
    /// Requests by `op` label (only those that changed).
    pub(super) requests: BTreeMap<String, f64>,
    put_bytes: f64,
    get_bytes: f64,
    /// PUTs per GiB of record data produced (None when nothing was).
    puts_per_gib: Option<f64>,
    /// WAL objects written, and the record bytes in them.
    wal_objects: f64,
    wal_bytes: f64,
}

impl StoreCost {
    pub(super) fn between(
        before: &Result<Samples, String>,
        after: &Result<Samples, String>,
        produced_bytes: u64,
    ) -> Option<StoreCost> {
        let (Ok(before), Ok(after)) = (before, after) else {
            return None;
        };
        let delta = |name: &str, op: &str| {
            let k = (name.to_owned(), op.to_owned());
            after.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0)
        };
        let mut requests = BTreeMap::new();
        for ((name, op), _) in after.iter() {
            if name == "strata_store_requests_total" {
                let d = delta(name, op);
                if d != 0.0 {
                    requests.insert(op.clone(), d);
                }
            }
        }
        let puts = requests.get("put").copied().unwrap_or(0.0)
            + requests.get("multipart").copied().unwrap_or(0.0);
        Some(StoreCost {
            puts_per_gib: (produced_bytes > 0)
                .then(|| puts / (produced_bytes as f64 / 1_073_741_824.0)),
            requests,
            put_bytes: delta("strata_store_bytes_total", "put"),
            get_bytes: delta("strata_store_bytes_total", "get"),
            wal_objects: delta("strata_wal_objects_total", ""),
            wal_bytes: delta("strata_wal_bytes_total", ""),
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "put_bytes": self.put_bytes,
            "get_bytes": self.get_bytes,
            "puts_per_gib": self.puts_per_gib,
            "wal_objects": self.wal_objects,
            "wal_bytes": self.wal_bytes,
        })
    }
}

fn print_store(
    store: &Option<StoreCost>,
    url: &str,
    before: &Result<Samples, String>,
    after: &Result<Samples, String>,
) {
    let Some(s) = store else {
        let why = before
            .as_ref()
            .err()
            .or(after.as_ref().err())
            .cloned()
            .unwrap_or_default();
        println!(
            "store requests: unknown, cannot scrape {url} ({why}); set --metrics-url or STRATA_METRICS_URL"
        );
        return;
    };
    let get = |op: &str| s.requests.get(op).copied().unwrap_or(0.0);
    let others: Vec<String> = s
        .requests
        .iter()
        .filter(|(op, _)| !matches!(op.as_str(), "put" | "get" | "list"))
        .map(|(op, n)| format!("{op} {n:.0}"))
        .collect();
    println!(
        "store requests: put {:.0}, get {:.0}, list {:.0}{}; bytes put {}, get {}",
        get("put"),
        get("get"),
        get("list"),
        if others.is_empty() {
            String::new()
        } else {
            format!(", {}", others.join(", "))
        },
        human_bytes(s.put_bytes.max(0.0) as u64),
        human_bytes(s.get_bytes.max(0.0) as u64),
    );
    if let Some(p) = s.puts_per_gib {
        println!("PUTs per GiB produced: {p:.1}");
    }
    if s.wal_objects > 0.0 {
        println!(
            "WAL objects: {:.0}, {} each on average (full ones hold wal.max_bytes, 8 MiB by default, and part of a batch)",
            s.wal_objects,
            human_bytes((s.wal_bytes / s.wal_objects) as u64),
        );
    }
}

/// GETs `url` (http only) with HTTP/1.0 and parses the Prometheus text.
pub(super) async fn scrape(url: &str) -> Result<Samples, String> {
    let body = tokio::time::timeout(Duration::from_secs(5), http_get(url))
        .await
        .map_err(|_| "timed out".to_owned())??;
    Ok(parse_prometheus(&body))
}

async fn http_get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// metrics URLs are supported".to_owned())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| e.to_string())?;
    let host = authority.split(':').next().unwrap_or(authority);
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(64 * 1024 * 1024)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "malformed HTTP response".to_owned())?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status: {status}"));
    }
    Ok(body.to_owned())
}

/// Sums samples of each metric by its `op` label (other labels are summed
/// over).
fn parse_prometheus(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // `name{labels} value [timestamp]` or `name value [timestamp]`.
        let (series, rest) = match line.find('}') {
            Some(i) => (&line[..=i], &line[i + 1..]),
            None => match line.split_once(char::is_whitespace) {
                Some((n, r)) => (n, r),
                None => continue,
            },
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let op = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == "op")
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        *out.entry((name.to_owned(), op)).or_insert(0.0) += value;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# HELP strata_store_requests_total Store requests.\n\
# TYPE strata_store_requests_total counter\n\
strata_store_requests_total{op=\"put\"} 10\n\
strata_store_requests_total{op=\"get\"} 4\n\
strata_store_requests_total{op=\"list\"} 1\n\
strata_store_bytes_total{op=\"put\"} 1000\n\
strata_produce_bytes_total 5\n";

    const AFTER: &str = "strata_store_requests_total{op=\"put\"} 26\n\
strata_store_requests_total{op=\"get\"} 4\n\
strata_store_requests_total{op=\"list\"} 3\n\
strata_store_requests_total{op=\"delete\"} 2\n\
strata_store_bytes_total{op=\"put\"} 1049576\n";

    #[test]
    fn prometheus_text_parses() {
        let s = parse_prometheus(BEFORE);
        assert_eq!(
            s.get(&("strata_store_requests_total".into(), "put".into())),
            Some(&10.0)
        );
        assert_eq!(
            s.get(&("strata_produce_bytes_total".into(), String::new())),
            Some(&5.0)
        );
        let with_ts = parse_prometheus("m{op=\"get\"} 3 1700000000000\n");
        assert_eq!(with_ts.get(&("m".into(), "get".into())), Some(&3.0));
    }

    #[test]
    fn store_cost_is_the_difference() {
        let before = Ok(parse_prometheus(BEFORE));
        let after = Ok(parse_prometheus(AFTER));
        let cost = StoreCost::between(&before, &after, 1 << 30).expect("both scraped");
        assert_eq!(cost.requests.get("put"), Some(&16.0));
        assert_eq!(cost.requests.get("list"), Some(&2.0));
        assert_eq!(cost.requests.get("delete"), Some(&2.0));
        assert_eq!(cost.requests.get("get"), None);
        assert_eq!(cost.put_bytes, 1_048_576.0);
        assert_eq!(cost.puts_per_gib, Some(16.0));
        assert!(StoreCost::between(&Err("down".into()), &after, 1).is_none());
    }
}
