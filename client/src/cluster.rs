//! Connections and metadata shared by the producer, consumer and admin.
//!
//! [`Cluster`] keeps one gRPC channel per broker address (tonic channels
//! multiplex requests and reconnect by themselves) and a metadata cache:
//! topic → partition count and partition → owner address. Callers ask for an
//! owner, send there, and on `NOT_OWNER` / `FENCED` / `BROKER_UNAVAILABLE`
//! either route to the owner named in the error ([`Cluster::set_owner`]) or
//! refresh ([`Cluster::refresh`]).
//!
//! The one thing a newcomer must not break: locks here are `parking_lot`
//! mutexes held only for map lookups, never across an `.await`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_proto::ErrorInfo;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::strata_client::StrataClient;
use strata_proto::v1::{ErrorReason, MetadataRequest, MetadataResponse};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// Largest gRPC message the client accepts (fetch responses carry up to
/// `max_bytes` plus one batch).
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Metadata refreshes closer together than this are coalesced.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(50);

/// What the client knows about one topic.
#[derive(Debug, Clone, Default)]
struct TopicMeta {
    /// Owner broker id per partition (index = partition number).
    owners: Vec<Option<u32>>,
}

#[derive(Debug, Default)]
struct MetaCache {
    brokers: HashMap<u32, String>,
    topics: HashMap<String, TopicMeta>,
    /// The broker that answered the last metadata call: we reach it at the
    /// bootstrap URL, whatever address it advertises.
    answered_by: Option<u32>,
    /// Owners named by `NOT_OWNER` errors since the last refresh.
    overrides: HashMap<(String, u32), String>,
    last_refresh: Option<Instant>,
}

/// Connections to the brokers and the metadata cache.
#[derive(Debug)]
pub(crate) struct Cluster {
    bootstrap: String,
    channels: Mutex<HashMap<String, Channel>>,
    meta: Mutex<MetaCache>,
    /// Serialises metadata refreshes so a burst of errors costs one call.
    refreshing: tokio::sync::Mutex<()>,
    request_timeout: Duration,
}

/// `host:port` → `http://host:port`, without a trailing slash.
fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

fn endpoint(url: &str) -> Result<Endpoint> {
    let invalid = || Error::InvalidUrl {
        url: url.to_owned(),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid());
    }
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|_| invalid())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

impl Cluster {
    /// Connects to the bootstrap broker at `url` (eagerly, so a wrong URL or
    /// a stopped broker is reported here, not on the first request).
    pub(crate) async fn connect(url: &str, request_timeout: Duration) -> Result<Arc<Cluster>> {
        let url = normalize_url(url);
        let channel = match endpoint(&url)?.connect().await {
            Ok(c) => c,
            Err(e) => {
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message = s.to_string();
                    source = s.source();
                }
                return Err(Error::Connect {
                    url,
                    message: message.to_lowercase(),
                });
            }
        };
        let mut channels = HashMap::new();
        channels.insert(url.clone(), channel);
        Ok(Arc::new(Cluster {
            bootstrap: url,
            channels: Mutex::new(channels),
            meta: Mutex::new(MetaCache::default()),
            refreshing: tokio::sync::Mutex::new(()),
            request_timeout,
        }))
    }

    /// The URL the client was started with.
    pub(crate) fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The channel to `address`, created (lazily connecting) on first use.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel> {
        if let Some(c) = self.channels.lock().get(address) {
            return Ok(c.clone());
        }
        let channel = endpoint(address)?.connect_lazy();
        Ok(self
            .channels
            .lock()
            .entry(address.to_owned())
            .or_insert(channel)
            .clone())
    }

    /// A data-plane client for `address`.
    pub(crate) fn strata(&self, address: &str) -> Result<StrataClient<Channel>> {
        Ok(StrataClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// An admin client for the bootstrap broker.
    pub(crate) fn admin(&self) -> Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel(&self.bootstrap)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Runs a unary call against `address` with the request timeout, mapping
    /// errors.
    pub(crate) async fn unary<T, F>(&self, address: &str, what: &str, call: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(Error::from_status(&status, address)),
            Err(_) => Err(Error::Timeout {
                what: format!("{what} at {address}"),
                after: self.request_timeout,
            }),
        }
    }

    /// A request with the request timeout also sent to the server
    /// (`grpc-timeout`).
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.request_timeout);
        req
    }

    /// Calls Metadata on the bootstrap broker (for `topics`; empty: all) and
    /// returns the raw answer, updating the cache.
    pub(crate) async fn fetch_metadata(&self, topics: &[String]) -> Result<MetadataResponse> {
        let mut client = self.strata(&self.bootstrap)?;
        let req = self.request(MetadataRequest {
            topics: topics.to_vec(),
        });
        let resp = self
            .unary(&self.bootstrap, "metadata", client.metadata(req))
            .await?;
        self.apply(&resp, topics);
        Ok(resp)
    }

    fn apply(&self, resp: &MetadataResponse, asked: &[String]) {
        let mut meta = self.meta.lock();
        meta.answered_by = Some(resp.broker_id);
        for b in &resp.brokers {
            meta.brokers.insert(b.broker_id, b.address.clone());
        }
        if asked.is_empty() {
            meta.topics.clear();
        } else {
            for t in asked {
                meta.topics.remove(t);
            }
        }
        for t in &resp.topics {
            let n = t
                .partitions
                .iter()
                .map(|p| p.partition as usize + 1)
                .max()
                .unwrap_or(0);
            let mut owners = vec![None; n];
            for p in &t.partitions {
                if let Some(slot) = owners.get_mut(p.partition as usize) {
                    *slot = p.owner_broker_id;
                }
            }
            meta.topics.insert(t.name.clone(), TopicMeta { owners });
        }
        meta.overrides
            .retain(|(topic, _), _| !asked.is_empty() && !asked.contains(topic));
        meta.last_refresh = Some(Instant::now());
    }

    /// Refreshes the metadata of `topic`, unless another task did so in the
    /// last few milliseconds.
    pub(crate) async fn refresh(&self, topic: &str) -> Result<()> {
        let started = Instant::now();
        let _guard = self.refreshing.lock().await;
        let recent = self
            .meta
            .lock()
            .last_refresh
            .is_some_and(|t| t >= started || t.elapsed() < MIN_REFRESH_INTERVAL);
        if recent && self.meta.lock().topics.contains_key(topic) {
            return Ok(());
        }
        match self.fetch_metadata(&[topic.to_owned()]).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason() == Some(ErrorReason::UnknownTopic) => {
                self.meta.lock().topics.remove(topic);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The partition count of `topic`, from the cache or a metadata call.
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.cached_partition_count(topic) {
            return Ok(n);
        }
        self.refresh(topic).await?;
        match self.cached_partition_count(topic) {
            Some(n) if n > 0 => Ok(n),
            _ => Err(Error::Broker(ErrorInfo::new(
                ErrorReason::UnknownTopic,
                format!("unknown topic: {topic}"),
            ))),
        }
    }

    pub(crate) fn cached_partition_count(&self, topic: &str) -> Option<u32> {
        self.meta
            .lock()
            .topics
            .get(topic)
            .map(|t| u32::try_from(t.owners.len()).unwrap_or(u32::MAX))
    }

    /// Where to send requests for `topic`/`partition`: the owner if known,
    /// else the bootstrap broker (which answers `NOT_OWNER` with a hint).
    pub(crate) fn owner_address(&self, topic: &str, partition: u32) -> String {
        let meta = self.meta.lock();
        if let Some(addr) = meta.overrides.get(&(topic.to_owned(), partition)) {
            return addr.clone();
        }
        let owner = meta
            .topics
            .get(topic)
            .and_then(|t| t.owners.get(partition as usize).copied().flatten());
        match owner {
            Some(id) if Some(id) == meta.answered_by => self.bootstrap.clone(),
            Some(id) => meta
                .brokers
                .get(&id)
                .filter(|a| !a.is_empty())
                .cloned()
                .unwrap_or_else(|| self.bootstrap.clone()),
            None => self.bootstrap.clone(),
        }
    }

    /// Records the owner named by a `NOT_OWNER` / `FENCED` error.
    pub(crate) fn set_owner(&self, topic: &str, partition: u32, address: String) {
        self.meta
            .lock()
            .overrides
            .insert((topic.to_owned(), partition), address);
    }

    /// Handles an error of a request for `topic`/`partition`: routes to the
    /// owner the error names, or refreshes metadata. Refresh failures are
    /// logged and left for the next attempt.
    pub(crate) async fn on_error(&self, topic: &str, partition: u32, error: &Error) {
        if !error.needs_metadata_refresh() {
            return;
        }
        if let Some(addr) = error
            .broker_info()
            .and_then(|i| i.owner_address.clone())
            .filter(|a| !a.is_empty())
        {
            self.set_owner(topic, partition, addr);
            return;
        }
        if let Err(e) = self.refresh(topic).await {
            tracing::debug!(topic, partition, error = %e, "metadata refresh failed");
        }
    }
}

/// Exponential backoff with jitter: 50 ms doubling to 2 s, or the broker's
/// `retry_after` when it gave one.
pub(crate) fn backoff(attempt: u32, error: &Error) -> Duration {
    if let Some(after) = error.broker_info().and_then(|i| i.retry_after) {
        return after;
    }
    let base = 50u64.saturating_mul(1u64 << attempt.min(6)).min(2_000);
    let jitter = rand::random_range(0..=base / 4);
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let e = Error::Config("x".into());
        assert!(backoff(0, &e) >= Duration::from_millis(50));
        assert!(backoff(0, &e) <= Duration::from_millis(63));
        assert!(backoff(20, &e) <= Duration::from_millis(2_500));
        let e = Error::Broker(
            ErrorInfo::new(ErrorReason::StoreUnavailable, "slow")
                .with_retry_after(Duration::from_millis(321)),
        );
        assert_eq!(backoff(3, &e), Duration::from_millis(321));
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(normalize_url("127.0.0.1:1/"), "http://127.0.0.1:1");
        assert_eq!(normalize_url("https://b:1"), "https://b:1");
        assert!(matches!(
            endpoint("127.0.0.1:50051"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(endpoint("http://127.0.0.1:50051").is_ok());
    }
}
