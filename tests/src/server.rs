//! Starting the built `tunnel-server` as a child process, on discovered ports only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binary::server_binary;
use crate::keys::Key;
use crate::lines::{Lines, WaitError};
use crate::ports::{PortLease, PortRange};
use crate::process::{wait_until, ExitOutput};
use crate::FAILURE_TIMEOUT;

/// A listener the server announces in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Ssh,
    Http,
    Https,
}

/// Recognises the log line announcing a listener and its bound address.
///
/// The only place that knows the log format. Tolerant on purpose: the line must mention
/// "listen", name the kind as a word (`https` before `http` before `ssh`), and carry the address
/// as the last `IP:PORT` token, e.g. `INFO tunnel_runtime: listening ssh on 127.0.0.1:40123`
/// or `listening kind=https addr=[::1]:8443`.
pub fn parse_listener_line(line: &str) -> Option<(Listener, SocketAddr)> {
    let lower = line.to_ascii_lowercase();
    if !lower.contains("listen") {
        return None;
    }
    let has_word = |word: &str| {
        lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == word)
    };
    let kind = if has_word("https") {
        Listener::Https
    } else if has_word("http") {
        Listener::Http
    } else if has_word("ssh") {
        Listener::Ssh
    } else {
        return None;
    };
    let addr = line
        .rsplit(|c: char| {
            c.is_whitespace() || matches!(c, ',' | '"' | '\'' | '=' | '(' | ')' | '`')
        })
        .filter_map(|token| {
            token
                .trim_end_matches(['.', ';'])
                .parse::<SocketAddr>()
                .ok()
        })
        .next()?;
    Some((kind, addr))
}

/// A running `tunnel-server`; killed on drop.
pub struct Server {
    child: Child,
    log: Arc<Lines>,
    ssh_addr: SocketAddr,
    tcp_ports: Option<PortRange>,
    state_dir: PathBuf,
    work_dir: TempDir,
    key: Key,
    _lease: Option<PortLease>,
}

/// Options for starting a server; see [`Server::builder`].
///
/// By default the server gets `--ssh-addr 127.0.0.1:0 --http-addr 127.0.0.1:0
/// --https-addr 127.0.0.1:0 --tcp-ports <a leased range> --state-dir <temp>`. A default flag is
/// left out when the extra arguments give that flag themselves, or when [`omit`](Self::omit)
/// names it (to let a `--config` file supply it).
#[derive(Default)]
pub struct ServerBuilder {
    args: Vec<String>,
    omitted: Vec<String>,
    state_dir: Option<PathBuf>,
    config: Option<String>,
    /// A program that runs the server (given as its arguments) in its stead.
    wrapper: Vec<String>,
    /// Variables taken out of the server's environment, the harness's own included.
    env_removed: Vec<String>,
}

impl ServerBuilder {
    /// Runs the server under `program ARGS... SERVER SERVER-ARGS...` (e.g. a socket holder);
    /// the process the test controls is then the wrapper.
    pub fn wrapped_in<S: Into<String>>(mut self, program: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = program.into_iter().map(Into::into).collect();
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts the server without the environment variable `name`, even one the harness sets
    /// (`NO_COLOR`, to see what the server does without it).
    pub fn env_remove(mut self, name: &str) -> Self {
        self.env_removed.push(name.to_owned());
        self
    }

    /// Leaves out a default flag such as `--tcp-ports`.
    pub fn omit(mut self, flag: &str) -> Self {
        self.omitted.push(flag.to_owned());
        self
    }

    /// Uses an existing state directory (to restart a server on the same state).
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_owned());
        self
    }

    /// Writes `toml` to a file in the server's work directory and passes `--config FILE`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    fn gives(&self, flag: &str) -> bool {
        self.omitted.iter().any(|f| f == flag)
            || self.args.iter().any(|a| {
                a == flag
                    || a.strip_prefix(flag)
                        .is_some_and(|rest| rest.starts_with('='))
            })
    }

    fn spawn(self) -> Spawned {
        let binary = server_binary();
        let work_dir = tempfile::Builder::new()
            .prefix("tunnel-e2e-server")
            .tempdir()
            .expect("create the server's work directory");
        let mut args: Vec<String> = Vec::new();
        for flag in ["--ssh-addr", "--http-addr", "--https-addr"] {
            if !self.gives(flag) {
                args.extend([flag.to_owned(), "127.0.0.1:0".to_owned()]);
            }
        }
        let lease = (!self.gives("--tcp-ports")).then(PortLease::acquire);
        if let Some(lease) = &lease {
            args.extend(["--tcp-ports".to_owned(), lease.range().to_string()]);
        }
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| work_dir.path().join("state"));
        if !self.gives("--state-dir") {
            std::fs::create_dir_all(&state_dir).expect("create the state directory");
            args.extend(["--state-dir".to_owned(), state_dir.display().to_string()]);
        }
        if let Some(toml) = &self.config {
            let path = work_dir.path().join("tunnel.toml");
            std::fs::write(&path, toml).expect("write the config file");
            args.extend(["--config".to_owned(), path.display().to_string()]);
        }
        args.extend(self.args);

        let mut command = match self.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(&args)
            // Relative defaults such as ./tunnel-state must not land in the repository.
            .current_dir(work_dir.path())
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // An inherited RUST_LOG could hide the listener lines; TUNNEL_E2E_RUST_LOG sets it.
        match std::env::var_os("TUNNEL_E2E_RUST_LOG") {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        for name in &self.env_removed {
            command.env_remove(name);
        }
        let description = format!("{} {}", binary.display(), args.join(" "));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {description}: {e}"));
        let log = Lines::new();
        log.capture(child.stdout.take().expect("stdout is piped"));
        log.capture(child.stderr.take().expect("stderr is piped"));
        Spawned {
            child,
            log,
            description,
            work_dir,
            state_dir,
            lease,
        }
    }

    /// Starts the server and waits (bounded) for its SSH listener line.
    pub fn start(self) -> Server {
        let Spawned {
            mut child,
            log,
            description,
            work_dir,
            state_dir,
            lease,
        } = self.spawn();
        let deadline = Instant::now() + FAILURE_TIMEOUT;
        let found = log.wait_from(0, deadline, |line| {
            matches!(parse_listener_line(line), Some((Listener::Ssh, _)))
        });
        let ssh_addr = match found {
            Ok((_, line)) => parse_listener_line(&line).expect("matched above").1,
            Err(why) => {
                let _ = child.kill();
                let status = wait_until(&mut child, Instant::now() + Duration::from_secs(5));
                let why = match why {
                    WaitError::Closed => "exited",
                    WaitError::TimedOut => "logged no ssh listener line in time",
                };
                panic!(
                    "tunnel-server {why} (status {status:?})\n  command: {description}\n  log:\n{}",
                    log.render()
                );
            }
        };
        Server {
            child,
            log,
            ssh_addr,
            tcp_ports: lease.as_ref().map(PortLease::range),
            state_dir,
            work_dir,
            key: Key::generate(),
            _lease: lease,
        }
    }

    /// Runs a server that is expected to exit on its own (a refused configuration), bounded by
    /// `timeout`.
    pub fn run_to_exit(self, timeout: Duration) -> ExitOutput {
        // The work dir (and the state dir in it) must outlive the process: `..` would drop it
        // at once, and a server that gets as far as writing its state would fail on that.
        let Spawned {
            mut child,
            log,
            description,
            work_dir: _work_dir,
            ..
        } = self.spawn();
        let deadline = Instant::now() + timeout;
        let Some(status) = wait_until(&mut child, deadline) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tunnel-server was expected to exit but still ran after {timeout:?}\n  command: {description}\n  log:\n{}",
                log.render()
            );
        };
        log.wait_closed(Instant::now() + Duration::from_secs(5));
        // Both streams went into one log; a refusal is expected on stderr but stdout is fine too.
        ExitOutput {
            status,
            stdout: Vec::new(),
            stderr: log.snapshot(),
            context: format!("  command: {description}\n"),
        }
    }
}

struct Spawned {
    child: Child,
    log: Arc<Lines>,
    description: String,
    work_dir: TempDir,
    state_dir: PathBuf,
    lease: Option<PortLease>,
}

impl Server {
    /// Starts a server with the default flags plus `extra_args`.
    pub fn start(extra_args: &[&str]) -> Server {
        Server::builder().args(extra_args.iter().copied()).start()
    }

    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The bound SSH address as logged (may be a wildcard address).
    pub fn ssh_addr(&self) -> SocketAddr {
        self.ssh_addr
    }

    pub fn ssh_port(&self) -> u16 {
        self.ssh_addr.port()
    }

    /// An address a client on this machine can connect to for the SSH listener.
    pub fn ssh_connect_addr(&self) -> SocketAddr {
        connectable(self.ssh_addr)
    }

    /// The HTTP listener's address, waiting (bounded) for its log line.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener_addr(Listener::Http)
    }

    /// The HTTPS listener's address, waiting (bounded) for its log line.
    pub fn https_addr(&self) -> SocketAddr {
        self.listener_addr(Listener::Https)
    }

    fn listener_addr(&self, kind: Listener) -> SocketAddr {
        let deadline = Instant::now() + FAILURE_TIMEOUT;
        match self.log.wait_from(0, deadline, |line| {
            parse_listener_line(line).is_some_and(|(k, _)| k == kind)
        }) {
            Ok((_, line)) => connectable(parse_listener_line(&line).expect("matched above").1),
            Err(why) => panic!(
                "no {kind:?} listener line ({why:?})\n  server log:\n{}",
                self.log.render()
            ),
        }
    }

    /// The `--tcp-ports` range the harness gave (None when the test supplied its own).
    pub fn tcp_ports(&self) -> PortRange {
        self.tcp_ports
            .expect("this server got its --tcp-ports from the test, not the harness")
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A scratch directory that lives as long as the server (config files, key lists).
    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// The key clients use unless a test gives another.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Everything the server logged so far, indented, for failure messages.
    pub fn log(&self) -> String {
        self.log.render()
    }

    /// Waits (bounded) for a log line matching `matches`, from the first line on, and returns it.
    pub fn wait_log_line(&self, matches: impl FnMut(&str) -> bool, timeout: Duration) -> String {
        match self.log.wait_from(0, Instant::now() + timeout, matches) {
            Ok((_, line)) => line,
            Err(why) => panic!(
                "no matching server log line ({why:?})\n  server log:\n{}",
                self.log.render()
            ),
        }
    }

    /// The log lines so far that match `matches`.
    pub fn log_lines_matching(&self, mut matches: impl FnMut(&str) -> bool) -> Vec<String> {
        self.log
            .snapshot()
            .into_iter()
            .filter(|line| matches(line))
            .collect()
    }

    pub(crate) fn log_lines(&self) -> Arc<Lines> {
        Arc::clone(&self.log)
    }

    /// The server process's id (e.g. to read `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the server SIGHUP (`kill -HUP PID`), as an operator asks it to re-read its files.
    pub fn hang_up(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed: {status}");
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the server as systemd does, with SIGTERM, and waits (bounded) for it to exit; true
    /// if it exited on its own and with success.
    pub fn terminate(mut self) -> bool {
        self.send_sigterm();
        self.wait_exited(FAILURE_TIMEOUT)
            .is_some_and(|status| status.success())
    }

    /// Sends SIGTERM (a stop that lets visitors finish and keeps every name).
    pub fn send_sigterm(&self) {
        self.send_signal("TERM");
    }

    /// Sends the signal named `name` (`HUP`, `TERM`, ...) to the process the test started.
    pub fn send_signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -{name} {pid}");
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if still running.
    pub fn wait_exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return None,
            }
        }
    }

    /// Kills the server with SIGKILL (`kill -9`: none of its clean-up runs) and waits for it to go.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_listener_lines() {
        let ssh: SocketAddr = "127.0.0.1:40123".parse().unwrap();
        for line in [
            "listening ssh on 127.0.0.1:40123",
            "2026-01-01T00:00:00Z  INFO tunnel_runtime: listening ssh on 127.0.0.1:40123",
            "INFO tunnel_runtime::net: listener=ssh addr=127.0.0.1:40123 listening",
            "ssh listening on \"127.0.0.1:40123\".",
        ] {
            assert_eq!(
                parse_listener_line(line),
                Some((Listener::Ssh, ssh)),
                "{line}"
            );
        }
        assert_eq!(
            parse_listener_line("INFO listening https on [::1]:8443"),
            Some((Listener::Https, "[::1]:8443".parse().unwrap()))
        );
        assert_eq!(
            parse_listener_line("INFO tunnel_runtime::http: listening http addr=0.0.0.0:8080"),
            Some((Listener::Http, "0.0.0.0:8080".parse().unwrap()))
        );
        assert_eq!(
            parse_listener_line("INFO ssh connection from 127.0.0.1:5555"),
            None
        );
        assert_eq!(
            parse_listener_line("listening tcp on 127.0.0.1:21000"),
            None
        );
        assert_eq!(parse_listener_line("listening ssh soon"), None);
    }
}
