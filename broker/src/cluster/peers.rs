//! Talking to the other brokers: their endpoints (TLS as
//! [`crate::tls::peer`] says), cached gRPC channels, and the nudges ("look
//! now", optionally naming changed topics) sent over them. A nudge is a
//! hint: a broker that misses one sees the change at its next round.

use std::time::Duration;

use strata_client::{AuthChannel, Authorize, ConnectOptions};
use strata_proto::v1::NudgeRequest;
use strata_proto::v1::cluster_client::ClusterClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::view::ClusterView;

impl ClusterView {
    /// Sets how to connect to the other brokers (once, at start; later
    /// calls are ignored).
    pub fn set_peer_options(&self, options: ConnectOptions) {
        let _ = self.peer_options.set(options);
    }

    /// The endpoint of the broker at `address` (its advertised gRPC URL),
    /// with this broker's TLS settings for other brokers.
    pub fn peer_endpoint(&self, address: &str) -> strata_client::Result<Endpoint> {
        match self.peer_options.get() {
            Some(options) => options.endpoint(address),
            None => ConnectOptions::default().endpoint(address),
        }
    }

    /// Sets the credentials this broker presents to the others (once, at
    /// start, with authentication on: the cluster secret).
    pub fn set_peer_authorize(&self, authorize: Authorize) {
        let _ = self.peer_authorize.set(authorize);
    }

    /// `channel` with this broker's credentials on every request.
    pub(crate) fn authorized(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(
            channel,
            self.peer_authorize.get().cloned().unwrap_or_default(),
        )
    }

    /// A (cached) channel to a broker; its requests carry this broker's
    /// credentials.
    pub(crate) async fn channel(&self, address: &str) -> Option<AuthChannel> {
        if let Some(c) = self.channels.lock().get(address) {
            return Some(self.authorized(c.clone()));
        }
        let endpoint = match self.peer_endpoint(address) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(address, error = %e, "cannot call another broker");
                return None;
            }
        }
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5));
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(address, error = %e, "cannot connect to another broker");
                return None;
            }
        };
        self.channels
            .lock()
            .insert(address.to_string(), channel.clone());
        Some(self.authorized(channel))
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
