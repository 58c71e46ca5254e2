//! `strata acl add|list|remove`: Kafka-style ACLs, stored in the bucket
//! (`security/acls/`) and followed by every broker within a heartbeat
//! interval. Like `strata user`, these write to the bucket directly with
//! `--store`, else ask a broker (`--broker`, as an administrator); Kafka
//! tools can also manage ACLs through the Kafka listener (CreateAcls,
//! DescribeAcls, DeleteAcls).

use std::sync::Arc;

use anyhow::Context;

use super::user::{Target, refused};
use super::{print_stdout, table};
use crate::auth::acl::{
    AclBinding, AclFilter, CLUSTER_RESOURCE, Operation, PatternType, Permission, ResourceType,
};
use crate::auth::acl_store::AclStore;
use crate::service::now_ms;
use crate::service::security::{filter_to_wire, to_wire};
use strata_proto::v1::AddAclsRequest;

/// Manage ACLs.
#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Allow or deny principals operations on a resource.
    ///
    /// Examples:
    ///   strata acl add --allow User:alice --operation read --operation describe --topic orders
    ///   strata acl add --allow User:alice --operation read --group billing
    ///   strata acl add --allow User:etl --operation write --topic logs- --prefixed
    ///   strata acl add --deny User:bob --operation all --topic secret
    #[command(verbatim_doc_comment)]
    Add(AddArgs),
    /// List ACLs (all, or those matching the filters).
    List(FilterArgs),
    /// Remove the ACLs matching the filters (at least one filter).
    Remove(FilterArgs),
}

pub use super::user::StoreArgs;

/// Which resource.
#[derive(Debug, Clone, clap::Args)]
#[group(multiple = false)]
pub struct ResourceArgs {
    /// A topic (with --prefixed: every topic whose name starts with it;
    /// `*`: every topic).
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// A consumer group (--prefixed and `*` as for topics).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// The cluster (draining brokers, moving partitions, creating topics,
    /// managing ACLs).
    #[arg(long)]
    pub cluster: bool,
}

impl ResourceArgs {
    fn resource(&self) -> Option<(ResourceType, String)> {
        match (&self.topic, &self.group, self.cluster) {
            (Some(t), _, _) => Some((ResourceType::Topic, t.clone())),
            (_, Some(g), _) => Some((ResourceType::Group, g.clone())),
            (_, _, true) => Some((ResourceType::Cluster, CLUSTER_RESOURCE.to_owned())),
            _ => None,
        }
    }
}

fn parse_operation(s: &str) -> Result<Operation, String> {
    Operation::parse(s).ok_or_else(|| {
        format!(
            "unknown operation {s:?}; use one of: {}",
            Operation::ALL
                .map(|o| o.name().to_ascii_lowercase())
                .join(", ")
        )
    })
}

/// Arguments of `strata acl add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Allow these principals (User:NAME, or User:* for everyone).
    #[arg(long, value_name = "PRINCIPAL", required_unless_present = "deny")]
    pub allow: Vec<String>,
    /// Deny these principals (a deny wins over any allow).
    #[arg(long, value_name = "PRINCIPAL")]
    pub deny: Vec<String>,
    /// The operations: read, write, create, delete, alter, describe,
    /// cluster-action, describe-configs, alter-configs, idempotent-write,
    /// all.
    #[arg(long = "operation", value_name = "OP", required = true, value_parser = parse_operation)]
    pub operations: Vec<Operation>,
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// The name is a prefix.
    #[arg(long)]
    pub prefixed: bool,
    /// Only from this client IP address [default: any host].
    #[arg(long, default_value = "*")]
    pub host: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Filters of `strata acl list|remove`.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only this principal's.
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: Option<String>,
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// Only this operation.
    #[arg(long = "operation", value_name = "OP", value_parser = parse_operation)]
    pub operation: Option<Operation>,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl FilterArgs {
    fn filter(&self) -> AclFilter {
        let resource = self.resource.resource();
        AclFilter {
            resource_type: resource.as_ref().map(|r| r.0),
            resource_name: resource.map(|r| r.1),
            principal: self.principal.clone(),
            operation: self.operation,
            ..AclFilter::default()
        }
    }
}

fn acls(store: Arc<dyn object_store::ObjectStore>) -> AclStore {
    AclStore::new(store, "strata acl".into())
}

fn from_wire(acls: &[strata_proto::v1::Acl]) -> anyhow::Result<Vec<AclBinding>> {
    acls.iter()
        .map(|a| crate::service::security::from_wire(a).map_err(anyhow::Error::from))
        .collect()
}

fn rows(bindings: &[AclBinding]) -> String {
    let mut rows = vec![[
        "PERMISSION".to_owned(),
        "PRINCIPAL".to_owned(),
        "OPERATION".to_owned(),
        "RESOURCE".to_owned(),
        "NAME".to_owned(),
        "PATTERN".to_owned(),
        "HOST".to_owned(),
    ]];
    for b in bindings {
        rows.push([
            format!("{:?}", b.permission).to_ascii_lowercase(),
            b.principal.clone(),
            b.operation.name().to_owned(),
            format!("{:?}", b.resource_type).to_ascii_lowercase(),
            b.resource_name.clone(),
            format!("{:?}", b.pattern_type).to_ascii_lowercase(),
            b.host.clone(),
        ]);
    }
    table(&rows)
}

/// Runs the command.
pub async fn run(command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::Add(a) => {
            let (resource_type, resource_name) = a
                .resource
                .resource()
                .context("name the resource: --topic NAME, --group NAME or --cluster")?;
            let mut bindings = Vec::new();
            for (principals, permission) in
                [(&a.allow, Permission::Allow), (&a.deny, Permission::Deny)]
            {
                for principal in principals {
                    for &operation in &a.operations {
                        let b = AclBinding {
                            resource_type,
                            resource_name: resource_name.clone(),
                            pattern_type: if a.prefixed {
                                PatternType::Prefixed
                            } else {
                                PatternType::Literal
                            },
                            principal: principal.clone(),
                            host: a.host.clone(),
                            operation,
                            permission,
                        };
                        b.validate().map_err(anyhow::Error::msg)?;
                        bindings.push(b);
                    }
                }
            }
            let added = match a.store.target()? {
                Target::Bucket(store) => {
                    acls(store)
                        .change(now_ms(), |set| set.add(bindings.iter().cloned()))
                        .await?
                }
                Target::Broker(mut client) => {
                    client
                        .add_acls(AddAclsRequest {
                            acls: bindings.iter().map(to_wire).collect(),
                        })
                        .await
                        .map_err(refused)?
                        .into_inner()
                        .added as usize
                }
            };
            eprintln!(
                "added {added} ACL(s) ({} already present); brokers apply them within a heartbeat interval",
                bindings.len() - added
            );
            Ok(())
        }
        AclCommand::List(f) => {
            let filter = f.filter();
            let selected: Vec<AclBinding> = match f.store.target()? {
                Target::Bucket(store) => acls(store)
                    .refresh()
                    .await?
                    .bindings
                    .iter()
                    .filter(|b| filter.matches(b))
                    .cloned()
                    .collect(),
                Target::Broker(mut client) => from_wire(
                    &client
                        .list_acls(filter_to_wire(&filter))
                        .await
                        .map_err(refused)?
                        .into_inner()
                        .acls,
                )?,
            };
            print_stdout(&rows(&selected))?;
            eprintln!("{} ACL(s)", selected.len());
            Ok(())
        }
        AclCommand::Remove(f) => {
            let filter = f.filter();
            anyhow::ensure!(
                filter != AclFilter::default(),
                "give at least one filter (--principal, --topic, --group, --cluster, --operation)"
            );
            let gone = match f.store.target()? {
                Target::Bucket(store) => {
                    acls(store)
                        .change(now_ms(), |set| set.remove(&filter))
                        .await?
                }
                Target::Broker(mut client) => from_wire(
                    &client
                        .remove_acls(filter_to_wire(&filter))
                        .await
                        .map_err(refused)?
                        .into_inner()
                        .acls,
                )?,
            };
            print_stdout(&rows(&gone))?;
            eprintln!("removed {} ACL(s)", gone.len());
            Ok(())
        }
    }
}
