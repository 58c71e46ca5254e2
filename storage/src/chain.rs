//! Create-only versioned chains of JSON documents: compare-and-swap on any
//! object store that enforces `PutMode::Create` (S3 `If-None-Match: *`).
//!
//! A chain is a prefix holding `{version:020}.json` objects. Its head is the
//! highest version (one LIST and one GET). A writer that holds version *v*
//! writes *v+1* with a create-only PUT; `AlreadyExists` means someone else
//! moved the chain and surfaces as [`Error::Fenced`].
//!
//! Two subtleties, both handled here so callers need not care:
//! - **Ambiguous writes.** A PUT whose response was lost may have landed; the
//!   retry then sees `AlreadyExists`. [`Chain::create`] reads the existing
//!   object back and counts the write as its own when the bytes are
//!   identical (documents carry their writer's identity, so two writers
//!   never produce the same bytes).
//! - **Resurrected versions.** Old versions are garbage-collected, so a stale
//!   writer could re-create a deleted version and "succeed". A create of
//!   *v+1* is a win only if a LIST right after it shows nothing above *v+1*.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::keys::{ChainPrefix, Version};

/// A typed create-only chain.
#[derive(Debug)]
pub struct Chain<T> {
    store: Arc<dyn ObjectStore>,
    prefix: ChainPrefix,
    _doc: PhantomData<fn() -> T>,
}

impl<T> Clone for Chain<T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            _doc: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Chain<T> {
    /// A chain under `prefix` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: ChainPrefix) -> Self {
        Self {
            store,
            prefix,
            _doc: PhantomData,
        }
    }

    /// All versions present, ascending; with `from`, only versions `>= from`
    /// (one cheap LIST however long the chain has lived).
    pub async fn versions(&self, from: Option<Version>) -> Result<Vec<Version>> {
        let stream = match from {
            Some(v) if v.0 > 0 => self.store.list_with_offset(
                Some(self.prefix.path()),
                &self.prefix.version(Version(v.0 - 1)),
            ),
            _ => self.store.list(Some(self.prefix.path())),
        };
        let metas: Vec<_> = stream.try_collect().await?;
        let mut versions: Vec<Version> = metas
            .iter()
            .filter_map(|m| self.prefix.parse(&m.location))
            .filter(|v| from.is_none_or(|f| *v >= f))
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The head of the chain: its highest version and document, or `None`
    /// for an empty chain. `from` is a version known to exist (or to have
    /// existed), to keep the LIST short.
    pub async fn head(&self, from: Option<Version>) -> Result<Option<(Version, T)>> {
        // A concurrent garbage collection can delete the version we just
        // listed; a few attempts always converge because GC keeps the newest.
        for _ in 0..5 {
            let Some(&last) = self.versions(from).await?.last() else {
                return Ok(None);
            };
            match self.read(last).await {
                Ok(doc) => return Ok(Some((last, doc))),
                Err(Error::Store(object_store::Error::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "the head of chain {} kept disappearing while being read",
            self.prefix.path()
        )))
    }

    /// Reads one version.
    pub async fn read(&self, version: Version) -> Result<T> {
        let key = self.prefix.version(version);
        let bytes = self.store.get(&key).await?.bytes().await?;
        decode(&key, &bytes)
    }

    /// The stored form of `doc` (what [`Self::create`] writes), for
    /// encoding a large document off the async runtime and then calling
    /// [`Self::create_encoded`].
    pub fn encode(&self, doc: &T) -> Result<Bytes> {
        serde_json::to_vec_pretty(doc)
            .map(Bytes::from)
            .map_err(|source| Error::Json {
                key: self.prefix.path().to_string(),
                source,
            })
    }

    /// Creates `version` holding `doc`. Fails with [`Error::Fenced`] when the
    /// version exists with other content or a later version exists.
    /// Safe to call again with the same document after an error: a write
    /// that landed before its response was lost is recognised.
    pub async fn create(&self, version: Version, doc: &T) -> Result<()> {
        self.create_encoded(version, self.encode(doc)?).await
    }

    /// [`Self::create`] with the document already encoded by
    /// [`Self::encode`].
    pub async fn create_encoded(&self, version: Version, bytes: Bytes) -> Result<()> {
        let key = self.prefix.version(version);
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&key, PutPayload::from(bytes.clone()), opts)
            .await
        {
            Ok(_) => {}
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                let existing = self.store.get(&key).await?.bytes().await?;
                if existing != bytes {
                    return Err(Error::Fenced(format!(
                        "{key} was created by another writer"
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(&newer) = self.versions(Some(version.next())).await?.first() {
            return Err(Error::Fenced(format!(
                "{key} is stale: the chain already reached version {newer}"
            )));
        }
        Ok(())
    }

    /// Deletes all versions below `head - keep + 1`, keeping the newest `keep`.
    /// Returns how many objects were deleted.
    pub async fn gc(&self, head: Version, keep: u64) -> Result<usize> {
        let cutoff = head.0.saturating_sub(keep.saturating_sub(1));
        let old: Vec<Path> = self
            .versions(None)
            .await?
            .into_iter()
            .filter(|v| v.0 < cutoff)
            .map(|v| self.prefix.version(v))
            .collect();
        let n = old.len();
        for key in old {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }
}

fn decode<T: DeserializeOwned>(key: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::keys::{TopicId, TopicIdPartition, TopicPartition, manifest_chain};

    fn chain(store: Arc<dyn ObjectStore>) -> Chain<serde_json::Value> {
        Chain::new(
            store,
            manifest_chain(&TopicIdPartition::new(
                TopicId::random(),
                TopicPartition::new("t", 0).unwrap(),
            )),
        )
    }

    #[tokio::test]
    async fn head_create_and_fence() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let c = chain(store);
        assert!(c.head(None).await.unwrap().is_none());
        c.create(Version(0), &serde_json::json!({"w": "a"}))
            .await
            .unwrap();
        c.create(Version(1), &serde_json::json!({"w": "a"}))
            .await
            .unwrap();
        // Same content again is the same write (ambiguous retry).
        c.create(Version(1), &serde_json::json!({"w": "a"}))
            .await
            .unwrap();
        let err = c
            .create(Version(1), &serde_json::json!({"w": "b"}))
            .await
            .unwrap_err();
        assert!(err.is_fenced(), "{err}");
        let (v, doc) = c.head(None).await.unwrap().unwrap();
        assert_eq!(v, Version(1));
        assert_eq!(doc["w"], "a");
        assert_eq!(
            c.head(Some(Version(1))).await.unwrap().unwrap().0,
            Version(1)
        );
    }

    #[tokio::test]
    async fn resurrected_version_is_fenced() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let c = chain(store);
        for v in 0..5 {
            c.create(Version(v), &serde_json::json!(v)).await.unwrap();
        }
        assert_eq!(c.gc(Version(4), 2).await.unwrap(), 3);
        assert_eq!(
            c.versions(None).await.unwrap(),
            vec![Version(3), Version(4)]
        );
        // A stale writer that held version 0 re-creates the deleted version 1.
        let err = c
            .create(Version(1), &serde_json::json!("stale"))
            .await
            .unwrap_err();
        assert!(err.is_fenced(), "{err}");
    }

    #[tokio::test]
    async fn concurrent_writers_exactly_one_wins() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let c = chain(store);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.create(Version(0), &serde_json::json!(i)).await })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => wins += 1,
                Err(e) => assert!(e.is_fenced()),
            }
        }
        assert_eq!(wins, 1);
    }
}
