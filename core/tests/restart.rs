//! Across a restart: what one gateway saves, another restores, so each key gets its names and
//! tcp ports back within the grace (random ones included) and no other key takes them meanwhile.

mod harness;

use std::time::Duration;

use harness::{key, Harness};
use tunnel_core::{
    Input, RestoreSkipped, SavedAddress, SavedHolding, SavedState, SERVER_RESTARTING,
};

/// A gateway started after `before` was stopped, with `before`'s saved holdings restored. A
/// different seed: without the restore, random names would differ.
fn restarted(before: &Harness) -> Harness {
    let saved = before.gw.saved_holdings(before.now);
    let mut after = Harness::builder().seed(99).build();
    let now = after.now;
    let skipped = after.gw.restore(now, saved);
    assert!(skipped.is_empty(), "{skipped:?}");
    after
}

#[test]
fn live_random_names_and_ports_come_back_to_their_key_after_a_restart() {
    let mut before = Harness::new();
    let (web, _) = before.tunnel("alice", &[("localhost", 80)], "http");
    let (shell, _) = before.tunnel("alice", &[("localhost", 0)], "tcp");
    before.tunnel("bob", &[("app", 80)], "http");
    let (name, port) = (before.host_of(web), before.port_of(shell));

    let mut after = restarted(&before);
    assert_eq!(after.gw.reservation_count(), 3);
    // Nobody else gets them.
    let (carol, _) = after.tunnel("carol", &[("app", 80)], "http");
    assert!(
        after.stderr(carol)[0].contains("is reserved"),
        "{:?}",
        after.stderr(carol)
    );
    let (carol_tcp, _) = after.tunnel("carol", &[("localhost", 0)], "tcp");
    assert_ne!(after.port_of(carol_tcp), port);
    // autossh repeats the same -R: the same random name and port come back.
    let (web, _) = after.tunnel("alice", &[("localhost", 80)], "http");
    assert_eq!(after.host_of(web), name);
    let (shell, _) = after.tunnel("alice", &[("localhost", 0)], "tcp");
    assert_eq!(after.port_of(shell), port);
    let (named, _) = after.tunnel("bob", &[("app", 80)], "http");
    assert_eq!(after.host_of(named), "app.localhost");
    assert_eq!(after.gw.reservation_count(), 0);
    after.assert_no_leaks();
}

#[test]
fn a_restored_reservation_keeps_what_was_left_of_it_then_frees_the_address() {
    let mut before = Harness::new();
    let (web, _) = before.tunnel("alice", &[("app", 80)], "http");
    let (shell, _) = before.tunnel("alice", &[("localhost", 20001)], "tcp");
    before.close(web);
    before.close(shell);
    let grace = before.config().name_grace();
    before.advance(grace - Duration::from_secs(60));

    let mut after = restarted(&before);
    assert_eq!(after.gw.reservation_count(), 2);
    assert_eq!(after.gw.held_port_count(), 1);
    after.advance(Duration::from_secs(59));
    let (bob, _) = after.tunnel("bob", &[("app", 80)], "http");
    assert!(
        after.stderr(bob)[0].contains("is reserved"),
        "{:?}",
        after.stderr(bob)
    );
    after.advance(Duration::from_secs(1));
    assert_eq!(after.gw.reservation_count(), 0);
    assert_eq!(after.gw.held_port_count(), 0);
    let (bob, _) = after.tunnel("bob", &[("app", 80)], "http");
    assert_eq!(after.host_of(bob), "app.localhost");
    after.assert_no_leaks();
}

#[test]
fn a_live_address_is_reserved_for_the_whole_grace_from_the_restore() {
    let mut before = Harness::new();
    before.tunnel("alice", &[("app", 80)], "http");
    // However long it was live before the restart.
    before.advance(Duration::from_secs(24 * 3600));
    let mut after = restarted(&before);
    let grace = after.config().name_grace();
    after.advance(grace - Duration::from_secs(1));
    assert_eq!(after.gw.reservation_count(), 1);
    after.advance(Duration::from_secs(1));
    assert_eq!(after.gw.reservation_count(), 0);
    after.assert_no_leaks();
}

#[test]
fn what_no_longer_fits_the_configuration_is_left_out_and_said_why() {
    let holding = |address: SavedAddress, state| SavedHolding {
        address,
        owner: key("alice"),
        state,
        reconnect: None,
    };
    let mut before = Harness::new();
    before.tunnel("alice", &[("app", 80)], "http");
    before.tunnel("alice", &[("localhost", 20001)], "tcp");
    let mut saved = before.gw.saved_holdings(before.now);
    let name = saved
        .iter()
        .find(|s| matches!(s.address, SavedAddress::Name(_)))
        .expect("the name")
        .address
        .clone();
    saved.push(holding(
        name.clone(),
        SavedState::Reserved {
            remaining: Duration::from_secs(5),
        },
    ));
    saved.push(holding(
        SavedAddress::Port(20002),
        SavedState::Reserved {
            remaining: Duration::ZERO,
        },
    ));

    // Another domain and another tcp range: neither address is this server's any more.
    let mut elsewhere = Harness::builder()
        .server("other.test", 8080, 8443)
        .tcp_ports(30000..=30010)
        .build();
    let now = elsewhere.now;
    let skipped: Vec<RestoreSkipped> = elsewhere
        .gw
        .restore(now, saved.clone())
        .into_iter()
        .map(|(_, why)| why)
        .collect();
    assert_eq!(
        skipped,
        [
            RestoreSkipped::NotOurs,
            RestoreSkipped::OutOfRange,
            RestoreSkipped::NotOurs,
            RestoreSkipped::Ended
        ]
    );
    elsewhere.assert_no_leaks();

    // The same server: the second copy of the name is held already, the spent one ended.
    let mut same = Harness::new();
    let now = same.now;
    let skipped: Vec<RestoreSkipped> = same
        .gw
        .restore(now, saved.clone())
        .into_iter()
        .map(|(_, why)| why)
        .collect();
    assert_eq!(skipped, [RestoreSkipped::Held, RestoreSkipped::Ended]);
    same.assert_no_leaks();

    // Without a grace nothing is kept.
    let mut no_grace = Harness::builder().name_grace(Duration::ZERO).build();
    let now = no_grace.now;
    assert!(no_grace
        .gw
        .restore(now, saved)
        .iter()
        .all(|(_, why)| *why == RestoreSkipped::Ended));
    assert_eq!(no_grace.gw.reservation_count(), 0);
    no_grace.assert_no_leaks();
}

#[test]
fn the_holdings_version_moves_on_every_change_and_only_then() {
    let mut h = Harness::new();
    let v0 = h.gw.holdings_version();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "http");
    let v1 = h.gw.holdings_version();
    assert!(v1 > v0);
    h.advance(Duration::from_secs(5));
    assert_eq!(h.gw.holdings_version(), v1, "time alone changes nothing");
    h.close(conn);
    let v2 = h.gw.holdings_version();
    assert!(v2 > v1, "live to reserved");
    h.advance(h.config().name_grace());
    assert!(h.gw.holdings_version() > v2, "reservation ended");
    h.assert_no_leaks();
}

#[test]
fn a_saved_name_is_checked_like_a_name_asked_for() {
    let mut h = Harness::new();
    let now = h.now;
    let saved = [
        "APP.localhost",
        "app",
        "bad_label.localhost",
        "localhost",
        "app.localhost.",
    ]
    .into_iter()
    .map(|name| SavedHolding {
        address: SavedAddress::Name(name.to_owned()),
        owner: key("alice"),
        state: SavedState::Live,
        reconnect: None,
    });
    let skipped = h.gw.restore(now, saved);
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    assert!(skipped
        .iter()
        .all(|(_, why)| *why == RestoreSkipped::NotOurs));
    h.assert_no_leaks();
}

#[test]
fn a_stop_tells_each_session_refuses_newcomers_then_closes_everyone_keeping_their_names() {
    let mut h = Harness::new();
    let (alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    let waiting = h.connect();
    h.feed(Input::Stopping);
    assert_eq!(
        h.stderr(alice),
        ["server restarting: reconnect within 10m to get your names and ports back"]
    );
    assert!(!h.is_closed(alice), "visitors in flight still reach it");
    // Stopping twice says nothing twice.
    h.feed(Input::Stopping);
    assert_eq!(h.stderr(alice).len(), 1);
    let late = h.connect();
    assert!(h.is_closed(late));
    assert_eq!(
        h.session(late).disconnect_message.as_deref(),
        Some(SERVER_RESTARTING)
    );

    h.feed(Input::Stopped);
    for conn in [alice, waiting] {
        assert!(h.is_closed(conn));
        assert_eq!(
            h.session(conn).disconnect_message.as_deref(),
            Some(SERVER_RESTARTING)
        );
    }
    assert_eq!(h.gw.connection_count(), 0);
    assert_eq!(h.gw.reservation_count(), 1, "app.localhost stays alice's");
    h.assert_no_leaks();
}

#[test]
fn without_a_grace_the_stop_line_promises_nothing() {
    let mut h = Harness::builder().name_grace(Duration::ZERO).build();
    let (alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    h.feed(Input::Stopping);
    assert_eq!(
        h.stderr(alice),
        ["server restarting: this connection will close"]
    );
    h.feed(Input::Stopped);
    assert_eq!(h.gw.reservation_count(), 0);
    h.assert_no_leaks();
}

#[test]
fn a_key_removed_from_authorized_keys_while_the_server_was_down_gets_nothing_back() {
    let mut before = Harness::builder()
        .authorized_keys(&["alice", "bob"])
        .build();
    before.tunnel("alice", &[("app", 80)], "http");
    before.tunnel("bob", &[("web", 80)], "http");
    let saved = before.gw.saved_holdings(before.now);

    let mut after = Harness::builder().authorized_keys(&["alice"]).build();
    let now = after.now;
    let skipped = after.gw.restore(now, saved);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0.owner, key("bob"));
    assert_eq!(skipped[0].1, RestoreSkipped::Unlisted);
    assert_eq!(after.gw.reservation_count(), 1, "alice's app.localhost");
    after.assert_no_leaks();
}
