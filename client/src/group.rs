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
//!   whole session timeout, the partitions are **lost**: the consumer
//!   drops them without committing and the task rejoins.
//!
//! The one thing a newcomer must not break: the consumer reports a
//! partition as no longer owned only after it stopped reading it (and
//! committed it); that report is what lets the coordinator give the
//! partition to another member.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::{
    CommitOffsetsRequest, ErrorReason, FetchOffsetsRequest, FindCoordinatorRequest,
    GroupHeartbeatRequest, GroupHeartbeatResponse, OffsetCommit, TopicPartitions,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

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
    /// One heartbeat (a join or a leave too, by its epoch).
    fn heartbeat(
        &self,
        req: GroupHeartbeatRequest,
    ) -> BoxFuture<'_, Result<GroupHeartbeatResponse>>;
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
    ) -> BoxFuture<'_, Result<GroupHeartbeatResponse>> {
        let what = if req.member_epoch < 0 {
            "leave group"
        } else {
            "heartbeat"
        };
        Box::pin(self.call(what, true, move |mut c| {
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
        let mut attempt = 0u32;
        loop {
            let result = async {
                let address = self.address().await?;
                let client = GroupsClient::new(self.cluster.channel(&address)?)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES);
                self.cluster.unary(&address, what, call(client)).await
            }
            .await;
            let e = match result {
                Ok(v) => return Ok(v),
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
    /// session ran out): the consumer drops them without committing.
    pub(crate) lost: u64,
}

#[derive(Debug)]
struct MemberState {
    member_id: String,
    epoch: i32,
    owned: Partitions,
    /// Last heartbeat the coordinator answered.
    last_ok: Instant,
}

/// The heartbeat task of one subscribed consumer.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) coordinator: Arc<dyn GroupCalls>,
    state: Arc<Mutex<MemberState>>,
    pub(crate) view: watch::Receiver<View>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    session_timeout: Duration,
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
        }));
        let (tx, view) = watch::channel(View::default());
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let session_timeout = settings.session_timeout;
        let task = tokio::spawn(heartbeat_loop(
            coordinator.clone(),
            settings,
            state.clone(),
            tx,
            wake.clone(),
            stop.clone(),
        ));
        Self {
            coordinator,
            state,
            view,
            wake,
            stop,
            task: Some(task),
            session_timeout,
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

    /// True when no heartbeat got through for a whole session timeout: the
    /// coordinator has most likely given the partitions to others.
    pub(crate) fn session_expired(&self) -> bool {
        self.state.lock().last_ok.elapsed() > self.session_timeout
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

async fn heartbeat_loop(
    coordinator: Arc<dyn GroupCalls>,
    settings: MemberSettings,
    state: Arc<Mutex<MemberState>>,
    view: watch::Sender<View>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let mut interval = Duration::from_millis(0);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
            () = stop.cancelled() => break,
        }
        let (member_id, epoch, owned) = {
            let st = state.lock();
            (st.member_id.clone(), st.epoch, st.owned.clone())
        };
        let req = GroupHeartbeatRequest {
            group_id: coordinator.group().to_owned(),
            member_id: member_id.clone(),
            member_epoch: epoch,
            instance_id: settings.instance_id.clone(),
            topics: settings.topics.clone(),
            owned: to_wire(&owned),
            session_timeout_ms: ms(settings.session_timeout),
            rebalance_timeout_ms: ms(settings.rebalance_timeout),
            client_id: settings.client_id.clone(),
        };
        let result = tokio::select! {
            r = coordinator.heartbeat(req) => r,
            () = stop.cancelled() => break,
        };
        match result {
            Ok(resp) => {
                let assignment = from_wire(&resp.assignment);
                {
                    let mut st = state.lock();
                    if st.epoch == 0 && resp.member_epoch > 0 {
                        tracing::info!(group = %coordinator.group(), member = %resp.member_id, "joined the group");
                    }
                    st.member_id = resp.member_id;
                    st.epoch = resp.member_epoch;
                    st.last_ok = Instant::now();
                }
                view.send_if_modified(|v| {
                    let changed = v.assignment != assignment;
                    v.assignment = assignment;
                    changed
                });
                interval = Duration::from_millis(u64::from(resp.heartbeat_interval_ms.max(50)));
            }
            Err(e)
                if matches!(
                    e.reason(),
                    Some(ErrorReason::UnknownMemberId | ErrorReason::FencedMemberEpoch)
                ) =>
            {
                tracing::warn!(group = %coordinator.group(), error = %e, "this member lost its partitions; rejoining");
                {
                    // Rejoin as the same member, owning nothing.
                    let mut st = state.lock();
                    st.epoch = 0;
                    st.owned.clear();
                    st.last_ok = Instant::now();
                }
                view.send_modify(|v| {
                    v.assignment.clear();
                    v.lost += 1;
                });
                interval = Duration::from_millis(0);
            }
            Err(e) => {
                tracing::debug!(group = %coordinator.group(), error = %e, "heartbeat failed; retrying");
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
        group_id: coordinator.group().to_owned(),
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
                tracing::info!(group = %coordinator.group(), "left the group");
                return;
            }
            Err(e) if attempt < 2 && e.is_retryable() => attempt += 1,
            Err(e) => {
                tracing::warn!(group = %coordinator.group(), error = %e, "could not leave the group; its partitions move after the session timeout");
                return;
            }
        }
    }
}
