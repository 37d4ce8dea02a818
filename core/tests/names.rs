//! What a bind address asks for, random names, and routing by host.

mod harness;

use harness::{Harness, DOMAIN};
use rand_chacha::rand_core::{self, RngCore};
use tunnel_core::{normalize_host, requested_name, ForwardError, Reply, RANDOM_NAME_LEN};

fn random_label(host: &str) -> &str {
    host.strip_suffix(&format!(".{DOMAIN}"))
        .expect("under the domain")
}

fn assert_random(host: &str) {
    let label = random_label(host);
    assert!(label.len() >= 8 && label.len() == RANDOM_NAME_LEN, "{host}");
    assert!(
        label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{host}"
    );
}

#[test]
fn empty_localhost_star_and_ip_binds_get_random_names() {
    for bind in [
        "",
        "localhost",
        "LOCALHOST",
        "localhost.",
        "*",
        "0.0.0.0",
        "::",
        "127.0.0.1",
    ] {
        let mut h = Harness::new();
        let (conn, _) = h.tunnel("alice", &[(bind, 80)], "http");
        let host = h.host_of(conn);
        assert_random(&host);
        assert_eq!(requested_name(bind, DOMAIN), Ok(None), "{bind:?}");
        h.assert_no_leaks();
    }
}

#[test]
fn a_label_means_label_dot_domain_and_a_full_host_is_taken_as_is() {
    let cases = [
        ("app", "app.localhost"),
        ("App", "app.localhost"),
        ("MY-APP", "my-app.localhost"),
        ("app.localhost", "app.localhost"),
        ("APP.LocalHost", "app.localhost"),
        ("app.localhost.", "app.localhost"),
        ("a.b.localhost", "a.b.localhost"),
        ("x1", "x1.localhost"),
        ("123", "123.localhost"),
    ];
    for (bind, host) in cases {
        let mut h = Harness::new();
        let (conn, _) = h.tunnel("alice", &[(bind, 80)], "http");
        assert_eq!(h.host_of(conn), host, "{bind}");
        // The Forwarding line shows the bind address as the client asked for it.
        assert_eq!(
            h.forwarding_lines(conn),
            [format!("Forwarding http://{host}:8080 -> {bind}:80").as_str()]
        );
        h.assert_no_leaks();
    }
}

#[test]
fn invalid_names_are_refused_naming_the_rule() {
    let cases = [
        ("-app", "a label cannot start or end with '-'"),
        ("app-", "a label cannot start or end with '-'"),
        ("under_score", "only letters, digits and '-' are allowed"),
        ("héllo", "only letters, digits and '-' are allowed"),
        ("a b", "only letters, digits and '-' are allowed"),
        ("a..localhost", "it has an empty label"),
        (".localhost", "it has an empty label"),
        ("app.example.com", "it is not under this server's domain"),
        ("app.xlocalhost", "it is not under this server's domain"),
        ("localhost.com", "it is not under this server's domain"),
        ("sub.localhost.evil", "it is not under this server's domain"),
    ];
    for (bind, reason) in cases {
        let err = requested_name(bind, DOMAIN).expect_err(bind);
        assert!(
            matches!(&err, ForwardError::NameInvalid { reason: r, .. } if *r == reason),
            "{bind}: {err}"
        );
        let mut h = Harness::new();
        let (conn, reqs) = h.tunnel("alice", &[(bind, 80)], "http");
        assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
        assert_eq!(h.stderr(conn).len(), 1);
        assert!(h.stderr(conn)[0].contains(reason), "{}", h.stderr(conn)[0]);
        assert!(h.stderr(conn)[0].contains("--help"));
        assert_eq!(h.exit_status(conn), Some(1));
        h.assert_no_leaks();
    }
    let long_label = "a".repeat(64);
    assert!(matches!(
        requested_name(&long_label, DOMAIN),
        Err(ForwardError::NameInvalid { reason, .. }) if reason.contains("63")
    ));
    assert!(requested_name(&"a".repeat(63), DOMAIN).unwrap().is_some());
    let long_host = format!("{}.localhost", vec!["abcdefghi"; 26].join("."));
    assert!(matches!(
        requested_name(&long_host, DOMAIN),
        Err(ForwardError::NameInvalid { reason, .. }) if reason.contains("253")
    ));
    insta::assert_snapshot!(
        requested_name("bad_name", DOMAIN).unwrap_err().to_string(),
        @r#"invalid name "bad_name": only letters, digits and '-' are allowed"#
    );
}

#[test]
fn the_base_domain_itself_is_not_a_name() {
    let mut h = Harness::builder().build();
    let err = requested_name("example.com", "example.com").unwrap_err();
    assert!(err.to_string().contains("base domain"), "{err}");
    // With domain `localhost`, `localhost` means "no name": a random one.
    let (conn, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    assert_random(&h.host_of(conn));
    h.assert_no_leaks();
}

#[test]
fn tls_needs_a_name() {
    for bind in ["", "localhost"] {
        let mut h = Harness::new();
        let (conn, reqs) = h.tunnel("alice", &[(bind, 443)], "tls");
        assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
        assert_eq!(
            h.stderr(conn),
            ["error: a tls endpoint needs a name: use -R NAME:443:LHOST:LPORT (see --help: ssh HOST help)"]
        );
        h.assert_no_leaks();
    }
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app.localhost", 443)], "tls");
    assert_eq!(
        h.forwarding_lines(conn),
        ["Forwarding tls://app.localhost:8443 -> app.localhost:443"]
    );
    h.assert_no_leaks();
}

#[test]
fn random_names_differ_between_endpoints() {
    let mut h = Harness::new();
    let mut hosts = std::collections::BTreeSet::new();
    for i in 0..20 {
        let (conn, _) = h.tunnel(&format!("key{i}"), &[("localhost", 80)], "http");
        let host = h.host_of(conn);
        assert_random(&host);
        assert!(hosts.insert(host));
    }
    h.assert_no_leaks();
}

/// An RNG that repeats a fixed list of names, one byte per character, so tests can force the
/// collisions a real RNG makes astronomically rare.
struct Scripted {
    bytes: Vec<u8>,
    at: usize,
}

impl Scripted {
    fn names(labels: &[&str]) -> Box<Self> {
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let bytes = labels
            .iter()
            .flat_map(|l| l.bytes())
            .map(|c| {
                alphabet
                    .iter()
                    .position(|a| *a == c)
                    .expect("in the alphabet") as u8
            })
            .collect();
        Box::new(Self { bytes, at: 0 })
    }
}

impl RngCore for Scripted {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        u64::from(self.next_u32())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            *d = self.bytes[self.at % self.bytes.len()];
            self.at += 1;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[test]
fn random_names_never_collide_with_live_or_reserved_names() {
    let mut h = Harness::builder()
        .rng(Scripted::names(&[
            "aaaaaaaa", "aaaaaaaa", "bbbbbbbb", "aaaaaaaa", "bbbbbbbb", "cccccccc",
        ]))
        .build();
    let (first, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    assert_eq!(h.host_of(first), "aaaaaaaa.localhost");
    let (second, _) = h.tunnel("bob", &[("localhost", 80)], "http");
    assert_eq!(
        h.host_of(second),
        "bbbbbbbb.localhost",
        "a live name is skipped"
    );
    h.close(first);
    // aaaaaaaa is reserved for alice now: carol cannot draw it.
    let (third, _) = h.tunnel("carol", &[("localhost", 80)], "http");
    assert_eq!(h.host_of(third), "cccccccc.localhost");
    h.assert_no_leaks();
}

#[test]
fn a_random_name_a_user_asked_for_explicitly_is_skipped() {
    let mut h = Harness::builder()
        .rng(Scripted::names(&["aaaaaaaa", "bbbbbbbb"]))
        .build();
    let (named, _) = h.tunnel("alice", &[("aaaaaaaa", 80)], "http");
    assert_eq!(h.host_of(named), "aaaaaaaa.localhost");
    let (random, _) = h.tunnel("bob", &[("localhost", 80)], "http");
    assert_eq!(h.host_of(random), "bbbbbbbb.localhost");
    h.assert_no_leaks();
}

#[test]
fn a_broken_rng_gives_a_clear_error_not_a_hang() {
    let mut h = Harness::builder()
        .rng(Scripted::names(&["aaaaaaaa"]))
        .build();
    let (_, _) = h.tunnel("alice", &[("localhost", 80)], "http");
    let (conn, reqs) = h.tunnel("bob", &[("localhost", 80)], "http");
    assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
    assert_eq!(
        h.stderr(conn),
        ["error: could not pick a free random name; try again (see --help: ssh HOST help)"]
    );
    h.assert_no_leaks();
}

#[test]
fn route_by_host_ignores_case_port_and_trailing_dot() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "http");
    for host in [
        "app.localhost",
        "APP.LOCALHOST",
        "App.Localhost:8080",
        "app.localhost.",
        "app.localhost.:8443",
        " app.localhost ",
    ] {
        assert_eq!(
            h.gw.route_by_host(host).map(|r| r.conn),
            Some(conn),
            "{host:?}"
        );
    }
    for host in [
        "other.localhost",
        "app",
        "app.localhost:x",
        "[::1]:8080",
        "app.localhost:8080:1",
        "",
        "app.localhost/",
    ] {
        assert!(h.gw.route_by_host(host).is_none(), "{host:?}");
    }
    h.assert_no_leaks();
}

#[test]
fn normalize_host_rules() {
    assert_eq!(normalize_host("A.B:80").as_deref(), Some("a.b"));
    assert_eq!(normalize_host("a.b.").as_deref(), Some("a.b"));
    assert_eq!(normalize_host("a.b:").as_deref(), Some("a.b"));
    assert_eq!(normalize_host("[::1]"), None);
    assert_eq!(normalize_host("a_b"), None);
    assert_eq!(normalize_host("héllo"), None);
    assert_eq!(normalize_host(""), None);
    assert_eq!(normalize_host("."), None);
    assert_eq!(normalize_host(&"a".repeat(254)), None);
}

#[test]
fn route_by_port_finds_only_tcp_endpoints() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("localhost", 20010)], "tcp");
    assert_eq!(h.gw.route_by_port(20010).map(|r| r.conn), Some(conn));
    assert!(h.gw.route_by_port(20011).is_none());
    assert!(h.gw.route_by_port(80).is_none());
    h.assert_no_leaks();
}

#[test]
fn a_name_above_or_below_another_keys_name_is_refused() {
    let mut h = Harness::builder()
        .name_grace(std::time::Duration::from_secs(60))
        .build();
    let (alice, _) = h.tunnel("alice", &[("echo", 80)], "http");
    let (bob, _) = h.tunnel("bob", &[("x.echo.localhost", 80)], "http");
    insta::assert_snapshot!(h.stderr(bob)[0], @"error: name x.echo.localhost is under echo.localhost, which another key holds (the two sites could read each other's cookies) (see --help: ssh HOST help)");
    let (deeper, _) = h.tunnel("bob", &[("a.b.x.echo.localhost", 80)], "http");
    assert!(
        h.stderr(deeper)[0].contains("under echo.localhost"),
        "{:?}",
        h.stderr(deeper)
    );
    // The same key may nest its own names.
    let (own, _) = h.tunnel("alice", &[("x.echo.localhost", 80)], "http");
    assert_eq!(h.forwarding_lines(own).len(), 1, "{:?}", h.stderr(own));
    // And the other way round: a name above one another key holds.
    let (carol, _) = h.tunnel("carol", &[("deep.zone.localhost", 80)], "http");
    let (dave, _) = h.tunnel("dave", &[("zone", 80)], "http");
    assert!(
        h.stderr(dave)[0].contains("zone.localhost is above deep.zone.localhost"),
        "{:?}",
        h.stderr(dave)
    );
    // A reservation protects the same way; once it ends, the name is free.
    h.close(alice);
    h.close(own);
    let (bob2, _) = h.tunnel("bob", &[("y.echo.localhost", 80)], "http");
    assert!(
        h.stderr(bob2)[0].contains("under echo.localhost"),
        "{:?}",
        h.stderr(bob2)
    );
    h.advance(std::time::Duration::from_secs(61));
    let (bob3, _) = h.tunnel("bob", &[("y.echo.localhost", 80)], "http");
    assert_eq!(h.forwarding_lines(bob3).len(), 1, "{:?}", h.stderr(bob3));
    let _ = carol;
    h.assert_no_leaks();
}
