//! End-to-end harness: the built `tunnel-server` driven by stock OpenSSH (`/usr/bin/ssh`,
//! `ssh-keygen`, `ssh-keyscan`) exactly as a user drives it.
//!
//! - [`Server`] starts the binary ([`server_binary`]) on port 0 everywhere, a leased
//!   `--tcp-ports` range and a temporary state directory, and waits for its ssh listener line.
//! - [`Client`] runs `ssh -R ...` and waits on the `Forwarding` lines it prints.
//! - [`LocalService`] is the user's local service; [`visitor`] is the public side.
//!
//! Every wait is on an event (a line, an exit, a closed connection) with a deadline that only
//! bounds failure; nothing sleeps to synchronise, and no port is fixed, so tests run in
//! parallel. HTTP tests use [`http`] against [`Server::http_addr`]; TLS tests add a helper
//! next to it and use [`Server::https_addr`].

mod binary;
mod client;
pub mod http;
mod http_head;
pub mod http_service;
pub mod http_visitor;
mod keys;
mod lines;
pub mod open_files;
mod ports;
mod process;
pub mod proxy_protocol;
mod server;
mod services;
pub mod tls_tools;
pub mod visitor;

use std::time::Duration;

pub use binary::{server_binary, workspace_root, SERVER_BIN_ENV};
pub use client::{Client, ClientBuilder, Forwarding, SSH};
pub use keys::{Key, SSH_KEYGEN};
pub use ports::{PortLease, PortRange, RANGE_LEN};
pub use process::ExitOutput;
pub use server::{parse_listener_line, Listener, Server, ServerBuilder};
pub use services::{refusing_port, LocalService};

/// Bound on every wait for something that should happen promptly; reached only on failure.
pub const FAILURE_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of `ssh-keyscan`.
pub const SSH_KEYSCAN: &str = "/usr/bin/ssh-keyscan";

/// Beginnings of the stderr lines OpenSSH writes itself around a refused session.
const OPENSSH_OWN_LINES: &[&str] = &[
    "Error: remote port forwarding failed",
    "Warning: remote port forwarding failed",
    "Warning: Permanently added",
    "Connection to ",
    "Received disconnect from ",
    "Disconnected from ",
    "Transferred: ",
];

/// The stderr lines that came from the server: all but OpenSSH's own.
pub fn server_stderr_lines(stderr: &[String]) -> Vec<String> {
    stderr
        .iter()
        .filter(|line| !OPENSSH_OWN_LINES.iter().any(|own| line.starts_with(own)))
        .cloned()
        .collect()
}

/// Whether `line` contains `token` as a whole token (not inside a longer word or number),
/// ignoring ASCII case.
pub fn names_token(line: &str, token: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let (line, token) = (line.to_ascii_lowercase(), token.to_ascii_lowercase());
    line.match_indices(&token).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + token.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Checks the contract's refusal shape: a non-zero exit and exactly one line from the server
/// on stderr, naming `token` and pointing at `--help`. Returns that line.
pub fn assert_one_error_line(out: &ExitOutput, token: &str) -> String {
    assert_ne!(
        out.code(),
        Some(0),
        "a refused session must exit non-zero\n{out}"
    );
    let lines = server_stderr_lines(&out.stderr);
    let [line] = &lines[..] else {
        panic!(
            "expected exactly one error line from the server on stderr, got {}\n{out}",
            lines.len()
        );
    };
    assert!(
        line.contains("--help"),
        "the error line must point at --help: {line:?}\n{out}"
    );
    assert!(
        names_token(line, token),
        "the error line must name {token:?}: {line:?}\n{out}"
    );
    assert!(
        !out.stdout.iter().any(|l| l.starts_with("Forwarding ")),
        "a refused session must not announce a forwarding\n{out}"
    );
    line.clone()
}

/// Deterministic pseudo-random bytes (xorshift64*), for payloads that catch reordering.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_whole() {
        assert!(names_token(
            "unknown flag '--frobnicate'; see --help",
            "--frobnicate"
        ));
        assert!(names_token("port 22 is not allowed for http", "22"));
        assert!(!names_token("port 2222 is not allowed", "22"));
        assert!(!names_token("tcp2", "tcp"));
        assert!(names_token("A TLS endpoint needs a NAME", "name"));
    }

    #[test]
    fn filters_openssh_lines() {
        let stderr = vec![
            "bad flag --x, see --help".to_owned(),
            "Error: remote port forwarding failed for listen port 22".to_owned(),
        ];
        assert_eq!(
            server_stderr_lines(&stderr),
            vec!["bad flag --x, see --help"]
        );
    }

    #[test]
    fn test_bytes_are_deterministic() {
        assert_eq!(test_bytes(100, 7), test_bytes(100, 7));
        assert_ne!(test_bytes(100, 7), test_bytes(100, 8));
        assert_eq!(test_bytes(13, 1).len(), 13);
    }
}
