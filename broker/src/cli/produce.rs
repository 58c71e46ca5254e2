//! `strata produce` (skeleton).

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {}

/// Runs the command.
pub async fn run(_args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
