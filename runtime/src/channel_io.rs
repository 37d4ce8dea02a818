//! A `forwarded-tcpip` channel as an owned byte stream that never closes the channel by being
//! dropped.
//!
//! russh's own `ChannelStream` closes its channel on drop. A channel the server closes first leaks
//! in russh 0.65: the client's answering CHANNEL_CLOSE finds the channel already forgotten and the
//! entry in the session's channel map is never removed (about 3.6 KiB per visitor connection until
//! the SSH connection ends). After a clean end both sides have sent EOF, and OpenSSH then closes
//! the channel itself, which russh handles in full; so the stream only sends EOF, and the caller
//! closes explicitly when the exchange broke off (see [`split`]).
//!
//! The read side never waits on the visitor: russh 0.65 grants window when data arrives and its
//! session loop blocks on a channel whose queue is full, so one slow visitor would stall every
//! channel of its SSH connection, keepalives included. A drain task takes each channel's data
//! from russh at once and keeps it in the visitor's spill buffer ([`crate::spill`]) until the
//! visitor reads it; the write side keeps OpenSSH's honest window as its backpressure.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::metrics::EndpointStats;
use crate::spill::{SpillReader, SpillWriter, Spills};

/// The channel's data as `AsyncRead + AsyncWrite`. Dropping it sends nothing, and stops its
/// drain task.
pub struct ChannelIo {
    reader: SpillReader,
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
    /// Dropped with the stream, which tells the drain task to stop.
    _reading: oneshot::Sender<()>,
    /// The endpoint whose bytes it counts, if any.
    counted: Option<Arc<EndpointStats>>,
}

impl ChannelIo {
    /// Counts what goes through into an endpoint's numbers: what is written is from the visitor
    /// (`in`), what is read goes back to it (`out`).
    pub fn counted(mut self, stats: Option<Arc<EndpointStats>>) -> Self {
        self.counted = stats;
        self
    }
}

/// Splits a channel into its stream and the half that can still close it, and starts draining
/// the channel into a spill buffer of `spills`.
pub fn split(channel: Channel<Msg>, spills: &Arc<Spills>) -> (ChannelIo, ChannelWriteHalf<Msg>) {
    let (read, write) = channel.split();
    let (spill, reader) = spills.buffer();
    let (reading, stopped) = oneshot::channel();
    tokio::spawn(drain(read, spill, stopped));
    let io = ChannelIo {
        reader,
        writer: Box::pin(write.make_writer()),
        _reading: reading,
        counted: None,
    };
    (io, write)
}

/// Takes everything the channel delivers as soon as it arrives, until EOF, the channel's end,
/// the visitor's side going away, or a cut.
async fn drain(
    mut channel: ChannelReadHalf,
    spill: SpillWriter,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let message = tokio::select! {
            message = channel.wait() => message,
            _ = &mut stopped => return,
        };
        match message {
            Some(ChannelMsg::Data { data }) => {
                if !data.is_empty() && spill.push(data).is_err() {
                    return;
                }
            }
            // EOF (RFC 4254 §5.3) or the channel gone: the stream ends (dropping `spill` tells
            // the reader); what the client sends after EOF is not data.
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return,
            // Window adjustments, extended data and requests carry no stream bytes.
            Some(_) => {}
        }
    }
}

impl AsyncRead for ChannelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.reader).poll_read(cx, buf);
        if let Some(stats) = &self.counted {
            stats.add_out((buf.filled().len() - before) as u64);
        }
        read
    }
}

impl AsyncWrite for ChannelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = self.writer.as_mut().poll_write(cx, buf);
        if let (Some(stats), Poll::Ready(Ok(n))) = (&self.counted, &written) {
            stats.add_in(*n as u64);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    /// Sends EOF.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}
