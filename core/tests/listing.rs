//! `ssh HOST list` and `ssh HOST release NAME|PORT`: a key sees what it holds, and gives a
//! reservation back before its time.

mod harness;

use std::time::Duration;

use harness::Harness;

/// `ssh HOST COMMAND` with no forward, as `key_name`: its stdout, stderr and exit status.
fn run(h: &mut Harness, key_name: &str, command: &str) -> (Vec<String>, Vec<String>, Option<u32>) {
    let conn = h.login(key_name);
    h.exec(conn, command);
    assert!(
        h.is_closed(conn),
        "the command answers and ends the session"
    );
    (
        h.stdout(conn).to_vec(),
        h.stderr(conn).to_vec(),
        h.exit_status(conn),
    )
}

#[test]
fn list_shows_the_callers_live_and_reserved_addresses_and_nobody_elses() {
    let mut h = Harness::new();
    let (web, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (shell, _) = h.tunnel("alice", &[("localhost", 20005)], "tcp");
    h.tunnel("bob", &[("bobs", 80)], "http");
    h.close(shell);
    h.advance(Duration::from_secs(48));

    let (out, err, status) = run(&mut h, "alice", "list");
    assert_eq!(
        out,
        [
            "ADDRESS                    STATE",
            "http://app.localhost:8080  live",
            "tcp://localhost:20005      reserved for 9m 12s",
        ]
    );
    assert!(err.is_empty(), "{err:?}");
    assert_eq!(status, Some(0));
    assert!(!h.is_closed(web), "listing touches nothing");
    h.assert_no_leaks();
}

#[test]
fn list_says_so_when_a_key_holds_nothing() {
    let mut h = Harness::new();
    let (out, _, status) = run(&mut h, "carol", "list");
    assert_eq!(out, ["Nothing is live or reserved for your key."]);
    assert_eq!(status, Some(0));
    h.assert_no_leaks();
}

#[test]
fn release_frees_a_reservation_at_once_for_anyone() {
    let mut h = Harness::new();
    let (web, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (shell, _) = h.tunnel("alice", &[("localhost", 20005)], "tcp");
    h.close(web);
    h.close(shell);
    let (out, _, status) = run(&mut h, "alice", "release app");
    assert_eq!(
        (out, status),
        (vec!["released app.localhost".to_owned()], Some(0))
    );
    let (out, _, status) = run(&mut h, "alice", "release 20005");
    assert_eq!(
        (out, status),
        (vec!["released tcp port 20005".to_owned()], Some(0))
    );
    assert_eq!(h.gw.reservation_count(), 0);
    assert_eq!(h.gw.held_port_count(), 0);
    assert_eq!(h.gw.timer_count(), 0, "their timers went with them");
    let (bob, _) = h.tunnel("bob", &[("app", 80)], "http");
    assert_eq!(h.host_of(bob), "app.localhost");
    h.assert_no_leaks();
}

#[test]
fn release_refuses_what_is_live_or_not_the_callers() {
    let mut h = Harness::new();
    let (web, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (gone, _) = h.tunnel("bob", &[("bobs", 80)], "http");
    h.close(gone);
    let cases = [
        (
            "release app.localhost",
            "error: \"app.localhost\" is live on one of your connections: end that connection to free it (see --help: ssh HOST help)",
            1,
        ),
        (
            "release bobs",
            "error: \"bobs\" is not reserved for your key (see: ssh HOST list) (see --help: ssh HOST help)",
            1,
        ),
        (
            "release nosuch.other.test",
            "error: \"nosuch.other.test\" is not reserved for your key (see: ssh HOST list) (see --help: ssh HOST help)",
            1,
        ),
        (
            "release",
            "error: release needs the name or port to release (see: ssh HOST list) (see --help: ssh HOST help)",
            2,
        ),
        (
            "list everything",
            "error: unexpected argument \"everything\" (see --help: ssh HOST help)",
            2,
        ),
    ];
    for (command, line, want) in cases {
        let (_, err, status) = run(&mut h, "alice", command);
        assert_eq!(err, [line], "{command}");
        assert_eq!(status, Some(want), "{command}");
    }
    assert!(!h.is_closed(web));
    assert_eq!(h.gw.reservation_count(), 1, "bob's stays");
    h.assert_no_leaks();
}

#[test]
fn an_operator_key_lists_every_connection_and_endpoint_and_kicks_one() {
    let mut h = Harness::builder().admin_keys(&["root"]).build();
    let (alice, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (bob, _) = h.tunnel("bob", &[("localhost", 20007)], "tcp");
    h.advance(Duration::from_secs(65));

    let (out, _, status) = run(&mut h, "root", "admin endpoints");
    assert_eq!(status, Some(0));
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out[0].starts_with("ENDPOINT"), "{out:?}");
    assert!(out[1].starts_with("http://app.localhost:8080  http") && out[1].contains("conn#"));
    assert!(out[2].starts_with("tcp://localhost:20007"), "{out:?}");

    let (out, _, status) = run(&mut h, "root", "admin connections");
    assert_eq!(status, Some(0));
    let alice_row = out
        .iter()
        .find(|l| l.ends_with("http://app.localhost:8080"))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(alice_row.starts_with(&alice.to_string()) && alice_row.contains("1m 5s"));

    let (out, _, status) = run(&mut h, "root", &format!("admin kick {bob} 'over quota'"));
    assert_eq!((out, status), (vec![format!("kicked {bob}")], Some(0)));
    assert!(h.is_closed(bob));
    assert_eq!(h.stderr(bob), ["disconnected by the operator: over quota"]);
    assert!(!h.is_closed(alice), "the others carry on");
    assert_eq!(h.gw.reservation_count(), 1, "bob's port stays his");

    let (_, err, status) = run(&mut h, "root", "admin kick conn#999");
    assert_eq!(status, Some(1));
    assert_eq!(
        err,
        ["error: no connection \"conn#999\" (see: ssh HOST admin connections) (see --help: ssh HOST help)"]
    );
    h.assert_no_leaks();
}

#[test]
fn admin_commands_are_refused_to_other_keys_and_malformed_ones_say_what_is_missing() {
    let mut h = Harness::builder().admin_keys(&["root"]).build();
    let (web, _) = h.tunnel("alice", &[("app", 80)], "http");
    let (_, err, status) = run(&mut h, "alice", &format!("admin kick {web}"));
    assert_eq!(
        err,
        ["error: admin commands need a key listed in the server's --admin-keys (see --help: ssh HOST help)"]
    );
    assert_eq!(status, Some(1));
    assert!(!h.is_closed(web));
    for (command, line) in [
        ("admin", "error: admin needs connections, endpoints or kick ID [REASON] (see --help: ssh HOST help)"),
        ("admin kick", "error: admin needs connections, endpoints or kick ID [REASON] (see --help: ssh HOST help)"),
        ("admin kick me", "error: unexpected argument \"me\" (see --help: ssh HOST help)"),
        ("admin reboot", "error: unknown command \"admin reboot\" (the commands are http, tcp, tls, list, release, admin and help) (see --help: ssh HOST help)"),
    ] {
        let (_, err, status) = run(&mut h, "root", command);
        assert_eq!(err, [line], "{command}");
        assert_eq!(status, Some(2), "{command}");
    }
    h.assert_no_leaks();
}
