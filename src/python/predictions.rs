//! KATO's prediction tuples built in Rust (see `HybridGPUMatcher.match_predictions`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::error::guard;

/// KATO's prediction tuples, built here rather than in Python: for match k (name, similarity,
/// vocabulary ids of its pattern) `(name, pattern, matching_intersection, past, present, missing,
/// extras, similarity, number_of_blocks, [], weighted_similarity)`, skipping the matches KATO
/// would return None for. `symbols[id]` is the symbol of each vocabulary id; `state` holds the
/// state's symbols and `state_lookup` their vocabulary ids (negative: unknown).
#[allow(clippy::too_many_arguments)]
pub fn build_predictions<'py>(
    py: Python<'py>,
    names: Vec<Bound<'py, PyAny>>,
    similarities: Vec<f64>,
    patterns: Vec<Vec<u32>>,
    state: Vec<Bound<'py, PyAny>>,
    state_lookup: Vec<i64>,
    symbols: Vec<Bound<'py, PyAny>>,
    cutoff_positive: bool,
    weights: Option<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyList>> {
    if names.len() != similarities.len() || names.len() != patterns.len() {
        return Err(PyValueError::new_err("names, similarities and patterns must have the same length"));
    }
    if let Some(bad) = patterns.iter().flatten().find(|&&id| id as usize >= symbols.len()) {
        return Err(PyValueError::new_err(format!("symbol id {bad} has no entry in the symbol table")));
    }
    let lookup = crate::matcher::query_from_lookup(&state_lookup);
    let parts =
        py.allow_threads(|| guard(|| crate::prediction::prediction_parts_many(&patterns, &lookup, cutoff_positive)))?;
    let weight = |symbol: &Bound<'py, PyAny>| -> PyResult<f64> {
        match weights.as_ref().map(|w| w.get_item(symbol)).transpose()?.flatten() {
            Some(value) => value.extract::<f64>(),
            None => Ok(0.0),
        }
    };
    let weighted_total =
        |items: &[Bound<'py, PyAny>]| -> PyResult<f64> { items.iter().try_fold(0.0, |sum, t| Ok(sum + weight(t)?)) };
    let use_weights = weights.as_ref().is_some_and(|w| !w.is_empty());
    let state_weight = if use_weights { weighted_total(&state)? } else { 0.0 };
    let out = PyList::empty(py);
    for (k, part) in parts.into_iter().enumerate() {
        let Some(part) = part else { continue };
        let pattern: Vec<Bound<'py, PyAny>> = patterns[k].iter().map(|&id| symbols[id as usize].clone()).collect();
        let slice_of = |items: &[Bound<'py, PyAny>], ranges: &[(usize, usize)]| -> Vec<Bound<'py, PyAny>> {
            ranges.iter().flat_map(|&(lo, hi)| items[lo..hi].iter().cloned()).collect()
        };
        let block_ranges: Vec<(usize, usize)> = part.blocks.iter().map(|b| (b.j, b.j + b.size)).collect();
        let intersection = slice_of(&state, &block_ranges);
        let weighted = if use_weights {
            let matched = weighted_total(&intersection)?;
            crate::prediction::weighted_similarity(matched, state_weight, weighted_total(&pattern)?)
        } else {
            None
        };
        let row = (
            names[k].clone(),
            PyList::new(py, &pattern)?,
            PyList::new(py, &intersection)?,
            PyList::new(py, &pattern[..part.past_end])?,
            PyList::new(py, &pattern[part.present.0..part.present.1])?,
            PyList::new(py, slice_of(&pattern, &part.missing))?,
            PyList::new(py, slice_of(&state, &part.extras))?,
            similarities[k],
            part.blocks.len(),
            PyList::empty(py),
            weighted,
        );
        out.append(row)?;
    }
    Ok(out)
}
