//! The `authorized_keys` file of a running server changes: the live `ssh -R` of a key that was
//! removed is disconnected, a key that was added logs in, and the other keys' tunnels carry on,
//! with no restart: by itself (the file is polled) and on SIGHUP (with polling off).

use std::path::Path;

use tunnel_e2e::{server_stderr_lines, Client, Key, LocalService, Server, FAILURE_TIMEOUT};

/// Replaces the file as an operator should: a new file moved over the old one.
fn write_keys(path: &Path, keys: &[&Key]) {
    let text: String = keys.iter().map(|k| k.public_line() + "\n").collect();
    let new = path.with_extension("new");
    std::fs::write(&new, text).expect("write the new authorized_keys");
    std::fs::rename(&new, path).expect("move it over the old one");
}

fn tcp_tunnel(server: &Server, key: &Key, echo: &LocalService) -> Client {
    Client::builder(server)
        .key(key)
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn()
}

/// Alice and Bob are listed; the file is rewritten to list Bob and Carol, and `apply` makes the
/// server notice.
fn removed_key_is_cut_and_added_key_logs_in(poll: &str, apply: impl FnOnce(&Server)) {
    let (alice, bob, carol) = (Key::generate(), Key::generate(), Key::generate());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("authorized_keys");
    write_keys(&path, &[&alice, &bob]);
    let server = Server::start(&[
        "--authorized-keys",
        path.to_str().expect("utf-8 path"),
        "--authorized-keys-poll",
        poll,
    ]);
    let echo = LocalService::echo();
    let mut alices = tcp_tunnel(&server, &alice, &echo);
    alices.wait_forwarding();
    let mut bobs = tcp_tunnel(&server, &bob, &echo);
    let bob_port = bobs.wait_forwarding().public_port();
    let refused = tcp_tunnel(&server, &carol, &echo).wait_exit(FAILURE_TIMEOUT);
    assert_ne!(
        refused.code(),
        Some(0),
        "carol is not listed yet\n{refused}"
    );

    write_keys(&path, &[&bob, &carol]);
    apply(&server);

    // Alice's ssh ends by itself, told why.
    let out = alices.wait_exit(FAILURE_TIMEOUT);
    assert_ne!(out.code(), Some(0), "{out}");
    assert_eq!(
        server_stderr_lines(&out.stderr),
        ["your key was removed from this server's authorized keys; closing"],
        "{out}"
    );
    // Carol gets in (the list she is on is in force: alice's exit came from it).
    let mut carols = tcp_tunnel(&server, &carol, &echo);
    let carol_port = carols.wait_forwarding().public_port();
    carols.assert_echo(carol_port);
    // Bob never noticed.
    assert!(bobs.is_running(), "bob's tunnel must stay up");
    bobs.assert_echo(bob_port);
}

#[test]
fn a_changed_file_is_read_without_a_restart() {
    removed_key_is_cut_and_added_key_logs_in("1s", |_| {});
}

#[test]
fn sighup_rereads_the_file() {
    // Polling off: only the signal can make the server read the file again.
    removed_key_is_cut_and_added_key_logs_in("0", Server::hang_up);
}

#[test]
fn a_broken_or_missing_file_keeps_the_keys_in_force() {
    let (alice, bob) = (Key::generate(), Key::generate());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("authorized_keys");
    write_keys(&path, &[&alice]);
    let server = Server::start(&[
        "--authorized-keys",
        path.to_str().expect("utf-8 path"),
        "--authorized-keys-poll",
        "0",
    ]);
    let echo = LocalService::echo();
    let mut alices = tcp_tunnel(&server, &alice, &echo);
    let port = alices.wait_forwarding().public_port();

    // A line with an option the server does not enforce: refused as a whole, naming the line.
    std::fs::write(
        &path,
        format!(
            "{}\ncommand=\"tcp\" {}\n",
            bob.public_line(),
            bob.public_line()
        ),
    )
    .expect("write");
    server.hang_up();
    let error = server.wait_log_line(|l| l.contains("stay in force"), FAILURE_TIMEOUT);
    assert!(error.contains(":2: option command=\"tcp\""), "{error}");
    // Deleted: the same.
    std::fs::remove_file(&path).expect("remove");
    server.hang_up();
    server.wait_log_line(
        |l| l.contains("cannot read authorized keys file") && l.contains("stay in force"),
        FAILURE_TIMEOUT,
    );
    // Alice is still served, and may still log in; Bob may not.
    assert!(alices.is_running());
    alices.assert_echo(port);
    let mut again = tcp_tunnel(&server, &alice, &echo);
    again.wait_forwarding();
    let refused = tcp_tunnel(&server, &bob, &echo).wait_exit(FAILURE_TIMEOUT);
    assert_ne!(refused.code(), Some(0), "{refused}");
}
