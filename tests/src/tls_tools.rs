//! TLS on the visitor's and the user's side, with the stock tools a user has: `openssl req` for
//! certificates, `openssl s_server` as a local TLS service, `openssl s_client` and `curl` as
//! visitors. Every run is bounded; nothing is fixed but the tools' paths.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::lines::{Lines, WaitError};
use crate::process::wait_until;
use crate::FAILURE_TIMEOUT;

pub const OPENSSL: &str = "openssl";
pub const CURL: &str = "curl";

/// What a bounded run of a tool left.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub command: String,
    /// None when it was killed at the deadline.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for ToolOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  command: {}\n  exit: {:?}\n  stdout:\n{}\n  stderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `program args` with `stdin` as its input, killed at `timeout`.
pub fn run(program: &str, args: &[&str], stdin: &[u8], timeout: Duration) -> ToolOutput {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {command}: {e}"));
    let collect = |mut source: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = source.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("piped")));
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("piped");
        let _ = input.write_all(stdin);
        // Dropping stdin gives the tool its EOF (s_client then closes and exits).
    }
    let status = wait_until(&mut child, Instant::now() + timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    ToolOutput {
        command,
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A self-signed certificate and its key in a temporary directory.
pub struct CertFiles {
    dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// `openssl req -x509` for subject `CN=cn` with `names` as DNS subject alternative names.
    pub fn self_signed(cn: &str, names: &[&str]) -> CertFiles {
        let dir = tempfile::Builder::new()
            .prefix("tunnel-e2e-cert")
            .tempdir()
            .expect("create a certificate directory");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let subject = format!("/CN={cn}");
        let mut args = vec![
            "req".to_owned(),
            "-x509".into(),
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:prime256v1".into(),
            "-nodes".into(),
            "-days".into(),
            "2".into(),
            "-subj".into(),
            subject,
            "-keyout".into(),
            key.display().to_string(),
            "-out".into(),
            cert.display().to_string(),
        ];
        if !names.is_empty() {
            let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
            args.push("-addext".into());
            args.push(format!("subjectAltName={}", sans.join(",")));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(OPENSSL, &args, b"", FAILURE_TIMEOUT);
        assert!(out.success(), "openssl req failed\n{out}");
        CertFiles { dir, cert, key }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The certificate's SHA-256 fingerprint as openssl prints it.
    pub fn fingerprint(&self) -> String {
        let pem = std::fs::read(&self.cert).expect("read the certificate");
        fingerprint_of_pem(&pem)
    }
}

/// `openssl s_server -www` on `127.0.0.1:0`, killed on drop.
pub struct OpensslServer {
    child: Child,
    port: u16,
    log: Arc<Lines>,
}

impl OpensslServer {
    /// Starts it with `cert` and waits (bounded) for its `ACCEPT` line to learn the port.
    pub fn start(cert: &CertFiles) -> OpensslServer {
        let mut child = Command::new(OPENSSL)
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start openssl s_server");
        let log = Lines::new();
        log.capture(child.stdout.take().expect("piped"));
        log.capture(child.stderr.take().expect("piped"));
        let found = log.wait_from(0, Instant::now() + FAILURE_TIMEOUT, |l| {
            l.starts_with("ACCEPT")
        });
        let port = match found {
            Ok((_, line)) => line
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no port in {line:?}")),
            Err(why) => {
                let _ = child.kill();
                panic!(
                    "openssl s_server printed no ACCEPT line ({}):\n{}",
                    match why {
                        WaitError::Closed => "exited",
                        WaitError::TimedOut => "timed out",
                    },
                    log.render()
                )
            }
        };
        OpensslServer { child, port, log }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What s_server printed so far.
    pub fn log(&self) -> String {
        self.log.render()
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_client -connect ADDR [-servername NAME | -noservername] EXTRA...` with an empty
/// stdin (it handshakes, then closes).
pub fn s_client(addr: SocketAddr, servername: Option<&str>, extra: &[&str]) -> ToolOutput {
    let connect = addr.to_string();
    let mut args = vec!["s_client", "-connect", connect.as_str()];
    match servername {
        Some(name) => args.extend(["-servername", name]),
        None => args.push("-noservername"),
    }
    args.extend_from_slice(extra);
    run(OPENSSL, &args, b"", FAILURE_TIMEOUT)
}

/// The first PEM certificate in `text`, if any.
pub fn first_pem_certificate(text: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text.find(BEGIN)?;
    let end = text[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &text[start..end]))
}

/// `openssl x509 -noout -fingerprint -sha256` of a PEM certificate.
pub fn fingerprint_of_pem(pem: &[u8]) -> String {
    let out = run(
        OPENSSL,
        &["x509", "-noout", "-fingerprint", "-sha256"],
        pem,
        FAILURE_TIMEOUT,
    );
    assert!(out.success(), "openssl x509 failed\n{out}");
    out.stdout.trim().to_owned()
}

/// `openssl x509 -noout -subject` of a PEM certificate.
pub fn subject_of_pem(pem: &[u8]) -> String {
    let out = run(
        OPENSSL,
        &["x509", "-noout", "-subject"],
        pem,
        FAILURE_TIMEOUT,
    );
    assert!(out.success(), "openssl x509 failed\n{out}");
    out.stdout.trim().to_owned()
}

/// The certificate `addr` presents for SNI `name`: (subject, SHA-256 fingerprint), with the
/// s_client output on failure.
pub fn presented_certificate(addr: SocketAddr, name: &str) -> Result<(String, String), ToolOutput> {
    let out = s_client(addr, Some(name), &[]);
    match first_pem_certificate(&out.stdout) {
        Some(pem) => Ok((
            subject_of_pem(pem.as_bytes()),
            fingerprint_of_pem(pem.as_bytes()),
        )),
        None => Err(out),
    }
}

/// `curl -sS -k --resolve HOST:PORT:127.0.0.1 --max-time 20 EXTRA... URL`, with a last output
/// line `http_version=V status=S` (from `--write-out`).
pub fn curl(host: &str, port: u16, path: &str, extra: &[&str]) -> ToolOutput {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let mut args = vec![
        "-sS",
        "-k",
        "--resolve",
        resolve.as_str(),
        "--max-time",
        "20",
        "--write-out",
        "\nhttp_version=%{http_version} status=%{http_code}\n",
    ];
    args.extend_from_slice(extra);
    args.push(url.as_str());
    run(CURL, &args, b"", Duration::from_secs(30))
}

/// The `http_version=` and `status=` values of [`curl`]'s last line.
pub fn curl_result(out: &ToolOutput) -> (String, u16) {
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("http_version="))
        .unwrap_or_else(|| panic!("no --write-out line\n{out}"));
    let mut version = String::new();
    let mut status = 0;
    for word in line.split_whitespace() {
        if let Some(v) = word.strip_prefix("http_version=") {
            version = v.to_owned();
        } else if let Some(s) = word.strip_prefix("status=") {
            status = s.parse().unwrap_or(0);
        }
    }
    (version, status)
}
