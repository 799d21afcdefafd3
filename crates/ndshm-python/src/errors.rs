//! The one place where core errors become Python exceptions (DESIGN.md,
//! "Errors").

use ndshm::dispatch::{DispatchError, OwnerWatchError};
use ndshm::{DTypeError, LockError, SegmentError, ViewError};
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyMemoryError, PyOSError, PyPermissionError, PyRuntimeError,
    PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::PyErr;
use std::io::ErrorKind;

pub fn seg_err(e: SegmentError) -> PyErr {
    let msg = e.to_string();
    match e {
        SegmentError::InvalidName { .. } | SegmentError::Invalid { .. } | SegmentError::Mismatch(_) => {
            PyValueError::new_err(msg)
        }
        SegmentError::DType(DTypeError::Unsupported(_)) => PyTypeError::new_err(msg),
        SegmentError::DType(DTypeError::Malformed(_)) => PyValueError::new_err(msg),
        SegmentError::Exists(_) => PyFileExistsError::new_err(msg),
        SegmentError::NotFound(_) | SegmentError::Replaced(_) | SegmentError::Gone { .. } => {
            PyFileNotFoundError::new_err(msg)
        }
        SegmentError::NoMemory(_) => PyMemoryError::new_err(msg),
        SegmentError::Permission(_) => PyPermissionError::new_err(msg),
        SegmentError::Busy(_) => PyTimeoutError::new_err(msg),
        SegmentError::Io { source, .. } => match source.raw_os_error() {
            Some(errno) => PyOSError::new_err((errno, msg)),
            None => PyOSError::new_err(msg),
        },
    }
}

pub fn view_err(e: ViewError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

pub fn lock_err(e: LockError) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// Every dispatch board error: a thread that cannot start is out of
/// memory (or another OS error); the rest are bad arguments or a corrupt
/// board, ValueError.
pub fn dispatch_err(e: impl Into<DispatchError>) -> PyErr {
    let e = e.into();
    let msg = e.to_string();
    match e {
        DispatchError::OwnerWatch(OwnerWatchError(source)) => match (source.kind(), source.raw_os_error()) {
            // ENOMEM, or EAGAIN: no room for another thread.
            (ErrorKind::OutOfMemory | ErrorKind::WouldBlock, _) => PyMemoryError::new_err(msg),
            (_, Some(errno)) => PyOSError::new_err((errno, msg)),
            (_, None) => PyOSError::new_err(msg),
        },
        _ => PyValueError::new_err(msg),
    }
}
