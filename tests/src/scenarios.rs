//! Storage scenarios that end with the invariant check. Each takes the
//! store to run on, so the same scenario runs on `InMemory`,
//! `LocalFileSystem` and a real S3-compatible server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use strata_storage::ErrorKind;
use strata_storage::keys::TopicIdPartition;
use strata_storage::log::{Acks, LogConfig, PartitionLog};

use crate::harness::{Node, batch_of, bounded, check_invariant, read_all, small_log_config, tip};

fn tp(name: &str) -> TopicIdPartition {
    tip(name, 0)
}

fn tp_n(name: &str, partition: u32) -> TopicIdPartition {
    tip(name, partition)
}

fn values(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Appends, seals, reads across segments and tail, then a new incarnation
/// recovers the partition after a crash and finds every acknowledged record.
pub async fn append_seal_crash_recover(store: Arc<dyn ObjectStore>) {
    let tp = tp("basic");
    let mut acked = BTreeMap::new();
    let mut observed: BTreeMap<i64, Bytes> = BTreeMap::new();
    let a = Node::start(store.clone(), 1).await;
    let log = bounded("open", a.open(&tp, small_log_config()))
        .await
        .expect("open");
    for round in 0..6 {
        let vals = values("r", round * 10, 10);
        let r = bounded("append", log.append(batch_of(&vals, None), Acks::All))
            .await
            .expect("append");
        for (i, v) in vals.into_iter().enumerate() {
            acked.insert(r.base_offset + i as i64, v);
        }
        if round % 2 == 1 {
            bounded("seal", log.seal()).await.expect("seal");
        }
    }
    for (o, v) in read_all(&log).await {
        observed.insert(o, v);
    }
    assert_eq!(observed.len(), 60);
    assert!(log.status().segments >= 3);
    // WAL objects behind the last seal are garbage; the tail's are kept.
    let deleted = bounded("wal gc", a.wal.gc()).await.expect("wal gc");
    assert!(deleted > 0, "sealed WAL objects should be collected");
    a.crash();
    let b = Node::start(store.clone(), 2).await;
    let log2 = bounded("recover", b.open(&tp, small_log_config()))
        .await
        .expect("recover");
    let st = log2.status();
    assert_eq!(st.high_watermark, 60);
    check_invariant(
        &read_all(&log2).await,
        &acked,
        &observed,
        st.log_start_offset,
    );
    // The new owner keeps appending at the right offset.
    let r = log2
        .append(batch_of(&values("after", 0, 1), None), Acks::All)
        .await
        .expect("append");
    assert_eq!(r.base_offset, 60);
}

/// A zombie (old incarnation still running) keeps appending after another
/// broker took the partition over: none of its appends is acknowledged, all
/// fail as fenced, and the new owner's log holds every acknowledged record.
pub async fn zombie_is_fenced(store: Arc<dyn ObjectStore>) {
    let tp = tp("zombie");
    let mut acked = BTreeMap::new();
    let a = Node::start(store.clone(), 1).await;
    let old = a.open(&tp, small_log_config()).await.expect("open");
    for i in 0..5 {
        let vals = values("a", i, 1);
        let r = old
            .append(batch_of(&vals, None), Acks::All)
            .await
            .expect("append");
        acked.insert(r.base_offset, vals[0].clone());
    }
    // Broker 2 takes over while broker 1 is alive (it was "paused").
    let b = Node::start(store.clone(), 2).await;
    let new = bounded("takeover", b.open(&tp, small_log_config()))
        .await
        .expect("takeover");
    // The zombie wakes up and keeps producing.
    for i in 0..5 {
        let vals = values("zombie", i, 1);
        match bounded(
            "zombie append",
            old.append(batch_of(&vals, None), Acks::All),
        )
        .await
        {
            Ok(r) => panic!("a fenced zombie acknowledged offset {}", r.base_offset),
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::Fenced,
                    "zombie append failed for another reason: {e}"
                );
                let text = e.to_string();
                assert_eq!(
                    text.matches("fenced:").count(),
                    1,
                    "the reason says fenced once: {text}"
                );
            }
        }
    }
    let err = old.seal().await.expect_err("a zombie cannot seal");
    assert_eq!(err.to_string().matches("fenced:").count(), 1, "{err}");
    // Its seal fails too and it can not write a manifest.
    for i in 0..5 {
        let vals = values("b", i, 1);
        let r = new
            .append(batch_of(&vals, None), Acks::All)
            .await
            .expect("append");
        acked.insert(r.base_offset, vals[0].clone());
    }
    let st = new.status();
    let read = read_all(&new).await;
    check_invariant(&read, &acked, &BTreeMap::new(), st.log_start_offset);
    assert!(
        read.iter().all(|(_, v)| !v.starts_with(b"zombie")),
        "a zombie record reached the log"
    );
    assert_eq!(read.len(), 10);
}

/// Retries of an idempotent producer's batch are answered with the original
/// offsets, before and after seal and recovery; gaps are refused.
pub async fn idempotent_producer_survives_recovery(store: Arc<dyn ObjectStore>) {
    let tp = tp("idem");
    let a = Node::start(store.clone(), 1).await;
    let log = a.open(&tp, small_log_config()).await.expect("open");
    let first = batch_of(&values("p", 0, 3), Some((42, 0, 0)));
    let r1 = log.append(first.clone(), Acks::All).await.expect("append");
    let again = log.append(first.clone(), Acks::All).await.expect("retry");
    assert!(again.duplicate);
    assert_eq!(
        (again.base_offset, again.last_offset),
        (r1.base_offset, r1.last_offset)
    );
    let second = batch_of(&values("p", 3, 2), Some((42, 0, 3)));
    let r2 = log.append(second.clone(), Acks::All).await.expect("append");
    assert_eq!(r2.base_offset, 3);
    let gap = batch_of(&values("p", 9, 1), Some((42, 0, 9)));
    let err = log
        .append(gap, Acks::All)
        .await
        .expect_err("a sequence gap is refused");
    assert_eq!(err.kind(), ErrorKind::Sequence);
    // A batch that overtook its predecessor (pipelined requests are
    // served concurrently) waits for it instead of being refused.
    let ahead = batch_of(&values("p", 6, 1), Some((42, 0, 6)));
    let overtaking = tokio::spawn({
        let log = log.clone();
        async move { log.append(ahead, Acks::All).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let behind = batch_of(&values("p", 5, 1), Some((42, 0, 5)));
    let rb = log.append(behind, Acks::All).await.expect("append");
    let ra = overtaking
        .await
        .expect("join")
        .expect("the overtaking batch lands");
    assert_eq!(
        (rb.base_offset, ra.base_offset),
        (5, 6),
        "in sequence order"
    );
    log.seal().await.expect("seal");
    a.crash();
    let b = Node::start(store.clone(), 2).await;
    let log = b.open(&tp, small_log_config()).await.expect("recover");
    let again = log
        .append(second, Acks::All)
        .await
        .expect("retry after recovery");
    assert!(
        again.duplicate,
        "producer state must survive seal and recovery"
    );
    assert_eq!(again.base_offset, 3);
    let third = batch_of(&values("p", 7, 1), Some((42, 0, 7)));
    assert_eq!(
        log.append(third, Acks::All)
            .await
            .expect("append")
            .base_offset,
        7
    );
    // A stale epoch is fenced.
    let stale = batch_of(&values("old", 0, 1), Some((42, -1, 0)));
    assert!(log.append(stale, Acks::All).await.is_err());
    assert_eq!(read_all(&log).await.len(), 8);
}

/// An abandoned log (its topic was deleted or re-created) writes nothing
/// more to the bucket: appends, seals and a release all fail, and no object
/// under the partition's keys appears or changes afterwards.
pub async fn abandoned_log_writes_nothing(store: Arc<dyn ObjectStore>) {
    use futures::TryStreamExt;
    let tp = tp("abandoned");
    let node = Node::start(store.clone(), 1).await;
    let log = node.open(&tp, small_log_config()).await.expect("open");
    for i in 0..3 {
        log.append(batch_of(&values("a", i, 1), None), Acks::All)
            .await
            .expect("append");
    }
    log.seal().await.expect("seal");
    // An unsealed, acknowledged tail the abandon must not seal.
    log.append(batch_of(&values("a", 3, 1), None), Acks::All)
        .await
        .expect("append");
    let listing = || async {
        let root = strata_storage::keys::topic_root(&tp.tp.topic);
        let mut objects: Vec<(String, u64)> = store
            .list(Some(&root))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .expect("list");
        objects.sort();
        objects
    };
    let before = listing().await;
    log.abandon("its topic was deleted").await;
    let late = log
        .append(batch_of(&values("late", 0, 1), None), Acks::All)
        .await
        .expect_err("append after abandon");
    assert!(late.to_string().contains("its topic was deleted"), "{late}");
    assert!(log.seal().await.is_err(), "seal after abandon");
    assert!(log.release().await.is_err(), "release after abandon");
    assert_eq!(listing().await, before, "nothing written after abandon");
    node.wal.close().await;
}

/// A claim of this incarnation that no log holds any more (its open's
/// result was lost, or a release failed halfway) is adopted when the caller
/// allows it: the tail is replayed from this incarnation's own WAL, which
/// is not fenced (it keeps writing), and every acknowledged record is
/// there. Without that permission the open refuses, retryably.
pub async fn lost_claim_of_this_incarnation_is_adopted(store: Arc<dyn ObjectStore>) {
    let tp = tp("adopted");
    let other = tp_n("adopted", 1);
    let node = Node::start(store.clone(), 1).await;
    let mut acked = BTreeMap::new();
    let log = node.open(&tp, small_log_config()).await.expect("open");
    for i in 0..6 {
        let vals = values("a", i, 1);
        let r = log
            .append(batch_of(&vals, None), Acks::All)
            .await
            .expect("append");
        acked.insert(r.base_offset, vals[0].clone());
        if i == 2 {
            log.seal().await.expect("seal");
        }
    }
    let epoch = log.status().leader_epoch;
    // The log is lost track of: no release, nothing more written.
    drop(log);
    // The same incarnation keeps writing other partitions meanwhile.
    let busy = node.open(&other, small_log_config()).await.expect("open");
    busy.append(batch_of(&values("b", 0, 1), None), Acks::All)
        .await
        .expect("append");

    let refused = node
        .open(&tp, small_log_config())
        .await
        .expect_err("open() never adopts");
    assert!(
        matches!(refused.kind(), ErrorKind::Transient { .. }),
        "{refused}"
    );
    let me = node.wal.stream();
    let log = PartitionLog::open_guarded(
        store.clone(),
        node.cache.clone(),
        node.wal.clone(),
        tp.clone(),
        small_log_config(),
        &|o| *o == me,
    )
    .await
    .expect("adopted");
    assert_eq!(log.status().leader_epoch, epoch + 1);
    check_invariant(&read_all(&log).await, &acked, &BTreeMap::new(), 0);
    // The stream was not fenced: this incarnation still writes.
    let r = log
        .append(batch_of(&values("a", 6, 1), None), Acks::All)
        .await
        .expect("append after adoption");
    assert_eq!(r.base_offset, 6);
    busy.append(batch_of(&values("b", 1, 1), None), Acks::All)
        .await
        .expect("the other partition still writes");
    node.wal.close().await;
}

/// Graceful hand-over: the owner seals and releases, the next owner opens
/// without fencing, epochs increase, nothing is copied or lost.
pub async fn graceful_release_and_reopen(store: Arc<dyn ObjectStore>) {
    let tp = tp("handover");
    let mut acked = BTreeMap::new();
    let mut epochs = Vec::new();
    for broker in 1..=3u32 {
        let node = Node::start(store.clone(), broker).await;
        let log = node.open(&tp, small_log_config()).await.expect("open");
        epochs.push(log.status().leader_epoch);
        for i in 0..4 {
            let vals = values(&format!("b{broker}"), i * 2, 2);
            let r = log
                .append(batch_of(&vals, None), Acks::All)
                .await
                .expect("append");
            for (k, v) in vals.into_iter().enumerate() {
                acked.insert(r.base_offset + k as i64, v);
            }
        }
        log.release().await.expect("release");
        assert!(
            log.append(batch_of(&values("late", 0, 1), None), Acks::All)
                .await
                .is_err()
        );
        node.wal.close().await;
    }
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "leader epochs must grow: {epochs:?}"
    );
    let reader = Node::start(store.clone(), 9).await;
    let log = reader.open(&tp, small_log_config()).await.expect("open");
    check_invariant(&read_all(&log).await, &acked, &BTreeMap::new(), 0);
    assert_eq!(log.status().high_watermark, 24);
}

/// WAL objects of `node`'s own stream in the bucket now.
async fn wal_objects(node: &Node) -> usize {
    strata_storage::wal::list_from(
        &node.store,
        node.wal.stream(),
        strata_storage::keys::WalSeq(0),
    )
    .await
    .expect("list the WAL")
    .len()
}

/// An idle partition does not keep the broker's WAL from collection: one
/// partition written continuously (and sealed), one that holds a single
/// sealed record and one never written. Once the idle ones' floors are
/// older than `segment_ms`, maintenance moves them up and the WAL shrinks
/// to what the busy partition's tail needs; a takeover of an idle
/// partition then replays nothing old and still has every record.
pub async fn idle_partitions_do_not_pin_the_wal(store: Arc<dyn ObjectStore>) {
    let config = LogConfig {
        segment_ms: Duration::from_millis(200),
        ..small_log_config()
    };
    let node = Node::start(store.clone(), 1).await;
    let busy = node
        .open(&tp_n("idle", 0), config.clone())
        .await
        .expect("open");
    let one = node
        .open(&tp_n("idle", 1), config.clone())
        .await
        .expect("open");
    let never = node
        .open(&tp_n("idle", 2), config.clone())
        .await
        .expect("open");
    let r = one
        .append(batch_of(&values("one", 0, 1), None), Acks::All)
        .await
        .expect("append");
    let mut acked_one = BTreeMap::new();
    acked_one.insert(r.base_offset, "one-0".to_string());
    one.seal().await.expect("seal");
    // 60 WAL objects of the busy partition, sealed every 20.
    for i in 0..60 {
        busy.append(batch_of(&values("busy", i, 1), None), Acks::All)
            .await
            .expect("append");
        if i % 20 == 19 {
            busy.seal().await.expect("seal");
        }
    }
    node.wal.gc().await.expect("gc");
    assert!(
        wal_objects(&node).await >= 60,
        "the idle partitions pin the WAL until their floors are old"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let now = 1_700_000_000_000;
    for log in [&busy, &one, &never] {
        log.maintain(now).await.expect("maintain");
    }
    node.wal.gc().await.expect("gc");
    let left = wal_objects(&node).await;
    assert!(
        left <= 2,
        "{left} WAL objects left: an idle partition still pins the WAL"
    );
    for log in [&busy, &one, &never] {
        assert!(log.pinned_wal_objects() <= 1, "{:?}", log.id());
    }
    // A quiet broker writes nothing more for them.
    let before = one.status().manifest_version;
    one.maintain(now).await.expect("maintain");
    assert_eq!(one.status().manifest_version, before, "no write when idle");

    // Records appended after the floor moved are found by a takeover.
    let r = one
        .append(batch_of(&values("one", 1, 1), None), Acks::All)
        .await
        .expect("append");
    acked_one.insert(r.base_offset, "one-1".to_string());
    node.crash();
    let next = Node::start(store.clone(), 2).await;
    let one = next
        .open(&tp_n("idle", 1), config.clone())
        .await
        .expect("takeover");
    check_invariant(&read_all(&one).await, &acked_one, &BTreeMap::new(), 0);
    let never = next.open(&tp_n("idle", 2), config).await.expect("takeover");
    assert_eq!(never.status().high_watermark, 0);
    next.wal.close().await;
}

/// Two incarnations of one topic name never meet: a broker still holding
/// the deleted incarnation's partition (a zombie) seals and releases into
/// its own keys, while the re-created topic (another id) serves from the
/// start with its own producer state; neither sees the other's records.
pub async fn recreated_topic_is_apart_from_a_zombie(store: Arc<dyn ObjectStore>) {
    use strata_storage::keys::{TopicId, TopicIdPartition};
    let old = tp("reborn");
    let new = TopicIdPartition::new(TopicId::random(), old.tp.clone());
    let zombie = Node::start(store.clone(), 1).await;
    let stale = zombie.open(&old, small_log_config()).await.expect("open");
    for i in 0..30 {
        stale
            .append(
                batch_of(&values("old", i, 1), Some((7, 0, i as i32))),
                Acks::All,
            )
            .await
            .expect("append");
        stale.seal().await.expect("seal");
    }
    stale
        .append(batch_of(&values("old", 30, 1), Some((7, 0, 30))), Acks::All)
        .await
        .expect("append");
    // The topic is re-created (new id) and served by another broker.
    let node = Node::start(store.clone(), 2).await;
    let fresh = node.open(&new, small_log_config()).await.expect("open new");
    let mut acked = BTreeMap::new();
    for i in 0..5 {
        let r = fresh
            .append(
                batch_of(&values("new", i, 1), Some((7, 0, i as i32))),
                Acks::All,
            )
            .await
            .expect("the new topic has its own producer state");
        acked.insert(r.base_offset, format!("new-{i}"));
    }
    // The zombie wakes up, seals and releases into the old incarnation.
    stale.seal().await.expect("the zombie seals its own keys");
    stale
        .release()
        .await
        .expect("the zombie releases its own keys");
    for i in 5..10 {
        let r = fresh
            .append(
                batch_of(&values("new", i, 1), Some((7, 0, i as i32))),
                Acks::All,
            )
            .await
            .expect("append after the zombie woke");
        acked.insert(r.base_offset, format!("new-{i}"));
    }
    check_invariant(&read_all(&fresh).await, &acked, &BTreeMap::new(), 0);
    fresh.release().await.expect("release");
    let reader = Node::start(store.clone(), 3).await;
    let log = reader.open(&new, small_log_config()).await.expect("reopen");
    let all = read_all(&log).await;
    check_invariant(&all, &acked, &BTreeMap::new(), 0);
    assert_eq!(all.len(), 10, "no record of the old incarnation leaks in");
    zombie.wal.close().await;
    node.wal.close().await;
    reader.wal.close().await;
}

/// Bucket sweeps (with no grace at all) running over and over while a
/// crashed broker's partitions are taken over one by one: the sweeps only
/// ever delete WAL objects below what a manifest head names, so every
/// takeover finds its tail and every acknowledged record is read back;
/// once no head names the dead stream, it is closed by a tombstone and the
/// rest of it goes.
pub async fn sweeps_during_takeovers_lose_nothing(store: Arc<dyn ObjectStore>) {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, Ordering};

    use strata_storage::gc::{GcConfig, LiveSet, sweep};
    let partitions: Vec<TopicIdPartition> = (0..4).map(|p| tp_n("swept", p)).collect();
    let a = Node::start(store.clone(), 1).await;
    let dead = a.wal.stream();
    let mut acked: Vec<BTreeMap<i64, String>> = vec![BTreeMap::new(); partitions.len()];
    for (i, p) in partitions.iter().enumerate() {
        let log = a.open(p, small_log_config()).await.expect("open");
        for n in 0..20 {
            let v = format!("p{i}-{n}");
            let r = log
                .append(batch_of(std::slice::from_ref(&v), None), Acks::All)
                .await
                .expect("append");
            acked[i].insert(r.base_offset, v);
            if n == 9 {
                log.seal().await.expect("seal");
            }
        }
    }
    a.crash();
    let b = Node::start(store.clone(), 2).await;
    let live = LiveSet {
        topics: HashMap::from([(partitions[0].tp.topic.clone(), partitions[0].topic_id)]),
        streams: HashSet::from([b.wal.stream()]),
    };
    let config = GcConfig {
        grace: Duration::ZERO,
        ..GcConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (store, live, config, stop) =
            (store.clone(), live.clone(), config.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sweeps = 0;
            while !stop.load(Ordering::SeqCst) {
                let now = chrono::Utc::now() + chrono::Duration::seconds(1);
                sweep(&store, &live, &config, now).await.expect("sweep");
                sweeps += 1;
                tokio::task::yield_now().await;
            }
            sweeps
        })
    };
    for (i, p) in partitions.iter().enumerate() {
        let log = bounded("takeover", b.open(p, small_log_config()))
            .await
            .expect("takeover");
        check_invariant(&read_all(&log).await, &acked[i], &BTreeMap::new(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let sweeps = sweeper.await.expect("sweeper");
    assert!(
        sweeps > 1,
        "the sweeper ran during the takeovers ({sweeps})"
    );
    // No head names the dead stream now: it is closed and emptied.
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let report = sweep(&store, &live, &config, now).await.expect("sweep");
    assert!(report.heads_complete);
    let left = strata_storage::wal::list_from(&store, dead, strata_storage::keys::WalSeq(0))
        .await
        .expect("list");
    assert_eq!(
        left.len(),
        1,
        "only the closing tombstone is left: {left:?}"
    );
    b.wal.close().await;
}

/// The broker-wide budget for unsealed tails (`wal.max_unsealed_bytes`):
/// appends over it are refused, retryably and saying why, and nothing is
/// lost; sealing a tail makes room again; released and dropped logs stop
/// counting.
pub async fn unsealed_tails_stay_within_the_budget(store: Arc<dyn ObjectStore>) {
    use strata_storage::wal::WalConfig;
    let wal = WalConfig {
        max_bytes: 64 << 10,
        max_pending_bytes: 128 << 10,
        max_unsealed_bytes: 256 << 10,
        ..WalConfig::default()
    };
    let config = LogConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 64 << 10,
        ..small_log_config()
    };
    let node = Node::start_with(store.clone(), 1, wal).await;
    let mut logs = Vec::new();
    for p in 0..4 {
        logs.push(
            node.open(&tp_n("budget", p), config.clone())
                .await
                .expect("open"),
        );
    }
    let value = "x".repeat(16 << 10);
    let mut acked: Vec<BTreeMap<i64, String>> = vec![BTreeMap::new(); logs.len()];
    let mut refused = None;
    'fill: for round in 0..100 {
        for (i, log) in logs.iter().enumerate() {
            let v = format!("{round}-{value}");
            match log
                .append(batch_of(std::slice::from_ref(&v), None), Acks::All)
                .await
            {
                Ok(r) => {
                    acked[i].insert(r.base_offset, v);
                }
                Err(e) => {
                    refused = Some(e);
                    break 'fill;
                }
            }
        }
    }
    let refused = refused.expect("an append over the budget is refused");
    assert!(
        matches!(refused.kind(), ErrorKind::Transient { .. }),
        "retryable: {refused}"
    );
    assert!(
        refused.to_string().contains("wal.max_unsealed_bytes"),
        "{refused}"
    );
    let held = node.wal.unsealed_bytes();
    assert!(held <= (256 << 10) + (20 << 10), "{held} bytes held");
    // Sealing the largest tail makes room.
    logs[0].seal().await.expect("seal");
    assert!(node.wal.unsealed_bytes() < held);
    let v = "after-seal".to_string();
    let r = logs[1]
        .append(batch_of(std::slice::from_ref(&v), None), Acks::All)
        .await
        .expect("room again");
    acked[1].insert(r.base_offset, v);
    for (i, log) in logs.iter().enumerate() {
        check_invariant(&read_all(log).await, &acked[i], &BTreeMap::new(), 0);
    }
    logs[2].release().await.expect("release");
    drop(logs);
    assert_eq!(node.wal.unsealed_bytes(), 0, "dropped logs stop counting");
    node.wal.close().await;
}

/// Manifests stay small: a producer silent for longer than
/// `producer_id_expiration` (by its batches' timestamps) leaves the
/// partition's idempotence state, and so every manifest written after; an
/// active one stays, and its retries are still recognised.
pub async fn idle_producers_expire_from_the_manifest(store: Arc<dyn ObjectStore>) {
    let config = LogConfig {
        producer_id_expiration: Duration::from_secs(3600),
        timestamp_before_max: None,
        ..small_log_config()
    };
    let node = Node::start(store.clone(), 1).await;
    let tp = tp("expiry");
    let log = node.open(&tp, config.clone()).await.expect("open");
    let now = 1_800_000_000_000i64;
    let at = |ts: i64, pid: i64, seq: i32, v: &str| {
        let mut b = strata_storage::batch::BatchBuilder::new().producer(pid, 0, seq);
        b.push(ts, None, Some(v.as_bytes()), &[]);
        b.build()
    };
    // Producer 1 wrote two hours ago, producer 2 just now, and producer 3
    // just now with records stamped two days ago (a backfill).
    let hours_ago = now - 2 * 3600 * 1000;
    log.append_at(at(hours_ago, 1, 0, "old"), Acks::All, hours_ago)
        .await
        .expect("old producer");
    let recent = at(now - 1000, 2, 0, "new");
    log.append_at(recent.clone(), Acks::All, now)
        .await
        .expect("active producer");
    log.append_at(at(now - 2 * 86_400_000, 3, 0, "backfill"), Acks::All, now)
        .await
        .expect("backfilling producer");
    log.maintain(now).await.expect("maintain");
    log.seal().await.expect("seal");
    let (_, manifest) = strata_storage::manifest::load_head(&store, &tp)
        .await
        .expect("read")
        .expect("a manifest");
    assert_eq!(
        manifest.producers.len(),
        2,
        "the active and the backfilling producers are kept"
    );
    // The active producer's retry is still a duplicate.
    let dup = log.append_at(recent, Acks::All, now).await.expect("retry");
    assert!(dup.duplicate);
    // The expired one must start over (as with Kafka's UNKNOWN_PRODUCER_ID).
    let err = log
        .append_at(at(now, 1, 1, "old-2"), Acks::All, now)
        .await
        .expect_err("expired producer continuing its sequence");
    assert!(matches!(err.kind(), ErrorKind::Sequence), "{err}");
    node.wal.close().await;
}

/// Moving many partitions away at once: 48 releases started together on a
/// store with 30 ms PUTs never have more than
/// `MAX_CONCURRENT_SEALS` uploads and manifest writes in flight, and every
/// one completes with nothing lost.
pub async fn concurrent_releases_are_bounded(store: Arc<dyn ObjectStore>) {
    use strata_storage::log::MAX_CONCURRENT_SEALS;
    use strata_storage::store::{FaultConfig, FaultRule, FaultStore, Op, OpSet};
    let slow = Arc::new(FaultStore::new(
        store,
        FaultConfig {
            seed: 3,
            rules: vec![
                FaultRule::latency(
                    OpSet::from(Op::Put),
                    Duration::from_millis(30),
                    Duration::from_millis(30),
                )
                .with_key_prefix("topics/"),
            ],
        },
    ));
    let store: Arc<dyn ObjectStore> = slow.clone();
    let node = Node::start(store.clone(), 1).await;
    let mut logs = Vec::new();
    let mut acked = Vec::new();
    for p in 0..48 {
        let log = node
            .open(&tp_n("moving", p), small_log_config())
            .await
            .expect("open");
        let v = format!("m{p}");
        let r = log
            .append(batch_of(std::slice::from_ref(&v), None), Acks::All)
            .await
            .expect("append");
        acked.push(BTreeMap::from([(r.base_offset, v)]));
        logs.push(log);
    }
    let opened_peak = slow.peak_delayed_in_flight();
    let releases = futures::future::join_all(logs.iter().map(|l| l.release())).await;
    for r in releases {
        r.expect("release");
    }
    let peak = slow.peak_delayed_in_flight();
    assert!(
        peak <= (MAX_CONCURRENT_SEALS as u64).max(opened_peak),
        "{peak} segment and manifest writes in flight at once"
    );
    let reader = Node::start(store, 2).await;
    for (p, acked) in acked.iter().enumerate() {
        let log = reader
            .open(&tp_n("moving", p as u32), small_log_config())
            .await
            .expect("reopen");
        check_invariant(&read_all(&log).await, acked, &BTreeMap::new(), 0);
    }
    node.wal.close().await;
    reader.wal.close().await;
}

/// A long-lived partition's manifest stays small: past
/// `manifest_max_segments` its oldest segment entries move into archive
/// objects. Every record is still read back (by the owner, by a non-owner
/// from the manifest alone, and after a takeover), time lookups find
/// archived records, the bucket sweep keeps what is referenced, and
/// retention drops whole archives with their segments.
pub async fn long_partitions_archive_old_segments(store: Arc<dyn ObjectStore>) {
    use futures::TryStreamExt;
    use strata_storage::gc::{GcConfig, LiveSet, sweep};
    let config = LogConfig {
        manifest_max_segments: 8,
        retention_ms: None,
        ..small_log_config()
    };
    let node = Node::start(store.clone(), 1).await;
    let tp = tp("long");
    let log = node.open(&tp, config.clone()).await.expect("open");
    let mut acked = BTreeMap::new();
    // 40 seals of 3 records each; record i has timestamp 1_000 * i.
    for s in 0..40i64 {
        let mut b = strata_storage::batch::BatchBuilder::new();
        for r in 0..3i64 {
            let i = s * 3 + r;
            b.push(1_000 * i, None, Some(format!("r{i}").as_bytes()), &[]);
        }
        let res = log
            .append_at(b.build(), Acks::All, 120_000)
            .await
            .expect("append");
        for r in 0..3i64 {
            acked.insert(res.base_offset + r, format!("r{}", s * 3 + r));
        }
        log.seal().await.expect("seal");
    }
    let (_, manifest) = strata_storage::manifest::load_head(&store, &tp)
        .await
        .expect("read")
        .expect("manifest");
    assert!(manifest.segments.len() <= 8, "{}", manifest.segments.len());
    assert!(manifest.archives.len() >= 4, "{:?}", manifest.archives);
    assert_eq!(manifest.segment_count(), 40);
    assert_eq!(log.status().segments, 40);
    check_invariant(&read_all(&log).await, &acked, &BTreeMap::new(), 0);
    // A non-owner serves archived offsets from the manifest alone.
    let old = strata_storage::manifest::read_sealed(&node.cache, &manifest, 4, 1 << 20)
        .await
        .expect("sealed read")
        .expect("offset 4 is sealed");
    assert!(!old.is_empty());
    // A time lookup lands in an archive: the batch holding offset 11 (the
    // first record at or after 10.5 s) starts at 9.
    assert_eq!(
        log.offset_for_timestamp(10_500).await.expect("lookup"),
        Some(9)
    );
    // The sweep keeps every referenced archive and segment.
    let live = LiveSet {
        topics: std::collections::HashMap::from([(tp.tp.topic.clone(), tp.topic_id)]),
        streams: std::collections::HashSet::from([node.wal.stream()]),
    };
    let gc = GcConfig {
        grace: Duration::ZERO,
        ..GcConfig::default()
    };
    let report = sweep(
        &store,
        &live,
        &gc,
        chrono::Utc::now() + chrono::Duration::seconds(1),
    )
    .await
    .expect("sweep");
    assert_eq!(
        report.deleted.segments.objects + report.deleted.archives.objects,
        0
    );
    assert_eq!(
        report.inventory.archives.objects as usize,
        manifest.archives.len()
    );
    // A takeover reads everything back too.
    log.release().await.expect("release");
    let next = Node::start(store.clone(), 2).await;
    let log = next.open(&tp, config.clone()).await.expect("reopen");
    check_invariant(&read_all(&log).await, &acked, &BTreeMap::new(), 0);
    // Retention by size drops whole archives, oldest first, with their
    // segments and archive objects.
    let limit = log.status().sealed_bytes / 2;
    let keep = LogConfig {
        retention_bytes: Some(limit),
        ..config
    };
    log.release().await.expect("release");
    let third = Node::start(store.clone(), 3).await;
    let log = third.open(&tp, keep).await.expect("reopen");
    let before = log.status();
    let deleted = log.apply_retention(120_000).await.expect("retention");
    let after = log.status();
    assert!(
        deleted > 0 && after.log_start_offset > 0,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.sealed_bytes >= limit,
        "retention never goes below the limit (as Kafka): {after:?}"
    );
    assert_eq!(after.segments, before.segments - deleted);
    let (_, m) = strata_storage::manifest::load_head(&store, &tp)
        .await
        .expect("read")
        .expect("manifest");
    let keys: Vec<String> = store
        .list(Some(&strata_storage::keys::topic_root(&tp.tp.topic)))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await
        .expect("list");
    let archives = keys.iter().filter(|k| k.contains("/archive/")).count();
    assert_eq!(
        archives,
        m.archives.len(),
        "expired archive objects are deleted"
    );
    let segments = keys.iter().filter(|k| k.ends_with(".seg")).count();
    assert_eq!(segments, after.segments, "expired segments are deleted");
    let read = read_all(&log).await;
    let kept: BTreeMap<i64, String> = acked
        .range(after.log_start_offset..)
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    check_invariant(&read, &kept, &BTreeMap::new(), after.log_start_offset);
    node.wal.close().await;
    next.wal.close().await;
    third.wal.close().await;
}
