//! What the gateway keeps across a restart: every address a key holds, so that after the restart
//! the same key gets its names and tcp ports back within the grace, random ones included (an
//! `autossh` user keeps one URL), and no other key can take them meanwhile. The adapter stores
//! the list ([`crate::Gateway::saved_holdings`]) and hands it back at start
//! ([`crate::Gateway::restore`]); how it stores it is its own affair.

use std::time::Duration;

use crate::command::EndpointKind;
use crate::ids::KeyFingerprint;

/// One address a key holds, as kept across a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedHolding {
    /// The name or tcp port.
    pub address: SavedAddress,
    /// The key that holds it.
    pub owner: KeyFingerprint,
    /// How it was held when saved.
    pub state: SavedState,
    /// For an address given at random (no name asked for, or remote port 0): the forward a
    /// reconnecting client repeats to get it back.
    pub reconnect: Option<SavedReconnect>,
}

/// A saved name or tcp port: plain data, checked again when restored (it may come from a file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavedAddress {
    /// A full host name under the domain, lowercase, as the gateway gave it.
    Name(String),
    /// A tcp port.
    Port(u16),
}

/// How a saved address was held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavedState {
    /// By a live endpoint: a restart ends its connection, so it is reserved for the whole grace
    /// from the restore.
    Live,
    /// Reserved for this much longer from the moment it was saved.
    Reserved {
        /// What was left of the reservation.
        remaining: Duration,
    },
}

/// The forward that gets a random address back: `-R BIND_ADDRESS:PORT:...` with the same command
/// kind, from the same key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedReconnect {
    /// The bind address the client sent.
    pub bind_address: String,
    /// The remote port the client sent.
    pub port: u32,
    /// The endpoint's kind.
    pub kind: EndpointKind,
}

/// Why a saved address was not restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreSkipped {
    /// Reservations are off (`name grace` zero), or its time was up.
    #[error("its reservation has ended")]
    Ended,
    /// A name not under this server's domain (the domain changed), or not a valid name.
    #[error("the name is not under this server's domain")]
    NotOurs,
    /// A tcp port outside this server's range (the range changed).
    #[error("the port is outside this server's tcp range")]
    OutOfRange,
    /// Its key is no longer in authorized_keys (nor a certificate identity a listed CA admits).
    #[error("its key is no longer authorized")]
    Unlisted,
    /// Someone holds it already (the list named it twice).
    #[error("it is held already")]
    Held,
}
