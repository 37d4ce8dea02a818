//! The rules for the settings' values: one function per kind of value, used for flags, the
//! config file and the defaults alike.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;
use tunnel_core::{KeyFingerprint, KeyQuota};

use crate::logging::LogFormat;

use thiserror::Error;

/// Smallest accepted `--channel-window`, in bytes.
pub const MIN_CHANNEL_WINDOW: u32 = 2 * 1024 * 1024;

/// Longest accepted duration; far-future deadlines would overflow `Instant` arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a value was refused; Display is what follows `invalid --flag "VALUE": `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    #[error("expected IP:PORT, e.g. 127.0.0.1:2222 or [::1]:2222")]
    Address,
    #[error(
        "expected a DNS name such as tunnel.example.com \
         (letters, digits and hyphens, labels of at most 63 characters)"
    )]
    Domain,
    #[error("expected LO-HI with ports from 1 to 65535, e.g. 20000-20999")]
    PortRange,
    #[error("low port {lo} is above high port {hi}")]
    ReversedPortRange { lo: u16, hi: u16 },
    #[error("port 0 cannot be allocated, ranges start at 1")]
    PortZeroInRange,
    #[error("expected a duration such as 0, 90s, 10m, 1h or 500ms")]
    Duration,
    #[error("must be longer than 0")]
    ZeroDuration,
    #[error("must be at most 8760h (one year)")]
    DurationTooLong,
    #[error("expected a whole number")]
    Count,
    #[error("must be at least 1")]
    ZeroCount,
    #[error("expected a size in bytes, e.g. 8388608 or 8MiB")]
    ByteSize,
    #[error("must be at least 2MiB (2097152 bytes) and less than 4GiB")]
    ChannelWindowOutOfRange,
    #[error("must not be empty")]
    EmptyPath,
    #[error("expected START:RATE:FULL, e.g. 100:30:1000 (RATE a percentage, START at most FULL)")]
    Startups,
    #[error("expected an address or a network, e.g. 10.0.0.0/8 or 2001:db8::/32")]
    Cidr,
    #[error("expected true or false")]
    Switch,
    #[error("expected text or json")]
    LogFormat,
    #[error("expected SHA256:FINGERPRINT=NAMES,TCP_PORTS, e.g. SHA256:AbC...=200,50 (the key as ssh-keygen -l prints it)")]
    KeyQuota,
}

/// `IP:PORT`.
pub(super) fn addr(text: &str) -> Result<SocketAddr, ValueError> {
    text.trim().parse().map_err(|_| ValueError::Address)
}

/// The base domain, lowercase and without a trailing dot. The rules are core's, so every name
/// the server hands out is a valid host under it.
pub(super) fn domain(text: &str) -> Result<String, ValueError> {
    tunnel_core::base_domain(text).ok_or(ValueError::Domain)
}

/// `LO-HI`, never containing port 0 (which means "any port" to `bind`).
pub(super) fn port_range(text: &str) -> Result<RangeInclusive<u16>, ValueError> {
    let (lo, hi) = text.trim().split_once('-').ok_or(ValueError::PortRange)?;
    let port = |p: &str| p.trim().parse::<u16>().map_err(|_| ValueError::PortRange);
    match (port(lo)?, port(hi)?) {
        (0, _) | (_, 0) => Err(ValueError::PortZeroInRange),
        (lo, hi) if lo > hi => Err(ValueError::ReversedPortRange { lo, hi }),
        (lo, hi) => Ok(lo..=hi),
    }
}

/// A duration where 0 turns the feature off.
pub(super) fn duration(text: &str) -> Result<Duration, ValueError> {
    match parse_duration(text) {
        None => Err(ValueError::Duration),
        Some(d) if d > MAX_DURATION => Err(ValueError::DurationTooLong),
        Some(d) => Ok(d),
    }
}

/// A duration after which something is given up; never 0.
pub(super) fn timeout(text: &str) -> Result<Duration, ValueError> {
    match duration(text)? {
        Duration::ZERO => Err(ValueError::ZeroDuration),
        d => Ok(d),
    }
}

/// A whole number, 0 included.
pub(super) fn count(text: &str) -> Result<usize, ValueError> {
    text.trim().parse().map_err(|_| ValueError::Count)
}

/// A limit on how many things exist at once: at least 1, or nothing could ever be served.
pub(super) fn limit(text: &str) -> Result<usize, ValueError> {
    match count(text)? {
        0 => Err(ValueError::ZeroCount),
        n => Ok(n),
    }
}

/// The SSH channel window in bytes: at least [`MIN_CHANNEL_WINDOW`], and a `u32` on the wire
/// (RFC 4254 §5.1).
pub(super) fn channel_window(text: &str) -> Result<u32, ValueError> {
    let bytes = parse_byte_size(text).ok_or(ValueError::ByteSize)?;
    match u32::try_from(bytes) {
        Ok(window) if window >= MIN_CHANNEL_WINDOW => Ok(window),
        _ => Err(ValueError::ChannelWindowOutOfRange),
    }
}

/// A size in bytes, with an optional binary suffix.
pub(super) fn byte_size(text: &str) -> Result<u64, ValueError> {
    parse_byte_size(text).ok_or(ValueError::ByteSize)
}

/// `START:RATE:FULL` (OpenSSH's `MaxStartups` syntax), or one number for `N:100:N`.
pub(super) fn startups(text: &str) -> Result<tunnel_core::Startups, ValueError> {
    let numbers: Vec<&str> = text.trim().split(':').collect();
    let number = |t: &str| t.trim().parse::<usize>().map_err(|_| ValueError::Startups);
    let startups = match numbers[..] {
        [full] => tunnel_core::Startups {
            start: number(full)?,
            rate: 100,
            full: number(full)?,
        },
        [start, rate, full] => tunnel_core::Startups {
            start: number(start)?,
            rate: u32::try_from(number(rate)?).map_err(|_| ValueError::Startups)?,
            full: number(full)?,
        },
        _ => return Err(ValueError::Startups),
    };
    if startups.rate > 100 || startups.start > startups.full || startups.full == 0 {
        return Err(ValueError::Startups);
    }
    Ok(startups)
}

/// An address or a network in CIDR notation.
pub(super) fn cidr(text: &str) -> Result<ipnet::IpNet, ValueError> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| ValueError::Cidr)
}

/// `true` or `false`: a switch given as `--flag` alone means `true`.
pub(super) fn switch(text: &str) -> Result<bool, ValueError> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ValueError::Switch),
    }
}

/// `text` or `json`.
pub(super) fn log_format(text: &str) -> Result<LogFormat, ValueError> {
    match text.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ValueError::LogFormat),
    }
}

/// `SHA256:FINGERPRINT=NAMES,TCP_PORTS`: one key's own quota.
pub(super) fn key_quota(text: &str) -> Result<(KeyFingerprint, KeyQuota), ValueError> {
    let (key, quota) = text.trim().split_once('=').ok_or(ValueError::KeyQuota)?;
    let (names, tcp_ports) = quota.split_once(',').ok_or(ValueError::KeyQuota)?;
    let fingerprint = key
        .strip_prefix("SHA256:")
        .filter(|b64| {
            !b64.is_empty()
                && b64
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/".contains(&b))
        })
        .ok_or(ValueError::KeyQuota)?;
    let quota = KeyQuota {
        names: names.trim().parse().map_err(|_| ValueError::KeyQuota)?,
        tcp_ports: tcp_ports.trim().parse().map_err(|_| ValueError::KeyQuota)?,
    };
    Ok((KeyFingerprint::new(format!("SHA256:{fingerprint}")), quota))
}

/// A file or directory; never empty, which would silently mean the working directory.
pub(super) fn path(text: &str) -> Result<PathBuf, ValueError> {
    match text {
        "" => Err(ValueError::EmptyPath),
        path => Ok(path.into()),
    }
}

/// Parses `0`, plain seconds (`90`), or number-unit pairs with units `ms`, `s`, `m`, `h`,
/// optionally combined (`1h30m`).
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(text.parse().ok()?));
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

/// Parses a byte count with an optional binary suffix: `8388608`, `8192KiB`, `8MiB`, `1GiB`.
pub(super) fn parse_byte_size(text: &str) -> Option<u64> {
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
