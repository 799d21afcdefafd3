//! `ndshm._native`: thin bindings over the `ndshm` crate. Logic lives in the
//! core; the bindings convert types and map errors (once, in `errors`).
//! One module per concept, each adding its names to the module with its
//! `register`; this file only registers.

mod array;
mod directory;
mod dispatch;
mod dtypes;
mod errors;
mod foreign;
mod handle;
mod lock;
mod process;
mod segment;
mod view;

use pyo3::prelude::*;

#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    segment::register(m)?;
    lock::register(m)?;
    dispatch::register(m)?;
    errors::register(m)?;
    view::register(m)?;
    dtypes::register(m)?;
    directory::register(m)?;
    process::register(m)?;
    foreign::register(m)?;
    handle::register(m)?;
    m.add("PAGE", ndshm::format::PAGE)?;
    m.add("FORMAT_VERSION", ndshm::format::FORMAT_VERSION)?;
    m.add("MAX_NAME_LEN", ndshm::name::MAX_LEN)?;
    Ok(())
}
