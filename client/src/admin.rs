//! Topic administration and cluster metadata ([`Admin`]).
//!
//! A thin layer over the `Admin` and `Strata.Metadata` RPCs: it adds request
//! timeouts, error messages that say what to do, and [`TopicSettings`], a
//! typed form of the proto's `TopicConfig`. Results are the proto messages
//! themselves ([`TopicDescription`], [`MetadataResponse`]).

use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::{
    CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest, ListTopicsRequest,
    MetadataResponse, TopicConfig, TopicDescription, TopicSummary,
};

use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// How long a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Never delete by age.
    Forever,
    /// Delete segments whose newest record is older than this.
    Duration(Duration),
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
        })
    }
}

/// Topic administration and metadata. Cheap to clone.
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
    /// Connects to the broker at `url` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(url: &str) -> Result<Admin> {
        let cluster = Cluster::connect(url, Duration::from_secs(30)).await?;
        Ok(Admin { cluster })
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
        let req = self.cluster.request(CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            config: Some(settings.to_config()?),
            if_not_exists: settings.if_not_exists,
        });
        let mut client = self.cluster.admin()?;
        self.cluster
            .unary(
                self.cluster.bootstrap(),
                "create topic",
                client.create_topic(req),
            )
            .await
    }

    /// Deletes `name` and all its records.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let req = self.cluster.request(DeleteTopicRequest {
            name: name.to_owned(),
        });
        let mut client = self.cluster.admin()?;
        self.cluster
            .unary(
                self.cluster.bootstrap(),
                "delete topic",
                client.delete_topic(req),
            )
            .await?;
        Ok(())
    }

    /// All topics with their partition counts, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        let req = self.cluster.request(ListTopicsRequest {});
        let mut client = self.cluster.admin()?;
        let mut topics = self
            .cluster
            .unary(
                self.cluster.bootstrap(),
                "list topics",
                client.list_topics(req),
            )
            .await?
            .topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// A topic's settings and, per partition, owner, offsets and sizes.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let req = self.cluster.request(DescribeTopicRequest {
            name: name.to_owned(),
        });
        let mut client = self.cluster.admin()?;
        let mut desc = self
            .cluster
            .unary(
                self.cluster.bootstrap(),
                "describe topic",
                client.describe_topic(req),
            )
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
