//! Client subcommands of `strata` (skeleton).

pub mod bench;
pub mod consume;
pub mod produce;
pub mod topic;

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
