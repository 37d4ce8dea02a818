//! PROXY protocol headers (haproxy's PROXY protocol spec, versions 1 and 2) telling the user's
//! local service who the visitor is.

use std::net::{IpAddr, SocketAddr};

use tunnel_core::command::ProxyVersion;

/// The header for a visitor connection from `visitor` to `local` (the server's listening address).
pub fn encode(version: ProxyVersion, visitor: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (visitor, local) = (unmap(visitor), unmap(local));
    match version {
        ProxyVersion::V1 => v1(visitor, local),
        ProxyVersion::V2 => v2(visitor, local),
    }
}

/// An IPv4-mapped IPv6 address is reported as the IPv4 address it is.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

fn v1(visitor: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let family = match (visitor.ip(), local.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => "TCP4",
        (IpAddr::V6(_), IpAddr::V6(_)) => "TCP6",
        // Mixed families cannot be expressed in one v1 line (spec §2.1).
        _ => return b"PROXY UNKNOWN\r\n".to_vec(),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        visitor.ip(),
        local.ip(),
        visitor.port(),
        local.port()
    )
    .into_bytes()
}

/// The v2 signature (spec §2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

fn v2(visitor: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    // Version 2, command PROXY.
    out.push(0x21);
    match (visitor.ip(), local.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        _ => {
            out.push(0x00); // AF_UNSPEC: the receiver ignores the addresses.
            out.extend_from_slice(&0u16.to_be_bytes());
            return out;
        }
    }
    out.extend_from_slice(&visitor.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn v1_names_both_ends() {
        let h = encode(
            ProxyVersion::V1,
            addr("203.0.113.7:51000"),
            addr("127.0.0.1:20007"),
        );
        assert_eq!(h, b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 20007\r\n");
        let h = encode(ProxyVersion::V1, addr("[2001:db8::1]:5"), addr("[::1]:6"));
        assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::1 5 6\r\n");
    }

    #[test]
    fn v1_mixed_families_are_unknown_but_mapped_v4_is_v4() {
        let h = encode(
            ProxyVersion::V1,
            addr("[2001:db8::1]:5"),
            addr("127.0.0.1:6"),
        );
        assert_eq!(h, b"PROXY UNKNOWN\r\n");
        let h = encode(
            ProxyVersion::V1,
            addr("[::ffff:10.0.0.1]:5"),
            addr("127.0.0.1:6"),
        );
        assert_eq!(h, b"PROXY TCP4 10.0.0.1 127.0.0.1 5 6\r\n");
    }

    #[test]
    fn v2_ipv4_layout() {
        let h = encode(
            ProxyVersion::V2,
            addr("203.0.113.7:51000"),
            addr("127.0.0.1:20007"),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 203, 0, 113, 7, 127, 0, 0, 1]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&20007u16.to_be_bytes());
        assert_eq!(h, want);
    }

    #[test]
    fn v2_ipv6_length_is_36() {
        let h = encode(ProxyVersion::V2, addr("[2001:db8::1]:5"), addr("[::1]:6"));
        assert_eq!(&h[13..16], &[0x21, 0, 36]);
        assert_eq!(h.len(), 16 + 36);
    }
}
