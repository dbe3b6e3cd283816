//! `kato_gpu._native.Matcher` (the tiered store and its queries) and `MatchResult`.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rayon::prelude::*;

use super::error::guard;
use crate::cuda::driver::CudaBackend;
use crate::cuda::tier::{DeviceTier, TierLimits};
use crate::kpi::HistogramSnapshot;
use crate::matcher::{query_from_lookup, Matcher, SharedMatcher};
use crate::metrics::Metric;
use crate::ordering::Matches;
use crate::store::NameSnapshot;

#[pyclass(module = "kato_gpu._native", name = "Matcher", frozen)]
pub struct PyMatcher {
    /// Shared with the sync worker (`SyncManager`), which holds only a weak reference.
    pub(crate) inner: SharedMatcher,
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
}

/// Detaches a query's hits from the matcher: similarities, slots, and a snapshot of the name
/// arena that keeps the matched names alive without copying them.
fn collect(matcher: &Matcher, hits: Matches) -> MatchResult {
    MatchResult { similarities: hits.similarities, slots: hits.slots, names: matcher.names() }
}

fn check_limit(limit: Option<i64>) -> PyResult<Option<usize>> {
    match limit {
        Some(k) if k < 0 => Err(PyValueError::new_err(format!("max_predictions must be >= 0 or None, got {k}"))),
        other => Ok(other.map(|k| k as usize)),
    }
}

#[pymethods]
impl PyMatcher {
    #[new]
    #[pyo3(signature = (metric = "difflib", autojunk = false))]
    fn new(metric: &str, autojunk: bool) -> PyResult<Self> {
        Ok(PyMatcher { inner: Arc::new(RwLock::new(Matcher::new(Metric::from_name(metric, autojunk)?))) })
    }

    #[getter]
    fn metric(&self, py: Python<'_>) -> &'static str {
        py.allow_threads(|| self.read().metric().name())
    }

    /// Adds one pattern (vocabulary ids) to the recent tier; False when the name is stored.
    fn add(&self, py: Python<'_>, name: &str, ids: Vec<i64>) -> PyResult<bool> {
        let tokens = ids_to_tokens(&ids)?;
        Ok(py.allow_threads(|| guard(|| self.write().insert(name, &tokens)))??)
    }

    /// Adds many patterns, all or none: pattern k is `tokens[offsets[k]:offsets[k+1]]`.
    fn add_csr(
        &self,
        py: Python<'_>,
        names: Vec<String>,
        tokens: PyReadonlyArray1<'_, u32>,
        offsets: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<usize> {
        let tokens = tokens.as_slice()?;
        let offsets = offsets.as_slice()?;
        if let Some(bad) = offsets.iter().find(|&&o| o < 0) {
            return Err(PyValueError::new_err(format!("invalid pattern layout: negative offset {bad}")));
        }
        // i64 -> u64 is a same-size reinterpretation of non-negative values.
        let offsets: Vec<u64> = offsets.iter().map(|&o| o as u64).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let added = py.allow_threads(|| guard(|| self.write().insert_batch(&names, tokens, &offsets)))??;
        log::debug!("bulk-loaded {added} patterns");
        Ok(added)
    }

    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        py.allow_threads(|| guard(|| self.write().remove(name)))
    }

    /// Moves the recent tier into the bulk tier; returns how many patterns moved. The work is
    /// done under the read lock; queries wait only for the final swap.
    fn promote(&self, py: Python<'_>) -> PyResult<usize> {
        py.allow_threads(|| {
            guard(|| {
                let plan = self.read().plan_promotion();
                self.write().apply_promotion(plan)
            })
        })
    }

    /// Unix time of the last promotion (creation time before the first).
    #[getter]
    fn last_promotion(&self, py: Python<'_>) -> f64 {
        let at = py.allow_threads(|| self.read().last_promotion());
        at.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }

    #[setter]
    fn set_last_promotion(&self, py: Python<'_>, unix_seconds: f64) -> PyResult<()> {
        if !unix_seconds.is_finite() || unix_seconds < 0.0 {
            return Err(PyValueError::new_err(format!(
                "last promotion time must be a non-negative unix time, got {unix_seconds}"
            )));
        }
        let at = crate::sync::unix_time(unix_seconds)?;
        py.allow_threads(|| self.write().set_last_promotion(at));
        Ok(())
    }

    /// Seconds since the last promotion.
    fn seconds_since_promotion(&self, py: Python<'_>) -> f64 {
        py.allow_threads(|| self.read().since_last_promotion().as_secs_f64())
    }

    /// The matcher's counters under the seed plan's KPI names (histograms as cumulative
    /// `(le, count)` buckets with `sum` and `count`); gauges are added by the Python wrapper.
    fn kpis<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (gpu, cpu, sync, matched, learned, events, errors, status) = py.allow_threads(|| {
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
        d.set_item("kato_gpu_errors_total", errors)?;
        d.set_item("kato_gpu_fallback_events_total", status.fallbacks)?;
        Ok(d)
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| guard(|| self.write().clear()))
    }

    /// `(bulk, recent)` live pattern counts.
    fn tiers(&self, py: Python<'_>) -> (usize, usize) {
        py.allow_threads(|| {
            let t = self.read().tiers();
            (t.bulk, t.recent)
        })
    }

    fn memory_bytes(&self, py: Python<'_>) -> usize {
        py.allow_threads(|| self.read().memory_bytes())
    }

    fn token_count(&self, py: Python<'_>) -> usize {
        py.allow_threads(|| self.read().token_count())
    }

    /// The stored symbol ids of a pattern, or None.
    fn pattern(&self, py: Python<'_>, name: &str) -> Option<Vec<u32>> {
        py.allow_threads(|| self.read().pattern(name).map(std::borrow::Cow::into_owned))
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        py.allow_threads(|| self.read().len())
    }

    fn __contains__(&self, py: Python<'_>, name: &str) -> bool {
        py.allow_threads(|| self.read().contains(name))
    }

    /// Attaches device 0 as the bulk tier's mirror. Returns `None` on success, else why the GPU
    /// tier cannot be used (no driver, no device, below `min_compute_capability`, NVRTC missing,
    /// compilation or allocation failure); the matcher then keeps serving from the CPU.
    #[pyo3(signature = (min_compute_capability, memory_usage_fraction, growth_buffer_fraction, force_max_patterns, threads_per_block, fallback_to_cpu))]
    #[allow(clippy::too_many_arguments)]
    fn enable_gpu(
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
        py.allow_threads(|| {
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
        py.allow_threads(|| self.read().simulate_device_failure())
    }

    /// The device tier's state and counters (see `HybridGPUMatcher.get_stats`).
    fn device_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let status = py.allow_threads(|| self.read().device_status());
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

    /// KATO's prediction tuples for the given matches (names and similarities from a query),
    /// their patterns read from the store; see `predictions::build_predictions`.
    #[pyo3(signature = (names, similarities, state, state_lookup, symbols, cutoff_positive, weights = None))]
    #[allow(clippy::too_many_arguments)]
    fn predictions<'py>(
        &self,
        py: Python<'py>,
        names: Vec<Bound<'py, PyAny>>,
        similarities: Vec<f64>,
        state: Vec<Bound<'py, PyAny>>,
        state_lookup: Vec<i64>,
        symbols: Vec<Bound<'py, PyAny>>,
        cutoff_positive: bool,
        weights: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let keys: Vec<String> = names.iter().map(|n| n.extract::<String>()).collect::<PyResult<_>>()?;
        let patterns = py.allow_threads(|| {
            let matcher = self.read();
            keys.iter().map(|k| matcher.pattern(k).map(std::borrow::Cow::into_owned)).collect::<Option<Vec<_>>>()
        });
        let Some(patterns) = patterns else {
            return Err(PyValueError::new_err("a matched pattern was removed before its prediction was built"));
        };
        super::predictions::build_predictions(
            py,
            names,
            similarities,
            patterns,
            state,
            state_lookup,
            symbols,
            cutoff_positive,
            weights,
        )
    }

    /// Every pattern with similarity >= threshold, in result order, at most `limit`.
    /// `ids` is a vocabulary lookup: negative entries are symbols the vocabulary does not know.
    #[pyo3(signature = (ids, threshold, limit = None))]
    fn query(&self, py: Python<'_>, ids: Vec<i64>, threshold: f64, limit: Option<i64>) -> PyResult<MatchResult> {
        let limit = check_limit(limit)?;
        let state = query_from_lookup(&ids);
        py.allow_threads(|| {
            guard(|| {
                let matcher = self.read();
                let hits = matcher.query(&state, threshold, limit)?;
                Ok(collect(&matcher, hits))
            })
        })?
    }

    #[pyo3(signature = (states, threshold, limit = None))]
    fn query_batch(
        &self,
        py: Python<'_>,
        states: Vec<Vec<i64>>,
        threshold: f64,
        limit: Option<i64>,
    ) -> PyResult<Vec<MatchResult>> {
        let limit = check_limit(limit)?;
        let states: Vec<Vec<u32>> = states.iter().map(|ids| query_from_lookup(ids)).collect();
        py.allow_threads(|| {
            guard(|| {
                let matcher = self.read();
                let hits = matcher.query_batch(&states, threshold, limit)?;
                Ok(hits.into_iter().map(|h| collect(&matcher, h)).collect())
            })
        })?
    }
}

fn ids_to_tokens(ids: &[i64]) -> PyResult<Vec<u32>> {
    ids.iter()
        .map(|&id| {
            if (0..=crate::store::MAX_SYMBOL_ID as i64).contains(&id) {
                Ok(id as u32)
            } else {
                Err(crate::error::KatoError::SymbolIdOutOfRange(id).into())
            }
        })
        .collect()
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
        let (buffer, ends) = py.allow_threads(|| guard(|| self.gather_names()))?;
        PyList::new(py, (0..ends.len()).map(|k| &buffer[if k == 0 { 0 } else { ends[k - 1] }..ends[k]]))
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
