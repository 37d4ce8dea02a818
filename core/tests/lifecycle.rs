//! Connections and endpoints from start to end: authentication, several forwards, cancel, close,
//! and the limits that bound what one client can hold.

mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use harness::Harness;
use tunnel_core::{Action, Limits, Reply};

#[test]
fn several_forwards_on_one_connection() {
    let mut h = Harness::new();
    let (conn, reqs) = h.tunnel(
        "alice",
        &[
            ("web", 80),
            ("api", 443),
            ("localhost", 0),
            ("localhost", 20100),
        ],
        "",
    );
    assert!(reqs
        .iter()
        .all(|r| matches!(h.reply(*r), Some(Reply::Granted { .. }))));
    assert_eq!(h.routes_of(conn).len(), 4);
    assert_eq!(h.forwarding_lines(conn).len(), 4);
    assert_eq!(h.bound_ports().len(), 2);
    assert!(h.gw.route_by_host("web.localhost").is_some());
    assert!(h.gw.route_by_host("api.localhost").is_some());
    assert_eq!(h.gw.route_by_port(20100).map(|r| r.conn), Some(conn));
    h.assert_no_leaks();
}

#[test]
fn closing_a_connection_removes_all_its_endpoints_at_once() {
    let mut h = Harness::new();
    let (other, _) = h.tunnel("bob", &[("neighbour", 80)], "http");
    let (conn, _) = h.tunnel(
        "alice",
        &[("web", 80), ("localhost", 0), ("localhost", 20100)],
        "",
    );
    let endpoints: Vec<_> = h.routes_of(conn).iter().map(|r| r.endpoint).collect();
    let mark = h.log.len();
    h.close(conn);
    let actions = h.actions_since(mark).to_vec();
    for e in &endpoints {
        assert!(actions.contains(&Action::RouteRemoved(*e)), "{e}");
    }
    let unbinds = actions
        .iter()
        .filter(|a| matches!(a, Action::Unbind { .. }))
        .count();
    assert_eq!(unbinds, 2);
    assert!(
        actions
            .iter()
            .all(|a| matches!(a, Action::RouteRemoved(_) | Action::Unbind { .. })),
        "{actions:?}"
    );
    assert!(h.routes_of(conn).is_empty());
    assert!(h.gw.route_by_host("web.localhost").is_none());
    assert!(h.bound_ports().is_empty());
    assert_eq!(
        h.gw.route_by_host("neighbour.localhost").map(|r| r.conn),
        Some(other)
    );
    assert_eq!(h.gw.connection_count(), 1);
    h.assert_no_leaks();
}

#[test]
fn cancel_removes_only_that_endpoint() {
    let mut h = Harness::builder()
        .name_grace(Duration::from_secs(60))
        .build();
    let (conn, reqs) = h.tunnel("alice", &[("web", 80), ("api", 80), ("localhost", 0)], "");
    let Some(Reply::Granted { port: Some(tcp) }) = h.reply(reqs[2]) else {
        panic!("port 0 granted with a port");
    };
    let cancel = h.cancel(conn, "web", 80);
    assert_eq!(h.reply(cancel), Some(Reply::Granted { port: None }));
    assert!(h.gw.route_by_host("web.localhost").is_none());
    assert!(h.gw.route_by_host("api.localhost").is_some());
    assert_eq!(
        h.gw.reservation_count(),
        0,
        "a cancelled name is free at once"
    );

    // OpenSSH cancels a port-0 forward by the port it was given.
    let cancel = h.cancel(conn, "localhost", tcp);
    assert_eq!(h.reply(cancel), Some(Reply::Granted { port: None }));
    assert!(h.bound_ports().is_empty());
    assert_eq!(h.gw.held_port_count(), 0);

    let unknown = h.cancel(conn, "nothing", 80);
    assert_eq!(h.reply(unknown), Some(Reply::Refused));
    assert!(!h.is_closed(conn), "cancelling is not an error");
    assert!(h.stderr(conn).is_empty());

    let (bob, _) = h.tunnel("bob", &[("web", 80)], "http");
    assert_eq!(
        h.gw.route_by_host("web.localhost").map(|r| r.conn),
        Some(bob)
    );
    h.assert_no_leaks();
}

#[test]
fn cancel_before_the_command_withdraws_the_forward() {
    let mut h = Harness::new();
    let conn = h.login("alice");
    let web = h.forward(conn, "web", 80);
    let tcp = h.forward(conn, "localhost", 0);
    let tcp_port = match h.reply(tcp) {
        Some(Reply::Granted { port: Some(p) }) => p,
        _ => 0,
    };
    let c1 = h.cancel(conn, "web", 80);
    assert_eq!(h.reply(web), Some(Reply::Granted { port: None }));
    let c2 = h.cancel(conn, "localhost", tcp_port);
    assert_eq!(h.reply(c1), Some(Reply::Granted { port: None }));
    assert_eq!(h.reply(c2), Some(Reply::Granted { port: None }));
    assert_eq!(h.gw.held_port_count(), 0);
    h.forward(conn, "api", 80);
    h.exec(conn, "http");
    assert_eq!(
        h.forwarding_lines(conn),
        ["Forwarding http://api.localhost:8080 -> api:80"]
    );
    h.assert_no_leaks();
}

#[test]
fn a_closed_connection_before_the_command_leaves_nothing() {
    let mut h = Harness::new();
    let conn = h.login("alice");
    h.forward(conn, "web", 80);
    h.forward(conn, "localhost", 0);
    h.close(conn);
    assert_eq!(h.gw.connection_count(), 0);
    assert_eq!(h.gw.held_port_count(), 0);
    assert_eq!(h.gw.timer_count(), 0, "the command deadline is cancelled");
    h.assert_no_leaks();
}

#[test]
fn unknown_keys_are_refused_and_known_ones_accepted() {
    let mut h = Harness::builder().authorized_keys(&["alice"]).build();
    let conn = h.connect();
    assert!(!h.auth(conn, "v2", "mallory"));
    let req = h.forward(conn, "app", 80);
    assert_eq!(h.reply(req), Some(Reply::Refused));
    assert_eq!(h.gw.route_count(), 0);
    // A client may try its next key.
    assert!(h.auth(conn, "v2", "alice"));
    h.forward(conn, "app", 80);
    h.exec(conn, "http");
    assert_eq!(h.forwarding_lines(conn).len(), 1);
    h.assert_no_leaks();
}

#[test]
fn an_unauthenticated_connection_is_closed_at_the_auth_timeout() {
    let mut h = Harness::new();
    let timeout = h.config().auth_timeout();
    let conn = h.connect();
    let authed = h.login("alice");
    h.advance(timeout - Duration::from_millis(1));
    assert!(!h.is_closed(conn));
    h.advance(Duration::from_millis(1));
    assert!(h.is_closed(conn) && h.session(conn).closed_by_server);
    assert!(
        !h.is_closed(authed),
        "authenticated connections have no auth deadline"
    );
    assert_eq!(h.gw.connection_count(), 1);
    h.assert_no_leaks();
}

#[test]
fn auth_for_a_connection_the_gateway_does_not_know_is_refused() {
    let mut h = Harness::new();
    let conn = h.connect();
    h.advance(h.config().auth_timeout());
    assert!(h.is_closed(conn));
    // The adapter raced the close: the late auth must not be let in.
    assert!(!h.auth(conn, "v2", "alice"));
    h.assert_no_leaks();
}

#[test]
fn unauthenticated_connections_per_ip_are_limited() {
    let mut h = Harness::builder()
        .limits(Limits::default().with_unauthenticated_per_ip(2))
        .build();
    let ip = |last: u8, port: u16| SocketAddr::from(([198, 51, 100, last], port));
    let a = h.connect_from(ip(1, 1000));
    let b = h.connect_from(ip(1, 1001));
    let c = h.connect_from(ip(1, 1002));
    assert!(!h.is_closed(a) && !h.is_closed(b));
    assert!(h.is_closed(c) && h.session(c).closed_by_server);
    // Other addresses are not affected, and authenticating frees a slot.
    let other = h.connect_from(ip(2, 1000));
    assert!(!h.is_closed(other));
    assert!(h.auth(a, "v2", "alice"));
    let d = h.connect_from(ip(1, 1003));
    assert!(!h.is_closed(d));
    h.assert_no_leaks();
}

#[test]
fn connections_per_key_are_limited() {
    let mut h = Harness::builder()
        .limits(Limits::default().with_connections_per_key(2))
        .build();
    let (a, _) = h.tunnel("alice", &[("a", 80)], "http");
    let (b, _) = h.tunnel("alice", &[("b", 80)], "http");
    let (c, reqs) = h.tunnel("alice", &[("c", 80)], "http");
    assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
    assert_eq!(
        h.stderr(c),
        ["error: too many connections for this key (the limit is 2) (see --help: ssh HOST help)"]
    );
    assert!(h.is_closed(c));
    assert!(!h.is_closed(a) && !h.is_closed(b));
    let (bob, _) = h.tunnel("bob", &[("d", 80)], "http");
    assert!(!h.is_closed(bob), "other keys are not affected");
    h.close(a);
    let (again, _) = h.tunnel("alice", &[("e", 80)], "http");
    assert!(!h.is_closed(again), "a closed connection frees its slot");
    h.assert_no_leaks();
}

#[test]
fn endpoints_per_connection_are_limited() {
    let mut h = Harness::builder()
        .limits(Limits::default().with_endpoints_per_connection(2))
        .build();
    let (conn, reqs) = h.tunnel("alice", &[("a", 80), ("b", 80), ("c", 80)], "http");
    assert_eq!(h.reply(reqs[2]), Some(Reply::Refused));
    assert_eq!(
        h.stderr(conn),
        ["error: too many forwards on one connection (the limit is 2) (see --help: ssh HOST help)"]
    );
    assert!(h.is_closed(conn));
    // Within the limit is fine.
    let (ok, _) = h.tunnel("bob", &[("a", 80), ("b", 80)], "http");
    assert_eq!(h.routes_of(ok).len(), 2);
    h.assert_no_leaks();
}

#[test]
fn forwards_before_auth_are_refused() {
    let mut h = Harness::new();
    let conn = h.connect();
    let req = h.forward(conn, "app", 80);
    assert_eq!(h.reply(req), Some(Reply::Refused));
    assert_eq!(h.gw.endpoint_count(), 0);
    h.assert_no_leaks();
}

#[test]
fn a_closed_session_channel_gets_no_more_lines() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "http");
    let endpoint = h.routes_of(conn)[0].endpoint;
    h.close_session(conn);
    h.feed(tunnel_core::Input::HttpRequestCompleted {
        endpoint,
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        elapsed: Duration::from_millis(1),
    });
    assert_eq!(h.stdout(conn).len(), 1);
    assert!(
        h.gw.route_by_host("app.localhost").is_some(),
        "the tunnel lives on"
    );
    h.assert_no_leaks();
}

#[test]
fn inputs_for_unknown_connections_and_endpoints_are_harmless() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "http");
    let endpoint = h.routes_of(conn)[0].endpoint;
    h.close(conn);
    let before = h.log.len();
    h.feed(tunnel_core::Input::Bound { endpoint });
    h.feed(tunnel_core::Input::BindFailed { endpoint });
    h.feed(tunnel_core::Input::SessionClosed { conn });
    h.feed(tunnel_core::Input::ConnectionClosed { conn });
    h.feed(tunnel_core::Input::ExecRequested {
        conn,
        command: "http".into(),
    });
    assert_eq!(h.actions_since(before), []);
    h.assert_no_leaks();
}

#[test]
fn many_tunnels_come_and_go_without_leaks() {
    let mut h = Harness::builder().tcp_ports(30000..=30009).build();
    for round in 0..5 {
        let mut conns = Vec::new();
        for i in 0..5 {
            let key = format!("key{i}");
            let (c, _) = h.tunnel(
                &key,
                &[("localhost", 80), (&format!("n{i}"), 443), ("localhost", 0)],
                if i % 2 == 0 { "http" } else { "" },
            );
            conns.push(c);
        }
        for c in conns {
            if round % 2 == 0 {
                h.close(c);
            }
        }
        h.advance(Duration::from_secs(100));
        h.check_invariants();
    }
    h.assert_no_leaks();
}

#[test]
fn ctrl_c_and_ctrl_d_in_a_terminal_end_the_session() {
    for (data, status) in [
        (&b"ab\x03"[..], 130),
        (&b"\x04"[..], 0),
        (&b"x\x04\x03"[..], 0),
    ] {
        let mut h = Harness::new();
        let (conn, _) = h.tunnel("alice", &[("app", 80)], "");
        h.feed(tunnel_core::Input::SessionData {
            conn,
            data: data.to_vec(),
            terminal: true,
        });
        assert_eq!(h.exit_status(conn), Some(status), "{data:?}");
        assert!(h.is_closed(conn) && h.session(conn).closed_by_server);
        assert!(h.gw.route_by_host("app.localhost").is_none());
        h.assert_no_leaks();
    }
}

#[test]
fn other_typed_bytes_and_piped_stdin_are_ignored() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "");
    for (data, terminal) in [(&b"hello\r\n"[..], true), (&b"\x03\x04"[..], false)] {
        h.feed(tunnel_core::Input::SessionData {
            conn,
            data: data.to_vec(),
            terminal,
        });
    }
    assert_eq!(h.exit_status(conn), None);
    assert!(!h.is_closed(conn));
    assert!(h.gw.route_by_host("app.localhost").is_some());
    h.assert_no_leaks();
}

#[test]
fn one_session_channel_per_connection() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("web", 80)], "http");
    assert_eq!(h.session(conn).session_answer, Some(true));
    assert!(!h.open_session(conn), "a second session is refused");
    assert!(!h.is_closed(conn), "and nothing else changes");
    assert!(h.gw.route_by_host("web.localhost").is_some());
    // Before authentication there is no session to open.
    let stranger = h.connect();
    assert!(!h.open_session(stranger));
    h.assert_no_leaks();
}

#[test]
fn the_disconnect_message_says_why_when_no_session_can() {
    // ssh -N: no session channel, so the reason travels in the disconnect message.
    let mut h = Harness::new();
    let (_, _) = h.tunnel("bob", &[("app", 80)], "http");
    let conn = h.login("alice");
    h.forward(conn, "app", 80);
    h.advance(h.config().command_deadline());
    let s = h.session(conn);
    assert!(s.closed_by_server);
    insta::assert_snapshot!(s.disconnect_message.clone().unwrap(), @"error: name app.localhost is taken (see --help: ssh HOST help)");
    assert_eq!(s.exit_status, None);
    // With a session, the line goes to stderr with an exit status, and the disconnect is plain.
    let (with_session, _) = h.tunnel("alice", &[("app", 80)], "http");
    let s = h.session(with_session);
    assert_eq!(s.stderr.len(), 1);
    assert_eq!(s.exit_status, Some(1));
    assert_eq!(
        s.disconnect_message.as_deref(),
        Some(tunnel_core::CLOSED_BY_SERVER)
    );
    insta::assert_snapshot!(tunnel_core::CLOSED_BY_SERVER, @"closed by the tunnel server");
    h.assert_no_leaks();
}

#[test]
fn an_offered_key_is_judged_before_the_client_signs() {
    let h = Harness::builder().authorized_keys(&["alice"]).build();
    assert!(h.gw.accepts_key(&harness::key("alice")));
    assert!(!h.gw.accepts_key(&harness::key("mallory")));
    let open = Harness::new();
    assert!(
        open.gw.accepts_key(&harness::key("anyone")),
        "no list: any key"
    );
}
