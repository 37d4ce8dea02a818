//! Client key pairs, made with the real `ssh-keygen`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// Path of the OpenSSH key generator.
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// An ed25519 key pair without passphrase in its own temporary directory.
pub struct Key {
    _dir: TempDir,
    private: PathBuf,
}

impl Key {
    /// Runs `ssh-keygen -t ed25519 -N '' -f DIR/id`.
    pub fn generate() -> Key {
        let dir = tempfile::Builder::new()
            .prefix("tunnel-e2e-key")
            .tempdir()
            .expect("create a temporary directory for a key");
        let private = dir.path().join("id");
        let output = Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "tunnel-e2e", "-f"])
            .arg(&private)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh-keygen");
        assert!(
            output.status.success(),
            "ssh-keygen failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Key { _dir: dir, private }
    }

    /// The private key file, as `ssh -i` takes it.
    pub fn path(&self) -> &Path {
        &self.private
    }

    /// Signs `user`'s public key as this CA (`ssh-keygen -s CA -I KEY_ID ARGS... user.pub`),
    /// writing `id-cert.pub` beside the user's key, where `ssh -i` finds it.
    pub fn sign(&self, user: &Key, key_id: &str, args: &[&str]) {
        let output = Command::new(SSH_KEYGEN)
            .arg("-q")
            .arg("-s")
            .arg(&self.private)
            .args(["-I", key_id])
            .args(args)
            .arg(user.private.with_extension("pub"))
            .stdin(Stdio::null())
            .output()
            .expect("run ssh-keygen");
        assert!(
            output.status.success(),
            "ssh-keygen -s failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The public key line (`ssh-ed25519 AAAA... comment`), as an authorized_keys file holds it.
    pub fn public_line(&self) -> String {
        let text = std::fs::read_to_string(self.private.with_extension("pub"))
            .expect("ssh-keygen wrote the public key next to the private one");
        text.trim().to_owned()
    }
}
