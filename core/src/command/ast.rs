//! The typed form of an exec command line. Every value in it has been validated by the grammar,
//! so holding one of these is proof the user asked for something meaningful.

use core::fmt;

use ipnet::IpNet;

/// What the user asked the session to do, as [`parse_command_line`](super::parse_command_line)
/// read it. More commands may come, so a match needs a catch-all arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `help`, `--help` or `-h` anywhere: print usage and exit 0.
    Help,
    /// `http [FLAGS]`: an HTTP endpoint routed by Host header.
    Http(HttpOptions),
    /// `tcp [FLAGS]`: a TCP endpoint on a public port of its own.
    Tcp(StreamOptions),
    /// `tls [FLAGS]`: a TLS endpoint routed by SNI and passed through unterminated.
    Tls(StreamOptions),
    /// `list`: print the caller's own endpoints and reservations and exit 0.
    List,
    /// `release NAME|PORT`: drop one of the caller's reservations and exit.
    Release(String),
    /// `admin connections|endpoints|kick ID [REASON...]`: for keys the operator lists.
    Admin(AdminCommand),
}

/// What an operator asks over SSH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Every connection, with its key, peer, age and endpoints.
    Connections,
    /// Every live endpoint, with its URL and key.
    Endpoints,
    /// Close a connection (the number `admin connections` shows), telling its user why.
    Kick {
        /// The connection's number.
        conn: u64,
        /// What its user reads, if the operator says.
        reason: Option<String>,
    },
}

impl Command {
    /// The endpoint kind this command creates, `None` for `help`.
    pub fn kind(&self) -> Option<EndpointKind> {
        match self {
            Command::Help | Command::List | Command::Release(_) | Command::Admin(_) => None,
            Command::Http(_) => Some(EndpointKind::Http),
            Command::Tcp(_) => Some(EndpointKind::Tcp),
            Command::Tls(_) => Some(EndpointKind::Tls),
        }
    }
}

/// The three kinds of endpoint, named as the user types them.
// Exhaustive on purpose: the adapter serves each kind, so a new one should not compile there until
// it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointKind {
    /// Routed by Host header (or SNI on the https listener, terminated there).
    Http,
    /// A listening port of its own.
    Tcp,
    /// Routed by ClientHello SNI on the https listener and passed through untouched.
    Tls,
}

impl EndpointKind {
    /// The command word (`http`, `tcp`, `tls`), which is also how messages name the kind.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Http => "http",
            EndpointKind::Tcp => "tcp",
            EndpointKind::Tls => "tls",
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flags of `http`; the default is what a bare `http` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// `--basic-auth user:pass`, repeatable; empty means no authentication.
    pub basic_auth: Vec<Credentials>,
    /// `--cidr-allow` / `--cidr-deny`.
    pub access: AccessRules,
    /// `--host-header`.
    pub host_header: HostHeader,
    /// `--request-header-add` / `--request-header-remove`.
    pub request_headers: HeaderEdits,
    /// `--response-header-add` / `--response-header-remove`.
    pub response_headers: HeaderEdits,
    /// `--inspect` (default on): one stdout line per request.
    pub inspect: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            basic_auth: Vec::new(),
            access: AccessRules::default(),
            host_header: HostHeader::Preserve,
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            inspect: true,
        }
    }
}

/// Flags of `tcp` and `tls`; the default is what a bare `tcp` or `tls` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `--cidr-allow` / `--cidr-deny`.
    pub access: AccessRules,
    /// `--proxy-proto 1|2`; `None` sends the stream with no header.
    pub proxy_protocol: Option<ProxyVersion>,
}

/// One `--basic-auth user:pass`. The user is never empty and never contains `:`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl Credentials {
    /// The user name. The password has no getter: [`basic_auth_allows`](crate::basic_auth_allows)
    /// checks it, in constant time.
    pub fn user(&self) -> &str {
        &self.user
    }
}

// Never print a password, not even in a debug log.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// `--cidr-allow` / `--cidr-deny` rules, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// Networks allowed; when non-empty, only these pass.
    pub allow: Vec<IpNet>,
    /// Networks refused; deny wins over allow.
    pub deny: Vec<IpNet>,
}

/// `--host-header`: what Host the local service sees. More modes may come, so a match needs a
/// catch-all arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostHeader {
    /// Pass the visitor's Host unchanged (the default).
    Preserve,
    /// Host becomes the local service's address. OpenSSH never tells the server LHOST:LPORT
    /// (RFC 4254 §7.1 carries only the bind address and remote port), so this is `localhost`.
    Rewrite,
    /// Host becomes this literal `host[:port]`.
    Literal(String),
}

/// A validated HTTP field name (RFC 9110 §5.1 token), kept in the case the user typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderName(pub(crate) String);

impl HeaderName {
    /// The name as typed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Header edits for one direction, applied as: remove every listed name, then add.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// `--*-header-add 'K: V'`: the value is visible ASCII, spaces and tabs, no CR or LF.
    pub add: Vec<(HeaderName, String)>,
    /// `--*-header-remove K`.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// True when there is nothing to do, so the data path can skip the header walk.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// `--proxy-proto`: which PROXY protocol header precedes the stream.
// Exhaustive on purpose: the adapter encodes each version, so a new one should not compile there
// until it is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}
