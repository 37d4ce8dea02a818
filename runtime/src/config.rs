//! Server configuration: command-line flags, an optional TOML file using the same names, and
//! built-in defaults, in that order of precedence.
//!
//! Every value, from a flag or from the file, is parsed and validated by the same functions, so
//! both sources accept and reject exactly the same text and errors name where the value came from.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser};
use serde::Deserialize;
use thiserror::Error;

const DEFAULT_SSH_ADDR: &str = "127.0.0.1:2222";
const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
const DEFAULT_HTTPS_ADDR: &str = "127.0.0.1:8443";
const DEFAULT_DOMAIN: &str = "localhost";
const DEFAULT_TCP_PORTS: &str = "20000-20999";
const DEFAULT_STATE_DIR: &str = "./tunnel-state";
const HOST_KEY_FILE: &str = "host_key";
const DEFAULT_NAME_GRACE: &str = "10m";
const DEFAULT_KEEPALIVE_INTERVAL: &str = "15s";
const DEFAULT_KEEPALIVE_MAX: &str = "3";
const DEFAULT_AUTH_TIMEOUT: &str = "30s";
const DEFAULT_MAX_ENDPOINTS_PER_CONNECTION: &str = "64";
const DEFAULT_MAX_CONNECTIONS_PER_KEY: &str = "1024";
const DEFAULT_MAX_UNAUTHENTICATED_PER_IP: &str = "64";
const DEFAULT_MAX_VISITORS_PER_ENDPOINT: &str = "1024";
const DEFAULT_CHANNEL_WINDOW: &str = "8MiB";

/// Smallest accepted `--channel-window`, in bytes.
pub const MIN_CHANNEL_WINDOW: u32 = 2 * 1024 * 1024;

/// Longest accepted duration; far-future deadlines would overflow `Instant` arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

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
    pub max_endpoints_per_connection: usize,
    pub max_connections_per_key: usize,
    pub max_unauthenticated_per_ip: usize,
    /// Visitor connections one endpoint serves at once; more get 503 (http) or are closed.
    pub max_visitors_per_endpoint: usize,
    /// SSH channel window in bytes, at least [`MIN_CHANNEL_WINDOW`].
    pub channel_window: u32,
}

/// `--tls-cert` and `--tls-key`, which are only valid together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where a value came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    File(PathBuf),
    Default,
}

/// A named value as the user wrote it; Display renders e.g. `--ssh-addr "x"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub value: String,
    pub origin: Origin,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Setting {
            name,
            value,
            origin,
        } = self;
        match origin {
            Origin::Flag => write!(f, "--{name} {value:?}"),
            Origin::File(path) => write!(f, "{name} {value:?} (config file {})", path.display()),
            Origin::Default => write!(f, "default {name} {value:?}"),
        }
    }
}

/// A configuration problem; Display is the exact line the user reads.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Bad command-line syntax, or `--help`/`--version`: call `exit()` on it, which prints
    /// clap's text and exits with clap's status (0 for help and version).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("invalid config file {}{}: {}", path.display(), LineSuffix(*line), source.message())]
    ParseFile {
        path: PathBuf,
        line: Option<usize>,
        source: Box<toml::de::Error>,
    },
    #[error(
        "unknown key {key:?} in config file {} (keys are the flag names without \"--\", e.g. ssh-addr)",
        path.display()
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("{key} in config file {} must be a string or a number (found {found})", path.display())]
    NotAScalar {
        path: PathBuf,
        key: String,
        found: &'static str,
    },
    #[error("invalid {0}: expected IP:PORT, e.g. 127.0.0.1:2222 or [::1]:2222")]
    InvalidAddress(Setting),
    #[error(
        "invalid {0}: expected a DNS name such as tunnel.example.com \
         (letters, digits and hyphens, labels of at most 63 characters)"
    )]
    InvalidDomain(Setting),
    #[error("invalid {0}: expected LO-HI with ports from 1 to 65535, e.g. 20000-20999")]
    InvalidPortRange(Setting),
    #[error("invalid {setting}: low port {lo} is above high port {hi}")]
    ReversedPortRange { setting: Setting, lo: u16, hi: u16 },
    #[error("invalid {0}: port 0 cannot be allocated, ranges start at 1")]
    PortZeroInRange(Setting),
    #[error("invalid {0}: expected a duration such as 0, 90s, 10m, 1h or 500ms")]
    InvalidDuration(Setting),
    #[error("invalid {0}: must be longer than 0")]
    ZeroDuration(Setting),
    #[error("invalid {0}: must be at most 8760h (one year)")]
    DurationTooLong(Setting),
    #[error("invalid {0}: expected a whole number")]
    InvalidCount(Setting),
    #[error("invalid {0}: must be at least 1")]
    ZeroCount(Setting),
    #[error("invalid {0}: expected a size in bytes, e.g. 8388608 or 8MiB")]
    InvalidByteSize(Setting),
    #[error("invalid {0}: must be at least 2MiB (2097152 bytes) and less than 4GiB")]
    ChannelWindowOutOfRange(Setting),
    #[error("invalid {0}: must not be empty")]
    EmptyPath(Setting),
    #[error("--tls-cert needs --tls-key too (give both or neither)")]
    TlsCertWithoutKey,
    #[error("--tls-key needs --tls-cert too (give both or neither)")]
    TlsKeyWithoutCert,
    #[error(
        "refusing to start: --ssh-addr {addr} is not a loopback address, so anyone who can reach \
         it could open tunnels; give --authorized-keys FILE or listen on 127.0.0.1"
    )]
    OpenWithoutAuthorizedKeys { addr: SocketAddr },
}

impl ConfigError {
    /// Process exit status for this error: clap's own for [`ConfigError::Clap`] (0 for
    /// `--help`/`--version`), 2 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Clap(e) => e.exit_code(),
            _ => 2,
        }
    }
}

/// Renders `, line N` when the line is known.
struct LineSuffix(Option<usize>);

impl fmt::Display for LineSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ", line {line}"),
            None => Ok(()),
        }
    }
}

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

// Raw values, shared by the flags and the file so both use the same names. Values stay text
// here; `resolve` parses them so both sources get the same checks and messages. (A `///` doc
// here would replace the `--help` description, as clap flattens it into the command.)
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Settings {
    /// SSH listen address [default: 127.0.0.1:2222]
    #[arg(long, value_name = "ADDR")]
    ssh_addr: Option<String>,
    /// HTTP listen address [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<String>,
    /// HTTPS listen address [default: 127.0.0.1:8443]
    #[arg(long, value_name = "ADDR")]
    https_addr: Option<String>,
    /// Base domain; endpoints get NAME.DOMAIN [default: localhost]
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Port range for tcp endpoints [default: 20000-20999]
    #[arg(long, value_name = "LO-HI")]
    tcp_ports: Option<String>,
    /// Directory for the host key and generated certificates [default: ./tunnel-state]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// SSH host key, generated if missing [default: STATE_DIR/host_key]
    #[arg(long, value_name = "PATH")]
    host_key: Option<PathBuf>,
    /// OpenSSH authorized_keys file; required unless --ssh-addr is loopback [default: accept any key]
    #[arg(long, value_name = "PATH")]
    authorized_keys: Option<PathBuf>,
    /// How long a name stays reserved for its key after disconnect; 0 turns it off [default: 10m]
    #[arg(long, value_name = "DURATION")]
    name_grace: Option<String>,
    /// Certificate chain (PEM) for the HTTPS listener; needs --tls-key [default: self-signed]
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// Idle time before an SSH keepalive is sent; 0 turns keepalives off [default: 15s]
    #[arg(long, value_name = "DURATION")]
    keepalive_interval: Option<String>,
    /// Unanswered keepalives before disconnecting; 0 never disconnects [default: 3]
    #[arg(long, value_name = "N")]
    keepalive_max: Option<String>,
    /// Time allowed to authenticate after connecting [default: 30s]
    #[arg(long, value_name = "DURATION")]
    auth_timeout: Option<String>,
    /// Endpoints one SSH connection may hold [default: 64]
    #[arg(long, value_name = "N")]
    max_endpoints_per_connection: Option<String>,
    /// Simultaneous SSH connections per key [default: 1024]
    #[arg(long, value_name = "N")]
    max_connections_per_key: Option<String>,
    /// Simultaneous not-yet-authenticated connections per client IP [default: 64]
    #[arg(long, value_name = "N")]
    max_unauthenticated_per_ip: Option<String>,
    /// Visitor connections one endpoint serves at once; more get 503 (http) or are closed [default: 1024]
    #[arg(long, value_name = "N")]
    max_visitors_per_endpoint: Option<String>,
    /// SSH channel window in bytes (KiB/MiB/GiB suffixes allowed), at least 2MiB [default: 8MiB]
    #[arg(long, value_name = "BYTES")]
    channel_window: Option<String>,
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
        let Cli { config, settings } = Cli::try_parse_from(args)?;
        let file = match &config {
            Some(path) => read_config_file(path)?,
            None => Settings::default(),
        };
        let file_origin = Origin::File(config.clone().unwrap_or_default());
        resolve(config, settings, file, file_origin)
    }
}

/// Picks flag over file over default for every setting and validates it.
fn resolve(
    config_file: Option<PathBuf>,
    flags: Settings,
    file: Settings,
    file_origin: Origin,
) -> Result<ServerConfig, ConfigError> {
    // Exhaustive destructuring: adding a setting without resolving it does not compile.
    let Settings {
        ssh_addr,
        http_addr,
        https_addr,
        domain,
        tcp_ports,
        state_dir,
        host_key,
        authorized_keys,
        name_grace,
        tls_cert,
        tls_key,
        keepalive_interval,
        keepalive_max,
        auth_timeout,
        max_endpoints_per_connection,
        max_connections_per_key,
        max_unauthenticated_per_ip,
        max_visitors_per_endpoint,
        channel_window,
    } = flags;
    let Settings {
        ssh_addr: file_ssh_addr,
        http_addr: file_http_addr,
        https_addr: file_https_addr,
        domain: file_domain,
        tcp_ports: file_tcp_ports,
        state_dir: file_state_dir,
        host_key: file_host_key,
        authorized_keys: file_authorized_keys,
        name_grace: file_name_grace,
        tls_cert: file_tls_cert,
        tls_key: file_tls_key,
        keepalive_interval: file_keepalive_interval,
        keepalive_max: file_keepalive_max,
        auth_timeout: file_auth_timeout,
        max_endpoints_per_connection: file_max_endpoints_per_connection,
        max_connections_per_key: file_max_connections_per_key,
        max_unauthenticated_per_ip: file_max_unauthenticated_per_ip,
        max_visitors_per_endpoint: file_max_visitors_per_endpoint,
        channel_window: file_channel_window,
    } = file;

    let pick = |name: &'static str, flag: Option<String>, file: Option<String>| {
        pick_setting(name, flag, file, &file_origin)
    };
    let pick_path = |name: &'static str, flag: Option<PathBuf>, file: Option<PathBuf>| {
        pick_setting(name, flag.map(path_text), file.map(path_text), &file_origin)
    };
    let pick_or =
        |name: &'static str, flag: Option<String>, file: Option<String>, default: &str| {
            pick(name, flag, file).unwrap_or_else(|| default_setting(name, default))
        };

    let ssh_addr = parse_addr(pick_or(
        "ssh-addr",
        ssh_addr,
        file_ssh_addr,
        DEFAULT_SSH_ADDR,
    ))?;
    let http_addr = parse_addr(pick_or(
        "http-addr",
        http_addr,
        file_http_addr,
        DEFAULT_HTTP_ADDR,
    ))?;
    let https_addr = parse_addr(pick_or(
        "https-addr",
        https_addr,
        file_https_addr,
        DEFAULT_HTTPS_ADDR,
    ))?;
    let domain = parse_domain(pick_or("domain", domain, file_domain, DEFAULT_DOMAIN))?;
    let tcp_ports = parse_port_range(pick_or(
        "tcp-ports",
        tcp_ports,
        file_tcp_ports,
        DEFAULT_TCP_PORTS,
    ))?;
    let state_dir = parse_path(
        pick_path("state-dir", state_dir, file_state_dir)
            .unwrap_or_else(|| default_setting("state-dir", DEFAULT_STATE_DIR)),
    )?;
    let host_key = match pick_path("host-key", host_key, file_host_key) {
        Some(setting) => parse_path(setting)?,
        None => state_dir.join(HOST_KEY_FILE),
    };
    let authorized_keys = pick_path("authorized-keys", authorized_keys, file_authorized_keys)
        .map(parse_path)
        .transpose()?;
    let name_grace = parse_duration_setting(pick_or(
        "name-grace",
        name_grace,
        file_name_grace,
        DEFAULT_NAME_GRACE,
    ))?;
    let tls_cert = pick_path("tls-cert", tls_cert, file_tls_cert)
        .map(parse_path)
        .transpose()?;
    let tls_key = pick_path("tls-key", tls_key, file_tls_key)
        .map(parse_path)
        .transpose()?;
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError::TlsCertWithoutKey),
        (None, Some(_)) => return Err(ConfigError::TlsKeyWithoutCert),
    };
    let keepalive_interval = parse_duration_setting(pick_or(
        "keepalive-interval",
        keepalive_interval,
        file_keepalive_interval,
        DEFAULT_KEEPALIVE_INTERVAL,
    ))?;
    let keepalive_max = parse_count(
        pick_or(
            "keepalive-max",
            keepalive_max,
            file_keepalive_max,
            DEFAULT_KEEPALIVE_MAX,
        ),
        AllowZero::Yes,
    )?;
    let auth_timeout = pick_or(
        "auth-timeout",
        auth_timeout,
        file_auth_timeout,
        DEFAULT_AUTH_TIMEOUT,
    );
    let auth_timeout = match parse_duration_setting(auth_timeout.clone())? {
        Duration::ZERO => return Err(ConfigError::ZeroDuration(auth_timeout)),
        timeout => timeout,
    };
    let max_endpoints_per_connection = parse_count(
        pick_or(
            "max-endpoints-per-connection",
            max_endpoints_per_connection,
            file_max_endpoints_per_connection,
            DEFAULT_MAX_ENDPOINTS_PER_CONNECTION,
        ),
        AllowZero::No,
    )?;
    let max_connections_per_key = parse_count(
        pick_or(
            "max-connections-per-key",
            max_connections_per_key,
            file_max_connections_per_key,
            DEFAULT_MAX_CONNECTIONS_PER_KEY,
        ),
        AllowZero::No,
    )?;
    let max_unauthenticated_per_ip = parse_count(
        pick_or(
            "max-unauthenticated-per-ip",
            max_unauthenticated_per_ip,
            file_max_unauthenticated_per_ip,
            DEFAULT_MAX_UNAUTHENTICATED_PER_IP,
        ),
        AllowZero::No,
    )?;
    let max_visitors_per_endpoint = parse_count(
        pick_or(
            "max-visitors-per-endpoint",
            max_visitors_per_endpoint,
            file_max_visitors_per_endpoint,
            DEFAULT_MAX_VISITORS_PER_ENDPOINT,
        ),
        AllowZero::No,
    )?;
    let channel_window = parse_channel_window(pick_or(
        "channel-window",
        channel_window,
        file_channel_window,
        DEFAULT_CHANNEL_WINDOW,
    ))?;

    // Without an allow-list every key is accepted, which is only safe when nobody else can
    // reach the listener.
    if authorized_keys.is_none() && !is_loopback(ssh_addr.ip()) {
        return Err(ConfigError::OpenWithoutAuthorizedKeys { addr: ssh_addr });
    }

    Ok(ServerConfig {
        config_file,
        ssh_addr,
        http_addr,
        https_addr,
        domain,
        tcp_ports,
        state_dir,
        host_key,
        authorized_keys,
        name_grace,
        tls,
        keepalive_interval: (keepalive_interval != Duration::ZERO).then_some(keepalive_interval),
        keepalive_max,
        auth_timeout,
        max_endpoints_per_connection,
        max_connections_per_key,
        max_unauthenticated_per_ip,
        max_visitors_per_endpoint,
        channel_window,
    })
}

fn pick_setting(
    name: &'static str,
    flag: Option<String>,
    file: Option<String>,
    file_origin: &Origin,
) -> Option<Setting> {
    let (value, origin) = match (flag, file) {
        (Some(value), _) => (value, Origin::Flag),
        (None, Some(value)) => (value, file_origin.clone()),
        (None, None) => return None,
    };
    Some(Setting {
        name,
        value,
        origin,
    })
}

fn default_setting(name: &'static str, default: &str) -> Setting {
    Setting {
        name,
        value: default.to_owned(),
        origin: Origin::Default,
    }
}

fn path_text(path: PathBuf) -> String {
    path.to_string_lossy().into_owned()
}

/// Reads the `--config` file into raw settings.
///
/// Numbers are accepted where text is expected (`keepalive-max = 3`, `name-grace = 0`) and
/// turned into text, so they go through the same parsing as flags.
fn read_config_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let parse_error = |source: toml::de::Error| ConfigError::ParseFile {
        path: path.to_owned(),
        line: source.span().map(|span| line_of(&text, span.start)),
        source: Box::new(source),
    };
    let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;

    let known = known_keys();
    let mut normalized = toml::Table::new();
    for (key, value) in table {
        if !known.contains(&key) {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            other => {
                return Err(ConfigError::NotAScalar {
                    path: path.to_owned(),
                    key,
                    found: other.type_str(),
                })
            }
        };
        normalized.insert(key, toml::Value::String(text));
    }
    // The key check above makes this infallible in practice; `deny_unknown_fields` is the
    // backstop should the clap and serde names ever disagree.
    normalized.try_into().map_err(parse_error)
}

/// The long flag names, which are also the file keys.
fn known_keys() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| *long != "config")
        .map(str::to_owned)
        .collect()
}

fn line_of(text: &str, byte: usize) -> usize {
    let end = byte.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn is_loopback(ip: IpAddr) -> bool {
    // to_canonical: ::ffff:127.0.0.1 is loopback too.
    ip.to_canonical().is_loopback()
}

fn parse_addr(setting: Setting) -> Result<SocketAddr, ConfigError> {
    setting
        .value
        .trim()
        .parse()
        .map_err(|_| ConfigError::InvalidAddress(setting))
}

fn parse_path(setting: Setting) -> Result<PathBuf, ConfigError> {
    if setting.value.is_empty() {
        return Err(ConfigError::EmptyPath(setting));
    }
    Ok(PathBuf::from(setting.value))
}

/// Lowercases and checks a DNS name (RFC 1035 §2.3.1 letters-digits-hyphen labels, RFC 1123
/// allowing a leading digit); one trailing dot is dropped.
fn parse_domain(setting: Setting) -> Result<String, ConfigError> {
    let lower = setting.value.trim().to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(label_ok)
        && name.parse::<IpAddr>().is_err();
    if !valid {
        return Err(ConfigError::InvalidDomain(setting));
    }
    Ok(name.to_owned())
}

fn parse_port_range(setting: Setting) -> Result<RangeInclusive<u16>, ConfigError> {
    let parsed = setting.value.trim().split_once('-').and_then(|(lo, hi)| {
        Some((
            lo.trim().parse::<u16>().ok()?,
            hi.trim().parse::<u16>().ok()?,
        ))
    });
    match parsed {
        None => Err(ConfigError::InvalidPortRange(setting)),
        Some((0, _)) | Some((_, 0)) => Err(ConfigError::PortZeroInRange(setting)),
        Some((lo, hi)) if lo > hi => Err(ConfigError::ReversedPortRange { setting, lo, hi }),
        Some((lo, hi)) => Ok(lo..=hi),
    }
}

fn parse_duration_setting(setting: Setting) -> Result<Duration, ConfigError> {
    match parse_duration(&setting.value) {
        None => Err(ConfigError::InvalidDuration(setting)),
        Some(d) if d > MAX_DURATION => Err(ConfigError::DurationTooLong(setting)),
        Some(d) => Ok(d),
    }
}

/// Parses `0`, plain seconds (`90`), or number-unit pairs with units `ms`, `s`, `m`, `h`,
/// optionally combined (`1h30m`).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(text.parse().ok()?));
    }
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let n: u64 = rest[..digits].parse().ok()?;
        let part = match &rest[digits..digits + unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[digits + unit_len..];
    }
    Some(total)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AllowZero {
    Yes,
    No,
}

fn parse_count(setting: Setting, allow_zero: AllowZero) -> Result<usize, ConfigError> {
    match setting.value.trim().parse::<usize>() {
        Err(_) => Err(ConfigError::InvalidCount(setting)),
        Ok(0) if allow_zero == AllowZero::No => Err(ConfigError::ZeroCount(setting)),
        Ok(n) => Ok(n),
    }
}

fn parse_channel_window(setting: Setting) -> Result<u32, ConfigError> {
    let Some(bytes) = parse_byte_size(&setting.value) else {
        return Err(ConfigError::InvalidByteSize(setting));
    };
    match u32::try_from(bytes) {
        Ok(window) if window >= MIN_CHANNEL_WINDOW => Ok(window),
        _ => Err(ConfigError::ChannelWindowOutOfRange(setting)),
    }
}

/// Parses a byte count with an optional binary suffix: `8388608`, `8192KiB`, `8MiB`, `1GiB`.
fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let n: u64 = text[..digits].parse().ok()?;
    let multiplier: u64 = match &text[digits..] {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_args(std::iter::once("tunnel-server").chain(args.iter().copied()))
    }

    fn error(args: &[&str]) -> String {
        config(args).expect_err("should be rejected").to_string()
    }

    /// A config file in a fresh temp dir; keep the dir alive while the path is used.
    fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tunnel.toml");
        fs::write(&path, contents).expect("write config");
        (dir, path)
    }

    fn arg(path: &Path) -> &str {
        path.to_str().expect("temp paths are UTF-8")
    }

    #[test]
    fn defaults_with_no_args() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(
            c,
            ServerConfig {
                config_file: None,
                ssh_addr: "127.0.0.1:2222".parse().unwrap(),
                http_addr: "127.0.0.1:8080".parse().unwrap(),
                https_addr: "127.0.0.1:8443".parse().unwrap(),
                domain: "localhost".into(),
                tcp_ports: 20000..=20999,
                state_dir: PathBuf::from("./tunnel-state"),
                host_key: PathBuf::from("./tunnel-state/host_key"),
                authorized_keys: None,
                name_grace: Duration::from_secs(600),
                tls: None,
                keepalive_interval: Some(Duration::from_secs(15)),
                keepalive_max: 3,
                auth_timeout: Duration::from_secs(30),
                max_endpoints_per_connection: 64,
                max_connections_per_key: 1024,
                max_unauthenticated_per_ip: 64,
                max_visitors_per_endpoint: 1024,
                channel_window: 8 * 1024 * 1024,
            }
        );
    }

    #[test]
    fn flags_are_parsed() {
        let c = config(&[
            "--ssh-addr",
            "0.0.0.0:22",
            "--authorized-keys",
            "/etc/tunnel/keys",
            "--http-addr=[::]:80",
            "--domain",
            "Tunnel.Example.COM.",
            "--tcp-ports",
            "30000-30000",
            "--state-dir",
            "/var/lib/tunnel",
            "--name-grace",
            "0",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--keepalive-interval",
            "0",
            "--keepalive-max",
            "0",
            "--channel-window",
            "2MiB",
        ])
        .expect("valid");
        assert_eq!(c.ssh_addr, "0.0.0.0:22".parse().unwrap());
        assert_eq!(c.http_addr, "[::]:80".parse().unwrap());
        assert_eq!(c.domain, "tunnel.example.com");
        assert_eq!(c.tcp_ports, 30000..=30000);
        assert_eq!(c.host_key, PathBuf::from("/var/lib/tunnel/host_key"));
        assert_eq!(c.authorized_keys, Some(PathBuf::from("/etc/tunnel/keys")));
        assert_eq!(c.name_grace, Duration::ZERO);
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert_eq!(c.keepalive_interval, None);
        assert_eq!(c.keepalive_max, 0);
        assert_eq!(c.channel_window, MIN_CHANNEL_WINDOW);
    }

    #[test]
    fn explicit_host_key_wins_over_state_dir() {
        let c = config(&["--state-dir", "s", "--host-key", "/k"]).expect("valid");
        assert_eq!(c.host_key, PathBuf::from("/k"));
        assert_eq!(c.state_dir, PathBuf::from("s"));
    }

    #[test]
    fn file_beats_defaults_and_flag_beats_file() {
        let (_dir, path) = config_file(
            "# production\n\
             ssh-addr = \"0.0.0.0:2022\"\n\
             authorized-keys = \"/etc/tunnel/authorized_keys\"\n\
             domain = \"example.org\"\n\
             tcp-ports = \"40000-40099\"\n\
             name-grace = 0\n\
             keepalive-max = 5\n\
             channel-window = 4194304\n",
        );
        let from_file = config(&["--config", arg(&path)]).expect("valid");
        assert_eq!(from_file.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(from_file.ssh_addr, "0.0.0.0:2022".parse().unwrap());
        assert_eq!(from_file.domain, "example.org");
        assert_eq!(from_file.tcp_ports, 40000..=40099);
        assert_eq!(from_file.name_grace, Duration::ZERO);
        assert_eq!(from_file.keepalive_max, 5);
        assert_eq!(from_file.channel_window, 4 * 1024 * 1024);
        // Untouched settings keep their defaults.
        assert_eq!(from_file.http_addr, "127.0.0.1:8080".parse().unwrap());

        let flagged = config(&[
            "--domain",
            "flag.example",
            "--config",
            arg(&path),
            "--keepalive-max=7",
        ])
        .expect("valid");
        assert_eq!(flagged.domain, "flag.example");
        assert_eq!(flagged.keepalive_max, 7);
        assert_eq!(flagged.tcp_ports, 40000..=40099);
    }

    #[test]
    fn file_accepts_every_flag_name() {
        let (_dir, path) = config_file(
            r#"
            ssh-addr = "127.0.0.1:1"
            http-addr = "127.0.0.1:2"
            https-addr = "127.0.0.1:3"
            domain = "d.test"
            tcp-ports = "1-2"
            state-dir = "st"
            host-key = "hk"
            authorized-keys = "ak"
            name-grace = "1h30m"
            tls-cert = "c"
            tls-key = "k"
            keepalive-interval = "500ms"
            keepalive-max = "1"
            auth-timeout = 5
            max-endpoints-per-connection = 2
            max-connections-per-key = 3
            max-unauthenticated-per-ip = 4
            max-visitors-per-endpoint = 5
            channel-window = "1GiB"
            "#,
        );
        let c = config(&["--config", arg(&path)]).expect("valid");
        assert_eq!(
            known_keys().len(),
            19,
            "every setting is covered by this test"
        );
        assert_eq!(c.https_addr.port(), 3);
        assert_eq!(c.host_key, PathBuf::from("hk"));
        assert_eq!(c.name_grace, Duration::from_secs(5400));
        assert_eq!(c.keepalive_interval, Some(Duration::from_millis(500)));
        assert_eq!(c.auth_timeout, Duration::from_secs(5));
        assert_eq!(
            (
                c.max_endpoints_per_connection,
                c.max_connections_per_key,
                c.max_unauthenticated_per_ip,
                c.max_visitors_per_endpoint
            ),
            (2, 3, 4, 5)
        );
        assert_eq!(c.channel_window, 1 << 30);
    }

    #[test]
    fn durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("90", Duration::from_secs(90)),
            ("90s", Duration::from_secs(90)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("0s", Duration::ZERO),
            (" 2m ", Duration::from_secs(120)),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_duration(text), Some(expected), "{text:?}");
        }
        for bad in [
            "",
            "s",
            "10x",
            "1.5s",
            "-1s",
            "10 m",
            "1h30",
            "m10",
            "10M",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("8388608"), Some(8 << 20));
        assert_eq!(parse_byte_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_byte_size("2048KiB"), Some(2 << 20));
        assert_eq!(parse_byte_size("1GiB"), Some(1 << 30));
        for bad in ["", "MiB", "8MB", "8 MiB", "-1", "8mib"] {
            assert_eq!(parse_byte_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn open_listener_needs_authorized_keys() {
        for addr in ["0.0.0.0:2222", "[::]:22", "192.168.1.10:2222"] {
            let err = config(&["--ssh-addr", addr]).expect_err("open without keys");
            assert!(
                matches!(err, ConfigError::OpenWithoutAuthorizedKeys { addr: a } if a == addr.parse().unwrap())
            );
            assert_eq!(err.exit_code(), 2);
        }
        assert_eq!(
            error(&["--ssh-addr", "0.0.0.0:2222"]),
            "refusing to start: --ssh-addr 0.0.0.0:2222 is not a loopback address, so anyone who \
             can reach it could open tunnels; give --authorized-keys FILE or listen on 127.0.0.1"
        );
        for addr in [
            "127.0.0.1:2222",
            "127.1.2.3:0",
            "[::1]:2222",
            "[::ffff:127.0.0.1]:22",
        ] {
            assert!(config(&["--ssh-addr", addr]).is_ok(), "{addr} is loopback");
        }
        assert!(config(&["--ssh-addr", "0.0.0.0:22", "--authorized-keys", "ak"]).is_ok());
    }

    #[test]
    fn open_rule_applies_to_file_values_too() {
        let (_dir, path) = config_file("ssh-addr = \"0.0.0.0:22\"\n");
        let err = config(&["--config", arg(&path)]).expect_err("open");
        assert!(matches!(err, ConfigError::OpenWithoutAuthorizedKeys { .. }));
        assert!(config(&["--config", arg(&path), "--authorized-keys", "ak"]).is_ok());
    }

    #[test]
    fn flag_value_errors() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--ssh-addr", "localhost:22"],
                r#"invalid --ssh-addr "localhost:22": expected IP:PORT, e.g. 127.0.0.1:2222 or [::1]:2222"#,
            ),
            (
                &["--https-addr", "127.0.0.1"],
                r#"invalid --https-addr "127.0.0.1": expected IP:PORT, e.g. 127.0.0.1:2222 or [::1]:2222"#,
            ),
            (
                &["--domain", "bad_name.example"],
                r#"invalid --domain "bad_name.example": expected a DNS name such as tunnel.example.com (letters, digits and hyphens, labels of at most 63 characters)"#,
            ),
            (
                &["--tcp-ports", "20000"],
                r#"invalid --tcp-ports "20000": expected LO-HI with ports from 1 to 65535, e.g. 20000-20999"#,
            ),
            (
                &["--tcp-ports", "1-70000"],
                r#"invalid --tcp-ports "1-70000": expected LO-HI with ports from 1 to 65535, e.g. 20000-20999"#,
            ),
            (
                &["--tcp-ports", "30000-20000"],
                r#"invalid --tcp-ports "30000-20000": low port 30000 is above high port 20000"#,
            ),
            (
                &["--tcp-ports", "0-100"],
                r#"invalid --tcp-ports "0-100": port 0 cannot be allocated, ranges start at 1"#,
            ),
            (
                &["--name-grace", "10 minutes"],
                r#"invalid --name-grace "10 minutes": expected a duration such as 0, 90s, 10m, 1h or 500ms"#,
            ),
            (
                &["--name-grace", "9000h"],
                r#"invalid --name-grace "9000h": must be at most 8760h (one year)"#,
            ),
            (
                &["--auth-timeout", "0s"],
                r#"invalid --auth-timeout "0s": must be longer than 0"#,
            ),
            (
                &["--keepalive-max", "three"],
                r#"invalid --keepalive-max "three": expected a whole number"#,
            ),
            (
                &["--max-connections-per-key", "0"],
                r#"invalid --max-connections-per-key "0": must be at least 1"#,
            ),
            (
                &["--channel-window", "8MB"],
                r#"invalid --channel-window "8MB": expected a size in bytes, e.g. 8388608 or 8MiB"#,
            ),
            (
                &["--channel-window", "1048576"],
                r#"invalid --channel-window "1048576": must be at least 2MiB (2097152 bytes) and less than 4GiB"#,
            ),
            (
                &["--channel-window", "4GiB"],
                r#"invalid --channel-window "4GiB": must be at least 2MiB (2097152 bytes) and less than 4GiB"#,
            ),
            (
                &["--tls-cert", "c.pem"],
                "--tls-cert needs --tls-key too (give both or neither)",
            ),
            (
                &["--tls-key", "k.pem"],
                "--tls-key needs --tls-cert too (give both or neither)",
            ),
        ];
        for (args, expected) in cases {
            let err = config(args).expect_err("rejected");
            assert_eq!(err.to_string(), *expected, "{args:?}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn domain_rules() {
        // `--domain=VALUE` so values starting with '-' are not taken for flags.
        let ok = |d: &str| config(&[&format!("--domain={d}")]).map(|c| c.domain);
        assert_eq!(ok("LOCALHOST").unwrap(), "localhost");
        assert_eq!(ok("a-b.c0.example").unwrap(), "a-b.c0.example");
        assert_eq!(ok("1tunnel.example").unwrap(), "1tunnel.example");
        let long_label = "a".repeat(64);
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "a b",
            "*.example",
            "127.0.0.1",
            "::1",
            long_label.as_str(),
        ] {
            assert!(
                matches!(ok(bad), Err(ConfigError::InvalidDomain(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.toml");
        let err = config(&["--config", arg(&missing)]).expect_err("missing");
        assert!(matches!(err, ConfigError::ReadFile { .. }));
        assert!(err
            .to_string()
            .starts_with(&format!("cannot read config file {}: ", missing.display())));

        let (_d, path) = config_file("ssh-addr = \"127.0.0.1:1\"\nsh-addr = \"x\"\n");
        assert_eq!(
            error(&["--config", arg(&path)]),
            format!(
                "unknown key \"sh-addr\" in config file {} (keys are the flag names without \"--\", e.g. ssh-addr)",
                path.display()
            )
        );

        let (_d, path) = config_file("domain = \"example.org\"\n\nssh-addr = \n");
        let err = config(&["--config", arg(&path)]).expect_err("syntax");
        assert!(
            matches!(err, ConfigError::ParseFile { line: Some(3), .. }),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with(&format!("invalid config file {}, line 3: ", path.display())));

        let (_d, path) = config_file("keepalive-max = true\n");
        assert_eq!(
            error(&["--config", arg(&path)]),
            format!(
                "keepalive-max in config file {} must be a string or a number (found boolean)",
                path.display()
            )
        );

        let (_d, path) = config_file("tcp-ports = \"9-1\"\n");
        assert_eq!(
            error(&["--config", arg(&path)]),
            format!(
                "invalid tcp-ports \"9-1\" (config file {}): low port 9 is above high port 1",
                path.display()
            )
        );

        // clap already refuses an empty path flag; the file gets the same rule.
        let (_d, path) = config_file("state-dir = \"\"\n");
        assert_eq!(
            error(&["--config", arg(&path)]),
            format!(
                "invalid state-dir \"\" (config file {}): must not be empty",
                path.display()
            )
        );

        let (_d, path) = config_file("config = \"other.toml\"\n");
        assert!(matches!(
            config(&["--config", arg(&path)]),
            Err(ConfigError::UnknownKey { key, .. }) if key == "config"
        ));
    }

    #[test]
    fn help_and_version_are_clap_errors_exiting_zero() {
        for flag in ["--help", "--version"] {
            match config(&[flag]) {
                Err(ConfigError::Clap(e)) => assert_eq!(e.exit_code(), 0, "{flag}"),
                other => panic!("{flag}: {other:?}"),
            }
        }
        let err = config(&["--no-such-flag"]).expect_err("unknown flag");
        assert!(matches!(err, ConfigError::Clap(_)));
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.starts_with("Self-hostable SSH reverse-tunnel gateway"),
            "{help}"
        );
        for default in [
            DEFAULT_SSH_ADDR,
            DEFAULT_HTTP_ADDR,
            DEFAULT_HTTPS_ADDR,
            DEFAULT_DOMAIN,
            DEFAULT_TCP_PORTS,
            DEFAULT_STATE_DIR,
            DEFAULT_NAME_GRACE,
            DEFAULT_KEEPALIVE_INTERVAL,
            DEFAULT_KEEPALIVE_MAX,
            DEFAULT_AUTH_TIMEOUT,
            DEFAULT_MAX_ENDPOINTS_PER_CONNECTION,
            DEFAULT_MAX_CONNECTIONS_PER_KEY,
            DEFAULT_MAX_UNAUTHENTICATED_PER_IP,
            DEFAULT_MAX_VISITORS_PER_ENDPOINT,
            DEFAULT_CHANNEL_WINDOW,
        ] {
            assert!(help.contains(&format!("[default: {default}]")), "{default}");
        }
        for key in known_keys() {
            assert!(help.contains(&format!("--{key}")), "{key}");
        }
    }

    #[test]
    fn setting_display_names_origin() {
        let setting = |origin| Setting {
            name: "ssh-addr",
            value: "x".into(),
            origin,
        };
        assert_eq!(setting(Origin::Flag).to_string(), r#"--ssh-addr "x""#);
        assert_eq!(
            setting(Origin::File("/etc/t.toml".into())).to_string(),
            r#"ssh-addr "x" (config file /etc/t.toml)"#
        );
        assert_eq!(
            setting(Origin::Default).to_string(),
            r#"default ssh-addr "x""#
        );
    }
}
