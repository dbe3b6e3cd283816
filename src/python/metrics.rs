//! `kato_gpu._native.similarity`: one pair, on symbol ids (the Python wrapper maps any hashable
//! symbols to ids).

use pyo3::prelude::*;

use super::error::guard;
use crate::metrics::Metric;

#[pyfunction]
#[pyo3(signature = (pattern, state, metric = "difflib", autojunk = false))]
fn similarity(py: Python<'_>, pattern: Vec<u32>, state: Vec<u32>, metric: &str, autojunk: bool) -> PyResult<f64> {
    let metric = Metric::from_name(metric, autojunk)?;
    py.allow_threads(|| guard(|| metric.similarity(&pattern, &state)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(similarity, m)?)
}
