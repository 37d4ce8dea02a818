//! Re-reads the `authorized_keys` file when it changes, and at once on request (SIGHUP), and
//! hands the new list to the core, which decides who loses their connection.
//!
//! The file is polled (its metadata, every `--authorized-keys-poll`) rather than watched with inotify:
//! one `stat` a second costs nothing, needs no dependency, and also sees a file replaced by
//! `mv` or edited through a symlink. A change is read once the metadata has stayed the same for
//! one poll, so an editor still writing the file is not read half way. A file that cannot be
//! read or parsed, or that has an option the server refuses, leaves the list in force as it was
//! (never fail open, and never lock everyone out over a typo): one error line names the file and
//! the line. A deleted file is the same: the old list stays until a file is there again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tunnel_core::Input;

use crate::driver::Driver;
use crate::keys::load_authorized_keys;
use crate::net::Net;

/// What identifies one version of the file: a rewrite changes the times or size, a replacement
/// (`mv`) the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(Stamp {
        device: meta.dev(),
        inode: meta.ino(),
        size: meta.len(),
        modified: meta.modified().ok(),
        changed: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// Watches `path` every `poll` (never, with `None`) for as long as the driver lives;
/// `reload_now` (notified on SIGHUP) re-reads it at once, changed or not. Call it right after the
/// file was read for the start-up list.
pub async fn watch<N: Net>(
    driver: Arc<Driver<N>>,
    path: PathBuf,
    poll: Option<Duration>,
    reload_now: Arc<Notify>,
) {
    // The version in force, and one seen changed but not yet read (read when it holds still).
    let mut loaded = stamp(&path).ok();
    let mut pending: Option<Stamp> = None;
    let mut missing_reported = false;
    let mut ticks = poll.map(tokio::time::interval);
    if let Some(ticks) = &mut ticks {
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let tick = async {
            match &mut ticks {
                Some(ticks) => drop(ticks.tick().await),
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            () = tick => false,
            () = reload_now.notified() => true,
        };
        let now = match stamp(&path) {
            Ok(now) => now,
            Err(error) => {
                if forced || !missing_reported {
                    tracing::error!(
                        "cannot read authorized keys file {}: {error}; the keys read before stay in force",
                        path.display()
                    );
                    missing_reported = true;
                }
                pending = None;
                continue;
            }
        };
        missing_reported = false;
        let changed = loaded != Some(now);
        // A change is read on the poll after the one that saw it, if it held still.
        let held_still = changed && pending == Some(now);
        if !forced && !held_still {
            pending = changed.then_some(now);
            continue;
        }
        pending = None;
        // Whatever the outcome, this version has had its answer: a broken file is reported once,
        // and read again when it changes.
        loaded = Some(now);
        reload(&driver, &path).await;
    }
}

/// Reads and parses the file and gives the core the new list, or logs why the old one stays.
async fn reload<N: Net>(driver: &Arc<Driver<N>>, path: &Path) {
    let list =
        load_authorized_keys(path).and_then(|keys| keys.key_list(path).map(|list| (list, keys)));
    match list {
        Ok((keys, read)) => {
            driver.set_key_comments(&read);
            tracing::info!(
                "re-read authorized keys file {}: {} keys and certificate authorities",
                path.display(),
                keys.len()
            );
            driver.submit(Input::AuthorizedKeysChanged { keys }).await;
        }
        // The error names the file and, for a bad line, the line.
        Err(error) => tracing::error!("{error}; the keys read before stay in force"),
    }
}
