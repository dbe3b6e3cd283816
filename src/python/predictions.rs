//! KATO's prediction tuples, materialised from the core's prediction info (see
//! `HybridGPUMatcher.match_predictions`): the core decides every part as index ranges and
//! numbers; this file only turns them into Python lists of the symbols' `str` objects.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::error::guard;
use super::vocabulary::SharedVocabulary;
use crate::prediction::{predictions, PredictionRequest};

/// The 11-tuples for matches k (name, similarity, pattern ids), skipping the matches KATO would
/// return None for. `state_symbols` are the state's `str` objects, `state_ids` their query ids.
#[allow(clippy::too_many_arguments)]
pub fn build_predictions<'py>(
    py: Python<'py>,
    vocab: &SharedVocabulary,
    names: &[&str],
    similarities: &[f64],
    patterns: &[Vec<u32>],
    state_symbols: &[Bound<'py, PyString>],
    state_ids: &[u32],
    cutoff_positive: bool,
    weights: Option<&Bound<'py, PyDict>>,
    fuzzy_token_threshold: f64,
) -> PyResult<Bound<'py, PyList>> {
    // Weights are looked up once per distinct symbol, by the symbol's own `str`.
    let weight_of = |symbol: &Bound<'py, PyString>| -> PyResult<f64> {
        match weights.map(|w| w.get_item(symbol)).transpose()?.flatten() {
            Some(value) => value.extract::<f64>(),
            None => Ok(0.0),
        }
    };
    let use_weights = weights.is_some_and(|w| !w.is_empty());
    let state_weights: Vec<f64> = if use_weights {
        state_symbols.iter().map(&weight_of).collect::<PyResult<_>>()?
    } else {
        Vec::new()
    };
    let mut pattern_symbols: Vec<Vec<Bound<'py, PyString>>> = Vec::with_capacity(patterns.len());
    for ids in patterns {
        pattern_symbols.push(vocab.py_symbols(py, ids));
    }
    let pattern_weights: Vec<Vec<f64>> = if use_weights {
        pattern_symbols.iter().map(|p| p.iter().map(&weight_of).collect::<PyResult<_>>()).collect::<PyResult<_>>()?
    } else {
        Vec::new()
    };
    let pattern_texts: Vec<Vec<String>>;
    let state_texts: Vec<String>;
    let fuzzy = fuzzy_token_threshold > 0.0;
    if fuzzy {
        pattern_texts = patterns
            .iter()
            .map(|ids| {
                let v = vocab.read();
                ids.iter().map(|&id| v.symbol(id).unwrap_or_default().to_owned()).collect()
            })
            .collect();
        state_texts = state_symbols.iter().map(|s| s.to_cow().map(|c| c.into_owned())).collect::<PyResult<_>>()?;
    } else {
        pattern_texts = Vec::new();
        state_texts = Vec::new();
    }
    let request = PredictionRequest {
        patterns,
        state: state_ids,
        cutoff_positive,
        state_weights: use_weights.then_some(state_weights.as_slice()),
        pattern_weights: use_weights.then_some(pattern_weights.as_slice()),
        fuzzy: fuzzy.then_some((fuzzy_token_threshold, pattern_texts.as_slice(), state_texts.as_slice())),
    };
    let infos = py.allow_threads(|| guard(|| predictions(&request)))?;

    let (key_observed, key_expected, key_similarity) =
        (pyo3::intern!(py, "observed"), pyo3::intern!(py, "expected"), pyo3::intern!(py, "similarity"));
    let out = PyList::empty(py);
    for (k, info) in infos.into_iter().enumerate() {
        let Some(info) = info else { continue };
        let pattern = &pattern_symbols[k];
        let from_state = |ranges: &[(usize, usize)]| -> Vec<Bound<'py, PyString>> {
            ranges.iter().flat_map(|&(lo, hi)| state_symbols[lo..hi].iter().cloned()).collect()
        };
        let from_pattern = |ranges: &[(usize, usize)]| -> Vec<Bound<'py, PyString>> {
            ranges.iter().flat_map(|&(lo, hi)| pattern[lo..hi].iter().cloned()).collect()
        };
        let anomalies = PyList::empty(py);
        for anomaly in &info.anomalies {
            let d = PyDict::new(py);
            d.set_item(key_observed, &state_symbols[anomaly.observed])?;
            d.set_item(key_expected, &pattern[anomaly.expected])?;
            d.set_item(key_similarity, anomaly.similarity)?;
            anomalies.append(d)?;
        }
        let row = (
            names[k],
            PyList::new(py, pattern)?,
            PyList::new(py, from_state(&info.intersection))?,
            PyList::new(py, &pattern[..info.past_end])?,
            PyList::new(py, &pattern[info.present.0..info.present.1])?,
            PyList::new(py, from_pattern(&info.missing))?,
            PyList::new(py, from_state(&info.extras))?,
            similarities[k],
            info.number_of_blocks,
            anomalies,
            info.weighted_similarity,
        );
        out.append(row)?;
    }
    Ok(out)
}
