//! Errors of segment operations. Each variant maps to one Python exception
//! (see the bindings): this is the only place the kinds are decided.

use crate::dtype::DTypeError;
use crate::format::FormatError;
use std::io;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SegmentError {
    /// A name that breaks the naming rules.
    #[error("invalid segment name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    /// The name is taken.
    #[error("a segment named {0:?} already exists")]
    Exists(String),
    /// No segment has that name.
    #[error("no segment named {0:?}")]
    NotFound(String),
    /// A handle's name now names another segment.
    #[error("segment {0:?} was deleted and re-created since this handle was made")]
    Replaced(String),
    /// An anonymous segment whose sender no longer holds it.
    #[error("the shared array sent by process {pid} is gone: {why}")]
    Gone { pid: u32, why: String },
    /// Not enough shared memory for a new segment.
    #[error("not enough shared memory: {0}")]
    NoMemory(String),
    /// The operating system refused access.
    #[error("permission denied: {0}")]
    Permission(String),
    /// Bytes that are not a valid segment.
    #[error("{what} is not a valid ndshm segment: {source}")]
    Invalid { what: String, source: FormatError },
    /// A handle or request that does not match the segment it names.
    #[error("{0}")]
    Mismatch(String),
    /// An unsupported or malformed dtype.
    #[error(transparent)]
    DType(#[from] DTypeError),
    /// A named segment still being created after the wait ran out.
    #[error("segment {0:?} is still being created by another process")]
    Busy(String),
    /// Any other operating-system error.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl SegmentError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> SegmentError {
        SegmentError::Io { context: context.into(), source }
    }

    /// An I/O error on a named segment, sorted into the kinds callers handle.
    pub(crate) fn from_named_io(name: &str, context: &str, e: io::Error) -> SegmentError {
        match e.kind() {
            io::ErrorKind::NotFound => SegmentError::NotFound(name.to_string()),
            io::ErrorKind::AlreadyExists => SegmentError::Exists(name.to_string()),
            io::ErrorKind::PermissionDenied => SegmentError::Permission(format!("{context} segment {name:?}: {e}")),
            _ if is_no_space(&e) => SegmentError::NoMemory(format!("{context} segment {name:?}: {e}")),
            _ => SegmentError::io(format!("{context} segment {name:?}"), e),
        }
    }
}

/// An error of creating, mapping or populating a segment: `NoMemory` when
/// it means there is no room (EFAULT comes from populating), else `Io`.
pub(crate) fn no_room_or_io(e: io::Error, what: &str) -> SegmentError {
    if is_no_space(&e) || e.raw_os_error() == Some(rustix::io::Errno::FAULT.raw_os_error()) {
        SegmentError::NoMemory(format!("cannot {what}: {e}"))
    } else {
        SegmentError::io(format!("cannot {what}"), e)
    }
}

/// ENOSPC, ENOMEM, EFBIG and EFAULT-from-populate all mean "no room".
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == rustix::io::Errno::NOSPC.raw_os_error()
            || c == rustix::io::Errno::NOMEM.raw_os_error()
            || c == rustix::io::Errno::FBIG.raw_os_error()
    )
}

pub type Result<T, E = SegmentError> = std::result::Result<T, E>;

/// Why a segment could not be created.
#[derive(Debug, Error)]
pub enum CreateError {
    /// A name that breaks the naming rules.
    #[error("invalid segment name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    /// The name is taken.
    #[error("a segment named {0:?} already exists")]
    Exists(String),
    /// Not enough shared memory (or address space) for it.
    #[error("not enough shared memory: {0}")]
    NoMemory(String),
    /// The operating system refused access.
    #[error("permission denied: {0}")]
    Permission(String),
    /// An unsupported or malformed dtype.
    #[error(transparent)]
    DType(#[from] DTypeError),
    /// A shape and dtype that make no valid segment (a header too long for
    /// its page, a size beyond the address space).
    #[error("the requested array is not a valid ndshm segment: {0}")]
    Invalid(FormatError),
    /// A source whose length is not the array's.
    #[error("{given} source bytes for an array of {expected} bytes")]
    SourceLength { given: usize, expected: u64 },
    /// Any other operating-system error (a missing directory is `NotFound`).
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

/// Why a named segment could not be attached.
#[derive(Debug, Error)]
pub enum AttachError {
    /// A name that breaks the naming rules.
    #[error("invalid segment name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    /// No segment has that name.
    #[error("no segment named {0:?}")]
    NotFound(String),
    /// The operating system refused access.
    #[error("permission denied: {0}")]
    Permission(String),
    /// The name is no regular file (a symbolic link, a FIFO, a directory...).
    #[error("segment {name:?} is not a valid ndshm segment: it is {why}")]
    NotAFile { name: String, why: &'static str },
    /// A file whose pages are not a valid segment.
    #[error("segment {name:?} is not a valid ndshm segment: {source}")]
    Corrupt { name: String, source: FormatError },
    /// A named file flagged as an anonymous segment.
    #[error("segment {0:?} is not a valid ndshm segment: it is flagged as an anonymous one")]
    WrongKind(String),
    /// Its creator died before publishing it; `gc` removes it.
    #[error("segment {0:?} is abandoned: its creator died before finishing it (gc removes it)")]
    Abandoned(String),
    /// Still being created by a live process after the wait ran out.
    #[error("segment {0:?} is still being created by another process")]
    Busy(String),
    /// No address space left to map it.
    #[error("not enough memory: {0}")]
    NoMemory(String),
    /// Any other operating-system error.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl From<SegmentError> for CreateError {
    /// The faults of the helpers creation shares (names, room checks, I/O).
    fn from(e: SegmentError) -> CreateError {
        match e {
            SegmentError::InvalidName { name, why } => CreateError::InvalidName { name, why },
            SegmentError::Exists(n) => CreateError::Exists(n),
            SegmentError::NoMemory(m) => CreateError::NoMemory(m),
            SegmentError::Permission(m) => CreateError::Permission(m),
            SegmentError::DType(d) => CreateError::DType(d),
            SegmentError::Invalid { source, .. } => CreateError::Invalid(source),
            SegmentError::Io { context, source } => CreateError::Io { context, source },
            // The directory of named segments is missing.
            e @ SegmentError::NotFound(_) => CreateError::Io {
                context: e.to_string(),
                source: io::Error::from_raw_os_error(rustix::io::Errno::NOENT.raw_os_error()),
            },
            e => CreateError::Io { context: "create".into(), source: io::Error::other(e.to_string()) },
        }
    }
}

impl From<CreateError> for SegmentError {
    fn from(e: CreateError) -> SegmentError {
        match e {
            CreateError::InvalidName { name, why } => SegmentError::InvalidName { name, why },
            CreateError::Exists(n) => SegmentError::Exists(n),
            CreateError::NoMemory(m) => SegmentError::NoMemory(m),
            CreateError::Permission(m) => SegmentError::Permission(m),
            CreateError::DType(d) => SegmentError::DType(d),
            CreateError::Invalid(source) => SegmentError::Invalid { what: "the requested array".into(), source },
            e @ CreateError::SourceLength { .. } => SegmentError::Mismatch(e.to_string()),
            CreateError::Io { context, source } => SegmentError::Io { context, source },
        }
    }
}

impl From<AttachError> for SegmentError {
    fn from(e: AttachError) -> SegmentError {
        match e {
            AttachError::InvalidName { name, why } => SegmentError::InvalidName { name, why },
            AttachError::NotFound(n) => SegmentError::NotFound(n),
            AttachError::Permission(m) => SegmentError::Permission(m),
            AttachError::Corrupt { name, source } => {
                SegmentError::Invalid { what: format!("segment {name:?}"), source }
            }
            AttachError::Abandoned(name) => {
                SegmentError::Invalid { what: format!("segment {name:?}"), source: FormatError::NotReady }
            }
            e @ (AttachError::NotAFile { .. } | AttachError::WrongKind(_)) => SegmentError::Mismatch(e.to_string()),
            AttachError::Busy(n) => SegmentError::Busy(n),
            AttachError::NoMemory(m) => SegmentError::NoMemory(m),
            AttachError::Io { context, source } => SegmentError::Io { context, source },
        }
    }
}
