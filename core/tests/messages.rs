//! Everything the user reads, as snapshots: each error's line, and the Forwarding lines.

mod harness;

use harness::Harness;
use tunnel_core::command::EndpointKind;
use tunnel_core::{CommandError, ForwardError, SessionError, Shown};

fn every_error() -> Vec<SessionError> {
    let command = [
        CommandError::UnterminatedQuote("single"),
        CommandError::UnterminatedQuote("double"),
        CommandError::TrailingBackslash,
        CommandError::UnknownCommand("https".into()),
        CommandError::MissingCommand("--inspect".into()),
        CommandError::UnknownFlag {
            flag: "--bogus".into(),
            command: EndpointKind::Http,
            applies_to: &[],
        },
        CommandError::UnknownFlag {
            flag: "--proxy-proto".into(),
            command: EndpointKind::Http,
            applies_to: &[EndpointKind::Tcp, EndpointKind::Tls],
        },
        CommandError::MissingValue("--basic-auth".into()),
        CommandError::InvalidValue {
            flag: "--inspect",
            value: "maybe".into(),
            reason: "expected true or false",
        },
        CommandError::Repeated("--host-header"),
        CommandError::UnexpectedArgument("extra".into()),
    ];
    let forward = [
        ForwardError::PortNotAllowed {
            kind: EndpointKind::Http,
            port: 22,
            tcp_range: (20000, 20999),
        },
        ForwardError::PortNotAllowed {
            kind: EndpointKind::Tls,
            port: 80,
            tcp_range: (20000, 20999),
        },
        ForwardError::PortNotAllowed {
            kind: EndpointKind::Tcp,
            port: 80,
            tcp_range: (20000, 20999),
        },
        ForwardError::PortInUse(20007),
        ForwardError::PortsExhausted((20000, 20999)),
        ForwardError::PortReserved(20007),
        ForwardError::NoFreeName,
        ForwardError::BindFailed(20007),
        ForwardError::NameTaken("app.localhost".into()),
        ForwardError::NameReserved("app.localhost".into()),
        ForwardError::NameInvalid {
            name: "-app".into(),
            reason: "a label cannot start or end with '-'",
        },
        ForwardError::TlsNeedsName,
        ForwardError::TooManyEndpoints(64),
        ForwardError::TooManyConnections(1024),
        ForwardError::NotAuthenticated,
        ForwardError::Duplicate("app".into(), 80),
    ];
    let session = [
        SessionError::UnsupportedVersion("v9".into()),
        SessionError::NoForwards,
        SessionError::CommandTooLate,
        SessionError::SecondCommand,
    ];
    command
        .into_iter()
        .map(SessionError::from)
        .chain(forward.into_iter().map(SessionError::from))
        .chain(session)
        .collect()
}

#[test]
fn every_error_user_line() {
    let lines: Vec<String> = every_error()
        .iter()
        .map(|e| format!("[{}] {}", e.exit_status(), e.user_line()))
        .collect();
    insta::assert_snapshot!("error_lines", lines.join("\n"));
}

#[test]
fn every_error_line_is_one_line_pointing_at_help() {
    for e in every_error() {
        let line = e.user_line();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.ends_with("(see --help: ssh HOST help)"), "{line}");
        assert_ne!(e.exit_status(), 0);
    }
}

#[test]
fn hostile_tokens_are_escaped_and_cut() {
    let shown = Shown("a\nb\x1b[31m\u{7f}".into()).to_string();
    insta::assert_snapshot!(shown, @r#""a\nb\u{1b}[31m\u{7f}""#);
    let long = Shown("x".repeat(100)).to_string();
    assert_eq!(long, format!("\"{}...\"", "x".repeat(64)));
    let line =
        SessionError::from(CommandError::UnknownCommand(Shown("evil\r\nline".into()))).user_line();
    assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
}

#[test]
fn forwarding_lines() {
    let mut h = Harness::new();
    let (conn, _) = h.tunnel(
        "alice",
        &[
            ("localhost", 80),
            ("web", 443),
            ("", 0),
            ("api.localhost", 80),
        ],
        "http",
    );
    let (tcp, _) = h.tunnel(
        "alice",
        &[("localhost", 0), ("0.0.0.0", 20007), ("::1", 0)],
        "tcp",
    );
    let (tls, _) = h.tunnel("alice", &[("app.localhost", 443), ("secure", 0)], "tls");
    let lines: Vec<&str> = [conn, tcp, tls]
        .iter()
        .flat_map(|c| h.forwarding_lines(*c))
        .collect();
    insta::assert_snapshot!("forwarding_lines", lines.join("\n"));
    h.assert_no_leaks();
}

#[test]
fn forwarding_lines_on_default_ports_omit_the_port() {
    // Public ports 80/443, as behind a real deployment.
    let mut h = Harness::builder()
        .server("tunnel.example.com", 80, 443)
        .build();
    let (conn, _) = h.tunnel("alice", &[("app", 80), ("app2", 443), ("", 0)], "http");
    let (tls, _) = h.tunnel("alice", &[("sec", 443)], "tls");
    let (tcp, _) = h.tunnel("alice", &[("localhost", 0)], "tcp");
    let lines: Vec<&str> = [conn, tls, tcp]
        .iter()
        .flat_map(|c| h.forwarding_lines(*c))
        .collect();
    insta::assert_snapshot!(lines.join("\n"), @r"
    Forwarding http://app.tunnel.example.com -> app:80
    Forwarding https://app2.tunnel.example.com -> app2:443
    Forwarding http://hqw5nflc.tunnel.example.com -> :0
    Forwarding tls://sec.tunnel.example.com -> sec:443
    Forwarding tcp://tunnel.example.com:20001 -> localhost:0
    ");
    h.assert_no_leaks();
}
