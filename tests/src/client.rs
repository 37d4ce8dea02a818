//! The user's side: the real OpenSSH client, run exactly as a user would run it.

use std::fmt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keys::Key;
use crate::lines::{Lines, WaitError};
use crate::process::{wait_until, ExitOutput};
use crate::server::Server;
use crate::FAILURE_TIMEOUT;

/// Path of the OpenSSH client.
pub const SSH: &str = "/usr/bin/ssh";

/// One `Forwarding <URL> -> <BIND>:<RPORT>` line from the session's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    pub line: String,
    pub url: String,
    /// `tcp`, `http`, `https` or `tls`.
    pub scheme: String,
    pub host: String,
    /// The port in the URL, if it has one.
    pub port: Option<u16>,
    /// The bind address as the client asked for it (`localhost` for a plain `-R`).
    pub bind: String,
    pub rport: u16,
}

impl Forwarding {
    /// Parses a line of exactly the contract's shape; anything else is `None`.
    pub fn parse(line: &str) -> Option<Forwarding> {
        let rest = line.trim_end().strip_prefix("Forwarding ")?;
        let (url, target) = rest.split_once(" -> ")?;
        let (bind, rport) = target.rsplit_once(':')?;
        let rport = rport.parse().ok()?;
        let (scheme, authority) = url.split_once("://")?;
        let authority = authority.split('/').next()?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => (host, Some(port.parse().ok()?)),
            _ => (authority, None),
        };
        if scheme.is_empty() || host.is_empty() || url.contains(char::is_whitespace) {
            return None;
        }
        Some(Forwarding {
            line: line.to_owned(),
            url: url.to_owned(),
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
            bind: bind.to_owned(),
            rport,
        })
    }

    /// The public port, which every tcp URL must carry.
    pub fn public_port(&self) -> u16 {
        self.port
            .unwrap_or_else(|| panic!("no port in the URL of {:?}", self.line))
    }
}

/// Options for one `ssh` invocation; see [`Client::builder`].
pub struct ClientBuilder<'a> {
    server: &'a Server,
    key: Option<&'a Key>,
    user: Option<String>,
    ssh_args: Vec<String>,
    command: Vec<String>,
    options: Vec<(String, String)>,
    port: Option<u16>,
}

impl<'a> ClientBuilder<'a> {
    /// Connects to this port on 127.0.0.1 instead of the server's SSH listener: a load balancer
    /// in front of it.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Authenticates with `key` instead of the server's default test key.
    pub fn key(mut self, key: &'a Key) -> Self {
        self.key = Some(key);
        self
    }

    /// Connects as `user@host` (e.g. `v2`); without it ssh sends the local login name.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// Adds `-R SPEC`.
    pub fn forward(mut self, spec: impl Into<String>) -> Self {
        self.ssh_args.push("-R".to_owned());
        self.ssh_args.push(spec.into());
        self
    }

    /// Adds an ssh option before the host, such as `-N`.
    pub fn ssh_arg(mut self, arg: impl Into<String>) -> Self {
        self.ssh_args.push(arg.into());
        self
    }

    /// The remote command words after the host; ssh joins them with spaces.
    pub fn command<S: Into<String>>(mut self, words: impl IntoIterator<Item = S>) -> Self {
        self.command.extend(words.into_iter().map(Into::into));
        self
    }

    /// Overrides (or adds) `-o NAME=VALUE`, e.g. `("LogLevel", "INFO")`.
    pub fn option(mut self, name: &str, value: &str) -> Self {
        match self.options.iter_mut().find(|(n, _)| n == name) {
            Some(option) => option.1 = value.to_owned(),
            None => self.options.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    pub fn spawn(self) -> Client {
        let key = self.key.unwrap_or_else(|| self.server.key());
        let destination = match &self.user {
            Some(user) => format!("{user}@127.0.0.1"),
            None => "127.0.0.1".to_owned(),
        };
        let mut args: Vec<String> = vec![
            // No user or system configuration: only what the test says.
            "-F".into(),
            "/dev/null".into(),
            "-p".into(),
            self.port
                .unwrap_or_else(|| self.server.ssh_connect_addr().port())
                .to_string(),
            "-i".into(),
            key.path().display().to_string(),
        ];
        for (name, value) in &self.options {
            args.extend(["-o".to_owned(), format!("{name}={value}")]);
        }
        args.push("-T".into());
        args.extend(self.ssh_args);
        args.push(destination);
        args.extend(self.command);

        let description = format!("{SSH} {}", args.join(" "));
        let mut child = Command::new(SSH)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {description}: {e}"));
        let stdout = Lines::new();
        stdout.capture(child.stdout.take().expect("stdout is piped"));
        let stderr = Lines::new();
        stderr.capture(child.stderr.take().expect("stderr is piped"));
        Client {
            child,
            description,
            stdout,
            stderr,
            stdout_cursor: 0,
            stderr_cursor: 0,
            server_log: self.server.log_lines(),
        }
    }
}

/// A running `ssh`; killed on drop (an abrupt disconnect, as when a laptop goes away).
pub struct Client {
    child: Child,
    description: String,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    stdout_cursor: usize,
    stderr_cursor: usize,
    server_log: Arc<Lines>,
}

impl Client {
    /// A builder with the harness's ssh options: `IdentitiesOnly=yes`,
    /// `StrictHostKeyChecking=no`, `UserKnownHostsFile=/dev/null`, `BatchMode=yes`,
    /// `ExitOnForwardFailure=yes`, `ServerAliveInterval=5`, `LogLevel=ERROR`, `ConnectTimeout=10`.
    pub fn builder(server: &Server) -> ClientBuilder<'_> {
        let options = [
            ("IdentitiesOnly", "yes"),
            ("IdentityAgent", "none"),
            ("StrictHostKeyChecking", "no"),
            ("UserKnownHostsFile", "/dev/null"),
            ("BatchMode", "yes"),
            ("ExitOnForwardFailure", "yes"),
            ("ServerAliveInterval", "5"),
            ("LogLevel", "ERROR"),
            ("ConnectTimeout", "10"),
            ("ControlMaster", "no"),
            ("ControlPath", "none"),
        ];
        ClientBuilder {
            server,
            key: None,
            user: None,
            ssh_args: Vec::new(),
            command: Vec::new(),
            port: None,
            options: options
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Runs `ssh [SSH_ARGS] [USER@]127.0.0.1 REMOTE_CMD...` with the server's default key.
    pub fn spawn(
        server: &Server,
        ssh_args: &[&str],
        remote_cmd: &[&str],
        user: Option<&str>,
    ) -> Client {
        let mut builder = Client::builder(server);
        for arg in ssh_args {
            builder = builder.ssh_arg(*arg);
        }
        if let Some(user) = user {
            builder = builder.user(user);
        }
        builder.command(remote_cmd.iter().copied()).spawn()
    }

    /// `ssh -R 0:localhost:LOCAL_PORT 127.0.0.1 tcp FLAGS...`, waiting for its Forwarding line.
    pub fn tcp_tunnel(server: &Server, local_port: u16, flags: &[&str]) -> (Client, Forwarding) {
        let mut client = Client::builder(server)
            .forward(format!("0:localhost:{local_port}"))
            .command(["tcp"])
            .command(flags.iter().copied())
            .spawn();
        let forwarding = client.wait_forwarding();
        (client, forwarding)
    }

    /// Waits for the next stdout line (after the ones already consumed) that matches, and
    /// consumes it. Fails at once, with everything captured, if ssh exits first.
    pub fn wait_stdout_line(
        &mut self,
        matches: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        match self.stdout.wait_from(self.stdout_cursor, deadline, matches) {
            Ok((index, line)) => {
                self.stdout_cursor = index + 1;
                line
            }
            Err(why) => self.fail(&format!("no matching stdout line ({})", describe(why))),
        }
    }

    /// Like [`wait_stdout_line`](Self::wait_stdout_line), for stderr (e.g. OpenSSH's own
    /// `Allocated port` line at `LogLevel=INFO`).
    pub fn wait_stderr_line(
        &mut self,
        matches: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        match self.stderr.wait_from(self.stderr_cursor, deadline, matches) {
            Ok((index, line)) => {
                self.stderr_cursor = index + 1;
                line
            }
            Err(why) => self.fail(&format!("no matching stderr line ({})", describe(why))),
        }
    }

    /// Waits for the next `Forwarding` line and parses it.
    pub fn wait_forwarding(&mut self) -> Forwarding {
        let line = self.wait_stdout_line(|l| l.starts_with("Forwarding "), FAILURE_TIMEOUT);
        Forwarding::parse(&line)
            .unwrap_or_else(|| self.fail(&format!("malformed Forwarding line {line:?}")))
    }

    /// Waits for the next `n` Forwarding lines.
    pub fn wait_forwardings(&mut self, n: usize) -> Vec<Forwarding> {
        (0..n).map(|_| self.wait_forwarding()).collect()
    }

    /// Waits (bounded) for ssh to exit by itself and returns what it wrote.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitOutput {
        let Some(status) = wait_until(&mut self.child, Instant::now() + timeout) else {
            self.fail(&format!("ssh still running after {timeout:?}"));
        };
        let closed_by = Instant::now() + Duration::from_secs(5);
        self.stdout.wait_closed(closed_by);
        self.stderr.wait_closed(closed_by);
        ExitOutput {
            status,
            stdout: self.stdout.snapshot(),
            stderr: self.stderr.snapshot(),
            context: format!(
                "  command: {}\n  server log:\n{}",
                self.description,
                self.server_log.render()
            ),
        }
    }

    /// Whether ssh is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills ssh (an abrupt disconnect) and waits for it to go.
    pub fn disconnect(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    /// Checks an echo round trip through public `port`; on failure panics with this client's
    /// output and the server's log.
    pub fn assert_echo(&self, port: u16) {
        self.assert_echo_after(port, b"");
    }

    /// Like [`assert_echo`](Self::assert_echo) for a service that first sends `banner`.
    pub fn assert_echo_after(&self, port: u16, banner: &[u8]) {
        if let Err(e) = crate::visitor::try_echo_after(port, banner) {
            self.fail(&e);
        }
    }

    /// Panics with the command, everything ssh wrote so far and the server's log.
    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{self}")
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  command: {}\n  ssh stdout:\n{}  ssh stderr:\n{}  server log ({} lines):\n{}",
            self.description,
            self.stdout.render(),
            self.stderr.render(),
            self.server_log.len(),
            self.server_log.render()
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.disconnect();
    }
}

fn describe(why: WaitError) -> &'static str {
    match why {
        WaitError::Closed => "ssh closed its output",
        WaitError::TimedOut => "timed out",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forwarding_lines() {
        let f = Forwarding::parse("Forwarding tcp://localhost:20007 -> localhost:0").unwrap();
        assert_eq!(
            (f.scheme.as_str(), f.host.as_str(), f.port),
            ("tcp", "localhost", Some(20007))
        );
        assert_eq!((f.bind.as_str(), f.rport), ("localhost", 0));
        let f =
            Forwarding::parse("Forwarding tls://app.localhost:8443 -> app.localhost:443").unwrap();
        assert_eq!((f.host.as_str(), f.rport), ("app.localhost", 443));
        let f = Forwarding::parse("Forwarding http://k3j9x2.example.test -> localhost:80").unwrap();
        assert_eq!((f.host.as_str(), f.port), ("k3j9x2.example.test", None));
        assert_eq!(
            Forwarding::parse("Forwarding tcp://localhost:1 localhost:0"),
            None
        );
        assert_eq!(
            Forwarding::parse("Allocated port 1 for remote forward"),
            None
        );
    }
}
