//! Claiming a name for a new named segment, so that no other process ever
//! sees a file under that name that is not a well-formed segment.
//!
//! The creator makes its file under a private name, `ndshm-.new-PID-START-RAND`
//! (never a valid segment name: names cannot start with `.`), locks it
//! (`flock(LOCK_EX)`, held until the segment is published or the creator
//! dies), sizes it and writes its header and control pages, and only then
//! moves it to `ndshm-NAME` with `renameat2(RENAME_NOREPLACE)` (`link` +
//! `unlink` where the file system lacks it), which fails if the name is
//! taken. So a file under a segment's name is, from its first instant, of
//! the right size with valid pages, and either ready or locked by its
//! creator; unlocked and not ready means the creator died.

use crate::process;
use rustix::fs::{FlockOperation, Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What follows `name::PREFIX` in a private name.
const PRIVATE: &str = ".new-";

/// A file under a private name in `dir`, locked by this process.
pub(crate) struct Private {
    pub file: File,
    pub path: PathBuf,
}

/// Creates and locks a new file under a fresh private name in `dir`.
pub(crate) fn private_file(dir: &Path, random: u64) -> io::Result<Private> {
    let (pid, start) = process::current();
    let path = dir.join(format!("{}{PRIVATE}{pid}-{start}-{random:016x}", crate::name::PREFIX));
    let fd = rustix::fs::open(
        &path,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )?;
    let file = File::from(fd);
    // A fresh inode: nobody else can hold its lock, so this never waits.
    if let Err(e) = rustix::fs::flock(&file, FlockOperation::LockExclusive) {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    Ok(Private { file, path })
}

/// Gives the private file at `private` its public name `to`, unless `to` exists
/// (`AlreadyExists`). The private name is gone afterwards either way.
pub(crate) fn move_into_place(private: &Path, to: &Path) -> io::Result<()> {
    let r = match rustix::fs::renameat_with(CWD, private, CWD, to, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            let r = rustix::fs::link(private, to);
            let _ = std::fs::remove_file(private);
            r
        }
        r => r,
    };
    if r.is_err() {
        let _ = std::fs::remove_file(private);
    }
    r.map_err(io::Error::from)
}

/// Whether a creator still holds `f` locked: it is alive and has not
/// published yet. Takes and drops a shared lock, which no other reader's
/// probe conflicts with.
pub(crate) fn creator_at_work(f: &File) -> bool {
    match rustix::fs::flock(f, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = rustix::fs::flock(f, FlockOperation::Unlock);
            false
        }
        Err(e) => e == Errno::WOULDBLOCK,
    }
}

/// Whether `path` still names the open file `f`.
pub(crate) fn still_named(path: &Path, f: &File) -> bool {
    std::fs::symlink_metadata(path)
        .ok()
        .zip(f.metadata().ok())
        .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev())
}

/// Unlinks `path` if it still names the open file `f`: a creator giving up
/// removes its name, never a file another process has put there since.
pub(crate) fn remove_if_ours(path: &Path, f: &File) {
    if still_named(path, f) {
        let _ = std::fs::remove_file(path);
    }
}

/// For a file name in the segment directory: `Some(true)` if it is a
/// private name whose creator is dead (gc may remove it), `Some(false)` if
/// it is a private name of a live creator, `None` if it is no private name.
pub(crate) fn private_name_is_orphan(file_name: &str) -> Option<bool> {
    let rest = file_name.strip_prefix(crate::name::PREFIX)?.strip_prefix(PRIVATE)?;
    let mut parts = rest.splitn(3, '-');
    let pid: u32 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    let random = parts.next()?;
    if random.len() != 16 || !random.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(!process::is_alive(pid, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_names_are_recognised_and_never_valid_segment_names() {
        let (pid, start) = process::current();
        let mine = format!("ndshm-.new-{pid}-{start}-00000000deadbeef");
        assert_eq!(private_name_is_orphan(&mine), Some(false));
        assert!(crate::name::validate(&mine["ndshm-".len()..]).is_err());
        let dead = format!("ndshm-.new-{pid}-{}-00000000deadbeef", start + 1);
        assert_eq!(private_name_is_orphan(&dead), Some(true));
        for other in ["ndshm-x", "ndshm-.new-1-2-3", "ndshm-.new-a-2-00000000deadbeef", "other"] {
            assert_eq!(private_name_is_orphan(other), None, "{other}");
        }
    }

    #[test]
    fn a_taken_name_is_refused_and_the_private_name_goes() {
        let dir = std::env::temp_dir().join(format!("ndshm-claim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let to = dir.join("ndshm-taken");
        std::fs::write(&to, b"x").unwrap();
        let p = private_file(&dir, 1).unwrap();
        let e = move_into_place(&p.path, &to).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(!p.path.exists());
        let q = private_file(&dir, 2).unwrap();
        let free = dir.join("ndshm-free");
        move_into_place(&q.path, &free).unwrap();
        assert!(still_named(&free, &q.file) && !q.path.exists());
        assert!(creator_at_work(&File::open(&free).unwrap()));
        drop(q);
        assert!(!creator_at_work(&File::open(&free).unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
