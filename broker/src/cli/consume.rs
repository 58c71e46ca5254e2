//! `strata consume` (skeleton).

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {}

/// Runs the command.
pub async fn run(_args: ConsumeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
