//! Who may log in: the keys of an `authorized_keys` file with the rules of their lines. The
//! adapter reads the file; the gateway is given the list at start and again whenever the file
//! changes ([`Input::AuthorizedKeysChanged`](crate::Input::AuthorizedKeysChanged)).

use std::collections::BTreeMap;

use crate::ids::KeyFingerprint;
use crate::key_rules::KeyRules;

/// The keys of an `authorized_keys` file, each with its line's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyList {
    keys: BTreeMap<KeyFingerprint, KeyRules>,
}

impl KeyList {
    /// An empty list: nobody may log in.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one line. A key listed on several lines keeps the rules of the last line that has
    /// options: a bare line never loosens a restricted one.
    pub fn with_key(mut self, key: KeyFingerprint, rules: KeyRules) -> Self {
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

    /// How many keys are listed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is listed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
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
    /// Its key's line no longer admits it: a new `from=` leaves out its address, or an
    /// `expiry-time=` has passed.
    #[error("your key's authorized_keys line no longer admits this connection (from= or expiry-time=); closing")]
    NoLongerAdmitted,
}
