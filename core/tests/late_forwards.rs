//! Forwards that arrive after the command, early refusals of taken names, and a cancel that races
//! a bind.

mod harness;

use std::time::Instant;

use harness::Harness;
use rand_chacha::rand_core::SeedableRng;
use tunnel_core::{
    Action, ConnId, Gateway, GatewayConfig, Input, KeyFingerprint, Reply, RequestId,
};

#[test]
fn immediate_a_forward_after_the_command_is_answered_at_once_with_its_port() {
    // `~C -R 0:localhost:22` after `ssh host tcp`: russh must answer inside the handler.
    let mut h = Harness::new();
    let conn = h.login("alice");
    let first = h.forward(conn, "localhost", 0);
    h.exec(conn, "tcp");
    assert!(matches!(
        h.reply(first),
        Some(Reply::Granted { port: Some(_) })
    ));
    let mark = h.log.len();
    let late = h.forward(conn, "localhost", 0);
    let Some(Reply::Granted { port: Some(port) }) = h.reply(late) else {
        panic!("a late port-0 forward gets its port: {:?}", h.reply(late));
    };
    // The reply names a port the host already gave us: the Bind was answered first.
    let actions = h.actions_since(mark);
    let bind = actions
        .iter()
        .position(|a| matches!(a, Action::Bind { port: p, .. } if u32::from(*p) == port));
    let reply = actions
        .iter()
        .position(|a| matches!(a, Action::Reply { request, .. } if *request == late));
    assert!(bind < reply && bind.is_some(), "{actions:?}");
    assert_eq!(h.gw.route_by_port(port as u16).map(|r| r.conn), Some(conn));
    assert_eq!(h.forwarding_lines(conn).len(), 2);
    h.assert_no_leaks();
}

#[test]
fn immediate_a_name_held_by_another_key_is_explained_with_the_command() {
    let mut h = Harness::new();
    let (_alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    let bob = h.login("bob");
    let req = h.forward(bob, "app", 443);
    // Granted, so that a client with ExitOnForwardFailure stays to read why it fails.
    assert_eq!(h.reply(req), Some(Reply::Granted { port: None }));
    h.exec(bob, "http");
    assert_eq!(h.stderr(bob).len(), 1, "{:?}", h.stderr(bob));
    assert!(
        h.stderr(bob)[0].contains("app.localhost is taken"),
        "{:?}",
        h.stderr(bob)
    );
    assert_eq!(h.exit_status(bob), Some(1));
    h.assert_no_leaks();
}

/// A bare gateway with the dev defaults, for tests that must hold back a bind answer (the
/// harness answers every bind at once).
fn gateway() -> Gateway {
    let rng = Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1));
    Gateway::new(GatewayConfig::new("localhost", 8080, 8443), rng)
}

/// Opens `conn` and authenticates it.
fn log_in(gw: &mut Gateway, now: Instant, conn: ConnId) {
    let peer = "127.0.0.1:4000".parse().unwrap();
    gw.handle(now, Input::ConnectionOpened { conn, peer });
    let key = KeyFingerprint::new("SHA256:k");
    gw.handle(
        now,
        Input::AuthRequested {
            conn,
            user: "v2".into(),
            key,
        },
    );
}

#[test]
fn a_cancel_before_the_bind_is_answered_still_answers_the_held_forward() {
    let mut gw = gateway();
    let now = Instant::now();
    let conn = ConnId::from_raw(1);
    let (first, forward, cancel) = (
        RequestId::from_raw(1),
        RequestId::from_raw(2),
        RequestId::from_raw(3),
    );
    let forward_input = |request| Input::ForwardRequested {
        conn,
        request,
        bind_address: "localhost".into(),
        port: 0,
    };
    log_in(&mut gw, now, conn);
    gw.handle(now, forward_input(first));
    gw.handle(
        now,
        Input::ExecRequested {
            conn,
            command: "tcp".into(),
        },
    );
    let mut bound = Vec::new();
    while let Some(action) = gw.poll_action() {
        if let Action::Bind { endpoint, .. } = action {
            bound.push(endpoint);
        }
    }
    for endpoint in bound {
        gw.handle(now, Input::Bound { endpoint });
    }
    while gw.poll_action().is_some() {}

    gw.handle(
        now,
        Input::ForwardRequested {
            conn,
            request: forward,
            bind_address: "other".into(),
            port: 0,
        },
    );
    let actions: Vec<Action> = std::iter::from_fn(|| gw.poll_action()).collect();
    let Some(Action::Bind { endpoint, port }) = actions
        .iter()
        .find(|a| matches!(a, Action::Bind { .. }))
        .cloned()
    else {
        panic!("a tcp forward asks for a listener: {actions:?}");
    };
    let answered = |actions: &[Action], r: RequestId| {
        actions.iter().find_map(|a| match a {
            Action::Reply { request, reply, .. } if *request == r => Some(*reply),
            _ => None,
        })
    };
    assert_eq!(
        answered(&actions, forward),
        None,
        "held until the listener is up"
    );

    // Not told a port yet, the client can only cancel by the port it asked for.
    gw.handle(
        now,
        Input::ForwardCancelled {
            conn,
            request: cancel,
            bind_address: "other".into(),
            port: 0,
        },
    );
    let actions: Vec<Action> = std::iter::from_fn(|| gw.poll_action()).collect();
    assert_eq!(answered(&actions, forward), Some(Reply::Refused));
    assert_eq!(
        answered(&actions, cancel),
        Some(Reply::Granted { port: None })
    );
    assert!(
        actions.contains(&Action::Unbind { endpoint, port }),
        "{actions:?}"
    );
    // The late Bound for the cancelled endpoint is ignored.
    gw.handle(now, Input::Bound { endpoint });
    assert_eq!(gw.poll_action(), None);
    assert_eq!(gw.route_count(), 1, "the first forward is untouched");
    assert_eq!(gw.endpoint_count(), 1);
    assert_eq!(gw.held_port_count(), 1);
}

#[test]
fn a_command_before_the_early_bind_is_answered_waits_for_it() {
    // An adapter that reads the exec while the listener of a port-0 forward is still being
    // bound: the forward's reply is owed until the bind is answered, then it names the port and
    // the endpoint goes live at once, with its command's kind.
    let mut gw = gateway();
    let now = Instant::now();
    let conn = ConnId::from_raw(1);
    let request = RequestId::from_raw(1);
    let drain = |gw: &mut Gateway| std::iter::from_fn(|| gw.poll_action()).collect::<Vec<_>>();
    log_in(&mut gw, now, conn);
    gw.handle(
        now,
        Input::ForwardRequested {
            conn,
            request,
            bind_address: "localhost".into(),
            port: 0,
        },
    );
    let actions = drain(&mut gw);
    let Some(Action::Bind { endpoint, port }) = actions
        .iter()
        .find(|a| matches!(a, Action::Bind { .. }))
        .cloned()
    else {
        panic!("a port-0 forward binds first: {actions:?}");
    };
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Reply { .. })),
        "{actions:?}"
    );
    gw.handle(now, Input::SessionRequested { conn });
    gw.handle(
        now,
        Input::ExecRequested {
            conn,
            command: "tcp".into(),
        },
    );
    let actions = drain(&mut gw);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Reply { .. } | Action::RouteAdded(_))),
        "{actions:?}"
    );
    gw.handle(now, Input::Bound { endpoint });
    let actions = drain(&mut gw);
    let replies: Vec<Reply> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { reply, .. } => Some(*reply),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies,
        [Reply::Granted {
            port: Some(u32::from(port))
        }]
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::RouteAdded(r) if r.endpoint == endpoint)),
        "{actions:?}"
    );
    assert_eq!(gw.route_by_port(port).map(|r| r.conn), Some(conn));
    gw.handle(now, Input::ConnectionClosed { conn });
    let actions = drain(&mut gw);
    assert!(
        actions.contains(&Action::Unbind { endpoint, port }),
        "{actions:?}"
    );
}
