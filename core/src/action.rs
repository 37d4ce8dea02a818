//! Everything the gateway asks its adapter to do, as data.

use std::sync::Arc;

use crate::certificates::CertificateRefusal;
use crate::endpoints::Route;
use crate::ids::{ConnId, EndpointId, RequestId};

/// One instruction from [`Gateway::poll_action`](crate::Gateway::poll_action). Execute them in
/// the order given: a `Print` before an `Exit` before a `Close` of the same connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Answer the public-key authentication of [`Input::AuthRequested`](crate::Input::AuthRequested).
    Auth {
        /// The connection that asked.
        conn: ConnId,
        /// Accept or reject this key.
        accepted: bool,
    },
    /// Log why a certificate login is refused (the client is only told it was refused, by the
    /// `Auth` that follows).
    CertificateRefused {
        /// The connection that asked.
        conn: ConnId,
        /// Why.
        reason: CertificateRefusal,
    },
    /// Answer the session channel open of
    /// [`Input::SessionRequested`](crate::Input::SessionRequested): accept it, or reject it with
    /// "administratively prohibited" (RFC 4254 §5.1).
    SessionAnswer {
        /// The connection that asked.
        conn: ConnId,
        /// Open the channel, or refuse it.
        accepted: bool,
    },
    /// Answer a global request (`tcpip-forward` or `cancel-tcpip-forward`).
    Reply {
        /// The connection the request came on; request ids are unique only within it.
        conn: ConnId,
        /// The request being answered.
        request: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// Listen on this tcp port; answer with [`Input::Bound`](crate::Input::Bound) or
    /// [`Input::BindFailed`](crate::Input::BindFailed).
    Bind {
        /// The endpoint the listener serves; its answer names it.
        endpoint: EndpointId,
        /// The tcp port to listen on.
        port: u16,
    },
    /// Stop listening on this tcp port. Comes only for a listener whose `Bind` was answered with
    /// `Bound`, or whose answer is still on its way (then ignore the answer).
    Unbind {
        /// The endpoint whose listener goes.
        endpoint: EndpointId,
        /// Its port, free again once the listener is closed.
        port: u16,
    },
    /// A route is live: visitors for it go to its connection. For a tcp endpoint, start
    /// accepting on its bound listener now.
    RouteAdded(Arc<Route>),
    /// A route is gone: new visitors are refused; those already connected are left to end.
    RouteRemoved(EndpointId),
    /// Write one line to the connection's session channel. Comes only once the session is open.
    Print {
        /// The connection whose session shows it.
        conn: ConnId,
        /// Standard output or standard error.
        stream: OutputStream,
        /// The line, without its newline (a terminal needs CRLF, a pipe LF).
        line: String,
    },
    /// Send the session's exit status (RFC 4254 §6.10).
    Exit {
        /// The connection whose session ends.
        conn: ConnId,
        /// The status: 0 for help and ^D, 1 for a refusal, 2 for a malformed command, 130 for ^C.
        status: u32,
    },
    /// Close the SSH connection with an SSH_MSG_DISCONNECT carrying `message`, which OpenSSH
    /// shows as `Received disconnect from ...: message` (the only way to tell a client without
    /// a session channel, such as `ssh -N`, why).
    Close {
        /// The connection to close.
        conn: ConnId,
        /// The disconnect description.
        message: String,
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

/// Which output stream of the session channel a line goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// Channel data.
    Stdout,
    /// Extended data type 1 (RFC 4254 §5.2).
    Stderr,
}
