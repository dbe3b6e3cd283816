//! `kato_gpu._native.SyncManager`: the Rust sync worker (see `crate::sync`).

use std::time::SystemTime;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::error::guard;
use super::matcher::PyMatcher;
use crate::sync::{duration_from_secs, SyncManager, SyncSettings};

#[pyclass(module = "kato_gpu._native", name = "SyncManager", frozen)]
pub struct PySyncManager {
    inner: SyncManager,
}

const SOURCES: [&str; 5] = ["manual", "automatic", "background", "training", "api"];

fn settings(threshold: usize, interval_seconds: f64, background: bool) -> PyResult<SyncSettings> {
    if threshold == 0 {
        return Err(PyValueError::new_err("sync_threshold must be positive"));
    }
    if !interval_seconds.is_finite() || interval_seconds <= 0.0 {
        return Err(PyValueError::new_err(format!("sync_interval_seconds must be positive, got {interval_seconds}")));
    }
    Ok(SyncSettings { threshold, interval: duration_from_secs(interval_seconds, "sync_interval_seconds")?, background })
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
        threshold: usize,
        interval_seconds: f64,
        background: bool,
    ) -> PyResult<Self> {
        let settings = settings(threshold, interval_seconds, background)?;
        let shared = matcher.inner.clone();
        Ok(PySyncManager { inner: py.allow_threads(|| SyncManager::new(&shared, settings)) })
    }

    fn configure(&self, threshold: usize, interval_seconds: f64, background: bool) -> PyResult<()> {
        self.inner.configure(settings(threshold, interval_seconds, background)?);
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

    fn check_needed(&self, py: Python<'_>, source: &str) -> PyResult<bool> {
        let source = check_source(source)?;
        py.allow_threads(|| guard(|| self.inner.check_needed(source)))
    }

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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySyncManager>()
}
