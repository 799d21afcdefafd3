//! `ndshm._native`: thin bindings over the `ndshm` crate. Logic lives in the
//! core; this file converts types and maps errors (once, in `errors`).

mod array;
mod dispatch;
mod dtypes;
mod errors;
mod foreign;
mod handle;
mod lock;
mod view;

use errors::{attach_err, create_err, seg_err, view_err};
use ndshm::{Created, DType, Header, Segment};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::os::fd::AsRawFd;
use std::os::raw::c_int;

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

/// Lets go of received segments kept mapped (see `ndshm::cache`); the
/// number kept before.
#[pyfunction]
fn release_cached() -> usize {
    let n = ndshm::cache::len();
    ndshm::cache::clear();
    n
}

/// This process's mapping of segment `id`, if it holds one.
#[pyfunction]
#[pyo3(signature = (id, readonly=false))]
fn lookup(id: u64, readonly: bool) -> Option<PySegment> {
    Segment::lookup(id, readonly).map(PySegment::new)
}

/// Raises ValueError unless the strided view lies inside `nbytes` of data.
#[pyfunction]
fn check_view(nbytes: u64, offset: i64, shape: Vec<i64>, strides: Vec<i64>, itemsize: i64) -> PyResult<()> {
    ndshm::check_view(nbytes, offset, &shape, &strides, itemsize).map_err(view_err)
}

/// Parses a dtype description; returns its item size.
#[pyfunction]
fn descr_itemsize(descr: &str) -> PyResult<usize> {
    DType::parse(descr).map(|d| d.itemsize()).map_err(|e| seg_err(e.into()))
}

#[pyfunction]
fn validate_name(name: &str) -> PyResult<()> {
    ndshm::name::validate(name).map_err(seg_err)
}

#[pyfunction]
fn delete(name: &str) -> PyResult<()> {
    ndshm::delete(name).map_err(seg_err)
}

#[pyfunction]
fn exists(name: &str) -> PyResult<bool> {
    ndshm::exists(name).map_err(seg_err)
}

fn entry_dict<'py>(py: Python<'py>, e: &ndshm::Entry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &e.name)?;
    let (status, detail) = match &e.status {
        ndshm::Status::Ready => ("ready", None),
        ndshm::Status::Creating => ("creating", None),
        ndshm::Status::Abandoned => ("abandoned", None),
        ndshm::Status::Corrupt(why) => ("corrupt", Some(why.clone())),
    };
    d.set_item("status", status)?;
    d.set_item("detail", detail)?;
    d.set_item("descr", e.header.as_ref().map(|h| h.dtype.descr()))?;
    d.set_item("shape", e.header.as_ref().map(|h| PyTuple::new(py, &h.shape)).transpose()?)?;
    d.set_item("fortran_order", e.header.as_ref().map(|h| h.fortran_order))?;
    d.set_item("nbytes", e.control.as_ref().map(|c| c.data_len))?;
    d.set_item("owner_pid", e.control.as_ref().map(|c| c.owner_pid))?;
    d.set_item("owner_alive", e.owner_alive)?;
    d.set_item("created", e.control.as_ref().map(|c| c.created_ns as f64 / 1e9))?;
    d.set_item("file_len", e.file_len)?;
    Ok(d)
}

/// What the named segment's file says, without mapping it.
#[pyfunction]
fn info<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
    let e = ndshm::info(name).map_err(seg_err)?;
    entry_dict(py, &e)
}

/// Every named segment (any status).
#[pyfunction]
fn list_segments<'py>(py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let entries = ndshm::list().map_err(seg_err)?;
    entries.iter().map(|e| entry_dict(py, e)).collect()
}

/// Removes segments that dead creators left unfinished; returns their names.
#[pyfunction]
fn gc() -> PyResult<Vec<String>> {
    ndshm::gc().map_err(seg_err)
}

/// Closes lingering anonymous segments whose handoffs are settled.
#[pyfunction]
fn sweep() {
    ndshm::handoff::sweep()
}

/// At process exit: starts a keeper for unsettled handoffs; its pid or None.
#[pyfunction]
fn at_exit() -> Option<u32> {
    ndshm::keeper::at_exit()
}

/// This host as handles name it: `(node name, key)` (see `ndshm::host`).
#[pyfunction]
fn host() -> (String, u64) {
    let h = ndshm::host::this();
    (h.name.clone(), h.key)
}

/// Directory of named segments.
#[pyfunction]
fn segment_dir() -> String {
    ndshm::name::dir().to_string_lossy().into_owned()
}

/// Whether this process keeps big anonymous segments in a private tmpfs
/// with huge pages (making it on first call where the system allows).
#[pyfunction]
fn private_tmpfs(py: Python<'_>) -> bool {
    py.detach(ndshm::tmpfs::available)
}

#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySegment>()?;
    m.add_class::<lock::PyLock>()?;
    lock::install(&m.py().get_type::<lock::PyLock>())?;
    dispatch::register(m)?;
    m.add("LockOwnerDied", m.py().get_type::<lock::LockOwnerDied>())?;
    m.add("CorruptSegment", m.py().get_type::<errors::CorruptSegment>())?;
    m.add("AbandonedSegment", m.py().get_type::<errors::AbandonedSegment>())?;
    m.add_function(wrap_pyfunction!(create, m)?)?;
    m.add_function(wrap_pyfunction!(attach, m)?)?;
    m.add_function(wrap_pyfunction!(lookup, m)?)?;
    m.add_function(wrap_pyfunction!(release_cached, m)?)?;
    m.add_function(wrap_pyfunction!(view::view_of, m)?)?;
    m.add_function(wrap_pyfunction!(check_view, m)?)?;
    m.add_function(wrap_pyfunction!(descr_itemsize, m)?)?;
    m.add_function(wrap_pyfunction!(validate_name, m)?)?;
    m.add_function(wrap_pyfunction!(delete, m)?)?;
    m.add_function(wrap_pyfunction!(exists, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(list_segments, m)?)?;
    m.add_function(wrap_pyfunction!(gc, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(at_exit, m)?)?;
    m.add_function(wrap_pyfunction!(segment_dir, m)?)?;
    m.add_function(wrap_pyfunction!(private_tmpfs, m)?)?;
    m.add_class::<foreign::ForeignHandle>()?;
    m.add_function(wrap_pyfunction!(handle::register_array_class, m)?)?;
    m.add_function(wrap_pyfunction!(handle::shared_view, m)?)?;
    m.add_function(wrap_pyfunction!(dtypes::py_descr_of, m)?)?;
    m.add_function(wrap_pyfunction!(dtypes::py_dtype_of, m)?)?;
    m.add_function(wrap_pyfunction!(handle::handle, m)?)?;
    m.add_function(wrap_pyfunction!(handle::rebuild, m)?)?;
    m.add_function(wrap_pyfunction!(handle::segment_ref, m)?)?;
    m.add_function(wrap_pyfunction!(handle::attach_ref, m)?)?;
    m.add_function(wrap_pyfunction!(host, m)?)?;
    m.add("PAGE", ndshm::format::PAGE)?;
    m.add("FORMAT_VERSION", ndshm::format::FORMAT_VERSION)?;
    m.add("MAX_NAME_LEN", ndshm::name::MAX_LEN)?;
    handle::init(m)?;
    Ok(())
}
