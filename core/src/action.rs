//! Everything the gateway asks its adapter to do, as data.

use std::sync::Arc;

use crate::endpoints::Route;
use crate::ids::{ConnId, EndpointId, RequestId};

/// One instruction from [`Gateway::poll_action`](crate::Gateway::poll_action). Execute them in
/// the order given: a `Print` before an `Exit` before a `Close` of the same connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer the public-key authentication of the connection.
    Auth {
        /// The connection.
        conn: ConnId,
        /// Accept or reject this key.
        accepted: bool,
    },
    /// Answer a global request.
    Reply {
        /// The connection.
        conn: ConnId,
        /// The request.
        request: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// Listen on this tcp port; answer with [`Input::Bound`](crate::Input::Bound) or
    /// [`Input::BindFailed`](crate::Input::BindFailed).
    Bind {
        /// The endpoint the listener serves.
        endpoint: EndpointId,
        /// The port.
        port: u16,
    },
    /// Stop listening on this tcp port.
    Unbind {
        /// The endpoint.
        endpoint: EndpointId,
        /// The port.
        port: u16,
    },
    /// A route is live: visitors for it go to its connection.
    RouteAdded(Arc<Route>),
    /// A route is gone: new visitors get 404 or a closed connection.
    RouteRemoved(EndpointId),
    /// Write one line to the session channel. A connection that never opened one (`ssh -N`)
    /// gets an error line only right before its `Close`: send it as the disconnect message,
    /// which OpenSSH shows.
    Print {
        /// The connection.
        conn: ConnId,
        /// Which stream.
        stream: Stream,
        /// The line, without its newline.
        line: String,
    },
    /// Send the session's exit status (RFC 4254 §6.10).
    Exit {
        /// The connection.
        conn: ConnId,
        /// The status.
        status: u32,
    },
    /// Close the SSH connection.
    Close {
        /// The connection.
        conn: ConnId,
    },
}

/// The answer to a global request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// SSH_MSG_REQUEST_SUCCESS; for a forward of port 0, with the allocated port (RFC 4254 §7.1).
    Granted {
        /// The allocated port, only for a forward that asked for port 0.
        port: Option<u32>,
    },
    /// SSH_MSG_REQUEST_FAILURE.
    Refused,
}

/// A session channel stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Channel data.
    Stdout,
    /// Extended data type 1 (RFC 4254 §5.2).
    Stderr,
}
