//! What a visitor on a public listener reaches, and every page it reads when it is not served.

mod harness;

use std::net::IpAddr;

use harness::Harness;
use tunnel_core::{request_host, Entrance, TrustedProxies, VisitorRefusal};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a valid test address")
}

#[test]
fn each_listener_reaches_only_the_kinds_it_serves() {
    let mut h = Harness::new();
    let (web, _) = h.tunnel("alice", &[("web", 80)], "http");
    let (tls, _) = h.tunnel("alice", &[("sec", 443)], "tls");
    let found = |h: &Harness, entrance, host| h.gw.route_for(entrance, host).map(|r| r.conn);
    assert_eq!(found(&h, Entrance::Http, "WEB.localhost:8080"), Ok(web));
    assert_eq!(found(&h, Entrance::Https, "web.localhost"), Ok(web));
    assert_eq!(found(&h, Entrance::Https, "sec.localhost"), Ok(tls));
    // A tls name over plain HTTP would show the visitor the user's TLS bytes: refused.
    assert_eq!(
        found(&h, Entrance::Http, "sec.localhost"),
        Err(VisitorRefusal::NotHttp("sec.localhost".into()))
    );
    assert_eq!(
        found(&h, Entrance::Http, "nobody.localhost"),
        Err(VisitorRefusal::UnknownHost("nobody.localhost".into()))
    );
    let (tcp, _) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    let port = h.port_of(tcp);
    assert_eq!(h.gw.route_for_port(port).map(|r| r.conn), Ok(tcp));
    assert_eq!(
        h.gw.route_for_port(port + 1).map(|r| r.conn),
        Err(VisitorRefusal::UnknownPort(port + 1))
    );
    h.close(web);
    assert_eq!(
        found(&h, Entrance::Http, "web.localhost"),
        Err(VisitorRefusal::UnknownHost("web.localhost".into())),
        "gone at once with its connection"
    );
    h.assert_no_leaks();
}

#[test]
fn requests_are_admitted_by_cidr_then_credentials() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel(
        "alice",
        &[("web", 80)],
        "http --cidr-deny 198.51.100.0/24 --basic-auth a:b",
    );
    let route = h.routes_of(conn)[0].clone();
    let good = Some(&b"Basic YTpi"[..]); // a:b
    assert_eq!(route.admit_request(ip("203.0.113.1"), good), Ok(()));
    assert_eq!(
        route.admit_request(ip("203.0.113.1"), None),
        Err(VisitorRefusal::Unauthorized)
    );
    // The address is judged first: a denied visitor learns nothing about the credentials.
    assert_eq!(
        route.admit_request(ip("198.51.100.7"), good),
        Err(VisitorRefusal::Forbidden)
    );
    assert_eq!(
        route.admit_connection(ip("198.51.100.7")),
        Err(VisitorRefusal::Forbidden)
    );
    assert!(route.logs_requests());
    assert_eq!(
        route.visitor_limit(),
        h.config().limits().visitors_per_endpoint()
    );
    h.assert_no_leaks();
}

#[test]
fn the_host_of_a_request() {
    let host =
        |authority, headers: &[&'static [u8]]| request_host(authority, headers.iter().copied());
    assert_eq!(
        host(Some("a.localhost:8080"), &[b"b.localhost"]),
        Ok("a.localhost:8080")
    );
    assert_eq!(host(None, &[b"b.localhost"]), Ok("b.localhost"));
    assert_eq!(host(None, &[]), Err(VisitorRefusal::MissingHost));
    assert_eq!(
        host(None, &[b"a.localhost", b"b.localhost"]),
        Err(VisitorRefusal::SeveralHosts)
    );
    assert_eq!(host(None, &[b" "]), Err(VisitorRefusal::InvalidHost));
    assert_eq!(host(None, &[b"\xff"]), Err(VisitorRefusal::InvalidHost));
}

#[test]
fn every_page_a_visitor_reads() {
    let pages: Vec<String> = [
        VisitorRefusal::MissingHost,
        VisitorRefusal::SeveralHosts,
        VisitorRefusal::InvalidHost,
        VisitorRefusal::UnknownHost("nobody.localhost".into()),
        VisitorRefusal::NotHttp("sec.localhost".into()),
        VisitorRefusal::UnknownPort(20001),
        VisitorRefusal::Forbidden,
        VisitorRefusal::Unauthorized,
        VisitorRefusal::Busy,
        VisitorRefusal::LocalServiceRefused,
        VisitorRefusal::TunnelTimedOut,
        VisitorRefusal::TunnelClosed,
        VisitorRefusal::NoAnswer,
    ]
    .iter()
    .map(|r| {
        let challenge = r
            .www_authenticate()
            .map(|c| format!(" [WWW-Authenticate: {c}]"))
            .unwrap_or_default();
        format!("{} {:?}{challenge}", r.http_status(), r.page())
    })
    .collect();
    insta::assert_snapshot!(pages.join("\n"), @r#"
    400 "missing Host header\n"
    400 "more than one Host header\n"
    400 "invalid Host header\n"
    404 "no tunnel for nobody.localhost\n"
    404 "sec.localhost is not an http tunnel\n"
    404 "no tunnel on port 20001\n"
    403 "forbidden\n"
    401 "authentication required\n" [WWW-Authenticate: Basic realm="tunnel", charset="UTF-8"]
    503 "this tunnel is serving too many requests; try again\n"
    502 "the tunnel's local service refused the connection\n"
    502 "the tunnel did not answer in time\n"
    502 "the tunnel closed\n"
    502 "the tunnel closed before the local service answered\n"
    "#);
}

#[test]
fn only_trusted_proxies_add_to_x_forwarded_for() {
    let none = TrustedProxies::default();
    assert_eq!(
        none.forwarded_for(ip("203.0.113.5"), Some("6.6.6.6")),
        "203.0.113.5"
    );
    assert_eq!(
        none.forwarded_for(ip("::ffff:203.0.113.5"), None),
        "203.0.113.5"
    );
    let lb = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
    assert!(lb.trusts(ip("::ffff:10.9.9.9")));
    assert_eq!(
        lb.forwarded_for(ip("10.0.0.2"), Some("198.51.100.1")),
        "198.51.100.1, 10.0.0.2"
    );
    assert_eq!(lb.forwarded_for(ip("10.0.0.2"), Some("  ")), "10.0.0.2");
    assert_eq!(
        lb.forwarded_for(ip("203.0.113.5"), Some("1.1.1.1")),
        "203.0.113.5"
    );
}

#[test]
fn a_proxy_header_is_read_only_from_trusted_proxies_and_only_when_asked_for() {
    let networks = vec!["10.0.0.0/8".parse().unwrap()];
    let appending = TrustedProxies::new(networks.clone());
    assert!(!appending.sends_proxy_header(ip("10.0.0.2")));
    let lb = TrustedProxies::new(networks).with_proxy_protocol(true);
    assert!(lb.sends_proxy_header(ip("10.0.0.2")));
    assert!(lb.sends_proxy_header(ip("::ffff:10.0.0.2")));
    assert!(!lb.sends_proxy_header(ip("203.0.113.5")));
    assert!(!TrustedProxies::default()
        .with_proxy_protocol(true)
        .sends_proxy_header(ip("10.0.0.2")));
}

#[test]
fn the_servers_own_name_gets_its_page_and_only_names_under_it_are_answered_over_tls() {
    let h = Harness::builder()
        .server("tunnel.example.com", 80, 443)
        .home(2222, "SHA256:hostkeyfingerprint")
        .build();
    let home =
        h.gw.route_for(Entrance::Https, "Tunnel.Example.com")
            .unwrap_err();
    assert_eq!(home.http_status(), 200);
    assert!(home.answered_over_tls());
    insta::assert_snapshot!(home.page(), @r"
    tunnel.example.com is a tunnel server: it publishes services that their owners share with ssh.

    Share a local web app on port 3000:
        ssh -R 80:localhost:3000 -p 2222 tunnel.example.com http
    Share any TCP service, here port 22:
        ssh -R 0:localhost:22 -p 2222 tunnel.example.com tcp
    All commands and flags:
        ssh -p 2222 tunnel.example.com help

    The server's host key: SHA256:hostkeyfingerprint
    ");
    let unknown =
        h.gw.route_for(Entrance::Https, "nosuch.tunnel.example.com")
            .unwrap_err();
    assert_eq!(
        unknown,
        VisitorRefusal::UnknownHost("nosuch.tunnel.example.com".into())
    );
    assert!(unknown.answered_over_tls());
    let foreign =
        h.gw.route_for(Entrance::Https, "app.example.org")
            .unwrap_err();
    assert_eq!(foreign, VisitorRefusal::Foreign("app.example.org".into()));
    assert!(
        !foreign.answered_over_tls(),
        "no certificate of ours covers it: an alert"
    );
    assert_eq!(foreign.http_status(), 404);
}

#[test]
fn a_source_is_an_ipv4_address_or_an_ipv6_64_and_has_a_share_of_each_route() {
    use tunnel_core::{visitor_source, Limits};
    assert_eq!(visitor_source(ip("203.0.113.9")), ip("203.0.113.9"));
    assert_eq!(visitor_source(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
    assert_eq!(
        visitor_source(ip("2001:db8:1:2:3:4:5:6")),
        ip("2001:db8:1:2::")
    );
    let mut h = Harness::builder()
        .limits(
            Limits::default()
                .with_visitors_per_endpoint(10)
                .with_visitors_per_source(3),
        )
        .build();
    let (conn, _) = h.tunnel("alice", &[("web", 80)], "http");
    let route = h.routes_of(conn)[0].clone();
    assert_eq!((route.visitor_limit(), route.visitor_share()), (10, 3));
    let (small, _) = h.tunnel("bob", &[("web2", 80)], "http");
    let _ = small;
    h.assert_no_leaks();
}

#[test]
fn a_trusted_load_balancer_is_not_one_source_of_connections() {
    let lb = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
    assert!(!lb.is_one_source(ip("10.0.0.2")));
    assert!(!lb.is_one_source(ip("::ffff:10.0.0.2")));
    assert!(lb.is_one_source(ip("203.0.113.5")));
    assert!(TrustedProxies::default().is_one_source(ip("10.0.0.2")));
}
