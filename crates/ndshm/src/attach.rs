//! Attaching a segment: mapping an open segment file once it is validated
//! (what `receive` does for an anonymous one, too), and attaching by name,
//! which waits while another process is still creating the name.

use crate::error::{no_room_or_io, AttachError, Result, SegmentError};
use crate::format::{self, flags, Control, FormatError, PAGE};
use crate::segment::{self, Info, Parts, Segment};
use crate::{claim, headers, huge, name, registry};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `attach` waits for a named segment that another process is
/// still creating.
const CREATION_WAIT: Duration = Duration::from_secs(10);

impl Segment {
    /// Attaches the named segment `seg_name`, read-only if asked.
    pub fn attach(seg_name: &str, readonly: bool) -> Result<Segment, AttachError> {
        name::validate(seg_name).map_err(|e| match e {
            SegmentError::InvalidName { name, why } => AttachError::InvalidName { name, why },
            e => attach_fault(seg_name, e),
        })?;
        let path = name::path_of(seg_name);
        let deadline = Instant::now() + CREATION_WAIT;
        let mut pause = Duration::from_micros(200);
        loop {
            let (file, writable) = open_named(&path, seg_name, readonly)?;
            let file = match attach_file(file, writable, readonly, Some(seg_name)) {
                Ok(seg) => return Ok(seg),
                Err((file, _)) if !file.metadata().is_ok_and(|m| m.file_type().is_file()) => {
                    return Err(AttachError::NotAFile { name: seg_name.into(), why: "not a regular file" })
                }
                Err((file, _)) if claim::creator_at_work(&file) => file,
                // No creator holds it (any more), so it changes no more: what
                // it is now is the answer, not what it was a moment ago.
                Err((file, _)) => {
                    return match attach_file(file, writable, readonly, Some(seg_name)) {
                        Ok(seg) => Ok(seg),
                        Err((file, _)) if !claim::still_named(&path, &file) => {
                            Err(AttachError::NotFound(seg_name.to_string()))
                        }
                        Err((_, e)) => Err(attach_fault(seg_name, e)),
                    };
                }
            };
            drop(file);
            if Instant::now() >= deadline {
                return Err(AttachError::Busy(seg_name.to_string()));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// Maps and validates an open file (opened for writing if `writable`);
/// on failure gives the file back.
pub(crate) fn attach_file(
    file: File,
    writable: bool,
    readonly: bool,
    seg_name: Option<&str>,
) -> std::result::Result<Segment, (File, SegmentError)> {
    let what = || match seg_name {
        Some(n) => format!("segment {n:?}"),
        None => "anonymous segment".into(),
    };
    let (decoded, control, len) = match validate_file(&file) {
        Ok(v) => v,
        Err(source) => return Err((file, SegmentError::Invalid { what: what(), source })),
    };
    let anonymous = control.flags & flags::ANONYMOUS != 0;
    if anonymous != seg_name.is_none() {
        let e = SegmentError::Mismatch(format!("{} has the wrong kind (named vs anonymous)", what()));
        return Err((file, e));
    }
    if let Some(seg) = registry::get(control.id, readonly) {
        return Ok(seg);
    }
    let map = match segment::map(&file, len, writable) {
        Ok(m) => m,
        Err(e) => return Err((file, no_room_or_io(e, &format!("map {}", what())))),
    };
    if huge::wanted_for(len as usize, seg_name.map(|_| name::dir()).as_deref()) {
        // SAFETY: the whole mapping.
        unsafe { huge::advise(map.as_mut_ptr(), len as usize) };
    }
    let info = Info {
        id: control.id,
        name: seg_name.map(str::to_string),
        descr: decoded.descr.clone(),
        header: decoded.header.clone(),
        data_len: control.data_len,
        owner_pid: control.owner_pid,
        owner_start: control.owner_start,
        created_ns: control.created_ns,
    };
    let parts = Parts {
        map,
        // A named segment needs no open file once mapped.
        file: anonymous.then_some(file),
        info,
        map_readonly: !writable,
        published: true,
        creating_path: None,
    };
    let seg = Segment::new(parts, readonly);
    registry::put(&seg);
    Ok(seg)
}

/// Validates an open segment file from private copies of its header page
/// and control page, read with `pread` (faster here than faulting the pages
/// in, and a concurrent truncation cannot SIGBUS us): its decoded header,
/// control fields and length. A sound segment costs two reads and no fstat:
/// the header gives the length, and asking for one byte past the control
/// page shows the file ends there. Any other file is measured and checked
/// the long way, which names what is wrong.
fn validate_file(file: &File) -> std::result::Result<(Arc<headers::Decoded>, Control, u64), FormatError> {
    type Decoding = std::result::Result<Arc<headers::Decoded>, FormatError>;
    let check = |len: u64, (hash, decoded): (u64, Decoding), control: &[u8; PAGE]| {
        let c =
            format::validate_decoded(len, hash, decoded.as_ref().map(|d| &d.header).map_err(Clone::clone), control)?;
        Ok((decoded?, c, len))
    };
    // Uninitialised buffers: the fast path pays no zeroing of 8 KiB.
    let (mut hbuf, mut cbuf) = ([MaybeUninit::<u8>::uninit(); PAGE], [MaybeUninit::<u8>::uninit(); PAGE + 1]);
    if let Ok((header, _)) = rustix::io::pread(file, &mut hbuf, 0) {
        if let Ok(header) = <&[u8; PAGE]>::try_from(&*header) {
            let (hash, decoded) = headers::decode(header);
            let len = decoded.as_ref().ok().and_then(|d| d.header.data_len().ok()).map(format::segment_len);
            if let Some(len) = len {
                if let Ok((control, _)) = rustix::io::pread(file, &mut cbuf, len - PAGE as u64) {
                    if let Ok(control) = <&[u8; PAGE]>::try_from(&*control) {
                        return check(len, (hash, decoded), control);
                    }
                }
            }
        }
    }
    let mut header = [0u8; PAGE];
    let len = file.metadata().map_err(|_| FormatError::BadLength { len: 0 })?.len();
    if len < 2 * PAGE as u64 || len % PAGE as u64 != 0 {
        return Err(FormatError::BadLength { len });
    }
    let mut control = [0u8; PAGE];
    file.read_exact_at(&mut header[..], 0).map_err(|_| FormatError::BadLength { len })?;
    file.read_exact_at(&mut control[..], len - PAGE as u64).map_err(|_| FormatError::BadLength { len })?;
    check(len, headers::decode(&header), &control)
}

/// Opens a named segment file: the file, and whether it was
/// opened for writing.
fn open_named(path: &std::path::Path, seg_name: &str, readonly: bool) -> Result<(File, bool), AttachError> {
    let base = OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let rw = rustix::fs::open(path, base | OFlags::RDWR, Mode::empty());
    let cannot_open =
        |e: rustix::io::Errno| attach_fault(seg_name, SegmentError::from_named_io(seg_name, "cannot open", e.into()));
    let (fd, writable) = match rw {
        Ok(fd) => (fd, true),
        // A read-only attach needs only read permission.
        Err(e) if readonly && e == rustix::io::Errno::ACCESS => {
            (rustix::fs::open(path, base | OFlags::RDONLY, Mode::empty()).map_err(cannot_open)?, false)
        }
        Err(e) if e == rustix::io::Errno::LOOP => {
            return Err(AttachError::NotAFile { name: seg_name.into(), why: "a symbolic link" });
        }
        Err(e) if is_not_regular(e) => {
            return Err(AttachError::NotAFile { name: seg_name.into(), why: "not a regular file" })
        }
        Err(e) => return Err(cannot_open(e)),
    };
    // Whether it is a regular file is asked only if it fails to validate
    // (see `validate_file`): a sound segment costs no fstat.
    Ok((File::from(fd), writable))
}

/// What a fault met while attaching the name `seg_name` means for the caller.
fn attach_fault(seg_name: &str, e: SegmentError) -> AttachError {
    let name = seg_name.to_string();
    match e {
        // Asked only once no creator holds the file: it died before publishing.
        SegmentError::Invalid { source: FormatError::NotReady, .. } => AttachError::Abandoned(name),
        SegmentError::Invalid { source, .. } => AttachError::Corrupt { name, source },
        // The one mismatch `attach_file` finds for a name.
        SegmentError::Mismatch(_) => AttachError::WrongKind(name),
        SegmentError::NotFound(_) => AttachError::NotFound(name),
        SegmentError::Permission(m) => AttachError::Permission(m),
        SegmentError::NoMemory(m) => AttachError::NoMemory(m),
        SegmentError::Io { context, source } => AttachError::Io { context, source },
        e => {
            AttachError::Io { context: format!("attach segment {seg_name:?}"), source: io::Error::other(e.to_string()) }
        }
    }
}

/// Errors of `open` that mean "this is no regular file".
pub(crate) fn is_not_regular(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    [Errno::ISDIR, Errno::NXIO, Errno::NODEV, Errno::OPNOTSUPP, Errno::NOTDIR].contains(&e)
}
