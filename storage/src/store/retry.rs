//! Bounded retries with exponential backoff, full jitter and a per-request
//! timeout for an object store.
//!
//! [`RetryStore`] owns the retry policy: which errors are worth another try
//! ([`is_transient`]), how long to wait (`min(max_backoff, initial_backoff *
//! 2^(retry-1))`, then a uniform draw in `[0, that]`: "full jitter"), and how
//! long one attempt may take ([`RetryConfig::request_timeout`]; a timeout
//! becomes a transient `Generic` error naming the operation and key). The
//! jitter rng is injectable ([`RetryStore::with_seed`]) so tests are
//! deterministic. Every retry is logged with `tracing::debug!` and counted
//! ([`RetryStore::retries`]).
//!
//! What is retried, and how far:
//! - single requests (`put_opts`, `get_opts`, `get_ranges`,
//!   `list_with_delimiter`, `copy_opts`, `rename_opts`): the whole request.
//!   For `get_opts` the timeout and retries cover obtaining the response, not
//!   reading its payload stream; `get_ranges` returns buffered bytes and is
//!   retried as a whole.
//! - `list` / `list_with_offset`: only when the listing fails before yielding
//!   its first entry; an error after that is passed to the caller, who would
//!   otherwise see duplicates. Each later item still gets the timeout.
//! - `delete_stream`: each location is deleted (and retried) on its own, up to
//!   ten at a time, in order. This gives up S3's bulk delete for simplicity;
//!   deletes are cheap and rare.
//! - `put_multipart_opts`: only the creation of the upload is retried. Parts,
//!   `complete` and `abort` go straight to the inner upload: retrying a part
//!   means resending a payload the caller may no longer hold, and a failed
//!   multipart upload is cheaper to restart from scratch. A retried creation
//!   may leave an orphan upload behind; bucket lifecycle rules clean those.
//!
//! The one thing not to break: **a retry never hides the outcome of an
//! ambiguous attempt.** A write that timed out or failed with a transient
//! error may still have landed. When it was conditional, the retry can then
//! fail: a create-only put (`PutMode::Create`) or create-only copy sees
//! `AlreadyExists`, a `PutMode::Update` sees `Precondition`, a delete or
//! rename may see `NotFound`. Those errors are returned as they are, never
//! turned into success: only the caller can tell whether the object now at
//! the key is its own (read it back and compare) or someone else's (it was
//! fenced). Code that turns `AlreadyExists` into "fenced" without that check
//! will fence itself on a lost acknowledgement.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, Error, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How many deletes of one `delete_stream` run at once.
const DELETE_CONCURRENCY: usize = 10;

/// Settings of a [`RetryStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per request, the first included (0 is treated as 1). More
    /// attempts ride out longer outages but delay the error a caller may be
    /// able to handle better (for example by rerouting).
    pub max_attempts: u32,
    /// Backoff cap before the first retry; doubles with each retry. Lower
    /// recovers faster from blips, higher puts less load on a struggling store.
    pub initial_backoff: Duration,
    /// Upper bound of the backoff cap.
    pub max_backoff: Duration,
    /// Time limit of one attempt, `None` for no limit. Short limits cut tail
    /// latency but turn slow writes into ambiguous ones (see module docs).
    pub request_timeout: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            request_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Whether `error` may go away on its own, so that retrying makes sense.
///
/// Everything is transient except answers the store gave on purpose
/// (not found, already exists, precondition failed, not modified), requests
/// that can never succeed (invalid path, not supported or implemented, bad
/// configuration key) and credential problems.
pub fn is_transient(error: &Error) -> bool {
    !matches!(
        error,
        Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::Precondition { .. }
            | Error::NotModified { .. }
            | Error::InvalidPath { .. }
            | Error::NotSupported { .. }
            | Error::NotImplemented { .. }
            | Error::PermissionDenied { .. }
            | Error::Unauthenticated { .. }
            | Error::UnknownConfigurationKey { .. }
    )
}

/// The shared state of a [`RetryStore`]; behind an `Arc` so streams can keep
/// it after the call that made them returned.
struct Policy {
    config: RetryConfig,
    rng: Mutex<SmallRng>,
    retries: Arc<AtomicU64>,
}

impl Policy {
    fn max_attempts(&self) -> u32 {
        self.config.max_attempts.max(1)
    }

    /// The wait before retry number `retry` (1 for the first retry).
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let cap = self
            .config
            .initial_backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff);
        let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if cap_nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.lock().random_range(0..=cap_nanos))
    }

    /// Runs `fut` under the request timeout.
    async fn timed<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = T>,
    ) -> Result<T> {
        match self.config.request_timeout {
            Some(limit) => tokio::time::timeout(limit, fut)
                .await
                .map_err(|_| Error::Generic {
                    store: "retry",
                    source: format!("{op} timed out after {limit:?}: {key}").into(),
                }),
            None => Ok(fut.await),
        }
    }

    /// After attempt number `attempt` failed with `error`: waits and returns
    /// `Ok` if another attempt should follow, or returns the error.
    async fn before_retry(
        &self,
        op: &'static str,
        key: &str,
        attempt: u32,
        error: Error,
    ) -> Result<()> {
        if !is_transient(&error) || attempt >= self.max_attempts() {
            if attempt > 1 {
                // Not handled here: the caller decides. The note matters for
                // conditional writes, whose earlier attempt may have landed.
                tracing::debug!(
                    op,
                    key,
                    attempts = attempt,
                    %error,
                    "object store request failed after retries; an earlier attempt may have taken effect"
                );
            }
            return Err(error);
        }
        let delay = self.backoff(attempt);
        self.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(op, key, attempt, ?delay, %error, "retrying object store request");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Calls `request` until it succeeds, fails for good, or runs out of
    /// attempts.
    async fn call<T, F, Fut>(&self, op: &'static str, key: &str, mut request: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let error = match self.timed(op, key, request()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) | Err(error) => error,
            };
            self.before_retry(op, key, attempt, error).await?;
            attempt += 1;
        }
    }
}

/// An [`ObjectStore`] wrapper that retries transient failures with
/// exponential backoff and full jitter, and bounds each attempt with a
/// timeout. See the module docs for what is retried and the ambiguity rule.
pub struct RetryStore {
    inner: Arc<dyn ObjectStore>,
    policy: Arc<Policy>,
}

impl RetryStore {
    /// Wraps `inner`, seeding the jitter from the operating system.
    pub fn new(inner: Arc<dyn ObjectStore>, config: RetryConfig) -> Self {
        Self::with_rng(inner, config, SmallRng::from_os_rng())
    }

    /// Wraps `inner` with a jitter rng seeded from `seed`, for reproducible
    /// tests.
    pub fn with_seed(inner: Arc<dyn ObjectStore>, config: RetryConfig, seed: u64) -> Self {
        Self::with_rng(inner, config, SmallRng::seed_from_u64(seed))
    }

    /// Wraps `inner` with the given jitter rng.
    pub fn with_rng(inner: Arc<dyn ObjectStore>, config: RetryConfig, rng: SmallRng) -> Self {
        Self {
            inner,
            policy: Arc::new(Policy {
                config,
                rng: Mutex::new(rng),
                retries: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &RetryConfig {
        &self.policy.config
    }

    /// Retries made so far (attempts beyond the first), over all requests.
    pub fn retries(&self) -> u64 {
        self.policy.retries.load(Ordering::Relaxed)
    }

    /// The live retry counter, to read after the store has moved.
    pub fn retry_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.policy.retries)
    }

    /// A listing made by `make`, retried while it fails before its first item.
    fn list_retrying<F>(&self, key: String, make: F) -> BoxStream<'static, Result<ObjectMeta>>
    where
        F: Fn() -> BoxStream<'static, Result<ObjectMeta>> + Send + 'static,
    {
        let policy = Arc::clone(&self.policy);
        stream::once(async move {
            let mut attempt = 1;
            loop {
                let mut listing = make();
                let error = match policy.timed("list", &key, listing.next()).await {
                    Ok(None) => return stream::empty().boxed(),
                    Ok(Some(Ok(first))) => {
                        let rest = timed_listing(policy, key, listing);
                        return stream::once(async move { Ok(first) }).chain(rest).boxed();
                    }
                    Ok(Some(Err(error))) | Err(error) => error,
                };
                if let Err(error) = policy.before_retry("list", &key, attempt, error).await {
                    return stream::once(async move { Err(error) }).boxed();
                }
                attempt += 1;
            }
        })
        .flatten()
        .boxed()
    }
}

/// The rest of a listing, each item under the request timeout. A timeout
/// ends the listing with an error.
fn timed_listing(
    policy: Arc<Policy>,
    key: String,
    listing: BoxStream<'static, Result<ObjectMeta>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    if policy.config.request_timeout.is_none() {
        return listing;
    }
    stream::unfold(Some((policy, key, listing)), |state| async move {
        let (policy, key, mut listing) = state?;
        match policy.timed("list", &key, listing.next()).await {
            Ok(Some(item)) => Some((item, Some((policy, key, listing)))),
            Ok(None) => None,
            Err(error) => Some((Err(error), None)),
        }
    })
    .boxed()
}

impl fmt::Debug for RetryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryStore")
            .field("inner", &self.inner)
            .field("config", &self.policy.config)
            .field("retries", &self.retries())
            .finish()
    }
}

impl fmt::Display for RetryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RetryStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RetryStore {
    /// Retried as a whole. A create-only or conditional put whose earlier
    /// attempt failed ambiguously returns `AlreadyExists` / `Precondition`
    /// from the retry unchanged: the caller must check whether the object is
    /// its own.
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.policy
            .call("put", location.as_ref(), || {
                self.inner.put_opts(location, payload.clone(), opts.clone())
            })
            .await
    }

    /// Only the creation of the upload is retried; parts are not.
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.policy
            .call("put_multipart", location.as_ref(), || {
                self.inner.put_multipart_opts(location, opts.clone())
            })
            .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        self.policy
            .call(op, location.as_ref(), || {
                self.inner.get_opts(location, options.clone())
            })
            .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.policy
            .call("get_ranges", location.as_ref(), || {
                self.inner.get_ranges(location, ranges)
            })
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let policy = Arc::clone(&self.policy);
        locations
            .map(move |location| {
                let inner = Arc::clone(&inner);
                let policy = Arc::clone(&policy);
                async move {
                    let location = location?;
                    policy
                        .call("delete", location.as_ref(), || inner.delete(&location))
                        .await?;
                    Ok(location)
                }
            })
            .buffered(DELETE_CONCURRENCY)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.cloned();
        let key = prefix.as_ref().map(ToString::to_string).unwrap_or_default();
        self.list_retrying(key, move || inner.list(prefix.as_ref()))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.cloned();
        let offset = offset.clone();
        let key = prefix.as_ref().map(ToString::to_string).unwrap_or_default();
        self.list_retrying(key, move || {
            inner.list_with_offset(prefix.as_ref(), &offset)
        })
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let key = prefix.map(AsRef::as_ref).unwrap_or_default();
        self.policy
            .call("list", key, || self.inner.list_with_delimiter(prefix))
            .await
    }

    /// Retried as a whole; a create-only copy may see `AlreadyExists` after an
    /// ambiguous attempt (see [`RetryStore::put_opts`]).
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.policy
            .call("copy", to.as_ref(), || {
                self.inner.copy_opts(from, to, options.clone())
            })
            .await
    }

    /// Retried as a whole; after an ambiguous attempt the retry may see
    /// `NotFound` (the source already moved) or `AlreadyExists`.
    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.policy
            .call("rename", to.as_ref(), || {
                self.inner.rename_opts(from, to, options.clone())
            })
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::TryStreamExt;
    use object_store::PutMode;
    use object_store::memory::InMemory;

    use super::*;
    use crate::store::fault::{FaultConfig, FaultRule, FaultStore, FaultTiming, Op, OpSet};

    fn fast(max_attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            request_timeout: Some(Duration::from_secs(1)),
        }
    }

    fn faulty(rules: Vec<FaultRule>) -> Arc<FaultStore> {
        Arc::new(FaultStore::new(
            Arc::new(InMemory::new()),
            FaultConfig { seed: 42, rules },
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn recovers_from_a_flaky_store() {
        let fault = faulty(vec![FaultRule::errors(OpSet::ALL, 0.3)]);
        let store = RetryStore::with_seed(fault.clone(), fast(10), 7);

        for i in 0..50 {
            let key = Path::from(format!("k/{i}"));
            store
                .put(&key, PutPayload::from(format!("v{i}")))
                .await
                .unwrap();
        }
        for i in 0..50 {
            let key = Path::from(format!("k/{i}"));
            let body = store.get(&key).await.unwrap().bytes().await.unwrap();
            assert_eq!(body, Bytes::from(format!("v{i}")));
            store.head(&key).await.unwrap();
        }
        let listed: Vec<_> = store
            .list(Some(&Path::from("k")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 50);
        let deleted: Vec<_> = store
            .delete_stream(stream::iter(listed.into_iter().map(|m| Ok(m.location))).boxed())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(deleted.len(), 50);

        assert!(fault.injected() > 0);
        assert_eq!(store.retries(), fault.injected());
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_on_a_down_store() {
        let fault = faulty(vec![]);
        fault.set_down(true);
        let store = RetryStore::with_seed(fault.clone(), fast(4), 7);

        let err = store
            .put(&Path::from("a"), PutPayload::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Generic { .. }), "{err}");
        assert_eq!(fault.injected(), 4);
        assert_eq!(store.retries(), 3);

        let err = store.list(None).try_collect::<Vec<_>>().await.unwrap_err();
        assert!(matches!(err, Error::Generic { .. }), "{err}");
        assert_eq!(fault.injected(), 8);

        fault.set_down(false);
        store
            .put(&Path::from("a"), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn create_only_put_after_lost_ack_returns_already_exists() {
        let fault = faulty(vec![]);
        // The first put lands but its response is lost.
        fault.fail_next(Op::Put, FaultTiming::After);
        let store = RetryStore::with_seed(fault.clone(), fast(5), 7);
        let key = Path::from("chain/00000001");

        let err = store
            .put_opts(
                &key,
                PutPayload::from_static(b"mine"),
                PutMode::Create.into(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert_eq!(store.retries(), 1);
        // The caller can tell the object is its own.
        let body = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"mine");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let store = RetryStore::with_seed(Arc::new(InMemory::new()), fast(5), 7);
        let err = store.get(&Path::from("missing")).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert_eq!(store.retries(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_requests_time_out_and_are_retried() {
        let fault = faulty(vec![FaultRule {
            latency: Some((Duration::from_secs(5), Duration::from_secs(5))),
            ..FaultRule::errors(OpSet::from(Op::Get), 0.0)
        }]);
        let store = RetryStore::with_seed(fault, fast(3), 7);
        let key = Path::from("slow/key");
        store
            .put(&key, PutPayload::from_static(b"x"))
            .await
            .unwrap();

        let err = store.get(&key).await.unwrap_err();
        assert!(matches!(err, Error::Generic { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("get timed out"), "{message}");
        assert!(message.contains("slow/key"), "{message}");
        assert_eq!(store.retries(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn listing_is_retried_before_its_first_item_only() {
        let fault = faulty(vec![]);
        let store = RetryStore::with_seed(fault.clone(), fast(5), 7);
        store
            .put(&Path::from("l/a"), PutPayload::from_static(b"x"))
            .await
            .unwrap();

        fault.fail_next(Op::List, FaultTiming::Before);
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(store.retries(), 1);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let store = RetryStore::with_seed(Arc::new(InMemory::new()), RetryConfig::default(), 1);
        for retry in 1..40 {
            let cap = Duration::from_millis(50)
                .saturating_mul(1u32.checked_shl(retry - 1).unwrap_or(u32::MAX))
                .min(Duration::from_secs(2));
            assert!(store.policy.backoff(retry) <= cap);
        }
        let draws: Vec<_> = (0..20).map(|_| store.policy.backoff(10)).collect();
        assert!(draws.iter().any(|d| *d != draws[0]), "jitter varies");
    }
}
