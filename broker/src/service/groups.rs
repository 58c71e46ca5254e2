//! The consumer-group service `strata.v1.Groups`: a thin adapter that
//! converts wire types and calls the [`crate::groups`] coordinator.
//!
//! `ListGroups` is the one call any broker answers for the whole cluster:
//! it lists its own groups and asks every other live broker for theirs
//! (`local_only`), like `DescribeTopic` asks partition owners.

use crate::auth::Caller;
use crate::auth::acl::{Operation, Resource};
use crate::auth::grpc::caller;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::groups_server::Groups;
use strata_proto::v1::{
    CommitOffsetsRequest, CommitOffsetsResponse, CommittedOffset, DeleteGroupRequest,
    DeleteGroupResponse, DeleteOffsetsRequest, DeleteOffsetsResponse, DescribeGroupRequest,
    FetchOffsetsRequest, FetchOffsetsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupDescription, GroupHeartbeatRequest, GroupHeartbeatResponse, GroupMember,
    GroupSummary as WireSummary, ListGroupsRequest, ListGroupsResponse, TopicPartitions,
};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::error::BrokerError;
use crate::groups::state::{Heartbeat, Partitions, Tp};
use crate::groups::{OffsetCommit, validate_group_id};

/// The `strata.v1.Groups` service.
#[derive(Debug, Clone)]
pub struct GroupsService {
    shared: Arc<Shared>,
}

impl GroupsService {
    /// A service over the broker's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// The wire lists as a set.
fn partitions(list: &[TopicPartitions]) -> Partitions {
    list.iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}

/// A set as wire lists, by topic.
fn wire_partitions(set: &Partitions) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in set {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_owned(),
            partitions,
        })
        .collect()
}

impl GroupsService {
    /// `operation` on `group` for `caller` (counted when refused).
    fn check(
        &self,
        caller: &Caller,
        operation: Operation,
        group: &str,
    ) -> crate::error::Result<()> {
        self.shared
            .authorize(caller, operation, &Resource::group(group))
    }
}

fn committed(tp: &Tp, c: &crate::groups::state::Committed) -> CommittedOffset {
    CommittedOffset {
        topic: tp.0.clone(),
        partition: tp.1,
        offset: c.offset,
        metadata: c.metadata.clone(),
        commit_timestamp_ms: c.commit_ms,
    }
}

#[tonic::async_trait]
impl Groups for GroupsService {
    async fn find_coordinator(
        &self,
        request: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        self.shared.check_running()?;
        self.check(&caller, Operation::Describe, &req.group_id)?;
        let (broker_id, address, partition) = self
            .shared
            .groups
            .find_coordinator(&self.shared, &req.group_id)
            .await?;
        Ok(Response::new(FindCoordinatorResponse {
            broker_id,
            address,
            partition,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<GroupHeartbeatRequest>,
    ) -> Result<Response<GroupHeartbeatResponse>, Status> {
        let host = crate::tls::PeerIdentity::of(&request)
            .map(|p| p.addr.ip().to_string())
            .unwrap_or_default();
        let caller = caller(&request);
        let req = request.into_inner();
        self.shared.check_running()?;
        self.check(&caller, Operation::Read, &req.group_id)?;
        let hb = Heartbeat {
            member_id: req.member_id,
            epoch: req.member_epoch,
            instance_id: req.instance_id.filter(|i| !i.is_empty()),
            topics: Some(req.topics.into_iter().collect::<BTreeSet<_>>()),
            // Every native heartbeat carries the whole subscription.
            pattern: Some(req.topic_pattern.unwrap_or_default()),
            assignor: Some(req.server_assignor.unwrap_or_default()),
            owned: Some(partitions(&req.owned)),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            client_id: req.client_id,
            host,
            caller: Some(caller),
        };
        let reply = self
            .shared
            .groups
            .heartbeat(&self.shared, &req.group_id, hb)
            .await?;
        Ok(Response::new(GroupHeartbeatResponse {
            member_id: reply.member_id,
            member_epoch: reply.epoch,
            heartbeat_interval_ms: reply.interval_ms,
            assignment: wire_partitions(&reply.assignment),
        }))
    }

    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        self.shared.check_running()?;
        self.check(&caller, Operation::Read, &req.group_id)?;
        for o in &req.offsets {
            self.shared
                .authorize(&caller, Operation::Read, &Resource::topic(&o.topic))?;
        }
        let offsets = req
            .offsets
            .into_iter()
            .map(|o| OffsetCommit {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        self.shared
            .groups
            .commit(
                &self.shared,
                &req.group_id,
                &req.member_id,
                req.member_epoch,
                offsets,
            )
            .await?;
        Ok(Response::new(CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        self.check(&caller, Operation::Read, &req.group_id)?;
        let offsets = self
            .shared
            .groups
            .fetch_offsets(&self.shared, &req.group_id, &partitions(&req.partitions))
            .await?;
        Ok(Response::new(FetchOffsetsResponse {
            offsets: offsets.iter().map(|(tp, c)| committed(tp, c)).collect(),
        }))
    }

    async fn delete_offsets(
        &self,
        request: Request<DeleteOffsetsRequest>,
    ) -> Result<Response<DeleteOffsetsResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        self.shared.check_running()?;
        self.check(&caller, Operation::Delete, &req.group_id)?;
        let n = self
            .shared
            .groups
            .delete_offsets(&self.shared, &req.group_id, &partitions(&req.partitions))
            .await?;
        Ok(Response::new(DeleteOffsetsResponse {
            deleted: u32::try_from(n).unwrap_or(u32::MAX),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let shared = &self.shared;
        let me = shared.broker_id.0;
        let mut groups: Vec<WireSummary> = shared
            .groups
            .list_local()
            .into_iter()
            .map(|g| WireSummary {
                group_id: g.group,
                state: g.state.as_str().to_owned(),
                members: u32::try_from(g.members).unwrap_or(u32::MAX),
                coordinator_id: me,
            })
            .collect();
        if !req.local_only {
            let view = &shared.cluster;
            let asks = view
                .live_brokers()
                .into_iter()
                .filter(|(b, _)| *b != me)
                .map(|(b, address)| async move {
                    let channel = view.channel(&address).await?;
                    match GroupsClient::new(channel)
                        .list_groups(ListGroupsRequest { local_only: true })
                        .await
                    {
                        Ok(r) => Some(r.into_inner().groups),
                        Err(e) => {
                            tracing::debug!(broker = b, error = %e, "cannot ask a broker for its groups");
                            None
                        }
                    }
                });
            for list in futures::future::join_all(asks).await.into_iter().flatten() {
                groups.extend(list);
            }
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            groups.dedup_by(|a, b| a.group_id == b.group_id);
        }
        let all = shared
            .auth
            .allows(&caller, Operation::Describe, &Resource::cluster());
        groups.retain(|g| {
            all || shared
                .auth
                .allows(&caller, Operation::Describe, &Resource::group(&g.group_id))
        });
        Ok(Response::new(ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        validate_group_id(&req.group_id).map_err(BrokerError::from)?;
        self.check(&caller, Operation::Describe, &req.group_id)?;
        let g = self
            .shared
            .groups
            .describe(&self.shared, &req.group_id)
            .await?;
        let protocol = g.classic.protocol().unwrap_or_default().to_owned();
        let classic = g.classic.members().map(|m| GroupMember {
            member_id: m.value.id.clone(),
            instance_id: m.value.instance_id.clone(),
            client_id: m.value.client_id.clone(),
            host: m.value.host.clone(),
            member_epoch: g.classic.generation(),
            topics: m.subscribed_topics(&protocol),
            assignment: wire_partitions(&m.assigned_partitions()),
            target: wire_partitions(&m.assigned_partitions()),
            topic_pattern: None,
        });
        let members = g
            .members()
            .map(|m| {
                let v = &m.value;
                GroupMember {
                    member_id: v.id.clone(),
                    instance_id: v.instance_id.clone(),
                    client_id: v.client_id.clone(),
                    host: v.host.clone(),
                    member_epoch: v.epoch,
                    topics: v.topics.iter().cloned().collect(),
                    assignment: wire_partitions(&crate::groups::state::from_topic_map(&v.assigned)),
                    target: wire_partitions(&g.target_of(&v.id)),
                    topic_pattern: v.pattern.clone(),
                }
            })
            .chain(classic)
            .collect();
        Ok(Response::new(GroupDescription {
            group_id: g.id.clone(),
            state: g.state().as_str().to_owned(),
            group_epoch: if g.classic.is_empty() {
                g.epoch()
            } else {
                g.classic.generation()
            },
            coordinator_id: self.shared.broker_id.0,
            assignor: match g.members().next() {
                Some(_) => g.assignor().name().to_owned(),
                None => String::new(),
            },
            members,
            offsets: g.offsets.iter().map(|(tp, c)| committed(tp, c)).collect(),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        self.shared.check_running()?;
        self.check(&caller, Operation::Delete, &req.group_id)?;
        self.shared
            .groups
            .delete_group(&self.shared, &req.group_id)
            .await?;
        Ok(Response::new(DeleteGroupResponse {}))
    }
}
