//! Reads the PROXY protocol header (haproxy's spec, versions 1 and 2) a trusted load balancer
//! puts before a connection's own bytes, so the server knows whom it is really serving
//! (`--accept-proxy-proto`).
//!
//! Sans-IO and incremental, like [`ClientHelloReader`](crate::ClientHelloReader): hand it every
//! byte received so far and it says whether it needs more. The version is told by the first
//! bytes (`PROXY ` or the v2 signature); anything else is refused at its first wrong byte. What a
//! caller buffers is bounded by [`MAX_PROXY_HEADER_BYTES`]. The bytes after the header are the
//! connection's own: the answer says where the header ends, and the caller passes on the rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

/// The longest v1 header, its CRLF included (spec §2.1).
pub const MAX_V1_BYTES: usize = 107;
/// The most address and TLV bytes a v2 header may carry here. The spec allows 65535; real load
/// balancers send a few dozen TLV bytes, so 2 KiB leaves room while keeping a peer cheap.
pub const MAX_V2_PAYLOAD_BYTES: usize = 2048;
/// The most bytes a caller needs to buffer: a header larger than this is refused.
pub const MAX_PROXY_HEADER_BYTES: usize = V2_HEADER + MAX_V2_PAYLOAD_BYTES;

/// The v2 signature (spec §2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 signature, its space included.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// Signature, version and command, family and protocol, length.
const V2_HEADER: usize = 16;

/// What the bytes so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// Not enough bytes yet to decide.
    NeedMore,
    /// A whole, valid header of `length` bytes; the connection's own bytes start after it.
    Done {
        /// Who the connection is for, as the proxy says.
        peer: ProxiedPeer,
        /// The header's length in bytes.
        length: usize,
    },
    /// Not a PROXY header, malformed, or larger than the limit: the connection is not to be
    /// served.
    Invalid(ProxyHeaderError),
}

/// The connection the proxy passed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxiedPeer {
    /// The visitor (`source`) and the address it reached (`destination`), both as the proxy saw
    /// them. IPv4-mapped IPv6 addresses are given as IPv4.
    Proxied {
        /// The visitor's address.
        source: SocketAddr,
        /// The address the visitor connected to.
        destination: SocketAddr,
    },
    /// The proxy names no visitor: a v2 `LOCAL` command (its own health check), v1 `UNKNOWN`,
    /// or a v2 family without IP addresses (`AF_UNSPEC`, `AF_UNIX`). The connection's own ends
    /// stand (spec §2.1, §2.2).
    Unknown,
}

/// Why a header was refused; Display is a log line's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// The first bytes are neither `PROXY ` nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NoSignature,
    /// A v1 line without its CRLF in the first 107 bytes.
    #[error("v1 header longer than 107 bytes")]
    V1TooLong,
    /// A v1 line that does not read `PROXY TCP4|TCP6 SRC DST SPORT DPORT` or `PROXY UNKNOWN`.
    #[error("malformed v1 header")]
    V1Malformed,
    /// A v2 version nibble other than 2.
    #[error("v2 header with version {0}")]
    V2Version(u8),
    /// A v2 command other than `LOCAL` (0) or `PROXY` (1).
    #[error("v2 header with unknown command {0}")]
    V2Command(u8),
    /// A v2 family/protocol byte the spec does not define.
    #[error("v2 header with unknown family and protocol {0:#04x}")]
    V2Family(u8),
    /// A v2 address block shorter than its family's addresses.
    #[error("v2 header of {length} bytes is too short for its addresses")]
    V2TooShort {
        /// The length the header gave.
        length: usize,
    },
    /// A v2 header longer than [`MAX_V2_PAYLOAD_BYTES`] after its first 16 bytes.
    #[error("v2 header with {length} bytes after its first 16, more than the 2048 allowed")]
    V2TooLong {
        /// The length the header gave.
        length: usize,
    },
    /// The caller handed fewer bytes than it had before.
    #[error("bytes handed back shorter than before")]
    Rewound,
}

/// Examines the first bytes of a connection: all of them, from the start. For bytes that arrive
/// in pieces, [`ProxyHeaderReader`] does the same work once per byte instead of once per read.
pub fn read_proxy_header(received: &[u8]) -> ProxyHeader {
    ProxyHeaderReader::default().read(received)
}

/// An incremental [`read_proxy_header`]: hand it the connection's bytes so far, the same buffer
/// grown by each read, and it examines only what it has not seen. It stops at the end of the
/// header; what follows is the connection's own.
#[derive(Clone, Debug, Default)]
pub struct ProxyHeaderReader {
    /// Bytes of the connection already examined.
    seen: usize,
    /// Set once decided: the same answer is given again.
    decided: Option<ProxyHeader>,
}

impl ProxyHeaderReader {
    /// What the connection's bytes so far say. `received` must start with the bytes given to the
    /// previous call; an answer other than [`ProxyHeader::NeedMore`] is final.
    pub fn read(&mut self, received: &[u8]) -> ProxyHeader {
        if let Some(decided) = &self.decided {
            return decided.clone();
        }
        let answer = if received.len() < self.seen {
            ProxyHeader::Invalid(ProxyHeaderError::Rewound)
        } else {
            self.advance(received)
        };
        if answer != ProxyHeader::NeedMore {
            self.decided = Some(answer.clone());
        }
        answer
    }

    fn advance(&mut self, received: &[u8]) -> ProxyHeader {
        let invalid = ProxyHeader::Invalid;
        match received.first() {
            None => ProxyHeader::NeedMore,
            Some(b'P') => {
                // Refuse at the first byte that leaves the signature, so garbage costs nothing.
                let checked = received.len().min(V1_SIGNATURE.len());
                if received[..checked] != V1_SIGNATURE[..checked] {
                    return invalid(ProxyHeaderError::NoSignature);
                }
                // The line ends at the first LF: look only at bytes not looked at before.
                let from = self.seen.max(checked);
                let window = &received[..received.len().min(MAX_V1_BYTES)];
                match window
                    .get(from..)
                    .and_then(|new| new.iter().position(|&b| b == b'\n'))
                {
                    Some(at) => {
                        let end = from + at + 1;
                        match v1_line(&received[..end]) {
                            Some(peer) => ProxyHeader::Done { peer, length: end },
                            None => invalid(ProxyHeaderError::V1Malformed),
                        }
                    }
                    None if received.len() >= MAX_V1_BYTES => invalid(ProxyHeaderError::V1TooLong),
                    None => {
                        self.seen = received.len();
                        ProxyHeader::NeedMore
                    }
                }
            }
            Some(b'\r') => {
                let checked = received.len().min(V2_SIGNATURE.len());
                if received[..checked] != V2_SIGNATURE[..checked] {
                    return invalid(ProxyHeaderError::NoSignature);
                }
                self.seen = received.len();
                v2(received)
            }
            Some(_) => invalid(ProxyHeaderError::NoSignature),
        }
    }
}

/// A whole v1 line, CRLF included (spec §2.1): single spaces, decimal ports without leading
/// zeros, addresses of the family the protocol names.
fn v1_line(line: &[u8]) -> Option<ProxiedPeer> {
    let line = line.strip_suffix(b"\r\n")?;
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split(' ');
    if fields.next()? != "PROXY" {
        return None;
    }
    let family = fields.next()?;
    if family == "UNKNOWN" {
        // Whatever follows is to be ignored.
        return Some(ProxiedPeer::Unknown);
    }
    let (source, destination) = (fields.next()?, fields.next()?);
    let (source_port, destination_port) = (port(fields.next()?)?, port(fields.next()?)?);
    if fields.next().is_some() {
        return None;
    }
    let (source, destination): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            source.parse::<Ipv4Addr>().ok()?.into(),
            destination.parse::<Ipv4Addr>().ok()?.into(),
        ),
        "TCP6" => (
            source.parse::<Ipv6Addr>().ok()?.into(),
            destination.parse::<Ipv6Addr>().ok()?.into(),
        ),
        _ => return None,
    };
    Some(proxied(
        SocketAddr::new(source, source_port),
        SocketAddr::new(destination, destination_port),
    ))
}

/// A v1 port: 0 to 65535 in decimal, no sign, no leading zero.
fn port(text: &str) -> Option<u16> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// A v2 header, signature already checked as far as it goes (spec §2.2).
fn v2(received: &[u8]) -> ProxyHeader {
    let invalid = ProxyHeader::Invalid;
    let Some(header) = received.get(..V2_HEADER) else {
        return ProxyHeader::NeedMore;
    };
    let (version, command) = (header[12] >> 4, header[12] & 0x0f);
    if version != 2 {
        return invalid(ProxyHeaderError::V2Version(version));
    }
    let family = header[13];
    let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if length > MAX_V2_PAYLOAD_BYTES {
        return invalid(ProxyHeaderError::V2TooLong { length });
    }
    // Bytes the family's addresses take, or None for a family that names no IP visitor.
    let needed = match family {
        0x11 => Some(12),           // TCP over IPv4
        0x12 => Some(12),           // UDP over IPv4
        0x21 => Some(36),           // TCP over IPv6
        0x22 => Some(36),           // UDP over IPv6
        0x00 | 0x31 | 0x32 => None, // UNSPEC, unix stream, unix datagram
        _ if command == 0 => None,  // LOCAL: the family is to be ignored
        other => return invalid(ProxyHeaderError::V2Family(other)),
    };
    let command_is_proxy = match command {
        0 => false,
        1 => true,
        other => return invalid(ProxyHeaderError::V2Command(other)),
    };
    let Some(payload) = received.get(V2_HEADER..V2_HEADER + length) else {
        return ProxyHeader::NeedMore;
    };
    let total = V2_HEADER + length;
    let done = |peer| ProxyHeader::Done {
        peer,
        length: total,
    };
    // LOCAL: the proxy speaks for itself; whatever the block holds is skipped (spec §2.2).
    let (true, Some(needed)) = (command_is_proxy, needed) else {
        return done(ProxiedPeer::Unknown);
    };
    if payload.len() < needed {
        return invalid(ProxyHeaderError::V2TooShort { length });
    }
    // TLVs after the addresses are not ours to read; they are skipped with the header.
    let (source, destination, ports) = if needed == 12 {
        let ip = |at: usize| {
            IpAddr::from(<[u8; 4]>::try_from(&payload[at..at + 4]).expect("4 bytes sliced"))
        };
        (ip(0), ip(4), &payload[8..12])
    } else {
        let ip = |at: usize| {
            IpAddr::from(<[u8; 16]>::try_from(&payload[at..at + 16]).expect("16 bytes sliced"))
        };
        (ip(0), ip(16), &payload[32..36])
    };
    let source_port = u16::from_be_bytes([ports[0], ports[1]]);
    let destination_port = u16::from_be_bytes([ports[2], ports[3]]);
    done(proxied(
        SocketAddr::new(source, source_port),
        SocketAddr::new(destination, destination_port),
    ))
}

/// Both ends, an IPv4-mapped IPv6 address given as the IPv4 address it is.
fn proxied(source: SocketAddr, destination: SocketAddr) -> ProxiedPeer {
    let canonical = |addr: SocketAddr| SocketAddr::new(addr.ip().to_canonical(), addr.port());
    ProxiedPeer::Proxied {
        source: canonical(source),
        destination: canonical(destination),
    }
}
