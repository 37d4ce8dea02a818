//! Every deadline the gateway keeps, in one ordered table.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::ids::ConnId;
use crate::ownership::Address;

/// One kind of deadline.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The connection must authenticate by then.
    Auth(ConnId),
    /// Forwards stop waiting for the exec command.
    Command(ConnId),
    /// A reservation ends.
    Reservation(Address),
}

/// Deadlines ordered by time. Each owner remembers the instant it set, so it can cancel exactly.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    entries: BTreeSet<(Instant, Timer)>,
}

impl TimerTable {
    pub(crate) fn set(&mut self, at: Instant, timer: Timer) {
        self.entries.insert((at, timer));
    }

    pub(crate) fn cancel(&mut self, at: Instant, timer: Timer) {
        self.entries.remove(&(at, timer));
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next()? <= now {
            self.entries.pop_first().map(|(_, t)| t)
        } else {
            None
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.entries.len()
    }
}
