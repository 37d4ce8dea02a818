//! The `authorized_keys` file changes under a running server: a key that is gone loses its live
//! connections and every name reserved for it, the others carry on, and a key's new line
//! applies from then on.

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use harness::{key, Harness};
use tunnel_core::{Input, KeyList, KeyRules, Reply};

fn rules(options: &str) -> KeyRules {
    KeyRules::from_options(options, Instant::now(), SystemTime::now()).expect("valid options")
}

/// A list of the keys called `names`, each without options.
fn list(names: &[&str]) -> KeyList {
    names.iter().fold(KeyList::new(), |list, name| {
        list.with_key(key(name), KeyRules::default())
    })
}

fn reload(h: &mut Harness, keys: KeyList) {
    h.feed(Input::AuthorizedKeysChanged { keys });
}

#[test]
fn a_removed_key_loses_its_connection_and_its_names_while_another_key_stays() {
    let mut h = Harness::builder()
        .authorized_keys(&["alice", "bob"])
        .name_grace(Duration::from_secs(600))
        .build();
    let (alice, _) = h.tunnel("alice", &[("alice", 80)], "http");
    let (bob, _) = h.tunnel("bob", &[("bob", 80)], "http");
    // An earlier connection of alice's left a tcp port reserved for her reconnect.
    let (old, _) = h.tunnel("alice", &[("", 0)], "tcp");
    let reserved_port = h.port_of(old);
    h.close(old);
    assert_eq!(h.gw.reservation_count(), 1);

    reload(&mut h, list(&["bob"]));

    assert!(h.is_closed(alice));
    insta::assert_snapshot!(h.stderr(alice).join("\n"), @"your key was removed from this server's authorized keys; closing");
    assert_eq!(h.exit_status(alice), Some(1));
    assert!(h.routes_of(alice).is_empty());
    // Nothing is kept for alice: neither her live name nor her reserved port.
    assert_eq!(h.gw.reservation_count(), 0);
    assert!(h.gw.holders().all(|(_, owner, _)| *owner == key("bob")));
    // So another key may have them at once.
    let (carol, _) = h.tunnel("bob", &[("alice", 80)], "http");
    assert_eq!(h.forwarding_lines(carol).len(), 1, "{:?}", h.stderr(carol));
    let (port_taker, reqs) = h.tunnel("bob", &[("", u32::from(reserved_port))], "tcp");
    assert!(matches!(h.reply(reqs[0]), Some(Reply::Granted { .. })));
    assert_eq!(h.port_of(port_taker), reserved_port);

    // Bob never noticed.
    assert!(!h.is_closed(bob));
    assert!(h.stderr(bob).is_empty());
    assert_eq!(h.routes_of(bob).len(), 1);
    // And alice is refused from now on.
    let again = h.connect();
    assert!(!h.auth(again, "v2", "alice"));
    assert!(!h.gw.accepts_key(&key("alice")));
    h.assert_no_leaks();
}

#[test]
fn a_connection_without_a_session_is_told_in_the_disconnect_message() {
    let mut h = Harness::builder().authorized_keys(&["alice"]).build();
    // `ssh -N`: forwards, no session channel, no command.
    let conn = h.login("alice");
    h.forward(conn, "", 0);
    h.advance(h.config().command_deadline());
    assert_eq!(h.routes_of(conn).len(), 1);
    reload(&mut h, list(&[]));
    assert!(h.is_closed(conn));
    assert_eq!(
        h.session(conn).disconnect_message.as_deref(),
        Some("your key was removed from this server's authorized keys; closing")
    );
    h.assert_no_leaks();
}

#[test]
fn an_added_key_logs_in_and_a_changed_line_applies_to_later_requests() {
    let mut h = Harness::builder().authorized_keys(&["alice"]).build();
    let (alice, _) = h.tunnel("alice", &[("first", 80)], "http");
    let refused = h.connect();
    assert!(!h.auth(refused, "v2", "dave"));

    reload(
        &mut h,
        list(&["dave"]).with_key(key("alice"), rules("restrict,permitlisten=\"first:80\"")),
    );
    let (dave, _) = h.tunnel("dave", &[("dave", 80)], "http");
    assert_eq!(h.forwarding_lines(dave).len(), 1);
    // Alice stays (her address is still admitted) and keeps what she has...
    assert!(!h.is_closed(alice));
    assert_eq!(h.routes_of(alice).len(), 1);
    // ...but a new connection of hers gets only what the new line permits.
    let (narrowed, _) = h.tunnel("alice", &[("second", 80)], "http");
    assert!(
        h.stderr(narrowed)[0].contains("may not forward \"second\":80"),
        "{:?}",
        h.stderr(narrowed)
    );
    h.assert_no_leaks();
}

#[test]
fn a_new_from_closes_connections_from_elsewhere() {
    let mut h = Harness::builder().authorized_keys(&["alice"]).build();
    let inside = h.connect_from(SocketAddr::from(([198, 51, 100, 7], 1000)));
    assert!(h.auth(inside, "v2", "alice"));
    h.forward(inside, "in", 80);
    h.exec(inside, "http");
    let outside = h.connect_from(SocketAddr::from(([203, 0, 113, 7], 1000)));
    assert!(h.auth(outside, "v2", "alice"));
    h.forward(outside, "out", 80);
    h.exec(outside, "http");

    reload(
        &mut h,
        KeyList::new().with_key(key("alice"), rules("from=\"198.51.100.0/24\"")),
    );
    assert!(!h.is_closed(inside));
    assert!(h.is_closed(outside));
    insta::assert_snapshot!(h.stderr(outside).join("\n"), @"your key's authorized_keys line no longer admits this connection (from= or expiry-time=); closing");
    // The key is still listed: what its closed connection held stays reserved for it.
    assert_eq!(h.gw.reservation_count(), 1);
    h.assert_no_leaks();
}

#[test]
fn a_bare_second_line_never_loosens_a_restricted_one() {
    let list = KeyList::new()
        .with_key(key("alice"), rules("restrict"))
        .with_key(key("alice"), KeyRules::default());
    let mut h = Harness::builder().build();
    reload(&mut h, list);
    let (conn, reqs) = h.tunnel("alice", &[("app", 80)], "http");
    assert_eq!(h.reply(reqs[0]), Some(Reply::Refused));
    assert!(h.is_closed(conn));
    h.assert_no_leaks();
}
