//! Broker ids: a fixed id belongs to one running broker, and
//! `broker_id = "auto"` claims the lowest free one in the bucket.
//!
//! **Fixed ids** ([`check_free`]): a broker that starts with the id of
//! another one that is running refuses to start, with a message saying so.
//! Two brokers writing one heartbeat key would make every view of the
//! cluster flap between them (data stays safe: each has a WAL stream of
//! its own, and claims fence). The check reads the id's heartbeat.
//! Missing, or written (by its writer's clock) longer than
//! `heartbeat_timeout` ago: the id is free. A fresh one may be the last
//! words of this broker's previous process (a restart after kill -9), so
//! the check watches it for a few heartbeat intervals: a running broker
//! rewrites it every interval, a dead one never does. That wait only
//! happens right after a crash.
//!
//! **Claimed ids** ([`claim`]): each id has a create-only chain of claims,
//! `cluster/ids/{id:010}/{version:020}.json` ([`ClaimDoc`]: a random token
//! per broker process, its address, when it claimed, or `released`). The
//! head of the chain says who holds the id. A broker claims an id by
//! creating the next version of its chain, so of two brokers that try at
//! once exactly one wins, and the other moves on to the next id; a chain's
//! head is never deleted (only the versions below it), so a broker with a
//! stale view cannot re-create a version and win (the chain's LIST-after
//! check, see `strata_storage::chain`). An id is free when the newest sign
//! of life of its holder is older than `cluster.forget_dead_after`: the
//! claim's own time and the id's heartbeat, if any (a broker just starting
//! has not written one yet; an unclaimed id with a live heartbeat belongs
//! to a broker with a fixed id). A graceful stop releases the id (the next
//! version says `released`), so it is free at once; a killed broker's id is
//! free once its heartbeat is `forget_dead_after` old, or gone (the
//! controller deletes it then).
//!
//! A broker keeps its claim while it heartbeats. One that could not write
//! its heartbeat for longer than `heartbeat_timeout` (a pause, a store
//! outage) checks the claim before it writes again ([`IdClaim::still_held`]):
//! if another broker took the id meanwhile, it must stop (see
//! `membership.rs`), since its id is no longer its own.
//!
//! The one thing not to break: an id is only ever won by creating the next
//! version of its chain (`PutMode::Create`); nothing deletes or overwrites
//! a chain's head. That is what makes two claimers unable to share an id,
//! on every store the broker accepts (the local filesystem has no
//! compare-and-swap on an existing object, so a single overwritten claim
//! object could not work there).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use strata_storage::chain::Chain;
use strata_storage::keys::{self, BrokerId, Version};

use super::membership::heartbeat_owner;
use super::model::Heartbeat;
use crate::config::ClusterConfig;
use crate::service::now_ms;

/// Heartbeat intervals a fresh heartbeat is watched for a change.
const WATCH_INTERVALS: u32 = 3;

async fn read(store: &Arc<dyn ObjectStore>, id: BrokerId) -> anyhow::Result<Option<Heartbeat>> {
    match store.get(&keys::heartbeat(id)).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            // An unreadable heartbeat is nobody's: it is overwritten.
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Fails when a running broker holds `id` (see the module docs).
pub async fn check_free(
    store: &Arc<dyn ObjectStore>,
    id: BrokerId,
    config: &ClusterConfig,
) -> anyhow::Result<()> {
    let Some(first) = read(store, id).await? else {
        return Ok(());
    };
    let age = now_ms().saturating_sub(first.written_at_ms);
    if age > millis(config.heartbeat_timeout) {
        return Ok(());
    }
    let watch = (config.heartbeat_interval * WATCH_INTERVALS).min(config.heartbeat_timeout);
    let deadline = tokio::time::Instant::now() + watch;
    let step = (config.heartbeat_interval / 4).max(Duration::from_millis(20));
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(step).await;
        match read(store, id).await? {
            Some(hb) if hb.incarnation != first.incarnation || hb.seq != first.seq => {
                anyhow::bail!(
                    "broker id {id} is in use by a running broker at {} (incarnation {}); give \
                     every broker of a cluster its own broker_id (--broker-id, STRATA_BROKER_ID), \
                     or let each claim a free one with broker_id = \"auto\"",
                    hb.address,
                    hb.incarnation
                );
            }
            _ => {}
        }
    }
    tracing::info!(broker = %id, "the last heartbeat of this broker id stopped changing: its previous process is gone");
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One version of an id's claim chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimDoc {
    /// The id claimed.
    pub broker_id: u32,
    /// Random, one per broker process: tells two claimants apart (and
    /// makes two claims never byte-identical).
    pub token: String,
    /// The claimant's gRPC address, for operators.
    pub address: String,
    /// When it claimed, by its clock (milliseconds since the epoch).
    pub claimed_at_ms: i64,
    /// A graceful stop gave the id back: it is free at once.
    #[serde(default)]
    pub released: bool,
}

/// An id this broker process holds (`broker_id = "auto"`).
#[derive(Debug, Clone)]
pub struct IdClaim {
    chain: Chain<ClaimDoc>,
    version: Version,
    doc: ClaimDoc,
    /// The claim this one replaced, if its holder was gone.
    took_over: Option<ClaimDoc>,
}

impl IdClaim {
    /// The id.
    pub fn id(&self) -> BrokerId {
        BrokerId(self.doc.broker_id)
    }

    /// What the claim says.
    pub fn doc(&self) -> &ClaimDoc {
        &self.doc
    }

    /// The claim of a previous holder this one replaced (it was gone for
    /// `cluster.forget_dead_after`), or `None` for an id free until now.
    pub fn took_over(&self) -> Option<&ClaimDoc> {
        self.took_over.as_ref()
    }

    /// Whether this claim is still the head of its chain (one LIST). False
    /// once another broker took the id over.
    pub async fn still_held(&self) -> anyhow::Result<bool> {
        let versions = self
            .chain
            .versions(Some(self.version))
            .await
            .with_context(|| format!("cannot check the claim of broker id {}", self.id()))?;
        Ok(versions == [self.version])
    }

    /// Gives the id back (a graceful stop): the next version of the chain
    /// says `released`, so the id is free at once. Harmless when another
    /// broker took it over meanwhile.
    pub async fn release(&self) {
        let doc = ClaimDoc {
            released: true,
            claimed_at_ms: now_ms(),
            ..self.doc.clone()
        };
        match self.chain.create(self.version.next(), &doc).await {
            Ok(()) => tracing::info!(broker = %self.id(), "released broker id"),
            Err(e) if e.is_fenced() => {
                tracing::warn!(broker = %self.id(), "broker id was already claimed by another broker; nothing to release")
            }
            Err(e) => tracing::warn!(
                broker = %self.id(),
                error = %e,
                "cannot release broker id; it is free for others once this broker's heartbeat is cluster.forget_dead_after old"
            ),
        }
    }
}

/// Claims the lowest broker id that no live broker holds (see the module
/// docs). `address` names this broker in the claim; `now_ms` is the time
/// the evidence of life is compared with (the wall clock, in production).
pub async fn claim(
    store: &Arc<dyn ObjectStore>,
    config: &ClusterConfig,
    address: &str,
    now_ms: i64,
) -> anyhow::Result<IdClaim> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let heads = claim_heads(store).await?;
    let beating = heartbeat_ids(store).await?;
    let mut id = 0u32;
    loop {
        let broker = BrokerId(id);
        let chain = Chain::<ClaimDoc>::new(store.clone(), keys::broker_id_claim_chain(broker));
        let head = heads.get(&id).copied();
        let free = if head.is_none() && !beating.contains(&id) {
            Some((Version(0), None))
        } else {
            free_version(store, &chain, broker, head, config, now_ms).await?
        };
        if let Some((version, previous)) = free {
            let doc = ClaimDoc {
                broker_id: id,
                token: token.clone(),
                address: address.to_owned(),
                claimed_at_ms: now_ms,
                released: false,
            };
            match chain.create(version, &doc).await {
                Ok(()) => {
                    if version.0 > 0
                        && let Err(e) = chain.gc(version, 1).await
                    {
                        tracing::debug!(broker = id, error = %e, "cannot delete old claims of a broker id");
                    }
                    return Ok(IdClaim {
                        chain,
                        version,
                        doc,
                        took_over: previous.filter(|p: &ClaimDoc| !p.released),
                    });
                }
                // Another broker claimed it first: try the next id.
                Err(e) if e.is_fenced() => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot claim broker id {id}"));
                }
            }
        }
        id = id.checked_add(1).context("no broker id is free")?;
    }
}

/// The head version of every claim chain (one LIST).
async fn claim_heads(store: &Arc<dyn ObjectStore>) -> anyhow::Result<BTreeMap<u32, Version>> {
    let metas: Vec<_> = store
        .list(Some(&keys::broker_id_claims_prefix()))
        .try_collect()
        .await
        .context("cannot list the claimed broker ids (cluster/ids/)")?;
    let mut heads = BTreeMap::new();
    for (broker, version) in metas
        .iter()
        .filter_map(|m| keys::parse_broker_id_claim(&m.location))
    {
        let head = heads.entry(broker.0).or_insert(version);
        *head = (*head).max(version);
    }
    Ok(heads)
}

/// The ids that have a heartbeat object (one LIST).
async fn heartbeat_ids(store: &Arc<dyn ObjectStore>) -> anyhow::Result<BTreeSet<u32>> {
    store
        .list(Some(&keys::heartbeats_prefix()))
        .try_filter_map(|m| std::future::ready(Ok(heartbeat_owner(&m.location))))
        .try_collect()
        .await
        .context("cannot list the brokers' heartbeats (cluster/brokers/)")
}

/// The version that claims `broker` if it is free (with the claim it
/// replaces, if any), or `None` while its holder may be alive.
async fn free_version(
    store: &Arc<dyn ObjectStore>,
    chain: &Chain<ClaimDoc>,
    broker: BrokerId,
    head: Option<Version>,
    config: &ClusterConfig,
    now_ms: i64,
) -> anyhow::Result<Option<(Version, Option<ClaimDoc>)>> {
    let mut last_alive: Option<i64> = None;
    let mut previous = None;
    if let Some(v) = head {
        match chain.read(v).await {
            Ok(doc) => {
                if !doc.released {
                    last_alive = Some(doc.claimed_at_ms);
                }
                previous = Some(doc);
            }
            // Collected under us: a broker is claiming this id right now.
            Err(strata_storage::Error::Store(object_store::Error::NotFound { .. })) => {
                return Ok(None);
            }
            Err(e @ strata_storage::Error::Json { .. }) => {
                tracing::warn!(broker = %broker, error = %e, "skipping a broker id whose claim cannot be read");
                return Ok(None);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the claim of broker id {broker}"));
            }
        }
    }
    if let Some(hb) = read(store, broker)
        .await
        .with_context(|| format!("cannot read the heartbeat of broker id {broker}"))?
    {
        last_alive = Some(last_alive.map_or(hb.written_at_ms, |t| t.max(hb.written_at_ms)));
    }
    match last_alive {
        Some(t) if now_ms.saturating_sub(t) <= millis(config.forget_dead_after) => Ok(None),
        _ => Ok(Some((head.map_or(Version(0), Version::next), previous))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    use super::*;
    use crate::cluster::membership::tests::hb;

    const T0: i64 = 1_700_000_000_000;

    fn config() -> ClusterConfig {
        ClusterConfig {
            forget_dead_after: Duration::from_secs(600),
            ..ClusterConfig::default()
        }
    }

    fn forget_ms() -> i64 {
        millis(config().forget_dead_after)
    }

    fn store() -> Arc<dyn ObjectStore> {
        Arc::new(InMemory::new())
    }

    /// Broker `id` heartbeats at `at_ms`.
    async fn beat(store: &Arc<dyn ObjectStore>, id: u32, at_ms: i64) {
        let mut h = hb(id, 1);
        h.written_at_ms = at_ms;
        let json = serde_json::to_vec(&h).unwrap();
        store
            .put(
                &keys::heartbeat(BrokerId(id)),
                PutPayload::from(Bytes::from(json)),
            )
            .await
            .unwrap();
    }

    async fn claim_at(store: &Arc<dyn ObjectStore>, now: i64) -> IdClaim {
        claim(store, &config(), "http://test", now).await.unwrap()
    }

    #[tokio::test]
    async fn the_lowest_free_id_is_claimed_and_a_released_one_reused() {
        let store = store();
        let a = claim_at(&store, T0).await;
        let b = claim_at(&store, T0).await;
        let c = claim_at(&store, T0).await;
        assert_eq!([a.id().0, b.id().0, c.id().0], [0, 1, 2]);
        assert!(a.took_over().is_none());
        b.release().await;
        assert!(!b.still_held().await.unwrap());
        let d = claim_at(&store, T0 + 1).await;
        assert_eq!(d.id(), BrokerId(1), "a released id is free at once");
        assert!(d.took_over().is_none(), "a released id is not a takeover");
        assert!(a.still_held().await.unwrap() && d.still_held().await.unwrap());
        // The chain keeps its head only.
        let chain = Chain::<ClaimDoc>::new(store.clone(), keys::broker_id_claim_chain(BrokerId(1)));
        assert_eq!(chain.versions(None).await.unwrap(), [Version(2)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claimers_get_different_ids() {
        let store = store();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { claim_at(&store, T0).await })
            })
            .collect();
        let mut ids = BTreeSet::new();
        let mut tokens = BTreeSet::new();
        for t in tasks {
            let c = t.await.unwrap();
            assert!(ids.insert(c.id().0), "id {} claimed twice", c.id());
            tokens.insert(c.doc().token.clone());
        }
        assert_eq!(ids, (0..8).collect(), "the lowest free ids");
        assert_eq!(tokens.len(), 8);
    }

    #[tokio::test]
    async fn a_dead_brokers_id_is_reclaimed_after_forget_dead_after() {
        let store = store();
        let dead = claim_at(&store, T0).await;
        assert_eq!(dead.id(), BrokerId(0));
        // It heartbeat until T0 + 5s, then died (kill -9: nothing released).
        beat(&store, 0, T0 + 5_000).await;
        let last = T0 + 5_000;
        let early = claim_at(&store, last + forget_ms()).await;
        assert_eq!(early.id(), BrokerId(1), "not before forget_dead_after");
        let late = claim_at(&store, last + forget_ms() + 1).await;
        assert_eq!(
            late.id(),
            BrokerId(0),
            "reclaimed once forget_dead_after passed"
        );
        assert_eq!(
            late.took_over().map(|d| d.token.clone()),
            Some(dead.doc().token.clone())
        );
        assert!(
            !dead.still_held().await.unwrap(),
            "the old holder finds out"
        );
        assert!(late.still_held().await.unwrap());
        // Its release cannot free the id the new holder has.
        dead.release().await;
        assert!(late.still_held().await.unwrap());
    }

    #[tokio::test]
    async fn a_forgotten_brokers_id_is_reclaimed() {
        let store = store();
        let dead = claim_at(&store, T0).await;
        // The controller deleted its heartbeat (forget_dead): only the
        // claim's time is left, and it is old.
        let again = claim_at(&store, T0 + forget_ms() + 1).await;
        assert_eq!(again.id(), dead.id());
    }

    #[tokio::test]
    async fn a_live_brokers_id_is_never_reclaimed() {
        let store = store();
        let live = claim_at(&store, T0).await;
        // A broker that just claimed has no heartbeat yet: its claim is
        // its sign of life.
        assert_eq!(claim_at(&store, T0 + 1_000).await.id(), BrokerId(1));
        // Long after, it still heartbeats.
        for (i, now) in [10, 100, 1000]
            .map(|n| T0 + n * forget_ms())
            .into_iter()
            .enumerate()
        {
            beat(&store, 0, now - 1_000).await;
            let other = claim_at(&store, now).await;
            assert_ne!(other.id(), live.id(), "round {i}");
            assert!(live.still_held().await.unwrap());
        }
    }

    #[tokio::test]
    async fn an_unclaimed_id_with_a_live_heartbeat_is_skipped() {
        let store = store();
        // Brokers 0 and 2 run with fixed ids; 1's heartbeat is long dead.
        beat(&store, 0, T0).await;
        beat(&store, 1, T0 - 2 * forget_ms()).await;
        beat(&store, 2, T0).await;
        assert_eq!(claim_at(&store, T0).await.id(), BrokerId(1));
        assert_eq!(claim_at(&store, T0).await.id(), BrokerId(3));
    }

    #[test]
    fn claims_read_back() {
        let doc = ClaimDoc {
            broker_id: 3,
            token: "t".into(),
            address: "http://a".into(),
            claimed_at_ms: 5,
            released: false,
        };
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(serde_json::from_str::<ClaimDoc>(&json).unwrap(), doc);
        let old: ClaimDoc =
            serde_json::from_str(r#"{"broker_id":3,"token":"t","address":"a","claimed_at_ms":5}"#)
                .unwrap();
        assert!(!old.released);
    }
}
