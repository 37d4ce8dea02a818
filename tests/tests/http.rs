//! HTTP endpoints: `ssh -R NAME:80:localhost:LPORT host http [FLAGS]`, a hand-written HTTP/1.1
//! service behind it ([`HttpService`]), and visitors on the HTTP listener speaking raw bytes.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tunnel_e2e::http::{get, request_raw, HttpResponse};
use tunnel_e2e::http_service::{hex, HttpService, TestBytes};
use tunnel_e2e::http_visitor::{basic_authorization, get_with, hash_exact, vm_rss, HttpConn};
use tunnel_e2e::{refusing_port, Client, Forwarding, Key, Server, FAILURE_TIMEOUT};

/// `ssh -R NAME:80:localhost:PORT 127.0.0.1 http FLAGS...`, waiting for its Forwarding line.
fn http_tunnel(server: &Server, name: &str, port: u16, flags: &[&str]) -> (Client, Forwarding) {
    let mut client = Client::builder(server)
        .forward(format!("{name}:80:localhost:{port}"))
        .command(["http"])
        .command(flags.iter().copied())
        .spawn();
    let forwarding = client.wait_forwarding();
    (client, forwarding)
}

/// The Host a visitor sends for `forwarding`: its host and the HTTP listener's port.
fn host_of(server: &Server, forwarding: &Forwarding) -> String {
    format!("{}:{}", forwarding.host, server.http_addr().port())
}

/// A server with one http tunnel named `name` to a fresh [`HttpService`].
struct Setup {
    server: Server,
    service: HttpService,
    client: Client,
    host: String,
}

impl Setup {
    fn new(name: &str, flags: &[&str]) -> Setup {
        let server = Server::start(&[]);
        let service = HttpService::start(name);
        let (client, forwarding) = http_tunnel(&server, name, service.port(), flags);
        let host = host_of(&server, &forwarding);
        Setup {
            server,
            service,
            client,
            host,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.http_addr()
    }

    fn get(&self, path: &str, extra: &[&str]) -> HttpResponse {
        get_with(self.addr(), &self.host, path, extra).unwrap_or_else(|e| {
            self.client
                .fail(&format!("GET {path} via {}: {e}", self.host))
        })
    }

    fn raw(&self, request: &[u8]) -> HttpResponse {
        request_raw(self.addr(), request).unwrap_or_else(|e| {
            self.client.fail(&format!(
                "request {:?}: {e}",
                String::from_utf8_lossy(request)
            ))
        })
    }
}

fn body_text(response: &HttpResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// Checks a response came from the local service named `id`.
fn assert_from(response: &HttpResponse, id: &str, client: &Client) {
    if response.status != 200
        || response.header("x-service-id") != Some(id)
        || !body_text(response).starts_with(&format!("service: {id}\n"))
    {
        client.fail(&format!(
            "expected a 200 from local service {id}, got {response:?} ({:?})",
            body_text(response)
        ));
    }
}

// ---- Host routing -------------------------------------------------------------------------

#[test]
fn host_routes_to_the_right_tunnel_ignoring_case_and_port() {
    let server = Server::start(&[]);
    let alpha = HttpService::start("alpha");
    let beta = HttpService::start("beta");
    let (alpha_client, alpha_fwd) = http_tunnel(&server, "alpha", alpha.port(), &[]);
    let (beta_client, beta_fwd) = http_tunnel(&server, "beta", beta.port(), &[]);
    assert_eq!(alpha_fwd.scheme, "http", "{alpha_fwd:?}");
    assert_eq!(alpha_fwd.host, "alpha.localhost", "{alpha_fwd:?}");
    assert_eq!(
        alpha_fwd.port,
        Some(server.http_addr().port()),
        "{alpha_fwd:?}"
    );
    let addr = server.http_addr();
    let port = addr.port();

    for (host, id, client) in [
        (format!("alpha.localhost:{port}"), "alpha", &alpha_client),
        (format!("beta.localhost:{port}"), "beta", &beta_client),
        (format!("ALPHA.LocalHost:{port}"), "alpha", &alpha_client),
        ("Beta.LOCALHOST".to_owned(), "beta", &beta_client),
        ("alpha.localhost:1".to_owned(), "alpha", &alpha_client),
    ] {
        let response = get(addr, &host, "/routed")
            .unwrap_or_else(|e| client.fail(&format!("GET with Host {host}: {e}")));
        assert_from(&response, id, client);
        let seen = if id == "alpha" { &alpha } else { &beta };
        assert_eq!(
            seen.last_request().header("host"),
            Some(host.as_str()),
            "the Host header must reach the local service unchanged"
        );
    }
    assert_eq!(alpha.requests().len(), 3);
    assert_eq!(beta.requests().len(), 2);
    drop(beta_fwd);
}

#[test]
fn absolute_form_target_routes_by_its_authority() {
    let server = Server::start(&[]);
    let alpha = HttpService::start("alpha");
    let beta = HttpService::start("beta");
    let (alpha_client, alpha_fwd) = http_tunnel(&server, "alpha", alpha.port(), &[]);
    let (_beta_client, beta_fwd) = http_tunnel(&server, "beta", beta.port(), &[]);
    let alpha_host = host_of(&server, &alpha_fwd);
    let beta_host = host_of(&server, &beta_fwd);

    // RFC 9112 §3.2.2: with an absolute-form target, the target's authority wins over Host.
    let request = format!(
        "GET http://{alpha_host}/abs/path?x=1 HTTP/1.1\r\nHost: {beta_host}\r\nConnection: close\r\n\r\n"
    );
    let response = request_raw(server.http_addr(), request.as_bytes())
        .unwrap_or_else(|e| alpha_client.fail(&format!("absolute-form request: {e}")));

    assert_from(&response, "alpha", &alpha_client);
    let seen = alpha.last_request();
    assert_eq!(
        seen.target, "/abs/path?x=1",
        "the local service gets the origin form"
    );
    assert!(beta.requests().is_empty(), "beta got {:?}", beta.requests());
}

#[test]
fn request_without_host_is_400() {
    let setup = Setup::new("hostless", &[]);

    let response = setup.raw(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");

    assert_eq!(response.status, 400, "{response:?}\n{}", setup.client);
    assert!(setup.service.requests().is_empty());
}

#[test]
fn unknown_host_is_404_naming_the_host() {
    let setup = Setup::new("known", &[]);
    let host = format!("nosuchtunnel.localhost:{}", setup.addr().port());

    let response = get(setup.addr(), &host, "/").expect("the listener answers");

    assert_eq!(response.status, 404, "{response:?}");
    assert!(
        body_text(&response).contains("nosuchtunnel.localhost"),
        "the 404 body must name the host: {:?}",
        body_text(&response)
    );
    assert!(setup.service.requests().is_empty());
}

// ---- What the local side sees ---------------------------------------------------------------

#[test]
fn local_side_sees_forwarding_headers_and_no_hop_by_hop_ones() {
    let setup = Setup::new("headers", &[]);
    let request = format!(
        "GET /headers HTTP/1.1\r\n\
         Host: {host}\r\n\
         X-Forwarded-For: 203.0.113.7\r\n\
         Connection: keep-alive, X-Secret-Hop\r\n\
         X-Secret-Hop: drop me\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-End-To-End: keep me\r\n\
         \r\n",
        host = setup.host
    );
    let mut conn = HttpConn::connect(setup.addr()).expect("connect");
    conn.send(request.as_bytes()).expect("send");
    let response = conn.read_response().expect("a response");

    assert_from(&response, "headers", &setup.client);
    let seen = setup.service.last_request();
    assert_eq!(seen.header("host"), Some(setup.host.as_str()), "{seen:?}");
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        ["127.0.0.1"],
        "the visitor is the first hop: what it claims of earlier ones is replaced: {seen:?}"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"), "{seen:?}");
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(setup.host.as_str()),
        "{seen:?}"
    );
    assert_eq!(seen.header("x-end-to-end"), Some("keep me"), "{seen:?}");
    for hop in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "te",
        "proxy-connection",
    ] {
        assert_eq!(
            seen.header(hop),
            None,
            "hop-by-hop field {hop} must not reach the local service: {seen:?}"
        );
    }
}

// ---- Keep-alive, chunked, 100-continue ------------------------------------------------------

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let setup = Setup::new("keepalive", &[]);
    let mut conn = HttpConn::connect(setup.addr()).expect("connect");

    for (i, path) in ["/one", "/chunked/two", "/three", "/chunked/four"]
        .iter()
        .enumerate()
    {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", setup.host);
        conn.send(request.as_bytes())
            .unwrap_or_else(|e| setup.client.fail(&format!("request {i} ({path}): {e}")));
        let response = conn
            .read_response()
            .unwrap_or_else(|e| setup.client.fail(&format!("response {i} ({path}): {e}")));
        assert_from(&response, "keepalive", &setup.client);
        assert!(
            body_text(&response).contains(&format!("request: GET {path} HTTP/1.1\n")),
            "{:?}",
            body_text(&response)
        );
        if path.starts_with("/chunked") {
            // The local service answered chunked; the visitor gets the same bytes back.
            assert!(body_text(&response)
                .ends_with(&format!("body-sha256: {}\n", hex(&tunnel_e2e::sha256(b"")))));
        }
    }

    let targets: Vec<String> = setup
        .service
        .requests()
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(targets, ["/one", "/chunked/two", "/three", "/chunked/four"]);
    assert_eq!(
        setup.service.connections(),
        1,
        "one visitor connection uses one channel to the local service"
    );
}

#[test]
fn chunked_request_body_reaches_the_local_service() {
    let setup = Setup::new("chunkedup", &[]);
    let parts: [&[u8]; 3] = [b"hello, ", b"chunked ", b"world"];
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        setup.host
    )
    .into_bytes();
    for part in parts {
        request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        request.extend_from_slice(part);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");

    let response = setup.raw(&request);

    assert_from(&response, "chunkedup", &setup.client);
    let seen = setup.service.last_request();
    let whole = parts.concat();
    assert_eq!(seen.body_len, whole.len() as u64, "{seen:?}");
    assert_eq!(seen.body_sha256, tunnel_e2e::sha256(&whole), "{seen:?}");
}

#[test]
fn expect_100_continue_upload_works() {
    let setup = Setup::new("expect", &[]);
    let body = tunnel_e2e::test_bytes(100_000, 5);
    let head = format!(
        "PUT /file HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        setup.host,
        body.len()
    );
    let mut conn = HttpConn::connect(setup.addr()).expect("connect");
    conn.send(head.as_bytes()).expect("send the head");

    // The body goes only after the interim answer, as curl would do it (without its 1 s guess).
    let interim = conn
        .read_response()
        .unwrap_or_else(|e| setup.client.fail(&format!("no 100 Continue: {e}")));
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.send(&body).expect("send the body");
    let response = conn
        .read_response()
        .unwrap_or_else(|e| setup.client.fail(&format!("no final response: {e}")));

    assert_from(&response, "expect", &setup.client);
    let seen = setup.service.last_request();
    assert_eq!(seen.body_len, body.len() as u64);
    assert_eq!(seen.body_sha256, tunnel_e2e::sha256(&body));
}

// ---- Large bodies stream --------------------------------------------------------------------

const LARGE: u64 = 64 * 1024 * 1024;
/// How much the server's resident memory may grow while 64 MiB pass through it.
const RSS_ALLOWANCE: u64 = 24 * 1024 * 1024;

#[test]
fn large_upload_and_download_stream_without_buffering() {
    let setup = Setup::new("large", &[]);
    let pid = setup.server.pid();
    // Warm up: the first request allocates the connection's buffers.
    assert_from(&setup.get("/warm", &[]), "large", &setup.client);
    let baseline = vm_rss(pid);
    let mut peak = baseline;
    let mut sample = {
        let mut n = 0u32;
        move |peak: &mut u64| {
            n += 1;
            if n % 16 == 0 {
                *peak = (*peak).max(vm_rss(pid));
            }
        }
    };

    // Upload: 64 MiB with a Content-Length, written in 64 KiB pieces.
    let started = Instant::now();
    let mut conn = HttpConn::connect(setup.addr()).expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {LARGE}\r\n\r\n",
        setup.host
    );
    conn.send(head.as_bytes()).expect("send the head");
    let mut bytes = TestBytes::new(1);
    let mut buf = vec![0; 64 * 1024];
    let mut left = LARGE;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        bytes.fill(&mut buf[..n]);
        conn.send(&buf[..n]).unwrap_or_else(|e| {
            setup
                .client
                .fail(&format!("upload failed with {left} bytes left: {e}"))
        });
        left -= n as u64;
        sample(&mut peak);
    }
    let response = conn.read_response().unwrap_or_else(|e| {
        setup
            .client
            .fail(&format!("no response to the upload: {e}"))
    });
    assert_from(&response, "large", &setup.client);
    let seen = setup.service.last_request();
    assert_eq!(seen.body_len, LARGE);
    assert_eq!(
        hex(&seen.body_sha256),
        hex(&TestBytes::sha256(1, LARGE)),
        "the uploaded body arrived changed"
    );
    let upload_time = started.elapsed();

    // Download: the local service streams 64 MiB; the visitor hashes as it reads.
    let started = Instant::now();
    let request = format!(
        "GET /download/{LARGE} HTTP/1.1\r\nHost: {}\r\n\r\n",
        setup.host
    );
    conn.send(request.as_bytes())
        .expect("send the download request");
    let (status, headers) = conn
        .read_head()
        .unwrap_or_else(|e| setup.client.fail(&format!("no download head: {e}")));
    assert_eq!(status, 200, "{headers:?}");
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.clone());
    assert_eq!(
        length.as_deref(),
        Some(LARGE.to_string().as_str()),
        "the local service's Content-Length passes through: {headers:?}"
    );
    let digest = hash_exact(conn.reader(), LARGE, || sample(&mut peak))
        .unwrap_or_else(|e| setup.client.fail(&format!("download broke off: {e}")));
    assert_eq!(
        hex(&digest),
        hex(&TestBytes::sha256(LARGE, LARGE)),
        "the downloaded body arrived changed"
    );
    let download_time = started.elapsed();

    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "64 MiB upload {upload_time:?}, download {download_time:?}; server RSS {} KiB before, peak {} KiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        growth <= RSS_ALLOWANCE,
        "the server's RSS grew by {} KiB (from {} KiB to {} KiB) while 64 MiB passed: bodies must stream",
        growth / 1024,
        baseline / 1024,
        peak / 1024
    );
}

// ---- Upgrade --------------------------------------------------------------------------------

#[test]
fn upgrade_switches_protocols_and_pipes_raw_bytes_both_ways() {
    let setup = Setup::new("ws", &[]);
    let mut conn = HttpConn::connect(setup.addr()).expect("connect");
    let request = format!(
        "GET /socket HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        setup.host
    );
    conn.send(request.as_bytes()).expect("send");

    let (status, headers) = conn
        .read_head()
        .unwrap_or_else(|e| setup.client.fail(&format!("no upgrade answer: {e}")));
    assert_eq!(status, 101, "{headers:?}\n{}", setup.client);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    assert_eq!(
        header("upgrade").as_deref(),
        Some("websocket"),
        "{headers:?}"
    );
    assert_eq!(
        header("connection").as_deref(),
        Some("upgrade"),
        "{headers:?}"
    );
    let seen = setup.service.last_request();
    assert_eq!(seen.header("upgrade"), Some("websocket"), "{seen:?}");

    // The local side speaks first, then echoes whatever the visitor sends.
    let mut greeting = [0; 9];
    std::io::Read::read_exact(conn.reader(), &mut greeting).expect("the greeting after 101");
    assert_eq!(&greeting, b"upgraded\n");
    for round in 0..3 {
        let payload = tunnel_e2e::test_bytes(10_000 + round * 7_001, round as u64);
        conn.send(&payload).expect("send raw bytes");
        let mut back = vec![0; payload.len()];
        std::io::Read::read_exact(conn.reader(), &mut back)
            .unwrap_or_else(|e| setup.client.fail(&format!("echo round {round}: {e}")));
        assert!(
            back == payload,
            "round {round}: raw bytes changed on the way"
        );
    }
    // A half-close passes through: the echo service closes in turn.
    conn.stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let (closed, rest) = conn.read_until_closed(FAILURE_TIMEOUT);
    assert!(closed && rest.is_empty(), "closed={closed}, rest={rest:?}");
}

// ---- Failures of the tunnel -----------------------------------------------------------------

#[test]
fn refusing_local_service_is_502() {
    let server = Server::start(&[]);
    let (client, forwarding) = http_tunnel(&server, "refused", refusing_port(), &[]);
    let host = host_of(&server, &forwarding);

    let response =
        get(server.http_addr(), &host, "/").unwrap_or_else(|e| client.fail(&format!("GET: {e}")));

    assert_eq!(response.status, 502, "{response:?}\n{client}");
}

#[test]
fn disconnected_tunnel_answers_404_at_once() {
    let mut setup = Setup::new("leaving", &[]);
    assert_from(&setup.get("/", &[]), "leaving", &setup.client);

    setup.client.disconnect();
    let gone = Instant::now();

    // The server notices the closed SSH connection within moments; the bound is deliberately
    // tight: endpoints must go "at once", not after a keepalive timeout.
    let mut statuses = Vec::new();
    loop {
        let status = get(setup.addr(), &setup.host, "/").map(|r| r.status);
        statuses.push(format!("{status:?}"));
        if matches!(status, Ok(404)) {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(2),
            "still no 404 {:?} after the ssh client went: {statuses:?}\n{}",
            gone.elapsed(),
            setup.server.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("404 after {:?}: {statuses:?}", gone.elapsed());
}

// ---- Basic auth, CIDR ------------------------------------------------------------------------

#[test]
fn basic_auth_requires_one_of_the_credentials() {
    let setup = Setup::new(
        "private",
        &["--basic-auth", "user:pass", "--basic-auth=other:s3cret"],
    );

    let check = |extra: &[&str], want: u16| {
        let response = setup.get("/secret", extra);
        if response.status != want {
            setup.client.fail(&format!(
                "with {extra:?}: expected {want}, got {response:?}"
            ));
        }
        if want == 401 {
            let challenge = response.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.to_ascii_lowercase().starts_with("basic"),
                "a 401 must challenge with WWW-Authenticate: Basic, got {response:?}"
            );
        }
    };
    let auth =
        |user: &str, pass: &str| format!("Authorization: {}", basic_authorization(user, pass));

    check(&[], 401);
    check(&[&auth("user", "wrong")], 401);
    check(&[&auth("nobody", "pass")], 401);
    check(&[&auth("user", "s3cret")], 401);
    check(&["Authorization: Bearer user:pass"], 401);
    assert!(
        setup.service.requests().is_empty(),
        "unauthenticated requests must not reach the local service"
    );
    check(&[&auth("user", "pass")], 200);
    check(&[&auth("other", "s3cret")], 200);
    assert_eq!(setup.service.requests().len(), 2);
}

fn cidr_case(flags: &[&str], want: u16) {
    let setup = Setup::new("cidr", flags);
    let response = setup.get("/", &[]);
    if response.status != want {
        setup.client.fail(&format!(
            "with {flags:?}: expected {want}, got {response:?}"
        ));
    }
    let reached = setup.service.requests().len();
    assert_eq!(reached, usize::from(want == 200), "with {flags:?}");
}

#[test]
fn cidr_deny_of_the_visitor_is_403() {
    cidr_case(&["--cidr-deny", "127.0.0.1/32"], 403);
}

#[test]
fn cidr_allow_of_another_network_is_403() {
    cidr_case(&["--cidr-allow", "10.0.0.0/8"], 403);
}

#[test]
fn cidr_allow_of_the_visitor_passes() {
    cidr_case(&["--cidr-allow=127.0.0.0/8"], 200);
}

// ---- Header flags ---------------------------------------------------------------------------

#[test]
fn host_header_rewrite_sends_localhost() {
    let setup = Setup::new("rewrite", &["--host-header", "rewrite"]);
    assert_from(&setup.get("/", &[]), "rewrite", &setup.client);
    let seen = setup.service.last_request();
    assert_eq!(seen.header_all("host"), ["localhost"], "{seen:?}");
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(setup.host.as_str()),
        "{seen:?}"
    );
}

#[test]
fn host_header_literal_is_sent() {
    let setup = Setup::new("literal", &["--host-header=example.test:3000"]);
    assert_from(&setup.get("/", &[]), "literal", &setup.client);
    let seen = setup.service.last_request();
    assert_eq!(seen.header_all("host"), ["example.test:3000"], "{seen:?}");
}

#[test]
fn request_and_response_header_edits_apply() {
    let setup = Setup::new(
        "edits",
        &[
            "--request-header-add",
            "'X-A: 1'",
            "--request-header-remove",
            "Cookie",
            "--response-header-add",
            "'X-B: 2'",
            "--response-header-remove",
            "Server",
        ],
    );
    let response = setup.get("/", &["Cookie: session=secret", "X-Kept: yes"]);

    assert_from(&response, "edits", &setup.client);
    assert_eq!(response.header("x-b"), Some("2"), "{response:?}");
    assert_eq!(response.header("server"), None, "{response:?}");
    let seen = setup.service.last_request();
    assert_eq!(seen.header_all("x-a"), ["1"], "{seen:?}");
    assert_eq!(seen.header("cookie"), None, "{seen:?}");
    assert_eq!(seen.header("x-kept"), Some("yes"), "{seen:?}");

    // Without the flags the local service's Server header passes.
    let plain = Setup::new("plain", &[]);
    let response = plain.get("/", &[]);
    assert_eq!(
        response.header("server"),
        Some("tunnel-e2e-local"),
        "{response:?}"
    );
}

// ---- Inspect --------------------------------------------------------------------------------

fn is_inspect_line(line: &str, method: &str, path: &str, status: u16) -> bool {
    let Some(rest) = line.strip_prefix(&format!("HTTP {method} {path} -> {status} (")) else {
        return false;
    };
    rest.strip_suffix(" ms)")
        .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn inspect_prints_one_line_per_request_after_the_forwarding_line() {
    let mut setup = Setup::new("inspected", &[]);

    assert_from(
        &setup.get("/inspected/page", &[]),
        "inspected",
        &setup.client,
    );
    let request = format!(
        "POST /form HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        setup.host
    );
    assert_from(&setup.raw(request.as_bytes()), "inspected", &setup.client);

    // wait_stdout_line consumes in order: both come after the Forwarding line, in request order.
    setup.client.wait_stdout_line(
        |l| is_inspect_line(l, "GET", "/inspected/page", 200),
        FAILURE_TIMEOUT,
    );
    setup.client.wait_stdout_line(
        |l| is_inspect_line(l, "POST", "/form", 200),
        FAILURE_TIMEOUT,
    );
    let lines = setup.client.stdout_lines();
    assert!(
        lines[0].starts_with("Forwarding "),
        "the Forwarding line comes first: {lines:?}"
    );
}

#[test]
fn inspect_lines_of_a_burst_arrive_whole_and_once_each() {
    // Lines queued behind each other leave in one packet: none may be lost, split or merged.
    let mut setup = Setup::new("burst", &[]);
    let (threads, per_thread) = (8, 25);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (addr, host, client) = (setup.server.http_addr(), &setup.host, &setup.client);
            scope.spawn(move || {
                for i in 0..per_thread {
                    let response = get(addr, host, &format!("/burst/{t}/{i}")).expect("GET");
                    assert_from(&response, "burst", client);
                }
            });
        }
    });
    let expected = threads * per_thread;
    for _ in 0..expected {
        setup
            .client
            .wait_stdout_line(|l| l.starts_with("HTTP GET /burst/"), FAILURE_TIMEOUT);
    }
    let lines = setup.client.stdout_lines();
    assert_eq!(
        lines.len(),
        expected + 1,
        "Forwarding + one per request: {lines:?}"
    );
    assert!(lines[0].starts_with("Forwarding "), "{lines:?}");
    let mut paths: Vec<String> = lines[1..]
        .iter()
        .map(|line| {
            let path = line
                .strip_prefix("HTTP GET ")
                .and_then(|rest| rest.split_once(' '))
                .map(|(path, _)| path.to_owned())
                .unwrap_or_else(|| panic!("not an inspect line: {line:?}"));
            assert!(is_inspect_line(line, "GET", &path, 200), "{line:?}");
            path
        })
        .collect();
    paths.sort();
    let mut wanted: Vec<String> = (0..threads)
        .flat_map(|t| (0..per_thread).map(move |i| format!("/burst/{t}/{i}")))
        .collect();
    wanted.sort();
    assert_eq!(paths, wanted);
}

#[test]
fn inspect_false_prints_nothing_per_request() {
    let server = Server::start(&[]);
    let quiet = HttpService::start("quiet");
    let loud = HttpService::start("loud");
    let (mut quiet_client, quiet_fwd) =
        http_tunnel(&server, "quiet", quiet.port(), &["--inspect=false"]);
    let (mut loud_client, loud_fwd) = http_tunnel(&server, "loud", loud.port(), &["--inspect"]);

    let quiet_host = host_of(&server, &quiet_fwd);
    for path in ["/a", "/b", "/c"] {
        let response = get(server.http_addr(), &quiet_host, path).expect("GET");
        assert_from(&response, "quiet", &quiet_client);
    }
    // A later request on an inspecting tunnel: once its line is out, any line for the quiet
    // tunnel's earlier requests would have been written too.
    let response = get(server.http_addr(), &host_of(&server, &loud_fwd), "/after").expect("GET");
    assert_from(&response, "loud", &loud_client);
    loud_client.wait_stdout_line(
        |l| is_inspect_line(l, "GET", "/after", 200),
        FAILURE_TIMEOUT,
    );
    // Ending the server ends the session; ssh exits after writing all it received.
    server.stop();
    let out = quiet_client.wait_exit(FAILURE_TIMEOUT);

    let http_lines: Vec<&String> = out
        .stdout
        .iter()
        .filter(|l| l.starts_with("HTTP "))
        .collect();
    assert!(
        http_lines.is_empty(),
        "--inspect=false must print no request lines, got {http_lines:?}\n{out}"
    );
    assert!(
        out.stdout.iter().any(|l| l.starts_with("Forwarding ")),
        "{out}"
    );
}

// ---- Many tunnels ---------------------------------------------------------------------------

#[test]
fn fifty_tunnels_from_fifty_ssh_processes_do_not_cross_talk() {
    const TUNNELS: usize = 50;
    const ROUNDS: usize = 4;
    const WORKERS: usize = 8;
    let server = Server::start(&[]);
    let keys: Vec<Key> = (0..5).map(|_| Key::generate()).collect();
    let services: Vec<HttpService> = (0..TUNNELS)
        .map(|i| HttpService::start(&format!("t{i:02}")))
        .collect();
    let mut clients: Vec<Client> = services
        .iter()
        .enumerate()
        .map(|(i, service)| {
            Client::builder(&server)
                .key(&keys[i % keys.len()])
                .forward(format!("{}:80:localhost:{}", service.id(), service.port()))
                .command(["http"])
                .spawn()
        })
        .collect();
    let hosts: Vec<String> = clients
        .iter_mut()
        .map(|client| host_of(&server, &client.wait_forwarding()))
        .collect();
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(host.split('.').next(), Some(format!("t{i:02}").as_str()));
    }

    let addr = server.http_addr();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| loop {
                let job = next.fetch_add(1, Ordering::SeqCst);
                if job >= TUNNELS * ROUNDS {
                    return;
                }
                // Interleave: consecutive jobs go to different tunnels.
                let tunnel = job % TUNNELS;
                let id = format!("t{tunnel:02}");
                let path = format!("/job/{job}");
                match get(addr, &hosts[tunnel], &path) {
                    Ok(r)
                        if r.status == 200
                            && r.header("x-service-id") == Some(id.as_str())
                            && body_text(&r).starts_with(&format!("service: {id}\n"))
                            && body_text(&r).contains(&format!("request: GET {path} ")) => {}
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {path}: {other:?}", hosts[tunnel])),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed or crossed tunnels:\n{}\n  server log:\n{}",
        failures.len(),
        TUNNELS * ROUNDS,
        failures.join("\n"),
        server.log()
    );
    for (i, service) in services.iter().enumerate() {
        let requests = service.requests();
        assert_eq!(requests.len(), ROUNDS, "service t{i:02}");
        for request in requests {
            let job: usize = request.target["/job/".len()..].parse().expect("a job path");
            assert_eq!(job % TUNNELS, i, "service t{i:02} got {request:?}");
            assert_eq!(request.header("host"), Some(hosts[i].as_str()));
        }
    }
}

// ---- Hostile input --------------------------------------------------------------------------

/// Sends `request` (a POST to `/first` that hides a GET to `/smuggled`) on one connection and
/// checks the smuggled request never reaches the local service, the first one reached it with
/// one framing only, at most one response came back, and the connection was closed.
fn assert_not_smuggled(setup: &Setup, request: &str) {
    let mut conn = HttpConn::connect(setup.addr()).expect("connect");
    conn.send(request.as_bytes()).expect("send");

    let (closed, received) = conn.read_until_closed(FAILURE_TIMEOUT);
    let text = String::from_utf8_lossy(&received).into_owned();
    let requests = setup.service.requests();
    let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
    assert!(
        !targets.contains(&"/smuggled"),
        "the smuggled request reached the local service: {targets:?}\n  visitor got: {text:?}"
    );
    assert!(
        targets.len() <= 1,
        "at most the first request may pass: {targets:?}"
    );
    for request in &requests {
        assert!(
            request.header("content-length").is_none()
                || request.header("transfer-encoding").is_none(),
            "the local side must get one framing, not both: {request:?}"
        );
    }
    assert!(
        closed,
        "the connection must be closed after such a request; got so far: {text:?}"
    );
    assert!(
        text.matches("HTTP/1.1 ").count() <= 1,
        "only one response may come back: {text:?}"
    );
}

#[test]
fn smuggled_request_behind_content_length_and_chunked_never_reaches_the_local_service() {
    let setup = Setup::new("smuggle", &[]);
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {}\r\n\r\n", setup.host);
    // CL.TE: a hop that trusted Content-Length would take the smuggled request as body; one
    // that trusts chunked ends the body at `0` and sees a second request.
    let body = format!("0\r\n\r\n{smuggled}");
    let request = format!(
        "POST /first HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        setup.host,
        body.len()
    );
    assert_not_smuggled(&setup, &request);
}

#[test]
fn smuggled_request_inside_a_chunk_with_a_short_content_length_never_reaches_the_local_service() {
    let setup = Setup::new("smuggle2", &[]);
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {}\r\n\r\n", setup.host);
    // TE.CL: the smuggled request is chunk data; a hop that trusted `Content-Length: 4` would
    // end the body after the chunk size line and see a second request.
    let request = format!(
        "POST /first HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        setup.host,
        smuggled.len()
    );
    assert_not_smuggled(&setup, &request);
}

#[test]
fn differing_duplicate_content_length_is_400() {
    let setup = Setup::new("dupcl", &[]);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!",
        setup.host
    );
    let response = setup.raw(request.as_bytes());
    assert_eq!(response.status, 400, "{response:?}");
    assert!(setup.service.requests().is_empty());
}

#[test]
fn garbage_request_line_is_400() {
    let setup = Setup::new("garbage", &[]);
    let response = setup.raw(b"\x01\x02 this is not http\r\nHost: garbage.localhost\r\n\r\n");
    assert_eq!(response.status, 400, "{response:?}");
    assert!(setup.service.requests().is_empty());
}

#[test]
fn slowloris_is_closed_within_the_header_timeout_while_others_are_served() {
    let server = Server::start(&[]);
    let slow = HttpService::start("slow");
    let busy = HttpService::start("busy");
    let (slow_client, slow_fwd) = http_tunnel(&server, "slow", slow.port(), &[]);
    let (busy_client, busy_fwd) = http_tunnel(&server, "busy", busy.port(), &[]);
    let addr = server.http_addr();
    let busy_host = host_of(&server, &busy_fwd);

    let mut conn = HttpConn::connect(addr).expect("connect");
    let partial = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        host_of(&server, &slow_fwd)
    );
    conn.send(partial.as_bytes()).expect("send a partial head");
    let opened = Instant::now();

    let done = AtomicBool::new(false);
    let (closed, received, served, errors) = std::thread::scope(|scope| {
        let others = scope.spawn(|| {
            let (mut served, mut errors) = (0, Vec::new());
            while !done.load(Ordering::SeqCst) {
                match get(addr, &busy_host, "/meanwhile") {
                    Ok(r) if r.status == 200 => served += 1,
                    other => errors.push(format!("{other:?}")),
                }
                // Paces the other visitor; nothing waits on it.
                std::thread::sleep(Duration::from_millis(100));
            }
            (served, errors)
        });
        // 20 s header timeout; 40 s bounds the failure.
        let (closed, received) = conn.read_until_closed(Duration::from_secs(40));
        done.store(true, Ordering::SeqCst);
        let (served, errors) = others.join().expect("the other visitor");
        (closed, received, served, errors)
    });
    let waited = opened.elapsed();
    eprintln!("slowloris closed={closed} after {waited:?}; other tunnel served {served}");

    assert!(
        closed,
        "a visitor that never finishes its head must be closed (waited {waited:?})\n{slow_client}"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 400"),
        "unexpected answer to a slow head: {text:?}"
    );
    assert!(slow.requests().is_empty());
    assert!(
        errors.is_empty() && served > 0,
        "the other tunnel must keep serving meanwhile: served {served}, errors {errors:?}\n{busy_client}"
    );
    let _ = conn.stream().flush();
}

#[test]
fn requests_beyond_the_endpoint_visitor_limit_get_503_until_one_ends() {
    let server = Server::start(&["--max-visitors-per-endpoint", "1"]);
    // The first request is held until the test releases it; later ones are answered at once.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (arrive, arrived) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(Some((released, arrive)));
    let service = tunnel_e2e::LocalService::spawn(move |mut stream| {
        let _ = stream.set_read_timeout(Some(FAILURE_TIMEOUT));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match std::io::Read::read(&mut stream, &mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let wait = held.lock().unwrap().take();
        if let Some((released, arrive)) = wait {
            let _ = arrive.send(());
            let _ = released.recv_timeout(FAILURE_TIMEOUT);
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    let (client, forwarding) = http_tunnel(&server, "limited", service.port(), &[]);
    let host = host_of(&server, &forwarding);

    let mut first = HttpConn::connect(server.http_addr()).expect("connect");
    first
        .send(format!("GET /first HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .expect("send");
    // The visitor's permit is taken before its channel opens, so once the local service has the
    // connection the endpoint is full.
    arrived
        .recv_timeout(FAILURE_TIMEOUT)
        .unwrap_or_else(|_| client.fail("the first request never reached the local service"));

    let refused = get(server.http_addr(), &host, "/second").expect("an answer");
    assert_eq!(refused.status, 503, "{refused:?}\n{client}");
    assert!(
        String::from_utf8_lossy(&refused.body).contains("too many requests"),
        "{refused:?}"
    );
    assert_eq!(
        service.accepted(),
        1,
        "the refused request never reached the service"
    );

    release.send(()).expect("the held request is waiting");
    let answered = first.read_response().expect("the held request is answered");
    assert_eq!(answered.status, 200, "{answered:?}");
    // Its channel ends with the local service's connection (or with this visitor's), and its
    // permit with it.
    drop(first);
    let after = get_when_not_busy(server.http_addr(), &host, "/third");
    assert_eq!(after.status, 200, "{after:?}\n{client}");
    assert_eq!(service.accepted(), 2);
}

/// `GET path` until the answer is not `503` (a permit given back as a channel ends, which the
/// visitor cannot observe directly), at most [`FAILURE_TIMEOUT`]; the last answer.
fn get_when_not_busy(addr: SocketAddr, host: &str, path: &str) -> HttpResponse {
    let deadline = Instant::now() + FAILURE_TIMEOUT;
    loop {
        let response = get(addr, host, path).expect("an answer");
        if response.status != 503 || Instant::now() >= deadline {
            return response;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_channel_a_keep_alive_connection_keeps_counts_against_the_visitor_limit() {
    let server = Server::start(&["--max-visitors-per-endpoint", "1"]);
    let service = HttpService::start("kept");
    let (client, forwarding) = http_tunnel(&server, "kept", service.port(), &[]);
    let host = host_of(&server, &forwarding);
    let mut kept = HttpConn::connect(server.http_addr()).expect("connect");
    let mut ask = |path: &str, extra: &str| {
        kept.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes())
            .and_then(|()| kept.read_response())
            .unwrap_or_else(|e| client.fail(&format!("GET {path} on the kept connection: {e}")))
    };

    assert_from(&ask("/one", ""), "kept", &client);
    // Between its requests the connection keeps its channel to the local service open, and
    // that channel is a visitor: the endpoint is full.
    let other = get(server.http_addr(), &host, "/other").expect("an answer");
    assert_eq!(other.status, 503, "{other:?}\n{client}");
    // The connection's own next request is not refused because of its own idle channel.
    assert_from(&ask("/two", ""), "kept", &client);
    assert_eq!(service.connections(), 1, "both requests used one channel");
    // A request that ends its connection does not keep the channel.
    assert_from(&ask("/three", "Connection: close\r\n"), "kept", &client);
    let after = get_when_not_busy(server.http_addr(), &host, "/after");
    assert_from(&after, "kept", &client);
    let targets: Vec<String> = service.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/one", "/two", "/three", "/after"]);
}
