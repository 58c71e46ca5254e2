//! Topic, group and cluster administration, and cluster metadata
//! ([`Admin`]).
//!
//! A thin layer over the `Admin`, `Cluster` and `Strata.Metadata` RPCs: it
//! adds request timeouts, failover to another broker when the one it talks
//! to is down, error messages that say what to do, and [`TopicSettings`], a
//! typed form of the proto's `TopicConfig`. Results are the proto messages
//! themselves ([`TopicDescription`], [`MetadataResponse`], [`ClusterStatus`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::connect::AuthChannel as Channel;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::cluster_client::ClusterClient;
use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::{
    ClusterStatus, ClusterStatusRequest, CreateTopicRequest, DeleteGroupRequest,
    DeleteOffsetsRequest, DeleteTopicRequest, DescribeGroupRequest, DescribeTopicRequest,
    DrainRequest, GroupDescription, GroupSummary, ListGroupsRequest, ListTopicsRequest,
    MetadataResponse, MoveRequest, MoveResponse, TopicConfig, TopicDescription, TopicSummary,
};

use crate::cluster::{Cluster, MAX_MESSAGE_BYTES};
use crate::connect::ConnectOptions;
use crate::error::{Error, Result};
use crate::group::{Coordinator, to_wire};

/// How long a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Never delete by age.
    Forever,
    /// Delete segments whose newest record is older than this.
    Duration(Duration),
}

/// Whose clock timestamps a topic's records (Kafka's
/// `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's (checked against the broker's clock).
    CreateTime,
    /// The broker's, at append.
    LogAppendTime,
}

impl TimestampType {
    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

impl std::str::FromStr for TimestampType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
            "createtime" => Ok(TimestampType::CreateTime),
            "logappendtime" => Ok(TimestampType::LogAppendTime),
            _ => Err(Error::Config(format!(
                "timestamp type must be CreateTime or LogAppendTime: {s}"
            ))),
        }
    }
}

/// Settings of a new topic; `None` fields take the broker's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSettings {
    /// Retention by age.
    pub retention: Option<Retention>,
    /// Retention by size per partition (`None`: the broker default).
    pub retention_bytes: Option<u64>,
    /// Seal a partition's tail into a segment at this size. Bigger segments
    /// mean fewer objects, and more data to upload on hand-over.
    pub segment_bytes: Option<u64>,
    /// Seal the tail when its oldest record is this old.
    pub segment_age: Option<Duration>,
    /// Largest batch the broker accepts for this topic.
    pub max_batch_bytes: Option<u32>,
    /// Whose clock timestamps the records.
    pub timestamp_type: Option<TimestampType>,
    /// Refuse CreateTime records older than this (by the broker's clock).
    pub timestamp_before_max: Option<Duration>,
    /// Refuse CreateTime records this far ahead of the broker's clock.
    pub timestamp_after_max: Option<Duration>,
    /// Succeed, returning the existing topic, when it already exists.
    pub if_not_exists: bool,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl TopicSettings {
    /// The proto form.
    pub fn to_config(&self) -> Result<TopicConfig> {
        let too_big = |key: &str| Error::Config(format!("{key} is too large"));
        Ok(TopicConfig {
            retention_ms: self.retention.map(|r| match r {
                Retention::Forever => -1,
                Retention::Duration(d) => ms(d),
            }),
            retention_bytes: self
                .retention_bytes
                .map(|b| i64::try_from(b).map_err(|_| too_big("retention_bytes")))
                .transpose()?,
            segment_bytes: self
                .segment_bytes
                .map(|b| i64::try_from(b).map_err(|_| too_big("segment_bytes")))
                .transpose()?,
            segment_ms: self.segment_age.map(ms),
            max_batch_bytes: self
                .max_batch_bytes
                .map(|b| i32::try_from(b).map_err(|_| too_big("max_batch_bytes")))
                .transpose()?,
            timestamp_type: self.timestamp_type.map(|t| t.name().to_owned()),
            timestamp_before_max_ms: self.timestamp_before_max.map(ms),
            timestamp_after_max_ms: self.timestamp_after_max.map(ms),
        })
    }
}

/// Topic and cluster administration, and metadata. Cheap to clone.
///
/// Every call goes to the broker that answered last, or, when it is down,
/// to the next one that answers: the bootstrap URLs, then the brokers
/// learned from earlier answers.
///
/// ```no_run
/// # async fn demo() -> strata_client::Result<()> {
/// use std::time::Duration;
/// use strata_client::{Admin, Retention, TopicSettings};
///
/// let admin = Admin::connect("http://127.0.0.1:50051").await?;
/// let settings = TopicSettings {
///     retention: Some(Retention::Duration(Duration::from_secs(7 * 24 * 3600))),
///     ..Default::default()
/// };
/// let topic = admin.create_topic("orders", 8, settings).await?;
/// println!("{} has {} partitions", topic.name, topic.partitions);
/// for t in admin.list_topics().await? {
///     println!("{}", t.name);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    /// Connects to the cluster through `url`: one broker URL (e.g.
    /// `http://127.0.0.1:50051`), or several separated by commas; any one
    /// that answers will do.
    pub async fn connect(url: &str) -> Result<Admin> {
        Admin::connect_with(url, &ConnectOptions::default()).await
    }

    /// [`Admin::connect`] with `options` (TLS for `https://` brokers).
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Admin> {
        let cluster = Cluster::connect(url, Duration::from_secs(30), options).await?;
        Ok(Admin { cluster })
    }

    /// Runs an `Admin` service call on any broker that answers. Only
    /// `idempotent` calls are sent again after a connection lost mid-call.
    async fn admin_call<T, F, Fut>(&self, what: &str, idempotent: bool, call: F) -> Result<T>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let (answer, _) = self
            .cluster
            .call_any(what, idempotent, |channel| {
                call(AdminClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
            })
            .await?;
        Ok(answer)
    }

    /// Runs a `Cluster` service call on any broker that answers.
    async fn cluster_call<T, F, Fut>(&self, what: &str, call: F) -> Result<(T, String)>
    where
        F: Fn(ClusterClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.cluster
            .call_any(what, true, |channel| {
                call(ClusterClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
            })
            .await
    }

    /// Creates `name` with `partitions` partitions.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        settings: TopicSettings,
    ) -> Result<TopicDescription> {
        if partitions == 0 {
            return Err(Error::Config(
                "a topic needs at least one partition: 0".into(),
            ));
        }
        let req = CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            config: Some(settings.to_config()?),
            if_not_exists: settings.if_not_exists,
        };
        // Sent twice, a create would fail with "already exists".
        let idempotent = settings.if_not_exists;
        self.admin_call("create topic", idempotent, |mut client| {
            let req = self.cluster.request(req.clone());
            async move { client.create_topic(req).await }
        })
        .await
    }

    /// Deletes `name` and all its records.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.admin_call("delete topic", false, |mut client| {
            let req = self.cluster.request(DeleteTopicRequest {
                name: name.to_owned(),
            });
            async move { client.delete_topic(req).await }
        })
        .await?;
        Ok(())
    }

    /// All topics with their partition counts, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        let mut topics = self
            .admin_call("list topics", true, |mut client| {
                let req = self.cluster.request(ListTopicsRequest {});
                async move { client.list_topics(req).await }
            })
            .await?
            .topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// A topic's settings and, per partition, owner, offsets and sizes.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let mut desc = self
            .admin_call("describe topic", true, |mut client| {
                let req = self.cluster.request(DescribeTopicRequest {
                    name: name.to_owned(),
                    local_only: false,
                });
                async move { client.describe_topic(req).await }
            })
            .await?;
        desc.partition_details.sort_by_key(|p| p.partition);
        Ok(desc)
    }

    /// Brokers, and topics with their partition owners (`topics` empty: all
    /// topics).
    pub async fn metadata(&self, topics: &[&str]) -> Result<MetadataResponse> {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        self.cluster.fetch_metadata(&topics).await
    }

    /// The brokers (liveness, load, which one is the controller) and the
    /// partition table, as any broker sees them. Brokers are sorted by id,
    /// partitions by topic and number.
    ///
    /// ```no_run
    /// # async fn demo() -> strata_client::Result<()> {
    /// use strata_client::Admin;
    ///
    /// let admin = Admin::connect("http://127.0.0.1:50051,http://127.0.0.1:50052").await?;
    /// let status = admin.cluster_status().await?;
    /// for b in &status.brokers {
    ///     println!("broker {} at {}: alive {}", b.broker_id, b.address, b.alive);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let (mut status, url) = self
            .cluster_call("cluster status", |mut client| {
                let req = self.cluster.request(ClusterStatusRequest {});
                async move { client.status(req).await }
            })
            .await?;
        // Every broker listed is a place to fail over to.
        self.cluster.learn(
            status.broker_id,
            &url,
            status
                .brokers
                .iter()
                .map(|b| (b.broker_id, b.address.as_str())),
        );
        status.brokers.sort_by_key(|b| b.broker_id);
        status
            .partitions
            .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(status)
    }

    /// Asks broker `broker_id` to drain: its partitions move to the other
    /// brokers, then it exits. Returns the broker's message once the drain
    /// has started; poll [`Admin::cluster_status`] until the broker is no
    /// longer alive to see it finish.
    ///
    /// ```no_run
    /// # async fn demo() -> strata_client::Result<()> {
    /// use strata_client::Admin;
    ///
    /// let admin = Admin::connect("http://127.0.0.1:50051").await?;
    /// println!("{}", admin.drain_broker(2).await?);
    /// # Ok(()) }
    /// ```
    pub async fn drain_broker(&self, broker_id: u32) -> Result<String> {
        let (resp, _) = self
            .cluster_call("drain", |mut client| {
                let req = self.cluster.request(DrainRequest { broker_id });
                async move { client.drain(req).await }
            })
            .await?;
        Ok(resp.message)
    }

    /// Moves `topic`/`partition` to broker `to_broker_id` and pins it there
    /// (the balancer leaves it alone until that broker drains or dies).
    /// Returns once the new assignment is published; the new owner takes
    /// over within milliseconds.
    ///
    /// ```no_run
    /// # async fn demo() -> strata_client::Result<()> {
    /// use strata_client::Admin;
    ///
    /// let admin = Admin::connect("http://127.0.0.1:50051").await?;
    /// let moved = admin.move_partition("orders", 3, 2).await?;
    /// println!("was on {:?}", moved.from_broker_id);
    /// # Ok(()) }
    /// ```
    pub async fn move_partition(
        &self,
        topic: &str,
        partition: u32,
        to_broker_id: u32,
    ) -> Result<MoveResponse> {
        let (resp, _) = self
            .cluster_call("move partition", |mut client| {
                let req = self.cluster.request(MoveRequest {
                    topic: topic.to_owned(),
                    partition,
                    to_broker_id,
                });
                async move { client.r#move(req).await }
            })
            .await?;
        Ok(resp)
    }

    /// Every consumer group of the cluster.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        let (resp, _) = self
            .cluster
            .call_any("list groups", true, |channel| {
                let req = self
                    .cluster
                    .request(ListGroupsRequest { local_only: false });
                async move { GroupsClient::new(channel).list_groups(req).await }
            })
            .await?;
        Ok(resp.groups)
    }

    /// A group's state, members and committed offsets (from its
    /// coordinator).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let req = DescribeGroupRequest {
            group_id: group.to_owned(),
        };
        self.coordinator(group)
            .call("describe group", true, |mut c| {
                let req = self.cluster.request(req.clone());
                async move { c.describe_group(req).await }
            })
            .await
    }

    /// Deletes a group that has no members, with its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let req = DeleteGroupRequest {
            group_id: group.to_owned(),
        };
        self.coordinator(group)
            .call("delete group", true, |mut c| {
                let req = self.cluster.request(req.clone());
                async move { c.delete_group(req).await }
            })
            .await
            .map(drop)
    }

    /// Sets the committed offsets (topic, partition, next offset to read)
    /// of a group that has no members (Kafka's
    /// `AlterConsumerGroupOffsets`).
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(String, u32, i64)],
    ) -> Result<()> {
        self.coordinator(group).commit("", -1, offsets).await
    }

    /// Deletes committed offsets of a group that has no members: those of
    /// `partitions`, or all when it is empty. Returns how many went.
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[(String, u32)],
    ) -> Result<u32> {
        let req = DeleteOffsetsRequest {
            group_id: group.to_owned(),
            partitions: to_wire(&partitions.iter().cloned().collect()),
        };
        let resp = self
            .coordinator(group)
            .call("delete offsets", true, |mut c| {
                let req = self.cluster.request(req.clone());
                async move { c.delete_offsets(req).await }
            })
            .await?;
        Ok(resp.deleted)
    }

    fn coordinator(&self, group: &str) -> Coordinator {
        Coordinator::new(self.cluster.clone(), group)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_to_config() {
        let c = TopicSettings::default().to_config().unwrap();
        assert_eq!(c, TopicConfig::default());
        let c = TopicSettings {
            retention: Some(Retention::Forever),
            segment_bytes: Some(1 << 20),
            ..Default::default()
        }
        .to_config()
        .unwrap();
        assert_eq!(c.retention_ms, Some(-1));
        assert_eq!(c.segment_bytes, Some(1 << 20));
        let c = TopicSettings {
            retention: Some(Retention::Duration(Duration::from_secs(60))),
            ..Default::default()
        }
        .to_config()
        .unwrap();
        assert_eq!(c.retention_ms, Some(60_000));
    }
}
