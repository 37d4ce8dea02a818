//! OpenSSH user certificates: a key signed by a `cert-authority` line's CA logs in with the
//! real ssh client and gets its forward; certificates the server must not honour are refused,
//! each the way the user sees it.

use tunnel_e2e::{
    assert_one_error_line, Client, ExitOutput, Key, LocalService, Server, FAILURE_TIMEOUT,
};

fn tcp_tunnel(server: &Server, key: &Key, echo: &LocalService) -> Client {
    Client::builder(server)
        .key(key)
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn()
}

/// A new user key with a certificate from `ca`.
fn certified(ca: &Key, key_id: &str, args: &[&str]) -> Key {
    let user = Key::generate();
    ca.sign(&user, key_id, args);
    user
}

fn assert_denied(out: &ExitOutput) {
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr.iter().any(|l| l.contains("Permission denied")),
        "the login must be refused\n{out}"
    );
}

#[test]
fn certificates_of_a_cert_authority_log_in_and_the_others_are_refused() {
    let (ca, ops_ca, stranger_ca) = (Key::generate(), Key::generate(), Key::generate());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("authorized_keys");
    std::fs::write(
        &path,
        format!(
            "cert-authority {}\ncert-authority,principals=\"ops\" {}\n",
            ca.public_line(),
            ops_ca.public_line()
        ),
    )
    .expect("write authorized_keys");
    let server = Server::start(&["--authorized-keys", path.to_str().expect("utf-8 path")]);
    let echo = LocalService::echo();

    // `ssh-keygen -s ca -I alice -n alice user.pub`: in, and forwarding.
    let alice = certified(&ca, "alice", &["-n", "alice"]);
    let mut client = tcp_tunnel(&server, &alice, &echo);
    let port = client.wait_forwarding().public_port();
    client.assert_echo(port);
    drop(client);

    // Signed by a CA that is not listed.
    let stranger = certified(&stranger_ca, "mallory", &["-n", "alice"]);
    assert_denied(&tcp_tunnel(&server, &stranger, &echo).wait_exit(FAILURE_TIMEOUT));
    server.wait_log_line(
        |l| l.contains("certificate login refused") && l.contains("not a cert-authority line"),
        FAILURE_TIMEOUT,
    );

    // Expired (russh checks the validity window itself).
    let expired = certified(
        &ca,
        "alice-2020",
        &["-n", "alice", "-V", "20200101:20200102"],
    );
    assert_denied(&tcp_tunnel(&server, &expired, &echo).wait_exit(FAILURE_TIMEOUT));

    // A principal the CA's line does not allow.
    let not_ops = certified(&ops_ca, "alice-ops", &["-n", "alice"]);
    assert_denied(&tcp_tunnel(&server, &not_ops, &echo).wait_exit(FAILURE_TIMEOUT));
    server.wait_log_line(
        |l| l.contains("certificate login refused") && l.contains("principals="),
        FAILURE_TIMEOUT,
    );
    // The one it does.
    let ops = certified(&ops_ca, "ops-laptop", &["-n", "ops"]);
    let mut client = tcp_tunnel(&server, &ops, &echo);
    client.wait_forwarding();
    drop(client);

    // A critical option the server does not enforce.
    let forced = certified(
        &ca,
        "alice-forced",
        &["-n", "alice", "-O", "force-command=tcp"],
    );
    assert_denied(&tcp_tunnel(&server, &forced, &echo).wait_exit(FAILURE_TIMEOUT));
    server.wait_log_line(
        |l| l.contains("certificate login refused") && l.contains("force-command"),
        FAILURE_TIMEOUT,
    );

    // `-O clear`: no permit-port-forwarding, so the login works and its forward is refused,
    // told on the session's stderr.
    let cleared = certified(&ca, "alice-clear", &["-n", "alice", "-O", "clear"]);
    let out = Client::builder(&server)
        .key(&cleared)
        .option("ExitOnForwardFailure", "no")
        .forward(format!("0:localhost:{}", echo.port()))
        .command(["tcp"])
        .spawn()
        .wait_exit(FAILURE_TIMEOUT);
    let line = assert_one_error_line(&out, "forward");
    assert!(
        line.contains("signed without permit-port-forwarding"),
        "{line}"
    );
}
