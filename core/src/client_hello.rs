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

/// Examines the first bytes of a connection: all of them, from the start. For bytes that arrive
/// in pieces, [`ClientHelloReader`] does the same work once per byte instead of once per read.
pub fn read_client_hello(received: &[u8]) -> ClientHello {
    ClientHelloReader::default().read(received)
}

/// An incremental [`read_client_hello`]: hand it the connection's bytes so far, the same buffer
/// grown by each read, and it examines only what it has not seen. It stops at the end of the
/// ClientHello: what follows in the same read (a TLS 1.3 compatibility ChangeCipherSpec, early
/// data) is not its business, and the caller passes it on untouched.
#[derive(Clone, Debug, Default)]
pub struct ClientHelloReader {
    /// Bytes of the connection already examined.
    seen: usize,
    /// Payload bytes left in the record being read; 0 between records.
    record_left: usize,
    /// The handshake bytes gathered from the records so far.
    handshake: Vec<u8>,
    /// Set once decided: the same answer is given again.
    decided: Option<ClientHello>,
}

impl ClientHelloReader {
    /// What the connection's bytes so far say. `received` must start with the bytes given to the
    /// previous call; an answer other than [`ClientHello::NeedMore`] is final.
    pub fn read(&mut self, received: &[u8]) -> ClientHello {
        if let Some(decided) = &self.decided {
            return decided.clone();
        }
        let answer = self.advance(received);
        if answer != ClientHello::NeedMore {
            self.decided = Some(answer.clone());
        }
        answer
    }

    fn advance(&mut self, received: &[u8]) -> ClientHello {
        if received.len() < self.seen {
            return ClientHello::NotTls;
        }
        loop {
            if let Some(answer) = self.complete() {
                return answer;
            }
            if self.record_left == 0 {
                let Some(header) = received.get(self.seen..self.seen + RECORD_HEADER) else {
                    return match received.get(self.seen) {
                        Some(&kind) if kind != CONTENT_HANDSHAKE => ClientHello::NotTls,
                        _ => ClientHello::NeedMore,
                    };
                };
                // legacy_record_version: 0x03XX (RFC 8446 §5.1 allows 0x0301 in a first
                // ClientHello).
                if header[0] != CONTENT_HANDSHAKE || header[1] != 3 {
                    return ClientHello::NotTls;
                }
                let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
                if length == 0 || length > MAX_FRAGMENT {
                    return ClientHello::NotTls;
                }
                self.seen += RECORD_HEADER;
                self.record_left = length;
            }
            let available = received.len() - self.seen;
            if available == 0 {
                return ClientHello::NeedMore;
            }
            // Take no more than the ClientHello still needs: the rest of the record would be a
            // second handshake message, which is not ours to read.
            let wanted = self.handshake_left().unwrap_or(usize::MAX);
            let take = available.min(self.record_left).min(wanted.max(1));
            self.handshake
                .extend_from_slice(&received[self.seen..self.seen + take]);
            self.seen += take;
            self.record_left -= take;
            if self.handshake.len() > MAX_CLIENT_HELLO_BYTES {
                return ClientHello::NotTls;
            }
        }
    }

    /// Handshake bytes still missing, once the handshake header (msg_type(1) length(3)) is in.
    fn handshake_left(&self) -> Option<usize> {
        let header = self.handshake.get(..4)?;
        let length =
            usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
        Some((4 + length).saturating_sub(self.handshake.len()))
    }

    /// The answer, once the gathered bytes decide it.
    fn complete(&self) -> Option<ClientHello> {
        let header = self.handshake.get(..4)?;
        if header[0] != HANDSHAKE_CLIENT_HELLO {
            return Some(ClientHello::NotTls);
        }
        let length =
            usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
        if length + 4 > MAX_CLIENT_HELLO_BYTES {
            return Some(ClientHello::NotTls);
        }
        let body = self.handshake.get(4..4 + length)?;
        Some(parse_body(body).unwrap_or(ClientHello::NotTls))
    }
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
    fn what_follows_the_hello_in_the_same_read_is_left_alone() {
        // TLS 1.3 middlebox compatibility: a ChangeCipherSpec record right behind the hello.
        let mut bytes = hello(Some("ccs.example"));
        bytes.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
        assert_eq!(
            read_client_hello(&bytes),
            ClientHello::ServerName("ccs.example".into())
        );
        // Or a second handshake message in the same record.
        let mut one = hello(Some("two.example"));
        let extra = [99u8, 0, 0, 1, 0];
        let length = u16::from_be_bytes([one[3], one[4]]) + extra.len() as u16;
        one[3..5].copy_from_slice(&length.to_be_bytes());
        one.extend_from_slice(&extra);
        assert_eq!(
            read_client_hello(&one),
            ClientHello::ServerName("two.example".into())
        );
    }

    #[test]
    fn byte_by_byte_each_byte_is_examined_once() {
        let full = hello(Some("slow.example"));
        let mut reader = ClientHelloReader::default();
        for cut in 0..full.len() {
            assert_eq!(
                reader.read(&full[..cut]),
                ClientHello::NeedMore,
                "cut at {cut}"
            );
            // At most a partial record header is looked at again on the next read.
            assert!(
                cut - reader.seen < RECORD_HEADER,
                "cut {cut}, seen {}",
                reader.seen
            );
        }
        assert_eq!(
            reader.read(&full),
            ClientHello::ServerName("slow.example".into())
        );
        // Final: more bytes change nothing.
        let mut more = full.clone();
        more.extend_from_slice(b"anything");
        assert_eq!(
            reader.read(&more),
            ClientHello::ServerName("slow.example".into())
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
