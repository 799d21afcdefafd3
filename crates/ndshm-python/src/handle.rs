//! Pickling shared arrays as handles and back, one native call each way.
//!
//! A handle is `rebuild(ref, offset, shape, strides, dtype, readonly)`:
//! `ref` names the segment (`(name, id, host)` or `(pid, fd, id, host)`),
//! the rest is the view (see `python/ndshm/arrays.py`). Both directions run
//! once per task that carries an array, so they stay in native code: in
//! Python they cost several µs each, more than the rest of a handoff.
//! Everything read from a handle is checked before use; a malformed one is
//! a `ValueError` (or `TypeError`), never a view outside its segment.

use crate::errors::{seg_err, view_err};
use crate::view::view_of;
use crate::PySegment;
use ndshm::Segment;
use numpy::npyffi::NPY_ARRAY_WRITEABLE;
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyInt, PyString, PyTuple, PyType};
use std::os::fd::AsRawFd;

/// What handles need from the Python package, given once at its import.
struct Config {
    rebuild: Py<PyAny>,
    label: String,
    label_obj: Py<PyString>,
    array_type: Py<PyType>,
    foreign: Py<PyAny>,
    dtype_of: Py<PyAny>,
    descr_of: Py<PyAny>,
}

static CONFIG: PyOnceLock<Config> = PyOnceLock::new();

fn config(py: Python<'_>) -> PyResult<&Config> {
    if CONFIG.get(py).is_none() {
        py.import("ndshm.arrays")?; // configures
    }
    CONFIG.get(py).ok_or_else(|| PyValueError::new_err("ndshm handles are not configured"))
}

/// Sets what handles need (once): the rebuild function they name, this
/// host's label, the array class, the class of handles from other hosts,
/// and the dtype helpers (`.npy` description to dtype, and its check).
#[pyfunction]
pub fn configure_handles(
    py: Python<'_>,
    rebuild: Py<PyAny>,
    label: Bound<'_, PyString>,
    array_type: Py<PyType>,
    foreign: Py<PyAny>,
    dtype_of: Py<PyAny>,
    descr_of: Py<PyAny>,
) -> PyResult<()> {
    let label_str = label.to_str()?.to_string();
    let cfg = Config { rebuild, label: label_str, label_obj: label.unbind(), array_type, foreign, dtype_of, descr_of };
    let _ = CONFIG.set(py, cfg);
    Ok(())
}

/// The segment's dtype object (made once per segment object).
pub fn segment_dtype<'py>(seg: &Bound<'py, PySegment>) -> PyResult<Bound<'py, PyArrayDescr>> {
    let py = seg.py();
    let me = seg.get();
    if let Some(d) = me.dtype.get(py) {
        return Ok(d.bind(py).clone());
    }
    let d = config(py)?.dtype_of.bind(py).call1((&me.seg.info().descr,))?.cast_into::<PyArrayDescr>()?;
    let _ = me.dtype.set(py, d.clone().unbind());
    Ok(d)
}

/// The whole of `seg`'s data as the package's array class, with the dtype
/// its header gives.
pub fn whole_array<'py>(seg: &Bound<'py, PySegment>) -> PyResult<Bound<'py, PyAny>> {
    let py = seg.py();
    let cls = config(py)?.array_type.bind(py);
    crate::array::array_of(seg, cls, &segment_dtype(seg)?)
}

/// What a handle carries to name `seg`; counts a pending handoff for an
/// anonymous segment.
#[pyfunction]
pub fn segment_ref<'py>(seg: &Bound<'py, PySegment>) -> PyResult<Bound<'py, PyTuple>> {
    let py = seg.py();
    let s = &seg.get().seg;
    let label = config(py)?.label_obj.bind(py);
    match s.name() {
        Some(name) => (name, s.id(), label).into_pyobject(py),
        None => {
            s.note_sent();
            let fd = s.fd().map_or(-1, |f| f.as_raw_fd());
            (std::process::id(), fd, s.id(), label).into_pyobject(py)
        }
    }
}

/// `(rebuild, args)` pickling `arr` as a handle, or None when its memory
/// is not (all) inside a published segment.
#[pyfunction]
pub fn handle<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let py = arr.py();
    let Some((seg, offset)) = view_of(arr)? else { return Ok(None) };
    let s = &seg.get().seg;
    if !s.is_published() {
        return Ok(None);
    }
    let dtype = arr.dtype();
    let seg_dtype = segment_dtype(&seg)?;
    let dt = if dtype.is(&seg_dtype) || dtype.is_equiv_to(&seg_dtype) { None } else { Some(dtype) };
    // SAFETY: `arr` is a live ndarray; `flags` is a plain field of it (read
    // directly: numpy's Python-level getter warns for broadcast views).
    let flags = unsafe { (*arr.as_array_ptr()).fields.flags };
    let readonly = s.is_readonly() || flags & NPY_ARRAY_WRITEABLE == 0;
    let shape = PyTuple::new(py, arr.shape())?;
    let strides = PyTuple::new(py, arr.strides())?;
    let args = (segment_ref(&seg)?, offset, shape, strides, dt, readonly).into_pyobject(py)?;
    Ok(Some((config(py)?.rebuild.bind(py), args).into_pyobject(py)?))
}

fn bad(what: &str) -> PyErr {
    PyValueError::new_err(format!("bad ndshm handle: {what}"))
}

/// An exact int (not a bool, not a subclass) in `lo..hi`.
fn int_in<T: for<'a> FromPyObject<'a, 'a>>(v: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    if !v.is_exact_instance_of::<PyInt>() {
        return Err(bad(what));
    }
    v.extract::<T>().map_err(|_| bad(what))
}

/// An exact tuple of at most 64 ints that fit in 64 bits.
fn int_tuple(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    let t = v.cast_exact::<PyTuple>().map_err(|_| bad(what))?;
    if t.len() > 64 {
        return Err(bad(what));
    }
    t.iter().map(|x| int_in::<i64>(&x, what)).collect()
}

/// Maps the segment a handle's reference names, reusing this process's
/// mapping, and returns it with the host the reference names.
fn split_ref<'py>(r: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyString>)> {
    let t = r.cast_exact::<PyTuple>().map_err(|_| bad("segment reference"))?;
    if !(3..=4).contains(&t.len()) {
        return Err(bad("segment reference"));
    }
    let host = t.get_item(t.len() - 1)?.cast_exact::<PyString>().map_err(|_| bad("host"))?.clone();
    Ok((t.clone(), host))
}

fn attach_ref_parts(py: Python<'_>, t: &Bound<'_, PyTuple>, readonly: bool) -> PyResult<Segment> {
    let first = t.get_item(0)?;
    if t.len() == 3 && first.is_exact_instance_of::<PyString>() {
        let name: String = first.extract()?;
        let id: u64 = int_in(&t.get_item(1)?, "segment id")?;
        if id == 0 {
            return Err(bad("segment id"));
        }
        return py.detach(|| Segment::attach_named_handle(&name, id, readonly)).map_err(seg_err);
    }
    if t.len() == 4 {
        let pid: i64 = int_in(&first, "pid")?;
        let fd: i64 = int_in(&t.get_item(1)?, "fd")?;
        let id: u64 = int_in(&t.get_item(2)?, "segment id")?;
        if !(1..1 << 31).contains(&pid) || !(0..1 << 31).contains(&fd) || id == 0 {
            return Err(bad("segment reference"));
        }
        return Segment::attach_anonymous(pid as u32, fd as i32, id, readonly).map_err(seg_err);
    }
    Err(bad("segment reference"))
}

/// Maps the segment a reference names (`segment_ref`'s output), reusing
/// this process's mapping; a reference from another host is refused.
#[pyfunction]
pub fn attach_ref(py: Python<'_>, r: &Bound<'_, PyAny>, readonly: bool) -> PyResult<PySegment> {
    let (t, host) = split_ref(r)?;
    let cfg = config(py)?;
    if host.to_str()? != cfg.label {
        let error = py.import("ndshm.hosts")?.getattr("foreign_error")?.call1((host,))?;
        return Err(PyErr::from_value(error));
    }
    Ok(PySegment::new(attach_ref_parts(py, &t, readonly)?))
}

/// Unpickles a handle: maps the segment (once per process) and rebuilds
/// the view; a handle from another host gives the package's foreign
/// handle, which passes it on.
#[pyfunction]
pub fn rebuild<'py>(
    py: Python<'py>,
    r: &Bound<'py, PyAny>,
    offset: &Bound<'py, PyAny>,
    shape: &Bound<'py, PyAny>,
    strides: &Bound<'py, PyAny>,
    dtype: &Bound<'py, PyAny>,
    readonly: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = config(py)?;
    let (t, host) = split_ref(r)?;
    if host.to_str()? != cfg.label {
        let args = (r, offset, shape, strides, dtype, readonly);
        return cfg.foreign.bind(py).call1((host, args));
    }
    let offset: i64 = int_in(offset, "offset")?;
    if !readonly.is_exact_instance_of::<PyBool>() {
        return Err(bad("readonly"));
    }
    let readonly = readonly.is_truthy()?;
    let shape = int_tuple(shape, "shape")?;
    let strides = int_tuple(strides, "strides")?;
    let seg = Bound::new(py, PySegment::new(attach_ref_parts(py, &t, readonly)?))?;
    let dt = if dtype.is_none() {
        segment_dtype(&seg)?
    } else {
        let dt = dtype.cast::<PyArrayDescr>().map_err(|_| bad("dtype"))?.clone();
        cfg.descr_of.bind(py).call1((&dt,))?; // refuses object and variable-width dtypes
        dt
    };
    let s = &seg.get().seg;
    ndshm::check_view(s.data_len() as u64, offset, &shape, &strides, dt.itemsize() as i64).map_err(view_err)?;
    let writeable = !readonly && !s.is_readonly();
    // SAFETY: check_view proved every element of the view lies inside the
    // segment's data (an empty view's offset lies within it or at its end).
    unsafe {
        crate::array::new_view(&seg, cfg.array_type.bind(py), &dt, &shape, Some(&strides), false, offset, writeable)
    }
}
