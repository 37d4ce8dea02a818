//! Every way a user's request can be refused. Display is the exact text the user reads: it names
//! the bad token. [`SessionError`] adds the pointer at `--help` that ends every refusal line.

use core::fmt;

use crate::command::EndpointKind;

/// Shows untrusted text inside an error line: control characters escaped (a hostile command line
/// must not move the user's cursor), long text cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown(pub String);

impl Shown {
    const MAX_CHARS: usize = 64;
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for (i, c) in self.0.chars().enumerate() {
            if i == Self::MAX_CHARS {
                return f.write_str("...\"");
            }
            if c.is_control() || c == '"' || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        f.write_str("\"")
    }
}

impl From<&str> for Shown {
    fn from(s: &str) -> Self {
        Shown(s.to_owned())
    }
}

/// A malformed exec command line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A `'` or `"` with no closing partner.
    #[error("unterminated {0} quote in the command line")]
    UnterminatedQuote(&'static str),
    /// The line ends in a lone backslash.
    #[error("the command line ends in a lone backslash")]
    TrailingBackslash,
    /// The first word is not a command.
    #[error(
        "unknown command {0} (the commands are http, tcp, tls, list, release, admin and help)"
    )]
    UnknownCommand(Shown),
    /// A flag came before any command.
    #[error("flag {0} needs a command before it (http, tcp or tls)")]
    MissingCommand(Shown),
    /// A flag this command does not know, or one that applies only to other commands.
    #[error("unknown flag {flag} for {command}{}", applies_to_note(.applies_to))]
    UnknownFlag {
        /// The flag as typed.
        flag: Shown,
        /// The command it was given to.
        command: EndpointKind,
        /// The commands it does apply to, if any.
        applies_to: &'static [EndpointKind],
    },
    /// `--flag` at the end of the line.
    #[error("flag {0} needs a value")]
    MissingValue(Shown),
    /// `--inspect=maybe`-style or a value given to a flag that takes none.
    #[error("invalid value {value} for {flag}: {reason}")]
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// The value as typed.
        value: Shown,
        /// What the value must look like.
        reason: &'static str,
    },
    /// A single-valued flag given twice.
    #[error("flag {0} given more than once")]
    Repeated(&'static str),
    /// A word that is neither a flag nor a flag's value.
    #[error("unexpected argument {0}")]
    UnexpectedArgument(Shown),
    /// `admin` without what to do, or `admin kick` without the connection.
    #[error("admin needs connections, endpoints or kick ID [REASON]")]
    MissingAdminCommand,
    /// `release` without the name or port to release.
    #[error("release needs the name or port to release (see: ssh HOST list)")]
    MissingName,
}

fn applies_to_note(kinds: &[EndpointKind]) -> String {
    match kinds {
        [] => String::new(),
        kinds => {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            format!(" (it applies to {})", names.join(", "))
        }
    }
}

/// A refused forward (`tcpip-forward` request) or endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The remote port does not fit the command's port rule.
    #[error("{kind} does not accept remote port {port} (it accepts {})", port_rule(*.kind, .tcp_range))]
    PortNotAllowed {
        /// The endpoint kind.
        kind: EndpointKind,
        /// The remote port asked for.
        port: u32,
        /// The server's tcp range, for the message.
        tcp_range: (u16, u16),
    },
    /// The fixed tcp port is held by another endpoint.
    #[error("tcp port {0} is in use")]
    PortInUse(u16),
    /// Every port of the range is held.
    #[error("no free tcp port left in {}-{}", .0.0, .0.1)]
    PortsExhausted((u16, u16)),
    /// The fixed tcp port is held for another key after its connection ended.
    #[error("tcp port {0} is reserved for its previous owner")]
    PortReserved(u16),
    /// The random name generator kept hitting held names.
    #[error("could not pick a free random name; try again")]
    NoFreeName,
    /// The host refused to bind the port (another program holds it).
    #[error("tcp port {0} could not be opened on the server")]
    BindFailed(u16),
    /// The name is live on another key's connection.
    #[error("name {0} is taken")]
    NameTaken(String),
    /// The name is held for another key after its connection ended.
    #[error("name {0} is reserved for its previous owner")]
    NameReserved(String),
    /// The bind address is not a usable name.
    #[error("invalid name {name}: {reason}")]
    NameInvalid {
        /// The bind address as sent.
        name: Shown,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A tls endpoint is routed by SNI, so it must have a name.
    #[error("a tls endpoint needs a name: use -R NAME:443:LHOST:LPORT")]
    TlsNeedsName,
    /// The connection already has the maximum number of endpoints.
    #[error("too many forwards on one connection (the limit is {0})")]
    TooManyEndpoints(usize),
    /// The key already has the maximum number of live connections.
    #[error("too many connections for this key (the limit is {0})")]
    TooManyConnections(usize),
    /// The name is under a name another key holds, or contains one: cookies set for one would
    /// reach the other.
    #[error("name {name} is {relation} {other}, which another key holds (the two sites could read each other's cookies)")]
    NameNested {
        /// The name asked for.
        name: String,
        /// `under` or `above`.
        relation: &'static str,
        /// The other key's name.
        other: String,
    },
    /// The key's `authorized_keys` line does not allow this forward (`restrict`,
    /// `no-port-forwarding`, or no `permitlisten` that matches).
    #[error("this key may not forward {0}:{1} (its authorized_keys line does not allow it)")]
    ForwardNotPermitted(Shown, u32),
    /// The certificate the client logged in with was signed without `permit-port-forwarding`
    /// (`ssh-keygen -O clear`), so it forwards nothing.
    #[error(
        "this certificate may not forward {0}:{1} (it was signed without permit-port-forwarding)"
    )]
    CertificateForbidsForwarding(Shown, u32),
    /// The key holds as many names as its quota allows.
    #[error("this key already holds {0} names (live, or reserved for its reconnects): that is its quota")]
    NameQuota(usize),
    /// The key holds as many tcp ports as its quota allows.
    #[error("this key already holds {0} tcp ports (live, or reserved for its reconnects): that is its quota")]
    TcpPortQuota(usize),
    /// The connection was not authenticated.
    #[error("the connection is not authenticated")]
    NotAuthenticated,
    /// The same bind address and port twice on one connection.
    #[error("remote forward {0}:{1} is already requested on this connection")]
    Duplicate(Shown, u32),
}

fn port_rule(kind: EndpointKind, range: &(u16, u16)) -> String {
    match kind {
        EndpointKind::Http => "80, 443 or 0".to_owned(),
        EndpointKind::Tls => "443 or 0".to_owned(),
        EndpointKind::Tcp => format!("0 or a port in {}-{}", range.0, range.1),
    }
}

/// Anything that ends a session with an error line, an exit status and a close.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The command line.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A forward.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The ssh user names a syntax version other than ours.
    #[error("syntax version {0} is not supported; this server speaks v2 (use v2@HOST or any other user)")]
    UnsupportedVersion(Shown),
    /// A command was given but the connection asked for no remote forward.
    #[error("no remote forward on this connection: add -R 80:localhost:PORT (http) or -R 0:localhost:PORT (tcp)")]
    NoForwards,
    /// The command arrived after the forwards were set up on defaults.
    #[error("the command arrived after the forwards were set up without one; reconnect")]
    CommandTooLate,
    /// A second exec or shell request on one connection.
    #[error("one command per connection")]
    SecondCommand,
    /// `admin ...` from a key the operator did not list in `--admin-keys`.
    #[error("admin commands need a key listed in the server's --admin-keys")]
    NotAnAdmin,
    /// `admin kick` of a connection the gateway does not have.
    #[error("no connection {0} (see: ssh HOST admin connections)")]
    NoSuchConnection(Shown),
    /// `release` of an address this key holds in no reservation.
    #[error("{0} is not reserved for your key (see: ssh HOST list)")]
    NotReserved(Shown),
    /// `release` of an address this key holds live: it goes with its connection or forward.
    #[error("{0} is live on one of your connections: end that connection to free it")]
    ReleaseLive(Shown),
}

impl SessionError {
    /// The one line the user reads on stderr.
    pub fn user_line(&self) -> String {
        format!("error: {self} (see --help: ssh HOST help)")
    }

    /// The session's exit status for this error: 2 for a malformed command line (as a shell
    /// does for usage errors), 1 for a refusal.
    pub fn exit_status(&self) -> u32 {
        match self {
            SessionError::Command(_) => 2,
            _ => 1,
        }
    }

    /// A short fixed name for the kind of refusal, for counting (metrics labels): never the
    /// user's text, so the set of names is bounded.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Command(_) => "bad_command",
            SessionError::Forward(e) => e.reason(),
            SessionError::UnsupportedVersion(_) => "unsupported_version",
            SessionError::NoForwards => "no_forwards",
            SessionError::CommandTooLate => "command_too_late",
            SessionError::SecondCommand => "second_command",
            SessionError::NotReserved(_) => "release_not_reserved",
            SessionError::ReleaseLive(_) => "release_live",
            SessionError::NotAnAdmin => "not_an_admin",
            SessionError::NoSuchConnection(_) => "no_such_connection",
        }
    }
}

impl ForwardError {
    /// A short fixed name for the kind of refusal (see [`SessionError::reason`]).
    pub fn reason(&self) -> &'static str {
        match self {
            ForwardError::PortNotAllowed { .. } => "port_not_allowed",
            ForwardError::PortInUse(_) => "port_in_use",
            ForwardError::PortsExhausted(_) => "ports_exhausted",
            ForwardError::PortReserved(_) => "port_reserved",
            ForwardError::NoFreeName => "no_free_name",
            ForwardError::BindFailed(_) => "bind_failed",
            ForwardError::NameTaken(_) => "name_taken",
            ForwardError::NameReserved(_) => "name_reserved",
            ForwardError::NameInvalid { .. } => "name_invalid",
            ForwardError::TlsNeedsName => "tls_needs_name",
            ForwardError::TooManyEndpoints(_) => "too_many_endpoints",
            ForwardError::TooManyConnections(_) => "too_many_connections",
            ForwardError::NameNested { .. } => "name_nested",
            ForwardError::ForwardNotPermitted(..) => "forward_not_permitted",
            ForwardError::CertificateForbidsForwarding(..) => "certificate_forbids_forwarding",
            ForwardError::NameQuota(_) => "name_quota",
            ForwardError::TcpPortQuota(_) => "tcp_port_quota",
            ForwardError::NotAuthenticated => "not_authenticated",
            ForwardError::Duplicate(..) => "duplicate",
        }
    }

    /// Whether this is a per-key quota or per-connection limit being hit (`name_quota`,
    /// `tcp_port_quota`, `too_many_endpoints`, `too_many_connections`).
    pub fn is_quota(&self) -> bool {
        matches!(
            self,
            ForwardError::NameQuota(_)
                | ForwardError::TcpPortQuota(_)
                | ForwardError::TooManyEndpoints(_)
                | ForwardError::TooManyConnections(_)
        )
    }
}
