//! Users: SCRAM credentials in the bucket, one object per user at
//! `security/users/{name}.json` ([`keys::user`]), holding a salted
//! credential per mechanism and never the password.
//!
//! Brokers read a user's object when someone logs in as that user (one
//! GET per SASL login), so a new user or password works at once on every
//! broker. Password checks that need PBKDF2 (PLAIN, gRPC basic auth) run
//! off the async runtime and are remembered for `ttl` (a deleted user or a
//! changed password stops working within it), at most
//! [`MAX_VERIFIED`] at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use strata_storage::Error as StorageError;
use strata_storage::keys;

use super::scram::{Credential, DEFAULT_ITERATIONS, Mechanism};
use crate::error::{BrokerError, Result};

/// Most remembered successful password checks.
pub const MAX_VERIFIED: usize = 4096;
/// Longest user name.
pub const MAX_NAME_LEN: usize = 128;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user name (the principal is `User:{name}`).
    pub name: String,
    /// When the credentials were set (ms since the epoch).
    pub updated_ms: i64,
    /// SCRAM-SHA-256 credential.
    pub scram_sha_256: Credential,
    /// SCRAM-SHA-512 credential.
    pub scram_sha_512: Credential,
}

impl UserRecord {
    /// A record for `name` with `password`, salted afresh for both
    /// mechanisms (costs two PBKDF2 runs).
    pub fn new(name: &str, password: &str, now_ms: i64) -> Result<UserRecord> {
        check_name(name)?;
        if password.is_empty() {
            return Err(BrokerError::InvalidRequest(
                "the password is empty; put it in the password file".into(),
            ));
        }
        Ok(UserRecord {
            name: name.to_owned(),
            updated_ms: now_ms,
            scram_sha_256: Credential::new(Mechanism::Sha256, password, DEFAULT_ITERATIONS),
            scram_sha_512: Credential::new(Mechanism::Sha512, password, DEFAULT_ITERATIONS),
        })
    }

    /// The credential for `mechanism`.
    pub fn credential(&self, mechanism: Mechanism) -> &Credential {
        match mechanism {
            Mechanism::Sha256 => &self.scram_sha_256,
            Mechanism::Sha512 => &self.scram_sha_512,
        }
    }
}

/// Refuses names that are not safe as object keys and principals.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidRequest(format!(
            "invalid user name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits and . _ - @"
        )))
    }
}

/// The users of a bucket.
#[derive(Debug)]
pub struct UserStore {
    store: Arc<dyn ObjectStore>,
    ttl: Duration,
    /// `(user, SHA-256 of the password)` → when it was last verified.
    verified: Mutex<HashMap<(String, Vec<u8>), Instant>>,
}

fn store_error(what: String, e: object_store::Error) -> BrokerError {
    BrokerError::storage(what, StorageError::Store(e))
}

impl UserStore {
    /// The users in `store`; successful password checks are remembered
    /// for `ttl`.
    pub fn new(store: Arc<dyn ObjectStore>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The user `name`, or `None`.
    pub async fn get(&self, name: &str) -> Result<Option<UserRecord>> {
        if check_name(name).is_err() {
            return Ok(None);
        }
        let key = keys::user(name);
        let bytes = match self.store.get(&key).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| store_error(format!("reading user {name}"), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(format!("reading user {name}"), e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            BrokerError::InvalidRequest(format!(
                "the stored user {key} is not valid ({e}); set its password again with `strata user add {name} --update`"
            ))
        })
    }

    /// Stores `record`; an existing user is replaced only with `replace`.
    pub async fn put(&self, record: &UserRecord, replace: bool) -> Result<()> {
        let key = keys::user(&record.name);
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| BrokerError::InvalidRequest(format!("cannot encode the user: {e}")))?;
        let mode = if replace {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(bytes), PutOptions::from(mode))
            .await
        {
            Ok(_) => {
                self.forget(&record.name);
                Ok(())
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(BrokerError::InvalidRequest(format!(
                "user {} exists; pass --update to change its password",
                record.name
            ))),
            Err(e) => Err(store_error(format!("writing user {}", record.name), e)),
        }
    }

    /// Deletes user `name`; false when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        if self.get(name).await?.is_none() {
            return Ok(false);
        }
        match self.store.delete(&keys::user(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.forget(name);
                Ok(true)
            }
            Err(e) => Err(store_error(format!("deleting user {name}"), e)),
        }
    }

    /// The user names, sorted.
    pub async fn list(&self) -> Result<Vec<String>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&keys::users_prefix()))
            .try_collect()
            .await
            .map_err(|e| store_error("listing users".into(), e))?;
        let mut names: Vec<String> = metas
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .strip_suffix(".json")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// True when `password` is user `name`'s. Costs a GET and a PBKDF2
    /// (off the runtime) unless verified within the TTL.
    pub async fn verify_password(&self, name: &str, password: &str) -> Result<bool> {
        let cache_key = (
            name.to_owned(),
            digest::digest(&digest::SHA256, password.as_bytes())
                .as_ref()
                .to_vec(),
        );
        if let Some(at) = self.verified.lock().get(&cache_key)
            && at.elapsed() < self.ttl
        {
            return Ok(true);
        }
        let Some(user) = self.get(name).await? else {
            return Ok(false);
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            user.scram_sha_256
                .verify_password(Mechanism::Sha256, &password)
        })
        .await
        .unwrap_or(false);
        if ok {
            let mut verified = self.verified.lock();
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(cache_key, Instant::now());
        }
        Ok(ok)
    }

    /// Drops remembered checks of `name` (its password changed or it went).
    fn forget(&self, name: &str) {
        self.verified.lock().retain(|(n, _), _| n != name);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn add_verify_replace_delete() {
        let users = UserStore::new(Arc::new(InMemory::new()), Duration::from_secs(60));
        let alice = UserRecord::new("alice", "pw1", 1).unwrap();
        users.put(&alice, false).await.unwrap();
        let again = users.put(&alice, false).await.unwrap_err();
        assert!(again.to_string().contains("--update"), "{again}");
        assert!(users.verify_password("alice", "pw1").await.unwrap());
        assert!(!users.verify_password("alice", "pw2").await.unwrap());
        assert!(!users.verify_password("bob", "pw1").await.unwrap());
        users
            .put(&UserRecord::new("alice", "pw2", 2).unwrap(), true)
            .await
            .unwrap();
        assert!(users.verify_password("alice", "pw2").await.unwrap());
        assert!(
            !users.verify_password("alice", "pw1").await.unwrap(),
            "the old password is forgotten"
        );
        users
            .put(&UserRecord::new("bob", "x", 3).unwrap(), false)
            .await
            .unwrap();
        assert_eq!(users.list().await.unwrap(), vec!["alice", "bob"]);
        assert!(users.delete("alice").await.unwrap());
        assert!(!users.delete("alice").await.unwrap());
        assert!(!users.verify_password("alice", "pw2").await.unwrap());
        assert_eq!(users.get("../etc").await.unwrap(), None);
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(UserRecord::new("a b", "pw", 0).is_err());
        assert!(UserRecord::new("", "pw", 0).is_err());
        assert!(UserRecord::new("a/b", "pw", 0).is_err());
        assert!(UserRecord::new("svc-1.prod@corp", "pw", 0).is_ok());
        assert!(UserRecord::new("alice", "", 0).is_err());
    }
}
