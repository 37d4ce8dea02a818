//! Traffic flags on tcp tunnels: `--cidr-allow`, `--cidr-deny`, `--proxy-proto`.

use tunnel_e2e::proxy_protocol::proxy_service;
use tunnel_e2e::visitor::{self, Ending};
use tunnel_e2e::{Client, LocalService, Server, FAILURE_TIMEOUT};

const BANNER: &[u8] = b"welcome\n";

/// Connects to a tunnel whose service greets with [`BANNER`] and reports how it ended.
fn visit(port: u16) -> Ending {
    let mut stream = visitor::connect(port).expect("the public port accepts the connection");
    visitor::read_until_closed_or(&mut stream, BANNER.len(), FAILURE_TIMEOUT)
}

fn tunnel_with(flags: &[&str]) -> (Server, LocalService, Client, u16) {
    let server = Server::start(&[]);
    let service = LocalService::echo_with_banner(BANNER);
    let (client, forwarding) = Client::tcp_tunnel(&server, service.port(), flags);
    let port = forwarding.public_port();
    (server, service, client, port)
}

#[test]
fn cidr_deny_closes_the_visitor_without_data() {
    let (_server, service, client, port) = tunnel_with(&["--cidr-deny", "127.0.0.1/32"]);

    let ending = visit(port);

    assert!(
        ending.is_closed() && ending.received().is_empty(),
        "a denied visitor must be closed without data, got {ending:?}\n{client}"
    );
    assert_eq!(
        service.accepted(),
        0,
        "no channel may be opened for a denied visitor"
    );
}

#[test]
fn cidr_allow_lets_the_visitor_through() {
    let (_server, _service, client, port) = tunnel_with(&["--cidr-allow", "127.0.0.0/8"]);

    let ending = visit(port);

    assert_eq!(
        ending.received(),
        BANNER,
        "an allowed visitor must reach the service, got {ending:?}\n{client}"
    );
    client.assert_echo_after(port, BANNER);
}

#[test]
fn cidr_allow_of_another_network_closes_the_visitor() {
    let (_server, service, client, port) = tunnel_with(&["--cidr-allow", "10.0.0.0/8"]);

    let ending = visit(port);

    assert!(
        ending.is_closed() && ending.received().is_empty(),
        "with an allow list, other addresses must be closed, got {ending:?}\n{client}"
    );
    assert_eq!(service.accepted(), 0);
}

#[test]
fn cidr_deny_wins_over_allow() {
    let (_server, service, client, port) =
        tunnel_with(&["--cidr-allow", "127.0.0.0/8", "--cidr-deny=127.0.0.1/32"]);

    let ending = visit(port);

    assert!(
        ending.is_closed() && ending.received().is_empty(),
        "deny must win over allow, got {ending:?}\n{client}"
    );
    assert_eq!(service.accepted(), 0);
}

fn check_proxy_header(version: &str) {
    let server = Server::start(&[]);
    let (service, headers) = proxy_service();
    let (client, forwarding) =
        Client::tcp_tunnel(&server, service.port(), &["--proxy-proto", version]);
    let port = forwarding.public_port();

    let mut stream = visitor::connect(port).expect("connect to the tunnel");
    let visitor_addr = stream
        .local_addr()
        .expect("a connected socket has an address");
    // The payload comes back unchanged only if nothing but the header preceded it.
    let back = visitor::round_trip(&mut stream, b"payload after the header")
        .unwrap_or_else(|e| client.fail(&format!("echo after the header failed: {e}")));
    assert_eq!(back, b"payload after the header");

    let header = headers
        .recv_timeout(FAILURE_TIMEOUT)
        .unwrap_or_else(|_| client.fail("the service got no connection"))
        .unwrap_or_else(|e| client.fail(&format!("bad PROXY header: {e}")));
    assert_eq!(header.version.to_string(), version, "{header:?}");
    assert_eq!(
        header.source, visitor_addr,
        "the header must name the visitor's address and source port"
    );
    assert_eq!(
        header.destination.port(),
        port,
        "the header's destination is the public port the visitor connected to: {header:?}"
    );
}

#[test]
fn proxy_proto_1_sends_a_v1_line_naming_the_visitor() {
    check_proxy_header("1");
}

#[test]
fn proxy_proto_2_sends_a_v2_header_naming_the_visitor() {
    check_proxy_header("2");
}

#[test]
fn the_proxy_header_names_the_address_reached_even_on_a_wildcard_listener() {
    // Tcp endpoints listen on the SSH listener's IP: here 0.0.0.0, where the listener's own
    // address says nothing about where the visitor arrived.
    let key = tunnel_e2e::Key::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("authorized_keys");
    std::fs::write(&keys, key.public_line() + "\n").expect("write authorized_keys");
    let server = Server::start(&[
        "--ssh-addr",
        "0.0.0.0:0",
        "--authorized-keys",
        keys.to_str().expect("UTF-8 temp path"),
    ]);
    let (service, headers) = proxy_service();
    let mut client = Client::builder(&server)
        .key(&key)
        .forward(format!("0:localhost:{}", service.port()))
        .command(["tcp", "--proxy-proto", "2"])
        .spawn();
    let port = client.wait_forwarding().public_port();
    let mut stream = visitor::connect(port).expect("connect to the tunnel");
    let back = visitor::round_trip(&mut stream, b"after the header")
        .unwrap_or_else(|e| client.fail(&format!("echo failed: {e}")));
    assert_eq!(back, b"after the header");
    let header = headers
        .recv_timeout(FAILURE_TIMEOUT)
        .unwrap_or_else(|_| client.fail("the service got no connection"))
        .unwrap_or_else(|e| client.fail(&format!("bad PROXY header: {e}")));
    assert_eq!(
        header.destination,
        stream.peer_addr().expect("connected"),
        "the destination is the socket the visitor reached, not 0.0.0.0: {header:?}"
    );
}
