//! The producer: batching, compression, partitioning, retries and
//! idempotence.
//!
//! Life of a record: [`Producer::send`] picks the partition (explicit, key
//! hash, or sticky), waits for room in the producer's buffer (`buffer_bytes`,
//! the backpressure point), and queues the record to its partition's sender
//! task. The sender ([`sender`]) collects records into a batch until
//! `batch_bytes` or `linger`, encodes (and compresses) it, and sends it to
//! the partition's owner, one request in flight per partition (partitions
//! are sent in parallel). Retryable errors are retried with backoff until
//! `delivery_timeout`, after a metadata refresh when owners moved. The
//! [`DeliveryFuture`] of each record resolves with its offset once the batch
//! is acknowledged.
//!
//! Idempotence (on by default): the producer gets a producer id once
//! (`InitProducer`), numbers each partition's records with consecutive
//! sequence numbers, and resends a failed batch byte for byte with the same
//! sequence. A broker that already wrote it answers with the original
//! offsets (`duplicate: true`), so a lost ack never duplicates a record.
//!
//! The one thing a newcomer must not break: a batch keeps its sequence
//! numbers across retries, and the next batch of the partition is built only
//! after the previous one is resolved. When a batch finally fails, the
//! partition switches to a fresh producer id (sequence 0), because the broker
//! may or may not have written it.

mod accumulator;
mod sender;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use strata_batch::RECORD_BATCH_OVERHEAD;
use strata_proto::ErrorInfo;
use strata_proto::v1::{ErrorReason, InitProducerRequest};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use crate::cluster::{Cluster, strata_client};
use crate::connect::ConnectOptions;
use crate::error::{Error, Result};
use crate::partitioner::{StickyPartitioner, partition_for_key};

use accumulator::{Pending, record_size};

/// When a produce is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Once the batch is durable in the bucket (the default).
    #[default]
    All,
    /// Once the owner appended it in memory: lower latency, but a broker
    /// crash before its next WAL flush (milliseconds) loses acknowledged
    /// records.
    Leader,
}

impl FromStr for Acks {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "all" | "-1" => Ok(Acks::All),
            "leader" | "1" => Ok(Acks::Leader),
            _ => Err(Error::Config(format!(
                "acks must be `all` or `leader`: {s}"
            ))),
        }
    }
}

impl Acks {
    fn proto(self) -> strata_proto::v1::Acks {
        match self {
            Acks::All => strata_proto::v1::Acks::All,
            Acks::Leader => strata_proto::v1::Acks::Leader,
        }
    }
}

/// Compression of produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Records are sent as they are.
    #[default]
    None,
    /// Zstandard, level 3: the best ratio, a little CPU.
    Zstd,
    /// LZ4 frame: fast, a lower ratio.
    Lz4,
    /// gzip: widely supported, slow.
    Gzip,
    /// snappy (xerial framing, as the Java client writes it): fast.
    Snappy,
}

impl Compression {
    pub(crate) fn codec(self) -> strata_batch::Compression {
        match self {
            Compression::None => strata_batch::Compression::None,
            Compression::Zstd => strata_batch::Compression::Zstd,
            Compression::Lz4 => strata_batch::Compression::Lz4,
            Compression::Gzip => strata_batch::Compression::Gzip,
            Compression::Snappy => strata_batch::Compression::Snappy,
        }
    }
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "lz4" => Ok(Compression::Lz4),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            _ => Err(Error::Config(format!(
                "compression must be none, gzip, snappy, lz4 or zstd: {s}"
            ))),
        }
    }
}

/// Producer settings. `Default` gives Kafka-like defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a partition's first record waits for more before its batch
    /// is sent. Longer: fuller batches, fewer requests (and PUTs), more
    /// latency. Default 5 ms.
    pub linger: Duration,
    /// Target batch size; a batch is sent as soon as this many bytes are
    /// queued, and keyless records move to another partition after this
    /// many. Default 1,000,000 bytes (librdkafka's `batch.size`): at an
    /// object store's latency a partition moves at most
    /// `max_in_flight × batch_bytes` per round trip, and the broker's
    /// `log.max_batch_bytes` (1 MiB) still has room for the batch header.
    pub batch_bytes: usize,
    /// Compression of batches. Default none.
    pub compression: Compression,
    /// When a produce is acknowledged. Default [`Acks::All`].
    pub acks: Acks,
    /// Exactly-once delivery per partition across retries (producer id and
    /// sequence numbers). Default true.
    pub idempotent: bool,
    /// Bound on the bytes of records accepted but not yet acknowledged;
    /// `send` waits for room beyond it. Default 32 MiB.
    pub buffer_bytes: usize,
    /// How long a record may take from `send` to its ack, retries included,
    /// before it fails. Default 2 minutes.
    pub delivery_timeout: Duration,
    /// Timeout of one request to a broker. Default 30 s.
    pub request_timeout: Duration,
    /// Batches in flight per partition (Kafka's
    /// `max.in.flight.requests.per.connection`): more hides the round trip
    /// to the store under load (a partition moves at most `max_in_flight ×
    /// batch_bytes` per round trip). Order is kept by the idempotent
    /// sequence numbers, so an idempotent producer allows at most
    /// [`MAX_IN_FLIGHT_IDEMPOTENT`] (the batches a Strata broker remembers
    /// per producer; Kafka's 5); without idempotence a retry may reorder
    /// batches, as in Kafka. Default 16.
    pub max_in_flight: usize,
    /// How to connect: TLS for `https://` brokers. Default: system roots.
    pub connection: ConnectOptions,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_bytes: 1_000_000,
            compression: Compression::None,
            acks: Acks::All,
            idempotent: true,
            buffer_bytes: 32 * 1024 * 1024,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            max_in_flight: MAX_IN_FLIGHT_IDEMPOTENT,
            connection: ConnectOptions::default(),
        }
    }
}

/// Most batches in flight per partition for an idempotent producer: a
/// Strata broker remembers the last 16 batches of each producer for dedup
/// (Kafka brokers 5).
pub const MAX_IN_FLIGHT_IDEMPOTENT: usize = 16;

impl ProducerConfig {
    fn validate(&self) -> Result<()> {
        if self.max_in_flight == 0 {
            return Err(Error::Config("max_in_flight must be at least 1".into()));
        }
        if self.idempotent && self.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT {
            return Err(Error::Config(format!(
                "max_in_flight is at most {MAX_IN_FLIGHT_IDEMPOTENT} for an idempotent producer \
                 (the broker deduplicates the last {MAX_IN_FLIGHT_IDEMPOTENT} batches); got {}",
                self.max_in_flight
            )));
        }
        if self.batch_bytes == 0 {
            return Err(Error::Config("batch_bytes must be above 0".into()));
        }
        if self.buffer_bytes < self.batch_bytes {
            return Err(Error::Config(format!(
                "buffer_bytes ({}) must be at least batch_bytes ({})",
                self.buffer_bytes, self.batch_bytes
            )));
        }
        if self.buffer_bytes > (u32::MAX as usize) {
            return Err(Error::Config(format!(
                "buffer_bytes must be below 4 GiB: {}",
                self.buffer_bytes
            )));
        }
        if self.request_timeout.is_zero() || self.delivery_timeout.is_zero() {
            return Err(Error::Config(
                "request_timeout and delivery_timeout must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// A record to produce.
///
/// ```
/// use strata_client::ProducerRecord;
///
/// let r = ProducerRecord::new("orders", "payload")
///     .key("customer-42")
///     .header("source", "web")
///     .timestamp(1_700_000_000_000);
/// assert_eq!(r.topic, "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// The partition; `None`: by key hash, or sticky for keyless records.
    pub partition: Option<u32>,
    /// The key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the Unix epoch; `None`: the time of `send`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// A tombstone (null value) for `key`.
    pub fn tombstone(topic: impl Into<String>, key: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: None,
            ..ProducerRecord::new(topic, Bytes::new()).key(key)
        }
    }

    /// Sets the key (and with it the partition, unless one is set).
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the record's timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp.
    pub timestamp_ms: i64,
}

/// Resolves when a sent record is acknowledged (or finally failed).
#[derive(Debug)]
#[must_use = "a DeliveryFuture does nothing unless awaited; drop it only if you don't need the outcome"]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed("producer"))))
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// State shared by the producer handles and the sender tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ProducerConfig,
    pub(crate) cluster: Arc<Cluster>,
    /// Producer id and epoch from `InitProducer` (idempotent producers).
    pub(crate) ids: Option<(i64, i16)>,
    pub(crate) sticky: Mutex<StickyPartitioner>,
    /// Records accepted and not yet completed.
    outstanding: AtomicUsize,
    /// Notified when `outstanding` drops to 0.
    idle: Notify,
    /// Number of `flush` calls under way: senders skip linger while > 0.
    flushers: AtomicUsize,
    /// Bumped by `flush` to wake lingering senders.
    pub(crate) flush_signal: watch::Sender<u64>,
}

impl Shared {
    /// The batch size to aim for on `topic`: `batch_bytes`, kept under the
    /// largest batch the topic accepts (as metadata said), with room for
    /// the batch header and the framing [`accumulator::record_size`] only
    /// estimates.
    pub(crate) fn batch_bytes(&self, topic: &str) -> usize {
        let want = self.config.batch_bytes;
        match self.cluster.cached_max_batch_bytes(topic) {
            Some(max) => {
                let max = max as usize;
                want.min(max.saturating_sub(max / 16 + RECORD_BATCH_OVERHEAD))
                    .max(1)
            }
            None => want,
        }
    }

    pub(crate) fn flushing(&self) -> bool {
        self.flushers.load(Ordering::Acquire) > 0
    }

    /// Called once per completed record.
    pub(crate) fn completed(&self, n: usize) {
        if self.outstanding.fetch_sub(n, Ordering::AcqRel) == n {
            self.idle.notify_waiters();
        }
    }

    /// A new producer id (after a batch failed with an unknown outcome).
    pub(crate) async fn init_producer(&self) -> Result<(i64, i16)> {
        init_producer(&self.cluster).await
    }
}

async fn init_producer(cluster: &Cluster) -> Result<(i64, i16)> {
    // Any broker hands out producer ids; a lost one is harmless, so the call
    // is idempotent.
    let (resp, _) = cluster
        .call_any("init producer", true, |channel| {
            let mut client = strata_client(channel);
            let req = cluster.request(InitProducerRequest {});
            async move { client.init_producer(req).await }
        })
        .await?;
    let epoch = i16::try_from(resp.producer_epoch).map_err(|_| {
        Error::InvalidResponse(format!(
            "producer epoch out of range: {}",
            resp.producer_epoch
        ))
    })?;
    if resp.producer_id < 0 {
        return Err(Error::InvalidResponse(format!(
            "negative producer id: {}",
            resp.producer_id
        )));
    }
    Ok((resp.producer_id, epoch))
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    memory: Arc<Semaphore>,
    senders: Mutex<HashMap<(String, u32), SenderHandle>>,
    closed: AtomicBool,
}

/// A partition's sender task, as `send` sees it.
#[derive(Debug, Clone)]
struct SenderHandle {
    tx: mpsc::UnboundedSender<Pending>,
    /// Bytes queued for the partition and not yet sent (for the keyless
    /// partitioner to steer around a partition that is falling behind).
    backlog: Arc<AtomicUsize>,
}

/// Sends records to Strata. Cheap to clone; clones share batches, buffer and
/// connections. Dropping the last clone still delivers what was sent; call
/// [`Producer::flush`] or [`Producer::close`] to wait for it.
///
/// ```no_run
/// # async fn demo() -> strata_client::Result<()> {
/// use strata_client::{Producer, ProducerConfig, ProducerRecord};
///
/// let producer = Producer::connect("http://127.0.0.1:50051", ProducerConfig::default()).await?;
/// // Wait for the ack of one record...
/// let meta = producer
///     .send_and_wait(ProducerRecord::new("orders", "hello").key("customer-42"))
///     .await?;
/// println!("written at {}/{}", meta.partition, meta.offset);
/// // ...or send many and collect the acks later.
/// let mut acks = Vec::new();
/// for i in 0..1000 {
///     acks.push(producer.send(ProducerRecord::new("orders", format!("record {i}"))).await?);
/// }
/// for ack in acks {
///     ack.await?;
/// }
/// producer.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    /// Connects to the cluster through `url` (one broker URL, or several
    /// separated by commas; any one that answers will do) and, for an
    /// idempotent producer, obtains a producer id.
    pub async fn connect(url: &str, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let cluster = Cluster::connect(url, config.request_timeout, &config.connection).await?;
        let ids = if config.idempotent {
            Some(init_producer(&cluster).await?)
        } else {
            None
        };
        let memory = Arc::new(Semaphore::new(config.buffer_bytes));
        let (flush_signal, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            config,
            cluster,
            ids,
            sticky: Mutex::new(StickyPartitioner::default()),
            outstanding: AtomicUsize::new(0),
            idle: Notify::new(),
            flushers: AtomicUsize::new(0),
            flush_signal,
        });
        Ok(Producer {
            inner: Arc::new(Inner {
                shared,
                memory,
                senders: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.shared.config
    }

    /// The producer id, for an idempotent producer.
    pub fn producer_id(&self) -> Option<i64> {
        self.inner.shared.ids.map(|(id, _)| id)
    }

    /// Partition count of `topic` (cached after the first call).
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        self.inner.shared.cluster.partition_count(topic).await
    }

    /// Queues `record` for sending, waiting while the buffer is full
    /// (backpressure), and returns a future of its acknowledgement. Fails
    /// at once for an unknown topic or partition, a record bigger than the
    /// buffer, or a closed producer.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let inner = &self.inner;
        let shared = &inner.shared;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("producer"));
        }
        let partitions = shared.cluster.partition_count(&record.topic).await?;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p >= partitions => {
                return Err(Error::Broker(ErrorInfo::new(
                    ErrorReason::UnknownPartition,
                    format!("topic {} has {partitions} partitions: {p}", record.topic),
                )));
            }
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                let size = record_size(&record);
                let backlog = |p: u32| self.backlog(&record.topic, p);
                shared.sticky.lock().partition(
                    &record.topic,
                    partitions,
                    size,
                    shared.batch_bytes(&record.topic),
                    backlog,
                    &mut rand::rng(),
                )
            }
        };
        let size = record_size(&record);
        if size > shared.config.buffer_bytes {
            return Err(Error::Config(format!(
                "record is larger than the producer's buffer_bytes ({}); raise it or send smaller records: {size} bytes",
                shared.config.buffer_bytes
            )));
        }
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let acquire = inner.memory.clone().acquire_many_owned(permits);
        let permit = match tokio::time::timeout(shared.config.delivery_timeout, acquire).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Error::Closed("producer")),
            Err(_) => {
                return Err(Error::Timeout {
                    what: "room in the producer's buffer (the brokers are not keeping up)".into(),
                    after: shared.config.delivery_timeout,
                });
            }
        };
        let (tx, rx) = oneshot::channel();
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let pending = Pending {
            record,
            timestamp_ms,
            size,
            _permit: Some(permit),
            tx,
            enqueued: Instant::now(),
        };
        shared.outstanding.fetch_add(1, Ordering::AcqRel);
        let queue = self.sender_for(&pending.record.topic, partition);
        queue.backlog.fetch_add(size, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(p)) = queue.tx.send(pending) {
            // The sender task is gone (the runtime is shutting down).
            queue.backlog.fetch_sub(size, Ordering::Relaxed);
            shared.completed(1);
            drop(p);
            return Err(Error::Closed("producer"));
        }
        Ok(DeliveryFuture { rx })
    }

    /// Sends `record` and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends every lingering batch now and waits until every record sent so
    /// far is acknowledged or failed (check each [`DeliveryFuture`] for
    /// which).
    pub async fn flush(&self) -> Result<()> {
        let shared = &self.inner.shared;
        struct Flushing<'a>(&'a AtomicUsize);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        shared.flushers.fetch_add(1, Ordering::AcqRel);
        let _guard = Flushing(&shared.flushers);
        shared.flush_signal.send_modify(|n| *n = n.wrapping_add(1));
        loop {
            let idle = shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if shared.outstanding.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            idle.await;
        }
    }

    /// Refuses further sends, flushes, and stops the sender tasks.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.flush().await?;
        self.inner.senders.lock().clear();
        Ok(())
    }

    fn sender_for(&self, topic: &str, partition: u32) -> SenderHandle {
        let mut senders = self.inner.senders.lock();
        if let Some(handle) = senders.get(&(topic.to_owned(), partition))
            && !handle.tx.is_closed()
        {
            return handle.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let task = sender::PartitionSender::new(
            self.inner.shared.clone(),
            topic.to_owned(),
            partition,
            rx,
            backlog.clone(),
        );
        tokio::spawn(task.run());
        let handle = SenderHandle { tx, backlog };
        senders.insert((topic.to_owned(), partition), handle.clone());
        handle
    }

    /// Bytes queued for `topic`/`partition` and not yet sent.
    fn backlog(&self, topic: &str, partition: u32) -> usize {
        self.inner
            .senders
            .lock()
            .get(&(topic.to_owned(), partition))
            .map_or(0, |h| h.backlog.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_settings() {
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("Leader".parse::<Acks>().unwrap(), Acks::Leader);
        assert!("2".parse::<Acks>().is_err());
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd);
        assert_eq!(
            "snappy".parse::<Compression>().unwrap(),
            Compression::Snappy
        );
        assert_eq!("GZIP".parse::<Compression>().unwrap(), Compression::Gzip);
        let e = "brotli".parse::<Compression>().unwrap_err();
        assert!(
            e.to_string().contains("none, gzip, snappy, lz4 or zstd"),
            "{e}"
        );
    }

    #[test]
    fn config_is_validated() {
        ProducerConfig::default().validate().unwrap();
        let bad = ProducerConfig {
            buffer_bytes: 10,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("buffer_bytes")
        );
        let too_many = ProducerConfig {
            max_in_flight: 17,
            ..Default::default()
        };
        assert!(
            too_many
                .validate()
                .unwrap_err()
                .to_string()
                .contains("at most 16")
        );
        ProducerConfig {
            max_in_flight: 6,
            idempotent: false,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn record_builder() {
        let r = ProducerRecord::new("t", "v")
            .key("k")
            .header("a", "b")
            .partition(3)
            .timestamp(7);
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.partition, Some(3));
        assert_eq!(r.timestamp_ms, Some(7));
        assert_eq!(r.headers.len(), 1);
        let t = ProducerRecord::tombstone("t", "k");
        assert!(t.value.is_none());
    }
}
