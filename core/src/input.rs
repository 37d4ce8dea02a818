//! Everything that can happen to the gateway, as data.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ids::{ConnId, EndpointId, KeyFingerprint, RequestId};

/// One event for [`Gateway::handle`](crate::Gateway::handle).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A TCP connection reached the SSH listener.
    ConnectionOpened {
        /// A new id, chosen by the adapter.
        conn: ConnId,
        /// The client's address.
        peer: SocketAddr,
    },
    /// The client proved it holds `key` (signature verified). Answered by [`Action::Auth`](crate::Action::Auth).
    AuthRequested {
        /// The connection.
        conn: ConnId,
        /// The SSH user name (`v2`, or the client's login name).
        user: String,
        /// The key's SHA-256 fingerprint.
        key: KeyFingerprint,
    },
    /// A `tcpip-forward` global request (RFC 4254 §7.1). Answered by [`Action::Reply`](crate::Action::Reply).
    ForwardRequested {
        /// The connection.
        conn: ConnId,
        /// Correlates the reply.
        request: RequestId,
        /// "address to bind": carries the NAME.
        bind_address: String,
        /// "port number to bind".
        port: u32,
    },
    /// A `cancel-tcpip-forward` global request. Answered by [`Action::Reply`](crate::Action::Reply).
    ForwardCancelled {
        /// The connection.
        conn: ConnId,
        /// Correlates the reply.
        request: RequestId,
        /// As in the forward.
        bind_address: String,
        /// The requested or the allocated port.
        port: u32,
    },
    /// An `exec` request on the session channel: the command line as sent (RFC 4254 §6.5).
    ExecRequested {
        /// The connection.
        conn: ConnId,
        /// The command line; not necessarily UTF-8 on the wire, the adapter converts lossily.
        command: String,
    },
    /// A `shell` request on the session channel: the no-command case.
    ShellRequested {
        /// The connection.
        conn: ConnId,
    },
    /// Bytes the user typed into the session channel.
    SessionData {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: Vec<u8>,
        /// Whether the client asked for a terminal (pty-req): then ^C and ^D arrive as bytes
        /// rather than as the client's own signals, and they end the session.
        terminal: bool,
    },
    /// The session channel closed; nothing more can be printed to it.
    SessionClosed {
        /// The connection.
        conn: ConnId,
    },
    /// The SSH connection ended, for any reason.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
    },
    /// The adapter bound the listener of a [`Action::Bind`](crate::Action::Bind).
    Bound {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// The host refused to bind the listener of a [`Action::Bind`](crate::Action::Bind).
    BindFailed {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// An HTTP request through an endpoint finished (for `--inspect`).
    HttpRequestCompleted {
        /// The endpoint.
        endpoint: EndpointId,
        /// The request method.
        method: String,
        /// The request target as received.
        path: String,
        /// The status sent to the visitor.
        status: u16,
        /// From the request head read to the response head sent.
        elapsed: Duration,
    },
}
