//! The tcp port range: which ports are held (live, reserved or provisionally promised) and which
//! the host refused to bind.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use crate::command::EndpointKind;
use crate::error::ForwardError;

/// The kind a forward gets when no command says (`ssh -N`, a plain `ssh -R`): remote port 80 or
/// 443 means http, anything else tcp.
pub(crate) fn default_kind(port: u32) -> EndpointKind {
    match port {
        80 | 443 => EndpointKind::Http,
        _ => EndpointKind::Tcp,
    }
}

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

    /// The contract's port rule, the one place it is written: http takes remote port 80, 443 or
    /// 0; tls 443 or 0; tcp 0 (a port from the range) or a port inside the range.
    pub(crate) fn allows(&self, kind: EndpointKind, port: u32) -> bool {
        match kind {
            EndpointKind::Http => matches!(port, 0 | 80 | 443),
            EndpointKind::Tls => matches!(port, 0 | 443),
            EndpointKind::Tcp => port == 0 || self.in_range(port),
        }
    }

    /// Whether `port` is inside the range (so a fixed tcp port).
    pub(crate) fn in_range(&self, port: u32) -> bool {
        u16::try_from(port).is_ok_and(|p| self.range.contains(&p))
    }

    /// Takes any free port, searching round-robin from the cursor.
    pub(crate) fn allocate_tcp_port(&mut self) -> Result<u16, ForwardError> {
        for skip_busy in [true, false] {
            let (lo, hi) = self.bounds();
            let after = (self.cursor..=hi).chain(lo..self.cursor);
            let found = after.into_iter().find(|p| self.is_free(*p, skip_busy));
            if let Some(port) = found {
                self.held.insert(port);
                self.cursor = if port == hi { lo } else { port + 1 };
                return Ok(port);
            }
        }
        Err(ForwardError::PortsExhausted(self.bounds()))
    }

    /// Neither held nor, when `skip_busy`, refused by the host before.
    fn is_free(&self, port: u16, skip_busy: bool) -> bool {
        let busy = skip_busy && self.host_busy.contains(&port);
        !self.held.contains(&port) && !busy
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_rule() {
        let pool = TcpPortPool::new(20000..=20999);
        let allowed = |kind| {
            [0, 22, 80, 443, 8080, 19999, 20000, 20999, 21000]
                .into_iter()
                .filter(|p| pool.allows(kind, *p))
                .collect::<Vec<_>>()
        };
        assert_eq!(allowed(EndpointKind::Http), [0, 80, 443]);
        assert_eq!(allowed(EndpointKind::Tls), [0, 443]);
        assert_eq!(allowed(EndpointKind::Tcp), [0, 20000, 20999]);
        assert_eq!(default_kind(80), EndpointKind::Http);
        assert_eq!(default_kind(443), EndpointKind::Http);
        assert_eq!(default_kind(0), EndpointKind::Tcp);
    }
}
