//! `kato_gpu._native.SyncManager`: the Rust sync worker (see `crate::sync`).

use std::time::SystemTime;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::error::guard;
use super::lifecycle::{released, unlocked};
use super::matcher::{real_of, Flag, PyMatcher};
use super::vocabulary::describe;
use crate::sync::{SyncManager, SyncSettings};

#[pyclass(module = "kato_gpu._native", name = "SyncManager", frozen)]
pub struct PySyncManager {
    inner: SyncManager,
}

const SOURCES: [&str; 5] = ["manual", "automatic", "background", "training", "api"];

/// Sync settings from Python values: an int threshold and a real number of seconds, in the
/// ranges of `SyncSettings::new` (the one rule; a ValueError names the field).
pub fn settings_of(
    threshold: &Bound<'_, PyAny>,
    interval_seconds: &Bound<'_, PyAny>,
    background: bool,
) -> PyResult<SyncSettings> {
    if threshold.is_instance_of::<pyo3::types::PyBool>() || !threshold.is_instance_of::<pyo3::types::PyInt>() {
        return Err(PyTypeError::new_err(format!("sync_threshold must be an int, got {}", describe(threshold))));
    }
    // Beyond i128 is out of range as surely as anything above the maximum.
    let threshold = threshold.extract::<i128>().unwrap_or(i128::MAX);
    let seconds = real_of(interval_seconds, "sync_interval_seconds")?;
    Ok(SyncSettings::new(threshold, seconds, background)?)
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
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
        Ok(PySyncManager { inner: unlocked(py, || SyncManager::new(&shared, settings)) })
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

    /// Stops the worker, waiting for a promotion in progress (without holding the GIL, and
    /// outside the fork gate: the worker may need the gate to finish).
    fn stop(&self, py: Python<'_>) {
        released(py, || self.inner.stop())
    }

    /// Makes the worker fail `count` times from now (a test hook for the supervisor).
    #[pyo3(signature = (count = 1))]
    fn _simulate_worker_failure(&self, count: u32) {
        self.inner.simulate_worker_failure(count)
    }

    fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    #[pyo3(signature = (source = "manual"))]
    fn check_needed(&self, py: Python<'_>, source: &str) -> PyResult<bool> {
        let source = check_source(source)?;
        unlocked(py, || guard(|| self.inner.check_needed(source)))
    }

    #[pyo3(signature = (source = "manual"))]
    fn trigger(&self, py: Python<'_>, source: &str) -> PyResult<usize> {
        let source = check_source(source)?;
        unlocked(py, || guard(|| self.inner.trigger(source)))
    }

    fn enter_training(&self) -> bool {
        self.inner.enter_training()
    }

    fn exit_training(&self, py: Python<'_>, trigger: bool) -> PyResult<Option<usize>> {
        unlocked(py, || guard(|| self.inner.exit_training(trigger)))
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
        d.set_item("last_sync_time", stats.last_time.map(unix_seconds))?;
        d.set_item("last_sync_source", stats.last_source)?;
        d.set_item("worker_failures", stats.worker_failures)?;
        d.set_item("worker_restarts", stats.worker_restarts)?;
        d.set_item("last_worker_error", stats.last_error)?;
        d.set_item("last_worker_error_time", stats.last_error_time.map(unix_seconds))?;
        Ok(d)
    }
}

impl Drop for PySyncManager {
    fn drop(&mut self) {
        // The worker may be waiting for the GIL (to log): join it with the GIL released.
        let inner = &self.inner;
        Python::with_gil(|py| released(py, || inner.stop()));
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
    m.add("MAX_SYNC_THRESHOLD", crate::sync::MAX_SYNC_THRESHOLD)?;
    m.add("MAX_SYNC_INTERVAL_SECONDS", crate::sync::MAX_SYNC_INTERVAL_SECONDS)?;
    m.add("MAX_CONSECUTIVE_FAILURES", crate::sync::MAX_CONSECUTIVE_FAILURES)?;
    m.add_function(wrap_pyfunction!(check_sync_settings, m)?)?;
    m.add("SYNC_SOURCES", SOURCES.to_vec())?;
    m.add_class::<PySyncManager>()
}
