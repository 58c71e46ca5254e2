//! CreateAcls, DescribeAcls and DeleteAcls over the same ACL set as
//! `strata acl` ([`crate::auth::acl_store`]): Kafka's `kafka-acls.sh`,
//! `AdminClient.create_acls` and friends manage Strata's ACLs.
//!
//! Creating and deleting need `Alter` on the cluster, describing
//! `Describe` on the cluster (as in Kafka). Kafka's enum codes are mapped
//! here; resource types Strata has no use for (transactional ids,
//! delegation tokens, users) are refused with `INVALID_REQUEST`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::code_of;
use crate::auth::Caller;
use crate::auth::acl::{AclBinding, Operation, PatternType, Permission, Resource, ResourceType};
use crate::error::BrokerError;
use crate::service::{Shared, now_ms};

/// A filter as Kafka sends it (`None`: any).
struct KafkaFilter {
    resource_type: Option<ResourceType>,
    name: Option<String>,
    /// `None`: any; `Some(None)`: MATCH (bindings that apply to `name`).
    pattern: Option<Option<PatternType>>,
    principal: Option<String>,
    host: Option<String>,
    operation: Option<Operation>,
    permission: Option<Permission>,
}

impl KafkaFilter {
    fn matches(&self, b: &AclBinding) -> bool {
        let name_ok = match (&self.pattern, &self.name) {
            // MATCH: every binding that applies to the named resource.
            (Some(None), Some(n)) => match b.pattern_type {
                PatternType::Literal => b.resource_name == *n || b.resource_name == "*",
                PatternType::Prefixed => n.starts_with(&b.resource_name),
            },
            (_, name) => name.as_ref().is_none_or(|n| *n == b.resource_name),
        };
        name_ok
            && self.resource_type.is_none_or(|t| t == b.resource_type)
            && match self.pattern {
                Some(Some(p)) => p == b.pattern_type,
                _ => true,
            }
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

fn invalid(what: &str, code: i8) -> BrokerError {
    BrokerError::InvalidRequest(format!("{what} {code} is not supported here"))
}

fn resource_type(code: i8, any_ok: bool) -> Result<Option<ResourceType>, BrokerError> {
    match code {
        1 if any_ok => Ok(None),
        2 => Ok(Some(ResourceType::Topic)),
        3 => Ok(Some(ResourceType::Group)),
        4 => Ok(Some(ResourceType::Cluster)),
        _ => Err(invalid(
            "resource type (Strata has topics 2, groups 3 and the cluster 4)",
            code,
        )),
    }
}

fn resource_type_code(t: ResourceType) -> i8 {
    match t {
        ResourceType::Topic => 2,
        ResourceType::Group => 3,
        ResourceType::Cluster => 4,
    }
}

fn pattern(code: i8, filter: bool) -> Result<Option<Option<PatternType>>, BrokerError> {
    match code {
        1 if filter => Ok(None),
        2 if filter => Ok(Some(None)),
        3 => Ok(Some(Some(PatternType::Literal))),
        4 => Ok(Some(Some(PatternType::Prefixed))),
        _ => Err(invalid("pattern type", code)),
    }
}

fn pattern_code(p: PatternType) -> i8 {
    match p {
        PatternType::Literal => 3,
        PatternType::Prefixed => 4,
    }
}

const OPERATIONS: [(i8, Operation); 11] = [
    (2, Operation::All),
    (3, Operation::Read),
    (4, Operation::Write),
    (5, Operation::Create),
    (6, Operation::Delete),
    (7, Operation::Alter),
    (8, Operation::Describe),
    (9, Operation::ClusterAction),
    (10, Operation::DescribeConfigs),
    (11, Operation::AlterConfigs),
    (12, Operation::IdempotentWrite),
];

fn operation(code: i8, any_ok: bool) -> Result<Option<Operation>, BrokerError> {
    if code == 1 && any_ok {
        return Ok(None);
    }
    OPERATIONS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, o)| Some(*o))
        .ok_or_else(|| invalid("operation", code))
}

fn operation_code(o: Operation) -> i8 {
    OPERATIONS
        .iter()
        .find(|(_, op)| *op == o)
        .map_or(0, |(c, _)| *c)
}

fn permission(code: i8, any_ok: bool) -> Result<Option<Permission>, BrokerError> {
    match code {
        1 if any_ok => Ok(None),
        2 => Ok(Some(Permission::Deny)),
        3 => Ok(Some(Permission::Allow)),
        _ => Err(invalid("permission type", code)),
    }
}

fn permission_code(p: Permission) -> i8 {
    match p {
        Permission::Deny => 2,
        Permission::Allow => 3,
    }
}

#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type_filter: i8,
    name: Option<&StrBytes>,
    pattern_type_filter: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    op: i8,
    perm: i8,
) -> Result<KafkaFilter, BrokerError> {
    Ok(KafkaFilter {
        resource_type: resource_type(resource_type_filter, true)?,
        name: name.map(ToString::to_string),
        pattern: pattern(pattern_type_filter, true)?,
        principal: principal.map(ToString::to_string),
        host: host.map(ToString::to_string),
        operation: operation(op, true)?,
        permission: permission(perm, true)?,
    })
}

/// `operation` on the cluster for `caller`, counted when refused.
fn check_cluster(
    shared: &Shared,
    caller: &Caller,
    operation: Operation,
) -> Result<(), BrokerError> {
    shared.authorize(caller, operation, &Resource::cluster())
}

fn message(e: &BrokerError) -> Option<StrBytes> {
    Some(StrBytes::from_string(e.to_string()))
}

/// Answers CreateAcls: all valid creations are stored in one change.
pub async fn create(
    shared: &Shared,
    caller: &Caller,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let mut r = CreateAclsResponse::default();
    let parsed: Vec<Result<AclBinding, BrokerError>> = req
        .creations
        .iter()
        .map(|c| {
            check_cluster(shared, caller, Operation::Alter)?;
            let b = AclBinding {
                resource_type: resource_type(c.resource_type, false)?
                    .ok_or_else(|| invalid("resource type", c.resource_type))?,
                resource_name: c.resource_name.to_string(),
                pattern_type: pattern(c.resource_pattern_type, false)?
                    .flatten()
                    .ok_or_else(|| invalid("pattern type", c.resource_pattern_type))?,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: operation(c.operation, false)?
                    .ok_or_else(|| invalid("operation", c.operation))?,
                permission: permission(c.permission_type, false)?
                    .ok_or_else(|| invalid("permission type", c.permission_type))?,
            };
            b.validate().map_err(BrokerError::InvalidRequest)?;
            Ok(b)
        })
        .collect();
    let valid: Vec<AclBinding> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .cloned()
        .collect();
    let stored = if valid.is_empty() {
        Ok(0)
    } else {
        shared
            .auth
            .acls
            .change(now_ms(), |set| set.add(valid.iter().cloned()))
            .await
    };
    r.results = parsed
        .into_iter()
        .map(|p| {
            let mut out = AclCreationResult::default();
            let e = match (p, &stored) {
                (Err(e), _) => Some(e),
                (Ok(_), Err(e)) => Some(BrokerError::Unavailable("storing the ACLs failed"))
                    .inspect(|_| tracing::warn!(error = %e, "kafka create acls: cannot store")),
                (Ok(_), Ok(_)) => None,
            };
            if let Some(e) = e {
                out.error_code = acl_error_code(&e);
                out.error_message = message(&e);
            }
            out
        })
        .collect();
    r
}

/// Kafka answers bad ACL requests with `INVALID_REQUEST` and refusals
/// with `CLUSTER_AUTHORIZATION_FAILED`.
fn acl_error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest.code(),
        e => code_of(e),
    }
}

/// Answers DescribeAcls.
pub async fn describe(
    shared: &Shared,
    caller: &Caller,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let mut r = DescribeAclsResponse::default();
    let f = check_cluster(shared, caller, Operation::Describe).and_then(|()| {
        filter(
            req.resource_type_filter,
            req.resource_name_filter.as_ref(),
            req.pattern_type_filter,
            req.principal_filter.as_ref(),
            req.host_filter.as_ref(),
            req.operation,
            req.permission_type,
        )
    });
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            r.error_code = acl_error_code(&e);
            r.error_message = message(&e);
            return r;
        }
    };
    let set = match shared.auth.acls.refresh().await {
        Ok(s) => s,
        Err(e) => {
            r.error_code = code_of(&e);
            r.error_message = message(&e);
            return r;
        }
    };
    for b in set.bindings.iter().filter(|b| f.matches(b)) {
        let (t, p) = (
            resource_type_code(b.resource_type),
            pattern_code(b.pattern_type),
        );
        let mut d = AclDescription::default();
        d.principal = StrBytes::from_string(b.principal.clone());
        d.host = StrBytes::from_string(b.host.clone());
        d.operation = operation_code(b.operation);
        d.permission_type = permission_code(b.permission);
        match r.resources.iter_mut().find(|res| {
            res.resource_type == t
                && res.pattern_type == p
                && res.resource_name.as_str() == b.resource_name
        }) {
            Some(res) => res.acls.push(d),
            None => {
                let mut res = DescribeAclsResource::default();
                res.resource_type = t;
                res.resource_name = StrBytes::from_string(b.resource_name.clone());
                res.pattern_type = p;
                res.acls.push(d);
                r.resources.push(res);
            }
        }
    }
    r
}

/// Answers DeleteAcls: every filter's matches are removed in one change.
pub async fn delete(
    shared: &Shared,
    caller: &Caller,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let mut r = DeleteAclsResponse::default();
    let filters: Vec<Result<KafkaFilter, BrokerError>> = req
        .filters
        .iter()
        .map(|f| {
            check_cluster(shared, caller, Operation::Alter)?;
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let removed = shared
        .auth
        .acls
        .change(now_ms(), |set| {
            filters
                .iter()
                .map(|f| match f {
                    Ok(f) => {
                        let (gone, kept) = std::mem::take(&mut set.bindings)
                            .into_iter()
                            .partition::<Vec<_>, _>(|b| f.matches(b));
                        set.bindings = kept;
                        gone
                    }
                    Err(_) => Vec::new(),
                })
                .collect::<Vec<_>>()
        })
        .await;
    for (i, f) in filters.iter().enumerate() {
        let mut out = DeleteAclsFilterResult::default();
        match (f, &removed) {
            (Err(e), _) => {
                out.error_code = acl_error_code(e);
                out.error_message = message(e);
            }
            (Ok(_), Err(e)) => {
                out.error_code = code_of(e);
                out.error_message = message(e);
            }
            (Ok(_), Ok(gone)) => {
                out.matching_acls = gone
                    .get(i)
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let mut m = DeleteAclsMatchingAcl::default();
                        m.resource_type = resource_type_code(b.resource_type);
                        m.resource_name = StrBytes::from_string(b.resource_name.clone());
                        m.pattern_type = pattern_code(b.pattern_type);
                        m.principal = StrBytes::from_string(b.principal.clone());
                        m.host = StrBytes::from_string(b.host.clone());
                        m.operation = operation_code(b.operation);
                        m.permission_type = permission_code(b.permission);
                        m
                    })
                    .collect();
            }
        }
        r.filter_results.push(out);
    }
    r
}
