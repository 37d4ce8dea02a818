//! Names (and tcp ports) belong to the key that took them: refused to other keys while live
//! ("taken") and for the grace period after ("reserved"), taken over or given back to the same key.

mod harness;

use std::time::Duration;

use harness::{key, Harness};
use tunnel_core::{Action, Reply};

#[test]
fn a_name_held_by_another_key_is_taken() {
    let mut h = Harness::new();
    let (alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (bob, reqs) = h.tunnel("bob", &[("app", 80)], "http");
    assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
    assert_eq!(
        h.stderr(bob),
        ["error: name app.localhost is taken (see --help: ssh HOST help)"]
    );
    assert_eq!(h.exit_status(bob), Some(1));
    // Alice is untouched, and http and tls share one name space.
    assert_eq!(
        h.gw.route_by_host("app.localhost").map(|r| r.conn),
        Some(alice)
    );
    assert!(h.stderr(alice).is_empty());
    let (carol, _) = h.tunnel("carol", &[("app", 443)], "tls");
    assert!(h.stderr(carol)[0].contains("is taken"));
    h.assert_no_leaks();
}

#[test]
fn the_same_key_takes_a_name_over() {
    let mut h = Harness::new();
    let (old, _) = h.tunnel("alice", &[("app", 80), ("other", 80)], "http");
    let (new, reqs) = h.tunnel("alice", &[("app", 80)], "http");
    assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
    assert_eq!(
        h.forwarding_lines(new),
        ["Forwarding http://app.localhost:8080 -> app:80"]
    );
    assert_eq!(
        h.gw.route_by_host("app.localhost").map(|r| r.conn),
        Some(new)
    );
    assert_eq!(
        h.stderr(old),
        ["app.localhost was taken over by a new connection with the same key"]
    );
    // The old connection keeps its other endpoint.
    assert!(!h.is_closed(old));
    assert_eq!(
        h.gw.route_by_host("other.localhost").map(|r| r.conn),
        Some(old)
    );
    h.assert_no_leaks();
}

#[test]
fn a_connection_left_with_nothing_after_a_takeover_is_closed() {
    let mut h = Harness::new();
    let (old, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (new, _) = h.tunnel("alice", &[("app", 80)], "http");
    assert_eq!(h.stderr(old).len(), 1);
    assert!(h.is_closed(old) && h.session(old).closed_by_server);
    // Its name is the new connection's, not a reservation.
    assert_eq!(h.gw.reservation_count(), 0);
    assert_eq!(
        h.gw.route_by_host("app.localhost").map(|r| r.conn),
        Some(new)
    );
    h.assert_no_leaks();
}

#[test]
fn the_same_key_takes_a_tcp_port_over() {
    let mut h = Harness::new();
    let (old, _) = h.tunnel("alice", &[("localhost", 20020)], "tcp");
    let mark = h.log.len();
    let (new, _) = h.tunnel("alice", &[("localhost", 20020)], "tcp");
    assert_eq!(h.gw.route_by_port(20020).map(|r| r.conn), Some(new));
    assert!(h.is_closed(old));
    assert_eq!(
        h.stderr(old),
        ["tcp port 20020 was taken over by a new connection with the same key"]
    );
    // The old listener goes before the new one binds the same port.
    let actions = h.actions_since(mark);
    let unbind = actions
        .iter()
        .position(|a| matches!(a, Action::Unbind { port: 20020, .. }));
    let bind = actions
        .iter()
        .position(|a| matches!(a, Action::Bind { port: 20020, .. }));
    assert!(unbind.unwrap() < bind.unwrap());
    h.assert_no_leaks();
}

#[test]
fn one_connection_asking_twice_for_one_name_does_not_take_it_from_itself() {
    for (a, b) in [
        (("app", 80), ("app.localhost", 80)),
        (("app", 80), ("app", 443)),
        (("localhost", 20030), ("0.0.0.0", 20030)),
    ] {
        let mut h = Harness::new();
        let (conn, _) = h.tunnel("alice", &[a, b], "");
        let what = format!("{a:?} {b:?}");
        assert_eq!(h.stderr(conn).len(), 1, "{what}: {:?}", h.stderr(conn));
        assert!(
            h.stderr(conn)[0].contains("already requested on this connection"),
            "{what}: {}",
            h.stderr(conn)[0]
        );
        assert_ne!(h.exit_status(conn), Some(0));
        h.assert_no_leaks();
    }
}

#[test]
fn the_same_forward_twice_on_one_connection_is_a_duplicate() {
    let mut h = Harness::new();
    let (conn, reqs) = h.tunnel("alice", &[("app", 80), ("app", 80)], "http");
    assert_eq!(h.reply(reqs[1]), Some(Reply::Refused));
    assert_eq!(
        h.stderr(conn),
        ["error: remote forward \"app\":80 is already requested on this connection (see --help: ssh HOST help)"]
    );
    h.assert_no_leaks();
}

#[test]
fn a_name_is_reserved_for_its_key_for_the_grace_period() {
    let mut h = Harness::new();
    let grace = h.config().name_grace();
    let (alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    h.close(alice);
    assert_eq!(h.gw.route_by_host("app.localhost"), None, "gone at once");
    assert_eq!(h.gw.reservation_count(), 1);
    let held: Vec<_> =
        h.gw.holders()
            .map(|(_, k, live)| (k.clone(), live))
            .collect();
    assert_eq!(held, [(key("alice"), false)]);

    h.advance(grace - Duration::from_secs(1));
    let (bob, reqs) = h.tunnel("bob", &[("app", 80)], "http");
    assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
    assert_eq!(
        h.stderr(bob),
        ["error: name app.localhost is reserved for its previous owner (see --help: ssh HOST help)"]
    );

    // The same key gets it back, with no timer left behind.
    let (back, _) = h.tunnel("alice", &[("app", 80)], "http");
    assert_eq!(
        h.gw.route_by_host("app.localhost").map(|r| r.conn),
        Some(back)
    );
    assert_eq!(h.gw.reservation_count(), 0);
    h.assert_no_leaks();
}

#[test]
fn a_reservation_expires_after_the_grace_period() {
    let mut h = Harness::new();
    let grace = h.config().name_grace();
    let (alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    h.close(alice);
    h.advance(grace);
    assert_eq!(h.gw.reservation_count(), 0);
    assert_eq!(h.gw.timer_count(), 0);
    let (bob, _) = h.tunnel("bob", &[("app", 80)], "http");
    assert_eq!(
        h.gw.route_by_host("app.localhost").map(|r| r.conn),
        Some(bob)
    );
    h.assert_no_leaks();
}

#[test]
fn grace_zero_turns_reservation_off() {
    let mut h = Harness::builder().name_grace(Duration::ZERO).build();
    let (alice, _) = h.tunnel("alice", &[("app", 80), ("localhost", 20040)], "");
    h.close(alice);
    assert_eq!(h.gw.reservation_count(), 0);
    assert_eq!(h.gw.held_port_count(), 0);
    assert_eq!(h.gw.timer_count(), 0);
    let (bob, _) = h.tunnel("bob", &[("app", 80), ("localhost", 20040)], "");
    assert_eq!(h.routes_of(bob).len(), 2);
    h.assert_no_leaks();
}

#[test]
fn a_reconnect_gets_the_same_random_name_back() {
    let mut h = Harness::new();
    let (first, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    let name = h.host_of(first);
    h.close(first);
    h.advance(Duration::from_secs(30));
    // autossh: same key, same -R.
    let (again, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    assert_eq!(h.host_of(again), name);
    assert_eq!(h.gw.reservation_count(), 0);
    h.assert_no_leaks();
}

#[test]
fn a_reconnect_with_another_forward_or_key_gets_another_name() {
    let mut h = Harness::new();
    let (first, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    let name = h.host_of(first);
    h.close(first);
    let (other_port, _) = h.tunnel("alice", &[("localhost", 443)], "http");
    assert_ne!(h.host_of(other_port), name);
    let (other_bind, _) = h.tunnel("alice", &[("", 80)], "http");
    assert_ne!(h.host_of(other_bind), name);
    let (other_key, _) = h.tunnel("bob", &[("localhost", 80)], "http");
    assert_ne!(h.host_of(other_key), name);
    // And the reservation still waits for alice's same forward.
    let (same, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    assert_eq!(h.host_of(same), name);
    h.assert_no_leaks();
}

#[test]
fn after_the_grace_a_reconnect_gets_a_new_random_name() {
    let mut h = Harness::new();
    let (first, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    let name = h.host_of(first);
    h.close(first);
    h.advance(h.config().name_grace());
    let (again, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    assert_ne!(h.host_of(again), name);
    h.assert_no_leaks();
}

#[test]
fn a_reconnect_gets_the_same_tcp_port_back() {
    let mut h = Harness::new();
    let (first, _) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    let port = h.port_of(first);
    h.close(first);
    // Someone else asking for any port does not get it.
    let (bob, _) = h.tunnel("bob", &[("localhost", 0)], "tcp");
    assert_ne!(h.port_of(bob), port);
    let (again, reqs) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    assert_eq!(h.port_of(again), port);
    assert_eq!(
        h.reply(reqs[0]),
        Some(Reply::Granted {
            port: Some(u32::from(port))
        })
    );
    h.assert_no_leaks();
}

#[test]
fn a_reserved_fixed_tcp_port_is_refused_to_another_key() {
    let mut h = Harness::new();
    let (alice, _) = h.tunnel("alice", &[("localhost", 20050)], "tcp");
    h.close(alice);
    assert!(h.bound_ports().is_empty(), "the listener goes at once");
    let (bob, reqs) = h.tunnel("bob", &[("localhost", 20050)], "tcp");
    let expected = Reply::Granted { port: None };
    assert_eq!(h.reply(reqs[0]), Some(expected));
    assert_eq!(
        h.stderr(bob),
        ["error: tcp port 20050 is reserved for its previous owner (see --help: ssh HOST help)"]
    );
    let (back, _) = h.tunnel("alice", &[("localhost", 20050)], "tcp");
    assert_eq!(h.port_of(back), 20050);
    h.assert_no_leaks();
}

#[test]
fn names_are_owned_by_key_not_by_user_name() {
    let mut h = Harness::new();
    let c1 = h.connect();
    h.auth(c1, "alice", "shared-key");
    h.forward(c1, "app", 80);
    h.exec(c1, "http");
    let c2 = h.connect();
    h.auth(c2, "v2", "shared-key");
    h.forward(c2, "app", 80);
    h.exec(c2, "http");
    assert_eq!(
        h.gw.route_by_host("app.localhost").map(|r| r.conn),
        Some(c2)
    );
    h.assert_no_leaks();
}
