//! Host key and `authorized_keys` files: the only key material the server reads from disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{self, LineEnding};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use thiserror::Error;

/// Comment stored in a generated host key, shown by `ssh-keygen -l`.
const HOST_KEY_COMMENT: &str = "tunnel-server host key";

/// A failure reading or writing key files; Display is the line the operator reads.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read host key {}: {source}", path.display())]
    ReadHostKey { path: PathBuf, source: io::Error },
    #[error("host key {} is not an OpenSSH private key: {source}", path.display())]
    ParseHostKey {
        path: PathBuf,
        source: ssh_key::Error,
    },
    #[error(
        "host key {} is protected by a passphrase; the server needs an unencrypted key",
        path.display()
    )]
    EncryptedHostKey { path: PathBuf },
    #[error("cannot create directory {} for the host key: {source}", path.display())]
    CreateKeyDir { path: PathBuf, source: io::Error },
    #[error("cannot generate host key {}: no randomness from the OS: {source}", path.display())]
    Randomness {
        path: PathBuf,
        source: getrandom::Error,
    },
    #[error("cannot encode host key {}: {source}", path.display())]
    EncodeHostKey {
        path: PathBuf,
        source: ssh_key::Error,
    },
    #[error("cannot write host key {}: {source}", path.display())]
    WriteHostKey { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {problem}", path.display())]
    KeyOptions {
        path: PathBuf,
        line: usize,
        problem: tunnel_core::KeyOptionError,
    },
    #[error("cannot read authorized keys file {}: {source}", path.display())]
    ReadAuthorizedKeys { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {problem}", path.display())]
    MalformedAuthorizedKey {
        path: PathBuf,
        line: usize,
        problem: LineProblem,
    },
}

/// Why one `authorized_keys` line was rejected.
#[derive(Debug, Error)]
pub enum LineProblem {
    #[error("unterminated quote in key options")]
    UnterminatedQuote,
    #[error("key options are not followed by a key")]
    MissingKey,
    #[error("expected [OPTIONS] KEYTYPE BASE64 [COMMENT], but the key does not parse: {0}")]
    InvalidKey(ssh_key::Error),
}

/// Loads the host key at `path`, or generates an ed25519 key there if the file does not exist.
///
/// The key is reused across restarts so clients keep trusting the same fingerprint. A new key
/// is written in OpenSSH format, readable only by its owner, and any missing parent directories
/// are created (mode 0700, as they hold secrets).
pub fn load_or_generate_host_key(path: &Path) -> Result<PrivateKey, KeyError> {
    match fs::read(path) {
        Ok(pem) => parse_host_key(path, &pem),
        Err(e) if e.kind() == io::ErrorKind::NotFound => generate_host_key(path),
        Err(source) => Err(KeyError::ReadHostKey {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_host_key(path: &Path, pem: &[u8]) -> Result<PrivateKey, KeyError> {
    let key = PrivateKey::from_openssh(pem).map_err(|source| KeyError::ParseHostKey {
        path: path.to_owned(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(KeyError::EncryptedHostKey {
            path: path.to_owned(),
        });
    }
    Ok(key)
}

fn generate_host_key(path: &Path) -> Result<PrivateKey, KeyError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|source| KeyError::CreateKeyDir {
            path: dir.to_owned(),
            source,
        })?;
    }

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|source| KeyError::Randomness {
        path: path.to_owned(),
        source,
    })?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(HOST_KEY_COMMENT);

    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|source| KeyError::EncodeHostKey {
            path: path.to_owned(),
            source,
        })?;
    crate::state_file::write_atomic(path, pem.as_bytes()).map_err(|source| {
        KeyError::WriteHostKey {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(key)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The SHA-256 fingerprint of `key`, as `ssh-keygen -l` prints it (`SHA256:` + unpadded base64).
///
/// This is the identity that owns tunnel names.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The keys allowed to connect, from an OpenSSH `authorized_keys` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizedKeys {
    entries: Vec<AuthorizedKey>,
}

/// One line of an `authorized_keys` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    fingerprint: String,
    options: String,
    comment: String,
    line: usize,
}

impl AuthorizedKey {
    /// SHA-256 fingerprint, `SHA256:...`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The options field before the key type, verbatim; empty if none. [`AuthorizedKeys::key_list`]
    /// turns them into what the core enforces.
    pub fn options(&self) -> &str {
        &self.options
    }

    /// Text after the key, trimmed; empty if none.
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// 1-based line number in the file.
    pub fn line(&self) -> usize {
        self.line
    }
}

impl AuthorizedKeys {
    /// Parses `authorized_keys` text; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<AuthorizedKeys, KeyError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let parsed = parse_line(raw).map_err(|problem| KeyError::MalformedAuthorizedKey {
                path: path.to_owned(),
                line,
                problem,
            })?;
            if let Some((key, options, comment)) = parsed {
                entries.push(AuthorizedKey {
                    fingerprint: fingerprint(&key),
                    options: options.to_owned(),
                    comment: comment.to_owned(),
                    line,
                });
            }
        }
        Ok(AuthorizedKeys { entries })
    }

    /// Every entry in file order.
    pub fn entries(&self) -> &[AuthorizedKey] {
        &self.entries
    }

    /// Every entry's fingerprint in file order (a key listed twice appears twice).
    pub fn fingerprints(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.fingerprint.as_str())
    }

    /// Whether a key with this `SHA256:...` fingerprint is listed.
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.fingerprints().any(|f| f == fingerprint)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Reads an OpenSSH `authorized_keys` file (sshd(8), "AUTHORIZED_KEYS FILE FORMAT").
///
/// Blank lines and lines starting with `#` are skipped. Options before the key type are kept
/// verbatim; [`AuthorizedKeys::key_list`] reads them. Any malformed line fails the whole file, naming the line, so a typo never
/// silently locks a key out.
pub fn load_authorized_keys(path: &Path) -> Result<AuthorizedKeys, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::ReadAuthorizedKeys {
        path: path.to_owned(),
        source,
    })?;
    AuthorizedKeys::parse(path, &text)
}

impl AuthorizedKeys {
    /// The list the core enforces: each key with the rules of its options, read now
    /// (`expiry-time` becomes a deadline on the monotonic clock). An option the server cannot
    /// honour is an error naming the line: a key is never let in with fewer restrictions than
    /// its line asks.
    pub fn key_list(&self, path: &Path) -> Result<tunnel_core::KeyList, KeyError> {
        let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
        self.entries()
            .iter()
            .try_fold(tunnel_core::KeyList::new(), |list, k| {
                let rules = tunnel_core::KeyRules::from_options(k.options(), now, wall).map_err(
                    |problem| KeyError::KeyOptions {
                        path: path.to_owned(),
                        line: k.line(),
                        problem,
                    },
                )?;
                Ok(list.with_key(tunnel_core::KeyFingerprint::new(k.fingerprint()), rules))
            })
    }
}

/// What the core needs to know of a certificate the SSH stack has verified (signature and
/// validity window): its signer's fingerprint, type, key id, principals, critical options and
/// extension names. Reads it; decides nothing.
pub fn certificate_facts(certificate: &ssh_key::Certificate) -> tunnel_core::UserCertificate {
    tunnel_core::UserCertificate {
        authority: tunnel_core::KeyFingerprint::new(
            certificate
                .signature_key()
                .fingerprint(HashAlg::Sha256)
                .to_string(),
        ),
        kind: if certificate.cert_type().is_host() {
            tunnel_core::CertificateKind::Host
        } else {
            tunnel_core::CertificateKind::User
        },
        key_id: certificate.key_id().to_owned(),
        principals: certificate.valid_principals().to_vec(),
        critical_options: certificate
            .critical_options()
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        extensions: certificate.extensions().keys().cloned().collect(),
    }
}

/// Parses one line into (key, options, comment); `None` for blank and comment lines.
fn parse_line(raw: &str) -> Result<Option<(PublicKey, &str, &str)>, LineProblem> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    // Like sshd: a line starts with options unless its first word names a key type.
    let (first, _) = split_word(line);
    let (options, rest) = if Algorithm::new(first).is_ok() {
        ("", line)
    } else {
        let end = options_end(line).ok_or(LineProblem::UnterminatedQuote)?;
        (&line[..end], line[end..].trim_start())
    };
    if rest.is_empty() {
        return Err(LineProblem::MissingKey);
    }
    let (key_type, rest) = split_word(rest);
    let (base64, comment) = split_word(rest);
    let key = PublicKey::from_openssh(&format!("{key_type} {base64}"))
        .map_err(LineProblem::InvalidKey)?;
    Ok(Some((key, options, comment)))
}

/// Splits off the first whitespace-delimited word; the remainder has leading whitespace removed.
fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Byte offset where the options field ends: the first space or tab outside double quotes,
/// where `\"` inside quotes does not end the quote (sshkey_advance_past_options in OpenSSH).
fn options_end(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            b' ' | b'\t' if !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    (!quoted).then_some(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const ED25519_LINE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti foo@bar.com";

    /// Generates a key with OpenSSH and returns (public key line, `ssh-keygen -lf` fingerprint).
    fn ssh_keygen(dir: &Path, name: &str, key_type: &str) -> (String, String) {
        let path = dir.join(name);
        let status = Command::new("/usr/bin/ssh-keygen")
            .args(["-q", "-t", key_type, "-N", "", "-C", "alice@laptop", "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        let public = fs::read_to_string(path.with_extension("pub")).expect("public key written");
        (public.trim().to_owned(), keygen_fingerprint(&path))
    }

    /// The fingerprint field of `ssh-keygen -lf PATH` ("256 SHA256:... comment (ED25519)").
    fn keygen_fingerprint(path: &Path) -> String {
        let out = Command::new("/usr/bin/ssh-keygen")
            .arg("-lf")
            .arg(path)
            .output()
            .expect("ssh-keygen runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8 output");
        text.split_whitespace()
            .nth(1)
            .expect("fingerprint field")
            .to_owned()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn host_key_is_generated_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("nested").join("host_key");

        let first = load_or_generate_host_key(&path).expect("generated");
        assert_eq!(first.algorithm(), Algorithm::Ed25519);
        #[cfg(unix)]
        {
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().expect("has parent")), 0o700);
        }
        assert!(!dir.path().join("state/nested/host_key.tmp").exists());

        let second = load_or_generate_host_key(&path).expect("reloaded");
        assert_eq!(
            fingerprint(first.public_key()),
            fingerprint(second.public_key())
        );
        assert_eq!(
            first.public_key().key_data(),
            second.public_key().key_data()
        );

        // OpenSSH reads the file we wrote and agrees on the fingerprint.
        assert_eq!(keygen_fingerprint(&path), fingerprint(first.public_key()));
    }

    #[test]
    fn host_key_from_ssh_keygen_is_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, expected) = ssh_keygen(dir.path(), "hk", "ed25519");
        let key = load_or_generate_host_key(&dir.path().join("hk")).expect("loads");
        assert_eq!(fingerprint(key.public_key()), expected);
    }

    #[test]
    fn host_key_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host_key");
        fs::write(&path, "not a key\n").expect("write");
        let err = load_or_generate_host_key(&path).expect_err("garbage");
        assert!(matches!(err, KeyError::ParseHostKey { .. }));
        assert!(err.to_string().starts_with(&format!(
            "host key {} is not an OpenSSH private key: ",
            path.display()
        )));

        let encrypted = dir.path().join("enc");
        let status = Command::new("/usr/bin/ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&encrypted)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        let err = load_or_generate_host_key(&encrypted).expect_err("encrypted");
        assert_eq!(
            err.to_string(),
            format!(
                "host key {} is protected by a passphrase; the server needs an unencrypted key",
                encrypted.display()
            )
        );
    }

    #[cfg(unix)]
    #[test]
    fn host_key_dir_that_is_a_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("state");
        fs::write(&blocker, "").expect("write");
        let err = load_or_generate_host_key(&blocker.join("host_key")).expect_err("not a dir");
        assert!(matches!(err, KeyError::ReadHostKey { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!(
            "cannot read host key {}/host_key: ",
            blocker.display()
        )));
    }

    #[test]
    fn authorized_keys_match_ssh_keygen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ed, ed_fp) = ssh_keygen(dir.path(), "ed", "ed25519");
        let (ec, ec_fp) = ssh_keygen(dir.path(), "ec", "ecdsa");
        let (rsa, rsa_fp) = ssh_keygen(dir.path(), "rsa", "rsa");

        let ec_body = ec.strip_suffix(" alice@laptop").expect("comment set by -C");
        let text = format!(
            "# team keys\n\
             \n\
             {ed}\n   \n\
             restrict,command=\"echo \\\"hi there\\\" # not a comment\",from=\"10.0.0.0/8\" {ec_body} ops key  #2\n\
             \t{rsa}\r\n"
        );
        let path = dir.path().join("authorized_keys");
        fs::write(&path, &text).expect("write");
        // The parser reads options (loading refuses them: see options_tests).
        let keys = AuthorizedKeys::parse(&path, &text).expect("parses");
        assert_eq!(
            keys.fingerprints().collect::<Vec<_>>(),
            vec![ed_fp.as_str(), ec_fp.as_str(), rsa_fp.as_str()]
        );
        assert!(keys.contains(&ec_fp));
        assert!(!keys.contains("SHA256:nope"));
        assert_eq!(keys.len(), 3);

        let e = keys.entries();
        assert_eq!(
            (e[0].options(), e[0].comment(), e[0].line()),
            ("", "alice@laptop", 3)
        );
        assert_eq!(
            e[1].options(),
            "restrict,command=\"echo \\\"hi there\\\" # not a comment\",from=\"10.0.0.0/8\""
        );
        assert_eq!((e[1].comment(), e[1].line()), ("ops key  #2", 5));
        assert_eq!((e[2].options(), e[2].comment()), ("", "alice@laptop"));

        // The file as a whole agrees with OpenSSH too (it prints one line per key).
        let out = Command::new("/usr/bin/ssh-keygen")
            .arg("-lf")
            .arg(&path)
            .output()
            .expect("ssh-keygen runs");
        let listed: Vec<String> = String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| l.split_whitespace().nth(1).expect("field").to_owned())
            .collect();
        assert_eq!(listed, keys.fingerprints().collect::<Vec<_>>());
    }

    #[test]
    fn fingerprint_is_sha256_form() {
        let key = PublicKey::from_openssh(ED25519_LINE).expect("valid");
        assert_eq!(
            fingerprint(&key),
            "SHA256:UCUiLr7Pjs9wFFJMDByLgc3NrtdU344OgUM45wZPcIQ"
        );
    }

    #[test]
    fn empty_file_has_no_keys() {
        let keys = AuthorizedKeys::parse(Path::new("ak"), "\n# nobody yet\n").expect("parses");
        assert!(keys.is_empty());
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let path = Path::new("/etc/tunnel/authorized_keys");
        let err = |text: &str| {
            AuthorizedKeys::parse(path, text)
                .expect_err("malformed")
                .to_string()
        };

        assert_eq!(
            err(&format!("{ED25519_LINE}\ncommand=\"oops {ED25519_LINE}\n")),
            "/etc/tunnel/authorized_keys:2: unterminated quote in key options"
        );
        assert_eq!(
            err("# ok\nno-pty,restrict\n"),
            "/etc/tunnel/authorized_keys:2: key options are not followed by a key"
        );
        assert!(err("\n\nssh-ed25519 AAAA-not-base64 x\n").starts_with(
            "/etc/tunnel/authorized_keys:3: expected [OPTIONS] KEYTYPE BASE64 [COMMENT], \
                 but the key does not parse: "
        ));
        assert!(err("hello world\n").starts_with(
            "/etc/tunnel/authorized_keys:1: expected [OPTIONS] KEYTYPE BASE64 [COMMENT], \
                 but the key does not parse: "
        ));
        // Key type text that disagrees with the encoded key.
        assert!(err(&ED25519_LINE.replace("ssh-ed25519", "ssh-rsa"))
            .starts_with("/etc/tunnel/authorized_keys:1: expected"));
    }

    #[test]
    fn missing_authorized_keys_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing");
        let err = load_authorized_keys(&path).expect_err("missing");
        assert!(err.to_string().starts_with(&format!(
            "cannot read authorized keys file {}: ",
            path.display()
        )));
    }
}

#[cfg(test)]
mod options_tests {
    use super::*;

    #[test]
    fn certificate_facts_are_read_as_ssh_keygen_wrote_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keygen = |args: &[&str]| {
            let out = std::process::Command::new("/usr/bin/ssh-keygen")
                .current_dir(dir.path())
                .args(args)
                .output()
                .expect("ssh-keygen runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        keygen(&["-q", "-t", "ed25519", "-N", "", "-f", "ca"]);
        keygen(&["-q", "-t", "ed25519", "-N", "", "-f", "user"]);
        keygen(&[
            "-q",
            "-s",
            "ca",
            "-I",
            "alice-laptop",
            "-n",
            "alice,ops",
            "-O",
            "clear",
            "-O",
            "permit-port-forwarding",
            "-O",
            "source-address=10.0.0.0/8",
            "user.pub",
        ]);
        let text = fs::read_to_string(dir.path().join("user-cert.pub")).expect("cert written");
        let cert = ssh_key::Certificate::from_openssh(text.trim()).expect("parses");
        let facts = certificate_facts(&cert);
        let ca = fs::read_to_string(dir.path().join("ca.pub")).expect("ca");
        let ca = PublicKey::from_openssh(ca.trim()).expect("ca parses");
        assert_eq!(facts.authority.as_str(), fingerprint(&ca));
        assert_eq!(facts.kind, tunnel_core::CertificateKind::User);
        assert_eq!(facts.key_id, "alice-laptop");
        assert_eq!(facts.principals, ["alice", "ops"]);
        assert_eq!(
            facts
                .critical_options
                .get("source-address")
                .map(String::as_str),
            Some("10.0.0.0/8")
        );
        assert_eq!(
            facts.extensions.iter().collect::<Vec<_>>(),
            ["permit-port-forwarding"]
        );
    }

    #[test]
    fn cert_authority_lines_list_authorities() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("authorized_keys");
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMEICXeWewDgAbPNBTmpWFH/TvvV7LMTDrBszq+m2ASn";
        fs::write(
            &path,
            format!("cert-authority,principals=\"alice\" {key} team ca\n"),
        )
        .expect("write");
        let list = load_authorized_keys(&path)
            .and_then(|keys| keys.key_list(&path))
            .expect("cert-authority is honoured");
        assert_eq!(list.keys().count(), 0, "a CA's key is no login key");
        assert_eq!(list.authorities().count(), 1);
    }

    #[test]
    fn options_are_honoured_or_refuse_to_load_naming_the_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("authorized_keys");
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMEICXeWewDgAbPNBTmpWFH/TvvV7LMTDrBszq+m2ASn";
        fs::write(
            &path,
            format!("{key} plain\nfrom=\"10.0.0.0/8\",restrict {key} narrowed\n"),
        )
        .expect("write");
        let keys = load_authorized_keys(&path).expect("parses");
        let list = keys
            .key_list(&path)
            .expect("from= and restrict are honoured");
        assert_eq!(list.len(), 1);
        assert!(list
            .keys()
            .all(|(_, rules)| !rules.permits_forward("app", 80)));
        fs::write(
            &path,
            format!("{key} plain\ncommand=\"tcp\" {key} forced\n"),
        )
        .expect("write");
        let keys = load_authorized_keys(&path).expect("parses");
        let error = keys.key_list(&path).expect_err("never ignored").to_string();
        assert!(
            error.contains(":2: option command=\"tcp\" is not enforced"),
            "{error}"
        );
    }
}
