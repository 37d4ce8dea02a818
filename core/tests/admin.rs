//! What an operator sees and does: the views of connections, endpoints and reservations, a kick
//! that ends one session with its reason, and a reservation released for anyone.

mod harness;

use std::time::Duration;

use harness::{key, Harness};
use tunnel_core::command::EndpointKind;
use tunnel_core::{Address, Input, ReleaseOutcome};

fn name(text: &str) -> Address {
    Address::Name(
        tunnel_core::requested_name(text, "localhost")
            .unwrap()
            .unwrap(),
    )
}

#[test]
fn the_views_show_who_holds_what_and_since_when() {
    let mut h = Harness::new();
    let (web, _) = h.tunnel("alice", &[("app", 80), ("localhost", 80)], "http");
    h.advance(Duration::from_secs(30));
    let (shell, _) = h.tunnel("bob", &[("localhost", 0)], "tcp");
    let port = h.port_of(shell);
    let (gone, _) = h.tunnel("carol", &[("old", 80)], "http");
    h.close(gone);
    h.advance(Duration::from_secs(5));

    let conns = h.gw.connections_view(h.now);
    assert_eq!(conns.len(), 2, "{conns:?}");
    let (a, b) = (&conns[0], &conns[1]);
    assert_eq!((a.conn, b.conn), (web, shell));
    assert_eq!(a.key, Some(key("alice")));
    assert_eq!(a.connected_for, Duration::from_secs(35));
    assert_eq!(b.connected_for, Duration::from_secs(5));
    assert_eq!(a.endpoints.len(), 2);
    assert_eq!(b.endpoints.len(), 1);

    let endpoints = h.gw.endpoints_view();
    assert_eq!(endpoints.len(), 3);
    // The URL is the one the session's Forwarding line shows.
    let forwarding = h.forwarding_lines(web).join("\n");
    for e in endpoints.iter().filter(|e| e.conn == web) {
        assert_eq!(e.kind, EndpointKind::Http);
        assert!(
            forwarding.contains(&format!("Forwarding {} ->", e.url)),
            "{e:?}"
        );
    }
    let tcp = endpoints.iter().find(|e| e.conn == shell).unwrap();
    assert_eq!(tcp.kind, EndpointKind::Tcp);
    assert_eq!(tcp.address, Address::Port(port));
    assert_eq!(tcp.url, format!("tcp://localhost:{port}"));
    assert_eq!(tcp.key, key("bob"));
    assert_eq!(b.endpoints, vec![tcp.endpoint]);

    let reservations = h.gw.reservations_view(h.now);
    assert_eq!(reservations.len(), 1);
    assert_eq!(reservations[0].address, name("old"));
    assert_eq!(reservations[0].key, key("carol"));
    assert_eq!(
        reservations[0].left,
        h.config().name_grace() - Duration::from_secs(5)
    );
    h.assert_no_leaks();
}

#[test]
fn a_kicked_session_reads_the_reason_and_its_names_stay_reserved_for_its_key() {
    let mut h = Harness::new();
    let (alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (bob, _) = h.tunnel("bob", &[("other", 80)], "http");

    h.feed(Input::Kick {
        conn: alice,
        reason: Some("too much\ntraffic".to_owned()),
    });
    assert!(h.is_closed(alice));
    assert_eq!(
        h.stderr(alice),
        ["disconnected by the operator: too much traffic"]
    );
    assert_eq!(h.exit_status(alice), Some(1));
    // The neighbour is untouched.
    assert!(!h.is_closed(bob));
    assert_eq!(h.gw.endpoints_view().len(), 1);
    // Reserved as after any disconnect: others are refused, the same key gets it back.
    assert_eq!(h.gw.reservations_view(h.now)[0].address, name("app"));
    let (carol, _) = h.tunnel("carol", &[("app", 80)], "http");
    assert!(
        h.stderr(carol)[0].contains("is reserved"),
        "{:?}",
        h.stderr(carol)
    );
    let (again, _) = h.tunnel("alice", &[("app", 80)], "http");
    assert_eq!(h.host_of(again), "app.localhost");
    h.assert_no_leaks();
}

#[test]
fn a_kick_without_a_reason_or_a_session_still_says_who_closed_it() {
    let mut h = Harness::new();
    // `ssh -N`: no session channel, so the line is the disconnect message.
    let conn = h.login("alice");
    h.forward(conn, "app", 80);
    h.feed(Input::Kick { conn, reason: None });
    assert!(h.is_closed(conn));
    assert!(
        h.session(conn)
            .disconnect_message
            .as_deref()
            .is_some_and(|m| m == "disconnected by the operator"),
        "{:?}",
        h.session(conn)
    );
    // A connection that is gone already is ignored.
    h.feed(Input::Kick { conn, reason: None });
    h.assert_no_leaks();
}

#[test]
fn a_released_reservation_is_free_for_another_key_and_a_live_one_is_refused() {
    let mut h = Harness::new();
    let (alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (shell, _) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    let port = h.port_of(shell);

    // Live: refused, nothing changes.
    assert_eq!(h.gw.release_outcome(&name("app")), ReleaseOutcome::Live);
    h.feed(Input::Release {
        address: name("app"),
    });
    assert!(!h.is_closed(alice));
    assert_eq!(h.gw.endpoints_view().len(), 2);

    h.close(alice);
    h.close(shell);
    assert_eq!(h.gw.reservation_count(), 2);
    assert_eq!(h.gw.release_outcome(&name("app")), ReleaseOutcome::Released);
    h.feed(Input::Release {
        address: name("app"),
    });
    h.feed(Input::Release {
        address: Address::Port(port),
    });
    assert_eq!(h.gw.reservation_count(), 0);
    assert_eq!(h.gw.release_outcome(&name("app")), ReleaseOutcome::NotHeld);
    assert_eq!(h.gw.timer_count(), 0);

    let (bob, _) = h.tunnel("bob", &[("app", 80)], "http");
    assert_eq!(h.host_of(bob), "app.localhost");
    let (bob_tcp, _) = h.tunnel("bob", &[("localhost", port as u32)], "tcp");
    assert_eq!(h.port_of(bob_tcp), port);
    h.assert_no_leaks();
}

#[test]
fn an_address_text_names_what_the_views_show() {
    let n = Address::Name(
        tunnel_core::requested_name("app", "localhost")
            .unwrap()
            .unwrap(),
    );
    assert_eq!(n.to_string(), "app.localhost");
    assert_eq!(Address::Port(20001).to_string(), "20001");
}

#[test]
fn refusals_are_counted_by_a_fixed_reason_name() {
    let mut h = Harness::builder()
        .limits(tunnel_core::Limits::default().with_names_per_key(1))
        .build();
    h.tunnel("alice", &[("app", 80)], "http");
    let (second, _) = h.tunnel("alice", &[("other", 80)], "http");
    assert!(h.is_closed(second));
    let (bob, _) = h.tunnel("bob", &[("app", 80)], "http");
    assert!(h.is_closed(bob));
    let (bad, _) = h.tunnel("carol", &[("x", 80)], "http --nope");
    assert!(h.is_closed(bad));
    let counts: Vec<_> = h.gw.refusal_counts().collect();
    assert_eq!(
        counts,
        [("bad_command", 1), ("name_quota", 1), ("name_taken", 1)]
    );
}
