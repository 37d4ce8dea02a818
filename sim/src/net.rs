//! The runtime's network seam ([`tunnel_runtime::net::Net`]) over turmoil's simulated TCP, so the
//! gateway host runs exactly the code the binary runs.

use std::io;
use std::net::SocketAddr;

use tunnel_runtime::net::{Accepted, Listener, Net};

/// turmoil's network, as seen from the host the server runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimNet;

/// A bound turmoil listener (a newtype: both the trait and turmoil's type are foreign).
pub struct SimListener(turmoil::net::TcpListener);

impl Net for SimNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = SimListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<SimListener> {
        turmoil::net::TcpListener::bind(addr).await.map(SimListener)
    }
}

impl Listener for SimListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<Accepted<Self::Stream>> {
        let (stream, peer) = self.0.accept().await?;
        let local = stream.local_addr()?;
        Ok(Accepted {
            stream,
            peer,
            local,
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
