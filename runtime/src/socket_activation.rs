//! systemd socket activation (`sd_listen_fds(3)`): listeners systemd (or any holder of the
//! sockets) bound and passed in as descriptors 3, 4, ... With the sockets held outside the
//! process, a restart refuses no connection: those arriving meanwhile wait in the backlog.
//!
//! Taking the descriptors is the binary's one unsafe step (`main.rs`); here they are read from
//! the environment, checked to be listening TCP sockets, and matched to the server's listeners:
//! by name (`ssh`, `http`, `https`: `FileDescriptorName=` of one socket unit per listener), else
//! by the address they are bound to (one socket unit with a `ListenStream=` per listener, the
//! same addresses as `--ssh-addr`, `--http-addr` and `--https-addr`).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;
/// More descriptors than this is not a server's listeners.
const MAX_FDS: usize = 64;

/// Why the passed descriptors cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not a count we take.
    #[error("LISTEN_FDS={0:?} is not a number of descriptors from 1 to {MAX_FDS}")]
    Count(String),
    /// A descriptor is not a listening TCP socket.
    #[error("descriptor {fd} passed by the service manager is not a listening TCP socket")]
    NotListening {
        /// The descriptor.
        fd: RawFd,
    },
    /// A system call on a descriptor failed.
    #[error("descriptor {fd}: {source}")]
    Io {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        source: std::io::Error,
    },
}

/// The descriptors the environment says were passed to process `pid`, with their names: none
/// when `LISTEN_PID` names another process (they were meant for a parent) or is unset.
pub fn passed_fds(
    pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
) -> Result<Vec<(RawFd, Option<String>)>, ActivationError> {
    if listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(pid) {
        return Ok(Vec::new());
    }
    let Some(count) = listen_fds else {
        return Ok(Vec::new());
    };
    let n = count
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_FDS).contains(n))
        .ok_or_else(|| ActivationError::Count(count.to_owned()))?;
    let mut names = names.map(|n| n.split(':')).into_iter().flatten();
    Ok((0..n)
        .map(|i| {
            let name = names.next().filter(|n| !n.is_empty() && *n != "unknown");
            (FIRST_FD + i as RawFd, name.map(str::to_owned))
        })
        .collect())
}

/// Whether `fd` is an open descriptor: one that is not must never be owned (closing it would
/// close whatever later took its number).
pub fn check_open(raw: RawFd, fd: BorrowedFd<'_>) -> Result<(), ActivationError> {
    rustix::io::fcntl_getfd(fd)
        .map(drop)
        .map_err(|source| ActivationError::Io {
            fd: raw,
            source: source.into(),
        })
}

/// The listeners passed in, not yet given to a listener of the server.
#[derive(Debug, Default)]
pub struct Inherited(Vec<(Option<String>, TcpListener)>);

impl Inherited {
    /// None: every listener is bound by the server.
    pub fn none() -> Self {
        Self::default()
    }

    /// Checks each descriptor is a listening TCP socket and makes it a listener.
    pub fn from_fds(fds: Vec<(RawFd, Option<String>, OwnedFd)>) -> Result<Self, ActivationError> {
        let mut listeners = Vec::with_capacity(fds.len());
        for (raw, name, fd) in fds {
            let io = |source: rustix::io::Errno| ActivationError::Io {
                fd: raw,
                source: source.into(),
            };
            let stream = rustix::net::sockopt::socket_type(&fd).map_err(io)?
                == rustix::net::SocketType::STREAM;
            let listening = rustix::net::sockopt::socket_acceptconn(&fd).map_err(io)?;
            if !stream || !listening {
                return Err(ActivationError::NotListening { fd: raw });
            }
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).map_err(io)?;
            let listener = TcpListener::from(fd);
            listener
                .set_nonblocking(true)
                .map_err(|source| ActivationError::Io { fd: raw, source })?;
            listeners.push((name, listener));
        }
        Ok(Self(listeners))
    }

    /// The passed listener for the server's listener `what` (`ssh`, `http`, `https`): the one
    /// named so, else one bound to `addr`.
    pub fn take(&mut self, what: &str, addr: SocketAddr) -> Option<TcpListener> {
        let index = self
            .0
            .iter()
            .position(|(name, _)| name.as_deref() == Some(what))
            .or_else(|| {
                self.0
                    .iter()
                    .position(|(_, listener)| listener.local_addr().is_ok_and(|a| a == addr))
            })?;
        Some(self.0.swap_remove(index).1)
    }

    /// What no listener took: names and addresses, for a warning.
    pub fn leftover(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(name, listener)| {
                let addr = listener
                    .local_addr()
                    .map_or_else(|_| "?".to_owned(), |a| a.to_string());
                format!("{} ({addr})", name.as_deref().unwrap_or("unnamed"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_taken_only_when_meant_for_this_process() {
        let none: Vec<(RawFd, Option<String>)> = Vec::new();
        assert_eq!(passed_fds(42, None, Some("2"), None).unwrap(), none);
        assert_eq!(passed_fds(42, Some("41"), Some("2"), None).unwrap(), none);
        assert_eq!(passed_fds(42, Some("42"), None, None).unwrap(), none);
        assert_eq!(
            passed_fds(42, Some("42"), Some("3"), Some("ssh:unknown")).unwrap(),
            [(3, Some("ssh".to_owned())), (4, None), (5, None)]
        );
        for bad in ["0", "-1", "x", "65"] {
            assert!(
                passed_fds(42, Some("42"), Some(bad), None).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_listener_is_matched_by_name_then_by_address_and_never_twice() {
        let bind = || TcpListener::bind("127.0.0.1:0").expect("bind");
        let (a, b) = (bind(), bind());
        let b_addr = b.local_addr().expect("addr");
        let mut inherited = Inherited(vec![(Some("http".into()), a), (None, b)]);
        assert!(inherited
            .take("ssh", "127.0.0.1:1".parse().unwrap())
            .is_none());
        assert!(inherited.take("http", b_addr).is_some(), "by name first");
        assert_eq!(
            inherited.take("https", b_addr).map(|l| l.local_addr().ok()),
            Some(Some(b_addr))
        );
        assert!(inherited.take("https", b_addr).is_none());
        assert!(inherited.leftover().is_empty());
    }

    #[test]
    fn a_descriptor_that_is_not_a_listening_tcp_socket_is_refused() {
        let connected = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let fd = OwnedFd::from(connected);
        let refused = Inherited::from_fds(vec![(3, None, fd)]);
        assert!(matches!(refused, Err(ActivationError::NotListening { .. })));
        let listener = OwnedFd::from(TcpListener::bind("127.0.0.1:0").expect("bind"));
        assert!(Inherited::from_fds(vec![(3, None, listener)]).is_ok());
    }
}
