//! The ClientHello reader against real clients' hellos, and re-fragmented at every boundary.

use proptest::prelude::*;
use tunnel_core::{read_client_hello, ClientHello, MAX_CLIENT_HELLO_BYTES};

/// Captured from `openssl s_client -servername app.localhost` (OpenSSL 3.0).
const OPENSSL: &[u8] = include_bytes!("data/client_hello_openssl.bin");
/// Captured from `curl https://web.example.test/` (curl 7.88, OpenSSL 3.0, ALPN h2).
const CURL: &[u8] = include_bytes!("data/client_hello_curl.bin");

fn name(n: &str) -> ClientHello {
    ClientHello::ServerName(n.to_owned())
}

#[test]
fn real_clients_name_their_host() {
    assert_eq!(read_client_hello(OPENSSL), name("app.localhost"));
    assert_eq!(read_client_hello(CURL), name("web.example.test"));
}

#[test]
fn one_byte_at_a_time_needs_more_until_the_last() {
    for hello in [OPENSSL, CURL] {
        for len in 0..hello.len() {
            assert_eq!(
                read_client_hello(&hello[..len]),
                ClientHello::NeedMore,
                "at {len}"
            );
        }
    }
}

#[test]
fn bytes_after_the_hello_do_not_change_the_answer() {
    let mut more = CURL.to_vec();
    more.extend_from_slice(&[22, 3, 3, 0, 1, 0]);
    assert_eq!(read_client_hello(&more), name("web.example.test"));
}

/// Splits the handshake message of a one-record hello into records of the given sizes.
fn refragment(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
    let handshake = &hello[5..];
    let mut out = Vec::new();
    let mut rest = handshake;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().expect("cycle never ends")).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
        rest = tail;
    }
    out
}

proptest! {
    #[test]
    fn refragmented_hellos_give_the_same_answer(sizes in prop::collection::vec(1usize..400, 1..8), which in 0..2usize) {
        let (hello, expected) = [(OPENSSL, "app.localhost"), (CURL, "web.example.test")][which];
        let records = refragment(hello, &sizes);
        prop_assert_eq!(read_client_hello(&records), name(expected));
        // And cut anywhere, it only ever asks for more.
        for cut in 0..records.len() {
            prop_assert_eq!(read_client_hello(&records[..cut]), ClientHello::NeedMore);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_client_hello(&bytes);
    }

    #[test]
    fn handshake_prefixed_garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        let mut bytes = vec![22, 3, 1];
        bytes.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&body);
        let _ = read_client_hello(&bytes);
    }
}

#[test]
fn a_peer_cannot_make_us_buffer_past_the_limit() {
    // Endless tiny records that never complete a hello: refused once past the bound.
    let mut bytes = vec![22, 3, 1, 0, 4, 1, 0, 0xff, 0xff];
    while bytes.len() <= MAX_CLIENT_HELLO_BYTES * 2 {
        bytes.extend_from_slice(&[22, 3, 1, 0, 1, 0]);
    }
    assert_eq!(read_client_hello(&bytes), ClientHello::NotTls);
}
