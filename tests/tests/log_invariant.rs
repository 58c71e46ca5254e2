//! The storage invariant under crashes, zombies, store faults and random
//! operation sequences: every acknowledged record is read back exactly once,
//! in order, with no offset gap or reuse.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use proptest::prelude::*;
use strata_storage::keys::TopicIdPartition;
use strata_storage::log::{Acks, LogConfig};
use strata_storage::store::{FaultConfig, FaultRule, FaultStore, OpSet, RetryConfig, RetryStore};
use strata_storage::wal::WalConfig;
use strata_tests::harness::{
    CrashStore, Node, batch_of, bounded, check_invariant, read_all, small_log_config,
};
use strata_tests::scenarios;

fn mem() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

#[tokio::test]
async fn append_seal_crash_recover_in_memory() {
    scenarios::append_seal_crash_recover(mem()).await;
}

#[tokio::test]
async fn zombie_is_fenced_in_memory() {
    scenarios::zombie_is_fenced(mem()).await;
}

#[tokio::test]
async fn idempotent_producer_in_memory() {
    scenarios::idempotent_producer_survives_recovery(mem()).await;
}

#[tokio::test]
async fn abandoned_log_writes_nothing_in_memory() {
    scenarios::abandoned_log_writes_nothing(mem()).await;
}

#[tokio::test]
async fn lost_claim_of_this_incarnation_is_adopted_in_memory() {
    scenarios::lost_claim_of_this_incarnation_is_adopted(mem()).await;
}

#[tokio::test]
async fn graceful_release_in_memory() {
    scenarios::graceful_release_and_reopen(mem()).await;
}

#[tokio::test]
async fn idle_partitions_do_not_pin_the_wal_in_memory() {
    scenarios::idle_partitions_do_not_pin_the_wal(mem()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_during_takeovers_lose_nothing_in_memory() {
    scenarios::sweeps_during_takeovers_lose_nothing(mem()).await;
}

#[tokio::test]
async fn unsealed_tails_stay_within_the_budget_in_memory() {
    scenarios::unsealed_tails_stay_within_the_budget(mem()).await;
}

#[tokio::test]
async fn idle_producers_expire_from_the_manifest_in_memory() {
    scenarios::idle_producers_expire_from_the_manifest(mem()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_releases_are_bounded_in_memory() {
    scenarios::concurrent_releases_are_bounded(mem()).await;
}

#[tokio::test]
async fn long_partitions_archive_old_segments_in_memory() {
    scenarios::long_partitions_archive_old_segments(mem()).await;
}

#[tokio::test]
async fn recreated_topic_is_apart_from_a_zombie_in_memory() {
    scenarios::recreated_topic_is_apart_from_a_zombie(mem()).await;
}

/// The workload of the crash sweep: appends (some concurrent), two seals.
/// Returns what was acknowledged before the store "crashed".
async fn crash_workload(
    store: Arc<dyn ObjectStore>,
    tp: &TopicIdPartition,
) -> BTreeMap<i64, String> {
    let mut acked = BTreeMap::new();
    // A crashed store never comes back: give up on it quickly.
    let wal = WalConfig {
        flush_timeout: Duration::from_millis(100),
        ..WalConfig::default()
    };
    let node = Node::start_with(store, 1, wal).await;
    let Ok(log) = bounded("open", node.open(tp, small_log_config())).await else {
        node.crash();
        return acked;
    };
    for round in 0..4usize {
        let appends: Vec<_> = (0..3)
            .map(|k| {
                let log = log.clone();
                let vals: Vec<String> = (0..2).map(|i| format!("c{round}-{k}-{i}")).collect();
                tokio::spawn(async move {
                    let r = log.append(batch_of(&vals, None), Acks::All).await;
                    (vals, r)
                })
            })
            .collect();
        for a in appends {
            let (vals, r) = bounded("append", a).await.unwrap();
            if let Ok(r) = r {
                for (i, v) in vals.into_iter().enumerate() {
                    acked.insert(r.base_offset + i as i64, v);
                }
            }
        }
        if round % 2 == 1 {
            let _ = bounded("seal", log.seal()).await;
        }
    }
    node.crash();
    acked
}

/// Crash points: the writer dies before or after each request it makes
/// (every WAL PUT, segment PUT, manifest write, LIST and GET), and a new
/// incarnation recovers the partition with every acknowledged record.
#[tokio::test]
async fn every_crash_point_keeps_the_invariant() {
    let tp = strata_tests::harness::tip("crash", 0);
    // Count the requests of an uncrashed run.
    let counter = Arc::new(CrashStore::new(mem(), i64::MAX, false));
    let acked = crash_workload(counter.clone(), &tp).await;
    assert_eq!(acked.len(), 24);
    let total = i64::MAX - counter.left();
    assert!(total > 10, "workload made {total} requests");
    let mut points = 0;
    for budget in 1..=total {
        for after in [false, true] {
            let base = mem();
            let crashing = Arc::new(CrashStore::new(base.clone(), budget, after));
            let acked = crash_workload(crashing, &tp).await;
            let node = Node::start(base, 2).await;
            let log = bounded("recover", node.open(&tp, small_log_config()))
                .await
                .unwrap_or_else(|e| {
                    panic!("recovery after crash point {budget} (after={after}) failed: {e}")
                });
            let read = read_all(&log).await;
            check_invariant(
                &read,
                &acked,
                &BTreeMap::new(),
                log.status().log_start_offset,
            );
            points += 1;
        }
    }
    assert_eq!(points, 2 * total);
}

/// With 5% injected store errors (half of them after the request landed)
/// and latency spikes, behind the retry layer: no acknowledged record is
/// lost, and retries stay bounded.
#[tokio::test]
async fn store_faults_lose_nothing() {
    let base = mem();
    let faults = Arc::new(FaultStore::new(
        base.clone(),
        FaultConfig {
            seed: 7,
            rules: vec![
                FaultRule::errors(OpSet::ALL, 0.05),
                FaultRule::latency(OpSet::ALL, Duration::ZERO, Duration::from_millis(2))
                    .with_spikes(0.02, Duration::from_millis(50)),
            ],
        },
    ));
    let retry = Arc::new(RetryStore::with_seed(
        faults.clone(),
        RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
            ..RetryConfig::default()
        },
        7,
    ));
    let tp = strata_tests::harness::tip("faults", 0);
    let mut acked = BTreeMap::new();
    let mut failed = 0;
    let mut generation = 0u32;
    let mut node = Node::start(retry.clone(), 1).await;
    let mut log = None;
    for i in 0..300usize {
        if log.is_none() {
            match node.open(&tp, small_log_config()).await {
                Ok(l) => log = Some(l),
                Err(_) => {
                    // A failed claim: start over as a new incarnation, like a broker would.
                    generation += 1;
                    node.crash();
                    node = Node::start(retry.clone(), 1 + generation).await;
                    continue;
                }
            }
        }
        let l = log.as_ref().unwrap();
        let vals = vec![format!("f{i}")];
        match bounded("append", l.append(batch_of(&vals, None), Acks::All)).await {
            Ok(r) => {
                acked.insert(r.base_offset, vals[0].clone());
            }
            Err(_) => {
                failed += 1;
                // The WAL gave up (or was fenced): a broker restarts as a new incarnation.
                if l.status().high_watermark < l.status().next_offset
                    || l.append(batch_of(&["probe".into()], None), Acks::Leader)
                        .await
                        .is_err()
                {
                    generation += 1;
                    log = None;
                    let old = std::mem::replace(
                        &mut node,
                        Node::start(retry.clone(), 1 + generation).await,
                    );
                    old.crash();
                }
            }
        }
        if i % 50 == 49
            && let Some(l) = &log
        {
            let _ = l.seal().await;
        }
    }
    node.crash();
    faults.set_enabled(false);
    let reader = Node::start(base, 99).await;
    let log = reader.open(&tp, small_log_config()).await.unwrap();
    let read = read_all(&log).await;
    let read: Vec<_> = read
        .into_iter()
        .filter(|(_, v)| v.as_ref() != b"probe")
        .collect();
    // Probes are unacknowledged filler; check acknowledged records and order.
    for (off, v) in &acked {
        assert!(
            read.iter()
                .any(|(o, r)| o == off && r.as_ref() == v.as_bytes()),
            "acknowledged {v} at {off} lost"
        );
    }
    assert!(
        acked.len() > 250,
        "too few appends succeeded: {} (failed {failed})",
        acked.len()
    );
    assert!(
        retry.retries() < 2000,
        "retries not bounded: {}",
        retry.retries()
    );
    assert!(faults.injected() > 0);
}

#[derive(Debug, Clone)]
enum Op {
    Append { n: usize, all: bool },
    Concurrent(usize),
    Seal,
    Crash,
    Release,
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..6usize, any::<bool>()).prop_map(|(n, all)| Op::Append { n, all }),
        2 => (2..6usize).prop_map(Op::Concurrent),
        2 => Just(Op::Seal),
        1 => Just(Op::Crash),
        1 => Just(Op::Release),
        1 => Just(Op::Retention),
    ]
}

async fn run_ops(ops: Vec<Op>) {
    let store = mem();
    let tp = strata_tests::harness::tip("model", 0);
    let config = LogConfig {
        retention_bytes: Some(4096),
        retention_ms: None,
        ..small_log_config()
    };
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    let mut observed: BTreeMap<i64, Bytes> = BTreeMap::new();
    let mut broker = 1;
    let mut node = Node::start(store.clone(), broker).await;
    let mut log = node.open(&tp, config.clone()).await.unwrap();
    let mut counter = 0usize;
    let mut log_start = 0;
    for op in ops {
        match op {
            Op::Append { n, all } => {
                let vals: Vec<String> = (0..n)
                    .map(|_| {
                        counter += 1;
                        format!("m{counter}")
                    })
                    .collect();
                let acks = if all { Acks::All } else { Acks::Leader };
                let r = bounded("append", log.append(batch_of(&vals, None), acks))
                    .await
                    .unwrap();
                if all {
                    for (i, v) in vals.into_iter().enumerate() {
                        acked.insert(r.base_offset + i as i64, v);
                    }
                }
            }
            Op::Concurrent(k) => {
                let tasks: Vec<_> = (0..k)
                    .map(|_| {
                        counter += 1;
                        let vals = vec![format!("m{counter}")];
                        let log = log.clone();
                        tokio::spawn(async move {
                            (log.append(batch_of(&vals, None), Acks::All).await, vals)
                        })
                    })
                    .collect();
                for t in tasks {
                    let (r, vals) = bounded("append", t).await.unwrap();
                    acked.insert(r.unwrap().base_offset, vals[0].clone());
                }
            }
            Op::Seal => {
                bounded("seal", log.seal()).await.unwrap();
            }
            Op::Retention => {
                bounded("retention", log.apply_retention(0)).await.unwrap();
            }
            Op::Crash | Op::Release => {
                // Consumers saw these before the broker went away.
                for (o, v) in read_all(&log).await {
                    observed.insert(o, v);
                }
                if matches!(op, Op::Release) {
                    bounded("release", log.release()).await.unwrap();
                }
                broker += 1;
                let old = std::mem::replace(&mut node, Node::start(store.clone(), broker).await);
                old.crash();
                log = bounded("recover", node.open(&tp, config.clone()))
                    .await
                    .unwrap();
            }
        }
        let st = log.status();
        assert!(st.log_start_offset >= log_start, "log start went backwards");
        log_start = st.log_start_offset;
    }
    let read = read_all(&log).await;
    check_invariant(&read, &acked, &observed, log.status().log_start_offset);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_operation_sequences_keep_the_invariant(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_ops(ops));
    }
}

/// Time retention deletes whole old segments and advances the log start;
/// reads below it are out of range; timestamp lookups find the right offset.
#[tokio::test]
async fn retention_by_time_and_timestamp_lookup() {
    let store = mem();
    let tp = strata_tests::harness::tip("retention", 0);
    let node = Node::start(store.clone(), 1).await;
    let log = node.open(&tp, small_log_config()).await.unwrap();
    for i in 0..3 {
        let vals: Vec<String> = (0..4).map(|k| format!("t{i}-{k}")).collect();
        log.append(batch_of(&vals, None), Acks::All).await.unwrap();
        log.seal().await.unwrap();
    }
    log.append(batch_of(&["tail".to_string()], None), Acks::All)
        .await
        .unwrap();
    // Timestamps are 1_700_000_000_000 + index within the batch.
    assert_eq!(
        log.offset_for_timestamp(1_700_000_000_002).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        log.offset_for_timestamp(1_800_000_000_000).await.unwrap(),
        None
    );
    let eight_days_later = 1_700_000_000_000 + 8 * 24 * 3600 * 1000;
    assert_eq!(log.apply_retention(eight_days_later).await.unwrap(), 3);
    let st = log.status();
    assert_eq!(
        (st.log_start_offset, st.segments, st.high_watermark),
        (12, 0, 13)
    );
    let err = log.read(0, 1024).await.unwrap_err();
    assert_eq!(err.kind(), strata_storage::ErrorKind::OutOfRange);
    assert_eq!(read_all(&log).await.len(), 1);
    // A new owner sees the same log start.
    node.crash();
    let next = Node::start(store, 2).await;
    assert_eq!(
        next.open(&tp, small_log_config())
            .await
            .unwrap()
            .status()
            .log_start_offset,
        12
    );
}

/// A segment above the multipart threshold uploads in parts and reads back.
#[tokio::test]
async fn large_segments_upload_with_multipart() {
    let store = mem();
    let tp = strata_tests::harness::tip("large", 0);
    let node = Node::start(store, 1).await;
    let config = LogConfig {
        segment_bytes: 64 << 20,
        ..LogConfig::default()
    };
    let log = node.open(&tp, config).await.unwrap();
    let mut acked = BTreeMap::new();
    // 55 MB: past the threshold, under `segment_bytes`.
    for i in 0..55 {
        let v = format!("{i:04}{}", "x".repeat(1_000_000));
        let r = log
            .append(batch_of(std::slice::from_ref(&v), None), Acks::All)
            .await
            .unwrap();
        acked.insert(r.base_offset, v);
    }
    let seg = log.seal().await.unwrap().unwrap();
    assert!(seg.size > strata_storage::segment::MULTIPART_THRESHOLD as u64);
    let read = read_all(&log).await;
    check_invariant(&read, &acked, &BTreeMap::new(), 0);
}

/// `delete_records_before` drops the whole segments below an offset (what
/// a group coordinator does once a snapshot covers them), keeps the one
/// that straddles it and the tail, and a new owner sees the same start.
#[tokio::test]
async fn records_before_an_offset_are_deleted_by_whole_segments() {
    let store = mem();
    let tp = strata_tests::harness::tip("truncated", 0);
    let node = Node::start(store.clone(), 1).await;
    let log = node.open(&tp, small_log_config()).await.unwrap();
    for i in 0..4 {
        let vals: Vec<String> = (0..4).map(|k| format!("s{i}-{k}")).collect();
        log.append(batch_of(&vals, None), Acks::All).await.unwrap();
        log.seal().await.unwrap();
    }
    log.append(batch_of(&["tail".to_string()], None), Acks::All)
        .await
        .unwrap();
    // Segments hold 0..=3, 4..=7, 8..=11, 12..=15; offset 9 is in the third.
    assert_eq!(log.delete_records_before(9).await.unwrap(), 2);
    let st = log.status();
    assert_eq!(
        (st.log_start_offset, st.segments, st.high_watermark),
        (8, 2, 17)
    );
    assert_eq!(read_all(&log).await.len(), 9);
    // Nothing below the start: a no-op.
    assert_eq!(log.delete_records_before(3).await.unwrap(), 0);
    node.crash();
    let next = Node::start(store, 2).await;
    assert_eq!(
        next.open(&tp, small_log_config())
            .await
            .unwrap()
            .status()
            .log_start_offset,
        8
    );
}

/// A pipelining producer's large batches on a partition with small
/// segments: appends are not refused while the bytes are only on their way
/// to the WAL (they are not a sign of failing seals), and once everything is
/// durable the tail is sealed down without waiting for another append (a
/// seal takes only what is durable; the rest used to stay unsealed until
/// `segment_ms`, and appends refused for it never started a seal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_in_flight_are_accepted_and_sealed_without_another_append() {
    let slow = FaultStore::new(
        mem(),
        FaultConfig {
            seed: 3,
            rules: vec![FaultRule::latency(
                OpSet::ALL,
                Duration::from_millis(30),
                Duration::from_millis(30),
            )],
        },
    );
    let node = Node::start_with(Arc::new(slow), 1, WalConfig::default()).await;
    let config = LogConfig {
        segment_bytes: 64 << 10,
        max_batch_bytes: 48 << 10,
        ..small_log_config()
    };
    let tp = strata_tests::harness::tip("large", 0);
    let log = node.open(&tp, config).await.expect("open");
    let value = "x".repeat(40 << 10);
    let mut written = BTreeMap::new();
    // Eight batches of 40 KiB staged at once: five segments' worth in
    // flight, as a producer with several batches in flight sends them.
    let mut staged = Vec::new();
    for i in 0..8 {
        let v = format!("{i}-{value}");
        let appending = log
            .append_staged(batch_of(std::slice::from_ref(&v), None), Acks::All)
            .await
            .expect("bytes on their way to the WAL do not refuse appends");
        staged.push((appending, v));
    }
    for (appending, v) in staged {
        let r = appending.durable().await.expect("durable");
        written.insert(r.base_offset, v);
    }
    let sealed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let status = log.status();
            if status.tail_bytes < 64 << 10 {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the tail was not sealed without another append: {:?}",
            log.status()
        )
    });
    assert!(sealed.segments >= 1, "{sealed:?}");
    let read: BTreeMap<i64, String> = read_all(&log)
        .await
        .into_iter()
        .map(|(o, v)| (o, String::from_utf8(v.to_vec()).expect("utf-8")))
        .collect();
    assert_eq!(read, written, "every acknowledged record, once, in order");
}

/// A busy partition keeps being written while its tail is sealed: the
/// bytes a seal in progress is uploading do not count towards the guard
/// against seals that cannot upload (it refused appends as soon as a slow
/// seal and the bytes behind it passed its limit, which a single partition
/// at tens of MiB/s did on every seal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_a_slow_seal_are_not_refused_for_the_bytes_it_uploads() {
    // Segments and manifests take 400 ms; the WAL is fast.
    let slow = FaultStore::new(
        mem(),
        FaultConfig {
            seed: 4,
            rules: vec![
                FaultRule::latency(
                    OpSet::ALL,
                    Duration::from_millis(400),
                    Duration::from_millis(400),
                )
                .with_key_prefix("topics/"),
            ],
        },
    );
    let node = Node::start_with(Arc::new(slow), 1, WalConfig::default()).await;
    let config = LogConfig {
        // Two batches stay below a segment: only the explicit seal below
        // takes them.
        segment_bytes: 96 << 10,
        max_batch_bytes: 48 << 10,
        ..small_log_config()
    };
    let tp = strata_tests::harness::tip("busy", 0);
    let log = node.open(&tp, config).await.expect("open");
    let value = "x".repeat(40 << 10);
    let mut written = BTreeMap::new();
    let mut append = async |i: usize| {
        let v = format!("{i}-{value}");
        let r = log
            .append(batch_of(std::slice::from_ref(&v), None), Acks::All)
            .await
            .unwrap_or_else(|e| panic!("append {i} while a seal uploads: {e}"));
        written.insert(r.base_offset, v);
    };
    append(0).await;
    append(1).await;
    // A seal of both (80 KiB) starts; nine more batches (360 KiB: more than
    // four segments with the 80 KiB being sealed) arrive while it uploads.
    let sealing = tokio::spawn({
        let log = log.clone();
        async move { log.seal().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 2..11 {
        append(i).await;
    }
    sealing.await.expect("seal task").expect("seal");
    let read: BTreeMap<i64, String> = read_all(&log)
        .await
        .into_iter()
        .map(|(o, v)| (o, String::from_utf8(v.to_vec()).expect("utf-8")))
        .collect();
    assert_eq!(read, written, "every acknowledged record, once, in order");
}
