//! `strata user add|list|delete`: the users that authenticate to brokers
//! (SASL on the Kafka listener, credentials on gRPC), with salted SCRAM
//! credentials in the bucket (`security/users/{name}.json`).
//!
//! With `--store` these commands write to the bucket directly (as `strata
//! serve` opens it): that is how the first administrator is created,
//! before any broker requires authentication. Without it they ask a broker
//! (`--broker`, as an administrator: `Alter` on the cluster, or a super
//! user). Brokers read a user at login, so a new user or password works at
//! once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::print_stdout;
use crate::auth::users::{UserRecord, UserStore};
use crate::service::now_ms;
use crate::store_url;
use strata_client::AuthChannel;
use strata_proto::v1::security_client::SecurityClient;
use strata_proto::v1::{DeleteUserRequest, ListUsersRequest, PutUserRequest};

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

/// Where the users live: the bucket itself, or a broker.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Write the cluster's store directly, as `strata serve --store` takes
    /// it (s3://bucket/prefix, file:///path; the AWS_* variables apply).
    /// Without it, the command asks the broker given by --broker.
    #[arg(long, env = "STRATA_STORE", value_name = "URL")]
    pub store: Option<String>,
    #[command(flatten)]
    pub broker: super::BrokerArgs,
}

/// [`StoreArgs`] for `strata user add`, whose `--password-file` is the new
/// user's: against a broker, the administrator's credentials come from
/// STRATA_USER and STRATA_PASSWORD (or a client certificate).
#[derive(Debug, clap::Args)]
pub struct AddStoreArgs {
    /// As for the other `strata user` commands.
    #[arg(long, env = "STRATA_STORE", value_name = "URL")]
    pub store: Option<String>,
    #[command(flatten)]
    pub endpoint: super::EndpointArgs,
}

/// The bucket, or a broker's Security service.
pub(crate) enum Target {
    /// `--store`.
    Bucket(Arc<dyn object_store::ObjectStore>),
    /// `--broker`.
    Broker(SecurityClient<AuthChannel>),
}

/// Opens the bucket `store`, or connects to the broker at `endpoint` as
/// `credentials`.
fn target(
    store: Option<&str>,
    endpoint: &super::EndpointArgs,
    credentials: &super::CredentialArgs,
) -> anyhow::Result<Target> {
    match store {
        Some(store) => Ok(Target::Bucket(
            store_url::open(store).with_context(|| format!("cannot open the store {store}"))?,
        )),
        None => {
            let options = endpoint.connect_options(credentials)?;
            let channel = options.channel(&endpoint.first_url())?;
            Ok(Target::Broker(SecurityClient::new(channel)))
        }
    }
}

impl StoreArgs {
    /// Opens the bucket, or connects to the broker.
    pub(crate) fn target(&self) -> anyhow::Result<Target> {
        target(
            self.store.as_deref(),
            &self.broker.endpoint,
            &self.broker.credentials,
        )
    }
}

impl AddStoreArgs {
    /// Opens the bucket, or connects to the broker.
    fn target(&self) -> anyhow::Result<Target> {
        target(
            self.store.as_deref(),
            &self.endpoint,
            &super::CredentialArgs::from_env(),
        )
    }
}

/// A broker's refusal, as the client library words it.
pub(crate) fn refused(status: tonic::Status) -> anyhow::Error {
    let info = strata_proto::ErrorInfo::from_status(&status);
    anyhow::anyhow!(
        "broker refused the request: {} ({})",
        info.message,
        info.reason.as_str_name()
    )
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
    pub store: AddStoreArgs,
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

/// Runs the command.
pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add(a) => {
            let password = read_password(&a.password_file)?;
            match a.store.target()? {
                Target::Bucket(store) => {
                    let name = a.name.clone();
                    let record = tokio::task::spawn_blocking(move || {
                        UserRecord::new(&name, &password, now_ms())
                    })
                    .await
                    .context("salting the password failed")??;
                    UserStore::new(store, Duration::ZERO)
                        .put(&record, a.update)
                        .await?;
                }
                Target::Broker(mut client) => {
                    client
                        .put_user(PutUserRequest {
                            name: a.name.clone(),
                            password,
                            update: a.update,
                        })
                        .await
                        .map_err(refused)?;
                }
            }
            eprintln!(
                "{} user {} (principal User:{}; SCRAM-SHA-256 and SCRAM-SHA-512, 4096 iterations)",
                if a.update { "updated" } else { "created" },
                a.name,
                a.name
            );
            Ok(())
        }
        UserCommand::List(s) => {
            let names = match s.target()? {
                Target::Bucket(store) => UserStore::new(store, Duration::ZERO).list().await?,
                Target::Broker(mut client) => {
                    client
                        .list_users(ListUsersRequest {})
                        .await
                        .map_err(refused)?
                        .into_inner()
                        .names
                }
            };
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
            let deleted = match d.store.target()? {
                Target::Bucket(store) => {
                    UserStore::new(store, Duration::ZERO)
                        .delete(&d.name)
                        .await?
                }
                Target::Broker(mut client) => {
                    client
                        .delete_user(DeleteUserRequest {
                            name: d.name.clone(),
                        })
                        .await
                        .map_err(refused)?;
                    true
                }
            };
            if deleted {
                eprintln!("deleted user {}", d.name);
                Ok(())
            } else {
                anyhow::bail!("no user {}; list them with `strata user list`", d.name)
            }
        }
    }
}
