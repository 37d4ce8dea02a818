//! The PROXY header a trusted load balancer sends before a connection's bytes
//! (`--accept-proxy-proto`): the whole buffer at once, and the same bytes arriving in pieces (the
//! first byte picks the piece sizes), which must reach the same answer; a header never claims
//! more bytes than it was given or than the bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_core::{read_proxy_header, ProxyHeader, ProxyHeaderReader, MAX_PROXY_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let whole = read_proxy_header(bytes);
    if let ProxyHeader::Done { length, .. } = whole {
        assert!(length <= bytes.len() && length <= MAX_PROXY_HEADER_BYTES);
    }
    if bytes.len() >= MAX_PROXY_HEADER_BYTES {
        assert_ne!(whole, ProxyHeader::NeedMore, "the bound decides");
    }
    let step = usize::from(step % 16) + 1;
    let mut reader = ProxyHeaderReader::default();
    let mut answer = ProxyHeader::NeedMore;
    let mut end = 0;
    while end < bytes.len() && answer == ProxyHeader::NeedMore {
        end = (end + step).min(bytes.len());
        answer = reader.read(&bytes[..end]);
    }
    assert_eq!(answer, whole, "pieces of {step} bytes");
});
