//! The ndarray over a segment's data, built in one call: numpy's
//! `ndarray.__new__(buffer=...)` goes through the buffer protocol and a
//! memoryview, which costs about as much again as the rest of an attach.

use crate::PySegment;
use numpy::npyffi::{self, NPY_ARRAY_F_CONTIGUOUS, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The whole of `seg`'s data as an array of type `cls` (ndarray or a
/// subclass) with item type `dtype`, whose base is `seg`.
pub fn array_of<'py>(
    seg: &Bound<'py, PySegment>,
    cls: &Bound<'py, PyType>,
    dtype: &Bound<'py, PyArrayDescr>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = seg.py();
    let s = &seg.get().seg;
    let h = s.header();
    // The array must cover exactly the segment's data: numpy trusts these.
    let itemsize = dtype.itemsize();
    let nbytes = h.shape.iter().try_fold(itemsize, |n, &d| n.checked_mul(d));
    if itemsize != h.dtype.itemsize() || nbytes != Some(s.data_len()) {
        return Err(PyValueError::new_err("dtype does not match the segment's header"));
    }
    if !cls.is_subclass_of::<PyUntypedArray>()? {
        return Err(PyTypeError::new_err("cls must be numpy.ndarray or a subclass"));
    }
    let mut dims: Vec<npyffi::npy_intp> = Vec::with_capacity(h.shape.len());
    for &d in &h.shape {
        dims.push(npyffi::npy_intp::try_from(d).map_err(|_| PyValueError::new_err("dimension too large"))?);
    }
    let mut flags = if s.is_readonly() { 0 } else { NPY_ARRAY_WRITEABLE };
    if h.fortran_order {
        flags |= NPY_ARRAY_F_CONTIGUOUS;
    }
    // SAFETY: `data` points at `data_len` mapped bytes, which the shape ×
    // itemsize checked above covers exactly, in the order the flags give
    // (numpy computes the strides); the descriptor reference is stolen, so
    // one is handed over. The mapping outlives the array: the array's base
    // (set below, before anything can see the array) holds the segment.
    unsafe {
        let arr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            cls.as_ptr().cast(),
            dtype.clone().into_ptr().cast(),
            dims.len() as std::os::raw::c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            s.data_ptr().cast(),
            flags,
            std::ptr::null_mut(),
        );
        let arr = Bound::from_owned_ptr_or_err(py, arr)?;
        // Steals the reference to the base.
        if PY_ARRAY_API.PyArray_SetBaseObject(py, arr.as_ptr().cast(), seg.clone().into_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(arr)
    }
}
