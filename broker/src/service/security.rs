//! The `strata.v1.Security` service: users and ACLs over gRPC, for `strata
//! user` and `strata acl` run against a broker (as an administrator)
//! instead of the bucket. Thin: it checks the caller may (`Alter` on the
//! cluster to change, `Describe` to list) and calls [`crate::auth`].
//!
//! [`to_wire`] and [`from_wire`] are the one mapping between
//! [`AclBinding`] and the wire's [`Acl`] (the CLI uses them too).

use std::sync::Arc;

use strata_proto::v1::security_server::Security;
use strata_proto::v1::{
    Acl, AclFilter as WireFilter, AddAclsRequest, AddAclsResponse, DeleteUserRequest,
    DeleteUserResponse, ListAclsResponse, ListUsersRequest, ListUsersResponse, PutUserRequest,
    PutUserResponse,
};
use tonic::{Request, Response, Status};

use super::{Shared, now_ms};
use crate::auth::acl::{
    AclBinding, AclFilter, Operation, PatternType, Permission, Resource, ResourceType,
};
use crate::auth::grpc::caller;
use crate::auth::users::UserRecord;
use crate::error::{BrokerError, Result};

/// The service.
#[derive(Debug, Clone)]
pub struct SecurityService {
    shared: Arc<Shared>,
}

impl SecurityService {
    /// A service over the broker's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn check<T>(&self, request: &Request<T>, operation: Operation) -> Result<()> {
        self.shared
            .authorize(&caller(request), operation, &Resource::cluster())
    }
}

fn resource_type_name(t: ResourceType) -> &'static str {
    match t {
        ResourceType::Topic => "topic",
        ResourceType::Group => "group",
        ResourceType::Cluster => "cluster",
    }
}

fn parse_resource_type(s: &str) -> Result<ResourceType> {
    match s {
        "topic" => Ok(ResourceType::Topic),
        "group" => Ok(ResourceType::Group),
        "cluster" => Ok(ResourceType::Cluster),
        other => Err(BrokerError::InvalidRequest(format!(
            "unknown resource type {other:?}: use topic, group or cluster"
        ))),
    }
}

fn parse_operation(s: &str) -> Result<Operation> {
    Operation::parse(s).ok_or_else(|| {
        BrokerError::InvalidRequest(format!(
            "unknown operation {s:?}; use one of: {}",
            Operation::ALL.map(Operation::cli_name).join(", ")
        ))
    })
}

/// An ACL on the wire.
pub fn to_wire(b: &AclBinding) -> Acl {
    Acl {
        resource_type: resource_type_name(b.resource_type).into(),
        resource_name: b.resource_name.clone(),
        prefixed: b.pattern_type == PatternType::Prefixed,
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: b.operation.cli_name(),
        permission: match b.permission {
            Permission::Allow => "allow".into(),
            Permission::Deny => "deny".into(),
        },
    }
}

/// An ACL from the wire, checked ([`AclBinding::validate`]).
pub fn from_wire(a: &Acl) -> Result<AclBinding> {
    let b = AclBinding {
        resource_type: parse_resource_type(&a.resource_type)?,
        resource_name: a.resource_name.clone(),
        pattern_type: if a.prefixed {
            PatternType::Prefixed
        } else {
            PatternType::Literal
        },
        principal: a.principal.clone(),
        host: if a.host.is_empty() {
            "*".into()
        } else {
            a.host.clone()
        },
        operation: parse_operation(&a.operation)?,
        permission: match a.permission.as_str() {
            "allow" => Permission::Allow,
            "deny" => Permission::Deny,
            other => {
                return Err(BrokerError::InvalidRequest(format!(
                    "unknown permission {other:?}: use allow or deny"
                )));
            }
        },
    };
    b.validate().map_err(BrokerError::InvalidRequest)?;
    Ok(b)
}

/// A filter on the wire.
pub fn filter_to_wire(f: &AclFilter) -> WireFilter {
    WireFilter {
        resource_type: f.resource_type.map(|t| resource_type_name(t).into()),
        resource_name: f.resource_name.clone(),
        principal: f.principal.clone(),
        operation: f.operation.map(Operation::cli_name),
    }
}

fn filter_from_wire(f: &WireFilter) -> Result<AclFilter> {
    Ok(AclFilter {
        resource_type: f
            .resource_type
            .as_deref()
            .map(parse_resource_type)
            .transpose()?,
        resource_name: f.resource_name.clone(),
        principal: f.principal.clone(),
        operation: f.operation.as_deref().map(parse_operation).transpose()?,
        ..AclFilter::default()
    })
}

#[tonic::async_trait]
impl Security for SecurityService {
    async fn put_user(
        &self,
        request: Request<PutUserRequest>,
    ) -> Result<Response<PutUserResponse>, Status> {
        self.check(&request, Operation::Alter)?;
        let req = request.into_inner();
        let record = tokio::task::spawn_blocking(move || {
            UserRecord::new(&req.name, &req.password, now_ms()).map(|r| (r, req.update))
        })
        .await
        .map_err(|_| BrokerError::Unavailable("salting the password failed"))??;
        self.shared.auth.users.put(&record.0, record.1).await?;
        Ok(Response::new(PutUserResponse {}))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        self.check(&request, Operation::Alter)?;
        let name = request.into_inner().name;
        if !self.shared.auth.users.delete(&name).await? {
            return Err(BrokerError::InvalidRequest(format!(
                "no user {name}; list them with `strata user list`"
            ))
            .into());
        }
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.check(&request, Operation::Describe)?;
        let names = self.shared.auth.users.list().await?;
        Ok(Response::new(ListUsersResponse { names }))
    }

    async fn add_acls(
        &self,
        request: Request<AddAclsRequest>,
    ) -> Result<Response<AddAclsResponse>, Status> {
        self.check(&request, Operation::Alter)?;
        let bindings = request
            .into_inner()
            .acls
            .iter()
            .map(from_wire)
            .collect::<Result<Vec<_>>>()?;
        let added = self
            .shared
            .auth
            .acls
            .change(now_ms(), |set| set.add(bindings.iter().cloned()))
            .await?;
        Ok(Response::new(AddAclsResponse {
            added: u32::try_from(added).unwrap_or(u32::MAX),
        }))
    }

    async fn list_acls(
        &self,
        request: Request<WireFilter>,
    ) -> Result<Response<ListAclsResponse>, Status> {
        self.check(&request, Operation::Describe)?;
        let filter = filter_from_wire(request.get_ref())?;
        let set = self.shared.auth.acls.refresh().await?;
        Ok(Response::new(ListAclsResponse {
            acls: set
                .bindings
                .iter()
                .filter(|b| filter.matches(b))
                .map(to_wire)
                .collect(),
        }))
    }

    async fn remove_acls(
        &self,
        request: Request<WireFilter>,
    ) -> Result<Response<ListAclsResponse>, Status> {
        self.check(&request, Operation::Alter)?;
        let filter = filter_from_wire(request.get_ref())?;
        if filter == AclFilter::default() {
            return Err(BrokerError::InvalidRequest(
                "give at least one filter (principal, resource, operation)".into(),
            )
            .into());
        }
        let gone = self
            .shared
            .auth
            .acls
            .change(now_ms(), |set| set.remove(&filter))
            .await?;
        Ok(Response::new(ListAclsResponse {
            acls: gone.iter().map(to_wire).collect(),
        }))
    }
}
