//! The decisions the data path asks of an endpoint's options: who may pass, which credentials are
//! good, what the Host header becomes.

mod harness;

use std::net::IpAddr;

use base64::Engine as _;
use harness::Harness;
use ipnet::IpNet;
use tunnel_core::command::{parse_command_line, AccessRules, Command, Credentials, HostHeader};
use tunnel_core::{basic_auth_allows, VisitorRefusal};

fn rules(allow: &[&str], deny: &[&str]) -> AccessRules {
    let nets = |v: &[&str]| v.iter().map(|s| s.parse::<IpNet>().unwrap()).collect();
    AccessRules {
        allow: nets(allow),
        deny: nets(deny),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn credentials(pairs: &[&str]) -> Vec<Credentials> {
    let line = pairs
        .iter()
        .map(|p| format!("--basic-auth={}", tunnel_core::command::testing::quote(p)))
        .collect::<Vec<_>>()
        .join(" ");
    match parse_command_line(&format!("http {line}")) {
        Ok(Some(Command::Http(o))) => o.basic_auth,
        other => panic!("{other:?}"),
    }
}

fn basic(user_pass: &str) -> Vec<u8> {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
    .into_bytes()
}

#[test]
fn no_rules_let_everyone_in() {
    let open = rules(&[], &[]);
    assert!(open.is_open());
    assert!(open.allows(ip("203.0.113.1")));
    assert!(open.allows(ip("::1")));
}

#[test]
fn deny_wins_over_allow() {
    let r = rules(&["10.0.0.0/8"], &["10.1.0.0/16"]);
    assert!(!r.is_open());
    assert!(r.allows(ip("10.2.3.4")));
    assert!(
        !r.allows(ip("10.1.2.3")),
        "denied inside an allowed network"
    );
    assert!(
        !r.allows(ip("192.0.2.1")),
        "with any allow only allowed pass"
    );
}

#[test]
fn deny_only_lets_the_rest_in() {
    let r = rules(&[], &["192.0.2.0/24", "2001:db8::/32"]);
    assert!(!r.allows(ip("192.0.2.77")));
    assert!(!r.allows(ip("2001:db8::1")));
    assert!(r.allows(ip("198.51.100.1")));
    assert!(r.allows(ip("2001:db9::1")));
}

#[test]
fn allow_only_lets_only_those_in() {
    let r = rules(&["192.0.2.0/24", "2001:db8::/32"], &[]);
    assert!(r.allows(ip("192.0.2.1")));
    assert!(r.allows(ip("2001:db8::5")));
    assert!(!r.allows(ip("192.0.3.1")));
    assert!(!r.allows(ip("::1")));
}

#[test]
fn ipv4_mapped_ipv6_visitors_are_judged_as_ipv4() {
    let r = rules(&["192.0.2.0/24"], &["192.0.2.66/32"]);
    assert!(r.allows(ip("::ffff:192.0.2.1")));
    assert!(!r.allows(ip("::ffff:192.0.2.66")));
    assert!(!r.allows(ip("::ffff:198.51.100.1")));
    let deny = rules(&[], &["10.0.0.0/8"]);
    assert!(!deny.allows(ip("::ffff:10.0.0.1")));
}

#[test]
fn route_allows_follows_the_command_flags() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel(
        "alice",
        &[("localhost", 0)],
        "tcp --cidr-allow 203.0.113.0/24 --cidr-deny 203.0.113.9",
    );
    let route = &h.routes_of(conn)[0];
    assert_eq!(route.admit_connection(ip("203.0.113.8")), Ok(()));
    assert_eq!(
        route.admit_connection(ip("203.0.113.9")),
        Err(VisitorRefusal::Forbidden)
    );
    assert_eq!(
        route.admit_connection(ip("198.51.100.1")),
        Err(VisitorRefusal::Forbidden)
    );
    h.assert_no_leaks();
}

#[test]
fn basic_auth_checks_every_credential() {
    let creds = credentials(&["alice:secret", "bob:p:w", "carol:"]);
    assert!(basic_auth_allows(&creds, Some(&basic("alice:secret"))));
    assert!(basic_auth_allows(&creds, Some(&basic("bob:p:w"))));
    assert!(basic_auth_allows(&creds, Some(&basic("carol:"))));
    assert!(!basic_auth_allows(&creds, Some(&basic("alice:wrong"))));
    assert!(!basic_auth_allows(&creds, Some(&basic("alice:secret2"))));
    assert!(!basic_auth_allows(&creds, Some(&basic("alice"))));
    assert!(!basic_auth_allows(&creds, Some(&basic("bob:p"))));
    assert!(!basic_auth_allows(&creds, None), "no header, no entry");
}

#[test]
fn basic_auth_header_parsing() {
    let creds = credentials(&["a:b"]);
    assert!(basic_auth_allows(&creds, Some(b"Basic YTpi")));
    assert!(
        basic_auth_allows(&creds, Some(b"basic YTpi")),
        "scheme is case-insensitive"
    );
    assert!(basic_auth_allows(&creds, Some(b"BASIC   YTpi  ")));
    assert!(!basic_auth_allows(&creds, Some(b"Bearer YTpi")));
    assert!(!basic_auth_allows(&creds, Some(b"Basic")));
    assert!(!basic_auth_allows(&creds, Some(b"Basic !!!")));
    assert!(!basic_auth_allows(&creds, Some(b"YTpi")));
    assert!(!basic_auth_allows(&creds, Some(b"")));
    assert!(!basic_auth_allows(&creds, Some(b"Basic YTpiYw==")));
}

#[test]
fn no_credentials_let_everyone_in() {
    assert!(basic_auth_allows(&[], None));
    assert!(basic_auth_allows(&[], Some(b"Basic garbage")));
}

#[test]
fn credentials_never_print_the_password() {
    let creds = credentials(&["alice:hunter2"]);
    assert_eq!(creds[0].user(), "alice");
    assert!(!format!("{creds:?}").contains("hunter2"));
}

#[test]
fn host_header_replacement() {
    assert_eq!(HostHeader::Preserve.replacement(), None);
    assert_eq!(HostHeader::Rewrite.replacement(), Some("localhost"));
    assert_eq!(
        HostHeader::Literal("example.com:81".into()).replacement(),
        Some("example.com:81")
    );
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "http --host-header internal.test");
    let http = h.routes_of(conn)[0].policy.http().cloned().expect("http");
    assert_eq!(http.host_header.replacement(), Some("internal.test"));
    h.assert_no_leaks();
}
