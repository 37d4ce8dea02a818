//! An HTTP visitor connection that goes quiet is closed: before its first request head, between
//! keep-alive requests, and while a request body stops arriving. Any byte either way counts as
//! activity, so a long download is never cut; an upgraded stream (WebSocket) is exempt, since
//! quiet WebSockets are normal.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Turns the idle timer off for good (after an upgrade).
#[derive(Clone, Debug, Default)]
pub struct Exempt(Arc<AtomicBool>);

impl Exempt {
    /// From now on the stream is never cut for being quiet.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `inner`, cut with a `TimedOut` error once nothing has moved either way for `timeout`.
#[derive(Debug)]
pub struct Idle<S> {
    inner: S,
    timeout: Duration,
    /// Armed for `timeout` after the activity seen when it was last armed; moved on lazily.
    deadline: Pin<Box<Sleep>>,
    /// The last byte either way: a clock read per read or write is cheaper than moving a timer.
    last: Instant,
    exempt: Exempt,
}

impl<S> Idle<S> {
    /// Wraps `inner`; its first deadline is `timeout` from now.
    pub fn new(inner: S, timeout: Duration, exempt: Exempt) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            last: Instant::now(),
            exempt,
        }
    }

    fn moved(&mut self) {
        self.last = Instant::now();
    }

    /// Whether the quiet time is up (registering for a wake-up when it is not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.exempt.is_set() {
            return false;
        }
        while self.deadline.as_mut().poll(cx).is_ready() {
            let due = self.last + self.timeout;
            if due <= Instant::now() {
                return true;
            }
            // Something moved since it was armed: arm it for the quiet time after that.
            self.deadline.as_mut().reset(due);
        }
        false
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the visitor stayed quiet too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quiet_is_cut_activity_is_not_and_an_exempt_stream_never_is() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut idle = Idle::new(ours, Duration::from_secs(10), Exempt::default());
        // Bytes every 9 s keep it open past several timeouts.
        let feeder = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(9)).await;
                theirs.write_all(b"x").await.expect("write");
            }
            theirs
        });
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            assert_eq!(idle.read(&mut buf).await.expect("a byte"), 1);
        }
        let _theirs = feeder.await.expect("joined");
        // Then silence: cut 10 s after the last byte.
        let start = Instant::now();
        let error = idle.read(&mut buf).await.expect_err("cut");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));

        let (ours, _theirs) = tokio::io::duplex(64);
        let exempt = Exempt::default();
        let mut upgraded = Idle::new(ours, Duration::from_secs(10), exempt.clone());
        exempt.set();
        let quiet = tokio::time::timeout(Duration::from_secs(3600), upgraded.read(&mut buf)).await;
        assert!(quiet.is_err(), "an exempt stream waits as long as it likes");
    }
}
