//! Every object key Strata writes, built from typed parts. No other module
//! formats a key: they all come from here, so the bucket layout
//! (DESIGN §3) is defined in one place.
//!
//! ```text
//! cluster/controller/{term:020}.json
//! cluster/assignment/{version:020}.json
//! cluster/producer-ids/{version:020}.json
//! cluster/brokers/{broker_id}/heartbeat.json
//! cluster/ids/{broker_id:010}/{generation:020}.json
//! cluster/layout.json
//! topics/{topic}/config/{version:020}.json
//! topics/{topic}/{topic_id}/{partition}/manifest/{version:020}.json
//! topics/{topic}/{topic_id}/{partition}/segments/{base_offset:020}-{uuid}.seg
//! topics/{topic}/{topic_id}/{partition}/archive/{base_offset:020}-{uuid}.json
//! wal/{broker_id}/{incarnation:020}/{seq:020}.wal
//! ```
//!
//! A topic's data lives under its [`TopicId`], fixed when the topic is
//! created (Kafka's KIP-516): a name deleted and re-created gets a new id,
//! so the manifest chains and segments of two incarnations of one name
//! never meet, whatever a paused broker writes when it wakes up.
//!
//! Numbers are zero-padded to 20 digits so that lexicographic order (what a
//! LIST returns and what `list_with_offset` compares) is numeric order.
//! Keys are relative: the configurable root prefix is applied by wrapping the
//! store in `object_store::prefix::PrefixStore`.

use std::fmt;
use std::sync::Arc;

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest topic name accepted (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates `name` as a topic name.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidName {
            what: "topic name",
            reason,
            value: name.to_string(),
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return Err(invalid("it is longer than 249 characters"));
        }
        if name == "." || name == ".." {
            return Err(invalid("'.' and '..' are reserved"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "only ASCII letters, digits, '.', '_' and '-' are allowed",
            ));
        }
        Ok(Self(name.into()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TopicName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::new(&value)
    }
}

impl From<TopicName> for String {
    fn from(value: TopicName) -> Self {
        value.0.to_string()
    }
}

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic.
    pub topic: TopicName,
    /// The partition number.
    pub partition: u32,
}

impl TopicPartition {
    /// Builds a topic-partition, validating the topic name.
    pub fn new(topic: &str, partition: u32) -> Result<Self> {
        Ok(Self {
            topic: TopicName::new(topic)?,
            partition,
        })
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A topic's identity, fixed at creation: a random UUID. Written in keys
/// and JSON as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicId(pub uuid::Uuid);

impl TopicId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Parses the 32-hex-digit form (the hyphenated form is accepted too).
    pub fn parse(s: &str) -> Result<Self> {
        uuid::Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| Error::InvalidName {
                what: "topic id",
                reason: "it is not a UUID",
                value: s.to_string(),
            })
    }

    /// The 16 bytes (Kafka's wire form of a topic id).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

impl TryFrom<String> for TopicId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::parse(&value)
    }
}

impl From<TopicId> for String {
    fn from(value: TopicId) -> Self {
        value.to_string()
    }
}

/// A partition of one incarnation of a topic: what storage keys and WAL
/// chunks are addressed by. Two topics of the same name (deleted and
/// re-created) have different ids, so their partitions never compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicIdPartition {
    /// The topic's id.
    pub topic_id: TopicId,
    /// The topic name and partition number.
    pub tp: TopicPartition,
}

impl TopicIdPartition {
    /// Pairs `tp` with its topic's id.
    pub fn new(topic_id: TopicId, tp: TopicPartition) -> Self {
        Self { topic_id, tp }
    }
}

impl fmt::Display for TopicIdPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tp)
    }
}

/// A broker's stable identity (from its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BrokerId(pub u32);

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One run of a broker process. A restarted broker is a new incarnation, with
/// its own WAL stream; fencing an incarnation never affects the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// A fresh incarnation: milliseconds since the epoch in the high bits
    /// (so later runs sort later) and random low bits (so two runs in the
    /// same millisecond differ).
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self((millis << 16) | u64::from(rand::random::<u16>()))
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The sequence number of a WAL object within one incarnation's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WalSeq(pub u64);

impl fmt::Display for WalSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A version in a create-only chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The version after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn padded(n: u64) -> String {
    format!("{n:020}")
}

/// Parses a zero-padded number out of the last path segment `{n:020}{ext}`.
fn parse_padded(path: &Path, ext: &str) -> Option<u64> {
    let name = path.filename()?;
    let digits = name.strip_suffix(ext)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The prefix of a create-only chain of JSON documents (manifests, configs, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPrefix(Path);

impl ChainPrefix {
    /// The key of `version` in this chain.
    pub fn version(&self, version: Version) -> Path {
        self.0.clone().join(format!("{}.json", padded(version.0)))
    }

    /// The version a key of this chain names, or `None` for foreign keys.
    pub fn parse(&self, key: &Path) -> Option<Version> {
        if key.prefix_match(&self.0)?.count() != 1 {
            return None;
        }
        parse_padded(key, ".json").map(Version)
    }

    /// The prefix itself, for LIST.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// The chain of a partition's manifests.
pub fn manifest_chain(p: &TopicIdPartition) -> ChainPrefix {
    ChainPrefix(partition_root(p).join("manifest"))
}

/// The chain of a topic's configurations.
pub fn topic_config_chain(topic: &TopicName) -> ChainPrefix {
    ChainPrefix(topic_root(topic).join("config"))
}

/// The chain of controller terms.
pub fn controller_chain() -> ChainPrefix {
    ChainPrefix(Path::from("cluster").join("controller"))
}

/// The chain of partition assignments.
pub fn assignment_chain() -> ChainPrefix {
    ChainPrefix(Path::from("cluster").join("assignment"))
}

/// The chain of producer-id block allocations (each version reserves the
/// next block of ids, so ids are unique across brokers and restarts).
pub fn producer_id_chain() -> ChainPrefix {
    ChainPrefix(Path::from("cluster").join("producer-ids"))
}

/// Where a broker publishes its heartbeat (the only overwritten object).
pub fn heartbeat(broker: BrokerId) -> Path {
    Path::from("cluster")
        .join("brokers")
        .join(broker.0.to_string())
        .join("heartbeat.json")
}

/// The prefix holding every broker's heartbeat.
pub fn heartbeats_prefix() -> Path {
    Path::from("cluster").join("brokers")
}

/// The prefix holding the claims of every numeric broker id
/// (`broker_id = "auto"`).
pub fn broker_id_claims_prefix() -> Path {
    Path::from("cluster").join("ids")
}

/// The chain of claims of one broker id: each version names the broker
/// process that holds the id (or says it was released). The id is
/// zero-padded to 10 digits so that a LIST returns ids in numeric order.
pub fn broker_id_claim_chain(broker: BrokerId) -> ChainPrefix {
    ChainPrefix(broker_id_claims_prefix().join(format!("{:010}", broker.0)))
}

/// The broker id and claim version a key of a claim chain names, or `None`
/// for foreign keys.
pub fn parse_broker_id_claim(key: &Path) -> Option<(BrokerId, Version)> {
    let mut parts = key.prefix_match(&broker_id_claims_prefix())?;
    let id = parts.next()?;
    let id = id.as_ref();
    if id.len() != 10 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let broker = BrokerId(id.parse().ok()?);
    let version = broker_id_claim_chain(broker).parse(key)?;
    Some((broker, version))
}

/// The prefix holding all topics.
pub fn topics_prefix() -> Path {
    Path::from("topics")
}

/// The prefix holding everything of one topic name: its config chain and
/// the data of each of its incarnations.
pub fn topic_root(topic: &TopicName) -> Path {
    topics_prefix().join(topic.as_str())
}

/// The prefix holding the data (manifests, segments) of one incarnation of
/// a topic.
pub fn topic_data_root(topic: &TopicName, id: TopicId) -> Path {
    topic_root(topic).join(id.to_string())
}

/// The topic id a `topics/{topic}/{id}/` prefix names, or `None` for the
/// config chain and foreign keys.
pub fn parse_topic_data_root(topic: &TopicName, prefix: &Path) -> Option<TopicId> {
    let mut parts = prefix.prefix_match(&topic_root(topic))?;
    let part = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let s = part.as_ref();
    if s.len() != 32 {
        return None;
    }
    TopicId::parse(s).ok()
}

fn partition_root(p: &TopicIdPartition) -> Path {
    topic_data_root(&p.tp.topic, p.topic_id).join(p.tp.partition.to_string())
}

/// The prefix of a partition's segment objects.
pub fn segments_prefix(p: &TopicIdPartition) -> Path {
    partition_root(p).join("segments")
}

/// The prefix of a partition's state snapshots (see [`crate::snapshot`]).
pub fn snapshots_prefix(p: &TopicIdPartition) -> Path {
    partition_root(p).join("snapshots")
}

/// The snapshot of a partition's state covering the records below
/// `offset`.
pub fn snapshot(p: &TopicIdPartition, offset: i64) -> Path {
    snapshots_prefix(p).join(format!("{}.snap", padded(offset.max(0) as u64)))
}

/// A new, unique key for an archive of old segment entries starting at
/// `base_offset` (see [`crate::archive`]).
pub fn new_archive(p: &TopicIdPartition, base_offset: i64) -> Path {
    partition_root(p).join("archive").join(format!(
        "{}-{}.json",
        padded(base_offset.max(0) as u64),
        uuid::Uuid::new_v4().simple()
    ))
}

/// The base offset a segment or archive key names
/// (`{base_offset:020}-{uuid}.seg` or `.json`).
pub fn base_offset_of(key: &Path) -> Option<i64> {
    let name = key.filename()?;
    let digits = name.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || name.as_bytes().get(20) != Some(&b'-') {
        return None;
    }
    digits.parse().ok()
}

/// The prefix holding the users' SCRAM credentials, one object per user.
pub fn users_prefix() -> Path {
    Path::from("security").join("users")
}

/// Where user `name`'s SCRAM credentials live (`name` checked by the
/// caller: letters, digits and `._@-` only).
pub fn user(name: &str) -> Path {
    users_prefix().join(format!("{name}.json"))
}

/// The chain of ACL sets (each version is the whole set).
pub fn acl_chain() -> ChainPrefix {
    ChainPrefix(Path::from("security").join("acls"))
}

/// The secret brokers present to each other (created once, create-only).
pub fn cluster_secret() -> Path {
    Path::from("security").join("cluster-secret.json")
}

/// Where the bucket records which layout of keys it holds (see
/// [`crate::layout`]).
pub fn layout_marker() -> Path {
    Path::from("cluster").join("layout.json")
}

/// A new, unique segment key for a segment starting at `base_offset`.
pub fn new_segment(p: &TopicIdPartition, base_offset: i64) -> Path {
    segments_prefix(p).join(format!(
        "{}-{}.seg",
        padded(base_offset.max(0) as u64),
        uuid::Uuid::new_v4().simple()
    ))
}

/// One incarnation's WAL stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WalStream {
    /// The broker.
    pub broker: BrokerId,
    /// Its run.
    pub incarnation: Incarnation,
}

impl WalStream {
    /// The prefix holding the stream's objects, for LIST.
    pub fn prefix(&self) -> Path {
        Path::from("wal")
            .join(self.broker.0.to_string())
            .join(padded(self.incarnation.0))
    }

    /// The key of WAL object `seq`.
    pub fn object(&self, seq: WalSeq) -> Path {
        self.prefix().join(format!("{}.wal", padded(seq.0)))
    }

    /// The sequence number a key of this stream names.
    pub fn parse(&self, key: &Path) -> Option<WalSeq> {
        if key.prefix_match(&self.prefix())?.count() != 1 {
            return None;
        }
        parse_padded(key, ".wal").map(WalSeq)
    }
}

impl fmt::Display for WalStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broker {} incarnation {}", self.broker, self.incarnation)
    }
}

/// The prefix of one broker's WAL streams (all incarnations).
pub fn wal_broker_prefix(broker: BrokerId) -> Path {
    Path::from("wal").join(broker.0.to_string())
}

/// What an object of the bucket is, by its key (for garbage collection
/// and the bucket inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKind {
    /// A version of a topic's config chain.
    TopicConfig(TopicName),
    /// A version of a partition's manifest chain.
    Manifest(TopicIdPartition, Version),
    /// A sealed segment of a partition.
    Segment(TopicIdPartition),
    /// An archive of a partition's old segment entries.
    Archive(TopicIdPartition),
    /// A snapshot of state kept beside a partition's log, at an offset.
    Snapshot(TopicIdPartition, i64),
    /// A WAL object (data or tombstone) of one incarnation's stream.
    Wal(WalStream, WalSeq),
    /// Anything under `cluster/` (heartbeats, terms, assignments, ids).
    Cluster,
    /// Anything else (the store self-test's scratch objects, foreign keys).
    Other,
}

impl ObjectKind {
    /// Classifies `key`.
    pub fn of(key: &Path) -> Self {
        let parts: Vec<_> = key.parts().collect();
        let part = |i: usize| parts.get(i).map(|p| p.as_ref());
        match (part(0), parts.len()) {
            (Some("cluster"), _) => Self::Cluster,
            (Some("wal"), 4) => Self::wal(key, &parts).unwrap_or(Self::Other),
            (Some("topics"), 4) if part(2) == Some("config") => {
                match (part(1).map(TopicName::new), parse_padded(key, ".json")) {
                    (Some(Ok(t)), Some(_)) => Self::TopicConfig(t),
                    _ => Self::Other,
                }
            }
            (Some("topics"), 6) => Self::partition_object(key, &parts).unwrap_or(Self::Other),
            _ => Self::Other,
        }
    }

    fn wal(key: &Path, parts: &[object_store::path::PathPart<'_>]) -> Option<Self> {
        let broker = parts[1].as_ref().parse().ok()?;
        let incarnation = parts[2].as_ref();
        if incarnation.len() != 20 {
            return None;
        }
        let stream = WalStream {
            broker: BrokerId(broker),
            incarnation: Incarnation(incarnation.parse().ok()?),
        };
        Some(Self::Wal(stream, stream.parse(key)?))
    }

    fn partition_object(key: &Path, parts: &[object_store::path::PathPart<'_>]) -> Option<Self> {
        let topic = TopicName::new(parts[1].as_ref()).ok()?;
        let id = parts[2].as_ref();
        if id.len() != 32 {
            return None;
        }
        let partition = TopicIdPartition::new(
            TopicId::parse(id).ok()?,
            TopicPartition {
                topic,
                partition: parts[3].as_ref().parse().ok()?,
            },
        );
        match parts[4].as_ref() {
            "manifest" => Some(Self::Manifest(
                partition,
                Version(parse_padded(key, ".json")?),
            )),
            "segments" if parts[5].as_ref().ends_with(".seg") => Some(Self::Segment(partition)),
            "archive" if parts[5].as_ref().ends_with(".json") => Some(Self::Archive(partition)),
            "snapshots" => {
                let offset = i64::try_from(parse_padded(key, ".snap")?).ok()?;
                Some(Self::Snapshot(partition, offset))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_design() {
        let id = TopicId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let tp = TopicIdPartition::new(id, TopicPartition::new("orders", 3).unwrap());
        assert_eq!(
            manifest_chain(&tp).version(Version(42)).as_ref(),
            "topics/orders/0123456789abcdef0123456789abcdef/3/manifest/00000000000000000042.json"
        );
        let s = WalStream {
            broker: BrokerId(7),
            incarnation: Incarnation(5),
        };
        assert_eq!(
            s.object(WalSeq(9)).as_ref(),
            "wal/7/00000000000000000005/00000000000000000009.wal"
        );
        assert_eq!(s.parse(&s.object(WalSeq(9))), Some(WalSeq(9)));
        let seg = new_segment(&tp, 100);
        assert!(seg.as_ref().starts_with(
            "topics/orders/0123456789abcdef0123456789abcdef/3/segments/00000000000000000100-"
        ));
        let chain = manifest_chain(&tp);
        assert_eq!(chain.parse(&chain.version(Version(3))), Some(Version(3)));
        assert_eq!(
            chain.parse(&Path::from(
                "topics/orders/0123456789abcdef0123456789abcdef/3/manifest/x.json"
            )),
            None
        );
        assert_eq!(
            heartbeat(BrokerId(1)).as_ref(),
            "cluster/brokers/1/heartbeat.json"
        );
        let claim = broker_id_claim_chain(BrokerId(12)).version(Version(3));
        assert_eq!(
            claim.as_ref(),
            "cluster/ids/0000000012/00000000000000000003.json"
        );
        assert_eq!(
            parse_broker_id_claim(&claim),
            Some((BrokerId(12), Version(3)))
        );
        for foreign in [
            "cluster/ids/12/00000000000000000003.json",
            "cluster/ids/0000000012/x.json",
            "cluster/ids/0000000012",
            "cluster/brokers/1/heartbeat.json",
        ] {
            assert_eq!(
                parse_broker_id_claim(&Path::from(foreign)),
                None,
                "{foreign}"
            );
        }
        let name = TopicName::new("orders").unwrap();
        assert_eq!(
            parse_topic_data_root(&name, &topic_data_root(&name, id)),
            Some(id)
        );
        assert_eq!(
            parse_topic_data_root(&name, &topic_config_chain(&name).path().clone()),
            None
        );
    }

    #[test]
    fn every_key_is_classified_by_its_kind() {
        let id = TopicId::random();
        let tp = TopicIdPartition::new(id, TopicPartition::new("orders", 3).unwrap());
        let s = WalStream {
            broker: BrokerId(7),
            incarnation: Incarnation(5),
        };
        let name = TopicName::new("orders").unwrap();
        let cases = [
            (
                manifest_chain(&tp).version(Version(4)),
                ObjectKind::Manifest(tp.clone(), Version(4)),
            ),
            (new_segment(&tp, 9), ObjectKind::Segment(tp.clone())),
            (new_archive(&tp, 9), ObjectKind::Archive(tp.clone())),
            (snapshot(&tp, 42), ObjectKind::Snapshot(tp.clone(), 42)),
            (s.object(WalSeq(3)), ObjectKind::Wal(s, WalSeq(3))),
            (
                topic_config_chain(&name).version(Version(1)),
                ObjectKind::TopicConfig(name.clone()),
            ),
            (heartbeat(BrokerId(1)), ObjectKind::Cluster),
            (
                broker_id_claim_chain(BrokerId(1)).version(Version(0)),
                ObjectKind::Cluster,
            ),
            (layout_marker(), ObjectKind::Cluster),
            (Path::from("selftest/x"), ObjectKind::Other),
            (
                Path::from("topics/orders/0/manifest/00000000000000000000.json"),
                ObjectKind::Other,
            ),
            (Path::from("wal/x/y/z.wal"), ObjectKind::Other),
        ];
        for (key, kind) in cases {
            assert_eq!(ObjectKind::of(&key), kind, "{key}");
        }
    }

    #[test]
    fn topic_ids_differ_and_round_trip() {
        let a = TopicId::random();
        assert_ne!(a, TopicId::random());
        assert_eq!(TopicId::parse(&a.to_string()).unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<TopicId>(&json).unwrap(), a);
        assert!(TopicId::parse("orders").is_err());
    }

    #[test]
    fn topic_names_are_validated() {
        assert!(TopicName::new("a.b_c-1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(TopicName::new(bad).is_err(), "{bad}");
        }
        assert!(TopicName::new(&"x".repeat(250)).is_err());
    }

    #[test]
    fn padded_keys_sort_numerically() {
        let s = WalStream {
            broker: BrokerId(1),
            incarnation: Incarnation(1),
        };
        assert!(s.object(WalSeq(9)).as_ref() < s.object(WalSeq(10)).as_ref());
    }
}
