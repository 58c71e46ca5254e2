//! Real `strata serve` processes on loopback ports, for end-to-end tests.
//!
//! [`BrokerProcess::start`] runs the `strata` binary of this workspace (built
//! on first use if missing) with its own data directory and store, waits for
//! the one stdout line a ready broker prints
//! (`strata: serving broker=0 grpc=http://… http=http://… store=…`;
//! `https://` when it serves TLS), and
//! sends the broker's logs to `broker.log` in its data directory. Processes
//! are killed when the value is dropped, so a failing test leaves nothing
//! behind.
//!
//! Faults are process-level: [`BrokerProcess::terminate`] (SIGTERM, graceful),
//! [`BrokerProcess::kill`] (SIGKILL), [`BrokerProcess::stop`] /
//! [`BrokerProcess::resume`] (SIGSTOP / SIGCONT, a zombie).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a broker may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The prefix of the line a ready broker prints on stdout.
const READY_PREFIX: &str = "strata: serving ";

/// How to start a broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// `--broker-id`.
    pub broker_id: u32,
    /// `--broker-id auto` instead of `broker_id`: the broker claims the
    /// lowest free id, which [`BrokerProcess::broker_id`] then tells.
    pub auto_id: bool,
    /// `--store`; `None` is the embedded default (a `file://` bucket under
    /// the data directory).
    pub store: Option<String>,
    /// Extra environment (AWS_* for S3, STRATA_* settings).
    pub env: Vec<(String, String)>,
    /// Extra flags after `serve`.
    pub args: Vec<String>,
}

/// A running (or stopped) `strata serve` process.
#[derive(Debug)]
pub struct BrokerProcess {
    options: BrokerOptions,
    data_dir: PathBuf,
    child: Option<Child>,
    grpc_addr: String,
    http_addr: String,
    kafka_addr: String,
    /// `http`, or `https` when the broker serves TLS (`--tls-cert`).
    scheme: String,
    /// The id the ready line named.
    broker_id: u32,
    starts: u32,
}

/// The `strata` binary of this workspace, built once per test process if
/// it is not there yet (nextest builds test targets, not other packages'
/// binaries; `scripts/test.sh` builds it up front).
///
/// # Panics
/// When it cannot be built.
pub fn strata_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("tests/ sits in the workspace")
                    .join("target")
            });
        let bin = target_dir.join("debug").join("strata");
        if !bin.exists() || std::env::var_os("STRATA_TEST_REBUILD").is_some() {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--quiet", "-p", "strata-broker", "--bin", "strata"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .unwrap_or_else(|e| panic!("cannot run cargo to build strata: {e}"));
            assert!(status.success(), "cargo build of the strata binary failed");
        }
        bin
    })
}

impl BrokerProcess {
    /// Starts a broker in `data_dir` on free loopback ports.
    ///
    /// # Panics
    /// When it does not become ready within a minute (its log is printed).
    pub async fn start(data_dir: &Path, options: BrokerOptions) -> BrokerProcess {
        let mut broker = BrokerProcess {
            options: options.clone(),
            data_dir: data_dir.to_owned(),
            child: None,
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            kafka_addr: "127.0.0.1:0".into(),
            scheme: "http".into(),
            broker_id: options.broker_id,
            starts: 0,
        };
        broker.spawn().await;
        broker
    }

    /// Starts the process again on the same data directory and the same
    /// ports (clients reconnect to the same URL). Waits for the old process
    /// to be gone first.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.data_dir.display()));
        let log_path = self.log_path();
        // The port of a process killed a moment ago can take a moment to be
        // free again; retry the bind a few times.
        for attempt in 0..20 {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
            let mut cmd = Command::new(strata_binary());
            cmd.arg("serve")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--grpc-addr")
                .arg(&self.grpc_addr)
                .arg("--http-addr")
                .arg(&self.http_addr)
                .arg("--kafka-addr")
                .arg(&self.kafka_addr)
                .arg("--broker-id")
                .arg(if self.options.auto_id {
                    "auto".to_owned()
                } else {
                    self.options.broker_id.to_string()
                })
                .args(&self.options.args)
                .env("RUST_LOG", "info,strata_storage=debug")
                .env_remove("STRATA_BROKER")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true);
            if let Some(store) = &self.options.store {
                cmd.arg("--store").arg(store);
            }
            for (k, v) in &self.options.env {
                cmd.env(k, v);
            }
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", strata_binary().display()));
            let stdout = child.stdout.take().expect("stdout is piped");
            let mut lines = BufReader::new(stdout).lines();
            let ready = tokio::time::timeout(READY_TIMEOUT, async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.strip_prefix(READY_PREFIX) {
                        return Some(rest.to_owned());
                    }
                }
                None
            })
            .await;
            match ready {
                Ok(Some(rest)) => {
                    for field in rest.split_whitespace() {
                        if let Some((scheme, v)) = field
                            .strip_prefix("grpc=")
                            .and_then(|url| url.split_once("://"))
                        {
                            scheme.clone_into(&mut self.scheme);
                            self.grpc_addr = v.to_owned();
                        } else if let Some((_, v)) = field
                            .strip_prefix("http=")
                            .and_then(|url| url.split_once("://"))
                        {
                            self.http_addr = v.to_owned();
                        } else if let Some(v) = field.strip_prefix("kafka=") {
                            self.kafka_addr = v.to_owned();
                        } else if let Some(v) = field.strip_prefix("broker=") {
                            self.broker_id = v.parse().unwrap_or_else(|_| {
                                panic!("the ready line names no broker id: {rest}")
                            });
                        }
                    }
                    // Keep draining stdout so the broker never blocks on it.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    self.child = Some(child);
                    self.starts += 1;
                    return;
                }
                Ok(None) if attempt < 19 && self.starts > 0 => {
                    // Exited before ready: most likely the port is still taken.
                    let _ = child.wait().await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                _ => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    panic!(
                        "strata serve did not become ready within {READY_TIMEOUT:?}; its log:\n{}",
                        self.log()
                    );
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT` of the gRPC API (`https://` with TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.grpc_addr)
    }

    /// `127.0.0.1:PORT` of the Kafka listener (a Kafka client's
    /// `bootstrap.servers`).
    pub fn kafka_addr(&self) -> &str {
        &self.kafka_addr
    }

    /// `http://127.0.0.1:PORT` of the admin HTTP server (`https://` with
    /// TLS).
    pub fn http_url(&self) -> String {
        format!("{}://{}", self.scheme, self.http_addr)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the broker's stderr goes.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("broker.log")
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the broker is running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// SIGTERM, then waits for the exit (at most `timeout`).
    ///
    /// # Panics
    /// When it does not exit in time.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(timeout, "SIGTERM").await
    }

    /// Waits (at most `timeout`) for the process to exit by itself, e.g.
    /// after it was asked to drain; `why` names what should make it exit.
    ///
    /// # Panics
    /// When it does not exit in time (it is killed, and its log printed).
    pub async fn wait_exit(&mut self, timeout: Duration, why: &str) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is running");
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("cannot wait for the broker: {e}"),
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "broker {} did not exit within {timeout:?} of {why}; its log:\n{}",
                    self.broker_id,
                    self.log()
                )
            }
        }
    }

    /// Its broker id: the one it was started with, or the one it claimed
    /// (`auto_id`) at its last start.
    pub fn broker_id(&self) -> u32 {
        self.broker_id
    }

    /// SIGKILL: no chance to flush, seal or release anything.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGSTOP: the process freezes with everything it holds.
    pub fn stop(&self) {
        self.signal("STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("CONT");
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Some(pid) = child.id() {
                // SIGKILL also ends a process frozen by SIGSTOP.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = child.start_kill();
        }
    }
}

/// Runs the `strata` CLI with `args`, feeding `stdin`; returns (exit status,
/// stdout, stderr). Bounded by `timeout`.
///
/// # Panics
/// When it does not finish in time.
pub async fn run_cli(
    args: &[&str],
    stdin: &str,
    timeout: Duration,
) -> (ExitStatus, String, String) {
    run_cli_with_env(args, &[], stdin, timeout).await
}

/// [`run_cli`] with `env` (e.g. the `AWS_*` variables of an S3 endpoint)
/// added to its environment.
///
/// # Panics
/// When it does not finish in time.
pub async fn run_cli_with_env(
    args: &[&str],
    env: &[(String, String)],
    stdin: &str,
    timeout: Duration,
) -> (ExitStatus, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(strata_binary())
        .args(args)
        .env_remove("STRATA_BROKER")
        .env_remove("STRATA_STORE")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run strata {args:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_owned();
    let writer = tokio::spawn(async move {
        let _ = input.write_all(stdin.as_bytes()).await;
        let _ = input.shutdown().await;
    });
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("strata {args:?} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("cannot wait for strata {args:?}: {e}"));
    let _ = writer.await;
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `GET base/path` over plain HTTP/1.0; returns (status code, body).
///
/// # Errors
/// When the server cannot be reached or the exchange fails.
pub async fn http_get(base: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
