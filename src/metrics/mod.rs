//! The two exact similarity metrics and the one place that turns a match count into a similarity.
//!
//! Both metrics count an integer M (matching symbols) between a pattern `p` and a state `s` and
//! return `2.0 * M / T` in float64 with `T = len(p) + len(s)` (1.0 when T == 0), exactly as
//! Python computes it. Every tier (CPU now, GPU later) counts M and calls [`ratio`], so results
//! agree bit for bit wherever a pattern lives.
//!
//! Each metric module has the same shape: a pair function (`matches(pattern, state)`) and a
//! prepared one-state-vs-many-patterns form (`*Query::new(state)` then `.matches(pattern, scratch)`).

pub mod bound;
pub mod difflib;
pub mod fuzz;
pub mod lcs;
pub mod simd;
mod symbols;

pub use symbols::QuerySymbols;

use crate::error::{KatoError, Result};
use crate::store::{AnyRun, PatternRun, Token};

/// `needed` value of a pattern that must not be scored (see [`kept_indices`]).
pub const SKIP: u32 = u32::MAX;

/// Which similarity a matcher computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// `difflib.SequenceMatcher(None, pattern, state, autojunk=autojunk).ratio()`.
    Difflib { autojunk: bool },
    /// `2.0 * LCS(pattern, state) / T`, LCS the longest common subsequence.
    Lcs,
}

impl Metric {
    /// Parses the configuration's metric name (`"difflib"` or `"lcs"`).
    /// The names [`Metric::from_name`] accepts.
    pub const NAMES: [&'static str; 2] = ["difflib", "lcs"];

    pub fn from_name(name: &str, autojunk: bool) -> Result<Metric> {
        match name {
            "difflib" => Ok(Metric::Difflib { autojunk }),
            "lcs" => Ok(Metric::Lcs),
            other => Err(KatoError::UnknownMetric(other.to_string())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Metric::Difflib { .. } => "difflib",
            Metric::Lcs => "lcs",
        }
    }

    /// Prepares `state` for matching against many patterns.
    pub fn prepare(&self, state: &[u32]) -> PreparedQuery {
        match *self {
            Metric::Difflib { autojunk } => PreparedQuery::Difflib(difflib::DifflibQuery::new(state, autojunk)),
            Metric::Lcs => PreparedQuery::Lcs(lcs::LcsQuery::new(state)),
        }
    }

    /// The similarity of one pair.
    pub fn similarity(&self, pattern: &[u32], state: &[u32]) -> f64 {
        let matches = match *self {
            Metric::Difflib { autojunk } => difflib::matches(pattern, state, autojunk),
            Metric::Lcs => lcs::matches(pattern, state),
        };
        ratio(matches, pattern.len() + state.len())
    }
}

/// The similarity formula shared by every metric and every tier: `2.0 * M / T` in float64,
/// 1.0 when both sequences are empty (as difflib's `_calculate_ratio`).
#[inline]
pub fn ratio(matches: usize, total_len: usize) -> f64 {
    if total_len == 0 {
        1.0
    } else {
        2.0 * matches as f64 / total_len as f64
    }
}

/// How a query turns a match count into the similarity it tests against the threshold, orders by
/// and returns. Every path that scores a query (the CPU scan, the device's pairs, the plan's
/// classes) goes through [`SimilarityRule::similarity`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SimilarityRule {
    /// [`ratio`]: `2.0 * M / T`, as difflib and `LCSseq` give it.
    #[default]
    Exact,
    /// KATO's RapidFuzz token path: its scorer returns `2.0 * M / T * 100.0` (0.0 when T == 0)
    /// and KATO divides by 100.0, so the value can differ from [`ratio`] in the last bit (~16% of
    /// pairs). Only meaningful for the lcs metric, whose M that scorer counts.
    KatoRounded,
}

impl SimilarityRule {
    /// The similarity of `matches` matching symbols between sequences of `total_len` symbols in
    /// all. Non-decreasing in `matches` for a fixed `total_len` under both rules (multiplying and
    /// dividing by a positive constant is monotone in float64), which the query plan relies on.
    #[inline]
    pub fn similarity(self, matches: usize, total_len: usize) -> f64 {
        match self {
            SimilarityRule::Exact => ratio(matches, total_len),
            SimilarityRule::KatoRounded if total_len == 0 => 0.0,
            SimilarityRule::KatoRounded => ratio(matches, total_len) * 100.0 / 100.0,
        }
    }

    /// Rejects a rule that does not describe `metric`'s reference path.
    pub fn check(self, metric: Metric) -> Result<()> {
        match (self, metric) {
            (SimilarityRule::KatoRounded, Metric::Difflib { .. }) => {
                Err(KatoError::KatoRoundingNeedsLcs(metric.name()))
            }
            _ => Ok(()),
        }
    }
}

/// The inclusion rule: a pattern is a match iff `similarity >= threshold`, in float64, as Python
/// decides it.
#[inline]
pub fn passes(similarity: f64, threshold: f64) -> bool {
    similarity >= threshold
}

/// Rejects NaN and thresholds outside [0, 1].
pub fn validate_threshold(threshold: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&threshold) {
        Ok(threshold)
    } else {
        Err(KatoError::InvalidThreshold(threshold))
    }
}

/// A state prepared for one metric: counts M against any number of patterns.
pub trait Scorer: Sync {
    /// Per-thread working memory, reused across patterns.
    type Scratch: Send;
    fn new_scratch(&self) -> Self::Scratch;
    fn state_len(&self) -> usize;
    fn matches<T: Token>(&self, pattern: &[T], scratch: &mut Self::Scratch) -> usize;

    /// Scores the patterns `kept` of a run (indices into it, ascending): `out[k]` is M of
    /// pattern `k` when that is at least `needed[k]`, and otherwise any value below it (a scorer
    /// may stop once it knows M cannot reach it). Other patterns are not read, nor their
    /// `needed` and `out`. A whole run at once lets a scorer interleave independent patterns.
    fn matches_at_least<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        kept: &[u32],
        needed: &[u32],
        out: &mut [u32],
        scratch: &mut Self::Scratch,
    ) {
        let _ = needed;
        for &k in kept {
            out[k as usize] = self.matches(run.pattern(k as usize), scratch) as u32;
        }
    }

    /// [`Scorer::matches_at_least`] for a run in whichever width the store holds.
    fn score_run(&self, run: AnyRun<'_>, kept: &[u32], needed: &[u32], out: &mut [u32], scratch: &mut Self::Scratch) {
        match run {
            AnyRun::Narrow(run) => self.matches_at_least(run, kept, needed, out, scratch),
            AnyRun::Wide(run) => self.matches_at_least(run, kept, needed, out, scratch),
        }
    }
}

/// Sets `kept` to the indices `k` with `needed[k] != SKIP`, ascending, without a branch per
/// index (which ones are skipped follows nothing the CPU could predict).
pub fn kept_indices(needed: &[u32], kept: &mut Vec<u32>) {
    kept.clear();
    kept.resize(needed.len(), 0);
    let mut len = 0;
    for (k, &need) in needed.iter().enumerate() {
        kept[len] = k as u32;
        len += (need != SKIP) as usize;
    }
    kept.truncate(len);
}

/// A prepared state of either metric.
pub enum PreparedQuery {
    Difflib(difflib::DifflibQuery),
    Lcs(lcs::LcsQuery),
}

impl PreparedQuery {
    pub fn state_len(&self) -> usize {
        match self {
            PreparedQuery::Difflib(q) => q.state_len(),
            PreparedQuery::Lcs(q) => q.state_len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PatternStore;
    use crate::testing::{naive_difflib, naive_lcs, Rng};

    /// The run form of every scorer keeps its contract against the naive oracles: the exact M
    /// wherever `M >= needed`, something below `needed` elsewhere, skipped patterns untouched.
    /// Covers patterns longer than the grouped lengths, empty ones, states of 0, 64, 65 and 200+
    /// symbols (autojunk's popular symbols), and ids beyond the dense tables.
    #[test]
    fn run_scoring_keeps_its_contract() {
        let mut rng = Rng::new(31);
        for case in 0..120 {
            let alphabet = [3, 12, 40][case % 3];
            let big = |x: u32| if case % 4 == 3 && x.is_multiple_of(3) { (1 << 24) + x } else { x };
            let mut store = PatternStore::new();
            for k in 0..300 {
                let len = if k % 50 == 7 { 256 + rng.below(80) } else { rng.below(60) };
                let pattern: Vec<u32> = (0..len).map(|_| big(rng.below(alphabet) as u32)).collect();
                store.push(&format!("p{k}"), &pattern);
            }
            let state_len = [0, 1, 13, 64, 65, 130, 230][case % 7];
            let state: Vec<u32> = (0..state_len).map(|_| big(rng.below(alphabet) as u32)).collect();
            let needed: Vec<u32> =
                (0..store.slots()).map(|_| if rng.below(7) == 0 { SKIP } else { rng.below(8) as u32 }).collect();
            for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }, Metric::Difflib { autojunk: true }] {
                let mut out = vec![u32::MAX - 1; store.slots()];
                let run = store.run(0, store.slots());
                let mut kept = Vec::new();
                kept_indices(&needed, &mut kept);
                assert_eq!(store.token_width(), if case % 4 == 3 { 4 } else { 2 });
                match metric.prepare(&state) {
                    PreparedQuery::Lcs(q) => q.score_run(run, &kept, &needed, &mut out, &mut q.new_scratch()),
                    PreparedQuery::Difflib(q) => q.score_run(run, &kept, &needed, &mut out, &mut q.new_scratch()),
                }
                for slot in 0..store.slots() {
                    let pattern = &*store.tokens(slot as u32);
                    let exact = match metric {
                        Metric::Lcs => naive_lcs(pattern, &state),
                        Metric::Difflib { autojunk } => naive_difflib(pattern, &state, autojunk),
                    } as u32;
                    let (need, got) = (needed[slot], out[slot]);
                    if need == SKIP {
                        assert_eq!(got, u32::MAX - 1, "a skipped pattern was scored");
                    } else if exact >= need {
                        assert_eq!(got, exact, "{metric:?} case {case} pattern {pattern:?} state {state:?}");
                    } else {
                        assert!(got < need, "{metric:?} case {case}: {got} for M = {exact} < needed {need}");
                    }
                }
            }
        }
    }
}
