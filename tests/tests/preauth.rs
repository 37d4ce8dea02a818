//! Before authentication: a client that says nothing, or stalls in the handshake, is cut at
//! `--auth-timeout` however far it got; and its slot comes back only with its socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tunnel_e2e::{Client, LocalService, Server, FAILURE_TIMEOUT};

/// Reads until the server closes the connection; how long that took, or `None` if it was
/// still open after `bound`.
fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < bound {
        stream
            .set_read_timeout(Some(
                bound
                    .saturating_sub(start.elapsed())
                    .max(Duration::from_millis(1)),
            ))
            .expect("set timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn silent_and_stalled_clients_are_cut_at_the_auth_timeout() {
    let server = Server::start(&["--auth-timeout", "2s", "--keepalive-interval", "0"]);
    // Says nothing at all.
    let mut silent = TcpStream::connect(server.ssh_connect_addr()).expect("connect");
    // Sends its banner, then stalls in the key exchange.
    let mut stalled = TcpStream::connect(server.ssh_connect_addr()).expect("connect");
    stalled.write_all(b"SSH-2.0-stalled\r\n").expect("banner");
    // Both closed by the server, long before the 75 s they got before the bound covered the
    // handshake (a wide bound: it only keeps a failing run from hanging).
    for (what, stream) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let closed = closed_within(stream, FAILURE_TIMEOUT);
        assert!(
            closed.is_some(),
            "{what} client still open after {FAILURE_TIMEOUT:?}\n{}",
            server.log()
        );
    }
    // And a real client is still served.
    let echo = LocalService::echo();
    let mut client = Client::builder(&server)
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();
    let port = client.wait_forwarding().public_port();
    client.assert_echo(port);
}

#[test]
fn one_address_cannot_hold_more_unauthenticated_connections_than_its_cap() {
    let server = Server::start(&[
        "--max-unauthenticated-per-ip",
        "4",
        "--auth-timeout",
        "30s",
        "--keepalive-interval",
        "0",
    ]);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(server.ssh_connect_addr()).expect("connect");
            // Read the server's banner: the connection is really being served.
            s.set_read_timeout(Some(FAILURE_TIMEOUT)).expect("timeout");
            let mut banner = [0u8; 4];
            s.read_exact(&mut banner).expect("banner");
            assert_eq!(&banner, b"SSH-");
            s
        })
        .collect();
    // The fifth from the same address is closed at once.
    let mut fifth = TcpStream::connect(server.ssh_connect_addr()).expect("connect");
    assert!(
        closed_within(&mut fifth, FAILURE_TIMEOUT).is_some(),
        "a fifth unauthenticated connection from one address was kept\n{}",
        server.log()
    );
    // One gives up: its slot is back once its socket is closed.
    held.pop();
    let mut again = None;
    for _ in 0..100 {
        let mut s = TcpStream::connect(server.ssh_connect_addr()).expect("connect");
        s.set_read_timeout(Some(FAILURE_TIMEOUT)).expect("timeout");
        let mut banner = [0u8; 4];
        if s.read_exact(&mut banner).is_ok() {
            again = Some(s);
            break;
        }
        // The server may not have seen the close yet: the refused socket tells us it has not.
    }
    assert!(
        again.is_some(),
        "the freed slot never came back\n{}",
        server.log()
    );
}
