//! The HTTPS listener: tls endpoints passed through untouched by SNI, http endpoints terminated
//! with the server's certificate (HTTP/1.1 and HTTP/2). Visitors are `openssl s_client`, `curl`
//! and raw sockets; the local TLS service is `openssl s_server`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Instant;

use tunnel_e2e::http_service::{hex, HttpService};
use tunnel_e2e::proxy_protocol::read_header;
use tunnel_e2e::tls_tools::{
    curl, curl_result, first_pem_certificate, presented_certificate, s_client, CertFiles,
    OpensslServer, ToolOutput, OPENSSL,
};
use tunnel_e2e::visitor::read_until_closed;
use tunnel_e2e::{Client, Forwarding, Key, LocalService, Server, FAILURE_TIMEOUT};

/// `ssh -R NAME:443:localhost:PORT 127.0.0.1 tls`, waiting for its Forwarding line.
fn tls_tunnel(server: &Server, name: &str, port: u16) -> (Client, Forwarding) {
    tls_tunnel_with(server, name, port, &[])
}

/// `ssh -R NAME:443:localhost:PORT 127.0.0.1 tls FLAGS...`, waiting for its Forwarding line.
fn tls_tunnel_with(server: &Server, name: &str, port: u16, flags: &[&str]) -> (Client, Forwarding) {
    let mut client = Client::builder(server)
        .forward(format!("{name}:443:localhost:{port}"))
        .command(["tls"])
        .command(flags.iter().copied())
        .spawn();
    let forwarding = client.wait_forwarding();
    (client, forwarding)
}

/// `ssh -R NAME:80:localhost:PORT 127.0.0.1 http`, waiting for its Forwarding line.
fn http_tunnel(server: &Server, name: &str, port: u16) -> (Client, Forwarding) {
    http_tunnel_as(server, server.key(), name, port)
}

/// [`http_tunnel`] with the given key.
fn http_tunnel_as(server: &Server, key: &Key, name: &str, port: u16) -> (Client, Forwarding) {
    let mut client = Client::builder(server)
        .key(key)
        .forward(format!("{name}:80:localhost:{port}"))
        .command(["http"])
        .spawn();
    let forwarding = client.wait_forwarding();
    (client, forwarding)
}

/// A local TLS service with its own certificate (`CN=passthrough-local`).
fn passthrough_service() -> (CertFiles, OpensslServer) {
    let cert = CertFiles::self_signed("passthrough-local", &["passthrough-local"]);
    let service = OpensslServer::start(&cert);
    (cert, service)
}

fn assert_presents(addr: SocketAddr, name: &str, cert: &CertFiles, client: &Client) {
    match presented_certificate(addr, name) {
        Ok((subject, fingerprint)) => {
            assert!(
                subject.contains("passthrough-local"),
                "SNI {name} must reach the local service's own certificate, got {subject:?}"
            );
            assert_eq!(fingerprint, cert.fingerprint(), "SNI {name}");
        }
        Err(out) => client.fail(&format!("no certificate for SNI {name}\n{out}")),
    }
}

fn assert_unrecognized_name(out: &ToolOutput) {
    assert!(
        first_pem_certificate(&out.stdout).is_none(),
        "no certificate may be presented\n{out}"
    );
    assert!(
        out.all().contains("unrecognized name"),
        "the handshake must fail with an unrecognized_name alert\n{out}"
    );
}

// ---- tls passthrough ------------------------------------------------------------------------

#[test]
fn tls_passthrough_presents_the_local_services_own_certificate() {
    let server = Server::start(&[]);
    let (cert, service) = passthrough_service();
    let (client, forwarding) = tls_tunnel(&server, "app", service.port());
    let https = server.https_addr();
    assert_eq!(
        forwarding.line,
        format!("Forwarding tls://app.localhost:{} -> app:443", https.port())
    );

    assert_presents(https, "app.localhost", &cert, &client);

    // The stream is the local service's: its -www status page comes back through the tunnel.
    let out = tunnel_e2e::tls_tools::run(
        OPENSSL,
        &[
            "s_client",
            "-connect",
            &https.to_string(),
            "-servername",
            "app.localhost",
            "-ign_eof",
            "-quiet",
        ],
        b"GET / HTTP/1.0\r\n\r\n",
        FAILURE_TIMEOUT,
    );
    assert!(
        out.stdout.starts_with("HTTP/1.0 200"),
        "s_server's page must come back through the tunnel\n{out}\n  s_server:\n{}",
        service.log()
    );
}

// ---- termination for http endpoints ---------------------------------------------------------

#[test]
fn https_terminates_for_http_endpoints_over_http1_and_http2() {
    let server = Server::start(&[]);
    let service = HttpService::start("web");
    let (client, _forwarding) = http_tunnel(&server, "web", service.port());
    let port = server.https_addr().port();
    let host = format!("web.localhost:{port}");

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = curl("web.localhost", port, "/secure", &[flag]);
        let (got_version, status) = curl_result(&out);
        if !out.success() || status != 200 || got_version != version {
            client.fail(&format!("curl {flag}: expected {version} and 200\n{out}"));
        }
        assert!(out.stdout.starts_with("service: web\n"), "{out}");
        let seen = service.last_request();
        assert_eq!(seen.target, "/secure", "{seen:?}");
        assert_eq!(
            seen.version, "HTTP/1.1",
            "the local side always speaks HTTP/1.1"
        );
        assert_eq!(
            seen.header("x-forwarded-proto"),
            Some("https"),
            "{flag}: {seen:?}"
        );
        assert_eq!(seen.header("host"), Some(host.as_str()), "{flag}: {seen:?}");
        assert_eq!(
            seen.header("x-forwarded-host"),
            Some(host.as_str()),
            "{flag}: {seen:?}"
        );
    }
}

#[test]
fn http2_post_with_a_body_reaches_the_local_service() {
    let server = Server::start(&[]);
    let service = HttpService::start("post");
    let (client, _forwarding) = http_tunnel(&server, "post", service.port());
    let port = server.https_addr().port();
    let body = tunnel_e2e::test_bytes(300_000, 9);
    let file = server.work_dir().join("body.bin");
    std::fs::write(&file, &body).expect("write the body");
    let data = format!("@{}", file.display());

    let out = curl(
        "post.localhost",
        port,
        "/h2/upload?x=1",
        &[
            "--http2",
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/octet-stream",
        ],
    );

    let (version, status) = curl_result(&out);
    if !out.success() || status != 200 || version != "2" {
        client.fail(&format!("HTTP/2 POST: expected 2 and 200\n{out}"));
    }
    let seen = service.last_request();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/h2/upload?x=1")
    );
    assert_eq!(seen.body_len, body.len() as u64, "{seen:?}");
    assert_eq!(hex(&seen.body_sha256), hex(&tunnel_e2e::sha256(&body)));
    assert!(
        out.stdout.contains(&format!(
            "body-sha256: {}\n",
            hex(&tunnel_e2e::sha256(&body))
        )),
        "{out}"
    );
}

#[test]
fn generated_certificate_is_for_the_domain_and_survives_a_restart() {
    let state = tempfile::Builder::new()
        .prefix("tunnel-e2e-state")
        .tempdir()
        .expect("a state dir");
    let service = HttpService::start("cert");
    // The same key after the restart: the name is kept for it across the restart.
    let key = Key::generate();

    let first = {
        let server = Server::builder().state_dir(state.path()).start();
        let (client, _f) = http_tunnel_as(&server, &key, "cert", service.port());
        let presented = presented_certificate(server.https_addr(), "cert.localhost")
            .unwrap_or_else(|out| client.fail(&format!("no certificate\n{out}")));
        let out = curl("cert.localhost", server.https_addr().port(), "/", &[]);
        assert_eq!(curl_result(&out).1, 200, "{out}");
        server.stop();
        presented
    };
    let (subject, fingerprint) = &first;
    assert!(
        subject.contains("CN = localhost") || subject.contains("CN=localhost"),
        "the generated certificate names the domain: {subject:?}"
    );

    let server = Server::builder().state_dir(state.path()).start();
    let (client, _f) = http_tunnel_as(&server, &key, "cert", service.port());
    let second = presented_certificate(server.https_addr(), "cert.localhost")
        .unwrap_or_else(|out| client.fail(&format!("no certificate after the restart\n{out}")));
    assert_eq!(
        &second.1, fingerprint,
        "the same state dir must give the same certificate after a restart"
    );
}

#[test]
fn given_tls_cert_and_key_are_presented() {
    let cert = CertFiles::self_signed("given-cert", &["localhost", "*.localhost"]);
    let server = Server::start(&[
        "--tls-cert",
        &cert.cert.display().to_string(),
        "--tls-key",
        &cert.key.display().to_string(),
    ]);
    let service = HttpService::start("given");
    let (client, _f) = http_tunnel(&server, "given", service.port());

    let (subject, fingerprint) = presented_certificate(server.https_addr(), "given.localhost")
        .unwrap_or_else(|out| client.fail(&format!("no certificate\n{out}")));

    assert!(subject.contains("given-cert"), "{subject:?}");
    assert_eq!(fingerprint, cert.fingerprint());
    let out = curl(
        "given.localhost",
        server.https_addr().port(),
        "/",
        &["--cacert", &cert.cert.display().to_string()],
    );
    assert_eq!(
        curl_result(&out).1,
        200,
        "verified against the given certificate\n{out}"
    );
}

#[test]
fn a_name_two_labels_below_the_domain_gets_a_certificate_that_covers_it() {
    let server = Server::start(&[]);
    let service = HttpService::start("deep");
    let name = "a.deep.localhost";
    let (client, _f) = http_tunnel(&server, name, service.port());
    let addr = server.https_addr();

    // *.localhost covers one label only: the name gets a certificate of its own.
    let out = s_client(addr, Some(name), &[]);
    let pem = first_pem_certificate(&out.stdout)
        .unwrap_or_else(|| client.fail(&format!("no certificate\n{out}")));
    let dir = tempfile::tempdir().expect("temp dir");
    let presented = dir.path().join("presented.pem");
    std::fs::write(&presented, &pem).expect("write");
    let presented = presented.display().to_string();
    let verified = s_client(
        addr,
        Some(name),
        &[
            "-CAfile",
            &presented,
            "-verify_hostname",
            name,
            "-verify_return_error",
        ],
    );
    assert!(
        verified.stdout.contains("Verify return code: 0 (ok)"),
        "the certificate presented for {name} must name it\n{verified}"
    );
    let out = curl(name, addr.port(), "/", &[]);
    assert_eq!(curl_result(&out).1, 200, "{out}");

    // A name one label below keeps the main certificate.
    let (_, main) = presented_certificate(addr, "other.localhost")
        .unwrap_or_else(|out| client.fail(&format!("no certificate\n{out}")));
    assert_ne!(
        main,
        tunnel_e2e::tls_tools::fingerprint_of_pem(pem.as_bytes())
    );
}

// ---- SNI refusals ---------------------------------------------------------------------------

#[test]
fn a_name_outside_the_domain_fails_with_unrecognized_name_while_a_tls_tunnel_keeps_working() {
    let server = Server::start(&[]);
    let (cert, service) = passthrough_service();
    let (client, _f) = tls_tunnel(&server, "app", service.port());
    let https = server.https_addr();

    assert_presents(https, "app.localhost", &cert, &client);
    let out = s_client(https, Some("app.example.com"), &[]);
    assert_unrecognized_name(&out);
    assert_presents(https, "app.localhost", &cert, &client);
}

#[test]
fn unknown_names_under_the_domain_get_a_404_and_the_domain_its_page_over_tls() {
    let server = Server::start(&[]);
    let port = server.https_addr().port();
    // The server's certificate covers them, so a browser shows a page, not a protocol error.
    let out = curl("nosuch.localhost", port, "/", &[]);
    assert_eq!(curl_result(&out).1, 404, "{out}");
    assert!(
        out.stdout.contains("no tunnel for nosuch.localhost"),
        "{out}"
    );
    let out = curl("localhost", port, "/", &[]);
    assert_eq!(curl_result(&out).1, 200, "{out}");
    assert!(
        out.stdout
            .contains(&format!("-p {} localhost http", server.ssh_port())),
        "the page says how to connect\n{out}"
    );
    assert!(out.stdout.contains("host key: SHA256:"), "{out}");
    // And the same page on the plain listener.
    let plain = tunnel_e2e::http::get(server.http_addr(), "localhost", "/").expect("GET /");
    assert_eq!(plain.status, 200, "{plain:?}");
}

#[test]
fn client_hello_without_sni_is_refused() {
    let server = Server::start(&[]);
    let (cert, service) = passthrough_service();
    let (client, _f) = tls_tunnel(&server, "app", service.port());
    let https = server.https_addr();

    let out = s_client(https, None, &[]);
    assert_unrecognized_name(&out);
    assert_presents(https, "app.localhost", &cert, &client);
}

// ---- a ClientHello in pieces ----------------------------------------------------------------

/// The bytes of the first TLS record `openssl s_client -servername NAME` sends: its ClientHello.
fn capture_client_hello(name: &str) -> Vec<u8> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("bound");
    let name = name.to_owned();
    let tool = std::thread::spawn(move || s_client(addr, Some(&name), &[]));
    let (mut stream, _) = listener.accept().expect("s_client connects");
    stream
        .set_read_timeout(Some(FAILURE_TIMEOUT))
        .expect("timeout");
    let mut header = [0; 5];
    stream.read_exact(&mut header).expect("a record header");
    assert_eq!(header[0], 22, "a handshake record comes first");
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let mut hello = header.to_vec();
    hello.resize(5 + len, 0);
    stream.read_exact(&mut hello[5..]).expect("the record");
    drop(stream);
    let _ = tool.join();
    hello
}

#[test]
fn client_hello_sent_one_byte_at_a_time_still_routes_to_a_passthrough_tunnel() {
    let server = Server::start(&[]);
    let hello = capture_client_hello("app.localhost");
    let (tx, rx) = mpsc::channel();
    let expected = hello.len();
    let service = LocalService::spawn(move |mut stream| {
        let mut got = vec![0; expected];
        let result = stream.read_exact(&mut got).map(|()| got);
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    let (client, _f) = tls_tunnel(&server, "app", service.port());

    let mut visitor = tunnel_e2e::visitor::connect(server.https_addr().port()).expect("connect");
    let started = Instant::now();
    for byte in &hello {
        visitor
            .write_all(std::slice::from_ref(byte))
            .expect("write a byte");
        visitor.flush().expect("flush");
    }

    let received = rx
        .recv_timeout(FAILURE_TIMEOUT)
        .unwrap_or_else(|_| client.fail("the local service received no connection"))
        .unwrap_or_else(|e| client.fail(&format!("the local service read: {e}")));
    assert!(
        received == hello,
        "the local service must get the exact ClientHello first ({} bytes, {:?} to send)",
        hello.len(),
        started.elapsed()
    );
}

// ---- traffic flags on tls endpoints ---------------------------------------------------------

#[test]
fn tls_cidr_deny_closes_before_opening_a_channel() {
    let server = Server::start(&[]);
    let hello = capture_client_hello("app.localhost");
    let service = LocalService::echo();
    let (client, _f) = tls_tunnel_with(
        &server,
        "app",
        service.port(),
        &["--cidr-deny", "127.0.0.1/32"],
    );

    let mut visitor = tunnel_e2e::visitor::connect(server.https_addr().port()).expect("connect");
    visitor.write_all(&hello).expect("send the ClientHello");
    let ending = read_until_closed(&mut visitor, FAILURE_TIMEOUT);

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
fn tls_proxy_proto_2_header_precedes_the_untouched_client_hello() {
    let server = Server::start(&[]);
    let hello = capture_client_hello("app.localhost");
    let (tx, rx) = mpsc::channel();
    let expected = hello.len();
    let service = LocalService::spawn(move |mut stream| {
        let result = read_header(&mut stream).and_then(|header| {
            let mut got = vec![0; expected];
            stream
                .read_exact(&mut got)
                .map(|()| (header, got))
                .map_err(|e| e.to_string())
        });
        let _ = tx.send(result);
    });
    let (client, _f) = tls_tunnel_with(&server, "app", service.port(), &["--proxy-proto", "2"]);
    let https = server.https_addr();

    let mut visitor = tunnel_e2e::visitor::connect(https.port()).expect("connect");
    let visitor_addr = visitor
        .local_addr()
        .expect("a connected socket has an address");
    visitor.write_all(&hello).expect("send the ClientHello");

    let (header, received) = rx
        .recv_timeout(FAILURE_TIMEOUT)
        .unwrap_or_else(|_| client.fail("the local service received no connection"))
        .unwrap_or_else(|e| client.fail(&format!("the local service read: {e}")));
    assert_eq!(header.version.to_string(), "2", "{header:?}");
    assert_eq!(header.source, visitor_addr, "{header:?}");
    assert_eq!(header.destination.port(), https.port(), "{header:?}");
    assert!(
        received == hello,
        "the ClientHello must follow the header unchanged"
    );
}
