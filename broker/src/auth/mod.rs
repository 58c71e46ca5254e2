//! Authentication and authorization, shared by both front ends.
//!
//! - [`scram`]: SCRAM-SHA-256/512 and PLAIN on the server side.
//! - [`users`]: users and their salted credentials in the bucket.
//! - [`acl`]: Kafka-style ACLs and the allow/deny decision.
//! - [`acl_store`]: the ACL set in the bucket, cached on every broker.
//!
//! A front end authenticates a connection or a call into a [`Caller`] (a
//! [`Principal`] and the client's host), then asks [`Auth::check`] before
//! touching a resource. With `auth.enabled = false` (the default, for
//! loopback use) every caller may do everything. With it on, super users
//! (`auth.super_users`) and brokers calling each other
//! ([`Principal::Cluster`], authenticated by the cluster secret in the
//! bucket) may do everything, and anyone else only what an ACL allows.
//!
//! The one thing not to break: with authentication on, what no ACL allows
//! is denied, and a denied request changes nothing.

pub mod acl;
pub mod acl_store;
pub mod grpc;
pub mod scram;
pub mod users;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lc_rs::constant_time;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use strata_storage::Error as StorageError;
use strata_storage::keys;
use tokio_util::sync::CancellationToken;

use crate::config::AuthConfig;
use crate::error::{BrokerError, Result};
use acl::{Operation, Resource};
use acl_store::AclStore;
use users::UserStore;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// Nobody authenticated (authentication off, or not yet).
    Anonymous,
    /// A user: SASL or gRPC credentials, or an mTLS certificate's name.
    User(String),
    /// Another broker of this cluster.
    Cluster,
}

impl Principal {
    /// The name ACLs use: `User:NAME` (`User:ANONYMOUS` for nobody).
    pub fn acl_name(&self) -> String {
        match self {
            Principal::Anonymous => "User:ANONYMOUS".into(),
            Principal::User(n) => format!("User:{n}"),
            Principal::Cluster => "User:strata-cluster".into(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.acl_name())
    }
}

/// An authenticated caller: who, and from where (kept with a group
/// member, whose pattern matches only topics it may describe).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The client's IP address, for ACLs that name hosts.
    pub host: Option<IpAddr>,
}

impl Caller {
    /// An unauthenticated caller from `host`.
    pub fn anonymous(host: Option<IpAddr>) -> Self {
        Caller {
            principal: Principal::Anonymous,
            host,
        }
    }
}

/// The principal a super-user setting names (`alice` or `User:alice`).
pub fn super_user_name(s: &str) -> String {
    let s = s.trim();
    if s.starts_with("User:") {
        s.to_owned()
    } else {
        format!("User:{s}")
    }
}

/// The stored cluster secret.
#[derive(Debug, Serialize, Deserialize)]
struct SecretDoc {
    secret: String,
}

/// Authentication and authorization of one broker.
#[derive(Debug)]
pub struct Auth {
    enabled: bool,
    super_users: Vec<String>,
    /// Users and their credentials.
    pub users: UserStore,
    /// The ACLs.
    pub acls: AclStore,
    store: Arc<dyn ObjectStore>,
    cluster_secret: OnceLock<Vec<u8>>,
}

impl Auth {
    /// Authentication per `config` over the bucket `store`; `writer` names
    /// this broker in the ACL versions it writes; remembered password
    /// checks and the ACL cache are at most `ttl` old.
    pub fn new(
        config: &AuthConfig,
        store: Arc<dyn ObjectStore>,
        writer: String,
        ttl: Duration,
    ) -> Self {
        Self {
            enabled: config.enabled,
            super_users: config
                .super_users
                .iter()
                .map(|s| super_user_name(s))
                .collect(),
            users: UserStore::new(store.clone(), ttl),
            acls: AclStore::new(store.clone(), writer),
            store,
            cluster_secret: OnceLock::new(),
        }
    }

    /// True when callers must authenticate and be allowed by ACLs.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Loads what authorization needs before the broker serves: the ACLs
    /// and the cluster secret (created on the first start with
    /// authentication on). Nothing to do with authentication off.
    pub async fn load(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.acls.refresh().await?;
        self.cluster_secret().await?;
        Ok(())
    }

    /// The secret brokers present to each other: created once (create-only)
    /// by the first broker that needs it, read by the others (one GET at
    /// start; a PUT only in a bucket that has none yet).
    pub async fn cluster_secret(&self) -> Result<&[u8]> {
        if let Some(s) = self.cluster_secret.get() {
            return Ok(s);
        }
        let key = keys::cluster_secret();
        let fail = |e| BrokerError::storage("reading the cluster secret", StorageError::Store(e));
        let read = async {
            match self.store.get(&key).await {
                Ok(r) => r.bytes().await.map(Some).map_err(fail),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(fail(e)),
            }
        };
        let bytes = match read.await? {
            Some(bytes) => bytes,
            None => {
                let mut fresh = [0u8; 32];
                aws_lc_rs::rand::fill(&mut fresh)
                    .map_err(|_| BrokerError::Unavailable("without a random source"))?;
                let doc = bytes::Bytes::from(
                    serde_json::to_vec(&SecretDoc {
                        secret: B64.encode(fresh),
                    })
                    .unwrap_or_default(),
                );
                let created = self
                    .store
                    .put_opts(
                        &key,
                        PutPayload::from(doc.clone()),
                        PutOptions::from(PutMode::Create),
                    )
                    .await;
                match created {
                    Ok(_) => doc,
                    // Another broker created it first: everyone uses theirs.
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => self
                        .store
                        .get(&key)
                        .await
                        .map_err(fail)?
                        .bytes()
                        .await
                        .map_err(fail)?,
                    Err(e) => return Err(fail(e)),
                }
            }
        };
        let secret = serde_json::from_slice::<SecretDoc>(&bytes)
            .ok()
            .and_then(|d| B64.decode(d.secret).ok())
            .filter(|s| s.len() >= 16)
            .ok_or_else(|| {
                BrokerError::InvalidRequest(format!(
                    "the cluster secret {key} is damaged; delete it and restart every broker"
                ))
            })?;
        Ok(self.cluster_secret.get_or_init(|| secret))
    }

    /// True when `presented` is the cluster secret (constant time).
    pub fn is_cluster_secret(&self, presented: &[u8]) -> bool {
        self.cluster_secret
            .get()
            .is_some_and(|s| constant_time::verify_slices_are_equal(s, presented).is_ok())
    }

    /// True when `principal` is a super user (or a broker).
    pub fn is_super(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Cluster => true,
            Principal::Anonymous => false,
            Principal::User(_) => self.super_users.contains(&principal.acl_name()),
        }
    }

    /// Whether `caller` may do `operation` on `resource`.
    pub fn allows(&self, caller: &Caller, operation: Operation, resource: &Resource<'_>) -> bool {
        if !self.enabled || self.is_super(&caller.principal) {
            return true;
        }
        if caller.principal == Principal::Anonymous {
            return false;
        }
        self.acls.current().allows(
            &caller.principal.acl_name(),
            caller.host,
            operation,
            resource,
        )
    }

    /// Whether `caller` may do `operation` on some resource of type `kind`.
    pub fn allows_some(
        &self,
        caller: &Caller,
        operation: Operation,
        kind: acl::ResourceType,
    ) -> bool {
        if !self.enabled || self.is_super(&caller.principal) {
            return true;
        }
        caller.principal != Principal::Anonymous
            && self.acls.current().allows_some(
                &caller.principal.acl_name(),
                caller.host,
                operation,
                kind,
            )
    }

    /// Whether `caller` may create topic `name`: `Create` on the cluster
    /// or on the topic (as in Kafka).
    pub fn may_create_topic(&self, caller: &Caller, name: &str) -> bool {
        self.allows(caller, Operation::Create, &Resource::cluster())
            || self.allows(caller, Operation::Create, &Resource::topic(name))
    }

    /// Whether `caller` may get a producer id (idempotence): `IdempotentWrite`
    /// on the cluster, or `Write` on some topic (as Kafka since KIP-679).
    pub fn may_init_producer(&self, caller: &Caller) -> bool {
        self.allows(caller, Operation::IdempotentWrite, &Resource::cluster())
            || self.allows_some(caller, Operation::Write, acl::ResourceType::Topic)
    }

    /// [`Self::allows`], as an error that says who may not do what and how
    /// to grant it.
    pub fn check(
        &self,
        caller: &Caller,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> Result<()> {
        if self.allows(caller, operation, resource) {
            Ok(())
        } else {
            Err(denied(caller, operation, resource))
        }
    }
}

/// Follows the ACL chain every `cluster.heartbeat_interval` while
/// authentication is on, until `stop`.
pub async fn follow_acls(shared: Arc<crate::service::Shared>, stop: CancellationToken) {
    if !shared.auth.enabled() {
        return;
    }
    let every = shared.config.cluster.heartbeat_interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = shared.auth.acls.refresh().await {
            tracing::warn!(error = %e, "cannot read the ACLs; deciding with the ones read before");
        }
    }
}

/// A copy of a [`BrokerError::Denied`] (for each partition of a refused
/// topic); any other error becomes a generic refusal.
pub fn denied_again(e: &BrokerError) -> BrokerError {
    match e {
        BrokerError::Denied { kind, message } => BrokerError::Denied {
            kind: *kind,
            message: message.clone(),
        },
        other => BrokerError::Unauthenticated(other.to_string()),
    }
}

/// The error for a refused `operation` on `resource`.
pub fn denied(caller: &Caller, operation: Operation, resource: &Resource<'_>) -> BrokerError {
    let flag = match resource.kind {
        acl::ResourceType::Topic => format!("--topic {}", resource.name),
        acl::ResourceType::Group => format!("--group {}", resource.name),
        acl::ResourceType::Cluster => "--cluster".to_owned(),
    };
    BrokerError::Denied {
        kind: resource.kind,
        message: format!(
            "{} may not {operation} {resource}; an administrator can allow it with \
             `strata acl add --allow {} --operation {} {flag}`",
            caller.principal,
            caller.principal,
            operation.cli_name(),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::auth::acl::{AclBinding, PatternType, Permission, ResourceType};

    fn auth(enabled: bool, store: Arc<dyn ObjectStore>) -> Auth {
        let config = AuthConfig {
            enabled,
            super_users: vec!["root".into()],
        };
        Auth::new(&config, store, "test".into(), Duration::from_secs(1))
    }

    fn user(n: &str) -> Caller {
        Caller {
            principal: Principal::User(n.into()),
            host: None,
        }
    }

    #[tokio::test]
    async fn off_allows_all_on_denies_what_no_acl_allows() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let t = Resource::topic("t");
        assert!(auth(false, store.clone()).allows(&Caller::anonymous(None), Operation::Delete, &t));
        let on = auth(true, store.clone());
        on.load().await.unwrap();
        assert!(!on.allows(&Caller::anonymous(None), Operation::Describe, &t));
        assert!(on.allows(&user("root"), Operation::Delete, &Resource::cluster()));
        let alice = user("alice");
        let err = on.check(&alice, Operation::Write, &t).unwrap_err();
        assert!(
            err.to_string()
                .contains("User:alice may not Write topic t; an administrator can allow it with `strata acl add --allow User:alice --operation write --topic t`"),
            "{err}"
        );
        on.acls
            .change(1, |s| {
                s.add([AclBinding {
                    resource_type: ResourceType::Topic,
                    resource_name: "t".into(),
                    pattern_type: PatternType::Literal,
                    principal: "User:alice".into(),
                    host: "*".into(),
                    operation: Operation::Write,
                    permission: Permission::Allow,
                }])
            })
            .await
            .unwrap();
        assert!(on.allows(&alice, Operation::Write, &t));
        assert!(on.allows(
            &Caller {
                principal: Principal::Cluster,
                host: None
            },
            Operation::ClusterAction,
            &Resource::cluster()
        ));
    }

    #[tokio::test]
    async fn every_broker_gets_the_same_cluster_secret() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = auth(true, store.clone());
        let b = auth(true, store.clone());
        let (sa, sb) = (
            a.cluster_secret().await.unwrap().to_vec(),
            b.cluster_secret().await.unwrap().to_vec(),
        );
        assert_eq!(sa, sb);
        assert!(b.is_cluster_secret(&sa));
        assert!(!b.is_cluster_secret(b"guess"));
    }
}
