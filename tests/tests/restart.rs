//! Restarts lose nothing: the names and tcp ports each key holds (random ones included) come
//! back to it after the server restarts on the same state dir, and no other key takes them.

use tunnel_e2e::http_service::HttpService;
use tunnel_e2e::{Client, Forwarding, Key, PortLease, Server, FAILURE_TIMEOUT};

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
