//! A read buffer under russh. russh reads each SSH packet with two small reads (the first
//! cipher block, then the rest), so without a buffer every packet costs two `recv` syscalls and
//! an extra wake-up when the rest has not arrived. This wrapper fills a buffer with whatever the
//! socket has and serves russh's small reads from it. The buffer lives only while it holds
//! bytes, so an idle tunnel keeps no read buffer at all.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// How much one fill asks the socket for. Reads at least this large skip the buffer.
const CAPACITY: usize = 16 * 1024;

/// A stream whose reads go through a buffer that exists only while it holds unread bytes.
pub struct ReadBuffered<S> {
    inner: S,
    buffer: BytesMut,
}

impl<S> ReadBuffered<S> {
    /// Wraps `inner`; no memory is taken until the first read.
    pub fn new(inner: S) -> Self {
        ReadBuffered {
            inner,
            buffer: BytesMut::new(),
        }
    }

    /// Bytes held for the reader (for tests and accounting).
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Copies what the buffer holds into `out`; frees the buffer once it is drained.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.buffer.len().min(out.remaining());
        out.put_slice(&self.buffer[..n]);
        self.buffer.advance(n);
        if self.buffer.is_empty() {
            self.buffer = BytesMut::new();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadBuffered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffer.is_empty() {
            if out.remaining() >= CAPACITY {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            // Reads into the spare capacity without zeroing it first.
            this.buffer.reserve(CAPACITY);
            let read = poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buffer);
            if this.buffer.is_empty() {
                this.buffer = BytesMut::new();
            }
            ready!(read)?;
        }
        this.serve(out);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadBuffered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reader that hands out its bytes in fixed-size pieces and counts its reads.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
        reads: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let n = self
                .piece
                .min(out.remaining())
                .min(self.data.len() - self.at);
            let at = self.at;
            out.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Reads like russh does: a small header, then a larger rest, over and over.
    async fn read_like_russh(stream: &mut ReadBuffered<Pieces>, total: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let sizes = [16usize, 4, 1000, 40_000, 7, 16_384, 3];
        let mut i = 0;
        while got.len() < total {
            let want = sizes[i % sizes.len()].min(total - got.len());
            let mut chunk = vec![0; want];
            stream.read_exact(&mut chunk).await.expect("enough bytes");
            got.extend_from_slice(&chunk);
            i += 1;
        }
        got
    }

    #[tokio::test]
    async fn bytes_come_out_unchanged_whatever_the_read_sizes() {
        for piece in [1, 5, 16, 4096, CAPACITY, 100_000] {
            let data = pattern(300_000);
            let mut stream = ReadBuffered::new(Pieces {
                data: data.clone(),
                at: 0,
                piece,
                reads: 0,
            });
            let got = read_like_russh(&mut stream, data.len()).await;
            assert_eq!(got, data, "piece size {piece}");
            assert_eq!(stream.buffered(), 0);
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.expect("eof");
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn small_reads_share_one_socket_read() {
        let data = pattern(4 * 1024);
        let mut stream = ReadBuffered::new(Pieces {
            data: data.clone(),
            at: 0,
            piece: usize::MAX,
            reads: 0,
        });
        let mut got = vec![0; data.len()];
        for chunk in got.chunks_mut(16) {
            stream.read_exact(chunk).await.expect("enough bytes");
        }
        assert_eq!(got, data);
        assert_eq!(stream.inner.reads, 1, "256 small reads, one socket read");
        assert_eq!(stream.buffer.capacity(), 0, "drained buffer is freed");
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut stream = ReadBuffered::new(a);
        stream.write_all(b"ping").await.expect("write");
        let mut got = [0; 4];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        b.write_all(b"pong").await.expect("write");
        stream.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
    }
}
