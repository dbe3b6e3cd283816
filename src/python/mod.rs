//! Python bindings (`kato_gpu._native`): thin wrappers over the core, one file per class family.
//!
//! Rules every binding follows:
//! - heavy work and every wait for the matcher's lock run through [`lifecycle::unlocked`]: with
//!   the GIL released, so a thread holding the lock never waits on the GIL (no lock-order
//!   deadlock with Python threads), between forks, and safe to return from at interpreter exit;
//! - every call into the core goes through [`error::guard`], so a Rust panic surfaces as a
//!   Python exception, never as an abort.

mod cuda;
mod error;
mod kato_record;
mod lifecycle;
mod matcher;
mod merge;
mod metrics;
mod predictions;
mod snapshot;
mod sync;
mod vocabulary;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    lifecycle::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_SYMBOL_ID", crate::store::MAX_SYMBOL_ID)?;
    metrics::register(m)?;
    vocabulary::register(m)?;
    matcher::register(m)?;
    sync::register(m)?;
    snapshot::register(m)?;
    merge::register(m)?;
    cuda::register(m)?;
    Ok(())
}
