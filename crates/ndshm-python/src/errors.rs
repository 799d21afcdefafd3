//! The one place where core errors become Python exceptions (DESIGN.md,
//! "Errors").

use ndshm::dispatch::DispatchError;
use ndshm::{AttachError, CreateError, DTypeError, FormatError, LockError, SegmentError, ViewError};
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyMemoryError, PyOSError, PyPermissionError, PyRuntimeError,
    PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::PyErr;

pyo3::create_exception!(
    ndshm._native,
    CorruptSegment,
    PyValueError,
    "A file under a segment's name, or a segment a handle names, is not a valid ndshm segment."
);

pyo3::create_exception!(
    ndshm._native,
    AbandonedSegment,
    PyValueError,
    "A named segment whose creator died before finishing it; ndshm.gc() removes it."
);

fn os_err(errno: Option<i32>, msg: String) -> PyErr {
    match errno {
        Some(errno) => PyOSError::new_err((errno, msg)),
        None => PyOSError::new_err(msg),
    }
}

pub fn create_err(e: CreateError) -> PyErr {
    let msg = e.to_string();
    match e {
        CreateError::InvalidName { .. } | CreateError::Invalid(_) | CreateError::SourceLength { .. } => {
            PyValueError::new_err(msg)
        }
        CreateError::DType(DTypeError::Unsupported(_)) => PyTypeError::new_err(msg),
        CreateError::DType(DTypeError::Malformed(_)) => PyValueError::new_err(msg),
        CreateError::Exists(_) => PyFileExistsError::new_err(msg),
        CreateError::NoMemory(_) => PyMemoryError::new_err(msg),
        CreateError::Permission(_) => PyPermissionError::new_err(msg),
        CreateError::Io { source, .. } => os_err(source.raw_os_error(), msg),
    }
}

pub fn attach_err(e: AttachError) -> PyErr {
    let msg = e.to_string();
    match e {
        AttachError::InvalidName { .. } => PyValueError::new_err(msg),
        AttachError::NotFound(_) => PyFileNotFoundError::new_err(msg),
        AttachError::Permission(_) => PyPermissionError::new_err(msg),
        AttachError::NotAFile { .. } | AttachError::Corrupt { .. } | AttachError::WrongKind(_) => {
            CorruptSegment::new_err(msg)
        }
        AttachError::Abandoned(_) => AbandonedSegment::new_err(msg),
        AttachError::Busy(_) => PyTimeoutError::new_err(msg),
        AttachError::NoMemory(_) => PyMemoryError::new_err(msg),
        AttachError::Io { source, .. } => os_err(source.raw_os_error(), msg),
    }
}

pub fn seg_err(e: SegmentError) -> PyErr {
    let msg = e.to_string();
    match e {
        SegmentError::Invalid { source: FormatError::NotReady, .. } => AbandonedSegment::new_err(msg),
        SegmentError::Invalid { .. } => CorruptSegment::new_err(msg),
        SegmentError::InvalidName { .. } | SegmentError::Mismatch(_) => PyValueError::new_err(msg),
        SegmentError::DType(DTypeError::Unsupported(_)) => PyTypeError::new_err(msg),
        SegmentError::DType(DTypeError::Malformed(_)) => PyValueError::new_err(msg),
        SegmentError::Exists(_) => PyFileExistsError::new_err(msg),
        SegmentError::NotFound(_) | SegmentError::Replaced(_) | SegmentError::Gone { .. } => {
            PyFileNotFoundError::new_err(msg)
        }
        SegmentError::NoMemory(_) => PyMemoryError::new_err(msg),
        SegmentError::Permission(_) => PyPermissionError::new_err(msg),
        SegmentError::Busy(_) => PyTimeoutError::new_err(msg),
        SegmentError::Io { source, .. } => os_err(source.raw_os_error(), msg),
    }
}

pub fn view_err(e: ViewError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

pub fn lock_err(e: LockError) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

pub fn dispatch_err(e: DispatchError) -> PyErr {
    match e {
        DispatchError::Segment(e) => seg_err(e),
        e => PyValueError::new_err(e.to_string()),
    }
}
