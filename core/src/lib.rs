//! `tunnel-core`: the sans-IO engine of the tunnel SSH reverse-tunnel gateway.
//!
//! It decides everything (the command grammar, port and name rules, who owns which name, when an
//! endpoint lives and dies) and does nothing: no sockets, no clock, no global randomness. An
//! adapter feeds [`Input`]s with the current time, executes the [`Action`]s that come out, and
//! asks the routing queries on the data path. See [`Gateway`] for the calling contract.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod client_hello;
pub mod command;
mod config;
mod endpoints;
mod error;
mod forward;
mod forwards;
mod gateway;
mod ids;
mod input;
mod names;
mod ownership;
mod policy;
mod ports;
mod timers;
mod visitors;

pub use action::{Action, OutputStream, Reply};
pub use client_hello::{read_client_hello, ClientHello, MAX_CLIENT_HELLO_BYTES};
pub use config::{GatewayConfig, Limits};
pub use endpoints::{ChannelTarget, EndpointPolicy, Route};
pub use error::{CommandError, ForwardError, SessionError, Shown};
pub use gateway::{Gateway, CLOSED_BY_SERVER, SYNTAX_VERSION};
pub use ids::{ConnId, EndpointId, KeyFingerprint, RequestId};
pub use input::Input;
pub use names::{base_domain, normalize_host, requested_name, Hostname, RANDOM_NAME_LEN};
pub use ownership::Address;
pub use policy::basic_auth_allows;
pub use visitors::{request_host, Entrance, VisitorRefusal};

/// The README's Rust examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
