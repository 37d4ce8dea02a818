//! The tcp port range: which ports are held (live, reserved or provisionally promised) and which
//! the host refused to bind.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use crate::error::ForwardError;

#[derive(Debug)]
pub(crate) struct TcpPortPool {
    range: RangeInclusive<u16>,
    held: BTreeSet<u16>,
    /// Ports the host refused to bind; skipped until nothing else is free.
    host_busy: BTreeSet<u16>,
    /// Where the next search starts, so a freed port is not handed out again at once.
    cursor: u16,
}

impl TcpPortPool {
    pub(crate) fn new(range: RangeInclusive<u16>) -> Self {
        let cursor = *range.start();
        Self {
            range,
            held: BTreeSet::new(),
            host_busy: BTreeSet::new(),
            cursor,
        }
    }

    pub(crate) fn bounds(&self) -> (u16, u16) {
        (*self.range.start(), *self.range.end())
    }

    pub(crate) fn contains(&self, port: u32) -> bool {
        u16::try_from(port).is_ok_and(|p| self.range.contains(&p))
    }

    /// Takes any free port, searching round-robin from the cursor.
    pub(crate) fn allocate_tcp_port(&mut self) -> Result<u16, ForwardError> {
        for skip_busy in [true, false] {
            let (lo, hi) = self.bounds();
            let after = (self.cursor..=hi).chain(lo..self.cursor);
            let found = after
                .into_iter()
                .find(|p| !self.held.contains(p) && !(skip_busy && self.host_busy.contains(p)));
            if let Some(port) = found {
                self.held.insert(port);
                self.cursor = if port == hi { lo } else { port + 1 };
                return Ok(port);
            }
        }
        Err(ForwardError::PortsExhausted(self.bounds()))
    }

    /// Takes a specific port, which must be in range and free.
    pub(crate) fn take(&mut self, port: u16) -> bool {
        self.range.contains(&port) && self.held.insert(port)
    }

    pub(crate) fn release(&mut self, port: u16) {
        self.held.remove(&port);
    }

    pub(crate) fn mark_host_busy(&mut self, port: u16) {
        self.host_busy.insert(port);
    }

    pub(crate) fn mark_bound(&mut self, port: u16) {
        self.host_busy.remove(&port);
    }

    pub(crate) fn held_count(&self) -> usize {
        self.held.len()
    }
}
