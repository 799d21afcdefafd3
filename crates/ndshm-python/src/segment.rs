//! `ndshm._native.Segment`: a mapped segment for Python (its array data
//! through the buffer protocol), and the calls that make or find one:
//! `create`, `attach` (by name) and `lookup` (this process's mapping).

use crate::errors::{attach_err, create_err, seg_err};
use crate::{array, dtypes, handle};
use ndshm::{Created, DType, Header, Segment};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::os::fd::AsRawFd;
use std::os::raw::c_int;

/// Adds the `Segment` class and `create`, `attach` and `lookup`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySegment>()?;
    m.add_function(wrap_pyfunction!(create, m)?)?;
    m.add_function(wrap_pyfunction!(attach, m)?)?;
    m.add_function(wrap_pyfunction!(lookup, m)?)?;
    Ok(())
}

/// A mapped segment. Exposes its array data through the buffer protocol;
/// the mapping lives as long as this object or any buffer taken from it.
#[pyclass(frozen, weakref, dict, name = "Segment", module = "ndshm._native")]
pub struct PySegment {
    pub(crate) seg: Segment,
    /// The dtype object, made on first use (see `handle::segment_dtype`).
    pub(crate) dtype: pyo3::sync::PyOnceLock<Py<numpy::PyArrayDescr>>,
    /// A segment made here, until it is published or abandoned.
    created: std::sync::Mutex<Option<Created>>,
}

impl PySegment {
    pub(crate) fn new(seg: Segment) -> Self {
        PySegment { seg, dtype: pyo3::sync::PyOnceLock::new(), created: std::sync::Mutex::new(None) }
    }

    fn unpublished(c: Created) -> Self {
        PySegment { seg: (*c).clone(), dtype: pyo3::sync::PyOnceLock::new(), created: std::sync::Mutex::new(Some(c)) }
    }

    fn take_created(&self) -> Option<Created> {
        self.created.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[pymethods]
impl PySegment {
    /// The array's dtype (numpy.dtype), as the header describes it.
    #[getter]
    fn dtype<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, numpy::PyArrayDescr>> {
        handle::segment_dtype(slf)
    }

    /// Random 64-bit id of the segment.
    #[getter]
    fn id(&self) -> u64 {
        self.seg.id()
    }

    /// Name of a named segment, None for anonymous ones.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.seg.name()
    }

    /// The header's dtype description, in numpy's .npy syntax.
    #[getter]
    fn descr(&self) -> &str {
        &self.seg.info().descr
    }

    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.seg.header().shape)
    }

    #[getter]
    fn fortran_order(&self) -> bool {
        self.seg.header().fortran_order
    }

    #[getter]
    fn readonly(&self) -> bool {
        self.seg.is_readonly()
    }

    /// Bytes of array data.
    #[getter]
    fn nbytes(&self) -> usize {
        self.seg.data_len()
    }

    /// Address of the first data byte in this process.
    #[getter]
    fn address(&self) -> usize {
        self.seg.data_ptr() as usize
    }

    /// The segment's data as an array of type `cls` (numpy.ndarray or a
    /// subclass) with `dtype`, which must match the header.
    fn array<'py>(
        slf: &Bound<'py, Self>,
        cls: &Bound<'py, pyo3::types::PyType>,
        dtype: &Bound<'py, numpy::PyArrayDescr>,
    ) -> PyResult<Bound<'py, PyAny>> {
        array::array_of(slf, cls, dtype)
    }

    /// Allocates the data bytes `[offset, offset + len)` of a lazy segment
    /// (MemoryError if there is no room).
    fn populate(&self, py: Python<'_>, offset: usize, len: usize) -> PyResult<()> {
        let seg = &self.seg;
        py.detach(|| seg.populate(offset, len)).map_err(seg_err)
    }

    /// Whether the creator of this anonymous segment still holds it open.
    fn held_by_creator(&self) -> bool {
        self.seg.held_by_creator()
    }

    /// File number handles carry (anonymous segments), -1 for named ones.
    #[getter]
    fn fd(&self) -> i32 {
        self.seg.fd().map_or(-1, |f| f.as_raw_fd())
    }

    #[getter]
    fn owner_pid(&self) -> u32 {
        self.seg.info().owner_pid
    }

    /// Creation time, seconds since the epoch.
    #[getter]
    fn created(&self) -> f64 {
        self.seg.info().created_ns as f64 / 1e9
    }

    #[getter]
    fn published(&self) -> bool {
        self.seg.is_published()
    }

    /// Handles sent and not yet attached.
    #[getter]
    fn pending(&self) -> u32 {
        self.seg.pending()
    }

    /// Makes a created segment visible to other processes (nothing if it
    /// is already).
    fn publish(&self) {
        if let Some(c) = self.take_created() {
            c.publish();
        }
    }

    /// Gives up an unpublished segment (a named one loses its name now).
    fn abandon(&self) {
        if let Some(c) = self.take_created() {
            c.abandon();
        }
    }

    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let seg = &slf.get().seg;
        let readonly = c_int::from(seg.is_readonly());
        // SAFETY: the pointer and length describe this segment's data, which
        // stays mapped while the buffer holds a reference to `slf` (set by
        // PyBuffer_FillInfo).
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                seg.data_ptr() as *mut _,
                seg.data_len() as ffi::Py_ssize_t,
                readonly,
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(PyErr::fetch(slf.py()))
        }
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __repr__(&self) -> String {
        let h = self.seg.header();
        format!(
            "<ndshm segment {} dtype={} shape={:?}{}>",
            self.seg.name().map_or_else(|| format!("anonymous {:#x}", self.seg.id()), |n| format!("{n:?}")),
            h.dtype.descr(),
            h.shape,
            if self.seg.is_readonly() { " readonly" } else { "" }
        )
    }
}

/// Creates a segment (named, or anonymous when `name` is None), not yet
/// published, for `dtype` (a numpy dtype, or its `.npy` description):
/// zeroed, or a copy of `src`, a C-contiguous byte buffer holding exactly
/// the array's bytes in its memory order.
#[pyfunction]
#[pyo3(signature = (dtype, shape, fortran_order, name=None, src=None, lazy=false))]
fn create(
    py: Python<'_>,
    dtype: &Bound<'_, PyAny>,
    shape: Vec<usize>,
    fortran_order: bool,
    name: Option<&str>,
    src: Option<&Bound<'_, PyAny>>,
    lazy: bool,
) -> PyResult<PySegment> {
    let (descr, given) = match dtype.cast::<numpy::PyArrayDescr>() {
        // A subarray dtype is described as its bytes: its array gets the
        // dtype made from the description instead.
        Ok(d) => (dtypes::describe(d)?, (!numpy::PyArrayDescrMethods::has_subarray(d)).then(|| d.clone())),
        Err(_) => {
            let text = dtype.cast::<pyo3::types::PyString>().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err("dtype must be a numpy.dtype or a .npy description")
            })?;
            (DType::parse(text.to_str()?).map_err(|e| create_err(e.into()))?, None)
        }
    };
    let h = Header { dtype: descr, shape, fortran_order };
    if lazy && (name.is_some() || src.is_some()) {
        return Err(PyValueError::new_err("only an anonymous, empty segment can be lazy"));
    }
    let seg = match src {
        None if lazy => py.detach(|| Segment::create_lazy(&h)),
        None => py.detach(|| Segment::create(&h, name)),
        Some(src) => {
            let buf = PyBuffer::<u8>::get(src)?;
            if !buf.is_c_contiguous() {
                return Err(PyValueError::new_err("src must be a C-contiguous byte buffer"));
            }
            let (ptr, len) = (buf.buf_ptr() as usize, buf.len_bytes());
            // SAFETY: `buf` keeps the exporter's memory valid until it is
            // dropped after the call.
            let r = py.detach(|| unsafe { Segment::create_from(&h, name, ptr as *const u8, len) });
            drop(buf);
            r
        }
    }
    .map_err(create_err)?;
    let seg = PySegment::unpublished(seg);
    if let Some(d) = given {
        let _ = seg.dtype.set(py, d.unbind());
    }
    Ok(seg)
}

/// The named array `name` (a `SharedArray` over the whole segment).
#[pyfunction]
#[pyo3(signature = (name, readonly=false))]
fn attach<'py>(py: Python<'py>, name: &str, readonly: bool) -> PyResult<Bound<'py, PyAny>> {
    let seg = py.detach(|| Segment::attach(name, readonly)).map_err(attach_err)?;
    handle::whole_array(&Bound::new(py, PySegment::new(seg))?)
}

/// This process's mapping of segment `id`, if it holds one.
#[pyfunction]
#[pyo3(signature = (id, readonly=false))]
fn lookup(id: u64, readonly: bool) -> Option<PySegment> {
    Segment::lookup(id, readonly).map(PySegment::new)
}
