//! Logging setup: `--log LEVEL`, overridden by `RUST_LOG` when set.

use tracing_subscriber::EnvFilter;

/// Install the global `tracing` subscriber (stderr). Safe to call twice.
pub fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
