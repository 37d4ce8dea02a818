//! The command line after the host: help, and every kind of bad input.
//!
//! Each refusal must be one stderr line naming the bad token and pointing at `--help`, a
//! non-zero exit, and must leave the server and a neighbour's tunnel working.

use tunnel_e2e::{
    assert_one_error_line, Client, ExitOutput, Forwarding, LocalService, Server, FAILURE_TIMEOUT,
};

fn assert_usage(out: &ExitOutput) {
    assert_eq!(out.code(), Some(0), "help must exit 0\n{out}");
    let usage = out.stdout.join("\n");
    for word in ["http", "tcp", "tls"] {
        assert!(
            tunnel_e2e::names_token(&usage, word),
            "usage on stdout should name the {word} command\n{out}"
        );
    }
}

#[test]
fn help_command_prints_usage() {
    let server = Server::start(&[]);
    let out = Client::spawn(&server, &[], &["help"], None).wait_exit(FAILURE_TIMEOUT);
    assert_usage(&out);
}

#[test]
fn dash_dash_help_prints_usage() {
    let server = Server::start(&[]);
    // `ssh host --help` would be read by ssh itself; users type `ssh host -- --help`.
    let out = Client::spawn(&server, &[], &["--", "--help"], None).wait_exit(FAILURE_TIMEOUT);
    assert_usage(&out);
}

#[test]
fn help_after_a_tcp_forward_prints_usage() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();
    let out = Client::builder(&server)
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["help"])
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);
    assert_usage(&out);
}

/// A neighbour's tunnel on its own connection, opened before the bad input.
struct Neighbour {
    _echo: LocalService,
    client: Client,
    forwarding: Forwarding,
}

impl Neighbour {
    fn open(server: &Server) -> Neighbour {
        let echo = LocalService::echo();
        let (client, forwarding) = Client::tcp_tunnel(server, echo.port(), &[]);
        client.assert_echo(forwarding.public_port());
        Neighbour {
            _echo: echo,
            client,
            forwarding,
        }
    }

    fn assert_still_works(&self, server: &Server) {
        self.client.assert_echo(self.forwarding.public_port());
        // And the server still takes new tunnels.
        let echo = LocalService::echo();
        let (client, forwarding) = Client::tcp_tunnel(server, echo.port(), &[]);
        client.assert_echo(forwarding.public_port());
    }
}

/// Runs `ssh -R FORWARD 127.0.0.1 COMMAND...` next to a neighbour's tunnel and checks the
/// refusal names `token`. Uses OpenSSH's default `ExitOnForwardFailure=no`, as a user typing
/// the command has it.
fn assert_refused(server: &Server, forward: &str, command: &[&str], token: &str) -> String {
    assert_refused_with(server, "no", forward, command, token)
}

/// [`assert_refused`] with the given `ExitOnForwardFailure` (autossh users set `yes`).
fn assert_refused_with(
    server: &Server,
    exit_on_forward_failure: &str,
    forward: &str,
    command: &[&str],
    token: &str,
) -> String {
    let neighbour = Neighbour::open(server);
    let out = Client::builder(server)
        .option("ExitOnForwardFailure", exit_on_forward_failure)
        .forward(forward)
        .command(command.iter().copied())
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);
    let line = assert_one_error_line(&out, token);
    neighbour.assert_still_works(server);
    line
}

fn echo_forward(rport: impl std::fmt::Display) -> (LocalService, String) {
    let echo = LocalService::echo();
    let spec = format!("{rport}:localhost:{}", echo.port());
    (echo, spec)
}

#[test]
fn unknown_command_is_refused() {
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(0);
    assert_refused(&server, &forward, &["frobnicate"], "frobnicate");
}

#[test]
fn unknown_flag_is_refused() {
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(0);
    assert_refused(&server, &forward, &["tcp", "--frobnicate"], "--frobnicate");
}

#[test]
fn malformed_flag_value_is_refused() {
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(0);
    assert_refused(&server, &forward, &["tcp", "--proxy-proto", "3"], "3");
}

#[test]
fn malformed_flag_value_with_equals_is_refused() {
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(0);
    assert_refused(&server, &forward, &["tcp", "--proxy-proto=9"], "9");
}

#[test]
fn flag_of_another_command_is_refused() {
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(0);
    assert_refused(
        &server,
        &forward,
        &["tcp", "--basic-auth", "a:b"],
        "--basic-auth",
    );
}

#[test]
fn tls_without_a_name_is_refused() {
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(443);
    // The problem is the missing name.
    assert_refused(&server, &forward, &["tls"], "name");
}

#[test]
fn http_on_port_22_is_refused() {
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(22);
    assert_refused(&server, &forward, &["http"], "22");
}

#[test]
fn forbidden_port_is_explained_with_exit_on_forward_failure() {
    // With ExitOnForwardFailure=yes (the autossh setting) OpenSSH exits as soon as a forward
    // request fails; the explanation must still reach the user.
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(22);
    assert_refused_with(&server, "yes", &forward, &["http"], "22");
}

#[test]
fn tls_on_port_80_is_refused() {
    let server = Server::start(&[]);
    let echo = LocalService::echo();
    // Named, so the port is the only problem.
    let forward = format!("app:80:localhost:{}", echo.port());
    assert_refused(&server, &forward, &["tls"], "80");
}

#[test]
fn tcp_port_outside_the_range_is_refused() {
    let server = Server::start(&[]);
    let outside = server.tcp_ports().hi + 1;
    let (_echo, forward) = echo_forward(outside);
    assert_refused(&server, &forward, &["tcp"], &outside.to_string());
}

#[test]
fn unsupported_syntax_version_is_refused_naming_v2() {
    let server = Server::start(&[]);
    let neighbour = Neighbour::open(&server);
    let echo = LocalService::echo();
    // At the default log level, so the message shows whichever way the server sends it
    // (session stderr, auth banner or disconnect reason).
    let out = Client::builder(&server)
        .option("LogLevel", "INFO")
        .option("ExitOnForwardFailure", "no")
        .user("v9")
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);

    assert_ne!(out.code(), Some(0), "v9 must be refused\n{out}");
    assert!(
        out.stderr.iter().any(|l| tunnel_e2e::names_token(l, "v2")),
        "the refusal must name the supported version v2\n{out}"
    );
    assert!(
        !out.stdout.iter().any(|l| l.starts_with("Forwarding ")),
        "no forwarding for v9\n{out}"
    );
    neighbour.assert_still_works(&server);
}
