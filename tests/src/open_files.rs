//! Files a process holds open, read from `/proc/PID/fd`: how a test sees unlinked files (such as
//! spill files made with `O_TMPFILE`) that no directory listing shows.

use std::fs;
use std::path::Path;

/// One open descriptor of a file that has no name any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedFile {
    pub fd: u32,
    /// The link as the kernel shows it, e.g. `/state/spill/#1234 (deleted)` for an `O_TMPFILE`.
    pub link: String,
    /// The file's size now (`stat` through the descriptor's link reaches the open file).
    pub len: u64,
}

/// The descriptors of process `pid` open on unlinked files that lived directly under `dir`
/// (give it canonical: the kernel shows resolved paths). A descriptor that closes while being
/// read is skipped.
pub fn deleted_files_under(pid: u32, dir: &Path) -> Vec<DeletedFile> {
    let fds = format!("/proc/{pid}/fd");
    let entries =
        fs::read_dir(&fds).unwrap_or_else(|e| panic!("list {fds} (is {pid} alive?): {e}"));
    let prefix = format!("{}/", dir.display());
    let mut found: Vec<DeletedFile> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let link = fs::read_link(entry.path()).ok()?;
            let link = link.to_str()?.to_owned();
            let name = link.strip_prefix(&prefix)?.strip_suffix(" (deleted)")?;
            if name.contains('/') {
                return None;
            }
            let len = fs::metadata(entry.path()).ok()?.len();
            Some(DeletedFile { fd, link, len })
        })
        .collect();
    found.sort_by_key(|f| f.fd);
    found
}
