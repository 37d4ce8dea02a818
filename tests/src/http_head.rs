//! Reading one HTTP/1.1 head off a [`BufRead`] with `httparse`: requests for the local service,
//! responses for the visitor. The bytes after the head stay buffered for the body (whose framing
//! the callers do) or for an upgraded stream.

use std::io::{self, BufRead};

use httparse::{Status, EMPTY_HEADER};

/// A longer head is refused rather than buffered without bound.
const MAX_HEAD: usize = 64 * 1024;

/// Header fields per head; the tests send a few dozen at most.
const MAX_HEADERS: usize = 128;

/// A request line and its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Names in their original case, in order.
    pub headers: Vec<(String, String)>,
}

/// A status code and the header fields, names in their original case, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// Reads the next request head; `None` if the peer closed before sending a byte of one. A head
/// httparse refuses is an [`io::ErrorKind::InvalidData`] error.
pub fn read_request_head(reader: &mut impl BufRead) -> io::Result<Option<RequestHead>> {
    read_head(reader, |bytes| {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let Status::Complete(len) = request.parse(bytes)? else {
            return Ok(Status::Partial);
        };
        const WHOLE: &str = "a complete parse has read the whole request line";
        Ok(Status::Complete((
            len,
            RequestHead {
                method: request.method.expect(WHOLE).to_owned(),
                target: request.path.expect(WHOLE).to_owned(),
                version: format!("HTTP/1.{}", request.version.expect(WHOLE)),
                headers: owned_headers(request.headers),
            },
        )))
    })
}

/// Reads the next response head (a `1xx` one included); `None` if the peer closed before
/// sending a byte of one. A head httparse refuses is an [`io::ErrorKind::InvalidData`] error.
pub fn read_response_head(reader: &mut impl BufRead) -> io::Result<Option<ResponseHead>> {
    read_head(reader, |bytes| {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let Status::Complete(len) = response.parse(bytes)? else {
            return Ok(Status::Partial);
        };
        Ok(Status::Complete((
            len,
            ResponseHead {
                status: response
                    .code
                    .expect("a complete parse has read the status line"),
                headers: owned_headers(response.headers),
            },
        )))
    })
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value);
            (h.name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// Feeds `parse` the bytes read so far until it finds a complete head, then consumes exactly
/// that head from `reader`. `parse` returns the head's length with what it parsed.
fn read_head<T>(
    reader: &mut impl BufRead,
    mut parse: impl FnMut(&[u8]) -> httparse::Result<(usize, T)>,
) -> io::Result<Option<T>> {
    let mut head = Vec::new();
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the peer closed inside a head: {:?}", lossy(&head)),
            ));
        }
        let before = head.len();
        head.extend_from_slice(available);
        match parse(&head) {
            Ok(Status::Complete((len, parsed))) => {
                // The head ends in the bytes just added: httparse called the shorter prefix
                // Partial, and a prefix holding a whole head would have been Complete.
                reader.consume(len - before);
                return Ok(Some(parsed));
            }
            Ok(Status::Partial) if head.len() > MAX_HEAD => {
                return Err(invalid(format!("a head longer than {MAX_HEAD} bytes")));
            }
            Ok(Status::Partial) => {
                let added = head.len() - before;
                reader.consume(added);
            }
            Err(e) => return Err(invalid(format!("{e} in the head {:?}", lossy(&head)))),
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    const SHOWN: usize = 200;
    String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]).into_owned()
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes a few at a time, as a socket may.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.bytes.len().min(self.step).min(out.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_request_head_leaves_the_body_buffered_at_any_read_size() {
        let input = b"\r\nPOST /a?b=1 HTTP/1.0\r\nHost: x\r\nX-Case:  v w \r\n\r\nbody";
        for step in 1..input.len() {
            let mut reader = io::BufReader::with_capacity(4, Trickle { bytes: input, step });
            let head = read_request_head(&mut reader).unwrap().unwrap();
            assert_eq!(
                head,
                RequestHead {
                    method: "POST".into(),
                    target: "/a?b=1".into(),
                    version: "HTTP/1.0".into(),
                    headers: vec![("Host".into(), "x".into()), ("X-Case".into(), "v w".into())],
                },
                "step {step}"
            );
            let mut rest = Vec::new();
            io::Read::read_to_end(&mut reader, &mut rest).unwrap();
            assert_eq!(rest, b"body", "step {step}");
        }
    }

    #[test]
    fn end_of_stream_before_and_inside_a_head() {
        let mut empty: &[u8] = b"";
        assert_eq!(read_request_head(&mut empty).unwrap(), None);
        let mut cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Le";
        let error = read_response_head(&mut cut).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_malformed_head_is_invalid_data() {
        for bad in [
            &b"GET / HTTP/1.1 extra\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            let mut input = bad;
            let error = read_request_head(&mut input).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
        let mut input: &[u8] = b"HTTP/1.1 abc OK\r\n\r\n";
        let error = read_response_head(&mut input).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_response_head_keeps_the_header_case() {
        let mut input: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\n\r\nraw";
        let head = read_response_head(&mut input).unwrap().unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(head.headers, [("Upgrade".to_owned(), "ws".to_owned())]);
        assert_eq!(input, b"raw");
    }
}
