//! Every deadline the gateway keeps, in one table with one slot per timer (as quinn-proto's
//! `TimerTable`): setting a timer replaces its slot, and cancelling needs only the timer, never
//! the instant it was set for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::ids::ConnId;
use crate::ownership::Address;

/// One deadline: its kind and what it is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The connection must authenticate by then.
    Auth(ConnId),
    /// The connection's forwards stop waiting for the exec command.
    Command(ConnId),
    /// A reservation of an address ends.
    Reservation(Address),
}

#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    slots: BTreeMap<Timer, Instant>,
    /// The same entries ordered by deadline.
    due: BTreeSet<(Instant, Timer)>,
}

impl TimerTable {
    /// Arms `timer` for `at`, replacing any earlier setting of it.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.cancel(&timer);
        self.due.insert((at, timer.clone()));
        self.slots.insert(timer, at);
    }

    /// Disarms `timer`; nothing happens if it is not set.
    pub(crate) fn cancel(&mut self, timer: &Timer) {
        if let Some(at) = self.slots.remove(timer) {
            self.due.remove(&(at, timer.clone()));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Disarms and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next()? > now {
            return None;
        }
        let (_, timer) = self.due.pop_first()?;
        self.slots.remove(&timer);
        Some(timer)
    }

    pub(crate) fn count(&self) -> usize {
        self.slots.len()
    }
}
