//! Quiet HTTP visitors are closed (before their first request, between keep-alive requests),
//! an HTTP/2 preface is not spoken on the plain listener, and an upgraded stream may stay quiet.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tunnel_e2e::http_service::HttpService;
use tunnel_e2e::http_visitor::HttpConn;
use tunnel_e2e::{Client, Server, FAILURE_TIMEOUT};

/// Reads until the server closes; the bytes it sent, or `None` if it was still open at `bound`.
fn until_closed(stream: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < bound {
        let left = bound
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Some(seen),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(seen),
        }
    }
    None
}

struct Tunnel {
    server: Server,
    _service: HttpService,
    client: Client,
    host: String,
}

fn tunnel() -> Tunnel {
    let server = Server::start(&["--http-idle-timeout", "1s"]);
    let service = HttpService::start("quiet");
    let mut client = Client::builder(&server)
        .forward(format!("quiet:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    let forwarding = client.wait_forwarding();
    let host = format!("{}:{}", forwarding.host, server.http_addr().port());
    Tunnel {
        server,
        _service: service,
        client,
        host,
    }
}

#[test]
fn a_silent_connection_and_an_idle_keep_alive_one_are_closed() {
    let t = tunnel();
    let mut silent = TcpStream::connect(t.server.http_addr()).expect("connect");
    assert!(
        until_closed(&mut silent, FAILURE_TIMEOUT).is_some(),
        "a connection that never sent a byte stayed open\n{}",
        t.client
    );

    let mut kept = TcpStream::connect(t.server.http_addr()).expect("connect");
    write!(kept, "GET /one HTTP/1.1\r\nHost: {}\r\n\r\n", t.host).expect("send");
    let seen = until_closed(&mut kept, FAILURE_TIMEOUT).unwrap_or_else(|| {
        t.client
            .fail("an idle keep-alive connection stayed open after its response")
    });
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn the_plain_listener_does_not_speak_http2() {
    let t = tunnel();
    let mut h2c = TcpStream::connect(t.server.http_addr()).expect("connect");
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("preface");
    let seen = until_closed(&mut h2c, FAILURE_TIMEOUT)
        .unwrap_or_else(|| t.client.fail("an HTTP/2 preface kept the connection open"));
    // An HTTP/2 server would answer with a SETTINGS frame (type 4 at byte 3).
    assert!(
        seen.is_empty() || seen.starts_with(b"HTTP/1.1 "),
        "answered in HTTP/2: {seen:?}"
    );
}

#[test]
fn an_upgraded_stream_may_stay_quiet() {
    let t = tunnel();
    let mut conn = HttpConn::connect(t.server.http_addr()).expect("connect");
    let request = format!(
        "GET /socket HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        t.host
    );
    conn.send(request.as_bytes()).expect("send");
    let (status, _) = conn
        .read_head()
        .unwrap_or_else(|e| t.client.fail(&format!("no upgrade answer: {e}")));
    assert_eq!(status, 101);
    let mut greeting = [0; 9];
    conn.reader()
        .read_exact(&mut greeting)
        .expect("the greeting after 101");
    // Quiet for three idle timeouts: the point of the test, not a wait for anything.
    std::thread::sleep(Duration::from_secs(3));
    conn.send(b"still here").expect("send after the quiet");
    let mut echo = [0; 10];
    conn.reader()
        .read_exact(&mut echo)
        .unwrap_or_else(|e| t.client.fail(&format!("the quiet WebSocket was cut: {e}")));
    assert_eq!(&echo, b"still here");
}
