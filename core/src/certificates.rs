//! OpenSSH user certificates signed by a `cert-authority` key (sshd(8) "AUTHORIZED_KEYS FILE
//! FORMAT", PROTOCOL.certkeys): whether one may log in, and as whom. The SSH stack has verified
//! the signature and the validity window; everything else is decided here, over plain data.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;

use crate::ids::KeyFingerprint;
use crate::key_rules::KeyRules;

/// What a certificate says, as the adapter read it from the verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCertificate {
    /// The SHA-256 fingerprint of the key that signed it (the CA).
    pub authority: KeyFingerprint,
    /// A user certificate, or a host one (which never logs a user in).
    pub kind: CertificateKind,
    /// The key id the CA gave it (`ssh-keygen -I`), for logs.
    pub key_id: String,
    /// The principals it is valid for, in its order (`ssh-keygen -n`).
    pub principals: Vec<String>,
    /// Critical options by name, with their values (`source-address`, `force-command`, ...).
    pub critical_options: BTreeMap<String, String>,
    /// The names of its extensions (`permit-port-forwarding`, ...).
    pub extensions: BTreeSet<String>,
}

/// Whom a certificate was made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateKind {
    /// SSH_CERT_TYPE_USER.
    User,
    /// SSH_CERT_TYPE_HOST.
    Host,
}

/// A certificate login that may go ahead: who it is and what the certificate itself allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateLogin {
    /// The identity that owns names and counts against quotas:
    /// [`KeyFingerprint::of_principal`] of the CA and the principal.
    pub identity: KeyFingerprint,
    /// The principal the login is for.
    pub principal: String,
    /// The certificate's own restrictions (`source-address`, `permit-port-forwarding`), on top
    /// of the `cert-authority` line's rules.
    pub restrictions: KeyRules,
}

/// Why a certificate may not log in; Display is the reason for the server log (the client is
/// only told that the key was refused, RFC 4252 §7).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateRefusal {
    /// The signing key is not a `cert-authority` line.
    #[error("certificate {key_id:?} is signed by {authority}, which is not a cert-authority line")]
    UnknownAuthority {
        /// The certificate's key id.
        key_id: String,
        /// The signing key.
        authority: KeyFingerprint,
    },
    /// A host certificate offered for a user login.
    #[error("certificate {0:?} is a host certificate, not a user certificate")]
    HostCertificate(String),
    /// No principals: OpenSSH reads that as "any", which a CA seldom means.
    #[error("certificate {0:?} names no principal (sign it with -n NAME)")]
    NoPrincipals(String),
    /// None of its principals is in the line's `principals=`.
    #[error("certificate {key_id:?}: none of its principals {principals:?} is in the cert-authority line's principals=")]
    PrincipalNotAllowed {
        /// The certificate's key id.
        key_id: String,
        /// Its principals.
        principals: Vec<String>,
    },
    /// A critical option this server does not enforce (`force-command`, ...).
    #[error(
        "certificate {key_id:?} has critical option {option}, which this server does not enforce"
    )]
    CriticalOption {
        /// The certificate's key id.
        key_id: String,
        /// The option's name.
        option: String,
    },
    /// `source-address` that is not a list of addresses and networks.
    #[error("certificate {key_id:?}: source-address {value:?} is not a list of CIDR networks")]
    BadSourceAddress {
        /// The certificate's key id.
        key_id: String,
        /// The value.
        value: String,
    },
    /// `source-address` leaves out the client's address.
    #[error("certificate {key_id:?} is not valid from {peer} (its source-address)")]
    SourceAddress {
        /// The certificate's key id.
        key_id: String,
        /// The client's address.
        peer: IpAddr,
    },
    /// The `cert-authority` line's own `from=` or `expiry-time=` refuses the login.
    #[error("certificate {key_id:?}: the cert-authority line does not admit {peer} now (from= or expiry-time=)")]
    AuthorityLine {
        /// The certificate's key id.
        key_id: String,
        /// The client's address.
        peer: IpAddr,
    },
}

impl KeyFingerprint {
    /// The identity of a certificate login: the CA's fingerprint, `/`, the principal
    /// (`SHA256:...ca/alice`). A renewed certificate of the same principal from the same CA
    /// is the same identity, and one principal never holds another's names.
    pub fn of_principal(authority: &KeyFingerprint, principal: &str) -> KeyFingerprint {
        KeyFingerprint::new(format!("{authority}/{principal}"))
    }

    /// The principal, if this is the identity of a certificate login signed by `authority`.
    /// SHA-256 fingerprints all have one length, so the CA part cannot end elsewhere.
    pub fn principal_of(&self, authority: &KeyFingerprint) -> Option<&str> {
        self.as_str()
            .strip_prefix(authority.as_str())?
            .strip_prefix('/')
    }
}

/// Critical options (PROTOCOL.certkeys) this server enforces; any other refuses the login.
const ENFORCED_CRITICAL_OPTIONS: &[&str] = &["source-address"];

/// The extension without which a certificate forwards nothing (as sshd's `no-port-forwarding`).
const PERMIT_PORT_FORWARDING: &str = "permit-port-forwarding";

/// Whether `certificate` may log in from `peer` at `now`, given the rules of the
/// `cert-authority` line of its signer (`None` if its signer is not one), and as whom.
///
/// The principal: of those the certificate names (and the line's `principals=` allows), the
/// SSH user name if it is one of them, else the first. Any critical option other than
/// `source-address` refuses: a certificate is never let in with fewer restrictions than it
/// carries.
pub fn certificate_login(
    certificate: &UserCertificate,
    user: &str,
    authority: Option<&KeyRules>,
    peer: IpAddr,
    now: Instant,
) -> Result<CertificateLogin, CertificateRefusal> {
    let key_id = || certificate.key_id.clone();
    let Some(line) = authority.filter(|rules| rules.is_cert_authority()) else {
        return Err(CertificateRefusal::UnknownAuthority {
            key_id: key_id(),
            authority: certificate.authority.clone(),
        });
    };
    if certificate.kind != CertificateKind::User {
        return Err(CertificateRefusal::HostCertificate(key_id()));
    }
    if certificate.principals.is_empty() {
        return Err(CertificateRefusal::NoPrincipals(key_id()));
    }
    let allowed: Vec<&String> = certificate
        .principals
        .iter()
        .filter(|p| line.allows_principal(p))
        .collect();
    let Some(first) = allowed.first() else {
        return Err(CertificateRefusal::PrincipalNotAllowed {
            key_id: key_id(),
            principals: certificate.principals.clone(),
        });
    };
    let principal = allowed.iter().find(|p| p.as_str() == user).unwrap_or(first);
    if let Some(option) = certificate
        .critical_options
        .keys()
        .find(|name| !ENFORCED_CRITICAL_OPTIONS.contains(&name.as_str()))
    {
        return Err(CertificateRefusal::CriticalOption {
            key_id: key_id(),
            option: option.clone(),
        });
    }
    let source =
        match certificate.critical_options.get("source-address") {
            None => None,
            Some(value) => Some(source_networks(value).ok_or_else(|| {
                CertificateRefusal::BadSourceAddress {
                    key_id: key_id(),
                    value: value.clone(),
                }
            })?),
        };
    let forwarding = certificate.extensions.contains(PERMIT_PORT_FORWARDING);
    let restrictions = KeyRules::of_certificate(source, forwarding);
    if !restrictions.admits(peer, now) {
        return Err(CertificateRefusal::SourceAddress {
            key_id: key_id(),
            peer,
        });
    }
    if !line.admits(peer, now) {
        return Err(CertificateRefusal::AuthorityLine {
            key_id: key_id(),
            peer,
        });
    }
    Ok(CertificateLogin {
        identity: KeyFingerprint::of_principal(&certificate.authority, principal),
        principal: (*principal).clone(),
        restrictions,
    })
}

/// `source-address`: comma-separated addresses and CIDR networks.
fn source_networks(value: &str) -> Option<Vec<IpNet>> {
    value
        .split(',')
        .map(|item| {
            let item = item.trim();
            item.parse::<IpNet>()
                .ok()
                .or_else(|| item.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}
