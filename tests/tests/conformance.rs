//! Object-store conformance: what the engine relies on, checked on every
//! store it is tested with (`InMemory`, `LocalFileSystem` and S3 through
//! `moto_server` or `STRATA_TEST_S3_ENDPOINT`).
//!
//! Add a check as an `async fn(&'static str, Arc<dyn ObjectStore>)` that
//! panics on failure, and a `#[tokio::test]` that hands it to
//! [`on_each_store`]. Every check gets fresh, empty stores and should still
//! write under its own [`root`] so that it can be moved onto a shared bucket.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use strata_storage::selftest::check_conditional_writes;
use strata_tests::s3::all_stores;

/// Runs `check` on every store, each in its own task, and fails naming every
/// store it failed on (a failure on one store does not hide another's).
async fn on_each_store<F, Fut>(check: F)
where
    F: Fn(&'static str, Arc<dyn ObjectStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stores = all_stores().await;
    let mut failures = Vec::new();
    let mut ran = Vec::new();
    for (name, store, _dir) in stores {
        ran.push(name);
        // `_dir` (a filesystem store's directory) lives until the check ends.
        match tokio::spawn(check(name, store)).await {
            Ok(()) => {}
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(non-string panic)".to_owned());
                failures.push(format!("{name}: {message}"));
            }
            Err(e) => failures.push(format!("{name}: task failed: {e}")),
        }
    }
    assert_eq!(
        ran,
        ["memory", "local", "s3"],
        "every store must be checked"
    );
    assert!(
        failures.is_empty(),
        "conformance failed on {} store(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A fresh folder for one check.
fn root(check: &str) -> Path {
    Path::from(format!(
        "conformance/{check}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

// ---------------------------------------------------------------------------
// Create-only writes (DESIGN §1 principle 2): fencing stands on these.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_only_writes_are_enforced() {
    on_each_store(|name, store| async move {
        // Several rounds: one lucky race proves little.
        for _ in 0..5 {
            check_conditional_writes(&store, &root("selftest"), name)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let leftovers: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert!(
            leftovers.is_empty(),
            "the self-test left objects behind: {leftovers:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Plain reads and writes.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_get_head_delete() {
    on_each_store(|name, store| async move {
        let root = root("basic");
        let key = root.clone().join("object.bin");
        let body: Bytes = (0..=255u8).cycle().take(10_000).collect::<Vec<_>>().into();

        store
            .put(&key, PutPayload::from_bytes(body.clone()))
            .await
            .unwrap();
        let got = store.get(&key).await.unwrap();
        assert_eq!(got.meta.size, 10_000, "{name}: size in GET metadata");
        assert_eq!(
            got.bytes().await.unwrap(),
            body,
            "{name}: GET returns what PUT wrote"
        );
        assert_eq!(
            store.head(&key).await.unwrap().size,
            10_000,
            "{name}: HEAD size"
        );

        let missing = root.clone().join("missing.bin");
        assert!(
            matches!(
                store.get(&missing).await,
                Err(object_store::Error::NotFound { .. })
            ),
            "{name}: GET of a missing key must be NotFound"
        );
        assert!(
            matches!(
                store.head(&missing).await,
                Err(object_store::Error::NotFound { .. })
            ),
            "{name}: HEAD of a missing key must be NotFound"
        );

        store.delete(&key).await.unwrap();
        assert!(
            matches!(
                store.get(&key).await,
                Err(object_store::Error::NotFound { .. })
            ),
            "{name}: GET after DELETE must be NotFound"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranged_reads() {
    on_each_store(|name, store| async move {
        let key = root("ranges").join("segment.seg");
        let body: Bytes = (0..1000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        store
            .put(&key, PutPayload::from_bytes(body.clone()))
            .await
            .unwrap();

        let ranged = |range: GetRange| {
            let store = Arc::clone(&store);
            let key = key.clone();
            async move {
                let result = store
                    .get_opts(&key, GetOptions::new().with_range(Some(range.clone())))
                    .await
                    .unwrap_or_else(|e| panic!("{name}: GET {range:?}: {e}"));
                let reported = result.range.clone();
                let bytes = result.bytes().await.unwrap();
                (reported, bytes)
            }
        };

        // Bounded: a segment's index entry points at a byte range.
        let (reported, bytes) = ranged(GetRange::Bounded(100..250)).await;
        assert_eq!(bytes, body.slice(100..250), "{name}: Bounded(100..250)");
        assert_eq!(
            reported,
            100..250,
            "{name}: Bounded(100..250) reported range"
        );
        assert_eq!(
            store.get_range(&key, 0..1).await.unwrap(),
            body.slice(0..1),
            "{name}: get_range(0..1)"
        );
        // A bounded range past the end returns the remainder.
        let (reported, bytes) = ranged(GetRange::Bounded(900..2000)).await;
        assert_eq!(bytes, body.slice(900..), "{name}: Bounded(900..2000)");
        assert_eq!(
            reported,
            900..1000,
            "{name}: Bounded(900..2000) reported range"
        );

        // Suffix: a segment's footer is read without knowing its size.
        let (reported, bytes) = ranged(GetRange::Suffix(64)).await;
        assert_eq!(bytes, body.slice(936..), "{name}: Suffix(64)");
        assert_eq!(reported, 936..1000, "{name}: Suffix(64) reported range");
        // A suffix longer than the object returns the whole object.
        let (reported, bytes) = ranged(GetRange::Suffix(5000)).await;
        assert_eq!(bytes, body, "{name}: Suffix(5000)");
        assert_eq!(reported, 0..1000, "{name}: Suffix(5000) reported range");

        // Offset: the rest of an object from a position.
        let (reported, bytes) = ranged(GetRange::Offset(990)).await;
        assert_eq!(bytes, body.slice(990..), "{name}: Offset(990)");
        assert_eq!(reported, 990..1000, "{name}: Offset(990) reported range");

        // Several ranges at once (coalesced or not, the bytes must be right).
        let parts = store
            .get_ranges(&key, &[0..10, 10..20, 500..600])
            .await
            .unwrap();
        assert_eq!(
            parts,
            vec![body.slice(0..10), body.slice(10..20), body.slice(500..600)],
            "{name}: get_ranges"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Listing chains (DESIGN §3): the head of a chain is the highest zero-padded
// key, found by a LIST from the last known version.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_chains_with_offset() {
    on_each_store(|name, store| async move {
        let root = root("list");
        let chain = root.clone().join("manifest");
        // A sibling whose name extends the chain's: must never leak into it.
        let sibling = root.clone().join("manifest-b");
        let versions = [0u64, 1, 2, 9, 10, 11, 99, 100, 12345];
        let key = |prefix: &Path, version: u64| prefix.clone().join(format!("{version:020}.json"));
        for version in versions {
            store
                .put(
                    &key(&chain, version),
                    format!("{{\"version\":{version}}}").into(),
                )
                .await
                .unwrap();
        }
        store.put(&key(&sibling, 5), "{}".into()).await.unwrap();
        store.put(&key(&sibling, 50), "{}".into()).await.unwrap();

        let sorted = |mut metas: Vec<object_store::ObjectMeta>| {
            let mut keys: Vec<Path> = metas.drain(..).map(|m| m.location).collect();
            keys.sort();
            keys
        };

        // Full listing of the chain: exactly its keys, and string order is
        // version order thanks to the padding.
        let all = sorted(store.list(Some(&chain)).try_collect().await.unwrap());
        let expected: Vec<Path> = versions.iter().map(|v| key(&chain, *v)).collect();
        assert_eq!(all, expected, "{name}: list(chain)");

        // From a known version: strictly greater keys only.
        let after_9 = sorted(
            store
                .list_with_offset(Some(&chain), &key(&chain, 9))
                .try_collect()
                .await
                .unwrap(),
        );
        let expected: Vec<Path> = [10u64, 11, 99, 100, 12345]
            .iter()
            .map(|v| key(&chain, *v))
            .collect();
        assert_eq!(after_9, expected, "{name}: list_with_offset(chain, 9)");

        // From a version that was garbage-collected (not present): still
        // strictly greater keys.
        let after_50 = sorted(
            store
                .list_with_offset(Some(&chain), &key(&chain, 50))
                .try_collect()
                .await
                .unwrap(),
        );
        let expected: Vec<Path> = [99u64, 100, 12345]
            .iter()
            .map(|v| key(&chain, *v))
            .collect();
        assert_eq!(after_50, expected, "{name}: list_with_offset(chain, 50)");

        // From the head: nothing.
        let after_head: Vec<_> = store
            .list_with_offset(Some(&chain), &key(&chain, 12345))
            .try_collect()
            .await
            .unwrap();
        assert!(
            after_head.is_empty(),
            "{name}: list_with_offset(chain, head): {after_head:?}"
        );

        // One level: the two chains are common prefixes, no objects.
        let level = store.list_with_delimiter(Some(&root)).await.unwrap();
        let mut prefixes = level.common_prefixes.clone();
        prefixes.sort();
        assert_eq!(
            prefixes,
            vec![chain.clone(), sibling.clone()],
            "{name}: list_with_delimiter prefixes"
        );
        assert!(
            level.objects.is_empty(),
            "{name}: list_with_delimiter objects: {:?}",
            level.objects
        );
    })
    .await;
}

// The storage engine's scenarios, each ending with the invariant check, on
// every store: memory, local filesystem and the S3-compatible server.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_append_seal_crash_recover() {
    on_each_store(|_, store| strata_tests::scenarios::append_seal_crash_recover(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_zombie_is_fenced() {
    on_each_store(|_, store| strata_tests::scenarios::zombie_is_fenced(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_idempotent_producer() {
    on_each_store(|_, store| strata_tests::scenarios::idempotent_producer_survives_recovery(store))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_adopts_a_lost_claim_of_its_own_incarnation() {
    on_each_store(|_, store| {
        strata_tests::scenarios::lost_claim_of_this_incarnation_is_adopted(store)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_abandoned_log_writes_nothing() {
    on_each_store(|_, store| strata_tests::scenarios::abandoned_log_writes_nothing(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_graceful_release() {
    on_each_store(|_, store| strata_tests::scenarios::graceful_release_and_reopen(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_idle_partitions_do_not_pin_the_wal() {
    on_each_store(|_, store| strata_tests::scenarios::idle_partitions_do_not_pin_the_wal(store))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_sweeps_during_takeovers_lose_nothing() {
    on_each_store(|_, store| strata_tests::scenarios::sweeps_during_takeovers_lose_nothing(store))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_long_partitions_archive_old_segments() {
    on_each_store(|_, store| strata_tests::scenarios::long_partitions_archive_old_segments(store))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_recreated_topic_is_apart_from_a_zombie() {
    on_each_store(|_, store| {
        strata_tests::scenarios::recreated_topic_is_apart_from_a_zombie(store)
    })
    .await;
}
