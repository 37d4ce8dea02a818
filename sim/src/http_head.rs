//! HTTP/1.1 heads for the sim's origin ([`crate::service`]) and visitor ([`crate::visitor`]),
//! parsed by httparse from a buffer that may hold only the start of one.

use httparse::{Status, EMPTY_HEADER};

/// Header fields per head; the gateway adds a handful to the visitor's few.
const MAX_HEADERS: usize = 64;

/// What the origin needs from a request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
    pub path: String,
    /// Empty when there is no Host field.
    pub host: String,
    pub content_length: Option<usize>,
}

/// What the visitor needs from a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
    pub status: u16,
    pub content_length: Option<usize>,
}

/// The request head at the start of `bytes`; `None` while it is incomplete.
pub fn parse_request(bytes: &[u8]) -> Result<Option<RequestHead>, httparse::Error> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let Status::Complete(len) = request.parse(bytes)? else {
        return Ok(None);
    };
    let host = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
        .unwrap_or_default();
    Ok(Some(RequestHead {
        len,
        path: request
            .path
            .expect("a complete parse has read the request line")
            .to_owned(),
        host,
        content_length: content_length(request.headers),
    }))
}

/// The response head at the start of `bytes`; `None` while it is incomplete.
pub fn parse_response(bytes: &[u8]) -> Result<Option<ResponseHead>, httparse::Error> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let Status::Complete(len) = response.parse(bytes)? else {
        return Ok(None);
    };
    Ok(Some(ResponseHead {
        len,
        status: response
            .code
            .expect("a complete parse has read the status line"),
        content_length: content_length(response.headers),
    }))
}

/// The first Content-Length, if it is a number.
fn content_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    let field = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))?;
    std::str::from_utf8(field.value).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_found_only_once_complete() {
        let bytes = b"POST /up HTTP/1.1\r\nHost: app.sim\r\nContent-Length: 3\r\n\r\nabc";
        let head_len = bytes.len() - 3;
        for end in 0..head_len {
            assert_eq!(parse_request(&bytes[..end]), Ok(None), "{end}");
        }
        let expected = RequestHead {
            len: head_len,
            path: "/up".into(),
            host: "app.sim".into(),
            content_length: Some(3),
        };
        assert_eq!(parse_request(bytes), Ok(Some(expected)));
        assert!(parse_request(b"GET / HTTP/1.1\r\nno colon\r\n\r\n").is_err());
    }

    #[test]
    fn a_response_head_names_its_status_and_length() {
        let head = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((head.status, head.content_length), (404, Some(7)));
        let head = parse_response(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.content_length, None);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), Ok(None));
    }
}
