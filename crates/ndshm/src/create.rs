//! Creating a segment: sized, with its memory reserved (or, for a lazy
//! one, room checked), its header and control pages written, and, for a
//! named one, moved under its name only once whole (see `claim`). The
//! result is a [`Created`] segment that nobody else can attach until it is
//! published.

use crate::error::{no_room_or_io, CreateError, Result, SegmentError};
use crate::format::{self, flags, Control, FormatError, Header, DATA_OFFSET, FORMAT_VERSION, PAGE};
use crate::segment::{self, Info, Parts, Segment};
use crate::{claim, huge, memory, name, populate, process, registry, tmpfs};
use memmap2::MmapRaw;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

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
        if self.0.publish_now() {
            registry::put(&self.0);
        }
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
        unsafe { create_inner(header, seg_name, None, false) }.map(Created).map_err(CreateError::from)
    }

    /// An anonymous segment whose data pages are not allocated yet: there
    /// must be room for them now (else `NoMemory`), and whoever writes a
    /// range first calls [`populate`](Segment::populate) on it, which
    /// allocates it or fails with `NoMemory` (never a SIGBUS on the write).
    /// For results that several processes fill in parallel: each allocates
    /// its own part.
    pub fn create_lazy(header: &Header) -> Result<Created, CreateError> {
        // SAFETY: no source.
        unsafe { create_inner(header, None, None, true) }.map(Created).map_err(CreateError::from)
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
        unsafe { create_inner(header, seg_name, Some((src, src_len)), false) }.map(Created).map_err(CreateError::from)
    }
}

/// Makes the segment: the file (named: under a private name, then moved
/// into place), its pages, the memory reserved and, from `src`, the data.
///
/// # Safety
/// `src`, if given, must be valid for reads of its length for the whole call.
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
            claim::remove_if_ours(p, &file);
        }
        e
    };
    let reserve = || -> Result<MmapRaw> {
        match &creating_path {
            Some(p) => memory::check_named(p.parent().unwrap_or(&name::dir()), total)?,
            None => memory::check_anonymous(total)?,
        }
        let m = segment::map(&file, total, true).map_err(|e| no_room_or_io(e, "map the segment"))?;
        // A file in the private tmpfs gets huge pages by its mount's option.
        let huge = in_tmpfs || huge::wanted_for(total as usize, creating_path.as_ref().and_then(|p| p.parent()));
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
    let parts = Parts { map, file: Some(file), info, map_readonly: false, published: false, creating_path };
    Ok(Segment::new(parts, false))
}
