//! `strata user add|list|delete`: the users that authenticate to brokers
//! (SASL on the Kafka listener, credentials on gRPC), with salted SCRAM
//! credentials in the bucket (`security/users/{name}.json`).
//!
//! These commands write to the bucket directly (`--store`, as `strata
//! serve`): that is how the first administrator is created, before any
//! broker requires authentication. Brokers read a user at login, so a new
//! user or password works at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::print_stdout;
use crate::auth::users::{UserRecord, UserStore};
use crate::service::now_ms;
use crate::store_url;

/// Manage users.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user (or, with --update, set a new password).
    ///
    /// Example: strata user add alice --password-file alice.pw --store s3://bucket/prefix
    Add(AddArgs),
    /// List the users.
    List(StoreArgs),
    /// Delete a user (connections already logged in stay until they close).
    Delete(DeleteArgs),
}

/// The bucket the users live in.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The cluster's store, as `strata serve --store` takes it
    /// (s3://bucket/prefix, file:///path); the AWS_* variables apply.
    #[arg(long, env = "STRATA_STORE", value_name = "URL")]
    pub store: String,
}

/// Arguments of `strata user add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The user name: letters, digits and . _ - @ (the principal is User:NAME).
    pub name: String,
    /// A file holding the password (`-`: standard input); a final newline
    /// is not part of it.
    #[arg(long, value_name = "FILE")]
    pub password_file: PathBuf,
    /// Replace the password of an existing user.
    #[arg(long)]
    pub update: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `strata user delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The user name.
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Reads a password file (`-`: stdin), without its final newline.
pub fn read_password(path: &Path) -> anyhow::Result<String> {
    let raw = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the password from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?
    };
    let password = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(&raw);
    anyhow::ensure!(
        !password.is_empty(),
        "the password file {} is empty; write the password in it",
        path.display()
    );
    Ok(password.to_owned())
}

fn users(store: &StoreArgs) -> anyhow::Result<UserStore> {
    let s = store_url::open(&store.store)
        .with_context(|| format!("cannot open the store {}", store.store))?;
    Ok(UserStore::new(Arc::clone(&s), Duration::ZERO))
}

/// Runs the command.
pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add(a) => {
            let password = read_password(&a.password_file)?;
            let name = a.name.clone();
            let record =
                tokio::task::spawn_blocking(move || UserRecord::new(&name, &password, now_ms()))
                    .await
                    .context("salting the password failed")??;
            users(&a.store)?.put(&record, a.update).await?;
            eprintln!(
                "{} user {} (principal User:{}; SCRAM-SHA-256 and SCRAM-SHA-512, 4096 iterations)",
                if a.update { "updated" } else { "created" },
                a.name,
                a.name
            );
            Ok(())
        }
        UserCommand::List(s) => {
            let names = users(&s)?.list().await?;
            let mut out = String::new();
            for n in &names {
                out.push_str(n);
                out.push('\n');
            }
            print_stdout(&out)?;
            eprintln!("{} user(s)", names.len());
            Ok(())
        }
        UserCommand::Delete(d) => {
            if users(&d.store)?.delete(&d.name).await? {
                eprintln!("deleted user {}", d.name);
                Ok(())
            } else {
                anyhow::bail!("no user {}; list them with `strata user list`", d.name)
            }
        }
    }
}
