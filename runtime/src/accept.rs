//! Accepting on a listener when the host runs short (out of descriptors, of memory): the error
//! comes back at once for as long as the shortage lasts, so retrying at once burns a core and
//! floods the log. Back off instead, and say so at most once a second per listener.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

use crate::net::{Accepted, Listener};

/// The first wait after a failed accept, doubled after each further one.
const FIRST_DELAY: Duration = Duration::from_millis(5);
/// The longest wait: a shortage that ends is noticed within it.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// At most one log line per listener in this long.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// One listener's state of failing accepts.
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    delay: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    /// For the listener named `what` in the log.
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            delay: Duration::ZERO,
            last_log: None,
            unlogged: 0,
        }
    }

    /// An accept worked: the next failure starts from the first delay again.
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// An accept failed at `now`: how long to wait before the next one. Logs the error if no
    /// line was written for this listener in the last second, with how many were not.
    pub fn failed(&mut self, error: &io::Error, now: Instant) -> Duration {
        self.delay = (self.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
        let due = self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= LOG_EVERY);
        if due {
            tracing::warn!(
                listener = self.what,
                %error,
                more = self.unlogged,
                "accept failed; retrying in {:?}",
                self.delay
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        self.delay
    }
}

/// The next connection on `listener`, waiting out failures as `backoff` says.
pub async fn accept<L: Listener>(listener: &L, backoff: &mut AcceptBackoff) -> Accepted<L::Stream> {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                return accepted;
            }
            Err(error) => {
                let wait = backoff.failed(&error, Instant::now());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, so that a busy server runs
/// out of descriptors as late as the host allows; returns the limit in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_to_a_second_and_log_at_most_once_a_second() {
        let start = Instant::now();
        let error = io::Error::from_raw_os_error(24); // EMFILE
        let mut backoff = AcceptBackoff::new("http");
        let mut at = start;
        let mut delays = Vec::new();
        let mut unlogged = Vec::new();
        for _ in 0..10 {
            let delay = backoff.failed(&error, at);
            delays.push(delay.as_millis());
            unlogged.push(backoff.unlogged);
            at += delay;
        }
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        // A line for the first failure, none until a second has passed (the 9th, at 1275 ms,
        // with the 7 not logged), then one a second.
        assert_eq!(unlogged, [0, 1, 2, 3, 4, 5, 6, 7, 0, 0]);
        backoff.succeeded();
        assert_eq!(
            backoff.failed(&error, at).as_millis(),
            5,
            "a success starts over"
        );
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        let limit = raise_open_files_limit().expect("raising to the hard limit is allowed");
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        assert_eq!(Some(limit), hard.or(Some(u64::MAX)));
    }
}
