//! What this process holds beyond single segments: received mappings kept
//! for reuse, anonymous segments lingering for their receivers, the keeper
//! started at exit, and the private tmpfs for big anonymous segments.

use pyo3::prelude::*;

/// Adds `release_cached`, `sweep`, `at_exit` and `private_tmpfs`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(release_cached, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(at_exit, m)?)?;
    m.add_function(wrap_pyfunction!(private_tmpfs, m)?)?;
    Ok(())
}

/// Lets go of received segments kept mapped (see `ndshm::cache`); the
/// number kept before.
#[pyfunction]
fn release_cached() -> usize {
    let n = ndshm::cache::len();
    ndshm::cache::clear();
    n
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

/// Whether this process keeps big anonymous segments in a private tmpfs
/// with huge pages (making it on first call where the system allows).
#[pyfunction]
fn private_tmpfs(py: Python<'_>) -> bool {
    py.detach(ndshm::tmpfs::available)
}
