//! KATO's prediction tuples (`HybridGPUMatcher.match_predictions`): the core decides every part
//! (`Matcher::prediction_infos`, index ranges and numbers); this file only turns them into
//! Python lists of the symbols' `str` objects.

use std::collections::HashMap;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::vocabulary::SharedVocabulary;
use crate::prediction::{FuzzyTokens, PredictionInfo, PredictionRequest, Weights};
use crate::{Matcher, Matches, Vocabulary};

/// Affinity weights resolved once per call: per state position, and per vocabulary id for the
/// pattern symbols (a dict key that is no symbol of the vocabulary weighs nothing there).
pub struct ResolvedWeights {
    state: Vec<f64>,
    by_id: HashMap<u32, f64>,
}

impl ResolvedWeights {
    /// `None` for no weights or an empty dict (KATO then gives no weighted similarity).
    pub fn resolve(
        weights: Option<&Bound<'_, PyDict>>,
        state: &[Bound<'_, PyString>],
        vocab: &Vocabulary,
    ) -> PyResult<Option<ResolvedWeights>> {
        let Some(weights) = weights.filter(|w| !w.is_empty()) else { return Ok(None) };
        let weight_of = |symbol: &Bound<'_, PyString>| -> PyResult<f64> {
            weights.get_item(symbol)?.map_or(Ok(0.0), |w| w.extract::<f64>())
        };
        let state = state.iter().map(weight_of).collect::<PyResult<_>>()?;
        let mut by_id = HashMap::with_capacity(weights.len());
        for (symbol, weight) in weights.iter() {
            let Ok(symbol) = symbol.downcast::<PyString>() else { continue };
            let Ok(text) = symbol.to_cow() else { continue };
            if let Some(id) = vocab.id(&text) {
                by_id.insert(id, weight.extract::<f64>()?);
            }
        }
        Ok(Some(ResolvedWeights { state, by_id }))
    }

    /// The weight of a vocabulary id (0.0 for a symbol the dict does not name).
    pub fn symbol_weight(&self, id: u32) -> f64 {
        self.by_id.get(&id).copied().unwrap_or(0.0)
    }

    /// The core's form, `symbol` being [`ResolvedWeights::symbol_weight`] of `self`.
    pub fn as_weights<'a>(&'a self, symbol: &'a (dyn Fn(u32) -> f64 + Sync)) -> Weights<'a> {
        Weights { state: &self.state, symbol }
    }
}

/// The core's prediction info of every hit, read under the caller's matcher lock so that the
/// patterns are those the query matched.
#[allow(clippy::too_many_arguments)] // one request's parts, assembled here in one place
pub fn infos(
    matcher: &Matcher,
    vocab: &Vocabulary,
    hits: &Matches,
    state_ids: &[u32],
    state_texts: &[&str],
    cutoff_positive: bool,
    weights: Option<&ResolvedWeights>,
    fuzzy_token_threshold: f64,
) -> crate::Result<Vec<Option<PredictionInfo>>> {
    let symbol_weight = |id: u32| weights.and_then(|w| w.by_id.get(&id)).copied().unwrap_or(0.0);
    let symbol_text = |id: u32| vocab.symbol(id);
    let request = PredictionRequest {
        state: state_ids,
        cutoff_positive,
        weights: weights.map(|w| Weights { state: &w.state, symbol: &symbol_weight }),
        fuzzy: (fuzzy_token_threshold > 0.0).then_some(FuzzyTokens {
            threshold: fuzzy_token_threshold,
            state: state_texts,
            symbol: &symbol_text,
        }),
    };
    matcher.prediction_infos(hits, &request)
}

/// The 11-tuples `(pattern_name, pattern, matching_intersection, past, present, missing, extras,
/// similarity, number_of_blocks, anomalies, weighted_similarity)`, skipping hits KATO gives no
/// prediction for.
pub fn build_predictions<'py>(
    py: Python<'py>,
    vocab: &SharedVocabulary,
    names: &[&str],
    similarities: &[f64],
    patterns: &[Vec<u32>],
    infos: Vec<Option<PredictionInfo>>,
    state_symbols: &[Bound<'py, PyString>],
) -> PyResult<Bound<'py, PyList>> {
    let (key_observed, key_expected, key_similarity) =
        (intern!(py, "observed"), intern!(py, "expected"), intern!(py, "similarity"));
    let out = PyList::empty(py);
    for (k, info) in infos.into_iter().enumerate() {
        let Some(info) = info else { continue };
        let pattern = vocab.py_symbols(py, &patterns[k]);
        let parts = &info.parts;
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
            PyList::new(py, &pattern)?,
            PyList::new(py, from_state(&info.intersection))?,
            PyList::new(py, &pattern[..parts.past_end])?,
            PyList::new(py, &pattern[parts.present.0..parts.present.1])?,
            PyList::new(py, from_pattern(&parts.missing))?,
            PyList::new(py, from_state(&parts.extras))?,
            similarities[k],
            parts.blocks.len(),
            anomalies,
            info.weighted,
        );
        out.append(row)?;
    }
    Ok(out)
}
