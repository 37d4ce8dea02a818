//! The server's own command line and state: keys, host key, config file, refusing to start.

use std::process::{Command, Stdio};
use std::time::Duration;

use tunnel_e2e::{
    visitor, Client, Key, LocalService, PortLease, Server, FAILURE_TIMEOUT, SSH_KEYSCAN,
};

fn authorized_keys_file(server_dir: &std::path::Path, keys: &[&Key]) -> String {
    let path = server_dir.join("authorized_keys");
    let text: String = keys.iter().map(|k| k.public_line() + "\n").collect();
    std::fs::write(&path, text).expect("write authorized_keys");
    path.display().to_string()
}

#[test]
fn authorized_keys_accepts_a_listed_key_and_refuses_another() {
    let listed = Key::generate();
    let other = Key::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = authorized_keys_file(dir.path(), &[&listed]);
    let server = Server::start(&["--authorized-keys", &keys]);
    let echo = LocalService::echo();
    let forward = format!("0:localhost:{}", echo.port());

    let mut accepted = Client::builder(&server)
        .key(&listed)
        .forward(forward.clone())
        .command(["tcp"])
        .spawn();
    let port = accepted.wait_forwarding().public_port();
    accepted.assert_echo(port);

    let out = Client::builder(&server)
        .key(&other)
        .forward(forward)
        .command(["tcp"])
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);
    assert_ne!(
        out.code(),
        Some(0),
        "an unlisted key must be refused\n{out}"
    );
    assert!(
        out.stderr.iter().any(|l| l.contains("Permission denied")),
        "OpenSSH reports a refused key as 'Permission denied'\n{out}"
    );
    assert!(
        !out.stdout.iter().any(|l| l.starts_with("Forwarding ")),
        "{out}"
    );
}

/// The host keys `ssh-keyscan` sees, as sorted `TYPE BASE64` lines (the host field carries the
/// port, which changes across restarts).
fn host_keys(server: &Server) -> Vec<String> {
    let output = Command::new(SSH_KEYSCAN)
        .args(["-T", "10", "-p"])
        .arg(server.ssh_connect_addr().port().to_string())
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keyscan");
    let mut keys: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace().skip(1);
            Some(format!("{} {}", fields.next()?, fields.next()?))
        })
        .collect();
    keys.sort();
    assert!(
        !keys.is_empty(),
        "ssh-keyscan found no host key ({})\n{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    keys
}

#[test]
fn host_key_survives_a_restart() {
    let state = tempfile::tempdir().expect("temp dir");
    let server = Server::builder().state_dir(state.path()).start();
    let before = host_keys(&server);
    server.stop();

    let server = Server::builder().state_dir(state.path()).start();
    let after = host_keys(&server);

    assert_eq!(before, after, "the host key changed across a restart");
}

#[test]
fn two_state_dirs_have_different_host_keys() {
    // Guards the restart test: a server with a fixed built-in key would pass it.
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    assert_ne!(host_keys(&a), host_keys(&b));
}

#[test]
fn config_file_sets_domain_and_tcp_ports() {
    let lease = PortLease::acquire();
    let range = lease.range();
    let server = Server::builder()
        .omit("--tcp-ports")
        .config(&format!(
            "domain = \"example.test\"\ntcp-ports = \"{range}\"\n"
        ))
        .start();
    let echo = LocalService::echo();
    let mut client = Client::builder(&server)
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();

    let forwarding = client.wait_forwarding();

    assert_eq!(forwarding.host, "example.test", "{}", forwarding.line);
    let port = forwarding.public_port();
    assert!(
        range.contains(port),
        "port {port} outside {range} from the file"
    );
    client.assert_echo(port);
}

#[test]
fn flag_beats_config_file() {
    let server = Server::builder()
        .config("domain = \"file.test\"\n")
        .args(["--domain", "flag.test"])
        .start();
    let echo = LocalService::echo();
    let (_client, forwarding) = Client::tcp_tunnel(&server, echo.port(), &[]);

    assert_eq!(forwarding.host, "flag.test", "{}", forwarding.line);
}

#[test]
fn non_loopback_ssh_without_authorized_keys_refuses_to_start() {
    let out = Server::builder()
        .args(["--ssh-addr", "0.0.0.0:0"])
        .run_to_exit(FAILURE_TIMEOUT);

    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.iter().any(|l| l.contains("--authorized-keys")),
        "the error should say what is missing (--authorized-keys)\n{out}"
    );
}

#[test]
fn non_loopback_ssh_with_authorized_keys_starts() {
    let key = Key::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = authorized_keys_file(dir.path(), &[&key]);
    let server = Server::start(&["--ssh-addr", "0.0.0.0:0", "--authorized-keys", &keys]);
    let echo = LocalService::echo();

    let mut client = Client::builder(&server)
        .key(&key)
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn();
    let port = client.wait_forwarding().public_port();
    client.assert_echo(port);
}

#[test]
fn unknown_server_flag_exits_with_an_error() {
    let out = Server::builder()
        .arg("--no-such-flag")
        .run_to_exit(FAILURE_TIMEOUT);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr.iter().any(|l| l.contains("--no-such-flag")),
        "{out}"
    );
}

#[test]
fn server_is_killed_with_its_handle() {
    // The harness itself: a dropped Server leaves no listener behind.
    let server = Server::start(&[]);
    let port = server.ssh_connect_addr().port();
    drop(server);
    assert!(visitor::wait_until_refused(port, Duration::from_secs(10)));
}

#[test]
fn authorized_keys_options_are_honoured_or_refuse_start_up() {
    let elsewhere = Key::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    // from= a network this test never connects from: the key is refused here.
    let path = dir.path().join("authorized_keys");
    std::fs::write(
        &path,
        format!("from=\"10.0.0.0/8\" {}\n", elsewhere.public_line()),
    )
    .expect("write authorized_keys");
    let keys = path.display().to_string();
    let server = Server::start(&["--authorized-keys", &keys]);
    let echo = LocalService::echo();
    let out = Client::builder(&server)
        .key(&elsewhere)
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);
    assert!(
        out.stderr.iter().any(|l| l.contains("Permission denied")),
        "a key used outside its from= must be refused\n{out}"
    );
    drop(server);

    // An option the server cannot honour: it refuses to start, naming the line.
    std::fs::write(
        &path,
        format!("# team\ncommand=\"tcp\" {}\n", elsewhere.public_line()),
    )
    .expect("write authorized_keys");
    let out = Server::builder()
        .args(["--authorized-keys", keys.as_str()])
        .run_to_exit(FAILURE_TIMEOUT);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains(":2: option command=\"tcp\" is not enforced")),
        "{out}"
    );
}

#[test]
fn sighup_applies_what_can_change_live_names_what_waits_for_a_restart_and_drops_nobody() {
    let mut server = Server::builder()
        .config("max-tcp-ports-per-key = 4\n")
        .start();
    let local = LocalService::echo();
    let (mut client, _forwarding) = Client::tcp_tunnel(&server, local.port(), &[]);
    let file = server.work_dir().join("tunnel.toml");

    // The key's tcp port quota goes down to the one port it holds; the domain cannot change
    // under live names.
    std::fs::write(
        &file,
        "max-tcp-ports-per-key = 1\ndomain = \"elsewhere.localhost\"\n",
    )
    .expect("rewrite");
    server.send_signal("HUP");
    server.wait_log_line(
        |l| l.contains("SIGHUP: max-tcp-ports-per-key changed in") && l.contains("from now on"),
        FAILURE_TIMEOUT,
    );
    server.wait_log_line(
        |l| l.contains("SIGHUP: domain changed in") && l.contains("next restart"),
        FAILURE_TIMEOUT,
    );
    let refused = Client::builder(&server)
        .forward(format!("0:localhost:{}", local.port()))
        .command(["tcp"])
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);
    assert!(
        refused
            .stderr
            .iter()
            .any(|l| l.contains("already holds 1 tcp ports") && l.contains("quota")),
        "the lowered quota applies to the next forward\n{refused}"
    );
    assert!(client.is_running(), "what the key held stays held");
    // The domain stayed: a new http tunnel is still named under the old one.
    let mut http = Client::builder(&server)
        .forward(format!("web:80:localhost:{}", local.port()))
        .command(["http"])
        .spawn();
    let forwarding = http.wait_forwarding();
    assert!(forwarding.url.contains("web.localhost"), "{forwarding:?}");

    // A file that no longer validates is named, and the server runs on as it was.
    std::fs::write(&file, "max-visitors = \"many\"\n").expect("rewrite");
    server.send_signal("HUP");
    server.wait_log_line(
        |l| l.contains("the config file was not taken"),
        FAILURE_TIMEOUT,
    );
    assert!(server.is_running());
    assert!(client.is_running(), "a reload drops no connection");
}
