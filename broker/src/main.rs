//! The `strata` command: `strata serve` runs a broker; `strata bucket`
//! prepares and checks the bucket; every other subcommand is a client of a
//! running broker (Kafka console-tool style).

use clap::{Parser, Subcommand};
use strata_broker::{cli, server};

/// Strata: a Kafka-style log service whose only source of truth is an
/// S3-compatible bucket.
///
/// Run a broker with `strata serve` (no flags: everything under
/// ./strata-data, gRPC on 127.0.0.1:50051), then use the client commands
/// against it.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Serve(Box<server::ServeArgs>),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// Consumer groups: list, describe (lag), reset offsets, delete.
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
    /// Brokers of the cluster: status, drain a broker, move a partition.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Produce one record per line of standard input.
    Produce(cli::produce::ProduceArgs),
    /// Print records of a topic, one value per line.
    Consume(cli::consume::ConsumeArgs),
    /// Load generators: produce or consume throughput and latency.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// The bucket: create it (with the lifecycle rule Strata needs), check
    /// that it works.
    #[command(subcommand)]
    Bucket(cli::bucket::BucketCommand),
    /// Users that authenticate to brokers (SCRAM credentials in the bucket).
    #[command(subcommand)]
    User(cli::user::UserCommand),
    /// ACLs: who may do what to which topics, groups and the cluster.
    #[command(subcommand)]
    Acl(cli::acl::AclCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => server::run(*args).await,
            command => {
                cli::init_tracing();
                match command {
                    Command::Topic(c) => cli::topic::run(c).await,
                    Command::Cluster(c) => cli::cluster::run(c).await,
                    Command::Group(c) => cli::group::run(c).await,
                    Command::Produce(a) => cli::produce::run(a).await,
                    Command::Consume(a) => cli::consume::run(a).await,
                    Command::Bench(c) => cli::bench::run(c).await,
                    Command::Bucket(c) => cli::bucket::run(c).await,
                    Command::User(c) => cli::user::run(c).await,
                    Command::Acl(c) => cli::acl::run(c).await,
                    Command::Serve(_) => unreachable!("handled above"),
                }
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
