//! Operating the server: the admin listener's JSON API (who holds what, kick, release), its
//! bearer token, `/metrics` read with a real Prometheus parser while traffic flows, and the
//! status page.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tunnel_e2e::http::{request_raw, HttpResponse};
use tunnel_e2e::http_service::HttpService;
use tunnel_e2e::http_visitor::get_with;
use tunnel_e2e::{Client, Forwarding, Key, LocalService, Server, FAILURE_TIMEOUT};

/// The admin listener's address, from its `listening admin on ADDR` log line.
fn admin_addr(server: &Server) -> SocketAddr {
    let line = server.wait_log_line(|l| l.contains("listening admin on"), FAILURE_TIMEOUT);
    line.rsplit(' ')
        .find_map(|token| token.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// One request to the admin listener, on a connection of its own.
fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> HttpResponse {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request_raw(addr, request.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A JSON list from the API.
fn list(addr: SocketAddr, what: &str) -> Vec<Value> {
    let response = admin(addr, "GET", &format!("/api/{what}"), None);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_slice::<Value>(&response.body)
        .expect("the API answers JSON")
        .as_array()
        .cloned()
        .expect("a list")
}

/// Polls `check` until it gives a value; fails after the failure timeout.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + FAILURE_TIMEOUT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_tunnel(server: &Server, key: &Key, name: &str, port: u16) -> (Client, Forwarding) {
    let mut client = Client::builder(server)
        .key(key)
        .forward(format!("{name}:80:localhost:{port}"))
        .command(["http"])
        .spawn();
    let forwarding = client.wait_forwarding();
    (client, forwarding)
}

fn endpoint_with_url<'a>(endpoints: &'a [Value], url: &str) -> &'a Value {
    endpoints
        .iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("no endpoint {url} in {endpoints:?}"))
}

#[test]
fn the_api_lists_three_sessions_and_a_kick_ends_one_while_the_others_carry_on() {
    let server = Server::start(&["--admin-addr", "127.0.0.1:0"]);
    let addr = admin_addr(&server);
    let (one, two) = (HttpService::start("one"), HttpService::start("two"));
    let echo = LocalService::echo();
    let keys = [Key::generate(), Key::generate(), Key::generate()];
    let (mut first, first_fw) = http_tunnel(&server, &keys[0], "first", one.port());
    let (mut second, second_fw) = http_tunnel(&server, &keys[1], "second", two.port());
    let mut third = Client::builder(&server)
        .key(&keys[2])
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();
    let third_fw = third.wait_forwarding();

    let connections = list(addr, "connections");
    assert_eq!(connections.len(), 3, "{connections:?}");
    for c in &connections {
        assert!(
            c["key"].as_str().is_some_and(|k| k.starts_with("SHA256:")),
            "{c}"
        );
        assert!(
            c["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{c}"
        );
        assert_eq!(c["endpoints"].as_array().map(Vec::len), Some(1), "{c}");
        let since = c["connected_since"].as_u64().expect("a Unix time");
        assert!(since > 1_700_000_000, "{c}");
    }
    let endpoints = list(addr, "endpoints");
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    let first_endpoint = endpoint_with_url(&endpoints, &first_fw.url);
    assert_eq!(first_endpoint["kind"], "http");
    assert_eq!(
        endpoint_with_url(&endpoints, &second_fw.url)["kind"],
        "http"
    );
    let tcp = endpoint_with_url(&endpoints, &third_fw.url);
    assert_eq!(tcp["kind"], "tcp");
    assert_eq!(tcp["address"], third_fw.public_port().to_string());

    // Kick the first, with a reason its user reads.
    let conn = first_endpoint["connection"]
        .as_u64()
        .expect("a connection id");
    let kicked = admin(
        addr,
        "DELETE",
        &format!("/api/connections/{conn}?reason=planned+maintenance"),
        None,
    );
    assert_eq!(kicked.status, 204, "{kicked:?}");
    let out = first.wait_exit(FAILURE_TIMEOUT);
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("disconnected by the operator: planned maintenance")),
        "{out}"
    );
    assert_eq!(out.code(), Some(1), "{out}");
    // Gone from the lists, its name reserved for its key; the others carry on.
    eventually("the kicked connection to leave the list", || {
        (list(addr, "connections").len() == 2).then_some(())
    });
    let reservations = list(addr, "reservations");
    assert_eq!(reservations.len(), 1, "{reservations:?}");
    assert_eq!(reservations[0]["name"], first_fw.host);
    assert!(second.is_running() && third.is_running());
    let host = format!("{}:{}", second_fw.host, server.http_addr().port());
    let response = get_with(server.http_addr(), &host, "/", &[]).expect("the second is served");
    assert_eq!(response.status, 200);
    third.assert_echo(third_fw.public_port());
    // A connection that is not there.
    assert_eq!(
        admin(addr, "DELETE", "/api/connections/999999", None).status,
        404
    );
    assert_eq!(
        admin(addr, "DELETE", "/api/connections/abc", None).status,
        400
    );
}

#[test]
fn a_deleted_reservation_is_free_for_another_key_and_a_live_one_is_refused() {
    let server = Server::start(&["--admin-addr", "127.0.0.1:0"]);
    let addr = admin_addr(&server);
    let service = HttpService::start("app");
    let (alice, bob) = (Key::generate(), Key::generate());
    let (mut holder, forwarding) = http_tunnel(&server, &alice, "app", service.port());
    assert_eq!(forwarding.host, "app.localhost");

    let live = admin(addr, "DELETE", "/api/reservations/app", None);
    assert_eq!(live.status, 409, "a live name is not released: {live:?}");
    assert!(holder.is_running());

    holder.disconnect();
    let reservation = eventually("app's reservation", || {
        list(addr, "reservations")
            .into_iter()
            .find(|r| r["name"] == "app.localhost")
    });
    assert!(reservation["seconds_left"].as_u64().is_some_and(|s| s > 0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        reservation["until"].as_u64().is_some_and(|t| t > now),
        "{reservation}"
    );
    let mut refused = Client::builder(&server)
        .key(&bob)
        .forward(format!("app:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    let out = refused.wait_exit(FAILURE_TIMEOUT);
    assert!(out.stderr.iter().any(|l| l.contains("reserved")), "{out}");

    let released = admin(addr, "DELETE", "/api/reservations/app.localhost", None);
    assert_eq!(released.status, 204, "{released:?}");
    assert!(list(addr, "reservations").is_empty());
    assert_eq!(
        admin(addr, "DELETE", "/api/reservations/app", None).status,
        404
    );
    let (_taker, taken) = http_tunnel(&server, &bob, "app", service.port());
    assert_eq!(taken.host, "app.localhost");
}

#[test]
fn a_token_file_guards_every_page_and_a_wrong_or_missing_token_gets_401() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("admin-token");
    std::fs::File::create(&token_file)
        .and_then(|mut f| f.write_all(b"correct-horse\n"))
        .expect("write the token");
    let server = Server::start(&[
        "--admin-addr",
        "127.0.0.1:0",
        "--admin-token-file",
        token_file.to_str().expect("utf-8 path"),
    ]);
    let addr = admin_addr(&server);
    for path in ["/api/connections", "/metrics", "/", "/api/reservations/x"] {
        let missing = admin(addr, "GET", path, None);
        assert_eq!(missing.status, 401, "{path}: {missing:?}");
        assert!(missing
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")));
        assert_eq!(admin(addr, "GET", path, Some("correct-hors")).status, 401);
        assert_eq!(admin(addr, "GET", path, Some("correct-horse!")).status, 401);
    }
    let ok = admin(addr, "GET", "/api/connections", Some("correct-horse"));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        admin(addr, "GET", "/metrics", Some("correct-horse")).status,
        200
    );
}

#[test]
fn sighup_reads_the_token_file_again_and_the_old_token_stops_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "first-token\n").expect("write the token");
    let server = Server::start(&[
        "--admin-addr",
        "127.0.0.1:0",
        "--admin-token-file",
        token_file.to_str().expect("utf-8 path"),
    ]);
    let addr = admin_addr(&server);
    assert_eq!(
        admin(addr, "GET", "/api/connections", Some("first-token")).status,
        200
    );

    std::fs::write(&token_file, "second-token\n").expect("rotate the token");
    server.send_signal("HUP");
    server.wait_log_line(
        |l| l.contains("the admin token was read again"),
        FAILURE_TIMEOUT,
    );
    assert_eq!(
        admin(addr, "GET", "/api/connections", Some("first-token")).status,
        401
    );
    assert_eq!(
        admin(addr, "GET", "/api/connections", Some("second-token")).status,
        200
    );

    // An empty file is not taken: the token in force stays.
    std::fs::write(&token_file, "\n").expect("empty the file");
    server.send_signal("HUP");
    server.wait_log_line(|l| l.contains("SIGHUP: not taken"), FAILURE_TIMEOUT);
    assert_eq!(
        admin(addr, "GET", "/api/connections", Some("second-token")).status,
        200
    );
    assert_eq!(admin(addr, "GET", "/api/connections", None).status, 401);
}

#[test]
fn an_admin_listener_off_loopback_without_a_token_refuses_to_start() {
    let out = Server::builder()
        .args(["--admin-addr", "0.0.0.0:0"])
        .run_to_exit(FAILURE_TIMEOUT);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.iter().any(|l| l.contains("--admin-token-file")),
        "{out}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let out = Server::builder()
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--admin-token-file",
            empty.to_str().expect("utf-8 path"),
        ])
        .run_to_exit(FAILURE_TIMEOUT);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stderr.iter().any(|l| l.contains("empty")), "{out}");
}

/// `/metrics`, parsed by the `prometheus-parse` crate.
fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let response = admin(addr, "GET", "/metrics", None);
    assert_eq!(response.status, 200, "{response:?}");
    let text = String::from_utf8(response.body).expect("utf-8");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the sample `name` whose labels include `labels`; 0 if there is none.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a single value"),
        })
}

#[test]
fn the_metrics_move_as_traffic_flows() {
    let key = Key::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let authorized = dir.path().join("authorized_keys");
    // The web key's line ends in a comment of its own; the API shows it beside the fingerprint.
    let web_line = key.public_line();
    let web_line = web_line
        .rsplit_once(' ')
        .filter(|(head, _)| head.contains(' '))
        .map_or(web_line.as_str(), |(head, _)| head);
    let server_key = Key::generate();
    std::fs::write(
        &authorized,
        format!("{web_line} web owner\n{}\n", server_key.public_line()),
    )
    .expect("write authorized_keys");
    let server = Server::builder()
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--metrics-per-endpoint",
            "--max-names-per-key",
            "1",
            "--authorized-keys",
            authorized.to_str().expect("utf-8 path"),
        ])
        .start();
    let addr = admin_addr(&server);
    let before = scrape(addr);
    assert_eq!(value(&before, "tunnel_ssh_connections", &[]), 0.0);
    assert_eq!(
        value(&before, "tunnel_http_requests_total", &[("class", "2xx")]),
        0.0
    );

    let service = HttpService::start("web");
    let (mut web, forwarding) = http_tunnel(&server, &key, "web", service.port());
    let host = format!("{}:{}", forwarding.host, server.http_addr().port());
    for _ in 0..3 {
        let response = get_with(server.http_addr(), &host, "/page", &[]).expect("served");
        assert_eq!(response.status, 200);
    }
    let unknown = format!("nobody.localhost:{}", server.http_addr().port());
    assert_eq!(
        get_with(server.http_addr(), &unknown, "/", &[])
            .expect("answered")
            .status,
        404
    );
    let echo = LocalService::echo();
    let mut tcp = Client::builder(&server)
        .key(&server_key)
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();
    let tcp_fw = tcp.wait_forwarding();
    // A key nobody listed is refused when it is offered.
    let stranger = Key::generate();
    let mut refused = Client::builder(&server)
        .key(&stranger)
        .forward(format!("x:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    let out = refused.wait_exit(FAILURE_TIMEOUT);
    assert_ne!(out.code(), Some(0), "{out}");
    tcp.assert_echo(tcp_fw.public_port());
    // The same key's second name is over its quota.
    let mut over = Client::builder(&server)
        .key(&key)
        .forward(format!("more:80:localhost:{}", service.port()))
        .command(["http"])
        .spawn();
    let out = over.wait_exit(FAILURE_TIMEOUT);
    assert!(out.stderr.iter().any(|l| l.contains("quota")), "{out}");

    let after = eventually("the echo's bytes and the refused connection's end", || {
        let after = scrape(addr);
        let echoed = value(
            &after,
            "tunnel_bytes_total",
            &[("kind", "tcp"), ("direction", "out")],
        ) > 0.0;
        // The refused session's connection closes a moment after its ssh exits.
        let closed = value(&after, "tunnel_ssh_connections", &[]) == 2.0;
        (echoed && closed).then_some(after)
    });
    let v = |name, labels: &[(&str, &str)]| value(&after, name, labels);
    assert_eq!(v("tunnel_ssh_connections", &[]), 2.0);
    assert!(v("tunnel_ssh_connections_opened_total", &[]) >= 4.0);
    assert!(
        v(
            "tunnel_ssh_auth_failures_total",
            &[("reason", "unlisted_key")]
        ) >= 1.0
    );
    assert_eq!(v("tunnel_endpoints", &[("kind", "http")]), 1.0);
    assert_eq!(v("tunnel_endpoints", &[("kind", "tcp")]), 1.0);
    assert_eq!(v("tunnel_http_requests_total", &[("class", "2xx")]), 3.0);
    assert_eq!(v("tunnel_http_requests_total", &[("class", "4xx")]), 1.0);
    assert_eq!(
        v("tunnel_visitors_admitted_total", &[("kind", "http")]),
        3.0
    );
    assert_eq!(v("tunnel_visitors_admitted_total", &[("kind", "tcp")]), 1.0);
    assert!(
        v(
            "tunnel_bytes_total",
            &[("kind", "http"), ("direction", "in")]
        ) > 0.0
    );
    assert!(
        v(
            "tunnel_bytes_total",
            &[("kind", "http"), ("direction", "out")]
        ) > 0.0
    );
    assert!(
        v(
            "tunnel_bytes_total",
            &[("kind", "tcp"), ("direction", "in")]
        ) > 0.0
    );
    assert!(v("tunnel_channel_open_seconds_count", &[]) >= 2.0);
    assert_eq!(
        v("tunnel_refusals_total", &[("reason", "unknown_host")]),
        1.0
    );
    assert_eq!(v("tunnel_refusals_total", &[("reason", "name_quota")]), 1.0);
    assert_eq!(
        v("tunnel_quota_hits_total", &[("reason", "name_quota")]),
        1.0
    );
    // --metrics-per-endpoint: the endpoint's own series, by its name.
    assert_eq!(
        v(
            "tunnel_endpoint_http_requests_total",
            &[("endpoint", "web.localhost"), ("class", "2xx")]
        ),
        3.0
    );
    assert!(
        v(
            "tunnel_endpoint_bytes_total",
            &[("endpoint", "web.localhost"), ("direction", "out")]
        ) > 0.0
    );
    let connections = list(addr, "connections");
    let web_conn = connections
        .iter()
        .find(|c| c["key_comment"] == "web owner")
        .unwrap_or_else(|| panic!("the web key's comment in {connections:?}"));
    // The API's per-endpoint numbers agree.
    let endpoints = list(addr, "endpoints");
    let web_endpoint = endpoint_with_url(&endpoints, &forwarding.url);
    assert_eq!(web_endpoint["connection"], web_conn["id"]);
    assert_eq!(web_endpoint["requests"]["2xx"], 3);
    assert_eq!(web_endpoint["visitors_total"], 3);
    assert!(web_endpoint["bytes_out"].as_u64().is_some_and(|n| n > 0));

    // A session's end takes its endpoint out of the gauges; the totals stay.
    web.disconnect();
    let last = eventually("the http endpoint to go", || {
        let last = scrape(addr);
        (value(&last, "tunnel_endpoints", &[("kind", "http")]) == 0.0).then_some(last)
    });
    assert_eq!(
        value(&last, "tunnel_http_requests_total", &[("class", "2xx")]),
        3.0
    );
    assert_eq!(
        value(
            &last,
            "tunnel_endpoint_http_requests_total",
            &[("endpoint", "web.localhost")]
        ),
        0.0,
        "a gone endpoint's own series go with it"
    );
}
