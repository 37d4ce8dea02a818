//! Restarts lose nothing: SIGTERM lets what is in flight finish and tells every user, and the
//! names and tcp ports each key holds (random ones included) come back to it after the server
//! restarts on the same state dir, and no other key takes them.

use std::io::{Read, Write};
use std::sync::{mpsc, Mutex};

use tunnel_e2e::http_service::HttpService;
use tunnel_e2e::http_visitor::HttpConn;
use tunnel_e2e::visitor::wait_until_refused;
use tunnel_e2e::{
    workspace_root, Client, Forwarding, Key, LocalService, PortLease, Server, FAILURE_TIMEOUT,
};

fn server(state: &std::path::Path, lease: &PortLease) -> Server {
    Server::builder()
        .state_dir(state)
        .args(["--tcp-ports".to_owned(), lease.range().to_string()])
        .start()
}

fn tunnel(server: &Server, key: &Key, forward: &str, command: &str) -> (Client, Forwarding) {
    let mut client = Client::builder(server)
        .key(key)
        .forward(forward)
        .command([command])
        .spawn();
    let forwarding = client.wait_forwarding();
    (client, forwarding)
}

#[test]
fn after_a_restart_each_key_gets_its_random_name_and_port_back_and_no_other_key_does() {
    let state = tempfile::Builder::new()
        .prefix("tunnel-e2e-state")
        .tempdir()
        .expect("a state dir");
    let lease = PortLease::acquire();
    let (alice, bob) = (Key::generate(), Key::generate());
    let service = HttpService::start("again");
    let web = format!("80:localhost:{}", service.port());
    let shell = format!("0:localhost:{}", service.port());

    let before = server(state.path(), &lease);
    let (_web, web_before) = tunnel(&before, &alice, &web, "http");
    let (_shell, shell_before) = tunnel(&before, &alice, &shell, "tcp");
    assert!(before.terminate(), "SIGTERM stops the server cleanly");

    let after = server(state.path(), &lease);
    after.wait_log_line(
        |l| l.contains("restored 2 of 2 saved reservations"),
        FAILURE_TIMEOUT,
    );
    // Another key asking for the name, or for any port, does not get alice's.
    let mut taker = Client::builder(&after)
        .key(&bob)
        .forward(format!(
            "{}:80:localhost:{}",
            web_before.host,
            service.port()
        ))
        .command(["http"])
        .spawn();
    let refused = taker.wait_exit(FAILURE_TIMEOUT);
    assert!(
        refused.stderr.iter().any(|l| l.contains("is reserved")),
        "{refused:?}"
    );
    let (_other, other_port) = tunnel(&after, &bob, &shell, "tcp");
    assert_ne!(other_port.port, shell_before.port);
    // alice's client reconnects with the same -R (as autossh does): the same name and port.
    let (_web, web_after) = tunnel(&after, &alice, &web, "http");
    assert_eq!(web_after.host, web_before.host);
    let (_shell, shell_after) = tunnel(&after, &alice, &shell, "tcp");
    assert_eq!(shell_after.port, shell_before.port);
}

#[test]
fn sigterm_tells_each_session_lets_the_request_in_flight_finish_and_refuses_newcomers() {
    let state = tempfile::Builder::new()
        .prefix("tunnel-e2e-state")
        .tempdir()
        .expect("a state dir");
    let lease = PortLease::acquire();
    let mut server = server(state.path(), &lease);
    // The local service holds the first request until the test releases it.
    let (release, released) = mpsc::channel::<()>();
    let (arrive, arrived) = mpsc::channel::<()>();
    let held = Mutex::new(Some((released, arrive)));
    let service = LocalService::spawn(move |mut stream| {
        let _ = stream.set_read_timeout(Some(FAILURE_TIMEOUT));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        if let Some((released, arrive)) = held.lock().expect("lock").take() {
            let _ = arrive.send(());
            let _ = released.recv_timeout(FAILURE_TIMEOUT);
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfinished");
    });
    let key = Key::generate();
    let (mut client, forwarding) = tunnel(
        &server,
        &key,
        &format!("80:localhost:{}", service.port()),
        "http",
    );
    let host = format!("{}:{}", forwarding.host, server.http_addr().port());
    let mut in_flight = HttpConn::connect(server.http_addr()).expect("connect");
    in_flight
        .send(format!("GET /slow HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .expect("send");
    arrived
        .recv_timeout(FAILURE_TIMEOUT)
        .unwrap_or_else(|_| client.fail("the request never reached the local service"));

    server.send_sigterm();
    client.wait_stderr_line(
        |l| l == "server restarting: reconnect within 10m to get your names and ports back",
        FAILURE_TIMEOUT,
    );
    // No newcomer gets in, on any listener.
    for addr in [server.http_addr(), server.ssh_addr()] {
        assert!(
            wait_until_refused(addr.port(), FAILURE_TIMEOUT),
            "{addr} still accepts"
        );
    }
    // The request in flight is answered in full.
    release.send(()).expect("the held request waits");
    let answered = in_flight.read_response().expect("answered");
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.body, b"finished");
    // Then every connection is closed, the client told why, and the server exits cleanly.
    let ended = client.wait_exit(FAILURE_TIMEOUT);
    assert!(
        ended.stderr.iter().any(|l| l.contains("server restarting")),
        "{ended:?}"
    );
    let status = server.wait_exited(FAILURE_TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn with_its_sockets_held_outside_a_restart_refuses_no_visitor_and_keeps_the_name() {
    let state = tempfile::Builder::new()
        .prefix("tunnel-e2e-state")
        .tempdir()
        .expect("a state dir");
    let lease = PortLease::acquire();
    let holder = workspace_root().join("tests/support/socket_holder.py");
    let server = Server::builder()
        .wrapped_in(["python3".to_owned(), holder.display().to_string()])
        .state_dir(state.path())
        .args(["--tcp-ports".to_owned(), lease.range().to_string()])
        .start();
    server.wait_log_line(
        |l| l.contains("serving the http listener passed in"),
        FAILURE_TIMEOUT,
    );
    let key = Key::generate();
    let service = HttpService::start("held");
    let web = format!("80:localhost:{}", service.port());
    let (mut first, before) = tunnel(&server, &key, &web, "http");
    let http = server.http_addr();

    // The holder stops the server (SIGTERM) and starts a new one on the same sockets.
    server.send_signal("HUP");
    let ended = first.wait_exit(FAILURE_TIMEOUT);
    assert!(
        ended.stderr.iter().any(|l| l.contains("server restarting")),
        "{ended:?}"
    );
    server.wait_log_line(
        |l| l.contains("server exited, starting it again"),
        FAILURE_TIMEOUT,
    );
    // Between the two servers, or while the new one starts, a visitor is not refused: the held
    // socket queues it.
    let mut visitor = HttpConn::connect(http).expect("the held socket takes the connection");
    server.wait_log_line(
        |l| l.contains("restored 1 of 1 saved reservations"),
        FAILURE_TIMEOUT,
    );
    let (_again, after) = tunnel(&server, &key, &web, "http");
    assert_eq!(
        after.host, before.host,
        "the same random name after the restart"
    );
    let host = format!("{}:{}", after.host, http.port());
    visitor
        .send(format!("GET /queued HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .expect("send");
    let response = visitor.read_response().expect("an answer");
    assert_eq!(response.status, 200, "{response:?}\n{}", server.log());
    assert_eq!(response.header("x-service-id"), Some("held"));
    assert!(
        server.terminate(),
        "the holder stops the server and exits cleanly"
    );
}
