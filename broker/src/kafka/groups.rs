//! Consumer groups over Kafka's classic protocol, on the same coordinator
//! as native groups ([`crate::groups`]): FindCoordinator (the owner of the
//! group's `__consumer_offsets` partition, at its Kafka address),
//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups,
//! DescribeGroups, DeleteGroups.

use std::net::SocketAddr;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::group_code_of;
use super::metadata::{NodeIds, split_host_port};
use crate::auth::Caller;
use crate::auth::acl::{Operation, Resource};
use crate::error::BrokerError;
use crate::groups::GroupError;
use crate::groups::classic;
use crate::groups::state::GroupStateName;
use crate::service::Shared;

/// Answers FindCoordinator (v0–3: one key; v4: a batch of keys).
pub async fn find_coordinator(
    shared: &Shared,
    caller: &Caller,
    req: FindCoordinatorRequest,
    version: i16,
    ids: NodeIds,
) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    if version >= 4 {
        for key in req.coordinator_keys {
            r.coordinators
                .push(find(shared, caller, key, req.key_type, ids).await);
        }
    } else {
        let c = find(shared, caller, req.key, req.key_type, ids).await;
        r.error_code = c.error_code;
        r.error_message = c.error_message;
        r.node_id = c.node_id;
        r.host = c.host;
        r.port = c.port;
    }
    r
}

async fn find(
    shared: &Shared,
    caller: &Caller,
    key: StrBytes,
    key_type: i8,
    ids: NodeIds,
) -> Coordinator {
    let mut c = Coordinator::default();
    c.node_id = BrokerId(-1);
    c.port = -1;
    let found = if key_type != 0 {
        Err((
            ResponseError::CoordinatorNotAvailable.code(),
            "transaction coordinators are not supported (no transactions in Strata yet)".into(),
        ))
    } else {
        match check(shared, caller, Operation::Describe, key.as_str()) {
            Ok(()) => locate(shared, key.as_str()).await,
            Err(e) => Err(e),
        }
        .map_err(|e| (group_code_of(&e), e.to_string()))
    };
    match found {
        Ok((id, host, port)) => {
            c.node_id = ids.node(id, 0);
            c.host = StrBytes::from_string(host);
            c.port = i32::from(port);
        }
        Err((code, message)) => {
            c.error_code = code;
            c.error_message = Some(StrBytes::from_string(message));
        }
    }
    c.key = key;
    c
}

/// `operation` on `group` for `caller`, counted when refused.
pub(crate) fn check(
    shared: &Shared,
    caller: &Caller,
    operation: Operation,
    group: &str,
) -> crate::error::Result<()> {
    shared.authorize(caller, operation, &Resource::group(group))
}

/// The coordinator of `group` and its Kafka host and port.
async fn locate(shared: &Shared, group: &str) -> crate::error::Result<(u32, String, u16)> {
    let (owner, _, _) = shared.groups.find_coordinator(shared, group).await?;
    let address = if owner == shared.broker_id.0 {
        Some(shared.kafka_advertised_addr.clone())
    } else {
        shared.cluster.kafka_address_of(owner)
    };
    address
        .as_deref()
        .and_then(split_host_port)
        .map(|(host, port)| (owner, host.to_owned(), port))
        .ok_or_else(|| BrokerError::NotCoordinator {
            group: group.to_owned(),
            coordinator: None,
            detail: "its coordinator's Kafka address is not known yet; retry shortly".into(),
        })
}

/// Answers JoinGroup (v4+: a new member first gets `MEMBER_ID_REQUIRED`
/// with its id, and joins again with it).
pub async fn join(
    shared: &Shared,
    caller: &Caller,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    r.generation_id = -1;
    let group = req.group_id.0.to_string();
    let rebalance_timeout_ms = if version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let join = classic::JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|i| i.to_string()),
        client_id: client_id.to_owned(),
        host: format!("/{}", peer.ip()),
        session_timeout_ms: req.session_timeout_ms.max(0) as u32,
        rebalance_timeout_ms: rebalance_timeout_ms.max(0) as u32,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let joined = match check(shared, caller, Operation::Read, &group) {
        Ok(()) => shared.groups.classic_join(shared, &group, join).await,
        Err(e) => Err(e),
    };
    match joined {
        Ok(j) => {
            r.generation_id = j.generation;
            r.protocol_type = Some(StrBytes::from_string(j.protocol_type));
            r.protocol_name = Some(StrBytes::from_string(j.protocol_name));
            r.leader = StrBytes::from_string(j.leader);
            r.member_id = StrBytes::from_string(j.member_id);
            r.members = j
                .members
                .into_iter()
                .map(|m| {
                    let mut out = JoinGroupResponseMember::default();
                    out.member_id = StrBytes::from_string(m.member_id);
                    out.group_instance_id = m.instance_id.map(StrBytes::from_string);
                    out.metadata = m.metadata;
                    out
                })
                .collect();
        }
        Err(BrokerError::Group(GroupError::MemberIdRequired { member, .. })) => {
            r.error_code = ResponseError::MemberIdRequired.code();
            r.member_id = StrBytes::from_string(member);
        }
        Err(e) => {
            tracing::debug!(group, error = %e, "kafka join group refused");
            r.error_code = group_code_of(&e);
        }
    }
    r
}

/// Answers SyncGroup.
pub async fn sync(shared: &Shared, caller: &Caller, req: SyncGroupRequest) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default();
    let group = req.group_id.0.to_string();
    if let Err(e) = check(shared, caller, Operation::Read, &group) {
        r.error_code = group_code_of(&e);
        return r;
    }
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    match shared
        .groups
        .classic_sync(
            shared,
            &group,
            &req.member_id,
            req.generation_id,
            assignments,
        )
        .await
    {
        Ok(s) => {
            r.protocol_type = Some(StrBytes::from_string(s.protocol_type));
            r.protocol_name = Some(StrBytes::from_string(s.protocol_name));
            r.assignment = s.assignment;
        }
        Err(e) => r.error_code = group_code_of(&e),
    }
    r
}

/// Answers Heartbeat.
pub async fn heartbeat(
    shared: &Shared,
    caller: &Caller,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let mut r = HeartbeatResponse::default();
    let group = req.group_id.0.to_string();
    let beat = match check(shared, caller, Operation::Read, &group) {
        Ok(()) => {
            shared
                .groups
                .classic_heartbeat(shared, &group, &req.member_id, req.generation_id)
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = beat {
        r.error_code = group_code_of(&e);
    }
    r
}

/// Answers LeaveGroup (v0–2: one member; v3+: a list).
pub async fn leave(
    shared: &Shared,
    caller: &Caller,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let mut r = LeaveGroupResponse::default();
    let group = req.group_id.0.to_string();
    if let Err(e) = check(shared, caller, Operation::Read, &group) {
        r.error_code = group_code_of(&e);
        return r;
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    match shared.groups.classic_leave(shared, &group, &members).await {
        Ok(results) => {
            if version >= 3 {
                r.members = members
                    .into_iter()
                    .zip(results)
                    .map(|((id, instance), result)| {
                        let mut m = MemberResponse::default();
                        m.member_id = StrBytes::from_string(id);
                        m.group_instance_id = instance.map(StrBytes::from_string);
                        m.error_code = result.err().map_or(0, |e| group_code_of(&e));
                        m
                    })
                    .collect();
            } else if let Some(Err(e)) = results.into_iter().next() {
                r.error_code = group_code_of(&e);
            }
        }
        Err(e) => r.error_code = group_code_of(&e),
    }
    r
}

/// Answers ListGroups: the groups this broker coordinates (Kafka's admin
/// clients ask every broker) that the caller may describe (all of them
/// with `Describe` on the cluster).
pub fn list(shared: &Shared, caller: &Caller, req: &ListGroupsRequest) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    let all = shared
        .auth
        .allows(caller, Operation::Describe, &Resource::cluster());
    r.groups = shared
        .groups
        .list_local()
        .into_iter()
        .filter(|g| {
            all || shared
                .auth
                .allows(caller, Operation::Describe, &Resource::group(&g.group))
        })
        .map(|g| (g.group, kafka_state(g.state)))
        .filter(|(_, state)| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(state))
        })
        .map(|(group, state)| {
            let mut l = ListedGroup::default();
            l.group_id = GroupId(StrBytes::from_string(group));
            l.protocol_type = StrBytes::from_static_str("consumer");
            l.group_state = StrBytes::from_static_str(state);
            l
        })
        .collect();
    r
}

/// A group's state by Kafka's classic names.
fn kafka_state(s: GroupStateName) -> &'static str {
    match s {
        GroupStateName::Empty => "Empty",
        GroupStateName::Reconciling => "PreparingRebalance",
        GroupStateName::Stable => "Stable",
    }
}

/// Answers DescribeGroups. A group that does not exist is `Dead`, as in
/// Kafka.
pub async fn describe(
    shared: &Shared,
    caller: &Caller,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    for id in req.groups {
        let mut d = DescribedGroup::default();
        let described = match check(shared, caller, Operation::Describe, &id.0) {
            Ok(()) => shared.groups.describe(shared, &id.0).await,
            Err(e) => Err(e),
        };
        match described {
            Ok(g) if !g.classic.is_empty() => {
                let c = &g.classic;
                d.group_state = StrBytes::from_static_str(c.state().as_str());
                d.protocol_type = StrBytes::from_string(c.protocol_type().to_owned());
                let protocol = c.protocol().unwrap_or_default().to_owned();
                d.members = c
                    .members()
                    .map(|m| {
                        let mut out = DescribedGroupMember::default();
                        out.member_id = StrBytes::from_string(m.value.id.clone());
                        out.group_instance_id =
                            m.value.instance_id.clone().map(StrBytes::from_string);
                        out.client_id = StrBytes::from_string(m.value.client_id.clone());
                        out.client_host = StrBytes::from_string(m.value.host.clone());
                        out.member_metadata = m.metadata(&protocol);
                        out.member_assignment = m.value.assignment.clone();
                        out
                    })
                    .collect();
                d.protocol_data = StrBytes::from_string(protocol);
            }
            Ok(g) => {
                d.group_state = StrBytes::from_static_str(kafka_state(g.state()));
                d.protocol_type = StrBytes::from_static_str("consumer");
                d.members = g
                    .members()
                    .map(|m| {
                        let mut out = DescribedGroupMember::default();
                        out.member_id = StrBytes::from_string(m.value.id.clone());
                        out.group_instance_id =
                            m.value.instance_id.clone().map(StrBytes::from_string);
                        out.client_id = StrBytes::from_string(m.value.client_id.clone());
                        out.client_host = StrBytes::from_string(m.value.host.clone());
                        out
                    })
                    .collect();
            }
            Err(BrokerError::GroupNotFound(_)) => {
                d.group_state = StrBytes::from_static_str("Dead");
            }
            Err(e) => d.error_code = group_code_of(&e),
        }
        d.group_id = id;
        r.groups.push(d);
    }
    r
}

/// Answers DeleteGroups: groups without members, with their offsets.
pub async fn delete(
    shared: &Shared,
    caller: &Caller,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut r = DeleteGroupsResponse::default();
    for id in req.groups_names {
        let mut d = DeletableGroupResult::default();
        let deleted = match check(shared, caller, Operation::Delete, &id.0) {
            Ok(()) => shared.groups.delete_group(shared, &id.0).await,
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            d.error_code = group_code_of(&e);
        }
        d.group_id = id;
        r.results.push(d);
    }
    r
}
