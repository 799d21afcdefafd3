//! `ndshm._native.Lock`: the reader-writer lock of a segment's control
//! page, for Python. Waiting releases the GIL and wakes up every 100 ms to
//! let Python handle signals (Ctrl-C).
//!
//! `acquire`, `release`, `__enter__` and `__exit__` are plain CPython C
//! methods (module [`cmethods`]), installed on the type at module init:
//! an uncontended acquire + release from Python then costs what two calls
//! of a C method cost, without PyO3's per-call trampoline and argument
//! matching (the aim: at most 40 ns per pair, like
//! `multiprocessing.Lock`). The other methods go through `#[pymethods]`.

use crate::errors::lock_err;
use crate::segment::PySegment;
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

/// Adds the `Lock` class (with its C methods) and `LockOwnerDied`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLock>()?;
    install(&m.py().get_type::<PyLock>())?;
    m.add("LockOwnerDied", m.py().get_type::<LockOwnerDied>())?;
    Ok(())
}

/// A lock living in a segment's control page.
#[pyclass(frozen, subclass, module = "ndshm._native", name = "Lock")]
pub struct PyLock {
    seg: Segment,
}

impl PyLock {
    /// The lock's words. `new` refuses a segment without them, so the
    /// error is never seen; it keeps a mistake there from being a panic.
    #[inline]
    fn words(&self) -> PyResult<&LockWords> {
        self.seg.lock().ok_or_else(no_lock_words)
    }

    /// `acquire(blocking, timeout)`: False if `timeout` seconds pass first
    /// (or at once when `blocking` is False). Takes a free lock without
    /// releasing the GIL; waits without it.
    #[inline]
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = parse_timeout(blocking, timeout)?;
        let words = self.words()?;
        if words.try_lock() {
            return Ok(true);
        }
        self.acquire_slow(py, timeout)
    }

    #[cold]
    fn acquire_slow(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<bool> {
        let words = self.words()?;
        // Python code holds a lock for a few hundred ns: a short spin
        // first (with the GIL) spares a release and re-take of the GIL.
        if timeout != Some(Duration::ZERO) && words.try_lock_spinning(GIL_SPINS) {
            return Ok(true);
        }
        match wait(py, timeout, |slice| words.lock(Some(slice)))? {
            Outcome::OwnerDied(_, tid) => warn_died(py, tid, "previous").map(|_| true),
            r => Ok(r.acquired()),
        }
    }

    /// Releases an exclusive hold of this thread (RuntimeError otherwise).
    #[inline]
    fn release(&self) -> PyResult<()> {
        self.words()?.unlock().map_err(lock_err)
    }
}

/// Rounds of spinning with the GIL before waiting without it (about 1 µs).
const GIL_SPINS: u32 = 32;

/// `None`/-1: forever; otherwise a non-negative number of seconds.
#[inline]
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
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
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
            return Err(no_lock_words());
        }
        Ok(PyLock { seg })
    }

    /// The segment holding the lock.
    #[getter]
    fn segment(&self) -> PySegment {
        PySegment::new(self.seg.clone())
    }

    /// Acquires the lock shared; returns the reader slot to pass to
    /// `release_read`, or None if `timeout` passed first.
    #[pyo3(signature = (timeout=None))]
    fn acquire_read(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<usize>> {
        let timeout = parse_timeout(true, timeout)?;
        let words = self.words()?;
        match wait(py, timeout, |slice| words.lock_shared(Some(slice)))? {
            Outcome::Acquired(slot) => Ok(Some(slot)),
            Outcome::OwnerDied(slot, tid) => warn_died(py, tid, "previous").map(|_| Some(slot)),
            Outcome::TimedOut => Ok(None),
        }
    }

    /// Releases the shared hold in `slot` (RuntimeError if not this thread's).
    fn release_read(&self, slot: usize) -> PyResult<()> {
        self.words()?.unlock_shared(slot).map_err(lock_err)
    }

    /// Whether the lock is held exclusively (by anyone).
    fn locked(&self) -> PyResult<bool> {
        Ok(self.words()?.is_locked())
    }

    /// Threads holding the lock shared now.
    #[getter]
    fn readers(&self) -> PyResult<usize> {
        Ok(self.words()?.readers())
    }
}

use cmethods::install;

/// `acquire`, `release`, `__enter__` and `__exit__` as CPython C methods:
/// the only place in this file that deals with the C API directly.
mod cmethods {
    use super::PyLock;
    use pyo3::exceptions::{PyRuntimeError, PyTypeError};
    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::{PyString, PyTuple, PyType};
    use pyo3::Borrowed;
    use std::any::Any;
    use std::ffi::CStr;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::ptr::null_mut;

    type Args = *const *mut ffi::PyObject;

    /// Puts the methods on `ty`, the type object of [`PyLock`].
    pub fn install(ty: &Bound<'_, PyType>) -> PyResult<()> {
        let fastcall = ffi::METH_FASTCALL | ffi::METH_KEYWORDS;
        let defs: [(&'static CStr, ffi::PyMethodDefPointer, i32, &'static CStr); 4] = [
            (
                c"acquire",
                ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: acquire },
                fastcall,
                c"acquire($self, blocking=True, timeout=None)\n--\n\n\
                  Acquires the lock exclusively. Returns False if `timeout` seconds\n\
                  pass first (or at once when `blocking` is False).",
            ),
            (
                c"release",
                ffi::PyMethodDefPointer { PyCFunction: release },
                ffi::METH_NOARGS,
                c"release($self)\n--\n\nReleases an exclusive hold of this thread (RuntimeError otherwise).",
            ),
            (
                c"__enter__",
                ffi::PyMethodDefPointer { PyCFunction: enter },
                ffi::METH_NOARGS,
                c"__enter__($self)\n--\n\nAcquires the lock exclusively, waiting as long as it takes.",
            ),
            (
                c"__exit__",
                ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: exit },
                fastcall,
                c"__exit__($self, _exc_type, _exc, _tb)\n--\n\nReleases the lock; returns False.",
            ),
        ];
        for (name, meth, flags, doc) in defs {
            // CPython keeps a pointer to the definition for as long as the
            // method exists: for the rest of the process.
            let def = Box::leak(Box::new(ffi::PyMethodDef {
                ml_name: name.as_ptr(),
                ml_meth: meth,
                ml_flags: flags,
                ml_doc: doc.as_ptr(),
            }));
            // SAFETY: `ty` is a live type object, `def` a method definition
            // that outlives it, whose function has the signature its flags
            // announce; the result is a new reference or NULL with an error.
            let descr =
                unsafe { Bound::from_owned_ptr_or_err(ty.py(), ffi::PyDescr_NewMethod(ty.as_type_ptr(), def)) }?;
            let name = name.to_str().map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
            ty.setattr(PyString::new(ty.py(), name), descr)?;
        }
        Ok(())
    }

    /// Runs the body of a C method of a lock: an error becomes the raised
    /// exception, a panic a RuntimeError (it must not unwind into CPython;
    /// were anything to unwind past this, the `extern "C"` boundary would
    /// abort the process, not corrupt it).
    ///
    /// Unlike PyO3's own trampoline this does not count the call in PyO3's
    /// attach count: a `Py<T>` dropped in `body` (none is, on the fast
    /// path) would have its reference released at PyO3's next call instead
    /// of at once.
    ///
    /// # Safety
    /// CPython calls a C method with the thread attached and `slf` a live
    /// instance of the descriptor's type, [`PyLock`] or a subclass: every
    /// way of calling a method descriptor checks that first (the bound
    /// method made by `__get__`, calls through the descriptor, the
    /// interpreter's specialised calls), and no other object holds the
    /// method definitions. That check is why this does not check again
    /// (it would cost a subtype test per call, 15% of an acquire +
    /// release); `test_the_methods_refuse_other_objects` covers it.
    #[inline(always)]
    unsafe fn run(
        slf: *mut ffi::PyObject,
        body: impl FnOnce(Python<'_>, &PyLock) -> PyResult<*mut ffi::PyObject>,
    ) -> *mut ffi::PyObject {
        // SAFETY: as promised by the caller; the token and the borrowed
        // `self` stay inside this call.
        let (py, this) = unsafe {
            let py = Python::assume_attached();
            (py, Borrowed::from_ptr(py, slf).cast_unchecked::<PyLock>().get())
        };
        match catch_unwind(AssertUnwindSafe(|| body(py, this))) {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                e.restore(py);
                null_mut()
            }
            Err(panic) => {
                panic_error(&*panic).restore(py);
                null_mut()
            }
        }
    }

    #[cold]
    fn panic_error(panic: &(dyn Any + Send)) -> PyErr {
        let why = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        PyRuntimeError::new_err(format!("ndshm lock: internal error: {why}"))
    }

    fn new_bool(py: Python<'_>, v: bool) -> *mut ffi::PyObject {
        v.into_pyobject(py).map_or_else(|e| match e {}, |b| b.to_owned().into_ptr())
    }

    fn new_none(py: Python<'_>) -> *mut ffi::PyObject {
        py.None().into_ptr()
    }

    /// `acquire(blocking=True, timeout=None)`.
    unsafe extern "C" fn acquire(
        slf: *mut ffi::PyObject,
        args: Args,
        nargs: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: called by CPython as a METH_FASTCALL | METH_KEYWORDS
        // method of PyLock's type (see `install`).
        unsafe {
            run(slf, |py, this| {
                if nargs == 0 && kwnames.is_null() {
                    // The hot path: blocking, no timeout to check.
                    if this.words()?.try_lock() {
                        return Ok(new_bool(py, true));
                    }
                    return this.acquire_slow(py, None).map(|ok| new_bool(py, ok));
                }
                // SAFETY: the arguments CPython passed.
                let [b, t] = parse(py, "acquire", ["blocking", "timeout"], 0, args, nargs, kwnames)?;
                let blocking = b.map_or(Ok(true), |b| b.extract().map_err(|e| arg_error(py, "blocking", e)))?;
                let timeout = t.map_or(Ok(None), |t| t.extract().map_err(|e| arg_error(py, "timeout", e)))?;
                this.acquire(py, blocking, timeout).map(|ok| new_bool(py, ok))
            })
        }
    }

    /// `release()`.
    unsafe extern "C" fn release(slf: *mut ffi::PyObject, _: *mut ffi::PyObject) -> *mut ffi::PyObject {
        // SAFETY: called by CPython as a METH_NOARGS method of PyLock's type.
        unsafe { run(slf, |py, this| this.release().map(|()| new_none(py))) }
    }

    /// `__enter__()`: acquire, waiting as long as it takes.
    unsafe extern "C" fn enter(slf: *mut ffi::PyObject, _: *mut ffi::PyObject) -> *mut ffi::PyObject {
        // SAFETY: called by CPython as a METH_NOARGS method of PyLock's type.
        unsafe { run(slf, |py, this| this.acquire(py, true, None).map(|_| new_none(py))) }
    }

    /// `__exit__(_exc_type, _exc, _tb)`: release; returns False.
    unsafe extern "C" fn exit(
        slf: *mut ffi::PyObject,
        args: Args,
        nargs: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        // SAFETY: called by CPython as a METH_FASTCALL | METH_KEYWORDS
        // method of PyLock's type (see `install`).
        unsafe {
            run(slf, |py, this| {
                if nargs != 3 || !kwnames.is_null() {
                    // SAFETY: the arguments CPython passed.
                    parse(py, "__exit__", ["_exc_type", "_exc", "_tb"], 3, args, nargs, kwnames)?;
                }
                this.release().map(|()| new_bool(py, false))
            })
        }
    }

    /// An argument that did not convert, as PyO3 reports it: the error,
    /// with a note naming the argument.
    #[cold]
    fn arg_error(py: Python<'_>, name: &str, e: PyErr) -> PyErr {
        let _ = e.value(py).call_method1("add_note", (format!("while processing '{name}'"),));
        e
    }

    /// Matches the arguments of a METH_FASTCALL | METH_KEYWORDS call to the
    /// parameters `names` (each positional or keyword; the first `required`
    /// must be given), raising TypeError with PyO3's messages.
    ///
    /// # Safety
    /// `args`, `nargs` and `kwnames` must be what CPython passed to the
    /// method: `nargs` positional values at `args`, then one value for each
    /// name in the tuple `kwnames` (or NULL).
    #[cold]
    unsafe fn parse<'a, 'py, const N: usize>(
        py: Python<'py>,
        func: &str,
        names: [&str; N],
        required: usize,
        args: Args,
        nargs: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> PyResult<[Option<Borrowed<'a, 'py, PyAny>>; N]> {
        let type_error = |msg: String| PyTypeError::new_err(format!("Lock.{func}() {msg}"));
        // SAFETY: indices below `nargs + len(kwnames)` are arguments
        // CPython passed, borrowed for the call.
        let arg = |i: usize| unsafe { Borrowed::from_ptr(py, *args.add(i)) };
        let nargs = usize::try_from(nargs).unwrap_or(0);
        if nargs > N {
            let takes = if required == N { format!("{N}") } else { format!("from {required} to {N}") };
            let were = if nargs == 1 { "was" } else { "were" };
            return Err(type_error(format!("takes {takes} positional arguments but {nargs} {were} given")));
        }
        let mut out = [None; N];
        for (i, slot) in out.iter_mut().enumerate().take(nargs) {
            *slot = Some(arg(i));
        }
        if !kwnames.is_null() {
            // SAFETY: `kwnames` is a tuple, borrowed for the call.
            let kwnames = unsafe { Borrowed::from_ptr(py, kwnames) }.cast::<PyTuple>()?;
            for (k, key) in kwnames.iter().enumerate() {
                let key = key.cast_into::<PyString>()?;
                let name = key.to_str()?;
                let Some(i) = names.iter().position(|n| *n == name) else {
                    return Err(type_error(format!("got an unexpected keyword argument '{name}'")));
                };
                // `i` is a position in `names`, which is as long as `out`.
                if out[i].is_some() {
                    return Err(type_error(format!("got multiple values for argument '{name}'")));
                }
                out[i] = Some(arg(nargs + k));
            }
        }
        let missing: Vec<&str> =
            out.iter().zip(names).take(required).filter(|(o, _)| o.is_none()).map(|(_, n)| n).collect();
        if let Some((last, init)) = missing.split_last() {
            let n = missing.len();
            let list = match init {
                [] => format!("'{last}'"),
                [a] => format!("'{a}' and '{last}'"),
                init => {
                    let init: Vec<String> = init.iter().map(|a| format!("'{a}'")).collect();
                    format!("{}, and '{last}'", init.join(", "))
                }
            };
            let s = if n == 1 { "" } else { "s" };
            return Err(type_error(format!("missing {n} required positional argument{s}: {list}")));
        }
        Ok(out)
    }
}

fn no_lock_words() -> PyErr {
    PyPermissionError::new_err("this segment's lock cannot be used: the segment is attached without write permission")
}
