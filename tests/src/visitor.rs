//! The visitor's side: connections to the public endpoints of tunnels.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::FAILURE_TIMEOUT;

/// Connects to `127.0.0.1:port` with read and write timeouts that only bound failure.
pub fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(FAILURE_TIMEOUT))?;
    stream.set_write_timeout(Some(FAILURE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `payload` and reads back exactly as many bytes.
pub fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(payload)?;
    let mut back = vec![0; payload.len()];
    stream.read_exact(&mut back)?;
    Ok(back)
}

/// Opens a connection to `port`, checks that a payload comes back unchanged, and closes.
pub fn try_echo(port: u16) -> Result<(), String> {
    try_echo_after(port, b"")
}

/// Like [`try_echo`] for a service that first sends `banner`.
pub fn try_echo_after(port: u16, banner: &[u8]) -> Result<(), String> {
    let mut stream = connect(port).map_err(|e| format!("connect to port {port}: {e}"))?;
    let mut got = vec![0; banner.len()];
    stream
        .read_exact(&mut got)
        .map_err(|e| format!("reading the banner through port {port}: {e}"))?;
    if got != banner {
        return Err(format!(
            "banner through port {port}: got {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(banner)
        ));
    }
    let payload = format!("ping through {port} at {:?}\n", Instant::now());
    let back = round_trip(&mut stream, payload.as_bytes())
        .map_err(|e| format!("echo through port {port} failed: {e}"))?;
    if back != payload.as_bytes() {
        return Err(format!(
            "echo through port {port} changed {payload:?} into {:?}",
            String::from_utf8_lossy(&back)
        ));
    }
    Ok(())
}

/// [`try_echo`], panicking on failure.
pub fn assert_echo(port: u16) {
    try_echo(port).unwrap_or_else(|e| panic!("{e}"));
}

/// [`try_echo_after`], panicking on failure.
pub fn assert_echo_after(port: u16, banner: &[u8]) {
    try_echo_after(port, banner).unwrap_or_else(|e| panic!("{e}"));
}

/// How a connection ended when the test only read from it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Orderly close (EOF) after these bytes.
    Eof(Vec<u8>),
    /// Reset after these bytes.
    Reset(Vec<u8>),
    /// Still open at the deadline after these bytes.
    StillOpen(Vec<u8>),
}

impl Ending {
    /// The bytes received before the end.
    pub fn received(&self) -> &[u8] {
        match self {
            Ending::Eof(b) | Ending::Reset(b) | Ending::StillOpen(b) => b,
        }
    }

    pub fn is_closed(&self) -> bool {
        !matches!(self, Ending::StillOpen(_))
    }
}

/// Reads until the peer closes or resets the connection, bounded by `timeout`.
pub fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Ending {
    read_until_closed_or(stream, usize::MAX, timeout)
}

/// Reads until the peer closes or resets the connection or `enough` bytes arrived (then
/// [`Ending::StillOpen`]), bounded by `timeout`.
pub fn read_until_closed_or(stream: &mut TcpStream, enough: usize, timeout: Duration) -> Ending {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        if received.len() >= enough {
            return Ending::StillOpen(received);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Ending::StillOpen(received);
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ending::Eof(received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ending::StillOpen(received)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ending::Reset(received),
        }
    }
}

/// Polls until connecting to `127.0.0.1:port` is refused; false if still accepted at the
/// deadline. The short sleep paces the poll; the deadline only bounds failure.
pub fn wait_until_refused(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return true,
            _ if Instant::now() >= deadline => return false,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
