//! `--accept-proxy-proto`: a connection from a trusted load balancer starts with a PROXY protocol
//! header naming the visitor. It is read here, on every listener, before anything else looks at
//! the connection; the core's reader decides, and the core's [`TrustedProxies`] says whose
//! connections carry one.

use tokio::io::AsyncReadExt;
use tunnel_core::{ProxiedPeer, ProxyHeader, ProxyHeaderReader, TrustedProxies};

use crate::driver::DriverSettings;
use crate::net::{Accepted, ByteStream};
use crate::replay::Replayed;

/// How much one read asks for: a whole v1 line, or most v2 headers, in one go.
const READ_CHUNK: usize = 512;

/// The connection as the rest of the server sees it. From a proxy whose connections carry a
/// header: the header read, its visitor as `peer` and the address the visitor reached as `local`,
/// and the connection's own bytes that came with the header given back first; `None` when the
/// header is missing, malformed, too large or too slow (`--tls-hello-timeout`), after a log line.
/// From anyone else: the connection untouched, nothing read.
pub async fn proxied<S: ByteStream>(
    accepted: Accepted<S>,
    settings: &DriverSettings,
    listener: &'static str,
) -> Option<Accepted<Replayed<S>>> {
    read_header(
        accepted,
        &settings.trusted_proxies,
        settings.tls_hello_timeout,
        listener,
    )
    .await
}

async fn read_header<S: ByteStream>(
    accepted: Accepted<S>,
    proxies: &TrustedProxies,
    timeout: std::time::Duration,
    listener: &'static str,
) -> Option<Accepted<Replayed<S>>> {
    let Accepted {
        mut stream,
        peer: proxy,
        local,
    } = accepted;
    if !proxies.sends_proxy_header(proxy.ip()) {
        return Some(Accepted {
            stream: Replayed::new(stream, Vec::new()),
            peer: proxy,
            local,
        });
    }
    let mut received = Vec::with_capacity(READ_CHUNK);
    let mut reader = ProxyHeaderReader::default();
    let read = tokio::time::timeout(timeout, async {
        loop {
            match reader.read(&received) {
                ProxyHeader::NeedMore => {}
                decided => return Some(decided),
            }
            received.reserve(READ_CHUNK);
            match stream.read_buf(&mut received).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    let (peer, length) = match read {
        Ok(Some(ProxyHeader::Done { peer, length })) => (peer, length),
        Ok(Some(ProxyHeader::Invalid(error))) => {
            tracing::info!(listener, %proxy, %error, "no valid PROXY header from a trusted proxy; closed");
            return None;
        }
        Ok(_) => {
            tracing::debug!(listener, %proxy, "trusted proxy left before its PROXY header; closed");
            return None;
        }
        Err(_) => {
            tracing::debug!(listener, %proxy, "no PROXY header in time from a trusted proxy; closed");
            return None;
        }
    };
    let own_bytes = received.split_off(length);
    let (peer, local) = match peer {
        ProxiedPeer::Proxied {
            source,
            destination,
        } => {
            tracing::debug!(listener, %proxy, visitor = %source, "PROXY header read");
            (source, destination)
        }
        // LOCAL or UNKNOWN: the proxy's own connection (a health check), its own ends stand.
        _ => (proxy, local),
    };
    Some(Accepted {
        stream: Replayed::new(stream, own_bytes),
        peer,
        local,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tunnel_core::command::ProxyVersion;

    use super::*;

    /// For tests: the ends and the bytes a listener would see after [`proxied`].
    async fn seen(
        bytes: &[u8],
        proxies: &TrustedProxies,
        keep_open: bool,
    ) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        use tokio::io::AsyncWriteExt;
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        far.write_all(bytes)
            .await
            .expect("the pipe holds the bytes");
        if !keep_open {
            far.shutdown().await.expect("shutdown");
        }
        let accepted = Accepted {
            stream: near,
            peer: "10.0.0.9:40000".parse().expect("address"),
            local: "10.0.0.1:8080".parse().expect("address"),
        };
        let Accepted {
            mut stream,
            peer,
            local,
        } = read_header(
            accepted,
            proxies,
            std::time::Duration::from_millis(200),
            "test",
        )
        .await?;
        drop(far);
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("read");
        Some((peer, local, rest))
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    fn lb() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]).with_proxy_protocol(true)
    }

    #[tokio::test]
    async fn the_visitor_replaces_the_proxy_and_the_streams_bytes_follow() {
        // Our own writer's headers, both versions, read back by the reader.
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let mut bytes = crate::proxy_header::encode(
                version,
                addr("203.0.113.7:51000"),
                addr("192.0.2.1:443"),
            );
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let (peer, local, rest) = seen(&bytes, &lb(), false).await.expect("served");
            assert_eq!(peer, addr("203.0.113.7:51000"), "{version:?}");
            assert_eq!(local, addr("192.0.2.1:443"), "{version:?}");
            assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n", "{version:?}");
        }
    }

    #[tokio::test]
    async fn unknown_keeps_the_proxys_own_ends() {
        let (peer, local, rest) = seen(b"PROXY UNKNOWN\r\nping", &lb(), false)
            .await
            .expect("served");
        assert_eq!(
            (peer, local),
            (addr("10.0.0.9:40000"), addr("10.0.0.1:8080"))
        );
        assert_eq!(rest, b"ping");
    }

    #[tokio::test]
    async fn a_trusted_proxy_without_a_valid_header_is_closed() {
        assert_eq!(seen(b"GET / HTTP/1.1\r\n\r\n", &lb(), false).await, None);
        assert_eq!(seen(b"PROXY TCP4 1.2.3.4", &lb(), false).await, None, "eof");
        assert_eq!(
            seen(b"PROXY TCP4 1.2.3.4", &lb(), true).await,
            None,
            "timeout"
        );
    }

    #[tokio::test]
    async fn anyone_else_is_not_read_at_all() {
        let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n";
        for proxies in [
            TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]),
            TrustedProxies::new(vec!["192.168.0.0/16".parse().expect("cidr")])
                .with_proxy_protocol(true),
        ] {
            let (peer, _, rest) = seen(header, &proxies, false).await.expect("served");
            assert_eq!(peer, addr("10.0.0.9:40000"));
            assert_eq!(rest, header, "the header is the stream's own bytes");
        }
    }
}
