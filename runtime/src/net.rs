//! The network seam: the only module that names socket types. The server is generic over [`Net`],
//! so `sim/` can run the very same code on turmoil's simulated network.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the server can carry (a TCP connection, real or simulated).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ByteStream for T {}

/// A network: listeners and the streams they accept.
pub trait Net: Clone + Send + Sync + 'static {
    /// An accepted connection.
    type Stream: ByteStream;
    /// A bound listener.
    type Listener: Listener<Stream = Self::Stream>;

    /// Binds a listener; port 0 picks a free port.
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Serves a listener bound by someone else (systemd socket activation); a network that
    /// cannot says so.
    fn adopt(&self, listener: std::net::TcpListener) -> io::Result<Self::Listener> {
        drop(listener);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this network cannot serve a passed-in listener",
        ))
    }
}

/// An accepted connection and both its ends.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The connection.
    pub stream: S,
    /// The visitor's address.
    pub peer: SocketAddr,
    /// The address the visitor reached: the socket's own, which on a wildcard or dual-stack
    /// listener says more than the listener's (a PROXY header's destination).
    pub local: SocketAddr,
}

/// A bound TCP listener.
pub trait Listener: Send + Sync + 'static {
    /// The accepted connection type.
    type Stream: ByteStream;

    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Accepted<Self::Stream>>> + Send;

    /// The address actually bound (port 0 resolved).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The operating system's network, through tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl Net for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn adopt(&self, listener: std::net::TcpListener) -> io::Result<Self::Listener> {
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<Accepted<Self::Stream>> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Tunnel traffic is interactive as often as bulk: never wait for Nagle.
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        Ok(Accepted {
            stream,
            peer,
            local,
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}
