//! Per-key quotas: what one key may hold, live or reserved for its reconnects, so that no key
//! (nor a reconnect loop) can fill the name table or take the tcp range.

mod harness;

use std::time::Duration;

use harness::{key, Harness};
use tunnel_core::{KeyQuota, Limits};

fn quota_harness(names: usize, tcp_ports: usize) -> Harness {
    Harness::builder()
        .limits(
            Limits::default()
                .with_names_per_key(names)
                .with_tcp_ports_per_key(tcp_ports),
        )
        .name_grace(Duration::from_secs(60))
        .build()
}

#[test]
fn names_past_the_quota_are_refused_naming_it_and_reservations_count() {
    let mut h = quota_harness(2, 16);
    let (a, _) = h.tunnel("alice", &[("a", 80), ("b", 80)], "http");
    assert_eq!(h.forwarding_lines(a).len(), 2);
    let (c, _) = h.tunnel("alice", &[("c", 80)], "http");
    insta::assert_snapshot!(h.stderr(c)[0], @"error: this key already holds 2 names (live, or reserved for its reconnects): that is its quota (see --help: ssh HOST help)");
    assert_eq!(h.exit_status(c), Some(1));
    // Reserved names still count: the key can come back to them, so they are still its.
    h.close(a);
    let (d, _) = h.tunnel("alice", &[("", 80)], "http");
    assert!(h.stderr(d)[0].contains("2 names"), "{:?}", h.stderr(d));
    // Its own names it gets back, quota or not.
    let (back, _) = h.tunnel("alice", &[("a", 80)], "http");
    assert_eq!(
        h.forwarding_lines(back),
        ["Forwarding http://a.localhost:8080 -> a:80"]
    );
    // Other keys are not affected.
    let (bob, _) = h.tunnel("bob", &[("x", 80), ("y", 80)], "http");
    assert_eq!(h.forwarding_lines(bob).len(), 2);
    // Once the reservation ends the room is back.
    h.advance(Duration::from_secs(61));
    let (e, _) = h.tunnel("alice", &[("e", 80)], "http");
    assert_eq!(h.forwarding_lines(e).len(), 1, "{:?}", h.stderr(e));
    h.assert_no_leaks();
}

#[test]
fn a_reconnect_loop_with_new_bind_addresses_stays_within_the_quota() {
    // `-R 1.2.3.N:80:...` gets a fresh random name for each N; without a quota each
    // disconnect left one more reservation behind.
    let mut h = quota_harness(3, 16);
    let mut granted = 0;
    for n in 0..20 {
        let (conn, _) = h.tunnel("alice", &[(&format!("1.2.3.{n}"), 80)], "http");
        granted += h.forwarding_lines(conn).len();
        h.close(conn);
    }
    assert_eq!(granted, 3);
    assert_eq!(h.gw.reservation_count(), 3);
    h.assert_no_leaks();
}

#[test]
fn tcp_ports_past_the_quota_are_refused_and_a_reconnect_gets_its_port_back() {
    let mut h = quota_harness(64, 2);
    let (a, _) = h.tunnel("alice", &[("localhost", 0), ("localhost", 20005)], "tcp");
    let ports: Vec<u16> = h
        .routes_of(a)
        .iter()
        .map(|r| match r.address {
            tunnel_core::Address::Port(p) => p,
            tunnel_core::Address::Name(_) => panic!("tcp"),
        })
        .collect();
    assert_eq!(ports.len(), 2);
    let (b, _) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    insta::assert_snapshot!(h.stderr(b)[0], @"error: this key already holds 2 tcp ports (live, or reserved for its reconnects): that is its quota (see --help: ssh HOST help)");
    let (fixed, _) = h.tunnel("alice", &[("localhost", 20009)], "tcp");
    assert!(
        h.stderr(fixed)[0].contains("2 tcp ports"),
        "{:?}",
        h.stderr(fixed)
    );
    // An http command on remote port 0 needs no port: the quota does not stand in its way.
    let (web, _) = h.tunnel("alice", &[("web", 0)], "http");
    assert_eq!(h.forwarding_lines(web).len(), 1, "{:?}", h.stderr(web));
    // autossh comes back after a drop: same forwards, same ports, at the quota.
    h.close(a);
    let (again, _) = h.tunnel("alice", &[("localhost", 0), ("localhost", 20005)], "tcp");
    let mut again_ports: Vec<u16> = h
        .routes_of(again)
        .iter()
        .map(|r| match r.address {
            tunnel_core::Address::Port(p) => p,
            tunnel_core::Address::Name(_) => panic!("tcp"),
        })
        .collect();
    again_ports.sort_unstable();
    let mut ports = ports;
    ports.sort_unstable();
    assert_eq!(again_ports, ports, "{:?}", h.stderr(again));
    h.assert_no_leaks();
}

#[test]
fn an_operator_can_give_one_key_a_quota_of_its_own() {
    let mut h = Harness::builder()
        .limits(Limits::default().with_names_per_key(1))
        .configure_quota(
            key("team"),
            KeyQuota {
                names: 3,
                tcp_ports: 16,
            },
        )
        .build();
    let (team, _) = h.tunnel("team", &[("a", 80), ("b", 80), ("c", 80)], "http");
    assert_eq!(h.forwarding_lines(team).len(), 3, "{:?}", h.stderr(team));
    let (alice, _) = h.tunnel("alice", &[("d", 80), ("e", 80)], "http");
    assert!(
        h.stderr(alice)[0].contains("1 names"),
        "{:?}",
        h.stderr(alice)
    );
    h.assert_no_leaks();
}
