//! The https listener: each connection's ClientHello is read without being consumed and routed by
//! SNI. A tls endpoint gets the bytes untouched through a `forwarded-tcpip` channel (the server
//! never terminates them); an http endpoint's connection is terminated here with rustls and then
//! served like plain HTTP, HTTP/2 included.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tunnel_core::command::EndpointKind;
use tunnel_core::{ClientHello, ClientHelloReader};

use crate::accept::{accept, AcceptBackoff};
use crate::access_log::{AccessLog, Listener};
use crate::admission::Admitted;
use crate::driver::Driver;
use crate::http::{Scheme, TOO_MANY_FROM_SOURCE};
use crate::net::{Accepted, ByteStream, Net};
use crate::proxy_accept::proxied;
use crate::replay::Replayed;
use crate::tls::ServerCerts;

/// A fatal `unrecognized_name` alert (RFC 8446 §6.2, RFC 6066 §3), sent in a plaintext record
/// because no handshake ever started.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 112];

/// Serves the https listener until it fails for good.
pub async fn serve<N: Net>(
    driver: Arc<Driver<N>>,
    listener: N::Listener,
    tls: Arc<rustls::ServerConfig>,
    certs: Arc<ServerCerts>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut backoff = AcceptBackoff::new("https");
    loop {
        let accepted = accept(&listener, &mut backoff).await;
        let Some(early) = driver.count_on_accept(accepted.peer.ip()) else {
            let peer = accepted.peer;
            AccessLog::start(driver.settings().access_log, Listener::Https, peer)
                .refused(TOO_MANY_FROM_SOURCE);
            tracing::debug!(%peer, "too many connections from this source; closed");
            continue;
        };
        let (driver, acceptor, certs) = (Arc::clone(&driver), acceptor.clone(), Arc::clone(&certs));
        tokio::spawn(async move {
            // From a trusted load balancer, its PROXY header first: the visitor it names is the
            // peer from here on.
            let Some(Accepted {
                stream,
                peer,
                local,
            }) = proxied(accepted, &driver.settings(), "https").await
            else {
                return;
            };
            let access = AccessLog::start(driver.settings().access_log, Listener::Https, peer);
            // Counted with the http listener's: one budget per source (see http::serve).
            let Some(_counted) = driver.count_visitor(early, peer.ip()) else {
                access.refused(TOO_MANY_FROM_SOURCE);
                return tracing::debug!(%peer, "too many connections from this source; closed");
            };
            let stream = access.count(stream);
            serve_connection(driver, acceptor, certs, stream, peer, local, &access).await;
        });
    }
}

async fn serve_connection<N: Net, S: ByteStream>(
    driver: Arc<Driver<N>>,
    acceptor: TlsAcceptor,
    certs: Arc<ServerCerts>,
    mut stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    access: &AccessLog,
) {
    let mut received = Vec::with_capacity(2048);
    let mut reader = ClientHelloReader::default();
    let hello = tokio::time::timeout(driver.settings().tls_hello_timeout, async {
        loop {
            match reader.read(&received) {
                ClientHello::NeedMore => {}
                decided => return Some(decided),
            }
            match stream.read_buf(&mut received).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    let name = match hello {
        Ok(Some(ClientHello::ServerName(name))) => name,
        Ok(Some(ClientHello::NoServerName)) => {
            access.refused("no server name in the ClientHello");
            return refuse(stream).await;
        }
        // Not TLS, a visitor that left, or one too slow: nothing to say.
        Ok(Some(_)) => return access.error("not a TLS ClientHello"),
        Ok(None) => return access.closed(),
        Err(_) => return access.timed_out(),
    };
    let visit = match driver.visit_by_sni(&name) {
        Ok(visit) => visit,
        // DOMAIN itself and unknown names under it: terminated with the server's certificate,
        // which covers them, so a browser shows the page (the server's own, or a 404).
        Err(refusal) if refusal.answered_over_tls() => {
            return terminate(driver, acceptor, stream, received, peer, access).await;
        }
        // A name outside DOMAIN: no certificate of ours covers it, the handshake fails as TLS says.
        Err(refusal) => {
            access.refused(&refusal);
            driver.metrics.visitor_refused(&refusal);
            return refuse(stream).await;
        }
    };
    match visit.route.policy.kind() {
        EndpointKind::Tls => {
            access.listener(Listener::Tls);
            access.reached(&visit.route.address);
            let Admitted {
                route,
                handle,
                permit: _permit,
                gone,
            } = match visit.admit_connection(peer.ip()) {
                Ok(admitted) => admitted,
                // tls visitors are refused by closing their connection.
                Err(refusal) => {
                    access.refused(&refusal);
                    driver.metrics.visitor_refused(&refusal);
                    return tracing::debug!(%peer, %refusal, "tls visitor refused");
                }
            };
            let mut prefix = route
                .policy
                .proxy_protocol()
                .map(|version| crate::proxy_header::encode(version, peer, local))
                .unwrap_or_default();
            prefix.extend_from_slice(&received);
            crate::tcp::open_and_pipe(&driver, &route, &handle, gone, stream, peer, prefix, access)
                .await;
        }
        // Terminated here; each request is then admitted like one on the http listener.
        EndpointKind::Http => {
            drop(visit);
            certs.cover(&name.to_ascii_lowercase());
            terminate(driver, acceptor, stream, received, peer, access).await;
        }
        // The core routes no tcp endpoint by name.
        EndpointKind::Tcp => {
            access.refused(format_args!("{name} is not a tls or http tunnel"));
            refuse(stream).await;
        }
    }
}

/// Terminates TLS with the server's certificate and serves the connection's requests like the
/// http listener's (each routed by its Host).
async fn terminate<N: Net, S: ByteStream>(
    driver: Arc<Driver<N>>,
    acceptor: TlsAcceptor,
    stream: S,
    received: Vec<u8>,
    peer: SocketAddr,
    access: &AccessLog,
) {
    let replayed = Replayed::new(stream, received);
    // The handshake is bounded like the ClientHello: a visitor that stops halfway holds
    // nothing for long.
    let handshake = driver.settings().tls_hello_timeout;
    match tokio::time::timeout(handshake, acceptor.accept(replayed)).await {
        Ok(Ok(tls)) => {
            let access = access.clone();
            crate::http::serve_connection(driver, tls, peer, Scheme::Https, access).await;
        }
        Ok(Err(error)) => {
            access.error(format_args!("tls handshake failed: {error}"));
            tracing::debug!(%peer, %error, "tls handshake failed");
        }
        Err(_) => {
            access.timed_out();
            tracing::debug!(%peer, "tls handshake not finished in time");
        }
    }
}

async fn refuse(mut stream: impl ByteStream) {
    let _ = stream.write_all(&UNRECOGNIZED_NAME_ALERT).await;
    let _ = stream.shutdown().await;
}
