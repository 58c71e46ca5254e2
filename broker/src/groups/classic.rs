//! Kafka's classic group protocol (JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup, client-side assignors) as a pure state machine, kept in the
//! same [`super::state::Group`] as the consumer-protocol members and the
//! committed offsets, so offsets committed by either side are the same
//! offsets. A group has members of one protocol at a time.
//!
//! States (as Kafka names them): `Empty` → a join → `PreparingRebalance`
//! (waits until every member rejoined, or the rebalance timeout, which
//! drops the laggards) → `CompletingRebalance` (a new generation: the
//! leader got every member's subscription and sends the assignment with
//! its SyncGroup) → `Stable`. A join of a new member or with a changed
//! subscription, a leave or a session timeout starts the next rebalance;
//! members learn of it from `REBALANCE_IN_PROGRESS` on their heartbeat.
//!
//! Requests that must wait (a join until the round completes, a sync
//! until the leader's assignment arrives) park a oneshot sender in the
//! member; the state is behind the shard's lock and is never held across
//! an await.
//!
//! The last stable generation (members, assignor, leader, assignments) is
//! persisted with the group ([`ClassicValue`]), so after a coordinator
//! failover the members carry on heartbeating at their generation with no
//! rebalance. A generation's SyncGroup answers wait until it is durable
//! ([`ClassicGroup::release`]): a coordinator that crashed before could
//! otherwise hand the same generation number to a different assignment.
//! A rebalance under way when the coordinator fails is lost: its members
//! are told to rejoin.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::oneshot;

use bytes::Buf;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Message};

use serde::{Deserialize, Serialize};

use super::state::{GroupError, Limits, Partitions};

/// A classic group's last stable generation, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicValue {
    /// The generation.
    pub generation: i32,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// The assignor.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// The members with their assignments.
    pub members: Vec<ClassicMemberValue>,
}

impl ClassicValue {
    /// About its size as JSON.
    pub fn approximate_bytes(&self) -> usize {
        let member = |m: &ClassicMemberValue| {
            let protocols: usize = m.protocols.iter().map(|(n, b)| n.len() + b.len() + 8).sum();
            m.id.len() + m.client_id.len() + m.host.len() + protocols + m.assignment.len() + 160
        };
        self.members.iter().map(member).sum::<usize>() + self.leader.len() + 100
    }
}

/// One classic member, as persisted (in a [`ClassicValue`]); its
/// subscriptions and assignment are the client's bytes, base64 in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMemberValue {
    /// Its id.
    pub id: String,
    /// Its instance id (static members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// The client's address.
    pub host: String,
    /// Its session timeout.
    pub session_timeout_ms: u32,
    /// Its rebalance timeout.
    pub rebalance_timeout_ms: u32,
    /// Its assignors in preference order, each with its subscription.
    #[serde(with = "base64_pairs")]
    pub protocols: Vec<(String, Bytes)>,
    /// Its assignment in the current generation.
    #[serde(with = "base64_bytes")]
    pub assignment: Bytes,
}

/// Bytes as one base64 string.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// `(name, bytes)` pairs with the bytes in base64.
mod base64_pairs {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        pairs: &[(String, Bytes)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text: Vec<(&str, String)> = pairs
            .iter()
            .map(|(n, b)| (n.as_str(), B64.encode(b)))
            .collect();
        text.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, Bytes)>, D::Error> {
        let text = Vec::<(String, String)>::deserialize(d)?;
        text.into_iter()
            .map(|(n, b)| {
                B64.decode(b)
                    .map(|b| (n, Bytes::from(b)))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// Decodes the `consumer` protocol's embedded format: a version, then the
/// message at that version (read at the newest we know when it is newer:
/// fields are only ever added at the end).
fn embedded<T: Decodable + Message>(mut bytes: Bytes) -> Option<T> {
    if bytes.len() < 2 {
        return None;
    }
    let version = bytes.get_i16().min(T::VERSIONS.max);
    T::decode(&mut bytes, version).ok()
}

/// Longest a member id handed out with `MEMBER_ID_REQUIRED` waits for the
/// member's second join.
const PENDING_MEMBER_MS: i64 = 60_000;

/// Most members handed an id but not joined yet.
const MAX_PENDING: usize = 1_000;

/// The classic group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    /// No members.
    Empty,
    /// Waiting for the members to rejoin.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl ClassicState {
    /// Kafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
        }
    }
}

/// A JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a new member.
    pub member_id: String,
    /// `group.instance.id`, for static members.
    pub instance_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// The client's address.
    pub host: String,
    /// Its session timeout.
    pub session_timeout_ms: u32,
    /// How long it may take to rejoin in a rebalance.
    pub rebalance_timeout_ms: u32,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// Its assignors in preference order, each with its subscription.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets `MEMBER_ID_REQUIRED`.
    pub require_known_member_id: bool,
}

/// One member, as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Its id.
    pub member_id: String,
    /// Its instance id.
    pub instance_id: Option<String>,
    /// Its subscription for the chosen assignor.
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// The new generation.
    pub generation: i32,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// The assignor chosen.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// Every member with its subscription (for the leader only).
    pub members: Vec<JoinedMember>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// The assignor.
    pub protocol_name: String,
    /// The member's assignment, as the leader encoded it.
    pub assignment: Bytes,
}

/// An answer now, or later through the receiver.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Answered.
    Now(Result<T, GroupError>),
    /// Answered once the round completes.
    Later(oneshot::Receiver<Result<T, GroupError>>),
}

/// One classic member.
#[derive(Debug)]
pub struct ClassicMember {
    /// What is persisted.
    pub value: ClassicMemberValue,
    session_deadline_ms: i64,
    awaiting_join: Option<oneshot::Sender<Result<JoinResult, GroupError>>>,
    awaiting_sync: Option<oneshot::Sender<Result<SyncResult, GroupError>>>,
}

impl ClassicMember {
    /// The topics it subscribes to, from its subscription for `protocol`
    /// in the `consumer` protocol's embedded format (empty when it does
    /// not parse: another protocol type).
    pub fn subscribed_topics(&self, protocol: &str) -> Vec<String> {
        embedded::<ConsumerProtocolSubscription>(self.metadata(protocol))
            .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    }

    /// Its assigned partitions, from its assignment in the `consumer`
    /// protocol's embedded format (empty when it does not parse).
    pub fn assigned_partitions(&self) -> Partitions {
        embedded::<ConsumerProtocolAssignment>(self.value.assignment.clone())
            .map(|a| {
                a.assigned_partitions
                    .iter()
                    .flat_map(|tp| {
                        tp.partitions
                            .iter()
                            .filter_map(|p| u32::try_from(*p).ok())
                            .map(|p| (tp.topic.0.to_string(), p))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Its subscription for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.value
            .protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// The classic members of one group.
#[derive(Debug)]
pub struct ClassicGroup {
    group: String,
    state: ClassicState,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, ClassicMember>,
    /// Ids handed out with `MEMBER_ID_REQUIRED`, until when.
    pending: HashMap<String, i64>,
    rebalance_deadline_ms: i64,
    /// The last stable generation, as persisted (its number alone once
    /// empty; `None` before the first).
    stable: Option<ClassicValue>,
    /// `stable` changed since the group last took note.
    dirty: bool,
    /// Its last member left since the group last took note.
    emptied: bool,
    /// The stable generation is not durable yet: SyncGroup answers wait
    /// for [`ClassicGroup::release`] with this token.
    unreleased: Option<u64>,
    /// Largest persisted value (`Limits::max_group_bytes`).
    max_value_bytes: usize,
}

/// Tokens of generations waiting to be durable, unique in the process, so
/// a write that finishes late never releases a later generation (or a
/// group of the same name created since).
static RELEASE_TOKENS: AtomicU64 = AtomicU64::new(1);

impl Clone for ClassicGroup {
    /// A copy for describing: parked requests stay with the original.
    fn clone(&self) -> Self {
        Self {
            group: self.group.clone(),
            state: self.state,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        ClassicMember {
                            value: m.value.clone(),
                            session_deadline_ms: m.session_deadline_ms,
                            awaiting_join: None,
                            awaiting_sync: None,
                        },
                    )
                })
                .collect(),
            pending: self.pending.clone(),
            rebalance_deadline_ms: self.rebalance_deadline_ms,
            stable: self.stable.clone(),
            dirty: self.dirty,
            emptied: self.emptied,
            unreleased: self.unreleased,
            max_value_bytes: self.max_value_bytes,
        }
    }
}

impl ClassicGroup {
    /// No members yet.
    pub fn new(group: String) -> Self {
        Self {
            group,
            state: ClassicState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline_ms: 0,
            stable: None,
            dirty: false,
            emptied: false,
            unreleased: None,
            max_value_bytes: Limits::default().max_group_bytes,
        }
    }

    /// The group as persisted: its last stable generation, every member
    /// with a fresh session from `now_ms` (or, persisted without members,
    /// empty at its generation).
    pub fn restore(group: String, value: Option<&ClassicValue>, now_ms: i64) -> Self {
        let mut g = Self::new(group);
        let Some(v) = value else {
            return g;
        };
        g.generation = v.generation;
        g.protocol_type = v.protocol_type.clone();
        g.stable = Some(v.clone());
        if v.members.is_empty() {
            return g;
        }
        g.state = ClassicState::Stable;
        g.protocol = Some(v.protocol.clone());
        g.leader = Some(v.leader.clone());
        g.members = v
            .members
            .iter()
            .map(|m| {
                let member = ClassicMember {
                    value: m.clone(),
                    session_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                    awaiting_join: None,
                    awaiting_sync: None,
                };
                (m.id.clone(), member)
            })
            .collect();
        g
    }

    /// What is persisted: the last stable generation (its number alone
    /// once the group has no members, or while its generation is too large
    /// to persist); `None` before the first.
    pub fn value(&self) -> Option<ClassicValue> {
        self.stable.clone()
    }

    /// True once if the persisted value changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// While a stable generation's SyncGroup answers wait for it to be
    /// durable: the token that releases them.
    pub fn unreleased(&self) -> Option<u64> {
        self.unreleased
    }

    /// The stable generation of `token` is durable: answers the SyncGroups
    /// waiting (nothing if the group has moved on since).
    pub fn release(&mut self, token: u64) {
        if self.unreleased != Some(token) || self.state != ClassicState::Stable {
            return;
        }
        self.unreleased = None;
        self.answer_syncs();
    }

    fn answer_syncs(&mut self) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.sync_result(&id);
            if let Some(tx) = self
                .members
                .get_mut(&id)
                .and_then(|m| m.awaiting_sync.take())
            {
                let _ = tx.send(Ok(result));
            }
        }
    }

    /// The stable generation of `token` could not be made durable: its
    /// members rejoin (a rebalance) instead of using it.
    pub fn abandon(&mut self, token: u64, now_ms: i64) {
        if self.unreleased == Some(token) && self.state == ClassicState::Stable {
            self.prepare_rebalance(now_ms);
        }
    }

    fn set_stable(&mut self, value: Option<ClassicValue>) {
        if self.stable != value {
            self.stable = value;
            self.dirty = true;
        }
    }

    /// The group has no members left: once a generation of it was
    /// persisted, its number alone is (so a coordinator that loads it
    /// counts on from there instead of handing the same numbers out
    /// again); a group that never got that far is forgotten, as Kafka
    /// forgets an empty group without offsets.
    fn emptied(&mut self) {
        self.emptied = true;
        let value = self.stable.is_some().then(|| self.generation_only());
        self.set_stable(value);
    }

    /// True once if its last member left since the last call.
    pub fn take_emptied(&mut self) -> bool {
        std::mem::take(&mut self.emptied)
    }

    /// What is persisted of a group without members, or whose stable
    /// generation is too large to persist: its generation alone.
    fn generation_only(&self) -> ClassicValue {
        ClassicValue {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: String::new(),
            leader: String::new(),
            members: Vec::new(),
        }
    }

    fn snapshot(&self) -> ClassicValue {
        ClassicValue {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone().unwrap_or_default(),
            leader: self.leader.clone().unwrap_or_default(),
            members: self.members.values().map(|m| m.value.clone()).collect(),
        }
    }

    /// Its state.
    pub fn state(&self) -> ClassicState {
        self.state
    }

    /// Its generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The protocol type (`consumer`), empty before the first join.
    pub fn protocol_type(&self) -> &str {
        &self.protocol_type
    }

    /// The assignor of the current generation.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The leader.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Its members.
    pub fn members(&self) -> impl Iterator<Item = &ClassicMember> {
        self.members.values()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True without members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn unknown(&self, member: &str) -> GroupError {
        GroupError::UnknownMember {
            group: self.group.clone(),
            member: member.to_owned(),
        }
    }

    /// Handles a JoinGroup at `now_ms`; `new_id` makes a member id.
    pub fn join(
        &mut self,
        req: JoinRequest,
        now_ms: i64,
        limits: &Limits,
        new_id: impl FnOnce() -> String,
    ) -> Outcome<JoinResult> {
        match self.try_join(req, now_ms, limits, new_id) {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Now(Err(e)),
        }
    }

    fn try_join(
        &mut self,
        req: JoinRequest,
        now_ms: i64,
        limits: &Limits,
        new_id: impl FnOnce() -> String,
    ) -> Result<Outcome<JoinResult>, GroupError> {
        let session = req.session_timeout_ms;
        if session < limits.min_session_timeout_ms || session > limits.max_session_timeout_ms {
            return Err(GroupError::Invalid(format!(
                "session timeout {session} ms is outside the coordinator's range \
                 [{}, {}] ms (group.min_session_timeout, group.max_session_timeout)",
                limits.min_session_timeout_ms, limits.max_session_timeout_ms
            )));
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Err(GroupError::InconsistentProtocol {
                group: self.group.clone(),
                detail: "a join must name a protocol type and at least one assignor".into(),
            });
        }
        if !self.members.is_empty() {
            if req.protocol_type != self.protocol_type {
                return Err(GroupError::InconsistentProtocol {
                    group: self.group.clone(),
                    detail: format!(
                        "protocol type {:?} differs from the group's {:?}",
                        req.protocol_type, self.protocol_type
                    ),
                });
            }
            let common = self.common_protocols(Some(&req.protocols));
            if common.is_empty() {
                return Err(GroupError::InconsistentProtocol {
                    group: self.group.clone(),
                    detail: "the member shares no assignor with the group's members".into(),
                });
            }
        }
        self.pending.retain(|_, until| *until > now_ms);
        self.max_value_bytes = limits.max_group_bytes;
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            // A static member coming back takes its old place.
            let old = req.instance_id.as_ref().and_then(|i| {
                self.members
                    .values()
                    .find(|m| m.value.instance_id.as_ref() == Some(i))
                    .map(|m| m.value.id.clone())
            });
            if let Some(old) = old {
                self.remove(&old);
            }
            member_id = new_id();
            if req.require_known_member_id && req.instance_id.is_none() {
                if self.pending.len() >= MAX_PENDING {
                    return Err(GroupError::Full {
                        group: self.group.clone(),
                        max: MAX_PENDING,
                    });
                }
                self.pending
                    .insert(member_id.clone(), now_ms + PENDING_MEMBER_MS);
                return Err(GroupError::MemberIdRequired {
                    group: self.group.clone(),
                    member: member_id,
                });
            }
        } else if !self.members.contains_key(&member_id)
            && self.pending.remove(&member_id).is_none()
        {
            return Err(self.unknown(&member_id));
        }
        if !self.members.contains_key(&member_id) && self.members.len() >= limits.max_members {
            return Err(GroupError::Full {
                group: self.group.clone(),
                max: limits.max_members,
            });
        }
        let (tx, rx) = oneshot::channel();
        let deadline = now_ms + i64::from(session);
        let changed = match self.members.get_mut(&member_id) {
            Some(m) => {
                let changed = m.value.protocols != req.protocols;
                m.value.protocols = req.protocols;
                m.value.session_timeout_ms = session;
                m.value.rebalance_timeout_ms = req.rebalance_timeout_ms;
                m.value.client_id = req.client_id;
                m.value.host = req.host;
                m.session_deadline_ms = deadline;
                changed
            }
            None => {
                self.members.insert(
                    member_id.clone(),
                    ClassicMember {
                        value: ClassicMemberValue {
                            id: member_id.clone(),
                            instance_id: req.instance_id,
                            client_id: req.client_id,
                            host: req.host,
                            session_timeout_ms: session,
                            rebalance_timeout_ms: req.rebalance_timeout_ms,
                            protocols: req.protocols,
                            assignment: Bytes::new(),
                        },
                        session_deadline_ms: deadline,
                        awaiting_join: None,
                        awaiting_sync: None,
                    },
                );
                self.protocol_type = req.protocol_type;
                true
            }
        };
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            // Nothing changed and nothing to redo: the current generation.
            ClassicState::Stable | ClassicState::CompletingRebalance if !changed && !is_leader => {
                return Ok(Outcome::Now(Ok(self.join_result(&member_id))));
            }
            ClassicState::PreparingRebalance => {}
            _ => self.prepare_rebalance(now_ms),
        }
        if let Some(m) = self.members.get_mut(&member_id) {
            m.awaiting_join = Some(tx);
        }
        self.maybe_complete_join();
        Ok(Outcome::Later(rx))
    }

    /// Assignors every member supports (and `extra`, a joining member's),
    /// in the first member's order of preference.
    fn common_protocols(&self, extra: Option<&[(String, Bytes)]>) -> Vec<String> {
        let mut lists = self
            .members
            .values()
            .map(|m| &m.value.protocols[..])
            .chain(extra);
        let Some(first) = lists.next() else {
            return Vec::new();
        };
        let mut common: Vec<String> = first.iter().map(|(n, _)| n.clone()).collect();
        for l in lists {
            common.retain(|n| l.iter().any(|(m, _)| m == n));
        }
        common
    }

    /// Starts a rebalance: members learn of it from their heartbeats and
    /// rejoin; pending syncs are told to rejoin.
    fn prepare_rebalance(&mut self, now_ms: i64) {
        self.unreleased = None;
        for m in self.members.values_mut() {
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(Err(GroupError::RebalanceInProgress {
                    group: self.group.clone(),
                }));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.value.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.state = ClassicState::PreparingRebalance;
        self.rebalance_deadline_ms = now_ms + i64::from(timeout);
    }

    /// Completes the round when every member rejoined.
    fn maybe_complete_join(&mut self) {
        if self.state == ClassicState::PreparingRebalance
            && self.members.values().all(|m| m.awaiting_join.is_some())
        {
            self.complete_join();
        }
    }

    /// A new generation with the members that rejoined.
    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.awaiting_join.is_some());
        self.generation += 1;
        for m in self.members.values_mut() {
            m.value.assignment = Bytes::new();
        }
        if self.members.is_empty() {
            self.state = ClassicState::Empty;
            self.leader = None;
            self.protocol = None;
            self.emptied();
            return;
        }
        self.protocol = self.common_protocols(None).into_iter().next();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = ClassicState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result(&id);
            if let Some(tx) = self
                .members
                .get_mut(&id)
                .and_then(|m| m.awaiting_join.take())
            {
                let _ = tx.send(Ok(result));
            }
        }
    }

    fn join_result(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.value.id.clone(),
                    instance_id: m.value.instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: protocol,
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    /// Checks `member` at `generation`.
    fn check(&self, member: &str, generation: i32) -> Result<(), GroupError> {
        if !self.members.contains_key(member) {
            return Err(self.unknown(member));
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                group: self.group.clone(),
                member: member.to_owned(),
                current: self.generation,
                got: generation,
            });
        }
        Ok(())
    }

    /// Handles a SyncGroup; `assignments` is the leader's (empty from
    /// others).
    pub fn sync(
        &mut self,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> Outcome<SyncResult> {
        if let Err(e) = self.check(member, generation) {
            return Outcome::Now(Err(e));
        }
        self.touch(member, now_ms);
        match self.state {
            ClassicState::Empty | ClassicState::PreparingRebalance => {
                Outcome::Now(Err(GroupError::RebalanceInProgress {
                    group: self.group.clone(),
                }))
            }
            ClassicState::Stable if self.unreleased.is_none() => {
                Outcome::Now(Ok(self.sync_result(member)))
            }
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member) {
                    m.awaiting_sync = Some(tx);
                }
                if self.state == ClassicState::CompletingRebalance
                    && self.leader.as_deref() == Some(member)
                {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.value.assignment = given.remove(&m.value.id).unwrap_or_default();
                    }
                    self.state = ClassicState::Stable;
                    let mut value = self.snapshot();
                    let bytes = value.approximate_bytes();
                    if bytes > self.max_value_bytes {
                        // Only its number is persisted: after a failover
                        // its members rejoin, at the next generation.
                        tracing::warn!(group = %self.group, bytes, max = self.max_value_bytes, "a classic group's generation is too large to persist; its members will rejoin after a coordinator failover");
                        value = self.generation_only();
                    }
                    // Answered once durable (see `release`).
                    self.unreleased = Some(RELEASE_TOKENS.fetch_add(1, Ordering::Relaxed));
                    self.set_stable(Some(value));
                }
                Outcome::Later(rx)
            }
        }
    }

    fn sync_result(&self, member: &str) -> SyncResult {
        SyncResult {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone().unwrap_or_default(),
            assignment: self
                .members
                .get(member)
                .map(|m| m.value.assignment.clone())
                .unwrap_or_default(),
        }
    }

    fn touch(&mut self, member: &str, now_ms: i64) {
        if let Some(m) = self.members.get_mut(member) {
            m.session_deadline_ms = now_ms + i64::from(m.value.session_timeout_ms);
        }
    }

    /// Handles a Heartbeat: `REBALANCE_IN_PROGRESS` tells the member to
    /// rejoin.
    pub fn heartbeat(
        &mut self,
        member: &str,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.check(member, generation)?;
        self.touch(member, now_ms);
        if self.state == ClassicState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress {
                group: self.group.clone(),
            });
        }
        Ok(())
    }

    /// Handles a LeaveGroup of `member` (by id, or by instance id when
    /// the id is empty).
    pub fn leave(
        &mut self,
        member: &str,
        instance_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let id = if member.is_empty() {
            instance_id
                .and_then(|i| {
                    self.members
                        .values()
                        .find(|m| m.value.instance_id.as_deref() == Some(i))
                        .map(|m| m.value.id.clone())
                })
                .ok_or_else(|| self.unknown(instance_id.unwrap_or_default()))?
        } else {
            member.to_owned()
        };
        if self.pending.remove(&id).is_some() {
            return Ok(());
        }
        if !self.members.contains_key(&id) {
            return Err(self.unknown(&id));
        }
        self.remove(&id);
        self.after_removal(now_ms);
        Ok(())
    }

    fn remove(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            let gone = || GroupError::UnknownMember {
                group: self.group.clone(),
                member: id.to_owned(),
            };
            if let Some(tx) = m.awaiting_join {
                let _ = tx.send(Err(gone()));
            }
            if let Some(tx) = m.awaiting_sync {
                let _ = tx.send(Err(gone()));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    fn after_removal(&mut self, now_ms: i64) {
        match self.state {
            ClassicState::PreparingRebalance => self.maybe_complete_join(),
            _ if self.members.is_empty() => {
                self.state = ClassicState::Empty;
                self.generation += 1;
                self.protocol = None;
                self.unreleased = None;
                self.emptied();
            }
            _ => self.prepare_rebalance(now_ms),
        }
    }

    /// The timer: drops members whose session ran out (members waiting in
    /// a join are not timed out) and, past the rebalance timeout,
    /// completes the round without the members that did not rejoin.
    /// Returns the members dropped.
    pub fn tick(&mut self, now_ms: i64) -> Vec<String> {
        self.pending.retain(|_, until| *until > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && now_ms > m.session_deadline_ms)
            .map(|m| m.value.id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        if !expired.is_empty() {
            self.after_removal(now_ms);
        }
        if self.state == ClassicState::PreparingRebalance && now_ms >= self.rebalance_deadline_ms {
            self.complete_join();
        }
        expired
    }

    /// Checks an offset commit by `member` at `generation`. As in Kafka,
    /// members of the current generation may commit while the group
    /// prepares a rebalance (that is when they commit before giving their
    /// partitions up), not while it waits for the new assignment.
    pub fn check_commit(&self, member: &str, generation: i32) -> Result<(), GroupError> {
        self.check(member, generation)?;
        if self.state == ClassicState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress {
                group: self.group.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    /// A consumer's JoinGroup as `member` (empty: new) offering `assignors`.
    pub(in crate::groups) fn req(member: &str, assignors: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: assignors
                .iter()
                .map(|a| ((*a).to_owned(), Bytes::from_static(b"sub")))
                .collect(),
            require_known_member_id: true,
        }
    }

    /// Joins with a fresh id (MEMBER_ID_REQUIRED, then the real join).
    fn join_new(g: &mut ClassicGroup, id: &str, now: i64) -> Outcome<JoinResult> {
        let first = g.join(req("", &["range"]), now, &limits(), || id.to_owned());
        assert!(matches!(
            first,
            Outcome::Now(Err(GroupError::MemberIdRequired { .. }))
        ));
        g.join(
            req(id, &["range", "roundrobin"]),
            now,
            &limits(),
            || unreachable!(),
        )
    }

    /// A SyncGroup whose generation is then made durable (`release`).
    fn synced(
        g: &mut ClassicGroup,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> Result<SyncResult, GroupError> {
        let outcome = g.sync(member, generation, assignments, now_ms);
        if let Some(token) = g.unreleased() {
            g.release(token);
        }
        now(outcome)
    }

    /// The answer of `o`, which must be ready.
    pub(in crate::groups) fn now<T: std::fmt::Debug>(o: Outcome<T>) -> Result<T, GroupError> {
        match o {
            Outcome::Now(r) => r,
            Outcome::Later(mut rx) => rx.try_recv().expect("answered"),
        }
    }

    #[test]
    fn a_round_gives_the_leader_every_subscription_and_the_leader_assigns() {
        let mut g = ClassicGroup::new("g".into());
        let a = now(join_new(&mut g, "a", 0)).unwrap();
        assert_eq!(
            (a.generation, a.leader.as_str(), a.members.len()),
            (1, "a", 1)
        );
        assert_eq!(a.protocol_name, "range");
        assert_eq!(g.state(), ClassicState::CompletingRebalance);
        let s = synced(
            &mut g,
            "a",
            1,
            vec![("a".into(), Bytes::from_static(b"all"))],
            1,
        )
        .unwrap();
        assert_eq!(s.assignment, Bytes::from_static(b"all"));
        assert_eq!(g.state(), ClassicState::Stable);

        // b joins: a learns of the rebalance from its heartbeat, rejoins.
        let Outcome::Later(mut b_join) = join_new(&mut g, "b", 2) else {
            panic!("b waits for a");
        };
        assert!(matches!(
            g.heartbeat("a", 1, 3),
            Err(GroupError::RebalanceInProgress { .. })
        ));
        assert!(
            g.check_commit("a", 1).is_ok(),
            "a commits before giving its partitions up"
        );
        let Outcome::Later(mut a_join) =
            g.join(req("a", &["range"]), 4, &limits(), || unreachable!())
        else {
            panic!("joins wait for the round");
        };
        let a = a_join.try_recv().unwrap().unwrap();
        let b = b_join.try_recv().unwrap().unwrap();
        assert_eq!((a.generation, b.generation), (2, 2));
        assert_eq!(a.members.len(), 2, "the leader sees every member");
        assert!(b.members.is_empty());
        assert!(
            matches!(
                g.check_commit("b", 2),
                Err(GroupError::RebalanceInProgress { .. })
            ),
            "no commits while the new assignment is on its way"
        );
        // b syncs first and waits for the leader.
        let Outcome::Later(mut b_sync) = g.sync("b", 2, vec![], 5) else {
            panic!("b waits for the leader");
        };
        let s = synced(
            &mut g,
            "a",
            2,
            vec![
                ("a".into(), Bytes::from_static(b"p0")),
                ("b".into(), Bytes::from_static(b"p1")),
            ],
            6,
        )
        .unwrap();
        assert_eq!(s.assignment, Bytes::from_static(b"p0"));
        assert_eq!(
            b_sync.try_recv().unwrap().unwrap().assignment,
            Bytes::from_static(b"p1")
        );
        assert!(g.check_commit("b", 2).is_ok());
        assert!(matches!(
            g.check_commit("b", 1),
            Err(GroupError::IllegalGeneration { .. })
        ));
        assert!(matches!(
            g.check_commit("zz", 2),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    #[test]
    fn a_stable_generation_is_answered_once_durable_and_survives_a_failover() {
        let mut g = ClassicGroup::new("g".into());
        now(join_new(&mut g, "a", 0)).unwrap();
        assert_eq!(g.value(), None, "nothing stable yet");
        let Outcome::Later(mut a_sync) =
            g.sync("a", 1, vec![("a".into(), Bytes::from_static(b"all"))], 1)
        else {
            panic!("the leader's sync waits for durability");
        };
        assert!(a_sync.try_recv().is_err(), "not answered before durable");
        let token = g.unreleased().expect("waiting to be durable");
        assert!(g.take_dirty(), "the new generation must be written");
        assert!(!g.take_dirty());
        let v = g.value().expect("the stable generation");
        assert_eq!((v.generation, v.leader.as_str()), (1, "a"));
        g.release(token + 1);
        assert!(a_sync.try_recv().is_err(), "another token releases nothing");
        g.release(token);
        assert_eq!(
            a_sync.try_recv().unwrap().unwrap().assignment,
            Bytes::from_static(b"all")
        );

        // A new coordinator loads it: the member carries on at its
        // generation, with its assignment and subscription, no rebalance.
        let json = serde_json::to_string(&v).unwrap();
        let v: ClassicValue = serde_json::from_str(&json).unwrap();
        let mut r = ClassicGroup::restore("g".into(), Some(&v), 100);
        assert_eq!((r.state(), r.generation()), (ClassicState::Stable, 1));
        r.heartbeat("a", 1, 101).unwrap();
        assert_eq!(
            synced(&mut r, "a", 1, vec![], 102).unwrap().assignment,
            Bytes::from_static(b"all")
        );
        let a = r.members().next().unwrap();
        assert_eq!(a.metadata("range"), Bytes::from_static(b"sub"));
        assert_eq!(a.value.session_timeout_ms, 10_000);

        // A generation that cannot be made durable is not used: its
        // members are told to rejoin.
        let Outcome::Later(mut b_join) = join_new(&mut r, "b", 200) else {
            panic!("b waits for a");
        };
        let Outcome::Later(mut a_join) =
            r.join(req("a", &["range"]), 201, &limits(), || unreachable!())
        else {
            panic!("joins wait for the round");
        };
        assert_eq!(a_join.try_recv().unwrap().unwrap().generation, 2);
        assert_eq!(b_join.try_recv().unwrap().unwrap().generation, 2);
        let Outcome::Later(mut b_sync) = r.sync("b", 2, vec![], 202) else {
            panic!("b waits for the leader");
        };
        let Outcome::Later(mut a_sync) = r.sync("a", 2, vec![], 203) else {
            panic!("waits for durability");
        };
        let token = r.unreleased().expect("waiting to be durable");
        r.abandon(token, 204);
        assert!(matches!(
            b_sync.try_recv().unwrap(),
            Err(GroupError::RebalanceInProgress { .. })
        ));
        assert!(matches!(
            a_sync.try_recv().unwrap(),
            Err(GroupError::RebalanceInProgress { .. })
        ));
        assert_eq!(r.state(), ClassicState::PreparingRebalance);

        // Once every member is gone, only the generation is kept: a
        // coordinator that loads the group goes on counting from it, so
        // no generation number is handed out twice.
        assert_eq!(r.tick(300_000).len(), 2);
        assert_eq!((r.state(), r.generation()), (ClassicState::Empty, 3));
        assert!(r.take_dirty());
        let v = r.value().expect("the generation");
        assert_eq!((v.generation, v.members.len()), (3, 0));
        let json = serde_json::to_string(&v).unwrap();
        let v: ClassicValue = serde_json::from_str(&json).unwrap();
        let mut r = ClassicGroup::restore("g".into(), Some(&v), 400_000);
        assert_eq!(
            (r.state(), r.generation(), r.len()),
            (ClassicState::Empty, 3, 0)
        );
        assert!(matches!(
            r.heartbeat("a", 2, 400_001),
            Err(GroupError::UnknownMember { .. })
        ));
        let c = now(join_new(&mut r, "c", 400_002)).unwrap();
        assert_eq!(c.generation, 4);
    }

    #[test]
    fn a_generation_too_large_to_persist_keeps_only_its_number() {
        let mut g = ClassicGroup::new("g".into());
        let small = Limits {
            max_group_bytes: 300,
            ..Limits::default()
        };
        let first = g.join(req("", &["range"]), 0, &small, || "a".to_owned());
        assert!(matches!(
            first,
            Outcome::Now(Err(GroupError::MemberIdRequired { .. }))
        ));
        now(g.join(req("a", &["range"]), 0, &small, || unreachable!())).unwrap();
        let big = Bytes::from(vec![7u8; 1000]);
        let Outcome::Later(mut a_sync) = g.sync("a", 1, vec![("a".into(), big.clone())], 1) else {
            panic!("the sync waits for the generation's number to be durable");
        };
        let token = g.unreleased().expect("waiting to be durable");
        assert!(a_sync.try_recv().is_err(), "not answered before durable");
        g.release(token);
        let s = a_sync.try_recv().unwrap().unwrap();
        assert_eq!(s.assignment, big, "answered once its number is durable");
        let v = g.value().expect("the generation");
        assert_eq!(
            (v.generation, v.members.len()),
            (1, 0),
            "only the generation is persisted"
        );
        assert_eq!(g.state(), ClassicState::Stable);
        // After a failover its member is unknown and joins again, at the
        // next generation.
        let mut r = ClassicGroup::restore("g".into(), Some(&v), 10);
        assert!(matches!(
            r.heartbeat("a", 1, 11),
            Err(GroupError::UnknownMember { .. })
        ));
        assert_eq!(now(join_new(&mut r, "b", 12)).unwrap().generation, 2);
    }

    #[test]
    fn consumer_assignments_and_subscriptions_are_read_from_their_embedded_format() {
        // ConsumerProtocolAssignment v0: [orders: 0, 2], no user data.
        let mut a = Vec::new();
        a.extend_from_slice(&0i16.to_be_bytes());
        a.extend_from_slice(&1i32.to_be_bytes());
        a.extend_from_slice(&6i16.to_be_bytes());
        a.extend_from_slice(b"orders");
        a.extend_from_slice(&2i32.to_be_bytes());
        a.extend_from_slice(&0i32.to_be_bytes());
        a.extend_from_slice(&2i32.to_be_bytes());
        a.extend_from_slice(&(-1i32).to_be_bytes());
        // ConsumerProtocolSubscription v0: [orders], no user data.
        let mut s = Vec::new();
        s.extend_from_slice(&0i16.to_be_bytes());
        s.extend_from_slice(&1i32.to_be_bytes());
        s.extend_from_slice(&6i16.to_be_bytes());
        s.extend_from_slice(b"orders");
        s.extend_from_slice(&(-1i32).to_be_bytes());
        let mut g = ClassicGroup::new("g".into());
        let mut r = req("", &["range"]);
        r.require_known_member_id = false;
        r.protocols = vec![("range".into(), Bytes::from(s))];
        now(g.join(r, 0, &limits(), || "a".into())).unwrap();
        synced(&mut g, "a", 1, vec![("a".into(), Bytes::from(a))], 0).unwrap();
        let m = g.members().next().unwrap();
        assert_eq!(m.subscribed_topics("range"), vec!["orders".to_owned()]);
        let expected: Partitions = [("orders".to_owned(), 0), ("orders".to_owned(), 2)].into();
        assert_eq!(m.assigned_partitions(), expected);
        // Garbage reads as nothing.
        synced(&mut g, "a", 1, vec![], 0).unwrap();
        assert!(
            g.members()
                .next()
                .unwrap()
                .subscribed_topics("other")
                .is_empty()
        );
    }

    #[test]
    fn laggards_are_dropped_at_the_rebalance_timeout_and_sessions_expire() {
        let mut g = ClassicGroup::new("g".into());
        now(join_new(&mut g, "a", 0)).unwrap();
        synced(&mut g, "a", 1, vec![], 0).unwrap();
        let Outcome::Later(mut b_join) = join_new(&mut g, "b", 1) else {
            panic!("b waits");
        };
        // a keeps heartbeating but never rejoins: past the rebalance
        // timeout (30 s from b's join), b goes on alone.
        for t in [9_000, 18_000, 27_000] {
            assert!(g.heartbeat("a", 1, t).is_err(), "told to rejoin");
            assert!(
                g.tick(t + 1).is_empty(),
                "b waits in the join; a heartbeats"
            );
        }
        assert!(g.tick(31_001).is_empty());
        let b = b_join.try_recv().unwrap().unwrap();
        assert_eq!((b.generation, b.leader.as_str()), (2, "b"));
        assert_eq!(g.len(), 1);
        // b's session runs out.
        synced(&mut g, "b", 2, vec![], 31_001).unwrap();
        assert_eq!(g.tick(41_002), vec!["b".to_owned()]);
        assert_eq!(g.state(), ClassicState::Empty);
    }

    #[test]
    fn leaving_starts_a_rebalance_and_unknown_or_mismatched_members_are_refused() {
        let mut g = ClassicGroup::new("g".into());
        now(join_new(&mut g, "a", 0)).unwrap();
        let unknown = g.join(req("nobody", &["range"]), 0, &limits(), || unreachable!());
        assert!(matches!(
            now(unknown),
            Err(GroupError::UnknownMember { .. })
        ));
        let mut other = req("", &["sticky-only"]);
        other.require_known_member_id = false;
        let r = g.join(other, 0, &limits(), || "x".into());
        assert!(matches!(
            now(r),
            Err(GroupError::InconsistentProtocol { .. })
        ));
        g.leave("a", None, 1).unwrap();
        assert_eq!(g.state(), ClassicState::Empty);
        assert_eq!(g.value(), None, "never stable: nothing to keep");
        assert!(g.leave("a", None, 1).is_err());
    }
}
