//! Handles from another host.
//!
//! Unpickling a handle made on another host does not fail, because a
//! process here may only be passing it on (a Dask scheduler unpickles and
//! re-pickles task graphs): it gives a `ForeignHandle`, which pickles back
//! to the same handle and raises a ValueError naming both hosts as soon as
//! anything tries to use its data.

use crate::errors::foreign_message;
use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyAttributeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

/// Adds the `ForeignHandle` class.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ForeignHandle>()
}

/// A handle to a shared array that lives on another host. It can be
/// pickled on (it turns back into the array on its own host) but not used
/// here: any access to its data raises ``ValueError``.
#[pyclass(frozen, name = "ForeignHandle", module = "ndshm")]
pub struct ForeignHandle {
    /// The host the array lives on, as handles name it (`node/key`).
    #[pyo3(get)]
    host: String,
    wire: Py<PyBytes>,
}

impl ForeignHandle {
    pub fn new(host: String, wire: Py<PyBytes>) -> Self {
        ForeignHandle { host, wire }
    }

    fn refuse(&self) -> PyErr {
        PyValueError::new_err(self.message())
    }

    fn message(&self) -> String {
        foreign_message(&self.host, &ndshm::host::this().label())
    }
}

#[pymethods]
impl ForeignHandle {
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (Py<PyBytes>,))> {
        Ok((crate::handle::rebuild_fn(py)?, (self.wire.clone_ref(py),)))
    }

    /// The error that using this array here raises.
    fn error(&self) -> PyErr {
        self.refuse()
    }

    fn __getattr__(&self, attr: &str) -> PyResult<Py<PyAny>> {
        if attr.starts_with("__") && attr.ends_with("__") {
            return Err(PyAttributeError::new_err(attr.to_string()));
        }
        Err(self.refuse())
    }

    fn __len__(&self) -> PyResult<usize> {
        Err(self.refuse())
    }

    fn __getitem__(&self, _key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }

    fn __setitem__(&self, _key: &Bound<'_, PyAny>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(self.refuse())
    }

    fn __iter__(&self) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }

    fn __bool__(&self) -> PyResult<bool> {
        Err(self.refuse())
    }

    fn __float__(&self) -> PyResult<f64> {
        Err(self.refuse())
    }

    fn __int__(&self) -> PyResult<i64> {
        Err(self.refuse())
    }

    fn __index__(&self) -> PyResult<i64> {
        Err(self.refuse())
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        match op {
            // Identity, as for any object.
            CompareOp::Eq | CompareOp::Ne => Ok(other.py().NotImplemented()),
            _ => Err(self.refuse()),
        }
    }

    fn __add__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __radd__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __sub__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __rsub__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __mul__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __rmul__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __truediv__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __rtruediv__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __floordiv__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __matmul__(&self, _o: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }
    fn __pow__(&self, _o: &Bound<'_, PyAny>, _m: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }

    #[pyo3(signature = (*_args, **_kwargs))]
    fn __array__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }

    #[pyo3(signature = (*_args, **_kwargs))]
    fn __array_ufunc__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }

    #[pyo3(signature = (*_args, **_kwargs))]
    fn __array_function__(
        &self,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        Err(self.refuse())
    }

    fn __repr__(&self) -> String {
        let node = self.host.rsplit_once('/').map_or(self.host.as_str(), |(n, _)| n);
        format!("<ndshm.ForeignHandle: an array in shared memory on host '{node}'>")
    }
}
