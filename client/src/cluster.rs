//! Connections and metadata shared by the producer, consumer and admin.
//!
//! [`Cluster`] keeps one gRPC channel per broker address (tonic channels
//! multiplex requests and reconnect by themselves) and a metadata cache:
//! topic → partition count and partition → owner address. Callers ask for an
//! owner, send there, and on `NOT_OWNER` / `FENCED` / `BROKER_UNAVAILABLE`
//! either route to the owner named in the error ([`Cluster::set_owner`]) or
//! refresh ([`Cluster::refresh`]).
//!
//! Requests that any broker can answer (metadata, admin, producer ids) go
//! through [`Cluster::call_any`]: first the broker that answered last (the
//! "home" URL), then the bootstrap URLs, then every broker learned from
//! metadata, until one answers. So the client outlives the bootstrap broker,
//! and a dead broker is tried again only after the live ones failed.
//!
//! The one thing a newcomer must not break: a broker that answered is
//! reached at the URL we used, whatever address it advertises (behind NAT or
//! in a container the advertised one may not route); locks here are
//! `parking_lot` mutexes held only for map lookups, never across an `.await`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connect::AuthChannel as Channel;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use strata_proto::ErrorInfo;
use strata_proto::v1::strata_client::StrataClient;
use strata_proto::v1::{ErrorReason, MetadataRequest, MetadataResponse};

use crate::connect::{ConnectOptions, check_url, innermost, tls_problem};
use crate::error::{Error, Result};

/// Largest gRPC message the client accepts (fetch responses carry up to
/// `max_bytes` plus one batch).
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Metadata refreshes closer together than this are coalesced.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(50);

/// What the client knows about one topic.
#[derive(Debug, Clone, Default)]
struct TopicMeta {
    /// Owner broker id per partition (index = partition number).
    owners: Vec<Option<u32>>,
    /// The largest batch the topic accepts, where the broker says.
    max_batch_bytes: Option<u32>,
}

#[derive(Debug, Default)]
struct MetaCache {
    /// Broker id → the address it advertises (normalised, never empty).
    brokers: HashMap<u32, String>,
    topics: HashMap<String, TopicMeta>,
    /// Broker id → the URL at which it answered a call of ours. Preferred
    /// over the advertised address: we know this one routes.
    reached_at: HashMap<u32, String>,
    /// Owners named by `NOT_OWNER` errors since the last refresh.
    overrides: HashMap<(String, u32), String>,
    last_refresh: Option<Instant>,
}

impl MetaCache {
    /// Records that `url` answered as broker `broker_id` (forgetting any
    /// other broker we thought lived there).
    fn answered(&mut self, broker_id: u32, url: &str) {
        self.reached_at
            .retain(|id, u| *id == broker_id || u.as_str() != url);
        self.reached_at.insert(broker_id, url.to_owned());
    }

    /// Records the address broker `broker_id` advertises.
    fn advertised(&mut self, broker_id: u32, address: &str) {
        if address.trim().is_empty() {
            return;
        }
        self.brokers.insert(broker_id, normalize_url(address));
    }

    /// Where to reach broker `id`, if we know.
    fn address_of(&self, id: u32) -> Option<&String> {
        self.reached_at.get(&id).or_else(|| self.brokers.get(&id))
    }
}

/// Connections to the brokers and the metadata cache.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The URLs the client was started with, normalised, in order.
    bootstrap: Vec<String>,
    /// The URL that answered the last call any broker could answer: tried
    /// first next time, and where requests without a known owner go.
    home: Mutex<String>,
    channels: Mutex<HashMap<String, Channel>>,
    meta: Mutex<MetaCache>,
    /// Serialises metadata refreshes so a burst of errors costs one call.
    refreshing: tokio::sync::Mutex<()>,
    request_timeout: Duration,
    /// TLS (and later credentials) for every connection.
    options: ConnectOptions,
    /// Unit tests: every connection is refused, without touching the
    /// network.
    #[cfg(test)]
    offline: bool,
}

/// `host:port` → `http://host:port`, without a trailing slash.
pub(crate) fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// A bootstrap string (`http://a:1,b:2`) → its normalised, checked,
/// deduplicated URLs.
fn parse_bootstrap(urls: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for part in urls.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let url = normalize_url(part);
        check_url(&url)?;
        if !out.contains(&url) {
            out.push(url);
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidUrl {
            url: urls.to_owned(),
        });
    }
    Ok(out)
}

/// Connects eagerly to `url`; the error names the innermost cause
/// ("connection refused"), or says what to change when TLS failed.
async fn connect_one(url: &str, options: &ConnectOptions) -> Result<Channel> {
    let authorize = options.authorize()?;
    let channel = options.endpoint(url)?.connect().await.map_err(|e| {
        if let Some(problem) = tls_problem(&e) {
            return Error::Tls {
                url: url.to_owned(),
                message: problem,
            };
        }
        Error::Connect {
            url: url.to_owned(),
            message: innermost(&e),
        }
    })?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel, authorize,
    ))
}

/// True when `error` means "this broker cannot answer now, another may":
/// it could not be reached, or refused because it is stopping or starting.
/// A connection lost mid-request only counts for `idempotent` calls, which
/// are safe to send twice.
fn try_another_broker(error: &Error, idempotent: bool) -> bool {
    match error {
        Error::Connect { .. } | Error::InvalidUrl { .. } | Error::Tls { .. } => true,
        Error::Broker(info) => info.reason == ErrorReason::BrokerUnavailable,
        Error::Transport { .. } | Error::Timeout { .. } => idempotent,
        _ => false,
    }
}

/// One error for "no broker answered": when none could be connected to, a
/// [`Error::Connect`] naming every URL tried; else the last error.
fn none_answered(mut failures: Vec<Error>) -> Error {
    let all_connect = failures.iter().all(|e| matches!(e, Error::Connect { .. }));
    if failures.len() > 1 && all_connect {
        let mut urls = Vec::new();
        let mut messages: Vec<String> = Vec::new();
        for e in &failures {
            if let Error::Connect { url, message } = e {
                urls.push(url.as_str());
                if !messages.contains(message) {
                    messages.push(message.clone());
                }
            }
        }
        return Error::Connect {
            url: urls.join(", "),
            message: messages.join(", "),
        };
    }
    failures.pop().unwrap_or_else(|| Error::Connect {
        url: String::new(),
        message: "no broker address known".into(),
    })
}

/// A data-plane client on `channel`.
pub(crate) fn strata_client(channel: Channel) -> StrataClient<Channel> {
    StrataClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl Cluster {
    /// Connects to the bootstrap brokers `urls` (comma-separated; `host:port`
    /// means `http://host:port`) with `options`. Connects eagerly, so wrong
    /// URLs, stopped brokers or TLS mismatches are reported here, not on the
    /// first request; succeeds when any one of them answers.
    pub(crate) async fn connect(
        urls: &str,
        request_timeout: Duration,
        options: &ConnectOptions,
    ) -> Result<Arc<Cluster>> {
        let bootstrap = parse_bootstrap(urls)?;
        let mut attempts: FuturesUnordered<_> = bootstrap
            .iter()
            .map(|url| async move { (url, connect_one(url, options).await) })
            .collect();
        let mut failures = Vec::new();
        let mut connected = None;
        while let Some((url, result)) = attempts.next().await {
            match result {
                Ok(channel) => {
                    connected = Some((url.clone(), channel));
                    break;
                }
                Err(e) => {
                    tracing::debug!(url, error = %e, "bootstrap broker unreachable");
                    failures.push(e);
                }
            }
        }
        drop(attempts);
        let Some((home, channel)) = connected else {
            // Report in the order given.
            failures.sort_by_key(|e| match e {
                Error::Connect { url, .. } => bootstrap.iter().position(|b| b == url),
                _ => None,
            });
            return Err(none_answered(failures));
        };
        let mut channels = HashMap::new();
        channels.insert(home.clone(), channel);
        Ok(Arc::new(Cluster {
            bootstrap,
            home: Mutex::new(home),
            channels: Mutex::new(channels),
            meta: Mutex::new(MetaCache::default()),
            refreshing: tokio::sync::Mutex::new(()),
            request_timeout,
            options: options.clone(),
            #[cfg(test)]
            offline: false,
        }))
    }

    /// A cluster that knows `topics` (name, partition count) and refuses
    /// every connection: for unit tests of what sits on top.
    #[cfg(test)]
    pub(crate) fn for_tests(topics: &[(&str, u32)]) -> Arc<Cluster> {
        let home = "http://127.0.0.1:1".to_owned();
        let mut meta = MetaCache::default();
        for (t, n) in topics {
            let owners = vec![None; *n as usize];
            let max_batch_bytes = None;
            meta.topics.insert(
                (*t).to_owned(),
                TopicMeta {
                    owners,
                    max_batch_bytes,
                },
            );
        }
        Arc::new(Cluster {
            bootstrap: vec![home.clone()],
            home: Mutex::new(home),
            channels: Mutex::new(HashMap::new()),
            meta: Mutex::new(meta),
            refreshing: tokio::sync::Mutex::new(()),
            request_timeout: Duration::from_secs(1),
            options: ConnectOptions::default(),
            offline: true,
        })
    }

    /// The URLs the client was started with.
    pub(crate) fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// The URL of the broker that answered last.
    pub(crate) fn home(&self) -> String {
        self.home.lock().clone()
    }

    /// The channel to `address`, created (lazily connecting) on first use.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel> {
        #[cfg(test)]
        if self.offline {
            return Err(Error::Connect {
                url: address.to_owned(),
                message: "offline (unit test)".into(),
            });
        }
        if let Some(c) = self.channels.lock().get(address) {
            return Ok(c.clone());
        }
        let channel = self.options.channel(address)?;
        Ok(self
            .channels
            .lock()
            .entry(address.to_owned())
            .or_insert(channel)
            .clone())
    }

    /// A data-plane client for `address`.
    pub(crate) fn strata(&self, address: &str) -> Result<StrataClient<Channel>> {
        Ok(strata_client(self.channel(address)?))
    }

    /// Runs a unary call against `address` with the request timeout, mapping
    /// errors.
    pub(crate) async fn unary<T, F>(&self, address: &str, what: &str, call: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
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

    /// The URLs to try for a call any broker can answer, best first: the
    /// last one that answered, the bootstrap URLs, then the brokers learned
    /// from earlier answers.
    fn candidates(&self) -> Vec<String> {
        let mut out = vec![self.home()];
        let mut push = |url: &String| {
            if !out.contains(url) {
                out.push(url.clone());
            }
        };
        self.bootstrap.iter().for_each(&mut push);
        let meta = self.meta.lock();
        let mut known: Vec<(u32, &String)> = meta
            .reached_at
            .iter()
            .chain(meta.brokers.iter())
            .map(|(id, url)| (*id, url))
            .collect();
        known.sort();
        known.into_iter().for_each(|(_, url)| push(url));
        out
    }

    /// Runs a call that any broker can answer: `call` gets a channel and
    /// returns the call's future. Tries [`Cluster::candidates`] in order
    /// while they cannot answer (see `try_another_broker`); returns the
    /// answer and the URL that gave it, which becomes the home URL.
    pub(crate) async fn call_any<T, F, Fut>(
        &self,
        what: &str,
        idempotent: bool,
        mut call: F,
    ) -> Result<(T, String)>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut failures = Vec::new();
        for url in self.candidates() {
            let result = match self.channel(&url) {
                Ok(channel) => self.unary(&url, what, call(channel)).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(answer) => {
                    if !failures.is_empty() {
                        tracing::info!(url, what, "switched to another broker");
                    }
                    *self.home.lock() = url.clone();
                    return Ok((answer, url));
                }
                Err(e) if try_another_broker(&e, idempotent) => {
                    tracing::debug!(url, what, error = %e, "broker cannot answer; trying the next");
                    failures.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(none_answered(failures))
    }

    /// Records that the broker at `url` answered as `broker_id`, and the
    /// addresses other brokers advertise (from any cluster-wide answer).
    pub(crate) fn learn<'a>(
        &self,
        broker_id: u32,
        url: &str,
        brokers: impl IntoIterator<Item = (u32, &'a str)>,
    ) {
        let mut meta = self.meta.lock();
        for (id, address) in brokers {
            meta.advertised(id, address);
        }
        meta.answered(broker_id, url);
    }

    /// Calls Metadata on any broker (for `topics`; empty: all) and returns
    /// the raw answer, updating the cache.
    pub(crate) async fn fetch_metadata(&self, topics: &[String]) -> Result<MetadataResponse> {
        let (resp, url) = self
            .call_any("metadata", true, |channel| {
                let mut client = strata_client(channel);
                let req = self.request(MetadataRequest {
                    topics: topics.to_vec(),
                });
                async move { client.metadata(req).await }
            })
            .await?;
        self.apply(&resp, topics, &url);
        Ok(resp)
    }

    fn apply(&self, resp: &MetadataResponse, asked: &[String], url: &str) {
        self.learn(
            resp.broker_id,
            url,
            resp.brokers
                .iter()
                .map(|b| (b.broker_id, b.address.as_str())),
        );
        let mut meta = self.meta.lock();
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
            let max_batch_bytes = t.max_batch_bytes;
            meta.topics.insert(
                t.name.clone(),
                TopicMeta {
                    owners,
                    max_batch_bytes,
                },
            );
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

    /// The largest batch `topic` accepts, if the brokers said.
    pub(crate) fn cached_max_batch_bytes(&self, topic: &str) -> Option<u32> {
        self.meta
            .lock()
            .topics
            .get(topic)
            .and_then(|t| t.max_batch_bytes)
    }

    /// Where to send requests for `topic`/`partition`: the owner if known
    /// (at the URL it answered us at, else the address it advertises), else
    /// the home broker (which answers `NOT_OWNER` with a hint).
    pub(crate) fn owner_address(&self, topic: &str, partition: u32) -> String {
        let meta = self.meta.lock();
        if let Some(addr) = meta.overrides.get(&(topic.to_owned(), partition)) {
            return addr.clone();
        }
        let owner = meta
            .topics
            .get(topic)
            .and_then(|t| t.owners.get(partition as usize).copied().flatten())
            .and_then(|id| meta.address_of(id).cloned());
        drop(meta);
        owner.unwrap_or_else(|| self.home())
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
            self.set_owner(topic, partition, normalize_url(&addr));
            return;
        }
        if let Err(e) = self.refresh(topic).await {
            tracing::debug!(topic, partition, error = %e, "metadata refresh failed");
        }
    }
}

/// Exponential backoff with jitter: 50 ms doubling to 500 ms (a partition
/// that failed over is served again within a heartbeat timeout; a longer
/// cap would add up to itself to every failover), or the broker's
/// `retry_after` when it gave one.
pub(crate) fn backoff(attempt: u32, error: &Error) -> Duration {
    if let Some(after) = error.broker_info().and_then(|i| i.retry_after) {
        return after;
    }
    let base = 50u64.saturating_mul(1u64 << attempt.min(6)).min(500);
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
    fn bootstrap_lists_parse() {
        assert_eq!(
            parse_bootstrap("http://a:1, b:2/,,http://a:1").unwrap(),
            vec!["http://a:1".to_owned(), "http://b:2".to_owned()]
        );
        assert!(matches!(
            parse_bootstrap(" , "),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_bootstrap("http://a:1,ftp://b:2"),
            Err(Error::InvalidUrl { url }) if url == "ftp://b:2"
        ));
    }

    #[test]
    fn failover_only_when_another_broker_can_help() {
        let connect = Error::Connect {
            url: "http://a:1".into(),
            message: "connection refused".into(),
        };
        assert!(try_another_broker(&connect, false));
        let lost = Error::Transport {
            url: "http://a:1".into(),
            message: "connection reset".into(),
        };
        assert!(try_another_broker(&lost, true));
        assert!(!try_another_broker(&lost, false), "not safe to send twice");
        let stopping = Error::Broker(ErrorInfo::new(ErrorReason::BrokerUnavailable, "stopping"));
        assert!(try_another_broker(&stopping, false));
        let unknown = Error::Broker(ErrorInfo::new(ErrorReason::UnknownTopic, "t"));
        assert!(!try_another_broker(&unknown, true));
    }

    #[test]
    fn none_answered_names_every_url() {
        let e = none_answered(vec![
            Error::Connect {
                url: "http://a:1".into(),
                message: "connection refused".into(),
            },
            Error::Connect {
                url: "http://b:2".into(),
                message: "connection refused".into(),
            },
        ]);
        assert_eq!(
            e.to_string(),
            "cannot connect to broker http://a:1, http://b:2: connection refused; is `strata serve` running there?"
        );
    }

    #[test]
    fn answering_url_wins_over_advertised_address() {
        let mut meta = MetaCache::default();
        meta.advertised(1, "10.0.0.1:50051");
        meta.advertised(2, "");
        assert_eq!(meta.address_of(1).unwrap(), "http://10.0.0.1:50051");
        assert_eq!(meta.address_of(2), None);
        meta.answered(1, "http://lb:1");
        assert_eq!(meta.address_of(1).unwrap(), "http://lb:1");
        // The same URL now answers as another broker.
        meta.answered(2, "http://lb:1");
        assert_eq!(meta.address_of(1).unwrap(), "http://10.0.0.1:50051");
        assert_eq!(meta.address_of(2).unwrap(), "http://lb:1");
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(normalize_url("127.0.0.1:1/"), "http://127.0.0.1:1");
        assert_eq!(normalize_url("https://b:1"), "https://b:1");
        assert!(matches!(
            check_url("127.0.0.1:50051"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(check_url("http://127.0.0.1:50051").is_ok());
    }
}
