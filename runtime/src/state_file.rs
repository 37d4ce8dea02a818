//! Writing secrets and certificates into the state dir: whole or not at all, and readable only by
//! the server whatever was there before.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;

/// Replaces `path` with `contents`: written to a fresh temporary file beside it (created with
/// `O_EXCL` and `O_NOFOLLOW`, so a planted file or symlink is never written through), mode 0600,
/// synced, then renamed over `path` and the directory synced, so a crash leaves the old file or
/// the new one, never half of one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{:016x}.tmp",
        rand::thread_rng().gen::<u64>()
    ));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?;
        // The umask cannot widen it, but make the mode exact whatever it was.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The state dir's permissions, if others than its owner may write into it (then anyone in its
/// group, or anyone at all, could swap the host key or the certificate).
pub fn writable_by_others(dir: &Path) -> Option<PathBuf> {
    let mode = fs::metadata(dir).ok()?.permissions().mode();
    (mode & 0o022 != 0).then(|| dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn replaces_whole_with_mode_0600_whatever_was_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key");
        fs::write(&path, "old").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&path, b"new secret").expect("written");
        assert_eq!(fs::read(&path).expect("read"), b"new secret");
        assert_eq!(mode(&path), 0o600);
        // Nothing else is left beside it.
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_symlink_in_its_place_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("elsewhere");
        fs::write(&target, "untouched").expect("write");
        let path = dir.path().join("cert");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        write_atomic(&path, b"cert").expect("written");
        assert_eq!(fs::read(&target).expect("read"), b"untouched");
        assert!(!fs::symlink_metadata(&path)
            .expect("exists")
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_group_writable_dir_is_noticed() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(writable_by_others(dir.path()), None);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o770)).expect("chmod");
        assert!(writable_by_others(dir.path()).is_some());
    }
}
