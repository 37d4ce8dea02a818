//! `--accept-proxy-proto`: the server behind a load balancer on 127.0.0.1
//! (`--trusted-proxies 127.0.0.1/32`), so every connection the tests make must start with a
//! PROXY header, and the visitor it names is the one the server serves. SSH logins come through
//! a relay that writes a v2 header ([`proxying_balancer`]); visitors write their header
//! themselves, in the same segment as their first bytes.

use std::io::{Read, Write};
use std::net::SocketAddr;

use tunnel_e2e::http_service::HttpService;
use tunnel_e2e::http_visitor::HttpConn;
use tunnel_e2e::proxy_protocol::{proxy_service, proxying_balancer, v1_header, v2_header};
use tunnel_e2e::visitor::{self, Ending};
use tunnel_e2e::{names_token, Client, Key, LocalService, Server, FAILURE_TIMEOUT};

/// The address the load balancer says every SSH client comes from.
const SSH_CLIENT_IP: &str = "203.0.113.9";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// A server that reads PROXY headers from 127.0.0.1, with `keys` authorized (their lines as
/// given, options included), and a load balancer in front of its SSH listener that names
/// every client `SSH_CLIENT_IP` (with the client's own port).
fn server_behind_a_balancer(key_lines: &[String]) -> (Server, LocalService, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("authorized_keys");
    std::fs::write(&keys, key_lines.join("\n") + "\n").expect("write authorized_keys");
    let server = Server::start(&[
        "--trusted-proxies",
        "127.0.0.1/32",
        "--accept-proxy-proto",
        "--authorized-keys",
        keys.to_str().expect("UTF-8 temp path"),
    ]);
    let ssh = server.ssh_connect_addr();
    let balancer = proxying_balancer(ssh, move |client| {
        v2_header(
            SocketAddr::new(SSH_CLIENT_IP.parse().expect("ip"), client.port()),
            ssh,
        )
    });
    (server, balancer, dir)
}

/// A key any client may use, and one only from `SSH_CLIENT_IP`.
fn key_from(key: &Key, from: &str) -> String {
    format!("from=\"{from}\" {}", key.public_line())
}

#[test]
fn an_ssh_login_through_a_v2_header_is_judged_by_the_address_it_names() {
    let (from_balancer_visitor, from_socket) = (Key::generate(), Key::generate());
    let (server, balancer, _keys) = server_behind_a_balancer(&[
        key_from(&from_balancer_visitor, "203.0.113.0/24"),
        key_from(&from_socket, "127.0.0.1"),
    ]);
    let service = LocalService::echo();

    // `from=` sees the address in the header: 203.0.113.9 is let in...
    let mut client = Client::builder(&server)
        .key(&from_balancer_visitor)
        .port(balancer.port())
        .forward(format!("0:localhost:{}", service.port()))
        .command(["tcp"])
        .spawn();
    let port = client.wait_forwarding().public_port();
    assert_eq!(
        balancer.accepted(),
        1,
        "the login went through the balancer"
    );
    // (A visitor of this endpoint comes from 127.0.0.1 too, so it needs a header.)
    let mut stream = visitor::connect(port).expect("connect to the tunnel");
    let mut first = v1_header(addr("198.51.100.1:1000"), addr("192.0.2.1:2000"));
    first.extend_from_slice(b"ping");
    stream.write_all(&first).expect("send");
    let mut back = [0; 4];
    stream
        .read_exact(&mut back)
        .unwrap_or_else(|e| client.fail(&format!("echo through the tunnel: {e}")));
    assert_eq!(&back, b"ping");

    // ...and a key only for 127.0.0.1, the balancer's socket address, is not.
    let mut refused = Client::builder(&server)
        .key(&from_socket)
        .port(balancer.port())
        .forward("0:localhost:1")
        .command(["tcp"])
        .spawn();
    let out = refused.wait_exit(FAILURE_TIMEOUT);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        !out.stdout.iter().any(|l| l.starts_with("Forwarding ")),
        "{out}"
    );
    assert_eq!(balancer.accepted(), 2);
}

#[test]
fn a_tcp_visitors_v2_header_shows_through_the_endpoints_own_proxy_header() {
    let key = Key::generate();
    let (server, balancer, _keys) = server_behind_a_balancer(&[key.public_line()]);
    let (service, headers) = proxy_service();
    let mut client = Client::builder(&server)
        .key(&key)
        .port(balancer.port())
        .forward(format!("0:localhost:{}", service.port()))
        .command(["tcp", "--proxy-proto", "1"])
        .spawn();
    let port = client.wait_forwarding().public_port();

    let (visitor_addr, reached) = (addr("198.51.100.20:4242"), addr("192.0.2.1:443"));
    let mut stream = visitor::connect(port).expect("connect to the tunnel");
    // The header and the visitor's first bytes in one segment: those bytes are the stream's.
    let mut first = v2_header(visitor_addr, reached);
    first.extend_from_slice(b"payload after the header");
    stream.write_all(&first).expect("send");
    let mut back = vec![0; b"payload after the header".len()];
    stream
        .read_exact(&mut back)
        .unwrap_or_else(|e| client.fail(&format!("echo after the header failed: {e}")));
    assert_eq!(back, b"payload after the header");

    let header = headers
        .recv_timeout(FAILURE_TIMEOUT)
        .unwrap_or_else(|_| client.fail("the service got no connection"))
        .unwrap_or_else(|e| client.fail(&format!("bad PROXY header: {e}")));
    assert_eq!(
        (header.version, header.source, header.destination),
        (1, visitor_addr, reached),
        "the endpoint's header names the visitor and the address it reached, as the load \
         balancer's header said"
    );
}

#[test]
fn an_http_visitors_v1_header_becomes_its_x_forwarded_for() {
    let key = Key::generate();
    let (server, balancer, _keys) = server_behind_a_balancer(&[key.public_line()]);
    let service = HttpService::start("behind");
    let mut client = Client::builder(&server)
        .key(&key)
        .port(balancer.port())
        .forward(format!("app:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    let forwarding = client.wait_forwarding();
    let http = server.http_addr();
    let host = format!("{}:{}", forwarding.host, http.port());

    let mut conn = HttpConn::connect(http).expect("connect");
    let mut first = v1_header(addr("203.0.113.7:51000"), http);
    first.extend_from_slice(
        format!(
            "GET /who HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 6.6.6.6\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    conn.send(&first).expect("send");
    let response = conn
        .read_response()
        .unwrap_or_else(|e| client.fail(&format!("response: {e}")));

    assert_eq!(response.status, 200, "{response:?}\n{client}");
    let seen = service.last_request();
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        ["203.0.113.7"],
        "the visitor named by the header is the first hop, not the balancer: {seen:?}"
    );
}

#[test]
fn a_trusted_connection_without_a_header_is_closed() {
    let key = Key::generate();
    let (server, _balancer, _keys) = server_behind_a_balancer(&[key.public_line()]);

    // An HTTP request straight from 127.0.0.1: closed unanswered.
    let mut conn = HttpConn::connect(server.http_addr()).expect("connect");
    conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let (closed, received) = conn.read_until_closed(FAILURE_TIMEOUT);
    assert!(closed && received.is_empty(), "{received:?}");
    server.wait_log_line(
        |line| line.contains("no valid PROXY header") && names_token(line, "http"),
        FAILURE_TIMEOUT,
    );

    // An SSH login straight from 127.0.0.1: its banner is not a header.
    let mut direct = Client::builder(&server)
        .key(&key)
        .forward("0:localhost:1")
        .command(["tcp"])
        .spawn();
    let out = direct.wait_exit(FAILURE_TIMEOUT);
    assert_ne!(out.code(), Some(0), "{out}");
    server.wait_log_line(
        |line| line.contains("no valid PROXY header") && names_token(line, "ssh"),
        FAILURE_TIMEOUT,
    );

    // A malformed header is no better.
    let mut stream = visitor::connect(server.http_addr().port()).expect("connect");
    stream
        .write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 051000 80\r\nGET / HTTP/1.1\r\n\r\n")
        .expect("send");
    let ending = visitor::read_until_closed(&mut stream, FAILURE_TIMEOUT);
    assert!(
        matches!(&ending, Ending::Eof(b) | Ending::Reset(b) if b.is_empty()),
        "{ending:?}"
    );
}
