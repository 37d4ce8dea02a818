//! The first bytes of a TLS connection on the https listener, read for SNI before routing: the
//! whole buffer at once, and the same bytes arriving in pieces (the first byte picks the piece
//! sizes), which must reach the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_core::{read_client_hello, ClientHello, ClientHelloReader};

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let whole = read_client_hello(bytes);
    let step = usize::from(step % 16) + 1;
    let mut reader = ClientHelloReader::default();
    let mut answer = ClientHello::NeedMore;
    let mut end = 0;
    while end < bytes.len() && answer == ClientHello::NeedMore {
        end = (end + step).min(bytes.len());
        answer = reader.read(&bytes[..end]);
    }
    assert_eq!(answer, whole, "pieces of {step} bytes");
});
