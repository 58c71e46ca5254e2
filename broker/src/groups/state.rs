//! One consumer group's state and its rules: membership, the member-epoch
//! protocol of Kafka's KIP-848, and committed offsets. Pure: no IO, time
//! comes in as `now_ms`, so every rule is unit-tested here.
//!
//! ## Epochs and the hand-over rule
//! - The **group epoch** goes up when the membership, a subscription or
//!   the partition count of a subscribed topic changes. The **target
//!   assignment** ([`super::assignor`]) is recomputed for it.
//! - Each member has an **assigned** set: the partitions it may hold now,
//!   including those it was asked to revoke and has not yet confirmed.
//!   A member confirms a revocation by heartbeating with an `owned` set
//!   that leaves the partition out.
//! - A partition of a member's target is **granted** only when no other
//!   member's assigned set contains it. That is the one rule that keeps
//!   two members from ever reading one partition at the same time; do
//!   not break it.
//! - A member reaches the group's assignment epoch (its **member epoch**)
//!   once it has revoked what it must; commits carrying a higher epoch,
//!   or from an unknown member, are refused.
//!
//! ## What is persisted
//! [`GroupValue`] (epochs, members, their assigned and target partitions)
//! whenever it changes, and each committed offset. Session deadlines and
//! revocation deadlines live in memory only: a coordinator that loads a
//! group gives every member a fresh session.
//!
//! ## Kafka's classic protocol
//! The model keeps what JoinGroup/SyncGroup need as well (members with
//! subscriptions and assigned partitions, a group epoch as generation);
//! the classic front end adds client-side assignment on top of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::assignor;
use super::classic::{ClassicGroup, ClassicState, ClassicValue};
use super::pattern::Pattern;
use crate::auth::Caller;

/// A topic-partition by name.
pub type Tp = (String, u32);

/// A set of topic-partitions, ordered.
pub type Partitions = BTreeSet<Tp>;

/// Partitions by topic, as stored and sent (`{"orders": [0, 3]}`).
pub type TopicMap = BTreeMap<String, Vec<u32>>;

/// `set` by topic.
pub fn to_topic_map(set: &Partitions) -> TopicMap {
    let mut map = TopicMap::new();
    for (t, p) in set {
        map.entry(t.clone()).or_default().push(*p);
    }
    map
}

/// The set a [`TopicMap`] lists.
pub fn from_topic_map(map: &TopicMap) -> Partitions {
    map.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect()
}

/// Longest member id a member may choose.
pub const MAX_MEMBER_ID_LEN: usize = 64;

/// Member epoch a member joins with.
pub const JOIN_EPOCH: i32 = 0;
/// Member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member leaving for now (a restart).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Why a group operation was refused (mapped to the wire in
/// [`crate::error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member is not in the group.
    #[error(
        "member {member} is not in group {group} (its session expired, it left, or another \
         member took over its instance id); rejoin the group"
    )]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id sent.
        member: String,
    },
    /// The member's epoch is not one the coordinator accepts.
    #[error(
        "member {member} of group {group} sent epoch {got} but is at epoch {current}; it lost \
         its partitions and must rejoin"
    )]
    FencedEpoch {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// Its epoch here.
        current: i32,
        /// The epoch sent.
        got: i32,
    },
    /// The operation needs a group without members.
    #[error("group {group} has {members} active member(s); stop its consumers first ({what})")]
    NotEmpty {
        /// The group.
        group: String,
        /// Its members.
        members: usize,
        /// What was refused.
        what: &'static str,
    },
    /// A commit names a partition the member does not own.
    #[error(
        "member {member} of group {group} does not own {topic}/{partition}; commit only \
         partitions assigned to it"
    )]
    NotAssigned {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A static member's instance id is held by a member that has not
    /// left.
    #[error(
        "instance id {instance} of group {group} is used by a member that has not left; a \
         restarted member gets it once the old one leaves or its session times out (two \
         processes must not share an instance id)"
    )]
    UnreleasedInstance {
        /// The group.
        group: String,
        /// The instance id.
        instance: String,
    },
    /// The group is at its member limit.
    #[error("group {group} has group.max_members ({max}) members already; retry later")]
    Full {
        /// The group.
        group: String,
        /// The limit.
        max: usize,
    },
    /// A classic-protocol member sent a generation that is not the
    /// group's.
    #[error(
        "member {member} of group {group} sent generation {got} but the group is at generation \
         {current}; rejoin the group"
    )]
    IllegalGeneration {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The group's generation.
        current: i32,
        /// The generation sent.
        got: i32,
    },
    /// The classic group is rebalancing: the member must rejoin.
    #[error("group {group} is rebalancing; rejoin it")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },
    /// A classic member joined without an id (JoinGroup v4+): rejoin with
    /// the id given.
    #[error("group {group} gave the new member the id {member}; rejoin with it")]
    MemberIdRequired {
        /// The group.
        group: String,
        /// The id to rejoin with.
        member: String,
    },
    /// The member's protocol does not match the group's (a classic member
    /// in a group of consumer-protocol members or the other way round, or
    /// no assignor in common).
    #[error("group {group}: {detail}")]
    InconsistentProtocol {
        /// The group.
        group: String,
        /// What does not match.
        detail: String,
    },
    /// A server-side assignor the coordinator does not have.
    #[error(
        "Strata has no server-side assignor {0:?}; use `uniform` (the default) or `range`, or \
         leave group.remote.assignor unset"
    )]
    UnsupportedAssignor(String),
    /// A subscription pattern that does not compile.
    #[error("subscription pattern {pattern:?} is refused: {detail}")]
    InvalidPattern {
        /// The pattern (its first 64 characters).
        pattern: String,
        /// What is wrong.
        detail: String,
    },
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
}

/// Limits and defaults of the coordinator (from `group.*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Session timeout when the member asks for none.
    pub session_timeout_ms: u32,
    /// Bounds on what a member may ask for.
    pub min_session_timeout_ms: u32,
    /// Upper bound.
    pub max_session_timeout_ms: u32,
    /// Revocation deadline when the member asks for none.
    pub rebalance_timeout_ms: u32,
    /// Heartbeat interval of a member whose assignment is complete.
    pub heartbeat_interval_ms: u32,
    /// Heartbeat interval of a member waiting for partitions or asked to
    /// revoke some (hand-overs finish sooner).
    pub reconcile_interval_ms: u32,
    /// Most members of one group.
    pub max_members: usize,
    /// Most bytes a group record may take.
    pub max_group_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 300_000,
            rebalance_timeout_ms: 60_000,
            heartbeat_interval_ms: 2_000,
            reconcile_interval_ms: 200,
            max_members: 1_000,
            max_group_bytes: 512 * 1024,
        }
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset to read.
    pub offset: i64,
    /// Free text from the committer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// When it was committed (broker clock, ms).
    pub commit_ms: i64,
    /// The incarnation of the topic it belongs to: a topic deleted and
    /// re-created starts without committed offsets.
    pub topic_id: String,
}

/// A member as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    /// Its id.
    pub id: String,
    /// Static membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The client's name for itself.
    #[serde(default)]
    pub client_id: String,
    /// Where it heartbeats from.
    #[serde(default)]
    pub host: String,
    /// Its member epoch.
    pub epoch: i32,
    /// The epoch before (a heartbeat whose answer was lost still counts).
    pub previous_epoch: i32,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// A subscription pattern: every topic whose whole name matches is
    /// subscribed too ([`super::pattern`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The server-side assignor it asks for (`None`: no preference; see
    /// [`assignor::Assignor::of_group`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignor: Option<String>,
    /// Who it heartbeats as: its pattern gets only the topics this caller
    /// may describe, as in Kafka. `None`: a member recorded before callers
    /// were kept; its pattern is not filtered until it heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// What it may hold now (see the module docs).
    pub assigned: TopicMap,
    /// Its session timeout.
    pub session_timeout_ms: u32,
    /// How long it may take to revoke.
    pub rebalance_timeout_ms: u32,
    /// A static member that left for a restart: its partitions wait for
    /// it until its session times out.
    #[serde(default)]
    pub left: bool,
}

/// A group's membership and assignment, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    /// The group epoch.
    pub epoch: i32,
    /// The epoch the target assignment was computed for.
    pub assignment_epoch: i32,
    /// Members, by id.
    pub members: Vec<MemberValue>,
    /// The target assignment, by member id.
    pub target: BTreeMap<String, TopicMap>,
    /// The partition counts the target was computed from.
    pub topic_counts: BTreeMap<String, u32>,
    /// When the group last became empty (offsets retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since_ms: Option<i64>,
    /// The last stable generation of Kafka's classic protocol, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classic: Option<ClassicValue>,
}

/// A live member.
#[derive(Debug, Clone)]
pub struct Member {
    /// What is persisted.
    pub value: MemberValue,
    /// Removed after this (last heartbeat + session timeout).
    pub session_deadline_ms: i64,
    /// Removed after this unless it revoked what it was asked to.
    pub revoke_deadline_ms: Option<i64>,
    /// What it last said it holds (in memory only; see [`Heartbeat::owned`]).
    pub reported_owned: Option<Partitions>,
    /// The topics its pattern gives it (in memory only).
    matched: Matched,
}

/// The topics a member's pattern gives it: what the pattern matched that
/// the member may describe.
#[derive(Debug, Clone, Default)]
struct Matched {
    /// The listing generation and ACL version they were filtered at
    /// (`None`: to be filtered again).
    from: Option<(u64, u64)>,
    /// `None`: not resolved yet.
    topics: Option<BTreeSet<String>>,
}

impl Member {
    /// What it may hold now (see the module docs).
    pub fn assigned(&self) -> Partitions {
        from_topic_map(&self.value.assigned)
    }

    /// What the member holds, as far as the coordinator knows: `sent` if
    /// this heartbeat says, else what it said last, else (nothing heard
    /// since this coordinator loaded the group) everything it may hold, so
    /// no partition it may still read is granted to another member.
    fn owned(&self, sent: Option<&Partitions>) -> Partitions {
        sent.or(self.reported_owned.as_ref())
            .cloned()
            .unwrap_or_else(|| self.assigned())
    }
}

/// What a heartbeat brings.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// Empty on join.
    pub member_id: String,
    /// See [`JOIN_EPOCH`], [`LEAVE_EPOCH`], [`STATIC_LEAVE_EPOCH`].
    pub epoch: i32,
    /// Static membership.
    pub instance_id: Option<String>,
    /// Subscribed topics; `None`: unchanged since the last heartbeat
    /// (Kafka's ConsumerGroupHeartbeat sends them only when they change; a
    /// joining member must send them).
    pub topics: Option<BTreeSet<String>>,
    /// A subscription pattern; `None`: unchanged since the last heartbeat,
    /// `Some("")`: none (Kafka's `SubscribedTopicRegex`). A joining member
    /// sends topics, a pattern or both.
    pub pattern: Option<String>,
    /// The server-side assignor it asks for; `None`: unchanged since the
    /// last heartbeat (Kafka's `ServerAssignor`), `Some("")`: no
    /// preference.
    pub assignor: Option<String>,
    /// What the member holds now; `None`: unchanged since the last
    /// heartbeat (as in Kafka's ConsumerGroupHeartbeat).
    pub owned: Option<Partitions>,
    /// 0: the default.
    pub session_timeout_ms: u32,
    /// 0: the default.
    pub rebalance_timeout_ms: u32,
    /// The client's name.
    pub client_id: String,
    /// Where it comes from.
    pub host: String,
    /// Who sends it (`None`: unchanged).
    pub caller: Option<Caller>,
}

/// Longest client id or instance id kept.
pub const MAX_CLIENT_ID_LEN: usize = 255;

/// Most topics one member may subscribe to.
pub const MAX_SUBSCRIBED_TOPICS: usize = 1_000;

fn check_member_fields(hb: &Heartbeat, _limits: &Limits) -> Result<(), GroupError> {
    if hb.client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(GroupError::Invalid(format!(
            "client id is longer than {MAX_CLIENT_ID_LEN} bytes"
        )));
    }
    if let Some(i) = &hb.instance_id
        && (i.len() > MAX_CLIENT_ID_LEN || i.chars().any(char::is_control))
    {
        return Err(GroupError::Invalid(format!(
            "instance ids are at most {MAX_CLIENT_ID_LEN} bytes without control characters"
        )));
    }
    if let Some(a) = hb.assignor.as_deref().filter(|a| !a.is_empty())
        && assignor::Assignor::parse(a).is_none()
    {
        return Err(GroupError::UnsupportedAssignor(
            a.chars().take(64).collect(),
        ));
    }
    if let Some(topics) = &hb.topics
        && topics.len() > MAX_SUBSCRIBED_TOPICS
    {
        return Err(GroupError::Invalid(format!(
            "a member may subscribe to at most {MAX_SUBSCRIBED_TOPICS} topics, got {}",
            topics.len()
        )));
    }
    Ok(())
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The member's id (new on join).
    pub member_id: String,
    /// Its epoch.
    pub epoch: i32,
    /// What it may hold now.
    pub assignment: Partitions,
    /// When to heartbeat next.
    pub interval_ms: u32,
}

/// A group's summary state, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStateName {
    /// No members.
    Empty,
    /// Partitions are moving between members.
    Reconciling,
    /// Every member holds its target.
    Stable,
}

impl GroupStateName {
    /// The name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStateName::Empty => "EMPTY",
            GroupStateName::Reconciling => "RECONCILING",
            GroupStateName::Stable => "STABLE",
        }
    }
}

/// One group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its id.
    pub id: String,
    epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, Partitions>,
    topic_counts: BTreeMap<String, u32>,
    empty_since_ms: Option<i64>,
    /// Committed offsets.
    pub offsets: BTreeMap<Tp, Committed>,
    /// The group record last made durable (`None`: none yet).
    pub persisted: Option<GroupValue>,
    /// Bumped by every change to what [`Group::value`] returns.
    version: u64,
    /// The version of the value the shard's writer last took.
    taken: u64,
    /// The version last made durable.
    durable: u64,
    /// Target recomputations since this coordinator loaded the group.
    pub rebalances: u64,
    /// Members of Kafka's classic protocol (its last stable generation is
    /// persisted with the group).
    pub classic: ClassicGroup,
    /// The members' subscription patterns, compiled, with what they
    /// matched (memory only).
    patterns: BTreeMap<String, Pattern>,
}

/// What the coordinator knows of topics when it applies a change.
#[derive(Clone, Copy)]
pub struct TopicsView<'a> {
    /// A topic's partition count (`Some(0)`: no such topic; `None`: not
    /// known here yet, keep what the group had).
    pub partitions_of: &'a (dyn Fn(&str) -> Option<u32> + Sync),
    /// The topics subscription patterns resolve against; `None`: not
    /// listed (patterns keep what they matched, and a group with a
    /// pattern never resolved keeps its target).
    pub listing: Option<Listing<'a>>,
}

/// Every live topic, and who may see which.
#[derive(Clone, Copy)]
pub struct Listing<'a> {
    /// Bumped whenever `names` changes (patterns are resolved again only
    /// then).
    pub generation: u64,
    /// Every live topic's name, in order.
    pub names: &'a [String],
    /// Bumped whenever permissions change (members' matches are filtered
    /// again only then, or when the names change).
    pub acl_version: u64,
    /// Whether a caller may describe a topic.
    pub may_describe: &'a (dyn Fn(&Caller, &str) -> bool + Sync),
}

impl Group {
    /// A group nobody joined yet.
    pub fn new(id: String) -> Self {
        Self {
            classic: ClassicGroup::new(id.clone()),
            patterns: BTreeMap::new(),
            id,
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            topic_counts: BTreeMap::new(),
            empty_since_ms: None,
            offsets: BTreeMap::new(),
            persisted: None,
            version: 0,
            taken: 0,
            durable: 0,
            rebalances: 0,
        }
    }

    /// The group as loaded from its durable record: every member gets a
    /// fresh session from `now_ms`.
    pub fn restore(id: String, v: &GroupValue, now_ms: i64) -> Self {
        let members = v
            .members
            .iter()
            .map(|m| {
                (
                    m.id.clone(),
                    Member {
                        value: m.clone(),
                        session_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                        revoke_deadline_ms: None,
                        reported_owned: None,
                        matched: Matched::default(),
                    },
                )
            })
            .collect();
        Self {
            classic: ClassicGroup::restore(id.clone(), v.classic.as_ref(), now_ms),
            patterns: BTreeMap::new(),
            id,
            epoch: v.epoch,
            assignment_epoch: v.assignment_epoch,
            members,
            target: v
                .target
                .iter()
                .map(|(m, t)| (m.clone(), from_topic_map(t)))
                .collect(),
            topic_counts: v.topic_counts.clone(),
            empty_since_ms: v.empty_since_ms,
            offsets: BTreeMap::new(),
            persisted: Some(v.clone()),
            version: 0,
            taken: 0,
            durable: 0,
            rebalances: 0,
        }
    }

    /// What would be persisted now.
    pub fn value(&self) -> GroupValue {
        GroupValue {
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            members: self.members.values().map(|m| m.value.clone()).collect(),
            target: self
                .target
                .iter()
                .map(|(m, t)| (m.clone(), to_topic_map(t)))
                .collect(),
            topic_counts: self.topic_counts.clone(),
            empty_since_ms: self.empty_since_ms,
            classic: self.classic.value(),
        }
    }

    /// Marks the group changed if its classic members' persisted
    /// generation did (call after every change to `classic`); a group
    /// whose classic members all left is empty from `now_ms` (offsets
    /// retention restarts, as in Kafka), also when they never got as far
    /// as a stable generation, if the group has a record or offsets to
    /// keep (one with neither is forgotten).
    pub fn note_classic(&mut self, now_ms: i64) {
        let dirty = self.classic.take_dirty();
        let emptied = self.classic.take_emptied();
        let kept = self.persisted.is_some() || !self.offsets.is_empty();
        if !(dirty || (emptied && kept)) {
            return;
        }
        self.touch();
        if !self.classic.is_empty() {
            self.empty_since_ms = None;
        } else if self.members.is_empty() {
            self.empty_since_ms = Some(now_ms);
        }
    }

    /// True when a reply about this group must wait for the writer: a
    /// change is not durable yet (not taken, or taken by an append still
    /// in flight).
    pub fn needs_write(&self) -> bool {
        self.version > self.durable
    }

    /// For the writer: the value to append, if it changed since the writer
    /// last took it, with its version.
    pub fn take(&mut self) -> Option<(GroupValue, u64)> {
        (self.version > self.taken).then(|| {
            self.taken = self.version;
            (self.value(), self.version)
        })
    }

    /// For the writer: `value` at `version` is durable.
    pub fn made_durable(&mut self, value: GroupValue, version: u64) {
        if version > self.durable {
            self.durable = version;
            self.persisted = Some(value);
        }
    }

    fn touch(&mut self) {
        self.version += 1;
    }

    /// What a change of the group-level fields would show.
    fn shape(&self) -> (i32, i32, Option<i64>, usize, u64) {
        (
            self.epoch,
            self.assignment_epoch,
            self.empty_since_ms,
            self.members.len(),
            self.rebalances,
        )
    }

    /// The group epoch.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The epoch the target assignment was computed for.
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    /// Members, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Number of members (static members away for a restart included),
    /// of either protocol.
    pub fn member_count(&self) -> usize {
        self.members.len() + self.classic.len()
    }

    /// Every topic a member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.value.topics.iter().cloned())
            .collect()
    }

    /// A member's target partitions.
    pub fn target_of(&self, member: &str) -> Partitions {
        self.target.get(member).cloned().unwrap_or_default()
    }

    /// When the group last became empty.
    pub fn empty_since_ms(&self) -> Option<i64> {
        self.empty_since_ms
    }

    /// True when the shard may forget it: dead, never written, and no
    /// write of it on its way (a group whose first record is in flight
    /// stays until it is written empty, or a failover would restore its
    /// members).
    pub fn forgettable(&self) -> bool {
        self.is_dead() && self.persisted.is_none() && !self.needs_write()
    }

    /// True when nothing is left to keep: no members, no offsets.
    pub fn is_dead(&self) -> bool {
        self.members.is_empty() && self.classic.is_empty() && self.offsets.is_empty()
    }

    /// The summary state.
    pub fn state(&self) -> GroupStateName {
        if !self.classic.is_empty() {
            return match self.classic.state() {
                ClassicState::Stable => GroupStateName::Stable,
                ClassicState::Empty => GroupStateName::Empty,
                _ => GroupStateName::Reconciling,
            };
        }
        if self.members.is_empty() {
            GroupStateName::Empty
        } else if self.members.values().all(|m| {
            m.value.epoch == self.assignment_epoch && m.assigned() == self.target_of(&m.value.id)
        }) {
            GroupStateName::Stable
        } else {
            GroupStateName::Reconciling
        }
    }

    /// Handles a heartbeat at `now_ms`, with what the coordinator knows of
    /// `topics`.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now_ms: i64,
        limits: &Limits,
        topics: TopicsView<'_>,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<HeartbeatReply, GroupError> {
        if !self.classic.is_empty() {
            return Err(GroupError::InconsistentProtocol {
                group: self.id.clone(),
                detail: format!(
                    "it has {} member(s) of Kafka's classic protocol; a consumer-protocol \
                     member cannot join until they left",
                    self.classic.len()
                ),
            });
        }
        let shape = self.shape();
        let before = self.members.get(&hb.member_id).map(|m| m.value.clone());
        let result = self.heartbeat_inner(hb, now_ms, limits, topics, new_member_id);
        let after = result
            .as_ref()
            .ok()
            .and_then(|r| self.members.get(&r.member_id))
            .map(|m| &m.value);
        if self.shape() != shape || after != before.as_ref() {
            self.touch();
        }
        result
    }

    fn heartbeat_inner(
        &mut self,
        hb: Heartbeat,
        now_ms: i64,
        limits: &Limits,
        topics: TopicsView<'_>,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<HeartbeatReply, GroupError> {
        check_member_fields(&hb, limits)?;
        self.check_subscription(&hb)?;
        // A new pattern compiles before anything changes, so a bad one
        // admits no member (unused ones go at the next refresh).
        if let Some(p) = hb.pattern.as_deref().filter(|p| !p.is_empty())
            && !self.patterns.contains_key(p)
        {
            self.patterns.insert(p.to_owned(), Pattern::compile(p)?);
        }
        let session = match hb.session_timeout_ms {
            0 => limits.session_timeout_ms,
            s if s < limits.min_session_timeout_ms || s > limits.max_session_timeout_ms => {
                return Err(GroupError::Invalid(format!(
                    "session timeout must be between {} and {} ms (group.min_session_timeout, \
                     group.max_session_timeout): {s}",
                    limits.min_session_timeout_ms, limits.max_session_timeout_ms
                )));
            }
            s => s,
        };
        let rebalance = match hb.rebalance_timeout_ms {
            0 => limits.rebalance_timeout_ms,
            r => r,
        };
        let member_id = match hb.epoch {
            JOIN_EPOCH => self.join(&hb, session, rebalance, now_ms, limits, new_member_id)?,
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => {
                self.leave(&hb.member_id, hb.epoch == STATIC_LEAVE_EPOCH, now_ms);
                return Ok(HeartbeatReply {
                    member_id: hb.member_id,
                    epoch: hb.epoch,
                    assignment: Partitions::new(),
                    interval_ms: limits.heartbeat_interval_ms,
                });
            }
            e if e > 0 => {
                let m = self.member(&hb.member_id)?;
                let v = &m.value;
                let lost_reply =
                    e == v.previous_epoch && m.owned(hb.owned.as_ref()).is_subset(&m.assigned());
                if e != v.epoch && !lost_reply {
                    return Err(GroupError::FencedEpoch {
                        group: self.id.clone(),
                        member: hb.member_id.clone(),
                        current: v.epoch,
                        got: e,
                    });
                }
                hb.member_id.clone()
            }
            e => {
                return Err(GroupError::Invalid(format!(
                    "member epoch must be 0 (join), -1 or -2 (leave) or the epoch last received: {e}"
                )));
            }
        };
        let m = self
            .members
            .get_mut(&member_id)
            .ok_or_else(|| GroupError::Invalid("member vanished".into()))?;
        m.session_deadline_ms = now_ms + i64::from(m.value.session_timeout_ms);
        m.value.left = false;
        if !hb.client_id.is_empty() {
            m.value.client_id = hb.client_id.clone();
        }
        if !hb.host.is_empty() {
            m.value.host = hb.host.clone();
        }
        if let Some(caller) = hb.caller
            && m.value.caller.as_ref() != Some(&caller)
        {
            // Another principal: what its pattern may see is filtered again.
            m.value.caller = Some(caller);
            m.matched.from = None;
        }
        let owned = m.owned(hb.owned.as_ref());
        if hb.owned.is_some() {
            m.reported_owned = hb.owned;
        }
        if let Some(topics) = hb.topics {
            self.resubscribe(&member_id, limits, |v| &mut v.topics, topics)?;
        }
        if let Some(pattern) = hb.pattern {
            let pattern = Some(pattern).filter(|p| !p.is_empty());
            if self.resubscribe(&member_id, limits, |v| &mut v.pattern, pattern)?
                && let Some(m) = self.members.get_mut(&member_id)
            {
                m.matched = Matched::default();
            }
        }
        if let Some(assignor) = hb.assignor {
            let assignor = Some(assignor).filter(|a| !a.is_empty());
            self.resubscribe(&member_id, limits, |v| &mut v.assignor, assignor)?;
        }
        self.refresh_target(topics);
        Ok(self.reconcile(&member_id, &owned, now_ms, limits))
    }

    /// Sets the field of `member`'s subscription that `field` picks to
    /// `new`: a change is a new group epoch, refused (and undone) if the
    /// group record would outgrow its limit. True when it changed.
    fn resubscribe<T: PartialEq>(
        &mut self,
        member: &str,
        limits: &Limits,
        field: fn(&mut MemberValue) -> &mut T,
        new: T,
    ) -> Result<bool, GroupError> {
        let Some(m) = self.members.get_mut(member) else {
            return Ok(false);
        };
        let slot = field(&mut m.value);
        if *slot == new {
            return Ok(false);
        }
        let old = std::mem::replace(slot, new);
        if self.estimated_bytes() > limits.max_group_bytes {
            if let Some(m) = self.members.get_mut(member) {
                *field(&mut m.value) = old;
            }
            return Err(self.too_large(limits));
        }
        self.epoch += 1;
        Ok(true)
    }

    /// Refuses a heartbeat that would leave its member subscribed to
    /// nothing (a member that wants nothing leaves).
    fn check_subscription(&self, hb: &Heartbeat) -> Result<(), GroupError> {
        if hb.epoch < 0 || (hb.topics.is_none() && hb.pattern.is_none()) {
            return Ok(());
        }
        let current = self.members.get(&hb.member_id).map(|m| &m.value);
        let no_topics = match &hb.topics {
            Some(t) => t.is_empty(),
            None => current.is_none_or(|v| v.topics.is_empty()),
        };
        let no_pattern = match &hb.pattern {
            Some(p) => p.is_empty(),
            None => current.is_none_or(|v| v.pattern.is_none()),
        };
        if no_topics && no_pattern {
            return Err(GroupError::Invalid(
                "a member must subscribe to at least one topic or a pattern".into(),
            ));
        }
        Ok(())
    }

    fn member(&self, id: &str) -> Result<&Member, GroupError> {
        self.members
            .get(id)
            .ok_or_else(|| GroupError::UnknownMember {
                group: self.id.clone(),
                member: id.to_owned(),
            })
    }

    fn join(
        &mut self,
        hb: &Heartbeat,
        session: u32,
        rebalance: u32,
        now_ms: i64,
        limits: &Limits,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<String, GroupError> {
        // The member names itself (so a join retried after a lost answer
        // is not a second member) or the coordinator names it.
        let id = if hb.member_id.is_empty() {
            new_member_id()
        } else {
            if hb.member_id.len() > MAX_MEMBER_ID_LEN
                || !hb.member_id.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(GroupError::Invalid(format!(
                    "member ids are 1 to {MAX_MEMBER_ID_LEN} printable ASCII characters: {:?}",
                    hb.member_id
                )));
            }
            if self.members.contains_key(&hb.member_id) {
                // A retried join, or a rejoin after it lost its partitions:
                // the same member, which now owns what it reports.
                return Ok(hb.member_id.clone());
            }
            hb.member_id.clone()
        };
        // A static member coming back takes over its predecessor: same
        // partitions, same epoch, no rebalance.
        let predecessor = hb.instance_id.as_ref().and_then(|i| {
            self.members
                .values()
                .find(|m| m.value.instance_id.as_ref() == Some(i))
                .map(|m| m.value.id.clone())
        });
        if let Some(old) = predecessor {
            if self.members.get(&old).is_some_and(|m| !m.value.left) {
                return Err(GroupError::UnreleasedInstance {
                    group: self.id.clone(),
                    instance: hb.instance_id.clone().unwrap_or_default(),
                });
            }
            self.touch();
            if let Some(mut m) = self.members.remove(&old) {
                tracing::info!(group = %self.id, instance = ?hb.instance_id, %old, new = %id, "static member rejoined; it keeps its partitions");
                m.value.id = id.clone();
                m.value.session_timeout_ms = session;
                m.value.rebalance_timeout_ms = rebalance;
                self.members.insert(id.clone(), m);
            }
            if let Some(t) = self.target.remove(&old) {
                self.target.insert(id.clone(), t);
            }
            return Ok(id);
        }
        let pattern = hb.pattern.clone().filter(|p| !p.is_empty());
        let topics = match (&hb.topics, &pattern) {
            (Some(topics), _) => topics.clone(),
            (None, Some(_)) => BTreeSet::new(),
            (None, None) => {
                return Err(GroupError::Invalid(
                    "a joining member must send the topics it subscribes to or a pattern".into(),
                ));
            }
        };
        if self.members.len() >= limits.max_members {
            return Err(GroupError::Full {
                group: self.id.clone(),
                max: limits.max_members,
            });
        }
        self.members.insert(
            id.clone(),
            Member {
                value: MemberValue {
                    id: id.clone(),
                    instance_id: hb.instance_id.clone(),
                    client_id: hb.client_id.clone(),
                    host: hb.host.clone(),
                    epoch: JOIN_EPOCH,
                    previous_epoch: LEAVE_EPOCH,
                    topics,
                    pattern,
                    assignor: hb.assignor.clone().filter(|a| !a.is_empty()),
                    caller: hb.caller.clone(),
                    assigned: TopicMap::new(),
                    session_timeout_ms: session,
                    rebalance_timeout_ms: rebalance,
                    left: false,
                },
                session_deadline_ms: now_ms + i64::from(session),
                revoke_deadline_ms: None,
                reported_owned: None,
                matched: Matched::default(),
            },
        );
        if self.estimated_bytes() > limits.max_group_bytes {
            self.members.remove(&id);
            return Err(self.too_large(limits));
        }
        self.empty_since_ms = None;
        self.epoch += 1;
        Ok(id)
    }

    /// About how many bytes the group record takes (checked when a member
    /// joins or changes its subscription, so a record always fits a batch).
    fn estimated_bytes(&self) -> usize {
        let members: usize = self
            .members
            .values()
            .map(|m| {
                let v = &m.value;
                160 + v.id.len()
                    + v.instance_id.as_ref().map_or(0, String::len)
                    + v.client_id.len()
                    + v.host.len()
                    + v.topics.iter().map(|t| t.len() + 3).sum::<usize>()
                    + v.pattern.as_ref().map_or(0, |p| p.len() + 12)
                    + v.caller
                        .as_ref()
                        .map_or(0, |c| c.principal.acl_name().len() + 64)
            })
            .sum();
        // Each partition appears in at most one assigned and one target
        // set, and once in the counts.
        let partitions: usize = self
            .topic_counts
            .iter()
            .map(|(t, n)| 2 * (t.len() + 8) + *n as usize * 2 * 7)
            .sum();
        members + partitions
    }

    fn too_large(&self, limits: &Limits) -> GroupError {
        GroupError::Invalid(format!(
            "group {} would outgrow the {} bytes a group record may take (members, their \
             subscriptions and client ids); subscribe to fewer topics, use shorter ids or split \
             the group",
            self.id, limits.max_group_bytes
        ))
    }

    /// A member leaves: its partitions are free at once, or, for a static
    /// member leaving for a restart, once its session times out.
    fn leave(&mut self, member: &str, temporarily: bool, now_ms: i64) {
        let Some(m) = self.members.get_mut(member) else {
            return; // left already: leaving is idempotent
        };
        if temporarily && m.value.instance_id.is_some() {
            m.value.left = true;
            m.session_deadline_ms = now_ms + i64::from(m.value.session_timeout_ms);
            self.touch();
            return;
        }
        self.remove(member, now_ms);
    }

    fn remove(&mut self, member: &str, now_ms: i64) {
        if self.members.remove(member).is_some() {
            self.touch();
            self.target.remove(member);
            self.epoch += 1;
            if self.members.is_empty() {
                self.empty_since_ms = Some(now_ms);
            }
        }
    }

    /// Removes members whose session timed out or who did not revoke in
    /// time. Returns their ids.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let mut classic_gone = self.classic.tick(now_ms);
        self.note_classic(now_ms);
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now_ms > m.session_deadline_ms || m.revoke_deadline_ms.is_some_and(|d| now_ms > d)
            })
            .map(|m| m.value.id.clone())
            .collect();
        for id in &gone {
            self.remove(id, now_ms);
        }
        classic_gone.extend(gone);
        classic_gone
    }

    /// The topics `member` subscribes to: its names and what its pattern
    /// gives it (a topic may come twice).
    fn subscription(member: &Member) -> impl Iterator<Item = &String> {
        let matched = member
            .value
            .pattern
            .as_ref()
            .and(member.matched.topics.as_ref());
        member
            .value
            .topics
            .iter()
            .chain(matched.into_iter().flatten())
    }

    /// The server-side assignor the group uses: the one most members ask
    /// for.
    pub fn assignor(&self) -> assignor::Assignor {
        assignor::Assignor::of_group(self.members.values().map(|m| m.value.assignor.as_deref()))
    }

    /// True when a member subscribes by pattern (resolving needs the
    /// topic names).
    pub fn has_patterns(&self) -> bool {
        self.members.values().any(|m| m.value.pattern.is_some())
    }

    /// Compiles the members' patterns (those of a loaded group), resolves
    /// them against `listing` if given and keeps for each member what its
    /// pattern matched that it may describe; forgets unused patterns.
    /// `None` while a member's pattern was never resolved, else whether
    /// what one gives its member changed.
    fn resolve_patterns(&mut self, listing: Option<Listing<'_>>) -> Option<bool> {
        let used: BTreeSet<&String> = self
            .members
            .values()
            .filter_map(|m| m.value.pattern.as_ref())
            .collect();
        self.patterns.retain(|p, _| used.contains(p));
        for p in used {
            let pattern = match self.patterns.entry(p.clone()) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => match Pattern::compile(p) {
                    Ok(compiled) => e.insert(compiled),
                    Err(err) => {
                        // Checked when it was subscribed; it matches nothing.
                        tracing::warn!(group = %self.id, error = %err, "a stored subscription pattern does not compile");
                        continue;
                    }
                },
            };
            if let Some(l) = listing {
                pattern.resolve(l.generation, l.names);
            }
        }
        let nothing = BTreeSet::new();
        let mut resolved = true;
        let mut changed = false;
        // Members usually share a pattern and a principal: each pair is
        // filtered once per pass.
        let mut filtered: HashMap<(&str, Option<&Caller>), BTreeSet<String>> = HashMap::new();
        for m in self.members.values_mut() {
            let Some(p) = &m.value.pattern else {
                continue;
            };
            let matched = match self.patterns.get(p) {
                Some(pattern) => pattern.matched(),
                // It does not compile: it matches nothing.
                None => Some(&nothing),
            };
            if let (Some(l), Some(all)) = (listing, matched)
                && m.matched.from != Some((l.generation, l.acl_version))
            {
                let visible = filtered
                    .entry((p.as_str(), m.value.caller.as_ref()))
                    .or_insert_with(|| match &m.value.caller {
                        Some(caller) => all
                            .iter()
                            .filter(|t| (l.may_describe)(caller, t))
                            .cloned()
                            .collect(),
                        None => all.clone(),
                    })
                    .clone();
                changed |= match &m.matched.topics {
                    Some(before) => *before != visible,
                    // First filtered here (a loaded group): a target that
                    // gives the member a topic it no longer subscribes to
                    // (or may no longer see) is recomputed.
                    None => self.target.get(&m.value.id).is_some_and(|t| {
                        t.iter().any(|(topic, _)| {
                            !visible.contains(topic) && !m.value.topics.contains(topic)
                        })
                    }),
                };
                m.matched = Matched {
                    from: Some((l.generation, l.acl_version)),
                    topics: Some(visible),
                };
            }
            resolved &= m.matched.topics.is_some();
        }
        resolved.then_some(changed)
    }

    /// Resolves the members' patterns against `topics`, bumps the epoch
    /// if a subscribed topic's partition count (or a pattern's match)
    /// changed, and recomputes the target if the epoch moved past it. True
    /// when the target was recomputed.
    pub fn refresh_target(&mut self, topics: TopicsView<'_>) -> bool {
        let Some(matches_changed) = self.resolve_patterns(topics.listing) else {
            // A coordinator that loaded the group and has not listed the
            // topics yet: what its patterns match is unknown, so nothing
            // moves until it is.
            return false;
        };
        if matches_changed && self.epoch == self.assignment_epoch {
            // A member's subscription changed (the group's topics may be
            // the same, subscribed by another member).
            self.touch();
            self.epoch += 1;
        }
        let subscribed: BTreeSet<&String> =
            self.members.values().flat_map(Self::subscription).collect();
        let counts: BTreeMap<String, u32> = subscribed
            .into_iter()
            .map(|t| {
                // Not known here yet (a coordinator that just took over):
                // as before, rather than as deleted.
                let n = (topics.partitions_of)(t)
                    .unwrap_or_else(|| self.topic_counts.get(t).copied().unwrap_or(0));
                (t.clone(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        if counts != self.topic_counts {
            self.touch();
            self.topic_counts = counts;
            // One bump per change, whatever else changed with it.
            if self.epoch == self.assignment_epoch {
                self.epoch += 1;
            }
        }
        if self.epoch <= self.assignment_epoch {
            return false;
        }
        let subscriptions = self
            .members
            .values()
            .map(|m| {
                let topics = Self::subscription(m).cloned().collect();
                (m.value.id.clone(), topics)
            })
            .collect();
        self.touch();
        self.target = self
            .assignor()
            .assign(&subscriptions, &self.topic_counts, &self.target);
        self.assignment_epoch = self.epoch;
        self.rebalances += 1;
        true
    }

    /// Moves `member` toward its target: confirms revocations its `owned`
    /// set shows, asks for the ones it does not, and grants free target
    /// partitions once nothing is left to revoke.
    fn reconcile(
        &mut self,
        member: &str,
        owned: &Partitions,
        now_ms: i64,
        limits: &Limits,
    ) -> HeartbeatReply {
        let target = self.target_of(member);
        let held_by_others: Partitions = self
            .members
            .values()
            .filter(|m| m.value.id != member)
            .flat_map(Member::assigned)
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(member) else {
            return HeartbeatReply {
                member_id: member.to_owned(),
                epoch: LEAVE_EPOCH,
                assignment: Partitions::new(),
                interval_ms: limits.heartbeat_interval_ms,
            };
        };
        let mut assigned = m.assigned();
        let revoking: Partitions = assigned.difference(&target).cloned().collect();
        let still_held: Partitions = revoking.intersection(owned).cloned().collect();
        // What it no longer holds is revoked.
        for tp in revoking.difference(&still_held) {
            assigned.remove(tp);
        }
        let reply_set;
        if still_held.is_empty() {
            m.revoke_deadline_ms = None;
            for tp in target.difference(&assigned.clone()) {
                if !held_by_others.contains(tp) {
                    assigned.insert(tp.clone());
                }
            }
            if m.value.epoch != assignment_epoch {
                m.value.previous_epoch = m.value.epoch;
                m.value.epoch = assignment_epoch;
            }
            reply_set = assigned.clone();
        } else {
            m.revoke_deadline_ms
                .get_or_insert(now_ms + i64::from(m.value.rebalance_timeout_ms));
            reply_set = assigned.difference(&still_held).cloned().collect();
        }
        let complete = reply_set == target;
        m.value.assigned = to_topic_map(&assigned);
        HeartbeatReply {
            member_id: member.to_owned(),
            epoch: m.value.epoch,
            assignment: reply_set,
            interval_ms: if complete {
                limits.heartbeat_interval_ms
            } else {
                limits.reconcile_interval_ms
            },
        }
    }

    /// Checks a commit of `partitions` by `member` at `epoch` (empty
    /// member: a commit from outside the group, allowed only while it has
    /// no members).
    pub fn check_commit(
        &self,
        member: &str,
        epoch: i32,
        partitions: impl IntoIterator<Item = Tp>,
    ) -> Result<(), GroupError> {
        if member.is_empty() {
            return self.check_empty("commit without a member id");
        }
        if !self.classic.is_empty() {
            return self.classic.check_commit(member, epoch);
        }
        let m = self.member(member)?;
        // The current epoch, or the one before while its answer may still
        // be on its way; anything older is from before a loss.
        let v = &m.value;
        if epoch <= 0 || !(epoch == v.epoch || epoch == v.previous_epoch) {
            return Err(GroupError::FencedEpoch {
                group: self.id.clone(),
                member: member.to_owned(),
                current: m.value.epoch,
                got: epoch,
            });
        }
        let assigned = m.assigned();
        for tp in partitions {
            if !assigned.contains(&tp) {
                return Err(GroupError::NotAssigned {
                    group: self.id.clone(),
                    member: member.to_owned(),
                    topic: tp.0,
                    partition: tp.1,
                });
            }
        }
        Ok(())
    }

    /// Refuses `what` while the group has members.
    pub fn check_empty(&self, what: &'static str) -> Result<(), GroupError> {
        if self.member_count() == 0 {
            Ok(())
        } else {
            Err(GroupError::NotEmpty {
                group: self.id.clone(),
                members: self.member_count(),
                what,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T: &str = "orders";

    fn counts(topic: &str) -> Option<u32> {
        Some(if topic == T { 12 } else { 0 })
    }

    /// Partition counts from `partitions_of`, no topic listing.
    fn view(partitions_of: &(dyn Fn(&str) -> Option<u32> + Sync)) -> TopicsView<'_> {
        TopicsView {
            partitions_of,
            listing: None,
        }
    }

    struct Sim {
        g: Group,
        now: i64,
        next_id: u32,
        limits: Limits,
        /// The live topics and their partition counts.
        topics: BTreeMap<String, u32>,
        /// Bumped whenever the listing handed to the group changes.
        listing: u64,
        /// The names last listed.
        listed: Vec<String>,
        /// Live topics the listing does not show yet.
        unlisted: BTreeSet<String>,
        /// Topics [`limited`] may not describe.
        hidden: BTreeSet<String>,
        /// Bumped whenever `hidden` changes.
        acl_version: u64,
    }

    /// A caller some topics are hidden from ([`Sim::hidden`]).
    fn limited() -> Caller {
        Caller {
            principal: crate::auth::Principal::User("limited".into()),
            host: None,
        }
    }

    impl Sim {
        fn new() -> Self {
            Self {
                g: Group::new("g".into()),
                now: 1_000,
                next_id: 0,
                limits: Limits::default(),
                topics: [(T.to_owned(), 12)].into_iter().collect(),
                listing: 0,
                listed: Vec::new(),
                unlisted: BTreeSet::new(),
                hidden: BTreeSet::new(),
                acl_version: 0,
            }
        }

        /// Applies `change` to the group with the live topics' partition
        /// counts and a listing of their names (without the unlisted
        /// ones), then plays the writer.
        fn apply<R>(&mut self, change: impl FnOnce(&mut Group, TopicsView<'_>) -> R) -> R {
            let names: Vec<String> = self
                .topics
                .keys()
                .filter(|t| !self.unlisted.contains(*t))
                .cloned()
                .collect();
            if names != self.listed {
                self.listing += 1;
                self.listed.clone_from(&names);
            }
            let topics = &self.topics;
            let counts = |t: &str| Some(topics.get(t).copied().unwrap_or(0));
            let hidden = &self.hidden;
            let may_describe = |c: &Caller, t: &str| *c != limited() || !hidden.contains(t);
            let view = TopicsView {
                partitions_of: &counts,
                listing: Some(Listing {
                    generation: self.listing,
                    names: &names,
                    acl_version: self.acl_version,
                    may_describe: &may_describe,
                }),
            };
            let before = self.g.value();
            let r = change(&mut self.g, view);
            self.settle(&before);
            r
        }

        /// Recomputes the target against the live topics, as the timer does.
        fn refresh(&mut self) -> bool {
            self.apply(|g, view| g.refresh_target(view))
        }

        fn hb(
            &mut self,
            member: &str,
            epoch: i32,
            owned: &Partitions,
        ) -> Result<HeartbeatReply, GroupError> {
            self.send(Heartbeat {
                member_id: member.to_owned(),
                epoch,
                owned: Some(owned.clone()),
                ..Heartbeat::default()
            })
        }

        /// Sends `hb` (subscribed to [`T`] unless it says otherwise); a
        /// joining member without an id is named `m{n}`.
        fn send(&mut self, mut hb: Heartbeat) -> Result<HeartbeatReply, GroupError> {
            if hb.topics.is_none() {
                hb.topics = Some([T.to_owned()].into_iter().collect());
            }
            self.send_as_is(hb)
        }

        /// Sends `hb` as it is (`None` subscription: unchanged).
        fn send_as_is(&mut self, hb: Heartbeat) -> Result<HeartbeatReply, GroupError> {
            self.next_id += 1;
            let id = format!("m{}", self.next_id);
            let (now, limits) = (self.now, self.limits);
            self.apply(|g, view| g.heartbeat(hb, now, &limits, view, move || id))
        }

        /// Joins as a static member with `instance`.
        fn join_static(&mut self, instance: &str) -> Result<HeartbeatReply, GroupError> {
            self.send(Heartbeat {
                epoch: JOIN_EPOCH,
                instance_id: Some(instance.to_owned()),
                ..Heartbeat::default()
            })
        }

        /// Checks that every change of the persisted value asks for a
        /// write, then plays the writer.
        fn settle(&mut self, before: &GroupValue) {
            if self.g.value() != *before {
                assert!(self.g.needs_write(), "a change that would not be written");
            }
            if let Some((v, version)) = self.g.take() {
                self.g.made_durable(v, version);
            }
            assert!(!self.g.needs_write());
        }

        fn join(&mut self) -> HeartbeatReply {
            self.hb("", JOIN_EPOCH, &Partitions::new()).unwrap()
        }
    }

    /// Members as clients would behave: each holds what it was last told,
    /// minus what it revoked.
    fn no_partition_twice(held: &[&Partitions]) {
        let mut seen = Partitions::new();
        for set in held {
            for tp in *set {
                assert!(seen.insert(tp.clone()), "{tp:?} held by two members");
            }
        }
    }

    #[test]
    fn a_lone_member_gets_every_partition_at_once() {
        let mut s = Sim::new();
        let r = s.join();
        assert_eq!(r.assignment.len(), 12);
        assert_eq!(r.epoch, 1);
        assert_eq!(s.g.state(), GroupStateName::Stable);
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revoked_it() {
        let mut s = Sim::new();
        let a = s.join();
        let a_held = a.assignment.clone();
        let b = s.join();
        // b may get nothing yet: a holds everything.
        assert!(b.assignment.is_empty(), "{:?}", b.assignment);
        assert_eq!(b.interval_ms, s.limits.reconcile_interval_ms);
        // a is asked to revoke half.
        let a2 = s.hb(&a.member_id, a.epoch, &a_held).unwrap();
        assert_eq!(a2.assignment.len(), 6);
        assert_eq!(a2.epoch, a.epoch, "no new epoch before the revocation");
        // b asks again before a confirmed: still nothing.
        let b2 = s.hb(&b.member_id, b.epoch, &b.assignment).unwrap();
        assert!(b2.assignment.is_empty());
        no_partition_twice(&[&a_held, &b2.assignment]);
        // a confirms; b gets its half.
        let a3 = beat(&mut s, &a2);
        assert_eq!(a3.epoch, 2);
        let b3 = s.hb(&b.member_id, b2.epoch, &b2.assignment).unwrap();
        assert_eq!(b3.assignment.len(), 6);
        no_partition_twice(&[&a3.assignment, &b3.assignment]);
        assert_eq!(s.g.state(), GroupStateName::Stable);
    }

    /// A heartbeat without topics or owned set (Kafka's
    /// ConsumerGroupHeartbeat sends them only when they change).
    fn hb_unchanged(s: &mut Sim, member: &str, epoch: i32) -> HeartbeatReply {
        s.g.heartbeat(
            Heartbeat {
                member_id: member.to_owned(),
                epoch,
                topics: None,
                owned: None,
                ..Heartbeat::default()
            },
            s.now,
            &s.limits,
            view(&counts),
            || unreachable!("not a join"),
        )
        .unwrap()
    }

    #[test]
    fn a_member_that_sends_no_owned_set_still_holds_what_it_reported_last() {
        let mut s = Sim::new();
        let a = s.join();
        let a_held = a.assignment.clone();
        s.hb(&a.member_id, a.epoch, &a_held).unwrap();
        let b = s.join();
        // a is asked to revoke half, then heartbeats without saying what
        // it holds: it still holds everything it reported.
        let a2 = hb_unchanged(&mut s, &a.member_id, a.epoch);
        assert_eq!(a2.assignment.len(), 6);
        let a3 = hb_unchanged(&mut s, &a.member_id, a2.epoch);
        assert_eq!(a3.epoch, a.epoch, "no revocation was reported");
        let b2 = s.hb(&b.member_id, b.epoch, &b.assignment).unwrap();
        assert!(b2.assignment.is_empty(), "{:?}", b2.assignment);
        // It reports the revocation once; later heartbeats without an owned
        // set keep that report.
        let a4 = s.hb(&a.member_id, a3.epoch, &a3.assignment).unwrap();
        let a5 = hb_unchanged(&mut s, &a.member_id, a4.epoch);
        assert_eq!(a5.assignment, a4.assignment);
        let b3 = hb_unchanged(&mut s, &b.member_id, b2.epoch);
        assert_eq!(b3.assignment.len(), 6);
        no_partition_twice(&[&a5.assignment, &b3.assignment]);
        assert_eq!(s.g.value().members.len(), 2, "subscriptions kept");
        assert_eq!(s.g.state(), GroupStateName::Stable);
    }

    #[test]
    fn after_a_failover_a_member_holds_everything_assigned_until_it_says_otherwise() {
        let mut s = Sim::new();
        let a = s.join();
        s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        let b = s.join();
        // The coordinator fails over: nothing reported is remembered.
        s.g = Group::restore("g".into(), &s.g.value(), s.now);
        let a2 = hb_unchanged(&mut s, &a.member_id, a.epoch);
        assert_eq!(a2.assignment.len(), 6);
        let b2 = hb_unchanged(&mut s, &b.member_id, b.epoch);
        assert!(b2.assignment.is_empty(), "{:?}", b2.assignment);
        let a3 = s.hb(&a.member_id, a2.epoch, &a2.assignment).unwrap();
        let b3 = hb_unchanged(&mut s, &b.member_id, b2.epoch);
        no_partition_twice(&[&a3.assignment, &b3.assignment]);
        assert_eq!(b3.assignment.len(), 6);
    }

    #[test]
    fn a_join_must_name_its_topics() {
        let mut s = Sim::new();
        let err =
            s.g.heartbeat(
                Heartbeat {
                    member_id: "m".into(),
                    epoch: JOIN_EPOCH,
                    ..Heartbeat::default()
                },
                s.now,
                &s.limits,
                view(&counts),
                || "m".into(),
            )
            .unwrap_err();
        assert!(matches!(err, GroupError::Invalid(_)), "{err}");
        assert!(s.g.value().members.is_empty());
    }

    #[test]
    fn an_expired_member_frees_its_partitions_and_cannot_commit() {
        let mut s = Sim::new();
        let a = s.join();
        let b = s.join();
        let a2 = s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        s.hb(&a.member_id, a2.epoch, &a2.assignment).unwrap();
        // b goes quiet; a keeps heartbeating past b's session.
        s.now += 46_000;
        let a4 = s.hb(&a.member_id, 2, &a2.assignment).unwrap();
        assert_eq!(s.g.expire(s.now), vec![b.member_id.clone()]);
        let a5 = beat(&mut s, &a4);
        assert_eq!(a5.assignment.len(), 12);
        let err =
            s.g.check_commit(&b.member_id, 2, [(T.to_owned(), 0)])
                .unwrap_err();
        assert!(matches!(err, GroupError::UnknownMember { .. }), "{err}");
        let err = s.hb(&b.member_id, 2, &Partitions::new()).unwrap_err();
        assert!(matches!(err, GroupError::UnknownMember { .. }), "{err}");
    }

    #[test]
    fn a_member_that_never_revokes_is_removed_after_the_rebalance_timeout() {
        let mut s = Sim::new();
        let a = s.join();
        let b = s.join();
        // a keeps claiming everything.
        s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        s.now += 61_000;
        s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        s.hb(&b.member_id, b.epoch, &b.assignment).unwrap();
        assert_eq!(s.g.expire(s.now), vec![a.member_id.clone()]);
        let b2 = s.hb(&b.member_id, b.epoch, &b.assignment).unwrap();
        assert_eq!(b2.assignment.len(), 12);
    }

    #[test]
    fn commits_are_fenced_by_member_epoch_and_ownership() {
        let mut s = Sim::new();
        let a = s.join();
        s.g.check_commit(&a.member_id, a.epoch, [(T.to_owned(), 3)])
            .unwrap();
        let err =
            s.g.check_commit(&a.member_id, a.epoch + 1, [(T.to_owned(), 3)])
                .unwrap_err();
        assert!(matches!(err, GroupError::FencedEpoch { .. }), "{err}");
        let err =
            s.g.check_commit(&a.member_id, a.epoch, [(T.to_owned(), 99)])
                .unwrap_err();
        assert!(matches!(err, GroupError::NotAssigned { .. }), "{err}");
        let err = s.g.check_commit("", -1, [(T.to_owned(), 3)]).unwrap_err();
        assert!(matches!(err, GroupError::NotEmpty { .. }), "{err}");
        s.hb(&a.member_id, LEAVE_EPOCH, &Partitions::new()).unwrap();
        s.g.check_commit("", -1, [(T.to_owned(), 3)]).unwrap();
        assert_eq!(s.g.state(), GroupStateName::Empty);
        assert_eq!(s.g.empty_since_ms(), Some(s.now));
    }

    #[test]
    fn a_static_member_that_restarts_gets_its_partitions_back_without_a_rebalance() {
        let mut s = Sim::new();
        let join = |s: &mut Sim, instance: &str| s.join_static(instance).unwrap();
        let a = join(&mut s, "a");
        let b = join(&mut s, "b");
        let a2 = s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        let a3 = s.hb(&a.member_id, a2.epoch, &a2.assignment).unwrap();
        let b2 = s.hb(&b.member_id, b.epoch, &b.assignment).unwrap();
        let epoch = s.g.epoch();
        // b restarts: leaves for now, comes back with a new member id.
        s.hb(&b.member_id, STATIC_LEAVE_EPOCH, &b2.assignment)
            .unwrap();
        s.now += 5_000;
        let b3 = join(&mut s, "b");
        assert_ne!(b3.member_id, b.member_id);
        assert_eq!(b3.assignment, b2.assignment);
        assert_eq!(s.g.epoch(), epoch, "no rebalance");
        let a4 = s.hb(&a.member_id, a3.epoch, &a3.assignment).unwrap();
        assert_eq!(a4.assignment, a3.assignment);
        // The old member id is gone.
        let err = s.hb(&b.member_id, b2.epoch, &b2.assignment).unwrap_err();
        assert!(matches!(err, GroupError::UnknownMember { .. }), "{err}");
    }

    #[test]
    fn a_lost_heartbeat_answer_is_not_fenced() {
        let mut s = Sim::new();
        let a = s.join();
        // The answer carrying epoch 1 is lost: the member retries with 0?
        // No: it joined; a later epoch bump whose answer is lost leaves it
        // one epoch behind, which is accepted while it owns no more than
        // it may.
        let b = s.join();
        let a2 = s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        let _lost = s.hb(&a.member_id, a2.epoch, &a2.assignment).unwrap();
        let again = s.hb(&a.member_id, a.epoch, &a2.assignment).unwrap();
        assert_eq!(again.epoch, 2);
        let _ = b;
    }

    #[test]
    fn expiry_and_target_changes_ask_for_a_write() {
        let mut s = Sim::new();
        let a = s.join();
        let _b = s.join();
        s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        s.now += 46_000;
        let before = s.g.value();
        assert_eq!(s.g.expire(s.now).len(), 2);
        s.settle(&before);
        let before = s.g.value();
        s.g.refresh_target(view(&|_| Some(0)));
        s.settle(&before);
    }

    #[test]
    fn a_topic_this_coordinator_has_not_looked_up_keeps_its_partitions() {
        let mut s = Sim::new();
        let a = s.join();
        let epoch = s.g.epoch();
        assert!(
            !s.g.refresh_target(view(&|_| None)),
            "unknown is not deleted"
        );
        assert_eq!(s.g.epoch(), epoch);
        let again = s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        assert_eq!(again.assignment.len(), 12);
        // Known to be gone: the partitions go.
        assert!(s.g.refresh_target(view(&|_| Some(0))));
        assert!(s.g.target_of(&a.member_id).is_empty());
    }

    #[test]
    fn a_running_static_member_is_not_replaced() {
        let mut s = Sim::new();
        s.join_static("a").unwrap();
        let err = s.join_static("a").unwrap_err();
        assert!(
            matches!(err, GroupError::UnreleasedInstance { .. }),
            "{err}"
        );
        assert_eq!(s.g.member_count(), 1);
    }

    #[test]
    fn commits_from_before_an_older_epoch_are_fenced() {
        let mut s = Sim::new();
        let a = s.join();
        let b = s.join();
        let a2 = s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        let a3 = s.hb(&a.member_id, a2.epoch, &a2.assignment).unwrap();
        let _ = b;
        // a moved from epoch 1 to 2; 1 is still accepted, 0 never.
        let tp = a3.assignment.iter().next().unwrap().clone();
        s.g.check_commit(&a.member_id, a3.epoch, [tp.clone()])
            .unwrap();
        s.g.check_commit(&a.member_id, a.epoch, [tp.clone()])
            .unwrap();
        let c = s.join();
        let c2 = s.hb(&c.member_id, c.epoch, &c.assignment).unwrap();
        let a4 = s.hb(&a.member_id, a3.epoch, &a3.assignment).unwrap();
        let a5 = s.hb(&a.member_id, a4.epoch, &a4.assignment).unwrap();
        let _ = c2;
        if a5.epoch > a3.epoch + 1 || a5.epoch > a.epoch + 1 {
            let tp = a5.assignment.iter().next().unwrap().clone();
            let err = s.g.check_commit(&a.member_id, a.epoch, [tp]).unwrap_err();
            assert!(matches!(err, GroupError::FencedEpoch { .. }), "{err}");
        }
    }

    #[test]
    fn a_group_record_that_would_not_fit_is_refused() {
        let mut s = Sim::new();
        s.limits.max_group_bytes = 2_000;
        let mut joined = 0;
        let err = loop {
            match s.send(Heartbeat {
                epoch: JOIN_EPOCH,
                client_id: "c".repeat(200),
                ..Heartbeat::default()
            }) {
                Ok(_) => joined += 1,
                Err(e) => break e,
            }
            assert!(joined < 100);
        };
        assert!(err.to_string().contains("would outgrow"), "{err}");
        assert_eq!(s.g.member_count(), joined);
        let long = s.send(Heartbeat {
            epoch: JOIN_EPOCH,
            client_id: "c".repeat(300),
            ..Heartbeat::default()
        });
        assert!(matches!(long, Err(GroupError::Invalid(_))));
    }

    #[test]
    fn a_retried_join_is_the_same_member() {
        let mut s = Sim::new();
        let join = |s: &mut Sim| {
            s.send(Heartbeat {
                member_id: "client-chosen".into(),
                epoch: JOIN_EPOCH,
                ..Heartbeat::default()
            })
            .unwrap()
        };
        let first = join(&mut s);
        let again = join(&mut s);
        assert_eq!(first.member_id, "client-chosen");
        assert_eq!(again.member_id, "client-chosen");
        assert_eq!(s.g.member_count(), 1);
        assert_eq!(again.assignment.len(), 12);
        let bad = s.send(Heartbeat {
            member_id: "with space".into(),
            epoch: JOIN_EPOCH,
            ..Heartbeat::default()
        });
        assert!(matches!(bad, Err(GroupError::Invalid(_))), "{bad:?}");
    }

    #[test]
    fn the_persisted_value_restores_the_same_group() {
        let mut s = Sim::new();
        let a = s.join();
        let b = s.join();
        let a2 = s.hb(&a.member_id, a.epoch, &a.assignment).unwrap();
        let v = s.g.value();
        let restored = Group::restore("g".into(), &v, s.now);
        assert_eq!(restored.value(), v);
        assert!(!restored.needs_write());
        let _ = (b, a2);
    }

    /// A join by pattern only, as librdkafka sends it (an empty topic list).
    fn join_by_pattern(s: &mut Sim, pattern: &str) -> Result<HeartbeatReply, GroupError> {
        s.send(Heartbeat {
            epoch: JOIN_EPOCH,
            topics: Some(BTreeSet::new()),
            pattern: Some(pattern.to_owned()),
            owned: Some(Partitions::new()),
            ..Heartbeat::default()
        })
    }

    /// A heartbeat that owns what `r` assigned and leaves the subscription
    /// as it is.
    fn beat(s: &mut Sim, r: &HeartbeatReply) -> HeartbeatReply {
        s.send_as_is(Heartbeat {
            member_id: r.member_id.clone(),
            epoch: r.epoch,
            owned: Some(r.assignment.clone()),
            ..Heartbeat::default()
        })
        .unwrap()
    }

    fn topics_of(p: &Partitions) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (t, _) in p {
            *m.entry(t.clone()).or_default() += 1;
        }
        m
    }

    #[test]
    fn a_pattern_subscription_follows_topics_as_they_come_and_go() {
        let mut s = Sim::new();
        s.topics.insert("orders-eu".into(), 4);
        s.topics.insert("old-orders".into(), 3);
        let a = join_by_pattern(&mut s, "orders-.*").unwrap();
        assert_eq!(topics_of(&a.assignment), [("orders-eu".into(), 4)].into());
        assert_eq!(s.g.value().members[0].pattern.as_deref(), Some("orders-.*"));

        // A topic that matches is created: the member gets it too.
        s.topics.insert("orders-us".into(), 2);
        assert!(s.refresh(), "a new match is a new target");
        let a2 = beat(&mut s, &a);
        assert_eq!(
            topics_of(&a2.assignment),
            [("orders-eu".into(), 4), ("orders-us".into(), 2)].into()
        );
        assert!(a2.epoch > a.epoch);
        assert!(!s.refresh(), "nothing changed");

        // One that matched is deleted: it goes.
        s.topics.remove("orders-eu");
        assert!(s.refresh());
        let a3 = s.hb(&a.member_id, a2.epoch, &a2.assignment).unwrap();
        assert_eq!(topics_of(&a3.assignment), [("orders-us".into(), 2)].into());

        // The pattern is dropped for a topic name: the member follows.
        let a4 = s
            .send(Heartbeat {
                member_id: a.member_id.clone(),
                epoch: a3.epoch,
                topics: Some([T.to_owned()].into()),
                pattern: Some(String::new()),
                owned: Some(a3.assignment.clone()),
                ..Heartbeat::default()
            })
            .unwrap();
        let a5 = s.hb(&a.member_id, a4.epoch, &a4.assignment).unwrap();
        assert_eq!(topics_of(&a5.assignment), [(T.to_owned(), 12)].into());
        assert_eq!(s.g.value().members[0].pattern, None);
    }

    #[test]
    fn a_pattern_gives_a_member_only_the_topics_its_caller_may_describe() {
        let mut s = Sim::new();
        s.topics.insert("orders-eu".into(), 4);
        s.topics.insert("orders-secret".into(), 2);
        s.hidden.insert("orders-secret".into());
        let join_as = |s: &mut Sim, caller: Caller| {
            s.send(Heartbeat {
                epoch: JOIN_EPOCH,
                topics: Some(BTreeSet::new()),
                pattern: Some("orders-.*".into()),
                owned: Some(Partitions::new()),
                caller: Some(caller),
                ..Heartbeat::default()
            })
            .unwrap()
        };
        let a = join_as(&mut s, limited());
        assert_eq!(
            topics_of(&a.assignment),
            [("orders-eu".into(), 4)].into(),
            "the hidden topic matches but is not given"
        );
        let json = serde_json::to_string(&s.g.value()).unwrap();
        assert!(
            json.contains(r#""caller":{"principal":{"User":"limited"}"#),
            "{json}"
        );

        // A member that may see it shares the group: it alone gets it.
        let root = Caller {
            principal: crate::auth::Principal::User("root".into()),
            host: None,
        };
        let b = join_as(&mut s, root);
        let (mut a, mut b) = (beat(&mut s, &a), b);
        for _ in 0..4 {
            a = beat(&mut s, &a);
            b = beat(&mut s, &b);
            no_partition_twice(&[&a.assignment, &b.assignment]);
        }
        assert!(!topics_of(&a.assignment).contains_key("orders-secret"));
        assert_eq!(topics_of(&b.assignment).get("orders-secret"), Some(&2));
        assert_eq!(a.assignment.len() + b.assignment.len(), 6);

        // Once permitted, the limited member's subscription grows: a new
        // target although the group's topics are the same.
        s.hidden.clear();
        s.acl_version += 1;
        let epoch = s.g.epoch();
        assert!(
            s.refresh(),
            "a permission change re-filters what a pattern gives"
        );
        assert!(s.g.epoch() > epoch);
        assert!(!s.refresh(), "nothing changed since");

        // Withdrawn again: the topic leaves its target.
        s.hidden.insert("orders-secret".into());
        s.acl_version += 1;
        assert!(s.refresh());
        let target = s.g.target_of(&a.member_id);
        assert!(
            target.iter().all(|(t, _)| t != "orders-secret"),
            "{target:?}"
        );

        // A member that heartbeats as another principal is filtered again.
        let a2 = s
            .send_as_is(Heartbeat {
                member_id: a.member_id.clone(),
                epoch: a.epoch,
                owned: Some(a.assignment.clone()),
                caller: Some(Caller {
                    principal: crate::auth::Principal::User("other".into()),
                    host: None,
                }),
                ..Heartbeat::default()
            })
            .unwrap();
        assert!(a2.epoch >= a.epoch);
        let m = s.g.members().find(|m| m.value.id == a.member_id).unwrap();
        assert_eq!(
            m.matched.topics.as_ref().map(BTreeSet::len),
            Some(2),
            "other is not limited: both topics"
        );
    }

    #[test]
    fn members_by_pattern_and_by_name_share_what_both_subscribe_to() {
        let mut s = Sim::new();
        s.topics.insert("orders-eu".into(), 4);
        let a = join_by_pattern(&mut s, "orders-.*|t").unwrap();
        let b = s.join(); // subscribed to T only
        let (mut a, mut b) = (a, b);
        for _ in 0..4 {
            a = beat(&mut s, &a);
            b = beat(&mut s, &b);
            no_partition_twice(&[&a.assignment, &b.assignment]);
        }
        let held = (a.assignment, b.assignment);
        no_partition_twice(&[&held.0, &held.1]);
        assert_eq!(topics_of(&held.1).keys().collect::<Vec<_>>(), [T]);
        assert_eq!(
            topics_of(&held.0).get("orders-eu"),
            Some(&4),
            "only a subscribes to it"
        );
        assert_eq!(held.0.len() + held.1.len(), 16);
    }

    #[test]
    fn a_bad_pattern_or_an_empty_subscription_admits_no_member() {
        let mut s = Sim::new();
        let bad = join_by_pattern(&mut s, "orders-(");
        assert!(
            matches!(bad, Err(GroupError::InvalidPattern { .. })),
            "{bad:?}"
        );
        assert_eq!(s.g.member_count(), 0);
        let nothing = join_by_pattern(&mut s, "");
        assert!(
            matches!(nothing, Err(GroupError::Invalid(_))),
            "{nothing:?}"
        );
        assert_eq!(s.g.member_count(), 0);

        let a = s.join();
        let bad = s.send(Heartbeat {
            member_id: a.member_id.clone(),
            epoch: a.epoch,
            pattern: Some("(?=lookahead)".into()),
            ..Heartbeat::default()
        });
        assert!(
            matches!(bad, Err(GroupError::InvalidPattern { .. })),
            "{bad:?}"
        );
        assert_eq!(s.g.value().members[0].pattern, None, "unchanged");
        let empty = s.send(Heartbeat {
            member_id: a.member_id.clone(),
            epoch: a.epoch,
            topics: Some(BTreeSet::new()),
            ..Heartbeat::default()
        });
        assert!(matches!(empty, Err(GroupError::Invalid(_))), "{empty:?}");
    }

    #[test]
    fn a_loaded_group_keeps_its_target_until_its_patterns_are_resolved() {
        let mut s = Sim::new();
        s.topics.insert("orders-eu".into(), 4);
        let a = join_by_pattern(&mut s, "orders-.*").unwrap();
        let a = beat(&mut s, &a);
        assert_eq!(s.g.state(), GroupStateName::Stable);
        let v = s.g.value();
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains(r#""pattern":"orders-.*""#), "{json}");
        let v: GroupValue = serde_json::from_str(&json).unwrap();

        // A new coordinator loads the group and has not listed topics yet.
        s.g = Group::restore("g".into(), &v, s.now);
        assert!(
            !s.g.refresh_target(view(&counts)),
            "unresolved: nothing moves"
        );
        assert_eq!(s.g.value(), v);
        assert_eq!(beat(&mut s, &a).assignment, a.assignment);
        // Listed: the same topics match, still nothing moves.
        assert!(!s.refresh());
        assert_eq!(s.g.value().target, v.target);
        assert_eq!(s.g.state(), GroupStateName::Stable);
    }

    #[test]
    fn a_loaded_group_recomputes_a_target_its_members_may_no_longer_see() {
        let mut s = Sim::new();
        s.topics.insert("orders-eu".into(), 2);
        s.topics.insert("orders-secret".into(), 2);
        let a = s
            .send(Heartbeat {
                epoch: JOIN_EPOCH,
                topics: Some(BTreeSet::new()),
                pattern: Some("orders-.*".into()),
                owned: Some(Partitions::new()),
                caller: Some(limited()),
                // Range splits each topic between its subscribers.
                assignor: Some("range".into()),
                ..Heartbeat::default()
            })
            .unwrap();
        // b subscribes to both by name: the group's topics stay the same
        // whatever a may see.
        let b = s
            .send(Heartbeat {
                epoch: JOIN_EPOCH,
                topics: Some(["orders-eu".to_owned(), "orders-secret".to_owned()].into()),
                owned: Some(Partitions::new()),
                assignor: Some("range".into()),
                ..Heartbeat::default()
            })
            .unwrap();
        let (mut a, mut b) = (beat(&mut s, &a), beat(&mut s, &b));
        for _ in 0..3 {
            a = beat(&mut s, &a);
            b = beat(&mut s, &b);
        }
        assert!(
            s.g.target_of(&a.member_id)
                .iter()
                .any(|(t, _)| t == "orders-secret"),
            "a may see it for now"
        );
        let v = s.g.value();

        // While no coordinator had the group, a lost the permission.
        s.hidden.insert("orders-secret".into());
        s.acl_version += 1;
        s.g = Group::restore("g".into(), &v, s.now);
        assert!(s.refresh(), "the stale target is recomputed");
        let target = s.g.target_of(&a.member_id);
        assert!(
            target.iter().all(|(t, _)| t != "orders-secret"),
            "{target:?}"
        );
        assert!(!s.refresh(), "once");
    }

    #[test]
    fn the_group_uses_the_assignor_most_members_ask_for() {
        use super::assignor::Assignor;
        let mut s = Sim::new();
        let a = s.join();
        let b = s.join();
        let (mut a, mut b) = (beat(&mut s, &a), beat(&mut s, &b));
        a = beat(&mut s, &a);
        b = beat(&mut s, &b);
        assert_eq!(s.g.assignor(), Assignor::Uniform);
        let ask = |s: &mut Sim, r: &HeartbeatReply, assignor: &str| {
            s.send_as_is(Heartbeat {
                member_id: r.member_id.clone(),
                epoch: r.epoch,
                assignor: Some(assignor.to_owned()),
                owned: Some(r.assignment.clone()),
                ..Heartbeat::default()
            })
        };
        let epoch = s.g.epoch;
        b = ask(&mut s, &b, "range").unwrap();
        assert!(s.g.epoch > epoch, "a new preference is a new epoch");
        assert_eq!(
            s.g.assignor(),
            Assignor::Range,
            "members without one do not vote"
        );
        a = ask(&mut s, &a, "uniform").unwrap();
        assert_eq!(
            s.g.assignor(),
            Assignor::Uniform,
            "a tie goes to the default"
        );
        a = ask(&mut s, &a, "range").unwrap();
        assert_eq!(s.g.assignor(), Assignor::Range);
        for _ in 0..3 {
            a = beat(&mut s, &a);
            b = beat(&mut s, &b);
        }
        no_partition_twice(&[&a.assignment, &b.assignment]);
        assert_eq!((a.assignment.len(), b.assignment.len()), (6, 6));
        assert_eq!(s.g.state(), GroupStateName::Stable);
        let v = s.g.value();
        assert!(
            v.members
                .iter()
                .all(|m| m.assignor.as_deref() == Some("range"))
        );
        let bad = ask(&mut s, &a, "sticky");
        assert!(
            matches!(bad, Err(GroupError::UnsupportedAssignor(_))),
            "{bad:?}"
        );
        assert_eq!(s.g.value(), v, "a refused heartbeat changes nothing");
    }

    #[test]
    fn a_new_match_rebalances_even_when_another_member_had_the_topic() {
        let mut s = Sim::new();
        let a = s
            .send(Heartbeat {
                epoch: JOIN_EPOCH,
                topics: Some(["orders-eu".to_owned()].into()),
                owned: Some(Partitions::new()),
                ..Heartbeat::default()
            })
            .unwrap();
        let b = join_by_pattern(&mut s, "orders-.*").unwrap();
        // The topic is created; the name listing has not caught up, but
        // a's subscription by name sees it at once.
        s.topics.insert("orders-eu".into(), 4);
        s.unlisted.insert("orders-eu".into());
        assert!(s.refresh());
        let a = beat(&mut s, &a);
        assert_eq!(a.assignment.len(), 4);
        // The listing catches up: b's pattern matches it too. The group's
        // topics are the same, yet b's subscription changed.
        s.unlisted.clear();
        assert!(s.refresh(), "a new match is a new target");
        let (mut a, mut b) = (a, beat(&mut s, &b));
        for _ in 0..3 {
            a = beat(&mut s, &a);
            b = beat(&mut s, &b);
        }
        assert_eq!((a.assignment.len(), b.assignment.len()), (2, 2));
        no_partition_twice(&[&a.assignment, &b.assignment]);
    }

    #[test]
    fn classic_members_keep_a_group_out_of_offsets_retention() {
        use super::super::classic::tests::{now, req};
        let mut g = Group::new("g".into());
        // Too small for the generation's assignment: only its number is
        // persisted, but the member is there all the same.
        let limits = Limits {
            max_group_bytes: 300,
            ..Limits::default()
        };
        let mut join = req("", &["range"]);
        join.require_known_member_id = false;
        let joined = now(g.classic.join(join, 0, &limits, || "a".into())).unwrap();
        g.note_classic(0);
        let big = bytes::Bytes::from(vec![7u8; 1000]);
        let _sync = g
            .classic
            .sync("a", joined.generation, vec![("a".into(), big)], 1);
        g.note_classic(1);
        assert_eq!(g.classic.value().map(|v| v.members.len()), Some(0));
        assert_eq!(g.empty_since_ms(), None, "a member is in the group");
        g.classic.leave("a", None, 2).unwrap();
        g.note_classic(2);
        assert_eq!(g.empty_since_ms(), Some(2));

        // A group with offsets whose classic member leaves before its
        // generation became stable: the retention clock restarts too.
        let mut g = Group::new("g".into());
        g.offsets.insert(
            ("t".into(), 0),
            Committed {
                offset: 5,
                metadata: String::new(),
                commit_ms: 0,
                topic_id: "id".into(),
            },
        );
        let mut join = req("", &["range"]);
        join.require_known_member_id = false;
        now(g.classic.join(join, 10, &limits, || "b".into())).unwrap();
        g.note_classic(10);
        g.classic.leave("b", None, 20).unwrap();
        g.note_classic(20);
        assert_eq!(g.empty_since_ms(), Some(20));
        assert!(g.needs_write(), "and the new clock is written");
    }
}
