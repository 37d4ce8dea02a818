//! The command line after the host: help, and the plumbing of a refusal.
//!
//! The grammar's refusals themselves (every bad token, its line, its exit status) are core's:
//! `core/tests/commands.rs`, `core/tests/messages.rs` and their snapshots. Here three refusals
//! prove they reach a user of stock OpenSSH: one stderr line naming the bad token and pointing
//! at `--help`, exit status 2 for a malformed command line and 1 for a refusal, and a
//! neighbour's tunnel left working.

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

/// Runs `ssh -o ExitOnForwardFailure=EXIT_ON_FORWARD_FAILURE -R FORWARD 127.0.0.1 COMMAND...`
/// and checks the refusal: one server line on stderr naming `token` and pointing at `--help`,
/// no forwarding, and exit status `status`.
fn assert_refused(
    server: &Server,
    exit_on_forward_failure: &str,
    forward: &str,
    command: &[&str],
    token: &str,
    status: i32,
) {
    let out = Client::builder(server)
        .option("ExitOnForwardFailure", exit_on_forward_failure)
        .forward(forward)
        .command(command.iter().copied())
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);
    assert_one_error_line(&out, token);
    assert_eq!(out.code(), Some(status), "the exit status\n{out}");
}

fn echo_forward(rport: impl std::fmt::Display) -> (LocalService, String) {
    let echo = LocalService::echo();
    let spec = format!("{rport}:localhost:{}", echo.port());
    (echo, spec)
}

#[test]
fn a_malformed_command_line_exits_2() {
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(0);
    assert_refused(
        &server,
        "no",
        &forward,
        &["tcp", "--frobnicate"],
        "--frobnicate",
        2,
    );
}

#[test]
fn a_refused_forward_exits_1_even_with_exit_on_forward_failure() {
    // With ExitOnForwardFailure=yes (the autossh setting) OpenSSH exits as soon as a forward
    // request fails; the explanation must still reach the user.
    let server = Server::start(&[]);
    let (_echo, forward) = echo_forward(22);
    assert_refused(&server, "yes", &forward, &["http"], "22", 1);
}

#[test]
fn a_refused_session_leaves_a_neighbour_working() {
    let server = Server::start(&[]);
    let neighbour = Neighbour::open(&server);
    // Remote port 0 may be tcp, so the server binds a provisional listener before the command
    // refuses; releasing it must not disturb the neighbour's.
    let (_echo, forward) = echo_forward(0);
    assert_refused(&server, "no", &forward, &["frobnicate"], "frobnicate", 2);
    neighbour.assert_still_works(&server);
}

#[test]
fn list_shows_a_users_endpoints_and_release_gives_a_reservation_back() {
    let server = Server::start(&[]);
    let local = LocalService::echo();
    let mut web = Client::builder(&server)
        .forward(format!("app:80:localhost:{}", local.port()))
        .command(["http"])
        .spawn();
    let forwarding = web.wait_forwarding();
    let list = || Client::spawn(&server, &[], &["list"], None).wait_exit(FAILURE_TIMEOUT);

    let out = list();
    assert_eq!(out.code(), Some(0), "{out}");
    let url = forwarding.url.clone();
    assert!(
        out.stdout
            .iter()
            .any(|l| l.starts_with(&url) && l.ends_with("live")),
        "{out}"
    );

    // The tunnel's client goes: its name stays reserved for the key, and list says for how long.
    drop(web);
    let deadline = std::time::Instant::now() + FAILURE_TIMEOUT;
    let reserved = loop {
        let out = list();
        if out
            .stdout
            .iter()
            .any(|l| l.starts_with("app.localhost") && l.contains("reserved for"))
        {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
    };
    assert!(reserved, "the name never showed as reserved");
    let out = Client::spawn(&server, &[], &["release", "app"], None).wait_exit(FAILURE_TIMEOUT);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, ["released app.localhost"]);
    let out = list();
    assert_eq!(
        out.stdout,
        ["Nothing is live or reserved for your key."],
        "{out}"
    );
}

#[test]
fn an_operator_key_lists_connections_and_kicks_one_over_ssh() {
    let admin = tunnel_e2e::Key::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let admins = dir.path().join("admins");
    std::fs::write(&admins, admin.public_line()).expect("write the admin keys");
    let server = Server::builder()
        .args(["--admin-keys".to_owned(), admins.display().to_string()])
        .start();
    let local = LocalService::echo();
    let mut user = Client::builder(&server)
        .forward(format!("app:80:localhost:{}", local.port()))
        .command(["http"])
        .spawn();
    let forwarding = user.wait_forwarding();
    let as_admin = |words: &[&str]| {
        Client::builder(&server)
            .key(&admin)
            .command(words.iter().copied())
            .spawn()
            .wait_exit(FAILURE_TIMEOUT)
    };

    let out = as_admin(&["admin", "connections"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let row = out
        .stdout
        .iter()
        .find(|l| l.ends_with(&forwarding.url))
        .unwrap_or_else(|| panic!("no row for the user's connection\n{out}"));
    let number = row
        .split_whitespace()
        .next()
        .and_then(|id| id.strip_prefix("conn#"))
        .expect("the row starts with the connection")
        .to_owned();

    let out = as_admin(&["admin", "kick", &number, "maintenance"]);
    assert_eq!(out.stdout, [format!("kicked conn#{number}")], "{out}");
    let ended = user.wait_exit(FAILURE_TIMEOUT);
    assert!(
        ended
            .stderr
            .iter()
            .any(|l| l == "disconnected by the operator: maintenance"),
        "{ended}"
    );

    // Any other key is refused.
    let out =
        Client::spawn(&server, &[], &["admin", "connections"], None).wait_exit(FAILURE_TIMEOUT);
    assert_eq!(out.code(), Some(1), "{out}");
    assert_one_error_line(
        &out,
        "admin commands need a key listed in the server's --admin-keys",
    );
}
