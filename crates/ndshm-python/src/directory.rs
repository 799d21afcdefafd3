//! The name-level calls on named segments, none of which maps one:
//! `validate_name`, `delete`, `exists`, `info`, `list_segments`, `gc` and
//! `segment_dir`, with `Entry`, the record `info` and `list_segments` give.

use crate::errors::seg_err;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// Adds `Entry` and the name-level functions.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEntry>()?;
    m.add_function(wrap_pyfunction!(validate_name, m)?)?;
    m.add_function(wrap_pyfunction!(delete, m)?)?;
    m.add_function(wrap_pyfunction!(exists, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(list_segments, m)?)?;
    m.add_function(wrap_pyfunction!(gc, m)?)?;
    m.add_function(wrap_pyfunction!(segment_dir, m)?)?;
    Ok(())
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

/// One named segment as its file describes it: what `info` and
/// `list_segments` give. What the file could not tell is None.
#[pyclass(frozen, module = "ndshm._native", name = "Entry")]
pub struct PyEntry {
    entry: ndshm::Entry,
}

impl PyEntry {
    /// The fields, in the order `__repr__` shows them.
    const FIELDS: [&'static str; 11] = [
        "name",
        "status",
        "detail",
        "descr",
        "shape",
        "fortran_order",
        "nbytes",
        "owner_pid",
        "owner_alive",
        "created",
        "file_len",
    ];
}

#[pymethods]
impl PyEntry {
    #[getter]
    fn name(&self) -> &str {
        &self.entry.name
    }

    /// `"ready"`, `"creating"`, `"abandoned"` or `"corrupt"`.
    #[getter]
    fn status(&self) -> &'static str {
        match self.entry.status {
            ndshm::Status::Ready => "ready",
            ndshm::Status::Creating => "creating",
            ndshm::Status::Abandoned => "abandoned",
            ndshm::Status::Corrupt(_) => "corrupt",
        }
    }

    /// Why a corrupt segment is not valid; None for the others.
    #[getter]
    fn detail(&self) -> Option<&str> {
        match &self.entry.status {
            ndshm::Status::Corrupt(why) => Some(why),
            _ => None,
        }
    }

    /// The header's dtype description, in numpy's .npy syntax.
    #[getter]
    fn descr(&self) -> Option<String> {
        self.entry.header.as_ref().map(|h| h.dtype.descr())
    }

    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.entry.header.as_ref().map(|h| PyTuple::new(py, &h.shape)).transpose()
    }

    #[getter]
    fn fortran_order(&self) -> Option<bool> {
        self.entry.header.as_ref().map(|h| h.fortran_order)
    }

    /// Bytes of array data, as the control page says.
    #[getter]
    fn nbytes(&self) -> Option<u64> {
        self.entry.control.as_ref().map(|c| c.data_len)
    }

    #[getter]
    fn owner_pid(&self) -> Option<u32> {
        self.entry.control.as_ref().map(|c| c.owner_pid)
    }

    /// Whether the creating process still runs.
    #[getter]
    fn owner_alive(&self) -> bool {
        self.entry.owner_alive
    }

    /// Creation time, seconds since the epoch.
    #[getter]
    fn created(&self) -> Option<f64> {
        self.entry.control.as_ref().map(|c| c.created_ns as f64 / 1e9)
    }

    /// Size of the file in bytes.
    #[getter]
    fn file_len(&self) -> u64 {
        self.entry.file_len
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let fields = Self::FIELDS
            .iter()
            .map(|&f| Ok(format!("{f}={}", slf.getattr(f)?.repr()?)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(format!("Entry({})", fields.join(", ")))
    }
}

/// What the named segment's file says, without mapping it.
#[pyfunction]
fn info(name: &str) -> PyResult<PyEntry> {
    ndshm::info(name).map(|entry| PyEntry { entry }).map_err(seg_err)
}

/// Every named segment (any status).
#[pyfunction]
fn list_segments() -> PyResult<Vec<PyEntry>> {
    Ok(ndshm::list().map_err(seg_err)?.into_iter().map(|entry| PyEntry { entry }).collect())
}

/// Removes segments that dead creators left unfinished; returns their names.
#[pyfunction]
fn gc() -> PyResult<Vec<String>> {
    ndshm::gc().map_err(seg_err)
}

/// Directory of named segments.
#[pyfunction]
fn segment_dir() -> String {
    ndshm::name::dir().to_string_lossy().into_owned()
}
