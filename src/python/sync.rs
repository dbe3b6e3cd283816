//! `kato_gpu._native.SyncManager`: the Rust sync worker (see `crate::sync`).

use std::time::SystemTime;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::error::guard;
use super::matcher::{real_of, Flag, PyMatcher};
use super::vocabulary::describe;
use crate::sync::{SyncManager, SyncSettings};

#[pyclass(module = "kato_gpu._native", name = "SyncManager", frozen)]
pub struct PySyncManager {
    inner: SyncManager,
}

const SOURCES: [&str; 5] = ["manual", "automatic", "background", "training", "api"];

/// Sync settings from Python values: a positive int threshold and a positive number of seconds
/// (the core validates the duration; a threshold too large for usize is refused, not truncated).
pub fn settings_of(
    threshold: &Bound<'_, PyAny>,
    interval_seconds: &Bound<'_, PyAny>,
    background: bool,
) -> PyResult<SyncSettings> {
    if threshold.is_instance_of::<pyo3::types::PyBool>() || !threshold.is_instance_of::<pyo3::types::PyInt>() {
        return Err(PyTypeError::new_err(format!("sync_threshold must be an int, got {}", describe(threshold))));
    }
    let threshold =
        threshold.extract::<i128>().ok().and_then(|t| usize::try_from(t).ok()).filter(|&t| t > 0).ok_or_else(|| {
            PyValueError::new_err(format!(
                "sync_threshold must be a positive int below 2**64, got {}",
                describe(threshold)
            ))
        })?;
    let seconds = real_of(interval_seconds, "sync_interval_seconds")?;
    if seconds <= 0.0 {
        return Err(PyValueError::new_err(format!("sync_interval_seconds must be positive, got {seconds}")));
    }
    let interval = crate::sync::duration_from_secs(seconds, "sync_interval_seconds")?;
    Ok(SyncSettings { threshold, interval, background })
}

fn check_source(source: &str) -> PyResult<&str> {
    if SOURCES.contains(&source) {
        Ok(source)
    } else {
        Err(PyValueError::new_err(format!("unknown sync source {source:?}: expected one of {SOURCES:?}")))
    }
}

#[pymethods]
impl PySyncManager {
    #[new]
    fn new(
        py: Python<'_>,
        matcher: &PyMatcher,
        threshold: Bound<'_, PyAny>,
        interval_seconds: Bound<'_, PyAny>,
        background: Flag,
    ) -> PyResult<Self> {
        let settings = settings_of(&threshold, &interval_seconds, background.0)?;
        let shared = matcher.inner.clone();
        Ok(PySyncManager { inner: py.allow_threads(|| SyncManager::new(&shared, settings)) })
    }

    fn configure(
        &self,
        threshold: Bound<'_, PyAny>,
        interval_seconds: Bound<'_, PyAny>,
        background: Flag,
    ) -> PyResult<()> {
        self.inner.configure(settings_of(&threshold, &interval_seconds, background.0)?);
        Ok(())
    }

    fn start(&self) -> bool {
        self.inner.start()
    }

    /// Stops the worker, waiting for a promotion in progress (without holding the GIL).
    fn stop(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.stop())
    }

    fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    #[pyo3(signature = (source = "manual"))]
    fn check_needed(&self, py: Python<'_>, source: &str) -> PyResult<bool> {
        let source = check_source(source)?;
        py.allow_threads(|| guard(|| self.inner.check_needed(source)))
    }

    #[pyo3(signature = (source = "manual"))]
    fn trigger(&self, py: Python<'_>, source: &str) -> PyResult<usize> {
        let source = check_source(source)?;
        py.allow_threads(|| guard(|| self.inner.trigger(source)))
    }

    fn enter_training(&self) -> bool {
        self.inner.enter_training()
    }

    fn exit_training(&self, py: Python<'_>, trigger: bool) -> PyResult<Option<usize>> {
        py.allow_threads(|| guard(|| self.inner.exit_training(trigger)))
    }

    #[getter]
    fn training(&self) -> bool {
        self.inner.training()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("total_syncs", stats.total_syncs)?;
        d.set_item("total_patterns_synced", stats.total_patterns_synced)?;
        d.set_item("last_sync_duration_ms", stats.last_duration.map_or(0.0, |d| d.as_secs_f64() * 1e3))?;
        d.set_item(
            "last_sync_time",
            stats.last_time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()),
        )?;
        d.set_item("last_sync_source", stats.last_source)?;
        Ok(d)
    }
}

impl Drop for PySyncManager {
    fn drop(&mut self) {
        // The worker may be waiting for the GIL (to log): join it with the GIL released.
        let inner = &self.inner;
        Python::with_gil(|py| py.allow_threads(|| inner.stop()));
    }
}

/// Validates sync settings without applying them (`GPUConfig.validate` uses it, so the rule has
/// one home): raises ValueError/TypeError as `_configure_sync` and `SyncManager` would.
#[pyfunction]
fn check_sync_settings(
    threshold: Bound<'_, PyAny>,
    interval_seconds: Bound<'_, PyAny>,
    background: Flag,
) -> PyResult<()> {
    settings_of(&threshold, &interval_seconds, background.0).map(|_| ())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_sync_settings, m)?)?;
    m.add("SYNC_SOURCES", SOURCES.to_vec())?;
    m.add_class::<PySyncManager>()
}
