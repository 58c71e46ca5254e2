//! The S3-compatible test fixture.
//!
//! [`TestS3`] is a real S3 endpoint for tests: the one named by
//! `STRATA_TEST_S3_ENDPOINT` if that is set, otherwise a `moto_server`
//! (moto 5) that this module starts on a free loopback port. moto is used
//! because it enforces `If-None-Match: *` (create-only writes), which the
//! engine's fencing stands on; the conformance suite proves it on every run.
//!
//! Every [`TestS3::bucket`] is a fresh, uniquely named bucket, so tests never
//! see each other's objects and never need cleanup.
//!
//! Environment:
//! - `STRATA_MOTO_SERVER`: path of the `moto_server` binary (default:
//!   `<workspace>/.venv/bin/moto_server`, then `moto_server` on `PATH`).
//!   `./scripts/test.sh` installs it.
//! - `STRATA_TEST_S3_ENDPOINT`: use this endpoint and start nothing. With it,
//!   `STRATA_TEST_S3_ACCESS_KEY_ID`, `STRATA_TEST_S3_SECRET_ACCESS_KEY` and
//!   `STRATA_TEST_S3_REGION` set the credentials (default `test`/`test`,
//!   `us-east-1`), and `STRATA_TEST_S3_BUCKET` names an existing bucket to use
//!   (each [`TestS3::bucket`] then gets a fresh prefix in it) for servers that
//!   refuse the unsigned `CreateBucket` this fixture sends.
//!
//! What a newcomer must not break: a test that needs S3 and cannot get it
//! panics with instructions; it never skips, because a test that cannot fail
//! proves nothing.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use tempfile::{NamedTempFile, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

/// How long `moto_server` may take to answer HTTP after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times to start `moto_server` on a fresh port when it exits right
/// away (another process took the port between our probe and its bind).
const START_ATTEMPTS: usize = 3;

const INSTALL_HINT: &str = "run ./scripts/test.sh once (it installs moto into .venv), or \
     `python3 -m venv .venv && .venv/bin/pip install 'moto[server]>=5,<6'`, or point \
     STRATA_MOTO_SERVER at a moto_server binary, or set STRATA_TEST_S3_ENDPOINT to an \
     S3-compatible endpoint that enforces If-None-Match";

/// A real S3-compatible endpoint for tests.
#[derive(Debug)]
pub struct TestS3 {
    endpoint: String,
    external: Option<External>,
    _server: Option<MotoServer>,
}

/// Settings for an endpoint given through `STRATA_TEST_S3_ENDPOINT`.
#[derive(Debug)]
struct External {
    access_key_id: String,
    secret_access_key: String,
    region: String,
    bucket: Option<String>,
}

impl TestS3 {
    /// The endpoint shared by every test in this process, started on first use.
    ///
    /// nextest runs each test in its own process, so this is one server per
    /// test there and one per test binary under `cargo test`. The server is
    /// stopped when the process exits, however it exits.
    pub async fn shared() -> &'static TestS3 {
        static SHARED: OnceCell<TestS3> = OnceCell::const_new();
        SHARED.get_or_init(TestS3::start).await
    }

    /// A new endpoint owned by the caller: `STRATA_TEST_S3_ENDPOINT` if set,
    /// otherwise a new `moto_server` that is killed when the value is dropped.
    ///
    /// Prefer [`TestS3::shared`] unless the test stops or restarts the server.
    ///
    /// # Panics
    /// When `moto_server` cannot be found or does not start.
    pub async fn start() -> TestS3 {
        if let Some(endpoint) = env_var("STRATA_TEST_S3_ENDPOINT") {
            let external = External {
                access_key_id: env_var("STRATA_TEST_S3_ACCESS_KEY_ID")
                    .unwrap_or_else(|| "test".into()),
                secret_access_key: env_var("STRATA_TEST_S3_SECRET_ACCESS_KEY")
                    .unwrap_or_else(|| "test".into()),
                region: env_var("STRATA_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                bucket: env_var("STRATA_TEST_S3_BUCKET"),
            };
            return TestS3 {
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                external: Some(external),
                _server: None,
            };
        }
        let server = MotoServer::start().await;
        TestS3 {
            endpoint: format!("http://127.0.0.1:{}", server.port),
            external: None,
            _server: Some(server),
        }
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A fresh, empty bucket for a `strata serve` process: its `--store`
    /// URL (`s3://bucket/prefix`) and the `AWS_*` environment that points
    /// the broker at this endpoint.
    ///
    /// # Panics
    /// When the bucket cannot be created.
    pub async fn bucket_url(&self) -> (String, Vec<(String, String)>) {
        let (access_key_id, secret_access_key, region) = match &self.external {
            Some(e) => (
                e.access_key_id.clone(),
                e.secret_access_key.clone(),
                e.region.clone(),
            ),
            None => ("test".into(), "test".into(), "us-east-1".into()),
        };
        let prefix = format!("strata-test-{}", uuid::Uuid::new_v4().simple());
        let bucket = match self.external.as_ref().and_then(|e| e.bucket.clone()) {
            Some(bucket) => bucket,
            None => {
                create_bucket(&self.endpoint, &prefix).await;
                prefix.clone()
            }
        };
        let env = vec![
            ("AWS_ENDPOINT_URL".to_owned(), self.endpoint.clone()),
            ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), access_key_id),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), secret_access_key),
            ("AWS_REGION".to_owned(), region),
        ];
        (format!("s3://{bucket}/{prefix}"), env)
    }

    /// A store over a fresh, empty bucket (or, with `STRATA_TEST_S3_BUCKET`,
    /// a fresh prefix of that bucket).
    ///
    /// # Panics
    /// When the bucket cannot be created.
    pub async fn bucket(&self) -> Arc<dyn ObjectStore> {
        let (access_key_id, secret_access_key, region) = match &self.external {
            Some(e) => (
                e.access_key_id.as_str(),
                e.secret_access_key.as_str(),
                e.region.as_str(),
            ),
            None => ("test", "test", "us-east-1"),
        };
        let existing = self.external.as_ref().and_then(|e| e.bucket.clone());
        let bucket = match &existing {
            Some(bucket) => bucket.clone(),
            None => {
                let bucket = format!("strata-test-{}", uuid::Uuid::new_v4().simple());
                create_bucket(&self.endpoint, &bucket).await;
                bucket
            }
        };
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region(region)
            .with_bucket_name(&bucket)
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key)
            .build()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot build an S3 store for {}/{bucket}: {e}",
                    self.endpoint
                )
            });
        match existing {
            Some(_) => Arc::new(PrefixStore::new(
                s3,
                format!("strata-test-{}", uuid::Uuid::new_v4().simple()),
            )),
            None => Arc::new(s3),
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

/// S3 `CreateBucket`: a plain unsigned `PUT /{bucket}`, which moto accepts.
async fn create_bucket(endpoint: &str, bucket: &str) {
    let Some(addr) = endpoint.strip_prefix("http://") else {
        panic!(
            "cannot create a bucket on {endpoint}: the fixture creates buckets over plain http only; \
             set STRATA_TEST_S3_BUCKET to an existing bucket"
        );
    };
    let addr = addr.trim_end_matches('/');
    match http_request(addr, "PUT", &format!("/{bucket}")).await {
        Ok(200) => {}
        Ok(status) => panic!(
            "CreateBucket {bucket} on {endpoint} answered HTTP {status}; if the server wants signed \
             requests, set STRATA_TEST_S3_BUCKET to an existing bucket"
        ),
        Err(e) => panic!("CreateBucket {bucket} on {endpoint} failed: {e}"),
    }
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
