//! The ndarray over a segment's data, built in one call: numpy's
//! `ndarray.__new__(buffer=...)` goes through the buffer protocol and a
//! memoryview, which costs about as much again as the rest of an attach.

use crate::segment::PySegment;
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
    let shape: Vec<i64> = h.shape.iter().map(|&d| d as i64).collect();
    // SAFETY: shape × itemsize covers exactly the segment's data (checked
    // above), laid out in the header's order.
    unsafe { new_view(seg, cls, dtype, &shape, None, h.fortran_order, 0, !s.is_readonly()) }
}

/// An array of type `cls` over `seg`'s data from byte `offset`, with base
/// `seg`: strided as given, or contiguous in C (Fortran) order.
///
/// # Safety
/// Every element of the view must lie inside the segment's data (for an
/// empty view, `offset` within it or at its end); `cls` must be ndarray or
/// a subclass.
#[allow(clippy::too_many_arguments)]
pub unsafe fn new_view<'py>(
    seg: &Bound<'py, PySegment>,
    cls: &Bound<'py, PyType>,
    dtype: &Bound<'py, PyArrayDescr>,
    shape: &[i64],
    strides: Option<&[i64]>,
    fortran: bool,
    offset: i64,
    writeable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = seg.py();
    let s = &seg.get().seg;
    let intp = |v: &[i64]| -> PyResult<Vec<npyffi::npy_intp>> {
        v.iter()
            .map(|&d| npyffi::npy_intp::try_from(d).map_err(|_| PyValueError::new_err("dimension too large")))
            .collect()
    };
    let mut dims = intp(shape)?;
    let mut steps = strides.map(intp).transpose()?;
    let mut flags = if writeable { NPY_ARRAY_WRITEABLE } else { 0 };
    if fortran && steps.is_none() {
        flags |= NPY_ARRAY_F_CONTIGUOUS;
    }
    let strides_ptr = steps.as_mut().map_or(std::ptr::null_mut(), |v| v.as_mut_ptr());
    // Integer arithmetic: an empty view's offset may be the end of the data.
    let data = (s.data_ptr() as isize).wrapping_add(offset as isize) as *mut std::ffi::c_void;
    // SAFETY: the caller vouches that the view lies inside the mapped data;
    // the descriptor reference is stolen, so one is handed over. The
    // mapping outlives the array: the array's base (set below, before
    // anything can see the array) holds the segment.
    unsafe {
        let arr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            cls.as_ptr().cast(),
            dtype.clone().into_ptr().cast(),
            dims.len() as std::os::raw::c_int,
            dims.as_mut_ptr(),
            strides_ptr,
            data,
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
