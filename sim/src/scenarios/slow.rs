//! What scenarios 7 and 8 share: a visitor that reads a download slowly, neighbours that must be
//! served in their normal time meanwhile, and the time bound that "normal" means.

use std::io;
use std::ops::Range;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha20Rng;

use super::{SharedBoard, Target};
use crate::client::Kind;
use crate::service::{fnv1a, pattern_byte};
use crate::visitor::{echo, field, http_request, EchoOutcome, HttpOutcome, TcpVisitor};
use crate::world::wait_until;

/// The most a neighbour sends: one or two SSH packets, so its transfer time is a few latencies,
/// not bandwidth.
pub const NEIGHBOUR_BYTES: usize = 20_000;

/// How long one short exchange through the gateway may take. A visitor's TCP connect, the channel
/// open to the client, the owner line, the data there and back, and the two half-closes are about
/// six round trips of the two-hop path (visitor to gateway to client), each at most
/// `4 × max_latency`; twice that, plus 250 ms for turmoil's 1 ms steps and the hosts' turns
/// (which dominate at the shortest latencies). Over 100 seeds of scenarios 7 and 8 the slowest
/// exchange took 7 × `max_latency` (42 ms at 6 ms), against tens of seconds or for good while
/// russh's session loop waited on a slow visitor's channel.
pub fn exchange_bound(max_latency: Duration) -> Duration {
    12 * 4 * max_latency + Duration::from_millis(250)
}

/// How long a reader with nothing to read waits before it asks whether its connection is still
/// there. turmoil 0.7.2 can lose a FIN: the FIN takes no flow-control credit, so when it reaches
/// a receive queue still full of unread segments (as a slow reader's is) it is parked in the
/// reorder buffer, and only the arrival of a later segment would deliver it. A real client learns
/// of a closed connection from its next write (the peer answers RST), and so does this one.
pub const QUIET: Duration = Duration::from_secs(5);

/// How a slow read of a download ended.
#[derive(Debug)]
pub enum SlowRead {
    /// Every byte, in order, then EOF or (the FIN lost, see [`QUIET`]) nothing more.
    Complete { eof_seen: bool },
    /// The stream ended (EOF, a reset, an error) after `received` intact bytes of `length`.
    Ended { received: u64, how: String },
}

/// Asks the tcp service behind `visitor` for download `id` of `length` bytes and reads it at the
/// pace `sizes` and `pauses_ms` allow, checking every byte at its offset; `progress` hears the
/// running count. A wrong or extra byte, or a stall (nothing for [`QUIET`], then nothing for as
/// long again after a one-byte write to the gateway) is an error; an early end is a
/// [`SlowRead::Ended`], for the scenario to judge.
pub async fn read_slowly(
    visitor: &mut TcpVisitor,
    id: u64,
    length: u64,
    rng: &mut ChaCha20Rng,
    sizes: Range<usize>,
    pauses_ms: Range<u64>,
    mut progress: impl FnMut(u64),
) -> Result<SlowRead, String> {
    visitor
        .write(format!("download {id} {length}\n").as_bytes())
        .await
        .map_err(|e| format!("download {id} request: {e}"))?;
    let mut received = 0u64;
    let mut asked = false;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(pauses_ms.clone()))).await;
        let bytes = match visitor
            .read_some_within(rng.gen_range(sizes.clone()), QUIET)
            .await
        {
            Ok(bytes) if bytes.is_empty() && received == length => {
                return Ok(SlowRead::Complete { eof_seen: true })
            }
            Ok(bytes) if bytes.is_empty() => {
                return Ok(SlowRead::Ended {
                    received,
                    how: "EOF".to_owned(),
                })
            }
            Ok(bytes) => bytes,
            // Everything came and nothing more does: the download is whole, its FIN lost.
            Err(e) if e.kind() == io::ErrorKind::TimedOut && received == length => {
                return Ok(SlowRead::Complete { eof_seen: false })
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut && !asked => {
                // The service ignores what follows its command line: the byte is harmless to a
                // live stream, and a closed one answers it with RST.
                asked = true;
                if let Err(e) = visitor.write(b"\n").await {
                    return Ok(SlowRead::Ended {
                        received,
                        how: format!("write after {QUIET:?} of quiet: {e}"),
                    });
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(format!(
                    "download {id} stalled at {received} of {length}: nothing for {:?}",
                    2 * QUIET
                ))
            }
            Err(e) => {
                let after = if asked { " after a write" } else { "" };
                return Ok(SlowRead::Ended {
                    received,
                    how: format!("{e}{after}"),
                });
            }
        };
        for (i, b) in bytes.iter().enumerate() {
            let at = received + i as u64;
            if at >= length || *b != pattern_byte(id, at) {
                return Err(format!("download {id} of {length} corrupt at {at}"));
            }
        }
        received += bytes.len() as u64;
        progress(received);
    }
}

/// Where the slow visitor is, for its neighbours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowState {
    #[default]
    NotYet,
    /// Its download has been asked for and it is reading.
    Reading,
    /// Its download ended, complete or cut.
    Done,
}

/// What the neighbours saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct NeighbourFigures {
    pub exchanges: usize,
    /// Exchanges started while the slow visitor was reading.
    pub during_slow: usize,
    pub slowest: Duration,
}

/// A neighbour: once the slow visitor reads, visits `target` again and again (pauses drawn up to
/// `max_pause_ms`) until the slow visitor is done, then `after` more times. Every exchange must
/// be answered by its owner, intact, within `bound`; the first failure is recorded on the board.
pub async fn neighbour(
    board: SharedBoard,
    rng: &mut ChaCha20Rng,
    target: Target,
    first_id: u64,
    bound: Duration,
    max_pause_ms: u64,
    after: usize,
) -> Result<(), String> {
    let started = wait_until(Duration::from_secs(120), || {
        board.lock().unwrap().slow != SlowState::NotYet
    })
    .await;
    if !started {
        return Err("the slow visitor never started".to_owned());
    }
    let mut left_after = after;
    for round in 0.. {
        if board.lock().unwrap().slow == SlowState::Done {
            if left_after == 0 {
                break;
            }
            left_after -= 1;
        }
        tokio::time::sleep(super::pause(rng, max_pause_ms)).await;
        let id = first_id + round;
        let during_slow = board.lock().unwrap().slow == SlowState::Reading;
        let started = tokio::time::Instant::now();
        let outcome = exchange(rng, &target, id).await;
        let took = started.elapsed();
        let failure = match outcome {
            Ok(()) if took <= bound => None,
            Ok(()) => Some(format!(
                "{} (owner {}) exchange {id}: served in {took:?}, above the bound {bound:?}",
                target.url, target.owner
            )),
            Err(e) => Some(format!("{e} after {took:?}")),
        };
        let mut b = board.lock().unwrap();
        b.neighbours.exchanges += 1;
        if during_slow {
            b.neighbours.during_slow += 1;
        }
        b.neighbours.slowest = b.neighbours.slowest.max(took);
        if let Some(failure) = failure {
            b.failures.push(failure);
            break;
        }
    }
    board.lock().unwrap().visitors_done += 1;
    Ok(())
}

/// One short exchange with `target`: a tcp echo of up to [`NEIGHBOUR_BYTES`], or an http POST of
/// as much, answered by the owner with the body's hash.
async fn exchange(rng: &mut ChaCha20Rng, target: &Target, id: u64) -> Result<(), String> {
    let len = rng.gen_range(1..NEIGHBOUR_BYTES);
    match target.kind {
        Kind::Tcp => match echo(target.port(), id, len, &[]).await {
            EchoOutcome::Intact { owner } if owner == target.owner => Ok(()),
            other => Err(format!(
                "echo {id} on {} (owner {}): {other:?}",
                target.url, target.owner
            )),
        },
        Kind::Http => {
            let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let outcome = http_request(&target.host(), "POST", &format!("/n{id}"), &body).await;
            let hash = format!("{:016x}", fnv1a(&body));
            match &outcome {
                HttpOutcome::Response { body: b, .. }
                    if outcome.owner() == Some(target.owner.as_str())
                        && field(b, "hash") == Some(hash.as_str()) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "POST {id} to {} (owner {}): {outcome:?}",
                    target.url, target.owner
                )),
            }
        }
    }
}
