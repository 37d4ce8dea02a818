//! A running gateway reconfigured (SIGHUP): limits, quotas, grace and admin keys change for the
//! decisions made from then on; nobody is disconnected; what shapes existing state stays.

mod harness;

use std::time::Duration;

use harness::{key, Harness};
use tunnel_core::{GatewayConfig, Input, KeyQuota, Limits};

fn names(n: usize) -> Limits {
    Limits::default().with_names_per_key(n)
}

fn reconfigure(h: &mut Harness, config: GatewayConfig) {
    h.feed(Input::Reconfigured {
        config: Box::new(config),
    });
}

#[test]
fn a_lowered_quota_refuses_the_next_name_and_keeps_what_is_held() {
    let mut h = Harness::builder().limits(names(4)).build();
    let (a, _) = h.tunnel("alice", &[("a", 80), ("b", 80)], "http");
    assert_eq!(h.forwarding_lines(a).len(), 2);
    let lowered = h.config().clone().with_limits(names(1));
    reconfigure(&mut h, lowered);
    assert!(!h.is_closed(a), "a reconfiguration disconnects nobody");
    assert_eq!(h.routes_of(a).len(), 2, "names held stay held");
    let (c, _) = h.tunnel("alice", &[("c", 80)], "http");
    assert!(h.stderr(c)[0].contains("1 names"), "{:?}", h.stderr(c));
    // Raised for this key alone, with a quota of its own.
    let raised = h.config().clone().with_key_quota(
        key("alice"),
        KeyQuota {
            names: 8,
            tcp_ports: 1,
        },
    );
    reconfigure(&mut h, raised);
    let (d, _) = h.tunnel("alice", &[("d", 80)], "http");
    assert_eq!(h.forwarding_lines(d).len(), 1, "{:?}", h.stderr(d));
    h.assert_no_leaks();
}

#[test]
fn the_name_grace_applies_to_disconnects_after_the_change() {
    let mut h = Harness::builder()
        .name_grace(Duration::from_secs(600))
        .build();
    let (a, _) = h.tunnel("alice", &[("a", 80)], "http");
    let shorter = h.config().clone().with_name_grace(Duration::from_secs(5));
    reconfigure(&mut h, shorter);
    h.close(a);
    assert_eq!(h.gw.reservation_count(), 1);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.gw.reservation_count(), 0, "the new grace ended it");
    h.assert_no_leaks();
}

#[test]
fn admin_keys_change_and_what_shapes_the_server_does_not() {
    let mut h = Harness::builder().build();
    assert!(!h.config().is_admin(&key("alice")));
    let before = h.config().clone();
    let other = GatewayConfig::new("elsewhere.example", 1, 2)
        .with_tcp_ports(40000..=40001)
        .with_admin_keys([key("alice")].into());
    reconfigure(&mut h, other);
    assert!(h.config().is_admin(&key("alice")));
    assert_eq!(h.config().domain(), before.domain());
    assert_eq!(h.config().http_port(), before.http_port());
    assert_eq!(h.config().https_port(), before.https_port());
    assert_eq!(h.config().tcp_ports(), before.tcp_ports());
    assert_eq!(h.config().authorized_keys(), before.authorized_keys());
    let (a, _) = h.tunnel("bob", &[("x", 80)], "http");
    assert_eq!(
        h.forwarding_lines(a),
        ["Forwarding http://x.localhost:8080 -> x:80"]
    );
    h.assert_no_leaks();
}
