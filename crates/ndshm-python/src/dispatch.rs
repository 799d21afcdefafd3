//! `ndshm._native.Board`, `Parent` and `Worker`: the dispatch board of a
//! pool, for `ndshm.pool`, with the records they hand out (`Completion`,
//! `Claimed`) and the task states (`TASK_*`). Waits release the GIL.

use crate::errors::dispatch_err;
use crate::segment::PySegment;
use ndshm::dispatch::{state, Board, Claim, Claimed, Completion, Geometry, Parent, Worker};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyInt, PyList};
use std::sync::Arc;
use std::time::Duration;

/// Adds the dispatch classes and the task states to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBoard>()?;
    m.add_class::<PyParent>()?;
    m.add_class::<PyWorker>()?;
    m.add_class::<PyCompletion>()?;
    m.add_class::<PyClaimed>()?;
    for (name, value) in [
        ("TASK_EMPTY", state::EMPTY),
        ("TASK_READY", state::READY),
        ("TASK_CLAIMED", state::CLAIMED),
        ("TASK_DONE", state::DONE),
        ("TASK_FAILED", state::FAILED),
        ("TASK_SKIPPED", state::SKIPPED),
        ("TASK_DIED", state::DIED),
    ] {
        m.add(name, value)?;
    }
    Ok(())
}

fn secs(t: f64) -> Duration {
    Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX)
}

/// A dispatch board, mapped in this process.
#[pyclass(frozen, module = "ndshm._native", name = "Board")]
pub struct PyBoard {
    board: Arc<Board>,
}

#[pymethods]
impl PyBoard {
    /// Bytes a board for this geometry needs.
    #[staticmethod]
    #[pyo3(signature = (workers, capacity=1024, jobs=16, input_len=4194304, output_len=1048576))]
    fn size(workers: u32, capacity: u32, jobs: u32, input_len: u64, output_len: u64) -> PyResult<usize> {
        let geo = Geometry { workers, capacity, jobs, input_len, output_len };
        Board::header(&geo).map_err(dispatch_err)?;
        Ok(geo.bytes())
    }

    /// Lays out a new board in `segment` (fresh, `|u1`, `size(...)` bytes).
    #[staticmethod]
    #[pyo3(signature = (segment, workers, capacity=1024, jobs=16, input_len=4194304, output_len=1048576))]
    fn init(
        segment: &Bound<'_, PySegment>,
        workers: u32,
        capacity: u32,
        jobs: u32,
        input_len: u64,
        output_len: u64,
    ) -> PyResult<Self> {
        let geo = Geometry { workers, capacity, jobs, input_len, output_len };
        let board = Board::init(segment.get().seg.clone(), geo).map_err(dispatch_err)?;
        Ok(PyBoard { board: Arc::new(board) })
    }

    /// Opens the board another process laid out in `segment`.
    #[staticmethod]
    fn open(segment: &Bound<'_, PySegment>) -> PyResult<Self> {
        let board = Board::open(segment.get().seg.clone()).map_err(dispatch_err)?;
        Ok(PyBoard { board: Arc::new(board) })
    }

    #[getter]
    fn workers(&self) -> u32 {
        self.board.geometry().workers
    }

    /// The largest input payload the board carries itself.
    #[getter]
    fn max_input(&self) -> usize {
        self.board.geometry().max_input()
    }

    /// The largest result payload the board carries itself.
    #[getter]
    fn max_output(&self) -> usize {
        self.board.geometry().max_output()
    }

    /// The largest function the job table carries itself.
    #[getter]
    fn max_job(&self) -> usize {
        ndshm::dispatch::JOB_BYTES - ndshm::dispatch::JOB_HEAD
    }

    /// The pool's process: (pid, start time).
    #[getter]
    fn owner(&self) -> (u32, u64) {
        self.board.owner()
    }

    fn owner_alive(&self) -> bool {
        self.board.owner_alive()
    }

    fn shutdown(&self) {
        self.board.shutdown()
    }

    #[getter]
    fn is_shutdown(&self) -> bool {
        self.board.is_shutdown()
    }

    /// Items completed so far.
    #[getter]
    fn completed(&self) -> u64 {
        self.board.completed()
    }

    /// (published, claimed hint, items completed, workers asleep, workers
    /// waiting for ring space): for diagnostics and tests.
    fn counters(&self) -> (u64, u64, u64, u32, u32) {
        self.board.counters()
    }

    /// Whether job `id` is open on the board.
    fn has_job(&self, id: u64) -> bool {
        self.board.has_job(id)
    }

    /// Items of job `id` completed so far.
    fn job_completed(&self, id: u64) -> u64 {
        self.board.job_completed(id)
    }

    fn done_seq(&self) -> u32 {
        self.board.done_seq()
    }

    /// Sleeps until a task completes after `seen` was read, or `timeout` s.
    fn wait_done(&self, py: Python<'_>, seen: u32, timeout: f64) {
        let board = &self.board;
        py.detach(|| board.wait_done(seen, secs(timeout)))
    }

    fn notify_done(&self) {
        self.board.notify_done()
    }

    fn worker_pid(&self, w: u32) -> PyResult<u32> {
        self.board.worker_pid(w).map_err(dispatch_err)
    }

    fn worker_done(&self, w: u32) -> PyResult<u64> {
        self.board.worker_done(w).map_err(dispatch_err)
    }

    /// Job `id`'s function.
    fn job<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.board.job(id).map_err(dispatch_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Ends this process (at once) when the board's owner is gone.
    #[pyo3(signature = (interval=0.5))]
    fn exit_with_owner(&self, interval: f64) -> PyResult<()> {
        ndshm::dispatch::exit_with_owner(self.board.clone(), secs(interval)).map_err(dispatch_err)
    }
}

/// A finished task as the parent collects it. Its fields are Python
/// objects so that reading one is a struct member access, as fast as a
/// tuple's item.
#[pyclass(frozen, module = "ndshm._native", name = "Completion")]
pub struct PyCompletion {
    #[pyo3(get)]
    task: Py<PyInt>,
    #[pyo3(get)]
    job: Py<PyInt>,
    #[pyo3(get)]
    tag: Py<PyInt>,
    #[pyo3(get)]
    count: Py<PyInt>,
    /// `TASK_DONE`, `TASK_FAILED`, `TASK_SKIPPED` or `TASK_DIED`.
    #[pyo3(get)]
    state: Py<PyInt>,
    /// The worker that ran it.
    #[pyo3(get)]
    worker: Py<PyInt>,
    #[pyo3(get)]
    payload: Py<PyBytes>,
    #[pyo3(get)]
    elapsed_ns: Py<PyInt>,
}

#[pymethods]
impl PyCompletion {
    fn __repr__(&self) -> String {
        format!(
            "Completion(task={}, job={}, tag={}, count={}, state={}, worker={}, elapsed_ns={})",
            self.task, self.job, self.tag, self.count, self.state, self.worker, self.elapsed_ns
        )
    }
}

fn int<T>(py: Python<'_>, v: T) -> Py<PyInt>
where
    T: for<'py> IntoPyObject<'py, Target = PyInt, Output = Bound<'py, PyInt>, Error = std::convert::Infallible>,
{
    match v.into_pyobject(py) {
        Ok(i) => i.unbind(),
        Err(never) => match never {},
    }
}

fn completions(py: Python<'_>, out: Vec<Completion>) -> PyResult<Bound<'_, PyList>> {
    let records = out.into_iter().map(|c| PyCompletion {
        task: int(py, c.task),
        job: int(py, c.job),
        tag: int(py, c.tag),
        count: int(py, c.count),
        state: int(py, c.state),
        worker: int(py, c.worker),
        payload: PyBytes::new(py, &c.payload).unbind(),
        elapsed_ns: int(py, c.elapsed_ns),
    });
    PyList::new(py, records.map(|r| Bound::new(py, r)).collect::<PyResult<Vec<_>>>()?)
}

/// The pool's side of a board. Calls are serialized by a mutex; none waits.
#[pyclass(frozen, module = "ndshm._native", name = "Parent")]
pub struct PyParent {
    parent: Mutex<Parent>,
}

#[pymethods]
impl PyParent {
    #[new]
    fn new(board: &Bound<'_, PyBoard>) -> Self {
        PyParent { parent: Mutex::new(Parent::new(board.get().board.clone())) }
    }

    /// Tasks published and not yet collected.
    #[getter]
    fn in_flight(&self) -> u64 {
        self.parent.lock().in_flight()
    }

    /// Opens job `id` with its function; False if the job table is full.
    fn open_job(&self, id: u64, func: &[u8]) -> PyResult<bool> {
        self.parent.lock().open_job(id, func).map_err(dispatch_err)
    }

    fn cancel_job(&self, id: u64) {
        self.parent.lock().cancel_job(id)
    }

    fn close_job(&self, id: u64) {
        self.parent.lock().close_job(id)
    }

    /// Publishes a task; its number, or None when the board is full.
    fn publish(&self, job: u64, tag: u64, count: u32, payload: &[u8]) -> PyResult<Option<u64>> {
        self.parent.lock().publish(job, tag, count, payload).map_err(dispatch_err)
    }

    /// Publishes tasks `(tag, count, payload)` in order until the board is
    /// full; returns how many went out.
    fn publish_many(&self, job: u64, tasks: &Bound<'_, PyList>) -> PyResult<usize> {
        let mut parent = self.parent.lock();
        for (i, t) in tasks.iter().enumerate() {
            // Borrowed, not copied: the bytes object stays alive meanwhile.
            let (tag, count, payload): (u64, u32, PyBackedBytes) = t.extract()?;
            if parent.publish(job, tag, count, &payload).map_err(dispatch_err)?.is_none() {
                return Ok(i);
            }
        }
        Ok(tasks.len())
    }

    /// Withdraws task `n` if no worker claimed it yet; True if withdrawn.
    fn cancel_task(&self, n: u64) -> PyResult<bool> {
        self.parent.lock().cancel_task(n).map_err(dispatch_err)
    }

    /// Task `n`'s state on the board, None once collected.
    fn task_state(&self, n: u64) -> Option<u8> {
        self.parent.lock().task_state(n)
    }

    /// Wakes up to `n` sleeping workers.
    fn wake_workers(&self, n: u32) {
        self.parent.lock().wake_workers(n)
    }

    /// Finished tasks. A corrupt task on the board raises once the tasks
    /// before it are handed out (it stays, and raises again next time).
    fn poll<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        let polled = self.parent.lock().poll(&mut out);
        match polled {
            Err(e) if out.is_empty() => Err(dispatch_err(e)),
            _ => completions(py, out),
        }
    }

    /// Worker `w` died: what it finished, and its task (state TASK_DIED).
    fn bury_worker<'py>(&self, py: Python<'py>, w: u32) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        self.parent.lock().bury_worker(w, &mut out).map_err(dispatch_err)?;
        completions(py, out)
    }
}

/// A worker's side of a board.
#[pyclass(frozen, module = "ndshm._native", name = "Worker")]
pub struct PyWorker {
    worker: Worker,
}

/// A task as a worker claims it (fields as in [`PyCompletion`]).
#[pyclass(frozen, module = "ndshm._native", name = "Claimed")]
pub struct PyClaimed {
    #[pyo3(get)]
    task: Py<PyInt>,
    #[pyo3(get)]
    job: Py<PyInt>,
    #[pyo3(get)]
    tag: Py<PyInt>,
    #[pyo3(get)]
    count: Py<PyInt>,
    #[pyo3(get)]
    payload: Py<PyBytes>,
}

#[pymethods]
impl PyClaimed {
    fn __repr__(&self) -> String {
        format!("Claimed(task={}, job={}, tag={}, count={})", self.task, self.job, self.tag, self.count)
    }
}

fn claimed(py: Python<'_>, t: Claimed) -> PyResult<Bound<'_, PyClaimed>> {
    let payload = PyBytes::new(py, &t.payload).unbind();
    Bound::new(
        py,
        PyClaimed { task: int(py, t.task), job: int(py, t.job), tag: int(py, t.tag), count: int(py, t.count), payload },
    )
}

#[pymethods]
impl PyWorker {
    #[new]
    fn new(board: &Bound<'_, PyBoard>, index: u32) -> PyResult<Self> {
        let worker = Worker::new(board.get().board.clone(), index).map_err(dispatch_err)?;
        Ok(PyWorker { worker })
    }

    /// The next task, waiting up to `timeout` s; None if there was none or
    /// the pool is shutting down.
    fn claim<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Option<Bound<'py, PyClaimed>>> {
        if let Some(t) = self.worker.try_claim().map_err(dispatch_err)? {
            return claimed(py, t).map(Some);
        }
        let worker = &self.worker;
        match py.detach(|| worker.claim(secs(timeout))).map_err(dispatch_err)? {
            Claim::Task(t) => claimed(py, t).map(Some),
            Claim::Idle | Claim::Shutdown => Ok(None),
        }
    }

    /// Hands back a task's outcome (`TASK_DONE` with its result, or
    /// `TASK_FAILED` with its error); False if the pool shut down while
    /// waiting for room.
    fn complete(&self, py: Python<'_>, task: u64, state: u8, payload: &[u8], elapsed_ns: u64) -> PyResult<bool> {
        let worker = &self.worker;
        if worker.try_complete(task, state, payload, elapsed_ns).map_err(dispatch_err)? {
            return Ok(true);
        }
        py.detach(|| worker.complete(task, state, payload, elapsed_ns)).map_err(dispatch_err)
    }
}
