//! Finding the segment behind a numpy array, for pickling handles: one call
//! instead of `__array_interface__` (which builds a dict) and Python loops.

use crate::errors::view_err;
use crate::segment::PySegment;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// Adds `view_of` and `check_view`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(view_of, m)?)?;
    m.add_function(wrap_pyfunction!(check_view, m)?)?;
    Ok(())
}

/// Views of views chain this deep at most (numpy collapses most chains).
const MAX_DEPTH: usize = 64;

/// The segment `arr` views and where: `(segment, byte offset from the
/// data start)`, or None if its memory is not inside a segment's data
/// (a private array, or a stride trick reaching outside).
#[pyfunction]
pub fn view_of<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Option<(Bound<'py, PySegment>, i64)>> {
    let py = arr.py();
    // SAFETY: `arr` is a live ndarray (checked by the extraction above);
    // `data` is a plain field of its object.
    let data = unsafe { (*arr.as_array_ptr()).fields.data } as i128;
    let mut base: Bound<'py, PyAny> = arr.getattr(pyo3::intern!(py, "base"))?;
    for _ in 0..MAX_DEPTH {
        if let Ok(seg) = base.cast::<PySegment>() {
            let s = &seg.get().seg;
            let offset = data - s.data_ptr() as i128;
            let shape: Vec<i64> = arr.shape().iter().map(|&d| d as i64).collect();
            let strides: Vec<i64> = arr.strides().iter().map(|&d| d as i64).collect();
            let itemsize = arr.dtype().itemsize() as i64;
            let inside = i64::try_from(offset)
                .ok()
                .filter(|&off| ndshm::check_view(s.data_len() as u64, off, &shape, &strides, itemsize).is_ok());
            return Ok(inside.map(|off| (seg.clone(), off)));
        }
        if base.is_none() {
            return Ok(None);
        }
        // ndarrays, and the wrappers numpy's stride tricks use, keep what
        // they view as `.base`; memoryviews as `.obj`.
        base = match base.getattr(pyo3::intern!(py, "base")) {
            Ok(b) => b,
            Err(_) => match base.getattr(pyo3::intern!(py, "obj")) {
                Ok(o) => o,
                Err(_) => return Ok(None),
            },
        };
    }
    Ok(None)
}

/// Raises ValueError unless the strided view lies inside `nbytes` of data.
#[pyfunction]
fn check_view(nbytes: u64, offset: i64, shape: Vec<i64>, strides: Vec<i64>, itemsize: i64) -> PyResult<()> {
    ndshm::check_view(nbytes, offset, &shape, &strides, itemsize).map_err(view_err)
}
