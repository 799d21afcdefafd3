//! The one place where core errors become Python exceptions (README,
//! "Errors").

use ndshm::dispatch::{DispatchError, OwnerWatchError};
use ndshm::{AttachError, CreateError, DTypeError, FormatError, HandleError, LockError, SegmentError, ViewError};
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyMemoryError, PyOSError, PyPermissionError, PyRuntimeError,
    PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use std::io::ErrorKind;

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

/// Adds the exception types of segments.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CorruptSegment", m.py().get_type::<CorruptSegment>())?;
    m.add("AbandonedSegment", m.py().get_type::<AbandonedSegment>())?;
    Ok(())
}

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

/// Receiving a handle: a malformed or forged one is a ValueError whatever
/// is wrong in it; a segment that is gone is a FileNotFoundError.
pub fn handle_err(e: HandleError) -> PyErr {
    match e {
        HandleError::Attach(e) => attach_err(e),
        HandleError::Segment(e) => seg_err(e),
        HandleError::Replaced(_) | HandleError::Gone { .. } => PyFileNotFoundError::new_err(e.to_string()),
        HandleError::Permission { .. } => PyPermissionError::new_err(e.to_string()),
        HandleError::Foreign { host, here } => PyValueError::new_err(foreign_message(&host, &here)),
        HandleError::NotASegment { .. } => CorruptSegment::new_err(e.to_string()),
        HandleError::Malformed(_)
        | HandleError::Version(_)
        | HandleError::Name(_)
        | HandleError::DType(_)
        | HandleError::View(_)
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
