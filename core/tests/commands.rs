//! The exec command line as the user types it: help, the user/version rule, quoting, flags, and
//! every kind of bad input ending the session with one clear line.

mod harness;

use harness::Harness;
use tunnel_core::command::testing::tokenize;
use tunnel_core::command::{
    parse_command_line, Command, EndpointKind, HostHeader, ProxyVersion, HELP,
};
use tunnel_core::{basic_auth_allows, EndpointPolicy, OutputStream, Reply};

// ---- help -------------------------------------------------------------------------------------

#[test]
fn help_prints_usage_and_exits_zero() {
    for line in [
        "help",
        "--help",
        "-h",
        "http --help",
        "tcp --cidr-allow 10.0.0.0/8 -h",
    ] {
        let mut h = Harness::new();
        let (conn, reqs) = h.tunnel("alice", &[("localhost", 80)], line);
        // Answered before the command: a grant, whatever the command then says.
        assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
        assert_eq!(h.stdout(conn).join("\n"), HELP.trim_end(), "{line}");
        assert!(h.stderr(conn).is_empty(), "{line}: {:?}", h.stderr(conn));
        assert_eq!(h.exit_status(conn), Some(0), "{line}");
        assert!(h.is_closed(conn));
        assert_eq!(h.gw.route_count(), 0, "help creates no endpoint");
        h.assert_no_leaks();
    }
}

#[test]
fn help_needs_no_forward() {
    // `ssh host help`, no -R at all.
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[], "help");
    assert_eq!(h.exit_status(conn), Some(0));
    assert_eq!(h.stdout(conn).len(), HELP.lines().count());
    h.assert_no_leaks();
}

#[test]
fn help_text() {
    insta::assert_snapshot!("help", HELP);
}

// ---- the user/version rule --------------------------------------------------------------------

#[test]
fn v2_and_login_names_speak_the_latest_syntax() {
    for user in ["v2", "alice", "root", "v", "vx2", "V9", "version"] {
        let mut h = Harness::new();
        let conn = h.connect();
        assert!(h.auth(conn, user, "alice"));
        h.forward(conn, "app", 80);
        h.exec(conn, "http");
        assert_eq!(h.stderr(conn), [] as [&str; 0], "user {user}");
        assert_eq!(h.forwarding_lines(conn).len(), 1, "user {user}");
        h.assert_no_leaks();
    }
}

#[test]
fn other_versions_are_refused_naming_v2() {
    for user in ["v9", "v1", "v3", "v10", "v02"] {
        let mut h = Harness::new();
        let conn = h.connect();
        // The key is fine; the refusal is the session's, with a line the user can read.
        assert!(h.auth(conn, user, "alice"));
        let req = h.forward(conn, "app", 80);
        // Held replies are refused with the line; an early reply is a grant so that even a
        // client with ExitOnForwardFailure stays to read the line.
        let expected = Reply::Granted { port: None };
        assert_eq!(h.reply(req), Some(expected), "{user}");
        h.exec(conn, "http");
        assert_eq!(h.stderr(conn).len(), 1);
        let line = &h.stderr(conn)[0];
        assert!(line.contains(&format!("\"{user}\"")), "{line}");
        assert!(line.contains("v2"), "{line}");
        assert!(line.contains("--help"), "{line}");
        assert_eq!(h.exit_status(conn), Some(1));
        assert!(h.is_closed(conn));
        assert_eq!(h.gw.route_count(), 0);
        h.assert_no_leaks();
    }
    let mut h = Harness::new();
    let conn = h.connect();
    h.auth(conn, "v9", "alice");
    h.forward(conn, "app", 80);
    h.exec(conn, "http");
    insta::assert_snapshot!(h.stderr(conn)[0], @r#"error: syntax version "v9" is not supported; this server speaks v2 (use v2@HOST or any other user) (see --help: ssh HOST help)"#);
}

// ---- quoting and flag syntax ------------------------------------------------------------------

#[test]
fn quoted_basic_auth_with_spaces_works() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], r#"http --basic-auth 'a b:c d'"#);
    let route = &h.routes_of(conn)[0];
    let http = route.policy.http().expect("an http endpoint");
    assert_eq!(http.basic_auth.len(), 1);
    assert_eq!(http.basic_auth[0].user(), "a b");
    assert!(basic_auth_allows(
        &http.basic_auth,
        Some(b"Basic YSBiOmMgZA==") // "a b:c d"
    ));
    assert!(!basic_auth_allows(&http.basic_auth, Some(b"Basic YTpi")));
    h.assert_no_leaks();
}

#[test]
fn flag_value_and_flag_equals_value_mean_the_same() {
    let pairs = [
        ("http --basic-auth a:b", "http --basic-auth=a:b"),
        ("tcp --proxy-proto 2", "tcp --proxy-proto=2"),
        ("http --host-header rewrite", "http --host-header=rewrite"),
        ("http --inspect false", "http --inspect=false"),
        ("tls --cidr-deny 10.0.0.0/8", "tls --cidr-deny=10.0.0.0/8"),
        (
            "http --request-header-add 'X-A: 1'",
            "http --request-header-add='X-A: 1'",
        ),
    ];
    for (spaced, joined) in pairs {
        let a = parse_command_line(spaced).unwrap();
        assert!(a.is_some());
        assert_eq!(a, parse_command_line(joined).unwrap(), "{spaced}");
    }
}

#[test]
fn posix_like_tokenising() {
    let cases: &[(&str, &[&str])] = &[
        ("http", &["http"]),
        ("  http   --inspect  ", &["http", "--inspect"]),
        ("a'b c'd", &["ab cd"]),
        (r#""a \"b\" \\ \$ \x""#, &[r#"a "b" \ $ \x"#]),
        (r"a\ b", &["a b"]),
        ("''", &[""]),
        ("'\"'", &["\""]),
        ("\"'\"", &["'"]),
        ("héllo wörld", &["héllo", "wörld"]),
        ("a\tb\nc", &["a", "b", "c"]),
    ];
    for (line, words) in cases {
        assert_eq!(tokenize(line).unwrap(), *words, "{line:?}");
    }
}

#[test]
fn every_flag_is_parsed_into_the_command() {
    let line = "http --basic-auth u:p --basic-auth 'v:w:x' --cidr-allow 10.1.2.3/8 \
                --cidr-deny 10.9.0.0/16 --cidr-allow ::1 --host-header example.com:81 \
                --request-header-add 'X-One: 1 2' --request-header-remove Cookie \
                --response-header-add 'X-Two:' --response-header-remove Server --inspect=false";
    let Some(Command::Http(o)) = parse_command_line(line).unwrap() else {
        panic!("http");
    };
    let users: Vec<&str> = o.basic_auth.iter().map(|c| c.user()).collect();
    assert_eq!(users, ["u", "v"]);
    assert!(basic_auth_allows(&o.basic_auth, Some(b"Basic djp3Ong="))); // v:w:x
    let allow: Vec<String> = o.access.allow.iter().map(|n| n.to_string()).collect();
    assert_eq!(allow, ["10.0.0.0/8", "::1/128"], "networks are truncated");
    assert_eq!(o.access.deny[0].to_string(), "10.9.0.0/16");
    assert_eq!(o.host_header, HostHeader::Literal("example.com:81".into()));
    assert_eq!(o.request_headers.add[0].0.as_str(), "X-One");
    assert_eq!(o.request_headers.add[0].1, "1 2");
    assert_eq!(o.request_headers.remove[0].as_str(), "Cookie");
    assert_eq!(o.response_headers.add[0].1, "");
    assert_eq!(o.response_headers.remove[0].as_str(), "Server");
    assert!(!o.inspect);

    let Some(Command::Tls(s)) = parse_command_line("tls --proxy-proto 1").unwrap() else {
        panic!("tls");
    };
    assert_eq!(s.proxy_protocol, Some(ProxyVersion::V1));
    assert_eq!(parse_command_line("").unwrap(), None);
    assert_eq!(parse_command_line("   ").unwrap(), None);
    let Some(Command::Http(o)) = parse_command_line("http --inspect").unwrap() else {
        panic!("http");
    };
    assert!(o.inspect);
}

#[test]
fn host_header_literals_may_start_like_keywords() {
    for host in [
        "preserved.example",
        "rewriter:8080",
        "preserve-me",
        "rewrite.local",
    ] {
        let line = format!("http --host-header {host}");
        let parsed = parse_command_line(&line);
        let Ok(Some(Command::Http(o))) = parsed else {
            panic!("{line}: {parsed:?}");
        };
        assert_eq!(o.host_header, HostHeader::Literal(host.into()));
    }
}

#[test]
fn the_command_reaches_the_endpoint_policy() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("localhost", 0)], "tcp --proxy-proto 2");
    let route = &h.routes_of(conn)[0];
    assert_eq!(route.policy.kind(), EndpointKind::Tcp);
    assert_eq!(route.policy.proxy_protocol(), Some(ProxyVersion::V2));
    assert!(matches!(route.policy, EndpointPolicy::Tcp(_)));
    h.assert_no_leaks();
}

// ---- bad input --------------------------------------------------------------------------------

/// Every kind of bad command line: `(line, token the error must name, exit status)`.
const BAD_LINES: &[(&str, &str, u32)] = &[
    ("https", "\"https\"", 2),
    ("http --bogus", "\"--bogus\"", 2),
    ("tcp --basic-auth a:b", "\"--basic-auth\"", 2),
    ("http --proxy-proto 1", "\"--proxy-proto\"", 2),
    ("tls --host-header rewrite", "\"--host-header\"", 2),
    ("http --basic-auth nocolon", "\"nocolon\"", 2),
    ("http --basic-auth :nouser", "\":nouser\"", 2),
    ("http --inspect=maybe", "\"maybe\"", 2),
    ("tcp --proxy-proto 3", "\"3\"", 2),
    ("http --cidr-allow 10.0.0.0/33", "\"10.0.0.0/33\"", 2),
    ("http --cidr-deny example.com", "\"example.com\"", 2),
    ("http --request-header-add 'X-A'", "\"X-A\"", 2),
    ("http --request-header-remove 'Bad Name'", "\"Bad Name\"", 2),
    ("http --host-header 'a b'", "\"a b\"", 2),
    ("http --basic-auth", "\"--basic-auth\"", 2),
    (
        "http --host-header rewrite --host-header preserve",
        "--host-header",
        2,
    ),
    ("tcp --proxy-proto 1 --proxy-proto 2", "--proxy-proto", 2),
    ("http --inspect --inspect", "--inspect", 2),
    ("http extra", "\"extra\"", 2),
    ("http -x", "\"-x\"", 2),
    ("--basic-auth a:b", "\"--basic-auth\"", 2),
    ("http --basic-auth 'a:b", "single quote", 2),
    ("http --basic-auth \"a:b", "double quote", 2),
    ("http \\", "backslash", 2),
    ("http\x1b[2J", "\\u{1b}", 2),
];

#[test]
fn every_bad_line_ends_the_session_with_one_line_naming_the_token() {
    for (line, token, status) in BAD_LINES {
        let mut h = Harness::new();
        // A neighbour keeps working through it.
        let (neighbour, _) = h.tunnel("bob", &[("neighbour", 80)], "http");
        let (conn, reqs) = h.tunnel("alice", &[("localhost", 80)], line);
        assert_eq!(h.reply(reqs[0]), Some(Reply::Granted { port: None }));
        let err = h.stderr(conn);
        assert_eq!(err.len(), 1, "{line}: {err:?}");
        assert!(err[0].contains(token), "{line}: {} lacks {token}", err[0]);
        assert!(err[0].contains("--help"), "{}", err[0]);
        assert_eq!(h.exit_status(conn), Some(*status), "{line}");
        assert!(h.is_closed(conn) && h.session(conn).closed_by_server);
        assert!(h.forwarding_lines(conn).is_empty());
        assert_eq!(h.routes_of(conn).len(), 0);
        assert!(!h.is_closed(neighbour));
        assert!(h.gw.route_by_host("neighbour.localhost").is_some());
        h.assert_no_leaks();
    }
}

#[test]
fn bad_lines_as_the_user_reads_them() {
    let mut out = String::new();
    for (line, _, _) in BAD_LINES {
        let mut h = Harness::new();
        let (conn, _) = h.tunnel("alice", &[("localhost", 80)], line);
        out.push_str(&format!(
            "$ ssh host {line:?}\n{}\n[exit {}]\n\n",
            h.stderr(conn).join("\n"),
            h.exit_status(conn).unwrap()
        ));
    }
    insta::assert_snapshot!("bad_lines", out);
}

#[test]
fn a_command_with_no_forward_is_refused() {
    for command in ["http", ""] {
        let mut h = Harness::new();
        let (conn, _) = h.tunnel("alice", &[], command);
        assert_eq!(h.stderr(conn).len(), 1, "{command:?}");
        assert!(h.stderr(conn)[0].contains("-R"), "{}", h.stderr(conn)[0]);
        assert_eq!(h.exit_status(conn), Some(1));
        assert!(h.is_closed(conn));
        h.assert_no_leaks();
    }
}

#[test]
fn a_second_command_is_refused() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel("alice", &[("app", 80)], "http");
    h.exec(conn, "tcp");
    assert_eq!(
        h.stderr(conn),
        ["error: one command per connection (see --help: ssh HOST help)"]
    );
    assert_eq!(h.exit_status(conn), Some(1));
    assert_eq!(h.gw.route_count(), 0);
    h.assert_no_leaks();
}

#[test]
fn error_lines_go_to_stderr_only() {
    let mut h = Harness::new();
    let mark = h.log.len();
    let (conn, _) = h.tunnel("alice", &[("localhost", 80)], "bogus");
    let streams: Vec<OutputStream> = h
        .actions_since(mark)
        .iter()
        .filter_map(|a| match a {
            tunnel_core::Action::Print { stream, .. } => Some(*stream),
            _ => None,
        })
        .collect();
    assert_eq!(streams, [OutputStream::Stderr]);
    assert!(h.stdout(conn).is_empty());
    h.assert_no_leaks();
}
