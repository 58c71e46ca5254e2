//! Which layout of keys a bucket holds, recorded once in
//! `cluster/layout.json` (create-only) by the first broker that starts on
//! it, and checked by every broker at start.
//!
//! Layout 2 puts a topic's data under its topic id
//! (`topics/{topic}/{topic_id}/{partition}/...`) and names topic ids in
//! WAL chunks. A bucket with data but no marker was written by a release
//! before topic ids (layout 1): its manifests sit where this release never
//! looks and its WAL objects use a format it does not read, so the broker
//! refuses to start on it rather than serve empty topics beside stranded
//! data. The one thing not to break: never write a marker into a bucket
//! that already holds data of another layout.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys;

/// The layout this release writes and reads.
pub const LAYOUT: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    layout: u32,
}

/// Checks that `store` holds layout [`LAYOUT`], writing the marker into a
/// bucket that holds no Strata data yet (`store_name` names it in the
/// log). One GET on every start after the first.
pub async fn check_or_init(store: &Arc<dyn ObjectStore>, store_name: &str) -> Result<()> {
    let key = keys::layout_marker();
    loop {
        match store.get(&key).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let marker: Marker =
                    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                        key: key.to_string(),
                        source,
                    })?;
                return if marker.layout == LAYOUT {
                    Ok(())
                } else {
                    Err(Error::IncompatibleBucket(format!(
                        "the bucket holds key layout {} but this Strata release serves \
                         layout {LAYOUT}; run the release that wrote it, or point --store at \
                         another bucket or prefix",
                        marker.layout
                    )))
                };
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        for prefix in [keys::topics_prefix(), Path::from("wal")] {
            if let Some(found) = store.list(Some(&prefix)).next().await {
                let found = found?;
                return Err(Error::IncompatibleBucket(format!(
                    "the bucket holds data written by a Strata release before \
                     topic ids (key layout 1, e.g. {}), which this release cannot serve; \
                     start brokers on an empty bucket or prefix (--store), or remove \
                     topics/, wal/ and cluster/ from this one if its data is disposable",
                    found.location
                )));
            }
        }
        let doc = Bytes::from(serde_json::to_vec(&Marker { layout: LAYOUT }).map_err(
            |source| Error::Json {
                key: key.to_string(),
                source,
            },
        )?);
        match store
            .put_opts(
                &key,
                PutPayload::from(doc),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(
                    store = store_name,
                    layout = LAYOUT,
                    "new bucket: recorded its key layout"
                );
                return Ok(());
            }
            // Another broker started at the same time: read its marker.
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn a_new_bucket_gets_the_marker_and_passes_again() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        check_or_init(&store, "memory://").await.unwrap();
        assert!(store.head(&keys::layout_marker()).await.is_ok());
        check_or_init(&store, "memory://").await.unwrap();
    }

    #[tokio::test]
    async fn a_bucket_of_the_layout_before_topic_ids_is_refused() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        store
            .put(
                &Path::from("topics/orders/0/manifest/00000000000000000000.json"),
                "{}".into(),
            )
            .await
            .unwrap();
        let err = check_or_init(&store, "file:///b").await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("before topic ids"), "{msg}");
        assert!(msg.contains("empty bucket or prefix"), "{msg}");
        // Nothing was written.
        assert!(store.head(&keys::layout_marker()).await.is_err());
    }

    #[tokio::test]
    async fn another_layout_is_refused() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        store
            .put(&keys::layout_marker(), r#"{"layout":3}"#.into())
            .await
            .unwrap();
        let msg = check_or_init(&store, "s3://b")
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("layout 3"), "{msg}");
    }
}
