//! `ndshm._native.Lock`: the reader-writer lock of a segment's control
//! page, for Python. Waiting releases the GIL and wakes up every 100 ms to
//! let Python handle signals (Ctrl-C).

use crate::errors::lock_err;
use crate::PySegment;
use ndshm::lock::{LockWords, Outcome, CHECK};
use ndshm::Segment;
use pyo3::exceptions::{PyPermissionError, PyRuntimeWarning, PyValueError};
use pyo3::prelude::*;
use std::ffi::CString;
use std::time::{Duration, Instant};

pyo3::create_exception!(
    ndshm._native,
    LockOwnerDied,
    PyRuntimeWarning,
    "A lock was taken over from a holder that died while holding it."
);

/// A lock living in a segment's control page.
#[pyclass(frozen, subclass, module = "ndshm._native", name = "Lock")]
pub struct PyLock {
    seg: Segment,
}

impl PyLock {
    fn words(&self) -> &LockWords {
        self.seg.lock().expect("checked writable at construction")
    }
}

/// `None`/-1: forever; otherwise a non-negative number of seconds.
fn parse_timeout(blocking: bool, timeout: Option<f64>) -> PyResult<Option<Duration>> {
    if !blocking {
        return Ok(Some(Duration::ZERO));
    }
    match timeout {
        None => Ok(None),
        Some(-1.0) => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => {
            Err(PyValueError::new_err(format!("timeout must be a non-negative number of seconds or None, not {t}")))
        }
        Some(t) => Ok(Some(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX))),
    }
}

fn warn_died(py: Python<'_>, tid: u32, what: &str) -> PyResult<()> {
    let msg = CString::new(format!(
        "ndshm lock: the {what} holder (thread {tid}) died while holding the lock; it has been taken over"
    ))
    .expect("no NUL");
    PyErr::warn(py, &py.get_type::<LockOwnerDied>(), &msg, 1)
}

/// Waits in slices, without the GIL, checking signals between slices.
fn wait(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut(Duration) -> Outcome + Send,
) -> PyResult<Outcome> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let slice = deadline.map_or(CHECK, |d| d.saturating_duration_since(Instant::now()).min(CHECK));
        let r = py.detach(|| attempt(slice));
        if r.acquired() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(r);
        }
        py.check_signals()?;
    }
}

#[pymethods]
impl PyLock {
    #[new]
    fn new(segment: &Bound<'_, PySegment>) -> PyResult<Self> {
        let seg = segment.get().seg.clone();
        if seg.lock().is_none() {
            return Err(PyPermissionError::new_err(
                "this segment's lock cannot be used: the segment is attached without write permission",
            ));
        }
        Ok(PyLock { seg })
    }

    /// The segment holding the lock.
    #[getter]
    fn segment(&self) -> PySegment {
        PySegment { seg: self.seg.clone() }
    }

    /// Acquires the lock exclusively. Returns False if `timeout` seconds
    /// pass first (or at once when `blocking` is False).
    #[pyo3(signature = (blocking=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = parse_timeout(blocking, timeout)?;
        let words = self.words();
        if words.try_lock() {
            return Ok(true);
        }
        match wait(py, timeout, |slice| words.lock(Some(slice)))? {
            Outcome::OwnerDied(_, tid) => warn_died(py, tid, "previous").map(|_| true),
            r => Ok(r.acquired()),
        }
    }

    /// Releases an exclusive hold of this thread (RuntimeError otherwise).
    fn release(&self) -> PyResult<()> {
        self.words().unlock().map_err(lock_err)
    }

    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        if !this.words().try_lock() {
            this.acquire(slf.py(), true, None)?;
        }
        Ok(())
    }

    fn __exit__(
        &self,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.release()?;
        Ok(false)
    }

    /// Acquires the lock shared; returns the reader slot to pass to
    /// `release_read`, or None if `timeout` passed first.
    #[pyo3(signature = (timeout=None))]
    fn acquire_read(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<usize>> {
        let timeout = parse_timeout(true, timeout)?;
        let words = self.words();
        match wait(py, timeout, |slice| words.lock_shared(Some(slice)))? {
            Outcome::Acquired(slot) => Ok(Some(slot)),
            Outcome::OwnerDied(slot, tid) => warn_died(py, tid, "previous").map(|_| Some(slot)),
            Outcome::TimedOut => Ok(None),
        }
    }

    /// Releases the shared hold in `slot` (RuntimeError if not this thread's).
    fn release_read(&self, slot: usize) -> PyResult<()> {
        self.words().unlock_shared(slot).map_err(lock_err)
    }

    /// Whether the lock is held exclusively (by anyone).
    fn locked(&self) -> bool {
        self.words().is_locked()
    }

    /// Threads holding the lock shared now.
    #[getter]
    fn readers(&self) -> usize {
        self.words().readers()
    }
}
