//! `strata bench store`: the raw PUT and GET speed of a store, with no
//! broker in between — the yardsticks for `strata bench produce` and
//! `strata bench consume` on the same store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Flags of `strata bench store`.
#[derive(Debug, clap::Args)]
pub struct StoreBench {
    /// The store URL, as `strata serve --store` takes it (file://, s3://,
    /// memory://); S3 settings come from the AWS_* variables.
    #[arg(long, default_value = "file://./strata-data/bucket")]
    pub store: String,
    /// Bytes per object (the broker's WAL objects are about 8 MiB under
    /// load, its segments 32 MiB).
    #[arg(long, default_value_t = 4 << 20)]
    pub object_size: usize,
    /// Objects to write.
    #[arg(long, default_value_t = 64)]
    pub objects: usize,
    /// PUTs (then GETs) in flight at once (the broker's default is 4).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Keep the objects (under `bench/`) instead of deleting them after.
    #[arg(long)]
    pub keep: bool,
    /// Delay every request as a broker with the S3-like `store_latency`
    /// setting does (20–60 ms, 1% 200 ms more), for the yardstick of a
    /// broker benchmarked that way.
    #[arg(long)]
    pub s3_latency: bool,
}

/// Runs the benchmark and prints its summary.
pub async fn run(args: StoreBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.objects > 0, "--objects must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let store = crate::store_url::open(&args.store)?;
    let store = if args.s3_latency {
        crate::store_url::with_latency(store, &crate::config::StoreLatencyConfig::s3_like())
    } else {
        store
    };
    let payload = Bytes::from(vec![0x5a; args.object_size]);
    let run_id = uuid_like();
    let bar = progress(args.objects, "PUTs");
    let mut latencies = histogram()?;
    let started = Instant::now();
    let mut puts = futures::stream::iter(0..args.objects)
        .map(|i| {
            let store = store.clone();
            let payload = payload.clone();
            let key = Path::from(format!("bench/{run_id}/{i:08}"));
            async move {
                let t = Instant::now();
                store
                    .put(&key, PutPayload::from_bytes(payload))
                    .await
                    .with_context(|| format!("PUT {key} failed"))?;
                anyhow::Ok(t.elapsed())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(took) = puts.next().await {
        let took = took?;
        let _ = latencies.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        bar.inc(1);
    }
    drop(puts);
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    println!(
        "store {}: {} PUTs of {} KiB, {} in flight",
        args.store,
        args.objects,
        args.object_size >> 10,
        args.concurrency
    );
    summary("PUT", &args, elapsed, &latencies);

    // Read every object back whole: the GET bandwidth a cold consumer can
    // reach with as many requests in flight.
    let mut latencies = histogram()?;
    let bar = progress(args.objects, "GETs");
    let started = Instant::now();
    let mut gets = futures::stream::iter(0..args.objects)
        .map(|i| {
            let store = store.clone();
            let key = Path::from(format!("bench/{run_id}/{i:08}"));
            async move {
                let t = Instant::now();
                let bytes = store
                    .get(&key)
                    .await
                    .with_context(|| format!("GET {key} failed"))?
                    .bytes()
                    .await
                    .with_context(|| format!("reading GET {key} failed"))?;
                anyhow::ensure!(
                    bytes.len() == args.object_size,
                    "GET {key} returned {} bytes, PUT wrote {}",
                    bytes.len(),
                    args.object_size
                );
                anyhow::Ok(t.elapsed())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(took) = gets.next().await {
        let took = took?;
        let _ = latencies.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        bar.inc(1);
    }
    drop(gets);
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    summary("GET", &args, elapsed, &latencies);
    if !args.keep {
        cleanup(&store, &run_id).await;
    }
    Ok(())
}

fn progress(objects: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(objects as u64);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}})"
    )) {
        bar.set_style(style);
    }
    bar
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("latency histogram")
}

/// Prints one phase's throughput and latency.
fn summary(op: &str, args: &StoreBench, elapsed: Duration, latencies: &Histogram<u64>) {
    let mib = (args.objects * args.object_size) as f64 / f64::from(1 << 20);
    let ms = |q: f64| Duration::from_micros(latencies.value_at_quantile(q)).as_secs_f64() * 1e3;
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "  {op} throughput  {:.1} MiB/s, {:.1} {op}s/s",
        mib / secs,
        args.objects as f64 / secs
    );
    println!(
        "  {op} latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.99),
        latencies.max() as f64 / 1e3
    );
}

async fn cleanup(store: &Arc<dyn ObjectStore>, run_id: &str) {
    let prefix = Path::from(format!("bench/{run_id}"));
    let keys: Vec<Path> = store
        .list(Some(&prefix))
        .filter_map(|m| async move { m.ok().map(|m| m.location) })
        .collect()
        .await;
    for key in keys {
        if let Err(e) = store.delete(&key).await {
            eprintln!("warning: cannot delete {key}: {e}");
        }
    }
}

/// A short unique name for this run's objects.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}
