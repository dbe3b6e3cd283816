//! `kato_gpu._native.HybridGPUMatcher` (the tiered matcher over the vocabulary it was built on)
//! and `MatchResult`. Every call goes from Python strings to results in one native call: the
//! symbols are looked up (queries) or interned (learns) here, and every rule (validation, order,
//! candidates, rounding, weights) is the core's.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString};
use rayon::prelude::*;

use super::error::guard;
use super::kato_record::{self, Count};
use super::lifecycle::unlocked;
use super::predictions::ResolvedWeights;
use super::vocabulary::{describe, events_of, is_text, strs, symbol_of, symbols_of, PyVocabulary, SharedVocabulary};
use crate::cuda::driver::CudaBackend;
use crate::cuda::tier::{DeviceTier, TierLimits};
use crate::kpi::HistogramSnapshot;
use crate::matcher::QueryOptions;
use crate::matcher::{query_from_lookup, Matcher, SharedMatcher};
use crate::metrics::Metric;
use crate::metrics::SimilarityRule;
use crate::ordering::Matches;
use crate::store::NameSnapshot;
use crate::sync::SyncSettings;

#[pyclass(module = "kato_gpu._native", name = "HybridGPUMatcher", subclass, frozen)]
pub struct PyMatcher {
    /// Shared with the sync worker (`SyncManager`), which holds only a weak reference.
    pub(crate) inner: SharedMatcher,
    vocab: Arc<SharedVocabulary>,
    encoder: Py<PyVocabulary>,
    /// The sync triggers `check_sync_needed` applies (set by `_configure_sync`; the Python
    /// class sets them from its `GPUConfig`).
    sync: Mutex<Option<SyncSettings>>,
}

impl PyMatcher {
    // A panic while a guard was held (caught by `guard`) leaves the data usable: every mutation
    // validates before it changes anything, so the poison flag is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Matcher> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Matcher> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn state_ids(&self, state: &[String]) -> Vec<u32> {
        state_ids(&self.vocab.read(), state)
    }

    fn query(
        &self,
        py: Python<'_>,
        state: &Bound<'_, PyAny>,
        threshold: f64,
        limit: Option<usize>,
    ) -> PyResult<MatchResult> {
        let state = state_of(state)?;
        unlocked(py, || {
            guard(|| {
                let ids = self.state_ids(&state);
                let matcher = self.read();
                let hits = matcher.query(&ids, threshold, limit)?;
                Ok(collect(&matcher, hits))
            })
        })?
    }

    fn query_batch(
        &self,
        py: Python<'_>,
        states: &Bound<'_, PyAny>,
        threshold: f64,
        limit: Option<usize>,
    ) -> PyResult<Vec<MatchResult>> {
        if is_text(states) {
            return Err(PyTypeError::new_err("states must be a list of states (lists of str), not a str"));
        }
        let states: Vec<Vec<String>> = states
            .try_iter()
            .map_err(|_| PyTypeError::new_err(format!("states must be a list of states, got {}", describe(states))))?
            .map(|s| state_of(&s?))
            .collect::<PyResult<_>>()?;
        unlocked(py, || {
            guard(|| {
                let ids: Vec<Vec<u32>> = states.iter().map(|s| self.state_ids(s)).collect();
                let matcher = self.read();
                let hits = matcher.query_batch(&ids, threshold, limit)?;
                Ok(hits.into_iter().map(|h| collect(&matcher, h)).collect())
            })
        })?
    }

    /// Learns patterns (names and flattened symbols) in one transaction: names and lengths are
    /// checked, new symbols interned and persisted, then the patterns inserted; all or nothing.
    /// `None` when `skip_stored` and the one name is already stored.
    fn learn(&self, names: &[String], patterns: &[Vec<String>], skip_stored: bool) -> PyResult<Option<usize>> {
        self.learn_events(names, patterns, None, skip_stored)
    }

    /// [`PyMatcher::learn`] keeping events: `events[k]` are the event lengths of pattern k.
    fn learn_events(
        &self,
        names: &[String],
        patterns: &[Vec<String>],
        events: Option<&[Vec<u32>]>,
        skip_stored: bool,
    ) -> PyResult<Option<usize>> {
        let names: Vec<&str> = strs(names);
        let flat: Vec<&str> = patterns.iter().flat_map(|p| p.iter().map(String::as_str)).collect();
        let lengths: Vec<usize> = patterns.iter().map(Vec::len).collect();
        self.vocab.learn(
            &flat,
            || {
                let matcher = self.read();
                if skip_stored && names.len() == 1 && matcher.contains(names[0]) {
                    return Ok(false);
                }
                matcher.check_new_patterns(&names, &lengths)?;
                Ok(true)
            },
            |ids| {
                let mut offsets = Vec::with_capacity(lengths.len() + 1);
                offsets.push(0u64);
                for &len in &lengths {
                    offsets.push(offsets.last().unwrap() + len as u64);
                }
                let mut matcher = self.write();
                let Some(events) = events else { return Ok(matcher.insert_batch(&names, ids, &offsets)?) };
                let event_lens: Vec<u32> = events.concat();
                let mut event_offsets = Vec::with_capacity(events.len() + 1);
                event_offsets.push(0u64);
                for e in events {
                    event_offsets.push(event_offsets.last().unwrap() + e.len() as u64);
                }
                Ok(matcher.insert_batch_events(&names, ids, &offsets, &event_lens, &event_offsets)?)
            },
        )
    }

    /// Detaches records for Python: names, pattern symbols and event lengths, read under the
    /// lock the records were computed under.
    fn detach<R>(matcher: &Matcher, records: Vec<R>, slot: impl Fn(&R) -> u32) -> kato_record::Detached<R> {
        let names = records.iter().map(|r| matcher.name(slot(r)).to_string()).collect();
        let patterns = records
            .iter()
            .map(|r| (matcher.tokens(slot(r)).into_owned(), matcher.event_lens(slot(r)).to_vec()))
            .collect();
        kato_record::Detached { records, names, patterns }
    }
}

/// `lists` as patterns of events (`what` names it in errors), one per name.
fn patterns_events_of(lists: &Bound<'_, PyAny>, what: &str, names: usize) -> PyResult<Vec<Vec<Vec<String>>>> {
    if is_text(lists) {
        return Err(PyTypeError::new_err(format!("{what} must be a list of patterns (lists of events), not a str")));
    }
    let patterns: Vec<Vec<Vec<String>>> = lists
        .try_iter()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a list of patterns, got {}", describe(lists))))?
        .enumerate()
        .map(|(k, events)| events_of(&events?, &format!("pattern {k}")))
        .collect::<PyResult<_>>()?;
    if names != patterns.len() {
        return Err(PyValueError::new_err(format!("got {names} names but {} patterns", patterns.len())));
    }
    Ok(patterns)
}

/// Patterns as lists of events: the flat symbols and the event lengths of each.
fn patterns_of_events(events: Vec<Vec<Vec<String>>>) -> (Vec<Vec<String>>, Vec<Vec<u32>>) {
    let lens = events.iter().map(|p| p.iter().map(|e| e.len() as u32).collect()).collect();
    (events.into_iter().map(|p| p.concat()).collect(), lens)
}

/// Query ids of a state: vocabulary ids, unknown symbols each their own id that matches nothing.
fn state_ids(vocab: &crate::Vocabulary, state: &[String]) -> Vec<u32> {
    let lookup: Vec<i64> = state.iter().map(|s| vocab.id(s).map_or(-1, i64::from)).collect();
    query_from_lookup(&lookup)
}

/// Detaches a query's hits from the matcher: similarities, slots, and a snapshot of the name
/// arena that keeps the matched names alive without copying them.
fn collect(matcher: &Matcher, hits: Matches) -> MatchResult {
    MatchResult { similarities: hits.similarities, slots: hits.slots, names: matcher.names() }
}

fn state_of(state: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    symbols_of(state, "state")
}

/// A pattern name: a non-empty `str` of valid Unicode.
fn name_of(name: &Bound<'_, PyAny>) -> PyResult<String> {
    let name = super::vocabulary::symbol_of(name, &|| "pattern name".to_string())?;
    if name.is_empty() {
        return Err(crate::error::KatoError::EmptyName.into());
    }
    Ok(name)
}

/// A sequence of names (a bare `str` is refused, not taken as one name per character).
fn names_of(names: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    symbols_of(names, what)
}

/// A threshold argument: a real number (not a bool) in [0.0, 1.0]; the range rule is the core's.
pub struct Threshold(pub f64);

impl<'py> FromPyObject<'py> for Threshold {
    fn extract_bound(value: &Bound<'py, PyAny>) -> PyResult<Self> {
        let threshold = real_of(value, "threshold")?;
        crate::metrics::validate_threshold(threshold)?;
        Ok(Threshold(threshold))
    }
}

/// A real number (not a bool) as f64; one too large for a float (10**400) is a ValueError.
pub fn real_of(value: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    if value.is_instance_of::<PyBool>() || !is_instance_of_abc(value, "Real")? {
        return Err(PyTypeError::new_err(format!("{what} must be a real number, got {}", describe(value))));
    }
    value.extract::<f64>().map_err(|_| PyValueError::new_err(format!("{what} is out of range: {}", describe(value))))
}

/// A `max_predictions` argument: None (no limit) or an int >= 0 (not a bool).
#[derive(Clone, Copy)]
pub struct Limit(pub Option<usize>);

impl Limit {
    /// KATO's default number of results of `match_patterns` and its siblings.
    const KATO_DEFAULT: Limit = Limit(Some(100));
    const NONE: Limit = Limit(None);
}

impl<'py> FromPyObject<'py> for Limit {
    fn extract_bound(value: &Bound<'py, PyAny>) -> PyResult<Self> {
        if value.is_none() {
            return Ok(Limit(None));
        }
        if value.is_instance_of::<PyBool>() || !is_instance_of_abc(value, "Integral")? {
            return Err(PyTypeError::new_err(format!(
                "max_predictions must be an int or None, got {}",
                describe(value)
            )));
        }
        let limit = value.extract::<i128>().ok().filter(|&k| k >= 0).and_then(|k| usize::try_from(k).ok());
        limit.map(|k| Limit(Some(k))).ok_or_else(|| {
            PyValueError::new_err(format!(
                "max_predictions must be None or an int in [0, 2**64), got {}",
                describe(value)
            ))
        })
    }
}

/// A strict bool argument: `promote="no"` is a mistake, not `True`.
pub struct Flag(pub bool);

impl<'py> FromPyObject<'py> for Flag {
    fn extract_bound(value: &Bound<'py, PyAny>) -> PyResult<Self> {
        // numpy.bool_ is no subclass of bool but is a bool.
        if value.is_instance_of::<PyBool>() || value.get_type().name()?.to_cow()? == "bool" {
            return Ok(Flag(value.is_truthy()?));
        }
        Err(PyTypeError::new_err(format!("must be a bool, got {}", describe(value))))
    }
}

fn is_instance_of_abc(value: &Bound<'_, PyAny>, abc: &str) -> PyResult<bool> {
    let class = value.py().import("numbers")?.getattr(abc)?;
    value.is_instance(&class)
}

/// Affinity weights: a dict of symbol -> finite real weight.
fn weights_of<'py>(weights: Option<Bound<'py, PyAny>>) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(weights) = weights.filter(|w| !w.is_none()) else { return Ok(None) };
    let weights = weights.downcast_into::<PyDict>().map_err(|e| {
        PyTypeError::new_err(format!("weights must be a dict of symbol -> weight, got {}", describe(&e.into_inner())))
    })?;
    for (symbol, weight) in weights.iter() {
        let value = real_of(&weight, &format!("weight of {}", describe(&symbol)))?;
        if !value.is_finite() {
            return Err(PyValueError::new_err(format!("weight of {} must be finite, got {value}", describe(&symbol))));
        }
    }
    Ok(Some(weights))
}

#[pymethods]
impl PyMatcher {
    /// Built on `encoder` (whose ids it uses; learning through the matcher adds symbols to it),
    /// with the given metric. `max_pattern_length` (None: unlimited) refuses longer patterns
    /// and query states.
    #[new]
    #[pyo3(signature = (encoder, metric = "difflib", autojunk = false, max_pattern_length = None))]
    fn new(
        encoder: Bound<'_, PyVocabulary>,
        metric: &str,
        autojunk: bool,
        max_pattern_length: Option<usize>,
    ) -> PyResult<Self> {
        let matcher = Matcher::with_max_pattern_length(Metric::from_name(metric, autojunk)?, max_pattern_length);
        let inner = Arc::new(RwLock::new(matcher));
        let vocab = encoder.get().shared.clone();
        vocab.add_user(&inner);
        Ok(PyMatcher { inner, vocab, encoder: encoder.unbind(), sync: Mutex::new(None) })
    }

    // ---------------------------------------------------------------- snapshots

    /// Writes this matcher and its encoder's vocabulary to `path` (atomically: a temporary file
    /// in the same directory, synced, renamed over `path`). A consistent point in time: learning
    /// (and removal) waits while the file is written, queries go on.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        unlocked(py, || {
            guard(|| {
                // The learn lock first, as a learn takes it: the vocabulary and the patterns
                // are then from the same moment.
                self.vocab.hold(|vocab| Ok(crate::snapshot::save(&path, vocab, &self.read())?))
            })
        })?
    }

    /// Takes the matcher of a snapshot (`HybridGPUMatcher.load`, before a GPU is attached):
    /// this matcher must be empty and of the snapshot's metric; it keeps its own
    /// `max_pattern_length` for later learning.
    fn _restore_snapshot(&self, py: Python<'_>, snapshot: &Bound<'_, super::snapshot::PySnapshot>) -> PyResult<()> {
        let mut restored = snapshot.get().take_matcher()?;
        unlocked(py, || {
            guard(|| {
                let mut matcher = self.write();
                if !matcher.is_empty() || matcher.device_status().active {
                    return Err(PyValueError::new_err(
                        "a snapshot can only be restored into an empty matcher without a GPU",
                    ));
                }
                if matcher.metric() != restored.metric() {
                    return Err(PyValueError::new_err(format!(
                        "the snapshot was saved with metric {:?} (autojunk={}), not {:?} (autojunk={})",
                        restored.metric().name(),
                        matches!(restored.metric(), Metric::Difflib { autojunk: true }),
                        matcher.metric().name(),
                        matches!(matcher.metric(), Metric::Difflib { autojunk: true }),
                    )));
                }
                restored.set_max_pattern_length(matcher.max_pattern_length());
                *matcher = restored;
                Ok(())
            })
        })?
    }

    /// The vocabulary this matcher's ids come from.
    #[getter]
    fn encoder(&self, py: Python<'_>) -> Py<PyVocabulary> {
        self.encoder.clone_ref(py)
    }

    #[getter]
    fn metric(&self, py: Python<'_>) -> &'static str {
        unlocked(py, || self.read().metric().name())
    }

    // ---------------------------------------------------------------- queries

    /// Like `match_patterns`, but a `MatchResult` (`.names`, `.similarities` as a float64 array)
    /// without a dict per match.
    #[pyo3(signature = (state, threshold, max_predictions = Limit::KATO_DEFAULT), text_signature = "(self, state, threshold, max_predictions=100)")]
    fn match_patterns_arrays(
        &self,
        py: Python<'_>,
        state: Bound<'_, PyAny>,
        threshold: Threshold,
        max_predictions: Limit,
    ) -> PyResult<MatchResult> {
        self.query(py, &state, threshold.0, max_predictions.0)
    }

    /// Every pattern whose similarity to `state` is `>= threshold`, as `{'pattern_name',
    /// 'similarity'}` dicts ordered by similarity descending then name ascending; at most
    /// `max_predictions` (None: all).
    #[pyo3(signature = (state, threshold, max_predictions = Limit::KATO_DEFAULT), text_signature = "(self, state, threshold, max_predictions=100)")]
    fn match_patterns<'py>(
        &self,
        py: Python<'py>,
        state: Bound<'py, PyAny>,
        threshold: Threshold,
        max_predictions: Limit,
    ) -> PyResult<Bound<'py, PyList>> {
        self.query(py, &state, threshold.0, max_predictions.0)?.to_dicts(py)
    }

    /// `match_patterns_arrays` for many states in one call, the states spread over the cores.
    #[pyo3(signature = (states, threshold, max_predictions = Limit::KATO_DEFAULT), text_signature = "(self, states, threshold, max_predictions=100)")]
    fn match_patterns_batch_arrays(
        &self,
        py: Python<'_>,
        states: Bound<'_, PyAny>,
        threshold: Threshold,
        max_predictions: Limit,
    ) -> PyResult<Vec<MatchResult>> {
        self.query_batch(py, &states, threshold.0, max_predictions.0)
    }

    /// `match_patterns` for many states in one call, the states spread over the cores.
    #[pyo3(signature = (states, threshold, max_predictions = Limit::KATO_DEFAULT), text_signature = "(self, states, threshold, max_predictions=100)")]
    fn match_patterns_batch<'py>(
        &self,
        py: Python<'py>,
        states: Bound<'py, PyAny>,
        threshold: Threshold,
        max_predictions: Limit,
    ) -> PyResult<Vec<Bound<'py, PyList>>> {
        self.query_batch(py, &states, threshold.0, max_predictions.0)?.iter().map(|r| r.to_dicts(py)).collect()
    }

    /// KATO's prediction tuples for every pattern with similarity `>= threshold`, in result
    /// order: `(pattern_name, pattern, matching_intersection, past, present, missing, extras,
    /// similarity, number_of_blocks, anomalies, weighted_similarity)`, `pattern` flattened.
    ///
    /// `candidates`: only these pattern names are considered (KATO's filter pipeline).
    /// `weights`: symbol -> weight, for `weighted_similarity` (else None). `kato_rounding`:
    /// similarities as KATO's RapidFuzz path computes them, `(2.0*l/T*100.0)/100.0` (metric
    /// "lcs" only); threshold and order use that value. `fuzzy_token_threshold` > 0: KATO's fuzzy
    /// token path (per-token `fuzz.ratio` matches, inexact ones reported as anomalies).
    #[pyo3(signature = (state, threshold, max_predictions = Limit::NONE, *, candidates = None, weights = None,
                        kato_rounding = Flag(false), fuzzy_token_threshold = None),
                  text_signature = "(self, state, threshold, max_predictions=None, *, candidates=None, weights=None, kato_rounding=False, fuzzy_token_threshold=None)")]
    #[allow(clippy::too_many_arguments)]
    fn match_predictions<'py>(
        &self,
        py: Python<'py>,
        state: Bound<'py, PyAny>,
        threshold: Threshold,
        max_predictions: Limit,
        candidates: Option<Bound<'py, PyAny>>,
        weights: Option<Bound<'py, PyAny>>,
        kato_rounding: Flag,
        fuzzy_token_threshold: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let state: Vec<String> = symbols_of(&state, "state")?;
        let state_symbols: Vec<Bound<'py, PyString>> = state.iter().map(|s| PyString::new(py, s)).collect();
        let fuzzy = match fuzzy_token_threshold.filter(|f| !f.is_none()) {
            Some(f) => real_of(&f, "fuzzy_token_threshold")?,
            None => 0.0,
        };
        crate::metrics::validate_threshold(fuzzy)?;
        let weights = weights_of(weights)?;
        let weights = ResolvedWeights::resolve(weights.as_ref(), &state_symbols, &self.vocab.read())?;
        let candidates = match candidates.filter(|c| !c.is_none()) {
            Some(c) => Some(names_of(&c, "candidates")?),
            None => None,
        };
        let rule = if kato_rounding.0 { SimilarityRule::KatoRounded } else { SimilarityRule::Exact };
        let (hits, names, patterns, infos) = unlocked(py, || {
            guard(|| -> crate::Result<_> {
                let vocab = self.vocab.read();
                let ids = state_ids(&vocab, &state);
                let texts: Vec<&str> = state.iter().map(String::as_str).collect();
                // One read lock for the query and the patterns it matched: a pattern removed
                // meanwhile is in both or in neither.
                let matcher = self.read();
                let mut options = QueryOptions::default().with_rule(rule);
                if let Some(names) = &candidates {
                    options = options.with_candidates(names.iter().map(String::as_str));
                }
                let hits = matcher.query_with(&ids, threshold.0, max_predictions.0, &options)?;
                let infos = super::predictions::infos(
                    &matcher,
                    &vocab,
                    &hits,
                    &ids,
                    &texts,
                    threshold.0 > 0.0,
                    weights.as_ref(),
                    fuzzy,
                )?;
                let patterns: Vec<Vec<u32>> =
                    hits.slots.iter().map(|&slot| matcher.tokens(slot).into_owned()).collect();
                Ok((hits, matcher.names(), patterns, infos))
            })
        })??;
        let names: Vec<&str> = hits.slots.iter().map(|&slot| names.name(slot)).collect();
        let _gc = GcPause::new(py)?;
        super::predictions::build_predictions(
            py,
            &self.vocab,
            &names,
            &hits.similarities,
            &patterns,
            infos,
            &state_symbols,
        )
    }

    // --------------------------------------------------------------- learning

    /// Learns one pattern into the recent tier: its new symbols are added to the vocabulary and
    /// persisted in the same transaction. False (nothing changed) when the name is stored.
    fn add_new_pattern(
        &self,
        py: Python<'_>,
        pattern_name: Bound<'_, PyAny>,
        pattern_sequence: Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let name = name_of(&pattern_name)?;
        let flat: Vec<String> = events_of(&pattern_sequence, "pattern_sequence")?.concat();
        let added = unlocked(py, || guard(|| self.learn(&[name], &[flat], true)))??;
        Ok(added.is_some())
    }

    /// Learns many patterns at once, all or none (one vocabulary write). ValueError on a name
    /// given twice or already stored. With `promote` they go straight to the bulk tier.
    #[pyo3(signature = (names, events_list, promote = Flag(true)), text_signature = "(self, names, events_list, promote=True)")]
    fn add_patterns(
        &self,
        py: Python<'_>,
        names: Bound<'_, PyAny>,
        events_list: Bound<'_, PyAny>,
        promote: Flag,
    ) -> PyResult<usize> {
        let names = names_of(&names, "names")?;
        let patterns: Vec<Vec<String>> =
            patterns_events_of(&events_list, "events_list", names.len())?.iter().map(|e| e.concat()).collect();
        let added = unlocked(py, || guard(|| self.learn(&names, &patterns, false)))??.unwrap_or(0);
        if promote.0 {
            self.sync_cpu_to_gpu(py)?;
        }
        Ok(added)
    }

    /// Bulk load from arrays: pattern k is `tokens[offsets[k]:offsets[k+1]]`, the tokens being ids
    /// of this matcher's vocabulary. All or none.
    #[pyo3(signature = (names, tokens, offsets, promote = Flag(true)), text_signature = "(self, names, tokens, offsets, promote=True)")]
    fn add_patterns_csr(
        &self,
        py: Python<'_>,
        names: Bound<'_, PyAny>,
        tokens: Bound<'_, PyAny>,
        offsets: Bound<'_, PyAny>,
        promote: Flag,
    ) -> PyResult<usize> {
        let names = names_of(&names, "names")?;
        let tokens = int_array(&tokens, "tokens")?;
        let offsets = int_array(&offsets, "offsets")?;
        let added = unlocked(py, || {
            guard(|| {
                self.vocab.hold(|vocab| {
                    let known = |t: i64| u32::try_from(t).ok().is_some_and(|id| vocab.symbol(id).is_some());
                    if let Some(&bad) = tokens.iter().find(|&&t| !known(t)) {
                        return Err(PyValueError::new_err(format!(
                            "token id {bad} is not an id of this matcher's vocabulary (ids in [0, {}))",
                            vocab.next_id()
                        )));
                    }
                    if let Some(&bad) = offsets.iter().find(|&&o| o < 0) {
                        return Err(PyValueError::new_err(format!("invalid pattern layout: negative offset {bad}")));
                    }
                    let tokens: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
                    let offsets: Vec<u64> = offsets.iter().map(|&o| o as u64).collect();
                    Ok(self.write().insert_batch(&strs(&names), &tokens, &offsets)?)
                })
            })
        })??;
        log::debug!("bulk-loaded {added} patterns");
        if promote.0 {
            self.sync_cpu_to_gpu(py)?;
        }
        Ok(added)
    }

    /// Learns one pattern, keeping its events (`pattern_events` gives them back), in the same
    /// transaction as `add_new_pattern`. False (nothing changed) when the name is stored.
    fn add_pattern_events(&self, py: Python<'_>, name: Bound<'_, PyAny>, events: Bound<'_, PyAny>) -> PyResult<bool> {
        let name = name_of(&name)?;
        let (flat, lens) = patterns_of_events(vec![events_of(&events, "events")?]);
        let added = unlocked(py, || guard(|| self.learn_events(&[name], &flat, Some(&lens), true)))??;
        Ok(added.is_some())
    }

    /// `add_patterns` keeping every pattern's events; all or none. ValueError on a name given
    /// twice or already stored. With `promote` they go straight to the bulk tier.
    #[pyo3(signature = (names, events_lists, promote = Flag(true)), text_signature = "(self, names, events_lists, promote=True)")]
    fn add_patterns_events(
        &self,
        py: Python<'_>,
        names: Bound<'_, PyAny>,
        events_lists: Bound<'_, PyAny>,
        promote: Flag,
    ) -> PyResult<usize> {
        let names = names_of(&names, "names")?;
        let (flat, lens) = patterns_of_events(patterns_events_of(&events_lists, "events_lists", names.len())?);
        let added = unlocked(py, || guard(|| self.learn_events(&names, &flat, Some(&lens), false)))??.unwrap_or(0);
        if promote.0 {
            self.sync_cpu_to_gpu(py)?;
        }
        Ok(added)
    }

    /// The stored pattern as its events (one event for patterns learned without events), or None.
    fn pattern_events<'py>(&self, py: Python<'py>, name: Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyList>>> {
        let name = name_of(&name)?;
        let found = unlocked(py, || self.read().pattern_events(&name).map(|(t, e)| (t.into_owned(), e.to_vec())));
        let Some((tokens, lens)) = found else { return Ok(None) };
        Ok(Some(kato_record::events_list(py, &self.vocab.py_symbols(py, &tokens), &lens)?))
    }

    /// KATO's causal-belief predictions ranked as its `predictPattern` prunes them, computed
    /// natively: `(total_matches, kept)`. Every pattern with similarity `>= threshold` (KATO's
    /// rounded token-mode similarity with `rounded`, metric "lcs" only; else the exact ratio)
    /// counts in `total_matches`; `kept` holds the best `keep` by KATO's pre-potential
    /// (descending, then name ascending), each `(name, pattern_events, matching_intersection,
    /// past, present, missing, extras, similarity, number_of_blocks, weighted_similarity,
    /// pre_potential)` with the lists flat as KATO's `extract_prediction_info` returns them.
    /// `weights`: symbol -> weight, for `weighted_similarity` (else None).
    /// `candidates`: pattern names; only those, when given, are ranked (KATO's candidates after
    /// a filter pipeline; names not stored and empty patterns are not candidates).
    #[pyo3(signature = (state, threshold, keep, *, weights = None, rounded = Flag(true), candidates = None),
                  text_signature = "(self, state, threshold, keep, *, weights=None, rounded=True, candidates=None)")]
    #[allow(clippy::too_many_arguments)]
    fn kato_ranked_predictions<'py>(
        &self,
        py: Python<'py>,
        state: Bound<'py, PyAny>,
        threshold: Threshold,
        keep: Count,
        weights: Option<Bound<'py, PyAny>>,
        rounded: Flag,
        candidates: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(usize, Bound<'py, PyList>)> {
        let state: Vec<String> = symbols_of(&state, "state")?;
        let candidates = candidates.map(|c| names_of(&c, "candidates")).transpose()?;
        let state_symbols: Vec<Bound<'py, PyString>> = state.iter().map(|s| PyString::new(py, s)).collect();
        let weights = weights_of(weights)?;
        let weights = ResolvedWeights::resolve(weights.as_ref(), &state_symbols, &self.vocab.read())?;
        let rule = if rounded.0 { SimilarityRule::KatoRounded } else { SimilarityRule::Exact };
        let (total, detached, infos) = unlocked(py, || {
            guard(|| -> crate::Result<_> {
                let vocab = self.vocab.read();
                let ids = state_ids(&vocab, &state);
                let matcher = self.read();
                let among: Option<crate::matcher::CandidateNames> =
                    candidates.as_ref().map(|names| names.iter().map(String::as_str).collect());
                let ranked = crate::kato_record::ranked_predictions_among(
                    &matcher,
                    &ids,
                    threshold.0,
                    keep.0,
                    rule,
                    true,
                    among.as_ref(),
                )?;
                let kept = Matches {
                    similarities: ranked.records.iter().map(|r| r.similarity).collect(),
                    slots: ranked.records.iter().map(|r| r.slot).collect(),
                };
                let texts: Vec<&str> = state.iter().map(String::as_str).collect();
                let infos = super::predictions::infos(
                    &matcher,
                    &vocab,
                    &kept,
                    &ids,
                    &texts,
                    threshold.0 > 0.0,
                    weights.as_ref(),
                    0.0,
                )?;
                let infos: Vec<kato_record::Intersection> =
                    infos.into_iter().map(|i| i.map_or((Vec::new(), None), |i| (i.intersection, i.weighted))).collect();
                Ok((ranked.total, PyMatcher::detach(&matcher, ranked.records, |r| r.slot), infos))
            })
        })??;
        let _gc = GcPause::new(py)?;
        Ok((total, kato_record::ranked_tuples(py, &self.vocab, &detached, &infos, &state_symbols)?))
    }

    /// The names of the patterns KATO's filter pipeline selects for `state`, in no particular
    /// order: `stages` as `[(name, a, b), ...]`, `("length", length_min_ratio,
    /// length_max_ratio)`, `("jaccard", jaccard_threshold, jaccard_min_overlap)`, `("rapidfuzz",
    /// recall_threshold, None)`, the session's values as they are (None when unset; KATO's
    /// defaults replace None and 0). As KATO's executor: a "rapidfuzz" stage before the first
    /// database stage is skipped, and with no database stage nothing is selected.
    fn kato_filter_candidates<'py>(
        &self,
        py: Python<'py>,
        state: Bound<'py, PyAny>,
        stages: kato_record::Stages,
    ) -> PyResult<Bound<'py, PyList>> {
        let state: Vec<String> = symbols_of(&state, "state")?;
        let names = unlocked(py, || {
            guard(|| -> crate::Result<Vec<String>> {
                let pipeline = crate::kato_filters::Pipeline::resolve(&stages.0, state.len())?;
                let distinct = state.iter().map(String::as_str).collect::<std::collections::HashSet<_>>().len();
                let ids = state_ids(&self.vocab.read(), &state);
                let matcher = self.read();
                let query = crate::kato_filters::FilterQuery::new(&ids, distinct);
                let slots = crate::kato_filters::candidate_slots(&matcher, &query, &pipeline);
                Ok(slots.iter().map(|&s| matcher.name(s).to_string()).collect())
            })
        })??;
        PyList::new(py, names)
    }

    /// How many patterns KATO's single-symbol path considers for `symbol`: those whose first
    /// event starts with it.
    fn kato_first_symbol_candidates(&self, py: Python<'_>, symbol: Bound<'_, PyAny>) -> PyResult<usize> {
        let symbol = symbol_of(&symbol, &|| "symbol".to_string())?;
        unlocked(py, || {
            guard(|| {
                let Some(id) = self.vocab.read().id(&symbol) else { return 0 };
                crate::kato_record::first_symbol_slots(&self.read(), id).len()
            })
        })
    }

    /// Every symbol of those candidates, each once, sorted (KATO computes its affinity weights
    /// over them and the state).
    fn kato_first_symbol_symbols<'py>(
        &self,
        py: Python<'py>,
        symbol: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let symbol = symbol_of(&symbol, &|| "symbol".to_string())?;
        let symbols = unlocked(py, || {
            guard(|| {
                let vocab = self.vocab.read();
                let Some(id) = vocab.id(&symbol) else { return Vec::new() };
                let matcher = self.read();
                let mut ids: Vec<u32> = crate::kato_record::first_symbol_slots(&matcher, id)
                    .par_iter()
                    .flat_map_iter(|&slot| matcher.tokens(slot).into_owned())
                    .collect();
                ids.par_sort_unstable();
                ids.dedup();
                let mut texts: Vec<String> = ids.iter().filter_map(|&id| vocab.symbol(id).map(str::to_owned)).collect();
                texts.sort_unstable();
                texts
            })
        })?;
        PyList::new(py, symbols)
    }

    /// KATO's single-symbol fast path for the state `[symbol]`, computed natively: the best
    /// `keep` candidates by potential (descending, then name ascending), each `(name,
    /// pattern_events, matches, missing, present, past, future, extras, similarity, evidence,
    /// confidence, snr, fragmentation, weighted_similarity, weighted_evidence,
    /// weighted_confidence, weighted_snr, potential)`. `weights`: symbol -> affinity weight (the
    /// weighted fields are None without).
    #[pyo3(signature = (symbol, keep, *, weights = None), text_signature = "(self, symbol, keep, *, weights=None)")]
    fn kato_single_symbol_predictions<'py>(
        &self,
        py: Python<'py>,
        symbol: Bound<'py, PyAny>,
        keep: Count,
        weights: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let symbol = symbol_of(&symbol, &|| "symbol".to_string())?;
        let state_symbols = [PyString::new(py, &symbol)];
        let weights = weights_of(weights)?;
        let weights = ResolvedWeights::resolve(weights.as_ref(), &state_symbols, &self.vocab.read())?;
        let detached = unlocked(py, || {
            guard(|| -> crate::Result<_> {
                let Some(id) = self.vocab.read().id(&symbol) else {
                    return Ok(kato_record::Detached { records: Vec::new(), names: Vec::new(), patterns: Vec::new() });
                };
                let matcher = self.read();
                let weight_of = |id: u32| weights.as_ref().map_or(0.0, |w| w.symbol_weight(id));
                let core_weights = weights.as_ref().map(|w| w.as_weights(&weight_of));
                let records = crate::kato_record::single_symbol_predictions(&matcher, id, keep.0, core_weights)?;
                Ok(PyMatcher::detach(&matcher, records, |r| r.slot))
            })
        })??;
        let _gc = GcPause::new(py)?;
        kato_record::single_symbol_tuples(py, &self.vocab, &detached, &state_symbols)
    }

    /// Forgets a pattern, whichever tier holds it. False when no such pattern is stored.
    fn remove_pattern(&self, py: Python<'_>, pattern_name: Bound<'_, PyAny>) -> PyResult<bool> {
        let name = name_of(&pattern_name)?;
        unlocked(py, || guard(|| self.write().remove(&name)))
    }

    /// Forgets every pattern in both tiers (the vocabulary is kept).
    fn clear_all(&self, py: Python<'_>) -> PyResult<()> {
        unlocked(py, || guard(|| self.write().clear()))?;
        log::info!("cleared all patterns");
        Ok(())
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        unlocked(py, || self.read().len())
    }

    /// Whether a pattern of this name is stored (False for anything that is not a valid name).
    fn __contains__(&self, py: Python<'_>, pattern_name: Bound<'_, PyAny>) -> bool {
        let Ok(name) = name_of(&pattern_name) else { return false };
        unlocked(py, || self.read().contains(&name))
    }

    /// The name of every stored pattern (a snapshot: later changes do not show in it).
    fn pattern_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let names = unlocked(py, || self.read().pattern_names());
        PyList::new(py, names)
    }

    /// The stored symbols of a pattern (flattened), or None.
    fn pattern_symbols<'py>(
        &self,
        py: Python<'py>,
        pattern_name: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let name = name_of(&pattern_name)?;
        let ids = unlocked(py, || self.read().pattern(&name).map(std::borrow::Cow::into_owned));
        ids.map(|ids| PyList::new(py, self.vocab.py_symbols(py, &ids))).transpose()
    }

    // ------------------------------------------------------------------ tiers

    /// Promotes every recent pattern into the bulk tier (onto the GPU when there is one);
    /// returns how many moved. Queries keep running meanwhile; they wait only for the swap.
    fn sync_cpu_to_gpu(&self, py: Python<'_>) -> PyResult<usize> {
        let (moved, bulk, seconds) = unlocked(py, || {
            guard(|| {
                let started = std::time::Instant::now();
                let plan = self.read().plan_promotion();
                let mut matcher = self.write();
                let moved = matcher.apply_promotion(plan);
                (moved, matcher.tiers().bulk, started.elapsed().as_secs_f64())
            })
        })?;
        log::info!("promoted {moved} patterns to the bulk tier in {:.1} ms (bulk: {bulk})", seconds * 1e3);
        Ok(moved)
    }

    /// True when a sync is due by the configured triggers (see `_configure_sync`).
    fn check_sync_needed(&self, py: Python<'_>) -> PyResult<bool> {
        let settings = *self.sync.lock().unwrap_or_else(|e| e.into_inner());
        let settings =
            settings.ok_or_else(|| PyRuntimeError::new_err("no sync settings: call _configure_sync first"))?;
        Ok(unlocked(py, || settings.due(&self.read())))
    }

    /// The sync triggers `check_sync_needed` applies.
    fn _configure_sync(
        &self,
        threshold: Bound<'_, PyAny>,
        interval_seconds: Bound<'_, PyAny>,
        background: Flag,
    ) -> PyResult<()> {
        let settings = super::sync::settings_of(&threshold, &interval_seconds, background.0)?;
        *self.sync.lock().unwrap_or_else(|e| e.into_inner()) = Some(settings);
        Ok(())
    }

    /// What the matcher logs: memory after every promotion, the device part of GPU queries.
    fn _configure_logging(&self, py: Python<'_>, memory: Flag, kernel_timing: Flag) {
        let logging = crate::Logging { memory: memory.0, kernel_timing: kernel_timing.0 };
        unlocked(py, || self.write().set_logging(logging))
    }

    /// Unix time of the last sync (the matcher's creation before the first).
    #[getter]
    fn get_last_sync_time(&self, py: Python<'_>) -> f64 {
        let at = unlocked(py, || self.read().last_promotion());
        at.duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }

    #[setter]
    fn set_last_sync_time(&self, py: Python<'_>, unix_seconds: Bound<'_, PyAny>) -> PyResult<()> {
        let at = crate::sync::unix_time(real_of(&unix_seconds, "last_sync_time")?)?;
        unlocked(py, || self.write().set_last_promotion(at));
        Ok(())
    }

    /// Patterns waiting in the recent tier.
    #[getter]
    fn patterns_since_sync(&self, py: Python<'_>) -> usize {
        unlocked(py, || self.read().tiers().recent)
    }

    /// `(bulk, recent)` live pattern counts.
    fn _tiers(&self, py: Python<'_>) -> (usize, usize) {
        unlocked(py, || {
            let t = self.read().tiers();
            (t.bulk, t.recent)
        })
    }

    fn _memory_bytes(&self, py: Python<'_>) -> usize {
        unlocked(py, || self.read().memory_bytes())
    }

    fn _token_count(&self, py: Python<'_>) -> usize {
        unlocked(py, || self.read().token_count())
    }

    /// `(bytes, fastest seconds)` of reading every stored symbol once over all cores, `repeats`
    /// times (see `Matcher::stream_symbols`): the bench's streaming limit.
    #[pyo3(signature = (repeats = 5))]
    fn _stream_symbols(&self, py: Python<'_>, repeats: usize) -> (usize, f64) {
        unlocked(py, || self.read().stream_symbols(repeats))
    }

    /// The matcher's counters under the seed plan's KPI names (histograms as cumulative
    /// `(le, count)` buckets with `sum` and `count`); gauges are added by the Python wrapper.
    fn _kpis<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (gpu, cpu, sync, matched, learned, events, queries, errors, status) = unlocked(py, || {
            let m = self.read();
            let k = m.kpis();
            let errors = m.device_errors();
            let status = m.device_status();
            use std::sync::atomic::Ordering::Relaxed;
            (
                k.gpu_query_duration.snapshot(),
                k.cpu_query_duration.snapshot(),
                k.sync_duration.snapshot(),
                k.patterns_matched.load(Relaxed),
                k.patterns_learned.load(Relaxed),
                k.sync_events.load(Relaxed),
                k.queries.load(Relaxed),
                errors,
                status,
            )
        });
        let histogram = |h: HistogramSnapshot| -> PyResult<Bound<'py, PyDict>> {
            let d = PyDict::new(py);
            d.set_item("buckets", h.buckets)?;
            d.set_item("sum", h.sum_seconds)?;
            d.set_item("count", h.count)?;
            Ok(d)
        };
        let d = PyDict::new(py);
        d.set_item("kato_gpu_query_duration_seconds", histogram(gpu)?)?;
        d.set_item("kato_cpu_query_duration_seconds", histogram(cpu)?)?;
        d.set_item("kato_gpu_sync_duration_seconds", histogram(sync)?)?;
        d.set_item("kato_patterns_matched_total", matched)?;
        d.set_item("kato_patterns_learned_total", learned)?;
        d.set_item("kato_gpu_sync_events_total", events)?;
        // Not one of the seed plan's KPIs: every state answered, so `get_stats` can say how many
        // were answered on the CPU alone.
        d.set_item("queries_total", queries)?;
        d.set_item("kato_gpu_errors_total", errors)?;
        d.set_item("kato_gpu_fallback_events_total", status.fallbacks)?;
        Ok(d)
    }

    /// Attaches device 0 as the bulk tier's mirror. Returns `None` on success, else why the GPU
    /// tier cannot be used (no driver, no device, below `min_compute_capability`, NVRTC missing,
    /// compilation or allocation failure); the matcher then keeps serving from the CPU.
    #[pyo3(signature = (min_compute_capability, memory_usage_fraction, growth_buffer_fraction, force_max_patterns, threads_per_block, fallback_to_cpu))]
    #[allow(clippy::too_many_arguments)]
    fn _enable_gpu(
        &self,
        py: Python<'_>,
        min_compute_capability: f64,
        memory_usage_fraction: f64,
        growth_buffer_fraction: f64,
        force_max_patterns: Option<usize>,
        threads_per_block: u32,
        fallback_to_cpu: bool,
    ) -> PyResult<Option<String>> {
        let limits = TierLimits { memory_usage_fraction, growth_buffer_fraction, force_max_patterns };
        unlocked(py, || {
            guard(|| {
                let tier = CudaBackend::open(min_compute_capability, threads_per_block)
                    .and_then(|b| DeviceTier::new(b, limits));
                match tier {
                    Ok(tier) => {
                        self.write().attach_device(Box::new(tier), fallback_to_cpu);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            })
        })
    }

    /// Test hook: the next query's device part fails like a driver error (no effect without a
    /// device). Used by `pytest -m gpu` to exercise the fallback on real hardware.
    fn _simulate_device_failure(&self, py: Python<'_>) {
        unlocked(py, || self.read().simulate_device_failure())
    }

    /// The device tier's state and counters (see `HybridGPUMatcher.get_stats`).
    fn _device_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let status = unlocked(py, || self.read().device_status());
        let d = PyDict::new(py);
        d.set_item("active", status.active)?;
        d.set_item("gpu_queries", status.gpu_queries)?;
        d.set_item("long_state_cpu_queries", status.long_state_cpu_queries)?;
        d.set_item("fallbacks", status.fallbacks)?;
        d.set_item("last_error", status.last_error)?;
        if let Some(c) = status.capacity {
            d.set_item("mirrored_patterns", c.mirrored_patterns)?;
            d.set_item("mirrored_symbols", c.mirrored_symbols)?;
            d.set_item("capacity_patterns", c.capacity_patterns)?;
            d.set_item("capacity_symbols", c.capacity_symbols)?;
            d.set_item("budget_bytes", c.budget_bytes)?;
            d.set_item("used_bytes", c.used_bytes)?;
            d.set_item("overflow_patterns", c.overflow_patterns)?;
            d.set_item("device_free_bytes", c.device_free_bytes)?;
            d.set_item("device_total_bytes", c.device_total_bytes)?;
        }
        Ok(d)
    }
}

/// A 1-D integer array (anything `numpy.asarray` takes) as i64 values.
fn int_array(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    let np = value.py().import("numpy")?;
    let array = np.call_method1("asarray", (value,))?;
    let ndim: usize = array.getattr("ndim")?.extract()?;
    let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
    if ndim != 1 {
        return Err(PyValueError::new_err(format!("{what} must be a 1-D array, got {ndim} dimensions")));
    }
    if kind != "i" && kind != "u" {
        return Err(PyTypeError::new_err(format!("{what} must be an integer array, got dtype kind {kind:?}")));
    }
    if kind == "u" && array.getattr("size")?.extract::<usize>()? > 0 {
        let high: u64 = array.call_method0("max")?.extract()?;
        if high > i64::MAX as u64 {
            return Err(PyValueError::new_err(format!("{what} holds a value too large: {high}")));
        }
    }
    let array = np.call_method1("ascontiguousarray", (array, "int64"))?;
    let array: PyReadonlyArray1<'_, i64> = array.extract()?;
    Ok(array.as_slice()?.to_vec())
}

/// Pauses Python's cyclic garbage collector while many tuples and lists are built: it would
/// otherwise run over and over, scanning every live container.
struct GcPause<'py> {
    gc: Bound<'py, PyModule>,
    was_enabled: bool,
}

impl<'py> GcPause<'py> {
    fn new(py: Python<'py>) -> PyResult<Self> {
        let gc = py.import("gc")?;
        let was_enabled = gc.call_method0("isenabled")?.is_truthy()?;
        gc.call_method0("disable")?;
        Ok(GcPause { gc, was_enabled })
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if self.was_enabled {
            let _ = self.gc.call_method0("enable");
        }
    }
}

/// The matches of one query, in result order, detached from the matcher.
#[pyclass(module = "kato_gpu._native", name = "MatchResult", frozen)]
pub struct MatchResult {
    similarities: Vec<f64>,
    slots: Vec<u32>,
    names: NameSnapshot,
}

impl MatchResult {
    fn name(&self, k: usize) -> &str {
        self.names.name(self.slots[k])
    }

    /// The matched names copied into one contiguous buffer, in parallel and without the GIL:
    /// the names of a large result sit all over the arena, and creating Python strings from
    /// scattered memory under the GIL is several times slower than from one buffer.
    fn gather_names(&self) -> (String, Vec<usize>) {
        const CHUNK: usize = 16384;
        let parts: Vec<(String, Vec<usize>)> = self
            .slots
            .par_chunks(CHUNK)
            .map(|slots| {
                let mut buffer = String::new();
                let mut ends = Vec::with_capacity(slots.len());
                for &slot in slots {
                    buffer.push_str(self.names.name(slot));
                    ends.push(buffer.len());
                }
                (buffer, ends)
            })
            .collect();
        let mut buffer = String::with_capacity(parts.iter().map(|p| p.0.len()).sum());
        let mut ends = Vec::with_capacity(self.slots.len());
        for (part, part_ends) in parts {
            let base = buffer.len();
            buffer.push_str(&part);
            ends.extend(part_ends.into_iter().map(|e| base + e));
        }
        (buffer, ends)
    }
}

#[pymethods]
impl MatchResult {
    fn __len__(&self) -> usize {
        self.similarities.len()
    }

    /// Similarities as a float64 array, in result order.
    #[getter]
    fn similarities<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, &self.similarities)
    }

    /// Pattern names, in result order.
    #[getter]
    fn names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        if self.slots.len() < 4096 {
            return PyList::new(py, (0..self.slots.len()).map(|k| self.name(k)));
        }
        let (buffer, ends) = unlocked(py, || guard(|| self.gather_names()))?;
        PyList::new(py, (0..ends.len()).map(|k| &buffer[if k == 0 { 0 } else { ends[k - 1] }..ends[k]]))
    }

    /// The names packed for another process (`kato_gpu.distributed`): their UTF-8 bytes
    /// concatenated, and each name's end offset (uint64), so that no Python string is made here.
    fn _names_packed<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyArray1<u64>>)> {
        let (buffer, ends) = unlocked(py, || guard(|| self.gather_names()))?;
        let ends: Vec<u64> = ends.into_iter().map(|e| e as u64).collect();
        Ok((PyBytes::new(py, buffer.as_bytes()), PyArray1::from_vec(py, ends)))
    }

    /// `[{'pattern_name': ..., 'similarity': ...}, ...]`, KATO's result shape.
    fn to_dicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (key_name, key_sim) = (intern!(py, "pattern_name"), intern!(py, "similarity"));
        let list = PyList::empty(py);
        for (k, &sim) in self.similarities.iter().enumerate() {
            let d = PyDict::new(py);
            d.set_item(key_name, self.name(k))?;
            d.set_item(key_sim, sim)?;
            list.append(d)?;
        }
        Ok(list)
    }

    fn __repr__(&self) -> String {
        format!("MatchResult(matches={})", self.similarities.len())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMatcher>()?;
    m.add_class::<MatchResult>()?;
    Ok(())
}
