//! Identifier newtypes. They are `Copy`, ordered (so they can key `BTreeMap`s whose order reaches
//! output) and printable, and never interchangeable with each other or with bare integers.

use core::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw value chosen by the caller (the adapter's own counter).
            pub const fn from_raw(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw value, for logs and maps outside the core.
            pub const fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id!(
    /// One SSH connection. Chosen by the adapter, unique for the gateway's lifetime.
    ConnId,
    "conn#"
);
id!(
    /// One global request (`tcpip-forward` or `cancel-tcpip-forward`) awaiting its reply.
    /// Chosen by the adapter; only needs to be unique among a connection's open requests.
    RequestId,
    "req#"
);
id!(
    /// One endpoint (a granted forward). Chosen by the gateway.
    EndpointId,
    "endpoint#"
);

/// The SHA-256 fingerprint of the public key that authenticated a connection, as
/// `ssh-keygen -l` prints it (`SHA256:...`). Names are owned by it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyFingerprint(String);

impl KeyFingerprint {
    /// Wraps a fingerprint string computed by the adapter.
    pub fn new(fingerprint: impl Into<String>) -> Self {
        Self(fingerprint.into())
    }

    /// The fingerprint text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
