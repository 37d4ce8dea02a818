//! A small HTTP/1.1 server as the user's local service behind an http tunnel: heads are read by
//! httparse (`http_head.rs`), bodies are framed here.
//!
//! It records every request it receives (so tests check what the local side saw) and answers:
//! - `/download/N`: N bytes of [`TestBytes`] with seed N, streamed with a Content-Length;
//! - `/chunked...`: the request description, in several chunks (`Transfer-Encoding: chunked`);
//! - a request with `Connection: upgrade` and `Upgrade`: `101`, then `upgraded\n`, then echoes
//!   raw bytes until the peer closes;
//! - anything else: the request description with a Content-Length.
//!
//! The description is one line per item: `service: ID`, `request: METHOD TARGET VERSION`, one
//! `header: NAME: VALUE` per header as received, `body-length: N`, `body-sha256: HEX`.
//! Every answer carries `Server: tunnel-e2e-local` and `X-Service-Id: ID`. Keep-alive,
//! Content-Length and chunked request bodies (hashed while streaming, never buffered) and
//! `Expect: 100-continue` are supported. A head httparse refuses gets `400` and a close.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

use sha2::Digest;

use crate::http_head::read_request_head;
use crate::services::LocalService;

/// What the local service received: one request head and a digest of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    /// Headers as received: names in their original case, in order.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: [u8; 32],
}

impl ReceivedRequest {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the headers named `name` (any case), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The HTTP service; stops accepting on drop.
pub struct HttpService {
    id: String,
    service: LocalService,
    received: Arc<Mutex<Vec<ReceivedRequest>>>,
}

impl HttpService {
    /// Starts a service on `127.0.0.1:0` that names itself `id` in every answer.
    pub fn start(id: &str) -> HttpService {
        let received = Arc::new(Mutex::new(Vec::new()));
        let service = {
            let (id, received) = (id.to_owned(), Arc::clone(&received));
            LocalService::spawn(move |stream| {
                let _ = serve(stream, &id, &received);
            })
        };
        HttpService {
            id: id.to_owned(),
            service,
            received,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn port(&self) -> u16 {
        self.service.port()
    }

    /// How many connections (tunnel channels) reached the service.
    pub fn connections(&self) -> usize {
        self.service.accepted()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.received.lock().expect("not poisoned").clone()
    }

    /// The most recent request; panics if there was none.
    pub fn last_request(&self) -> ReceivedRequest {
        self.requests()
            .pop()
            .expect("the local service received no request")
    }
}

/// Deterministic bytes identical to [`crate::test_bytes`] with the same seed, produced piecewise
/// so large bodies never sit in memory.
pub struct TestBytes {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl TestBytes {
    pub fn new(seed: u64) -> TestBytes {
        TestBytes {
            state: seed | 1,
            word: [0; 8],
            used: 8,
        }
    }

    /// Fills `out` with the next bytes of the sequence.
    pub fn fill(&mut self, out: &mut [u8]) {
        for byte in out {
            if self.used == 8 {
                let mut s = self.state;
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                self.state = s;
                self.word = s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                self.used = 0;
            }
            *byte = self.word[self.used];
            self.used += 1;
        }
    }

    /// SHA-256 of the first `len` bytes of the sequence for `seed`.
    pub fn sha256(seed: u64, len: u64) -> [u8; 32] {
        let mut bytes = TestBytes::new(seed);
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            bytes.fill(&mut buf[..n]);
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        hasher.finalize().into()
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.len() > 64 * 1024 {
        return Err(bad("line too long"));
    }
    Ok(Some(
        String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
    ))
}

fn serve(stream: TcpStream, id: &str, received: &Mutex<Vec<ReceivedRequest>>) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    loop {
        // Blank lines before the request line are tolerated (RFC 9112 §2.2): httparse skips them.
        let head = match read_request_head(&mut reader) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                writer.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut request = ReceivedRequest {
            method: head.method,
            target: head.target,
            version: head.version,
            headers: head.headers,
            body_len: 0,
            body_sha256: [0; 32],
        };
        let has_token = |name: &str, token: &str| {
            request
                .header_all(name)
                .iter()
                .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let chunked = has_token("transfer-encoding", "chunked");
        let upgrade = has_token("connection", "upgrade") && request.header("upgrade").is_some();
        let close = has_token("connection", "close") || request.version == "HTTP/1.0";
        let content_length = match request.header("content-length") {
            Some(len) => Some(len.parse::<u64>().map_err(|_| bad("bad content-length"))?),
            None => None,
        };
        if request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }

        // The body, hashed as it streams by.
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        let mut body_len = 0u64;
        let mut take = |reader: &mut BufReader<TcpStream>, mut n: u64| -> io::Result<()> {
            body_len += n;
            while n > 0 {
                let want = n.min(buf.len() as u64) as usize;
                let got = reader.read(&mut buf[..want])?;
                if got == 0 {
                    return Err(bad("eof in the body"));
                }
                hasher.update(&buf[..got]);
                n -= got as u64;
            }
            Ok(())
        };
        if chunked {
            loop {
                let size_line = read_line(&mut reader)?.ok_or_else(|| bad("eof in chunks"))?;
                let size =
                    u64::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    while !read_line(&mut reader)?.unwrap_or_default().is_empty() {}
                    break;
                }
                take(&mut reader, size)?;
                read_line(&mut reader)?;
            }
        } else if let Some(len) = content_length {
            take(&mut reader, len)?;
        }
        request.body_len = body_len;
        request.body_sha256 = hasher.finalize().into();
        received.lock().expect("not poisoned").push(request.clone());

        let common = format!("Server: tunnel-e2e-local\r\nX-Service-Id: {id}\r\n");
        if upgrade {
            let protocol = request.header("upgrade").unwrap_or_default();
            write!(
                writer,
                "HTTP/1.1 101 Switching Protocols\r\n{common}Connection: Upgrade\r\nUpgrade: {protocol}\r\n\r\nupgraded\n"
            )?;
            // Raw bytes from here on: echo until the peer closes.
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return writer.shutdown(Shutdown::Write);
                }
                writer.write_all(&buf[..n])?;
            }
        }
        let connection = if close { "Connection: close\r\n" } else { "" };
        if let Some(len) = request
            .target
            .strip_prefix("/download/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            write!(
                writer,
                "HTTP/1.1 200 OK\r\n{common}{connection}Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
            )?;
            let mut bytes = TestBytes::new(len);
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                bytes.fill(&mut buf[..n]);
                writer.write_all(&buf[..n])?;
                left -= n as u64;
            }
        } else {
            let mut description = format!(
                "service: {id}\nrequest: {} {} {}\n",
                request.method, request.target, request.version
            );
            for (name, value) in &request.headers {
                description.push_str(&format!("header: {name}: {value}\n"));
            }
            description.push_str(&format!(
                "body-length: {}\nbody-sha256: {}\n",
                request.body_len,
                hex(&request.body_sha256)
            ));
            if request.target.starts_with("/chunked") {
                write!(
                    writer,
                    "HTTP/1.1 200 OK\r\n{common}{connection}Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
                for line in description.split_inclusive('\n') {
                    write!(writer, "{:x}\r\n{line}\r\n", line.len())?;
                }
                writer.write_all(b"0\r\n\r\n")?;
            } else {
                write!(
                    writer,
                    "HTTP/1.1 200 OK\r\n{common}{connection}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{description}",
                    description.len()
                )?;
            }
        }
        writer.flush()?;
        if close {
            return writer.shutdown(Shutdown::Write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_test_bytes_match_test_bytes() {
        let whole = crate::test_bytes(1000, 42);
        let mut stream = TestBytes::new(42);
        let mut pieces = vec![0; 1000];
        let (a, b) = pieces.split_at_mut(13);
        stream.fill(a);
        stream.fill(b);
        assert_eq!(pieces, whole);
        assert_eq!(TestBytes::sha256(42, 1000), crate::sha256(&whole));
    }
}
