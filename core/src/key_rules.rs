//! What an `authorized_keys` line's options allow its key (sshd(8) "AUTHORIZED_KEYS FILE
//! FORMAT"), for the options a tunnel server can honour. Every other option is refused when the
//! file is read: a key is never let in with fewer restrictions than its line asks for.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

/// The rules of one key; the default (no options) allows everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRules {
    from: Option<Vec<(bool, AddressPattern)>>,
    expires: Option<Instant>,
    forwarding: bool,
    permit_listen: Option<Vec<ListenPattern>>,
    /// A `cert-authority` line: the key signs users' certificates and never logs in itself.
    cert_authority: bool,
    /// `principals="a,b"` of a `cert-authority` line.
    principals: Option<Vec<String>>,
}

impl Default for KeyRules {
    fn default() -> Self {
        Self {
            from: None,
            expires: None,
            forwarding: true,
            permit_listen: None,
            cert_authority: false,
            principals: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AddressPattern {
    Network(IpNet),
    /// `*` and `?` over the address as text (`10.0.0.*`).
    Wildcard(String),
}

/// One `permitlisten` entry: `[NAME:]PORT`, either side `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ListenPattern {
    name: Option<String>,
    port: Option<u32>,
}

/// An option this server cannot honour, or one written wrong. Display is the reason, to be put
/// after the file and line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyOptionError {
    /// An option the server does not enforce.
    #[error("option {0} is not enforced by this server; remove it or the line")]
    NotEnforced(String),
    /// `from=` names a host, which would need reverse DNS.
    #[error(
        "from= pattern {0:?} names a host; give addresses or networks (e.g. 10.0.0.0/8, 192.0.2.*)"
    )]
    HostPattern(String),
    /// A value that does not parse.
    #[error("{option}= value {value:?}: {reason}")]
    BadValue {
        /// The option.
        option: &'static str,
        /// The value as written.
        value: String,
        /// What it must look like.
        reason: &'static str,
    },
    /// Quotes that do not close.
    #[error("unterminated quote in the options")]
    Unterminated,
    /// `principals=` on a line that is not `cert-authority`, where sshd would use it only for
    /// certificates the line does not accept.
    #[error("principals= applies only to a cert-authority line; add cert-authority or remove it")]
    PrincipalsWithoutAuthority,
}

/// Options that ask for nothing a tunnel server offers: already true here.
const ALREADY_TRUE: &[&str] = &[
    "no-pty",
    "no-x11-forwarding",
    "no-agent-forwarding",
    "no-user-rc",
];

impl KeyRules {
    /// Reads an options field (`from="10.0.0.0/8",restrict,permitlisten="app:80"`). `now` and
    /// `wall` are the same moment on the monotonic and the calendar clock, to turn
    /// `expiry-time` into a deadline the gateway can compare with its own clock.
    pub fn from_options(
        text: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Self, KeyOptionError> {
        let mut rules = KeyRules::default();
        let mut listen = Vec::new();
        for option in split_options(text)? {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name.to_ascii_lowercase(), Some(unquote(value)?)),
                None => (option.to_ascii_lowercase(), None),
            };
            match (name.as_str(), value) {
                ("restrict" | "no-port-forwarding", None) => rules.forwarding = false,
                ("port-forwarding", None) => rules.forwarding = true,
                (flag, None) if ALREADY_TRUE.contains(&flag) => {}
                ("from", Some(value)) => rules.from = Some(address_patterns(&value)?),
                ("expiry-time", Some(value)) => {
                    let at = expiry(&value)?;
                    let left = at.duration_since(wall).unwrap_or(Duration::ZERO);
                    rules.expires = Some(now + left);
                }
                ("permitlisten", Some(value)) => listen.push(listen_pattern(&value)?),
                ("cert-authority", None) => rules.cert_authority = true,
                ("principals", Some(value)) => rules.principals = Some(principal_list(&value)?),
                _ => return Err(KeyOptionError::NotEnforced(option.to_owned())),
            }
        }
        if !listen.is_empty() {
            rules.permit_listen = Some(listen);
        }
        if rules.principals.is_some() && !rules.cert_authority {
            return Err(KeyOptionError::PrincipalsWithoutAuthority);
        }
        Ok(rules)
    }

    /// The rules a certificate's own options set for its login (PROTOCOL.certkeys):
    /// `source-address` as a `from=` of networks, and no forwards without the
    /// `permit-port-forwarding` extension.
    pub(crate) fn of_certificate(source: Option<Vec<IpNet>>, forwarding: bool) -> Self {
        Self {
            from: source.map(|nets| {
                nets.into_iter()
                    .map(|net| (false, AddressPattern::Network(net.trunc())))
                    .collect()
            }),
            forwarding,
            ..Self::default()
        }
    }

    /// Whether this is a `cert-authority` line: its key only signs certificates.
    pub fn is_cert_authority(&self) -> bool {
        self.cert_authority
    }

    /// Whether a certificate principal is allowed by the line's `principals=` (any, without it).
    pub fn allows_principal(&self, principal: &str) -> bool {
        self.principals
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|p| p == principal))
    }

    /// Whether the key may log in from `peer` at `now`.
    pub fn admits(&self, peer: IpAddr, now: Instant) -> bool {
        if self.expires.is_some_and(|at| now >= at) {
            return false;
        }
        let Some(patterns) = &self.from else {
            return true;
        };
        let peer = peer.to_canonical();
        let text = peer.to_string();
        let matches = |p: &AddressPattern| match p {
            AddressPattern::Network(net) => net.contains(&peer),
            AddressPattern::Wildcard(w) => wildcard(w.as_bytes(), text.as_bytes()),
        };
        // sshd: a negated match denies, whatever else matches; otherwise one match allows.
        if patterns.iter().any(|(negated, p)| *negated && matches(p)) {
            return false;
        }
        patterns.iter().any(|(negated, p)| !negated && matches(p))
    }

    /// Whether the key may ask for remote forward `bind_address:port`: not with `restrict` or
    /// `no-port-forwarding`, and with `permitlisten` only as one of them allows (the NAME part
    /// matched against the bind address the user sends, `*` for any).
    pub fn permits_forward(&self, bind_address: &str, port: u32) -> bool {
        if !self.forwarding && self.permit_listen.is_none() {
            return false;
        }
        let Some(listen) = &self.permit_listen else {
            return true;
        };
        listen.iter().any(|p| {
            p.port.is_none_or(|allowed| allowed == port)
                && p.name
                    .as_deref()
                    .is_none_or(|n| n.eq_ignore_ascii_case(bind_address))
        })
    }
}

/// Splits at commas outside double quotes.
fn split_options(text: &str) -> Result<Vec<&str>, KeyOptionError> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(KeyOptionError::Unterminated);
    }
    parts.push(&text[start..]);
    Ok(parts.into_iter().filter(|p| !p.is_empty()).collect())
}

fn unquote(value: &str) -> Result<String, KeyOptionError> {
    match value.strip_prefix('"') {
        None => Ok(value.to_owned()),
        Some(inner) => inner
            .strip_suffix('"')
            .map(|v| v.replace("\\\"", "\""))
            .ok_or(KeyOptionError::Unterminated),
    }
}

fn address_patterns(value: &str) -> Result<Vec<(bool, AddressPattern)>, KeyOptionError> {
    value
        .split(',')
        .map(|item| {
            let (negated, item) = match item.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let pattern = if let Ok(net) = item.parse::<IpNet>() {
                AddressPattern::Network(net.trunc())
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                AddressPattern::Network(IpNet::from(ip))
            } else if !item.is_empty()
                && item
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b".:*?".contains(&b))
                && item.bytes().any(|b| b == b'*' || b == b'?')
            {
                AddressPattern::Wildcard(item.to_ascii_lowercase())
            } else {
                return Err(KeyOptionError::HostPattern(item.to_owned()));
            };
            Ok((negated, pattern))
        })
        .collect()
}

/// `*` any run, `?` any one byte, case-insensitive. Greedy with one backtrack point (the last
/// `*`), so O(pattern x text) however many stars: a recursive matcher is exponential in them.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last star take one more byte and try again from after it.
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn principal_list(value: &str) -> Result<Vec<String>, KeyOptionError> {
    let names: Vec<String> = value.split(',').map(str::to_owned).collect();
    if names.iter().any(String::is_empty) {
        return Err(KeyOptionError::BadValue {
            option: "principals",
            value: value.to_owned(),
            reason: "expected a comma-separated list of names",
        });
    }
    Ok(names)
}

fn listen_pattern(value: &str) -> Result<ListenPattern, KeyOptionError> {
    let bad = || KeyOptionError::BadValue {
        option: "permitlisten",
        value: value.to_owned(),
        reason: "expected [NAME:]PORT, either of them * for any",
    };
    let (name, port) = match value.rsplit_once(':') {
        Some((name, port)) => (Some(name), port),
        None => (None, value),
    };
    let name = match name {
        None | Some("*") => None,
        Some("") => return Err(bad()),
        Some(name) => Some(name.to_owned()),
    };
    let port = match port {
        "*" => None,
        port => Some(
            port.parse::<u32>()
                .ok()
                .filter(|p| *p <= 65535)
                .ok_or_else(bad)?,
        ),
    };
    Ok(ListenPattern { name, port })
}

/// `YYYYMMDD[HHMM[SS]]Z`: UTC only, as this server has no time zone database.
fn expiry(value: &str) -> Result<SystemTime, KeyOptionError> {
    let bad = |reason| KeyOptionError::BadValue {
        option: "expiry-time",
        value: value.to_owned(),
        reason,
    };
    let digits = value
        .strip_suffix('Z')
        .or_else(|| value.strip_suffix('z'))
        .ok_or_else(|| bad("give it in UTC with a Z suffix, e.g. 20270131Z or 202701311200Z"))?;
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("expected YYYYMMDD[HHMM[SS]]Z"));
    }
    let n = |range: std::ops::Range<usize>| {
        digits
            .get(range)
            .map_or(0, |d| d.parse::<i64>().unwrap_or(0))
    };
    let (year, month, day) = (n(0..4), n(4..6), n(6..8));
    let (hour, minute, second) = (n(8..10), n(10..12), n(12..14));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad("expected YYYYMMDD[HHMM[SS]]Z"));
    }
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).map_err(|_| bad("before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_in_linear_time() {
        assert!(wildcard(b"10.0.*.?", b"10.0.12.7"));
        assert!(!wildcard(b"10.0.*.?", b"10.0.12.77"));
        assert!(wildcard(b"*", b""));
        assert!(wildcard(b"*a*b", b"xxaxxb"));
        // Exponential for a recursive matcher.
        let stars = "*a".repeat(40);
        assert!(!wildcard(stars.as_bytes(), "a".repeat(39).as_bytes()));
    }
}
