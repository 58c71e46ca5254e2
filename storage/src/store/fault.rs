//! A seeded fault injector for an object store: errors, added latency and
//! outages, for tests.
//!
//! [`FaultStore`] owns the decision of what goes wrong with each request. For
//! every request it walks the [`FaultRule`]s that match the operation and key
//! and, from one seeded rng, draws an added latency (uniform range plus rare
//! spikes) and whether to fail. Injected errors are transient
//! `object_store::Error::Generic { store: "fault", .. }`, as a flaky network
//! or a 503 would be.
//!
//! Where the error strikes matters: for writes (put, multipart, copy, delete)
//! a coin decides whether it comes **before** the inner call (the request was
//! lost, nothing changed) or **after** it (the request landed, the response
//! was lost). The second case is the one that breaks naive create-only
//! writers: their retry sees `AlreadyExists` for an object they wrote
//! themselves. Reads always fail before the call.
//!
//! Runtime switches: [`FaultStore::set_enabled`] turns the rules off and on;
//! [`FaultStore::set_down`] makes every request fail (a store outage), whether
//! or not the rules are enabled; [`FaultStore::fail_next`] scripts one fault on
//! the next request of an operation, for tests that need an exact scenario.
//!
//! The one thing not to break: **same seed, same sequence of requests, same
//! faults.** Every random draw happens synchronously when a request starts,
//! under one `parking_lot::Mutex` that is never held across an `.await`.
//! Concurrent requests race for the rng, so only a sequential test gets an
//! exactly repeatable fault sequence.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::BitOr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, Error, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result, UploadPart,
};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A kind of object-store request a [`FaultRule`] can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put_opts`.
    Put,
    /// `get_opts` without `head`, and ranged reads.
    Get,
    /// `list`, `list_with_offset`, `list_with_delimiter`.
    List,
    /// Each location of `delete_stream`.
    Delete,
    /// `get_opts` with `head = true`.
    Head,
    /// Creating a multipart upload, each part, and `complete`.
    Multipart,
    /// `copy_opts` and `rename_opts`.
    Copy,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 7] = [
        Op::Put,
        Op::Get,
        Op::List,
        Op::Delete,
        Op::Head,
        Op::Multipart,
        Op::Copy,
    ];

    /// The operation's lowercase name, as used in injected error messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Head => "head",
            Op::Multipart => "multipart",
            Op::Copy => "copy",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Whether the request changes the bucket, so that a fault may strike
    /// after it landed.
    fn is_write(self) -> bool {
        matches!(self, Op::Put | Op::Multipart | Op::Copy | Op::Delete)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Op`]s. Build with the constants, [`OpSet::of`], `From<Op>` or
/// `|` (`Op::Put | Op::Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OpSet(u8);

impl OpSet {
    /// No operation.
    pub const NONE: OpSet = OpSet(0);
    /// Every operation.
    pub const ALL: OpSet = OpSet::of(&Op::ALL);
    /// Operations that change the bucket: put, multipart, copy, delete.
    pub const WRITES: OpSet = OpSet::of(&[Op::Put, Op::Multipart, Op::Copy, Op::Delete]);
    /// Operations that only read: get, head, list.
    pub const READS: OpSet = OpSet::of(&[Op::Get, Op::Head, Op::List]);

    /// The set of the given operations.
    pub const fn of(ops: &[Op]) -> OpSet {
        let mut bits = 0;
        let mut i = 0;
        while i < ops.len() {
            bits |= ops[i].bit();
            i += 1;
        }
        OpSet(bits)
    }

    /// This set plus `op`.
    pub const fn with(self, op: Op) -> OpSet {
        OpSet(self.0 | op.bit())
    }

    /// Whether `op` is in the set.
    pub const fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }
}

impl From<Op> for OpSet {
    fn from(op: Op) -> Self {
        OpSet(op.bit())
    }
}

impl BitOr for OpSet {
    type Output = OpSet;

    fn bitor(self, rhs: OpSet) -> OpSet {
        OpSet(self.0 | rhs.0)
    }
}

impl BitOr<Op> for OpSet {
    type Output = OpSet;

    fn bitor(self, rhs: Op) -> OpSet {
        self.with(rhs)
    }
}

impl BitOr for Op {
    type Output = OpSet;

    fn bitor(self, rhs: Op) -> OpSet {
        OpSet::from(self).with(rhs)
    }
}

/// What goes wrong with the requests a rule matches.
///
/// All rules matching a request add their latency; the first rule whose
/// error draw fires decides the error.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The operations the rule applies to.
    pub ops: OpSet,
    /// Only keys starting with this string (the destination for copies);
    /// `None` for every key. A listing matches when it may return such keys
    /// (`list("a")` matches prefix `a/b`, and `a/` matches `list("a/b")`).
    pub key_prefix: Option<String>,
    /// Probability in `[0, 1]` that a matching request fails.
    pub error_rate: f64,
    /// Added latency, drawn uniformly from `[min, max]`.
    pub latency: Option<(Duration, Duration)>,
    /// Probability in `[0, 1]` that a matching request also waits `spike`.
    pub latency_spike_rate: f64,
    /// The extra wait of a latency spike.
    pub spike: Duration,
}

impl Default for FaultRule {
    /// A rule that matches everything and does nothing.
    fn default() -> Self {
        Self {
            ops: OpSet::ALL,
            key_prefix: None,
            error_rate: 0.0,
            latency: None,
            latency_spike_rate: 0.0,
            spike: Duration::ZERO,
        }
    }
}

impl FaultRule {
    /// Fails requests of `ops` with probability `error_rate`.
    pub fn errors(ops: impl Into<OpSet>, error_rate: f64) -> Self {
        Self {
            ops: ops.into(),
            error_rate,
            ..Self::default()
        }
    }

    /// Delays requests of `ops` by a uniform draw from `[min, max]`.
    pub fn latency(ops: impl Into<OpSet>, min: Duration, max: Duration) -> Self {
        Self {
            ops: ops.into(),
            latency: Some((min, max)),
            ..Self::default()
        }
    }

    /// Restricts the rule to keys starting with `prefix`.
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// Adds a latency spike of `spike` with probability `rate`.
    #[must_use]
    pub fn with_spikes(mut self, rate: f64, spike: Duration) -> Self {
        self.latency_spike_rate = rate;
        self.spike = spike;
        self
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        if !self.ops.contains(op) {
            return false;
        }
        let Some(prefix) = self.key_prefix.as_deref() else {
            return true;
        };
        if op == Op::List {
            // A listing matches when it may return keys under the prefix.
            let dir = if key.is_empty() {
                String::new()
            } else {
                format!("{key}/")
            };
            dir.starts_with(prefix) || prefix.starts_with(&dir)
        } else {
            key.starts_with(prefix)
        }
    }
}

/// Settings of a [`FaultStore`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Seed of the rng behind every draw.
    pub seed: u64,
    /// The rules, in order.
    pub rules: Vec<FaultRule>,
}

/// Where a fault strikes relative to the inner call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    /// The request is lost: the inner store is not called.
    Before,
    /// The request lands, then its response is lost: the inner store is
    /// called and its result replaced by an error.
    After,
}

/// The fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Down,
    Before,
    After,
}

impl From<FaultTiming> for Fault {
    fn from(timing: FaultTiming) -> Self {
        match timing {
            FaultTiming::Before => Fault::Before,
            FaultTiming::After => Fault::After,
        }
    }
}

/// What happens to one request.
#[derive(Debug, Default)]
struct Decision {
    delay: Duration,
    fault: Option<Fault>,
}

impl Decision {
    /// Whether the inner store gets the request.
    fn calls_inner(&self) -> bool {
        matches!(self.fault, None | Some(Fault::After))
    }

    /// Waits, then runs `request` unless the fault comes before it.
    async fn apply<T>(
        self,
        op: Op,
        key: &str,
        request: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        match self.fault {
            None => request.await,
            Some(Fault::After) => {
                let _landed = request.await;
                Err(injected_error(op, key, Fault::After))
            }
            Some(fault) => Err(injected_error(op, key, fault)),
        }
    }
}

fn injected_error(op: Op, key: &str, fault: Fault) -> Error {
    let message = match fault {
        Fault::Down => format!("injected outage, store is down: {op} {key}"),
        Fault::Before => format!("injected fault before {op}, request lost: {key}"),
        Fault::After => {
            format!("injected fault after {op}, request landed but response lost: {key}")
        }
    };
    Error::Generic {
        store: "fault",
        source: message.into(),
    }
}

/// `true` with probability `p`, clamped to `[0, 1]`.
fn chance(rng: &mut SmallRng, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.random_bool(p)
    }
}

/// A uniform draw from `[a, b]` (or `[b, a]`).
fn uniform(rng: &mut SmallRng, a: Duration, b: Duration) -> Duration {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    Duration::from_nanos(rng.random_range(nanos(lo)..=nanos(hi)))
}

struct State {
    rng: SmallRng,
    scripted: VecDeque<(Op, FaultTiming)>,
}

/// The state of a [`FaultStore`], shared with its streams and uploads.
struct Shared {
    rules: Vec<FaultRule>,
    state: Mutex<State>,
    enabled: AtomicBool,
    down: AtomicBool,
    injected: AtomicU64,
    /// Requests a latency rule is holding (or running after its delay).
    delayed: AtomicU64,
    delayed_peak: AtomicU64,
}

/// Counts one delayed request while it lives.
struct DelayedGuard<'a>(&'a Shared);

impl<'a> DelayedGuard<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let n = shared.delayed.fetch_add(1, Ordering::Relaxed) + 1;
        shared.delayed_peak.fetch_max(n, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for DelayedGuard<'_> {
    fn drop(&mut self) {
        self.0.delayed.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Draws what happens to a request. Synchronous: call it when the request
    /// starts, so the order of draws follows the order of requests.
    fn decide(&self, op: Op, key: &str) -> Decision {
        if self.down.load(Ordering::Relaxed) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Decision {
                delay: Duration::ZERO,
                fault: Some(Fault::Down),
            };
        }
        if !self.enabled.load(Ordering::Relaxed) {
            return Decision::default();
        }
        let mut decision = Decision::default();
        {
            let mut state = self.state.lock();
            let State { rng, scripted } = &mut *state;
            if let Some(i) = scripted.iter().position(|(o, _)| *o == op) {
                decision.fault = scripted.remove(i).map(|(_, timing)| timing.into());
            }
            for rule in self.rules.iter().filter(|rule| rule.matches(op, key)) {
                if let Some((min, max)) = rule.latency {
                    decision.delay += uniform(rng, min, max);
                }
                if chance(rng, rule.latency_spike_rate) {
                    decision.delay += rule.spike;
                }
                if decision.fault.is_none() && chance(rng, rule.error_rate) {
                    decision.fault = Some(if op.is_write() && rng.random_bool(0.5) {
                        Fault::After
                    } else {
                        Fault::Before
                    });
                }
            }
        }
        if decision.fault.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }
}

/// An [`ObjectStore`] wrapper that injects seeded errors, latency and
/// outages. See the module docs.
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    shared: Arc<Shared>,
}

impl FaultStore {
    /// Wraps `inner`; the rules start enabled and the store up.
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared {
                rules: config.rules,
                state: Mutex::new(State {
                    rng: SmallRng::seed_from_u64(config.seed),
                    scripted: VecDeque::new(),
                }),
                enabled: AtomicBool::new(true),
                down: AtomicBool::new(false),
                injected: AtomicU64::new(0),
                delayed: AtomicU64::new(0),
                delayed_peak: AtomicU64::new(0),
            }),
        }
    }

    /// Turns the rules and scripted faults on or off (requests pass through
    /// untouched while off). Does not affect [`FaultStore::set_down`].
    pub fn set_enabled(&self, enabled: bool) {
        self.shared.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether the rules are on.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Relaxed)
    }

    /// Takes the store down (every request fails before reaching the inner
    /// store) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// Whether the store is down.
    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::Relaxed)
    }

    /// Fails the next request of `op` at `timing` (`After` on a read still
    /// performs the read). Scripted faults are used in order, before any
    /// rule, and only while enabled.
    pub fn fail_next(&self, op: Op, timing: FaultTiming) {
        self.shared.state.lock().scripted.push_back((op, timing));
    }

    /// The most requests that latency rules held at once so far (each
    /// counted from its delay to its response): how many slow requests a
    /// caller had in flight together.
    pub fn peak_delayed_in_flight(&self) -> u64 {
        self.shared.delayed_peak.load(Ordering::Relaxed)
    }

    /// Faults injected so far, outage failures included.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }

    async fn run<T>(
        &self,
        op: Op,
        key: &str,
        request: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let decision = self.shared.decide(op, key);
        let _counted = (!decision.delay.is_zero()).then(|| DelayedGuard::enter(&self.shared));
        decision.apply(op, key, request).await
    }

    fn faulty_listing(
        &self,
        key: &str,
        listing: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let decision = self.shared.decide(Op::List, key);
        let key = key.to_owned();
        stream::once(async move {
            match decision.apply(Op::List, &key, async { Ok(()) }).await {
                Ok(()) => listing,
                Err(error) => stream::once(async move { Err(error) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStore")
            .field("inner", &self.inner)
            .field("rules", &self.shared.rules)
            .field("enabled", &self.is_enabled())
            .field("down", &self.is_down())
            .field("injected", &self.injected())
            .finish()
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.run(
            Op::Put,
            location.as_ref(),
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self
            .run(
                Op::Multipart,
                location.as_ref(),
                self.inner.put_multipart_opts(location, opts),
            )
            .await?;
        Ok(Box::new(FaultUpload {
            inner: upload,
            shared: Arc::clone(&self.shared),
            key: location.to_string(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        self.run(
            op,
            location.as_ref(),
            self.inner.get_opts(location, options),
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let shared = Arc::clone(&self.shared);
        // One at a time, so the draws follow the order of the locations.
        locations
            .then(move |location| {
                let inner = Arc::clone(&inner);
                let shared = Arc::clone(&shared);
                async move {
                    let location = location?;
                    let decision = shared.decide(Op::Delete, location.as_ref());
                    decision
                        .apply(Op::Delete, location.as_ref(), inner.delete(&location))
                        .await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let key = prefix.map(AsRef::as_ref).unwrap_or_default();
        self.faulty_listing(key, self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let key = prefix.map(AsRef::as_ref).unwrap_or_default();
        self.faulty_listing(key, self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let key = prefix.map(AsRef::as_ref).unwrap_or_default();
        self.run(Op::List, key, self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.run(
            Op::Copy,
            to.as_ref(),
            self.inner.copy_opts(from, to, options),
        )
        .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.run(
            Op::Copy,
            to.as_ref(),
            self.inner.rename_opts(from, to, options),
        )
        .await
    }
}

/// A multipart upload whose parts and `complete` get faults too (`abort`
/// passes through).
struct FaultUpload {
    inner: Box<dyn MultipartUpload>,
    shared: Arc<Shared>,
    key: String,
}

impl fmt::Debug for FaultUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultUpload")
            .field("inner", &self.inner)
            .field("key", &self.key)
            .finish()
    }
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let decision = self.shared.decide(Op::Multipart, &self.key);
        let part = decision.calls_inner().then(|| self.inner.put_part(data));
        let key = self.key.clone();
        Box::pin(async move {
            let request = async move {
                match part {
                    Some(part) => part.await,
                    None => Ok(()),
                }
            };
            decision.apply(Op::Multipart, &key, request).await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let decision = self.shared.decide(Op::Multipart, &self.key);
        decision
            .apply(Op::Multipart, &self.key, self.inner.complete())
            .await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::TryStreamExt;
    use object_store::memory::InMemory;

    use super::*;

    fn store(seed: u64, rules: Vec<FaultRule>) -> (Arc<InMemory>, FaultStore) {
        let memory = Arc::new(InMemory::new());
        let store = FaultStore::new(memory.clone(), FaultConfig { seed, rules });
        (memory, store)
    }

    /// Runs a fixed sequence of requests and records what happened to each.
    async fn trace(seed: u64) -> Vec<String> {
        let (_, store) = store(seed, vec![FaultRule::errors(OpSet::ALL, 0.4)]);
        let mut outcomes = Vec::new();
        for i in 0..30 {
            let key = Path::from(format!("t/{i}"));
            let put = store.put(&key, PutPayload::from_static(b"x")).await;
            outcomes.push(
                put.map(|_| "ok".to_owned())
                    .unwrap_or_else(|e| e.to_string()),
            );
            let head = store.head(&key).await;
            outcomes.push(
                head.map(|_| "ok".to_owned())
                    .unwrap_or_else(|e| e.to_string()),
            );
        }
        outcomes
    }

    #[tokio::test]
    async fn same_seed_same_faults() {
        let a = trace(11).await;
        assert_eq!(a, trace(11).await);
        assert_ne!(a, trace(12).await);
        assert!(a.iter().any(|o| o == "ok"));
        assert!(a.iter().any(|o| o.contains("injected fault")));
    }

    #[tokio::test]
    async fn put_faults_strike_before_or_after_the_write() {
        let (memory, store) = store(3, vec![FaultRule::errors(Op::Put, 1.0)]);
        let (mut before, mut after) = (0, 0);
        for i in 0..100 {
            let key = Path::from(format!("k/{i}"));
            let err = store
                .put(&key, PutPayload::from_static(b"x"))
                .await
                .unwrap_err()
                .to_string();
            let landed = memory.head(&key).await.is_ok();
            if err.contains("after put") {
                assert!(landed, "{err}");
                after += 1;
            } else {
                assert!(err.contains("before put"), "{err}");
                assert!(!landed, "{err}");
                before += 1;
            }
        }
        assert!(before > 20 && after > 20, "before {before}, after {after}");
        assert_eq!(store.injected(), 100);
    }

    #[tokio::test]
    async fn rules_match_ops_and_key_prefixes() {
        let (_, store) = store(
            5,
            vec![FaultRule::errors(Op::Get | Op::List, 1.0).with_key_prefix("bad/")],
        );
        for key in ["bad/a", "good/a"] {
            store
                .put(&Path::from(key), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        assert!(store.get(&Path::from("bad/a")).await.is_err());
        assert!(store.head(&Path::from("bad/a")).await.is_ok());
        assert!(store.get(&Path::from("good/a")).await.is_ok());
        let bad: Result<Vec<_>> = store.list(Some(&Path::from("bad"))).try_collect().await;
        assert!(bad.is_err());
        let good: Vec<_> = store
            .list(Some(&Path::from("good")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(store.injected(), 2);
    }

    #[tokio::test]
    async fn switches_enable_and_take_down() {
        let (_, store) = store(9, vec![FaultRule::errors(OpSet::ALL, 1.0)]);
        let key = Path::from("a");
        assert!(
            store
                .put(&key, PutPayload::from_static(b"x"))
                .await
                .is_err()
        );

        store.set_enabled(false);
        store
            .put(&key, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        store.get(&key).await.unwrap();

        store.set_down(true);
        let err = store.head(&key).await.unwrap_err().to_string();
        assert!(err.contains("store is down"), "{err}");
        let deleted: Result<Vec<_>> = store
            .delete_stream(stream::iter([Ok(key.clone())]).boxed())
            .try_collect()
            .await;
        assert!(deleted.is_err());

        store.set_down(false);
        store.head(&key).await.unwrap();
        assert_eq!(store.injected(), 3);
    }

    #[tokio::test]
    async fn scripted_faults_and_multipart() {
        let (memory, store) = store(1, vec![]);
        let key = Path::from("m");
        store.fail_next(Op::Multipart, FaultTiming::Before);
        assert!(store.put_multipart(&key).await.is_err());

        let mut upload = store.put_multipart(&key).await.unwrap();
        store.fail_next(Op::Multipart, FaultTiming::Before);
        assert!(
            upload
                .put_part(PutPayload::from_static(b"lost"))
                .await
                .is_err()
        );
        upload
            .put_part(PutPayload::from_static(b"ab"))
            .await
            .unwrap();
        store.fail_next(Op::Multipart, FaultTiming::After);
        assert!(upload.complete().await.is_err());
        // The complete landed even though its response was lost.
        let body = memory.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"ab");
        assert_eq!(store.injected(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_added() {
        let (_, store) = store(
            2,
            vec![
                FaultRule::latency(
                    Op::Get,
                    Duration::from_millis(100),
                    Duration::from_millis(200),
                )
                .with_spikes(1.0, Duration::from_secs(1)),
            ],
        );
        let key = Path::from("a");
        store
            .put(&key, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        store.get(&key).await.unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1100), "{took:?}");
        assert!(took <= Duration::from_millis(1200), "{took:?}");
        assert_eq!(store.injected(), 0);
    }

    #[test]
    fn op_sets() {
        let set = Op::Put | Op::Copy;
        assert!(set.contains(Op::Put) && set.contains(Op::Copy));
        assert!(!set.contains(Op::Get));
        assert_eq!(OpSet::WRITES | OpSet::READS, OpSet::ALL);
        assert!(Op::ALL.iter().all(|op| OpSet::ALL.contains(*op)));
        assert!(!OpSet::NONE.contains(Op::List));
        assert_eq!(OpSet::of(&[Op::Head]).with(Op::Get), Op::Head | Op::Get);
    }
}
