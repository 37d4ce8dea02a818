//! The certificate the https listener presents when it terminates TLS for http endpoints:
//! `--tls-cert/--tls-key`, or a self-signed one for DOMAIN and *.DOMAIN made on first start and
//! kept in the state dir. A wildcard covers one label only (RFC 6125 §6.4.3), so with the
//! self-signed pair a granted name deeper under DOMAIN (`a.b.DOMAIN`) gets a certificate of its
//! own, made with the same key when its endpoint is first visited.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServerConfig;

/// Why the certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot read {what} from {path}: {source}")]
    Pem {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The generated certificate could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate a self-signed certificate for {domain}: {source}")]
    Generate {
        /// The domain.
        domain: String,
        /// Why.
        source: rcgen::Error,
    },
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// File names of the generated certificate in the state dir.
pub const GENERATED_CERT: &str = "tls-cert.pem";
/// File name of the generated key in the state dir.
pub const GENERATED_KEY: &str = "tls-key.pem";
/// File name of the names the generated certificate covers, in the state dir.
pub const GENERATED_NAMES: &str = "tls-cert.names";

/// The rustls configuration for terminating https (ALPN offers h2 and http/1.1), and the
/// certificates it presents.
pub fn server_config(
    config: &ServerConfig,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ServerCerts>), TlsError> {
    let (cert_path, key_path) = match &config.tls {
        Some(files) => (files.cert.clone(), files.key.clone()),
        None => generated(&config.state_dir, &config.domain)?,
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            path: cert_path.clone(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key_path.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let minter = match &config.tls {
        Some(_) => None,
        None => Some(Minter::new(&key, &config.domain)?),
    };
    let signing = provider.key_provider.load_private_key(key)?;
    let main = Arc::new(CertifiedKey::new(certs, signing));
    main.keys_match()?;
    let server_certs = Arc::new(ServerCerts { main, minter });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&server_certs) as Arc<dyn ResolvesServerCert>);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(tls), server_certs))
}

/// The certificates the https listener presents: the main one, and with the self-signed pair
/// one per deeper name it was asked to cover.
#[derive(Debug)]
pub struct ServerCerts {
    main: Arc<CertifiedKey>,
    minter: Option<Minter>,
}

/// Makes certificates for names the main self-signed one does not cover, with its key.
struct Minter {
    key: rcgen::KeyPair,
    signing: Arc<dyn rustls::sign::SigningKey>,
    /// `.DOMAIN`: the names below it that the main certificate covers have no other dot.
    suffix: String,
    made: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

/// At most this many made certificates are kept; past it the oldest go (by a full clear: they
/// are remade on their next visit, in well under a millisecond each).
const MADE_KEPT: usize = 4096;

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("suffix", &self.suffix)
            .finish_non_exhaustive()
    }
}

impl Minter {
    fn new(key: &PrivateKeyDer<'_>, domain: &str) -> Result<Minter, TlsError> {
        let generate = |source| TlsError::Generate {
            domain: domain.to_owned(),
            source,
        };
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.secret_der().to_vec());
        let key = rcgen::KeyPair::try_from(&der).map_err(generate)?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(der))?;
        Ok(Minter {
            key,
            signing,
            suffix: format!(".{domain}"),
            made: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the main certificate (DOMAIN and *.DOMAIN) leaves `name` uncovered: a name two
    /// or more labels below DOMAIN.
    fn needs_own(&self, name: &str) -> bool {
        name.strip_suffix(&self.suffix)
            .is_some_and(|below| below.contains('.'))
    }

    fn made(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.made.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn make(&self, name: &str) -> Result<Arc<CertifiedKey>, rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&self.key)?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone()],
            Arc::clone(&self.signing),
        )))
    }
}

impl ServerCerts {
    /// Makes sure the certificate presented for `name`, the lowercase name of a live endpoint,
    /// covers it. Called before its handshake: a name nobody was granted gets nothing made.
    pub fn cover(&self, name: &str) {
        let Some(minter) = self.minter.as_ref().filter(|m| m.needs_own(name)) else {
            return;
        };
        if minter.made().contains_key(name) {
            return;
        }
        match minter.make(name) {
            Ok(made) => {
                let mut all = minter.made();
                if all.len() >= MADE_KEPT {
                    all.clear();
                }
                all.insert(name.to_owned(), made);
            }
            Err(error) => tracing::warn!(%error, "cannot make a certificate for {name}"),
        }
    }
}

impl ResolvesServerCert for ServerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let made = hello.server_name().and_then(|name| {
            let minter = self.minter.as_ref()?;
            minter.made().get(&name.to_ascii_lowercase()).cloned()
        });
        Some(made.unwrap_or_else(|| Arc::clone(&self.main)))
    }
}

/// The self-signed pair in `state_dir`, made on first use and reused after.
fn generated(state_dir: &Path, domain: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = state_dir.join(GENERATED_CERT);
    let key_path = state_dir.join(GENERATED_KEY);
    let names = vec![domain.to_owned(), format!("*.{domain}")];
    // The names the pair was made for, beside it: a pair made for another --domain is remade.
    let names_path = state_dir.join(GENERATED_NAMES);
    let made_for = fs::read_to_string(&names_path).unwrap_or_default();
    if cert_path.exists() && key_path.exists() && made_for == names.join("\n") {
        return Ok((cert_path, key_path));
    }
    let generate = || -> Result<_, rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(names.clone())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, domain);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok((cert, key))
    };
    let (cert, key) = generate().map_err(|source| TlsError::Generate {
        domain: domain.to_owned(),
        source,
    })?;
    fs::create_dir_all(state_dir).map_err(|source| TlsError::Write {
        path: state_dir.to_owned(),
        source,
    })?;
    write_new(&key_path, key.serialize_pem().as_bytes())?;
    write_new(&cert_path, cert.pem().as_bytes())?;
    write_new(&names_path, names.join("\n").as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate for {domain} and *.{domain}");
    Ok((cert_path, key_path))
}

/// Writes a file whole, readable by the server only.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::state_file::write_atomic(path, bytes).map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_generated_pair_is_kept_for_its_domain_and_remade_for_another() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = generated(dir.path(), "one.test").expect("generated");
        let first = fs::read(&cert).expect("read");
        let mode = fs::metadata(&key).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        generated(dir.path(), "one.test").expect("reused");
        assert_eq!(
            fs::read(&cert).expect("read"),
            first,
            "same domain, same certificate"
        );
        generated(dir.path(), "two.test").expect("remade");
        assert_ne!(
            fs::read(&cert).expect("read"),
            first,
            "a certificate for one.test would be served for two.test"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(GENERATED_NAMES)).expect("read"),
            "two.test\n*.two.test"
        );
    }

    #[test]
    fn only_names_deeper_than_the_wildcard_get_a_certificate_made() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, key) = generated(dir.path(), "one.test").expect("generated");
        let key = PrivateKeyDer::from_pem_file(&key).expect("key");
        let minter = Minter::new(&key, "one.test").expect("minter");
        assert!(minter.needs_own("a.b.one.test"));
        assert!(minter.needs_own("x.a.b.one.test"));
        assert!(!minter.needs_own("a.one.test"), "*.one.test covers it");
        assert!(!minter.needs_own("one.test"));
        assert!(!minter.needs_own("a.b.two.test"), "not ours");
        assert!(!minter.needs_own("a.bone.test"));
    }
}
