//! Reading a PROXY protocol header (v1 text, v2 binary) as a local service sees it.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that starts a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

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

/// Reads exactly one PROXY header from the start of `stream`, leaving the payload unread.
pub fn read_header(stream: &mut impl Read) -> Result<ProxyHeader, String> {
    // Every header is longer than 12 bytes (the shortest v1 line, `PROXY UNKNOWN\r\n`, has 15).
    let mut start = [0u8; 12];
    stream
        .read_exact(&mut start)
        .map_err(|e| format!("reading the first 12 bytes: {e}"))?;
    if start == V2_SIGNATURE {
        read_v2(stream)
    } else if start.starts_with(b"PROXY ") {
        read_v1(stream, &start)
    } else {
        Err(format!(
            "the stream does not start with a PROXY header: {:?}",
            String::from_utf8_lossy(&start)
        ))
    }
}

fn read_v1(stream: &mut impl Read, start: &[u8]) -> Result<ProxyHeader, String> {
    let mut line = start.to_vec();
    // A v1 line is at most 107 bytes including CRLF.
    while !line.ends_with(b"\r\n") {
        if line.len() >= 107 {
            return Err(format!(
                "v1 line longer than 107 bytes: {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("reading the v1 line: {e}"))?;
        line.push(byte[0]);
    }
    let text = std::str::from_utf8(&line[..line.len() - 2])
        .map_err(|_| format!("v1 line is not text: {line:?}"))?;
    parse_v1(text)
}

/// Parses `PROXY TCP4|TCP6 SRC DST SPORT DPORT` (without CRLF).
pub fn parse_v1(line: &str) -> Result<ProxyHeader, String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let [proxy, family, src, dst, sport, dport] = fields[..] else {
        return Err(format!(
            "v1 line needs 6 single-space-separated fields: {line:?}"
        ));
    };
    if proxy != "PROXY" {
        return Err(format!("v1 line does not start with PROXY: {line:?}"));
    }
    let ip = |text: &str| -> Result<IpAddr, String> {
        match family {
            "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => text.parse::<Ipv6Addr>().map(IpAddr::V6),
            _ => return Err(format!("v1 family {family:?} is not TCP4 or TCP6")),
        }
        .map_err(|_| format!("v1 address {text:?} does not match {family}"))
    };
    let port = |text: &str| -> Result<u16, String> {
        // The spec forbids leading zeros.
        if text.len() > 1 && text.starts_with('0') {
            return Err(format!("v1 port {text:?} has a leading zero"));
        }
        text.parse()
            .map_err(|_| format!("v1 port {text:?} is not a port"))
    };
    Ok(ProxyHeader {
        version: 1,
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

fn read_v2(stream: &mut impl Read) -> Result<ProxyHeader, String> {
    let mut fixed = [0u8; 4];
    stream
        .read_exact(&mut fixed)
        .map_err(|e| format!("reading the v2 header: {e}"))?;
    let [version_command, family, len_hi, len_lo] = fixed;
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("reading {len} bytes of v2 addresses: {e}"))?;
    parse_v2(version_command, family, &body)
}

/// Parses the v2 fields after the signature: version/command, family/protocol, addresses
/// (plus any TLVs, which are skipped).
pub fn parse_v2(version_command: u8, family: u8, body: &[u8]) -> Result<ProxyHeader, String> {
    if version_command != 0x21 {
        return Err(format!(
            "v2 version/command byte is {version_command:#04x}, expected 0x21 (v2, PROXY)"
        ));
    }
    let port = |bytes: &[u8]| u16::from_be_bytes([bytes[0], bytes[1]]);
    match family {
        0x11 => {
            let Some(a) = body.get(..12) else {
                return Err(format!(
                    "v2 TCP4 needs 12 address bytes, got {}",
                    body.len()
                ));
            };
            let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            Ok(ProxyHeader {
                version: 2,
                source: SocketAddr::new(src.into(), port(&a[8..10])),
                destination: SocketAddr::new(dst.into(), port(&a[10..12])),
            })
        }
        0x21 => {
            let Some(a) = body.get(..36) else {
                return Err(format!(
                    "v2 TCP6 needs 36 address bytes, got {}",
                    body.len()
                ));
            };
            let ip = |bytes: &[u8]| {
                let octets: [u8; 16] = bytes.try_into().expect("slice of 16 bytes");
                Ipv6Addr::from(octets)
            };
            Ok(ProxyHeader {
                version: 2,
                source: SocketAddr::new(ip(&a[..16]).into(), port(&a[32..34])),
                destination: SocketAddr::new(ip(&a[16..32]).into(), port(&a[34..36])),
            })
        }
        other => Err(format!(
            "v2 family/protocol byte is {other:#04x}, expected 0x11 (TCP4) or 0x21 (TCP6)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1_and_leaves_the_payload() {
        let mut input: &[u8] = b"PROXY TCP4 127.0.0.1 127.0.0.1 51234 21005\r\nhello";
        let header = read_header(&mut input).unwrap();
        assert_eq!(header.source, "127.0.0.1:51234".parse().unwrap());
        assert_eq!(header.destination, "127.0.0.1:21005".parse().unwrap());
        assert_eq!(input, b"hello");
    }

    #[test]
    fn reads_v2_with_tlvs_and_leaves_the_payload() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend([0x21, 0x11, 0, 15]);
        bytes.extend([127, 0, 0, 1, 127, 0, 0, 2, 0xc8, 0x22, 0x52, 0x0d]);
        bytes.extend([0x04, 0, 0]); // an empty NOOP TLV
        bytes.extend(b"hello");
        let mut input = &bytes[..];
        let header = read_header(&mut input).unwrap();
        assert_eq!(header.version, 2);
        assert_eq!(header.source, "127.0.0.1:51234".parse().unwrap());
        assert_eq!(header.destination, "127.0.0.2:21005".parse().unwrap());
        assert_eq!(input, b"hello");
    }

    #[test]
    fn rejects_a_stream_without_header() {
        let mut input: &[u8] = b"hello world, no header";
        assert!(read_header(&mut input).is_err());
        assert!(parse_v1("PROXY TCP4 127.0.0.1 127.0.0.1 051234 1").is_err());
    }
}
