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

type Ranges = Vec<(usize, usize)>;
type PartsTuple = (Vec<(usize, usize, usize)>, usize, (usize, usize), Ranges, Ranges);

/// KATO's prediction info parts for each pattern (vocabulary ids) against a state (a vocabulary
/// lookup: negative = unknown symbol): `None`, or `(blocks, past_end, (present_lo, present_hi),
/// missing ranges in the pattern, extras ranges in the state)`. Computed on all cores.
#[pyfunction]
fn prediction_parts(
    py: Python<'_>,
    patterns: Vec<Vec<u32>>,
    state: Vec<i64>,
    cutoff_positive: bool,
) -> PyResult<Vec<Option<PartsTuple>>> {
    let state = crate::matcher::query_from_lookup(&state);
    py.allow_threads(|| {
        guard(|| {
            crate::prediction::prediction_parts_many(&patterns, &state, cutoff_positive)
                .into_iter()
                .map(|parts| {
                    parts.map(|p| {
                        let blocks = p.blocks.iter().map(|b| (b.i, b.j, b.size)).collect();
                        (blocks, p.past_end, p.present, p.missing, p.extras)
                    })
                })
                .collect()
        })
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(similarity, m)?)?;
    m.add_function(wrap_pyfunction!(prediction_parts, m)?)
}
