//! Pickling shared arrays as handles and back, one native call each way.
//!
//! A handle pickles as `rebuild(wire)`, `wire` being the core's handle
//! bytes (`ndshm::handle`, docs/FORMAT.md): the segment, the view and the
//! host. Both directions run once per task that carries an array, so they
//! stay in native code. The core checks everything read from a handle
//! (format, dtype, the view's extent) before any access; a malformed one
//! is a `ValueError`, never a view outside its segment's data.

use crate::dtypes::dtype_of;
use crate::errors::handle_err;
use crate::foreign::ForeignHandle;
use crate::segment::PySegment;
use crate::view::view_of;
use ndshm::handle::{decode_ref, encode_ref, Handle, HandleError, SegmentRef, View};
use ndshm::{DType, Segment};
use numpy::npyffi::NPY_ARRAY_WRITEABLE;
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyTuple, PyType};
use std::os::fd::AsRawFd;

/// The array class views are made of (the package's `SharedArray`).
static ARRAY_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
/// This module's `rebuild`, which pickled handles name.
static REBUILD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Sets the class of the arrays this module makes (once: the package's
/// `SharedArray`, a subclass of numpy.ndarray).
#[pyfunction]
pub fn register_array_class(cls: &Bound<'_, PyType>) -> PyResult<()> {
    if !cls.is_subclass_of::<PyUntypedArray>()? {
        return Err(pyo3::exceptions::PyTypeError::new_err("the array class must subclass numpy.ndarray"));
    }
    let _ = ARRAY_CLASS.set(cls.py(), cls.clone().unbind());
    Ok(())
}

fn array_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    ARRAY_CLASS
        .get(py)
        .map(|c| c.bind(py))
        .ok_or_else(|| PyValueError::new_err("ndshm's array class is not registered"))
}

/// Adds the handle functions and `host`, and remembers the module's
/// `rebuild` (which pickled handles name).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(register_array_class, m)?)?;
    m.add_function(wrap_pyfunction!(shared_view, m)?)?;
    m.add_function(wrap_pyfunction!(handle, m)?)?;
    m.add_function(wrap_pyfunction!(rebuild, m)?)?;
    m.add_function(wrap_pyfunction!(segment_ref, m)?)?;
    m.add_function(wrap_pyfunction!(attach_ref, m)?)?;
    m.add_function(wrap_pyfunction!(host, m)?)?;
    let _ = REBUILD.set(m.py(), m.getattr("rebuild")?.unbind());
    Ok(())
}

pub fn rebuild_fn(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    REBUILD.get(py).map(|f| f.bind(py).clone()).ok_or_else(|| PyValueError::new_err("ndshm._native is not initialised"))
}

/// The segment's dtype object (made once per segment object).
pub fn segment_dtype<'py>(seg: &Bound<'py, PySegment>) -> PyResult<Bound<'py, PyArrayDescr>> {
    let py = seg.py();
    let me = seg.get();
    if let Some(d) = me.dtype.get(py) {
        return Ok(d.bind(py).clone());
    }
    let info = me.seg.info();
    let d = crate::dtypes::dtype_of_described(py, &info.header.dtype, &info.descr)?;
    let _ = me.dtype.set(py, d.clone().unbind());
    Ok(d)
}

/// The whole of `seg`'s data as the package's array class, with the dtype
/// its header gives.
pub fn whole_array<'py>(seg: &Bound<'py, PySegment>) -> PyResult<Bound<'py, PyAny>> {
    let py = seg.py();
    crate::array::array_of(seg, array_class(py)?, &segment_dtype(seg)?)
}

/// The reference a handle carries to name `seg`; counts a pending handoff
/// for an anonymous segment (only call it when the handle really leaves).
fn ref_of(seg: &Segment) -> SegmentRef {
    match seg.name() {
        Some(name) => SegmentRef::Named { name: name.to_string(), id: seg.id() },
        None => {
            seg.note_sent();
            let fd = seg.fd().map_or(-1, |f| f.as_raw_fd());
            SegmentRef::Anonymous { pid: std::process::id(), fd, id: seg.id() }
        }
    }
}

/// The wire form of a reference to `seg` (what a lock pickles as); counts
/// a pending handoff for an anonymous segment.
#[pyfunction]
pub fn segment_ref<'py>(seg: &Bound<'py, PySegment>) -> Bound<'py, PyBytes> {
    let r = ref_of(&seg.get().seg);
    PyBytes::new(seg.py(), &encode_ref(&r, ndshm::host::this()))
}

/// The segment and data offset of `arr`'s memory, when all of it lies
/// inside a published segment.
fn published_view_of<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Option<(Bound<'py, PySegment>, i64)>> {
    Ok(view_of(arr)?.filter(|(seg, _)| seg.get().seg.is_published()))
}

/// `(rebuild, (wire,))` pickling `arr` as a handle, or None when its memory
/// is not (all) inside a published segment. A view whose dtype has no
/// faithful `.npy` description (overlapping or out-of-order fields) is
/// refused: it cannot be sent as a handle, and a copy would not be shared.
#[pyfunction]
pub fn handle<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let py = arr.py();
    let Some((seg, offset)) = published_view_of(arr)? else { return Ok(None) };
    let s = &seg.get().seg;
    let dtype = arr.dtype();
    let seg_dtype = segment_dtype(&seg)?;
    let dt = if dtype.is(&seg_dtype) || dtype.is_equiv_to(&seg_dtype) { None } else { Some(describe(&dtype)?) };
    // SAFETY: `arr` is a live ndarray; `flags` is a plain field of it (read
    // directly: numpy's Python-level getter warns for broadcast views).
    let flags = unsafe { (*arr.as_array_ptr()).fields.flags };
    let readonly = s.is_readonly() || flags & NPY_ARRAY_WRITEABLE == 0;
    let view = View {
        offset,
        shape: arr.shape().iter().map(|&d| d as i64).collect(),
        strides: arr.strides().iter().map(|&d| d as i64).collect(),
        dtype: dt,
    };
    let h = Handle { segment: ref_of(s), view, readonly, host: ndshm::host::this().clone() };
    let wire = PyBytes::new(py, &h.encode());
    Ok(Some((rebuild_fn(py)?, (wire,)).into_pyobject(py)?))
}

/// The validated text form of a view's dtype, refused when it does not
/// describe that dtype faithfully.
fn describe(dtype: &Bound<'_, PyArrayDescr>) -> PyResult<DType> {
    let py = dtype.py();
    let cannot = |why: String| {
        PyValueError::new_err(format!(
            "a view with dtype {dtype} cannot be sent as a handle: {why}; send a view with a plain dtype, or a copy"
        ))
    };
    let parsed = crate::dtypes::describe(dtype).map_err(|e| {
        if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) {
            e
        } else {
            cannot(e.value(py).to_string())
        }
    })?;
    if !dtype_of(py, &parsed).is_ok_and(|back| back.is_equiv_to(dtype)) {
        return Err(cannot("its fields overlap or are out of order".into()));
    }
    Ok(parsed)
}

/// Maps the segment a reference names (`segment_ref`'s output), reusing
/// this process's mapping; a reference from another host is refused.
#[pyfunction]
pub fn attach_ref(py: Python<'_>, r: &[u8], readonly: bool) -> PyResult<PySegment> {
    let (seg_ref, host) = decode_ref(r).map_err(handle_err)?;
    ndshm::receive::check_host(&host).map_err(handle_err)?;
    Ok(PySegment::new(attach(py, &seg_ref, readonly)?))
}

fn attach(py: Python<'_>, r: &SegmentRef, readonly: bool) -> PyResult<Segment> {
    match r {
        // A named attach may wait for a creator: let other threads run.
        SegmentRef::Named { .. } => py.detach(|| ndshm::receive::attach(r, readonly)),
        SegmentRef::Anonymous { .. } => ndshm::receive::attach(r, readonly),
    }
    .map_err(handle_err)
}

/// Unpickles a handle: the core decodes and checks it, maps the segment
/// (once per process) and checks the view against it; then the view is
/// built. A handle from another host gives the package's foreign handle,
/// which passes it on.
#[pyfunction]
pub fn rebuild<'py>(py: Python<'py>, wire: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let bytes = wire.cast::<PyBytes>().map_err(|_| handle_err(HandleError::Malformed("not bytes")))?;
    let h = Handle::decode(bytes.as_bytes()).map_err(handle_err)?;
    if ndshm::receive::check_host(&h.host).is_err() {
        let foreign = ForeignHandle::new(h.host.label(), bytes.clone().unbind());
        return Ok(Bound::new(py, foreign)?.into_any());
    }
    let seg = Bound::new(py, PySegment::new(attach(py, &h.segment, h.readonly)?))?;
    let s = &seg.get().seg;
    h.view.check(s.data_len() as u64, s.header().dtype.itemsize()).map_err(|e| handle_err(e.into()))?;
    let dt = match &h.view.dtype {
        None => segment_dtype(&seg)?,
        Some(d) => dtype_of(py, d).map_err(|e| PyValueError::new_err(format!("bad ndshm handle: {}", e.value(py))))?,
    };
    let writeable = !h.readonly && !s.is_readonly();
    let View { offset, shape, strides, .. } = &h.view;
    // SAFETY: the core checked that every byte of the view, with the
    // item size of `dt` (checked equal to the core's), lies inside the
    // segment's data (an empty view's offset within it or at its end).
    unsafe { crate::array::new_view(&seg, array_class(py)?, &dt, shape, Some(strides), false, *offset, writeable) }
}

/// The same view (offset, shape, strides, dtype) of the same memory as an
/// array of the package's class, when `arr`'s memory lies inside a
/// published segment; None otherwise. Read-only if `arr` is. Nothing is
/// counted as sent: no handle leaves the process.
#[pyfunction]
pub fn shared_view<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = arr.py();
    let Some((seg, offset)) = published_view_of(arr)? else { return Ok(None) };
    let s = &seg.get().seg;
    let dtype = arr.dtype();
    if dtype.has_object() {
        return Ok(None);
    }
    let shape: Vec<i64> = arr.shape().iter().map(|&d| d as i64).collect();
    let strides: Vec<i64> = arr.strides().iter().map(|&d| d as i64).collect();
    let view = View { offset, shape, strides, dtype: None };
    view.check(s.data_len() as u64, dtype.itemsize()).map_err(|e| handle_err(e.into()))?;
    // SAFETY: as in `handle`; `flags` is a plain field of a live ndarray.
    let flags = unsafe { (*arr.as_array_ptr()).fields.flags };
    let writeable = !s.is_readonly() && flags & NPY_ARRAY_WRITEABLE != 0;
    // SAFETY: checked just above: every byte of the view, with `dtype`'s
    // item size, lies inside the segment's data.
    let v = unsafe {
        crate::array::new_view(
            &seg,
            array_class(py)?,
            &dtype,
            &view.shape,
            Some(&view.strides),
            false,
            offset,
            writeable,
        )
    }?;
    Ok(Some(v))
}

/// This host as handles name it: `(node name, key)` (see `ndshm::host`).
#[pyfunction]
fn host() -> (String, u64) {
    let h = ndshm::host::this();
    (h.name.clone(), h.key)
}
