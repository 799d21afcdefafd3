//! Finding the segment behind a numpy array, for pickling handles: one call
//! instead of `__array_interface__` (which builds a dict) and Python loops.

use crate::PySegment;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

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
