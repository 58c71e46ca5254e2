//! `strata topic` (skeleton).

/// Arguments.
#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Placeholder.
    Todo,
}

/// Runs the command.
pub async fn run(_args: TopicCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
