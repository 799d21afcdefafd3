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
