//! Visitors: which endpoint a visitor on a public listener reaches, and what it is told when it
//! is not served. The adapter only carries the answers out: the text of every page a visitor
//! reads is here.

use core::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::endpoints::Route;
use crate::policy::basic_auth_allows;

/// The public listener a visitor arrived on, for routing by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entrance {
    /// The plain HTTP listener: routed by Host, serves http endpoints only.
    Http,
    /// The HTTPS listener: routed by the ClientHello's SNI, serves http endpoints (terminated
    /// here) and tls endpoints (passed through).
    Https,
}

/// Why a visitor is not served. Display is the text a visitor reads (the body of an HTTP
/// answer); [`VisitorRefusal::http_status`] is its status. tcp and tls visitors are closed, and
/// a tls visitor that reaches no endpoint gets an `unrecognized_name` alert instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VisitorRefusal {
    /// A request with no Host header and no absolute-form target (RFC 9112 §3.2).
    #[error("missing Host header")]
    MissingHost,
    /// A request with more than one Host header (RFC 9112 §3.2).
    #[error("more than one Host header")]
    SeveralHosts,
    /// A Host header that is empty or not text.
    #[error("invalid Host header")]
    InvalidHost,
    /// The server's own name (DOMAIN): not an endpoint, but the server's page (status 200),
    /// which tells a visitor what this server is and a user how to connect.
    #[error("{0}")]
    Home(String),
    /// No live endpoint has this name, under this server's domain.
    #[error("no tunnel for {0}")]
    UnknownHost(String),
    /// A name outside this server's domain.
    #[error("no tunnel for {0}")]
    Foreign(String),
    /// The name belongs to an endpoint this listener does not serve (a tls name over plain HTTP).
    #[error("{0} is not an http tunnel")]
    NotHttp(String),
    /// No live tcp endpoint listens on this port.
    #[error("no tunnel on port {0}")]
    UnknownPort(u16),
    /// `--cidr-allow` / `--cidr-deny` keep this visitor out.
    #[error("forbidden")]
    Forbidden,
    /// `--basic-auth` credentials missing or wrong.
    #[error("authentication required")]
    Unauthorized,
    /// The endpoint serves as many visitors as `--max-visitors-per-endpoint` allows.
    #[error("this tunnel is serving too many requests; try again")]
    Busy,
    /// The user's SSH client refused the channel (most often: nothing listens on LHOST:LPORT).
    #[error("the tunnel's local service refused the connection")]
    LocalServiceRefused,
    /// The user's SSH client did not answer the channel open in time.
    #[error("the tunnel did not answer in time")]
    TunnelTimedOut,
    /// The channel closed before an HTTP exchange could start on it.
    #[error("the tunnel closed")]
    TunnelClosed,
    /// The channel closed before the local service sent its answer.
    #[error("the tunnel closed before the local service answered")]
    NoAnswer,
}

impl VisitorRefusal {
    /// The HTTP status of the answer.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::MissingHost | Self::SeveralHosts | Self::InvalidHost => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::Home(_) => 200,
            Self::UnknownHost(_) | Self::Foreign(_) | Self::NotHttp(_) | Self::UnknownPort(_) => {
                404
            }
            Self::LocalServiceRefused
            | Self::TunnelTimedOut
            | Self::TunnelClosed
            | Self::NoAnswer => 502,
            Self::Busy => 503,
        }
    }

    /// The `WWW-Authenticate` challenge that goes with a 401 (RFC 7617 §2), for
    /// [`VisitorRefusal::Unauthorized`] only.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            Self::Unauthorized => Some("Basic realm=\"tunnel\", charset=\"UTF-8\""),
            _ => None,
        }
    }

    /// The whole body of the HTTP answer: the text and a newline.
    pub fn page(&self) -> String {
        match self {
            Self::Home(page) => page.clone(),
            other => format!("{other}\n"),
        }
    }

    /// Whether an https visitor refused this way is still answered over TLS, with the server's
    /// certificate, so a browser shows the page: names under DOMAIN (the certificate covers
    /// them) are; a name outside it gets the `unrecognized_name` alert.
    pub fn answered_over_tls(&self) -> bool {
        matches!(self, Self::Home(_) | Self::UnknownHost(_))
    }
}

/// Where a visitor comes from, for its share of an endpoint and of the server: one IPv4 address,
/// or one IPv6 /64 (what one customer of a provider is usually given, so one client cannot
/// multiply itself by its addresses). IPv4-mapped IPv6 addresses are their IPv4 address.
pub fn visitor_source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The host an HTTP request is for: the absolute-form target's authority first, else its one
/// Host header (RFC 9112 §3.2: none, several, or an unreadable one is refused with a 400).
pub fn request_host<'a>(
    authority: Option<&'a str>,
    host_headers: impl IntoIterator<Item = &'a [u8]>,
) -> Result<&'a str, VisitorRefusal> {
    if let Some(authority) = authority {
        return Ok(authority);
    }
    let mut hosts = host_headers.into_iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => std::str::from_utf8(host)
            .ok()
            .filter(|h| !h.trim().is_empty())
            .ok_or(VisitorRefusal::InvalidHost),
        (None, _) => Err(VisitorRefusal::MissingHost),
        (Some(_), Some(_)) => Err(VisitorRefusal::SeveralHosts),
    }
}

impl Route {
    /// Whether a tcp or tls visitor from `peer` may have a channel (`--cidr-allow/--cidr-deny`).
    pub fn admit_connection(&self, peer: IpAddr) -> Result<(), VisitorRefusal> {
        if self.policy.access().allows(peer) {
            Ok(())
        } else {
            Err(VisitorRefusal::Forbidden)
        }
    }

    /// Whether an HTTP request from `peer` with this `Authorization` header may pass: the CIDR
    /// rules first (403), then `--basic-auth` (401).
    pub fn admit_request(
        &self,
        peer: IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<(), VisitorRefusal> {
        self.admit_connection(peer)?;
        let credentials = self.policy.http().map_or(&[][..], |o| &o.basic_auth[..]);
        if basic_auth_allows(credentials, authorization) {
            Ok(())
        } else {
            Err(VisitorRefusal::Unauthorized)
        }
    }

    /// Whether the session wants an `--inspect` line per request: send
    /// [`Input::HttpRequestCompleted`](crate::Input::HttpRequestCompleted) only when this is true.
    pub fn logs_requests(&self) -> bool {
        self.policy.http().is_some_and(|o| o.inspect)
    }

    /// How many of the endpoint's visitors may come from one source ([`visitor_source`]) at
    /// once; one more from it is refused with [`VisitorRefusal::Busy`].
    pub fn visitor_share(&self) -> usize {
        self.visitor_share.min(self.visitor_limit)
    }

    /// How many visitors the endpoint serves at once (tcp and tls connections, HTTP requests in
    /// flight); one more is refused with [`VisitorRefusal::Busy`].
    pub fn visitor_limit(&self) -> usize {
        self.visitor_limit
    }
}

/// The proxies in front of the server whose forwarding headers are believed (`--trusted-proxies`),
/// and whether they also put a PROXY protocol header before each connection they pass on
/// (`--accept-proxy-proto`). Anyone else is the first hop: what it says about earlier hops is its
/// own invention.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    proxy_protocol: bool,
}

impl TrustedProxies {
    /// These networks' proxies are believed.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self {
            networks,
            proxy_protocol: false,
        }
    }

    /// Every connection from these proxies starts with a PROXY protocol header naming the
    /// visitor (see [`ProxyHeaderReader`](crate::ProxyHeaderReader)).
    pub fn with_proxy_protocol(mut self, proxy_protocol: bool) -> Self {
        self.proxy_protocol = proxy_protocol;
        self
    }

    /// Whether a visitor connecting from `peer` is a proxy we believe. IPv4-mapped IPv6
    /// addresses are judged as IPv4.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.networks.iter().any(|net| net.contains(&peer))
    }

    /// Whether a connection accepted from `peer`, on any of the server's listeners, must start
    /// with a PROXY protocol header: only when the operator said so, and only from a proxy we
    /// believe. It is read before anything else, its visitor replaces `peer` for everything
    /// after (caps, key rules, forwarding headers, logs), and a connection without a valid one
    /// is closed. Anyone else's bytes are never read as a header.
    pub fn sends_proxy_header(&self, peer: IpAddr) -> bool {
        self.proxy_protocol && self.trusts(peer)
    }

    /// Whether connections from `peer` count against one source's connection budget
    /// ([`Limits::admits_visitor_connection`](crate::Limits::admits_visitor_connection)): a
    /// believed load balancer carries many visitors, so it is not one source.
    pub fn is_one_source(&self, peer: IpAddr) -> bool {
        !self.trusts(peer)
    }

    /// The `X-Forwarded-For` the local service gets: from a believed proxy, its list with the
    /// proxy appended; from anyone else, the visitor's address alone, so that an application
    /// reading the leftmost value sees an address nobody chose. When this answers with the
    /// visitor alone, `Forwarded` and `X-Real-IP` from the visitor go too.
    pub fn forwarded_for(&self, peer: IpAddr, earlier: Option<&str>) -> String {
        let peer_text = peer.to_canonical().to_string();
        match earlier.map(str::trim) {
            Some(earlier) if !earlier.is_empty() && self.trusts(peer) => {
                format!("{earlier}, {peer_text}")
            }
            _ => peer_text,
        }
    }
}

impl fmt::Display for Entrance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entrance::Http => "http",
            Entrance::Https => "https",
        })
    }
}
