//! A byte stream that can be cut from outside. russh runs each SSH connection in a task of its
//! own that owns the socket, and a client stalled in the key exchange never lets it read the
//! disconnect we ask for; cutting the stream under it ends that task, and so closes the socket.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Default)]
struct Switch {
    killed: AtomicBool,
    reader: Mutex<Option<Waker>>,
}

/// Cuts the streams made with it.
#[derive(Clone, Debug, Default)]
pub struct KillSwitch(Arc<Switch>);

impl KillSwitch {
    /// From now on the stream's reads and writes fail, and a read waiting for data wakes to
    /// fail at once.
    pub fn kill(&self) {
        self.0.killed.store(true, Ordering::Release);
        let waker = self
            .0
            .reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn killed(&self) -> bool {
        self.0.killed.load(Ordering::Acquire)
    }
}

/// `inner`, until its switch is killed.
#[derive(Debug)]
pub struct Killable<S> {
    inner: S,
    switch: KillSwitch,
}

impl<S> Killable<S> {
    /// Wraps `inner`; `switch.kill()` cuts it.
    pub fn new(inner: S, switch: KillSwitch) -> Self {
        Self { inner, switch }
    }
}

fn cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "cut by the server")
}

impl<S: AsyncRead + Unpin> AsyncRead for Killable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.switch.killed() {
            return Poll::Ready(Err(cut()));
        }
        *self
            .switch
            .0
            .reader
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        // Killed between the check and the waker's registration: the kill found no waker.
        if self.switch.killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.switch.killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.switch.killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_read_waiting_for_data_fails_when_killed() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let switch = KillSwitch::default();
        let mut stream = Killable::new(ours, switch.clone());
        let read = tokio::spawn(async move { stream.read(&mut [0u8; 8]).await });
        tokio::task::yield_now().await;
        switch.kill();
        let result = read.await.expect("joined");
        assert_eq!(
            result.expect_err("cut").kind(),
            io::ErrorKind::ConnectionAborted
        );
    }
}
