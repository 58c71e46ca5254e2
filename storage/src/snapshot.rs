//! Snapshots of state derived from a partition's log, kept beside it at
//! `topics/{topic}/{id}/{partition}/snapshots/{offset:020}.snap`.
//!
//! A snapshot at offset `X` holds the state that folding the log's records
//! below `X` gives (a consumer-group coordinator's groups and offsets).
//! Loading that state reads the newest snapshot and replays only the
//! records from `X` on, so it does not grow with the log's history; once a
//! snapshot is written, the log's segments below it can go
//! ([`crate::log::PartitionLog::delete_records_before`]).
//!
//! Storage does not know what a snapshot holds (bytes in, bytes out). The
//! rules that make this safe belong to the caller and are simple: the state
//! is a pure function of the log's records, so a snapshot written by any
//! incarnation (a zombie's too) at offset `X` is correct for every log that
//! shares the records below `X`; snapshots are written create-only; and the
//! log is truncated only below the newest snapshot.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use crate::keys::{self, ObjectKind, TopicIdPartition};

/// The offsets of `p`'s snapshots, oldest first (one LIST).
pub async fn list(store: &Arc<dyn ObjectStore>, p: &TopicIdPartition) -> Result<Vec<i64>> {
    let prefix = keys::snapshots_prefix(p);
    let mut offsets: Vec<i64> = store
        .list(Some(&prefix))
        .map_ok(|m| match ObjectKind::of(&m.location) {
            ObjectKind::Snapshot(_, offset) => Some(offset),
            _ => None,
        })
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// The newest snapshot of `p`: its offset and bytes (one LIST and one GET;
/// a snapshot pruned between the two is skipped for the next newest).
pub async fn latest(
    store: &Arc<dyn ObjectStore>,
    p: &TopicIdPartition,
) -> Result<Option<(i64, Bytes)>> {
    for offset in list(store, p).await?.into_iter().rev() {
        match store.get(&keys::snapshot(p, offset)).await {
            Ok(r) => return Ok(Some((offset, r.bytes().await?))),
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Writes the snapshot of `p` at `offset` (create-only: one that exists
/// already holds the same state, and is kept).
pub async fn write(
    store: &Arc<dyn ObjectStore>,
    p: &TopicIdPartition,
    offset: i64,
    bytes: Bytes,
) -> Result<()> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(&keys::snapshot(p, offset), PutPayload::from(bytes), opts)
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(Error::from(e)),
    }
}

/// Deletes the snapshots of `p` older than `keep_from` (the caller keeps
/// the newest and the one before, so a loader that listed a moment ago
/// still finds one). Returns how many went.
pub async fn prune(
    store: &Arc<dyn ObjectStore>,
    p: &TopicIdPartition,
    keep_from: i64,
) -> Result<usize> {
    let mut n = 0;
    for offset in list(store, p).await? {
        if offset >= keep_from {
            break;
        }
        match store.delete(&keys::snapshot(p, offset)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::keys::{TopicId, TopicPartition};

    #[tokio::test]
    async fn the_newest_snapshot_wins_and_prune_keeps_the_newer() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let p = TopicIdPartition::new(
            TopicId::random(),
            TopicPartition::new("__consumer_offsets", 3).unwrap(),
        );
        assert!(latest(&store, &p).await.unwrap().is_none());
        for (offset, body) in [(10, "a"), (250, "b"), (9, "c")] {
            write(&store, &p, offset, Bytes::from(body)).await.unwrap();
        }
        // Create-only: the first write of an offset stays.
        write(&store, &p, 250, Bytes::from("other")).await.unwrap();
        assert_eq!(
            latest(&store, &p).await.unwrap(),
            Some((250, Bytes::from("b")))
        );
        assert_eq!(prune(&store, &p, 10).await.unwrap(), 1);
        assert_eq!(list(&store, &p).await.unwrap(), [10, 250]);
    }
}
