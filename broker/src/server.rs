//! `strata serve`. (Skeleton: replaced by the broker implementation.)

/// Flags of `strata serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs a broker until SIGTERM / Ctrl-C.
pub async fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
