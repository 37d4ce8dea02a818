//! `authorized_keys` options (`from=`, `expiry-time=`, `restrict`, `permitlisten=`, ...): read
//! from the operator's file, and must refuse what they cannot honour without panicking.
#![no_main]

use std::time::{Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use tunnel_core::KeyRules;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(rules) = KeyRules::from_options(&text, Instant::now(), SystemTime::now()) {
        let _ = rules.admits("203.0.113.7".parse().unwrap(), Instant::now());
        let _ = rules.admits("2001:db8::1".parse().unwrap(), Instant::now());
        let _ = rules.permits_forward("app", 80);
    }
});
