//! Client subcommands of `strata`, in the style of Kafka's console tools:
//! `topic`, `group`, `cluster`, `produce`, `consume` and `bench`. Each is a thin shell
//! over `strata-client`; they share [`BrokerArgs`] (`--broker`,
//! `STRATA_BROKER`, and the TLS flags `--tls-ca`, `--tls-cert`,
//! `--tls-key` for `https://` brokers). `bucket`, `user` and `acl` talk
//! to the bucket instead (`--store`, as `strata serve`).
//!
//! Conventions: data goes to stdout, everything else (counts, progress,
//! errors) to stderr; a closed stdout (`| head`) is a clean exit; a failure
//! exits non-zero with a message that says what to do.

pub mod acl;
pub mod bench;
pub mod bench_cluster;
pub mod bench_group;
pub mod bench_store;
pub mod bucket;
pub mod cluster;
pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;
pub mod user;

use std::path::PathBuf;

use strata_client::{Admin, ConnectOptions, Credentials, TlsOptions};

/// The broker every client command talks to, and how: where
/// ([`EndpointArgs`]) and as whom ([`CredentialArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    #[command(flatten)]
    pub credentials: CredentialArgs,
}

/// Where the broker is, and the TLS settings to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// gRPC URL of any broker of the cluster, or several separated by
    /// commas (any one that answers will do); `https://` for brokers that
    /// serve TLS.
    #[arg(
        id = "broker_url",
        long = "broker",
        env = "STRATA_BROKER",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub url: String,
    /// PEM certificates of the CA that signs the brokers' certificates, for
    /// `https://` brokers [default: the system's roots].
    #[arg(
        id = "broker_tls_ca",
        long = "tls-ca",
        env = "STRATA_TLS_CA",
        value_name = "FILE"
    )]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one (mTLS).
    #[arg(
        id = "broker_tls_cert",
        long = "tls-cert",
        env = "STRATA_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "broker_tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        id = "broker_tls_key",
        long = "tls-key",
        env = "STRATA_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "broker_tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// Who the client authenticates as, for brokers with authentication on.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// The user to authenticate as (its password from --password-file or
    /// STRATA_PASSWORD).
    #[arg(
        id = "broker_user",
        long = "user",
        env = "STRATA_USER",
        value_name = "NAME"
    )]
    pub user: Option<String>,
    /// A file holding --user's password (`-`: standard input).
    #[arg(
        id = "broker_password_file",
        long = "password-file",
        env = "STRATA_PASSWORD_FILE",
        value_name = "FILE",
        requires = "broker_user"
    )]
    pub password_file: Option<PathBuf>,
}

impl CredentialArgs {
    /// The user of `STRATA_USER` (password from `STRATA_PASSWORD`), for
    /// commands whose `--password-file` means something else.
    pub fn from_env() -> Self {
        Self {
            user: std::env::var("STRATA_USER").ok().filter(|u| !u.is_empty()),
            password_file: None,
        }
    }

    /// The credentials, if a user is given; reads the password now.
    pub fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let password = match (&self.password_file, std::env::var("STRATA_PASSWORD")) {
            (Some(file), _) => user::read_password(file)?,
            (None, Ok(p)) if !p.is_empty() => p,
            _ => anyhow::bail!(
                "user {user} needs a password: give --password-file FILE or set STRATA_PASSWORD"
            ),
        };
        Ok(Some(Credentials::new(user.clone(), password)))
    }
}

impl EndpointArgs {
    /// How to connect as `credentials`, from the TLS flags (files read
    /// now; the error names the file).
    pub fn connect_options(&self, credentials: &CredentialArgs) -> anyhow::Result<ConnectOptions> {
        let mut options = ConnectOptions::default();
        if let Some(c) = credentials.credentials()? {
            options = options.with_credentials(c);
        }
        if self.tls_ca.is_none() && self.tls_cert.is_none() && self.tls_key.is_none() {
            return Ok(options);
        }
        Ok(options.with_tls(TlsOptions::from_files(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?))
    }

    /// The first URL, with a scheme.
    pub fn first_url(&self) -> String {
        let url = self.url.split(',').next().unwrap_or_default().trim();
        if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        }
    }
}

impl BrokerArgs {
    /// The broker URL(s) given.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// How to connect, from the TLS and credential flags (files read now;
    /// the error names the file).
    pub fn connect_options(&self) -> anyhow::Result<ConnectOptions> {
        self.endpoint.connect_options(&self.credentials)
    }

    /// An admin client of the cluster.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        Ok(Admin::connect_with(self.url(), &self.connect_options()?).await?)
    }
}

/// Logs of client commands go to stderr, warnings and errors only unless
/// `RUST_LOG` says otherwise.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses a human duration (`500ms`, `30s`, `7d`).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; use a duration like 500ms, 30s, 5m or 7d"))
}

/// True for the error of writing to a closed pipe.
pub(crate) fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Writes `s` to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn print_stdout(s: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(s.as_bytes()) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => Ok(other?),
    }
}

/// Bytes with binary units (`1.5 MiB`).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client commands as `main.rs` mounts them.
    #[derive(Debug, clap::Parser)]
    enum Commands {
        #[command(subcommand)]
        Topic(topic::TopicCommand),
        Produce(produce::ProduceArgs),
        Consume(consume::ConsumeArgs),
        #[command(subcommand)]
        Group(group::GroupCommand),
        #[command(subcommand)]
        Bench(bench::BenchCommand),
        #[command(subcommand)]
        Bucket(bucket::BucketCommand),
        #[command(subcommand)]
        User(user::UserCommand),
        #[command(subcommand)]
        Acl(acl::AclCommand),
    }

    #[test]
    fn clap_definitions_are_valid() {
        use clap::{CommandFactory, Parser};
        Commands::command().debug_assert();
        let c = Commands::try_parse_from([
            "strata",
            "consume",
            "t",
            "--from-beginning",
            "-n",
            "5",
            "--timeout",
            "2s",
        ]);
        assert!(c.is_ok(), "{c:?}");
        let c = Commands::try_parse_from([
            "strata",
            "consume",
            "t",
            "--from-beginning",
            "--offset",
            "3",
        ]);
        assert!(c.is_err(), "--from-beginning conflicts with --offset");
        let c = Commands::try_parse_from([
            "strata",
            "bench",
            "produce",
            "--records",
            "10",
            "--acks",
            "leader",
        ]);
        assert!(c.is_ok(), "{c:?}");
        let c = Commands::try_parse_from(["strata", "produce", "t", "--acks", "2"]);
        assert!(c.is_err());
        let c = Commands::try_parse_from(["strata", "consume", "t", "--group", "g", "-n", "3"]);
        assert!(c.is_ok(), "{c:?}");
        let c = Commands::try_parse_from([
            "strata",
            "consume",
            "t",
            "--group",
            "g",
            "--partition",
            "1",
        ]);
        assert!(c.is_err(), "--group conflicts with --partition");
        let c = Commands::try_parse_from([
            "strata",
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--shift-by",
            "-5",
            "--dry-run",
        ]);
        assert!(c.is_ok(), "{c:?}");
        let c = Commands::try_parse_from(["strata", "group", "reset-offsets", "g", "--topic", "t"]);
        assert!(c.is_err(), "a target is required");
        let c = Commands::try_parse_from([
            "strata",
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest",
        ]);
        assert!(c.is_err(), "one target only");
        let c = Commands::try_parse_from(["strata", "bucket", "check", "--store", "s3://b/p"]);
        assert!(c.is_ok(), "{c:?}");
        let c = Commands::try_parse_from([
            "strata",
            "acl",
            "add",
            "--allow",
            "User:a",
            "--operation",
            "read",
            "--operation",
            "describe-configs",
            "--topic",
            "t",
            "--store",
            "memory://",
        ]);
        assert!(c.is_ok(), "{c:?}");
        let c = Commands::try_parse_from([
            "strata",
            "acl",
            "add",
            "--allow",
            "User:a",
            "--operation",
            "fly",
            "--topic",
            "t",
            "--store",
            "memory://",
        ]);
        assert!(c.is_err(), "unknown operation");
        let c = Commands::try_parse_from([
            "strata",
            "acl",
            "list",
            "--topic",
            "t",
            "--group",
            "g",
            "--store",
            "memory://",
        ]);
        assert!(c.is_err(), "one resource");
        let c = Commands::try_parse_from([
            "strata",
            "user",
            "add",
            "alice",
            "--password-file",
            "-",
            "--store",
            "memory://",
        ]);
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("7d").ok(),
            Some(std::time::Duration::from_secs(7 * 86_400))
        );
        assert!(parse_duration("seven").is_err());
    }
}
