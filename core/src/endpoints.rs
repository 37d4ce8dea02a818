//! Endpoints: what a granted forward is, how its public URL reads, and the route the data path
//! follows to it.

use std::sync::Arc;
use std::time::Duration;

use crate::command::{
    AccessRules, Command, EndpointKind, HttpOptions, ProxyVersion, StreamOptions,
};
use crate::config::GatewayConfig;
use crate::ids::{ConnId, EndpointId};
use crate::ownership::Address;

/// What the data path needs to carry one visitor to an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The SSH connection to open the `forwarded-tcpip` channel on.
    pub conn: ConnId,
    /// Where visitors arrive: a name (http, tls) or a tcp port.
    pub address: Address,
    /// "address that was connected" and "port that was connected" for the channel open
    /// (RFC 4254 §7.2): the bind address and port the client's forward is registered under.
    pub target: ChannelTarget,
    /// The endpoint's options, as data.
    pub policy: EndpointPolicy,
    /// Visitors served at once; see [`Route::visitor_limit`].
    pub(crate) visitor_limit: usize,
    /// Of them, from one source; see [`Route::visitor_share`].
    pub(crate) visitor_share: usize,
}

/// The forward as the client registered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelTarget {
    /// The bind address from the `tcpip-forward` request.
    pub bind_address: String,
    /// The requested port, or the allocated one when the request asked for 0.
    pub port: u32,
}

/// An endpoint's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointPolicy {
    /// http: terminated and proxied.
    Http(Arc<HttpOptions>),
    /// tcp: piped.
    Tcp(StreamOptions),
    /// tls: passed through by SNI.
    Tls(StreamOptions),
}

impl EndpointPolicy {
    pub(crate) fn from_command(command: &Command) -> Option<Self> {
        match command {
            Command::Help | Command::List | Command::Release(_) | Command::Admin(_) => None,
            Command::Http(o) => Some(Self::Http(Arc::new(o.clone()))),
            Command::Tcp(o) => Some(Self::Tcp(o.clone())),
            Command::Tls(o) => Some(Self::Tls(o.clone())),
        }
    }

    /// The default options of a kind, for forwards with no command.
    pub(crate) fn default_for(kind: EndpointKind) -> Self {
        match kind {
            EndpointKind::Http => Self::Http(Arc::default()),
            EndpointKind::Tcp => Self::Tcp(StreamOptions::default()),
            EndpointKind::Tls => Self::Tls(StreamOptions::default()),
        }
    }

    /// The endpoint kind.
    pub fn kind(&self) -> EndpointKind {
        match self {
            Self::Http(_) => EndpointKind::Http,
            Self::Tcp(_) => EndpointKind::Tcp,
            Self::Tls(_) => EndpointKind::Tls,
        }
    }

    /// The CIDR rules.
    pub fn access(&self) -> &AccessRules {
        match self {
            Self::Http(o) => &o.access,
            Self::Tcp(o) | Self::Tls(o) => &o.access,
        }
    }

    /// The PROXY protocol header to send, for tcp and tls.
    pub fn proxy_protocol(&self) -> Option<ProxyVersion> {
        match self {
            Self::Http(_) => None,
            Self::Tcp(o) | Self::Tls(o) => o.proxy_protocol,
        }
    }

    /// The http options, for http.
    pub fn http(&self) -> Option<&Arc<HttpOptions>> {
        match self {
            Self::Http(o) => Some(o),
            Self::Tcp(_) | Self::Tls(_) => None,
        }
    }
}

/// `http://name.domain:8080`, `tcp://domain:20007`, `tls://name.domain:8443`; an http endpoint
/// asked for on remote port 443 is shown as `https://`.
pub(crate) fn public_url(route: &Route, asked_port: u32, config: &GatewayConfig) -> String {
    let with_port = |scheme: &str, host: &str, port: u16, default: u16| {
        if port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{port}")
        }
    };
    match (&route.address, route.policy.kind()) {
        (Address::Port(port), _) => format!("tcp://{}:{port}", config.domain()),
        (Address::Name(name), EndpointKind::Tls) => {
            with_port("tls", name.as_str(), config.https_port(), 443)
        }
        (Address::Name(name), _) if asked_port == 443 => {
            with_port("https", name.as_str(), config.https_port(), 443)
        }
        (Address::Name(name), _) => with_port("http", name.as_str(), config.http_port(), 80),
    }
}

/// The one line a session gets for each endpoint:
/// `Forwarding <PUBLIC-URL> -> <BIND-ADDRESS>:<RPORT>`, the right side as the client asked.
pub(crate) fn forwarding_line(route: &Route, asked_port: u32, config: &GatewayConfig) -> String {
    let bind = &route.target.bind_address;
    let bind = if bind.contains(':') {
        format!("[{bind}]")
    } else {
        bind.clone()
    };
    format!(
        "Forwarding {} -> {bind}:{asked_port}",
        public_url(route, asked_port, config)
    )
}

/// `HTTP <METHOD> <PATH> -> <STATUS> (<MS> ms)`, with the visitor's text made safe for the
/// user's terminal.
pub(crate) fn inspect_line(method: &str, path: &str, status: u16, elapsed: Duration) -> String {
    const MAX_PATH: usize = 200;
    let mut safe_path = String::with_capacity(path.len().min(MAX_PATH));
    for (i, c) in path.chars().enumerate() {
        if i == MAX_PATH {
            safe_path.push_str("...");
            break;
        }
        if c.is_control() {
            safe_path.extend(c.escape_default());
        } else {
            safe_path.push(c);
        }
    }
    let safe_method: String = method
        .chars()
        .take(16)
        .filter(|c| c.is_ascii_graphic())
        .collect();
    format!(
        "HTTP {safe_method} {safe_path} -> {status} ({} ms)",
        elapsed.as_millis()
    )
}
