//! What an operator sees: the connections, live endpoints and reservations of a gateway, as plain
//! data copied out of it (for an admin API or page). Nothing here reads a clock: ages and time
//! left are measured from the `now` the caller passes.

use std::net::SocketAddr;
use std::time::Duration;

use crate::command::EndpointKind;
use crate::ids::{ConnId, EndpointId, KeyFingerprint};
use crate::ownership::Address;

/// One SSH connection, authenticated or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    /// Its id.
    pub conn: ConnId,
    /// The identity it owns names as, once authenticated.
    pub key: Option<KeyFingerprint>,
    /// The client's address.
    pub peer: SocketAddr,
    /// How long ago the gateway was told of it ([`Input::ConnectionOpened`](crate::Input)).
    pub connected_for: Duration,
    /// Its live endpoints, in id order.
    pub endpoints: Vec<EndpointId>,
}

/// One live endpoint (a routed forward).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    /// Its id.
    pub endpoint: EndpointId,
    /// The connection it belongs to.
    pub conn: ConnId,
    /// What it serves.
    pub kind: EndpointKind,
    /// Its public URL, as its session's `Forwarding` line shows it.
    pub url: String,
    /// The name or tcp port it occupies.
    pub address: Address,
    /// The identity that owns the address.
    pub key: KeyFingerprint,
}

/// A name or tcp port kept for a key whose connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationView {
    /// The name or port.
    pub address: Address,
    /// Who it is kept for.
    pub key: KeyFingerprint,
    /// Until it is free for anyone.
    pub left: Duration,
}

/// What an operator's [`Input::Release`](crate::Input::Release) of an address found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// It was reserved: it is free now.
    Released,
    /// A live endpoint holds it: releasing it would leave a route without an owner, so it is
    /// refused (kick the connection first; its address is then reserved and can be released).
    Live,
    /// Nobody holds it.
    NotHeld,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Name(name) => f.write_str(name.as_str()),
            Address::Port(port) => write!(f, "{port}"),
        }
    }
}
