//! Port rules per command, tcp port allocation from the range, and what happens when the host
//! refuses to bind a port.

mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use harness::{Harness, HTTPS_PORT, HTTP_PORT};
use tunnel_core::command::EndpointKind;
use tunnel_core::{Action, Reply};

/// `(command, remote port, accepted)` for the contract's port rules.
const PORT_RULES: &[(&str, u32, bool)] = &[
    ("http", 80, true),
    ("http", 443, true),
    ("http", 0, true),
    ("http", 8080, false),
    ("http", 20000, false),
    ("http", 22, false),
    ("tls", 443, true),
    ("tls", 0, true),
    ("tls", 80, false),
    ("tls", 8443, false),
    ("tcp", 0, true),
    ("tcp", 20000, true),
    ("tcp", 20500, true),
    ("tcp", 20999, true),
    ("tcp", 19999, false),
    ("tcp", 21000, false),
    ("tcp", 80, false),
    ("tcp", 443, false),
    ("tcp", 22, false),
    ("tcp", 65536, false),
    ("tcp", u32::MAX, false),
    // No command: 80/443 are http, anything else tcp.
    ("", 80, true),
    ("", 443, true),
    ("", 0, true),
    ("", 20001, true),
    ("", 22, false),
    ("", 8080, false),
];

#[test]
fn port_rules_per_command() {
    for (command, port, accepted) in PORT_RULES {
        let mut h = Harness::new();
        let bind = if *command == "tls" {
            "app"
        } else {
            "localhost"
        };
        let (conn, reqs) = h.tunnel("alice", &[(bind, *port)], command);
        let what = format!("{command:?} on {port}");
        if *accepted {
            assert!(
                matches!(h.reply(reqs[0]), Some(Reply::Granted { .. })),
                "{what}: {:?}",
                h.stderr(conn)
            );
            assert_eq!(h.forwarding_lines(conn).len(), 1, "{what}");
            assert!(!h.is_closed(conn), "{what}");
            let kind = h.routes_of(conn)[0].policy.kind();
            let expected = match (*command, port) {
                ("http", _) | ("", 80 | 443) => EndpointKind::Http,
                ("tls", _) => EndpointKind::Tls,
                _ => EndpointKind::Tcp,
            };
            assert_eq!(kind, expected, "{what}");
        } else {
            // Every early reply is a grant; the command refuses with the reason.
            let expected = Reply::Granted { port: None };
            assert_eq!(h.reply(reqs[0]), Some(expected), "{what}");
            assert_eq!(h.stderr(conn).len(), 1, "{what}");
            let line = &h.stderr(conn)[0];
            assert!(
                line.contains(&format!("remote port {port}")),
                "{what}: {line}"
            );
            assert_eq!(h.exit_status(conn), Some(1), "{what}");
            assert!(h.is_closed(conn));
        }
        h.assert_no_leaks();
    }
}

#[test]
fn port_rule_lines() {
    let mut out = Vec::new();
    for command in ["http", "tls", "tcp"] {
        let mut h = Harness::new();
        let (conn, _) = h.tunnel("alice", &[("app", 22)], command);
        out.push(h.stderr(conn)[0].clone());
    }
    insta::assert_snapshot!(out.join("\n"), @r"
    error: http does not accept remote port 22 (it accepts 80, 443 or 0) (see --help: ssh HOST help)
    error: tls does not accept remote port 22 (it accepts 443 or 0) (see --help: ssh HOST help)
    error: tcp does not accept remote port 22 (it accepts 0 or a port in 20000-20999) (see --help: ssh HOST help)
    ");
}

#[test]
fn port_zero_reply_carries_the_allocated_port() {
    let mut h = Harness::new();
    let (conn, reqs) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    let port = h.port_of(conn);
    assert_eq!(
        h.reply(reqs[0]),
        Some(Reply::Granted {
            port: Some(u32::from(port))
        })
    );
    assert!(h.config().tcp_ports().contains(&port));
    assert_eq!(h.bound_ports(), BTreeSet::from([port]));
    assert_eq!(
        h.forwarding_lines(conn),
        [format!("Forwarding tcp://localhost:{port} -> localhost:0").as_str()]
    );
    h.assert_no_leaks();
}

#[test]
fn fixed_ports_reply_without_a_port() {
    let mut h = Harness::new();
    let (conn, reqs) = h.tunnel("alice", &[("localhost", 80), ("localhost", 20042)], "");
    assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
    assert_eq!(h.reply(reqs[1]), Some(Reply::Granted { port: None }));
    assert_eq!(h.gw.route_by_port(20042).map(|r| r.conn), Some(conn));
    h.assert_no_leaks();
}

#[test]
fn http_port_zero_after_the_command_is_told_the_listener_port_and_tls_the_https_one() {
    // `~C -R web:0:...` once the command is known: the reply can name the port that serves it.
    let mut h = Harness::new();
    let (http, _) = h.tunnel("alice", &[("first", 80)], "http");
    let web = [h.forward(http, "web", 0)];
    let (tls_conn, _) = h.tunnel("alice", &[("other", 443)], "tls");
    let tls = [h.forward(tls_conn, "secure", 0)];
    assert_eq!(h.forwarding_lines(http).len(), 2);
    assert_eq!(h.forwarding_lines(tls_conn).len(), 2);
    assert_eq!(
        h.reply(web[0]),
        Some(Reply::Granted {
            port: Some(u32::from(HTTP_PORT))
        })
    );
    assert_eq!(
        h.reply(tls[0]),
        Some(Reply::Granted {
            port: Some(u32::from(HTTPS_PORT))
        })
    );
    h.assert_no_leaks();
}

#[test]
fn tcp_allocation_is_unique_in_range_freed_and_reusable() {
    let mut h = Harness::builder()
        .tcp_ports(30000..=30003)
        .name_grace(Duration::ZERO)
        .build();
    let mut conns = Vec::new();
    for i in 0..4 {
        let (conn, _) = h.tunnel(&format!("key{i}"), &[("localhost", 0)], "tcp");
        conns.push(conn);
    }
    let ports: BTreeSet<u16> = conns.iter().map(|c| h.port_of(*c)).collect();
    assert_eq!(ports, BTreeSet::from([30000, 30001, 30002, 30003]));
    assert_eq!(h.bound_ports(), ports);

    // Exhausted: a clear error naming the range.
    let (full, reqs) = h.tunnel("key9", &[("localhost", 0)], "tcp");
    assert!(h.reply(reqs[0]).is_some(), "answered");
    assert_eq!(
        h.stderr(full),
        ["error: no free tcp port left in 30000-30003 (see --help: ssh HOST help)"]
    );
    assert_eq!(h.exit_status(full), Some(1));

    // A freed port is handed out again.
    let freed = h.port_of(conns[1]);
    h.close(conns[1]);
    assert_eq!(h.gw.route_by_port(freed), None);
    assert!(!h.bound_ports().contains(&freed));
    let (again, _) = h.tunnel("key9", &[("localhost", 0)], "tcp");
    assert_eq!(h.port_of(again), freed);
    h.assert_no_leaks();
}

#[test]
fn range_exhausted_immediate_still_lets_http_through() {
    let mut h = Harness::builder().tcp_ports(30000..=30000).build();
    let (_, _) = h.tunnel("bob", &[("localhost", 0)], "tcp");
    let (conn, reqs) = h.tunnel("alice", &[("localhost", 0)], "http");
    assert_eq!(
        h.reply(reqs[0]),
        Some(Reply::Granted {
            port: Some(u32::from(HTTP_PORT))
        })
    );
    assert_eq!(h.routes_of(conn)[0].policy.kind(), EndpointKind::Http);
    h.assert_no_leaks();
}

#[test]
fn fixed_tcp_port_held_by_another_key_is_in_use() {
    let mut h = Harness::new();
    let (first, _) = h.tunnel("alice", &[("localhost", 20007)], "tcp");
    let (second, reqs) = h.tunnel("bob", &[("localhost", 20007)], "tcp");
    // Immediate grants early so the client stays to read the line.
    let expected = Reply::Granted { port: None };
    assert_eq!(h.reply(reqs[0]), Some(expected));
    assert_eq!(
        h.stderr(second),
        ["error: tcp port 20007 is in use (see --help: ssh HOST help)"]
    );
    assert_eq!(h.gw.route_by_port(20007).map(|r| r.conn), Some(first));
    h.assert_no_leaks();
}

#[test]
fn bind_failure_moves_a_port_zero_endpoint_to_another_port() {
    let mut h = Harness::builder().tcp_ports(30000..=30009).build();
    h.fail_binds_on([30000, 30001]);
    let (conn, reqs) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    let port = h.port_of(conn);
    assert_eq!(port, 30002);
    assert_eq!(h.failed_binds, 2);
    assert!(h.stderr(conn).is_empty());
    assert_eq!(
        h.forwarding_lines(conn),
        ["Forwarding tcp://localhost:30002 -> localhost:0"]
    );
    // Answered before the command: the client keeps the port it was told, the channel names it.
    let reply = h.reply(reqs[0]);
    let Some(Reply::Granted { port: Some(told) }) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(h.routes_of(conn)[0].target.port, told);
    // The next allocation goes on from there.
    h.allow_binds_on([30000, 30001]);
    let (next, _) = h.tunnel("bob", &[("localhost", 0)], "tcp");
    assert_eq!(h.port_of(next), 30003);
    h.assert_no_leaks();
}

#[test]
fn bind_failure_on_a_fixed_port_fails_with_a_clear_error() {
    let mut h = Harness::new();
    h.fail_binds_on([20005]);
    let (conn, reqs) = h.tunnel("alice", &[("app", 80), ("localhost", 20005)], "");
    // Granted, so that the client stays to read why the session ends.
    assert_eq!(h.reply(reqs[1]), Some(Reply::Granted { port: None }));
    assert_eq!(
        h.stderr(conn),
        ["error: tcp port 20005 could not be opened on the server (see --help: ssh HOST help)"]
    );
    assert_eq!(h.exit_status(conn), Some(1));
    assert!(h.is_closed(conn));
    assert_eq!(h.gw.route_count(), 0);
    assert!(h.bound_ports().is_empty());
    h.assert_no_leaks();
}

#[test]
fn bind_failures_give_up_after_the_attempt_limit() {
    let mut h = Harness::builder().tcp_ports(30000..=30099).build();
    h.fail_binds_on(30000..=30099);
    let (conn, reqs) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    assert_eq!(h.failed_binds, h.config().limits().bind_attempts());
    // Granted with the last port tried; the session ends with the reason.
    assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: Some(30007) }));
    assert_eq!(h.stderr(conn).len(), 1);
    assert!(h.stderr(conn)[0].contains("could not be opened"));
    h.assert_no_leaks();
}

#[test]
fn no_route_until_the_port_is_bound() {
    // A forward after the command: listener, then route, then the reply naming a bound port.
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    let mark = h.log.len();
    h.forward(conn, "localhost", 20003);
    let actions = h.actions_since(mark);
    let bind = actions
        .iter()
        .position(|a| matches!(a, Action::Bind { port: 20003, .. }))
        .expect("bind");
    let route = actions
        .iter()
        .position(|a| matches!(a, Action::RouteAdded(_)))
        .expect("route");
    let reply = actions
        .iter()
        .position(|a| matches!(a, Action::Reply { .. }))
        .expect("reply");
    assert!(bind < route && route < reply, "{actions:?}");
    h.assert_no_leaks();
}
