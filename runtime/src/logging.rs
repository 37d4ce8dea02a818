//! The server's log on stderr: text for people, or one JSON object per line for collectors, and
//! colours only where a person is looking.
//!
//! A JSON line has `timestamp` (RFC 3339, UTC), `level` (`INFO`, `WARN`, ...), `target` (the
//! module that logged, or `access` for the access log), `message`, and each of the event's own
//! fields flattened beside them under its name (no event field uses one of those four names).
//! `RUST_LOG` filters either format (default `info`).

use std::ffi::OsStr;
use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// tracing's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing to stderr. Called once, after the configuration is
/// read (its errors go to stderr on their own) and before anything else logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colours = wants_colours(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            builder.with_ansi(colours).init();
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The server logs no spans; keeping them out keeps the set of keys fixed.
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Colours go to a terminal only (a file or a pipe would keep the escape codes), and never when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn wants_colours(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(wants_colours(true, None));
        assert!(
            wants_colours(true, Some(OsStr::new(""))),
            "empty means unset"
        );
        assert!(!wants_colours(true, Some(OsStr::new("1"))));
        assert!(!wants_colours(false, None), "a pipe or a file");
        assert!(!wants_colours(false, Some(OsStr::new("1"))));
    }
}
