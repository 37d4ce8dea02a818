//! The ordering rule: stock OpenSSH sends every `tcpip-forward` before the exec that says what
//! the forwards are for. Replies are sent at once with what the port alone allows; the command
//! then settles what each forward is, or ends the session with the reason.

mod harness;

use std::time::Duration;

use harness::Harness;
use tunnel_core::command::EndpointKind;
use tunnel_core::Reply;

#[test]
fn replies_come_at_once_and_nothing_is_routed_before_the_command() {
    let mut h = Harness::new();
    let conn = h.login("alice");
    let web = h.forward(conn, "localhost", 80);
    let db = h.forward(conn, "localhost", 0);
    assert_eq!(h.reply(web), Some(Reply::Granted { port: None }));
    assert!(matches!(
        h.reply(db),
        Some(Reply::Granted { port: Some(_) })
    ));
    assert_eq!(
        h.gw.route_count(),
        0,
        "nothing is routed before the command"
    );

    h.exec(conn, "tcp");
    // tcp refuses port 80: the whole session fails with the reason.
    assert_eq!(h.stderr(conn).len(), 1, "{:?}", h.stderr(conn));
    assert!(h.stderr(conn)[0].contains("remote port 80"));
    assert_eq!(h.exit_status(conn), Some(1));
    assert!(h.is_closed(conn));
    assert_eq!(h.gw.route_count(), 0);
    h.assert_no_leaks();
}

#[test]
fn the_deadline_lets_the_port_decide() {
    let mut h = Harness::new();
    // ssh -N: forwards, then nothing.
    let conn = h.login("alice");
    h.forward(conn, "localhost", 80);
    h.forward(conn, "localhost", 443);
    let db = h.forward(conn, "localhost", 0);
    let deadline = h.config().command_deadline();
    h.advance(deadline - Duration::from_millis(1));
    assert_eq!(
        h.gw.route_count(),
        0,
        "still waiting just before the deadline"
    );
    h.advance(Duration::from_millis(1));

    let tcp_port = h.port_of(conn);
    assert_eq!(
        h.reply(db),
        Some(Reply::Granted {
            port: Some(u32::from(tcp_port))
        })
    );
    let kinds: Vec<EndpointKind> = h.routes_of(conn).iter().map(|r| r.policy.kind()).collect();
    assert_eq!(
        kinds,
        [EndpointKind::Http, EndpointKind::Http, EndpointKind::Tcp]
    );
    assert!(!h.is_closed(conn));
    h.assert_no_leaks();
}

#[test]
fn immediate_answers_at_once_and_port_zero_gets_a_tcp_port() {
    let mut h = Harness::new();
    let conn = h.login("alice");
    let web = h.forward(conn, "localhost", 80);
    let db = h.forward(conn, "localhost", 0);
    let bad = h.forward(conn, "localhost", 22);
    assert_eq!(h.reply(web), Some(Reply::Granted { port: None }));
    let Some(Reply::Granted { port: Some(port) }) = h.reply(db) else {
        panic!("port 0 is answered with a port: {:?}", h.reply(db));
    };
    assert!(h.config().tcp_ports().contains(&(port as u16)));
    // No command accepts 22, but the grant lets the client stay to read why.
    assert_eq!(h.reply(bad), Some(Reply::Granted { port: None }));
    assert_eq!(h.gw.route_count(), 0, "routes wait for the command");

    h.exec(conn, "tcp");
    // 80 is not a tcp port: the command refuses it and the session ends.
    assert_eq!(h.stderr(conn).len(), 1);
    assert!(h.stderr(conn)[0].contains("80"), "{:?}", h.stderr(conn));
    assert_eq!(h.exit_status(conn), Some(1));
    h.assert_no_leaks();
}

#[test]
fn immediate_port_zero_keeps_the_announced_port_when_the_command_says_http() {
    let mut h = Harness::new();
    let conn = h.login("alice");
    let req = h.forward(conn, "localhost", 0);
    let Some(Reply::Granted { port: Some(told) }) = h.reply(req) else {
        panic!("granted with a port");
    };
    assert_eq!(
        h.gw.held_port_count(),
        1,
        "the tcp port is held provisionally"
    );
    h.exec(conn, "http");
    let route = &h.routes_of(conn)[0];
    assert_eq!(route.policy.kind(), EndpointKind::Http);
    // The client registered the forward under the port it was told.
    assert_eq!(route.target.port, told);
    assert_eq!(
        h.gw.held_port_count(),
        0,
        "http gives the provisional port back"
    );
    assert!(h.bound_ports().is_empty());
    h.assert_no_leaks();
}

#[test]
fn immediate_deadline_turns_port_zero_into_the_announced_tcp_port() {
    let mut h = Harness::new();
    let conn = h.login("alice");
    let req = h.forward(conn, "localhost", 0);
    let Some(Reply::Granted { port: Some(told) }) = h.reply(req) else {
        panic!("granted with a port");
    };
    h.advance(h.config().command_deadline());
    assert_eq!(u32::from(h.port_of(conn)), told);
    assert_eq!(
        h.forwarding_lines(conn),
        Vec::<&str>::new(),
        "no session channel: nothing shown"
    );
    h.assert_no_leaks();
}

#[test]
fn refused_forward_fails_the_session_in_both_modes() {
    let mut h = Harness::new();
    let (conn, reqs) = h.tunnel("alice", &[("localhost", 8080)], "http");
    let expected = Reply::Granted { port: None };
    assert_eq!(h.reply(reqs[0]), Some(expected));
    assert_eq!(h.stderr(conn).len(), 1);
    assert!(h.stderr(conn)[0].contains("8080"));
    assert!(h.stderr(conn)[0].contains("--help"));
    assert_ne!(h.exit_status(conn), Some(0));
    assert!(h.is_closed(conn));
    h.assert_no_leaks();
}

#[test]
fn forwarding_lines_come_after_the_exec_in_request_order() {
    let mut h = Harness::new();
    let conn = h.login("alice");
    h.forward(conn, "app", 80);
    h.forward(conn, "localhost", 0);
    assert!(h.stdout(conn).is_empty());
    h.exec(conn, "http");
    let lines = h.forwarding_lines(conn);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], "Forwarding http://app.localhost:8080 -> app:80");
    assert!(lines[1].starts_with("Forwarding http://"), "{}", lines[1]);
    assert!(lines[1].ends_with(".localhost:8080 -> localhost:0"));
    h.assert_no_leaks();
}

#[test]
fn lines_queued_before_the_session_opens_are_shown_when_it_does() {
    // ssh -N then a late shell: Forwarding lines wait for a channel to show them on.
    let mut h = Harness::new();
    let conn = h.login("alice");
    h.forward(conn, "app", 80);
    h.advance(h.config().command_deadline());
    assert!(h.stdout(conn).is_empty());
    h.shell(conn);
    insta::assert_snapshot!(h.stdout(conn).join("\n"), @"Forwarding http://app.localhost:8080 -> app:80");
    assert!(!h.is_closed(conn), "a shell after the deadline is fine");
    h.assert_no_leaks();
}

#[test]
fn command_after_the_deadline_is_refused() {
    let mut h = Harness::new();
    let conn = h.login("alice");
    h.forward(conn, "app", 80);
    h.advance(h.config().command_deadline());
    assert_eq!(h.gw.route_count(), 1);
    h.exec(conn, "http --basic-auth a:b");
    assert_eq!(h.stderr(conn).len(), 1);
    assert!(
        h.stderr(conn)[0].contains("reconnect"),
        "{:?}",
        h.stderr(conn)
    );
    assert_eq!(h.exit_status(conn), Some(1));
    assert_eq!(h.gw.route_count(), 0, "the endpoint without auth is gone");
    h.assert_no_leaks();
}

#[test]
fn forward_after_the_command_is_resolved_at_once() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("one", 80)], "http");
    let late = h.forward(conn, "two", 80);
    assert_eq!(h.reply(late), Some(Reply::Granted { port: None }));
    assert_eq!(h.routes_of(conn).len(), 2);
    assert_eq!(
        h.forwarding_lines(conn).last().copied(),
        Some("Forwarding http://two.localhost:8080 -> two:80")
    );
    h.assert_no_leaks();
}

#[test]
fn inspect_lines_follow_the_forwarding_lines() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "http");
    let endpoint = h.routes_of(conn)[0].endpoint;
    h.feed(tunnel_core::Input::HttpRequestCompleted {
        endpoint,
        method: "GET".into(),
        path: "/hello?x=1".into(),
        status: 200,
        elapsed: Duration::from_micros(12_700),
    });
    h.feed(tunnel_core::Input::HttpRequestCompleted {
        endpoint,
        method: "POST\r\n".into(),
        path: "/evil\x1b[2J".into(),
        status: 502,
        elapsed: Duration::from_millis(3),
    });
    insta::assert_snapshot!(h.stdout(conn).join("\n"), @r#"
    Forwarding http://app.localhost:8080 -> app:80
    HTTP GET /hello?x=1 -> 200 (12 ms)
    HTTP POST /evil\u{1b}[2J -> 502 (3 ms)
    "#);
    h.assert_no_leaks();
}

#[test]
fn inspect_false_prints_no_request_lines() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "http --inspect=false");
    let endpoint = h.routes_of(conn)[0].endpoint;
    h.feed(tunnel_core::Input::HttpRequestCompleted {
        endpoint,
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        elapsed: Duration::from_millis(1),
    });
    assert_eq!(h.stdout(conn).len(), 1, "{:?}", h.stdout(conn));
    h.assert_no_leaks();
}

#[test]
fn immediate_a_forward_refused_early_never_becomes_an_endpoint() {
    // The port is taken when bob asks, free again when his command arrives: the answer was
    // settled when he asked (granted only so that he stays to read why), so no route appears.
    let mut h = Harness::new();
    let (alice, _) = h.tunnel("alice", &[("localhost", 20001)], "tcp");
    let bob = h.login("bob");
    let req = h.forward(bob, "localhost", 20001);
    assert_eq!(h.reply(req), Some(Reply::Granted { port: None }));
    let cancel = h.cancel(alice, "localhost", 20001);
    assert_eq!(h.reply(cancel), Some(Reply::Granted { port: None }));
    h.exec(bob, "tcp");
    h.check_invariants();
    assert_eq!(h.gw.route_by_port(20001), None);
    assert_eq!(h.stderr(bob).len(), 1, "{:?}", h.stderr(bob));
    assert_ne!(h.exit_status(bob), Some(0));
    h.assert_no_leaks();
}
