//! Tcp endpoints: accept visitors on the endpoint's port and pipe each through its own
//! `forwarded-tcpip` channel.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use russh::server::Handle;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tunnel_core::{Address, Route, VisitorRefusal};

use crate::accept::{accept, AcceptBackoff};
use crate::access_log::{AccessLog, Listener};
use crate::admission::Admitted;
use crate::driver::{ConnectionGone, Driver};
use crate::net::{Accepted, ByteStream, Net};
use crate::proxy_accept::proxied;
use crate::proxy_header;

/// Piping buffer per direction: large enough for full-size SSH packets, small enough that a
/// thousand visitors stay cheap.
const PIPE_BUFFER: usize = 64 * 1024;

/// Accepts visitors until the endpoint is unbound (the task is aborted, dropping the listener).
/// `closed` is dropped with the task, after the listener, which tells the driver the port is
/// free again.
pub async fn serve_listener<N: Net>(
    driver: Arc<Driver<N>>,
    listener: N::Listener,
    port: u16,
    closed: tokio::sync::oneshot::Sender<()>,
) {
    // Fields drop in order: the listener (closing the port) before the signal that says so.
    struct Closing<L> {
        listener: L,
        _closed: tokio::sync::oneshot::Sender<()>,
    }
    let listening = Closing {
        listener,
        _closed: closed,
    };
    let listener = &listening.listener;
    driver
        .stats
        .active_listeners
        .fetch_add(1, Ordering::Relaxed);
    let _count = CountGuard(&driver.stats.active_listeners);
    // Out of descriptors and the like: keep serving the connections already open.
    let mut backoff = AcceptBackoff::new("tcp endpoint");
    loop {
        let accepted = accept(listener, &mut backoff).await;
        let driver = Arc::clone(&driver);
        tokio::spawn(async move {
            // From a trusted load balancer, its PROXY header first: the visitor and the address
            // it reached, as the header says, are what the endpoint's rules and its own PROXY
            // header see.
            let Some(Accepted {
                stream: visitor,
                peer,
                local,
            }) = proxied(accepted, &driver.settings(), "tcp endpoint").await
            else {
                return;
            };
            let access = AccessLog::start(driver.settings().access_log, Listener::Tcp, peer);
            access.reached(&Address::Port(port));
            let visitor = access.count(visitor);
            serve_visitor(driver, port, visitor, peer, local, &access).await;
        });
    }
}

async fn serve_visitor<N: Net, S: ByteStream>(
    driver: Arc<Driver<N>>,
    port: u16,
    visitor: S,
    peer: SocketAddr,
    local: SocketAddr,
    access: &AccessLog,
) {
    let admitted = driver
        .visit_by_port(port)
        .and_then(|visit| visit.admit_connection(peer.ip()));
    let Admitted {
        route,
        handle,
        permit: _permit,
        gone,
    } = match admitted {
        Ok(admitted) => admitted,
        // tcp visitors are refused by closing their connection.
        Err(refusal) => {
            access.refused(&refusal);
            driver.metrics.visitor_refused(&refusal);
            return tracing::debug!(%peer, port, %refusal, "visitor refused");
        }
    };
    let prefix = route
        .policy
        .proxy_protocol()
        .map(|version| proxy_header::encode(version, peer, local))
        .unwrap_or_default();
    open_and_pipe(
        &driver, &route, &handle, gone, visitor, peer, prefix, access,
    )
    .await;
}

/// Opens the visitor's `forwarded-tcpip` channel (RFC 4254 §7.2: the forward's bind address and
/// port, then the visitor as originator) and pipes through it, `prefix` first. A client that
/// refuses the channel or does not answer in time costs only this visitor its connection.
#[allow(clippy::too_many_arguments)] // each is the visitor's own; a struct would only rename them
pub async fn open_and_pipe<N: Net>(
    driver: &Driver<N>,
    route: &Route,
    handle: &Handle,
    gone: ConnectionGone,
    visitor: impl ByteStream,
    peer: SocketAddr,
    prefix: Vec<u8>,
    access: &AccessLog,
) {
    let channel = match open_channel(driver, route, handle, peer).await {
        Ok(channel) => channel,
        Err(error) => {
            access.refused(&error);
            return tracing::debug!(%peer, endpoint = %route.endpoint, %error, "no channel");
        }
    };
    // After a clean end the client closes the channel; a broken pipe is closed from here (see
    // channel_io for why not on drop).
    let (io, closer) = crate::channel_io::split(channel, &driver.spills);
    let io = io.counted(driver.metrics.endpoint(route.endpoint));
    if pipe(driver, visitor, io, prefix, gone).await {
        access.closed();
    } else {
        access.cut();
        let _ = closer.close().await;
    }
}

/// Opens a visitor's `forwarded-tcpip` channel (RFC 4254 §7.2): "address/port that was
/// connected" are the forward as the client registered it, the originator is the visitor. Bounded
/// by a timeout, so a client that never answers costs one visitor its wait, nothing more.
pub async fn open_channel<N: Net>(
    driver: &Driver<N>,
    route: &Route,
    handle: &Handle,
    peer: SocketAddr,
) -> Result<russh::Channel<russh::server::Msg>, VisitorRefusal> {
    let started = tokio::time::Instant::now();
    let opened = tokio::time::timeout(
        driver.settings().channel_open_timeout,
        handle.channel_open_forwarded_tcpip(
            route.target.bind_address.clone(),
            route.target.port,
            peer.ip().to_canonical().to_string(),
            u32::from(peer.port()),
        ),
    )
    .await;
    driver.metrics.channel_opened(started.elapsed());
    let refusal = match opened {
        Ok(Ok(channel)) => return Ok(channel),
        Ok(Err(_)) => VisitorRefusal::LocalServiceRefused,
        Err(_) => VisitorRefusal::TunnelTimedOut,
    };
    driver.metrics.visitor_refused(&refusal);
    Err(refusal)
}

/// Copies both ways until both sides are done, passing each side's EOF on as a half-close, and
/// says whether it ended cleanly. Backpressure is the copy itself: nothing is read from one side
/// faster than the other takes it.
pub async fn pipe<N: Net>(
    driver: &Driver<N>,
    mut visitor: impl ByteStream,
    mut channel: impl tokio::io::AsyncRead + AsyncWrite + Unpin,
    prefix: Vec<u8>,
    gone: ConnectionGone,
) -> bool {
    driver.stats.active_streams.fetch_add(1, Ordering::Relaxed);
    let _count = CountGuard(&driver.stats.active_streams);
    let copy = async {
        if !prefix.is_empty() {
            channel.write_all(&prefix).await?;
        }
        tokio::io::copy_bidirectional_with_sizes(
            &mut visitor,
            &mut channel,
            PIPE_BUFFER,
            PIPE_BUFFER,
        )
        .await
    };
    // The connection's end ends the copy too: a channel writer waiting for window on a dead
    // connection would otherwise wait for good.
    tokio::select! {
        copied = copy => copied.is_ok(),
        () = gone.wait() => false,
    }
}

struct CountGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
