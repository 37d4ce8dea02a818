//! Local services on the user's side of the tunnel: what `-R ...:LHOST:LPORT` points at.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections one service serves at once; more are closed at once (bounds threads).
const MAX_CONNECTIONS: usize = 64;

/// A TCP service on `127.0.0.1:0`, one thread per connection; stops accepting on drop.
pub struct LocalService {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl LocalService {
    /// Echoes every byte back until the peer closes, then closes.
    pub fn echo() -> LocalService {
        LocalService::spawn(|stream| {
            let _ = echo(stream);
        })
    }

    /// Writes `banner` on accept, then echoes. Tells services apart, and shows whether a
    /// visitor got through (a visitor that is let in always receives the banner).
    pub fn echo_with_banner(banner: &[u8]) -> LocalService {
        let banner = banner.to_vec();
        LocalService::spawn(move |mut stream| {
            if stream.write_all(&banner).is_ok() {
                let _ = echo(stream);
            }
        })
    }

    /// Runs `handle` on its own thread for each accepted connection.
    pub fn spawn(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> LocalService {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a local service");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let live = Arc::new(AtomicUsize::new(0));
        {
            let accepted = Arc::clone(&accepted);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if live.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                        live.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    let handle = Arc::clone(&handle);
                    let live = Arc::clone(&live);
                    std::thread::spawn(move || {
                        handle(stream);
                        live.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        }
        LocalService {
            addr,
            accepted,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many connections reached this service so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for LocalService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut reader = stream.try_clone()?;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            // Half-close passes through: our EOF answers theirs.
            return stream.shutdown(std::net::Shutdown::Write);
        }
        stream.write_all(&buf[..n])?;
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released), so connecting to it is
/// refused.
pub fn refusing_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a throwaway port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}
