//! Properties: the grammar renders and parses back any command, quoting survives any word,
//! hostile text never panics, and random input sequences keep the gateway's invariants.

mod harness;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use harness::{Harness, DOMAIN};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use tunnel_core::command::testing::{quote, render, tokenize};
use tunnel_core::command::{
    parse_command_line, AccessRules, Command, Credentials, HeaderEdits, HeaderName, HostHeader,
    HttpOptions, ProxyVersion, StreamOptions,
};
use tunnel_core::{basic_auth_allows, normalize_host, requested_name, Limits};

// ---- typed commands ---------------------------------------------------------------------------

/// Words that break naive quoting: spaces, quotes, backslashes, `$`, newlines, unicode.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[ '\"\\\\$`a-z:=\\-]*",
        Just(String::new()),
        Just("'".to_owned()),
        Just("\\".to_owned()),
        Just("a b".to_owned()),
        Just("\"\\\"\"".to_owned()),
        Just("--help".to_owned()),
        Just("-h".to_owned()),
        Just("héllo wörld ✓".to_owned()),
        Just("\n\t\r".to_owned()),
    ]
}

fn credentials() -> impl Strategy<Value = Credentials> {
    let user = hostile_text().prop_filter("a non-empty user without ':'", |u| {
        !u.is_empty() && !u.contains(':')
    });
    (user, hostile_text()).prop_map(|(user, password)| {
        let line = format!("http --basic-auth={}", quote(&format!("{user}:{password}")));
        match parse_command_line(&line) {
            Ok(Some(Command::Http(mut o))) => o.basic_auth.remove(0),
            other => panic!("{line:?}: {other:?}"),
        }
    })
}

fn header_name() -> impl Strategy<Value = HeaderName> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}".prop_map(|name| {
        let line = format!("http --request-header-remove={}", quote(&name));
        match parse_command_line(&line) {
            Ok(Some(Command::Http(mut o))) => o.request_headers.remove.remove(0),
            other => panic!("{line:?}: {other:?}"),
        }
    })
}

fn header_value() -> impl Strategy<Value = String> {
    // Visible ASCII, spaces and tabs; surrounding white space is not kept.
    "[ -~\t]{0,30}".prop_map(|v| v.trim().to_owned())
}

fn header_edits() -> impl Strategy<Value = HeaderEdits> {
    (
        prop::collection::vec((header_name(), header_value()), 0..3),
        prop::collection::vec(header_name(), 0..3),
    )
        .prop_map(|(add, remove)| HeaderEdits { add, remove })
}

fn ip_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(a), p)
                    .expect("prefix <= 32")
                    .trunc(),
            )
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, p)| {
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(a), p)
                    .expect("prefix <= 128")
                    .trunc(),
            )
        }),
    ]
}

fn access() -> impl Strategy<Value = AccessRules> {
    (
        prop::collection::vec(ip_net(), 0..3),
        prop::collection::vec(ip_net(), 0..3),
    )
        .prop_map(|(allow, deny)| AccessRules { allow, deny })
}

fn host_header() -> impl Strategy<Value = HostHeader> {
    prop_oneof![
        Just(HostHeader::Preserve),
        Just(HostHeader::Rewrite),
        "[A-Za-z0-9.:_\\[\\]-]{1,30}"
            .prop_filter("not a keyword", |h| h != "preserve" && h != "rewrite")
            .prop_map(HostHeader::Literal),
        // Literals that begin like the keywords.
        "(preserve|rewrite)[a-z0-9.:-]{1,10}".prop_map(HostHeader::Literal),
    ]
}

fn http_options() -> impl Strategy<Value = HttpOptions> {
    (
        prop::collection::vec(credentials(), 0..3),
        access(),
        host_header(),
        header_edits(),
        header_edits(),
        any::<bool>(),
    )
        .prop_map(
            |(basic_auth, access, host_header, request_headers, response_headers, inspect)| {
                HttpOptions {
                    basic_auth,
                    access,
                    host_header,
                    request_headers,
                    response_headers,
                    inspect,
                }
            },
        )
}

fn stream_options() -> impl Strategy<Value = StreamOptions> {
    (
        access(),
        prop_oneof![
            Just(None),
            Just(Some(ProxyVersion::V1)),
            Just(Some(ProxyVersion::V2))
        ],
    )
        .prop_map(|(access, proxy_protocol)| StreamOptions {
            access,
            proxy_protocol,
        })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Help),
        http_options().prop_map(Command::Http),
        stream_options().prop_map(Command::Tcp),
        stream_options().prop_map(Command::Tls),
    ]
}

proptest! {
    #[test]
    fn render_then_parse_gives_the_command_back(c in command()) {
        let line = render(&c);
        prop_assert_eq!(parse_command_line(&line), Ok(Some(c)), "line: {:?}", line);
    }

    #[test]
    fn quote_then_tokenize_gives_the_word_back(w in hostile_text()) {
        prop_assert_eq!(tokenize(&quote(&w)), Ok(vec![w]));
    }

    #[test]
    fn quoted_words_joined_tokenize_back(words in prop::collection::vec(hostile_text(), 0..6)) {
        let line = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        prop_assert_eq!(tokenize(&line), Ok(words));
    }

    #[test]
    fn hostile_text_never_panics(s in hostile_text(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_command_line(&s);
        let _ = tokenize(&s);
        let _ = requested_name(&s, DOMAIN);
        let _ = normalize_host(&s);
        let creds = parse_command_line("http --basic-auth a:b");
        let Ok(Some(Command::Http(o))) = creds else { panic!("valid line") };
        let _ = basic_auth_allows(&o.basic_auth, Some(&bytes));
        let _ = basic_auth_allows(&o.basic_auth, Some(s.as_bytes()));
    }

    #[test]
    fn command_shaped_text_never_panics(
        words in prop::collection::vec(
            prop_oneof![
                Just("http".to_owned()), Just("tcp".to_owned()), Just("tls".to_owned()),
                Just("--basic-auth".to_owned()), Just("--inspect".to_owned()),
                Just("--proxy-proto".to_owned()), Just("--cidr-allow".to_owned()),
                Just("--host-header=".to_owned()), Just("--request-header-add".to_owned()),
                Just("'".to_owned()), Just("\"".to_owned()), Just("\\".to_owned()),
                Just("=".to_owned()), Just("true".to_owned()), hostile_text(),
            ],
            0..8,
        )
    ) {
        let line = words.join(" ");
        if let Ok(Some(c)) = parse_command_line(&line) {
            // Whatever parses renders to a line that parses to the same command.
            prop_assert_eq!(parse_command_line(&render(&c)), Ok(Some(c)));
        }
    }

    #[test]
    fn requested_names_are_valid_hosts_under_the_domain(s in hostile_text()) {
        if let Ok(Some(name)) = requested_name(&s, DOMAIN) {
            let name = name.as_str();
            prop_assert!(name.ends_with(".localhost"));
            prop_assert_eq!(normalize_host(name), Some(name.to_owned()));
            // A full name asks for itself.
            let again = requested_name(name, DOMAIN).map(|n| n.map(|n| n.as_str().to_owned()));
            prop_assert_eq!(again, Ok(Some(name.to_owned())));
        }
    }
}

// ---- random input sequences -------------------------------------------------------------------

const USERS: &[&str] = &["v2", "alice", "v9"];
const KEYS: &[&str] = &["k0", "k1", "k2"];
const BINDS: &[&str] = &[
    "",
    "localhost",
    "app",
    "app.localhost",
    "APP",
    "web",
    "web.localhost.",
    "Bad_Name",
    "x.example.com",
    "0.0.0.0",
];
const PORTS: &[u32] = &[0, 80, 443, 22, 30000, 30001, 30002, 30003];
const LINES: &[&str] = &[
    "http",
    "tcp",
    "tls",
    "",
    "help",
    "http --basic-auth a:b",
    "http --inspect=false",
    "tcp --proxy-proto 2",
    "tls --cidr-allow 10.0.0.0/8",
    "bogus",
    "http --proxy-proto 1",
    "'unterminated",
];
const STEPS_MS: &[u64] = &[1, 500, 1_000, 5_000, 31_000, 61_000];

#[derive(Clone, Debug)]
enum Op {
    Connect {
        ip: u8,
    },
    Auth {
        conn: usize,
        user: usize,
        key: usize,
    },
    Forward {
        conn: usize,
        bind: usize,
        port: usize,
    },
    Cancel {
        conn: usize,
        bind: usize,
        port: usize,
    },
    Exec {
        conn: usize,
        line: usize,
    },
    Shell {
        conn: usize,
    },
    CloseSession {
        conn: usize,
    },
    Type {
        conn: usize,
        byte: u8,
        terminal: bool,
    },
    Close {
        conn: usize,
    },
    FailBinds {
        port: usize,
        fail: bool,
    },
    Advance {
        step: usize,
    },
    /// The operator closes a connection.
    Kick {
        conn: usize,
    },
    /// The operator releases the n-th held address, live (refused) or reserved.
    Release {
        holding: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let conn = 0usize..8;
    prop_oneof![
        2 => (0u8..3).prop_map(|ip| Op::Connect { ip }),
        2 => (conn.clone(), 0..USERS.len(), 0..KEYS.len())
            .prop_map(|(conn, user, key)| Op::Auth { conn, user, key }),
        4 => (conn.clone(), 0..BINDS.len(), 0..PORTS.len())
            .prop_map(|(conn, bind, port)| Op::Forward { conn, bind, port }),
        1 => (conn.clone(), 0..BINDS.len(), 0..PORTS.len())
            .prop_map(|(conn, bind, port)| Op::Cancel { conn, bind, port }),
        2 => (conn.clone(), 0..LINES.len()).prop_map(|(conn, line)| Op::Exec { conn, line }),
        1 => conn.clone().prop_map(|conn| Op::Shell { conn }),
        1 => conn.clone().prop_map(|conn| Op::CloseSession { conn }),
        1 => (conn.clone(), prop_oneof![Just(b'x'), Just(3u8), Just(4u8)], any::<bool>())
            .prop_map(|(conn, byte, terminal)| Op::Type { conn, byte, terminal }),
        1 => conn.clone().prop_map(|conn| Op::Close { conn }),
        1 => (4usize..8, any::<bool>()).prop_map(|(port, fail)| Op::FailBinds { port, fail }),
        2 => (0..STEPS_MS.len()).prop_map(|step| Op::Advance { step }),
        1 => conn.clone().prop_map(|conn| Op::Kick { conn }),
        1 => (0usize..8).prop_map(|holding| Op::Release { holding }),
    ]
}

fn sequence_harness(seed: u64) -> Harness {
    Harness::builder()
        .seed(seed)
        .tcp_ports(30000..=30003)
        .name_grace(Duration::from_secs(60))
        .command_deadline(Duration::from_secs(1))
        .auth_timeout(Duration::from_secs(30))
        .limits(
            Limits::default()
                .with_endpoints_per_connection(3)
                .with_connections_per_key(3)
                .with_unauthenticated_per_ip(2)
                .with_bind_attempts(3),
        )
        .build()
}

fn run(h: &mut Harness, conns: &mut Vec<tunnel_core::ConnId>, op: &Op) {
    let pick =
        |conns: &Vec<tunnel_core::ConnId>, i: usize| conns.get(i % conns.len().max(1)).copied();
    match *op {
        Op::Connect { ip } => {
            let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, ip)), 1000);
            conns.push(h.connect_from(peer));
        }
        Op::Auth { conn, user, key } => {
            if let Some(c) = pick(conns, conn) {
                if !h.is_closed(c) {
                    h.auth(c, USERS[user], KEYS[key]);
                }
            }
        }
        Op::Forward { conn, bind, port } => {
            if let Some(c) = pick(conns, conn) {
                if !h.is_closed(c) {
                    h.forward(c, BINDS[bind], PORTS[port]);
                }
            }
        }
        Op::Cancel { conn, bind, port } => {
            if let Some(c) = pick(conns, conn) {
                if !h.is_closed(c) {
                    h.cancel(c, BINDS[bind], PORTS[port]);
                }
            }
        }
        Op::Exec { conn, line } => {
            if let Some(c) = pick(conns, conn) {
                if !h.is_closed(c) && !h.session(c).command_sent {
                    h.exec(c, LINES[line]);
                }
            }
        }
        Op::Shell { conn } => {
            if let Some(c) = pick(conns, conn) {
                if !h.is_closed(c) && !h.session(c).command_sent {
                    h.shell(c);
                }
            }
        }
        Op::CloseSession { conn } => {
            if let Some(c) = pick(conns, conn) {
                if !h.is_closed(c) {
                    h.close_session(c);
                }
            }
        }
        Op::Type {
            conn,
            byte,
            terminal,
        } => {
            if let Some(c) = pick(conns, conn) {
                if !h.is_closed(c) && h.session(c).command_sent {
                    h.feed(tunnel_core::Input::SessionData {
                        conn: c,
                        data: vec![byte],
                        terminal,
                    });
                }
            }
        }
        Op::Close { conn } => {
            if let Some(c) = pick(conns, conn) {
                h.close(c);
            }
        }
        Op::FailBinds { port, fail } => {
            let port = PORTS[port] as u16;
            if fail {
                h.fail_binds_on([port]);
            } else {
                h.allow_binds_on([port]);
            }
        }
        Op::Advance { step } => h.advance(Duration::from_millis(STEPS_MS[step])),
        Op::Kick { conn } => {
            if let Some(c) = pick(conns, conn) {
                h.feed(tunnel_core::Input::Kick {
                    conn: c,
                    reason: Some("test".to_owned()),
                });
            }
        }
        Op::Release { holding } => {
            let held: Vec<_> = h.gw.holders().map(|(a, _, _)| a.clone()).collect();
            if let Some(address) = held.get(holding % held.len().max(1)).cloned() {
                h.feed(tunnel_core::Input::Release { address });
            }
        }
    }
}

/// `PROPTEST_CASES` overrides the default, for longer runs.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn random_inputs_keep_the_invariants(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut h = sequence_harness(seed);
        let mut conns = Vec::new();
        for op in &ops {
            run(&mut h, &mut conns, op);
            h.check_invariants();
        }
        h.assert_no_leaks();
    }
}

// The same properties with more sessions going through full tunnels, so reservations,
// takeovers and reconnects happen often.
proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn random_tunnels_keep_the_invariants(
        seed in any::<u64>(),
        tunnels in prop::collection::vec(
            (
                0..KEYS.len(),
                prop::collection::vec((0..BINDS.len(), 0..PORTS.len()), 0..4),
                0..LINES.len(),
                any::<bool>(),
                0..STEPS_MS.len(),
            ),
            1..25,
        ),
    ) {
        let mut h = sequence_harness(seed);
        let mut open = Vec::new();
        for (key, forwards, line, close_one, step) in tunnels {
            let forwards: Vec<(&str, u32)> =
                forwards.iter().map(|(b, p)| (BINDS[*b], PORTS[*p])).collect();
            let (conn, _) = h.tunnel(KEYS[key], &forwards, LINES[line]);
            h.check_invariants();
            open.push(conn);
            if close_one && !open.is_empty() {
                let victim = open.remove(seed as usize % open.len());
                h.close(victim);
                h.check_invariants();
            }
            h.advance(Duration::from_millis(STEPS_MS[step]));
            h.check_invariants();
        }
        h.assert_no_leaks();
    }
}

#[test]
fn hostile_bind_addresses_and_commands_never_panic_the_gateway() {
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &(hostile_text(), hostile_text(), any::<u32>()),
            |(bind, line, port)| {
                let mut h = Harness::new();
                let (conn, reqs) = h.tunnel("alice", &[(&bind, port)], &line);
                h.check_invariants();
                if h.is_closed(conn) && h.reply(reqs[0]).is_none() {
                    return Err(proptest::test_runner::TestCaseError::fail(
                        "closed with the forward unanswered",
                    ));
                }
                h.assert_no_leaks();
                Ok(())
            },
        )
        .unwrap();
}
