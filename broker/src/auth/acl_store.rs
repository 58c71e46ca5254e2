//! The ACL set in the bucket and its cache on every broker.
//!
//! The whole set is one document per version of a create-only chain at
//! `security/acls/{version:020}.json` ([`keys::acl_chain`]): a change reads
//! the head, applies itself and writes the next version; a concurrent
//! change by another broker fences the write, which is then re-applied on
//! the new head. Decisions use the cached set ([`AclStore::current`], no
//! I/O); [`AclStore::refresh`] follows the chain (one LIST from the known
//! version), run every heartbeat interval while authentication is on, so a
//! change is seen everywhere within one interval. Old versions are deleted
//! after each change, keeping [`KEEP_VERSIONS`].

use std::sync::Arc;

use object_store::ObjectStore;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use strata_storage::chain::Chain;
use strata_storage::keys::{self, Version};

use super::acl::AclSet;
use crate::error::{BrokerError, Result};

/// Versions of the chain kept after a change.
pub const KEEP_VERSIONS: u64 = 10;
/// Attempts of a change against concurrent writers.
const MAX_ATTEMPTS: usize = 20;

/// One version of the chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AclDoc {
    /// Who wrote it (`broker 3`, `strata acl`): makes every write's bytes
    /// unique, so an ambiguous write can be recognised as one's own.
    writer: String,
    /// When (ms since the epoch).
    updated_ms: i64,
    /// The ACLs.
    #[serde(flatten)]
    set: AclSet,
}

/// The ACLs of a bucket, cached.
#[derive(Debug)]
pub struct AclStore {
    chain: Chain<AclDoc>,
    writer: String,
    cached: RwLock<(Option<Version>, Arc<AclSet>)>,
}

impl AclStore {
    /// The ACL chain of `store`; `writer` names this process in the
    /// versions it writes.
    pub fn new(store: Arc<dyn ObjectStore>, writer: String) -> Self {
        Self {
            chain: Chain::new(store, keys::acl_chain()),
            writer,
            cached: RwLock::new((None, Arc::new(AclSet::default()))),
        }
    }

    /// The set as last read.
    pub fn current(&self) -> Arc<AclSet> {
        self.cached.read().1.clone()
    }

    /// The version last read (`None`: no ACL was ever written, or not read yet).
    pub fn version(&self) -> Option<Version> {
        self.cached.read().0
    }

    /// Reads the head of the chain if it moved; returns the current set.
    pub async fn refresh(&self) -> Result<Arc<AclSet>> {
        let known = self.version();
        let head = self
            .chain
            .head(known)
            .await
            .map_err(|e| BrokerError::storage("reading the ACLs", e))?;
        Ok(match head {
            Some((v, doc)) if Some(v) != known => self.install(v, doc.set),
            _ => self.current(),
        })
    }

    fn install(&self, version: Version, set: AclSet) -> Arc<AclSet> {
        let mut cached = self.cached.write();
        if cached.0.is_none_or(|v| v < version) {
            *cached = (Some(version), Arc::new(set));
        }
        cached.1.clone()
    }

    /// Applies `change` to the newest set and stores the result (nothing is
    /// written when `change` leaves the set as it was). Returns what
    /// `change` returned.
    pub async fn change<R>(&self, now_ms: i64, change: impl Fn(&mut AclSet) -> R) -> Result<R> {
        for _ in 0..MAX_ATTEMPTS {
            self.refresh().await?;
            let (version, current) = self.cached.read().clone();
            let mut set = (*current).clone();
            let out = change(&mut set);
            if set == *current {
                return Ok(out);
            }
            let next = version.map_or(Version(1), Version::next);
            let doc = AclDoc {
                writer: format!("{} ({})", self.writer, uuid::Uuid::new_v4().simple()),
                updated_ms: now_ms,
                set,
            };
            match self.chain.create(next, &doc).await {
                Ok(()) => {
                    self.install(next, doc.set);
                    if let Err(e) = self.chain.gc(next, KEEP_VERSIONS).await {
                        tracing::debug!(error = %e, "could not delete old ACL versions; the next change tries again");
                    }
                    return Ok(out);
                }
                Err(e) if e.is_fenced() => continue,
                Err(e) => return Err(BrokerError::storage("writing the ACLs", e)),
            }
        }
        Err(BrokerError::Busy(
            "the ACLs kept changing under this change; try again".into(),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::auth::acl::{
        AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType,
    };

    fn binding(principal: &str) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "t".into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    #[tokio::test]
    async fn two_brokers_see_each_others_changes() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = AclStore::new(store.clone(), "broker 0".into());
        let b = AclStore::new(store.clone(), "broker 1".into());
        assert!(b.refresh().await.unwrap().bindings.is_empty());
        assert_eq!(
            a.change(1, |s| s.add([binding("User:x")])).await.unwrap(),
            1
        );
        // b has not refreshed: it changes on top of a's version anyway.
        assert_eq!(
            b.change(2, |s| s.add([binding("User:y")])).await.unwrap(),
            1
        );
        assert_eq!(a.refresh().await.unwrap().bindings.len(), 2);
        let gone = a
            .change(3, |s| {
                s.remove(&AclFilter {
                    principal: Some("User:x".into()),
                    ..AclFilter::default()
                })
            })
            .await
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(b.refresh().await.unwrap().bindings, vec![binding("User:y")]);
        // A change that changes nothing writes nothing.
        let v = b.version();
        assert_eq!(
            b.change(4, |s| s.add([binding("User:y")])).await.unwrap(),
            0
        );
        assert_eq!(b.version(), v);
    }

    #[tokio::test]
    async fn old_versions_are_deleted() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = AclStore::new(store.clone(), "broker 0".into());
        for i in 0..(KEEP_VERSIONS + 5) {
            a.change(1, |s| s.add([binding(&format!("User:u{i}"))]))
                .await
                .unwrap();
        }
        let chain: Chain<AclDoc> = Chain::new(store.clone(), keys::acl_chain());
        assert_eq!(
            chain.versions(None).await.unwrap().len() as u64,
            KEEP_VERSIONS
        );
        let fresh = AclStore::new(store, "broker 1".into());
        assert_eq!(
            fresh.refresh().await.unwrap().bindings.len() as u64,
            KEEP_VERSIONS + 5
        );
    }
}
