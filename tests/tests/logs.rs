//! The server's own log: `--log-format json`, no colours into a pipe, and `--access-log`'s one
//! line per visitor connection on every listener.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use serde_json::Value;
use tunnel_e2e::http_service::HttpService;
use tunnel_e2e::http_visitor::get_with;
use tunnel_e2e::tls_tools::{curl, curl_result, presented_certificate, CertFiles, OpensslServer};
use tunnel_e2e::{refusing_port, Client, LocalService, Server, FAILURE_TIMEOUT};

/// A connection to `addr` whose every wait is bounded by [`FAILURE_TIMEOUT`].
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, FAILURE_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(FAILURE_TIMEOUT))
        .expect("set a read timeout");
    stream
        .set_write_timeout(Some(FAILURE_TIMEOUT))
        .expect("set a write timeout");
    stream
}

/// The value of `key=` in a text log line (the values these tests read have no spaces).
fn text_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
}

/// Whether a text line is the access log line of the visitor connecting from `peer`.
fn is_text_access_line(line: &str, peer: SocketAddr) -> bool {
    line.contains(" access: ") && text_field(line, "peer") == Some(&peer.to_string())
}

/// A JSON log line, if it is one.
fn json(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line)
        .ok()
        .filter(Value::is_object)
}

/// Whether a JSON line is the access log line of the visitor connecting from `peer`.
fn is_json_access_line(line: &str, peer: SocketAddr) -> bool {
    json(line).is_some_and(|l| l["target"] == "access" && l["peer"] == peer.to_string())
}

/// Sends `bytes` through the tcp endpoint on `port` to an echo service and reads them back,
/// then half-closes and waits for the server's close: a whole, clean visitor connection. Returns
/// the visitor's address.
fn echo_visit(port: u16, bytes: &[u8]) -> SocketAddr {
    let mut visitor = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    let peer = visitor
        .local_addr()
        .expect("a connected socket has an address");
    visitor.write_all(bytes).expect("send through the tunnel");
    let mut echoed = vec![0; bytes.len()];
    visitor.read_exact(&mut echoed).expect("read the echo back");
    assert_eq!(echoed, bytes, "the echo service sends back what it got");
    visitor.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    visitor
        .read_to_end(&mut rest)
        .expect("read until the server closes");
    assert!(rest.is_empty(), "nothing after the echo: {rest:?}");
    peer
}

#[test]
fn json_log_lines_are_objects_with_fixed_keys() {
    let server = Server::start(&["--log-format", "json", "--access-log"]);
    let echo = LocalService::echo();
    let (_client, forwarding) = Client::tcp_tunnel(&server, echo.port(), &[]);
    let port = forwarding.public_port();

    let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let peer = echo_visit(port, &sent);
    let line = server.wait_log_line(|l| is_json_access_line(l, peer), FAILURE_TIMEOUT);

    let access = json(&line).expect("matched as JSON");
    assert_eq!(access["level"], "INFO", "{line}");
    assert_eq!(access["message"], "visitor connection", "{line}");
    assert_eq!(access["listener"], "tcp", "{line}");
    assert_eq!(access["endpoint"], port.to_string(), "{line}");
    assert_eq!(access["bytes_in"], sent.len(), "{line}");
    assert_eq!(access["bytes_out"], sent.len(), "{line}");
    assert_eq!(access["end"], "closed", "{line}");
    assert!(access["duration_ms"].is_u64(), "{line}");
    assert!(access.get("requests").is_none(), "no http fields: {line}");

    // A visitor whose tunnel's local service refuses it: refused, and the reason.
    let (_refusing, forwarding) = Client::tcp_tunnel(&server, refusing_port(), &[]);
    let mut refused = connect(SocketAddr::from(([127, 0, 0, 1], forwarding.public_port())));
    let refused_peer = refused.local_addr().expect("connected");
    let mut nothing = Vec::new();
    let _ = refused.read_to_end(&mut nothing);
    let line = server.wait_log_line(|l| is_json_access_line(l, refused_peer), FAILURE_TIMEOUT);
    let access = json(&line).expect("matched as JSON");
    assert_eq!(access["end"], "refused", "{line}");
    assert_eq!(
        access["reason"], "the tunnel's local service refused the connection",
        "{line}"
    );

    // The first visitor's line came before the second's, and only once.
    assert_eq!(
        server
            .log_lines_matching(|l| is_json_access_line(l, peer))
            .len(),
        1,
        "{}",
        server.log()
    );
    let lines = server.log_lines_matching(|_| true);
    assert!(lines.len() >= 5, "{}", server.log());
    for line in &lines {
        let Some(object) = json(line) else {
            panic!("not a JSON object: {line:?}\n{}", server.log());
        };
        for key in ["timestamp", "level", "target", "message"] {
            assert!(object[key].is_string(), "no string {key} in {line}");
        }
        let timestamp = object["timestamp"].as_str().expect("checked above");
        assert!(
            timestamp.len() > 20 && timestamp.ends_with('Z') && timestamp.contains('T'),
            "RFC 3339 in UTC: {line}"
        );
    }
}

#[test]
fn no_colour_codes_into_a_pipe_even_without_no_color() {
    // The harness sets NO_COLOR=1 for every server; this one runs without it, its stderr a pipe.
    let server = Server::builder().env_remove("NO_COLOR").start();
    let echo = LocalService::echo();
    let (_client, forwarding) = Client::tcp_tunnel(&server, echo.port(), &[]);
    assert!(!forwarding.line.is_empty());

    let lines = server.log_lines_matching(|_| true);
    assert!(lines.len() >= 3, "{}", server.log());
    let coloured: Vec<&String> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    assert!(coloured.is_empty(), "ANSI escapes in the log: {coloured:?}");
}

#[test]
fn an_http_keep_alive_connection_is_one_access_line_with_its_requests() {
    let server = Server::start(&["--access-log"]);
    let service = HttpService::start("app");
    let mut client = Client::builder(&server)
        .forward(format!("app:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    let forwarding = client.wait_forwarding();
    let http = server.http_addr();
    let host = format!("{}:{}", forwarding.host, http.port());

    // Three requests on one connection: the tunnel twice, and between them a name with no
    // tunnel (404 from the server); the last one closes the connection.
    let requests = format!(
        "GET /one HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET / HTTP/1.1\r\nHost: nobody.localhost:{port}\r\n\r\n\
         GET /three HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        port = http.port()
    );
    let mut visitor = connect(http);
    let peer = visitor.local_addr().expect("connected");
    visitor
        .write_all(requests.as_bytes())
        .expect("send the requests");
    let mut received = Vec::new();
    visitor
        .read_to_end(&mut received)
        .expect("read until the server closes");
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "{text}");
    assert_eq!(text.matches("HTTP/1.1 404 ").count(), 1, "{text}");

    let line = server.wait_log_line(|l| is_text_access_line(l, peer), FAILURE_TIMEOUT);
    let field = |key| text_field(&line, key).unwrap_or_else(|| panic!("no {key}= in {line}"));
    assert!(line.contains(" INFO access: visitor connection "), "{line}");
    assert_eq!(field("listener"), "http", "{line}");
    assert_eq!(field("endpoint"), forwarding.host, "{line}");
    assert_eq!(field("requests"), "3", "{line}");
    assert_eq!(field("status_2xx"), "2", "{line}");
    assert_eq!(field("status_4xx"), "1", "{line}");
    assert_eq!(text_field(&line, "status_5xx"), None, "{line}");
    assert_eq!(field("bytes_in"), requests.len().to_string(), "{line}");
    assert_eq!(field("bytes_out"), received.len().to_string(), "{line}");
    assert_eq!(field("end"), "closed", "{line}");
    field("duration_ms")
        .parse::<u64>()
        .unwrap_or_else(|e| panic!("duration_ms: {e} in {line}"));

    // Another connection's line comes after it; the first connection still has only one.
    let second = get_with(http, &host, "/", &[]).unwrap_or_else(|e| client.fail(&e.to_string()));
    assert_eq!(second.status, 200);
    server.wait_log_line(
        |l| l.contains(" access: ") && !is_text_access_line(l, peer),
        FAILURE_TIMEOUT,
    );
    assert_eq!(
        server
            .log_lines_matching(|l| is_text_access_line(l, peer))
            .len(),
        1,
        "{}",
        server.log()
    );
}

#[test]
fn https_visitors_are_logged_as_https_when_terminated_and_tls_when_passed_through() {
    let server = Server::start(&["--access-log"]);
    let https = server.https_addr();
    let service = HttpService::start("web");
    let mut web = Client::builder(&server)
        .forward(format!("web:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    web.wait_forwarding();
    let cert = CertFiles::self_signed("passthrough-local", &["passthrough-local"]);
    let local_tls = OpensslServer::start(&cert);
    let mut pass = Client::builder(&server)
        .forward(format!("pass:443:localhost:{}", local_tls.port()))
        .command(["tls"])
        .spawn();
    pass.wait_forwarding();

    // Terminated here, over HTTP/2: one request on the connection.
    let out = curl("web.localhost", https.port(), "/", &["--http2"]);
    if curl_result(&out) != ("2".to_owned(), 200) {
        web.fail(&format!("curl --http2: expected 2 and 200\n{out}"));
    }
    let is_access = |l: &str, listener: &str| {
        l.contains(" access: ") && text_field(l, "listener") == Some(listener)
    };
    let line = server.wait_log_line(|l| is_access(l, "https"), FAILURE_TIMEOUT);
    let field = |key| text_field(&line, key).unwrap_or_else(|| panic!("no {key}= in {line}"));
    assert_eq!(field("endpoint"), "web.localhost", "{line}");
    assert_eq!(field("requests"), "1", "{line}");
    assert_eq!(field("status_2xx"), "1", "{line}");
    assert_eq!(field("end"), "closed", "{line}");
    // TLS records both ways, so more than the request and the page.
    assert!(
        field("bytes_in").parse::<u64>().expect("a number") > 100,
        "{line}"
    );
    assert!(
        field("bytes_out").parse::<u64>().expect("a number") > 500,
        "{line}"
    );

    // Passed through: the visitor's handshake reaches the local service's own certificate.
    let (subject, _) = presented_certificate(https, "pass.localhost")
        .unwrap_or_else(|out| pass.fail(&format!("no certificate\n{out}")));
    assert!(subject.contains("passthrough-local"), "{subject}");
    let line = server.wait_log_line(|l| is_access(l, "tls"), FAILURE_TIMEOUT);
    let field = |key| text_field(&line, key).unwrap_or_else(|| panic!("no {key}= in {line}"));
    assert_eq!(field("endpoint"), "pass.localhost", "{line}");
    assert_eq!(
        text_field(&line, "requests"),
        None,
        "no http fields: {line}"
    );
    assert!(
        field("bytes_in").parse::<u64>().expect("a number") > 100,
        "{line}"
    );
    assert!(
        field("bytes_out").parse::<u64>().expect("a number") > 500,
        "{line}"
    );
    assert_eq!(
        server.log_lines_matching(|l| l.contains(" access: ")).len(),
        2,
        "one line per connection\n{}",
        server.log()
    );
}
