//! The named segments of this user: list, inspect, delete, and collect
//! what dead creators left half-made.

use crate::error::{Result, SegmentError};
use crate::format::{self, flags, Control, FormatError, Header, PAGE, READY};
use crate::{name, process};
use rustix::fs::{FlockOperation, Mode, OFlags};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, SystemTime};

/// What state a named segment file is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Complete and valid.
    Ready,
    /// Its creator is still writing it.
    Creating,
    /// Its creator died before finishing it; `gc` removes it.
    Abandoned,
    /// Not a valid segment (overwritten, truncated, or a foreign file).
    Corrupt(String),
}

/// One named segment, as read from its file (without mapping it).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub status: Status,
    /// Present when the header could be read.
    pub header: Option<Header>,
    pub control: Option<Control>,
    /// Size of the file in bytes.
    pub file_len: u64,
    /// Whether the creating process still runs.
    pub owner_alive: bool,
}

/// A file under the prefix younger than this is left alone by `gc` even if
/// empty: its creator may be between `open` and `flock`.
const GRACE: Duration = Duration::from_secs(2);

fn read_page(f: &File, off: u64) -> Option<Box<[u8; PAGE]>> {
    let mut p = Box::new([0u8; PAGE]);
    f.read_exact_at(&mut p[..], off).ok()?;
    Some(p)
}

fn creator_busy(f: &File) -> bool {
    match rustix::fs::flock(f, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = rustix::fs::flock(f, FlockOperation::Unlock);
            false
        }
        Err(_) => true,
    }
}

/// Opens a file under the prefix for inspection: never follows a symlink,
/// never blocks (a FIFO), and refuses anything but a regular file.
fn open_regular(path: &std::path::Path) -> std::result::Result<File, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() {
        return Err("a symbolic link".into());
    }
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| e.to_string())?;
    let f = File::from(fd);
    match f.metadata() {
        Ok(m) if m.file_type().is_file() => Ok(f),
        _ => Err("not a regular file".into()),
    }
}

fn corrupt(seg_name: &str, why: String, file_len: u64) -> Entry {
    Entry {
        name: seg_name.to_string(),
        status: Status::Corrupt(why),
        header: None,
        control: None,
        file_len,
        owner_alive: false,
    }
}

/// Reads the named segment `seg_name` without mapping it.
pub fn info(seg_name: &str) -> Result<Entry> {
    name::validate(seg_name)?;
    let path = name::path_of(seg_name);
    if let Err(e) = std::fs::symlink_metadata(&path) {
        return Err(SegmentError::from_named_io(seg_name, "cannot open", e));
    }
    let f = match open_regular(&path) {
        Ok(f) => f,
        Err(why) => return Ok(corrupt(seg_name, why, 0)),
    };
    let meta = f.metadata().map_err(|e| SegmentError::io("fstat", e))?;
    let len = meta.len();
    let header_page = read_page(&f, 0);
    let control_page = if len >= 2 * PAGE as u64 { read_page(&f, len - PAGE as u64) } else { None };
    let control = control_page.as_deref().and_then(|p| Control::decode(p).ok());
    let header = header_page.as_deref().and_then(|p| Header::decode(p).ok());
    let owner_alive = control.as_ref().is_some_and(|c| process::is_alive(c.owner_pid, c.owner_start));
    let status = match (&header_page, &control_page) {
        (Some(h), Some(c)) => match format::validate(len, h, c) {
            Ok((_, c)) if c.flags & flags::ANONYMOUS != 0 => {
                Status::Corrupt("a named file flagged as an anonymous segment".into())
            }
            Ok(_) => Status::Ready,
            Err(FormatError::NotReady) if creator_busy(&f) => Status::Creating,
            Err(FormatError::NotReady) => Status::Abandoned,
            Err(e) => Status::Corrupt(e.to_string()),
        },
        _ if creator_busy(&f) => Status::Creating,
        _ => Status::Corrupt(FormatError::BadLength { len }.to_string()),
    };
    Ok(Entry { name: seg_name.to_string(), status, header, control, file_len: len, owner_alive })
}

/// Names of every file under the prefix that holds a valid-looking name.
fn names() -> Result<Vec<String>> {
    let dir = name::dir();
    let rd = std::fs::read_dir(&dir).map_err(|e| SegmentError::io(format!("cannot list {}", dir.display()), e))?;
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(name::PREFIX).map(str::to_string))
        .filter(|n| name::validate(n).is_ok())
        .collect();
    out.sort();
    Ok(out)
}

/// Every named segment of the directory (any status), sorted by name.
pub fn list() -> Result<Vec<Entry>> {
    Ok(names()?
        .iter()
        .filter_map(|n| match info(n) {
            Ok(e) => Some(e),
            // Gone between listing and reading: not there any more.
            Err(SegmentError::NotFound(_)) => None,
            Err(e) => Some(corrupt(n, e.to_string(), 0)),
        })
        .collect())
}

/// Whether a segment (complete or not) has this name.
pub fn exists(seg_name: &str) -> Result<bool> {
    name::validate(seg_name)?;
    Ok(std::fs::symlink_metadata(name::path_of(seg_name)).is_ok())
}

/// Removes the name. Processes that mapped it keep their mappings; the
/// memory is freed when the last one lets go.
pub fn delete(seg_name: &str) -> Result<()> {
    name::validate(seg_name)?;
    std::fs::remove_file(name::path_of(seg_name)).map_err(|e| SegmentError::from_named_io(seg_name, "cannot delete", e))
}

/// Removes what dead processes left behind: segments whose creator died
/// before publishing them (and empty files under the prefix from a creator
/// killed right after `open`). Complete named segments are never removed:
/// they live until deleted. Returns the names removed.
pub fn gc() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for n in names()? {
        let path = name::path_of(&n);
        let Ok(f) = open_regular(&path) else { continue };
        // Holding the exclusive lock means no creator is at work, and none
        // can start on this file while we look.
        if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        let Ok(meta) = f.metadata() else { continue };
        let len = meta.len();
        let abandoned = if len >= 2 * PAGE as u64 {
            read_page(&f, len - PAGE as u64)
                .and_then(|p| Control::decode(&p).ok())
                .is_some_and(|c| c.ready != READY && !process::is_alive(c.owner_pid, c.owner_start))
        } else {
            let age = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|now| now.as_secs() as i64 - meta.ctime())
                .unwrap_or(0);
            len == 0 && age >= GRACE.as_secs() as i64
        };
        // Unlink only if the name still points at the file we checked.
        let same = std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev());
        if abandoned && same && std::fs::remove_file(&path).is_ok() {
            removed.push(n);
        }
    }
    Ok(removed)
}
