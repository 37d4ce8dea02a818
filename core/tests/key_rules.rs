//! A key's `authorized_keys` options, honoured: where it may log in from, until when, and which
//! forwards it may ask for.

mod harness;

use std::net::SocketAddr;

use harness::Harness;
use tunnel_core::Reply;

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
