//! The topic administration service `strata.v1.Admin`: create, delete,
//! list and describe topics, over the [`crate::topics`] registry.
//!
//! Create returns once the controller assigned the new partitions (their
//! owners claim them right away); a re-create first makes sure no broker
//! still has the deleted topic open. Delete releases the partitions open
//! here, writes the `deleted` version, tells every live broker (each drops
//! its partitions of the topic before answering, and the controller drops
//! it from the assignment), then purges the data older than the delete in
//! the background.

use std::collections::HashMap;
use std::sync::Arc;

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::admin_server::Admin;
use strata_proto::v1::{
    CreateTopicRequest, DeleteTopicRequest, DeleteTopicResponse, DescribeTopicRequest,
    ListTopicsRequest, ListTopicsResponse, PartitionDescription, TopicConfig, TopicDescription,
    TopicSummary,
};
use strata_storage::keys::TopicPartition;
use strata_storage::log::LogConfig;
use strata_storage::manifest;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::auth::acl::{Operation, Resource};
use crate::auth::grpc::caller;
use crate::error::{BrokerError, Result};
use crate::topics::{self, Topic, TopicOverrides};

/// The `strata.v1.Admin` service.
#[derive(Debug, Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    /// A service over the broker's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The description of `topic`: owners from the cluster assignment;
    /// offsets and sizes from the open log when this broker serves the
    /// partition, else (with `read_manifests`) from the partition's
    /// manifest in the bucket (the unsealed tail of another owner is not
    /// counted then).
    /// The topic with each partition's offsets and sizes: live figures for
    /// the partitions open here; for the others (`remote`), the owner's
    /// live figures ([`Self::ask_owners`]), or else the manifest in the
    /// bucket (whose high watermark may trail the owner's tail).
    async fn describe(&self, topic: &Topic, remote: Remote) -> Result<TopicDescription> {
        let shared = &self.shared;
        let ask_owners = match remote {
            Remote::AskOwners => self.ask_owners(topic).await,
            Remote::Skip => HashMap::new(),
        };
        let mut details = Vec::with_capacity(topic.record.partitions as usize);
        for p in 0..topic.record.partitions {
            let tp = TopicPartition {
                topic: topic.name.clone(),
                partition: p,
            };
            let mut d = PartitionDescription {
                partition: p,
                owner_broker_id: shared.cluster.owner_of(topic.name.as_str(), p),
                ..PartitionDescription::default()
            };
            if let Some(log) = shared.partitions.get_open(&tp) {
                let s = log.status();
                d.leader_epoch = s.leader_epoch;
                d.log_start_offset = s.log_start_offset;
                d.high_watermark = s.high_watermark;
                d.segments = u32::try_from(s.segments).unwrap_or(u32::MAX);
                d.sealed_bytes = s.sealed_bytes;
                d.tail_bytes = s.tail_bytes;
            } else if let Some(live) = ask_owners.get(&p) {
                d = *live;
            } else if remote != Remote::Skip
                && let Some((_, m)) = manifest::load_head(&shared.meta_store, &topic.partition(p))
                    .await
                    .map_err(|e| BrokerError::storage(&tp, e))?
            {
                d.leader_epoch = m.leader_epoch;
                d.log_start_offset = m.log_start_offset;
                d.high_watermark = m.next_offset;
                d.segments = u32::try_from(m.segment_count()).unwrap_or(u32::MAX);
                d.sealed_bytes = m.sealed_bytes();
            }
            details.push(d);
        }
        Ok(TopicDescription {
            topic_id: topic.record.id.to_string(),
            name: topic.name.to_string(),
            partitions: topic.record.partitions,
            config: Some(effective_config(&topic.log_config)),
            partition_details: details,
        })
    }

    /// Asks the other live owners of `topic`'s partitions for the live
    /// figures of the partitions open on them (one `local_only` describe
    /// each, concurrently, bounded by the cluster's RPC timeout). Owners
    /// that do not answer are left out (their manifests stand in).
    async fn ask_owners(&self, topic: &Topic) -> HashMap<u32, PartitionDescription> {
        let shared = &self.shared;
        let view = &shared.cluster;
        let mut owners: Vec<u32> = (0..topic.record.partitions)
            .filter_map(|p| view.owner_of(topic.name.as_str(), p))
            .filter(|b| *b != shared.broker_id.0)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let asks = owners.into_iter().filter_map(|b| view.address_of(b)).map(|address| async move {
            let channel = view.channel(&address).await?;
            let req = DescribeTopicRequest {
                name: topic.name.to_string(),
                local_only: true,
            };
            match AdminClient::new(channel).describe_topic(req).await {
                Ok(r) => Some(r.into_inner().partition_details),
                Err(e) => {
                    tracing::debug!(%address, error = %e, "cannot ask a partition owner for live offsets");
                    None
                }
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .filter(|d| d.leader_epoch > 0)
            .map(|d| (d.partition, d))
            .collect()
    }
}

/// Where [`AdminService::describe`] gets the figures of partitions not
/// open on this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remote {
    /// Their owners, else the manifests in the bucket.
    AskOwners,
    /// Nowhere (a `local_only` request, a create's answer).
    Skip,
}

/// The wire form of effective log settings.
fn effective_config(c: &LogConfig) -> TopicConfig {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    TopicConfig {
        retention_ms: Some(c.retention_ms.map_or(-1, ms)),
        retention_bytes: Some(
            c.retention_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        ),
        segment_bytes: Some(i64::try_from(c.segment_bytes).unwrap_or(i64::MAX)),
        segment_ms: Some(ms(c.segment_ms)),
        max_batch_bytes: Some(i32::try_from(c.max_batch_bytes).unwrap_or(i32::MAX)),
        timestamp_type: Some(topics::timestamp_type_name(c.timestamp_type).to_owned()),
        timestamp_before_max_ms: Some(c.timestamp_before_max.map_or(-1, ms)),
        timestamp_after_max_ms: Some(c.timestamp_after_max.map_or(-1, ms)),
    }
}

fn overrides(c: Option<TopicConfig>) -> TopicOverrides {
    let c = c.unwrap_or_default();
    TopicOverrides {
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        segment_bytes: c.segment_bytes,
        segment_ms: c.segment_ms,
        max_batch_bytes: c.max_batch_bytes,
        timestamp_type: c.timestamp_type,
        timestamp_before_max_ms: c.timestamp_before_max_ms,
        timestamp_after_max_ms: c.timestamp_after_max_ms,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let shared = &self.shared;
        shared.authorize_topic_create(&caller, &req.name)?;
        let (topic, _created) = crate::data::topics::create(
            shared,
            &req.name,
            req.partitions,
            overrides(req.config),
            req.if_not_exists,
        )
        .await?;
        Ok(Response::new(self.describe(&topic, Remote::Skip).await?))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let shared = &self.shared;
        shared.authorize(&caller, Operation::Delete, &Resource::topic(&req.name))?;
        crate::data::topics::delete(shared, &req.name).await?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let caller = caller(&request);
        let topics = self.shared.topics.list().await?;
        Ok(Response::new(ListTopicsResponse {
            topics: topics
                .into_iter()
                .filter(|t| {
                    self.shared.auth.allows(
                        &caller,
                        Operation::Describe,
                        &Resource::topic(t.name.as_str()),
                    )
                })
                .map(|t| TopicSummary {
                    name: t.name.to_string(),
                    partitions: t.record.partitions,
                })
                .collect(),
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        self.shared
            .authorize(&caller, Operation::Describe, &Resource::topic(&req.name))?;
        let topic = self.shared.topic(&req.name).await?;
        let remote = if req.local_only {
            Remote::Skip
        } else {
            Remote::AskOwners
        };
        Ok(Response::new(self.describe(&topic, remote).await?))
    }
}
