//! Reads the server name (SNI) from a TLS ClientHello without consuming or terminating anything,
//! so the https listener can route a connection before deciding to pass it through untouched
//! (tls endpoints) or terminate it (http endpoints).
//!
//! Sans-IO and incremental: hand it every byte received so far and it says whether it needs
//! more. Records may be fragmented anywhere and a ClientHello may span several records
//! (RFC 8446 §5.1). What it buffers is bounded by [`MAX_CLIENT_HELLO_BYTES`].

/// The most bytes a caller needs to buffer: a ClientHello larger than this is refused. Real ones
/// are under 2 KiB (about 1.8 KiB with a post-quantum key share); 16 KiB leaves room for many
/// extensions while keeping a hostile peer cheap.
pub const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;

/// What the bytes so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientHello {
    /// Not enough bytes yet to decide.
    NeedMore,
    /// A ClientHello naming this host (as sent; normalise before lookup).
    ServerName(String),
    /// A well-formed ClientHello without a `server_name` extension.
    NoServerName,
    /// Not a TLS ClientHello, malformed, or larger than the limit.
    NotTls,
}

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;
/// RFC 8446 §5.1: a plaintext record fragment is at most 2^14 bytes.
const MAX_FRAGMENT: usize = 1 << 14;

/// Examines the first bytes of a connection.
pub fn read_client_hello(received: &[u8]) -> ClientHello {
    let handshake = match handshake_bytes(received) {
        Ok(bytes) => bytes,
        Err(status) => return status,
    };
    // Handshake header: msg_type(1) length(3).
    if handshake.len() < 4 {
        return ClientHello::NeedMore;
    }
    if handshake[0] != HANDSHAKE_CLIENT_HELLO {
        return ClientHello::NotTls;
    }
    let length = usize::from(handshake[1]) << 16
        | usize::from(handshake[2]) << 8
        | usize::from(handshake[3]);
    if length + 4 > MAX_CLIENT_HELLO_BYTES {
        return ClientHello::NotTls;
    }
    if handshake.len() < 4 + length {
        return ClientHello::NeedMore;
    }
    parse_body(&handshake[4..4 + length]).unwrap_or(ClientHello::NotTls)
}

/// Concatenates the handshake-record fragments received so far.
fn handshake_bytes(mut received: &[u8]) -> Result<Vec<u8>, ClientHello> {
    if received.len() > MAX_CLIENT_HELLO_BYTES + 64 * RECORD_HEADER {
        return Err(ClientHello::NotTls);
    }
    let mut handshake = Vec::new();
    while !received.is_empty() {
        if received[0] != CONTENT_HANDSHAKE {
            return Err(ClientHello::NotTls);
        }
        if received.len() < RECORD_HEADER {
            break;
        }
        // legacy_record_version: 0x03XX (RFC 8446 §5.1 allows 0x0301 in a first ClientHello).
        if received[1] != 3 {
            return Err(ClientHello::NotTls);
        }
        let length = usize::from(u16::from_be_bytes([received[3], received[4]]));
        if length == 0 || length > MAX_FRAGMENT {
            return Err(ClientHello::NotTls);
        }
        let available = received.len() - RECORD_HEADER;
        let take = available.min(length);
        handshake.extend_from_slice(&received[RECORD_HEADER..RECORD_HEADER + take]);
        if take < length {
            break;
        }
        received = &received[RECORD_HEADER + length..];
    }
    if handshake.is_empty() && !received.is_empty() && received.len() < RECORD_HEADER {
        return Err(ClientHello::NeedMore);
    }
    Ok(handshake)
}

/// A cursor that fails instead of panicking on short input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// RFC 8446 §4.1.2 ClientHello, RFC 6066 §3 server_name.
fn parse_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    let session_id = r.vec8()?;
    if session_id.len() > 32 {
        return None;
    }
    let cipher_suites = r.vec16()?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return None;
    }
    let _compression = r.vec8()?;
    if r.0.is_empty() {
        // A TLS 1.2 ClientHello may end before extensions.
        return Some(ClientHello::NoServerName);
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == NAME_TYPE_HOST_NAME {
                let name = std::str::from_utf8(name).ok()?;
                if name.is_empty() || !name.is_ascii() {
                    return None;
                }
                return Some(ClientHello::ServerName(name.to_owned()));
            }
        }
        return Some(ClientHello::NoServerName);
    }
    Some(ClientHello::NoServerName)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal TLS 1.3-style ClientHello naming `name`, in one record.
    pub(crate) fn hello(name: Option<&str>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut extensions = Vec::new();
        extensions.extend_from_slice(&[0x00, 0x2b, 0, 3, 2, 3, 4]); // supported_versions
        if let Some(name) = name {
            let n = name.len() as u16;
            extensions.extend_from_slice(&[0, 0]);
            extensions.extend_from_slice(&(n + 5).to_be_bytes());
            extensions.extend_from_slice(&(n + 3).to_be_bytes());
            extensions.push(0);
            extensions.extend_from_slice(&n.to_be_bytes());
            extensions.extend_from_slice(name.as_bytes());
        }
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut handshake = vec![1, 0];
        handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
        handshake.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn names_and_absences() {
        assert_eq!(
            read_client_hello(&hello(Some("app.localhost"))),
            ClientHello::ServerName("app.localhost".into())
        );
        assert_eq!(read_client_hello(&hello(None)), ClientHello::NoServerName);
        assert_eq!(
            read_client_hello(b"GET / HTTP/1.1\r\n"),
            ClientHello::NotTls
        );
        assert_eq!(read_client_hello(&[]), ClientHello::NeedMore);
        assert_eq!(read_client_hello(&[22, 3]), ClientHello::NeedMore);
    }

    #[test]
    fn every_prefix_needs_more_and_the_whole_decides() {
        let full = hello(Some("x.example"));
        for cut in 0..full.len() {
            assert_eq!(
                read_client_hello(&full[..cut]),
                ClientHello::NeedMore,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_hello_split_over_records_is_joined() {
        let one = hello(Some("split.example"));
        let handshake = &one[5..];
        let mut records = Vec::new();
        for chunk in handshake.chunks(7) {
            records.extend_from_slice(&[22, 3, 3]);
            records.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            records.extend_from_slice(chunk);
        }
        assert_eq!(
            read_client_hello(&records),
            ClientHello::ServerName("split.example".into())
        );
    }

    #[test]
    fn oversized_lengths_are_refused_without_buffering() {
        let mut claim = vec![22, 3, 1, 0x40, 0x00, 1, 0x10, 0, 0];
        claim.extend_from_slice(&[0; 10]);
        assert_eq!(read_client_hello(&claim), ClientHello::NotTls);
        assert_eq!(
            read_client_hello(&[22, 3, 1, 0x40, 0x01]),
            ClientHello::NotTls
        );
    }
}
