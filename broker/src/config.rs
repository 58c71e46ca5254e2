//! Broker settings: one serde struct, [`BrokerConfig`], with defaults for
//! the embedded single-process setup, loaded in one precedence order:
//!
//! ```text
//! defaults < TOML file (--config / STRATA_CONFIG) < STRATA_* environment < flags
//! ```
//!
//! Environment variables map onto keys generically: `STRATA_<KEY>` for a
//! top-level key (`STRATA_BROKER_ID`, `STRATA_DATA_DIR`, `STRATA_STORE`,
//! `STRATA_GRPC_ADDR`, `STRATA_HTTP_ADDR`, ...) and `STRATA_<SECTION>__<KEY>`
//! for a key of a section (`STRATA_LOG__SEGMENT_BYTES=1048576`,
//! `STRATA_WAL__MIN_INTERVAL=2ms`). A value is parsed as a TOML scalar
//! (number, boolean) when the key is not a string key, else taken as a
//! string. Variables whose first part is not a key of this struct
//! (`STRATA_CONFIG`, `STRATA_LOG` the log filter, the CLI's variables) are
//! ignored here.
//!
//! Every error names the key and where the value came from. The storage
//! sections (`wal`, `log`, `hot_tier`) are the storage engine's own structs
//! and are validated by the engine's `validate()`s.
//!
//! Derived defaults are resolved after all layers, so `STRATA_DATA_DIR`
//! moves them too: `store` defaults to `file://{data_dir}/bucket` and
//! `hot_tier.disk_dir` to `{data_dir}/cache` (set it to `""` to cache in
//! memory only).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use strata_storage::engine::EngineConfig;
use strata_storage::gc::GcConfig;
use strata_storage::hot_tier::HotTierConfig;
use strata_storage::log::LogConfig;
use strata_storage::wal::WalConfig;

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "STRATA_";

/// Extra bytes a produce request may carry beyond `log.max_batch_bytes`
/// (protobuf framing, topic name): the gRPC decoding limit is the sum.
pub const REQUEST_OVERHEAD_BYTES: usize = 64 * 1024;

/// How the broker writes its logs (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Limits and defaults of fetch requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// Bytes per response when the request says 0. Larger responses mean
    /// fewer round trips for consumers catching up, more memory per stream.
    pub max_bytes: u32,
    /// Upper bound on a request's `max_bytes`. Keep it below the clients'
    /// gRPC decoding limit (tonic's default is 4 MiB).
    pub max_bytes_limit: u32,
    /// Long-poll wait when the request says 0. Longer waits mean fewer
    /// empty responses, slower detection of a dead stream.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Upper bound on a request's `max_wait_ms`.
    #[serde(with = "humantime_serde")]
    pub max_wait_limit: Duration,
    /// Fetch streams served at once; more are refused (retryably). Each
    /// holds up to a few responses of `max_bytes` while its consumer is
    /// slow, so this bounds the memory that consumers which stop reading
    /// can pin.
    pub max_streams: usize,
}

/// The Kafka wire-protocol listener: limits and Kafka-compatible defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`);
    /// a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// Open connections; more are closed as they arrive.
    pub max_connections: usize,
    /// Close a connection that sent no request for this long (Kafka's
    /// `connections.max.idle.ms`).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Create a topic a Kafka client produces to or asks metadata for when
    /// it does not exist (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an automatically created topic (Kafka's
    /// `num.partitions`).
    pub default_partitions: u32,
    /// Node ids each broker shows a Kafka client that announces librdkafka
    /// 2.4 or later (ApiVersions v3+); other clients see one per broker
    /// (see [`crate::kafka::metadata::NodeIds`]). Broker `b`'s are `b * n`
    /// to `b * n + n - 1`, all at its address, its partitions spread over
    /// them: the client opens one connection per node id and keeps at most
    /// 5 produce requests (one partition each) in flight on it, so at an
    /// object store's latency an idempotent producer with small batches
    /// gets more in flight. 1 (the default) turns it off: each extra
    /// connection costs the client a thread that polls while it waits, and
    /// where clients share cores with the broker or the store that costs
    /// more than it brings (README, *Kafka producers at object-store
    /// latency*).
    pub node_ids_per_broker: u32,
}

/// Most node ids one broker may show (`kafka.node_ids_per_broker`).
pub const MAX_NODE_IDS_PER_BROKER: u32 = 64;

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 100 << 20,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(600),
            auto_create_topics: true,
            default_partitions: 1,
            node_ids_per_broker: 1,
        }
    }
}

/// Benchmarks only: every store request waits a random time, to measure a
/// broker at an object store's latency on a local disk
/// (`crate::store_url::with_latency`). Off (`max = 0`) by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreLatencyConfig {
    /// Shortest added wait.
    #[serde(with = "humantime_serde")]
    pub min: Duration,
    /// Longest added wait (drawn uniformly from `min..=max`); 0: off.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Fraction of requests that also wait `spike` (S3's slow tail).
    pub spike_rate: f64,
    /// The extra wait of a spike.
    #[serde(with = "humantime_serde")]
    pub spike: Duration,
}

impl StoreLatencyConfig {
    /// S3-like, as the storage benchmark emulates it: 20–60 ms, 1% of
    /// requests 200 ms more.
    pub fn s3_like() -> Self {
        Self {
            min: Duration::from_millis(20),
            max: Duration::from_millis(60),
            spike_rate: 0.01,
            spike: Duration::from_millis(200),
        }
    }

    /// True when requests are delayed.
    pub fn is_on(&self) -> bool {
        !self.max.is_zero()
    }

    /// Refuses settings that cannot be meant.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.min > self.max {
            bail!(
                "invalid setting store_latency: min ({}) is above max ({})",
                humantime::format_duration(self.min),
                humantime::format_duration(self.max)
            );
        }
        if !(0.0..=1.0).contains(&self.spike_rate) {
            bail!(
                "invalid setting store_latency.spike_rate: must be between 0 and 1, got {}",
                self.spike_rate
            );
        }
        Ok(())
    }
}

/// Authentication and authorization (see `crate::auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require every client to authenticate (SASL on the Kafka listener,
    /// credentials or a client certificate on gRPC) and allow only what
    /// ACLs allow. Off by default, for loopback use: turn it on before
    /// listening beyond loopback.
    pub enabled: bool,
    /// Users allowed everything, whatever the ACLs say (`alice` or
    /// `User:alice`); a list, or names separated by commas (env
    /// `STRATA_AUTH__SUPER_USERS=alice,bob`).
    #[serde(deserialize_with = "list_or_commas")]
    pub super_users: Vec<String>,
}

/// A list of strings, or one string of comma-separated items.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Limits of the gRPC listener: what a careless or hostile client can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Open connections; more are closed as they arrive.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (requests) per connection.
    pub max_streams_per_connection: u32,
    /// Ping an idle connection this often; shorter finds dead clients (and
    /// frees their streams) sooner, at a little traffic.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Close a connection whose ping is not answered within this.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Longest a request may take to be answered (a fetch stream's first
    /// response counts, not the stream's life).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_streams_per_connection: 256,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_bytes_limit: (4 << 20) - (64 << 10),
            max_wait: Duration::from_millis(500),
            max_wait_limit: Duration::from_secs(30),
            max_streams: 2048,
        }
    }
}

/// Whether a TLS listener asks clients for a certificate (`tls.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client must present a certificate signed by `tls.client_ca`
    /// (mTLS); the default when `client_ca` is set.
    Required,
    /// A client may present one (it is verified, and names the client's
    /// principal); clients without one are served too.
    Requested,
}

/// TLS on every listener (gRPC, Kafka, admin HTTP) and in the calls
/// brokers make to each other (DESIGN §12). Off unless `cert` and `key`
/// are set. The files are PEM; they are read at start (a broker with
/// unreadable or invalid files does not start) and again when they change,
/// so renewed certificates are served to new connections without a
/// restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The broker's certificate chain, its own certificate first
    /// (`--tls-cert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (`--tls-key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// CA certificates that sign client certificates (`--tls-client-ca`).
    /// Set: clients present certificates (see `client_auth`), and a
    /// verified certificate's subject CN (else its first DNS name) is the
    /// connection's principal. Brokers then present `cert` to each other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// `required` (default when `client_ca` is set) or `requested`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// CA certificates this broker trusts when it calls other brokers.
    /// Default: `client_ca` if set (one CA for the whole cluster), else
    /// the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// True when the listeners serve TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }

    /// Checks that the settings go together, naming the keys. The files
    /// are read (and checked) when the broker starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.cert, &self.key) {
            (Some(_), None) => bail!(
                "invalid setting tls.cert: it is set but tls.key is not; give the certificate's \
                 private key too (--tls-key, STRATA_TLS__KEY), or unset tls.cert to serve without TLS"
            ),
            (None, Some(_)) => bail!(
                "invalid setting tls.key: it is set but tls.cert is not; give the certificate too \
                 (--tls-cert, STRATA_TLS__CERT), or unset tls.key to serve without TLS"
            ),
            _ => {}
        }
        if !self.enabled() {
            for (set, key) in [
                (self.client_ca.is_some(), "tls.client_ca"),
                (self.client_auth.is_some(), "tls.client_auth"),
                (self.peer_ca.is_some(), "tls.peer_ca"),
            ] {
                if set {
                    bail!(
                        "invalid setting {key}: TLS is off; set tls.cert and tls.key \
                         (--tls-cert, --tls-key) to turn it on"
                    );
                }
            }
        }
        if self.client_auth.is_some() && self.client_ca.is_none() {
            bail!(
                "invalid setting tls.client_auth: client certificates are verified against \
                 tls.client_ca, which is not set; set it (--tls-client-ca)"
            );
        }
        Ok(())
    }

    /// The effective `client_auth`: `None` when clients are not asked for
    /// a certificate.
    pub fn client_auth(&self) -> Option<ClientAuth> {
        self.client_ca
            .as_ref()
            .map(|_| self.client_auth.unwrap_or(ClientAuth::Required))
    }
}

/// How brokers sharing a bucket find each other and share partitions
/// (DESIGN §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often a broker writes its heartbeat and re-reads the cluster
    /// state (members, controller, assignment). Shorter reacts faster, at
    /// a few more store requests per broker per interval.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A broker whose heartbeat did not change for this long is dead: its
    /// partitions are taken over (its WAL fenced). Failover takes about
    /// this long; too short risks taking over from a broker that is only
    /// slow (safe, but it costs the broker a restart of its storage).
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// How long a new owner waits for a live previous owner to release a
    /// partition during a move before fencing it anyway.
    #[serde(with = "humantime_serde")]
    pub release_timeout: Duration,
    /// A dead broker is listed (alive = no) in `strata cluster status` for
    /// this long; then the controller deletes its heartbeat. Longer keeps
    /// the evidence of a crash in view; shorter keeps the list and the
    /// per-interval heartbeat reads small when brokers come and go with
    /// new ids. At least `heartbeat_timeout`.
    #[serde(with = "humantime_serde")]
    pub forget_dead_after: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(6),
            release_timeout: Duration::from_secs(30),
            forget_dead_after: Duration::from_secs(600),
        }
    }
}

/// Consumer groups and their coordinators (DESIGN §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Partitions of `__consumer_offsets`, used when the first group
    /// creates it (later changes have no effect). More spreads
    /// coordinators over more brokers; each costs an open partition.
    pub offsets_partitions: u32,
    /// A member that does not heartbeat for this long leaves the group
    /// and its partitions go to the others. Shorter reacts to crashes
    /// sooner; longer rides out longer pauses (GC, deploys). Members may
    /// ask for their own between `min_session_timeout` and
    /// `max_session_timeout`.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Lower bound of a member's session timeout.
    #[serde(with = "humantime_serde")]
    pub min_session_timeout: Duration,
    /// Upper bound of a member's session timeout.
    #[serde(with = "humantime_serde")]
    pub max_session_timeout: Duration,
    /// How long a member may take to give up partitions it was asked to
    /// revoke before it is removed from the group (when it does not ask
    /// for its own).
    #[serde(with = "humantime_serde")]
    pub rebalance_timeout: Duration,
    /// How often members heartbeat once their assignment is complete
    /// (heartbeats cost no store request). Shorter makes rebalances
    /// start sooner, at more requests to the coordinator.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Committed offsets of a group without members are deleted this
    /// long after it became empty (or after its last commit, if later);
    /// Kafka's `offsets.retention.minutes`.
    #[serde(with = "humantime_serde")]
    pub offsets_retention: Duration,
    /// Most members of one group.
    pub max_members: usize,
    /// Most bytes of metadata kept with a committed offset (Kafka's
    /// `offset.metadata.max.bytes`).
    pub max_metadata_bytes: usize,
    /// A coordinator snapshots its state after this many records, and
    /// the log below the previous snapshot is deleted: loading a
    /// coordinator replays at most about twice this many. Lower loads
    /// faster after a failover, at a snapshot PUT more often.
    pub snapshot_records: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_partitions: 16,
            session_timeout: Duration::from_secs(45),
            min_session_timeout: Duration::from_secs(1),
            max_session_timeout: Duration::from_secs(300),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(2),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            max_members: 1000,
            max_metadata_bytes: 4096,
            snapshot_records: 10_000,
        }
    }
}

impl GroupConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.offsets_partitions == 0 || self.offsets_partitions > 1000 {
            bail!(
                "invalid setting group.offsets_partitions: must be between 1 and 1000, got {}",
                self.offsets_partitions
            );
        }
        if self.min_session_timeout.is_zero()
            || self.min_session_timeout > self.session_timeout
            || self.session_timeout > self.max_session_timeout
        {
            bail!(
                "invalid setting group.session_timeout: must be above 0 and between \
                 group.min_session_timeout and group.max_session_timeout ({} <= {} <= {})",
                humantime::format_duration(self.min_session_timeout),
                humantime::format_duration(self.session_timeout),
                humantime::format_duration(self.max_session_timeout)
            );
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            bail!(
                "invalid setting group.heartbeat_interval: must be above 0 and below \
                 group.session_timeout, got {}",
                humantime::format_duration(self.heartbeat_interval)
            );
        }
        if self.rebalance_timeout.is_zero() {
            bail!("invalid setting group.rebalance_timeout: must be above 0");
        }
        if self.max_members == 0 {
            bail!("invalid setting group.max_members: must be at least 1");
        }
        if self.snapshot_records < 10 {
            bail!(
                "invalid setting group.snapshot_records: must be at least 10, got {}",
                self.snapshot_records
            );
        }
        Ok(())
    }
}

/// The `broker_id` setting: a fixed number, or `"auto"`.
///
/// `auto` is resolved once, at start, before anything uses the id: the
/// broker claims the lowest free id in the bucket (see
/// [`crate::cluster::broker_id`]); at run time a broker always has a
/// number ([`crate::service::Shared::broker_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerIdSetting {
    /// This number, given by the operator; unique within a cluster.
    Fixed(u32),
    /// Claim the lowest id no live broker holds (autoscaled fleets).
    Auto,
}

impl Default for BrokerIdSetting {
    fn default() -> Self {
        Self::Fixed(0)
    }
}

impl From<u32> for BrokerIdSetting {
    fn from(id: u32) -> Self {
        Self::Fixed(id)
    }
}

impl std::fmt::Display for BrokerIdSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(id) => write!(f, "{id}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// What a `broker_id` value must look like, for error messages.
const BROKER_ID_EXPECTED: &str =
    "a broker id is a number from 0 to 4294967295, or \"auto\" to claim a free one in the bucket";

impl std::str::FromStr for BrokerIdSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        s.parse()
            .map(Self::Fixed)
            .map_err(|_| format!("{BROKER_ID_EXPECTED}, got {s:?}"))
    }
}

impl Serialize for BrokerIdSetting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(id) => serializer.serialize_u32(*id),
            Self::Auto => serializer.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for BrokerIdSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = BrokerIdSetting;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(BROKER_ID_EXPECTED)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(BrokerIdSetting::Fixed)
                    .map_err(|_| E::custom(format!("{BROKER_ID_EXPECTED}, got {v}")))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(BrokerIdSetting::Fixed)
                    .map_err(|_| E::custom(format!("{BROKER_ID_EXPECTED}, got {v}")))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Every setting of a broker. See the module docs for how it is loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id, unique within a cluster: a number, or `"auto"` to
    /// claim the lowest id no live broker holds (ids of brokers gone for
    /// `cluster.forget_dead_after` are reused). Fixed ids suit hand-run
    /// clusters; `auto` suits autoscaled ones, where instances come and go.
    pub broker_id: BrokerIdSetting,
    /// Local directory for the default `file://` bucket and the hot tier's
    /// disk cache. Only a cache when `store` points elsewhere.
    pub data_dir: PathBuf,
    /// The bucket, as a URL: `file:///abs/path`, `file://relative/path`,
    /// `memory://`, `s3://bucket/prefix`. Default: `file://{data_dir}/bucket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// gRPC listen address. Port 0 picks a free port.
    pub grpc_addr: SocketAddr,
    /// HTTP (metrics, health) listen address. Port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// The gRPC address clients are told to use (metadata). Default:
    /// `http://{bound grpc address}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_addr: Option<String>,
    /// Kafka wire-protocol listen address. Port 0 picks a free port.
    pub kafka_addr: SocketAddr,
    /// The Kafka address (`host:port`) Kafka clients are told to use
    /// (metadata). Default: the bound Kafka address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_advertised_addr: Option<String>,
    /// How long a graceful shutdown may take before the broker gives up
    /// waiting (acknowledged data is safe either way; a longer timeout lets
    /// more tails be sealed cleanly).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Log output format: `text` or `json`.
    pub log_format: LogFormat,
    /// Fetch defaults and limits.
    pub fetch: FetchConfig,
    /// gRPC listener limits.
    pub grpc: GrpcConfig,
    /// Kafka listener limits and defaults.
    pub kafka: KafkaConfig,
    /// How often partitions are maintained (time-based sealing). Shorter
    /// intervals seal closer to `log.segment_ms`, at a little CPU.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// The longest wait between attempts to start a new storage
    /// incarnation after the WAL writer stopped (a store outage, fencing);
    /// waits start at 100ms and double. Shorter recovers sooner once the
    /// store is back, at more requests to a store that is still down.
    #[serde(with = "humantime_serde")]
    pub storage_restart_backoff: Duration,
    /// Membership, failover and moves.
    pub cluster: ClusterConfig,
    /// Write-ahead log (see `strata_storage::wal::WalConfig`).
    pub wal: WalConfig,
    /// Default per-partition log settings; topics override some of them.
    pub log: LogConfig,
    /// Block cache of sealed segments (memory + local disk).
    pub hot_tier: HotTierConfig,
    /// Bucket garbage collection (run by the controller).
    pub gc: GcConfig,
    /// Consumer groups.
    pub group: GroupConfig,
    /// Authentication and ACLs.
    pub auth: AuthConfig,
    /// Benchmarks only: emulated store latency.
    pub store_latency: StoreLatencyConfig,
    /// TLS on the listeners and between brokers.
    pub tls: TlsConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            broker_id: BrokerIdSetting::Fixed(0),
            data_dir: PathBuf::from("./strata-data"),
            store: None,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            advertised_addr: None,
            kafka_addr: SocketAddr::from(([127, 0, 0, 1], 9092)),
            kafka_advertised_addr: None,
            shutdown_timeout: Duration::from_secs(30),
            log_format: LogFormat::Text,
            fetch: FetchConfig::default(),
            grpc: GrpcConfig::default(),
            kafka: KafkaConfig::default(),
            maintenance_interval: Duration::from_secs(1),
            storage_restart_backoff: Duration::from_secs(5),
            cluster: ClusterConfig::default(),
            wal: WalConfig::default(),
            log: LogConfig::default(),
            hot_tier: HotTierConfig::default(),
            gc: GcConfig::default(),
            group: GroupConfig::default(),
            auth: AuthConfig::default(),
            store_latency: StoreLatencyConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// Values given as command-line flags (the last layer).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--store`.
    pub store: Option<String>,
    /// `--grpc-addr`.
    pub grpc_addr: Option<SocketAddr>,
    /// `--http-addr`.
    pub http_addr: Option<SocketAddr>,
    /// `--kafka-addr`.
    pub kafka_addr: Option<SocketAddr>,
    /// `--broker-id`.
    pub broker_id: Option<BrokerIdSetting>,
    /// `--auth`.
    pub auth: bool,
    /// `--super-user` (repeatable): added to `auth.super_users`.
    pub super_users: Vec<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca`.
    pub tls_client_ca: Option<PathBuf>,
}

/// Top-level keys that hold strings: environment values for them are never
/// parsed as TOML numbers or booleans.
const STRING_KEYS: &[&str] = &[
    "data_dir",
    "store",
    "grpc_addr",
    "http_addr",
    "advertised_addr",
    "kafka_addr",
    "kafka_advertised_addr",
    "shutdown_timeout",
    "log_format",
    "maintenance_interval",
    "storage_restart_backoff",
];

/// Keys of sections that hold strings (file paths): environment values for
/// them are never parsed as TOML numbers or booleans.
const SECTION_STRING_KEYS: &[&str] = &[
    "tls.cert",
    "tls.key",
    "tls.client_ca",
    "tls.client_auth",
    "tls.peer_ca",
];

/// Top-level keys (fields and sections) of [`BrokerConfig`].
const TOP_LEVEL_KEYS: &[&str] = &[
    "broker_id",
    "data_dir",
    "store",
    "grpc_addr",
    "http_addr",
    "advertised_addr",
    "kafka_addr",
    "kafka_advertised_addr",
    "shutdown_timeout",
    "log_format",
    "fetch",
    "grpc",
    "kafka",
    "maintenance_interval",
    "storage_restart_backoff",
    "cluster",
    "wal",
    "log",
    "hot_tier",
    "gc",
    "group",
    "auth",
    "store_latency",
    "tls",
];

impl BrokerConfig {
    /// Loads the configuration: defaults, then the TOML file at `file` (if
    /// any), then `STRATA_*` variables from `env`, then `flags`; resolves
    /// derived defaults and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> anyhow::Result<Self> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "cannot read the config file {}; fix the path given by --config or STRATA_CONFIG",
                        path.display()
                    )
                })?;
                Self::from_toml(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Self::default(),
        };
        config = config.merge_env(env)?;
        config.apply(flags);
        config.resolve();
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document over the defaults; the error names the key.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        // `HotTierConfig` (a storage struct) accepts unknown keys; refuse
        // typos here so they do not pass silently.
        let table: toml::Table = toml::from_str(text)?;
        if let Some(section) = table.get("hot_tier").and_then(toml::Value::as_table) {
            for key in section.keys() {
                check_hot_tier_key(key)?;
            }
        }
        Ok(config)
    }

    /// Applies every `STRATA_*` variable of `env` whose first part names a
    /// key of this struct. The error names the variable.
    pub fn merge_env(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        let mut tree = toml::Value::try_from(&self).context("cannot encode the configuration")?;
        let mut config = self;
        for (var, raw) in vars {
            let Some(path) = env_key_path(&var) else {
                continue;
            };
            if !TOP_LEVEL_KEYS.contains(&path[0].as_str())
                || lookup(&tree, &path).is_some_and(toml::Value::is_table)
            {
                // Not a setting (`STRATA_CONFIG`, `STRATA_LOG` the log
                // filter, a section as a whole, the CLI's variables).
                continue;
            }
            let dotted = path.join(".");
            if path.len() == 2 && path[0] == "hot_tier" {
                check_hot_tier_key(&path[1])
                    .with_context(|| format!("environment variable {var}"))?;
            }
            let default_is_string = lookup(&tree, &path).is_some_and(toml::Value::is_str)
                || (path.len() == 1 && STRING_KEYS.contains(&path[0].as_str()))
                || SECTION_STRING_KEYS.contains(&dotted.as_str());
            let value = if default_is_string {
                toml::Value::String(raw.clone())
            } else {
                parse_scalar(&raw)
            };
            let mut candidate = tree.clone();
            insert(&mut candidate, &path, value).with_context(|| {
                format!("environment variable {var}: {dotted} is not a section key")
            })?;
            config = candidate.clone().try_into().map_err(|e: toml::de::Error| {
                anyhow::anyhow!(
                    "environment variable {var}={raw:?} sets {dotted}: {}",
                    e.message().trim()
                )
            })?;
            tree = candidate;
        }
        Ok(config)
    }

    /// Applies command-line flags.
    pub fn apply(&mut self, flags: &Overrides) {
        if let Some(v) = &flags.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = &flags.store {
            self.store = Some(v.clone());
        }
        if let Some(v) = flags.grpc_addr {
            self.grpc_addr = v;
        }
        if let Some(v) = flags.http_addr {
            self.http_addr = v;
        }
        if let Some(v) = flags.kafka_addr {
            self.kafka_addr = v;
        }
        if let Some(v) = flags.broker_id {
            self.broker_id = v;
        }
        if flags.auth {
            self.auth.enabled = true;
        }
        for u in &flags.super_users {
            if !self.auth.super_users.contains(u) {
                self.auth.super_users.push(u.clone());
            }
        }
        if let Some(v) = &flags.tls_cert {
            self.tls.cert = Some(v.clone());
        }
        if let Some(v) = &flags.tls_key {
            self.tls.key = Some(v.clone());
        }
        if let Some(v) = &flags.tls_client_ca {
            self.tls.client_ca = Some(v.clone());
        }
    }

    /// Fills in the defaults derived from `data_dir` and the store.
    pub fn resolve(&mut self) {
        if self.store.as_deref().is_none_or(str::is_empty) {
            self.store = Some(format!("file://{}", self.data_dir.join("bucket").display()));
        }
        if self.wal.min_interval.is_none() {
            // The cost policy: requests to a local disk or memory are free.
            let free = ["file:", "memory:"]
                .iter()
                .any(|scheme| self.store_url().starts_with(scheme));
            self.wal.min_interval = Some(if free {
                strata_storage::wal::DEFAULT_MIN_INTERVAL
            } else {
                strata_storage::wal::MIN_INTERVAL_PAID_STORE
            });
        }
        match &self.hot_tier.disk_dir {
            None => self.hot_tier.disk_dir = Some(self.data_dir.join("cache")),
            Some(p) if p.as_os_str().is_empty() => self.hot_tier.disk_dir = None,
            Some(_) => {}
        }
    }

    /// The store URL (after [`BrokerConfig::resolve`]).
    pub fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("file://{}", self.data_dir.join("bucket").display()))
    }

    /// The storage engine's settings.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            wal: self.wal.clone(),
            log: self.log.clone(),
            hot_tier: self.hot_tier.clone(),
            ..EngineConfig::default()
        }
    }

    /// The gRPC decoding limit: the largest batch plus framing.
    pub fn max_request_bytes(&self) -> usize {
        self.log
            .max_batch_bytes
            .saturating_add(REQUEST_OVERHEAD_BYTES)
    }

    /// Checks every section; the error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.wal.validate()?;
        self.log.validate()?;
        self.hot_tier.validate()?;
        self.gc.validate()?;
        self.group.validate()?;
        self.store_latency.validate()?;
        let f = &self.fetch;
        if f.max_bytes == 0 || f.max_bytes > f.max_bytes_limit {
            bail!(
                "invalid setting fetch.max_bytes: must be between 1 and fetch.max_bytes_limit ({}), got {}",
                f.max_bytes_limit,
                f.max_bytes
            );
        }
        if f.max_wait.is_zero() || f.max_wait > f.max_wait_limit {
            bail!(
                "invalid setting fetch.max_wait: must be above 0 and at most fetch.max_wait_limit ({}), got {}",
                humantime::format_duration(f.max_wait_limit),
                humantime::format_duration(f.max_wait)
            );
        }
        if self.shutdown_timeout.is_zero() {
            bail!("invalid setting shutdown_timeout: must be above 0");
        }
        if self.maintenance_interval < Duration::from_millis(10) {
            bail!(
                "invalid setting maintenance_interval: must be at least 10ms, got {}",
                humantime::format_duration(self.maintenance_interval)
            );
        }
        if self.storage_restart_backoff < Duration::from_millis(10) {
            bail!(
                "invalid setting storage_restart_backoff: must be at least 10ms, got {}",
                humantime::format_duration(self.storage_restart_backoff)
            );
        }
        let c = &self.cluster;
        if c.heartbeat_interval < Duration::from_millis(10) {
            bail!(
                "invalid setting cluster.heartbeat_interval: must be at least 10ms, got {}",
                humantime::format_duration(c.heartbeat_interval)
            );
        }
        if c.heartbeat_timeout < c.heartbeat_interval * 2 {
            bail!(
                "invalid setting cluster.heartbeat_timeout: must be at least twice cluster.heartbeat_interval ({}), got {}",
                humantime::format_duration(c.heartbeat_interval),
                humantime::format_duration(c.heartbeat_timeout)
            );
        }
        if c.forget_dead_after < c.heartbeat_timeout {
            bail!(
                "invalid setting cluster.forget_dead_after: must be at least cluster.heartbeat_timeout ({}), got {}",
                humantime::format_duration(c.heartbeat_timeout),
                humantime::format_duration(c.forget_dead_after)
            );
        }
        if let Some(a) = &self.advertised_addr
            && !(a.starts_with("http://") || a.starts_with("https://"))
        {
            bail!(
                "invalid setting advertised_addr: must be a URL like http://host:port, got {a:?}"
            );
        }
        if let Some(a) = &self.kafka_advertised_addr
            && (a.contains("://")
                || a.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err()))
        {
            bail!(
                "invalid setting kafka_advertised_addr: must be host:port (no scheme), got {a:?}"
            );
        }
        let k = &self.kafka;
        if k.max_frame_bytes < 1024 {
            bail!(
                "invalid setting kafka.max_frame_bytes: must be at least 1024, got {}",
                k.max_frame_bytes
            );
        }
        if k.node_ids_per_broker == 0 || k.node_ids_per_broker > MAX_NODE_IDS_PER_BROKER {
            bail!(
                "invalid setting kafka.node_ids_per_broker: must be between 1 and \
                 {MAX_NODE_IDS_PER_BROKER}, got {}",
                k.node_ids_per_broker
            );
        }
        if let BrokerIdSetting::Fixed(id) = self.broker_id {
            // Kafka node ids are i32: broker b shows b*n .. b*n+n-1.
            let last = (u64::from(id) + 1) * u64::from(k.node_ids_per_broker) - 1;
            if last > i32::MAX as u64 {
                bail!(
                    "invalid setting broker_id: {id} times kafka.node_ids_per_broker ({}) \
                     is beyond Kafka's node ids (i32); use a smaller broker_id or \
                     kafka.node_ids_per_broker = 1",
                    k.node_ids_per_broker
                );
            }
        }
        if k.default_partitions == 0 || k.default_partitions > crate::topics::MAX_PARTITIONS {
            bail!(
                "invalid setting kafka.default_partitions: must be between 1 and {}, got {}",
                crate::topics::MAX_PARTITIONS,
                k.default_partitions
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            bail!("invalid setting data_dir: must not be empty");
        }
        self.tls.validate()?;
        Ok(())
    }
}

/// Keys of the `hot_tier` section.
const HOT_TIER_KEYS: &[&str] = &[
    "memory_bytes",
    "disk_dir",
    "disk_bytes",
    "block_bytes",
    "read_ahead_blocks",
];

fn check_hot_tier_key(key: &str) -> anyhow::Result<()> {
    if HOT_TIER_KEYS.contains(&key) {
        Ok(())
    } else {
        bail!(
            "unknown key hot_tier.{key}; the hot_tier section takes {}",
            HOT_TIER_KEYS.join(", ")
        )
    }
}

/// `STRATA_LOG__SEGMENT_BYTES` -> `["log", "segment_bytes"]`.
fn env_key_path(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return None;
    }
    Some(parts)
}

fn parse_scalar(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc)
        .ok()
        .and_then(|mut t| t.remove("v"))
    {
        Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => v,
        _ => toml::Value::String(raw.to_string()),
    }
}

fn lookup<'a>(tree: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter().try_fold(tree, |v, k| v.get(k.as_str()))
}

fn insert(tree: &mut toml::Value, path: &[String], value: toml::Value) -> Option<()> {
    let (last, parents) = path.split_last()?;
    let mut node = tree;
    for k in parents {
        let table = node.as_table_mut()?;
        node = table
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    node.as_table_mut()?.insert(last.clone(), value);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    /// The cost policy's default follows the store: small flushes wait
    /// `MIN_INTERVAL_PAID_STORE` on a store that bills per request, and
    /// only the free default on a local disk or in memory; an explicit
    /// setting wins everywhere.
    #[test]
    fn min_interval_default_follows_the_store() {
        let load = |vars: &[(&str, &str)]| {
            BrokerConfig::load(None, env(vars), &Overrides::default()).expect("load")
        };
        let file = load(&[]);
        assert_eq!(
            file.wal.min_interval,
            Some(strata_storage::wal::DEFAULT_MIN_INTERVAL)
        );
        let s3 = load(&[("STRATA_STORE", "s3://bucket/prefix")]);
        assert_eq!(
            s3.wal.min_interval,
            Some(strata_storage::wal::MIN_INTERVAL_PAID_STORE)
        );
        assert!(
            strata_storage::wal::MIN_INTERVAL_PAID_STORE
                > strata_storage::wal::DEFAULT_MIN_INTERVAL
        );
        let memory = load(&[("STRATA_STORE", "memory://")]);
        assert_eq!(
            memory.wal.min_interval,
            Some(strata_storage::wal::DEFAULT_MIN_INTERVAL)
        );
        let explicit = load(&[
            ("STRATA_STORE", "s3://bucket/prefix"),
            ("STRATA_WAL__MIN_INTERVAL", "5ms"),
        ]);
        assert_eq!(explicit.wal.min_interval, Some(Duration::from_millis(5)));
    }

    #[test]
    fn store_latency_is_off_by_default_and_set_from_file_or_env() {
        assert!(!BrokerConfig::default().store_latency.is_on());
        let c = BrokerConfig::from_toml("[store_latency]\nmin = \"20ms\"\nmax = \"60ms\"\nspike_rate = 0.01\nspike = \"200ms\"\n")
            .expect("parse");
        assert_eq!(c.store_latency, StoreLatencyConfig::s3_like());
        let c = BrokerConfig::default()
            .merge_env([("STRATA_STORE_LATENCY__MAX".to_owned(), "5ms".to_owned())])
            .expect("env");
        assert_eq!(c.store_latency.max, Duration::from_millis(5));
        let mut bad = BrokerConfig::default();
        bad.store_latency.min = Duration::from_millis(9);
        bad.store_latency.max = Duration::from_millis(5);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = BrokerConfig::load(None, env(&[]), &Overrides::default()).expect("defaults load");
        assert_eq!(c.broker_id, BrokerIdSetting::Fixed(0));
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:9464");
        assert_eq!(c.store_url(), "file://./strata-data/bucket");
        assert_eq!(
            c.hot_tier.disk_dir.as_deref(),
            Some(Path::new("./strata-data/cache"))
        );
        assert_eq!(c.fetch.max_bytes, 1 << 20);
        assert_eq!(c.fetch.max_wait, Duration::from_millis(500));
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("strata.toml");
        std::fs::write(
            &file,
            "broker_id = 1\ndata_dir = \"/from-file\"\nhttp_addr = \"127.0.0.1:1111\"\n\
             [log]\nsegment_bytes = 2097152\n[wal]\nmin_interval = \"7ms\"\n",
        )
        .expect("write config");
        let vars = env(&[
            ("STRATA_BROKER_ID", "2"),
            ("STRATA_DATA_DIR", "/from-env"),
            ("STRATA_LOG__SEGMENT_BYTES", "1048576"),
            ("STRATA_WAL__MIN_INTERVAL", "2ms"),
            ("STRATA_CONFIG", "ignored"),
            ("STRATA_LOG", "debug"),
            ("STRATA_BROKERS", "http://client-setting"),
            ("OTHER", "x"),
        ]);
        let flags = Overrides {
            broker_id: Some(3.into()),
            ..Overrides::default()
        };
        let c = BrokerConfig::load(Some(&file), vars, &flags).expect("load");
        assert_eq!(
            c.broker_id,
            BrokerIdSetting::Fixed(3),
            "flag beats env and file"
        );
        assert_eq!(c.data_dir, PathBuf::from("/from-env"), "env beats file");
        assert_eq!(
            c.http_addr.to_string(),
            "127.0.0.1:1111",
            "file beats default"
        );
        assert_eq!(c.log.segment_bytes, 1 << 20);
        assert_eq!(c.wal.min_interval, Some(Duration::from_millis(2)));
        assert_eq!(
            c.store_url(),
            "file:///from-env/bucket",
            "derived after env"
        );
        assert_eq!(
            c.hot_tier.disk_dir.as_deref(),
            Some(Path::new("/from-env/cache"))
        );
    }

    #[test]
    fn errors_name_key_and_source() {
        let err = BrokerConfig::load(
            None,
            env(&[("STRATA_LOG__SEGMENT_BYTES", "lots")]),
            &Overrides::default(),
        )
        .expect_err("bad env value");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("STRATA_LOG__SEGMENT_BYTES") && msg.contains("log.segment_bytes"),
            "{msg}"
        );

        let err = BrokerConfig::load(
            None,
            env(&[("STRATA_WAL__NO_SUCH_KEY", "1")]),
            &Overrides::default(),
        )
        .expect_err("unknown nested key");
        assert!(format!("{err:#}").contains("STRATA_WAL__NO_SUCH_KEY"));

        let err = BrokerConfig::from_toml("brokr_id = 1").expect_err("unknown key");
        assert!(format!("{err:#}").contains("brokr_id"), "{err:#}");

        let err = BrokerConfig::load(
            None,
            env(&[("STRATA_LOG__SEGMENT_BYTES", "10")]),
            &Overrides::default(),
        )
        .expect_err("too small");
        assert!(format!("{err:#}").contains("log.segment_bytes"), "{err:#}");
        let err = BrokerConfig::load(
            None,
            env(&[("STRATA_LOG__SEGMENT_BYTES", "8589934592")]),
            &Overrides::default(),
        )
        .expect_err("too large: a tail over 4 GiB could never seal");
        assert!(format!("{err:#}").contains("1 GiB"), "{err:#}");
        let err = BrokerConfig::load(
            None,
            env(&[("STRATA_GC__GRACE", "5s")]),
            &Overrides::default(),
        )
        .expect_err("a grace too short to be safe");
        assert!(format!("{err:#}").contains("gc.grace"), "{err:#}");

        let err = BrokerConfig::load(
            None,
            env(&[("STRATA_CLUSTER__FORGET_DEAD_AFTER", "1s")]),
            &Overrides::default(),
        )
        .expect_err("shorter than the heartbeat timeout");
        assert!(
            format!("{err:#}").contains("cluster.forget_dead_after: must be at least"),
            "{err:#}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[fetch]\nmax_wait = \"soon\"\n").expect("write");
        let err =
            BrokerConfig::load(Some(&file), env(&[]), &Overrides::default()).expect_err("bad file");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("bad.toml") && msg.contains("max_wait"),
            "{msg}"
        );
    }

    #[test]
    fn broker_id_is_a_number_or_auto_everywhere() {
        let c = BrokerConfig::from_toml("broker_id = \"auto\"").expect("auto in TOML");
        assert_eq!(c.broker_id, BrokerIdSetting::Auto);
        let c = BrokerConfig::from_toml("broker_id = 7").expect("a number in TOML");
        assert_eq!(c.broker_id, BrokerIdSetting::Fixed(7));
        let c = BrokerConfig::load(
            None,
            env(&[("STRATA_BROKER_ID", "auto")]),
            &Overrides::default(),
        )
        .expect("auto from the environment");
        assert_eq!(c.broker_id, BrokerIdSetting::Auto);
        // A number in the environment beats "auto" in the file.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, "broker_id = \"auto\"\n").expect("write config");
        let c = BrokerConfig::load(
            Some(&file),
            env(&[("STRATA_BROKER_ID", "4")]),
            &Overrides::default(),
        )
        .expect("load");
        assert_eq!(c.broker_id, BrokerIdSetting::Fixed(4));
        assert_eq!("AUTO".parse(), Ok(BrokerIdSetting::Auto));
        assert_eq!("12".parse(), Ok(BrokerIdSetting::Fixed(12)));
        assert_eq!(BrokerIdSetting::Auto.to_string(), "auto");
        // Round trip through the tree the environment layer edits.
        let tree = toml::Value::try_from(BrokerConfig {
            broker_id: BrokerIdSetting::Auto,
            ..BrokerConfig::default()
        })
        .expect("encode");
        assert_eq!(
            tree.get("broker_id").and_then(toml::Value::as_str),
            Some("auto")
        );

        for (bad, shown) in [("broker_id = \"any\"", "\"any\""), ("broker_id = -1", "-1")] {
            let err = BrokerConfig::from_toml(bad).expect_err("invalid");
            let msg = format!("{err:#}");
            assert!(msg.contains("\"auto\"") && msg.contains(shown), "{msg}");
        }
        let err = BrokerConfig::load(
            None,
            env(&[("STRATA_BROKER_ID", "first")]),
            &Overrides::default(),
        )
        .expect_err("invalid");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("STRATA_BROKER_ID") && msg.contains("\"auto\""),
            "{msg}"
        );
        let err = "4294967296"
            .parse::<BrokerIdSetting>()
            .expect_err("too large");
        assert!(err.contains("4294967295"), "{err}");
    }

    #[test]
    fn string_keys_stay_strings() {
        let c = BrokerConfig::load(
            None,
            env(&[("STRATA_DATA_DIR", "1234"), ("STRATA_STORE", "memory://")]),
            &Overrides::default(),
        )
        .expect("load");
        assert_eq!(c.data_dir, PathBuf::from("1234"));
        assert_eq!(c.store_url(), "memory://");
    }

    #[test]
    fn kafka_settings_come_from_env_and_are_checked() {
        let env = [
            ("STRATA_KAFKA_ADDR".to_string(), "0.0.0.0:19092".to_string()),
            (
                "STRATA_KAFKA_ADVERTISED_ADDR".to_string(),
                "10.0.0.7:9092".to_string(),
            ),
            (
                "STRATA_KAFKA__DEFAULT_PARTITIONS".to_string(),
                "6".to_string(),
            ),
        ];
        let c = BrokerConfig::load(None, env, &Overrides::default()).expect("load");
        assert_eq!(c.kafka_addr.to_string(), "0.0.0.0:19092");
        assert_eq!(c.kafka_advertised_addr.as_deref(), Some("10.0.0.7:9092"));
        assert_eq!(c.kafka.default_partitions, 6);
        for (k, v, needle) in [
            (
                "STRATA_KAFKA_ADVERTISED_ADDR",
                "http://h:9092",
                "kafka_advertised_addr",
            ),
            (
                "STRATA_KAFKA__DEFAULT_PARTITIONS",
                "0",
                "kafka.default_partitions",
            ),
            (
                "STRATA_KAFKA__MAX_FRAME_BYTES",
                "10",
                "kafka.max_frame_bytes",
            ),
            (
                "STRATA_KAFKA__NODE_IDS_PER_BROKER",
                "0",
                "kafka.node_ids_per_broker",
            ),
            (
                "STRATA_KAFKA__NODE_IDS_PER_BROKER",
                "65",
                "kafka.node_ids_per_broker",
            ),
        ] {
            let err = BrokerConfig::load(
                None,
                [(k.to_string(), v.to_string())],
                &Overrides::default(),
            )
            .expect_err("invalid");
            assert!(format!("{err:#}").contains(needle), "{err:#}");
        }
        // Node ids are Kafka's i32: a fixed broker id must leave room.
        let err = BrokerConfig::load(
            None,
            [
                ("STRATA_BROKER_ID".to_string(), "1000000000".to_string()),
                (
                    "STRATA_KAFKA__NODE_IDS_PER_BROKER".to_string(),
                    "4".to_string(),
                ),
            ],
            &Overrides::default(),
        )
        .expect_err("node ids beyond i32");
        assert!(
            format!("{err:#}").contains("node_ids_per_broker"),
            "{err:#}"
        );
    }

    #[test]
    fn tls_settings_come_from_everywhere_and_go_together() {
        let c = BrokerConfig::load(
            None,
            env(&[
                ("STRATA_TLS__CERT", "/etc/strata/broker.pem"),
                ("STRATA_TLS__KEY", "123"),
                ("STRATA_TLS__CLIENT_AUTH", "requested"),
            ]),
            &Overrides {
                tls_client_ca: Some("/etc/strata/ca.pem".into()),
                ..Overrides::default()
            },
        )
        .expect("load");
        assert!(c.tls.enabled());
        assert_eq!(
            c.tls.cert.as_deref(),
            Some(Path::new("/etc/strata/broker.pem"))
        );
        assert_eq!(
            c.tls.key.as_deref(),
            Some(Path::new("123")),
            "paths stay strings"
        );
        assert_eq!(c.tls.client_auth(), Some(ClientAuth::Requested));
        let c = BrokerConfig::from_toml(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n",
        )
        .expect("toml");
        assert_eq!(
            c.tls.client_auth(),
            Some(ClientAuth::Required),
            "the default"
        );
        assert_eq!(BrokerConfig::default().tls.client_auth(), None);

        for (vars, flags, needles) in [
            (
                vec![("STRATA_TLS__CERT", "c.pem")],
                Overrides::default(),
                vec!["tls.cert", "tls.key", "--tls-key"],
            ),
            (
                vec![],
                Overrides {
                    tls_key: Some("k.pem".into()),
                    ..Overrides::default()
                },
                vec!["tls.key", "tls.cert", "--tls-cert"],
            ),
            (
                vec![("STRATA_TLS__CLIENT_CA", "ca.pem")],
                Overrides::default(),
                vec!["tls.client_ca", "TLS is off"],
            ),
            (
                vec![
                    ("STRATA_TLS__CERT", "c.pem"),
                    ("STRATA_TLS__KEY", "k.pem"),
                    ("STRATA_TLS__CLIENT_AUTH", "required"),
                ],
                Overrides::default(),
                vec!["tls.client_auth", "tls.client_ca"],
            ),
        ] {
            let err = BrokerConfig::load(None, env(&vars), &flags).expect_err("invalid");
            let msg = format!("{err:#}");
            for n in needles {
                assert!(msg.contains(n), "{n}: {msg}");
            }
        }
        let err = BrokerConfig::load(
            None,
            env(&[("STRATA_TLS__CLIENT_AUTH", "sometimes")]),
            &Overrides::default(),
        )
        .expect_err("bad value");
        assert!(
            format!("{err:#}").contains("STRATA_TLS__CLIENT_AUTH"),
            "{err:#}"
        );
    }

    #[test]
    fn top_level_keys_match_the_struct() {
        let c = BrokerConfig {
            store: Some("x".into()),
            advertised_addr: Some("x".into()),
            kafka_advertised_addr: Some("x:1".into()),
            ..BrokerConfig::default()
        };
        let tree = toml::Value::try_from(&c).expect("encode");
        let mut keys: Vec<&str> = tree
            .as_table()
            .expect("table")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut expected = TOP_LEVEL_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }
}
