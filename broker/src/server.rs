//! `strata serve`: the broker's lifecycle.
//!
//! [`run`] loads the configuration ([`crate::config`]), initialises
//! logging, [`start`]s a broker, prints the ready line on stdout, and on
//! SIGTERM / Ctrl-C shuts it down gracefully (a second signal exits at
//! once, non-zero).
//!
//! [`start`] is the in-process API (tests, and the coming cluster work):
//! it reads the TLS files when `[tls]` is set (see [`crate::tls`]; a file
//! that cannot be used stops the start), binds the listeners first (so "address in use" fails fast, naming
//! the flag to change), resolves `broker_id = "auto"` by claiming the
//! lowest free id in the bucket (released again if the start fails; see
//! [`cluster::broker_id`]), opens the store and the storage engine, starts the
//! admin HTTP endpoint, the gRPC services (Strata, Admin, health) and the
//! maintenance task, opens the existing topics' partitions in the
//! background and marks the broker ready. [`start_with_store`] does the
//! same on an object store the caller built (tests wrap one in a fault
//! injector).
//!
//! When the engine's WAL writer stops (a store outage longer than
//! `wal.flush_timeout`, fencing), the maintenance task restarts the storage
//! as a new incarnation without restarting the process: see
//! [`crate::restart`].
//!
//! Graceful shutdown ([`RunningBroker::shutdown`]), bounded by
//! `shutdown_timeout`: not ready + health `NOT_SERVING`; new produces get
//! `BROKER_UNAVAILABLE`; fetch streams end; the gRPC server stops
//! accepting and waits for in-flight requests (their acks); every
//! partition is released (tails sealed, owner-less manifests), the engine
//! shuts down, then the HTTP endpoint stops.
//!
//! The one thing not to break: the ready line is printed exactly once, to
//! stdout, after both listeners are bound and the engine is open
//! (end-to-end tests parse it; its URLs say `https://` with TLS).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStore;
use strata_proto::v1::admin_server::AdminServer;
use strata_proto::v1::cluster_server::ClusterServer;
use strata_proto::v1::groups_server::GroupsServer;
use strata_proto::v1::security_server::SecurityServer;
use strata_proto::v1::strata_server::StrataServer;
use strata_storage::engine::Engine;
use strata_storage::keys::BrokerId;
use strata_storage::store::{RetryConfig, RetryStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::config::{BrokerConfig, BrokerIdSetting, LogFormat, Overrides};
use crate::service::admin::AdminService;
use crate::service::cluster::ClusterService;
use crate::service::groups::GroupsService;
use crate::service::security::SecurityService;
use crate::service::strata::StrataService;
use crate::service::{Advertised, Identity, Shared, now_ms};
use crate::tls::ListenerTls;
use crate::{cluster, http, maintenance, store_url};

/// Flags of `strata serve`. Every setting can also come from the TOML file
/// and from `STRATA_*` variables (`STRATA_DATA_DIR`, `STRATA_STORE`,
/// `STRATA_GRPC_ADDR`, `STRATA_HTTP_ADDR`, `STRATA_BROKER_ID`,
/// `STRATA_LOG__SEGMENT_BYTES`, ...); flags win over both.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Local directory for the default bucket and the hot tier
    /// [default: ./strata-data; env: STRATA_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The bucket URL: file:///path, file://relative, memory://,
    /// s3://bucket/prefix [default: file://{data-dir}/bucket; env: STRATA_STORE].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:50051; env: STRATA_GRPC_ADDR].
    #[arg(long, value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Metrics and health HTTP listen address [default: 127.0.0.1:9464;
    /// env: STRATA_HTTP_ADDR].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Kafka wire-protocol listen address, for Kafka clients'
    /// `bootstrap.servers` [default: 127.0.0.1:9092; env: STRATA_KAFKA_ADDR].
    #[arg(long, value_name = "ADDR")]
    pub kafka_addr: Option<SocketAddr>,
    /// This broker's id: a number unique in the cluster, or `auto` to
    /// claim the lowest id no live broker holds (for autoscaled fleets)
    /// [default: 0; env: STRATA_BROKER_ID].
    #[arg(long, value_name = "ID|auto")]
    pub broker_id: Option<BrokerIdSetting>,
    /// Require authentication (SASL on Kafka, credentials or a client
    /// certificate on gRPC) and allow only what ACLs allow
    /// [env: STRATA_AUTH__ENABLED=true].
    #[arg(long)]
    pub auth: bool,
    /// A user allowed everything, whatever the ACLs say; repeat for more
    /// [env: STRATA_AUTH__SUPER_USERS=alice,bob].
    #[arg(long = "super-user", value_name = "NAME")]
    pub super_users: Vec<String>,
    /// Serve TLS on every listener with this PEM certificate chain (needs
    /// --tls-key; reloaded when the file changes) [env: STRATA_TLS__CERT].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert [env: STRATA_TLS__KEY].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Ask clients for certificates signed by these PEM CA certificates
    /// (mTLS; required unless tls.client_auth = "requested")
    /// [env: STRATA_TLS__CLIENT_CA].
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            store: self.store.clone(),
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            kafka_addr: self.kafka_addr,
            broker_id: self.broker_id,
            auth: self.auth,
            super_users: self.super_users.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
        }
    }
}

/// Runs a broker until SIGTERM / Ctrl-C, then shuts it down gracefully.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = BrokerConfig::load(args.config.as_deref(), std::env::vars(), &args.overrides())?;
    init_tracing(config.log_format);
    let broker = start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", broker.ready_line()).context("cannot write the ready line")?;
        out.flush().context("cannot flush the ready line")?;
    }
    tokio::select! {
        () = wait_for_signal() => tracing::info!(
            "shutdown signal received; draining and shutting down gracefully (signal again to exit at once)"
        ),
        () = broker.shared.drain_requested.cancelled() => tracing::info!(
            "drain requested by an operator (strata cluster drain); draining and shutting down gracefully"
        ),
        () = broker.shared.id_lost.cancelled() => anyhow::bail!(
            "broker id {} was claimed by another broker while this one could not heartbeat \
             (for longer than cluster.forget_dead_after); exiting without a drain, its partitions \
             have moved already; start it again to claim a free id",
            broker.shared.broker_id
        ),
    }
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("strata: second signal, exiting at once");
        std::process::exit(130);
    });
    broker.shutdown().await
}

/// Logs to stderr; filter from `RUST_LOG` or `STRATA_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("STRATA_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    r = tokio::signal::ctrl_c() => { let _ = r; }
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The in-process broker API.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// See [`start`].
    pub async fn start(config: BrokerConfig) -> anyhow::Result<RunningBroker> {
        start(config).await
    }
}

/// A started broker. Dropping it without [`RunningBroker::shutdown`] leaves
/// its tasks running until the runtime ends.
#[derive(Debug)]
pub struct RunningBroker {
    shared: Arc<Shared>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    kafka_addr: SocketAddr,
    /// `https` when the listeners serve TLS, else `http`.
    scheme: &'static str,
    store_url: String,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_task: JoinHandle<std::io::Result<()>>,
    kafka_task: JoinHandle<()>,
    http_stop: CancellationToken,
    maintenance_stop: CancellationToken,
    maintenance_task: JoinHandle<()>,
    groups_task: JoinHandle<()>,
    auth_task: JoinHandle<()>,
    cluster_stop: CancellationToken,
    cluster_task: JoinHandle<()>,
}

async fn bind(addr: SocketAddr, what: &str, flag: &str, env: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "the address is in use (is another broker running?)"
        } else {
            "cannot bind it"
        };
        anyhow::anyhow!(
            "cannot listen for {what} on {addr}: {hint}: {e}; choose another address with {flag} (or {env})"
        )
    })
}

/// Starts a broker: see the module docs. Port 0 in the addresses picks
/// free ports; [`RunningBroker::grpc_addr`] tells which.
pub async fn start(mut config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    config.resolve();
    config.validate()?;
    let store_url = config.store_url();
    let store = store_url::open(&store_url)
        .with_context(|| format!("cannot open the store {store_url}"))?;
    let store = store_url::with_latency(store, &config.store_latency);
    start_on(config, store, store_url).await
}

/// [`start`] on `store` instead of the configured store URL (`store` in the
/// configuration is ignored); `store_name` names it in logs, errors and the
/// ready line.
pub async fn start_with_store(
    mut config: BrokerConfig,
    store: Arc<dyn ObjectStore>,
    store_name: &str,
) -> anyhow::Result<RunningBroker> {
    config.resolve();
    config.validate()?;
    start_on(config, store, store_name.to_string()).await
}

/// [`start`] once the configuration is resolved and the store open.
async fn start_on(
    config: BrokerConfig,
    store: Arc<dyn ObjectStore>,
    store_url: String,
) -> anyhow::Result<RunningBroker> {
    // The TLS files first: a broker whose files cannot be used does not start.
    let tls = ListenerTls::load(&config.tls)
        .await
        .context("cannot start with the TLS settings (tls.*)")?;
    let peer_options = crate::tls::peer::connect_options(&config.tls)
        .context("cannot start with the TLS settings for calls to other brokers (tls.*)")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let grpc_listener = bind(config.grpc_addr, "gRPC", "--grpc-addr", "STRATA_GRPC_ADDR").await?;
    let http_listener = bind(config.http_addr, "HTTP", "--http-addr", "STRATA_HTTP_ADDR").await?;
    let kafka_listener = bind(
        config.kafka_addr,
        "Kafka",
        "--kafka-addr",
        "STRATA_KAFKA_ADDR",
    )
    .await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .context("gRPC listener address")?;
    let kafka_addr = kafka_listener
        .local_addr()
        .context("Kafka listener address")?;
    let kafka_advertised_addr = match &config.kafka_advertised_addr {
        Some(a) => a.clone(),
        None => {
            let mut a = kafka_addr;
            if a.ip().is_unspecified() {
                tracing::warn!(%kafka_addr, "Kafka listener on all interfaces: advertising loopback; set kafka_advertised_addr so that Kafka clients on other hosts can reach this broker");
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            a.to_string()
        }
    };
    let advertised_addr = match &config.advertised_addr {
        Some(a) => a.clone(),
        None => {
            let mut a = grpc_addr;
            if a.ip().is_unspecified() {
                tracing::warn!(%grpc_addr, "listening on all interfaces: advertising loopback; set advertised_addr so that other hosts can reach this broker");
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("{scheme}://{a}")
        }
    };

    let identity = resolve_broker_id(&config, &store, &store_url, &advertised_addr).await?;
    let claim = identity.claim.clone();
    let started = serve(
        config,
        identity,
        store,
        store_url,
        Listeners {
            grpc: grpc_listener,
            http: http_listener,
            kafka: kafka_listener,
            tls,
            peer_options,
        },
        Advertised {
            grpc: advertised_addr,
            http: String::new(),
            kafka: kafka_advertised_addr,
        },
    )
    .await;
    if started.is_err()
        && let Some(claim) = claim
    {
        // Do not keep an id this process will never use (a crash loop
        // would otherwise claim a new one on every attempt).
        claim.release().await;
    }
    started
}

/// The three bound listeners, their TLS, and how to call other brokers.
struct Listeners {
    grpc: TcpListener,
    http: TcpListener,
    kafka: TcpListener,
    tls: Option<ListenerTls>,
    peer_options: strata_client::ConnectOptions,
}

/// Logs a loud warning when a listener is reachable beyond loopback while
/// authentication is off (`/metrics` shows it too:
/// `strata_auth_enabled 0`, `strata_exposed_without_auth 1`).
fn warn_if_exposed(shared: &Shared, bound: &[SocketAddr]) {
    if shared.config.auth.enabled {
        return;
    }
    let exposed: Vec<String> = bound
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    if exposed.is_empty() {
        return;
    }
    shared
        .metrics
        .exposed_without_auth
        .store(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(
        listeners = %exposed.join(", "),
        "AUTHENTICATION IS OFF on listeners reachable beyond loopback: anyone who can reach them can \
         read, write and delete every topic and stop the cluster. Start with --auth (auth.enabled = true) \
         and create users with `strata user add`; see the README's Security section"
    );
}

/// The broker's id: the configured number, or for `broker_id = "auto"` the
/// lowest free id, claimed in the bucket (see [`cluster::broker_id`]).
async fn resolve_broker_id(
    config: &BrokerConfig,
    store: &Arc<dyn ObjectStore>,
    store_url: &str,
    advertised_addr: &str,
) -> anyhow::Result<Identity> {
    if let BrokerIdSetting::Fixed(id) = config.broker_id {
        return Ok(Identity {
            id: BrokerId(id),
            claim: None,
        });
    }
    let store: Arc<dyn ObjectStore> =
        Arc::new(RetryStore::new(store.clone(), RetryConfig::default()));
    let claim = cluster::broker_id::claim(&store, &config.cluster, advertised_addr, now_ms())
        .await
        .with_context(|| {
            format!("cannot claim a broker id (broker_id = \"auto\") in {store_url}")
        })?;
    match claim.took_over() {
        Some(previous) => tracing::info!(
            broker = %claim.id(),
            previous = %previous.address,
            "claimed broker id {} (broker_id = \"auto\"): its previous broker is gone for longer than cluster.forget_dead_after",
            claim.id()
        ),
        None => {
            tracing::info!(broker = %claim.id(), "claimed broker id {} (broker_id = \"auto\")", claim.id())
        }
    }
    Ok(Identity {
        id: claim.id(),
        claim: Some(claim),
    })
}

/// [`start_on`] once the listeners are bound and the id resolved.
async fn serve(
    mut config: BrokerConfig,
    identity: Identity,
    store: Arc<dyn ObjectStore>,
    store_url: String,
    listeners: Listeners,
    advertised: Advertised,
) -> anyhow::Result<RunningBroker> {
    let Listeners {
        grpc: grpc_listener,
        http: http_listener,
        kafka: kafka_listener,
        tls,
        peer_options,
    } = listeners;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let grpc_addr = grpc_listener
        .local_addr()
        .context("gRPC listener address")?;
    let kafka_addr = kafka_listener
        .local_addr()
        .context("Kafka listener address")?;
    let http_addr = http_listener
        .local_addr()
        .context("HTTP listener address")?;
    let broker_id = identity.id;
    // From here on the configuration names the id in use.
    config.broker_id = BrokerIdSetting::Fixed(broker_id.0);
    cluster::broker_id::check_free(&store, broker_id, &config.cluster)
        .await
        .with_context(|| format!("cannot start broker {broker_id}"))?;
    let engine = Engine::open(store.clone(), &store_url, broker_id, config.engine_config())
        .await
        .with_context(|| format!("cannot start the storage engine on {store_url}"))?;
    let http_url = {
        let mut a = http_addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("{scheme}://{a}")
    };
    let max_request = config.max_request_bytes();
    let (health, health_service) = tonic_health::server::health_reporter();
    let shared = Shared::new(
        config,
        identity,
        Advertised {
            http: http_url,
            ..advertised
        },
        store,
        store_url.clone(),
        engine,
        health.clone(),
    );
    shared.cluster.set_peer_options(peer_options);

    shared
        .auth
        .load()
        .await
        .context("cannot load the ACLs and the cluster secret (auth.enabled is on)")?;
    if shared.auth.enabled() {
        // Other brokers know this one by the cluster secret.
        let secret = shared.auth.cluster_secret().await?;
        let header = crate::auth::grpc::cluster_header(secret);
        if let Some(authorize) = strata_client::Authorize::header(&header) {
            shared.cluster.set_peer_authorize(authorize);
        }
    }
    warn_if_exposed(&shared, &[grpc_addr, kafka_addr, http_addr]);

    // HTTP first, so /readyz answers "starting" meanwhile.
    let http_stop = CancellationToken::new();
    let http_task = {
        let stop = http_stop.clone();
        let app = http::router(shared.clone());
        let incoming = crate::tls::incoming::incoming(
            TcpIncoming::from(http_listener),
            tls.as_ref().map(|t| t.http.clone()),
            http_addr,
            "HTTP",
        );
        tokio::spawn(async move {
            axum::serve(incoming, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };

    shared.set_serving(false).await;
    let strata = StrataServer::new(StrataService::new(shared.clone()))
        .max_decoding_message_size(max_request);
    let admin =
        AdminServer::new(AdminService::new(shared.clone())).max_decoding_message_size(max_request);
    let cluster_service = ClusterServer::new(ClusterService::new(shared.clone()));
    let groups_service = GroupsServer::new(GroupsService::new(shared.clone()));
    let security_service = SecurityServer::new(SecurityService::new(shared.clone()));
    let limits = shared.config.grpc.clone();
    let incoming = crate::tls::incoming::incoming(
        crate::connections::limit(
            TcpIncoming::from(grpc_listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(limits.keepalive_interval)),
            limits.max_connections,
        ),
        tls.as_ref().map(|t| t.grpc.clone()),
        grpc_addr,
        "gRPC",
    );
    let grpc_task = {
        let stop = shared.shutdown.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .max_concurrent_streams(limits.max_streams_per_connection)
                .http2_keepalive_interval(Some(limits.keepalive_interval))
                .http2_keepalive_timeout(Some(limits.keepalive_timeout))
                .timeout(limits.request_timeout)
                .layer(tower::util::MapResponseLayer::new(
                    crate::error::fix_oversized_request,
                ))
                .layer(crate::auth::grpc::Authenticate::new(shared.clone()))
                .add_service(health_service)
                .add_service(strata)
                .add_service(admin)
                .add_service(cluster_service)
                .add_service(groups_service)
                .add_service(security_service)
                .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
        )
    };

    let kafka_task = tokio::spawn(crate::kafka::serve(
        kafka_listener,
        shared.clone(),
        tls.map(|t| t.kafka),
    ));

    let maintenance_stop = CancellationToken::new();
    let maintenance_task = tokio::spawn(maintenance::run(shared.clone(), maintenance_stop.clone()));
    let groups_task = tokio::spawn(crate::groups::run(shared.clone(), maintenance_stop.clone()));
    let auth_task = tokio::spawn(crate::auth::follow_acls(
        shared.clone(),
        maintenance_stop.clone(),
    ));

    // Join the cluster: publish a heartbeat, then follow (or, as the
    // controller, write) the partition assignment; the partitions assigned
    // here are claimed in the background.
    cluster::write_heartbeat(&shared).await;
    let cluster_stop = CancellationToken::new();
    let cluster_task = tokio::spawn(cluster::run(shared.clone(), cluster_stop.clone()));
    let joined = tokio::time::timeout(shared.config.cluster.heartbeat_timeout * 2, async {
        while shared.cluster.assignment().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    if joined.is_err() {
        tracing::warn!(
            "no partition assignment yet (is the controller slow?); serving anyway, requests get NOT_OWNER until one arrives"
        );
    }

    shared.set_ready(true);
    shared.set_serving(true).await;
    tracing::info!(broker = shared.broker_id.0, %grpc_addr, %http_addr, %kafka_addr, store = %store_url, "broker ready");
    Ok(RunningBroker {
        shared,
        grpc_addr,
        http_addr,
        kafka_addr,
        scheme,
        store_url,
        grpc_task,
        http_task,
        kafka_task,
        http_stop,
        maintenance_stop,
        maintenance_task,
        groups_task,
        auth_task,
        cluster_stop,
        cluster_task,
    })
}

impl RunningBroker {
    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound Kafka listener address.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }

    /// The gRPC URL clients connect to (`http://{bound address}`, or
    /// `https://` with TLS).
    pub fn grpc_url(&self) -> String {
        format!("{}://{}", self.scheme, self.grpc_addr)
    }

    /// The admin HTTP URL (`http://{bound address}`, or `https://` with
    /// TLS).
    pub fn http_url(&self) -> String {
        format!("{}://{}", self.scheme, self.http_addr)
    }

    /// The store URL.
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// The state shared by the services (for tests and embedding).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The line `strata serve` prints on stdout once ready:
    /// `strata: serving broker=<id> grpc=http://<addr> http=http://<addr> store=<url> kafka=<addr>`
    /// (`https://` with TLS; the Kafka listener then speaks TLS too).
    pub fn ready_line(&self) -> String {
        format!(
            "strata: serving broker={} grpc={} http={} store={} kafka={}",
            self.shared.broker_id.0,
            self.grpc_url(),
            self.http_url(),
            self.store_url,
            self.kafka_addr
        )
    }

    /// Graceful shutdown (see the module docs), bounded by
    /// `shutdown_timeout`. Acknowledged data is safe even when it times out:
    /// the next owner recovers unsealed tails from the WAL.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let timeout = self.shared.config.shutdown_timeout;
        let http_stop = self.http_stop.clone();
        let drained = tokio::time::timeout(timeout, self.drain()).await;
        http_stop.cancel();
        match drained {
            Ok(r) => r,
            Err(_) => anyhow::bail!(
                "graceful shutdown did not finish within shutdown_timeout ({}); unsealed tails are recovered from the WAL by the next owner",
                humantime::format_duration(timeout)
            ),
        }
    }

    async fn drain(self) -> anyhow::Result<()> {
        let shared = self.shared;
        shared.set_ready(false);
        // Move the partitions to other brokers while still serving them, so
        // clients follow them instead of waiting for this broker; keep a
        // share of the timeout for the rest of the shutdown.
        let timeout = shared.config.shutdown_timeout;
        cluster::drain(&shared, std::time::Instant::now() + timeout.mul_f64(0.8)).await;
        shared.set_serving(false).await;
        // Refuse produces, end fetch streams, stop accepting, finish
        // in-flight requests.
        shared.shutdown.cancel();
        match self.grpc_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        }
        let _ = self.kafka_task.await;
        self.maintenance_stop.cancel();
        let _ = self.maintenance_task.await;
        let _ = self.groups_task.await;
        let _ = self.auth_task.await;
        shared.partitions.release_all().await;
        self.cluster_stop.cancel();
        let _ = self.cluster_task.await;
        cluster::leave(&shared).await;
        if let Some(engine) = shared.partitions.take_engine() {
            engine.shutdown().await;
        }
        self.http_stop.cancel();
        match self.http_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
        }
        tracing::info!("broker stopped");
        Ok(())
    }
}
