//! The exec command line: grammar, typed form and help text.

mod ast;
mod grammar;
mod help;

pub use ast::{
    AccessRules, Command, Credentials, EndpointKind, HeaderEdits, HeaderName, HostHeader,
    HttpOptions, ProxyVersion, StreamOptions,
};
pub use grammar::{parse_command_line, quote, render, tokenize};
pub use help::HELP;
