//! Who may log in: the keys of an `authorized_keys` file with the rules of their lines. The
//! adapter reads the file; the gateway is given the list at start and again whenever the file
//! changes ([`Input::AuthorizedKeysChanged`](crate::Input::AuthorizedKeysChanged)).

use std::collections::BTreeMap;

use crate::ids::KeyFingerprint;
use crate::key_rules::KeyRules;

/// The keys of an `authorized_keys` file, each with its line's rules, and its certificate
/// authorities (`cert-authority` lines), each with theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyList {
    keys: BTreeMap<KeyFingerprint, KeyRules>,
    authorities: BTreeMap<KeyFingerprint, KeyRules>,
}

impl KeyList {
    /// An empty list: nobody may log in.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one line. A `cert-authority` line ([`KeyRules::is_cert_authority`]) lists a CA,
    /// whose key then signs certificates and never logs in itself; any other line lists a key.
    /// A key listed on several lines keeps the rules of the last line that has options: a bare
    /// line never loosens a restricted one.
    pub fn with_key(mut self, key: KeyFingerprint, rules: KeyRules) -> Self {
        if rules.is_cert_authority() {
            self.authorities.insert(key, rules);
            return self;
        }
        match self.keys.get_mut(&key) {
            Some(_) if rules == KeyRules::default() => {}
            Some(old) => *old = rules,
            None => {
                self.keys.insert(key, rules);
            }
        }
        self
    }

    /// Every key with its rules.
    pub fn keys(&self) -> impl Iterator<Item = (&KeyFingerprint, &KeyRules)> {
        self.keys.iter()
    }

    /// Every certificate authority with its line's rules.
    pub fn authorities(&self) -> impl Iterator<Item = (&KeyFingerprint, &KeyRules)> {
        self.authorities.iter()
    }

    /// How many keys and authorities are listed.
    pub fn len(&self) -> usize {
        self.keys.len() + self.authorities.len()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.authorities.is_empty()
    }
}

/// Why a live connection is closed after the `authorized_keys` file changed. Display is the
/// line its session shows (or its disconnect message without one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Revoked {
    /// Its key is no longer listed.
    #[error("your key was removed from this server's authorized keys; closing")]
    KeyRemoved,
    /// The CA of its certificate is no longer a `cert-authority` line, or the line's
    /// `principals=` no longer has its principal.
    #[error(
        "the authority that signed your certificate no longer admits it on this server; closing"
    )]
    CertificateRevoked,
    /// Its key's line no longer admits it: a new `from=` leaves out its address, or an
    /// `expiry-time=` has passed.
    #[error("your key's authorized_keys line no longer admits this connection (from= or expiry-time=); closing")]
    NoLongerAdmitted,
}
