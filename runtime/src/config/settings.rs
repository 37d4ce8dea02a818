//! The settings as flags: names, help and the rule for each value. The defaults and the config
//! file are read as these same flags, each source parsed on its own so that a refused value's
//! error can say where it came from.

use std::error::Error as _;
use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::iter;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Arg, ArgMatches, Args, Command, CommandFactory, Parser};
use thiserror::Error;

use super::values::{self, ValueError};
use super::{ConfigError, Origin, Setting};

#[derive(Debug, Parser)]
#[command(
    name = "tunnel-server",
    version,
    about = "Self-hostable SSH reverse-tunnel gateway: users run `ssh -R` to publish local services."
)]
struct Cli {
    /// TOML file with any of the settings below, named without "--" (e.g. ssh-addr = "0.0.0.0:22"); flags win over it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,
}

// Settings without `Option` always have a value: [`DEFAULTS`] gives one. (A `///` doc here
// would replace the `--help` description, as clap flattens it into the command.)
#[derive(Debug, Args)]
pub(super) struct Settings {
    /// SSH listen address [default: 127.0.0.1:2222]
    #[arg(long, value_name = "ADDR", value_parser = Rule(values::addr))]
    pub ssh_addr: SocketAddr,
    /// HTTP listen address [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", value_parser = Rule(values::addr))]
    pub http_addr: SocketAddr,
    /// HTTPS listen address [default: 127.0.0.1:8443]
    #[arg(long, value_name = "ADDR", value_parser = Rule(values::addr))]
    pub https_addr: SocketAddr,
    /// Base domain; endpoints get NAME.DOMAIN [default: localhost]
    #[arg(long, value_name = "DOMAIN", value_parser = Rule(values::domain))]
    pub domain: String,
    /// Port range for tcp endpoints [default: 20000-20999]
    #[arg(long, value_name = "LO-HI", value_parser = Rule(values::port_range))]
    pub tcp_ports: RangeInclusive<u16>,
    /// Directory for the host key and generated certificates [default: ./tunnel-state]
    #[arg(long, value_name = "DIR", value_parser = Rule(values::path))]
    pub state_dir: PathBuf,
    /// SSH host key, generated if missing [default: STATE_DIR/host_key]
    #[arg(long, value_name = "PATH", value_parser = Rule(values::path))]
    pub host_key: Option<PathBuf>,
    /// OpenSSH authorized_keys file; required unless --ssh-addr is loopback [default: accept any key]
    #[arg(long, value_name = "PATH", value_parser = Rule(values::path))]
    pub authorized_keys: Option<PathBuf>,
    /// How often the authorized_keys file is checked for changes; 0 re-reads it only on SIGHUP [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::duration))]
    pub authorized_keys_poll: Duration,
    /// How long a name stays reserved for its key after disconnect; 0 turns it off [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::duration))]
    pub name_grace: Duration,
    /// Certificate chain (PEM) for the HTTPS listener; needs --tls-key [default: self-signed]
    #[arg(long, value_name = "PATH", value_parser = Rule(values::path))]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert
    #[arg(long, value_name = "PATH", value_parser = Rule(values::path))]
    pub tls_key: Option<PathBuf>,
    /// Idle time before an SSH keepalive is sent; 0 turns keepalives off [default: 15s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::duration))]
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before disconnecting; 0 never disconnects [default: 3]
    #[arg(long, value_name = "N", value_parser = Rule(values::count))]
    pub keepalive_max: usize,
    /// Time allowed to authenticate after connecting [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::timeout))]
    pub auth_timeout: Duration,
    /// Time a visitor has to send its HTTP request head [default: 20s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::timeout))]
    pub http_header_timeout: Duration,
    /// How long an HTTP visitor connection may stay quiet (before its first request, between requests, mid-body); upgraded streams are exempt [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::timeout))]
    pub http_idle_timeout: Duration,
    /// Time a visitor on the HTTPS listener has to send its TLS ClientHello, and a trusted proxy its PROXY header (--accept-proxy-proto) [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::timeout))]
    pub tls_hello_timeout: Duration,
    /// Time a visitor's channel may take to open before it gets 502 (http) or is closed [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::timeout))]
    pub channel_open_timeout: Duration,
    /// Time the client gets to hang up after its session's exit status [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::timeout))]
    pub close_grace: Duration,
    /// On SIGTERM or ctrl-c, time visitors in flight get to finish before every connection is closed; 0 closes at once [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = Rule(values::duration))]
    pub shutdown_grace: Duration,
    /// Endpoints one SSH connection may hold [default: 64]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_endpoints_per_connection: usize,
    /// Simultaneous SSH connections per key [default: 1024]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_connections_per_key: usize,
    /// Simultaneous not-yet-authenticated connections per client IP [default: 64]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_unauthenticated_per_ip: usize,
    /// Visitor connections one endpoint serves at once; more get 503 (http) or are closed [default: 1024]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_visitors_per_endpoint: usize,
    /// Random early drop of new SSH connections while many are unauthenticated, as OpenSSH's MaxStartups [default: 100:30:1000]
    #[arg(long, value_name = "START:RATE:FULL", value_parser = Rule(values::startups))]
    pub max_startups: tunnel_core::Startups,
    /// Of an endpoint's visitors, how many may come from one IPv4 address or IPv6 /64 at once [default: 128]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_visitors_per_source: usize,
    /// Visitors the whole server serves at once; past it new ones get 503 or are closed [default: 16384]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_visitors: usize,
    /// Connections to the http and https listeners one IPv4 address or IPv6 /64 may hold open at once; one more is closed at once [default: 128]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_visitor_connections_per_source: usize,
    /// Names one key may hold, live or reserved for its reconnects [default: 64]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_names_per_key: usize,
    /// Tcp ports one key may hold, live or reserved for its reconnects [default: 16]
    #[arg(long, value_name = "N", value_parser = Rule(values::limit))]
    pub max_tcp_ports_per_key: usize,
    /// A load balancer in front of this server whose X-Forwarded-For is appended to instead of replaced, repeatable
    #[arg(long, value_name = "CIDR", value_parser = Rule(values::cidr), action = clap::ArgAction::Append)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Connections from --trusted-proxies must start with a PROXY protocol header (v1 or v2) whose visitor stands for them, on every listener [default: false]
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = Rule(values::switch))]
    pub accept_proxy_proto: bool,
    /// One key's own quota in place of the two above, repeatable (in the file: a list)
    #[arg(long, value_name = "SHA256:FP=NAMES,PORTS", value_parser = Rule(values::key_quota), action = clap::ArgAction::Append)]
    pub key_quota: Vec<(tunnel_core::KeyFingerprint, tunnel_core::KeyQuota)>,
    /// SSH channel window in bytes (KiB/MiB/GiB suffixes allowed), at least 2MiB [default: 8MiB]
    #[arg(long, value_name = "BYTES", value_parser = Rule(values::channel_window))]
    pub channel_window: u32,
    /// Directory for the unlinked files that hold data slow visitors have not read yet [default: STATE_DIR/spill]
    #[arg(long, value_name = "DIR", value_parser = Rule(values::path))]
    pub spill_dir: Option<PathBuf>,
    /// Data one visitor may have waiting in memory before it goes to disk [default: 256KiB]
    #[arg(long, value_name = "BYTES", value_parser = Rule(values::byte_size))]
    pub spill_memory_per_visitor: u64,
    /// Data one visitor may have waiting on disk; past it the visitor is cut [default: 1GiB]
    #[arg(long, value_name = "BYTES", value_parser = Rule(values::byte_size))]
    pub spill_max_per_visitor: u64,
    /// Data all visitors may have waiting on disk; past it the largest is cut [default: 8GiB]
    #[arg(long, value_name = "BYTES", value_parser = Rule(values::byte_size))]
    pub spill_max_total: u64,
    /// Log format on stderr: text, or json (one object per line) [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = Rule(values::log_format))]
    pub log_format: crate::logging::LogFormat,
    /// One log line per visitor connection when it ends, on the target "access" [default: false]
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = Rule(values::switch))]
    pub access_log: bool,
    /// Admin listener (JSON API, status page, /metrics); a non-loopback address needs --admin-token-file [default: off]
    #[arg(long, value_name = "ADDR", value_parser = Rule(values::addr))]
    pub admin_addr: Option<SocketAddr>,
    /// File whose content (trimmed) is the token the admin listener requires as "Authorization: Bearer TOKEN"
    #[arg(long, value_name = "FILE", value_parser = Rule(values::path))]
    pub admin_token_file: Option<PathBuf>,
    /// Per-endpoint series (labelled with each name or port) in /metrics, beside the per-kind ones [default: false]
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = Rule(values::switch))]
    pub metrics_per_endpoint: bool,
    /// OpenSSH authorized_keys-format file of the keys that may run `ssh HOST admin ...` (they must also be let in by --authorized-keys) [default: none]
    #[arg(long, value_name = "PATH", value_parser = Rule(values::path))]
    pub admin_keys: Option<PathBuf>,
}

/// The built-in defaults, parsed like flags. Each flag's help repeats its default (a test
/// checks they agree).
pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("ssh-addr", "127.0.0.1:2222"),
    ("http-addr", "127.0.0.1:8080"),
    ("https-addr", "127.0.0.1:8443"),
    ("domain", "localhost"),
    ("tcp-ports", "20000-20999"),
    ("state-dir", "./tunnel-state"),
    ("authorized-keys-poll", "1s"),
    ("name-grace", "10m"),
    ("keepalive-interval", "15s"),
    ("keepalive-max", "3"),
    ("auth-timeout", "30s"),
    ("http-header-timeout", "20s"),
    ("http-idle-timeout", "60s"),
    ("tls-hello-timeout", "10s"),
    ("channel-open-timeout", "10s"),
    ("close-grace", "5s"),
    ("shutdown-grace", "10s"),
    ("max-endpoints-per-connection", "64"),
    ("max-connections-per-key", "1024"),
    ("max-unauthenticated-per-ip", "64"),
    ("max-visitors-per-endpoint", "1024"),
    ("max-startups", "100:30:1000"),
    ("max-visitors-per-source", "128"),
    ("max-visitors", "16384"),
    ("max-visitor-connections-per-source", "128"),
    ("max-names-per-key", "64"),
    ("max-tcp-ports-per-key", "16"),
    ("accept-proxy-proto", "false"),
    ("channel-window", "8MiB"),
    ("spill-memory-per-visitor", "256KiB"),
    ("spill-max-per-visitor", "1GiB"),
    ("spill-max-total", "8GiB"),
    ("log-format", "text"),
    ("access-log", "false"),
    ("metrics-per-endpoint", "false"),
];

/// The command every source is parsed with. No flag is required: the defaults are a source of
/// their own.
pub(super) fn command() -> Command {
    Cli::command().mut_args(|arg| arg.required(false))
}

/// The `--config` flag's value.
pub(super) fn config_file(flags: &ArgMatches) -> Option<PathBuf> {
    flags.get_one::<PathBuf>("config").cloned()
}

/// Parses one source's arguments, program name first. A refused value becomes
/// [`ConfigError::Invalid`] naming the flag and `origin`; anything else is clap's own error.
pub(super) fn parse<I, T>(args: I, origin: Origin) -> Result<ArgMatches, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    command().try_get_matches_from(args).map_err(|error| {
        let Some(refused) = error.source().and_then(|e| e.downcast_ref::<Refused>()) else {
            return ConfigError::Clap(error);
        };
        ConfigError::Invalid {
            setting: Setting {
                name: refused.flag.clone(),
                value: refused.text.clone(),
                origin,
            },
            problem: refused.problem,
        }
    })
}

/// Parses `key = value` pairs as the flags `--key=value`.
pub(super) fn parse_pairs(
    pairs: impl IntoIterator<Item = (impl Display, impl Display)>,
    origin: Origin,
) -> Result<ArgMatches, ConfigError> {
    let flags = pairs
        .into_iter()
        .map(|(key, value)| format!("--{key}={value}"));
    parse(iter::once("tunnel-server".to_owned()).chain(flags), origin)
}

/// The long flag names, which are also the file keys.
pub(super) fn known_keys() -> Vec<String> {
    command()
        .get_arguments()
        .filter_map(Arg::get_long)
        .filter(|long| *long != "config")
        .map(str::to_owned)
        .collect()
}

/// A value its rule refused, with the flag it was given to; it leaves clap as the source
/// of clap's error, for [`parse`] to turn into [`ConfigError::Invalid`].
#[derive(Debug, Error)]
#[error("{problem}")]
struct Refused {
    flag: String,
    text: String,
    problem: ValueError,
}

/// clap's parser for a setting: its rule from `values.rs`, with a refusal carried out of clap
/// as [`Refused`].
#[derive(Clone)]
pub(super) struct Rule<F>(pub F);

impl<F, T> TypedValueParser for Rule<F>
where
    F: Fn(&str) -> Result<T, ValueError> + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        let flag = arg.and_then(Arg::get_long).unwrap_or_default().to_owned();
        let rule = self.0.clone();
        let parse = move |text: &str| {
            rule(text).map_err(|problem| Refused {
                flag: flag.clone(),
                text: text.to_owned(),
                problem,
            })
        };
        // clap's closure parser also refuses text that is not UTF-8, as its own parsers do.
        parse.parse_ref(cmd, arg, value)
    }
}
