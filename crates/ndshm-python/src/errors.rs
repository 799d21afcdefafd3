//! The one place where core errors become Python exceptions (DESIGN.md,
//! "Errors").

use ndshm::dispatch::DispatchError;
use ndshm::{DTypeError, LockError, SegmentError, ViewError};
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyMemoryError, PyOSError, PyPermissionError, PyRuntimeError,
    PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::PyErr;

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

pub fn dispatch_err(e: DispatchError) -> PyErr {
    match e {
        DispatchError::Segment(e) => seg_err(e),
        e => PyValueError::new_err(e.to_string()),
    }
}
