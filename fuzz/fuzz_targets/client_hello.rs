//! The first bytes of a TLS connection on the https listener, read for SNI before routing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_core::read_client_hello;

fuzz_target!(|data: &[u8]| {
    let _ = read_client_hello(data);
});
