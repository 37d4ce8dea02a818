//! Ranges of TCP ports for the server's `--tcp-ports`, chosen so parallel tests do not collide.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// How many ports each test's server gets.
pub const RANGE_LEN: u16 = 20;

/// Lowest port we hand out: stays clear of the dev server's default range 20000-20999 so a
/// developer's running `tunnel-server` does not break the tests.
const FIRST_PORT: u16 = 21000;

/// An inclusive range of ports, rendered `LO-HI` as `--tcp-ports` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

/// Ranges leased by tests in this process, by their first port.
static LEASED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A range of ports held for one test; released on drop.
#[derive(Debug)]
pub struct PortLease {
    range: PortRange,
}

impl PortLease {
    /// Leases a block of [`RANGE_LEN`] ports, none leased by another test in this process and
    /// all bindable right now.
    ///
    /// Blocks are taken below the kernel's ephemeral range, so ports the OS hands out for port 0
    /// (our SSH listeners, local services, outgoing connections) never land in them. Other
    /// processes may still take a port later; the server's allocation has to cope with a busy
    /// port anyway.
    pub fn acquire() -> PortLease {
        let ceiling = ephemeral_floor().saturating_sub(RANGE_LEN);
        assert!(
            ceiling > FIRST_PORT,
            "no room for tcp port ranges below the ephemeral ports"
        );
        let blocks = (ceiling - FIRST_PORT) / RANGE_LEN;
        let mut seed = random_seed();
        for _ in 0..1000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let block = u16::try_from((seed >> 33) % u64::from(blocks))
                .expect("the remainder is below a u16 block count");
            let lo = FIRST_PORT + block * RANGE_LEN;
            let range = PortRange {
                lo,
                hi: lo + RANGE_LEN - 1,
            };
            let mut leased = LEASED.lock().unwrap_or_else(PoisonError::into_inner);
            if leased.contains(&lo) || !all_bindable(range) {
                continue;
            }
            leased.insert(lo);
            return PortLease { range };
        }
        panic!("could not find {RANGE_LEN} free consecutive tcp ports");
    }

    pub fn range(&self) -> PortRange {
        self.range
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        LEASED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.range.lo);
    }
}

fn all_bindable(range: PortRange) -> bool {
    // The wildcard address conflicts with a listener on any local address.
    (range.lo..=range.hi).all(|port| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok())
}

fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_do_not_overlap() {
        let leases: Vec<PortLease> = (0..8).map(|_| PortLease::acquire()).collect();
        for (i, a) in leases.iter().enumerate() {
            for b in &leases[i + 1..] {
                let (a, b) = (a.range(), b.range());
                assert!(a.hi < b.lo || b.hi < a.lo, "{a} overlaps {b}");
            }
            assert_eq!(a.range().hi - a.range().lo + 1, RANGE_LEN);
        }
    }
}
