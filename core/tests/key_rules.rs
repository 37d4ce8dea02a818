//! A key's `authorized_keys` options, honoured: where it may log in from, until when, and which
//! forwards it may ask for.

mod harness;

use std::net::SocketAddr;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::Harness;
use tunnel_core::{KeyRules, Reply};

fn rules(text: &str) -> KeyRules {
    KeyRules::from_options(text, Instant::now(), SystemTime::now()).expect("valid")
}

#[test]
fn from_allows_networks_and_wildcards_and_negation_wins() {
    let r = rules("from=\"10.0.0.0/8,192.0.2.*,!10.9.9.9\"");
    let now = Instant::now();
    assert!(r.admits("10.1.2.3".parse().unwrap(), now));
    assert!(r.admits("::ffff:192.0.2.77".parse().unwrap(), now));
    assert!(!r.admits("10.9.9.9".parse().unwrap(), now));
    assert!(!r.admits("203.0.113.1".parse().unwrap(), now));
    assert!(KeyRules::default().admits("203.0.113.1".parse().unwrap(), now));
}

#[test]
fn restrict_forbids_forwards_and_permitlisten_names_them() {
    assert!(!rules("restrict").permits_forward("app", 80));
    assert!(!rules("no-port-forwarding,no-pty").permits_forward("app", 80));
    let r = rules("restrict,permitlisten=\"app:80\",permitlisten=\"*:0\"");
    assert!(r.permits_forward("app", 80));
    assert!(r.permits_forward("APP", 80));
    assert!(!r.permits_forward("other", 80));
    assert!(r.permits_forward("anything", 0));
    assert!(!r.permits_forward("app", 443));
}

#[test]
fn expiry_is_a_deadline_on_the_gateways_clock() {
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000); // 2027-01-15T08:00:00Z
    let r = KeyRules::from_options("expiry-time=\"20270115080100Z\"", now, wall).expect("valid");
    assert!(r.admits("10.0.0.1".parse().unwrap(), now + Duration::from_secs(59)));
    assert!(!r.admits("10.0.0.1".parse().unwrap(), now + Duration::from_secs(60)));
    let past = KeyRules::from_options("expiry-time=20200101Z", now, wall).expect("valid");
    assert!(!past.admits("10.0.0.1".parse().unwrap(), now));
}

#[test]
fn what_cannot_be_honoured_is_refused() {
    let err = |text: &str| {
        KeyRules::from_options(text, Instant::now(), SystemTime::now())
            .expect_err(text)
            .to_string()
    };
    insta::assert_snapshot!(
        err("command=\"tcp\""),
        @r#"option command="tcp" is not enforced by this server; remove it or the line"#
    );
    insta::assert_snapshot!(
        err("principals=\"alice\""),
        @"principals= applies only to a cert-authority line; add cert-authority or remove it"
    );
    assert!(err("cert-authority,principals=\"a,,b\"").contains("comma-separated"));
    assert!(err("from=\"*.example.com\"").contains("names a host"));
    assert!(err("expiry-time=20270101").contains("UTC"));
    assert!(err("permitlisten=\"app:http\"").contains("[NAME:]PORT"));
    assert!(err("from=\"10.0.0.0/8").contains("unterminated"));
}

#[test]
fn from_decides_where_a_key_may_log_in_from() {
    let mut h = Harness::builder()
        .key_rules("alice", "from=\"198.51.100.0/24\"")
        .build();
    let inside = h.connect_from(SocketAddr::from(([198, 51, 100, 7], 1000)));
    assert!(h.auth(inside, "v2", "alice"));
    let outside = h.connect_from(SocketAddr::from(([203, 0, 113, 7], 1000)));
    assert!(
        !h.auth(outside, "v2", "alice"),
        "the key is refused elsewhere"
    );
    // Keys without options are unaffected.
    let bob = h.connect_from(SocketAddr::from(([203, 0, 113, 8], 1000)));
    assert!(h.auth(bob, "v2", "bob"));
    h.assert_no_leaks();
}

#[test]
fn restrict_refuses_forwards_unless_permitlisten_names_them() {
    let mut h = Harness::builder()
        .key_rules("locked", "restrict")
        .key_rules("narrow", "restrict,permitlisten=\"app:80\"")
        .build();
    let (locked, reqs) = h.tunnel("locked", &[("app", 80)], "http");
    assert_eq!(h.reply(reqs[0]), Some(Reply::Refused));
    insta::assert_snapshot!(h.stderr(locked)[0], @r#"error: this key may not forward "app":80 (its authorized_keys line does not allow it) (see --help: ssh HOST help)"#);
    let (ok, _) = h.tunnel("narrow", &[("app", 80)], "http");
    assert_eq!(h.forwarding_lines(ok).len(), 1, "{:?}", h.stderr(ok));
    let (other, _) = h.tunnel("narrow", &[("other", 80)], "http");
    assert!(
        h.stderr(other)[0].contains("may not forward \"other\":80"),
        "{:?}",
        h.stderr(other)
    );
    h.assert_no_leaks();
}
