//! The visitor's side of http tunnels beyond [`crate::http`]: a keep-alive connection that
//! sends raw bytes and reads responses one at a time, a streaming response reader, Basic
//! credentials, and the server process's memory.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http::{read_head, read_response, HttpResponse};
use crate::FAILURE_TIMEOUT;

/// One visitor connection to the HTTP listener.
pub struct HttpConn {
    reader: BufReader<TcpStream>,
}

impl HttpConn {
    /// Connects to `addr` with timeouts that only bound failure.
    pub fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let stream = TcpStream::connect_timeout(&addr, FAILURE_TIMEOUT)?;
        stream.set_read_timeout(Some(FAILURE_TIMEOUT))?;
        stream.set_write_timeout(Some(FAILURE_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads the next response (a `1xx` one included).
    pub fn read_response(&mut self) -> io::Result<HttpResponse> {
        read_response(&mut self.reader)
    }

    /// Reads the next response head only: status and lower-cased headers.
    pub fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        read_head(&mut self.reader)
    }

    /// The reader, for bytes after a head (a streamed body, an upgraded stream). Its buffer may
    /// already hold some.
    pub fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    /// The socket, for writing raw bytes or changing timeouts.
    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Reads until the peer closes (or resets), bounded by `timeout`: whether it closed, and
    /// what arrived first (buffered bytes included).
    pub fn read_until_closed(&mut self, timeout: Duration) -> (bool, Vec<u8>) {
        let mut received = self.reader.buffer().to_vec();
        let buffered = received.len();
        self.reader.consume(buffered);
        let ending = crate::visitor::read_until_closed(self.reader.get_mut(), timeout);
        received.extend_from_slice(ending.received());
        (ending.is_closed(), received)
    }
}

/// Sends `GET path` with `Host: host`, `Connection: close` and `extra` header lines (each
/// `Name: value`) on a new connection, and reads the response.
pub fn get_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    extra: &[&str],
) -> io::Result<HttpResponse> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut conn = HttpConn::connect(addr)?;
    conn.send(request.as_bytes())?;
    conn.read_response()
}

/// The value of an `Authorization` header for Basic credentials.
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Resident memory of process `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Reads exactly `len` bytes from `reader`, hashing them, and calling `each` after every block
/// (e.g. to sample memory). Returns the SHA-256.
pub fn hash_exact(
    reader: &mut impl Read,
    len: u64,
    mut each: impl FnMut(),
) -> io::Result<[u8; 32]> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended {left} bytes short"),
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
        each();
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            basic_authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
