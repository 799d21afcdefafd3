//! Receiving handles: from a [`Handle`] (or just its segment reference) to
//! this process's mapping of the segment, checked before any access.
//!
//! A process maps each segment once and reuses the mapping (`registry`);
//! a file opened here is mapped and validated by `attach`; a received
//! segment stays mapped a moment after its last use (`cache`); an
//! anonymous segment whose sender has exited is fetched from the sender's
//! keeper (`keeper`). Each attach of an anonymous handle settles one
//! pending handoff of its sender.

use crate::attach::{attach_file, is_not_regular};
use crate::handle::{Handle, HandleError, SegmentRef};
use crate::segment::Segment;
use crate::{cache, host, keeper, SegmentError};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::io;

/// The segment a handle names and the view's item size, after checking
/// that the handle was made on this host and that every byte of its view
/// lies inside the segment's data.
pub fn receive(h: &Handle) -> Result<(Segment, usize), HandleError> {
    check_host(&h.host)?;
    let seg = attach(&h.segment, h.readonly)?;
    let itemsize = h.view.check(seg.data_len() as u64, seg.header().dtype.itemsize())?;
    Ok((seg, itemsize))
}

/// Refuses a handle made on another host.
pub fn check_host(made_on: &host::Host) -> Result<(), HandleError> {
    let here = host::this();
    if made_on != here {
        return Err(HandleError::Foreign { host: made_on.label(), here: here.label() });
    }
    Ok(())
}

/// Maps the segment `r` names, reusing this process's mapping of it.
/// Kept mapped a moment after its last use (see `cache`).
pub fn attach(r: &SegmentRef, readonly: bool) -> Result<Segment, HandleError> {
    let seg = match r {
        SegmentRef::Named { name, id } => attach_named(name, *id, readonly)?,
        SegmentRef::Anonymous { pid, fd, id } => attach_anonymous(*pid, *fd, *id, readonly)?,
    };
    cache::keep(&seg);
    Ok(seg)
}

fn attach_named(name: &str, id: u64, readonly: bool) -> Result<Segment, HandleError> {
    if let Some(seg) = Segment::lookup(id, readonly) {
        return Ok(seg);
    }
    let seg = Segment::attach(name, readonly)?;
    if seg.id() != id {
        return Err(HandleError::Replaced(name.to_string()));
    }
    Ok(seg)
}

fn attach_anonymous(pid: u32, fd: i32, id: u64, readonly: bool) -> Result<Segment, HandleError> {
    if let Some(seg) = Segment::lookup(id, readonly) {
        seg.note_received();
        return Ok(seg);
    }
    if fd < 0 || pid == 0 {
        return Err(HandleError::NotASegment { pid, fd });
    }
    let (file, writable) = match open_proc_fd(pid, fd, readonly) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match keeper::fetch(id) {
            Some(f) => {
                let w = can_write(&f);
                (f, w)
            }
            None => {
                let why = if pid == std::process::id() {
                    "this process no longer holds it".to_string()
                } else if std::fs::metadata(format!("/proc/{pid}")).is_ok() {
                    format!("process {pid} no longer holds it (it dropped the array before this process attached it)")
                } else {
                    format!("process {pid} exited or was killed before this process attached it")
                };
                return Err(HandleError::Gone { pid, why });
            }
        },
        Err(e)
            if e.kind() == io::ErrorKind::InvalidInput
                || e.raw_os_error().is_some_and(|c| is_not_regular(rustix::io::Errno::from_raw_os_error(c))) =>
        {
            return Err(HandleError::NotASegment { pid, fd })
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(HandleError::Permission { pid, why: e.to_string() })
        }
        Err(e) => {
            return Err(SegmentError::Io { context: format!("open array held by process {pid}"), source: e }.into())
        }
    };
    let seg = attach_file(file, writable, readonly, None).map_err(|(file, e)| {
        // Looked at before opening, but the fd may have changed since.
        if !file.metadata().is_ok_and(|m| m.file_type().is_file()) {
            return HandleError::NotASegment { pid, fd };
        }
        match e {
            SegmentError::Invalid { source, .. } => {
                SegmentError::Invalid { what: format!("fd {fd} of process {pid}"), source }.into()
            }
            e => e.into(),
        }
    })?;
    if seg.id() != id {
        return Err(HandleError::OtherSegment { pid, fd, found: seg.id(), expected: id });
    }
    seg.note_received();
    Ok(seg)
}

/// Opens `/proc/PID/fd/FD`: the file, and whether it was opened for writing.
fn open_proc_fd(pid: u32, fd: i32, readonly: bool) -> io::Result<(File, bool)> {
    let path = format!("/proc/{pid}/fd/{fd}");
    // Look before opening: opening some files (devices) has effects, and a
    // forged handle may name any fd of the process.
    if !std::fs::metadata(&path)?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    // O_NONBLOCK: a forged handle naming a FIFO must not block the open.
    let base = OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let (fd, writable) = match rustix::fs::open(&path, base | OFlags::RDWR, Mode::empty()) {
        Ok(fd) => (fd, true),
        Err(e) if readonly && e == rustix::io::Errno::ACCESS => (rustix::fs::open(&path, base, Mode::empty())?, false),
        Err(e) => return Err(e.into()),
    };
    Ok((File::from(fd), writable))
}

fn can_write(file: &File) -> bool {
    rustix::fs::fcntl_getfl(file).is_ok_and(|f| f.contains(OFlags::RDWR) || f.contains(OFlags::WRONLY))
}
