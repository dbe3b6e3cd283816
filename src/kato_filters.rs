//! KATO's exact candidate filter stages, natively: the `length` and `jaccard` stages (which KATO
//! runs as SQL over its pattern table's `length` and `token_set` columns) and the `rapidfuzz`
//! stage (KATO's token-mode similarity check in Python), evaluated over the matcher's own store
//! with the semantics of KATO's `FilterPipelineExecutor`. docs/ARCHITECTURE.md lists what the
//! glue hands to this module and what it leaves to KATO's own stages.

use rayon::prelude::*;

use crate::error::{KatoError, Result};
use crate::matcher::Matcher;
use crate::metrics;
use crate::store::MAX_SYMBOL_ID;

/// Slots per parallel work item.
const CHUNK: usize = 4096;

/// Defaults KATO's stages use when a parameter is unset, or falsy (Python's `value or default`).
pub const LENGTH_MIN_RATIO: f64 = 0.5;
pub const LENGTH_MAX_RATIO: f64 = 2.0;
pub const JACCARD_THRESHOLD: f64 = 0.3;
pub const JACCARD_MIN_OVERLAP: f64 = 2.0;
pub const RAPIDFUZZ_THRESHOLD: f64 = 0.1;

/// One configured stage with the session's raw parameters (None: not set).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stage {
    Length {
        min_ratio: Option<f64>,
        max_ratio: Option<f64>,
    },
    Jaccard {
        threshold: Option<f64>,
        min_overlap: Option<f64>,
    },
    /// `threshold`: the session's `recall_threshold` (its own `or 0.1`, not the searcher's default).
    RapidFuzz {
        threshold: Option<f64>,
    },
}

/// A stage's test of one pattern, its parameters resolved for one state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// `min_len <= len(pattern) <= max_len` (SQL `BETWEEN`, bounds as KATO truncates them).
    Length { min_len: i64, max_len: i64 },
    /// `overlap >= min_overlap` and `overlap * 1.0 / union >= threshold` over the distinct
    /// symbols, in float64 as the SQL computes it.
    Jaccard { threshold: f64, min_overlap: f64 },
    /// A non-empty pattern whose exact token similarity `2.0 * LCS / (len(p) + len(s))` reaches
    /// `cutoff` (KATO's extractor returns nothing below it).
    Ratio { cutoff: f64 },
}

/// What a configured pipeline keeps: the patterns passing every rule, or nothing at all.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub rules: Vec<Rule>,
    /// No database stage ran: KATO's executor ends with no candidate set and returns none.
    pub selects_nothing: bool,
}

/// Python's `value or default` for a number: unset, 0.0 and -0.0 take the default.
fn or_default(value: Option<f64>, default: f64) -> f64 {
    match value {
        Some(v) if v != 0.0 => v,
        _ => default,
    }
}

fn finite(what: &str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(KatoError::InvalidValue(format!("{what} must be finite, got {value}")))
    }
}

/// Python's `int(state_len * ratio)`: the float product, truncated toward zero. Bounds past 2**53
/// are refused (KATO would write them into its SQL as they are; the glue leaves such sessions to
/// KATO's own stages).
fn truncated(what: &str, state_len: usize, ratio: f64) -> Result<i64> {
    let product = finite(what, state_len as f64 * finite(what, ratio)?)?;
    if product.abs() >= (1u64 << 53) as f64 {
        return Err(KatoError::InvalidValue(format!("{what} gives a length bound beyond 2**53: {product}")));
    }
    Ok(product.trunc() as i64)
}

impl Stage {
    /// Whether KATO runs this stage as SQL (a database stage) rather than over loaded candidates.
    pub fn is_database(&self) -> bool {
        !matches!(self, Stage::RapidFuzz { .. })
    }

    fn rule(&self, state_len: usize) -> Result<Rule> {
        Ok(match *self {
            Stage::Length { min_ratio, max_ratio } => Rule::Length {
                min_len: truncated("length_min_ratio", state_len, or_default(min_ratio, LENGTH_MIN_RATIO))?.max(1),
                max_len: truncated("length_max_ratio", state_len, or_default(max_ratio, LENGTH_MAX_RATIO))?,
            },
            Stage::Jaccard { threshold, min_overlap } => Rule::Jaccard {
                threshold: finite("jaccard_threshold", or_default(threshold, JACCARD_THRESHOLD))?,
                min_overlap: finite("jaccard_min_overlap", or_default(min_overlap, JACCARD_MIN_OVERLAP))?,
            },
            Stage::RapidFuzz { threshold } => {
                Rule::Ratio { cutoff: finite("recall_threshold", or_default(threshold, RAPIDFUZZ_THRESHOLD))? }
            }
        })
    }
}

impl Pipeline {
    /// The rules of `stages` for a state of `state_len` symbols, as KATO's executor applies them:
    /// a stage that is not a database stage before any database stage raised has no effect
    /// (KATO logs "Pipeline must start with database filter" and skips it); without any database
    /// stage there are no candidates. Every stage that runs narrows the candidates, so the
    /// result is the patterns passing every rule; once it is empty KATO stops, which changes
    /// nothing here.
    pub fn resolve(stages: &[Stage], state_len: usize) -> Result<Pipeline> {
        let mut rules = Vec::with_capacity(stages.len());
        let mut database_ran = false;
        for stage in stages {
            if !stage.is_database() && !database_ran {
                continue;
            }
            database_ran |= stage.is_database();
            rules.push(stage.rule(state_len)?);
        }
        Ok(Pipeline { rules, selects_nothing: !database_ran })
    }
}

/// The state as the rules see it.
pub struct FilterQuery<'a> {
    state: &'a [u32],
    /// The state's distinct symbols known to the vocabulary, sorted.
    known: Vec<u32>,
    /// How many distinct symbols the state has, known or not.
    distinct: usize,
}

impl<'a> FilterQuery<'a> {
    /// `state`: query ids (unknown symbols above [`MAX_SYMBOL_ID`]); `distinct`: the number of
    /// distinct symbols of the state as text (unknown symbols have one id per position, so the
    /// caller counts them).
    pub fn new(state: &'a [u32], distinct: usize) -> FilterQuery<'a> {
        let mut known: Vec<u32> = state.iter().copied().filter(|&id| id <= MAX_SYMBOL_ID).collect();
        known.sort_unstable();
        known.dedup();
        FilterQuery { state, known, distinct }
    }

    /// (overlap, union) of the distinct symbols of `pattern` and of the state. `scratch` is
    /// reused between patterns.
    fn overlap_union(&self, pattern: &[u32], scratch: &mut Vec<u32>) -> (usize, usize) {
        scratch.clear();
        scratch.extend_from_slice(pattern);
        scratch.sort_unstable();
        scratch.dedup();
        let overlap = scratch.iter().filter(|id| self.known.binary_search(id).is_ok()).count();
        (overlap, scratch.len() + self.distinct - overlap)
    }

    /// Whether `pattern` passes `rule`.
    pub fn passes(&self, rule: &Rule, pattern: &[u32], scratch: &mut Vec<u32>) -> bool {
        match *rule {
            Rule::Length { min_len, max_len } => (min_len..=max_len).contains(&(pattern.len() as i64)),
            Rule::Jaccard { threshold, min_overlap } => {
                let (overlap, union) = self.overlap_union(pattern, scratch);
                // ClickHouse: UInt64 compared with the literal, then `x * 1.0 / y` in Float64
                // (0 / 0 is NaN, which passes nothing).
                overlap as f64 >= min_overlap && overlap as f64 * 1.0 / union as f64 >= threshold
            }
            Rule::Ratio { cutoff } => {
                !pattern.is_empty()
                    && metrics::passes(
                        metrics::ratio(metrics::lcs::matches(pattern, self.state), pattern.len() + self.state.len()),
                        cutoff,
                    )
            }
        }
    }
}

/// The live slots passing `pipeline` for `query`, in slot order.
pub fn candidate_slots(matcher: &Matcher, query: &FilterQuery<'_>, pipeline: &Pipeline) -> Vec<u32> {
    if pipeline.selects_nothing {
        return Vec::new();
    }
    let (store, _) = matcher.store_and_order();
    let slots = store.slots();
    (0..slots.div_ceil(CHUNK))
        .into_par_iter()
        .map_init(Vec::new, |scratch, chunk| {
            let first = (chunk * CHUNK) as u32;
            let end = ((chunk + 1) * CHUNK).min(slots) as u32;
            (first..end)
                .filter(|&slot| {
                    store.is_live(slot) && {
                        let pattern = store.tokens(slot);
                        pipeline.rules.iter().all(|rule| query.passes(rule, &pattern, scratch))
                    }
                })
                .collect::<Vec<u32>>()
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{naive_lcs, Rng};
    use std::collections::HashSet;

    /// The rules as KATO's code states them, over symbol texts: Python sets, SQL-style counts.
    fn naive(rule: &Rule, pattern: &[String], state: &[String]) -> bool {
        match *rule {
            Rule::Length { min_len, max_len } => min_len <= pattern.len() as i64 && pattern.len() as i64 <= max_len,
            Rule::Jaccard { threshold, min_overlap } => {
                let p: HashSet<&String> = pattern.iter().collect();
                let s: HashSet<&String> = state.iter().collect();
                let inter = p.intersection(&s).count();
                let union = p.union(&s).count();
                inter as f64 >= min_overlap && (inter as f64) * 1.0 / (union as f64) >= threshold
            }
            Rule::Ratio { cutoff } => {
                let ids = |s: &[String]| -> Vec<u32> { s.iter().map(|t| t[1..].parse().unwrap()).collect() };
                let total = pattern.len() + state.len();
                !pattern.is_empty() && 2.0 * naive_lcs(&ids(pattern), &ids(state)) as f64 / total as f64 >= cutoff
            }
        }
    }

    #[test]
    fn or_defaults_truncation_and_order_follow_kato() {
        let len = |min, max| Stage::Length { min_ratio: min, max_ratio: max };
        // 0.0 and unset take the defaults; 7 * 0.5 = 3.5 truncates to 3, 7 * 2.0 = 14.
        for stage in [len(None, None), len(Some(0.0), Some(-0.0))] {
            assert_eq!(stage.rule(7).unwrap(), Rule::Length { min_len: 3, max_len: 14 });
        }
        // The lower bound is at least 1; a negative product truncates toward zero.
        assert_eq!(len(Some(0.1), Some(-0.3)).rule(3).unwrap(), Rule::Length { min_len: 1, max_len: 0 });
        let jac = Stage::Jaccard { threshold: Some(0.0), min_overlap: None };
        assert_eq!(jac.rule(4).unwrap(), Rule::Jaccard { threshold: 0.3, min_overlap: 2.0 });
        assert_eq!(Stage::RapidFuzz { threshold: Some(0.0) }.rule(4).unwrap(), Rule::Ratio { cutoff: 0.1 });
        assert!(len(Some(f64::INFINITY), None).rule(3).is_err());
        assert!(len(None, Some(1e300)).rule(3).is_err());
        assert!(Stage::Jaccard { threshold: Some(f64::NAN), min_overlap: None }.rule(3).is_err());

        let fuzz = Stage::RapidFuzz { threshold: Some(0.5) };
        // A Python-side stage first is skipped; alone, nothing is selected.
        let p = Pipeline::resolve(&[fuzz, len(None, None), fuzz], 4).unwrap();
        assert_eq!(p.rules, vec![Rule::Length { min_len: 2, max_len: 8 }, Rule::Ratio { cutoff: 0.5 }]);
        assert!(!p.selects_nothing);
        assert!(Pipeline::resolve(&[fuzz], 4).unwrap().selects_nothing);
        assert!(Pipeline::resolve(&[], 4).unwrap().selects_nothing);
    }

    #[test]
    fn candidate_slots_match_the_naive_rules() {
        let mut rng = Rng::new(11);
        // s0..s9 are stored; s10 and s11 never are (unknown symbols, possibly repeated).
        let alphabet: Vec<String> = (0..12).map(|k| format!("s{k}")).collect();
        let mut matcher = Matcher::new(crate::metrics::Metric::Lcs);
        let mut patterns: Vec<Vec<String>> = Vec::new();
        for k in 0..600 {
            let ids = rng.sequence(8, 10);
            matcher.insert(&format!("p{k:03}"), &ids).unwrap();
            patterns.push(ids.iter().map(|&i| alphabet[i as usize].clone()).collect());
        }
        for k in (0..600).step_by(7) {
            assert!(matcher.remove(&format!("p{k:03}")));
        }
        let ratio = |r: usize| if r == 0 { None } else { Some(r as f64 / 10.0) };
        for round in 0..80 {
            let state: Vec<String> = (0..1 + rng.below(7)).map(|_| alphabet[rng.below(12)].clone()).collect();
            let lookup: Vec<i64> =
                state.iter().map(|s| s[1..].parse::<i64>().unwrap()).map(|i| if i < 10 { i } else { -1 }).collect();
            let ids = crate::matcher::query_from_lookup(&lookup);
            let query = FilterQuery::new(&ids, state.iter().collect::<HashSet<_>>().len());
            let stages = [
                Stage::Length { min_ratio: ratio(rng.below(8)), max_ratio: ratio(rng.below(30)) },
                Stage::Jaccard { threshold: ratio(rng.below(8)), min_overlap: Some(rng.below(4) as f64) },
                Stage::RapidFuzz { threshold: ratio(rng.below(9)) },
            ];
            let chosen: Vec<Stage> = (0..1 + round % 4).map(|_| stages[rng.below(3)]).collect();
            let pipeline = Pipeline::resolve(&chosen, state.len()).unwrap();
            let got: Vec<String> =
                candidate_slots(&matcher, &query, &pipeline).iter().map(|&s| matcher.name(s).to_string()).collect();
            let want: Vec<String> = (0..600)
                .filter(|&k| k % 7 != 0)
                .filter(|&k| !pipeline.selects_nothing && pipeline.rules.iter().all(|r| naive(r, &patterns[k], &state)))
                .map(|k| format!("p{k:03}"))
                .collect();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            assert_eq!(got_sorted, want, "state {state:?}, stages {chosen:?}");
        }
    }

    #[test]
    fn ranking_among_candidates_equals_ranking_a_store_of_only_them() {
        use crate::kato_record::{ranked_predictions, ranked_predictions_among};
        use crate::metrics::SimilarityRule;
        let mut rng = Rng::new(5);
        let patterns: Vec<Vec<u32>> = (0..900).map(|_| rng.sequence(9, 12)).collect();
        let mut all = Matcher::new(crate::metrics::Metric::Lcs);
        for (k, p) in patterns.iter().enumerate() {
            all.insert(&format!("p{k:03}"), p).unwrap();
        }
        for round in 0..12 {
            let chosen: Vec<usize> = (0..900).filter(|_| rng.below(3) == 0).collect();
            let mut only = Matcher::new(crate::metrics::Metric::Lcs);
            for &k in chosen.iter().filter(|&&k| !patterns[k].is_empty()) {
                only.insert(&format!("p{k:03}"), &patterns[k]).unwrap();
            }
            // Names not stored are ignored.
            let mut names: Vec<String> = chosen.iter().map(|k| format!("p{k:03}")).collect();
            names.push("absent".to_string());
            let among: crate::matcher::CandidateNames = names.iter().map(String::as_str).collect();
            let state = rng.sequence(7, 12);
            let threshold = [0.0, 0.1, 0.3][round % 3];
            let keep = [1, 5, 40, 1000][round % 4];
            let summary = |m: &Matcher, r: crate::kato_record::Ranked| -> (usize, Vec<(String, u64, u64)>) {
                let rows = r
                    .records
                    .iter()
                    .map(|x| (m.name(x.slot).to_string(), x.similarity.to_bits(), x.scores.pre_potential.to_bits()));
                (r.total, rows.collect())
            };
            for prune in [false, true] {
                let rule = SimilarityRule::KatoRounded;
                let got = ranked_predictions_among(&all, &state, threshold, keep, rule, prune, Some(&among)).unwrap();
                let want = ranked_predictions(&only, &state, threshold, keep, rule, prune).unwrap();
                assert_eq!(summary(&all, got), summary(&only, want), "round {round}, prune {prune}");
            }
        }
    }
}
