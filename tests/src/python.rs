//! Kafka clients in Python (kafka-python, confluent-kafka), run as
//! scripts from `tests/kafka/` against real brokers.
//!
//! The interpreter is `STRATA_TEST_PYTHON` (`scripts/test.sh` sets it to
//! the test virtualenv, where it installs both clients), else
//! `.venv/bin/python` of the workspace. [`kafka_clients`] is `None` when
//! neither has both clients; tests then skip with a message saying so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// A Python interpreter with kafka-python and confluent-kafka.
#[derive(Debug, Clone)]
pub struct Python {
    exe: PathBuf,
}

/// The interpreter to use, or `None` (after printing why) when there is
/// none with both Kafka clients.
pub async fn kafka_clients() -> Option<Python> {
    let exe = std::env::var_os("STRATA_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    let ok = Command::new(&exe)
        .args(["-c", "import kafka, confluent_kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if ok {
        Some(Python { exe })
    } else {
        eprintln!(
            "SKIPPED: no Python with kafka-python and confluent-kafka at {} \
             (run scripts/test.sh, which installs them, or set STRATA_TEST_PYTHON)",
            exe.display()
        );
        None
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

impl Python {
    /// Runs `tests/kafka/{script}` with `args`; returns its stdout.
    ///
    /// # Panics
    /// When it fails or takes longer than `timeout` (its stderr is shown).
    pub async fn run(&self, script: &str, args: &[&str], timeout: Duration) -> String {
        let child = self
            .command(script, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display()));
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{script} did not finish within {timeout:?}"))
            .expect("wait for python");
        assert!(
            out.status.success(),
            "{script} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `tests/kafka/{script}` with `args` in the background: its
    /// stdout is dropped, its stderr goes to the test's.
    pub fn spawn(&self, script: &str, args: &[&str]) -> tokio::process::Child {
        self.command(script, args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display()))
    }

    fn command(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(workspace().join("tests/kafka").join(script))
            .args(args)
            .kill_on_drop(true);
        cmd
    }
}
