//! The exec command line: grammar, typed form and help text.
//!
//! [`parse_command_line`] turns the line a client sent into a [`Command`]; everything else here is
//! the typed form it produces and the [`HELP`] text.

mod ast;
mod grammar;
mod help;

pub use ast::{
    AccessRules, AdminCommand, Command, Credentials, EndpointKind, HeaderEdits, HeaderName,
    HostHeader, HttpOptions, ProxyVersion, StreamOptions,
};
pub use grammar::parse_command_line;
pub use help::HELP;

/// Not API. The grammar's own helpers, for this crate's integration tests and for `fuzz/`, which
/// turn on the `__testing` feature; builds without it have none of this, and no semver promise
/// covers it.
#[cfg(feature = "__testing")]
#[doc(hidden)]
pub mod testing {
    use super::{grammar, Command};
    use crate::CommandError;

    /// Splits a line into words as [`parse_command_line`](super::parse_command_line) does.
    pub fn tokenize(line: &str) -> Result<Vec<String>, CommandError> {
        grammar::tokenize(line)
    }

    /// Quotes one word so that [`tokenize`] gives it back unchanged.
    pub fn quote(word: &str) -> String {
        grammar::quote(word)
    }

    /// Renders a command as a line that
    /// [`parse_command_line`](super::parse_command_line) reads back to the same command.
    pub fn render(command: &Command) -> String {
        grammar::render(command)
    }
}
