//! The produce-and-consume workload of the end-to-end tests, and the
//! invariant every one of them ends with: every acknowledged record is read
//! back exactly once, at the offset its ack named, in order, with no offset
//! gap or reuse, and no record is ever duplicated (idempotent producer).
//!
//! Record `i` of a test has the value `v{i}` (then, with
//! [`Workload::padding`], a `.` and that many filler bytes) and the key
//! `k{i % 13}`; [`Placement`] says which partition it goes to. A [`Tail`]
//! consumer reads the topic while the faults happen and must see exactly
//! what the final read-back ([`check_invariant`]) sees.
//!
//! The one thing a newcomer must not break: record indices are unique per
//! topic across every producer of a test (each run starts where the last
//! ended); the checker relies on values being unique.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use strata_client::{Consumer, ConsumerConfig, Offset, Producer, ProducerRecord, RecordMetadata};

/// Number of distinct keys (`k0` … `k12`).
pub const KEYS: usize = 13;

/// Records sent but not yet acknowledged, at most, per producing task.
const WINDOW: usize = 256;

/// Records per chunk of [`produce_until`] (between rate and stop checks).
const CHUNK: usize = 100;

/// How long the read-back may wait for the next record.
const READ_STALL: Duration = Duration::from_secs(30);

/// Which partition record `i` goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The producer's key partitioner (Kafka's murmur2 over `k{i % 13}`).
    ByKey,
    /// Partition `i % n`, so every partition sees traffic all the time.
    RoundRobin(u32),
    /// Always this partition.
    Fixed(u32),
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The topic.
    pub topic: String,
    /// Which partition each record goes to.
    pub placement: Placement,
    /// Filler bytes per value, to build volume (a large history).
    pub padding: usize,
    /// At most this many records per second; `None` is as fast as acks come
    /// back. Keep it modest where brokers share a small machine: a starved
    /// broker misses heartbeats.
    pub rate: Option<u32>,
}

impl Workload {
    /// Keyed records on `topic`, unthrottled.
    pub fn keyed(topic: &str) -> Workload {
        Workload {
            topic: topic.to_owned(),
            placement: Placement::ByKey,
            padding: 0,
            rate: None,
        }
    }

    /// Records spread over all `partitions` of `topic`, at most `rate` a second.
    pub fn round_robin(topic: &str, partitions: u32, rate: u32) -> Workload {
        Workload {
            topic: topic.to_owned(),
            placement: Placement::RoundRobin(partitions),
            padding: 0,
            rate: Some(rate),
        }
    }

    /// Record `i`.
    pub fn record(&self, i: usize) -> ProducerRecord {
        let mut value = format!("v{i}").into_bytes();
        if self.padding > 0 {
            value.push(b'.');
            value.resize(value.len() + self.padding, b'x');
        }
        let record = ProducerRecord::new(self.topic.clone(), Bytes::from(value))
            .key(Bytes::from(format!("k{}", i % KEYS)));
        match self.placement {
            Placement::ByKey => record,
            Placement::RoundRobin(n) => record.partition((i % n.max(1) as usize) as u32),
            Placement::Fixed(p) => record.partition(p),
        }
    }
}

/// The identity of a record's value: `v{i}` without the padding.
pub fn value_id(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == b'.').unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// `v{i}` → `i`.
fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix('v')?.parse().ok()
}

/// Acknowledged records: value id → (partition, offset), and when each
/// partition last acknowledged something.
#[derive(Debug, Default)]
pub struct Acked {
    at: HashMap<String, (u32, i64)>,
    last_ack: HashMap<u32, Instant>,
}

/// [`Acked`], shared with producing tasks.
pub type AckLog = Arc<Mutex<Acked>>;

impl Acked {
    /// A new, empty log to share.
    pub fn shared() -> AckLog {
        Arc::new(Mutex::new(Acked::default()))
    }

    /// Number of acknowledged records.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether nothing was acknowledged yet.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Where the ack of `id` (`v{i}`) put it.
    pub fn get(&self, id: &str) -> Option<(u32, i64)> {
        self.at.get(id).copied()
    }

    /// When `partition` last acknowledged a record of the producer.
    pub fn last_ack(&self, partition: u32) -> Option<Instant> {
        self.last_ack.get(&partition).copied()
    }

    /// Notes an ack of record `i`.
    ///
    /// # Panics
    /// When `i` was acknowledged before.
    pub fn insert(&mut self, i: usize, meta: &RecordMetadata) {
        self.insert_value(format!("v{i}"), meta.partition, meta.offset);
        self.last_ack.insert(meta.partition, Instant::now());
    }

    /// Number of acknowledged records of the numbered workload (`v{i}`).
    pub fn numbered(&self) -> usize {
        self.at.keys().filter(|id| index_of(id).is_some()).count()
    }

    /// Notes an ack of a record outside the numbered workload (a probe
    /// written by a raw request); `id` must not contain a `.` and be unique.
    /// It is checked like the others, but does not count for
    /// [`Acked::last_ack`] (which is about the producer).
    ///
    /// # Panics
    /// When `id` was acknowledged before.
    pub fn insert_value(&mut self, id: String, partition: u32, offset: i64) {
        let prev = self.at.insert(id.clone(), (partition, offset));
        assert!(prev.is_none(), "{id} acknowledged twice");
    }
}

/// Produces records `first..first + count` of `workload` with up to
/// [`WINDOW`] unacknowledged at a time, recording each ack. Failed sends are
/// returned (a count), not fatal: a broker may be down.
pub async fn produce_range(
    producer: &Producer,
    workload: &Workload,
    first: usize,
    count: usize,
    acked: &AckLog,
) -> usize {
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut failed = 0;
    for i in first..first + count {
        match producer.send(workload.record(i)).await {
            Ok(delivery) => pending.push(async move { (i, delivery.await) }),
            Err(e) => {
                eprintln!("send of v{i} refused: {e}");
                failed += 1;
            }
        }
        while pending.len() >= WINDOW {
            if let Some((i, result)) = pending.next().await {
                failed += record_ack(acked, i, result);
            }
        }
    }
    while let Some((i, result)) = pending.next().await {
        failed += record_ack(acked, i, result);
    }
    failed
}

fn record_ack(acked: &AckLog, i: usize, result: strata_client::Result<RecordMetadata>) -> usize {
    match result {
        Ok(meta) => {
            acked.lock().insert(i, &meta);
            0
        }
        Err(e) => {
            eprintln!("v{i} failed: {e}");
            1
        }
    }
}

/// Produces records `first..` until `stop` is set (at least `min` of them),
/// returning the number sent and the number that failed.
pub async fn produce_until(
    producer: Producer,
    workload: Workload,
    first: usize,
    min: usize,
    stop: Arc<AtomicBool>,
    acked: AckLog,
) -> (usize, usize) {
    let started = tokio::time::Instant::now();
    let mut next = first;
    let mut failed = 0;
    while next < first + min || !stop.load(Ordering::SeqCst) {
        failed += produce_range(&producer, &workload, next, CHUNK, &acked).await;
        next += CHUNK;
        if let Some(rate) = workload.rate {
            let due = started + Duration::from_secs_f64((next - first) as f64 / rate.max(1) as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    (next - first, failed)
}

/// A producing task in the background ([`produce_until`]).
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<(usize, usize)>,
}

impl Background {
    /// Starts producing records `first..` of `workload`.
    pub fn start(
        producer: Producer,
        workload: Workload,
        first: usize,
        acked: AckLog,
    ) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = tokio::spawn(produce_until(
            producer,
            workload,
            first,
            0,
            stop.clone(),
            acked,
        ));
        Background { stop, handle }
    }

    /// Stops after the current chunk; returns (records sent, records failed).
    ///
    /// # Panics
    /// When the task panicked.
    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .await
            .expect("the producing task does not panic")
    }
}

/// Waits (at most `timeout`) until `done` holds, polling every 10 ms.
///
/// # Panics
/// When it does not hold in time.
pub async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most `timeout`) until `n` more records than now are acknowledged.
///
/// # Panics
/// When they are not.
pub async fn wait_for_more_acks(acked: &AckLog, n: usize, timeout: Duration, what: &str) {
    let target = acked.lock().len() + n;
    wait_for(
        &format!("{n} more acks ({what}; {} so far)", acked.lock().len()),
        timeout,
        || acked.lock().len() >= target,
    )
    .await;
}

/// A topic as read back: partition → (offset, value id) in log order.
pub type LogContents = BTreeMap<u32, Vec<(i64, String)>>;

/// Reads every partition of `topic` from the beginning to its high
/// watermark and checks the invariant against `acked`: offsets 0, 1, 2, …
/// with no gap or reuse, every value once, every acknowledged record where
/// its ack said, and per partition and key the acknowledged records in send
/// order. Returns what it read.
///
/// # Panics
/// When the invariant does not hold, or the topic cannot be read.
pub async fn check_invariant(
    url: &str,
    topic: &str,
    partitions: u32,
    acked: &Acked,
) -> LogContents {
    let mut consumer = Consumer::connect(url, ConsumerConfig::default())
        .await
        .expect("consumer connects");
    let count = consumer
        .partition_count(topic)
        .await
        .expect("partition count");
    assert_eq!(count, partitions, "partitions of {topic}");
    let mut ends = BTreeMap::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .watermarks(topic, partition)
            .await
            .unwrap_or_else(|e| panic!("watermarks of {topic}/{partition}: {e}"));
        ends.insert(partition, high);
        consumer
            .assign(topic, partition, Offset::Earliest)
            .await
            .expect("assign");
    }
    let total: i64 = ends.values().sum();
    let mut seen: LogContents = ends.keys().map(|p| (*p, Vec::new())).collect();
    let mut read = 0i64;
    let stream = consumer.stream();
    while read < total {
        let record = tokio::time::timeout(READ_STALL, stream.next())
            .await
            .unwrap_or_else(|_| panic!("consumer stalled after {read} of {total} records"))
            .expect("stream goes on")
            .unwrap_or_else(|e| panic!("reading back {topic}: {e}"));
        if record.offset >= ends[&record.partition] {
            continue;
        }
        let value = value_id(&record.value.expect("value"));
        seen.entry(record.partition)
            .or_default()
            .push((record.offset, value));
        read += 1;
    }
    let mut values = HashMap::new();
    for (partition, records) in &seen {
        for (i, (offset, value)) in records.iter().enumerate() {
            assert_eq!(
                *offset, i as i64,
                "partition {partition}: offset gap or reuse at index {i}"
            );
            let prev = values.insert(value.clone(), (*partition, *offset));
            assert!(
                prev.is_none(),
                "{value} is in the log twice: {prev:?} and ({partition}, {offset})"
            );
        }
    }
    for (value, at) in &acked.at {
        assert_eq!(
            values.get(value),
            Some(at),
            "acknowledged record {value} is not where its ack said"
        );
    }
    // Per partition and key, acknowledged values appear in send order.
    let mut by_offset: Vec<(u32, i64, usize)> = acked
        .at
        .iter()
        .filter_map(|(v, (p, o))| Some((*p, *o, index_of(v)?)))
        .collect();
    by_offset.sort_unstable();
    let mut last: HashMap<(u32, usize), (usize, i64)> = HashMap::new();
    for (p, o, i) in by_offset {
        if let Some((prev_i, prev_o)) = last.insert((p, i % KEYS), (i, o)) {
            assert!(
                prev_i < i,
                "partition {p}: v{prev_i} at {prev_o} after v{i} at {o} breaks send order"
            );
        }
    }
    seen
}

/// A consumer tailing every partition of a topic from the beginning while
/// the test runs, noting any offset it did not expect and any error.
#[derive(Debug)]
pub struct Tail {
    topic: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<LogContents>>,
    problems: Arc<Mutex<Vec<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

/// Problems a [`Tail`] keeps at most (the first ones tell the story).
const MAX_PROBLEMS: usize = 50;

impl Tail {
    /// Starts tailing all `partitions` of `topic` through the broker(s) at `url`.
    ///
    /// # Panics
    /// When the consumer cannot connect.
    pub async fn start(url: &str, topic: &str, partitions: u32) -> Tail {
        let mut consumer = Consumer::connect(url, ConsumerConfig::default())
            .await
            .expect("tail consumer connects");
        for partition in 0..partitions {
            consumer
                .assign(topic, partition, Offset::Earliest)
                .await
                .expect("tail assigns");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<LogContents>> = Arc::new(Mutex::new(
            (0..partitions).map(|p| (p, Vec::new())).collect(),
        ));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let handle = tokio::spawn(tail(
            consumer,
            topic.to_owned(),
            stop.clone(),
            seen.clone(),
            problems.clone(),
        ));
        Tail {
            topic: topic.to_owned(),
            stop,
            seen,
            problems,
            handle,
        }
    }

    /// Records read so far.
    pub fn read(&self) -> usize {
        self.seen.lock().values().map(Vec::len).sum()
    }

    /// Waits (at most `timeout`) until the tail has read all of `log`, stops
    /// it, and checks it read exactly that, with no error on the way.
    ///
    /// # Panics
    /// When it did not.
    pub async fn finish(self, log: &LogContents, timeout: Duration) {
        let caught_up = || {
            let seen = self.seen.lock();
            log.iter()
                .all(|(p, records)| seen.get(p).map_or(0, Vec::len) >= records.len())
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while !caught_up() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut { self.handle }).await;
        let seen = std::mem::take(&mut *self.seen.lock());
        let problems = std::mem::take(&mut *self.problems.lock());
        let mut report = Vec::new();
        for (p, records) in log {
            let got = seen.get(p).map_or(&[][..], Vec::as_slice);
            if got.len() < records.len() {
                report.push(format!(
                    "{}/{p}: read {} of {} records within {timeout:?}",
                    self.topic,
                    got.len(),
                    records.len()
                ));
            }
            if let Some(i) = got.iter().zip(records).position(|(a, b)| a != b) {
                report.push(format!(
                    "{}/{p}: at index {i} read {:?}, the log has {:?}",
                    self.topic, got[i], records[i]
                ));
            }
        }
        report.extend(problems);
        assert!(
            report.is_empty(),
            "the consumer running through the faults saw:\n  {}",
            report.join("\n  ")
        );
    }
}

async fn tail(
    mut consumer: Consumer,
    topic: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<LogContents>>,
    problems: Arc<Mutex<Vec<String>>>,
) {
    let problem = |message: String| {
        let mut problems = problems.lock();
        if problems.len() < MAX_PROBLEMS {
            eprintln!("tail consumer: {message}");
            problems.push(message);
        }
    };
    while !stop.load(Ordering::SeqCst) {
        // Dropping `next()` at the timeout is fine: the consumer keeps its
        // position and buffered records in itself.
        let Ok(item) = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await
        else {
            continue;
        };
        match item {
            None => {
                problem("the stream ended".into());
                return;
            }
            Some(Ok(record)) => {
                let value = value_id(record.value.as_deref().unwrap_or_default());
                let mut seen = seen.lock();
                let records = seen.entry(record.partition).or_default();
                let expected = records.len() as i64;
                if record.offset == expected {
                    records.push((record.offset, value));
                } else {
                    drop(seen);
                    problem(format!(
                        "{topic}/{}: got offset {} ({value}), expected {expected}",
                        record.partition, record.offset
                    ));
                }
            }
            Some(Err(e)) => {
                problem(format!("error: {e}"));
                // Carry on from where each partition got to, so the rest of
                // the run is still checked.
                let positions: Vec<(u32, i64)> = seen
                    .lock()
                    .iter()
                    .map(|(p, records)| (*p, records.len() as i64))
                    .collect();
                for (partition, next) in positions {
                    if let Err(e) = consumer.seek(&topic, partition, Offset::At(next)).await {
                        problem(format!("seek {topic}/{partition} to {next}: {e}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
