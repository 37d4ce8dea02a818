//! Before authentication: how many connections one source and everyone together may have
//! waiting, and that a slot is given back only when the socket is really gone.

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::Harness;
use rand_chacha::rand_core::SeedableRng;
use tunnel_core::{Action, ConnId, Gateway, GatewayConfig, Input, Limits, Startups};

fn gateway(limits: Limits) -> Gateway {
    let config = GatewayConfig::new("localhost", 8080, 8443).with_limits(limits);
    Gateway::new(config, Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(3)))
}

/// Opens a connection; true if the gateway let it wait for authentication.
fn open(gw: &mut Gateway, now: Instant, conn: u64, peer: &str) -> bool {
    let conn = ConnId::from_raw(conn);
    gw.handle(
        now,
        Input::ConnectionOpened {
            conn,
            peer: peer.parse().unwrap(),
        },
    );
    let actions: Vec<Action> = std::iter::from_fn(|| gw.poll_action()).collect();
    !actions.iter().any(|a| matches!(a, Action::Close { .. }))
}

#[test]
fn a_connection_closed_at_the_auth_timeout_keeps_its_slot_until_its_socket_closes() {
    let mut gw = gateway(Limits::default().with_unauthenticated_per_ip(1));
    let now = Instant::now();
    assert!(open(&mut gw, now, 1, "198.51.100.1:1000"));
    let deadline = gw.poll_timeout().expect("an auth deadline");
    gw.handle_timeout(deadline);
    let actions: Vec<Action> = std::iter::from_fn(|| gw.poll_action()).collect();
    assert!(
        actions.iter().any(|a| matches!(a, Action::Close { .. })),
        "{actions:?}"
    );
    // The client has not hung up yet: its slot is still taken, and it cannot log in any more.
    assert!(!open(&mut gw, deadline, 2, "198.51.100.1:1001"));
    gw.handle(
        deadline,
        Input::AuthRequested {
            conn: ConnId::from_raw(1),
            user: "v2".into(),
            key: tunnel_core::KeyFingerprint::new("SHA256:k"),
        },
    );
    assert_eq!(
        gw.poll_action(),
        Some(Action::Auth {
            conn: ConnId::from_raw(1),
            accepted: false
        })
    );
    gw.handle(
        deadline,
        Input::ConnectionClosed {
            conn: ConnId::from_raw(1),
        },
    );
    assert!(
        open(&mut gw, deadline, 3, "198.51.100.1:1002"),
        "the slot is back"
    );
    assert_eq!(gw.connection_count(), 1);
}

#[test]
fn ipv6_sources_are_counted_per_64() {
    let mut h = Harness::builder()
        .limits(Limits::default().with_unauthenticated_per_ip(2))
        .build();
    let peer = |text: &str| text.parse::<SocketAddr>().unwrap();
    let a = h.connect_from(peer("[2001:db8:1:2::1]:1000"));
    let b = h.connect_from(peer("[2001:db8:1:2:ffff::9]:1000"));
    let c = h.connect_from(peer("[2001:db8:1:2:abcd::7]:1000"));
    assert!(!h.is_closed(a) && !h.is_closed(b));
    assert!(
        h.is_closed(c),
        "a third address of the same /64 is the same source"
    );
    let other = h.connect_from(peer("[2001:db8:1:3::1]:1000"));
    assert!(!h.is_closed(other), "the next /64 is another source");
    // An IPv4-mapped address is its IPv4 source.
    let v4 = h.connect_from(peer("198.51.100.4:1"));
    let mapped = h.connect_from(peer("[::ffff:198.51.100.4]:2"));
    let third = h.connect_from(peer("198.51.100.4:3"));
    assert!(!h.is_closed(v4) && !h.is_closed(mapped) && h.is_closed(third));
    h.assert_no_leaks();
}

#[test]
fn many_sources_together_meet_random_early_drop() {
    let startups = Startups {
        start: 10,
        rate: 30,
        full: 20,
    };
    let mut gw = gateway(Limits::default().with_startups(startups));
    let now = Instant::now();
    let mut kept = 0;
    let mut dropped_early = 0;
    for i in 0..200u64 {
        // A different address each time: the per-source cap never applies.
        let peer = format!("10.0.{}.{}:1000", i / 250, i % 250 + 1);
        let waiting = kept;
        let let_in = open(&mut gw, now, i + 1, &peer);
        match waiting {
            0..10 => assert!(let_in, "below start nothing is dropped"),
            10..20 => dropped_early += usize::from(!let_in),
            _ => assert!(!let_in, "at full everything is dropped"),
        }
        kept += usize::from(let_in);
    }
    assert_eq!(kept, 20);
    assert_eq!(gw.connection_count(), kept);
    assert!(dropped_early > 0, "between start and full some are dropped");
    // Authenticated connections do not count: once the waiting ones are in, new ones pass again.
    for i in 1..=200u64 {
        gw.handle(
            now,
            Input::AuthRequested {
                conn: ConnId::from_raw(i),
                user: "v2".into(),
                key: tunnel_core::KeyFingerprint::new(format!("SHA256:k{i}")),
            },
        );
    }
    while gw.poll_action().is_some() {}
    assert!(open(
        &mut gw,
        now + Duration::from_millis(1),
        1000,
        "10.9.9.9:1"
    ));
}
