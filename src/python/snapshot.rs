//! `kato_gpu._native._Snapshot`: a snapshot file read and verified (`crate::snapshot`), held
//! until `HybridGPUMatcher.load` moves its vocabulary and matcher into new objects.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;

use super::error::guard;
use super::lifecycle::unlocked;
use crate::matcher::Matcher;
use crate::metrics::Metric;
use crate::snapshot::{self, SnapshotInfo};
use crate::vocabulary::Vocabulary;

#[pyclass(module = "kato_gpu._native", name = "_Snapshot", frozen)]
pub struct PySnapshot {
    info: SnapshotInfo,
    vocabulary: Mutex<Option<Vocabulary>>,
    matcher: Mutex<Option<Matcher>>,
}

fn take<T>(slot: &Mutex<Option<T>>, what: &str) -> PyResult<T> {
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| PyValueError::new_err(format!("this snapshot's {what} was already taken")))
}

impl PySnapshot {
    pub fn take_vocabulary(&self) -> PyResult<Vocabulary> {
        take(&self.vocabulary, "vocabulary")
    }

    pub fn take_matcher(&self) -> PyResult<Matcher> {
        take(&self.matcher, "matcher")
    }
}

#[pymethods]
impl PySnapshot {
    /// Reads and verifies the snapshot at `path` (ValueError if it is damaged).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        if !path.exists() {
            return Err(PyFileNotFoundError::new_err(format!("no snapshot file at {}", path.display())));
        }
        let (vocabulary, matcher, info) = unlocked(py, || guard(|| snapshot::load(&path)))??;
        Ok(PySnapshot { info, vocabulary: Mutex::new(Some(vocabulary)), matcher: Mutex::new(Some(matcher)) })
    }

    #[getter]
    fn metric(&self) -> &'static str {
        self.info.metric.name()
    }

    #[getter]
    fn autojunk(&self) -> bool {
        matches!(self.info.metric, Metric::Difflib { autojunk: true })
    }

    #[getter]
    fn max_pattern_length(&self) -> Option<usize> {
        self.info.max_pattern_length
    }

    #[getter]
    fn patterns(&self) -> usize {
        self.info.patterns
    }

    #[getter]
    fn bulk_patterns(&self) -> usize {
        self.info.bulk_patterns
    }

    #[getter]
    fn symbols(&self) -> usize {
        self.info.symbols
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySnapshot>()
}
