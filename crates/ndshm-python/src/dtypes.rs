//! numpy dtypes and the core's `DType`, both ways, in one place.
//!
//! The core owns the text form (the `.npy` description) and its checks:
//! item size, field extents, no Python objects. A dtype coming from a
//! handle or a header is made by numpy from text the core has validated,
//! and checked again (item size, no objects); a dtype going into a segment
//! or a handle is described by numpy and parsed by the core.

use ndshm::literal::Literal;
use ndshm::DType;
use numpy::{PyArrayDescr, PyArrayDescrMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};
use std::collections::HashMap;
use std::sync::Mutex;

/// Adds `descr_of`, `dtype_of` and `descr_itemsize`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_descr_of, m)?)?;
    m.add_function(wrap_pyfunction!(py_dtype_of, m)?)?;
    m.add_function(wrap_pyfunction!(descr_itemsize, m)?)?;
    Ok(())
}

/// Dtypes made from text, by exact text (never by dtype equality: equal
/// dtypes may differ in what matters here, such as their flags).
static MADE: PyOnceLock<Mutex<HashMap<String, Py<PyArrayDescr>>>> = PyOnceLock::new();
const MAX_MADE: usize = 512;

fn numpy_format<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    static FORMAT: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let m = FORMAT.get_or_try_init(py, || py.import("numpy.lib.format").map(Bound::unbind))?;
    m.bind(py).getattr(name)
}

/// The numpy dtype of a validated description (made once per text).
pub fn dtype_of<'py>(py: Python<'py>, dtype: &DType) -> PyResult<Bound<'py, PyArrayDescr>> {
    dtype_of_described(py, dtype, &dtype.descr())
}

/// As [`dtype_of`], given `text`, the description `dtype` renders as.
pub fn dtype_of_described<'py>(py: Python<'py>, dtype: &DType, text: &str) -> PyResult<Bound<'py, PyArrayDescr>> {
    let made = MADE.get_or_init(py, || Mutex::new(HashMap::new()));
    if let Some(d) = made.lock().unwrap_or_else(|e| e.into_inner()).get(text) {
        return Ok(d.bind(py).clone());
    }
    let refuse = |why: String| PyValueError::new_err(format!("dtype {text} cannot be used: {why}"));
    let dt = match dtype.typestr() {
        Some(t) => PyArrayDescr::new(py, PyString::new(py, t)),
        None => numpy_format(py, "descr_to_dtype")?
            .call1((to_py(py, dtype.literal())?,))
            .and_then(|d| Ok(d.cast_into::<PyArrayDescr>()?)),
    }
    .map_err(|e| refuse(e.value(py).to_string()))?;
    if dt.itemsize() != dtype.itemsize() || dt.has_object() {
        return Err(refuse("numpy reads it differently".into()));
    }
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    if made.len() >= MAX_MADE {
        made.clear();
    }
    made.insert(text.to_string(), dt.clone().unbind());
    Ok(dt)
}

/// The core's description of a numpy dtype; a TypeError (with the reason)
/// for dtypes that cannot live in shared memory.
pub fn describe(dtype: &Bound<'_, PyArrayDescr>) -> PyResult<DType> {
    let py = dtype.py();
    if dtype.has_object() {
        return Err(PyTypeError::new_err(format!(
            "dtype {dtype} holds Python objects, which cannot live in shared memory; \
             use a fixed-size dtype (numbers, bytes 'S', unicode 'U', structured)"
        )));
    }
    let legacy = dtype.get_type().getattr(pyo3::intern!(py, "_legacy")).map_or(Ok(true), |v| v.is_truthy())?;
    if !legacy || dtype.kind() == b'T' {
        return Err(PyTypeError::new_err(format!(
            "dtype {dtype} is not a fixed-size dtype and cannot live in shared memory"
        )));
    }
    let parsed = if dtype.has_fields() || dtype.has_subarray() {
        let descr = numpy_format(py, "dtype_to_descr")?.call1((dtype,))?;
        to_literal(&descr, 0).and_then(|l| DType::from_literal(l).map_err(|e| PyValueError::new_err(e.to_string())))
    } else {
        let s = dtype.getattr(pyo3::intern!(py, "str"))?;
        DType::from_typestr(s.cast::<PyString>()?.to_str()?).map_err(|e| crate::errors::seg_err(e.into()))
    };
    parsed.map_err(|e| {
        if e.is_instance_of::<PyTypeError>(py) {
            e
        } else {
            PyValueError::new_err(format!("dtype {dtype} has no .npy description: {}", e.value(py)))
        }
    })
}

/// The Python value of a literal.
fn to_py<'py>(py: Python<'py>, lit: &Literal) -> PyResult<Bound<'py, PyAny>> {
    Ok(match lit {
        Literal::Str(s) => PyString::new(py, s).into_any(),
        Literal::Int(n) => n.into_pyobject(py)?.into_any(),
        Literal::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Literal::None => py.None().into_bound(py),
        Literal::Tuple(items) => {
            PyTuple::new(py, items.iter().map(|i| to_py(py, i)).collect::<PyResult<Vec<_>>>()?)?.into_any()
        }
        Literal::List(items) => {
            PyList::new(py, items.iter().map(|i| to_py(py, i)).collect::<PyResult<Vec<_>>>()?)?.into_any()
        }
        Literal::Dict(items) => {
            let d = PyDict::new(py);
            for (k, v) in items {
                d.set_item(to_py(py, k)?, to_py(py, v)?)?;
            }
            d.into_any()
        }
    })
}

/// The literal of a Python value made of str, int, tuple and list (what
/// numpy's `dtype_to_descr` returns).
fn to_literal(v: &Bound<'_, PyAny>, depth: usize) -> PyResult<Literal> {
    if depth > 32 {
        return Err(PyValueError::new_err("dtype description nested too deeply"));
    }
    let items = |it: Vec<Bound<'_, PyAny>>| it.iter().map(|x| to_literal(x, depth + 1)).collect::<PyResult<Vec<_>>>();
    if let Ok(s) = v.cast::<PyString>() {
        Ok(Literal::Str(s.to_str()?.to_string()))
    } else if v.is_instance_of::<PyBool>() {
        Ok(Literal::Bool(v.is_truthy()?))
    } else if v.is_instance_of::<PyInt>() {
        Ok(Literal::Int(v.extract()?))
    } else if let Ok(t) = v.cast::<PyTuple>() {
        Ok(Literal::Tuple(items(t.iter().collect())?))
    } else if let Ok(l) = v.cast::<PyList>() {
        Ok(Literal::List(items(l.iter().collect())?))
    } else {
        Err(PyValueError::new_err(format!("unexpected {} in a dtype description", v.get_type().name()?)))
    }
}

/// The `.npy` description of a numpy dtype, as segments and handles carry
/// it; a TypeError for dtypes that cannot live in shared memory.
#[pyfunction]
#[pyo3(name = "descr_of")]
pub fn py_descr_of(dtype: &Bound<'_, PyArrayDescr>) -> PyResult<String> {
    Ok(describe(dtype)?.descr())
}

/// The numpy dtype of a `.npy` description (checked by the core first).
#[pyfunction]
#[pyo3(name = "dtype_of")]
pub fn py_dtype_of<'py>(py: Python<'py>, descr: &str) -> PyResult<Bound<'py, PyArrayDescr>> {
    let dtype = DType::parse(descr).map_err(|e| crate::errors::seg_err(e.into()))?;
    dtype_of(py, &dtype)
}

/// Parses a dtype description; returns its item size.
#[pyfunction]
fn descr_itemsize(descr: &str) -> PyResult<usize> {
    DType::parse(descr).map(|d| d.itemsize()).map_err(|e| crate::errors::seg_err(e.into()))
}
