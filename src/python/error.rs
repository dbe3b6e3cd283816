//! Maps core errors and panics to Python exceptions.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

use crate::error::KatoError;

impl From<KatoError> for PyErr {
    fn from(err: KatoError) -> PyErr {
        match err {
            // The device failed, or another encoder holds the vocabulary file: not the caller's values.
            KatoError::DeviceLost(_) | KatoError::StoreLocked(_) => PyRuntimeError::new_err(err.to_string()),
            KatoError::StoreIo(_) | KatoError::SnapshotIo(_) => PyOSError::new_err(err.to_string()),
            // Every other core error is a caller's mistake with the values passed.
            _ => PyValueError::new_err(err.to_string()),
        }
    }
}

/// Runs core code, turning a panic into a `RuntimeError` instead of letting it unwind into Python.
pub fn guard<T>(f: impl FnOnce() -> T) -> Result<T, PyErr> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        log::error!("internal error in kato_gpu: {message}");
        PyRuntimeError::new_err(format!("kato_gpu internal error (please report): {message}"))
    })
}
