//! The PROXY header reader (`--accept-proxy-proto`): headers as haproxy's spec writes them,
//! read whole and split at every byte boundary, with the connection's own bytes after them;
//! garbage and oversize headers refused.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use tunnel_core::{
    read_proxy_header, ProxiedPeer, ProxyHeader, ProxyHeaderError, ProxyHeaderReader,
    MAX_PROXY_HEADER_BYTES, MAX_V1_BYTES, MAX_V2_PAYLOAD_BYTES,
};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// A v1 line as the spec writes it (§2.1).
fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A v2 PROXY header (§2.2) with `tlv` bytes after the addresses.
fn v2(source: SocketAddr, destination: SocketAddr, tlv: &[u8]) -> Vec<u8> {
    let mut addresses = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addresses.extend_from_slice(&s.octets());
            addresses.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            addresses.extend_from_slice(&s.octets());
            addresses.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("one family per header"),
    };
    addresses.extend_from_slice(&source.port().to_be_bytes());
    addresses.extend_from_slice(&destination.port().to_be_bytes());
    addresses.extend_from_slice(tlv);
    v2_raw(0x21, family, &addresses)
}

fn v2_raw(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(version_command);
    out.push(family);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn proxied(source: &str, destination: &str) -> ProxiedPeer {
    ProxiedPeer::Proxied {
        source: addr(source),
        destination: addr(destination),
    }
}

fn done(peer: ProxiedPeer, length: usize) -> ProxyHeader {
    ProxyHeader::Done { peer, length }
}

fn invalid(error: ProxyHeaderError) -> ProxyHeader {
    ProxyHeader::Invalid(error)
}

/// Every prefix shorter than the header needs more, whether read whole or grown byte by byte.
fn assert_needs_more_until_the_end(header: &[u8], answer: &ProxyHeader) {
    let mut reader = ProxyHeaderReader::default();
    for len in 0..header.len() {
        assert_eq!(
            read_proxy_header(&header[..len]),
            ProxyHeader::NeedMore,
            "at {len}"
        );
        assert_eq!(
            reader.read(&header[..len]),
            ProxyHeader::NeedMore,
            "grown, at {len}"
        );
    }
    assert_eq!(&reader.read(header), answer, "grown, whole");
}

#[test]
fn v1_names_the_visitor_for_ipv4_and_ipv6() {
    let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n";
    let answer = done(proxied("203.0.113.7:51000", "192.0.2.1:443"), header.len());
    assert_eq!(read_proxy_header(header), answer);
    assert_needs_more_until_the_end(header, &answer);

    let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n";
    let answer = done(
        proxied("[2001:db8::7]:65535", "[2001:db8::1]:0"),
        header.len(),
    );
    assert_eq!(read_proxy_header(header), answer);
    assert_needs_more_until_the_end(header, &answer);
}

#[test]
fn v1_unknown_keeps_the_socket_peer() {
    for header in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n",
    ] {
        assert_eq!(
            read_proxy_header(header),
            done(ProxiedPeer::Unknown, header.len())
        );
    }
}

#[test]
fn v2_names_the_visitor_and_skips_tlvs() {
    let header = v2(addr("203.0.113.7:51000"), addr("192.0.2.1:443"), &[]);
    let answer = done(proxied("203.0.113.7:51000", "192.0.2.1:443"), 28);
    assert_eq!(read_proxy_header(&header), answer);
    assert_needs_more_until_the_end(&header, &answer);

    // PP2_TYPE_AUTHORITY (0x02) "example.com", then a NOOP (0x04).
    let tlv = b"\x02\x00\x0bexample.com\x04\x00\x00";
    let header = v2(addr("[2001:db8::7]:1"), addr("[2001:db8::1]:2"), tlv);
    let answer = done(
        proxied("[2001:db8::7]:1", "[2001:db8::1]:2"),
        16 + 36 + tlv.len(),
    );
    assert_eq!(read_proxy_header(&header), answer);
    assert_needs_more_until_the_end(&header, &answer);
}

#[test]
fn v2_local_and_families_without_ip_keep_the_socket_peer() {
    // LOCAL (a health check): the block is skipped whatever it says.
    let local = v2_raw(0x20, 0x11, &[1; 12]);
    assert_eq!(read_proxy_header(&local), done(ProxiedPeer::Unknown, 28));
    let local_empty = v2_raw(0x20, 0x00, &[]);
    assert_eq!(
        read_proxy_header(&local_empty),
        done(ProxiedPeer::Unknown, 16)
    );
    // PROXY over AF_UNSPEC, and a unix socket's paths.
    assert_eq!(
        read_proxy_header(&v2_raw(0x21, 0x00, &[])),
        done(ProxiedPeer::Unknown, 16)
    );
    assert_eq!(
        read_proxy_header(&v2_raw(0x21, 0x31, &[0; 216])),
        done(ProxiedPeer::Unknown, 16 + 216)
    );
}

#[test]
fn ipv4_mapped_addresses_are_given_as_ipv4() {
    let header = b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:192.0.2.1 5 6\r\n";
    assert_eq!(
        read_proxy_header(header),
        done(proxied("203.0.113.7:5", "192.0.2.1:6"), header.len())
    );
}

#[test]
fn the_streams_own_bytes_after_the_header_are_left_to_the_caller() {
    let mut bytes = v1(addr("203.0.113.7:1"), addr("192.0.2.1:2"));
    let header_len = bytes.len();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        read_proxy_header(&bytes),
        done(proxied("203.0.113.7:1", "192.0.2.1:2"), header_len)
    );
    let mut bytes = v2(addr("203.0.113.7:1"), addr("192.0.2.1:2"), &[]);
    bytes.extend_from_slice(b"SSH-2.0-OpenSSH_9.2\r\n");
    assert_eq!(
        read_proxy_header(&bytes),
        done(proxied("203.0.113.7:1", "192.0.2.1:2"), 28)
    );
}

#[test]
fn anything_else_is_refused_at_its_first_wrong_byte() {
    for bytes in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x03\x01",
        b"PROXZ",
        b"proxy ",
        b"\r\n\r\n\0\r\nQUIX",
        b"\r\r",
    ] {
        assert_eq!(
            read_proxy_header(bytes),
            invalid(ProxyHeaderError::NoSignature),
            "{bytes:?}"
        );
    }
}

#[test]
fn malformed_v1_lines_are_refused() {
    for line in [
        "PROXY TCP4 203.0.113.7 192.0.2.1 51000\r\n",
        "PROXY TCP4 203.0.113.7 192.0.2.1 51000 443 7\r\n",
        "PROXY TCP4 203.0.113.7  192.0.2.1 51000 443\r\n",
        "PROXY TCP4 2001:db8::7 192.0.2.1 51000 443\r\n",
        "PROXY TCP6 203.0.113.7 192.0.2.1 51000 443\r\n",
        "PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n",
        "PROXY TCP4 203.0.113.7 192.0.2.1 051000 443\r\n",
        "PROXY TCP4 203.0.113.7 192.0.2.1 +1 443\r\n",
        "PROXY TCP4 203.0.113.07 192.0.2.1 1 443\r\n",
        "PROXY UDP4 203.0.113.7 192.0.2.1 1 443\r\n",
        "PROXY TCP4 203.0.113.7 192.0.2.1 1 443\n",
        "PROXY \r\n",
    ] {
        assert_eq!(
            read_proxy_header(line.as_bytes()),
            invalid(ProxyHeaderError::V1Malformed),
            "{line:?}"
        );
    }
}

#[test]
fn a_v1_line_longer_than_107_bytes_is_refused_at_107() {
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(MAX_V1_BYTES - 2, b'x');
    long.extend_from_slice(b"\r\n");
    assert_eq!(long.len(), MAX_V1_BYTES);
    assert_eq!(
        read_proxy_header(&long),
        done(ProxiedPeer::Unknown, MAX_V1_BYTES),
        "107 bytes is the limit, not over it"
    );
    let mut over = long[..MAX_V1_BYTES - 2].to_vec();
    over.push(b'x');
    assert_eq!(
        read_proxy_header(&over[..MAX_V1_BYTES - 1]),
        ProxyHeader::NeedMore
    );
    over.extend_from_slice(b"\r\n");
    assert_eq!(
        read_proxy_header(&over[..MAX_V1_BYTES]),
        invalid(ProxyHeaderError::V1TooLong)
    );
    assert_eq!(
        read_proxy_header(&over),
        invalid(ProxyHeaderError::V1TooLong)
    );
}

#[test]
fn bad_v2_headers_are_refused() {
    let ipv4 = [0u8; 12];
    assert_eq!(
        read_proxy_header(&v2_raw(0x11, 0x11, &ipv4)),
        invalid(ProxyHeaderError::V2Version(1))
    );
    assert_eq!(
        read_proxy_header(&v2_raw(0x22, 0x11, &ipv4)),
        invalid(ProxyHeaderError::V2Command(2))
    );
    assert_eq!(
        read_proxy_header(&v2_raw(0x21, 0x41, &ipv4)),
        invalid(ProxyHeaderError::V2Family(0x41))
    );
    assert_eq!(
        read_proxy_header(&v2_raw(0x21, 0x21, &ipv4)),
        invalid(ProxyHeaderError::V2TooShort { length: 12 })
    );
    // Refused as soon as the length is read: no need to wait for 65535 bytes.
    let mut huge = v2_raw(0x21, 0x11, &[]);
    huge[14..16].copy_from_slice(&65535u16.to_be_bytes());
    assert_eq!(
        read_proxy_header(&huge),
        invalid(ProxyHeaderError::V2TooLong { length: 65535 })
    );
}

#[test]
fn v2_tlvs_up_to_the_limit_pass_and_one_byte_more_is_refused() {
    let addresses = 12;
    let at_limit = v2(
        addr("203.0.113.7:1"),
        addr("192.0.2.1:2"),
        &vec![0; MAX_V2_PAYLOAD_BYTES - addresses],
    );
    assert_eq!(at_limit.len(), MAX_PROXY_HEADER_BYTES);
    assert_eq!(
        read_proxy_header(&at_limit),
        done(
            proxied("203.0.113.7:1", "192.0.2.1:2"),
            MAX_PROXY_HEADER_BYTES
        )
    );
    let over = v2(
        addr("203.0.113.7:1"),
        addr("192.0.2.1:2"),
        &vec![0; MAX_V2_PAYLOAD_BYTES - addresses + 1],
    );
    assert_eq!(
        read_proxy_header(&over),
        invalid(ProxyHeaderError::V2TooLong {
            length: MAX_V2_PAYLOAD_BYTES + 1
        })
    );
}

#[test]
fn an_answer_is_final_and_a_rewound_buffer_is_refused() {
    let header = v1(addr("203.0.113.7:1"), addr("192.0.2.1:2"));
    let mut reader = ProxyHeaderReader::default();
    let answer = reader.read(&header);
    assert_eq!(reader.read(b"garbage"), answer);

    let mut reader = ProxyHeaderReader::default();
    assert_eq!(reader.read(&header[..10]), ProxyHeader::NeedMore);
    assert_eq!(
        reader.read(&header[..5]),
        invalid(ProxyHeaderError::Rewound)
    );
}

fn socket_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| (
                SocketAddr::new(IpAddr::from(s), sp),
                SocketAddr::new(IpAddr::from(d), dp)
            )),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| (
                SocketAddr::new(IpAddr::from(s), sp),
                SocketAddr::new(IpAddr::from(d), dp)
            )),
    ]
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Reads `bytes` handed over in pieces of the given sizes, as reads would grow the buffer.
fn read_in_pieces(bytes: &[u8], sizes: &[usize]) -> ProxyHeader {
    let mut reader = ProxyHeaderReader::default();
    let mut end = 0;
    let mut sizes = sizes.iter().cycle();
    loop {
        end = (end + sizes.next().expect("cycle never ends")).min(bytes.len());
        let answer = reader.read(&bytes[..end]);
        if answer != ProxyHeader::NeedMore || end == bytes.len() {
            return answer;
        }
    }
}

proptest! {
    #[test]
    fn headers_round_trip_in_any_pieces_with_the_stream_after_them(
        (source, destination) in socket_pair(),
        version in 1..=2u8,
        tlv in prop::collection::vec(any::<u8>(), 0..64),
        stream in prop::collection::vec(any::<u8>(), 0..64),
        sizes in prop::collection::vec(1usize..40, 1..6),
    ) {
        let header = match version {
            1 => v1(source, destination),
            _ => v2(source, destination, &tlv),
        };
        let expected = done(
            ProxiedPeer::Proxied { source: canonical(source), destination: canonical(destination) },
            header.len(),
        );
        let mut bytes = header.clone();
        bytes.extend_from_slice(&stream);
        prop_assert_eq!(read_proxy_header(&bytes), expected.clone());
        prop_assert_eq!(read_in_pieces(&bytes, &sizes), expected.clone());
        for split in 0..header.len() {
            let mut reader = ProxyHeaderReader::default();
            prop_assert_eq!(reader.read(&bytes[..split]), ProxyHeader::NeedMore);
            prop_assert_eq!(reader.read(&bytes), expected.clone());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_pieces_agree_with_the_whole(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|tail| [&b"PROXY "[..], &tail].concat()),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|tail| [&V2_SIGNATURE[..], &tail].concat()),
        ],
        sizes in prop::collection::vec(1usize..40, 1..6),
    ) {
        let whole = read_proxy_header(&bytes);
        prop_assert_eq!(read_in_pieces(&bytes, &sizes), whole.clone());
        if let ProxyHeader::Done { length, .. } = whole {
            prop_assert!(length <= bytes.len() && length <= MAX_PROXY_HEADER_BYTES);
        }
        // The caller's buffer is bounded: a v1 line is decided by its 107th byte.
        if bytes.starts_with(b"PROXY ") && bytes.len() >= MAX_V1_BYTES {
            prop_assert_ne!(whole, ProxyHeader::NeedMore);
        }
    }
}
