//! Consumer-group plumbing: reaching a group's coordinator, and the
//! membership task that heartbeats for a subscribed [`crate::Consumer`].
//!
//! - [`Coordinator`] finds the broker coordinating a group
//!   (`FindCoordinator` on any broker) and sends group calls there; it
//!   follows `NOT_COORDINATOR` (the coordinator moved), waits out
//!   `COORDINATOR_LOAD_IN_PROGRESS`, and finds the coordinator again after
//!   a connection failure, so members follow coordinator moves and
//!   failovers by themselves.
//! - [`Membership`] is one task per subscribed consumer. It joins, then
//!   heartbeats at the interval the coordinator asks for (sooner when told
//!   to hand partitions over), reporting the partitions the consumer owns;
//!   the assignment it receives is published on a `watch` channel that the
//!   consumer applies (revoking first, committing what it read). When the
//!   coordinator fences the member, or no heartbeat got through for a
//!   whole session timeout, the partitions are **lost**: the task stops
//!   heartbeating, the consumer drops them without committing and
//!   acknowledges ([`Membership::ack_lost`]), and only then does the task
//!   rejoin, owning nothing.
//!
//! The one thing a newcomer must not break: the consumer reports a
//! partition as no longer owned only after it stopped reading it (and
//! committed it); that report is what lets the coordinator give the
//! partition to another member.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::connect::AuthChannel as Channel;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use strata_proto::ErrorInfo;
use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::{
    CommitOffsetsRequest, ErrorReason, FetchOffsetsRequest, FindCoordinatorRequest,
    GroupHeartbeatRequest, GroupHeartbeatResponse, OffsetCommit, TopicPartitions,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, MAX_MESSAGE_BYTES, backoff, normalize_url};
use crate::error::{Error, Result};

/// A set of topic-partitions.
pub(crate) type Partitions = BTreeSet<(String, u32)>;

/// Attempts of one group call before its error is returned.
const CALL_ATTEMPTS: u32 = 12;

/// The wire lists of a set.
pub(crate) fn to_wire(set: &Partitions) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (t, p) in set {
        match out.last_mut() {
            Some(last) if &last.topic == t => last.partitions.push(*p),
            _ => out.push(TopicPartitions {
                topic: t.clone(),
                partitions: vec![*p],
            }),
        }
    }
    out
}

/// The set of wire lists.
pub(crate) fn from_wire(list: &[TopicPartitions]) -> Partitions {
    list.iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}

/// The group calls a member makes: [`Coordinator`] in production, a
/// scripted coordinator in unit tests.
pub(crate) trait GroupCalls: std::fmt::Debug + Send + Sync {
    /// The group's id.
    fn group(&self) -> &str;
    /// One heartbeat (a join or a leave too, by its epoch); with the
    /// answer, when the attempt that got it was sent.
    fn heartbeat(
        &self,
        req: GroupHeartbeatRequest,
    ) -> BoxFuture<'_, Result<(GroupHeartbeatResponse, Instant)>>;
    /// See [`Coordinator::commit`].
    fn commit<'a>(
        &'a self,
        member: &'a str,
        epoch: i32,
        offsets: &'a [(String, u32, i64)],
    ) -> BoxFuture<'a, Result<()>>;
    /// See [`Coordinator::committed`].
    fn committed<'a>(
        &'a self,
        partitions: &'a Partitions,
    ) -> BoxFuture<'a, Result<BTreeMap<(String, u32), i64>>>;
}

impl GroupCalls for Coordinator {
    fn group(&self) -> &str {
        &self.group
    }

    fn heartbeat(
        &self,
        req: GroupHeartbeatRequest,
    ) -> BoxFuture<'_, Result<(GroupHeartbeatResponse, Instant)>> {
        let what = if req.member_epoch < 0 {
            "leave group"
        } else {
            "heartbeat"
        };
        Box::pin(self.call_timed(what, true, move |mut c| {
            let req = tonic::Request::new(req.clone());
            async move { c.heartbeat(req).await }
        }))
    }

    fn commit<'a>(
        &'a self,
        member: &'a str,
        epoch: i32,
        offsets: &'a [(String, u32, i64)],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Coordinator::commit(self, member, epoch, offsets))
    }

    fn committed<'a>(
        &'a self,
        partitions: &'a Partitions,
    ) -> BoxFuture<'a, Result<BTreeMap<(String, u32), i64>>> {
        Box::pin(Coordinator::committed(self, partitions))
    }
}

/// Group calls, sent to the group's coordinator.
#[derive(Debug)]
pub(crate) struct Coordinator {
    cluster: Arc<Cluster>,
    group: String,
    address: Mutex<Option<String>>,
}

impl Coordinator {
    pub(crate) fn new(cluster: Arc<Cluster>, group: &str) -> Self {
        Self {
            cluster,
            group: group.to_owned(),
            address: Mutex::new(None),
        }
    }

    /// The coordinator's address, found if not known.
    async fn address(&self) -> Result<String> {
        if let Some(a) = self.address.lock().clone() {
            return Ok(a);
        }
        let group = self.group.clone();
        let (resp, _) = self
            .cluster
            .call_any("find coordinator", true, |channel| {
                let req = FindCoordinatorRequest {
                    group_id: group.clone(),
                };
                async move { GroupsClient::new(channel).find_coordinator(req).await }
            })
            .await?;
        let address = normalize_url(&resp.address);
        *self.address.lock() = Some(address.clone());
        Ok(address)
    }

    /// Runs a group call on the coordinator, following moves and waiting
    /// out loads. Only `idempotent` calls are sent again after a
    /// connection failed mid-call.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, idempotent: bool, call: F) -> Result<T>
    where
        F: Fn(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        Ok(self.call_timed(what, idempotent, call).await?.0)
    }

    /// [`Coordinator::call`], also returning when the attempt that got
    /// the answer was sent.
    async fn call_timed<T, F, Fut>(
        &self,
        what: &str,
        idempotent: bool,
        call: F,
    ) -> Result<(T, Instant)>
    where
        F: Fn(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0u32;
        loop {
            let sent = Instant::now();
            let result = async {
                let address = self.address().await?;
                let client = GroupsClient::new(self.cluster.channel(&address)?)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES);
                self.cluster.unary(&address, what, call(client)).await
            }
            .await;
            let e = match result {
                Ok(v) => return Ok((v, sent)),
                Err(e) => e,
            };
            let retry = match &e {
                Error::Broker(info) => match info.reason {
                    ErrorReason::NotCoordinator
                    | ErrorReason::CoordinatorNotAvailable
                    | ErrorReason::BrokerUnavailable => {
                        *self.address.lock() = info
                            .owner_address
                            .as_deref()
                            .filter(|a| !a.is_empty())
                            .map(normalize_url);
                        true
                    }
                    ErrorReason::CoordinatorLoadInProgress | ErrorReason::StoreUnavailable => true,
                    _ => false,
                },
                Error::Connect { .. } | Error::Timeout { .. } => {
                    *self.address.lock() = None;
                    true
                }
                Error::Transport { .. } => {
                    *self.address.lock() = None;
                    idempotent
                }
                _ => false,
            };
            if !retry || attempt + 1 >= CALL_ATTEMPTS {
                return Err(e);
            }
            tracing::debug!(group = %self.group, what, error = %e, "group call failed; retrying");
            tokio::time::sleep(backoff(attempt, &e)).await;
            attempt += 1;
        }
    }

    /// Commits `offsets` (topic, partition, next offset) as `member` at
    /// `epoch`; returns once durable.
    pub(crate) async fn commit(
        &self,
        member: &str,
        epoch: i32,
        offsets: &[(String, u32, i64)],
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let req = CommitOffsetsRequest {
            group_id: self.group.clone(),
            member_id: member.to_owned(),
            member_epoch: epoch,
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| OffsetCommit {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        self.call("commit offsets", true, |mut c| {
            let req = self.cluster.request(req.clone());
            async move { c.commit_offsets(req).await }
        })
        .await
        .map(drop)
    }

    /// The committed offsets of `partitions` (all of the group's when
    /// empty), as (topic, partition) → offset.
    pub(crate) async fn committed(
        &self,
        partitions: &Partitions,
    ) -> Result<BTreeMap<(String, u32), i64>> {
        let req = FetchOffsetsRequest {
            group_id: self.group.clone(),
            partitions: to_wire(partitions),
        };
        let resp = self
            .call("fetch offsets", true, |mut c| {
                let req = self.cluster.request(req.clone());
                async move { c.fetch_offsets(req).await }
            })
            .await?;
        Ok(resp
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect())
    }
}

/// How a member joins.
#[derive(Debug, Clone)]
pub(crate) struct MemberSettings {
    pub(crate) topics: Vec<String>,
    /// A subscription pattern (regular expression) besides `topics`.
    pub(crate) pattern: Option<String>,
    /// The server-side assignor it asks for.
    pub(crate) assignor: Option<String>,
    pub(crate) instance_id: Option<String>,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) client_id: String,
}

/// What the coordinator last assigned, as the consumer sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct View {
    /// The partitions the member may own.
    pub(crate) assignment: Partitions,
    /// Bumped every time the member lost its partitions (fenced, or its
    /// session ran out): the consumer drops them without committing and
    /// says so with [`Membership::ack_lost`]; only then does the member
    /// rejoin.
    pub(crate) lost: u64,
    /// The coordinator refuses the member's heartbeats for a reason no
    /// retry fixes (a pattern that does not compile, an ACL): the consumer
    /// reports it. Cleared by the next heartbeat accepted.
    pub(crate) refused: Option<ErrorInfo>,
}

#[derive(Debug)]
struct MemberState {
    member_id: String,
    epoch: i32,
    owned: Partitions,
    /// When the last heartbeat the coordinator answered was sent: the
    /// session runs from there.
    last_ok: Instant,
    session_timeout: Duration,
    /// The heartbeat interval the coordinator asked for last.
    interval: Duration,
    /// Heartbeats sent and losses declared so far. An answer is applied
    /// only if nothing was sent or declared after its heartbeat, so a late
    /// answer never overwrites what a newer event published.
    seq: u64,
    /// Losses declared ([`View::lost`]) and acknowledged by the consumer.
    lost: u64,
    acked: u64,
}

impl MemberState {
    /// A loss is declared and the consumer has not let go yet.
    fn loss_pending(&self) -> bool {
        self.lost != self.acked
    }

    /// Declares the partitions lost: the member is out of the group (and
    /// heartbeats no more) until the consumer acknowledges. Publishes
    /// under the state lock, so views go out in the order they happened.
    fn declare_loss(&mut self, view: &watch::Sender<View>) {
        self.epoch = 0;
        self.seq += 1;
        self.lost += 1;
        let lost = self.lost;
        view.send_modify(|v| {
            v.assignment.clear();
            v.lost = lost;
        });
    }

    /// Declares a loss if no heartbeat got through for a session timeout
    /// (the coordinator has most likely given the partitions to others);
    /// true while a loss is pending.
    fn expire_if_due(&mut self, view: &watch::Sender<View>, group: &str) -> bool {
        if !self.loss_pending() && self.epoch > 0 && self.last_ok.elapsed() > self.session_timeout {
            tracing::warn!(
                group,
                "no heartbeat got through for a session timeout; this member lost its partitions"
            );
            self.declare_loss(view);
        }
        self.loss_pending()
    }
}

/// The heartbeat task of one subscribed consumer.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) coordinator: Arc<dyn GroupCalls>,
    state: Arc<Mutex<MemberState>>,
    pub(crate) view: watch::Receiver<View>,
    publish: Arc<watch::Sender<View>>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Membership {
    /// Starts the task: it joins at once.
    pub(crate) fn start(coordinator: Arc<dyn GroupCalls>, settings: MemberSettings) -> Self {
        // The member names itself, so a join retried after a lost answer
        // is not taken for a second member.
        let state = Arc::new(Mutex::new(MemberState {
            member_id: format!("{:032x}", rand::random::<u128>()),
            epoch: 0,
            owned: Partitions::new(),
            last_ok: Instant::now(),
            session_timeout: settings.session_timeout,
            interval: Duration::from_millis(500),
            seq: 0,
            lost: 0,
            acked: 0,
        }));
        let (tx, view) = watch::channel(View::default());
        let publish = Arc::new(tx);
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(heartbeat_loop(
            coordinator.clone(),
            settings,
            state.clone(),
            publish.clone(),
            wake.clone(),
            stop.clone(),
        ));
        Self {
            coordinator,
            state,
            view,
            publish,
            wake,
            stop,
            task: Some(task),
        }
    }

    /// The member id and epoch commits carry.
    pub(crate) fn member(&self) -> (String, i32) {
        let st = self.state.lock();
        (st.member_id.clone(), st.epoch)
    }

    /// Records what the consumer owns now and heartbeats at once (a
    /// revocation the coordinator waits for).
    pub(crate) fn set_owned(&self, owned: Partitions) {
        self.state.lock().owned = owned;
        self.wake.notify_one();
    }

    /// The consumer dropped every partition it held when loss `lost` (see
    /// [`View::lost`]) was declared: the member rejoins, owning nothing.
    pub(crate) fn ack_lost(&self, lost: u64) {
        {
            let mut st = self.state.lock();
            if st.lost != lost || st.acked == lost {
                return;
            }
            st.acked = lost;
            st.owned.clear();
        }
        self.wake.notify_one();
    }

    /// True while the partitions are lost and the consumer has not
    /// acknowledged it; declares the loss first if no heartbeat got
    /// through for a whole session timeout.
    pub(crate) fn loss_pending(&self) -> bool {
        self.state
            .lock()
            .expire_if_due(&self.publish, self.coordinator.group())
    }

    /// The heartbeat interval: how often the consumer looks at the
    /// session even when no record arrives.
    pub(crate) fn interval(&self) -> Duration {
        self.state.lock().interval
    }

    /// Stops heartbeating and leaves the group (a static member leaves for
    /// a restart: its partitions wait for it for a session timeout).
    pub(crate) async fn leave(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // The task leaves the group by itself.
        self.stop.cancel();
    }
}

/// How long the task waits for the consumer to acknowledge a loss before
/// it looks again (it is woken as soon as the consumer does).
const LOSS_RECHECK: Duration = Duration::from_secs(60);

/// How long the task waits before it heartbeats again after a refusal no
/// retry fixes by itself (an ACL may be granted meanwhile).
const REFUSED_RETRY: Duration = Duration::from_secs(5);

/// True when a heartbeat refused for `reason` will be refused again until
/// someone changes something (the subscription, an ACL, the other
/// members' protocol): the consumer reports it.
fn refused_for_good(reason: ErrorReason) -> bool {
    matches!(
        reason,
        ErrorReason::InvalidRegularExpression
            | ErrorReason::UnsupportedAssignor
            | ErrorReason::InvalidRequest
            | ErrorReason::InconsistentGroupProtocol
            | ErrorReason::Unauthenticated
            | ErrorReason::GroupAuthorizationFailed
            | ErrorReason::TopicAuthorizationFailed
    )
}

async fn heartbeat_loop(
    coordinator: Arc<dyn GroupCalls>,
    settings: MemberSettings,
    state: Arc<Mutex<MemberState>>,
    view: Arc<watch::Sender<View>>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let group = coordinator.group().to_owned();
    let mut interval = Duration::from_millis(0);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
            () = stop.cancelled() => break,
        }
        let (seq, req) = {
            let mut st = state.lock();
            if st.expire_if_due(&view, &group) {
                // Not a member until the consumer let the lost partitions
                // go: a heartbeat now could be granted partitions while it
                // still reads them.
                interval = LOSS_RECHECK;
                continue;
            }
            st.seq += 1;
            let req = GroupHeartbeatRequest {
                group_id: group.clone(),
                member_id: st.member_id.clone(),
                member_epoch: st.epoch,
                instance_id: settings.instance_id.clone(),
                topics: settings.topics.clone(),
                owned: to_wire(&st.owned),
                session_timeout_ms: ms(settings.session_timeout),
                rebalance_timeout_ms: ms(settings.rebalance_timeout),
                client_id: settings.client_id.clone(),
                topic_pattern: settings.pattern.clone(),
                server_assignor: settings.assignor.clone(),
            };
            (st.seq, req)
        };
        let result = tokio::select! {
            r = coordinator.heartbeat(req) => r,
            () = stop.cancelled() => break,
        };
        let mut st = state.lock();
        if st.seq != seq {
            // A loss was declared while this heartbeat was out: its answer
            // is about a membership that is over.
            tracing::debug!(
                group,
                "ignoring the answer to a heartbeat sent before a loss"
            );
            interval = Duration::from_millis(0);
            continue;
        }
        match result {
            Ok((resp, sent)) => {
                if st.epoch == 0 && resp.member_epoch > 0 {
                    tracing::info!(group, member = %resp.member_id, "joined the group");
                }
                st.member_id = resp.member_id;
                st.epoch = resp.member_epoch;
                // The coordinator heard from us when this was sent, not
                // when its answer came back.
                st.last_ok = st.last_ok.max(sent);
                let assignment = from_wire(&resp.assignment);
                view.send_if_modified(|v| {
                    let changed = v.assignment != assignment || v.refused.is_some();
                    v.assignment = assignment;
                    v.refused = None;
                    changed
                });
                interval = Duration::from_millis(u64::from(resp.heartbeat_interval_ms.max(50)));
                st.interval = interval;
            }
            Err(e)
                if matches!(
                    e.reason(),
                    Some(ErrorReason::UnknownMemberId | ErrorReason::FencedMemberEpoch)
                ) =>
            {
                // Rejoin as the same member, owning nothing, once the
                // consumer let go.
                tracing::warn!(group, error = %e, "this member lost its partitions; it rejoins once they are dropped");
                st.declare_loss(&view);
                interval = Duration::from_millis(0);
            }
            Err(Error::Broker(info)) if refused_for_good(info.reason) => {
                tracing::warn!(group, error = %info, "the coordinator refuses this member; retrying");
                st.expire_if_due(&view, &group);
                view.send_if_modified(|v| {
                    let changed = v.refused.as_ref() != Some(&info);
                    v.refused = Some(info);
                    changed
                });
                interval = REFUSED_RETRY;
            }
            Err(e) => {
                tracing::debug!(group, error = %e, "heartbeat failed; retrying");
                st.expire_if_due(&view, &group);
                interval = Duration::from_millis(500);
            }
        }
    }
    // Leave (best effort, bounded by the request timeout).
    let (member_id, epoch) = {
        let st = state.lock();
        (st.member_id.clone(), st.epoch)
    };
    if epoch == 0 {
        return; // never joined (or lost its place): nothing to leave
    }
    let leave_epoch = if settings.instance_id.is_some() && epoch > 0 {
        -2
    } else {
        -1
    };
    let req = GroupHeartbeatRequest {
        group_id: group.clone(),
        member_id,
        member_epoch: leave_epoch,
        instance_id: settings.instance_id.clone(),
        ..GroupHeartbeatRequest::default()
    };
    let mut attempt = 0;
    loop {
        let r = coordinator.heartbeat(req.clone()).await;
        match r {
            Ok(_) => {
                tracing::info!(group, "left the group");
                return;
            }
            Err(e) if attempt < 2 && e.is_retryable() => attempt += 1,
            Err(e) => {
                tracing::warn!(group, error = %e, "could not leave the group; its partitions move after the session timeout");
                return;
            }
        }
    }
}

/// A scripted coordinator for unit tests of the membership and the
/// consumer: it answers heartbeats from what the test set, records every
/// call, and keeps commits in memory.
#[cfg(test)]
pub(crate) mod scripted {
    use super::*;
    use strata_proto::ErrorInfo;

    /// A commit received: the member epoch it carried and its offsets.
    pub(crate) type Commit = (i32, Vec<(String, u32, i64)>);

    #[derive(Debug, Default)]
    pub(crate) struct Script {
        /// Heartbeats received (joins and leaves too), with when.
        pub(crate) received: Vec<(Instant, GroupHeartbeatRequest)>,
        /// The epoch and assignment heartbeats are answered with.
        pub(crate) epoch: i32,
        pub(crate) assignment: Partitions,
        pub(crate) interval_ms: u32,
        /// How long the coordinator takes to answer.
        pub(crate) delay: Duration,
        /// Heartbeats of a member (epoch above 0) fail with this.
        pub(crate) fence: Option<ErrorReason>,
        /// Every heartbeat fails to connect.
        pub(crate) down: bool,
        pub(crate) commits: Vec<Commit>,
        pub(crate) offsets: BTreeMap<(String, u32), i64>,
    }

    #[derive(Debug, Default)]
    pub(crate) struct Scripted(pub(crate) Mutex<Script>);

    impl Scripted {
        pub(crate) fn new(epoch: i32, assignment: &[(&str, u32)]) -> Arc<Self> {
            Arc::new(Scripted(Mutex::new(Script {
                epoch,
                assignment: assignment
                    .iter()
                    .map(|(t, p)| ((*t).to_owned(), *p))
                    .collect(),
                interval_ms: 1_000,
                ..Script::default()
            })))
        }

        pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
            f(&mut self.0.lock())
        }

        /// The heartbeats received from `from` on.
        pub(crate) fn received_since(&self, from: usize) -> Vec<GroupHeartbeatRequest> {
            self.0.lock().received[from..]
                .iter()
                .map(|(_, r)| r.clone())
                .collect()
        }
    }

    impl GroupCalls for Scripted {
        fn group(&self) -> &str {
            "g"
        }

        fn heartbeat(
            &self,
            req: GroupHeartbeatRequest,
        ) -> BoxFuture<'_, Result<(GroupHeartbeatResponse, Instant)>> {
            Box::pin(async move {
                let sent = Instant::now();
                let (delay, reply) = {
                    let mut s = self.0.lock();
                    s.received.push((sent, req.clone()));
                    let reply = if s.down {
                        Err(Error::Connect {
                            url: "http://coordinator:1".into(),
                            message: "connection refused".into(),
                        })
                    } else if let (Some(reason), true) = (s.fence, req.member_epoch > 0) {
                        Err(Error::Broker(ErrorInfo::new(reason, "scripted")))
                    } else {
                        Ok(GroupHeartbeatResponse {
                            member_id: req.member_id.clone(),
                            member_epoch: if req.member_epoch < 0 {
                                req.member_epoch
                            } else {
                                s.epoch
                            },
                            assignment: to_wire(&s.assignment),
                            heartbeat_interval_ms: s.interval_ms,
                        })
                    };
                    (s.delay, reply)
                };
                tokio::time::sleep(delay).await;
                reply.map(|r| (r, sent))
            })
        }

        fn commit<'a>(
            &'a self,
            _member: &'a str,
            epoch: i32,
            offsets: &'a [(String, u32, i64)],
        ) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                if offsets.is_empty() {
                    return Ok(());
                }
                let mut s = self.0.lock();
                s.commits.push((epoch, offsets.to_vec()));
                for (t, p, o) in offsets {
                    s.offsets.insert((t.clone(), *p), *o);
                }
                Ok(())
            })
        }

        fn committed<'a>(
            &'a self,
            partitions: &'a Partitions,
        ) -> BoxFuture<'a, Result<BTreeMap<(String, u32), i64>>> {
            Box::pin(async move {
                let s = self.0.lock();
                Ok(s.offsets
                    .iter()
                    .filter(|(k, _)| partitions.contains(*k))
                    .map(|(k, o)| (k.clone(), *o))
                    .collect())
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::scripted::Scripted;
    use super::*;

    fn settings() -> MemberSettings {
        MemberSettings {
            topics: vec!["t".into()],
            pattern: None,
            assignor: None,
            instance_id: None,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            client_id: "test".into(),
        }
    }

    fn set(parts: &[(&str, u32)]) -> Partitions {
        parts.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    }

    /// Waits (in paused time) until the view satisfies `done`.
    async fn until(view: &mut watch::Receiver<View>, done: impl Fn(&View) -> bool) -> View {
        tokio::time::timeout(Duration::from_secs(600), async {
            loop {
                if done(&view.borrow_and_update()) {
                    return view.borrow().clone();
                }
                view.changed().await.unwrap();
            }
        })
        .await
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_member_rejoins_only_after_the_consumer_let_its_partitions_go() {
        let coordinator = Scripted::new(1, &[("t", 0), ("t", 1)]);
        let m = Membership::start(coordinator.clone(), settings());
        let mut view = m.view.clone();
        until(&mut view, |v| v.assignment == set(&[("t", 0), ("t", 1)])).await;
        m.set_owned(set(&[("t", 0), ("t", 1)]));
        coordinator.with(|s| s.fence = Some(ErrorReason::FencedMemberEpoch));
        let v = until(&mut view, |v| v.lost == 1).await;
        assert!(v.assignment.is_empty());
        // The consumer is still reading the lost partitions: the member
        // neither rejoins nor heartbeats, however long that takes.
        let from = coordinator.with(|s| s.received.len());
        coordinator.with(|s| s.fence = None);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(coordinator.received_since(from), vec![]);
        // It let go: the member rejoins, owning nothing.
        m.ack_lost(1);
        until(&mut view, |v| v.assignment == set(&[("t", 0), ("t", 1)])).await;
        let sent = coordinator.received_since(from);
        assert_eq!(sent[0].member_epoch, 0, "{sent:?}");
        assert!(sent[0].owned.is_empty(), "{sent:?}");
        assert_eq!(m.member().1, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_session_is_a_loss_and_the_member_rejoins_after_the_consumer_let_go() {
        let coordinator = Scripted::new(1, &[("t", 0)]);
        let m = Membership::start(coordinator.clone(), settings());
        let mut view = m.view.clone();
        until(&mut view, |v| v.assignment == set(&[("t", 0)])).await;
        m.set_owned(set(&[("t", 0)]));
        coordinator.with(|s| s.down = true);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(m.loss_pending());
        let v = until(&mut view, |v| v.lost == 1).await;
        assert!(v.assignment.is_empty());
        coordinator.with(|s| s.down = false);
        let from = coordinator.with(|s| s.received.len());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(coordinator.received_since(from), vec![]);
        m.ack_lost(1);
        until(&mut view, |v| v.assignment == set(&[("t", 0)])).await;
        let sent = coordinator.received_since(from);
        assert_eq!(sent[0].member_epoch, 0, "{sent:?}");
        assert!(sent[0].owned.is_empty(), "{sent:?}");
        assert!(!m.loss_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_does_not_undo_a_loss_declared_after_it_was_sent() {
        let coordinator = Scripted::new(1, &[("t", 0)]);
        let m = Membership::start(coordinator.clone(), settings());
        let mut view = m.view.clone();
        until(&mut view, |v| v.assignment == set(&[("t", 0)])).await;
        m.set_owned(set(&[("t", 0)]));
        // The next heartbeat is answered only after the session ran out.
        coordinator.with(|s| {
            s.delay = Duration::from_secs(30);
            s.assignment = set(&[("t", 0), ("t", 1)]);
        });
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(m.loss_pending());
        until(&mut view, |v| v.lost == 1).await;
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(
            *view.borrow(),
            View {
                assignment: Partitions::new(),
                lost: 1,
                refused: None,
            }
        );
        assert_eq!(m.member().1, 0, "the member is out until it rejoins");
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_runs_from_when_the_last_answered_heartbeat_was_sent() {
        let coordinator = Scripted::new(1, &[("t", 0)]);
        coordinator.with(|s| s.delay = Duration::from_secs(4));
        let m = Membership::start(coordinator.clone(), settings());
        let mut view = m.view.clone();
        until(&mut view, |v| !v.assignment.is_empty()).await;
        // Answered 4 s after it was sent; nothing gets through afterwards.
        coordinator.with(|s| s.down = true);
        let sent = coordinator.with(|s| s.received[0].0);
        tokio::time::sleep_until(sent + Duration::from_millis(9_900)).await;
        assert!(!m.loss_pending());
        tokio::time::sleep_until(sent + Duration::from_millis(10_100)).await;
        assert!(m.loss_pending());
    }
}
