//! What can be wrong with a configuration, worded as the line the user reads.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

use super::ValueError;

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
    pub name: String,
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
#[non_exhaustive]
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
    #[error("{key} in config file {} must be a string, a number or a boolean (found {found})", path.display())]
    NotAScalar {
        path: PathBuf,
        key: String,
        found: &'static str,
    },
    /// A value its setting's rule refuses, from whichever source gave it.
    #[error("invalid {setting}: {problem}")]
    Invalid {
        setting: Setting,
        problem: ValueError,
    },
    #[error("--tls-cert needs --tls-key too (give both or neither)")]
    TlsCertWithoutKey,
    #[error("--tls-key needs --tls-cert too (give both or neither)")]
    TlsKeyWithoutCert,
    #[error(
        "refusing to start: --ssh-addr {addr} is not a loopback address, so anyone who can reach \
         it could open tunnels; give --authorized-keys FILE or listen on 127.0.0.1"
    )]
    OpenWithoutAuthorizedKeys { addr: SocketAddr },
    #[error(
        "refusing to start: --accept-proxy-proto reads a PROXY header only from --trusted-proxies, \
         and none is given; add --trusted-proxies CIDR for the load balancer in front"
    )]
    ProxyProtoWithoutTrustedProxies,
    #[error(
        "refusing to start: --admin-addr {addr} is not a loopback address, so anyone who can \
         reach it could kick users and free names; give --admin-token-file FILE or listen on \
         127.0.0.1"
    )]
    AdminWithoutToken { addr: SocketAddr },
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
