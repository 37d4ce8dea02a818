//! Bytes a visitor cannot take yet: where they wait, and when a visitor is cut instead.
//!
//! The SSH stack grants channel window when data arrives (russh 0.65), so a channel whose visitor
//! reads slowly must still be drained at once, or every other channel of the connection waits
//! behind it. What is drained waits per visitor, as a reverse proxy buffers a slow client's
//! response (nginx's `proxy_buffering`): in memory up to a small bound, then in a file, up to a
//! cap per visitor and one for the whole server. The adapter keeps the bytes; these are the
//! decisions.

use core::fmt;

/// The bounds on what slow visitors may make the server hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpillLimits {
    memory_per_visitor: u64,
    file_per_visitor: u64,
    file_total: u64,
}

impl Default for SpillLimits {
    /// 256 KiB in memory and 1 GiB on disk per visitor, 8 GiB on disk for the whole server.
    fn default() -> Self {
        Self {
            memory_per_visitor: 256 * 1024,
            file_per_visitor: 1024 * 1024 * 1024,
            file_total: 8 * 1024 * 1024 * 1024,
        }
    }
}

/// Where the next bytes for a visitor go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpillPlace {
    /// Memory: the visitor is nearly keeping up.
    Memory,
    /// The visitor's spill file, after what is there already (order is kept).
    File,
    /// Nowhere: cut this visitor.
    Cut(SpillCut),
}

/// Why a visitor is cut. Display is the operator's log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpillCut {
    /// The visitor's own data waiting on disk would pass its cap.
    VisitorCap(u64),
    /// All visitors' data on disk would pass the server's cap; the largest spiller is cut.
    ServerCap(u64),
    /// The visitor's data could not be written to the spill directory (full, gone, unwritable).
    Storage,
}

impl fmt::Display for SpillCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpillCut::VisitorCap(cap) => write!(
                f,
                "a visitor reading too slowly was cut: its waiting data passed the per-visitor cap of {cap} bytes"
            ),
            SpillCut::ServerCap(cap) => write!(
                f,
                "the largest slow visitor was cut: waiting data of all visitors passed the server's cap of {cap} bytes"
            ),
            SpillCut::Storage => write!(
                f,
                "a slow visitor was cut: its waiting data could not be written to the spill directory"
            ),
        }
    }
}

impl SpillLimits {
    /// Limits with these bounds in bytes: in memory per visitor, on disk per visitor, on disk for
    /// the whole server.
    pub fn new(memory_per_visitor: u64, file_per_visitor: u64, file_total: u64) -> Self {
        Self {
            memory_per_visitor,
            file_per_visitor,
            file_total,
        }
    }

    /// Bytes one visitor may have waiting in memory.
    pub fn memory_per_visitor(&self) -> u64 {
        self.memory_per_visitor
    }

    /// Bytes one visitor may have waiting on disk.
    pub fn file_per_visitor(&self) -> u64 {
        self.file_per_visitor
    }

    /// Bytes all visitors together may have waiting on disk.
    pub fn file_total(&self) -> u64 {
        self.file_total
    }

    /// Where `incoming` more bytes for a visitor go, given what it has waiting in memory and on
    /// disk and what all visitors have on disk. Once a visitor has bytes on disk, new ones follow
    /// them there until the file is drained, so that they reach the visitor in order. When the
    /// server's cap is the one passed, the caller cuts the largest spiller, which may be another
    /// visitor; this one goes on if that frees enough.
    pub fn place(
        &self,
        in_memory: u64,
        in_file: u64,
        server_file: u64,
        incoming: u64,
    ) -> SpillPlace {
        if in_file == 0 && in_memory.saturating_add(incoming) <= self.memory_per_visitor {
            return SpillPlace::Memory;
        }
        if in_file.saturating_add(incoming) > self.file_per_visitor {
            return SpillPlace::Cut(SpillCut::VisitorCap(self.file_per_visitor));
        }
        if server_file.saturating_add(incoming) > self.file_total {
            return SpillPlace::Cut(SpillCut::ServerCap(self.file_total));
        }
        SpillPlace::File
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_then_file_then_cut() {
        let limits = SpillLimits::new(100, 1000, 1500);
        assert_eq!(limits.place(0, 0, 0, 100), SpillPlace::Memory);
        assert_eq!(limits.place(60, 0, 0, 50), SpillPlace::File);
        // Behind bytes on disk, even a small write goes to disk: order.
        assert_eq!(limits.place(0, 10, 10, 1), SpillPlace::File);
        assert_eq!(
            limits.place(100, 990, 990, 11),
            SpillPlace::Cut(SpillCut::VisitorCap(1000))
        );
        assert_eq!(
            limits.place(100, 100, 1450, 100),
            SpillPlace::Cut(SpillCut::ServerCap(1500))
        );
        assert_eq!(
            limits.place(0, u64::MAX, 0, 1),
            SpillPlace::Cut(SpillCut::VisitorCap(1000))
        );
    }

    #[test]
    fn log_lines() {
        assert_eq!(
            SpillCut::VisitorCap(1024).to_string(),
            "a visitor reading too slowly was cut: its waiting data passed the per-visitor cap of 1024 bytes"
        );
        assert_eq!(
            SpillCut::ServerCap(2048).to_string(),
            "the largest slow visitor was cut: waiting data of all visitors passed the server's cap of 2048 bytes"
        );
    }
}
