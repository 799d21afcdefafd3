//! A segment: one array in shared memory, named (a file under
//! `/dev/shm/ndshm-NAME`) or anonymous (a memfd), mapped into this process.
//!
//! A process maps each segment at most once per access mode: segments are
//! kept in a registry by id, and a second attach returns the same mapping.

use crate::error::{is_no_space, AttachError, CreateError, Result, SegmentError};
use crate::format::{self, ctl, flags, Control, FormatError, Header, DATA_OFFSET, FORMAT_VERSION, PAGE, READY};
use crate::{claim, handoff, headers, huge, memory, name, populate, process, tmpfs};
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FlockOperation, Mode, OFlags};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How long `attach` waits for a named segment that another process is
/// still creating.
const CREATION_WAIT: Duration = Duration::from_secs(10);

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

type Registry = HashMap<u64, Weak<Inner>>;
static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// This process's mapping of segment `id`, if it fits the access wanted.
fn registry_get(id: u64, readonly: bool) -> Option<Segment> {
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let inner = reg.as_ref()?.get(&id)?.upgrade()?;
    (readonly || !inner.map_readonly).then_some(Segment { inner, readonly })
}

fn registry_put(seg: &Segment) {
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let map = reg.get_or_insert_with(HashMap::new);
    if map.len() >= 64 && map.len().is_power_of_two() {
        map.retain(|_, w| w.strong_count() > 0);
    }
    map.insert(seg.inner.info.id, Arc::downgrade(&seg.inner));
}

/// Every anonymous segment this process has mapped and still holds.
pub(crate) fn live_anonymous() -> Vec<Segment> {
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.iter()
        .flat_map(|m| m.values())
        .filter_map(Weak::upgrade)
        .filter(|i| i.info.name.is_none())
        .map(|inner| Segment { inner, readonly: false })
        .collect()
}

fn random_id() -> u64 {
    let mut b = [0u8; 8];
    loop {
        if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_ok() {
            let id = u64::from_ne_bytes(b);
            if id != 0 {
                return id;
            }
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
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

/// Whether a segment of `len` bytes, anonymous or named in `named_dir`,
/// should ask for huge pages (see `crate::huge`).
fn want_huge(len: usize, named_dir: Option<&std::path::Path>) -> bool {
    len >= huge::MIN_LEN && huge::policy(named_dir).wanted()
}

fn map(file: &File, len: u64, writable: bool) -> io::Result<MmapRaw> {
    let mut opts = MmapOptions::new();
    opts.len(len as usize);
    if writable {
        opts.map_raw(file)
    } else {
        opts.map_raw_read_only(file)
    }
}

/// A segment this process created and has not published: nobody else can
/// attach it yet. Fill it (it derefs to the [`Segment`]), then
/// [`publish`](Created::publish) it; dropping it unpublished removes it.
pub struct Created(Segment);

impl std::ops::Deref for Created {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        &self.0
    }
}

impl Created {
    /// Makes the segment visible: sets the ready word (last, with release
    /// order) and lets waiting attachers in.
    pub fn publish(self) -> Segment {
        self.0.publish_now();
        self.0.clone()
    }

    /// Gives the segment up: a named one loses its name at once (if the
    /// name is still this segment's).
    pub fn abandon(self) {}
}

impl Drop for Created {
    fn drop(&mut self) {
        self.0.abandon_now();
    }
}

impl Segment {
    /// Creates a segment for `header`, named or anonymous, with all its
    /// memory reserved and zeroed. Nobody can attach it until it is
    /// published ([`Created::publish`]).
    pub fn create(header: &Header, seg_name: Option<&str>) -> Result<Created, CreateError> {
        // SAFETY: no source.
        unsafe { Self::create_inner(header, seg_name, None, false) }.map(Created).map_err(CreateError::from)
    }

    /// An anonymous segment whose data pages are not allocated yet: there
    /// must be room for them now (else `NoMemory`), and whoever writes a
    /// range first calls [`populate`](Segment::populate) on it, which
    /// allocates it or fails with `NoMemory` (never a SIGBUS on the write).
    /// For results that several processes fill in parallel: each allocates
    /// its own part.
    pub fn create_lazy(header: &Header) -> Result<Created, CreateError> {
        // SAFETY: no source.
        unsafe { Self::create_inner(header, None, None, true) }.map(Created).map_err(CreateError::from)
    }

    /// Like [`create`](Segment::create), with the data copied from `src`,
    /// which must hold exactly the array's bytes in its memory order.
    ///
    /// # Safety
    /// `src` must be valid for reads of `src_len` bytes for the whole call.
    pub unsafe fn create_from(
        header: &Header,
        seg_name: Option<&str>,
        src: *const u8,
        src_len: usize,
    ) -> Result<Created, CreateError> {
        if let Ok(expected) = header.data_len() {
            if src_len as u64 != expected {
                return Err(CreateError::SourceLength { given: src_len, expected });
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { Self::create_inner(header, seg_name, Some((src, src_len)), false) }
            .map(Created)
            .map_err(CreateError::from)
    }

    unsafe fn create_inner(
        header: &Header,
        seg_name: Option<&str>,
        src: Option<(*const u8, usize)>,
        lazy: bool,
    ) -> Result<Segment> {
        if let Some(n) = seg_name {
            name::validate(n)?;
        }
        let refused = |source| match source {
            FormatError::DType(d) => SegmentError::DType(d),
            // Like numpy: a size beyond the address space is a ValueError,
            // one that is representable but beyond any machine a MemoryError.
            FormatError::TooLarge(n) if n <= i64::MAX as u128 => {
                SegmentError::NoMemory(format!("an array of {n} bytes is beyond any machine"))
            }
            source => SegmentError::Invalid { what: "the requested array".into(), source },
        };
        let header_page = header.encode().map_err(refused)?;
        let data_len =
            header.data_len().map_err(|source| SegmentError::Invalid { what: "the requested array".into(), source })?;
        let total = format::segment_len(data_len);
        let (pid, start) = process::current();
        let control = Control {
            version: FORMAT_VERSION,
            ready: 0,
            flags: if seg_name.is_none() { flags::ANONYMOUS } else { 0 },
            data_len,
            id: random_id(),
            owner_pid: pid,
            owner_start: start,
            created_ns: now_ns(),
            header_hash: format::header_hash(&header_page),
        };
        let control_page = control.encode();
        let mut in_tmpfs = false;
        // A named segment is made under a private name and moved to its own
        // once sized, with its pages written and its creator's lock held
        // (see `claim`): nobody ever sees a half-written file under the name.
        let (file, private, creating_path) = match seg_name {
            Some(n) => {
                let path = name::path_of(n);
                // Fails early, before anything is spent; the move into
                // place below is what decides.
                if std::fs::symlink_metadata(&path).is_ok() {
                    return Err(SegmentError::Exists(n.to_string()));
                }
                let dir = path.parent().map_or_else(name::dir, std::path::Path::to_path_buf);
                let claim::Private { file, path: private } = claim::private_file(&dir, control.id)
                    .map_err(|e| SegmentError::from_named_io(n, "cannot create", e))?;
                (file, Some(private), Some(path))
            }
            None => match huge::wants_private_tmpfs(total as usize).then(tmpfs::create_file).flatten() {
                Some(file) => {
                    in_tmpfs = true;
                    (file, None, None)
                }
                None => {
                    let fd = rustix::fs::memfd_create(
                        "ndshm",
                        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
                    )
                    .map_err(|e| no_room_or_io(e.into(), "make a memory file"))?;
                    (File::from(fd), None, None)
                }
            },
        };
        // Sized, sealed, and with its header and control page (ready = 0)
        // written: what a file must be before it takes a segment's name.
        let prepare = || -> Result<()> {
            file.set_len(total).map_err(|e| no_room_or_io(e, "size the segment"))?;
            file.write_all_at(&header_page[..], 0).map_err(|e| no_room_or_io(e, "write the header"))?;
            file.write_all_at(&control_page[..], total - PAGE as u64)
                .map_err(|e| no_room_or_io(e, "write the control page"))?;
            if creating_path.is_none() && !in_tmpfs {
                // Nobody may shrink or grow a memfd under its mappings.
                let seals = rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW | rustix::fs::SealFlags::SEAL;
                rustix::fs::fcntl_add_seals(&file, seals).map_err(|e| SegmentError::io("seal memfd", e.into()))?;
            }
            Ok(())
        };
        let prepared = prepare();
        if let (Some(p), Some(path), Some(n)) = (&private, &creating_path, seg_name) {
            match prepared {
                Ok(()) => {
                    claim::move_into_place(p, path).map_err(|e| SegmentError::from_named_io(n, "cannot create", e))?
                }
                Err(e) => {
                    let _ = std::fs::remove_file(p);
                    return Err(e);
                }
            }
        } else {
            prepared?;
        }
        // From here on, a failure must remove the file: nothing half-made stays.
        let cleanup = |e: SegmentError| {
            if let Some(p) = &creating_path {
                remove_if_ours(p, &file);
            }
            e
        };
        let reserve = || -> Result<MmapRaw> {
            match &creating_path {
                Some(p) => memory::check_named(p.parent().unwrap_or(&name::dir()), total)?,
                None => memory::check_anonymous(total)?,
            }
            let m = map(&file, total, true).map_err(|e| no_room_or_io(e, "map the segment"))?;
            // A file in the private tmpfs gets huge pages by its mount's option.
            let huge = in_tmpfs || want_huge(total as usize, creating_path.as_ref().and_then(|p| p.parent()));
            if huge {
                // SAFETY: the whole mapping.
                unsafe { huge::advise(m.as_mut_ptr(), total as usize) };
            }
            // Every way of reserving below keeps the bytes already written.
            let filled = match src {
                // SAFETY: `m` maps the whole file writable; the caller
                // vouches for the source.
                Some((p, n)) if huge => unsafe {
                    populate::reserve_mapped(m.as_mut_ptr(), total as usize, DATA_OFFSET, p, n)
                },
                // SAFETY: as above.
                Some((p, n)) => unsafe {
                    populate::reserve_and_copy(&file, m.as_mut_ptr(), total as usize, DATA_OFFSET, p, n)
                },
                None if lazy => populate::reserve_edges(&file, total as usize),
                // SAFETY: `m` maps the whole file writable; no source.
                None if huge => unsafe {
                    populate::reserve_mapped(m.as_mut_ptr(), total as usize, DATA_OFFSET, std::ptr::null(), 0)
                },
                None => populate::reserve(&file, total as usize),
            };
            filled.map_err(|e| no_room_or_io(e, "reserve memory"))?;
            Ok(m)
        };
        let map = reserve().map_err(cleanup)?;
        let info = Info {
            id: control.id,
            name: seg_name.map(str::to_string),
            descr: header.dtype.descr(),
            header: header.clone(),
            data_len,
            owner_pid: pid,
            owner_start: start,
            created_ns: control.created_ns,
        };
        let fd = file.as_raw_fd();
        Ok(Segment {
            inner: Arc::new(Inner {
                map,
                file: Mutex::new(Some(file)),
                fd,
                info,
                map_readonly: false,
                published: AtomicBool::new(false),
                sent_by: AtomicU32::new(0),
                creating_path,
            }),
            readonly: false,
        })
    }

    /// See [`Created::publish`].
    fn publish_now(&self) {
        if self.inner.published.swap(true, Ordering::AcqRel) {
            return;
        }
        self.word(ControlWord::Ready).store(READY, Ordering::Release);
        if let Some(f) = self.inner.file.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = rustix::fs::flock(f, FlockOperation::Unlock);
        }
        registry_put(self);
    }

    /// See [`Created::abandon`]; nothing once published.
    fn abandon_now(&self) {
        if self.is_published() {
            return;
        }
        if let (Some(path), Some(f)) =
            (&self.inner.creating_path, self.inner.file.lock().unwrap_or_else(|e| e.into_inner()).as_ref())
        {
            remove_if_ours(path, f);
        }
    }

    /// The mapping of segment `id` if this process holds one.
    pub fn lookup(id: u64, readonly: bool) -> Option<Segment> {
        registry_get(id, readonly)
    }

    /// Whether two handles share one mapping.
    pub fn same_mapping(&self, other: &Segment) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether `publish` has run (always true for attached segments).
    pub fn is_published(&self) -> bool {
        self.inner.published.load(Ordering::Acquire)
    }

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
            let file = match Self::attach_file(file, writable, readonly, Some(seg_name)) {
                Ok(seg) => return Ok(seg),
                Err((file, _)) if !file.metadata().is_ok_and(|m| m.file_type().is_file()) => {
                    return Err(AttachError::NotAFile { name: seg_name.into(), why: "not a regular file" })
                }
                Err((file, _)) if claim::creator_at_work(&file) => file,
                // No creator holds it (any more), so it changes no more: what
                // it is now is the answer, not what it was a moment ago.
                Err((file, _)) => {
                    return match Self::attach_file(file, writable, readonly, Some(seg_name)) {
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
        if let Some(seg) = registry_get(control.id, readonly) {
            return Ok(seg);
        }
        let map = match map(&file, len, writable) {
            Ok(m) => m,
            Err(e) => return Err((file, no_room_or_io(e, &format!("map {}", what())))),
        };
        if want_huge(len as usize, seg_name.map(|_| name::dir()).as_deref()) {
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
        let fd = file.as_raw_fd();
        let seg = Segment {
            inner: Arc::new(Inner {
                map,
                // A named segment needs no open file once mapped.
                file: Mutex::new(if anonymous { Some(file) } else { None }),
                fd: if anonymous { fd } else { -1 },
                info,
                map_readonly: !writable,
                published: AtomicBool::new(true),
                sent_by: AtomicU32::new(0),
                creating_path: None,
            }),
            readonly: readonly || !writable,
        };
        registry_put(&seg);
        Ok(seg)
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
        // assertion under `CREATION_WAIT` checks both offsets);
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
                remove_if_ours(path, f);
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

/// Unlinks `path` if it still names the file `f`.
fn remove_if_ours(path: &std::path::Path, f: &File) {
    let ours = std::fs::symlink_metadata(path)
        .ok()
        .zip(f.metadata().ok())
        .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

fn no_room_or_io(e: io::Error, what: &str) -> SegmentError {
    if is_no_space(&e) || e.raw_os_error() == Some(rustix::io::Errno::FAULT.raw_os_error()) {
        SegmentError::NoMemory(format!("cannot {what}: {e}"))
    } else {
        SegmentError::io(format!("cannot {what}"), e)
    }
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
