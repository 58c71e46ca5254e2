//! The cluster service `strata.v1.Cluster`: status, drain, move, and the
//! brokers' nudges. Any broker answers for the whole cluster from its view
//! ([`crate::cluster::ClusterView`]); a drain of another broker is
//! forwarded to it.

use crate::auth::acl::{Operation, Resource};
use crate::auth::grpc::caller;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::cluster_client::ClusterClient;
use strata_proto::v1::cluster_server::Cluster;
use strata_proto::v1::{
    ClusterStatus, ClusterStatusRequest, DrainRequest, DrainResponse, MoveRequest, MoveResponse,
    NudgeRequest, NudgeResponse,
};
use strata_storage::keys::TopicPartition;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::cluster;
use crate::error::{BrokerError, Result};
use crate::topics;

/// The `strata.v1.Cluster` service.
#[derive(Debug, Clone)]
pub struct ClusterService {
    shared: Arc<Shared>,
}

impl ClusterService {
    /// A service over the broker's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    async fn drain_inner(&self, req: DrainRequest) -> Result<DrainResponse> {
        let shared = &self.shared;
        if req.broker_id == shared.broker_id.0 {
            if shared.drain_requested.is_cancelled() || shared.cluster.is_draining() {
                return Ok(DrainResponse {
                    message: format!("broker {} is already draining", req.broker_id),
                });
            }
            shared.drain_requested.cancel();
            return Ok(DrainResponse {
                message: format!(
                    "broker {} is draining: its partitions move to the other brokers, then it exits",
                    req.broker_id
                ),
            });
        }
        let Some(address) = shared.cluster.address_of(req.broker_id) else {
            let live: Vec<String> = shared
                .cluster
                .live_brokers()
                .iter()
                .map(|(b, _)| b.to_string())
                .collect();
            return Err(BrokerError::InvalidRequest(format!(
                "unknown broker {}; live brokers: [{}] (see strata cluster status)",
                req.broker_id,
                live.join(", ")
            )));
        };
        let channel = shared
            .cluster
            .peer_endpoint(&address)
            .map_err(|e| BrokerError::InvalidRequest(format!("bad broker address {address}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| {
                BrokerError::InvalidRequest(format!(
                    "cannot reach broker {} at {address} to ask it to drain: {e}; is it running?",
                    req.broker_id
                ))
            })?;
        match ClusterClient::new(shared.cluster.authorized(channel))
            .drain(req)
            .await
        {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(BrokerError::InvalidRequest(format!(
                "broker at {address} refused the drain: {}",
                s.message()
            ))),
        }
    }

    async fn move_inner(&self, req: MoveRequest) -> Result<MoveResponse> {
        let shared = &self.shared;
        shared.check_running()?;
        let (_, tp): (_, TopicPartition) = shared.resolve(&req.topic, req.partition).await?;
        let (version, from) = cluster::move_partition(shared, &tp, req.to_broker_id).await?;
        Ok(MoveResponse {
            assignment_version: version.0,
            from_broker_id: from,
        })
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        self.shared
            .authorize(&caller(&request), Operation::Describe, &Resource::cluster())?;
        Ok(Response::new(self.shared.cluster.status()))
    }

    async fn drain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        self.shared.authorize(
            &caller(&request),
            Operation::ClusterAction,
            &Resource::cluster(),
        )?;
        Ok(Response::new(self.drain_inner(request.into_inner()).await?))
    }

    async fn r#move(
        &self,
        request: Request<MoveRequest>,
    ) -> Result<Response<MoveResponse>, Status> {
        self.shared.authorize(
            &caller(&request),
            Operation::ClusterAction,
            &Resource::cluster(),
        )?;
        Ok(Response::new(self.move_inner(request.into_inner()).await?))
    }

    async fn nudge(
        &self,
        request: Request<NudgeRequest>,
    ) -> Result<Response<NudgeResponse>, Status> {
        let shared = &self.shared;
        shared.authorize(
            &caller(&request),
            Operation::ClusterAction,
            &Resource::cluster(),
        )?;
        let req = request.into_inner();
        for topic in &req.topics {
            let name = topics::parse_name(topic)?;
            shared.topics.reread(&name).await?;
        }
        if !req.topics.is_empty() {
            shared.groups.topic_changed();
            cluster::apply_topic_changes(shared).await;
        }
        shared.cluster.nudge();
        Ok(Response::new(NudgeResponse {}))
    }
}
