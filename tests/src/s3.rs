//! The S3-compatible test fixture.
//!
//! [`TestS3`] is a real S3 endpoint for tests, the first of:
//!
//! 1. the one named by `STRATA_TEST_S3_ENDPOINT`;
//! 2. MinIO in a container, through testcontainers, when a Docker engine
//!    is reachable (`DOCKER_HOST`, or a Docker socket that accepts a
//!    connection). One container, `strata-test-minio`, is shared by every
//!    test process (nextest runs one per test) and left running for the
//!    next run (`docker rm -f strata-test-minio` removes it);
//!    `STRATA_TEST_DOCKER=0` skips this step;
//! 3. a `moto_server` (moto 5) that this module starts on a free loopback
//!    port, the one `./scripts/test.sh` installs.
//!
//! Which one, and why the ones before it were passed over, is logged on
//! stderr. moto and MinIO both enforce `If-None-Match: *` (create-only
//! writes), which the engine's fencing stands on; the conformance suite
//! proves it on every run.
//!
//! Buckets are created with signed requests ([`TestS3::client`], the AWS
//! SDK), as MinIO and AWS S3 require. Every [`TestS3::bucket`] is a fresh,
//! uniquely named bucket, so tests never see each other's objects and never
//! need cleanup.
//!
//! Environment:
//! - `STRATA_MOTO_SERVER`: path of the `moto_server` binary (default:
//!   `<workspace>/.venv/bin/moto_server`, then `moto_server` on `PATH`).
//!   `./scripts/test.sh` installs it.
//! - `STRATA_TEST_S3_ENDPOINT`: use this endpoint and start nothing. With it,
//!   `STRATA_TEST_S3_ACCESS_KEY_ID`, `STRATA_TEST_S3_SECRET_ACCESS_KEY` and
//!   `STRATA_TEST_S3_REGION` set the credentials (default `test`/`test`,
//!   `us-east-1`), and `STRATA_TEST_S3_BUCKET` names an existing bucket to use
//!   (each [`TestS3::bucket`] then gets a fresh prefix in it) for credentials
//!   that may not create buckets.
//! - `STRATA_TEST_DOCKER=0`: never try Docker.
//!
//! What a newcomer must not break: a test that needs S3 and cannot get it
//! panics with instructions; it never skips, because a test that cannot fail
//! proves nothing.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use tempfile::{NamedTempFile, TempDir};
use testcontainers::core::IntoContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, ReuseDirective};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

/// How long `moto_server` may take to answer HTTP after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times to start `moto_server` on a fresh port when it exits right
/// away (another process took the port between our probe and its bind).
const START_ATTEMPTS: usize = 3;

/// The MinIO image (the one `docker-compose.yml` runs).
const MINIO_IMAGE: (&str, &str) = ("minio/minio", "RELEASE.2024-12-18T13-15-44Z");

/// The shared MinIO container's name.
const MINIO_CONTAINER: &str = "strata-test-minio";

/// MinIO's root user and password.
const MINIO_CREDENTIALS: (&str, &str) = ("minioadmin", "minioadmin");

/// How long MinIO may take to start, the image pull included.
const MINIO_START_TIMEOUT: Duration = Duration::from_secs(180);

const INSTALL_HINT: &str = "run ./scripts/test.sh once (it installs moto into .venv), or \
     `python3 -m venv .venv && .venv/bin/pip install 'moto[server]>=5,<6'`, or point \
     STRATA_MOTO_SERVER at a moto_server binary, or set STRATA_TEST_S3_ENDPOINT to an \
     S3-compatible endpoint that enforces If-None-Match";

/// A real S3-compatible endpoint for tests.
#[derive(Debug)]
pub struct TestS3 {
    endpoint: String,
    credentials: S3Credentials,
    /// `STRATA_TEST_S3_BUCKET`: an existing bucket to make prefixes in.
    existing_bucket: Option<String>,
    _server: Server,
}

/// What serves the endpoint.
#[derive(Debug)]
enum Server {
    /// `STRATA_TEST_S3_ENDPOINT`: someone else's.
    External,
    /// MinIO in a container (shared, or owned and removed on drop).
    MinIO(#[expect(dead_code, reason = "held for its drop")] Box<ContainerAsync<GenericImage>>),
    /// A `moto_server` of ours (stopped on drop).
    Moto(#[expect(dead_code, reason = "held for its drop")] MotoServer),
}

/// Credentials and region for the endpoint.
#[derive(Debug, Clone)]
struct S3Credentials {
    access_key_id: String,
    secret_access_key: String,
    region: String,
}

impl S3Credentials {
    fn test() -> S3Credentials {
        S3Credentials {
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            region: "us-east-1".into(),
        }
    }
}

impl TestS3 {
    /// The endpoint shared by every test in this process, started on first use.
    ///
    /// nextest runs each test in its own process, so this is one moto
    /// server per test there and one per test binary under `cargo test`;
    /// the server is stopped when the process exits, however it exits.
    /// MinIO is one container for all of them.
    pub async fn shared() -> &'static TestS3 {
        static SHARED: OnceCell<TestS3> = OnceCell::const_new();
        SHARED.get_or_init(|| TestS3::start_with(true)).await
    }

    /// A new endpoint owned by the caller: `STRATA_TEST_S3_ENDPOINT` if set,
    /// otherwise a new MinIO container or `moto_server` that is removed
    /// when the value is dropped.
    ///
    /// Prefer [`TestS3::shared`] unless the test stops or restarts the server.
    ///
    /// # Panics
    /// When no endpoint can be had (see the module docs).
    pub async fn start() -> TestS3 {
        TestS3::start_with(false).await
    }

    async fn start_with(shared: bool) -> TestS3 {
        if let Some(endpoint) = env_var("STRATA_TEST_S3_ENDPOINT") {
            log(&format!("using STRATA_TEST_S3_ENDPOINT={endpoint}"));
            return TestS3 {
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                credentials: S3Credentials {
                    access_key_id: env_var("STRATA_TEST_S3_ACCESS_KEY_ID")
                        .unwrap_or_else(|| "test".into()),
                    secret_access_key: env_var("STRATA_TEST_S3_SECRET_ACCESS_KEY")
                        .unwrap_or_else(|| "test".into()),
                    region: env_var("STRATA_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                },
                existing_bucket: env_var("STRATA_TEST_S3_BUCKET"),
                _server: Server::External,
            };
        }
        match docker_engine().await {
            Ok(engine) => match start_minio(shared).await {
                Ok((endpoint, container)) => {
                    log(&format!(
                        "using MinIO at {endpoint} (testcontainers, Docker engine at {engine})"
                    ));
                    return TestS3 {
                        endpoint,
                        credentials: S3Credentials {
                            access_key_id: MINIO_CREDENTIALS.0.into(),
                            secret_access_key: MINIO_CREDENTIALS.1.into(),
                            region: "us-east-1".into(),
                        },
                        existing_bucket: None,
                        _server: Server::MinIO(Box::new(container)),
                    };
                }
                Err(why) => log(&format!(
                    "not using MinIO: the Docker engine at {engine} could not start it ({why}); \
                     falling back to moto_server"
                )),
            },
            Err(why) => log(&format!(
                "not using MinIO: {why}; falling back to moto_server"
            )),
        }
        let server = MotoServer::start().await;
        let endpoint = format!("http://127.0.0.1:{}", server.port);
        log(&format!("using moto_server at {endpoint}"));
        TestS3 {
            endpoint,
            credentials: S3Credentials::test(),
            existing_bucket: None,
            _server: Server::Moto(server),
        }
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `AWS_*` environment that points a `strata` process (a broker,
    /// `strata bucket`) at this endpoint.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".to_owned(), self.endpoint.clone()),
            ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
            (
                "AWS_ACCESS_KEY_ID".to_owned(),
                self.credentials.access_key_id.clone(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                self.credentials.secret_access_key.clone(),
            ),
            ("AWS_REGION".to_owned(), self.credentials.region.clone()),
        ]
    }

    /// `STRATA_TEST_S3_BUCKET`: an existing bucket tests must use instead
    /// of creating their own.
    pub fn existing_bucket(&self) -> Option<&str> {
        self.existing_bucket.as_deref()
    }

    /// An S3 client of the endpoint (path-style, signed with its
    /// credentials), for what object_store does not do: buckets and their
    /// settings.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.credentials.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(
                &self.credentials.access_key_id,
                &self.credentials.secret_access_key,
                None,
                None,
                "strata-tests",
            ))
            .force_path_style(true)
            // Checksums only where S3 requires them: not every
            // S3-compatible server takes the SDK's default ones.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates `bucket` (signed CreateBucket in the endpoint's region).
    ///
    /// # Panics
    /// When the endpoint refuses.
    pub async fn create_bucket(&self, bucket: &str) {
        let mut request = self.client().create_bucket().bucket(bucket);
        if self.credentials.region != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(
                        self.credentials.region.as_str(),
                    ))
                    .build(),
            );
        }
        if let Err(e) = request.send().await {
            panic!(
                "CreateBucket {bucket} on {} failed: {}; if these credentials may not create \
                 buckets, set STRATA_TEST_S3_BUCKET to an existing bucket",
                self.endpoint,
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
        }
    }

    /// A fresh, empty bucket for a `strata serve` process: its `--store`
    /// URL (`s3://bucket/prefix`) and the `AWS_*` environment that points
    /// the broker at this endpoint.
    ///
    /// # Panics
    /// When the bucket cannot be created.
    pub async fn bucket_url(&self) -> (String, Vec<(String, String)>) {
        let prefix = format!("strata-test-{}", uuid::Uuid::new_v4().simple());
        let bucket = match &self.existing_bucket {
            Some(bucket) => bucket.clone(),
            None => {
                self.create_bucket(&prefix).await;
                prefix.clone()
            }
        };
        (format!("s3://{bucket}/{prefix}"), self.env())
    }

    /// A store over a fresh, empty bucket (or, with `STRATA_TEST_S3_BUCKET`,
    /// a fresh prefix of that bucket).
    ///
    /// # Panics
    /// When the bucket cannot be created.
    pub async fn bucket(&self) -> Arc<dyn ObjectStore> {
        let bucket = match &self.existing_bucket {
            Some(bucket) => bucket.clone(),
            None => {
                let bucket = format!("strata-test-{}", uuid::Uuid::new_v4().simple());
                self.create_bucket(&bucket).await;
                bucket
            }
        };
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region(&self.credentials.region)
            .with_bucket_name(&bucket)
            .with_access_key_id(&self.credentials.access_key_id)
            .with_secret_access_key(&self.credentials.secret_access_key)
            .build()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot build an S3 store for {}/{bucket}: {e}",
                    self.endpoint
                )
            });
        match self.existing_bucket {
            Some(_) => Arc::new(PrefixStore::new(
                s3,
                format!("strata-test-{}", uuid::Uuid::new_v4().simple()),
            )),
            None => Arc::new(s3),
        }
    }
}

/// A line on stderr about the fixture's choices.
fn log(line: &str) {
    eprintln!("strata-tests S3 fixture: {line}");
}

/// Where a Docker engine answers, or why none does. Quick: a missing
/// socket is seen at once, a dead one refuses the connection at once.
async fn docker_engine() -> Result<String, String> {
    if env_var("STRATA_TEST_DOCKER").is_some_and(|v| v == "0" || v.eq_ignore_ascii_case("false")) {
        return Err("STRATA_TEST_DOCKER=0".to_owned());
    }
    if let Some(host) = env_var("DOCKER_HOST") {
        return match host.strip_prefix("unix://") {
            Some(path) => connect_unix(path).await.map(|()| host.clone()),
            // tcp:// and friends: testcontainers finds out.
            None => Ok(host),
        };
    }
    let mut candidates = vec![PathBuf::from("/var/run/docker.sock")];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".docker/run/docker.sock"));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(PathBuf::from(dir).join("docker.sock"));
    }
    let mut why = Vec::new();
    for socket in candidates {
        if !socket.exists() {
            continue;
        }
        let path = socket.display().to_string();
        match connect_unix(&path).await {
            Ok(()) => return Ok(format!("unix://{path}")),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        Err("no Docker engine (DOCKER_HOST is not set and there is no Docker socket)".to_owned())
    } else {
        Err(why.join("; "))
    }
}

async fn connect_unix(path: &str) -> Result<(), String> {
    match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::UnixStream::connect(path),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("the Docker socket {path} refuses connections: {e}")),
        Err(_) => Err(format!("the Docker socket {path} does not answer")),
    }
}

/// Starts MinIO: the shared container (created by the first test process
/// that needs it, reused by the others and by later runs), or an owned one
/// removed on drop. Returns its endpoint once it is live.
async fn start_minio(shared: bool) -> Result<(String, ContainerAsync<GenericImage>), String> {
    let deadline = Instant::now() + MINIO_START_TIMEOUT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let image = GenericImage::new(MINIO_IMAGE.0, MINIO_IMAGE.1)
            .with_exposed_port(9000.tcp())
            .with_env_var("MINIO_ROOT_USER", MINIO_CREDENTIALS.0)
            .with_env_var("MINIO_ROOT_PASSWORD", MINIO_CREDENTIALS.1)
            .with_cmd(["server", "/data"])
            .with_startup_timeout(MINIO_START_TIMEOUT);
        let request = if shared {
            image
                .with_container_name(MINIO_CONTAINER)
                .with_reuse(ReuseDirective::Always)
        } else {
            image
        };
        let started = tokio::time::timeout(MINIO_START_TIMEOUT, request.start()).await;
        let container = match started {
            Ok(Ok(container)) => container,
            // Another test process is creating the shared container right
            // now (the name is taken): the next attempt reuses it.
            Ok(Err(e)) if shared && attempt < 5 && Instant::now() < deadline => {
                log(&format!("starting MinIO failed ({e}); trying again"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("not started within {MINIO_START_TIMEOUT:?}")),
        };
        let host = container.get_host().await.map_err(|e| e.to_string())?;
        let port = container
            .get_host_port_ipv4(9000.tcp())
            .await
            .map_err(|e| e.to_string())?;
        let addr = format!("{host}:{port}");
        loop {
            if let Ok(Ok(200)) = tokio::time::timeout(
                Duration::from_secs(2),
                http_request(&addr, "GET", "/minio/health/live"),
            )
            .await
            {
                return Ok((format!("http://{addr}"), container));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "MinIO on {addr} was not live within {MINIO_START_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every store the conformance suite runs on, each fresh and empty: the name,
/// the store, and the directory that must outlive a filesystem store.
///
/// # Panics
/// When the S3 endpoint cannot be started (see [`TestS3::start`]).
pub async fn all_stores() -> Vec<(&'static str, Arc<dyn ObjectStore>, Option<TempDir>)> {
    let dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let local = LocalFileSystem::new_with_prefix(dir.path()).unwrap_or_else(|e| {
        panic!(
            "cannot open a filesystem store in {}: {e}",
            dir.path().display()
        )
    });
    vec![
        (
            "memory",
            Arc::new(InMemory::new()) as Arc<dyn ObjectStore>,
            None,
        ),
        ("local", Arc::new(local), Some(dir)),
        ("s3", TestS3::shared().await.bucket().await, None),
    ]
}

/// A running `moto_server`, stopped on drop or when this process dies.
///
/// The server runs under a tiny `sh` supervisor in its own process group,
/// whose stdin is a pipe from this process: when the pipe closes (on drop,
/// or because the test process exited or was killed) the supervisor kills
/// the server. That needs no signal handling and no `prctl`.
#[derive(Debug)]
struct MotoServer {
    port: u16,
    supervisor: Child,
    stdin: Option<ChildStdin>,
    log: NamedTempFile,
}

/// `$0` is the moto_server binary, `$1` the port. Exits with the server; a
/// watcher kills the server when stdin reaches end-of-file. (A background
/// job's stdin is /dev/null unless redirected explicitly, hence fd 3.)
const SUPERVISOR: &str = r#"
exec 3<&0
"$0" -H 127.0.0.1 -p "$1" </dev/null 3<&- &
server=$!
{ read -r _ <&3 || true; kill "$server" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

impl MotoServer {
    async fn start() -> MotoServer {
        let binary = find_moto_server();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut server = MotoServer::spawn(&binary);
            match server.wait_until_ready().await {
                Ok(()) => return server,
                Err(Startup::Exited) => last_log = server.log_text(),
                Err(Startup::TimedOut) => panic!(
                    "moto_server ({}) did not answer HTTP on 127.0.0.1:{} within {STARTUP_TIMEOUT:?}; its output:\n{}\n\
                     If moto is broken, reinstall it: {INSTALL_HINT}",
                    binary.display(),
                    server.port,
                    server.log_text()
                ),
            }
        }
        panic!(
            "moto_server ({}) exited right after starting, {START_ATTEMPTS} times; its last output:\n{last_log}\n\
             If moto is broken, reinstall it: {INSTALL_HINT}",
            binary.display()
        )
    }

    fn spawn(binary: &std::path::Path) -> MotoServer {
        let port = free_port();
        let log = NamedTempFile::new()
            .unwrap_or_else(|e| panic!("cannot create a log file for moto_server: {e}"));
        let (out, err) = match (log.reopen(), log.reopen()) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => panic!("cannot open moto_server's log file: {e}"),
        };
        let mut supervisor = spawn_supervisor(binary, port, out, err);
        let stdin = supervisor.stdin.take();
        MotoServer {
            port,
            supervisor,
            stdin,
            log,
        }
    }

    /// Polls until the server answers HTTP, it exits, or the timeout passes.
    async fn wait_until_ready(&mut self) -> Result<(), Startup> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if !self.is_running() {
                return Err(Startup::Exited);
            }
            let addr = self.port_addr();
            let answered = matches!(
                tokio::time::timeout(Duration::from_secs(2), http_request(&addr, "GET", "/")).await,
                Ok(Ok(_))
            );
            // The answer must come from our server, not from one that took
            // the port before it could: ours must still be alive.
            if answered && self.is_running() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Startup::TimedOut);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn port_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn is_running(&mut self) -> bool {
        matches!(self.supervisor.try_wait(), Ok(None))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path())
            .unwrap_or_else(|e| format!("(cannot read the log: {e})"))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Closing the pipe tells the supervisor to kill the server and exit.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Last resort: the whole process group, supervisor and server.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.supervisor.id())])
            .status();
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
    }
}

enum Startup {
    Exited,
    TimedOut,
}

fn spawn_supervisor(binary: &std::path::Path, port: u16, out: File, err: File) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg(binary)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Its own group, so that Drop can kill the server with its
        // supervisor, and a Ctrl-C aimed at the test runner reaches it only
        // through the closed pipe.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server ({}): {e}; {INSTALL_HINT}",
                binary.display()
            )
        })
}

/// `$STRATA_MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`, else
/// `moto_server` on `PATH`.
fn find_moto_server() -> PathBuf {
    if let Some(path) = env_var("STRATA_MOTO_SERVER") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            panic!(
                "STRATA_MOTO_SERVER is {}, which is not a file; {INSTALL_HINT}",
                path.display()
            );
        }
        return path;
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found (looked at $STRATA_MOTO_SERVER, {}, and PATH): the S3 tests need it; {INSTALL_HINT}",
                venv.display()
            )
        })
}

/// A port that was free a moment ago, chosen by the OS.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

/// Sends a bodiless HTTP/1.1 request and returns the response status.
async fn http_request(addr: &str, method: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    // "HTTP/1.1 200 OK"
    response
        .lines()
        .next()
        .and_then(|status_line| status_line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP response: {:?}",
                    response.chars().take(200).collect::<String>()
                ),
            )
        })
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}
