use std::fs;
use std::path::Path;

use super::settings::{command, known_keys, parse_pairs, DEFAULTS};
use super::values::{parse_byte_size, parse_duration};
use super::*;

fn config(args: &[&str]) -> Result<ServerConfig, ConfigError> {
    ServerConfig::from_args(std::iter::once("tunnel-server").chain(args.iter().copied()))
}

fn error(args: &[&str]) -> String {
    config(args).expect_err("should be rejected").to_string()
}

/// A config file in a fresh temp dir; keep the dir alive while the path is used.
fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tunnel.toml");
    fs::write(&path, contents).expect("write config");
    (dir, path)
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn defaults_with_no_args() {
    let c = config(&[]).expect("defaults are valid");
    assert_eq!(
        c,
        ServerConfig {
            config_file: None,
            ssh_addr: "127.0.0.1:2222".parse().unwrap(),
            http_addr: "127.0.0.1:8080".parse().unwrap(),
            https_addr: "127.0.0.1:8443".parse().unwrap(),
            domain: "localhost".into(),
            tcp_ports: 20000..=20999,
            state_dir: PathBuf::from("./tunnel-state"),
            host_key: PathBuf::from("./tunnel-state/host_key"),
            authorized_keys: None,
            authorized_keys_poll: Some(Duration::from_secs(1)),
            name_grace: Duration::from_secs(600),
            tls: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            auth_timeout: Duration::from_secs(30),
            http_header_timeout: Duration::from_secs(20),
            http_idle_timeout: Duration::from_secs(60),
            tls_hello_timeout: Duration::from_secs(10),
            channel_open_timeout: Duration::from_secs(10),
            close_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            max_endpoints_per_connection: 64,
            max_connections_per_key: 1024,
            max_unauthenticated_per_ip: 64,
            max_visitors_per_endpoint: 1024,
            max_startups: tunnel_core::Startups {
                start: 100,
                rate: 30,
                full: 1000,
            },
            max_visitors_per_source: 128,
            max_visitor_connections_per_source: 128,
            max_visitors: 16384,
            max_names_per_key: 64,
            max_tcp_ports_per_key: 16,
            key_quotas: Vec::new(),
            trusted_proxies: Vec::new(),
            accept_proxy_proto: false,
            channel_window: 8 * 1024 * 1024,
            spill_dir: PathBuf::from("./tunnel-state/spill"),
            spill: tunnel_core::SpillLimits::new(256 * 1024, 1 << 30, 8 << 30),
            log_format: LogFormat::Text,
            access_log: false,
            admin_addr: None,
            admin_token_file: None,
            metrics_per_endpoint: false,
            admin_keys: None,
        }
    );
}

#[test]
fn key_quotas() {
    let c = config(&[
        "--key-quota",
        "SHA256:AAAA=100,20",
        "--key-quota=SHA256:BBBB=1,0",
    ])
    .expect("valid");
    assert_eq!(
        c.key_quotas
            .iter()
            .map(|(k, q)| (k.as_str(), q.names, q.tcp_ports))
            .collect::<Vec<_>>(),
        [("SHA256:AAAA", 100, 20), ("SHA256:BBBB", 1, 0)]
    );
    for bad in [
        "AAAA=1,2",
        "SHA256:AAAA=1",
        "SHA256:=1,2",
        "SHA256:AA AA=1,2",
        "SHA256:AAAA=x,2",
    ] {
        assert!(
            error(&["--key-quota", bad])
                .starts_with(&format!("invalid --key-quota \"{bad}\": expected SHA256:")),
            "{bad}: {}",
            error(&["--key-quota", bad])
        );
    }
}

#[test]
fn spill_settings() {
    let c = config(&[
        "--state-dir",
        "/var/lib/tunnel",
        "--spill-memory-per-visitor",
        "64KiB",
        "--spill-max-per-visitor",
        "16MiB",
        "--spill-max-total",
        "1GiB",
    ])
    .expect("valid");
    assert_eq!(c.spill_dir, PathBuf::from("/var/lib/tunnel/spill"));
    assert_eq!(
        c.spill,
        tunnel_core::SpillLimits::new(64 << 10, 16 << 20, 1 << 30)
    );
    let c = config(&["--spill-dir", "/tmp/spill"]).expect("valid");
    assert_eq!(c.spill_dir, PathBuf::from("/tmp/spill"));
    assert_eq!(
        error(&["--spill-max-total", "lots"]),
        "invalid --spill-max-total \"lots\": expected a size in bytes, e.g. 8388608 or 8MiB"
    );
}

#[test]
fn flags_are_parsed() {
    let c = config(&[
        "--ssh-addr",
        "0.0.0.0:22",
        "--authorized-keys",
        "/etc/tunnel/keys",
        "--http-addr=[::]:80",
        "--domain",
        "Tunnel.Example.COM.",
        "--tcp-ports",
        "30000-30000",
        "--state-dir",
        "/var/lib/tunnel",
        "--name-grace",
        "0",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
        "--keepalive-interval",
        "0",
        "--keepalive-max",
        "0",
        "--channel-window",
        "2MiB",
    ])
    .expect("valid");
    assert_eq!(c.ssh_addr, "0.0.0.0:22".parse().unwrap());
    assert_eq!(c.http_addr, "[::]:80".parse().unwrap());
    assert_eq!(c.domain, "tunnel.example.com");
    assert_eq!(c.tcp_ports, 30000..=30000);
    assert_eq!(c.host_key, PathBuf::from("/var/lib/tunnel/host_key"));
    assert_eq!(c.authorized_keys, Some(PathBuf::from("/etc/tunnel/keys")));
    assert_eq!(c.name_grace, Duration::ZERO);
    assert_eq!(
        c.tls,
        Some(TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into()
        })
    );
    assert_eq!(c.keepalive_interval, None);
    assert_eq!(c.keepalive_max, 0);
    assert_eq!(c.channel_window, MIN_CHANNEL_WINDOW);
}

#[test]
fn explicit_host_key_wins_over_state_dir() {
    let c = config(&["--state-dir", "s", "--host-key", "/k"]).expect("valid");
    assert_eq!(c.host_key, PathBuf::from("/k"));
    assert_eq!(c.state_dir, PathBuf::from("s"));
}

#[test]
fn file_beats_defaults_and_flag_beats_file() {
    let (_dir, path) = config_file(
        "# production\n\
         ssh-addr = \"0.0.0.0:2022\"\n\
         authorized-keys = \"/etc/tunnel/authorized_keys\"\n\
         domain = \"example.org\"\n\
         tcp-ports = \"40000-40099\"\n\
         name-grace = 0\n\
         keepalive-max = 5\n\
         channel-window = 4194304\n",
    );
    let from_file = config(&["--config", arg(&path)]).expect("valid");
    assert_eq!(from_file.config_file.as_deref(), Some(path.as_path()));
    assert_eq!(from_file.ssh_addr, "0.0.0.0:2022".parse().unwrap());
    assert_eq!(from_file.domain, "example.org");
    assert_eq!(from_file.tcp_ports, 40000..=40099);
    assert_eq!(from_file.name_grace, Duration::ZERO);
    assert_eq!(from_file.keepalive_max, 5);
    assert_eq!(from_file.channel_window, 4 * 1024 * 1024);
    // Untouched settings keep their defaults.
    assert_eq!(from_file.http_addr, "127.0.0.1:8080".parse().unwrap());

    let flagged = config(&[
        "--domain",
        "flag.example",
        "--config",
        arg(&path),
        "--keepalive-max=7",
    ])
    .expect("valid");
    assert_eq!(flagged.domain, "flag.example");
    assert_eq!(flagged.keepalive_max, 7);
    assert_eq!(flagged.tcp_ports, 40000..=40099);
}

#[test]
fn file_accepts_every_flag_name() {
    let (_dir, path) = config_file(
        r#"
        ssh-addr = "127.0.0.1:1"
        http-addr = "127.0.0.1:2"
        https-addr = "127.0.0.1:3"
        domain = "d.test"
        tcp-ports = "1-2"
        state-dir = "st"
        host-key = "hk"
        authorized-keys = "ak"
        authorized-keys-poll = 0
        name-grace = "1h30m"
        tls-cert = "c"
        tls-key = "k"
        keepalive-interval = "500ms"
        keepalive-max = "1"
        auth-timeout = 5
        http-header-timeout = "1m"
        tls-hello-timeout = 3
        channel-open-timeout = "250ms"
        close-grace = "1s"
        shutdown-grace = 0
        max-endpoints-per-connection = 2
        max-connections-per-key = 3
        max-unauthenticated-per-ip = 4
        max-visitors-per-endpoint = 5
        channel-window = "1GiB"
        spill-dir = "sp"
        spill-memory-per-visitor = 1024
        spill-max-per-visitor = "2MiB"
        spill-max-total = "3GiB"
        max-startups = "5:50:10"
        http-idle-timeout = "2m"
        max-visitors-per-source = 3
        max-visitors = 4
        max-visitor-connections-per-source = 6
        max-names-per-key = 9
        max-tcp-ports-per-key = 8
        key-quota = ["SHA256:abc+/=7,1", "SHA256:def=1,2"]
        trusted-proxies = ["10.0.0.0/8", "192.0.2.7"]
        accept-proxy-proto = true
        log-format = "json"
        access-log = true
        admin-addr = "127.0.0.1:9"
        admin-token-file = "tok"
        admin-keys = "admins"
        metrics-per-endpoint = true
        "#,
    );
    let c = config(&["--config", arg(&path)]).expect("valid");
    assert_eq!(c.admin_addr, Some("127.0.0.1:9".parse().unwrap()));
    assert_eq!(c.admin_token_file, Some(PathBuf::from("tok")));
    assert_eq!(c.admin_keys, Some(PathBuf::from("admins")));
    assert!(c.metrics_per_endpoint);
    assert_eq!(
        known_keys().len(),
        45,
        "every setting is covered by this test"
    );
    assert_eq!(c.https_addr.port(), 3);
    assert_eq!(c.host_key, PathBuf::from("hk"));
    assert_eq!(c.name_grace, Duration::from_secs(5400));
    assert_eq!(c.authorized_keys_poll, None, "0 polls never");
    assert_eq!(c.keepalive_interval, Some(Duration::from_millis(500)));
    assert_eq!(c.auth_timeout, Duration::from_secs(5));
    assert_eq!(c.shutdown_grace, Duration::ZERO, "0 closes at once");
    assert_eq!(
        (
            c.http_header_timeout,
            c.tls_hello_timeout,
            c.channel_open_timeout,
            c.close_grace
        ),
        (
            Duration::from_secs(60),
            Duration::from_secs(3),
            Duration::from_millis(250),
            Duration::from_secs(1)
        )
    );
    assert_eq!(
        (
            c.max_endpoints_per_connection,
            c.max_connections_per_key,
            c.max_unauthenticated_per_ip,
            c.max_visitors_per_endpoint
        ),
        (2, 3, 4, 5)
    );
    assert_eq!(c.channel_window, 1 << 30);
    assert_eq!((c.max_names_per_key, c.max_tcp_ports_per_key), (9, 8));
    assert_eq!(c.http_idle_timeout, Duration::from_secs(120));
    assert_eq!((c.max_visitors_per_source, c.max_visitors), (3, 4));
    assert_eq!(c.max_visitor_connections_per_source, 6);
    assert_eq!(
        c.max_startups,
        tunnel_core::Startups {
            start: 5,
            rate: 50,
            full: 10
        }
    );
    for bad in ["", "1:2", "10:101:20", "20:30:10", "a:b:c", "0"] {
        assert!(
            error(&["--max-startups", bad]).contains("expected START:RATE:FULL"),
            "{bad}"
        );
    }
    assert_eq!(c.key_quotas.len(), 2);
    assert_eq!(
        c.trusted_proxies,
        [
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            "192.0.2.7/32".parse().unwrap()
        ]
    );
    assert!(c.accept_proxy_proto);
    assert_eq!((c.log_format, c.access_log), (LogFormat::Json, true));
    assert_eq!(c.key_quotas[0].0.as_str(), "SHA256:abc+/");
    assert_eq!(
        c.key_quotas[0].1,
        tunnel_core::KeyQuota {
            names: 7,
            tcp_ports: 1
        }
    );
    assert_eq!(c.spill_dir, PathBuf::from("sp"));
    assert_eq!(
        c.spill,
        tunnel_core::SpillLimits::new(1024, 2 << 20, 3 << 30)
    );
}

#[test]
fn durations() {
    let ok = [
        ("0", Duration::ZERO),
        ("90", Duration::from_secs(90)),
        ("90s", Duration::from_secs(90)),
        ("10m", Duration::from_secs(600)),
        ("1h", Duration::from_secs(3600)),
        ("500ms", Duration::from_millis(500)),
        ("1h30m", Duration::from_secs(5400)),
        ("0s", Duration::ZERO),
        (" 2m ", Duration::from_secs(120)),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_duration(text), Some(expected), "{text:?}");
    }
    for bad in [
        "",
        "s",
        "10x",
        "1.5s",
        "-1s",
        "10 m",
        "1h30",
        "m10",
        "10M",
        "99999999999999999999h",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn byte_sizes() {
    assert_eq!(parse_byte_size("8388608"), Some(8 << 20));
    assert_eq!(parse_byte_size("8MiB"), Some(8 << 20));
    assert_eq!(parse_byte_size("2048KiB"), Some(2 << 20));
    assert_eq!(parse_byte_size("1GiB"), Some(1 << 30));
    for bad in ["", "MiB", "8MB", "8 MiB", "-1", "8mib"] {
        assert_eq!(parse_byte_size(bad), None, "{bad:?}");
    }
}

#[test]
fn visitor_and_session_timeouts() {
    let c = config(&[
        "--http-header-timeout",
        "1m",
        "--tls-hello-timeout=2s",
        "--channel-open-timeout",
        "1500ms",
        "--close-grace",
        "1",
    ])
    .expect("valid");
    assert_eq!(c.http_header_timeout, Duration::from_secs(60));
    assert_eq!(c.tls_hello_timeout, Duration::from_secs(2));
    assert_eq!(c.channel_open_timeout, Duration::from_millis(1500));
    assert_eq!(c.close_grace, Duration::from_secs(1));

    for flag in [
        "http-header-timeout",
        "tls-hello-timeout",
        "channel-open-timeout",
        "close-grace",
    ] {
        assert_eq!(
            error(&[&format!("--{flag}"), "0ms"]),
            format!(r#"invalid --{flag} "0ms": must be longer than 0"#)
        );
        assert_eq!(
            error(&[&format!("--{flag}"), "soon"]),
            format!(
                r#"invalid --{flag} "soon": expected a duration such as 0, 90s, 10m, 1h or 500ms"#
            )
        );
        assert_eq!(
            error(&[&format!("--{flag}"), "8761h"]),
            format!(r#"invalid --{flag} "8761h": must be at most 8760h (one year)"#)
        );
    }

    let (_dir, path) = config_file("close-grace = 0\ntls-hello-timeout = \"30s\"\n");
    assert_eq!(
        error(&["--config", arg(&path)]),
        format!(
            "invalid close-grace \"0\" (config file {}): must be longer than 0",
            path.display()
        )
    );
    let c = config(&["--config", arg(&path), "--close-grace", "2s"]).expect_err("bad file");
    assert!(matches!(
        c,
        ConfigError::Invalid {
            setting: Setting {
                origin: Origin::File(_),
                ..
            },
            ..
        }
    ));
}

#[test]
fn every_source_is_checked_even_where_a_flag_wins() {
    // The file is read as a whole, so a mistake in it shows up at once, not when the flag that
    // happens to cover it is dropped.
    let (_dir, path) = config_file("keepalive-max = \"three\"\n");
    assert_eq!(
        error(&["--config", arg(&path), "--keepalive-max", "3"]),
        format!(
            "invalid keepalive-max \"three\" (config file {}): expected a whole number",
            path.display()
        )
    );
}

#[test]
fn open_listener_needs_authorized_keys() {
    for addr in ["0.0.0.0:2222", "[::]:22", "192.168.1.10:2222"] {
        let err = config(&["--ssh-addr", addr]).expect_err("open without keys");
        assert!(
            matches!(err, ConfigError::OpenWithoutAuthorizedKeys { addr: a } if a == addr.parse().unwrap())
        );
        assert_eq!(err.exit_code(), 2);
    }
    assert_eq!(
        error(&["--ssh-addr", "0.0.0.0:2222"]),
        "refusing to start: --ssh-addr 0.0.0.0:2222 is not a loopback address, so anyone who \
         can reach it could open tunnels; give --authorized-keys FILE or listen on 127.0.0.1"
    );
    for addr in [
        "127.0.0.1:2222",
        "127.1.2.3:0",
        "[::1]:2222",
        "[::ffff:127.0.0.1]:22",
    ] {
        assert!(config(&["--ssh-addr", addr]).is_ok(), "{addr} is loopback");
    }
    assert!(config(&["--ssh-addr", "0.0.0.0:22", "--authorized-keys", "ak"]).is_ok());
}

#[test]
fn accept_proxy_proto_is_a_switch_that_needs_trusted_proxies() {
    let lb = ["--trusted-proxies", "10.0.0.0/8"];
    for (args, on) in [
        (&["--accept-proxy-proto"][..], true),
        (&["--accept-proxy-proto=true"], true),
        (&["--accept-proxy-proto=false"], false),
        (&[], false),
    ] {
        let args: Vec<&str> = lb.iter().chain(args).copied().collect();
        assert_eq!(
            config(&args).expect("valid").accept_proxy_proto,
            on,
            "{args:?}"
        );
    }
    // `--accept-proxy-proto` alone does not take the next argument as its value.
    let c = config(&["--accept-proxy-proto", "--trusted-proxies", "10.0.0.0/8"]).expect("valid");
    assert!(c.accept_proxy_proto);
    assert_eq!(
        error(&[
            "--trusted-proxies",
            "10.0.0.0/8",
            "--accept-proxy-proto=yes"
        ]),
        r#"invalid --accept-proxy-proto "yes": expected true or false"#
    );
    let err = config(&["--accept-proxy-proto"]).expect_err("no trusted proxies");
    assert!(matches!(err, ConfigError::ProxyProtoWithoutTrustedProxies));
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        err.to_string(),
        "refusing to start: --accept-proxy-proto reads a PROXY header only from \
         --trusted-proxies, and none is given; add --trusted-proxies CIDR for the load balancer \
         in front"
    );
    // The file's switch needs them too, and a flag can turn it off.
    let (_dir, path) = config_file("accept-proxy-proto = true\n");
    assert!(matches!(
        config(&["--config", arg(&path)]),
        Err(ConfigError::ProxyProtoWithoutTrustedProxies)
    ));
    let off = config(&["--config", arg(&path), "--accept-proxy-proto=false"]).expect("valid");
    assert!(!off.accept_proxy_proto);
}

#[test]
fn log_format_and_access_log() {
    let c = config(&["--log-format", "json", "--access-log"]).expect("valid");
    assert_eq!((c.log_format, c.access_log), (LogFormat::Json, true));
    let c = config(&["--log-format=text", "--access-log=false"]).expect("valid");
    assert_eq!((c.log_format, c.access_log), (LogFormat::Text, false));
    assert_eq!(
        error(&["--log-format", "JSON"]),
        r#"invalid --log-format "JSON": expected text or json"#
    );
    // `--access-log` alone does not take the next argument as its value.
    let c = config(&["--access-log", "--log-format", "json"]).expect("valid");
    assert!(c.access_log);
    let (_dir, path) = config_file("log-format = \"yaml\"\n");
    assert_eq!(
        config(&["--config", arg(&path)])
            .expect_err("not a format")
            .to_string(),
        format!(
            r#"invalid log-format "yaml" (config file {}): expected text or json"#,
            path.display()
        )
    );
}

#[test]
fn open_rule_applies_to_file_values_too() {
    let (_dir, path) = config_file("ssh-addr = \"0.0.0.0:22\"\n");
    let err = config(&["--config", arg(&path)]).expect_err("open");
    assert!(matches!(err, ConfigError::OpenWithoutAuthorizedKeys { .. }));
    assert!(config(&["--config", arg(&path), "--authorized-keys", "ak"]).is_ok());
}

#[test]
fn flag_value_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--ssh-addr", "localhost:22"],
            r#"invalid --ssh-addr "localhost:22": expected IP:PORT, e.g. 127.0.0.1:2222 or [::1]:2222"#,
        ),
        (
            &["--https-addr", "127.0.0.1"],
            r#"invalid --https-addr "127.0.0.1": expected IP:PORT, e.g. 127.0.0.1:2222 or [::1]:2222"#,
        ),
        (
            &["--domain", "bad_name.example"],
            r#"invalid --domain "bad_name.example": expected a DNS name such as tunnel.example.com (letters, digits and hyphens, labels of at most 63 characters)"#,
        ),
        (
            &["--tcp-ports", "20000"],
            r#"invalid --tcp-ports "20000": expected LO-HI with ports from 1 to 65535, e.g. 20000-20999"#,
        ),
        (
            &["--tcp-ports", "1-70000"],
            r#"invalid --tcp-ports "1-70000": expected LO-HI with ports from 1 to 65535, e.g. 20000-20999"#,
        ),
        (
            &["--tcp-ports", "30000-20000"],
            r#"invalid --tcp-ports "30000-20000": low port 30000 is above high port 20000"#,
        ),
        (
            &["--tcp-ports", "0-100"],
            r#"invalid --tcp-ports "0-100": port 0 cannot be allocated, ranges start at 1"#,
        ),
        (
            &["--name-grace", "10 minutes"],
            r#"invalid --name-grace "10 minutes": expected a duration such as 0, 90s, 10m, 1h or 500ms"#,
        ),
        (
            &["--name-grace", "9000h"],
            r#"invalid --name-grace "9000h": must be at most 8760h (one year)"#,
        ),
        (
            &["--auth-timeout", "0s"],
            r#"invalid --auth-timeout "0s": must be longer than 0"#,
        ),
        (
            &["--keepalive-max", "three"],
            r#"invalid --keepalive-max "three": expected a whole number"#,
        ),
        (
            &["--max-connections-per-key", "0"],
            r#"invalid --max-connections-per-key "0": must be at least 1"#,
        ),
        (
            &["--channel-window", "8MB"],
            r#"invalid --channel-window "8MB": expected a size in bytes, e.g. 8388608 or 8MiB"#,
        ),
        (
            &["--channel-window", "1048576"],
            r#"invalid --channel-window "1048576": must be at least 2MiB (2097152 bytes) and less than 4GiB"#,
        ),
        (
            &["--channel-window", "4GiB"],
            r#"invalid --channel-window "4GiB": must be at least 2MiB (2097152 bytes) and less than 4GiB"#,
        ),
        (
            &["--tls-cert", "c.pem"],
            "--tls-cert needs --tls-key too (give both or neither)",
        ),
        (
            &["--tls-key", "k.pem"],
            "--tls-key needs --tls-cert too (give both or neither)",
        ),
    ];
    for (args, expected) in cases {
        let err = config(args).expect_err("rejected");
        assert_eq!(err.to_string(), *expected, "{args:?}");
        assert_eq!(err.exit_code(), 2);
    }
}

#[test]
fn domain_rules() {
    // `--domain=VALUE` so values starting with '-' are not taken for flags.
    let ok = |d: &str| config(&[&format!("--domain={d}")]).map(|c| c.domain);
    assert_eq!(ok("LOCALHOST").unwrap(), "localhost");
    assert_eq!(ok("a-b.c0.example").unwrap(), "a-b.c0.example");
    assert_eq!(ok("1tunnel.example").unwrap(), "1tunnel.example");
    let long_label = "a".repeat(64);
    for bad in [
        "",
        ".",
        "a..b",
        "-a.example",
        "a-.example",
        "a b",
        "*.example",
        "127.0.0.1",
        "::1",
        long_label.as_str(),
    ] {
        assert!(
            matches!(
                ok(bad),
                Err(ConfigError::Invalid {
                    problem: ValueError::Domain,
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let err = config(&["--config", arg(&missing)]).expect_err("missing");
    assert!(matches!(err, ConfigError::ReadFile { .. }));
    assert!(err
        .to_string()
        .starts_with(&format!("cannot read config file {}: ", missing.display())));

    let (_d, path) = config_file("ssh-addr = \"127.0.0.1:1\"\nsh-addr = \"x\"\n");
    assert_eq!(
        error(&["--config", arg(&path)]),
        format!(
            "unknown key \"sh-addr\" in config file {} (keys are the flag names without \"--\", e.g. ssh-addr)",
            path.display()
        )
    );

    let (_d, path) = config_file("domain = \"example.org\"\n\nssh-addr = \n");
    let err = config(&["--config", arg(&path)]).expect_err("syntax");
    assert!(
        matches!(err, ConfigError::ParseFile { line: Some(3), .. }),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with(&format!("invalid config file {}, line 3: ", path.display())));

    let (_d, path) = config_file("keepalive-max = 1.5\n");
    assert_eq!(
        error(&["--config", arg(&path)]),
        format!(
            "keepalive-max in config file {} must be a string, a number or a boolean (found float)",
            path.display()
        )
    );
    // A boolean is read as its text, which a count refuses as it would from a flag.
    let (_d, path) = config_file("keepalive-max = true\n");
    assert_eq!(
        error(&["--config", arg(&path)]),
        format!(
            "invalid keepalive-max \"true\" (config file {}): expected a whole number",
            path.display()
        )
    );

    let (_d, path) = config_file("tcp-ports = \"9-1\"\n");
    assert_eq!(
        error(&["--config", arg(&path)]),
        format!(
            "invalid tcp-ports \"9-1\" (config file {}): low port 9 is above high port 1",
            path.display()
        )
    );

    // The same rule as for `--state-dir ""`.
    let (_d, path) = config_file("state-dir = \"\"\n");
    assert_eq!(
        error(&["--config", arg(&path)]),
        format!(
            "invalid state-dir \"\" (config file {}): must not be empty",
            path.display()
        )
    );

    let (_d, path) = config_file("config = \"other.toml\"\n");
    assert!(matches!(
        config(&["--config", arg(&path)]),
        Err(ConfigError::UnknownKey { key, .. }) if key == "config"
    ));
}

#[test]
fn help_and_version_are_clap_errors_exiting_zero() {
    for flag in ["--help", "--version"] {
        match config(&[flag]) {
            Err(ConfigError::Clap(e)) => assert_eq!(e.exit_code(), 0, "{flag}"),
            other => panic!("{flag}: {other:?}"),
        }
    }
    let err = config(&["--no-such-flag"]).expect_err("unknown flag");
    assert!(matches!(err, ConfigError::Clap(_)));
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let command = command();
    let help = command.clone().render_long_help().to_string();
    assert!(
        help.starts_with("Self-hostable SSH reverse-tunnel gateway"),
        "{help}"
    );
    for (key, default) in DEFAULTS {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key))
            .unwrap_or_else(|| panic!("{key} is a flag"));
        let text = arg.get_help().map(ToString::to_string).unwrap_or_default();
        assert!(
            text.ends_with(&format!("[default: {default}]")),
            "{key}: {text}"
        );
    }
    for key in known_keys() {
        assert!(help.contains(&format!("--{key}")), "{key}");
    }
}

#[test]
fn a_refused_default_names_itself() {
    let err = parse_pairs([("ssh-addr", "nowhere")], Origin::Default).expect_err("not an address");
    assert_eq!(
        err.to_string(),
        r#"invalid default ssh-addr "nowhere": expected IP:PORT, e.g. 127.0.0.1:2222 or [::1]:2222"#
    );
}

#[test]
fn empty_path_flag_gets_the_file_rule() {
    assert_eq!(
        error(&["--state-dir", ""]),
        r#"invalid --state-dir "": must not be empty"#
    );
}

#[test]
fn setting_display_names_origin() {
    let setting = |origin| Setting {
        name: "ssh-addr".into(),
        value: "x".into(),
        origin,
    };
    assert_eq!(setting(Origin::Flag).to_string(), r#"--ssh-addr "x""#);
    assert_eq!(
        setting(Origin::File("/etc/t.toml".into())).to_string(),
        r#"ssh-addr "x" (config file /etc/t.toml)"#
    );
    assert_eq!(
        setting(Origin::Default).to_string(),
        r#"default ssh-addr "x""#
    );
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let err = config(&["--admin-addr", "0.0.0.0:9000"]).expect_err("no token");
    assert!(matches!(err, ConfigError::AdminWithoutToken { .. }));
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        err.to_string(),
        "refusing to start: --admin-addr 0.0.0.0:9000 is not a loopback address, so anyone who \
         can reach it could kick users and free names; give --admin-token-file FILE or listen on \
         127.0.0.1"
    );
    let c = config(&["--admin-addr", "0.0.0.0:9000", "--admin-token-file", "t"]).expect("valid");
    assert_eq!(c.admin_token_file, Some(PathBuf::from("t")));
    let local = config(&["--admin-addr", "[::1]:9000"]).expect("loopback needs no token");
    assert_eq!(local.admin_token_file, None);
}

#[test]
fn a_reread_names_the_keys_added_removed_or_changed() {
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let before = vec![
        pair("max-visitors", "100"),
        pair("trusted-proxies", "10.0.0.0/8"),
        pair("domain", "a.test"),
        pair("name-grace", "10m"),
    ];
    let after = vec![
        pair("max-visitors", "200"),
        pair("trusted-proxies", "10.0.0.0/8"),
        pair("trusted-proxies", "192.0.2.7"),
        pair("domain", "a.test"),
        pair("http-idle-timeout", "1m"),
    ];
    assert_eq!(
        super::changed_settings(&before, &after),
        [
            "http-idle-timeout",
            "max-visitors",
            "name-grace",
            "trusted-proxies"
        ]
    );
    assert!(super::changed_settings(&after, &after).is_empty());
}

#[test]
fn every_setting_a_reload_takes_is_a_setting_and_the_rest_wait_for_a_restart() {
    let known = known_keys();
    for key in RELOAD_LIVE.iter().chain(RELOAD_NEW_ENDPOINTS) {
        assert!(known.iter().any(|k| k == key), "{key} is not a setting");
    }
    assert_eq!(reload_of("max-names-per-key"), Reload::Live);
    assert_eq!(reload_of("max-visitors-per-endpoint"), Reload::NewEndpoints);
    for key in [
        "domain",
        "ssh-addr",
        "tcp-ports",
        "state-dir",
        "spill-max-total",
    ] {
        assert!(known.iter().any(|k| k == key), "{key} is not a setting");
        assert_eq!(reload_of(key), Reload::Restart, "{key}");
    }
}
