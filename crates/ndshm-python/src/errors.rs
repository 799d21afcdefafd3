//! The one place where core errors become Python exceptions (DESIGN.md,
//! "Errors").

use ndshm::dispatch::DispatchError;
use ndshm::{DTypeError, HandleError, LockError, SegmentError, ViewError};
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

/// Receiving a handle: a malformed or forged one is a ValueError whatever
/// is wrong in it; a segment that is gone is a FileNotFoundError.
pub fn handle_err(e: HandleError) -> PyErr {
    match e {
        HandleError::Segment(e) => seg_err(e),
        HandleError::Replaced(_) | HandleError::Gone { .. } => PyFileNotFoundError::new_err(e.to_string()),
        HandleError::Permission { .. } => PyPermissionError::new_err(e.to_string()),
        HandleError::Foreign { host, here } => PyValueError::new_err(foreign_message(&host, &here)),
        HandleError::Malformed(_)
        | HandleError::Version(_)
        | HandleError::Name(_)
        | HandleError::DType(_)
        | HandleError::View(_)
        | HandleError::NotASegment { .. }
        | HandleError::OtherSegment { .. } => PyValueError::new_err(e.to_string()),
    }
}

/// The error for using, here, an array that lives on another host.
pub fn foreign_message(host: &str, here: &str) -> String {
    let node = |label: &str| label.rsplit_once('/').map_or(label, |(n, _)| n).to_string();
    format!(
        "this ndshm array lives in shared memory on host '{}' ({host}), but this process runs on host '{}' \
         ({here}); shared memory cannot cross hosts. Send it through ndshm.dask's serializer (which sends the \
         bytes to other hosts), or send a copy (numpy.array(a)).",
        node(host),
        node(here)
    )
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
