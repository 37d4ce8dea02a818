//! Decisions the data path asks of an endpoint's options: who may pass, which credentials are
//! good, what the Host header becomes. The adapter applies the answers; it decides nothing.

use std::net::IpAddr;

use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::command::{AccessRules, Credentials, HostHeader};

impl AccessRules {
    /// Whether a visitor from `addr` may pass: deny wins; with any allow rule only allowed
    /// addresses pass. IPv4-mapped IPv6 addresses are judged as IPv4.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|net| net.contains(&addr)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&addr))
    }

    /// True when no rule is set, so the data path can skip the check.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Checks an `Authorization` header value against `--basic-auth` credentials (RFC 7617).
///
/// Every credential is compared in constant time and all of them are compared, so the time taken
/// tells an attacker nothing about which part matched. An empty list lets everyone in.
pub fn basic_auth_allows(credentials: &[Credentials], authorization: Option<&[u8]>) -> bool {
    if credentials.is_empty() {
        return true;
    }
    let Some(decoded) = authorization.and_then(decode_basic) else {
        return false;
    };
    let mut ok = subtle::Choice::from(0);
    for c in credentials {
        let expected = format!("{}:{}", c.user, c.password);
        ok |= expected.as_bytes().ct_eq(&decoded);
    }
    ok.into()
}

fn decode_basic(header: &[u8]) -> Option<Vec<u8>> {
    let header = header.trim_ascii();
    let scheme_end = header.iter().position(|b| *b == b' ')?;
    let (scheme, token) = header.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(token.trim_ascii())
        .ok()
}

impl HostHeader {
    /// The Host header to send to the local service, or `None` to pass the visitor's unchanged.
    pub fn replacement(&self) -> Option<&str> {
        match self {
            HostHeader::Preserve => None,
            HostHeader::Rewrite => Some("localhost"),
            HostHeader::Literal(host) => Some(host),
        }
    }
}
