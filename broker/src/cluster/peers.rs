//! Talking to the other brokers: cached gRPC channels and the nudges
//! ("look now", optionally naming changed topics) sent over them. A nudge
//! is a hint: a broker that misses one sees the change at its next round.

use std::time::Duration;

use strata_proto::v1::NudgeRequest;
use strata_proto::v1::cluster_client::ClusterClient;
use tonic::transport::{Channel, Endpoint};

use super::view::ClusterView;

impl ClusterView {
    /// A (cached) channel to a broker.
    pub(crate) async fn channel(&self, address: &str) -> Option<Channel> {
        if let Some(c) = self.channels.lock().get(address) {
            return Some(c.clone());
        }
        let endpoint = Endpoint::from_shared(address.to_string())
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.ok()?;
        self.channels
            .lock()
            .insert(address.to_string(), channel.clone());
        Some(channel)
    }

    /// Tells the broker at `address` to look at the cluster state now (best
    /// effort: it looks at its next round anyway).
    pub async fn nudge_broker(&self, address: &str) {
        self.send_nudge(address, Vec::new()).await;
    }

    /// Sends `Cluster.Nudge` naming `topics` that changed. Returns whether
    /// the broker answered.
    pub(super) async fn send_nudge(&self, address: &str, topics: Vec<String>) -> bool {
        let Some(channel) = self.channel(address).await else {
            return false;
        };
        let req = NudgeRequest {
            from_broker_id: self.me.0,
            topics,
        };
        match ClusterClient::new(channel).nudge(req).await {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(address, error = %e, "nudge failed");
                self.channels.lock().remove(address);
                false
            }
        }
    }

    /// Nudges every other live broker.
    pub async fn nudge_all(&self) {
        let others: Vec<String> = self
            .live_brokers()
            .into_iter()
            .filter(|(b, _)| *b != self.me.0)
            .map(|(_, a)| a)
            .collect();
        futures::future::join_all(others.iter().map(|a| self.nudge_broker(a))).await;
    }
}
