//! Proof that an object store enforces create-only writes.
//!
//! Every chain in the bucket (manifests, topic configs, controller terms,
//! assignments) and every WAL object is written with `PutMode::Create`
//! (S3 `If-None-Match: *`); fencing is nothing but "the second create of a key
//! fails". A store that silently turns a create into an overwrite (garage,
//! s3rver and some older S3 look-alikes ignore `If-None-Match`) would let two
//! brokers both believe they own a partition and lose acknowledged records,
//! with no error anywhere. [`check_conditional_writes`] runs before a broker
//! trusts a store and refuses it unless the store demonstrably:
//!
//! 1. accepts a create of a fresh key;
//! 2. rejects a second create of the same key with
//!    [`object_store::Error::AlreadyExists`] and keeps the first content;
//! 3. lets exactly one of [`RACE_WRITERS`] concurrent creates of one fresh key
//!    win, rejects all the others with `AlreadyExists`, and stores the
//!    winner's bytes.
//!
//! The check writes only under a fresh `selftest-{uuid}` folder of the scratch
//! prefix and deletes what it wrote (best-effort) whatever the outcome.
//!
//! What a newcomer must not break: a failed proof is
//! [`Error::UnsafeStore`](crate::Error::UnsafeStore), never a warning. Only
//! errors that say nothing about the store's semantics (timeouts, 5xx, a
//! missing bucket) are [`Error::Store`](crate::Error::Store).

use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use crate::error::Error;

/// How many writers race to create the same key.
pub const RACE_WRITERS: usize = 8;

/// What to tell an operator whose store failed the proof.
const ADVICE: &str = "garage and s3rver ignore If-None-Match; use AWS S3, MinIO, Cloudflare R2, \
                      GCS, Azure Blob Storage, a local filesystem or another store that enforces it";

/// Proves that `store` enforces create-only writes (`PutMode::Create`).
///
/// Writes a few small objects under a fresh folder of `scratch_prefix` and
/// deletes them afterwards. `store_name` names the store in error messages
/// (for example `s3://my-bucket/strata`).
///
/// Returns [`Error::UnsafeStore`] when the store overwrote an object that a
/// create-only write should have left alone, let more than one concurrent
/// create win, or does not support create-only writes at all; returns
/// [`Error::Store`] when the store failed in a way that proves nothing either
/// way (retry later).
pub async fn check_conditional_writes(
    store: &Arc<dyn ObjectStore>,
    scratch_prefix: &Path,
    store_name: &str,
) -> Result<(), Error> {
    let dir = scratch_prefix
        .clone()
        .join(format!("selftest-{}", uuid::Uuid::new_v4()));
    let single = dir.clone().join("single");
    let race = dir.join("race");

    let result = async {
        check_second_create_fails(store, &single, store_name).await?;
        check_create_race(store, &race, store_name).await
    }
    .await;

    for key in [&single, &race] {
        match store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(store = store_name, %key, error = %e, "could not delete a self-test object")
            }
        }
    }
    result
}

/// Steps 1 and 2: a create of a fresh key wins, a second create of it fails
/// with `AlreadyExists` and changes nothing.
async fn check_second_create_fails(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    store_name: &str,
) -> Result<(), Error> {
    let first = Bytes::from(format!("strata self-test: first create of {key}"));
    let second = Bytes::from(format!(
        "strata self-test: second create of {key}, must be rejected"
    ));

    match create(store, key, first.clone()).await {
        Ok(()) => {}
        Err(e) => {
            return Err(classify_unexpected(
                e,
                store_name,
                &format!("the first PutMode::Create of fresh key {key}"),
            ));
        }
    }
    expect_content(store, key, &first, store_name, "after its first create").await?;

    match create(store, key, second).await {
        Ok(()) => {
            return Err(unsafe_store(
                store_name,
                &format!("a second PutMode::Create of {key} succeeded"),
            ));
        }
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => {
            return Err(classify_unexpected(
                e,
                store_name,
                &format!("the second PutMode::Create of {key}"),
            ));
        }
    }
    expect_content(
        store,
        key,
        &first,
        store_name,
        "after a rejected second create",
    )
    .await
}

/// Step 3: [`RACE_WRITERS`] concurrent creates of one fresh key; exactly one
/// wins and its bytes are what the store keeps.
async fn check_create_race(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    store_name: &str,
) -> Result<(), Error> {
    let payloads: Vec<Bytes> = (0..RACE_WRITERS)
        .map(|writer| {
            // Distinct sizes as well as distinct bytes, so that a torn or mixed
            // write cannot look like any single writer's payload.
            let line = format!(
                "strata self-test: writer {writer} of {RACE_WRITERS} racing to create {key}\n"
            );
            Bytes::from(line.repeat(16 + writer))
        })
        .collect();

    let tasks = payloads.iter().cloned().map(|payload| {
        let store = Arc::clone(store);
        let key = key.clone();
        tokio::spawn(async move { create(&store, &key, payload).await })
    });
    let outcomes = join_all(tasks).await;

    let mut winners = Vec::new();
    let mut transient = None;
    for (writer, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(Ok(())) => winners.push(writer),
            Ok(Err(object_store::Error::AlreadyExists { .. })) => {}
            Ok(Err(e)) => {
                let e = classify_unexpected(
                    e,
                    store_name,
                    &format!("a concurrent PutMode::Create of {key}"),
                );
                if matches!(e, Error::UnsafeStore(_)) {
                    return Err(e);
                }
                transient.get_or_insert(e);
            }
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => {
                transient.get_or_insert(Error::Store(object_store::Error::JoinError {
                    source: join,
                }));
            }
        }
    }

    if winners.len() > 1 {
        return Err(unsafe_store(
            store_name,
            &format!(
                "{} of {RACE_WRITERS} concurrent PutMode::Create requests for {key} succeeded (writers {winners:?})",
                winners.len()
            ),
        ));
    }
    if let Some(e) = transient {
        // Some writers never got an answer: the race proves nothing.
        return Err(e);
    }
    let Some(&winner) = winners.first() else {
        return Err(unsafe_store(
            store_name,
            &format!(
                "none of {RACE_WRITERS} concurrent PutMode::Create requests for fresh key {key} succeeded"
            ),
        ));
    };
    expect_content(
        store,
        key,
        &payloads[winner],
        store_name,
        &format!("after a race won by writer {winner}"),
    )
    .await
}

async fn create(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    payload: Bytes,
) -> object_store::Result<()> {
    store
        .put_opts(key, PutPayload::from_bytes(payload), PutMode::Create.into())
        .await
        .map(|_| ())
}

/// Fails unless `key` holds exactly `expected`.
async fn expect_content(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    expected: &Bytes,
    store_name: &str,
    when: &str,
) -> Result<(), Error> {
    let actual = store.get(key).await?.bytes().await?;
    if actual == *expected {
        return Ok(());
    }
    Err(unsafe_store(
        store_name,
        &format!(
            "{key} holds {} bytes {when}, not the {} bytes its winning PutMode::Create wrote",
            actual.len(),
            expected.len()
        ),
    ))
}

/// Sorts an error other than `AlreadyExists` from a create: errors that say
/// the store cannot do create-only writes (or does them wrong) make it unsafe;
/// anything else is a store failure that proves nothing.
fn classify_unexpected(e: object_store::Error, store_name: &str, what: &str) -> Error {
    match e {
        object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. } => {
            unsafe_store(store_name, &format!("{what} is not supported ({e})"))
        }
        object_store::Error::AlreadyExists { .. }
        | object_store::Error::Precondition { .. }
        | object_store::Error::NotModified { .. } => {
            unsafe_store(store_name, &format!("{what} failed unexpectedly ({e})"))
        }
        other => Error::Store(other),
    }
}

fn unsafe_store(store_name: &str, why: &str) -> Error {
    Error::UnsafeStore(format!(
        "store {store_name} does not enforce create-only writes: {why}; {ADVICE}"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fmt;

    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutOptions, PutResult,
    };

    use super::*;

    fn scratch() -> Path {
        Path::from("scratch/selftest")
    }

    async fn leftovers(store: &Arc<dyn ObjectStore>) -> Vec<ObjectMeta> {
        use futures::TryStreamExt;
        store.list(Some(&scratch())).try_collect().await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn in_memory_store_passes() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        check_conditional_writes(&store, &scratch(), "memory")
            .await
            .unwrap();
        assert!(
            leftovers(&store).await.is_empty(),
            "the self-test must clean up"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn local_file_system_passes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        check_conditional_writes(&store, &scratch(), "file:///tmp")
            .await
            .unwrap();
        assert!(
            leftovers(&store).await.is_empty(),
            "the self-test must clean up"
        );
    }

    /// How a [`FlawedStore`] gets `PutMode::Create` wrong.
    #[derive(Debug, Clone, Copy)]
    enum Flaw {
        /// Turns every create into an overwrite, like garage or s3rver
        /// ignoring `If-None-Match: *`.
        IgnoresCreate,
        /// Checks for the key, then writes it in a second step: right one
        /// request at a time, wrong under a race.
        CheckThenWrite,
    }

    #[derive(Debug)]
    struct FlawedStore {
        inner: InMemory,
        flaw: Flaw,
    }

    impl FlawedStore {
        fn shared(flaw: Flaw) -> Arc<dyn ObjectStore> {
            Arc::new(Self {
                inner: InMemory::new(),
                flaw,
            })
        }
    }

    impl fmt::Display for FlawedStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "FlawedStore({:?})", self.flaw)
        }
    }

    #[async_trait]
    impl ObjectStore for FlawedStore {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            mut opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            if opts.mode == PutMode::Create {
                if let Flaw::CheckThenWrite = self.flaw {
                    match self.inner.head(location).await {
                        Ok(_) => {
                            return Err(object_store::Error::AlreadyExists {
                                path: location.to_string(),
                                source: "exists".into(),
                            });
                        }
                        Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                opts.mode = PutMode::Overwrite;
            }
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn store_that_ignores_create_is_unsafe() {
        let store = FlawedStore::shared(Flaw::IgnoresCreate);
        let err = check_conditional_writes(&store, &scratch(), "s3://garage-bucket")
            .await
            .unwrap_err();
        let Error::UnsafeStore(message) = &err else {
            panic!("expected UnsafeStore, got {err:?}");
        };
        assert!(
            message.starts_with("store s3://garage-bucket does not enforce create-only writes: a second PutMode::Create of scratch/selftest/selftest-"),
            "{message}"
        );
        assert!(message.contains("succeeded"), "{message}");
        assert!(message.contains("If-None-Match"), "{message}");
        assert!(
            leftovers(&store).await.is_empty(),
            "the self-test must clean up after a failure too"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn store_that_loses_races_is_unsafe() {
        let store = FlawedStore::shared(Flaw::CheckThenWrite);
        let err = check_conditional_writes(&store, &scratch(), "s3://racy-bucket")
            .await
            .unwrap_err();
        let Error::UnsafeStore(message) = &err else {
            panic!("expected UnsafeStore, got {err:?}");
        };
        assert!(
            message.starts_with("store s3://racy-bucket does not enforce create-only writes: "),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "of {RACE_WRITERS} concurrent PutMode::Create requests for"
            )),
            "{message}"
        );
        assert!(
            leftovers(&store).await.is_empty(),
            "the self-test must clean up after a failure too"
        );
    }

    /// A store that rejects a create of a fresh key as if the key existed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fresh_key_reported_as_existing_is_unsafe() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = scratch().join("single");
        store.put(&key, "x".into()).await.unwrap();
        let err = check_second_create_fails(&store, &key, "memory")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnsafeStore(_)), "{err:?}");
    }
}
