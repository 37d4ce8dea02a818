//! A minimal HTTP/1.1 visitor for the HTTP listener: raw requests in, parsed responses out.
//!
//! Deliberately tiny (no client library) so tests control every byte they send, e.g. the Host
//! header that picks the tunnel.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use crate::http_head::read_response_head;
use crate::FAILURE_TIMEOUT;

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET path` with `Host: host` and `Connection: close` to `addr`.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> io::Result<HttpResponse> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    request_raw(addr, request.as_bytes())
}

/// Connects to `addr`, writes `request` as is, and reads one response.
pub fn request_raw(addr: SocketAddr, request: &[u8]) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, FAILURE_TIMEOUT)?;
    stream.set_read_timeout(Some(FAILURE_TIMEOUT))?;
    stream.set_write_timeout(Some(FAILURE_TIMEOUT))?;
    stream.write_all(request)?;
    read_response(&mut BufReader::new(stream))
}

/// Reads a response head: the status and the headers, names lower-cased.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let head = read_response_head(reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
    let headers = head
        .headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    Ok((head.status, headers))
}

/// Reads one response: Content-Length, chunked, or until close.
pub fn read_response(reader: &mut impl BufRead) -> io::Result<HttpResponse> {
    let (status, headers) = read_head(reader)?;
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let size_line = read_line(reader)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers end with an empty line.
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = response.body.len();
            response.body.resize(start + size, 0);
            reader.read_exact(&mut response.body[start..])?;
            read_line(reader)?;
        }
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        response.body.resize(len, 0);
        reader.read_exact(&mut response.body)?;
    } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_and_chunked_bodies() {
        let mut input: &[u8] =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloEXTRA";
        let response = read_response(&mut input).unwrap();
        assert_eq!((response.status, &response.body[..]), (404, &b"hello"[..]));
        assert_eq!(response.header("x-a"), Some("b"));

        let mut input: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(read_response(&mut input).unwrap().body, b"abcde");
    }
}
