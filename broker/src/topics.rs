//! The topic registry. Topics live in the bucket, not on the broker: each
//! topic is a create-only chain of [`TopicRecord`]s at
//! `topics/{topic}/config/{version:020}.json` (`keys::topic_config_chain`).
//!
//! Every topic gets a random [`TopicId`] when it is created, and its data
//! lives under `topics/{topic}/{topic_id}/`: a name deleted and re-created
//! is a new id, so nothing the old incarnation's brokers write (however
//! late) can land in the new one's manifest chains.
//!
//! - Create writes version 1, or the version after a `deleted` head, with
//!   a new id (and removes what a deleted incarnation left behind).
//! - Delete writes a version with `deleted = true` (same id); the caller
//!   releases the open partitions first and purges that id's data
//!   ([`TopicRegistry::purge_deleted`]) in the background. A purge deletes
//!   only its own id's prefix, so it never touches a re-created topic.
//! - List is one delimited LIST of `topics/` (the topic names are its
//!   common prefixes) plus a head read per topic not yet cached.
//!
//! Records are cached in memory. A lookup that misses (or finds a deleted
//! topic) re-reads the chain head before answering "unknown topic", since
//! another broker may have created it.
//!
//! - Alter ([`TopicRegistry::update`]) writes the next version with the same
//!   id: new settings, or more partitions. A partition count only grows
//!   (Kafka's CreatePartitions), so a partition that exists keeps its data
//!   and its place in the key space of producers that hashed to it before.
//!   A broker that sees a live topic's settings change releases the
//!   partitions it has open ([`TopicRegistry::take_reconfigured`]), which
//!   reopen with the new settings on the next request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use strata_storage::Error as StorageError;
use strata_storage::chain::Chain;
use strata_storage::keys::{
    self, BrokerId, TopicId, TopicIdPartition, TopicName, TopicPartition, Version,
};
use strata_storage::log::{LogConfig, TimestampType};

use crate::error::{BrokerError, Result};

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Per-topic overrides of the broker's log defaults. `None`: the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicOverrides {
    /// Delete segments older than this many ms; -1 keeps data forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest segments while a partition holds more; -1: no limit.
    pub retention_bytes: Option<i64>,
    /// Seal the tail at this size.
    pub segment_bytes: Option<i64>,
    /// Seal the tail when its oldest record is this old (ms).
    pub segment_ms: Option<i64>,
    /// Largest batch accepted (at most the broker's `log.max_batch_bytes`).
    pub max_batch_bytes: Option<i32>,
    /// `CreateTime` or `LogAppendTime` (Kafka's `message.timestamp.type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_type: Option<String>,
    /// Refuse CreateTime records older than this many ms; -1: any age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_before_max_ms: Option<i64>,
    /// Refuse CreateTime records this many ms ahead; -1: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_after_max_ms: Option<i64>,
}

impl TopicOverrides {
    /// The log settings of a partition of a topic with these overrides,
    /// over `defaults`. The error says which setting is wrong.
    pub fn log_config(&self, defaults: &LogConfig) -> Result<LogConfig> {
        let invalid = |key: &str, v: i64, what: &str| {
            BrokerError::InvalidRequest(format!("invalid topic setting {key}: {what}, got {v}"))
        };
        let mut c = defaults.clone();
        if let Some(v) = self.retention_ms {
            c.retention_ms = match v {
                -1 => None,
                v if v >= 0 => Some(Duration::from_millis(v as u64)),
                v => return Err(invalid("retention_ms", v, "must be -1 (forever) or >= 0")),
            };
        }
        if let Some(v) = self.retention_bytes {
            c.retention_bytes = match v {
                -1 => None,
                v if v >= 0 => Some(v as u64),
                v => {
                    return Err(invalid(
                        "retention_bytes",
                        v,
                        "must be -1 (no limit) or >= 0",
                    ));
                }
            };
        }
        if let Some(v) = self.segment_bytes {
            if v < 1024 {
                return Err(invalid("segment_bytes", v, "must be at least 1024"));
            }
            c.segment_bytes = v as u64;
        }
        if let Some(v) = self.segment_ms {
            if v < 1 {
                return Err(invalid("segment_ms", v, "must be at least 1"));
            }
            c.segment_ms = Duration::from_millis(v as u64);
        }
        if let Some(v) = self.max_batch_bytes {
            if v < 1024 || v as usize > defaults.max_batch_bytes {
                return Err(invalid(
                    "max_batch_bytes",
                    i64::from(v),
                    &format!(
                        "must be between 1024 and the broker's log.max_batch_bytes ({})",
                        defaults.max_batch_bytes
                    ),
                ));
            }
            c.max_batch_bytes = v as usize;
        }
        if let Some(t) = &self.timestamp_type {
            c.timestamp_type = parse_timestamp_type(t).ok_or_else(|| {
                BrokerError::InvalidRequest(format!(
                    "invalid topic setting timestamp_type: must be CreateTime or LogAppendTime, got {t}"
                ))
            })?;
        }
        let limit = |key: &str, v: i64| match v {
            -1 => Ok(None),
            v if v >= 0 => Ok(Some(Duration::from_millis(v as u64))),
            v => Err(invalid(key, v, "must be -1 (no limit) or >= 0")),
        };
        if let Some(v) = self.timestamp_before_max_ms {
            c.timestamp_before_max = limit("timestamp_before_max_ms", v)?;
        }
        if let Some(v) = self.timestamp_after_max_ms {
            c.timestamp_after_max = limit("timestamp_after_max_ms", v)?;
        }
        c.validate()
            .map_err(|e| BrokerError::InvalidRequest(format!("invalid topic settings: {e}")))?;
        Ok(c)
    }

    /// The log settings of a topic whose overrides were checked when they
    /// were set, perhaps against other broker defaults: an override that
    /// is invalid over this broker's `defaults` (its `log.max_batch_bytes`
    /// went down below a topic's `max_batch_bytes`, or up past a topic's
    /// `segment_bytes`) gives way to the default, and the rest still
    /// apply, so that one topic cannot fail every listing.
    pub fn stored_log_config(&self, defaults: &LogConfig) -> Applied {
        if let Ok(config) = self.log_config(defaults) {
            return Applied {
                config,
                overrides: self.clone(),
                ignored: Vec::new(),
            };
        }
        // A topic that set only its segment size, under a batch limit that
        // has since grown past it, keeps its segment size and the limit it
        // had: the batch limit follows the segment size down.
        let mut own = self.clone();
        if let (None, Some(segment)) = (own.max_batch_bytes, own.segment_bytes)
            && segment < defaults.max_batch_bytes as i64
        {
            own.max_batch_bytes = i32::try_from(segment).ok().filter(|&b| b >= 1024);
        }
        // A new field must be added to `fields` below.
        let Self {
            retention_ms: _,
            retention_bytes: _,
            segment_bytes: _,
            segment_ms: _,
            max_batch_bytes: _,
            timestamp_type: _,
            timestamp_before_max_ms: _,
            timestamp_after_max_ms: _,
        } = self;
        // One at a time, each kept if it still fits with those kept before
        // it; the batch limit first, since the segment size must hold it.
        let fields: [fn(&mut Self, &Self); 8] = [
            |k, s| k.max_batch_bytes = s.max_batch_bytes,
            |k, s| k.segment_bytes = s.segment_bytes,
            |k, s| k.segment_ms = s.segment_ms,
            |k, s| k.retention_ms = s.retention_ms,
            |k, s| k.retention_bytes = s.retention_bytes,
            |k, s| k.timestamp_type = s.timestamp_type.clone(),
            |k, s| k.timestamp_before_max_ms = s.timestamp_before_max_ms,
            |k, s| k.timestamp_after_max_ms = s.timestamp_after_max_ms,
        ];
        let mut kept = Self::default();
        let mut dropped = Vec::new();
        for copy in fields {
            let mut with = kept.clone();
            copy(&mut with, &own);
            if with == kept {
                continue;
            }
            match with.log_config(defaults) {
                Ok(_) => kept = with,
                Err(e) => dropped.push(e.to_string()),
            }
        }
        // `defaults` are valid (checked at startup), so `kept` is too.
        let config = kept.log_config(defaults);
        debug_assert!(config.is_ok(), "kept overrides are valid: {config:?}");
        let config = config.unwrap_or_else(|_| defaults.clone());
        Applied {
            config,
            overrides: kept,
            ignored: dropped,
        }
    }
}

/// The settings a broker applies to a stored topic (see
/// [`TopicOverrides::stored_log_config`]).
#[derive(Debug, Clone)]
pub struct Applied {
    /// The log settings of its partitions.
    pub config: LogConfig,
    /// The overrides in effect: the stored ones, minus those this broker
    /// ignores, plus a batch limit that follows a segment size down.
    pub overrides: TopicOverrides,
    /// Why each ignored override is ignored.
    pub ignored: Vec<String>,
}

/// A timestamp type by Kafka's name (`CreateTime`, `LogAppendTime`; case
/// and `_`/`-` do not matter).
pub fn parse_timestamp_type(s: &str) -> Option<TimestampType> {
    match s.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
        "createtime" => Some(TimestampType::CreateTime),
        "logappendtime" => Some(TimestampType::LogAppendTime),
        _ => None,
    }
}

/// Kafka's name of a timestamp type.
pub fn timestamp_type_name(t: TimestampType) -> &'static str {
    match t {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

/// One version of a topic's configuration, as stored in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// The id of this incarnation of the name (its data's prefix).
    pub id: TopicId,
    /// Number of partitions.
    pub partitions: u32,
    /// Overrides of the broker defaults.
    #[serde(default)]
    pub config: TopicOverrides,
    /// When the topic was created (ms since the epoch).
    pub created_at_ms: i64,
    /// True for the version written by a delete.
    #[serde(default)]
    pub deleted: bool,
    /// The broker that wrote this version (makes concurrent writers' bytes
    /// differ, so the chain can tell them apart).
    #[serde(default)]
    pub written_by: u32,
}

/// A live topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// Its name.
    pub name: TopicName,
    /// Its current configuration.
    pub record: TopicRecord,
    /// The log settings of its partitions.
    pub log_config: LogConfig,
    /// The overrides behind them: `record.config`, minus any this broker
    /// ignores (see [`TopicOverrides::stored_log_config`]).
    pub overrides: TopicOverrides,
}

impl Topic {
    /// Partition `partition` of this incarnation of the topic.
    pub fn partition(&self, partition: u32) -> TopicIdPartition {
        TopicIdPartition::new(
            self.record.id,
            TopicPartition {
                topic: self.name.clone(),
                partition,
            },
        )
    }
}

#[derive(Debug, Clone)]
struct Cached {
    version: Version,
    record: TopicRecord,
}

/// What [`TopicRegistry::install`] did.
enum Installed {
    /// Put the head in, replacing this one (if any).
    Replaced(Option<Cached>),
    /// Kept this later head instead.
    KeptLater(Cached),
}

/// The topic registry: see the module docs.
#[derive(Debug)]
pub struct TopicRegistry {
    store: Arc<dyn ObjectStore>,
    broker: BrokerId,
    defaults: LogConfig,
    cache: Mutex<HashMap<TopicName, Cached>>,
    /// Topics whose head moved under the cache (deleted or re-created by
    /// another broker) since [`Self::take_changed`] last ran.
    changed: Mutex<Vec<TopicName>>,
    /// Live topics whose settings changed (same id) since
    /// [`Self::take_reconfigured`] last ran.
    reconfigured: Mutex<Vec<TopicName>>,
    /// Topic ids looked up and not found, and when: a lookup by an id
    /// the cache does not hold costs a fresh listing (see
    /// [`Self::get_by_id`]), so a client repeating an unknown id must not
    /// make each of its requests cost one.
    unknown_ids: Mutex<HashMap<TopicId, Instant>>,
    /// Where ids looked up were found: a hint, checked against the cache
    /// on use, so a request by id (Fetch and Produce from v13) costs a
    /// hash lookup, not a scan of every cached topic.
    id_hints: Mutex<HashMap<TopicId, TopicName>>,
    /// The fresh listings for id lookups (see [`Self::get_by_id`]).
    id_listing: tokio::sync::Mutex<IdListing>,
}

/// When fresh listings for id lookups started.
#[derive(Debug, Default)]
struct IdListing {
    /// The last one that succeeded: it answers every lookup that arrived
    /// before it started.
    listed: Option<Instant>,
    /// The last one tried, failed or not: the next starts no sooner than
    /// [`ID_LISTING_GAP`] after it.
    tried: Option<tokio::time::Instant>,
}

/// How long a topic id found missing is not looked up again.
const UNKNOWN_ID_TTL: Duration = Duration::from_secs(10);

/// Least time between the starts of two listings for unknown ids: a client
/// that keeps sending new unknown ids (a bug, or on purpose) costs the
/// bucket at most one listing a second, however fast it sends; lookups
/// that arrive meanwhile wait for the next listing and share it.
const ID_LISTING_GAP: Duration = Duration::from_secs(1);

/// Topic head reads a listing keeps in flight.
const LIST_READS_IN_FLIGHT: usize = 8;

/// Most topic ids remembered as missing at once.
const MAX_UNKNOWN_IDS: usize = 10_000;

/// Most id hints kept (they are only hints: forgetting them costs a scan).
const MAX_ID_HINTS: usize = 100_000;

/// Validates a topic name from a request.
pub fn parse_name(name: &str) -> Result<TopicName> {
    TopicName::new(name).map_err(|e| BrokerError::InvalidRequest(e.to_string()))
}

impl TopicRegistry {
    /// A registry over `store` with the broker's log `defaults`.
    pub fn new(store: Arc<dyn ObjectStore>, broker: BrokerId, defaults: LogConfig) -> Self {
        Self {
            store,
            broker,
            defaults,
            cache: Mutex::new(HashMap::new()),
            changed: Mutex::new(Vec::new()),
            reconfigured: Mutex::new(Vec::new()),
            unknown_ids: Mutex::new(HashMap::new()),
            id_hints: Mutex::new(HashMap::new()),
            id_listing: tokio::sync::Mutex::new(IdListing::default()),
        }
    }

    /// The broker's default log settings.
    pub fn defaults(&self) -> &LogConfig {
        &self.defaults
    }

    fn chain(&self, name: &TopicName) -> Chain<TopicRecord> {
        Chain::new(self.store.clone(), keys::topic_config_chain(name))
    }

    /// `record` as a topic of this broker: its stored settings over this
    /// broker's defaults (see [`TopicOverrides::stored_log_config`]; what
    /// they drop is logged once per version, by [`Self::install`]).
    fn topic(&self, name: &TopicName, record: TopicRecord) -> Topic {
        let applied = record.config.stored_log_config(&self.defaults);
        Topic {
            name: name.clone(),
            record,
            log_config: applied.config,
            overrides: applied.overrides,
        }
    }

    /// Reads the chain head into the cache.
    async fn refresh(&self, name: &TopicName) -> Result<Option<Cached>> {
        let from = self.cache.lock().get(name).map(|c| c.version);
        let head = self
            .chain(name)
            .head(from)
            .await
            .map_err(|e| BrokerError::storage(format!("reading topic {name}"), e))?;
        let cached = head.map(|(version, record)| Cached { version, record });
        let before = match &cached {
            Some(read) => match self.install(name, read.clone()) {
                Installed::Replaced(before) => before,
                Installed::KeptLater(later) => return Ok(Some(later)),
            },
            None => {
                let mut cache = self.cache.lock();
                match cache.get(name) {
                    // Cached since this read started: newer than nothing.
                    Some(c) if from.is_none_or(|f| c.version > f) => return Ok(Some(c.clone())),
                    _ => cache.remove(name),
                }
            }
        };
        self.note_change(name, before.as_ref(), cached.as_ref());
        Ok(cached)
    }

    /// Puts `head` in the cache unless the cache holds a later version: a
    /// read or write that finishes late (it started before another
    /// broker's change, or this broker's own) never puts an older head
    /// back.
    fn install(&self, name: &TopicName, head: Cached) -> Installed {
        let (version, live) = (head.version, !head.record.deleted);
        let config = live.then(|| head.record.config.clone());
        let installed = {
            let mut cache = self.cache.lock();
            match cache.get(name) {
                Some(c) if c.version > head.version => Installed::KeptLater(c.clone()),
                _ => Installed::Replaced(cache.insert(name.clone(), head)),
            }
        };
        // Once per version a broker sees: what of its settings it ignores.
        if let (Installed::Replaced(before), Some(config)) = (&installed, config)
            && before.as_ref().map(|b| b.version) != Some(version)
        {
            for why in config.stored_log_config(&self.defaults).ignored {
                tracing::warn!(
                    topic = %name,
                    %version,
                    "a stored topic setting is invalid for this broker and is ignored (the \
                     default applies); set a value this broker accepts, remove the setting, or \
                     change the broker's log defaults: {why}"
                );
            }
        }
        installed
    }

    /// Sorts a move of the cached head from `before` to `after` into
    /// [`Self::take_changed`] or [`Self::take_reconfigured`].
    fn note_change(&self, name: &TopicName, before: Option<&Cached>, after: Option<&Cached>) {
        let Some(before) = before.filter(|b| !b.record.deleted) else {
            // From deleted to re-created is no change for open partitions: a
            // deleted topic's were dropped when the delete was seen.
            return;
        };
        match after {
            Some(a) if a.version == before.version => {}
            // Same incarnation, new settings: open logs run the old ones.
            Some(a) if !a.record.deleted && a.record.id == before.record.id => {
                if a.record.config != before.record.config {
                    self.reconfigured.lock().push(name.clone());
                }
            }
            // Deleted or re-created: partitions opened under it are stale.
            _ => self.changed.lock().push(name.clone()),
        }
    }

    /// Re-reads the head of `name` (a change lands in
    /// [`Self::take_changed`]).
    pub async fn reread(&self, name: &TopicName) -> Result<()> {
        self.refresh(name).await.map(drop)
    }

    /// True when the cache says `name` is deleted (without reading the
    /// bucket).
    pub fn cached_as_deleted(&self, name: &TopicName) -> bool {
        self.cache
            .lock()
            .get(name)
            .is_some_and(|c| c.record.deleted)
    }

    /// The topics whose head this broker saw move under its cache since the
    /// last call: deleted or re-created elsewhere, so partitions of them
    /// open here belong to a topic that is gone.
    pub fn take_changed(&self) -> Vec<TopicName> {
        let mut v = std::mem::take(&mut *self.changed.lock());
        v.sort();
        v.dedup();
        v
    }

    /// The live topics whose settings changed (same incarnation) since the
    /// last call: partitions of them open here run the old settings.
    pub fn take_reconfigured(&self) -> Vec<TopicName> {
        let mut v = std::mem::take(&mut *self.reconfigured.lock());
        v.sort();
        v.dedup();
        v
    }

    /// The live topic `name` if the cache holds it (no IO).
    pub fn cached(&self, name: &TopicName) -> Option<Topic> {
        let record = self
            .cache
            .lock()
            .get(name)
            .filter(|c| !c.record.deleted)
            .map(|c| c.record.clone())?;
        Some(self.topic(name, record))
    }

    /// The names of the live topics the cache holds, sorted (no IO).
    pub fn cached_names(&self) -> Vec<TopicName> {
        let mut names: Vec<TopicName> = self
            .cache
            .lock()
            .iter()
            .filter(|(_, c)| !c.record.deleted)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The live topic with id `id` if the cache holds it (no IO; a hash
    /// lookup where the id was found before, else a scan of the cached
    /// topics).
    pub fn cached_by_id(&self, id: TopicId) -> Option<Topic> {
        let hint = self.id_hints.lock().get(&id).cloned();
        let found = {
            let cache = self.cache.lock();
            let live = |c: &Cached| c.record.id == id && !c.record.deleted;
            match hint.as_ref().and_then(|n| cache.get(n).map(|c| (n, c))) {
                Some((n, c)) if live(c) => Some((n.clone(), c.record.clone())),
                _ => cache
                    .iter()
                    .find(|(_, c)| live(c))
                    .map(|(n, c)| (n.clone(), c.record.clone())),
            }
        };
        let mut hints = self.id_hints.lock();
        match &found {
            Some((name, _)) if hint.as_ref() != Some(name) => {
                if hints.len() >= MAX_ID_HINTS {
                    hints.clear();
                }
                hints.insert(id, name.clone());
            }
            None if hint.is_some() => {
                hints.remove(&id);
            }
            _ => {}
        }
        drop(hints);
        let (name, record) = found?;
        Some(self.topic(&name, record))
    }

    /// The live topic with id `id`, if any, for a request that arrived at
    /// `since`: from the cache, else from a fresh listing of every topic
    /// (one LIST and a head read per topic), which also finds a topic
    /// deleted and created again by a broker whose announcement this one
    /// missed. Lookups share listings: one runs at a time, and a listing
    /// that started after `since` answers every id the request names, so a
    /// request naming N unknown ids, or N such requests at once, cost one
    /// or two listings, not N. An id found missing is not listed for again
    /// for [`UNKNOWN_ID_TTL`], and listings start at most once per
    /// [`ID_LISTING_GAP`].
    pub async fn get_by_id(&self, id: TopicId, since: Instant) -> Result<Option<Topic>> {
        if let Some(t) = self.cached_by_id(id) {
            return Ok(Some(t));
        }
        if self.known_missing(id) {
            return Ok(None);
        }
        let found = {
            // Held across the listing on purpose: it is what makes
            // concurrent lookups wait for one listing instead of each
            // starting its own. Nothing else takes it.
            let mut listing = self.id_listing.lock().await;
            match self.cached_by_id(id) {
                // Found by the listing this lookup waited for.
                Some(t) => Some(t),
                None if listing.listed.is_some_and(|started| started >= since) => None,
                // Found missing by the lookup this one waited for.
                None if self.known_missing(id) => None,
                None => {
                    if let Some(tried) = listing.tried {
                        tokio::time::sleep_until(tried + ID_LISTING_GAP).await;
                    }
                    // An announcement may have brought it meanwhile.
                    match self.cached_by_id(id) {
                        Some(t) => Some(t),
                        None => {
                            listing.tried = Some(tokio::time::Instant::now());
                            let started = Instant::now();
                            let listed = self.list_fresh().await?;
                            listing.listed = Some(started);
                            listed.into_iter().find(|t| t.record.id == id)
                        }
                    }
                }
            }
        };
        if found.is_none() {
            let mut unknown = self.unknown_ids.lock();
            unknown.retain(|_, at| at.elapsed() < UNKNOWN_ID_TTL);
            if unknown.len() < MAX_UNKNOWN_IDS {
                unknown.insert(id, Instant::now());
            }
        }
        Ok(found)
    }

    /// Whether `id` was found missing less than [`UNKNOWN_ID_TTL`] ago.
    fn known_missing(&self, id: TopicId) -> bool {
        self.unknown_ids
            .lock()
            .get(&id)
            .is_some_and(|at| at.elapsed() < UNKNOWN_ID_TTL)
    }

    /// The live topic `name`; [`BrokerError::UnknownTopic`] if there is none.
    pub async fn get(&self, name: &TopicName) -> Result<Topic> {
        let hit = self.cache.lock().get(name).cloned();
        let cached = match hit {
            Some(c) if !c.record.deleted => Some(c),
            _ => self.refresh(name).await?,
        };
        match cached {
            Some(c) if !c.record.deleted => Ok(self.topic(name, c.record)),
            _ => Err(BrokerError::UnknownTopic(name.to_string())),
        }
    }

    /// Creates a topic. Returns it and whether this call created it.
    pub async fn create(
        &self,
        name: &TopicName,
        partitions: u32,
        overrides: TopicOverrides,
        if_not_exists: bool,
        now_ms: i64,
    ) -> Result<(Topic, bool)> {
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(BrokerError::InvalidRequest(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        overrides.log_config(&self.defaults)?;
        let head = self.refresh(name).await?;
        let version = match &head {
            Some(c) if !c.record.deleted => {
                return if if_not_exists {
                    Ok((self.topic(name, c.record.clone()), false))
                } else {
                    Err(BrokerError::TopicAlreadyExists(name.to_string()))
                };
            }
            Some(c) => {
                // Re-create after delete: whatever the deleted incarnation
                // left (a purge that did not finish) goes now.
                self.purge_data(name, c.record.id).await?;
                c.version.next()
            }
            None => Version(1),
        };
        let record = TopicRecord {
            id: TopicId::random(),
            partitions,
            config: overrides,
            created_at_ms: now_ms,
            deleted: false,
            written_by: self.broker.0,
        };
        match self.chain(name).create(version, &record).await {
            Ok(()) => {
                let created = Cached {
                    version,
                    record: record.clone(),
                };
                // A later version already cached (deleted again at once)
                // stays.
                let _ = self.install(name, created);
                tracing::info!(topic = %name, partitions, %version, "topic created");
                Ok((self.topic(name, record), true))
            }
            Err(e) if e.is_fenced() => {
                // Someone else created (or deleted) it at the same time.
                match self.refresh(name).await? {
                    Some(c) if !c.record.deleted && if_not_exists => {
                        Ok((self.topic(name, c.record), false))
                    }
                    Some(c) if !c.record.deleted => {
                        Err(BrokerError::TopicAlreadyExists(name.to_string()))
                    }
                    _ => Err(BrokerError::storage(format!("creating topic {name}"), e)),
                }
            }
            Err(e) => Err(BrokerError::storage(format!("creating topic {name}"), e)),
        }
    }

    /// Changes the live topic `name` with `change` (given its current
    /// record; an error refuses the change) and writes the result as the
    /// next version of its chain, with the same id. A concurrent change by
    /// another broker is re-read and `change` applied again on top of it.
    /// The new settings are validated, and a partition count may only grow.
    pub async fn update(
        &self,
        name: &TopicName,
        mut change: impl FnMut(&TopicRecord) -> Result<TopicRecord>,
    ) -> Result<Topic> {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            let head = match self.refresh(name).await? {
                Some(c) if !c.record.deleted => c,
                _ => return Err(BrokerError::UnknownTopic(name.to_string())),
            };
            let record = self.changed(name, &head.record, &mut change)?;
            if record == head.record {
                return Ok(self.topic(name, record));
            }
            let version = head.version.next();
            match self.chain(name).create(version, &record).await {
                Ok(()) => {
                    let after = Cached {
                        version,
                        record: record.clone(),
                    };
                    if let Installed::Replaced(before) = self.install(name, after.clone()) {
                        self.note_change(name, before.as_ref(), Some(&after));
                    }
                    tracing::info!(topic = %name, partitions = record.partitions, %version, "topic changed");
                    return Ok(self.topic(name, record));
                }
                Err(e) if e.is_fenced() => continue,
                Err(e) => return Err(BrokerError::storage(format!("changing topic {name}"), e)),
            }
        }
        Err(BrokerError::storage(
            format!("changing topic {name}"),
            StorageError::Unavailable(format!("{ATTEMPTS} concurrent changes won the race; retry")),
        ))
    }

    /// What [`Self::update`] would make of the live topic `name` (its
    /// cached head), checked the same way, without writing it: a
    /// validate-only request.
    pub async fn check_update(
        &self,
        name: &TopicName,
        mut change: impl FnMut(&TopicRecord) -> Result<TopicRecord>,
    ) -> Result<Topic> {
        let head = self.get(name).await?;
        let record = self.changed(name, &head.record, &mut change)?;
        Ok(self.topic(name, record))
    }

    /// `change` applied to `head`, the live record of `name`, as the next
    /// record of its chain: same id, and checked.
    fn changed(
        &self,
        name: &TopicName,
        head: &TopicRecord,
        change: &mut impl FnMut(&TopicRecord) -> Result<TopicRecord>,
    ) -> Result<TopicRecord> {
        let mut record = change(head)?;
        record.id = head.id;
        record.deleted = false;
        record.created_at_ms = head.created_at_ms;
        record.written_by = self.broker.0;
        if record.partitions < head.partitions || record.partitions > MAX_PARTITIONS {
            return Err(BrokerError::InvalidRequest(format!(
                "{name} has {} partitions; the count can only grow, up to {MAX_PARTITIONS}, got {}",
                head.partitions, record.partitions
            )));
        }
        // New settings must be valid here; unchanged ones that this broker
        // ignores part of (see `stored_log_config`) do not block a change
        // of something else, such as the partition count.
        if record.config != head.config {
            record.config.log_config(&self.defaults)?;
        }
        Ok(record)
    }

    /// Marks the topic deleted (the next chain version). Returns the version
    /// of that marker. The caller must have released its partitions.
    pub async fn mark_deleted(&self, name: &TopicName, now_ms: i64) -> Result<Version> {
        let Some(head) = self.refresh(name).await? else {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        };
        if head.record.deleted {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        let record = TopicRecord {
            deleted: true,
            created_at_ms: now_ms,
            written_by: self.broker.0,
            ..head.record.clone()
        };
        let version = head.version.next();
        self.chain(name)
            .create(version, &record)
            .await
            .map_err(|e| BrokerError::storage(format!("deleting topic {name}"), e))?;
        let _ = self.install(name, Cached { version, record });
        tracing::info!(topic = %name, %version, "topic deleted");
        Ok(version)
    }

    /// Deletes what the topic deleted by marker `marker` left behind: its
    /// incarnation's data prefix `topics/{topic}/{id}/`. A topic re-created
    /// since has another id and is not touched. Idempotent.
    pub async fn purge_deleted(&self, name: &TopicName, marker: Version) -> Result<usize> {
        let record = self.chain(name).read(marker).await.map_err(|e| {
            BrokerError::storage(format!("reading the deletion of topic {name}"), e)
        })?;
        self.purge_data(name, record.id).await
    }

    /// Deletes every object under one incarnation's data prefix
    /// (manifests, segments). Idempotent.
    async fn purge_data(&self, name: &TopicName, id: TopicId) -> Result<usize> {
        let n = purge_prefix(&self.store, &keys::topic_data_root(name, id))
            .await
            .map_err(|e| {
                BrokerError::storage(format!("deleting the data of topic {name}"), e.into())
            })?;
        if n > 0 {
            tracing::info!(topic = %name, %id, objects = n, "deleted topic data");
        }
        Ok(n)
    }

    /// All live topics, sorted by name (cached records are trusted).
    pub async fn list(&self) -> Result<Vec<Topic>> {
        self.list_with(false).await
    }

    /// All live topics, re-reading every topic's head (sees deletes and
    /// re-creates made by other brokers; a LIST, then a LIST and a GET per
    /// topic).
    pub async fn list_fresh(&self) -> Result<Vec<Topic>> {
        self.list_with(true).await
    }

    /// All live topics this broker's cache knows, without IO (a topic
    /// created elsewhere and not announced here is missing until a list).
    pub fn list_cached(&self) -> Result<Vec<Topic>> {
        let live: Vec<(TopicName, TopicRecord)> = self
            .cache
            .lock()
            .iter()
            .filter(|(_, c)| !c.record.deleted)
            .map(|(name, c)| (name.clone(), c.record.clone()))
            .collect();
        let mut topics = live
            .into_iter()
            .map(|(name, record)| self.topic(&name, record))
            .collect::<Vec<_>>();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// The head of a listed topic: the cached one unless `fresh` (or not
    /// cached), else read.
    async fn listed_head(
        &self,
        name: &TopicName,
        fresh: bool,
    ) -> Result<(TopicName, Option<Cached>)> {
        let hit = self.cache.lock().get(name).cloned();
        let cached = match hit {
            Some(c) if !fresh => Some(c),
            _ => self.refresh(name).await?,
        };
        Ok((name.clone(), cached))
    }

    async fn list_with(&self, fresh: bool) -> Result<Vec<Topic>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&keys::topics_prefix()))
            .await
            .map_err(|e| BrokerError::storage("listing topics", e.into()))?;
        let names: Vec<TopicName> = listing
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename().and_then(|n| TopicName::new(n).ok()))
            .collect();
        // Head reads, a few at a time: a broker with many topics must not
        // wait one store round trip per topic in turn.
        let heads: Vec<(TopicName, Option<Cached>)> = futures::stream::iter(names)
            .map(|name| async move { self.listed_head(&name, fresh).await }.boxed())
            .buffer_unordered(LIST_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut topics = heads
            .into_iter()
            .filter_map(|(name, c)| c.filter(|c| !c.record.deleted).map(|c| (name, c.record)))
            .map(|(name, record)| self.topic(&name, record))
            .collect::<Vec<_>>();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }
}

/// Deletes every object under `prefix`, eight at a time. Returns how many.
pub(crate) async fn purge_prefix(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
) -> std::result::Result<usize, object_store::Error> {
    let doomed: Vec<Path> = store
        .list(Some(prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    let n = doomed.len();
    futures::stream::iter(doomed)
        .map(|p| async move {
            match store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn registry() -> TopicRegistry {
        on(Arc::new(InMemory::new()), 0)
    }

    fn name(s: &str) -> TopicName {
        TopicName::new(s).expect("valid name")
    }

    /// Broker `broker`'s registry over `store`, with default settings.
    fn on(store: Arc<dyn ObjectStore>, broker: u32) -> TopicRegistry {
        TopicRegistry::new(store, BrokerId(broker), LogConfig::default())
    }

    /// `store` with every request `rule` picks delayed.
    fn slowed(
        store: Arc<dyn ObjectStore>,
        rule: strata_storage::store::FaultRule,
    ) -> Arc<dyn ObjectStore> {
        use strata_storage::store::{FaultConfig, FaultStore};
        Arc::new(FaultStore::new(
            store,
            FaultConfig {
                seed: 1,
                rules: vec![rule],
            },
        ))
    }

    #[tokio::test]
    async fn topics_are_found_by_id_and_an_unknown_id_costs_one_listing() {
        let store = Arc::new(strata_storage::store::MetricsStore::new(Arc::new(
            InMemory::new(),
        )));
        let stats = store.stats();
        let (a, b) = (on(store.clone(), 1), on(store, 2));
        let (orders, _) = a
            .create(&name("orders"), 2, TopicOverrides::default(), false, 1)
            .await
            .expect("create");
        // b has not seen it: found by listing.
        let found = b
            .get_by_id(orders.record.id, Instant::now())
            .await
            .expect("lookup");
        assert_eq!(found.map(|t| t.name), Some(name("orders")));
        let unknown = TopicId::random();
        let lists = stats.snapshot().list_requests;
        for _ in 0..5 {
            assert_eq!(
                b.get_by_id(unknown, Instant::now()).await.expect("lookup"),
                None
            );
        }
        assert_eq!(
            stats.snapshot().list_requests,
            lists + 2,
            "one listing (a LIST, and a head read of the one topic) for five lookups"
        );
        // Cached ones cost nothing.
        let lists = stats.snapshot().list_requests;
        assert!(
            b.get_by_id(orders.record.id, Instant::now())
                .await
                .expect("lookup")
                .is_some()
        );
        assert_eq!(stats.snapshot().list_requests, lists);
        assert_eq!(
            b.id_hints.lock().get(&orders.record.id),
            Some(&name("orders")),
            "found once, then by hint"
        );

        // Deleted and created again: the old id's hint no longer leads
        // anywhere, the new id is found.
        b.mark_deleted(&name("orders"), 2).await.expect("delete");
        assert_eq!(b.cached_by_id(orders.record.id), None);
        assert!(b.id_hints.lock().is_empty(), "a stale hint is dropped");
        let (again, _) = b
            .create(&name("orders"), 1, TopicOverrides::default(), false, 3)
            .await
            .expect("re-create");
        assert_eq!(b.cached_by_id(orders.record.id), None);
        assert_eq!(
            b.cached_by_id(again.record.id).map(|t| t.record.id),
            Some(again.record.id)
        );
    }

    #[tokio::test]
    async fn a_broker_that_missed_a_re_create_finds_the_new_id() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (a, b) = (on(store.clone(), 1), on(store, 2));
        let orders = name("orders");
        let (first, _) = a
            .create(&orders, 1, TopicOverrides::default(), false, 1)
            .await
            .expect("create");
        let since = Instant::now();
        assert!(
            b.get_by_id(first.record.id, since)
                .await
                .expect("lookup")
                .is_some()
        );
        // a deletes and creates it again; b hears of neither (a missed
        // announcement) and still caches the first incarnation as live.
        a.mark_deleted(&orders, 2).await.expect("delete");
        let (second, _) = a
            .create(&orders, 3, TopicOverrides::default(), false, 3)
            .await
            .expect("re-create");
        let found = b
            .get_by_id(second.record.id, Instant::now())
            .await
            .expect("lookup");
        assert_eq!(
            found.map(|t| (t.record.id, t.record.partitions)),
            Some((second.record.id, 3)),
            "a client holding the new id (from another broker's metadata) is served"
        );
        assert_eq!(b.cached_by_id(first.record.id), None, "the old id is gone");
        assert_eq!(
            b.take_changed(),
            vec![orders],
            "and its open partitions drop"
        );
    }

    #[tokio::test]
    async fn a_slow_read_of_an_old_head_never_replaces_a_newer_one() {
        use strata_storage::store::{FaultRule, Op};
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let orders = name("orders");
        // Reading the first version of the topic takes a while.
        let first_version = keys::topic_config_chain(&orders).version(Version(1));
        let slow = slowed(
            store.clone(),
            FaultRule::latency(
                Op::Get,
                Duration::from_millis(300),
                Duration::from_millis(300),
            )
            .with_key_prefix(first_version.to_string()),
        );
        let (a, b) = (on(store, 1), Arc::new(on(slow, 2)));
        a.create(&orders, 1, TopicOverrides::default(), false, 1)
            .await
            .expect("create");
        b.get(&orders).await.expect("b sees the first incarnation");
        // b starts re-reading the name, lists version 1 and reads it slowly;
        // meanwhile a deletes and re-creates the topic and a lookup by the
        // new id on b reads the new head.
        let slow_read = tokio::spawn({
            let (b, orders) = (b.clone(), orders.clone());
            async move { b.reread(&orders).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        a.mark_deleted(&orders, 2).await.expect("delete");
        let (second, _) = a
            .create(&orders, 1, TopicOverrides::default(), false, 3)
            .await
            .expect("re-create");
        let found = b.get_by_id(second.record.id, Instant::now()).await;
        assert!(found.expect("lookup").is_some());
        slow_read.await.expect("task").expect("reread");
        assert!(
            b.cached_by_id(second.record.id).is_some(),
            "the slow read of version 1 finished last and must not win"
        );
    }

    /// Creates topics `a`, `b` and `c` through `registry`.
    async fn create_three(registry: &TopicRegistry) {
        for t in ["a", "b", "c"] {
            registry
                .create(&name(t), 1, TopicOverrides::default(), false, 1)
                .await
                .expect("create");
        }
    }

    /// What listing the three topics of [`create_three`] costs: one LIST of
    /// names, then one head read per topic.
    const THREE_LISTING: u64 = 1 + 3;

    #[tokio::test]
    async fn unknown_ids_in_one_request_or_at_once_share_one_listing() {
        use strata_storage::store::{FaultRule, Op};

        let store = Arc::new(strata_storage::store::MetricsStore::new(Arc::new(
            InMemory::new(),
        )));
        let stats = store.stats();
        // Lists take a while, so lookups overlap them.
        let slow = slowed(
            store.clone(),
            FaultRule::latency(
                Op::List,
                Duration::from_millis(5),
                Duration::from_millis(10),
            ),
        );
        let (a, b) = (on(store, 1), Arc::new(on(slow, 2)));
        create_three(&a).await;
        let listing = THREE_LISTING;
        let lists = stats.snapshot().list_requests;
        // One request naming five unknown ids, looked up in turn.
        let request = Instant::now();
        for _ in 0..5 {
            let found = b.get_by_id(TopicId::random(), request).await;
            assert_eq!(found.expect("lookup"), None);
        }
        assert_eq!(stats.snapshot().list_requests, lists + listing);
        // Eight requests at once, each with an unknown id: one listing in
        // flight and at most one after it.
        let lists = stats.snapshot().list_requests;
        let lookups = (0..8).map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.get_by_id(TopicId::random(), Instant::now()).await })
        });
        for found in futures::future::join_all(lookups).await {
            assert_eq!(found.expect("task").expect("lookup"), None);
        }
        assert!(
            stats.snapshot().list_requests <= lists + 2 * listing,
            "{} LISTs for eight concurrent unknown ids",
            stats.snapshot().list_requests - lists
        );
    }

    /// A client that keeps sending new unknown ids, one request after
    /// another, costs at most one listing a second: before, every request
    /// listed the bucket (a LIST, then a head read per topic name).
    #[tokio::test(start_paused = true)]
    async fn new_unknown_ids_list_the_bucket_at_most_once_a_second() {
        let store = Arc::new(strata_storage::store::MetricsStore::new(Arc::new(
            InMemory::new(),
        )));
        let stats = store.stats();
        let (a, b) = (on(store.clone(), 1), on(store, 2));
        create_three(&a).await;
        let listing = THREE_LISTING;
        let lists = stats.snapshot().list_requests;
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            let found = b.get_by_id(TopicId::random(), Instant::now()).await;
            assert_eq!(found.expect("lookup"), None);
        }
        let listings = (stats.snapshot().list_requests - lists) / listing;
        let seconds = start.elapsed().as_secs();
        assert!(
            listings <= 1 + seconds,
            "{listings} listings in {:?}",
            start.elapsed()
        );
        // A topic created meanwhile is still found by its id.
        let (created, _) = a
            .create(&name("d"), 1, TopicOverrides::default(), false, 1)
            .await
            .expect("create");
        let found = b.get_by_id(created.record.id, Instant::now()).await;
        assert_eq!(
            found.expect("lookup").map(|t| t.record.id),
            Some(created.record.id)
        );

        // Listings that fail count too: a store that refuses them is not
        // asked again at once by every lookup waiting behind them.
        let failing = Arc::new(strata_storage::store::MetricsStore::new(slowed(
            Arc::new(InMemory::new()),
            strata_storage::store::FaultRule::errors(strata_storage::store::Op::List, 1.0),
        )));
        let stats = failing.stats();
        let c = on(failing, 3);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            assert!(
                c.get_by_id(TopicId::random(), Instant::now())
                    .await
                    .is_err()
            );
        }
        let lists = stats.snapshot().list_requests;
        assert!(
            lists <= 1 + start.elapsed().as_secs(),
            "{lists} failed LISTs"
        );
    }

    #[tokio::test]
    async fn updates_keep_the_id_grow_partitions_and_tell_other_brokers() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (a, b) = (on(store.clone(), 1), on(store, 2));
        let t = name("orders");
        let (topic, _) = a
            .create(&t, 2, TopicOverrides::default(), false, 1)
            .await
            .expect("create");
        b.get(&t).await.expect("b sees it");

        let grown = a
            .update(&t, |r| {
                Ok(TopicRecord {
                    partitions: 4,
                    ..r.clone()
                })
            })
            .await
            .expect("grow");
        assert_eq!(grown.record.partitions, 4);
        assert_eq!(grown.record.id, topic.record.id, "same incarnation");
        assert!(
            matches!(
                a.update(&t, |r| Ok(TopicRecord {
                    partitions: 3,
                    ..r.clone()
                }))
                .await,
                Err(BrokerError::InvalidRequest(m)) if m.contains("only grow")
            ),
            "a partition count never shrinks"
        );
        let bad = a
            .update(&t, |r| {
                let mut r = r.clone();
                r.config.segment_bytes = Some(10);
                Ok(r)
            })
            .await;
        assert!(
            matches!(bad, Err(BrokerError::InvalidRequest(_))),
            "{bad:?}"
        );

        // A change of settings: both brokers learn it, neither takes it for
        // a delete or re-create (open partitions are released, not dropped).
        let altered = a
            .update(&t, |r| {
                let mut r = r.clone();
                r.config.retention_ms = Some(60_000);
                Ok(r)
            })
            .await
            .expect("alter");
        assert_eq!(
            altered.log_config.retention_ms,
            Some(Duration::from_secs(60))
        );
        assert_eq!(a.take_reconfigured(), vec![t.clone()]);
        b.reread(&t).await.expect("reread");
        assert_eq!(b.take_reconfigured(), vec![t.clone()]);
        assert!(a.take_changed().is_empty() && b.take_changed().is_empty());
        let seen = b.get(&t).await.expect("get");
        assert_eq!(seen.record.partitions, 4);
        assert_eq!(seen.record.config.retention_ms, Some(60_000));

        // A concurrent change from a broker with a stale cache lands on top
        // of the other one instead of overwriting it.
        a.update(&t, |r| {
            let mut r = r.clone();
            r.config.segment_ms = Some(1000);
            Ok(r)
        })
        .await
        .expect("a changes");
        let merged = b
            .update(&t, |r| {
                let mut r = r.clone();
                r.config.retention_bytes = Some(1 << 20);
                Ok(r)
            })
            .await
            .expect("b changes");
        assert_eq!(merged.record.config.segment_ms, Some(1000));
        assert_eq!(merged.record.config.retention_bytes, Some(1 << 20));

        a.mark_deleted(&t, 2).await.expect("delete");
        assert!(matches!(
            b.update(&t, |r| Ok(r.clone())).await,
            Err(BrokerError::UnknownTopic(_))
        ));
    }

    #[tokio::test]
    async fn create_get_list_delete_recreate() {
        let r = registry();
        let t = name("orders");
        assert!(matches!(r.get(&t).await, Err(BrokerError::UnknownTopic(_))));
        let (topic, created) = r
            .create(&t, 3, TopicOverrides::default(), false, 1)
            .await
            .expect("create");
        assert!(created);
        assert_eq!(topic.record.partitions, 3);
        assert!(matches!(
            r.create(&t, 3, TopicOverrides::default(), false, 1).await,
            Err(BrokerError::TopicAlreadyExists(_))
        ));
        let (_, created) = r
            .create(&t, 5, TopicOverrides::default(), true, 1)
            .await
            .expect("if_not_exists");
        assert!(!created);
        assert_eq!(r.list().await.expect("list").len(), 1);

        // Leftover partition data of the deleted incarnation is removed on
        // re-create, and the new incarnation gets a new id.
        let old_id = topic.record.id;
        let leftover = keys::topic_data_root(&t, old_id)
            .join("0")
            .join("manifest")
            .join("x.json");
        r.store.put(&leftover, "x".into()).await.expect("put");
        r.mark_deleted(&t, 2).await.expect("delete");
        assert!(matches!(r.get(&t).await, Err(BrokerError::UnknownTopic(_))));
        assert!(r.list().await.expect("list").is_empty());
        let (topic, created) = r
            .create(&t, 2, TopicOverrides::default(), false, 3)
            .await
            .expect("re-create");
        assert!(created && topic.record.partitions == 2);
        assert_ne!(topic.record.id, old_id, "a re-created topic gets a new id");
        assert!(r.store.head(&leftover).await.is_err());

        // The purge after a delete removes only its own incarnation's data,
        // however late it runs: a re-created topic's data stays.
        let old = keys::topic_data_root(&t, topic.record.id)
            .join("0")
            .join("segments")
            .join("old");
        r.store.put(&old, "old".into()).await.expect("put");
        let marker = r.mark_deleted(&t, 4).await.expect("delete");
        let (recreated, _) = r
            .create(&t, 2, TopicOverrides::default(), false, 5)
            .await
            .expect("re-create");
        let new = keys::topic_data_root(&t, recreated.record.id)
            .join("0")
            .join("segments")
            .join("new");
        r.store.put(&new, "new".into()).await.expect("put");
        // (The re-create purged the old incarnation already.)
        assert_eq!(r.purge_deleted(&t, marker).await.expect("purge"), 0);
        assert!(
            r.store.head(&new).await.is_ok(),
            "the new topic's data stays"
        );
        r.store.put(&old, "old".into()).await.expect("put");
        assert_eq!(r.purge_deleted(&t, marker).await.expect("purge"), 1);
        assert!(r.store.head(&old).await.is_err(), "the deleted one's: gone");
        assert!(r.store.head(&new).await.is_ok(), "the live one's: kept");
        let marker = r.mark_deleted(&t, 6).await.expect("delete");
        assert_eq!(r.purge_deleted(&t, marker).await.expect("purge"), 1);
        r.create(&t, 2, TopicOverrides::default(), false, 7)
            .await
            .expect("re-create");

        // A second registry (another broker) sees it through the bucket.
        let other = on(r.store.clone(), 1);
        assert_eq!(other.get(&t).await.expect("get").record.partitions, 2);
    }

    #[tokio::test]
    async fn bad_requests_are_invalid_request() {
        let r = registry();
        let t = name("t");
        for n in [0, MAX_PARTITIONS + 1] {
            assert!(matches!(
                r.create(&t, n, TopicOverrides::default(), false, 0).await,
                Err(BrokerError::InvalidRequest(_))
            ));
        }
        let bad = TopicOverrides {
            segment_bytes: Some(10),
            ..TopicOverrides::default()
        };
        let err = r
            .create(&t, 1, bad, false, 0)
            .await
            .expect_err("bad config");
        assert!(err.to_string().contains("segment_bytes"), "{err}");
        assert!(parse_name("a/b").is_err());
    }

    /// Topic settings are checked against the broker's defaults when they
    /// are set; a broker whose defaults changed since (its
    /// `log.max_batch_bytes` went up past a topic's `segment_bytes`, or
    /// down below a topic's `max_batch_bytes`) still lists and serves the
    /// topic, with the override it cannot apply replaced by its default.
    /// Before, that one topic failed every listing on the broker: Metadata
    /// for all topics, the controller's assignment, lookups by id.
    #[tokio::test]
    async fn settings_stored_under_other_defaults_do_not_fail_the_listing() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let before = on(store.clone(), 0);
        let small_segments = TopicOverrides {
            segment_bytes: Some(1 << 20),
            retention_ms: Some(60_000),
            ..TopicOverrides::default()
        };
        let big_batches = TopicOverrides {
            max_batch_bytes: Some(1 << 20),
            ..TopicOverrides::default()
        };
        for (t, o) in [("small", small_segments), ("big", big_batches)] {
            before
                .create(&name(t), 1, o, false, 0)
                .await
                .expect("create");
        }
        before
            .create(&name("plain"), 1, TopicOverrides::default(), false, 0)
            .await
            .expect("create");

        for max_batch_bytes in [4 << 20, 512 << 10] {
            let defaults = LogConfig {
                max_batch_bytes,
                ..LogConfig::default()
            };
            let after = TopicRegistry::new(store.clone(), BrokerId(1), defaults.clone());
            let listed = after.list_fresh().await.expect("list");
            let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["big", "plain", "small"]);
            for t in &listed {
                t.log_config.validate().expect("applied settings are valid");
            }
            let small = after.get(&name("small")).await.expect("get");
            let big = after.get(&name("big")).await.expect("get");
            // What still fits is kept.
            assert_eq!(small.log_config.retention_ms, Some(Duration::from_secs(60)));
            if max_batch_bytes > 1 << 20 {
                // The segment size stays; the batch limit follows it down.
                assert_eq!(small.log_config.segment_bytes, 1 << 20);
                assert_eq!(small.log_config.max_batch_bytes, 1 << 20);
                assert_eq!(big.log_config.max_batch_bytes, 1 << 20);
            } else {
                assert_eq!(small.log_config.segment_bytes, 1 << 20);
                assert_eq!(big.log_config.max_batch_bytes, max_batch_bytes);
                // Kafka's DescribeConfigs then says where the value is from.
                assert_eq!(big.overrides.max_batch_bytes, None);
                assert_eq!(big.record.config.max_batch_bytes, Some(1 << 20));
            }
            // A validate-only request is checked as the change itself: an
            // unchanged setting this broker ignores does not refuse it.
            let checked = after
                .check_update(&name("big"), |r| Ok(r.clone()))
                .await
                .expect("validate an unchanged record");
            assert_eq!(checked.log_config, big.log_config);
            assert_eq!(checked.overrides, big.overrides);
            // A change of something else is not blocked by what this
            // broker ignores.
            let grown = after
                .update(&name("big"), |r| {
                    let mut r = r.clone();
                    r.partitions += 1;
                    Ok(r)
                })
                .await
                .expect("add a partition");
            assert_eq!(grown.record.config, big.record.config);
        }
    }

    #[test]
    fn overrides_map_onto_log_config() {
        let d = LogConfig::default();
        let o = TopicOverrides {
            retention_ms: Some(-1),
            retention_bytes: Some(1 << 30),
            segment_bytes: Some(1 << 20),
            segment_ms: Some(1000),
            max_batch_bytes: Some(4096),
            timestamp_type: Some("LogAppendTime".into()),
            timestamp_before_max_ms: Some(60_000),
            timestamp_after_max_ms: Some(-1),
        };
        let c = o.log_config(&d).expect("valid");
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.retention_bytes, Some(1 << 30));
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.segment_ms, Duration::from_secs(1));
        assert_eq!(c.max_batch_bytes, 4096);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(c.timestamp_before_max, Some(Duration::from_secs(60)));
        assert_eq!(c.timestamp_after_max, None);
        let bad = TopicOverrides {
            timestamp_type: Some("WallClock".into()),
            ..TopicOverrides::default()
        };
        let err = bad.log_config(&d).expect_err("unknown type");
        assert!(
            err.to_string().contains("CreateTime or LogAppendTime"),
            "{err}"
        );
    }
}
