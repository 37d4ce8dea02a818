//! Header work on the HTTP proxy path: hop-by-hop fields (RFC 9110 §7.6.1), the forwarding
//! fields, and the endpoint's edits. Pure functions over `HeaderMap`.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use tunnel_core::command::{HeaderEdits, HttpOptions};
use tunnel_core::TrustedProxies;

use crate::http::Scheme;

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the legacy ones
/// RFC 9112 and 2616 name).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// `Keep-Alive` and `Proxy-Connection` have no `http` constant.
const LEGACY_HOP_BY_HOP: [&str; 2] = ["keep-alive", "proxy-connection"];

/// Removes the hop-by-hop fields, including every field the `Connection` header names. With
/// `upgrade`, the `Upgrade` field and `Connection: upgrade` are kept so the upgrade can pass.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    for name in LEGACY_HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Prepares a visitor's request head for the local service.
pub fn prepare_request(
    headers: &mut HeaderMap,
    visitor: IpAddr,
    proxies: &TrustedProxies,
    scheme: Scheme,
    host: &str,
    options: &HttpOptions,
    upgrade: bool,
) {
    strip_hop_by_hop(headers, upgrade);
    // The visitor's `Expect: 100-continue` is answered here when the body is first read.
    headers.remove(header::EXPECT);
    let earlier = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let forwarded_for = proxies.forwarded_for(visitor, earlier);
    if !proxies.trusts(visitor) {
        headers.remove(header::FORWARDED);
        headers.remove("x-real-ip");
    }
    match HeaderValue::from_str(&forwarded_for) {
        Ok(value) => {
            headers.insert("x-forwarded-for", value);
        }
        Err(_) => {
            headers.remove("x-forwarded-for");
        }
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(scheme.forwarded_proto()),
    );
    // `host` is what the request was routed by. For an absolute-form target (or HTTP/2's
    // `:authority`) that is the target's authority, and Host becomes it whatever the visitor
    // wrote (RFC 9112 §3.2.2): the service must not see a host the request was not routed by.
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", value.clone());
        headers.insert(header::HOST, value);
    }
    if let Some(replacement) = options.host_header.replacement() {
        if let Ok(value) = HeaderValue::from_str(replacement) {
            headers.insert(header::HOST, value);
        }
    }
    apply_edits(headers, &options.request_headers);
}

/// Prepares the local service's response head for the visitor.
pub fn prepare_response(headers: &mut HeaderMap, options: &HttpOptions, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
    apply_edits(headers, &options.response_headers);
}

/// `--*-header-remove` first, then `--*-header-add` (added fields append, so repeated adds of
/// one name all arrive).
pub fn apply_edits(headers: &mut HeaderMap, edits: &HeaderEdits) {
    if edits.is_empty() {
        return;
    }
    for name in &edits.remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_str().as_bytes()) {
            headers.remove(name);
        }
    }
    for (name, value) in &edits.add {
        // The grammar admits only tokens and visible ASCII, so both conversions succeed.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_core::command::{parse_command_line, Command};

    fn options(line: &str) -> HttpOptions {
        match parse_command_line(line) {
            Ok(Some(Command::Http(o))) => o,
            other => panic!("not an http command: {other:?}"),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn upgrade_survives_when_upgrading() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarding_fields_append_and_set() {
        let mut h = map(&[
            ("host", "App.localhost:8080"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        let o = options("http");
        prepare_request(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            &TrustedProxies::default(),
            Scheme::Http,
            "App.localhost:8080",
            &o,
            false,
        );
        // The visitor is the first hop: what it says of earlier ones is replaced.
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "App.localhost:8080");
        assert_eq!(
            h["host"], "App.localhost:8080",
            "Host passes unchanged by default"
        );
    }

    #[test]
    fn only_a_trusted_proxy_may_add_to_the_forwarding_fields() {
        let fields = [
            ("host", "a.localhost"),
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.1"),
            ("x-real-ip", "198.51.100.1"),
        ];
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let mut h = map(&fields);
        let o = options("http");
        prepare_request(
            &mut h,
            "203.0.113.5".parse().unwrap(),
            &trusted,
            Scheme::Http,
            "a.localhost",
            &o,
            false,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.5");
        assert!(
            h.get("forwarded").is_none() && h.get("x-real-ip").is_none(),
            "{h:?}"
        );
        let mut h = map(&fields);
        prepare_request(
            &mut h,
            "::ffff:10.1.2.3".parse().unwrap(),
            &trusted,
            Scheme::Http,
            "a.localhost",
            &o,
            false,
        );
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 10.1.2.3");
        assert_eq!(h["forwarded"], "for=198.51.100.1");
    }

    #[test]
    fn host_becomes_the_host_the_request_was_routed_by() {
        // `GET http://echo.localhost/x` with `Host: admin.internal`.
        let mut h = map(&[("host", "admin.internal")]);
        prepare_request(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            &TrustedProxies::default(),
            Scheme::Http,
            "echo.localhost",
            &options("http"),
            false,
        );
        assert_eq!(h["host"], "echo.localhost");
        assert_eq!(h.get_all("host").iter().count(), 1);
        assert_eq!(h["x-forwarded-host"], "echo.localhost");
    }

    #[test]
    fn host_header_and_edits_apply() {
        let mut h = map(&[("host", "a.localhost"), ("cookie", "x"), ("x-drop", "1")]);
        let o = options(
            "http --host-header=rewrite --request-header-add 'X-Env: dev' --request-header-remove cookie",
        );
        prepare_request(
            &mut h,
            "::ffff:10.0.0.1".parse().unwrap(),
            &TrustedProxies::default(),
            Scheme::Https,
            "a.localhost",
            &o,
            false,
        );
        assert_eq!(h["host"], "localhost");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-env"], "dev");
        assert!(!h.contains_key("cookie"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        let mut r = map(&[("server", "dev"), ("connection", "close")]);
        let o = options("http --response-header-remove server --response-header-add 'X-A: 1' --response-header-add 'X-A: 2'");
        prepare_response(&mut r, &o, false);
        assert!(!r.contains_key("server") && !r.contains_key("connection"));
        assert_eq!(r.get_all("x-a").iter().count(), 2);
    }
}
