//! The command line's logs: `tracing` events on stderr (with the time and the level), what
//! the libraries and the server report. `RUST_LOG` chooses what is shown, with the
//! directives of `tracing_subscriber::filter::Targets` (`info`, `nuri_infer=debug,warn`, ...);
//! by default Nuri's own crates at `info` and everything else at `warn`.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter when `RUST_LOG` is unset (or does not parse: then a warning says so).
fn default_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("nuri", LevelFilter::INFO)
        .with_target("tower_http", LevelFilter::INFO)
}

/// Installs the subscriber; call once, first thing in `main`.
pub fn init() {
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(spec) => match spec.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(e) => (
                default_filter(),
                Some(format!("RUST_LOG={spec:?} ignored: {e}")),
            ),
        },
        Err(_) => (default_filter(), None),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second call (tests that run several commands in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
    if let Some(why) = bad {
        tracing::warn!("{why}");
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn by_default_nuri_informs_and_the_rest_warns() {
        let filter = default_filter();
        assert!(filter.would_enable("nuri_train::trainer", &Level::INFO));
        assert!(filter.would_enable("nuri", &Level::INFO));
        assert!(!filter.would_enable("nuri_infer", &Level::DEBUG));
        assert!(!filter.would_enable("cubecl_runtime", &Level::INFO));
        assert!(filter.would_enable("cubecl_runtime", &Level::WARN));
    }
}
