//! One source holds at most `--max-visitor-connections-per-source` connections to the http and
//! https listeners together, whatever they are doing: one more is closed as soon as it is
//! accepted, without an answer, and a connection that closes gives its slot back. (Sources are
//! counted apart, an IPv6 /64 as one: the runtime's unit tests, `admission.rs`.)

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tunnel_e2e::tls_tools::presented_certificate;
use tunnel_e2e::visitor::read_until_closed;
use tunnel_e2e::{Server, FAILURE_TIMEOUT};

/// Sends a request for the server's own page and reads until the server closes: what it
/// answered (empty when it closed without a word), or `None` if it was still open at `bound`.
fn ask(addr: SocketAddr, bound: Duration) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    // The server may have closed already: then the write or the read fails, which is an answer.
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let ending = read_until_closed(&mut stream, bound);
    ending.is_closed().then(|| ending.received().to_vec())
}

#[test]
fn a_source_past_its_connections_is_closed_unanswered_and_a_closed_one_gives_its_slot_back() {
    let server = Server::start(&["--max-visitor-connections-per-source", "2"]);
    let http = server.http_addr();
    let answered = ask(http, FAILURE_TIMEOUT).expect("the server answers and closes");
    assert!(
        answered.starts_with(b"HTTP/1.1 200"),
        "the server's page, below the cap: {}\n{}",
        String::from_utf8_lossy(&answered),
        server.log()
    );

    // Two silent connections: the source's whole budget. The listener accepts in order, so
    // both are counted before the next connection is accepted, and that one is closed unanswered.
    let silent = TcpStream::connect(http).expect("connect");
    let _silent = TcpStream::connect(http).expect("connect");
    let refused = ask(http, FAILURE_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "a third connection stayed open (the idle timeout is 60 s)\n{}",
            server.log()
        )
    });
    assert!(
        refused.is_empty(),
        "a third connection was answered: {}",
        String::from_utf8_lossy(&refused)
    );
    // The https listener draws on the same budget: no handshake, so no certificate.
    let shown = presented_certificate(server.https_addr(), "localhost");
    assert!(
        shown.is_err(),
        "the https listener let a source past its connections in: {shown:?}"
    );

    // One closes; once the server has seen it go, a new connection is served again.
    drop(silent);
    let start = Instant::now();
    loop {
        let answer = ask(http, FAILURE_TIMEOUT).expect("the server answers or closes");
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            start.elapsed() < FAILURE_TIMEOUT,
            "the closed connection's slot never came back\n{}",
            server.log()
        );
    }
}
