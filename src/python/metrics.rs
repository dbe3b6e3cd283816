//! `kato_gpu._native.similarity`: one pair, on symbol ids (the Python wrapper maps any hashable
//! symbols to ids).

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::error::guard;
use super::lifecycle::unlocked;
use crate::metrics::Metric;

#[pyfunction]
#[pyo3(signature = (pattern, state, metric = "difflib", autojunk = false))]
fn similarity(py: Python<'_>, pattern: Vec<u32>, state: Vec<u32>, metric: &str, autojunk: bool) -> PyResult<f64> {
    let metric = Metric::from_name(metric, autojunk)?;
    unlocked(py, || guard(|| metric.similarity(&pattern, &state)))
}

/// The LCS kernel this process scans with (`"avx2"` or `"scalar"`): the best the CPU supports,
/// chosen once, unless `KATO_GPU_SIMD=scalar` forced the reference.
#[pyfunction]
fn lcs_kernel() -> &'static str {
    crate::metrics::simd::Kernel::selected().name()
}

/// `rapidfuzz.fuzz.ratio(a, b)`, computed in Rust (the fuzzy token path's scorer).
#[pyfunction]
fn fuzz_ratio(a: &str, b: &str) -> PyResult<f64> {
    guard(|| crate::metrics::fuzz::ratio(a, b))
}

/// `rapidfuzz.process.extractOne(token, choices, scorer=fuzz.ratio, score_cutoff=cutoff)` as
/// `(choice, score)` or `None`, computed in Rust.
#[pyfunction]
fn fuzzy_extract_one(token: &str, choices: Vec<String>, cutoff: f64) -> PyResult<Option<(String, f64)>> {
    // RapidFuzz checks the range on the cutoff after storing it in a C float.
    if !(0.0..=100.0).contains(&(cutoff as f32 as f64)) {
        return Err(PyValueError::new_err(format!("cutoff must be a score in [0, 100], got {cutoff}")));
    }
    let refs: Vec<&str> = choices.iter().map(String::as_str).collect();
    let best = guard(|| crate::metrics::fuzz::extract_one_str(token, &refs, cutoff))?;
    Ok(best.map(|(k, score)| (choices[k].clone(), score)))
}

type InfoTuple =
    (Vec<String>, Vec<String>, Vec<String>, Vec<String>, Vec<String>, usize, Vec<(String, String, f64)>, Option<f64>);

/// The core prediction builder on one pattern of strings, for tests: `None` or `(intersection,
/// past, present, missing, extras, number_of_blocks, anomalies as (observed, expected,
/// similarity), weighted_similarity)`. `fuzzy` 0 takes the exact path; `weights` None or empty
/// gives no weighted similarity, as in KATO.
#[pyfunction]
#[pyo3(signature = (pattern, state, cutoff_positive, fuzzy = 0.0, weights = None))]
fn prediction_info(
    py: Python<'_>,
    pattern: Vec<String>,
    state: Vec<String>,
    cutoff_positive: bool,
    fuzzy: f64,
    weights: Option<HashMap<String, f64>>,
) -> PyResult<Option<InfoTuple>> {
    use crate::prediction::{prediction_infos, FuzzyTokens, PredictionRequest, Weights};
    unlocked(py, || {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut texts: Vec<&str> = Vec::new();
        let pattern_ids: Vec<u32> = pattern
            .iter()
            .map(|s| {
                *ids.entry(s.as_str()).or_insert_with(|| {
                    texts.push(s.as_str());
                    texts.len() as u32 - 1
                })
            })
            .collect();
        let lookup: Vec<i64> = state.iter().map(|s| ids.get(s.as_str()).map_or(-1, |&id| id as i64)).collect();
        let query = crate::matcher::query_from_lookup(&lookup);
        let weights = weights.filter(|w| !w.is_empty());
        let weight = |s: &str| weights.as_ref().and_then(|w| w.get(s)).copied().unwrap_or(0.0);
        let state_weights: Vec<f64> = state.iter().map(|s| weight(s)).collect();
        let symbol_weight = |id: u32| weight(texts[id as usize]);
        let state_texts: Vec<&str> = state.iter().map(String::as_str).collect();
        let symbol_text = |id: u32| texts.get(id as usize).copied();
        let request = PredictionRequest {
            state: &query,
            cutoff_positive,
            weights: weights.as_ref().map(|_| Weights { state: &state_weights, symbol: &symbol_weight }),
            fuzzy: (fuzzy > 0.0).then_some(FuzzyTokens { threshold: fuzzy, state: &state_texts, symbol: &symbol_text }),
        };
        let info = guard(|| prediction_infos(1, |_| std::borrow::Cow::Borrowed(&pattern_ids[..]), &request))??;
        let slice = |items: &[String], ranges: &[(usize, usize)]| -> Vec<String> {
            ranges.iter().flat_map(|&(lo, hi)| items[lo..hi].iter().cloned()).collect()
        };
        Ok(info.into_iter().next().flatten().map(|info| {
            let parts = &info.parts;
            (
                slice(&state, &info.intersection),
                pattern[..parts.past_end].to_vec(),
                pattern[parts.present.0..parts.present.1].to_vec(),
                slice(&pattern, &parts.missing),
                slice(&state, &parts.extras),
                parts.blocks.len(),
                info.anomalies
                    .iter()
                    .map(|a| (state[a.observed].clone(), pattern[a.expected].clone(), a.similarity))
                    .collect(),
                info.weighted,
            )
        }))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("METRICS", Metric::NAMES.to_vec())?;
    m.add_function(wrap_pyfunction!(similarity, m)?)?;
    m.add_function(wrap_pyfunction!(lcs_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(fuzz_ratio, m)?)?;
    m.add_function(wrap_pyfunction!(fuzzy_extract_one, m)?)?;
    m.add_function(wrap_pyfunction!(prediction_info, m)?)
}
