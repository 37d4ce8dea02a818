//! A `forwarded-tcpip` channel as an owned byte stream that never closes the channel by being
//! dropped.
//!
//! russh's own `ChannelStream` closes its channel on drop. A channel the server closes first leaks
//! in russh 0.65: the client's answering CHANNEL_CLOSE finds the channel already forgotten and the
//! entry in the session's channel map is never removed (about 3.6 KiB per visitor connection until
//! the SSH connection ends). After a clean end both sides have sent EOF, and OpenSSH then closes
//! the channel itself, which russh handles in full; so the stream only sends EOF, and the caller
//! closes explicitly when the exchange broke off (see [`split`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type Wait = Pin<Box<dyn Future<Output = (ChannelReadHalf, Option<ChannelMsg>)> + Send>>;

/// The channel's data as `AsyncRead + AsyncWrite`. Dropping it sends nothing.
pub struct ChannelIo {
    read: ReadState,
    /// Data received but not yet read out, and how much of it was.
    unread: Option<(Bytes, usize)>,
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
}

enum ReadState {
    Idle(ChannelReadHalf),
    Waiting(Wait),
    /// EOF or the channel closed.
    Finished,
}

/// Splits a channel into its stream and the half that can still close it.
pub fn split(channel: Channel<Msg>) -> (ChannelIo, ChannelWriteHalf<Msg>) {
    let (read, write) = channel.split();
    let io = ChannelIo {
        read: ReadState::Idle(read),
        unread: None,
        writer: Box::pin(write.make_writer()),
    };
    (io, write)
}

impl AsyncRead for ChannelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some((data, offset)) = self.unread.take() {
                let n = buf.remaining().min(data.len() - offset);
                buf.put_slice(&data[offset..offset + n]);
                if offset + n < data.len() {
                    self.unread = Some((data, offset + n));
                }
                return Poll::Ready(Ok(()));
            }
            let wait = match std::mem::replace(&mut self.read, ReadState::Finished) {
                ReadState::Finished => return Poll::Ready(Ok(())),
                ReadState::Idle(mut half) => Box::pin(async move {
                    let message = half.wait().await;
                    (half, message)
                }) as Wait,
                ReadState::Waiting(wait) => wait,
            };
            self.read = ReadState::Waiting(wait);
            let ReadState::Waiting(wait) = &mut self.read else {
                unreachable!("set just above");
            };
            let (half, message) = ready!(wait.as_mut().poll(cx));
            match message {
                Some(ChannelMsg::Data { data }) => {
                    self.read = ReadState::Idle(half);
                    if !data.is_empty() {
                        self.unread = Some((data, 0));
                    }
                }
                // EOF (RFC 4254 §5.3) or the channel gone: the stream ends; what the client
                // sends after EOF is not data.
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                    self.read = ReadState::Finished;
                    return Poll::Ready(Ok(()));
                }
                // Window adjustments, extended data and requests carry no stream bytes.
                Some(_) => self.read = ReadState::Idle(half),
            }
        }
    }
}

impl AsyncWrite for ChannelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    /// Sends EOF.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}
