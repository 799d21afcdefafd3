//! A segment: one array in shared memory, named (a file under
//! `/dev/shm/ndshm-NAME`) or anonymous (a memfd), mapped into this process.
//!
//! This module holds the mapped segment itself: what it is ([`Info`]), its
//! data and control words, its lock, its handoff counters, and what happens
//! when the last handle goes (`Drop`). Making one is `create`, opening one
//! is `attach` (by name) and `receive` (by handle); the mappings this
//! process holds are in `registry`.

use crate::error::{no_room_or_io, Result, SegmentError};
use crate::format::{ctl, Header, DATA_OFFSET, PAGE, READY};
use crate::{claim, handoff, populate, process};
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::FlockOperation;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

// The control words `Segment::word` is asked for: aligned, inside the page.
const _: () =
    assert!(ctl::READY % 4 == 0 && ctl::READY + 4 <= PAGE && ctl::PENDING % 4 == 0 && ctl::PENDING + 4 <= PAGE);

/// The 32-bit words of the control page that change after creation.
#[derive(Clone, Copy)]
pub(crate) enum ControlWord {
    Ready,
    Pending,
}

/// A mapped segment. Cheap to clone; the mapping lives until the last clone
/// (and every view derived from it) is gone.
///
/// A process maps each segment once, writable whenever it may: read-only
/// access is a property of the handle (`readonly`), so that a read-only and
/// a writable handle of one segment share one address range (numpy then
/// sees that they overlap).
#[derive(Clone)]
pub struct Segment {
    inner: Arc<Inner>,
    readonly: bool,
}

/// What a segment is, as validated when it was created or attached.
#[derive(Debug, Clone)]
pub struct Info {
    pub id: u64,
    pub name: Option<String>,
    pub header: Header,
    /// `header.dtype.descr()`, rendered once.
    pub descr: String,
    pub data_len: u64,
    pub owner_pid: u32,
    pub owner_start: u64,
    pub created_ns: u64,
}

struct Inner {
    /// The whole segment; read-only only when the file could not be opened
    /// for writing.
    map: MmapRaw,
    /// Keeps the memfd open (its number is what handles carry) or, for a
    /// named segment, the creation lock until `publish`.
    file: Mutex<Option<File>>,
    /// The file's number, fixed for the segment's life.
    fd: RawFd,
    info: Info,
    /// The mapping is read-only (no write permission on the file).
    map_readonly: bool,
    published: AtomicBool,
    /// The pid of the process that last sent a handle of this segment from
    /// this mapping (0: none); a fork child inherits it, hence the pid.
    sent_by: AtomicU32,
    /// For a named segment being created: where to unlink it if abandoned.
    creating_path: Option<PathBuf>,
}

// SAFETY: the raw mappings are plain memory shared across processes; all
// access goes through raw pointers and atomics, never through references
// to non-atomic bytes, so sharing them between threads adds nothing new.
unsafe impl Send for Inner {}
// SAFETY: see above.
unsafe impl Sync for Inner {}

/// What a new mapping is made of: given by `create` and `attach`, which
/// have opened, validated and mapped the file.
pub(crate) struct Parts {
    /// The whole segment.
    pub(crate) map: MmapRaw,
    /// The file to keep open: an anonymous segment's memfd (handles carry
    /// its number), or a named segment's file while it is being created.
    pub(crate) file: Option<File>,
    pub(crate) info: Info,
    /// The mapping is read-only (no write permission on the file).
    pub(crate) map_readonly: bool,
    /// False only for a segment just created: `publish` sets it.
    pub(crate) published: bool,
    /// For a named segment being created: where to unlink it if abandoned.
    pub(crate) creating_path: Option<PathBuf>,
}

/// A segment that does not keep its mapping alive (the registry holds
/// these).
pub(crate) struct WeakSegment(Weak<Inner>);

impl WeakSegment {
    /// A handle of the mapping if it is still alive and fits the access
    /// wanted (a writable handle needs a writable mapping).
    pub(crate) fn upgrade(&self, readonly: bool) -> Option<Segment> {
        let inner = self.0.upgrade()?;
        (readonly || !inner.map_readonly).then_some(Segment { inner, readonly })
    }

    /// Whether the mapping is gone.
    pub(crate) fn is_gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// Maps the first `len` bytes of `file`, writable if asked.
pub(crate) fn map(file: &File, len: u64, writable: bool) -> io::Result<MmapRaw> {
    let mut opts = MmapOptions::new();
    opts.len(len as usize);
    if writable {
        opts.map_raw(file)
    } else {
        opts.map_raw_read_only(file)
    }
}

impl Segment {
    /// The segment made of `parts`; a read-only handle if asked or if the
    /// mapping is.
    pub(crate) fn new(parts: Parts, readonly: bool) -> Segment {
        let Parts { map, file, info, map_readonly, published, creating_path } = parts;
        // The number handles carry: an anonymous segment's memfd (a named
        // segment keeps no file open once mapped).
        let fd = file.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        Segment {
            inner: Arc::new(Inner {
                map,
                file: Mutex::new(file),
                fd,
                info,
                map_readonly,
                published: AtomicBool::new(published),
                sent_by: AtomicU32::new(0),
                creating_path,
            }),
            readonly: readonly || map_readonly,
        }
    }

    /// A reference that does not keep the mapping alive.
    pub(crate) fn downgrade(&self) -> WeakSegment {
        WeakSegment(Arc::downgrade(&self.inner))
    }

    /// Sets the ready word (last, with release order) and lets waiting
    /// attachers in (see `Created::publish`). False if it was published
    /// already.
    pub(crate) fn publish_now(&self) -> bool {
        if self.inner.published.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.word(ControlWord::Ready).store(READY, Ordering::Release);
        if let Some(f) = self.inner.file.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = rustix::fs::flock(f, FlockOperation::Unlock);
        }
        true
    }

    /// Gives up a segment not yet published (see `Created::abandon`): a
    /// named one loses its name if the name is still its own. Nothing once
    /// published.
    pub(crate) fn abandon_now(&self) {
        if self.is_published() {
            return;
        }
        if let (Some(path), Some(f)) =
            (&self.inner.creating_path, self.inner.file.lock().unwrap_or_else(|e| e.into_inner()).as_ref())
        {
            claim::remove_if_ours(path, f);
        }
    }

    /// Whether two handles share one mapping.
    pub fn same_mapping(&self, other: &Segment) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether `publish` has run (always true for attached segments).
    pub fn is_published(&self) -> bool {
        self.inner.published.load(Ordering::Acquire)
    }

    /// What the segment is.
    pub fn info(&self) -> &Info {
        &self.inner.info
    }

    /// The segment's random 64-bit id.
    pub fn id(&self) -> u64 {
        self.inner.info.id
    }

    /// The name, `None` for anonymous segments.
    pub fn name(&self) -> Option<&str> {
        self.inner.info.name.as_deref()
    }

    /// The dtype, shape and order.
    pub fn header(&self) -> &Header {
        &self.inner.info.header
    }

    /// Whether this handle is read-only (asked so, or the mapping is).
    pub fn is_readonly(&self) -> bool {
        self.readonly
    }

    /// The same segment, read-only.
    pub fn as_readonly(&self) -> Segment {
        Segment { inner: self.inner.clone(), readonly: true }
    }

    /// Bytes of array data.
    pub fn data_len(&self) -> usize {
        self.inner.info.data_len as usize
    }

    /// Start of the array data. Other processes may write this memory at any
    /// time: read and write it only through raw pointers or atomics, and
    /// never write it if the segment is read-only.
    pub fn data_ptr(&self) -> *mut u8 {
        // SAFETY: the mapping is at least DATA_OFFSET + data_len + PAGE bytes.
        unsafe { self.inner.map.as_mut_ptr().add(DATA_OFFSET) }
    }

    /// The file number handles carry (anonymous segments), `None` for named
    /// ones.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        if self.inner.fd < 0 {
            return None;
        }
        // SAFETY: the file stays open as long as `inner` lives (it is only
        // taken out in `Drop`).
        Some(unsafe { BorrowedFd::borrow_raw(self.inner.fd) })
    }

    /// Whether the control page can be written from this process (false
    /// only without write permission on the file).
    pub fn control_writable(&self) -> bool {
        !self.inner.map_readonly
    }

    fn control_ptr(&self) -> *mut u8 {
        // SAFETY: the control page is the last page of the mapping.
        unsafe { self.inner.map.as_mut_ptr().add(self.inner.map.len() - PAGE) }
    }

    /// A 32-bit word of the control page, for counters and the ready word.
    /// Stores to it fault on a mapping that is not [`control_writable`].
    ///
    /// [`control_writable`]: Segment::control_writable
    pub(crate) fn word(&self, word: ControlWord) -> &AtomicU32 {
        let off = match word {
            ControlWord::Ready => ctl::READY,
            ControlWord::Pending => ctl::PENDING,
        };
        // SAFETY: in bounds and aligned (page-aligned base; the const
        // assertion above `ControlWord` checks both offsets);
        // AtomicU32 has the layout of u32 and is meant to be shared; the
        // mapping outlives the returned reference (tied to &self).
        unsafe { &*(self.control_ptr().add(off) as *const AtomicU32) }
    }

    /// The array's lock, in the control page. `None` when the control page
    /// cannot be written (a read-only attach without write permission).
    pub fn lock(&self) -> Option<&crate::lock::LockWords> {
        if !self.control_writable() {
            return None;
        }
        // SAFETY: the lock area lies inside the control page (LOCK +
        // LOCK_LEN < PAGE), 8-byte aligned (page-aligned base, LOCK % 8 ==
        // 0), writable, and lives as long as `self`.
        Some(unsafe { crate::lock::LockWords::at(self.control_ptr().add(ctl::LOCK)) })
    }

    /// Counts a handle of this segment that left the process (anonymous
    /// segments): the sender keeps the memfd alive until it is attached.
    pub fn note_sent(&self) {
        if self.inner.info.name.is_none() && self.control_writable() {
            self.word(ControlWord::Pending).fetch_add(1, Ordering::AcqRel);
            self.inner.sent_by.store(std::process::id(), Ordering::Release);
        }
    }

    /// The pid that last sent a handle from this mapping, 0 if none.
    pub(crate) fn sent_by(&self) -> u32 {
        self.inner.sent_by.load(Ordering::Acquire)
    }

    /// Settles one pending handoff (a receiver attached).
    pub(crate) fn note_received(&self) {
        if self.inner.info.name.is_none() && self.control_writable() {
            let w = self.word(ControlWord::Pending);
            let _ = w.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        }
    }

    /// Allocates and maps the data bytes `[offset, offset + len)` of a
    /// segment made by [`create_lazy`](Segment::create_lazy) (harmless on
    /// others): `NoMemory` if there is no room, and never a SIGBUS when they
    /// are written afterwards.
    pub fn populate(&self, offset: usize, len: usize) -> Result<()> {
        if self.readonly || self.inner.map_readonly {
            return Err(SegmentError::Permission("cannot populate a read-only segment".into()));
        }
        if offset.checked_add(len).is_none_or(|end| end as u64 > self.inner.info.data_len) {
            return Err(SegmentError::Mismatch(format!(
                "bytes {offset}+{len} are outside the segment's {} data bytes",
                self.inner.info.data_len
            )));
        }
        let file = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = file.as_ref() else {
            // Named segments keep no file open; they are always fully reserved.
            return Ok(());
        };
        // SAFETY: the mapping covers the whole file from offset 0, writable
        // (checked above); the range is inside the data (checked above).
        unsafe { populate::populate(file, self.inner.map.as_mut_ptr(), self.data_ptr().add(offset), len) }
            .map_err(|e| no_room_or_io(e, "allocate the segment's memory"))
    }

    /// Whether the process that created this anonymous segment still holds
    /// it open (one of its file descriptors names this memfd). A process
    /// that received the segment can keep its mapping while this holds: the
    /// memory lives on anyway. Always false for named segments, and for a
    /// creator that is gone or whose descriptors cannot be read.
    pub fn held_by_creator(&self) -> bool {
        let Some(fd) = self.fd() else { return false };
        let info = &self.inner.info;
        if info.name.is_some() || !process::is_alive(info.owner_pid, info.owner_start) {
            return false;
        }
        let Ok(mine) = rustix::fs::fstat(fd) else { return false };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", info.owner_pid)) else { return false };
        dir.flatten().any(|e| {
            // metadata() follows the /proc link to the open file itself.
            std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == mine.st_ino && m.dev() == mine.st_dev)
        })
    }

    /// Handles sent and not yet attached.
    pub fn pending(&self) -> u32 {
        self.word(ControlWord::Pending).load(Ordering::Acquire)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let file = self.file.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(path), false) = (&self.creating_path, *self.published.get_mut()) {
            // Abandoned before publish: remove the name, if it is still ours.
            if let Some(f) = &file {
                claim::remove_if_ours(path, f);
            }
            return;
        }
        if self.info.name.is_none() {
            if let Some(f) = file {
                // SAFETY: the control page is the last page of `map`, which
                // lives until the end of this function.
                let ctl_ptr = unsafe { self.map.as_mut_ptr().add(self.map.len() - PAGE) };
                // SAFETY: aligned word inside the control page (see `word`).
                let pending = unsafe { &*(ctl_ptr.add(ctl::PENDING) as *const AtomicU32) };
                let sent_here = *self.sent_by.get_mut() == std::process::id();
                if sent_here && !self.map_readonly && pending.load(Ordering::Acquire) > 0 {
                    handoff::linger(f, self.info.id);
                }
            }
        }
    }
}
