//! Server configuration: command-line flags, an optional TOML file using the same names, and
//! built-in defaults, in that order of precedence.
//!
//! Each kind of value has one rule, a function in `values.rs`. The flags, the file's
//! `key = value` pairs (read as `--key=value`) and the defaults are parsed by clap with those
//! rules, one source at a time, so every source accepts and rejects exactly the same text and
//! an error names where the value came from.

mod error;
mod file;
mod settings;
mod values;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::FromArgMatches;
use tunnel_core::SpillLimits;

use crate::logging::LogFormat;

pub use error::{ConfigError, Origin, Setting};
pub use values::{ValueError, MIN_CHANNEL_WINDOW};

use settings::{parse, parse_pairs, Settings, DEFAULTS};

const HOST_KEY_FILE: &str = "host_key";
const SPILL_DIR: &str = "spill";

/// The resolved, validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The `--config` file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub ssh_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    /// Base domain, lowercase, without a trailing dot.
    pub domain: String,
    /// Ports tcp endpoints are allocated from; never contains 0.
    pub tcp_ports: RangeInclusive<u16>,
    pub state_dir: PathBuf,
    pub host_key: PathBuf,
    /// `None` is only possible when `ssh_addr` is loopback: then any key is accepted.
    pub authorized_keys: Option<PathBuf>,
    /// How often `authorized_keys` is checked for changes; `None` only on SIGHUP.
    pub authorized_keys_poll: Option<Duration>,
    /// How long names stay reserved for their key after its connection ends; zero turns
    /// reservation off.
    pub name_grace: Duration,
    /// Certificate and key for the https listener; `None` means a self-signed certificate.
    pub tls: Option<TlsFiles>,
    /// `None` disables keepalives (`--keepalive-interval 0`).
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the connection is closed; 0 never closes.
    pub keepalive_max: usize,
    /// Time a connection may take to authenticate; never zero.
    pub auth_timeout: Duration,
    /// Time a visitor has to send its HTTP request head; never zero.
    pub http_header_timeout: Duration,
    /// How long an HTTP visitor connection may stay quiet; never zero.
    pub http_idle_timeout: Duration,
    /// Time a visitor on the https listener has to send its ClientHello; never zero.
    pub tls_hello_timeout: Duration,
    /// Time a `forwarded-tcpip` channel open may take before the visitor gets 502 (http) or is
    /// closed; never zero.
    pub channel_open_timeout: Duration,
    /// After a session's exit status, time the client gets to hang up; never zero.
    pub close_grace: Duration,
    /// On SIGTERM or ctrl-c, how long visitors in flight get to finish before the connections close.
    pub shutdown_grace: Duration,
    pub max_endpoints_per_connection: usize,
    pub max_connections_per_key: usize,
    pub max_unauthenticated_per_ip: usize,
    /// Visitor connections one endpoint serves at once; more get 503 (http) or are closed.
    pub max_visitors_per_endpoint: usize,
    /// Random early drop of new connections while many are unauthenticated.
    pub max_startups: tunnel_core::Startups,
    /// Of an endpoint's visitors, how many may come from one source at once.
    pub max_visitors_per_source: usize,
    /// Visitors the whole server serves at once.
    pub max_visitors: usize,
    /// Connections to the http and https listeners one source may hold open at once.
    pub max_visitor_connections_per_source: usize,
    /// Names one key may hold, live or reserved.
    pub max_names_per_key: usize,
    /// Tcp ports one key may hold, live or reserved.
    pub max_tcp_ports_per_key: usize,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Connections from `trusted_proxies` start with a PROXY protocol header; never set without
    /// any trusted proxy.
    pub accept_proxy_proto: bool,
    /// Keys with a quota of their own.
    pub key_quotas: Vec<(tunnel_core::KeyFingerprint, tunnel_core::KeyQuota)>,
    /// SSH channel window in bytes, at least [`MIN_CHANNEL_WINDOW`].
    pub channel_window: u32,
    /// Where slow visitors' waiting data is spilled (unlinked files).
    pub spill_dir: PathBuf,
    /// What slow visitors may make the server hold, in memory and on disk.
    pub spill: SpillLimits,
    /// How the log on stderr is written.
    pub log_format: LogFormat,
    /// Whether each visitor connection gets an access log line when it ends.
    pub access_log: bool,
    /// The admin listener, if any.
    pub admin_addr: Option<SocketAddr>,
    /// The file holding the admin listener's bearer token; always set with a non-loopback
    /// `admin_addr`.
    pub admin_token_file: Option<PathBuf>,
    /// Per-endpoint series in `/metrics`.
    pub metrics_per_endpoint: bool,
    /// Keys that may run `ssh HOST admin ...`.
    pub admin_keys: Option<PathBuf>,
}

/// `--tls-cert` and `--tls-key`, which are only valid together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerConfig {
    /// Parses `args` (program name first, as from [`std::env::args_os`]), reads the `--config`
    /// file if one is given, and validates the result.
    ///
    /// Relative paths, in flags or in the file, are relative to the working directory.
    /// `--help` and `--version` come back as [`ConfigError::Clap`]; see its docs.
    pub fn from_args<I, T>(args: I) -> Result<ServerConfig, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let flags = parse(args, Origin::Flag)?;
        let config_file = settings::config_file(&flags);
        let defaults = parse_pairs(DEFAULTS.iter().copied(), Origin::Default)?;
        let mut settings = Settings::from_arg_matches(&defaults)?;
        // Each update sets only what its source gave: flag over file over default.
        if let Some(path) = &config_file {
            let file = parse_pairs(file::read(path)?, Origin::File(path.clone()))?;
            settings.update_from_arg_matches(&file)?;
        }
        settings.update_from_arg_matches(&flags)?;
        resolve(config_file, settings)
    }
}

/// The `--config` file's settings as written (key, value), for telling later which of them a
/// re-read changes.
pub fn file_settings(path: &std::path::Path) -> Result<Vec<(String, String)>, ConfigError> {
    file::read(path)
}

/// The keys whose values differ between two readings of the config file (added, removed or
/// changed), in order.
pub fn changed_settings(before: &[(String, String)], after: &[(String, String)]) -> Vec<String> {
    let values = |pairs: &[(String, String)], key: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut keys: Vec<&str> = before
        .iter()
        .chain(after)
        .map(|(k, _)| k.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|key| values(before, key) != values(after, key))
        .map(str::to_owned)
        .collect()
}

/// When a setting changed in the `--config` file takes effect on a running server (SIGHUP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// At once, for every connection, visitor, request or decision from now on; what is in
    /// flight keeps what it started with, and nobody is disconnected.
    Live,
    /// For endpoints created from now on (live endpoints keep the visitor limits they started
    /// with).
    NewEndpoints,
    /// At the next restart: it shapes listeners, names, files or sessions that exist.
    Restart,
}

/// Settings a running server takes at once ([`Reload::Live`]).
const RELOAD_LIVE: &[&str] = &[
    "max-endpoints-per-connection",
    "max-connections-per-key",
    "max-unauthenticated-per-ip",
    "max-startups",
    "max-visitors",
    "max-visitor-connections-per-source",
    "max-names-per-key",
    "max-tcp-ports-per-key",
    "key-quota",
    "name-grace",
    "auth-timeout",
    "http-header-timeout",
    "http-idle-timeout",
    "tls-hello-timeout",
    "channel-open-timeout",
    "close-grace",
    "shutdown-grace",
    "trusted-proxies",
    "accept-proxy-proto",
    "access-log",
    "admin-keys",
    "admin-token-file",
];

/// Settings a running server takes for endpoints created later ([`Reload::NewEndpoints`]).
const RELOAD_NEW_ENDPOINTS: &[&str] = &["max-visitors-per-endpoint", "max-visitors-per-source"];

/// When a change to the setting `key` (as written in the file) takes effect.
pub fn reload_of(key: &str) -> Reload {
    if RELOAD_LIVE.contains(&key) {
        Reload::Live
    } else if RELOAD_NEW_ENDPOINTS.contains(&key) {
        Reload::NewEndpoints
    } else {
        Reload::Restart
    }
}

/// Checks the rules that involve several settings.
fn resolve(config_file: Option<PathBuf>, s: Settings) -> Result<ServerConfig, ConfigError> {
    let tls = match (s.tls_cert, s.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError::TlsCertWithoutKey),
        (None, Some(_)) => return Err(ConfigError::TlsKeyWithoutCert),
    };
    // Without an allow-list every key is accepted, which is only safe when nobody else can
    // reach the listener.
    if s.authorized_keys.is_none() && !is_loopback(s.ssh_addr.ip()) {
        return Err(ConfigError::OpenWithoutAuthorizedKeys { addr: s.ssh_addr });
    }
    // A header is read only from a trusted proxy: with none, the flag would do nothing, which is
    // surely not what the operator meant.
    if s.accept_proxy_proto && s.trusted_proxies.is_empty() {
        return Err(ConfigError::ProxyProtoWithoutTrustedProxies);
    }
    // The admin API kicks users and frees names: off loopback, only with a token.
    if let Some(addr) = s.admin_addr {
        if !is_loopback(addr.ip()) && s.admin_token_file.is_none() {
            return Err(ConfigError::AdminWithoutToken { addr });
        }
    }
    let spill_dir = s.spill_dir.unwrap_or_else(|| s.state_dir.join(SPILL_DIR));
    Ok(ServerConfig {
        config_file,
        ssh_addr: s.ssh_addr,
        http_addr: s.http_addr,
        https_addr: s.https_addr,
        domain: s.domain,
        tcp_ports: s.tcp_ports,
        host_key: s
            .host_key
            .unwrap_or_else(|| s.state_dir.join(HOST_KEY_FILE)),
        state_dir: s.state_dir,
        authorized_keys: s.authorized_keys,
        authorized_keys_poll: Some(s.authorized_keys_poll).filter(|every| !every.is_zero()),
        name_grace: s.name_grace,
        tls,
        keepalive_interval: Some(s.keepalive_interval).filter(|interval| !interval.is_zero()),
        keepalive_max: s.keepalive_max,
        auth_timeout: s.auth_timeout,
        http_header_timeout: s.http_header_timeout,
        http_idle_timeout: s.http_idle_timeout,
        tls_hello_timeout: s.tls_hello_timeout,
        channel_open_timeout: s.channel_open_timeout,
        close_grace: s.close_grace,
        shutdown_grace: s.shutdown_grace,
        max_endpoints_per_connection: s.max_endpoints_per_connection,
        max_connections_per_key: s.max_connections_per_key,
        max_unauthenticated_per_ip: s.max_unauthenticated_per_ip,
        max_visitors_per_endpoint: s.max_visitors_per_endpoint,
        max_startups: s.max_startups,
        max_visitors_per_source: s.max_visitors_per_source,
        max_visitors: s.max_visitors,
        max_visitor_connections_per_source: s.max_visitor_connections_per_source,
        max_names_per_key: s.max_names_per_key,
        max_tcp_ports_per_key: s.max_tcp_ports_per_key,
        key_quotas: s.key_quota,
        trusted_proxies: s.trusted_proxies,
        accept_proxy_proto: s.accept_proxy_proto,
        channel_window: s.channel_window,
        spill_dir,
        spill: SpillLimits::new(
            s.spill_memory_per_visitor,
            s.spill_max_per_visitor,
            s.spill_max_total,
        ),
        log_format: s.log_format,
        access_log: s.access_log,
        admin_addr: s.admin_addr,
        admin_token_file: s.admin_token_file,
        metrics_per_endpoint: s.metrics_per_endpoint,
        admin_keys: s.admin_keys,
    })
}

fn is_loopback(ip: IpAddr) -> bool {
    // to_canonical: ::ffff:127.0.0.1 is loopback too.
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests;
