//! Host names: what a bind address asks for, RFC 1123 validation, random names, and the
//! normalisation every lookup goes through.

use core::fmt;
use std::net::IpAddr;

use rand_core::RngCore;

use crate::error::ForwardError;

/// A validated, lowercase host name under the gateway's domain, without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

impl Hostname {
    /// Wraps the output of [`normalize_host`] for a lookup.
    pub(crate) fn from_normalized(name: String) -> Self {
        Self(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Length of generated names: 36^8 (about 2.8e12) names, so guessing one is impractical.
pub const RANDOM_NAME_LEN: usize = 8;

/// What a `tcpip-forward` bind address asks for.
///
/// Empty, `localhost`, `*` and IP literals (what `ssh -R PORT:...` and `-R ADDR:PORT:...` send
/// when the user names no host) mean a random name. A single label means `LABEL.DOMAIN`; a full
/// host under the domain is taken as is. Matching is case-insensitive (RFC 4343).
pub fn requested_name(bind_address: &str, domain: &str) -> Result<Option<Hostname>, ForwardError> {
    let trimmed = bind_address.strip_suffix('.').unwrap_or(bind_address);
    if trimmed.is_empty()
        || trimmed.eq_ignore_ascii_case("localhost")
        || trimmed == "*"
        || trimmed.parse::<IpAddr>().is_ok()
    {
        return Ok(None);
    }
    let invalid = |reason| ForwardError::NameInvalid {
        name: bind_address.into(),
        reason,
    };
    let lower = trimmed.to_ascii_lowercase();
    let full = if lower.contains('.') {
        if lower == domain {
            return Err(invalid("the base domain itself cannot be a name"));
        }
        match lower.strip_suffix(domain) {
            Some(prefix) if prefix.ends_with('.') => lower.clone(),
            _ => return Err(invalid("it is not under this server's domain")),
        }
    } else {
        format!("{lower}.{domain}")
    };
    if full.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    let own_labels = &full[..full.len() - domain.len() - 1];
    for label in own_labels.split('.') {
        check_label(label).map_err(invalid)?;
    }
    Ok(Some(Hostname(full)))
}

/// Validates and normalises the server's base domain (`--domain`): lowercase, one trailing dot
/// dropped, RFC 1123 labels, at most 253 characters, and not an IP address. The same label rules
/// as endpoint names, so every name the server hands out is a valid host under it.
pub fn base_domain(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(|label| check_label(label).is_ok());
    valid.then(|| name.to_owned())
}

/// RFC 1123 §2.1 label rules.
fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("it has an empty label");
    }
    if label.len() > 63 {
        return Err("a label is longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only letters, digits and '-' are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label cannot start or end with '-'");
    }
    Ok(())
}

/// A fresh random name `XXXXXXXX.DOMAIN` over `[a-z0-9]`. The caller checks it is free.
pub fn random_name(rng: &mut dyn RngCore, domain: &str) -> Hostname {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut label = String::with_capacity(RANDOM_NAME_LEN + 1 + domain.len());
    while label.len() < RANDOM_NAME_LEN {
        let mut byte = [0u8; 1];
        rng.fill_bytes(&mut byte);
        // 252 = 7 * 36: rejecting the rest keeps every character equally likely.
        if byte[0] < 252 {
            label.push(ALPHABET[usize::from(byte[0] % 36)] as char);
        }
    }
    label.push('.');
    label.push_str(domain);
    Hostname(label)
}

/// Normalises a Host header value or SNI name for lookup: port removed, lowercase, no trailing
/// dot. Returns `None` for text that cannot be a host name we serve.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    let host = match host.rsplit_once(':') {
        // A bracketed IPv6 literal is never one of our names.
        _ if host.starts_with('[') => return None,
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || host.split('.').any(str::is_empty)
        || host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}
