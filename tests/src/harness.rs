//! A storage-level test node (one broker incarnation: WAL writer, hot tier)
//! and the invariant checker every storage test ends with: every
//! acknowledged record is read back exactly once, in order, with no offset
//! gap or reuse.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use strata_storage::batch::{Batch, BatchBuilder, decode_records, split_batches};
use strata_storage::hot_tier::{HotTierConfig, SegmentCache};
use strata_storage::keys::{
    BrokerId, Incarnation, TopicId, TopicIdPartition, TopicPartition, WalSeq, WalStream,
};
use strata_storage::log::{LogConfig, PartitionLog};
use strata_storage::wal::{WalConfig, WalWriter};

/// One broker incarnation over a store.
pub struct Node {
    /// The store it writes to.
    pub store: Arc<dyn ObjectStore>,
    /// Its WAL writer.
    pub wal: WalWriter,
    /// Its hot tier.
    pub cache: SegmentCache,
}

impl Node {
    /// Starts a new incarnation of broker `broker` on `store`.
    pub async fn start(store: Arc<dyn ObjectStore>, broker: u32) -> Node {
        Self::start_with(store, broker, WalConfig::default()).await
    }

    /// Same, with WAL settings.
    pub async fn start_with(store: Arc<dyn ObjectStore>, broker: u32, wal: WalConfig) -> Node {
        let stream = WalStream {
            broker: BrokerId(broker),
            incarnation: Incarnation::generate(),
        };
        let wal =
            WalWriter::start(store.clone(), stream, WalSeq(0), wal).expect("valid WAL config");
        let cache = SegmentCache::new(
            store.clone(),
            HotTierConfig {
                memory_bytes: 16 << 20,
                disk_dir: None,
                ..HotTierConfig::default()
            },
        )
        .await
        .expect("hot tier starts");
        Node { store, wal, cache }
    }

    /// Opens (claims and recovers) a partition.
    pub async fn open(
        &self,
        tp: &TopicIdPartition,
        config: LogConfig,
    ) -> strata_storage::Result<PartitionLog> {
        PartitionLog::open(
            self.store.clone(),
            self.cache.clone(),
            self.wal.clone(),
            tp.clone(),
            config,
        )
        .await
    }

    /// Dies like `kill -9`: the WAL stops at once, nothing more is flushed.
    pub fn crash(self) {
        self.wal.abort();
    }
}

/// Partition `partition` of topic `name`, under a fixed topic id (each
/// test has a bucket of its own).
pub fn tip(name: &str, partition: u32) -> TopicIdPartition {
    TopicIdPartition::new(
        TopicId(uuid::Uuid::from_u128(0x5eed)),
        TopicPartition::new(name, partition).expect("valid topic"),
    )
}

/// A small log config that seals often and archives old segment entries
/// after four, for tests.
pub fn small_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 512,
        max_batch_bytes: 32 << 10,
        manifest_max_segments: 4,
        ..LogConfig::default()
    }
}

/// An uncompressed batch of `values`, optionally from an idempotent producer
/// `(id, epoch, first_sequence)`.
pub fn batch_of(values: &[String], producer: Option<(i64, i16, i32)>) -> Bytes {
    let mut b = BatchBuilder::new();
    if let Some((id, epoch, seq)) = producer {
        b = b.producer(id, epoch, seq);
    }
    for (i, v) in values.iter().enumerate() {
        b.push(
            1_700_000_000_000 + i as i64,
            Some(b"k"),
            Some(v.as_bytes()),
            &[],
        );
    }
    b.build()
}

/// Every durable record of the log, `(offset, value)`, read from the log
/// start to the high watermark with small reads (so segment boundaries,
/// the index and the tail are all crossed).
pub async fn read_all(log: &PartitionLog) -> Vec<(i64, Bytes)> {
    let status = log.status();
    let mut out = Vec::new();
    let mut offset = status.log_start_offset;
    while offset < status.high_watermark {
        let r = log.read(offset, 700).await.expect("read succeeds");
        assert!(
            !r.batches.is_empty(),
            "read at {offset} below the high watermark returned nothing"
        );
        for bytes in r.batches {
            for b in split_batches(bytes) {
                let b: Batch = b.expect("stored batches parse");
                b.verify_crc().expect("stored batches keep their CRC");
                for rec in decode_records(&b).expect("records decode") {
                    if rec.offset < offset {
                        continue; // a batch may start before the requested offset
                    }
                    assert_eq!(rec.offset, offset, "offset gap or reuse in the log");
                    out.push((rec.offset, rec.value.unwrap_or_default()));
                    offset += 1;
                }
            }
        }
    }
    out
}

/// Checks the invariant: `log` holds contiguous offsets, every acknowledged
/// `(offset → value)` is at its offset exactly once, and every value
/// appears at most once (no duplicates). `observed` are records a reader saw
/// earlier: they must not have changed (no offset reuse).
pub fn check_invariant(
    read: &[(i64, Bytes)],
    acked: &BTreeMap<i64, String>,
    observed: &BTreeMap<i64, Bytes>,
    log_start: i64,
) {
    let by_offset: HashMap<i64, &Bytes> = read.iter().map(|(o, v)| (*o, v)).collect();
    for w in read.windows(2) {
        assert_eq!(w[0].0 + 1, w[1].0, "offsets are not contiguous");
    }
    if let Some(first) = read.first() {
        assert_eq!(
            first.0, log_start,
            "the log does not start at its log start offset"
        );
    }
    for (off, value) in acked.range(log_start..) {
        let got = by_offset
            .get(off)
            .unwrap_or_else(|| panic!("acknowledged record at offset {off} ({value}) is missing"));
        assert_eq!(
            got.as_ref(),
            value.as_bytes(),
            "offset {off} holds another record than was acknowledged"
        );
    }
    for (off, value) in observed.range(log_start..) {
        let got = by_offset
            .get(off)
            .unwrap_or_else(|| panic!("record seen by a reader at offset {off} vanished"));
        assert_eq!(got, &value, "offset {off} was reused");
    }
    let mut seen = HashMap::new();
    for (off, v) in read {
        if let Some(prev) = seen.insert(v.clone(), *off) {
            panic!("record {v:?} appears twice: offsets {prev} and {off}");
        }
    }
}

/// Waits for a future with a bound, so a hung test fails instead of hanging.
pub async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60s"))
}

/// A store that "crashes" its writer: after `budget` write requests (PUT,
/// multipart, delete) it fails every request. With `after`, the request
/// that exhausts the budget lands before failing (the response is lost);
/// otherwise it is lost. Reads and lists count too (they are requests a
/// broker can die before), so sweeping `budget` covers every crash point.
#[derive(Debug)]
pub struct CrashStore {
    inner: Arc<dyn ObjectStore>,
    budget: std::sync::atomic::AtomicI64,
    after: bool,
}

impl CrashStore {
    /// Wraps `inner`; dies at request number `budget` (1-based).
    pub fn new(inner: Arc<dyn ObjectStore>, budget: i64, after: bool) -> Self {
        Self {
            inner,
            budget: std::sync::atomic::AtomicI64::new(budget),
            after,
        }
    }

    fn take(&self) -> Result<bool, object_store::Error> {
        let left = self
            .budget
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if left > 1 {
            Ok(true)
        } else if left == 1 && self.after {
            Ok(false)
        } else {
            Err(crashed())
        }
    }

    /// Requests left before the crash (negative once crashed).
    pub fn left(&self) -> i64 {
        self.budget.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn crashed() -> object_store::Error {
    object_store::Error::Generic {
        store: "crash",
        source: "the broker crashed".into(),
    }
}

impl std::fmt::Display for CrashStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrashStore({})", self.inner)
    }
}

macro_rules! crash_call {
    ($self:ident, $call:expr) => {{
        let ok = $self.take()?;
        let res = $call.await;
        if ok { res } else { res.and(Err(crashed())) }
    }};
}

#[async_trait::async_trait]
impl ObjectStore for CrashStore {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        crash_call!(self, self.inner.put_opts(location, payload, opts))
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        crash_call!(self, self.inner.put_multipart_opts(location, opts))
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        crash_call!(self, self.inner.get_opts(location, options))
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        match self.take() {
            Ok(_) => self.inner.delete_stream(locations),
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        }
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        match self.take() {
            Ok(_) => self.inner.list(prefix),
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        }
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        crash_call!(self, self.inner.list_with_delimiter(prefix))
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        crash_call!(self, self.inner.copy_opts(from, to, options))
    }
}
