//! `strata bench` (skeleton).

/// Arguments.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Placeholder.
    Todo,
}

/// Runs the command.
pub async fn run(_args: BenchCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
