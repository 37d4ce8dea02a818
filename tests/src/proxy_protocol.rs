//! PROXY protocol headers (v1 text, v2 binary): read as a local service sees them, and written
//! as a load balancer in front of the server (`--accept-proxy-proto`) sends them. The `ppp`
//! crate parses and builds them, so the server is checked against an implementation that is not
//! ours.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use ppp::{v1, v2, HeaderResult, PartialResult};

use crate::LocalService;

/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;

/// A decoded PROXY header for a TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The visitor's address.
    pub source: SocketAddr,
    /// The address the visitor connected to.
    pub destination: SocketAddr,
}

/// Reads exactly one PROXY header from the start of `stream`, leaving the payload unread. Only a
/// header for a proxied TCP connection is accepted: v1 `TCP4`/`TCP6`, v2 `PROXY` over `STREAM`
/// with IPv4 or IPv6 addresses.
pub fn read_header(stream: &mut impl Read) -> Result<ProxyHeader, String> {
    let mut bytes = Vec::new();
    loop {
        // One byte at a time, so nothing after the header is read.
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("reading the header after {} bytes: {e}", bytes.len()))?;
        bytes.push(byte[0]);
        let parsed = HeaderResult::parse(&bytes);
        // ppp frames v2 by its length field. A v1 line is judged once its LF arrives: ppp may
        // refuse a line cut inside a field (`... 51234 ` before the destination port).
        let judged = match &parsed {
            HeaderResult::V1(_) => bytes.ends_with(b"\n") || bytes.len() >= V1_MAX,
            HeaderResult::V2(result) => result.is_complete(),
        };
        if !judged {
            continue;
        }
        return match parsed {
            HeaderResult::V1(Ok(header)) => from_v1(&header),
            HeaderResult::V2(Ok(header)) => from_v2(&header),
            HeaderResult::V1(Err(e)) => Err(format!("not a PROXY header ({e}): {bytes:?}")),
            HeaderResult::V2(Err(e)) => Err(format!("not a v2 PROXY header ({e}): {bytes:?}")),
        };
    }
}

/// A v1 line naming `source` and `destination` (spec §2.1), both of one family.
pub fn v1_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    let line = format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
    // The line must be one ppp reads back as the same addresses.
    let parsed = read_header(&mut line.as_bytes()).expect("a valid v1 line");
    assert_eq!((parsed.source, parsed.destination), (source, destination));
    line.into_bytes()
}

/// A v2 `PROXY` header over `STREAM` naming `source` and `destination` (spec §2.2), with a NOOP
/// TLV after the addresses as load balancers add TLVs, built by ppp.
pub fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (source, destination),
    )
    .write_tlv(v2::Type::NoOp, b"")
    .and_then(v2::Builder::build)
    .expect("ppp builds a header for one family's addresses")
}

/// A load balancer in front of the server: each connection it accepts on 127.0.0.1 is relayed to
/// `target` after the PROXY header `header` gives for the client's address.
pub fn proxying_balancer(
    target: SocketAddr,
    header: impl Fn(SocketAddr) -> Vec<u8> + Send + Sync + 'static,
) -> LocalService {
    LocalService::spawn(move |client| {
        let Ok(client_addr) = client.peer_addr() else {
            return;
        };
        let Ok(mut server) = TcpStream::connect(target) else {
            return;
        };
        if server.write_all(&header(client_addr)).is_err() {
            return;
        }
        let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone())
        else {
            return;
        };
        let up = std::thread::spawn(move || relay(client_reader, server));
        relay(server_reader, client);
        let _ = up.join();
    })
}

/// Copies until EOF, then passes the EOF on as a half-close.
fn relay(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn from_v1(header: &v1::Header<'_>) -> Result<ProxyHeader, String> {
    let (source, destination) = match header.addresses {
        v1::Addresses::Tcp4(a) => (
            SocketAddr::new(a.source_address.into(), a.source_port),
            SocketAddr::new(a.destination_address.into(), a.destination_port),
        ),
        v1::Addresses::Tcp6(a) => (
            SocketAddr::new(a.source_address.into(), a.source_port),
            SocketAddr::new(a.destination_address.into(), a.destination_port),
        ),
        v1::Addresses::Unknown => return Err(format!("a v1 UNKNOWN header: {header:?}")),
    };
    Ok(ProxyHeader {
        version: 1,
        source,
        destination,
    })
}

fn from_v2(header: &v2::Header<'_>) -> Result<ProxyHeader, String> {
    if header.command != v2::Command::Proxy || header.protocol != v2::Protocol::Stream {
        return Err(format!(
            "a v2 header that is not PROXY over STREAM: {header:?}"
        ));
    }
    let (source, destination) = match header.addresses {
        v2::Addresses::IPv4(a) => (
            SocketAddr::new(a.source_address.into(), a.source_port),
            SocketAddr::new(a.destination_address.into(), a.destination_port),
        ),
        v2::Addresses::IPv6(a) => (
            SocketAddr::new(a.source_address.into(), a.source_port),
            SocketAddr::new(a.destination_address.into(), a.destination_port),
        ),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => {
            return Err(format!("a v2 header without IP addresses: {header:?}"))
        }
    };
    Ok(ProxyHeader {
        version: 2,
        source,
        destination,
    })
}

/// A local service that reads the PROXY header the tunnel sends first, reports it (or why it
/// could not be read) on the channel, then echoes the rest of the stream.
pub fn proxy_service() -> (
    LocalService,
    std::sync::mpsc::Receiver<Result<ProxyHeader, String>>,
) {
    let (sender, headers) = std::sync::mpsc::channel();
    let sender = std::sync::Mutex::new(sender);
    let service = LocalService::spawn(move |mut stream| {
        let header = read_header(&mut stream);
        let ok = header.is_ok();
        let _ = sender
            .lock()
            .expect("no sender panics while holding the lock")
            .send(header);
        if ok {
            let mut writer = stream.try_clone().expect("clone the stream");
            let _ = std::io::copy(&mut stream, &mut writer);
        }
    });
    (service, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_tcp4(family: u8, tail: &[u8]) -> Vec<u8> {
        let mut bytes = v2::PROTOCOL_PREFIX.to_vec();
        bytes.extend([0x21, family, 0, 12 + tail.len() as u8]);
        bytes.extend([127, 0, 0, 1, 127, 0, 0, 2, 0xc8, 0x22, 0x52, 0x0d]);
        bytes.extend(tail);
        bytes
    }

    #[test]
    fn written_headers_read_back() {
        let (source, destination) = (
            "[2001:db8::7]:4242".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        );
        let header = read_header(&mut &v2_header(source, destination)[..]).unwrap();
        assert_eq!(
            (header.version, header.source, header.destination),
            (2, source, destination)
        );
        let header = read_header(&mut &v1_header(source, destination)[..]).unwrap();
        assert_eq!(
            (header.version, header.source, header.destination),
            (1, source, destination)
        );
    }

    #[test]
    fn reads_v1_and_leaves_the_payload() {
        let mut input: &[u8] = b"PROXY TCP4 127.0.0.1 127.0.0.1 51234 21005\r\nhello";
        let header = read_header(&mut input).unwrap();
        assert_eq!(header.version, 1);
        assert_eq!(header.source, "127.0.0.1:51234".parse().unwrap());
        assert_eq!(header.destination, "127.0.0.1:21005".parse().unwrap());
        assert_eq!(input, b"hello");

        let mut input: &[u8] = b"PROXY TCP6 ::1 ::2 51234 21005\r\n";
        let header = read_header(&mut input).unwrap();
        assert_eq!(header.source, "[::1]:51234".parse().unwrap());
        assert_eq!(header.destination, "[::2]:21005".parse().unwrap());
    }

    #[test]
    fn reads_v2_with_tlvs_and_leaves_the_payload() {
        // An empty NOOP TLV after the addresses, then the payload.
        let mut bytes = v2_tcp4(0x11, &[0x04, 0, 0]);
        bytes.extend(b"hello");
        let mut input = &bytes[..];
        let header = read_header(&mut input).unwrap();
        assert_eq!(header.version, 2);
        assert_eq!(header.source, "127.0.0.1:51234".parse().unwrap());
        assert_eq!(header.destination, "127.0.0.2:21005".parse().unwrap());
        assert_eq!(input, b"hello");
    }

    #[test]
    fn rejects_what_is_not_a_proxied_tcp_header() {
        let refused: [&[u8]; 5] = [
            b"hello world, no header\r\n",
            b"PROXY TCP4 127.0.0.1 127.0.0.1 051234 1\r\n",
            b"PROXY UNKNOWN\r\n",
            // v2 over DGRAM, then v2 LOCAL.
            &v2_tcp4(0x12, &[]),
            &{
                let mut local = v2_tcp4(0x11, &[]);
                local[12] = 0x20;
                local
            },
        ];
        for bytes in refused {
            // Refused on what was read, not for running out: the payload is still there.
            let with_payload = [bytes, b"payload"].concat();
            let mut input = &with_payload[..];
            assert!(read_header(&mut input).is_err(), "{bytes:?}");
            assert_eq!(input, b"payload", "{bytes:?}");
        }
        let mut cut: &[u8] = b"PROXY TCP4 127.0.0.1 127.0.0.1 5";
        assert!(read_header(&mut cut).is_err());
    }
}
