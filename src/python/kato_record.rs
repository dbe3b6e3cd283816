//! The Python side of `crate::kato_record` (`HybridGPUMatcher.kato_ranked_predictions` and the
//! single-symbol methods): the core ranks and scores; this file only turns its records into
//! tuples of the symbols' `str` objects.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::vocabulary::{describe, is_text, SharedVocabulary};
use crate::kato_filters::Stage;
use crate::kato_record::{RankedRecord, SingleSymbolRecord};

/// A count argument (`keep`): an int >= 0, not a bool.
pub struct Count(pub usize);

impl<'py> FromPyObject<'py> for Count {
    fn extract_bound(value: &Bound<'py, PyAny>) -> PyResult<Self> {
        let integral = value.py().import("numbers")?.getattr("Integral")?;
        if value.is_instance_of::<PyBool>() || !value.is_instance(&integral)? {
            return Err(PyTypeError::new_err(format!("keep must be an int, got {}", describe(value))));
        }
        let count = value.extract::<i128>().ok().filter(|&k| k >= 0).and_then(|k| usize::try_from(k).ok());
        count
            .map(Count)
            .ok_or_else(|| PyValueError::new_err(format!("keep must be an int in [0, 2**64), got {}", describe(value))))
    }
}

/// A filter stage parameter: None, or an int or float (not a bool).
fn parameter(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<f64>> {
    if value.is_none() {
        return Ok(None);
    }
    if value.is_instance_of::<PyBool>() || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
        return Err(PyTypeError::new_err(format!("{what} must be an int, a float or None, got {}", describe(value))));
    }
    Ok(Some(value.extract::<f64>()?))
}

/// KATO's filter stages, `[(name, a, b), ...]`: `("length", length_min_ratio,
/// length_max_ratio)`, `("jaccard", jaccard_threshold, jaccard_min_overlap)`, `("rapidfuzz",
/// recall_threshold, None)`, each parameter as the session holds it (None when unset).
pub struct Stages(pub Vec<Stage>);

impl<'py> FromPyObject<'py> for Stages {
    fn extract_bound(value: &Bound<'py, PyAny>) -> PyResult<Self> {
        if is_text(value) {
            return Err(PyTypeError::new_err("stages must be a list of (name, a, b) tuples, not a str"));
        }
        let items = value.try_iter().map_err(|_| {
            PyTypeError::new_err(format!("stages must be a list of (name, a, b) tuples, got {}", describe(value)))
        })?;
        let mut stages = Vec::new();
        for item in items {
            let item = item?;
            let parts: (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>) = item.extract().map_err(|_| {
                PyTypeError::new_err(format!("a stage must be a (name, a, b) tuple, got {}", describe(&item)))
            })?;
            let name: String = parts
                .0
                .extract()
                .map_err(|_| PyTypeError::new_err(format!("a stage name must be a str, got {}", describe(&parts.0))))?;
            let stage = match name.as_str() {
                "length" => Stage::Length {
                    min_ratio: parameter(&parts.1, "length_min_ratio")?,
                    max_ratio: parameter(&parts.2, "length_max_ratio")?,
                },
                "jaccard" => Stage::Jaccard {
                    threshold: parameter(&parts.1, "jaccard_threshold")?,
                    min_overlap: parameter(&parts.2, "jaccard_min_overlap")?,
                },
                "rapidfuzz" => Stage::RapidFuzz { threshold: parameter(&parts.1, "recall_threshold")? },
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown filter stage {other:?}: expected \"length\", \"jaccard\" or \"rapidfuzz\""
                    )))
                }
            };
            stages.push(stage);
        }
        Ok(Stages(stages))
    }
}

/// A kept record's matching intersection (state ranges) and weighted similarity.
pub type Intersection = (Vec<(usize, usize)>, Option<f64>);

/// What the tuples of one call are built from, detached from the matcher's lock.
pub struct Detached<R> {
    pub records: Vec<R>,
    pub names: Vec<String>,
    /// Each record's pattern symbols and event lengths.
    pub patterns: Vec<(Vec<u32>, Vec<u32>)>,
}

/// `[[symbols of event 0], [symbols of event 1], ...]`.
pub fn events_list<'py>(
    py: Python<'py>,
    symbols: &[Bound<'py, PyString>],
    event_lens: &[u32],
) -> PyResult<Bound<'py, PyList>> {
    let mut at = 0;
    let events = PyList::empty(py);
    for &len in event_lens {
        let end = at + len as usize;
        events.append(PyList::new(py, &symbols[at..end])?)?;
        at = end;
    }
    Ok(events)
}

fn slices<'py>(symbols: &[Bound<'py, PyString>], ranges: &[(usize, usize)]) -> Vec<Bound<'py, PyString>> {
    ranges.iter().flat_map(|&(lo, hi)| symbols[lo..hi].iter().cloned()).collect()
}

/// `(name, pattern_events, matching_intersection, past, present, missing, extras, similarity,
/// number_of_blocks, weighted_similarity, pre_potential)` per record, the lists flat as KATO's
/// `extract_prediction_info` gives them. `infos[k]`: record k's intersection ranges and weighted
/// similarity.
pub fn ranked_tuples<'py>(
    py: Python<'py>,
    vocab: &SharedVocabulary,
    detached: &Detached<RankedRecord>,
    infos: &[Intersection],
    state: &[Bound<'py, PyString>],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (k, record) in detached.records.iter().enumerate() {
        let (tokens, event_lens) = &detached.patterns[k];
        let pattern = vocab.py_symbols(py, tokens);
        let parts = &record.parts;
        let (intersection, weighted) = &infos[k];
        let row: [PyObject; 11] = [
            detached.names[k].as_str().into_pyobject(py)?.into_any().unbind(),
            events_list(py, &pattern, event_lens)?.into_any().unbind(),
            PyList::new(py, slices(state, intersection))?.into_any().unbind(),
            PyList::new(py, &pattern[..parts.past_end])?.into_any().unbind(),
            PyList::new(py, &pattern[parts.present.0..parts.present.1])?.into_any().unbind(),
            PyList::new(py, slices(&pattern, &parts.missing))?.into_any().unbind(),
            PyList::new(py, slices(state, &parts.extras))?.into_any().unbind(),
            record.similarity.into_pyobject(py)?.into_any().unbind(),
            parts.blocks.len().into_pyobject(py)?.into_any().unbind(),
            weighted.into_pyobject(py)?.into_any().unbind(),
            record.scores.pre_potential.into_pyobject(py)?.into_any().unbind(),
        ];
        out.append(PyTuple::new(py, row)?)?;
    }
    Ok(out)
}

/// `(name, pattern_events, matches, missing, present, past, future, extras, similarity, evidence,
/// confidence, snr, fragmentation, weighted_similarity, weighted_evidence, weighted_confidence,
/// weighted_snr, potential)` per record: the fields of KATO's single-symbol dict that depend on
/// the pattern, the lists flat as that path builds them.
pub fn single_symbol_tuples<'py>(
    py: Python<'py>,
    vocab: &SharedVocabulary,
    detached: &Detached<SingleSymbolRecord>,
    state: &[Bound<'py, PyString>],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (k, r) in detached.records.iter().enumerate() {
        let (tokens, event_lens) = &detached.patterns[k];
        let pattern = vocab.py_symbols(py, tokens);
        let parts = &r.parts;
        let present = &pattern[parts.present.0..parts.present.1];
        let future_from = parts.past_end + present.len();
        let future = if future_from < pattern.len() { &pattern[future_from..] } else { &[] };
        let row: [PyObject; 18] = [
            detached.names[k].as_str().into_pyobject(py)?.into_any().unbind(),
            events_list(py, &pattern, event_lens)?.into_any().unbind(),
            PyList::new(py, slices(state, &r.intersection))?.into_any().unbind(),
            PyList::new(py, slices(&pattern, &parts.missing))?.into_any().unbind(),
            PyList::new(py, present)?.into_any().unbind(),
            PyList::new(py, &pattern[..parts.past_end])?.into_any().unbind(),
            PyList::new(py, future)?.into_any().unbind(),
            PyList::new(py, slices(state, &parts.extras))?.into_any().unbind(),
            r.similarity.into_pyobject(py)?.into_any().unbind(),
            r.evidence.into_pyobject(py)?.into_any().unbind(),
            r.confidence.into_pyobject(py)?.into_any().unbind(),
            r.snr.into_pyobject(py)?.into_any().unbind(),
            r.fragmentation.into_pyobject(py)?.into_any().unbind(),
            r.weighted_similarity.into_pyobject(py)?.into_any().unbind(),
            r.weighted_evidence.into_pyobject(py)?.into_any().unbind(),
            r.weighted_confidence.into_pyobject(py)?.into_any().unbind(),
            r.weighted_snr.into_pyobject(py)?.into_any().unbind(),
            r.potential.into_pyobject(py)?.into_any().unbind(),
        ];
        out.append(PyTuple::new(py, row)?)?;
    }
    Ok(out)
}
