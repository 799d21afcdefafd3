//! The named segments of this user: list, inspect, delete, and collect
//! what dead creators left half-made.

use crate::error::{Result, SegmentError};
use crate::format::{self, flags, Control, FormatError, Header, PAGE, READY};
use crate::{claim, name, process};
use rustix::fs::{Mode, OFlags};
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

/// An empty file under the prefix younger than this is left alone by `gc`
/// (ndshm no longer leaves empty files under a name: see `claim`; earlier
/// versions did, between their `open` and `flock`).
const GRACE: Duration = Duration::from_secs(2);

fn read_page(f: &File, off: u64) -> Option<Box<[u8; PAGE]>> {
    let mut p = Box::new([0u8; PAGE]);
    f.read_exact_at(&mut p[..], off).ok()?;
    Some(p)
}

/// Why a file under the prefix cannot be inspected.
enum Unreadable {
    /// There is no such file (any more).
    Gone(std::io::Error),
    /// It is no regular file: why.
    Foreign(String),
}

/// Opens a file under the prefix for inspection: never follows a symlink,
/// never blocks (a FIFO), and refuses anything but a regular file.
fn open_regular(path: &std::path::Path) -> std::result::Result<File, Unreadable> {
    let gone_or = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => Unreadable::Gone(e),
        _ => Unreadable::Foreign(e.to_string()),
    };
    let meta = std::fs::symlink_metadata(path).map_err(gone_or)?;
    if meta.file_type().is_symlink() {
        return Err(Unreadable::Foreign("a symbolic link".into()));
    }
    if !meta.file_type().is_file() {
        return Err(Unreadable::Foreign("not a regular file".into()));
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| gone_or(e.into()))?;
    let f = File::from(fd);
    match f.metadata() {
        Ok(m) if m.file_type().is_file() => Ok(f),
        _ => Err(Unreadable::Foreign("not a regular file".into())),
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

/// What the pages of a segment file say.
enum Found {
    Ready,
    NotReady,
    Corrupt(String),
}

/// What one read of a segment file found: what its pages say, their
/// decoded parts, its size.
struct Look {
    found: Found,
    header: Option<Header>,
    control: Option<Control>,
    len: u64,
}

fn look(f: &File) -> Result<Look> {
    let len = f.metadata().map_err(|e| SegmentError::io("fstat", e))?.len();
    let header_page = read_page(f, 0);
    let control_page = if len >= 2 * PAGE as u64 { read_page(f, len - PAGE as u64) } else { None };
    let control = control_page.as_deref().and_then(|p| Control::decode(p).ok());
    let header = header_page.as_deref().and_then(|p| Header::decode(p).ok());
    let found = match (&header_page, &control_page) {
        (Some(h), Some(c)) => match format::validate(len, h, c) {
            Ok((_, c)) if c.flags & flags::ANONYMOUS != 0 => {
                Found::Corrupt("a named file flagged as an anonymous segment".into())
            }
            Ok(_) => Found::Ready,
            Err(FormatError::NotReady) => Found::NotReady,
            Err(e) => Found::Corrupt(e.to_string()),
        },
        _ => Found::Corrupt(FormatError::BadLength { len }.to_string()),
    };
    Ok(Look { found, header, control, len })
}

/// Reads the named segment `seg_name` without mapping it. The status was
/// true at some instant of the call.
pub fn info(seg_name: &str) -> Result<Entry> {
    name::validate(seg_name)?;
    let path = name::path_of(seg_name);
    let f = match open_regular(&path) {
        Ok(f) => f,
        Err(Unreadable::Gone(e)) => return Err(SegmentError::from_named_io(seg_name, "cannot open", e)),
        Err(Unreadable::Foreign(why)) => return Ok(corrupt(seg_name, why, 0)),
    };
    let mut l = look(&f)?;
    let status = if matches!(l.found, Found::Ready) {
        Status::Ready
    } else if claim::creator_at_work(&f) {
        // Locked by its creator: not published yet, whatever the pages said.
        Status::Creating
    } else {
        // Nobody works on it now, so it changes no more: look again, and
        // answer for that moment (it may have been published meanwhile).
        l = look(&f)?;
        if !claim::still_named(&path, &f) {
            return Err(SegmentError::NotFound(seg_name.to_string()));
        }
        match l.found {
            Found::Ready => Status::Ready,
            Found::NotReady => Status::Abandoned,
            Found::Corrupt(why) => Status::Corrupt(why),
        }
    };
    let owner_alive = l.control.as_ref().is_some_and(|c| process::is_alive(c.owner_pid, c.owner_start));
    Ok(Entry { name: seg_name.to_string(), status, header: l.header, control: l.control, file_len: l.len, owner_alive })
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
/// before publishing them, the private files of creators that died before
/// naming them, and empty files under the prefix older than `GRACE`.
/// Complete named segments, and anything a live creator holds, are never
/// removed. Returns the segment names removed.
pub fn gc() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for n in names()? {
        let path = name::path_of(&n);
        let Ok(f) = open_regular(&path) else { continue };
        // A creator at work holds its lock; creators only ever lock files
        // of their own, before these take a name (see `claim`).
        if claim::creator_at_work(&f) {
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
        if abandoned && claim::still_named(&path, &f) && std::fs::remove_file(&path).is_ok() {
            removed.push(n);
        }
    }
    // Private files of creators that died before giving them a name.
    let dir = name::dir();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let file_name = e.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            if claim::private_name_is_orphan(file_name) != Some(true) {
                continue;
            }
            let path = dir.join(file_name);
            if let Ok(f) = open_regular(&path) {
                if !claim::creator_at_work(&f) && claim::still_named(&path, &f) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    Ok(removed)
}
