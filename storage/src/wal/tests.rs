#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;

use super::*;
use crate::batch::{Batch, BatchBuilder, BatchLimits};
use crate::error::Error;
use crate::keys::{
    BrokerId, Incarnation, TopicId, TopicIdPartition, TopicPartition, WalSeq, WalStream,
};

fn tip(topic: &str, partition: u32) -> TopicIdPartition {
    TopicIdPartition::new(
        TopicId(uuid::Uuid::from_u128(7)),
        TopicPartition::new(topic, partition).unwrap(),
    )
}

#[derive(Default)]
struct Recorder {
    durable: Mutex<Vec<(WalSeq, i64)>>,
    failed: Mutex<Vec<String>>,
}

impl WalSink for Recorder {
    fn durable(&self, seq: WalSeq, last_offset: i64) {
        self.durable.lock().push((seq, last_offset));
    }
    fn failed(&self, error: &Error) {
        self.failed.lock().push(error.to_string());
    }
}

fn stream(inc: u64) -> WalStream {
    WalStream {
        broker: BrokerId(1),
        incarnation: Incarnation(inc),
    }
}

fn batch(base: i64, n: usize) -> Batch {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(
            1000 + i as i64,
            None,
            Some(format!("v{}", base + i as i64).as_bytes()),
            &[],
        );
    }
    Batch::validate(b.build(), &BatchLimits::default())
        .unwrap()
        .stamp(base, 1)
}

async fn submit(w: &WalWriter, tp: &TopicIdPartition, b: &Batch, sink: Arc<dyn WalSink>) {
    let permit = w.reserve(b.len()).await.unwrap();
    permit.submit(WalEntry {
        partition: tp.clone(),
        leader_epoch: 1,
        first_offset: b.base_offset(),
        last_offset: b.last_offset(),
        bytes: b.bytes().clone(),
        sink,
    });
}

#[tokio::test]
async fn group_commit_shares_objects_and_reads_back_per_partition() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cfg = WalConfig {
        min_interval: Some(Duration::from_millis(20)),
        ..WalConfig::default()
    };
    let w = WalWriter::start(store.clone(), stream(1), WalSeq(0), cfg).unwrap();
    let tps: Vec<TopicIdPartition> = (0..64).map(|p| tip("t", p)).collect();
    let sinks: Vec<Arc<Recorder>> = tps.iter().map(|_| Arc::new(Recorder::default())).collect();
    for round in 0..5i64 {
        for (tp, sink) in tps.iter().zip(&sinks) {
            submit(&w, tp, &batch(round * 3, 3), sink.clone()).await;
        }
    }
    w.close().await;
    let puts = w.puts();
    assert!(
        (1..64).contains(&puts),
        "320 appends should share a few objects, got {puts}"
    );
    for sink in &sinks {
        let d = sink.durable.lock();
        assert_eq!(
            d.iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![2, 5, 8, 11, 14]
        );
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0));
    }
    // A successor reads partition 7 back, in order, from the objects below the tombstone.
    let objects = fence(&store, stream(1), WalSeq(0)).await.unwrap();
    assert_eq!(objects.len() as u64, puts);
    let mut offsets = Vec::new();
    for o in &objects {
        for (_, batches) in read_partition(&store, o, &tps[7]).await.unwrap() {
            for b in batches {
                b.verify_crc().unwrap();
                offsets.push((b.base_offset(), b.last_offset()));
            }
        }
    }
    assert_eq!(offsets, vec![(0, 2), (3, 5), (6, 8), (9, 11), (12, 14)]);
}

#[tokio::test]
async fn fenced_writer_fails_pending_and_refuses_more() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let w = WalWriter::start(store.clone(), stream(2), WalSeq(0), WalConfig::default()).unwrap();
    let tp = tip("t", 0);
    let sink = Arc::new(Recorder::default());
    submit(&w, &tp, &batch(0, 1), sink.clone()).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while sink.durable.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    // A successor fences the stream: the objects below the tombstone are returned.
    let objects = fence(&store, stream(2), WalSeq(0)).await.unwrap();
    assert_eq!(objects.len(), 1);
    // The zombie's next append is never acknowledged.
    submit(&w, &tp, &batch(1, 1), sink.clone()).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while sink.failed.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(sink.durable.lock().len(), 1);
    assert!(
        sink.failed.lock()[0].contains("fenced"),
        "{:?}",
        sink.failed.lock()
    );
    let err = w.reserve(10).await.unwrap_err();
    assert!(err.is_fenced(), "{err}");
    // Fencing again is idempotent.
    assert_eq!(fence(&store, stream(2), WalSeq(0)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn fence_fills_gaps_left_by_in_flight_writes() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let w = WalWriter::start(store.clone(), stream(3), WalSeq(0), WalConfig::default()).unwrap();
    let tp = tip("t", 0);
    let sink = Arc::new(Recorder::default());
    for i in 0..3 {
        submit(&w, &tp, &batch(i, 1), sink.clone()).await;
    }
    w.close().await;
    let n = w.puts();
    // Simulate an object still in flight: delete seq 0 (a gap) and fence.
    store.delete(&stream(3).object(WalSeq(0))).await.unwrap();
    let objects = fence(&store, stream(3), WalSeq(0)).await.unwrap();
    assert!(
        objects.is_empty(),
        "a gap at the start ends the stream there"
    );
    // The late write of seq 0 now fails: its slot holds a tombstone.
    let meta = store.head(&stream(3).object(WalSeq(0))).await.unwrap();
    assert_eq!(meta.size as usize, format::HEADER_LEN);
    assert!(n >= 1);
}

/// A batch of `n` records of `size` bytes each, at `base`.
fn big_batch(base: i64, n: usize, size: usize) -> Batch {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let value = format!("v{}-{}", base + i as i64, "x".repeat(size));
        b.push(1000, None, Some(value.as_bytes()), &[]);
    }
    Batch::validate(b.build(), &BatchLimits::default())
        .unwrap()
        .stamp(base, 1)
}

/// Reading a partition's chunks back slices those inside the tail already
/// fetched (footer and directory) instead of asking again: one GET for an
/// object of up to 64 KiB. In a larger object, chunks before the tail are
/// fetched and every partition still reads back exactly its batches.
#[tokio::test]
async fn chunks_in_the_fetched_tail_cost_no_second_get() {
    use crate::store::MetricsStore;
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let metered = MetricsStore::new(inner);
    let stats = metered.stats();
    let store: Arc<dyn ObjectStore> = Arc::new(metered);
    let tps: Vec<TopicIdPartition> = (0..6).map(|p| tip("t", p)).collect();
    let cfg = WalConfig {
        min_interval: Some(Duration::from_millis(50)),
        ..WalConfig::default()
    };
    // Object 0: small. Object 1: six partitions of about 20 KiB each.
    let w = WalWriter::start(store.clone(), stream(1), WalSeq(0), cfg).unwrap();
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn WalSink> = recorder.clone();
    for tp in &tps {
        submit(&w, tp, &batch(0, 3), sink.clone()).await;
    }
    while recorder.durable.lock().len() < tps.len() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for tp in &tps {
        submit(&w, tp, &big_batch(3, 20, 1000), sink.clone()).await;
    }
    w.close().await;
    let objects = fence(&store, stream(1), WalSeq(0)).await.unwrap();
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(objects[0].size < 64 << 10 && objects[1].size > 100 << 10);

    let before = stats.snapshot().get_requests;
    for tp in &tps {
        let small = read_partition(&store, &objects[0], tp).await.unwrap();
        let offsets: Vec<_> = small
            .iter()
            .flat_map(|(_, bs)| bs.iter().map(|b| (b.base_offset(), b.last_offset())))
            .collect();
        assert_eq!(offsets, [(0, 2)]);
    }
    assert_eq!(
        stats.snapshot().get_requests - before,
        1,
        "one GET for the small object, shared by every partition's replay"
    );
    let before = stats.snapshot().get_requests;
    for tp in &tps {
        let large = read_partition(&store, &objects[1], tp).await.unwrap();
        let batches: Vec<&Batch> = large.iter().flat_map(|(_, bs)| bs).collect();
        assert_eq!(batches.len(), 1, "{tp}");
        batches[0].verify_crc().unwrap();
        assert_eq!(
            (batches[0].base_offset(), batches[0].last_offset()),
            (3, 22)
        );
    }
    let gets = stats.snapshot().get_requests - before;
    assert!(
        gets <= 1 + tps.len() as u64,
        "the large object's tail once, then at most one ranged GET per partition: {gets}"
    );
}

/// A takeover of many partitions of one dead incarnation fences and lists
/// its stream once: a later fence from a higher floor is answered from the
/// run already fenced (one HEAD of the tombstone, no LIST), and gets exactly
/// the suffix from its floor.
#[tokio::test]
async fn a_stream_fenced_once_is_not_listed_again_for_later_floors() {
    use crate::store::MetricsStore;
    let metered = MetricsStore::new(Arc::new(InMemory::new()));
    let stats = metered.stats();
    let store: Arc<dyn ObjectStore> = Arc::new(metered);
    let dead = WalStream {
        broker: BrokerId(9),
        incarnation: Incarnation::generate(),
    };
    let cfg = WalConfig {
        min_interval: Some(Duration::from_millis(1)),
        max_in_flight: 1,
        ..WalConfig::default()
    };
    let w = WalWriter::start(store.clone(), dead, WalSeq(0), cfg).unwrap();
    let tp = tip("t", 0);
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn WalSink> = recorder.clone();
    for i in 0..6 {
        submit(&w, &tp, &batch(i, 1), sink.clone()).await;
        while recorder.durable.lock().len() <= i as usize {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    w.close().await;
    let all = fence(&store, dead, WalSeq(0)).await.unwrap();
    assert_eq!(all.len(), 6);
    let lists = stats.snapshot().list_requests;
    let later = fence(&store, dead, WalSeq(4)).await.unwrap();
    assert_eq!(
        later.iter().map(|o| o.seq.0).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(stats.snapshot().list_requests, lists, "no second LIST");
    // A fence from below the cached run lists as before.
    let again = fence(&store, dead, WalSeq(0)).await.unwrap();
    assert_eq!(again.len(), 6);
}

/// Claims of many partitions of one dead incarnation start together: the
/// stream is listed once, not once per claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fences_of_one_stream_list_it_once() {
    use crate::store::MetricsStore;
    let metered = MetricsStore::new(Arc::new(InMemory::new()));
    let stats = metered.stats();
    let store: Arc<dyn ObjectStore> = Arc::new(metered);
    let dead = WalStream {
        broker: BrokerId(11),
        incarnation: Incarnation::generate(),
    };
    let w = WalWriter::start(store.clone(), dead, WalSeq(0), WalConfig::default()).unwrap();
    let sink: Arc<dyn WalSink> = Arc::new(Recorder::default());
    for i in 0..4 {
        submit(&w, &tip("t", i), &batch(0, 1), sink.clone()).await;
    }
    w.close().await;
    let lists = stats.snapshot().list_requests;
    let fences: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { fence(&store, dead, WalSeq(0)).await })
        })
        .collect();
    let mut runs = Vec::new();
    for f in fences {
        runs.push(f.await.unwrap().unwrap());
    }
    assert!(
        runs.windows(2).all(|w| w[0] == w[1]),
        "every claim sees one run"
    );
    assert!(
        stats.snapshot().list_requests - lists <= 2,
        "{} LISTs for 32 claims",
        stats.snapshot().list_requests - lists
    );
}

/// A store whose PUTs take `latency` each, and the handle to read how many
/// overlapped.
fn slow_puts(latency: Duration) -> Arc<crate::store::FaultStore> {
    use crate::store::{FaultConfig, FaultRule, FaultStore, Op};
    Arc::new(FaultStore::new(
        Arc::new(InMemory::new()),
        FaultConfig {
            seed: 1,
            rules: vec![FaultRule::latency(Op::Put, latency, latency)],
        },
    ))
}

/// The cost policy under load: while a flush is in flight, another starts
/// once `pipeline_bytes` wait, so PUTs overlap (throughput follows the
/// store's bandwidth, not its latency); acknowledgements stay in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_flushes_overlap_and_acks_stay_in_order() {
    let slow = slow_puts(Duration::from_millis(40));
    let store: Arc<dyn ObjectStore> = slow.clone();
    let cfg = WalConfig {
        min_interval: Some(Duration::from_millis(1)),
        max_in_flight: 4,
        pipeline_bytes: 2048,
        ..WalConfig::default()
    };
    let w = WalWriter::start(store, stream(21), WalSeq(0), cfg).unwrap();
    let tp = tip("t", 0);
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn WalSink> = recorder.clone();
    let n = 400;
    for i in 0..n {
        submit(&w, &tp, &batch(i, 4), sink.clone()).await;
        if i % 40 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while recorder.durable.lock().len() < n as usize {
        assert!(tokio::time::Instant::now() < deadline, "not all durable");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w.close().await;
    let durable = recorder.durable.lock().clone();
    let offsets: Vec<i64> = durable.iter().map(|(_, o)| *o).collect();
    assert_eq!(
        offsets,
        (0..n).map(|i| i + 3).collect::<Vec<_>>(),
        "acks in order"
    );
    assert!(durable.windows(2).all(|w| w[0].0 <= w[1].0), "in WAL order");
    assert!(
        slow.peak_delayed_in_flight() > 1,
        "flushes overlapped under load (peak {})",
        slow.peak_delayed_in_flight()
    );
    assert!(recorder.failed.lock().is_empty());
}

/// PUT latency of [`store_bound_writer`]'s store.
const STORE_BOUND_LATENCY: Duration = Duration::from_millis(100);
/// [`store_bound_writer`]'s `max_bytes`.
const STORE_BOUND_FULL: usize = 64 << 10;

/// A writer of `stream` on a store whose PUTs take
/// [`STORE_BOUND_LATENCY`], with 4 KiB `pipeline_bytes`, objects of
/// [`STORE_BOUND_FULL`] and 4 in flight: about 1 KiB a millisecond is more
/// than four slots of `pipeline_bytes` objects carry. With one partition
/// and a sink that records acks.
fn store_bound_writer(
    stream_no: u64,
) -> (WalWriter, TopicIdPartition, Arc<Recorder>, Arc<dyn WalSink>) {
    let store: Arc<dyn ObjectStore> = slow_puts(STORE_BOUND_LATENCY);
    let cfg = WalConfig {
        max_bytes: STORE_BOUND_FULL,
        pipeline_bytes: 4 << 10,
        max_in_flight: 4,
        min_interval: Some(Duration::from_millis(1)),
        hedge: false,
        ..WalConfig::default()
    };
    let w = WalWriter::start(store, stream(stream_no), WalSeq(0), cfg).unwrap();
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn WalSink> = recorder.clone();
    (w, tip("t", 0), recorder, sink)
}

/// The cost policy at saturation: once data is due but every flush slot
/// is busy (the store is the limit), flushes wait for full `max_bytes`
/// objects, so PUTs per byte fall to what full objects need; once the
/// pipeline drains, a lone append is flushed at once again (its ack waits
/// one PUT, not for an object to fill).
#[tokio::test(start_paused = true)]
async fn store_bound_flushes_fill_whole_objects_and_light_load_flushes_at_once() {
    let (latency, full) = (STORE_BOUND_LATENCY, STORE_BOUND_FULL);
    let (w, tp, recorder, sink) = store_bound_writer(24);

    // About 1 KiB a millisecond: 100 KiB per PUT latency, more than four
    // slots of `pipeline_bytes` objects carry.
    let per = 64;
    let n = 1000;
    for i in 0..n {
        let b = batch(i * per, per as usize);
        submit(&w, &tp, &b, sink.clone()).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while recorder.durable.lock().len() < n as usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let bytes = w.put_bytes();
    let puts = w.puts();
    let needed = bytes.div_ceil(full as u64);
    // A few small flushes before the slots fill, and the last one.
    assert!(
        puts <= needed + needed / 10 + 5,
        "{puts} PUTs for {bytes} bytes; full objects need {needed}"
    );
    // An object ends with the entry that fills it: less than one entry
    // (about 1 KiB here) over `max_bytes`.
    let most = (full + 4096) as u64;
    assert!(
        puts >= bytes.div_ceil(most),
        "{puts} PUTs, objects too large?"
    );

    // Light load: one append at a time is flushed at once (no waiting
    // for an object to fill), its ack one PUT latency later.
    for i in 0..3 {
        let before = recorder.durable.lock().len();
        let started = tokio::time::Instant::now();
        submit(&w, &tp, &batch((n + i) * per, 1), sink.clone()).await;
        while recorder.durable.lock().len() == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        assert!(
            took < latency + Duration::from_millis(10),
            "a lone append waited {took:?}"
        );
    }

    // A second after the store was last the limit, flushes overlap from
    // `pipeline_bytes` again: an append that size, sent while another is
    // in flight, is flushed at once, not held back for a full object.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = recorder.durable.lock().len();
    let started = tokio::time::Instant::now();
    for i in 0..2 {
        submit(&w, &tp, &batch((n + 3) * per + i * 400, 400), sink.clone()).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while recorder.durable.lock().len() < before + 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    assert!(
        took < latency + Duration::from_millis(10),
        "two overlapping appends took {took:?}"
    );
    w.close().await;
    let durable = recorder.durable.lock().clone();
    assert!(durable.windows(2).all(|w| w[0].1 < w[1].1), "acks in order");
    assert!(recorder.failed.lock().is_empty());
}

/// A store-bound producer that stalls for a moment (longer than a PUT, so
/// the pipeline drains, but well under a second) keeps full objects when it
/// resumes: a brief gap is not a lighter load, and each one used to cost a
/// round of small PUTs until every slot was busy again.
#[tokio::test(start_paused = true)]
async fn a_store_bound_producer_that_stalls_briefly_keeps_full_objects() {
    let (latency, full) = (STORE_BOUND_LATENCY, STORE_BOUND_FULL);
    let (w, tp, recorder, sink) = store_bound_writer(25);
    let (per, n, stalls) = (64, 1000, 5);
    for i in 0..n {
        submit(&w, &tp, &batch(i * per, per as usize), sink.clone()).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        if i % (n / stalls) == n / stalls - 1 {
            tokio::time::sleep(latency * 3 / 2).await;
        }
    }
    while recorder.durable.lock().len() < n as usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (bytes, puts) = (w.put_bytes(), w.puts());
    let needed = bytes.div_ceil(full as u64);
    // As without stalls, plus the remainder before each stall and the
    // first append after it.
    assert!(
        puts <= needed + needed / 10 + 5 + 2 * stalls as u64,
        "{puts} PUTs for {bytes} bytes; full objects need {needed}"
    );
    w.close().await;
    let durable = recorder.durable.lock().clone();
    assert!(durable.windows(2).all(|w| w[0].1 < w[1].1), "acks in order");
}

/// Produced batches rarely divide `max_bytes`: 1,000,000-byte client
/// batches fill an 8 MiB object only to 7.63 MiB if it must stay under it,
/// 5% more PUTs per GiB for nothing. A store-bound object ends with the
/// entry that fills it, so it holds `max_bytes` and less than one entry
/// more, whatever the entries' size.
#[tokio::test(start_paused = true)]
async fn store_bound_objects_fill_max_bytes_whatever_the_entry_size() {
    let full = STORE_BOUND_FULL;
    let (w, tp, recorder, sink) = store_bound_writer(26);
    // Entries of about 3/8 of an object: two of them stay under it, a
    // third fills it.
    let (per, n) = (3 * full / 8, 120);
    for i in 0..n {
        let mut b = BatchBuilder::new();
        b.push(1000, None, Some(&vec![b'x'; per][..]), &[]);
        let b = Batch::validate(b.build(), &BatchLimits::default())
            .unwrap()
            .stamp(i, 1);
        submit(&w, &tp, &b, sink.clone()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while recorder.durable.lock().len() < n as usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (bytes, puts) = (w.put_bytes(), w.puts());
    let needed = bytes.div_ceil(full as u64);
    assert!(
        puts <= needed + needed / 10 + 5,
        "{puts} PUTs for {bytes} bytes; full objects need {needed}"
    );
    let most = (full + per + 1024) as u64;
    assert!(
        puts >= bytes.div_ceil(most),
        "{puts} PUTs, objects too large?"
    );
    w.close().await;
    let durable = recorder.durable.lock().clone();
    assert!(durable.windows(2).all(|w| w[0].1 < w[1].1), "acks in order");
}

/// At light load (each append waits for the previous), one PUT at a time:
/// the group commit, which costs at most one PUT per PUT latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_light_load_one_flush_at_a_time() {
    let slow = slow_puts(Duration::from_millis(20));
    let store: Arc<dyn ObjectStore> = slow.clone();
    let w = WalWriter::start(store, stream(22), WalSeq(0), WalConfig::default()).unwrap();
    let tp = tip("t", 0);
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn WalSink> = recorder.clone();
    for i in 0..5 {
        submit(&w, &tp, &batch(i, 1), sink.clone()).await;
        while recorder.durable.lock().len() <= i as usize {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    w.close().await;
    assert_eq!(slow.peak_delayed_in_flight(), 1);
}

/// The interval is the cost policy for small flushes only: a trickle of
/// small appends makes at most one PUT per `min_interval`, while appends
/// that fill `pipeline_bytes` are flushed at once, overlapping, without
/// waiting out the interval (a loaded broker's throughput is not capped
/// at one PUT per interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_holds_back_small_flushes_but_not_full_ones() {
    let interval = Duration::from_secs(3);
    let slow = slow_puts(Duration::from_millis(100));
    let store: Arc<dyn ObjectStore> = slow.clone();
    let cfg = WalConfig {
        min_interval: Some(interval),
        max_in_flight: 4,
        pipeline_bytes: 256,
        ..WalConfig::default()
    };
    let w = WalWriter::start(store, stream(23), WalSeq(0), cfg).unwrap();
    let tp = tip("t", 0);
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn WalSink> = recorder.clone();

    // Full flushes: eight batches of over 256 bytes, 20 ms apart, all
    // durable long before the interval would allow a second PUT.
    let started = tokio::time::Instant::now();
    let big = 40;
    for i in 0..8 {
        let b = batch(i * big as i64, big);
        assert!(b.len() >= 256, "a batch fills pipeline_bytes: {}", b.len());
        submit(&w, &tp, &b, sink.clone()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while recorder.durable.lock().len() < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not all durable"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        started.elapsed() < interval,
        "full flushes waited out the interval: {:?}",
        started.elapsed()
    );
    assert!(w.puts() >= 3, "{} PUTs for 8 full batches", w.puts());
    assert!(slow.peak_delayed_in_flight() > 1, "full flushes overlap");

    // A trickle of small batches (less than pipeline_bytes together):
    // they wait out the interval since the last start and share one PUT.
    let puts = w.puts();
    let small = tokio::time::Instant::now();
    for i in 0..3 {
        submit(&w, &tp, &batch(1000 + i, 1), sink.clone()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while recorder.durable.lock().len() < 11 {
        assert!(small.elapsed() < Duration::from_secs(30), "not all durable");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        w.puts() - puts,
        1,
        "one PUT for a trickle of small batches within one interval"
    );
    w.close().await;
    assert!(recorder.failed.lock().is_empty());
}

/// A store whose first PUT of one key hangs (a request the store sits on);
/// every other request goes straight through.
#[derive(Debug)]
struct FirstPutHangs {
    inner: InMemory,
    key: object_store::path::Path,
    hung: std::sync::atomic::AtomicBool,
}

impl std::fmt::Display for FirstPutHangs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FirstPutHangs({})", self.key)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FirstPutHangs {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if *location == self.key && !self.hung.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Hedged PUTs: a WAL PUT that hangs is sent again once it has taken twice
/// the median of the PUTs before it, and the copy's answer acknowledges
/// its entries (without hedging they would wait for the hung request, and
/// every later ack with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_put_is_hedged_and_its_copy_acknowledges() {
    let hung_seq = WalSeq(20);
    let store = Arc::new(FirstPutHangs {
        inner: InMemory::new(),
        key: stream(24).object(hung_seq),
        hung: std::sync::atomic::AtomicBool::new(false),
    });
    let cfg = WalConfig {
        min_interval: Some(Duration::from_millis(1)),
        ..WalConfig::default()
    };
    let w = WalWriter::start(store.clone(), stream(24), WalSeq(0), cfg).unwrap();
    let tp = tip("t", 0);
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn WalSink> = recorder.clone();
    // One object per batch: 20 quick PUTs make the yardstick, the 21st hangs.
    let mut last = None;
    for i in 0..=hung_seq.0 {
        let b = batch(i as i64, 1);
        submit(&w, &tp, &b, sink.clone()).await;
        tokio::time::timeout(Duration::from_secs(30), async {
            while recorder.durable.lock().len() <= i as usize {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("object {i} was not acknowledged: hedging did not answer"));
        last = Some(b);
    }
    assert_eq!(
        recorder.durable.lock().last().copied(),
        Some((hung_seq, hung_seq.0 as i64))
    );
    assert_eq!(w.hedged_puts(), 1, "only the hung PUT was sent twice");
    let stored = store
        .inner
        .get(&stream(24).object(hung_seq))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let last = last.unwrap();
    assert!(
        stored.windows(last.len()).any(|w| w == &last.bytes()[..]),
        "the hedged object holds the batch"
    );
    assert!(recorder.failed.lock().is_empty());

    // Off: the hung PUT holds its ack back.
    let store = Arc::new(FirstPutHangs {
        inner: InMemory::new(),
        key: stream(25).object(hung_seq),
        hung: std::sync::atomic::AtomicBool::new(false),
    });
    let cfg = WalConfig {
        min_interval: Some(Duration::from_millis(1)),
        hedge: false,
        ..WalConfig::default()
    };
    let w = WalWriter::start(store, stream(25), WalSeq(0), cfg).unwrap();
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn WalSink> = recorder.clone();
    for i in 0..=hung_seq.0 {
        submit(&w, &tp, &batch(i as i64, 1), sink.clone()).await;
        if i < hung_seq.0 {
            while recorder.durable.lock().len() <= i as usize {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recorder.durable.lock().len(), hung_seq.0 as usize);
    assert_eq!(w.hedged_puts(), 0);
}
