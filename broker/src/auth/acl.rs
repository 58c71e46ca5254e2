//! Access control lists, as Kafka's: who ([`AclBinding::principal`]) may or
//! may not ([`Permission`]) do what ([`Operation`]) to which resources
//! ([`ResourceType`] + a literal or prefixed name pattern).
//!
//! [`AclSet::allows`] is the decision, with Kafka's rules:
//! - a matching `Deny` wins over any `Allow`;
//! - `All` matches every operation;
//! - `Read`, `Write`, `Delete` and `Alter` imply `Describe`;
//!   `AlterConfigs` implies `DescribeConfigs`;
//! - principal `User:*` matches everyone, resource name `*` (literal)
//!   every resource of its type, a prefixed pattern every name starting
//!   with it; host `*` matches every client host.
//!
//! Storage and caching of the set live in [`crate::auth::acl_store`].

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The kinds of resources ACLs protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// A topic, by name.
    Topic,
    /// A consumer group, by id.
    Group,
    /// The cluster (its one resource is named `kafka-cluster`).
    Cluster,
}

/// The name of the cluster resource (as in Kafka).
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// How a binding's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    /// The exact name (`*`: every name).
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// What a principal does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Every operation.
    All,
    /// Fetch from a topic; join, commit to, read offsets of a group.
    Read,
    /// Produce to a topic.
    Write,
    /// Create topics.
    Create,
    /// Delete topics or groups.
    Delete,
    /// Add partitions; change ACLs (on the cluster).
    Alter,
    /// See that a topic or group exists, its metadata and offsets.
    Describe,
    /// Broker-only actions: drain brokers, move partitions.
    ClusterAction,
    /// Read a topic's settings.
    DescribeConfigs,
    /// Change a topic's settings.
    AlterConfigs,
    /// Idempotent producing (on the cluster).
    IdempotentWrite,
}

impl Operation {
    /// Every operation, in Kafka's order.
    pub const ALL: [Operation; 11] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    /// The operations whose `Allow` also allows `self`.
    fn allowed_by(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            Describe => &[All, Describe, Read, Write, Delete, Alter],
            DescribeConfigs => &[All, DescribeConfigs, AlterConfigs],
            Read => &[All, Read],
            Write => &[All, Write],
            Create => &[All, Create],
            Delete => &[All, Delete],
            Alter => &[All, Alter],
            ClusterAction => &[All, ClusterAction],
            AlterConfigs => &[All, AlterConfigs],
            IdempotentWrite => &[All, IdempotentWrite],
            All => &[All],
        }
    }

    /// Kafka's name (`Read`, `DescribeConfigs`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "All",
            Operation::Read => "Read",
            Operation::Write => "Write",
            Operation::Create => "Create",
            Operation::Delete => "Delete",
            Operation::Alter => "Alter",
            Operation::Describe => "Describe",
            Operation::ClusterAction => "ClusterAction",
            Operation::DescribeConfigs => "DescribeConfigs",
            Operation::AlterConfigs => "AlterConfigs",
            Operation::IdempotentWrite => "IdempotentWrite",
        }
    }

    /// The name `strata acl` takes: `read`, `describe-configs`, ...
    pub fn cli_name(self) -> String {
        let mut out = String::new();
        for (i, c) in self.name().chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// The operation named `s`: Kafka's name, case and `-`/`_` ignored
    /// (`read`, `describe-configs`, `IDEMPOTENT_WRITE`).
    pub fn parse(s: &str) -> Option<Operation> {
        let wanted: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Operation::ALL
            .into_iter()
            .find(|o| o.name().to_ascii_lowercase() == wanted)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Grants the operation.
    Allow,
    /// Refuses it, whatever else allows it.
    Deny,
}

/// One resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    /// Its type.
    pub kind: ResourceType,
    /// Its name ([`CLUSTER_RESOURCE`] for the cluster).
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    /// Topic `name`.
    pub fn topic(name: &'a str) -> Self {
        Resource {
            kind: ResourceType::Topic,
            name,
        }
    }

    /// Group `name`.
    pub fn group(name: &'a str) -> Self {
        Resource {
            kind: ResourceType::Group,
            name,
        }
    }

    /// The cluster.
    pub fn cluster() -> Self {
        Resource {
            kind: ResourceType::Cluster,
            name: CLUSTER_RESOURCE,
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ResourceType::Topic => write!(f, "topic {}", self.name),
            ResourceType::Group => write!(f, "group {}", self.name),
            ResourceType::Cluster => f.write_str("the cluster"),
        }
    }
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// The resource type.
    pub resource_type: ResourceType,
    /// The resource name or prefix (`*` with `Literal`: every resource).
    pub resource_name: String,
    /// How [`Self::resource_name`] matches.
    pub pattern_type: PatternType,
    /// `User:NAME` or `User:*`.
    pub principal: String,
    /// The client host (an IP address) or `*`.
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclBinding {
    fn matches_resource(&self, r: &Resource<'_>) -> bool {
        self.resource_type == r.kind
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == r.name,
                PatternType::Prefixed => r.name.starts_with(&self.resource_name),
            }
    }

    fn matches_principal(&self, principal: &str) -> bool {
        self.principal == "User:*" || self.principal == principal
    }

    fn matches_host(&self, host: Option<IpAddr>) -> bool {
        self.host == "*" || host.is_some_and(|h| self.host.parse::<IpAddr>().ok() == Some(h))
    }

    /// Checks the fields a client can get wrong; the error says which.
    pub fn validate(&self) -> Result<(), String> {
        if !self.principal.starts_with("User:") || self.principal.len() <= "User:".len() {
            return Err(format!(
                "principal {:?} must look like User:NAME (or User:* for everyone)",
                self.principal
            ));
        }
        if self.resource_name.is_empty() {
            return Err("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_RESOURCE {
            return Err(format!(
                "the cluster resource is named {CLUSTER_RESOURCE}, not {:?}",
                self.resource_name
            ));
        }
        if self.host != "*" && self.host.parse::<IpAddr>().is_err() {
            return Err(format!(
                "host {:?} is neither * nor an IP address",
                self.host
            ));
        }
        Ok(())
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let permission = match self.permission {
            Permission::Allow => "allow",
            Permission::Deny => "deny",
        };
        let pattern = match self.pattern_type {
            PatternType::Literal => "",
            PatternType::Prefixed => " (prefix)",
        };
        let resource = match self.resource_type {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
        };
        write!(
            f,
            "{permission} {} {} on {resource} {}{pattern} from host {}",
            self.principal, self.operation, self.resource_name, self.host
        )
    }
}

/// Which bindings a describe or delete selects: `None` fields match
/// anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    /// Resource type.
    pub resource_type: Option<ResourceType>,
    /// Exact resource name (as stored).
    pub resource_name: Option<String>,
    /// Pattern type.
    pub pattern_type: Option<PatternType>,
    /// Principal.
    pub principal: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Operation.
    pub operation: Option<Operation>,
    /// Permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// True when `b` is selected.
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.resource_type.is_none_or(|t| t == b.resource_type)
            && self
                .resource_name
                .as_ref()
                .is_none_or(|n| *n == b.resource_name)
            && self.pattern_type.is_none_or(|p| p == b.pattern_type)
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// The whole set of ACLs, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclSet {
    /// The bindings, without duplicates.
    pub bindings: Vec<AclBinding>,
}

impl AclSet {
    /// Whether `principal` (`User:NAME`) from `host` may do `operation` on
    /// `resource`.
    pub fn allows(
        &self,
        principal: &str,
        host: Option<IpAddr>,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> bool {
        let relevant = || {
            self.bindings.iter().filter(|b| {
                b.matches_resource(resource)
                    && b.matches_principal(principal)
                    && b.matches_host(host)
            })
        };
        let denied = relevant().any(|b| {
            b.permission == Permission::Deny
                && (b.operation == Operation::All || b.operation == operation)
        });
        !denied
            && relevant().any(|b| {
                b.permission == Permission::Allow && operation.allowed_by().contains(&b.operation)
            })
    }

    /// Whether some binding allows `principal` `operation` on some
    /// resource of type `kind` (InitProducerId: `Write` on any topic).
    pub fn allows_some(
        &self,
        principal: &str,
        host: Option<IpAddr>,
        operation: Operation,
        kind: ResourceType,
    ) -> bool {
        self.bindings.iter().any(|b| {
            b.resource_type == kind
                && b.permission == Permission::Allow
                && b.matches_principal(principal)
                && b.matches_host(host)
                && operation.allowed_by().contains(&b.operation)
        })
    }

    /// Adds `bindings` that are not there yet; returns how many were new.
    pub fn add(&mut self, bindings: impl IntoIterator<Item = AclBinding>) -> usize {
        let mut added = 0;
        for b in bindings {
            if !self.bindings.contains(&b) {
                self.bindings.push(b);
                added += 1;
            }
        }
        added
    }

    /// Removes the bindings `filter` selects and returns them.
    pub fn remove(&mut self, filter: &AclFilter) -> Vec<AclBinding> {
        let (gone, kept) = std::mem::take(&mut self.bindings)
            .into_iter()
            .partition(|b| filter.matches(b));
        self.bindings = kept;
        gone
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn acl(
        principal: &str,
        op: Operation,
        permission: Permission,
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission,
        }
    }

    #[test]
    fn kafka_rules() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let mut set = AclSet::default();
        set.add([
            acl("User:alice", Read, Allow, Topic, "orders", Literal),
            acl("User:alice", Write, Allow, Topic, "logs-", Prefixed),
            acl("User:*", Describe, Allow, Group, "*", Literal),
            acl("User:bob", All, Allow, Topic, "*", Literal),
            acl("User:bob", Write, Deny, Topic, "secret", Literal),
            acl("User:carol", AlterConfigs, Allow, Topic, "t", Literal),
        ]);
        let t = Resource::topic;
        assert!(set.allows("User:alice", None, Read, &t("orders")));
        assert!(
            set.allows("User:alice", None, Describe, &t("orders")),
            "read implies describe"
        );
        assert!(!set.allows("User:alice", None, Write, &t("orders")));
        assert!(set.allows("User:alice", None, Write, &t("logs-app")));
        assert!(!set.allows("User:alice", None, Write, &t("logs")));
        assert!(set.allows("User:dave", None, Describe, &Resource::group("g")));
        assert!(!set.allows("User:dave", None, Read, &Resource::group("g")));
        assert!(set.allows("User:bob", None, Write, &t("anything")));
        assert!(
            !set.allows("User:bob", None, Write, &t("secret")),
            "deny wins"
        );
        assert!(set.allows("User:bob", None, Read, &t("secret")));
        assert!(set.allows("User:carol", None, DescribeConfigs, &t("t")));
        assert!(!set.allows("User:carol", None, Describe, &t("t")));
        assert!(!set.allows("User:alice", None, Read, &Resource::cluster()));
    }

    #[test]
    fn hosts_and_all_deny() {
        let mut set = AclSet::default();
        let mut b = acl(
            "User:a",
            Operation::Read,
            Permission::Allow,
            ResourceType::Topic,
            "t",
            PatternType::Literal,
        );
        b.host = "10.0.0.1".into();
        set.add([b.clone()]);
        let t = Resource::topic("t");
        assert!(set.allows("User:a", "10.0.0.1".parse().ok(), Operation::Read, &t));
        assert!(!set.allows("User:a", "10.0.0.2".parse().ok(), Operation::Read, &t));
        assert!(!set.allows("User:a", None, Operation::Read, &t));
        b.host = "*".into();
        b.operation = Operation::All;
        b.permission = Permission::Deny;
        set.add([b]);
        assert!(!set.allows("User:a", "10.0.0.1".parse().ok(), Operation::Read, &t));
    }

    #[test]
    fn add_remove_and_validate() {
        let mut set = AclSet::default();
        let b = acl(
            "User:a",
            Operation::Read,
            Permission::Allow,
            ResourceType::Topic,
            "t",
            PatternType::Literal,
        );
        assert_eq!(set.add([b.clone(), b.clone()]), 1);
        assert_eq!(set.add([b.clone()]), 0);
        let gone = set.remove(&AclFilter {
            principal: Some("User:a".into()),
            ..AclFilter::default()
        });
        assert_eq!(gone, vec![b.clone()]);
        assert!(set.bindings.is_empty());
        assert!(b.validate().is_ok());
        let mut bad = b.clone();
        bad.principal = "alice".into();
        assert!(bad.validate().unwrap_err().contains("User:NAME"));
        let mut bad = b;
        bad.resource_type = ResourceType::Cluster;
        assert!(bad.validate().unwrap_err().contains("kafka-cluster"));
        assert_eq!(
            Operation::parse("describe-configs"),
            Some(Operation::DescribeConfigs)
        );
        assert_eq!(
            Operation::parse("IDEMPOTENT_WRITE"),
            Some(Operation::IdempotentWrite)
        );
        assert_eq!(Operation::parse("fly"), None);
        for o in Operation::ALL {
            assert_eq!(Operation::parse(&o.cli_name()), Some(o), "{}", o.cli_name());
        }
        assert_eq!(Operation::IdempotentWrite.cli_name(), "idempotent-write");
    }
}
