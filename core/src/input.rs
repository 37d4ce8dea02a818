//! Everything that can happen to the gateway, as data.

use std::net::SocketAddr;
use std::time::Duration;

use crate::authorized::KeyList;
use crate::certificates::UserCertificate;
use crate::config::GatewayConfig;
use crate::ids::{ConnId, EndpointId, KeyFingerprint, RequestId};
use crate::ownership::Address;

/// One event for [`Gateway::handle`](crate::Gateway::handle). Inputs about one connection come in
/// the order the SSH stack received them; an input naming a connection or endpoint the gateway
/// has already dropped is answered as a refusal or ignored (the adapter may race a close).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A TCP connection reached the SSH listener. The gateway may answer with an immediate
    /// [`Action::Close`](crate::Action::Close) (too many unauthenticated connections from its IP).
    ConnectionOpened {
        /// A new id, chosen by the adapter, never reused while the gateway lives.
        conn: ConnId,
        /// The client's address.
        peer: SocketAddr,
    },
    /// The client proved it holds `key` (the signature is verified by the SSH stack). Answered by
    /// [`Action::Auth`](crate::Action::Auth).
    AuthRequested {
        /// The connection authenticating.
        conn: ConnId,
        /// The SSH user name: `v2`, or the client's login name; it selects the syntax version.
        user: String,
        /// The key's SHA-256 fingerprint; names are owned by it.
        key: KeyFingerprint,
    },
    /// The client proved it holds the key of an OpenSSH certificate, whose signature and
    /// validity window the SSH stack has verified. Answered by
    /// [`Action::Auth`](crate::Action::Auth), after an
    /// [`Action::CertificateRefused`](crate::Action::CertificateRefused) saying why when refused.
    CertificateAuthRequested {
        /// The connection authenticating.
        conn: ConnId,
        /// The SSH user name, as in [`Input::AuthRequested`]; it also picks the principal among
        /// several the certificate names.
        user: String,
        /// What the certificate says.
        certificate: UserCertificate,
    },
    /// A `tcpip-forward` global request (RFC 4254 §7.1). Answered by
    /// [`Action::Reply`](crate::Action::Reply), at once or, for a forward that needs a tcp
    /// listener first, once the adapter reports the bind.
    ForwardRequested {
        /// The connection asking.
        conn: ConnId,
        /// Correlates the reply; unique among the connection's unanswered requests.
        request: RequestId,
        /// "address to bind": carries the NAME of `-R NAME:PORT:...`.
        bind_address: String,
        /// "port number to bind": the remote port.
        port: u32,
    },
    /// A `cancel-tcpip-forward` global request (RFC 4254 §7.1). Answered by
    /// [`Action::Reply`](crate::Action::Reply) at once.
    ForwardCancelled {
        /// The connection asking.
        conn: ConnId,
        /// Correlates the reply.
        request: RequestId,
        /// As in the forward.
        bind_address: String,
        /// The requested port, or the one allocated for a port-0 forward.
        port: u32,
    },
    /// The client asks to open a session channel (RFC 4254 §6.1). Answered by
    /// [`Action::SessionAnswer`](crate::Action::SessionAnswer): one session per connection.
    SessionRequested {
        /// The connection asking.
        conn: ConnId,
    },
    /// An `exec` request on the session channel: the command line as sent (RFC 4254 §6.5).
    ExecRequested {
        /// The connection whose session it is.
        conn: ConnId,
        /// The command line; not necessarily UTF-8 on the wire, the adapter converts lossily.
        command: String,
    },
    /// A `shell` request on the session channel: the no-command case.
    ShellRequested {
        /// The connection whose session it is.
        conn: ConnId,
    },
    /// Bytes the user typed into the session channel.
    SessionData {
        /// The connection whose session it is.
        conn: ConnId,
        /// The bytes as received.
        data: Vec<u8>,
        /// Whether the client asked for a terminal (pty-req): then ^C and ^D arrive as bytes
        /// rather than as the client's own signals, and they end the session.
        terminal: bool,
    },
    /// The session channel closed; nothing more can be printed to it.
    SessionClosed {
        /// The connection whose session it was.
        conn: ConnId,
    },
    /// The SSH connection ended, for any reason. Its routes go at once.
    ConnectionClosed {
        /// The connection that ended.
        conn: ConnId,
    },
    /// The adapter bound the listener of an [`Action::Bind`](crate::Action::Bind).
    Bound {
        /// The endpoint the `Bind` named.
        endpoint: EndpointId,
    },
    /// The host refused to bind the listener of an [`Action::Bind`](crate::Action::Bind)
    /// (another program holds the port).
    BindFailed {
        /// The endpoint the `Bind` named.
        endpoint: EndpointId,
    },
    /// The server is stopping (a restart, SIGTERM): every session is told, and new connections
    /// are closed from now on. The adapter stops accepting, lets the visitors in flight finish,
    /// then sends [`Input::Stopped`].
    Stopping,
    /// The stop's wait for visitors is over: every connection is closed (their names and ports
    /// stay reserved for their keys, as after any disconnect).
    Stopped,
    /// An HTTP request through an endpoint finished: it becomes the session's `--inspect` line if
    /// the endpoint asked for one. An adapter may skip sending it when
    /// [`Route::logs_requests`](crate::Route::logs_requests) is false: nothing would come of it.
    HttpRequestCompleted {
        /// The endpoint that served it.
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
    /// The `authorized_keys` file changed (the adapter re-read it): `keys` replaces the list.
    /// Every authenticated connection whose key is no longer listed, or whose new line no
    /// longer admits it (`from=`, `expiry-time=`), is closed with a line saying why
    /// ([`Revoked`](crate::Revoked)), and the names and ports reserved for a key no longer
    /// listed are freed. Connections that stay get the new rules for their later requests.
    AuthorizedKeysChanged {
        /// The whole new list.
        keys: KeyList,
    },
    /// The operator changed the configuration of a running gateway (SIGHUP): of `config`, the
    /// gateway takes what can change live, as [`GatewayConfig::take_live`] lists, and keeps the
    /// rest as it started. Nobody is disconnected: a key over a lowered quota keeps what it holds
    /// and is refused its next name.
    Reconfigured {
        /// The whole new configuration, built as at start.
        config: Box<GatewayConfig>,
    },
    /// The operator closes a connection. Its session gets one stderr line,
    /// `disconnected by the operator: REASON` (the disconnect message without a session), exit
    /// status 1, then the connection is closed; its names and ports stay reserved for its key
    /// as after any disconnect. An unknown connection is ignored.
    Kick {
        /// The connection to close.
        conn: ConnId,
        /// Why, for the user; made one line and cut short. `None` names no reason.
        reason: Option<String>,
    },
    /// The operator drops a reservation: the name or port is free for any key at once. A live
    /// address is left alone, and so is one nobody holds; ask
    /// [`Gateway::release_outcome`](crate::Gateway::release_outcome) first to tell them apart.
    Release {
        /// The reserved name or port.
        address: Address,
    },
}
