//! The session writer: one task per connection owns every write to its session channel, so
//! lines, the exit status and the disconnect go out in the order the core decided them.

use std::time::Duration;

use russh::server::Handle;
use tokio::sync::mpsc;
use tunnel_core::OutputStream;

/// A message for one connection's outbox task, which owns the writes to its session channel.
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

/// Room for lines per connection before new ones are dropped (a client that stopped reading must
/// not make the server buffer without bound).
pub const OUTBOX_CAPACITY: usize = 1024;

/// Queues a message; lines are dropped when a client stops reading, the rest always arrive.
pub(crate) fn deliver(outbox: mpsc::Sender<Outgoing>, message: Outgoing) {
    match outbox.try_send(message) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(Outgoing::Print(..))) => {}
        Err(mpsc::error::TrySendError::Full(message)) => {
            tokio::spawn(async move {
                let _ = outbox.send(message).await;
            });
        }
    }
}

/// Lines gathered into one packet at most (well under one SSH packet).
const PRINT_BATCH_BYTES: usize = 16 * 1024;

/// Owns the writes to one connection's session channel, in order.
pub async fn run_outbox(
    handle: Handle,
    mut outbox: mpsc::Receiver<Outgoing>,
    close_grace: Duration,
) {
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
                        Ok(Outgoing::Print(more_stream, more)) if more_stream == stream => {
                            line.push_str(&more);
                            line.push_str(end);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let sent = match stream {
                    OutputStream::Stdout => handle.data(channel, line).await,
                    OutputStream::Stderr => handle.extended_data(channel, 1, line).await,
                };
                if sent.is_err() {
                    return;
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
