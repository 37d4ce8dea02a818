//! Host header values and SNI names (`normalize_host`) and `tcpip-forward` bind addresses
//! (`requested_name`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_core::{normalize_host, requested_name};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(host) = normalize_host(&text) {
        // A lookup key: lowercase, no port, nothing a Host header could smuggle.
        assert!(host.len() <= 253, "{text:?}");
        assert!(
            host.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "{text:?} -> {host:?}"
        );
    }
    for domain in ["localhost", "tunnel.example.com"] {
        if let Ok(Some(name)) = requested_name(&text, domain) {
            // A granted name is a lookup key the routing queries can find.
            assert_eq!(
                normalize_host(name.as_str()).as_deref(),
                Some(name.as_str())
            );
        }
    }
});
