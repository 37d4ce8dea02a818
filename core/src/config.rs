//! What the gateway is configured with. Plain data; the adapter fills it from flags and files.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::ids::KeyFingerprint;

/// The gateway's whole configuration.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Base domain: names are `LABEL.DOMAIN`. Lowercase, no trailing dot.
    pub domain: String,
    /// The public port of the HTTP listener, shown in `http://` URLs (omitted when 80).
    pub http_port: u16,
    /// The public port of the HTTPS listener, shown in `tls://` and `https://` URLs (omitted when 443).
    pub https_port: u16,
    /// Ports tcp endpoints may use.
    pub tcp_ports: RangeInclusive<u16>,
    /// How long a name (or tcp port) stays reserved for its key after its connection ends.
    /// Zero turns reservation off.
    pub name_grace: Duration,
    /// How long forwards wait for the exec command before the remote port decides their kind.
    pub command_deadline: Duration,
    /// How long a connection may stay unauthenticated.
    pub auth_timeout: Duration,
    /// Keys allowed in; `None` accepts any key (only sane on loopback; the adapter enforces that).
    pub authorized_keys: Option<BTreeSet<KeyFingerprint>>,
    /// When `tcpip-forward` replies are sent; see [`ReplyTiming`].
    pub reply_timing: ReplyTiming,
    /// Per-connection and per-key limits.
    pub limits: Limits,
}

impl GatewayConfig {
    /// The contract's dev defaults for `domain` on the given public ports.
    pub fn new(domain: impl Into<String>, http_port: u16, https_port: u16) -> Self {
        Self {
            domain: domain.into(),
            http_port,
            https_port,
            tcp_ports: 20000..=20999,
            name_grace: Duration::from_secs(600),
            command_deadline: Duration::from_secs(1),
            auth_timeout: Duration::from_secs(30),
            authorized_keys: None,
            reply_timing: ReplyTiming::Immediate,
            limits: Limits::default(),
        }
    }
}

/// When the gateway answers a `tcpip-forward` request (RFC 4254 §7.1).
///
/// OpenSSH sends every `tcpip-forward` right after authentication, then opens the session channel
/// and sends `exec` without waiting for the replies, so the command arrives after the forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyTiming {
    /// Hold each reply until the command is known (or the command deadline passes), then answer
    /// with the real outcome. Needs an SSH stack that can answer a global request later while
    /// it goes on reading the connection.
    OnResolution,
    /// Answer before the command: a forward that may be tcp (port 0 or a port in the range) gets
    /// an early [`Action::Bind`](crate::Action::Bind) and its reply as soon as the bind is
    /// reported, naming the bound port; every other forward is granted at once. A forward the
    /// command then refuses ends the session with the reason (a refusal reply would make a client
    /// with `ExitOnForwardFailure` leave before reading it). For SSH stacks that must answer a
    /// global request before reading the next message, as russh does: holding the reply there
    /// would hold the exec too. The adapter must carry out a `Bind` before it needs the reply.
    Immediate,
}

/// Limits that bound what one client can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Endpoints (forwards) on one connection.
    pub endpoints_per_connection: usize,
    /// Live connections authenticated by one key.
    pub connections_per_key: usize,
    /// Connections from one IP address not yet authenticated.
    pub unauthenticated_per_ip: usize,
    /// Lines kept for a session that has not opened its channel yet.
    pub queued_lines: usize,
    /// Ports tried for one tcp endpoint when the host refuses to bind them.
    pub bind_attempts: usize,
    /// Visitors one endpoint serves at once (tcp and tls connections, http requests in flight);
    /// past it, http answers 503 and tcp/tls close. Keeps one busy tunnel from starving the rest.
    pub visitors_per_endpoint: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            endpoints_per_connection: 64,
            connections_per_key: 1024,
            unauthenticated_per_ip: 64,
            queued_lines: 32,
            bind_attempts: 8,
            visitors_per_endpoint: 1024,
        }
    }
}
