//! Storage benchmark: append throughput, ack latency and WAL PUT count of the
//! storage engine, beside the raw PUT throughput of the same store.
//!
//! # Usage
//!
//! ```text
//! cargo bench -p strata-tests --bench storage                        # full run
//! STRATA_BENCH_QUICK=1 cargo bench -p strata-tests --bench storage   # CI smoke run
//! ```
//!
//! Results are printed to stdout as two markdown tables; one progress line
//! per case goes to stderr. The exit status is non-zero when a case failed
//! (an append or PUT error, or a log that does not hold what was appended).
//!
//! # What runs
//!
//! Stores, each a fresh temporary directory, stacked as
//! `MetricsStore(backend)`:
//! - `local`: `LocalFileSystem`.
//! - `local+s3-latency`: `LocalFileSystem` under a `FaultStore` that adds
//!   20–60 ms to every request, plus a 200 ms spike on 1% of them (no
//!   errors), to emulate S3 request latency.
//!
//! Engine cases: one broker incarnation (`harness::Node`, default
//! `WalConfig`) with P = 8 and P = 256 partitions (default `LogConfig`).
//! Every partition has 4 producer tasks, each with one `Acks::All` append in
//! flight at a time; every append is one RecordBatch of 16 records with 1 KiB
//! values (no key, uncompressed). The volume (record value bytes) is split
//! evenly over the partitions: 256 MiB on `local`, 64 MiB on
//! `local+s3-latency`, 16 MiB for both in quick mode.
//!
//! Columns of the engine table:
//! - `MiB/s`: record value bytes / wall time from the first append to the
//!   last acknowledgement.
//! - `p50 ms`, `p99 ms`: per-append latency (call to acknowledgement).
//! - `WAL PUTs`: WAL objects written during the run (`WalWriter::puts`).
//! - `PUTs`: every PUT and multipart request the `MetricsStore` counted from
//!   the first append until the background seals the run triggered finished
//!   (WAL objects, plus segment uploads and manifest writes).
//! - `PUTs/GiB`: `PUTs` per GiB of record values. Group commit means this
//!   must not grow with the partition count.
//! - `KiB/WAL`: appended batch bytes per WAL object, the group-commit size.
//!
//! Raw PUT cases: 4 workers PUT distinct 4 MiB objects back to back (256 MiB
//! in all, 16 MiB in quick mode) through the same store stack.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use strata_storage::batch::BatchBuilder;
use strata_storage::log::{Acks, LogConfig, PartitionLog};
use strata_storage::store::{
    FaultConfig, FaultRule, FaultStore, MetricsStore, OpSet, StatsSnapshot, StoreStats,
};
use strata_tests::harness::Node;
use tempfile::TempDir;

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

const RECORD_VALUE_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
const PRODUCERS_PER_PARTITION: u64 = 4;
const PARTITION_COUNTS: [u32; 2] = [8, 256];
/// Partitions opened at once (opening is a few requests each).
const OPEN_CONCURRENCY: usize = 64;
/// How long background seals may take to finish after the run.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

const RAW_OBJECT_BYTES: usize = 4 << 20;
const RAW_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, Copy)]
enum StoreKind {
    Local,
    S3Latency,
}

impl StoreKind {
    fn label(self) -> &'static str {
        match self {
            StoreKind::Local => "local",
            StoreKind::S3Latency => "local+s3-latency",
        }
    }
}

/// Record value bytes (engine) and object bytes (raw) per case.
#[derive(Debug, Clone, Copy)]
struct Volumes {
    quick: bool,
    engine_local: u64,
    engine_latency: u64,
    raw: u64,
}

impl Volumes {
    fn from_env() -> Self {
        let quick = std::env::var("STRATA_BENCH_QUICK")
            .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
        if quick {
            Self {
                quick,
                engine_local: 16 * MIB,
                engine_latency: 16 * MIB,
                raw: 16 * MIB,
            }
        } else {
            Self {
                quick,
                engine_local: 256 * MIB,
                engine_latency: 64 * MIB,
                raw: 256 * MIB,
            }
        }
    }

    fn engine(&self, kind: StoreKind) -> u64 {
        match kind {
            StoreKind::Local => self.engine_local,
            StoreKind::S3Latency => self.engine_latency,
        }
    }
}

/// A store stack over a fresh temporary directory.
struct Stack {
    store: Arc<dyn ObjectStore>,
    stats: Arc<StoreStats>,
    // Last: dropped after everything that writes into it.
    _dir: TempDir,
}

fn stack(kind: StoreKind) -> Stack {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let local: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    let backend: Arc<dyn ObjectStore> = match kind {
        StoreKind::Local => local,
        StoreKind::S3Latency => Arc::new(FaultStore::new(
            local,
            FaultConfig {
                seed: 0x5354_5241_5441,
                rules: vec![
                    FaultRule::latency(
                        OpSet::ALL,
                        Duration::from_millis(20),
                        Duration::from_millis(60),
                    )
                    .with_spikes(0.01, Duration::from_millis(200)),
                ],
            },
        )),
    };
    let metrics = MetricsStore::new(backend);
    let stats = metrics.stats();
    Stack {
        store: Arc::new(metrics),
        stats,
        _dir: dir,
    }
}

/// One batch: `RECORDS_PER_BATCH` records with `RECORD_VALUE_BYTES` values.
fn bench_batch() -> Bytes {
    let mut b = BatchBuilder::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..RECORDS_PER_BATCH {
        let value: Vec<u8> = (0..RECORD_VALUE_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        b.push(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    b.build()
}

/// The nearest-rank `q` quantile of sorted samples, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

fn write_requests(s: &StatsSnapshot) -> u64 {
    s.put_requests + s.multipart_requests
}

struct EngineRow {
    store: &'static str,
    partitions: u32,
    appends: u64,
    value_bytes: u64,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
    wal_puts: u64,
    puts: u64,
    puts_per_gib: f64,
    kib_per_wal: f64,
}

async fn engine_case(kind: StoreKind, partitions: u32, volume: u64) -> Result<EngineRow, String> {
    let stack = stack(kind);
    let node = Node::start(stack.store.clone(), 1).await;
    let logs: Vec<PartitionLog> = futures::stream::iter(0..partitions)
        .map(|p| {
            let node = &node;
            async move {
                let tp = strata_tests::harness::tip("bench", p);
                node.open(&tp, LogConfig::default())
                    .await
                    .map_err(|e| format!("opening {tp} failed: {e}"))
            }
        })
        .buffered(OPEN_CONCURRENCY)
        .try_collect()
        .await?;

    let batch = bench_batch();
    let batch_value_bytes = (RECORDS_PER_BATCH * RECORD_VALUE_BYTES) as u64;
    let per_partition = (volume / batch_value_bytes / u64::from(partitions)).max(1);

    let before = stack.stats.snapshot();
    let wal_before = node.wal.puts();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for log in &logs {
        for j in 0..PRODUCERS_PER_PARTITION {
            let n = per_partition / PRODUCERS_PER_PARTITION
                + u64::from(j < per_partition % PRODUCERS_PER_PARTITION);
            if n == 0 {
                continue;
            }
            let log = log.clone();
            let batch = batch.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let t = Instant::now();
                    log.append(batch.clone(), Acks::All)
                        .await
                        .map_err(|e| format!("append to {} failed: {e}", log.topic_partition()))?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, String>(latencies)
            }));
        }
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("producer task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let wal_puts = node.wal.puts() - wal_before;
    if let Some(first) = errors.first() {
        return Err(format!("{} producers failed; first: {first}", errors.len()));
    }

    // Every acknowledged record is in its log.
    let appends = latencies.len() as u64;
    let records: i64 = logs.iter().map(|l| l.status().high_watermark).sum();
    let expected = appends * RECORDS_PER_BATCH as u64;
    if u64::try_from(records).ok() != Some(expected) {
        return Err(format!(
            "the logs' high watermarks add up to {records} records, {expected} were acknowledged"
        ));
    }

    // Let the seals the run triggered finish, so their PUTs count and
    // nothing writes into the directory once it is removed.
    let segment_bytes = LogConfig::default().segment_bytes;
    let settle = Instant::now();
    while logs.iter().any(|l| l.status().tail_bytes >= segment_bytes) {
        if settle.elapsed() > SETTLE_TIMEOUT {
            return Err(format!(
                "background seals did not finish within {SETTLE_TIMEOUT:?} after the run"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let traffic = stack.stats.snapshot() - before;
    node.wal.close().await;
    drop(logs);
    drop(node);

    if traffic.total_errors() > 0 {
        return Err(format!(
            "the store counted errors during the run: {traffic:?}"
        ));
    }
    latencies.sort_unstable();
    let value_bytes = appends * batch_value_bytes;
    let puts = write_requests(&traffic);
    Ok(EngineRow {
        store: kind.label(),
        partitions,
        appends,
        value_bytes,
        elapsed,
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
        wal_puts,
        puts,
        puts_per_gib: puts as f64 / (value_bytes as f64 / GIB),
        kib_per_wal: (appends * batch.len() as u64) as f64 / 1024.0 / wal_puts.max(1) as f64,
    })
}

struct RawRow {
    store: &'static str,
    objects: u64,
    bytes: u64,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
    puts: u64,
}

async fn raw_case(kind: StoreKind, volume: u64) -> Result<RawRow, String> {
    let stack = stack(kind);
    let objects = (volume / RAW_OBJECT_BYTES as u64).max(1);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let payload: Bytes = (0..RAW_OBJECT_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into();
    let next = Arc::new(AtomicU64::new(0));
    let before = stack.stats.snapshot();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..RAW_CONCURRENCY {
        let store = stack.store.clone();
        let payload = payload.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= objects {
                    break;
                }
                let key = Path::from(format!("raw/{i:08}.bin"));
                let t = Instant::now();
                store
                    .put(&key, PutPayload::from(payload.clone()))
                    .await
                    .map_err(|e| format!("PUT {key} failed: {e}"))?;
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| format!("PUT task failed: {e}"))??);
    }
    let elapsed = start.elapsed();
    let traffic = stack.stats.snapshot() - before;
    latencies.sort_unstable();
    Ok(RawRow {
        store: kind.label(),
        objects,
        bytes: objects * RAW_OBJECT_BYTES as u64,
        elapsed,
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
        puts: write_requests(&traffic),
    })
}

#[tokio::main]
async fn main() {
    let volumes = Volumes::from_env();
    let stores = [StoreKind::Local, StoreKind::S3Latency];
    let batch_len = bench_batch().len();
    let mut failed = false;

    let mut engine_rows = Vec::new();
    for kind in stores {
        for partitions in PARTITION_COUNTS {
            let volume = volumes.engine(kind);
            eprintln!(
                "storage bench: engine {} P={partitions}: {} MiB ...",
                kind.label(),
                volume / MIB
            );
            let t = Instant::now();
            match engine_case(kind, partitions, volume).await {
                Ok(row) => {
                    eprintln!(
                        "storage bench: engine {} P={partitions}: {:.1} MiB/s, {} WAL PUTs ({:.1} s)",
                        kind.label(),
                        mib_per_s(row.value_bytes, row.elapsed),
                        row.wal_puts,
                        t.elapsed().as_secs_f64()
                    );
                    engine_rows.push(row);
                }
                Err(e) => {
                    eprintln!(
                        "storage bench: engine {} P={partitions}: FAILED: {e}",
                        kind.label()
                    );
                    failed = true;
                }
            }
        }
    }

    let mut raw_rows = Vec::new();
    for kind in stores {
        eprintln!(
            "storage bench: raw PUT {}: {} MiB in {} MiB objects ...",
            kind.label(),
            volumes.raw / MIB,
            RAW_OBJECT_BYTES as u64 / MIB
        );
        match raw_case(kind, volumes.raw).await {
            Ok(row) => {
                eprintln!(
                    "storage bench: raw PUT {}: {:.1} MiB/s ({:.1} s)",
                    kind.label(),
                    mib_per_s(row.bytes, row.elapsed),
                    row.elapsed.as_secs_f64()
                );
                raw_rows.push(row);
            }
            Err(e) => {
                eprintln!("storage bench: raw PUT {}: FAILED: {e}", kind.label());
                failed = true;
            }
        }
    }

    println!(
        "## Engine appends ({} mode)\n",
        if volumes.quick { "quick" } else { "full" }
    );
    println!(
        "Batch: {RECORDS_PER_BATCH} records x {} KiB values = {} KiB of values, {} B on the wire; \
         {PRODUCERS_PER_PARTITION} producers per partition, 1 append in flight each, acks=all; \
         default WalConfig and LogConfig.\n",
        RECORD_VALUE_BYTES / 1024,
        RECORDS_PER_BATCH * RECORD_VALUE_BYTES / 1024,
        batch_len,
    );
    println!(
        "| store | partitions | batch | appends | MiB | MiB/s | p50 ms | p99 ms | WAL PUTs | PUTs | PUTs/GiB | KiB/WAL |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &engine_rows {
        println!(
            "| {} | {} | {RECORDS_PER_BATCH}x{}B | {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {:.0} | {:.0} |",
            r.store,
            r.partitions,
            RECORD_VALUE_BYTES,
            r.appends,
            r.value_bytes / MIB,
            mib_per_s(r.value_bytes, r.elapsed),
            r.p50_ms,
            r.p99_ms,
            r.wal_puts,
            r.puts,
            r.puts_per_gib,
            r.kib_per_wal,
        );
    }

    println!(
        "\n## Raw PUTs ({} MiB objects, {RAW_CONCURRENCY} concurrent)\n",
        RAW_OBJECT_BYTES as u64 / MIB
    );
    println!("| store | objects | MiB | MiB/s | p50 ms | p99 ms | PUTs |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &raw_rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {} |",
            r.store,
            r.objects,
            r.bytes / MIB,
            mib_per_s(r.bytes, r.elapsed),
            r.p50_ms,
            r.p99_ms,
            r.puts,
        );
    }

    if failed {
        eprintln!("storage bench: some cases failed (see above)");
        std::process::exit(1);
    }
}
