//! A visitor's stream with the bytes that move each way counted, for the access log.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from and written to one stream so far.
#[derive(Debug, Default)]
pub struct ByteCounts {
    read: AtomicU64,
    written: AtomicU64,
}

impl ByteCounts {
    /// Bytes read from the stream (what the visitor sent).
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written to the stream (what the visitor was sent).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// As if a stream had moved these bytes.
    #[cfg(test)]
    pub(crate) fn add(&self, read: usize, written: usize) {
        add(&self.read, read);
        add(&self.written, written);
    }
}

/// Adds `n` to a counter that only one [`Counted`] writes: a load and a store, cheaper than an
/// atomic add on the data path. The stream is polled through `&mut`, so nothing races the store.
fn add(counter: &AtomicU64, n: usize) {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    counter.store(
        counter.load(Ordering::Relaxed).saturating_add(n),
        Ordering::Relaxed,
    );
}

/// `inner`, counting into `counts` when there are any; without, it only passes calls on (one
/// predictable branch per call), so the type stays the same whether the access log is on or not.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    counts: Option<Arc<ByteCounts>>,
}

impl<S> Counted<S> {
    /// Wraps `inner`; `None` counts nothing. One stream per `ByteCounts`: it alone writes them.
    pub fn new(inner: S, counts: Option<Arc<ByteCounts>>) -> Self {
        Self { inner, counts }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Some(counts), Poll::Ready(Ok(()))) = (&self.counts, &polled) {
            add(&counts.read, buf.filled().len() - before);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Some(counts), Poll::Ready(Ok(n))) = (&self.counts, &polled) {
            add(&counts.written, *n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let (Some(counts), Poll::Ready(Ok(n))) = (&self.counts, &polled) {
            add(&counts.written, *n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn counts_what_moves_each_way() {
        let (near, mut far) = tokio::io::duplex(16);
        let counts = Arc::new(ByteCounts::default());
        let mut counted = Counted::new(near, Some(Arc::clone(&counts)));

        // More than the pipe holds: partial writes and reads are each counted once.
        let sent = vec![7u8; 100];
        let writing = async {
            counted.write_all(&sent).await.expect("write");
            let vectored = counted
                .write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"c")])
                .await
                .expect("write vectored");
            counted.shutdown().await.expect("shutdown");
            let mut back = Vec::new();
            counted.read_to_end(&mut back).await.expect("read");
            (vectored, back)
        };
        let echoing = async {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.expect("far read");
            far.write_all(&got[..42]).await.expect("far write");
            drop(far);
            got.len()
        };
        let ((vectored, back), got) = tokio::join!(writing, echoing);

        assert_eq!(got, 100 + vectored);
        assert_eq!(counts.written(), got as u64);
        assert_eq!(back.len(), 42);
        assert_eq!(counts.read(), 42);
    }

    #[tokio::test]
    async fn without_counts_it_only_passes_bytes_on() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut counted = Counted::new(near, None);
        counted.write_all(b"hello").await.expect("write");
        let mut got = [0; 5];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello");
    }
}
