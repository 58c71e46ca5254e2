//! Request, byte and error counters for an object store.
//!
//! [`MetricsStore`] owns nothing but counters: it forwards every call to the
//! wrapped store unchanged and records, per operation, how many requests were
//! sent and how many failed, plus the bytes written and read. [`StoreStats`]
//! holds the live atomics; [`StoreStats::snapshot`] copies them into a plain
//! [`StatsSnapshot`], and subtracting two snapshots gives the traffic of a run
//! (`after - before`).
//!
//! What counts as one request:
//! - `put`: one per `put_opts`; its bytes count as written when it succeeds.
//! - `multipart`: one for the upload start, one per part, one for `complete`
//!   and one for `abort` (each is a billed request on S3); part bytes count as
//!   written when the part succeeds.
//! - `get`: one per `get_opts` without `head` (ranged gets included; the
//!   default `get_ranges` goes through `get_opts`, so each coalesced range is
//!   one get). Bytes count as read while the caller consumes the payload
//!   stream; a local-file payload counts its whole range when returned.
//! - `head`: one per `get_opts` with `head = true`.
//! - `list`: one per `list`, `list_with_offset` or `list_with_delimiter` call
//!   (a logical listing, not pages).
//! - `delete`: one per object passed through `delete_stream`.
//! - `copy` and `rename`: one per call.
//!
//! Errors count every `Err`, including `NotFound` and `AlreadyExists`, and
//! errors met while streaming a get payload or a listing.
//!
//! The one thing not to break: the wrapper must stay transparent. It never
//! changes arguments, results or errors, only observes them.

use std::fmt;
use std::ops::Sub;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

const GIB: f64 = (1u64 << 30) as f64;

/// The operations [`StoreStats`] counts separately.
#[derive(Debug, Clone, Copy)]
enum Op {
    Put,
    Multipart,
    Get,
    Head,
    List,
    Delete,
    Copy,
    Rename,
}

macro_rules! stats {
    ($( $(#[$doc:meta])* $field:ident ),* $(,)?) => {
        /// Live counters of a [`MetricsStore`], shared through an `Arc`.
        ///
        /// All counters only grow; take a [`StatsSnapshot`] before and after a
        /// run and subtract them for the run's traffic.
        #[derive(Debug, Default)]
        pub struct StoreStats {
            $( $field: AtomicU64, )*
        }

        /// A point-in-time copy of [`StoreStats`].
        ///
        /// `a - b` subtracts field by field (saturating at zero), giving the
        /// traffic between two snapshots.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $( $(#[$doc])* pub $field: u64, )*
        }

        impl StoreStats {
            /// Copies the current counter values.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $( $field: self.$field.load(Ordering::Relaxed), )*
                }
            }
        }

        impl Sub for StatsSnapshot {
            type Output = StatsSnapshot;

            fn sub(self, rhs: StatsSnapshot) -> StatsSnapshot {
                StatsSnapshot {
                    $( $field: self.$field.saturating_sub(rhs.$field), )*
                }
            }
        }
    };
}

stats! {
    /// `put_opts` requests.
    put_requests,
    /// Failed `put_opts` requests.
    put_errors,
    /// Multipart requests: upload starts, parts, completes and aborts.
    multipart_requests,
    /// Failed multipart requests.
    multipart_errors,
    /// Get requests (full and ranged), excluding heads.
    get_requests,
    /// Failed get requests, including errors while streaming the payload.
    get_errors,
    /// Head requests (`get_opts` with `head = true`).
    head_requests,
    /// Failed head requests (including `NotFound`).
    head_errors,
    /// List calls (`list`, `list_with_offset`, `list_with_delimiter`).
    list_requests,
    /// Failed list calls, including errors while streaming the listing.
    list_errors,
    /// Objects passed through `delete_stream`.
    delete_requests,
    /// Failed deletes.
    delete_errors,
    /// `copy_opts` requests.
    copy_requests,
    /// Failed `copy_opts` requests.
    copy_errors,
    /// `rename_opts` requests.
    rename_requests,
    /// Failed `rename_opts` requests.
    rename_errors,
    /// Payload bytes of successful puts and multipart parts.
    bytes_written,
    /// Payload bytes of gets, counted as the caller consumes them.
    bytes_read,
}

impl StoreStats {
    fn counters(&self, op: Op) -> (&AtomicU64, &AtomicU64) {
        match op {
            Op::Put => (&self.put_requests, &self.put_errors),
            Op::Multipart => (&self.multipart_requests, &self.multipart_errors),
            Op::Get => (&self.get_requests, &self.get_errors),
            Op::Head => (&self.head_requests, &self.head_errors),
            Op::List => (&self.list_requests, &self.list_errors),
            Op::Delete => (&self.delete_requests, &self.delete_errors),
            Op::Copy => (&self.copy_requests, &self.copy_errors),
            Op::Rename => (&self.rename_requests, &self.rename_errors),
        }
    }

    fn request(&self, op: Op) {
        self.counters(op).0.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self, op: Op) {
        self.counters(op).1.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error if `result` is one, and passes it on.
    fn outcome<T>(&self, op: Op, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.error(op);
        }
        result
    }

    fn written(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    fn read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl StatsSnapshot {
    /// Requests of every kind.
    pub fn total_requests(&self) -> u64 {
        self.put_requests
            + self.multipart_requests
            + self.get_requests
            + self.head_requests
            + self.list_requests
            + self.delete_requests
            + self.copy_requests
            + self.rename_requests
    }

    /// Errors of every kind.
    pub fn total_errors(&self) -> u64 {
        self.put_errors
            + self.multipart_errors
            + self.get_errors
            + self.head_errors
            + self.list_errors
            + self.delete_errors
            + self.copy_errors
            + self.rename_errors
    }

    /// Write requests (puts plus multipart requests) per GiB written: the
    /// number that drives object-store request cost for a write workload.
    ///
    /// Returns 0.0 when nothing was written.
    pub fn puts_per_gib(&self) -> f64 {
        if self.bytes_written == 0 {
            return 0.0;
        }
        let puts = (self.put_requests + self.multipart_requests) as f64;
        puts / (self.bytes_written as f64 / GIB)
    }
}

/// An [`ObjectStore`] wrapper that counts requests, errors and bytes in a
/// shared [`StoreStats`]. See the module docs for what counts as a request.
#[derive(Debug)]
pub struct MetricsStore {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<StoreStats>,
}

impl MetricsStore {
    /// Wraps `inner` with fresh counters.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            stats: Arc::new(StoreStats::default()),
        }
    }

    /// The live counters; keep the `Arc` to read them after the store moves.
    pub fn stats(&self) -> Arc<StoreStats> {
        Arc::clone(&self.stats)
    }

    fn count_list(
        &self,
        stream: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.stats.request(Op::List);
        let stats = Arc::clone(&self.stats);
        stream
            .inspect(move |item| {
                if item.is_err() {
                    stats.error(Op::List);
                }
            })
            .boxed()
    }
}

impl fmt::Display for MetricsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetricsStore({})", self.inner)
    }
}

/// Makes the payload of `result` count its bytes into `stats` as it is read.
fn counting_payload(result: GetResult, stats: Arc<StoreStats>) -> GetResult {
    let payload = match result.payload {
        GetResultPayload::Stream(stream) => GetResultPayload::Stream(
            stream
                .inspect(move |chunk| match chunk {
                    Ok(bytes) => stats.read(bytes.len() as u64),
                    Err(_) => stats.error(Op::Get),
                })
                .boxed(),
        ),
        // A local file: the caller reads it directly, so count the range now.
        #[allow(unreachable_patterns)]
        other => {
            stats.read(result.range.end.saturating_sub(result.range.start));
            other
        }
    };
    GetResult { payload, ..result }
}

#[async_trait]
impl ObjectStore for MetricsStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.stats.request(Op::Put);
        let len = payload.content_length() as u64;
        let result = self.inner.put_opts(location, payload, opts).await;
        if result.is_ok() {
            self.stats.written(len);
        }
        self.stats.outcome(Op::Put, result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.stats.request(Op::Multipart);
        let upload = self.stats.outcome(
            Op::Multipart,
            self.inner.put_multipart_opts(location, opts).await,
        )?;
        Ok(Box::new(MetricsUpload {
            inner: upload,
            stats: Arc::clone(&self.stats),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        self.stats.request(op);
        let result = self
            .stats
            .outcome(op, self.inner.get_opts(location, options).await)?;
        Ok(counting_payload(result, Arc::clone(&self.stats)))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let stats = Arc::clone(&self.stats);
        self.inner
            .delete_stream(locations)
            .inspect(move |item| {
                stats.request(Op::Delete);
                if item.is_err() {
                    stats.error(Op::Delete);
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.count_list(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.count_list(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.stats.request(Op::List);
        self.stats
            .outcome(Op::List, self.inner.list_with_delimiter(prefix).await)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.stats.request(Op::Copy);
        self.stats
            .outcome(Op::Copy, self.inner.copy_opts(from, to, options).await)
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.stats.request(Op::Rename);
        self.stats
            .outcome(Op::Rename, self.inner.rename_opts(from, to, options).await)
    }
}

/// A multipart upload that counts its parts, bytes, complete and abort.
#[derive(Debug)]
struct MetricsUpload {
    inner: Box<dyn MultipartUpload>,
    stats: Arc<StoreStats>,
}

#[async_trait]
impl MultipartUpload for MetricsUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.stats.request(Op::Multipart);
        let len = data.content_length() as u64;
        let stats = Arc::clone(&self.stats);
        let part = self.inner.put_part(data);
        Box::pin(async move {
            let result = part.await;
            if result.is_ok() {
                stats.written(len);
            }
            stats.outcome(Op::Multipart, result)
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.stats.request(Op::Multipart);
        self.stats
            .outcome(Op::Multipart, self.inner.complete().await)
    }

    async fn abort(&mut self) -> Result<()> {
        self.stats.request(Op::Multipart);
        self.stats.outcome(Op::Multipart, self.inner.abort().await)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutMode};

    use super::*;

    fn store() -> MetricsStore {
        MetricsStore::new(Arc::new(InMemory::new()))
    }

    #[tokio::test]
    async fn counts_puts_gets_and_bytes() {
        let store = store();
        let stats = store.stats();
        let a = Path::from("t/a");
        let b = Path::from("t/b");

        store
            .put(&a, PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        store
            .put(&b, PutPayload::from_static(b"world!"))
            .await
            .unwrap();
        let err = store
            .put_opts(&a, PutPayload::from_static(b"x"), PutMode::Create.into())
            .await
            .unwrap_err();
        assert!(matches!(err, object_store::Error::AlreadyExists { .. }));

        let before = stats.snapshot();
        assert_eq!(before.put_requests, 3);
        assert_eq!(before.put_errors, 1);
        assert_eq!(before.bytes_written, 11);
        assert_eq!(before.bytes_read, 0);

        let body = store.get(&a).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"hello");
        let range = store.get_range(&b, 1..4).await.unwrap();
        assert_eq!(&range[..], b"orl");
        store.head(&a).await.unwrap();
        assert!(store.head(&Path::from("t/missing")).await.is_err());

        let delta = stats.snapshot() - before;
        assert_eq!(delta.put_requests, 0);
        assert_eq!(delta.get_requests, 2);
        assert_eq!(delta.get_errors, 0);
        assert_eq!(delta.head_requests, 2);
        assert_eq!(delta.head_errors, 1);
        assert_eq!(delta.bytes_read, 5 + 3);
        assert_eq!(delta.total_requests(), 4);
        assert_eq!(delta.total_errors(), 1);
    }

    #[tokio::test]
    async fn get_bytes_count_as_the_stream_is_consumed() {
        let store = store();
        let stats = store.stats();
        let a = Path::from("a");
        store
            .put(&a, PutPayload::from(vec![7u8; 100]))
            .await
            .unwrap();

        let result = store.get(&a).await.unwrap();
        assert_eq!(stats.snapshot().bytes_read, 0);
        let chunks: Vec<_> = result.into_stream().try_collect().await.unwrap();
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 100);
        assert_eq!(stats.snapshot().bytes_read, 100);
    }

    #[tokio::test]
    async fn counts_list_delete_copy_and_multipart() {
        let store = store();
        let stats = store.stats();
        for i in 0..3 {
            let key = Path::from(format!("p/{i}"));
            store
                .put(&key, PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        let listed: Vec<_> = store
            .list(Some(&Path::from("p")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 3);
        store.list_with_delimiter(None).await.unwrap();
        store
            .copy(&Path::from("p/0"), &Path::from("q/0"))
            .await
            .unwrap();
        store.delete(&Path::from("p/1")).await.unwrap();
        store
            .rename(&Path::from("p/2"), &Path::from("q/2"))
            .await
            .unwrap();

        let mut upload = store.put_multipart(&Path::from("m")).await.unwrap();
        upload
            .put_part(PutPayload::from(vec![1u8; 10]))
            .await
            .unwrap();
        upload
            .put_part(PutPayload::from(vec![2u8; 20]))
            .await
            .unwrap();
        upload.complete().await.unwrap();

        let s = stats.snapshot();
        assert_eq!(s.put_requests, 3);
        assert_eq!(s.list_requests, 2);
        assert_eq!(s.copy_requests, 1);
        assert_eq!(s.delete_requests, 1);
        assert_eq!(s.rename_requests, 1);
        assert_eq!(s.multipart_requests, 4, "start, two parts, complete");
        assert_eq!(s.bytes_written, 3 + 30);
        assert_eq!(s.total_errors(), 0);
    }

    #[test]
    fn puts_per_gib_and_deltas() {
        let empty = StatsSnapshot::default();
        assert_eq!(empty.puts_per_gib(), 0.0);

        let run = StatsSnapshot {
            put_requests: 8,
            multipart_requests: 2,
            bytes_written: 1 << 29,
            ..StatsSnapshot::default()
        };
        assert!((run.puts_per_gib() - 20.0).abs() < 1e-9);

        let later = StatsSnapshot {
            put_requests: 10,
            ..run
        };
        let delta = later - run;
        assert_eq!(delta.put_requests, 2);
        assert_eq!(delta.bytes_written, 0);
        assert_eq!(run - later, StatsSnapshot::default());
    }
}
