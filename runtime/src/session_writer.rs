//! The session writer: one task per connection owns every write to its session channel, so
//! lines, the exit status and the disconnect go out in the order the core decided them.
//!
//! Its queue is never waited on and never handed to another task: a message either joins the
//! queue at once or, for a line the client is too slow to take, is dropped. Memory stays bounded
//! because only lines can pile up (at most [`OUTBOX_CAPACITY`] waiting); the other messages come
//! a few times per connection at most (the session, its exit status, the close).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use russh::server::Handle;
use tokio::sync::mpsc;
use tunnel_core::OutputStream;

/// A message for one connection's session writer.
#[derive(Debug)]
pub enum Outgoing {
    /// The session channel opened; `pty` when the client asked for a terminal (lines end CRLF).
    Session {
        /// The channel.
        channel: russh::ChannelId,
        /// Whether a pty was requested.
        pty: bool,
    },
    /// One line for stdout or stderr.
    Print(OutputStream, String),
    /// The exit status.
    Exit(u32),
    /// End the session and the connection with this disconnect message.
    Close(String),
}

/// Lines that may wait per connection before new ones are dropped (a client that stopped reading
/// must not make the server buffer without bound).
pub const OUTBOX_CAPACITY: usize = 1024;

/// Lines gathered into one packet at most (well under one SSH packet).
const PRINT_BATCH_BYTES: usize = 16 * 1024;

/// The sending end of a connection's queue, kept by the driver.
#[derive(Debug)]
pub struct Outbox {
    queue: mpsc::UnboundedSender<Outgoing>,
    /// Lines queued and not yet taken by the writer.
    lines: Arc<AtomicUsize>,
}

/// The receiving end, owned by the writer.
#[derive(Debug)]
pub struct OutboxReader {
    queue: mpsc::UnboundedReceiver<Outgoing>,
    lines: Arc<AtomicUsize>,
}

/// A new connection's queue.
pub fn outbox() -> (Outbox, OutboxReader) {
    let (tx, rx) = mpsc::unbounded_channel();
    let lines = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            queue: tx,
            lines: Arc::clone(&lines),
        },
        OutboxReader { queue: rx, lines },
    )
}

impl Outbox {
    /// Queues a message behind the ones before it. A line finding [`OUTBOX_CAPACITY`] lines
    /// waiting is dropped; every other message is always queued.
    pub fn send(&self, message: Outgoing) {
        if matches!(message, Outgoing::Print(..))
            && self.lines.fetch_add(1, Ordering::Relaxed) >= OUTBOX_CAPACITY
        {
            self.lines.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // Fails only once the writer has ended with its connection: nobody is left to tell.
        let _ = self.queue.send(message);
    }
}

impl OutboxReader {
    async fn recv(&mut self) -> Option<Outgoing> {
        let message = self.queue.recv().await;
        self.taken(message)
    }

    fn try_recv(&mut self) -> Option<Outgoing> {
        let message = self.queue.try_recv().ok();
        self.taken(message)
    }

    fn taken(&self, message: Option<Outgoing>) -> Option<Outgoing> {
        if let Some(Outgoing::Print(..)) = message {
            self.lines.fetch_sub(1, Ordering::Relaxed);
        }
        message
    }
}

/// Writes one connection's session messages, in order, until the close or the connection's end.
pub async fn run_session_writer(handle: Handle, mut outbox: OutboxReader, close_grace: Duration) {
    let mut session: Option<(russh::ChannelId, bool)> = None;
    let mut next = None;
    loop {
        let message = match next.take() {
            Some(message) => message,
            None => match outbox.recv().await {
                Some(message) => message,
                None => return,
            },
        };
        match message {
            Outgoing::Session { channel, pty } => session = Some((channel, pty)),
            Outgoing::Print(stream, mut line) => {
                // The core prints only to an open session.
                let Some((channel, pty)) = session else {
                    continue;
                };
                let end = if pty { "\r\n" } else { "\n" };
                line.push_str(end);
                // Under load, lines queue up behind this one (one inspect line per request):
                // they go out in one packet, which the client handles in one wake-up.
                tokio::task::yield_now().await;
                while line.len() < PRINT_BATCH_BYTES {
                    match outbox.try_recv() {
                        Some(Outgoing::Print(more_stream, more)) if more_stream == stream => {
                            line.push_str(&more);
                            line.push_str(end);
                        }
                        Some(other) => {
                            next = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                let sent = match stream {
                    OutputStream::Stdout => handle.data(channel, line).await,
                    OutputStream::Stderr => handle.extended_data(channel, 1, line).await,
                };
                if sent.is_err() {
                    // The channel is gone; the close that follows must still go out.
                    session = None;
                }
            }
            Outgoing::Exit(status) => {
                if let Some((channel, _)) = session {
                    let _ = handle.exit_status_request(channel, status).await;
                }
            }
            Outgoing::Close(message) => {
                if let Some((channel, _)) = session {
                    let _ = handle.eof(channel).await;
                    let _ = handle.close(channel).await;
                    // A client that got its exit status hangs up by itself, which keeps OpenSSH
                    // from printing a disconnect notice; one that does not is cut off.
                    let _ = tokio::time::timeout(close_grace, async {
                        while outbox.recv().await.is_some() {}
                    })
                    .await;
                }
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, message, String::new())
                    .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Outgoing {
        Outgoing::Print(OutputStream::Stdout, n.to_string())
    }

    #[test]
    fn lines_past_capacity_are_dropped_and_the_exit_and_close_keep_their_order() {
        let (outbox, mut reader) = outbox();
        for n in 0..OUTBOX_CAPACITY + 10 {
            outbox.send(line(n));
        }
        outbox.send(Outgoing::Exit(1));
        outbox.send(Outgoing::Close("bye".into()));
        let received: Vec<Outgoing> = std::iter::from_fn(|| reader.try_recv()).collect();
        assert_eq!(received.len(), OUTBOX_CAPACITY + 2);
        assert!(
            matches!(&received[OUTBOX_CAPACITY - 1], Outgoing::Print(_, l) if *l == (OUTBOX_CAPACITY - 1).to_string())
        );
        assert!(matches!(received[OUTBOX_CAPACITY], Outgoing::Exit(1)));
        assert!(matches!(&received[OUTBOX_CAPACITY + 1], Outgoing::Close(m) if m == "bye"));
    }

    #[test]
    fn a_line_taken_by_the_writer_frees_its_room() {
        let (outbox, mut reader) = outbox();
        for n in 0..OUTBOX_CAPACITY {
            outbox.send(line(n));
        }
        assert!(reader.try_recv().is_some());
        outbox.send(line(OUTBOX_CAPACITY));
        let rest: Vec<Outgoing> = std::iter::from_fn(|| reader.try_recv()).collect();
        assert_eq!(rest.len(), OUTBOX_CAPACITY);
        assert!(
            matches!(rest.last(), Some(Outgoing::Print(_, l)) if *l == OUTBOX_CAPACITY.to_string())
        );
    }
}
