//! Who holds each public address (a name or a tcp port): a live endpoint, or a reservation for the
//! key whose connection ended. One holder per address, always.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::command::EndpointKind;
use crate::ids::{ConnId, EndpointId, KeyFingerprint};
use crate::names::Hostname;

/// A public address an endpoint occupies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// A host name (http and tls endpoints share one name space).
    Name(Hostname),
    /// A tcp port.
    Port(u16),
}

/// The forward a reconnecting client repeats when it asks for no name: the same key, bind address
/// and remote port get the same random name (or port) back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReconnectKey {
    pub(crate) owner: KeyFingerprint,
    pub(crate) bind_address: String,
    pub(crate) port: u32,
    pub(crate) kind: EndpointKind,
}

#[derive(Debug)]
pub(crate) enum Holding {
    Live { conn: ConnId, endpoint: EndpointId },
    Reserved { until: Instant },
}

#[derive(Debug)]
pub(crate) struct Holder {
    pub(crate) owner: KeyFingerprint,
    pub(crate) holding: Holding,
    pub(crate) reconnect: Option<ReconnectKey>,
}

/// What a claim on an address found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Nobody held it.
    Free,
    /// The same key held it in a reservation, now ended (its timer at `until` must be cancelled).
    Reclaimed { until: Instant },
    /// The same key holds it live on another connection: that endpoint must go.
    TakeOver { conn: ConnId, endpoint: EndpointId },
    /// Another key holds it live.
    Taken,
    /// Another key holds it in a reservation.
    Reserved,
}

#[derive(Debug, Default)]
pub(crate) struct Ownership {
    holders: BTreeMap<Address, Holder>,
    reconnects: BTreeMap<ReconnectKey, Address>,
    /// What each key holds, live or reserved, for its quota.
    per_key: BTreeMap<KeyFingerprint, Held>,
    /// Every name held, labels reversed (`localhost.echo.x` for `x.echo.localhost`), so the
    /// names under one are a range.
    reversed_names: BTreeSet<String>,
    /// Moves on every change of a holder, so the adapter knows when to save them again.
    version: u64,
}

/// A name held by another key that contains, or sits inside, the name asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Nested {
    /// The name asked for is under this one (`x.echo.localhost` under `echo.localhost`).
    Under(Hostname),
    /// This one is under the name asked for.
    Over(Hostname),
}

fn reversed(name: &str) -> String {
    name.rsplit('.').collect::<Vec<_>>().join(".")
}

/// Addresses one key holds, live or reserved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) names: usize,
    pub(crate) tcp_ports: usize,
}

impl Held {
    fn count(&mut self, address: &Address, up: bool) {
        let n = match address {
            Address::Name(_) => &mut self.names,
            Address::Port(_) => &mut self.tcp_ports,
        };
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }
}

impl Ownership {
    /// What `key` would get if it asked for `address` now. Changes nothing.
    pub(crate) fn check(&self, address: &Address, key: &KeyFingerprint) -> Claim {
        match self.holders.get(address) {
            None => Claim::Free,
            Some(h) => match (&h.holding, h.owner == *key) {
                (Holding::Reserved { until }, true) => Claim::Reclaimed { until: *until },
                (Holding::Live { conn, endpoint }, true) => Claim::TakeOver {
                    conn: *conn,
                    endpoint: *endpoint,
                },
                (Holding::Live { .. }, false) => Claim::Taken,
                (Holding::Reserved { .. }, false) => Claim::Reserved,
            },
        }
    }

    /// Whether anyone holds `address`, live or reserved.
    pub(crate) fn is_held(&self, address: &Address) -> bool {
        self.holders.contains_key(address)
    }

    /// Whether `address` is held by a reservation (not by a live endpoint).
    pub(crate) fn is_reserved(&self, address: &Address) -> bool {
        self.holders
            .get(address)
            .is_some_and(|h| matches!(h.holding, Holding::Reserved { .. }))
    }

    /// The reserved address a reconnecting forward gets back, if any.
    pub(crate) fn reserved_for(&self, key: &ReconnectKey) -> Option<&Address> {
        let address = self.reconnects.get(key)?;
        match self.holders.get(address)?.holding {
            Holding::Reserved { .. } => Some(address),
            Holding::Live { .. } => None,
        }
    }

    /// Makes `endpoint` the live holder. The caller has resolved the claim first.
    pub(crate) fn hold(
        &mut self,
        address: Address,
        owner: KeyFingerprint,
        conn: ConnId,
        endpoint: EndpointId,
        reconnect: Option<ReconnectKey>,
    ) {
        self.forget(&address);
        self.insert(address, owner, Holding::Live { conn, endpoint }, reconnect);
    }

    /// Makes `owner` the holder of `address`, which nobody holds, in a reservation until `until`
    /// (an address kept across a restart).
    pub(crate) fn restore(
        &mut self,
        address: Address,
        owner: KeyFingerprint,
        until: Instant,
        reconnect: Option<ReconnectKey>,
    ) {
        self.insert(address, owner, Holding::Reserved { until }, reconnect);
    }

    fn insert(
        &mut self,
        address: Address,
        owner: KeyFingerprint,
        holding: Holding,
        reconnect: Option<ReconnectKey>,
    ) {
        self.version += 1;
        if let Some(key) = &reconnect {
            self.reconnects.insert(key.clone(), address.clone());
        }
        if let Address::Name(name) = &address {
            self.reversed_names.insert(reversed(name.as_str()));
        }
        self.per_key
            .entry(owner.clone())
            .or_default()
            .count(&address, true);
        self.holders.insert(
            address,
            Holder {
                owner,
                holding,
                reconnect,
            },
        );
    }

    /// Turns a live holding into a reservation until `until`.
    pub(crate) fn reserve(&mut self, address: &Address, until: Instant) {
        if let Some(h) = self.holders.get_mut(address) {
            self.version += 1;
            h.holding = Holding::Reserved { until };
        }
    }

    /// Drops any holding of `address`.
    pub(crate) fn forget(&mut self, address: &Address) {
        if let Some(h) = self.holders.remove(address) {
            self.version += 1;
            if let Address::Name(name) = address {
                self.reversed_names.remove(&reversed(name.as_str()));
            }
            if let Some(held) = self.per_key.get_mut(&h.owner) {
                held.count(address, false);
                if *held == Held::default() {
                    self.per_key.remove(&h.owner);
                }
            }
            if let Some(key) = h.reconnect {
                if self.reconnects.get(&key) == Some(address) {
                    self.reconnects.remove(&key);
                }
            }
        }
    }

    /// Drops a reservation whose time is up; a live holder is left alone.
    pub(crate) fn expire(&mut self, address: &Address, now: Instant) -> bool {
        let due = matches!(
            self.holders.get(address),
            Some(Holder { holding: Holding::Reserved { until }, .. }) if *until <= now
        );
        if due {
            self.forget(address);
        }
        due
    }

    /// A name held (live or reserved) by another key than `key` that `name` is under, or that is
    /// under `name`, below `domain`. Browsers scope cookies by such names (RFC 6265 §5.1.3): the
    /// holder of `x.echo.DOMAIN` could read and plant cookies for `echo.DOMAIN`.
    pub(crate) fn nested(
        &self,
        name: &Hostname,
        key: &KeyFingerprint,
        domain: &str,
    ) -> Option<Nested> {
        let foreign = |other: &str| {
            let address = Address::Name(Hostname::from_normalized(other.to_owned()));
            self.holders.get(&address).is_some_and(|h| h.owner != *key)
        };
        let text = name.as_str();
        let mut above = text;
        while let Some((_, parent)) = above.split_once('.') {
            if parent == domain {
                break;
            }
            if foreign(parent) {
                return Some(Nested::Under(Hostname::from_normalized(parent.to_owned())));
            }
            above = parent;
        }
        let prefix = format!("{}.", reversed(text));
        self.reversed_names
            .range(prefix.clone()..)
            .take_while(|r| r.starts_with(&prefix))
            .map(|r| reversed(r))
            .find(|below| foreign(below))
            .map(|below| Nested::Over(Hostname::from_normalized(below)))
    }

    /// What `key` holds, live or reserved.
    pub(crate) fn held_by(&self, key: &KeyFingerprint) -> Held {
        self.per_key.get(key).copied().unwrap_or_default()
    }

    pub(crate) fn holders(&self) -> impl Iterator<Item = (&Address, &Holder)> {
        self.holders.iter()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn reservation_count(&self) -> usize {
        self.holders
            .values()
            .filter(|h| matches!(h.holding, Holding::Reserved { .. }))
            .count()
    }
}
