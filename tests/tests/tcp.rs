//! TCP tunnels: `ssh -R RPORT:localhost:LPORT host tcp`, and what a visitor sees.

use std::io::{Read, Write};
use std::net::Shutdown;

use tunnel_e2e::visitor::{self, Ending};
use tunnel_e2e::{
    refusing_port, sha256, test_bytes, Client, LocalService, Server, FAILURE_TIMEOUT,
};

#[test]
fn random_tcp_port_is_announced_and_echoes() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();

    let (client, forwarding) = Client::tcp_tunnel(&server, echo.port(), &[]);

    assert_eq!(forwarding.scheme, "tcp", "{forwarding:?}");
    assert_eq!(forwarding.host, "localhost", "{forwarding:?}");
    assert_eq!(
        (forwarding.bind.as_str(), forwarding.rport),
        ("localhost", 0)
    );
    let port = forwarding.public_port();
    assert!(
        server.tcp_ports().contains(port),
        "port {port} outside --tcp-ports {}",
        server.tcp_ports()
    );
    assert_eq!(
        forwarding.line,
        format!("Forwarding tcp://localhost:{port} -> localhost:0")
    );
    client.assert_echo(port);
    assert_eq!(echo.accepted(), 1);
}

#[test]
fn random_tcp_port_is_reported_to_openssh() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();
    let mut client = Client::builder(&server)
        .option("LogLevel", "INFO")
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();

    let port = client.wait_forwarding().public_port();

    // The tcpip-forward reply carries the allocated port (RFC 4254 section 7.1).
    let allocated = format!("Allocated port {port} for remote forward");
    client.wait_stderr_line(|line| line.starts_with(&allocated), FAILURE_TIMEOUT);
}

#[test]
fn fixed_tcp_port_inside_the_range() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();
    let wanted = server.tcp_ports().lo + 7;

    let mut client = Client::builder(&server)
        .forward(format!("{wanted}:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();
    let forwarding = client.wait_forwarding();

    assert_eq!(
        forwarding.line,
        format!("Forwarding tcp://localhost:{wanted} -> localhost:{wanted}")
    );
    client.assert_echo(wanted);
}

#[test]
fn several_forwards_share_one_connection() {
    let server = Server::start(&[]);
    let first = LocalService::echo_with_banner(b"first\n");
    let second = LocalService::echo_with_banner(b"second\n");

    let mut client = Client::builder(&server)
        .forward(format!("0:localhost:{}", first.port()))
        .forward(format!("0:localhost:{}", second.port()))
        .command(["tcp"])
        .spawn();
    let forwardings = client.wait_forwardings(2);

    let ports: Vec<u16> = forwardings.iter().map(|f| f.public_port()).collect();
    assert_ne!(ports[0], ports[1], "{forwardings:?}");
    // OpenSSH matches a forwarded-tcpip channel to its -R by the allocated port, so each public
    // port must lead to its own service; which line comes first is not part of the contract.
    let mut banners: Vec<String> = ports
        .iter()
        .map(|&port| {
            let mut stream = visitor::connect(port).expect("connect to a tunnel");
            let mut banner = Vec::new();
            while !banner.ends_with(b"\n") {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).expect("read the banner");
                banner.push(byte[0]);
            }
            let back = visitor::round_trip(&mut stream, b"hello").expect("echo");
            assert_eq!(back, b"hello");
            String::from_utf8_lossy(&banner).into_owned()
        })
        .collect();
    banners.sort();
    assert_eq!(banners, ["first\n", "second\n"]);
    assert_eq!((first.accepted(), second.accepted()), (1, 1));
}

#[test]
fn several_fixed_port_forwards_share_one_connection() {
    let server = Server::start(&[]);
    let first = LocalService::echo_with_banner(b"first\n");
    let second = LocalService::echo_with_banner(b"second\n");
    let (a, b) = (server.tcp_ports().lo + 1, server.tcp_ports().lo + 2);

    let mut client = Client::builder(&server)
        .forward(format!("{a}:localhost:{}", first.port()))
        .forward(format!("{b}:localhost:{}", second.port()))
        .command(["tcp"])
        .spawn();
    let mut ports: Vec<u16> = client
        .wait_forwardings(2)
        .iter()
        .map(|f| f.public_port())
        .collect();
    ports.sort_unstable();

    assert_eq!(ports, [a, b]);
    client.assert_echo_after(a, b"first\n");
    client.assert_echo_after(b, b"second\n");
}

#[test]
fn v2_user_is_accepted() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();

    let mut client = Client::builder(&server)
        .user("v2")
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();
    let forwarding = client.wait_forwarding();

    client.assert_echo(forwarding.public_port());
}

#[test]
fn no_command_with_session_means_tcp_for_other_ports() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();

    let mut client = Client::builder(&server)
        .forward(format!("0:localhost:{}", echo.port()))
        .spawn();
    let forwarding = client.wait_forwarding();

    assert_eq!(forwarding.scheme, "tcp", "{forwarding:?}");
    client.assert_echo(forwarding.public_port());
}

#[test]
fn dash_n_without_session_gives_a_tcp_tunnel() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();

    // No session channel, so no Forwarding line: OpenSSH's own line tells the port.
    let mut client = Client::builder(&server)
        .option("LogLevel", "INFO")
        .ssh_arg("-N")
        .forward(format!("0:localhost:{}", echo.port()))
        .spawn();
    let line = client.wait_stderr_line(|line| line.starts_with("Allocated port "), FAILURE_TIMEOUT);
    let port: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| client.fail(&format!("unreadable line {line:?}")));

    assert!(server.tcp_ports().contains(port), "{line}");
    client.assert_echo(port);
}

#[test]
fn tcp_port_is_free_again_after_the_client_disconnects() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();
    let port = server.tcp_ports().lo + 3;
    let spec = format!("{port}:localhost:{}", echo.port());

    let mut client = Client::builder(&server)
        .forward(spec.clone())
        .command(["tcp"])
        .spawn();
    assert_eq!(client.wait_forwarding().public_port(), port);
    client.assert_echo(port);

    client.disconnect();
    assert!(
        visitor::wait_until_refused(port, FAILURE_TIMEOUT),
        "port {port} still accepts connections after the ssh client went away\n{}",
        server.log()
    );

    let mut again = Client::builder(&server)
        .forward(spec)
        .command(["tcp"])
        .spawn();
    assert_eq!(again.wait_forwarding().public_port(), port);
    again.assert_echo(port);
}

#[test]
fn eight_mib_round_trip_is_intact() {
    const LEN: usize = 8 * 1024 * 1024;
    let server = Server::start(&[]);
    let echo = LocalService::echo();
    let (_client, forwarding) = Client::tcp_tunnel(&server, echo.port(), &[]);
    let data = test_bytes(LEN, 0x5eed);
    let expected = sha256(&data);

    let mut stream = visitor::connect(forwarding.public_port()).expect("connect to the tunnel");
    let mut writer = stream.try_clone().expect("clone the stream");
    // Writing and reading at once: the echo cannot buffer 8 MiB, so a single thread would stall.
    let sender = std::thread::spawn(move || {
        for chunk in data.chunks(64 * 1024) {
            writer.write_all(chunk)?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut received = Vec::with_capacity(LEN);
    let mut buf = vec![0; 64 * 1024];
    while received.len() < LEN {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read after {} bytes: {e}", received.len()));
        assert!(
            n > 0,
            "tunnel closed after {} of {LEN} bytes",
            received.len()
        );
        received.extend_from_slice(&buf[..n]);
    }
    sender
        .join()
        .expect("the sender thread does not panic")
        .expect("send 8 MiB");

    assert_eq!(received.len(), LEN);
    assert!(sha256(&received) == expected, "the 8 MiB came back changed");
}

#[test]
fn visitor_half_close_reaches_the_service_and_back() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();
    let (_client, forwarding) = Client::tcp_tunnel(&server, echo.port(), &[]);

    let mut stream = visitor::connect(forwarding.public_port()).expect("connect to the tunnel");
    stream.write_all(b"last words").expect("write");
    stream.shutdown(Shutdown::Write).expect("half-close");

    // The echo answers EOF with EOF, so the visitor sees the data and then an orderly close.
    assert_eq!(
        visitor::read_until_closed(&mut stream, FAILURE_TIMEOUT),
        Ending::Eof(b"last words".to_vec())
    );
}

#[test]
fn refused_local_service_closes_the_visitor_and_spares_other_channels() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();
    let refusing = refusing_port();
    // Fixed ports, so we know which endpoint is which.
    let (live, dead) = (server.tcp_ports().lo + 1, server.tcp_ports().lo + 2);
    let mut client = Client::builder(&server)
        .forward(format!("{live}:localhost:{}", echo.port()))
        .forward(format!("{dead}:localhost:{refusing}"))
        .command(["tcp"])
        .spawn();
    client.wait_forwardings(2);

    let mut streaming = visitor::connect(live).expect("connect to the live tunnel");
    let before = test_bytes(64 * 1024, 1);
    assert!(visitor::round_trip(&mut streaming, &before).expect("stream before") == before);

    let mut visitor_of_dead = visitor::connect(dead).expect("the public port still accepts");
    let ending = visitor::read_until_closed(&mut visitor_of_dead, FAILURE_TIMEOUT);
    assert!(
        ending.is_closed() && ending.received().is_empty(),
        "a visitor of a refusing local service must be closed without data, got {ending:?}\n{client}"
    );

    let after = test_bytes(64 * 1024, 2);
    let back = visitor::round_trip(&mut streaming, &after)
        .unwrap_or_else(|e| client.fail(&format!("the other channel broke: {e}")));
    assert!(back == after, "the other channel's data changed");
    assert!(client.is_running(), "the ssh connection dropped\n{client}");
    client.assert_echo(live);
}

#[test]
fn random_port_skips_ports_another_program_holds() {
    let server = Server::start(&[]);
    let range = server.tcp_ports();
    // The low end of the range, where a sequential allocator starts.
    let busy: Vec<u16> = (range.lo..range.lo + 3).collect();
    let _others: Vec<std::net::TcpListener> = busy
        .iter()
        .map(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).expect("occupy a port"))
        .collect();
    let echo = LocalService::echo();

    let mut client = Client::builder(&server)
        .option("LogLevel", "INFO")
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();
    let port = client.wait_forwarding().public_port();

    assert!(
        range.contains(port) && !busy.contains(&port),
        "got port {port}; busy were {busy:?}\n{client}"
    );
    client.assert_echo(port);
    // OpenSSH matches channels by the port in the tcpip-forward reply, so it must be this one.
    let allocated = format!("Allocated port {port} for remote forward");
    client.wait_stderr_line(|line| line.starts_with(&allocated), FAILURE_TIMEOUT);
}

#[test]
fn fixed_port_another_program_holds_is_refused() {
    let server = Server::start(&[]);
    let busy = server.tcp_ports().lo + 4;
    let _other = std::net::TcpListener::bind(("127.0.0.1", busy)).expect("occupy a port");
    let echo = LocalService::echo();

    let out = Client::builder(&server)
        .option("ExitOnForwardFailure", "no")
        .forward(format!("{busy}:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);

    tunnel_e2e::assert_one_error_line(&out, &busy.to_string());
}

#[test]
fn visitors_beyond_the_endpoint_limit_are_closed_until_one_leaves() {
    let server = Server::start(&["--max-visitors-per-endpoint", "1"]);
    let echo = LocalService::echo();
    let (client, forwarding) = Client::tcp_tunnel(&server, echo.port(), &[]);
    let port = forwarding.public_port();

    let mut first = visitor::connect(port).expect("first visitor connects");
    let back = visitor::round_trip(&mut first, b"first\n").expect("first visitor is served");
    assert_eq!(back, b"first\n");

    let mut second = visitor::connect(port).expect("the listener still accepts");
    let _ = second.write_all(b"second\n");
    let ending = visitor::read_until_closed(&mut second, FAILURE_TIMEOUT);
    assert!(
        ending.is_closed() && ending.received().is_empty(),
        "a visitor over the limit is closed without data: {ending:?}\n{client}"
    );
    assert_eq!(echo.accepted(), 1, "it never reached the local service");

    // The permit comes back once the first visitor's stream has ended (asynchronously: poll).
    first.shutdown(Shutdown::Both).expect("shutdown");
    drop(first);
    let deadline = std::time::Instant::now() + FAILURE_TIMEOUT;
    while let Err(e) = visitor::try_echo(port) {
        if std::time::Instant::now() > deadline {
            client.fail(&format!("no visitor served after the first left: {e}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(echo.accepted(), 2);
}

#[test]
fn one_source_gets_only_its_share_of_an_endpoint() {
    let server = Server::start(&["--max-visitors-per-source", "2"]);
    let echo = LocalService::echo();
    let (client, forwarding) = Client::tcp_tunnel(&server, echo.port(), &[]);
    let port = forwarding.public_port();
    let mut held: Vec<_> = (0..2)
        .map(|i| {
            let mut v = visitor::connect(port).expect("connects");
            let back = visitor::round_trip(&mut v, b"in\n")
                .unwrap_or_else(|e| client.fail(&format!("visitor {i} not served: {e}")));
            assert_eq!(back, b"in\n");
            v
        })
        .collect();
    // A third from the same address: its share is used up, though the endpoint has room.
    let mut third = visitor::connect(port).expect("the listener still accepts");
    let _ = third.write_all(b"third\n");
    let ending = visitor::read_until_closed(&mut third, FAILURE_TIMEOUT);
    assert!(
        ending.is_closed() && ending.received().is_empty(),
        "a visitor past its source's share is closed without data: {ending:?}\n{client}"
    );
    // One leaves: its source may come in again (the permit comes back asynchronously: poll).
    let first = held.remove(0);
    first.shutdown(Shutdown::Both).expect("shutdown");
    drop(first);
    let deadline = std::time::Instant::now() + FAILURE_TIMEOUT;
    while let Err(e) = visitor::try_echo(port) {
        if std::time::Instant::now() > deadline {
            client.fail(&format!("no visitor served after one left: {e}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
