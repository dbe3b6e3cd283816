//! The sequence-dependent parts of KATO's prediction info (`extract_prediction_info`, non-fuzzy
//! path), as index ranges into the pattern and the state; the bindings turn them into lists of
//! symbols. docs/ARCHITECTURE.md describes the semantics reproduced here (KATO's `extract_prediction_info`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{KatoError, Result};
use crate::metrics::difflib::{opcodes, Block, DifflibQuery, DifflibScratch, Opcode};
use crate::metrics::{fuzz, validate_threshold, Scorer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictionParts {
    /// Matching blocks of (pattern, state), no junk, sorted and merged as difflib returns them.
    pub blocks: Vec<Block>,
    /// `past` is `pattern[..past_end]`.
    pub past_end: usize,
    /// `present` is `pattern[present.0..present.1]`.
    pub present: (usize, usize),
    /// Ranges of the pattern whose symbols are `missing`, in opcode order.
    pub missing: Vec<(usize, usize)>,
    /// Ranges of the state whose symbols are `extras`, in opcode order.
    pub extras: Vec<(usize, usize)>,
}

/// KATO's prediction info for one pattern, or `None` where KATO returns none (no matching block
/// and a positive cutoff). The bindings use [`prediction_parts_many`]; this pair form is the
/// tests'.
#[cfg(test)]
pub fn prediction_parts(pattern: &[u32], state: &[u32], cutoff_positive: bool) -> Option<PredictionParts> {
    let query = DifflibQuery::new(state, false);
    parts_with(&query, &mut query.new_scratch(), pattern, cutoff_positive)
}

/// [`prediction_parts`] with the state (difflib's `b`, no junk) prepared once.
pub(crate) fn parts_with(
    query: &DifflibQuery,
    scratch: &mut DifflibScratch,
    pattern: &[u32],
    cutoff_positive: bool,
) -> Option<PredictionParts> {
    let state_len = query.state_len();
    let blocks = query.matching_blocks(pattern, scratch);
    let (past_end, present) = match blocks.as_slice() {
        [] if cutoff_positive => return None,
        [] => (0, (0, pattern.len())),
        [only] => (only.i, (only.i, only.i + only.size)),
        [first, .., last] => {
            let end = last.i + last.size;
            (first.i, (first.i, if end > first.i { end } else { pattern.len() }))
        }
    };
    let (mut missing, mut extras) = (Vec::new(), Vec::new());
    if present.1 > present.0 {
        let present_seq = &pattern[present.0..present.1];
        let shift = |(lo, hi): (usize, usize)| (lo + present.0, hi + present.0);
        for op in opcodes(&query.matching_blocks(present_seq, scratch), present_seq.len(), state_len) {
            match op {
                Opcode::Replace { a, b } => {
                    missing.push(shift(a));
                    extras.push(b);
                }
                Opcode::Delete { a } => missing.push(shift(a)),
                Opcode::Insert { b } => extras.push(b),
                Opcode::Equal { .. } => {}
            }
        }
    }
    Some(PredictionParts { blocks, past_end, present, missing, extras })
}

/// A sum of weights in KATO's order: left to right from 0, one float addition each (Python's
/// `sum` up to 3.11, which KATO's image runs; 3.12 compensates its float sums).
pub fn weight_sum(weights: impl IntoIterator<Item = f64>) -> f64 {
    weights.into_iter().fold(0.0, |sum, w| sum + w)
}

/// KATO's affinity-weighted similarity from its three weight sums:
/// `2 * Σw(intersection) / (Σw(state) + Σw(pattern))`, `None` unless that denominator is > 0.
pub fn weighted_similarity(intersection: f64, state: f64, pattern: f64) -> Option<f64> {
    let total = state + pattern;
    if total > 0.0 {
        Some(2.0 * intersection / total)
    } else {
        None
    }
}

/// A state symbol the fuzzy token path matched to a different pattern symbol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anomaly {
    /// Position in the state.
    pub observed: usize,
    /// Position in the pattern of the symbol it was matched to.
    pub expected: usize,
    /// `fuzz.ratio / 100`.
    pub similarity: f64,
}

/// Everything of KATO's prediction tuple that depends on the pattern, as positions: the binding
/// only slices. `parts.missing` and `parts.extras` follow the fuzzy matches on the fuzzy path;
/// `number_of_blocks` is `parts.blocks.len()` on both paths.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionInfo {
    pub parts: PredictionParts,
    /// Ranges of the state whose symbols make `matching_intersection`, in order.
    pub intersection: Vec<(usize, usize)>,
    pub weighted: Option<f64>,
    pub anomalies: Vec<Anomaly>,
}

/// Affinity weights: per state position (a state symbol may be unknown to the vocabulary and
/// still weighted) and per vocabulary id for pattern symbols.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub state: &'a [f64],
    pub symbol: &'a (dyn Fn(u32) -> f64 + Sync),
}

/// KATO's fuzzy token path: `threshold` is `fuzzy_token_threshold` (in (0, 1]); the texts of the
/// state's symbols per position and of pattern symbols per vocabulary id.
#[derive(Clone, Copy)]
pub struct FuzzyTokens<'a> {
    pub threshold: f64,
    pub state: &'a [&'a str],
    pub symbol: &'a (dyn Fn(u32) -> Option<&'a str> + Sync),
}

/// What KATO's `extract_prediction_info` gets besides the pattern.
#[derive(Clone, Copy)]
pub struct PredictionRequest<'a> {
    /// Query symbol ids (see `matcher::query_from_lookup`).
    pub state: &'a [u32],
    /// Whether the recall threshold is > 0 (a pattern without matching block then has no
    /// prediction).
    pub cutoff_positive: bool,
    /// `None` where KATO gets no weights or an empty dict.
    pub weights: Option<Weights<'a>>,
    pub fuzzy: Option<FuzzyTokens<'a>>,
}

/// KATO's prediction info of each of `count` patterns (`pattern_of(k)`), on all cores; `None`
/// where KATO builds no prediction.
pub fn prediction_infos<'p>(
    count: usize,
    pattern_of: impl Fn(usize) -> Cow<'p, [u32]> + Sync,
    request: &PredictionRequest<'_>,
) -> Result<Vec<Option<PredictionInfo>>> {
    let state_len = request.state.len();
    if let Some(w) = &request.weights {
        if w.state.len() != state_len {
            return Err(KatoError::InvalidLayout(format!(
                "{} state weights for a state of {state_len} symbols",
                w.state.len()
            )));
        }
    }
    let fuzzy = match &request.fuzzy {
        Some(f) => Some(FuzzyTable::new(f, state_len, count, &pattern_of)?),
        None => None,
    };
    let query = DifflibQuery::new(request.state, false);
    let state_weight = request.weights.map(|w| weight_sum(w.state.iter().copied()));
    Ok((0..count)
        .into_par_iter()
        .with_min_len(64)
        .map_init(
            || query.new_scratch(),
            |scratch, k| {
                let pattern = pattern_of(k);
                let mut parts = parts_with(&query, scratch, &pattern, request.cutoff_positive)?;
                let (intersection, anomalies) = match &fuzzy {
                    None => (parts.blocks.iter().map(|b| (b.j, b.j + b.size)).collect(), Vec::new()),
                    Some(table) => table.apply(&pattern, &mut parts),
                };
                let weighted = request.weights.and_then(|w| {
                    let matched = weight_sum(intersection.iter().flat_map(|&(lo, hi)| w.state[lo..hi].iter().copied()));
                    let pattern_weight = weight_sum(pattern.iter().map(|&id| (w.symbol)(id)));
                    weighted_similarity(matched, state_weight.unwrap_or(0.0), pattern_weight)
                });
                Some(PredictionInfo { parts, intersection, weighted, anomalies })
            },
        )
        .collect())
}

/// Consecutive positions merged into ranges.
fn runs(positions: impl Iterator<Item = usize>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for p in positions {
        match out.last_mut() {
            Some(last) if last.1 == p => last.1 += 1,
            _ => out.push((p, p + 1)),
        }
    }
    out
}

/// The fuzzy path's per-query data: the LCS of every distinct state token with every distinct
/// pattern symbol of the query's patterns, computed once.
struct FuzzyTable<'a> {
    fuzzy: FuzzyTokens<'a>,
    /// `token_of[j]`: the distinct token of state position j.
    token_of: Vec<usize>,
    token_lens: Vec<usize>,
    /// Pattern symbol ids, ascending, with their text and length in code points.
    ids: Vec<u32>,
    texts: Vec<&'a str>,
    id_lens: Vec<usize>,
    /// `lcs[id_index * tokens + token]`.
    lcs: Vec<u32>,
}

impl<'a> FuzzyTable<'a> {
    fn new<'p>(
        fuzzy: &FuzzyTokens<'a>,
        state_len: usize,
        count: usize,
        pattern_of: &(impl Fn(usize) -> Cow<'p, [u32]> + Sync),
    ) -> Result<FuzzyTable<'a>> {
        if fuzzy.threshold == 0.0 || validate_threshold(fuzzy.threshold).is_err() {
            return Err(KatoError::InvalidThreshold(fuzzy.threshold));
        }
        if fuzzy.state.len() != state_len {
            return Err(KatoError::InvalidLayout(format!(
                "{} state texts for a state of {state_len} symbols",
                fuzzy.state.len()
            )));
        }
        let mut distinct: HashMap<&str, usize> = HashMap::new();
        let token_of: Vec<usize> = fuzzy
            .state
            .iter()
            .map(|&t| {
                let next = distinct.len();
                *distinct.entry(t).or_insert(next)
            })
            .collect();
        let mut tokens: Vec<Vec<char>> = vec![Vec::new(); distinct.len()];
        for (text, k) in distinct {
            tokens[k] = text.chars().collect();
        }
        let mut ids: Vec<u32> = (0..count).into_par_iter().flat_map_iter(|k| pattern_of(k).into_owned()).collect();
        ids.par_sort_unstable();
        ids.dedup();
        let texts: Vec<&'a str> =
            ids.iter().map(|&id| (fuzzy.symbol)(id).ok_or(KatoError::MissingSymbolText(id))).collect::<Result<_>>()?;
        let rows: Vec<(usize, Vec<u32>)> = texts
            .par_iter()
            .map(|text| {
                let chars: Vec<char> = text.chars().collect();
                (chars.len(), tokens.iter().map(|t| fuzz::lcs_chars(t, &chars) as u32).collect())
            })
            .collect();
        Ok(FuzzyTable {
            fuzzy: *fuzzy,
            token_of,
            token_lens: tokens.iter().map(Vec::len).collect(),
            id_lens: rows.iter().map(|r| r.0).collect(),
            lcs: rows.into_iter().flat_map(|r| r.1).collect(),
            ids,
            texts,
        })
    }

    /// Matches every state token to its first best pattern symbol (`extractOne` with
    /// `fuzz.ratio`), then derives the intersection, the anomalies and `missing`/`extras` from
    /// those matches, as KATO's fuzzy path does.
    fn apply(&self, pattern: &[u32], parts: &mut PredictionParts) -> (Vec<(usize, usize)>, Vec<Anomaly>) {
        let tokens = self.token_lens.len();
        let at: Vec<usize> = pattern.iter().map(|id| self.ids.binary_search(id).unwrap_or_default()).collect();
        let cutoff = self.fuzzy.threshold * 100.0;
        let best: Vec<Option<(usize, f64)>> = (0..tokens)
            .map(|t| {
                if pattern.is_empty() {
                    return None;
                }
                fuzz::extract_one(pattern.len(), cutoff, |k, c| {
                    let lcs = self.lcs[at[k] * tokens + t] as usize;
                    fuzz::ratio_score(lcs, self.token_lens[t], self.id_lens[at[k]], c)
                })
            })
            .collect();
        let matched = |j: usize| best[self.token_of[j]];
        let state = self.fuzzy.state;
        let intersection = runs((0..state.len()).filter(|&j| matched(j).is_some()));
        let mut anomalies = Vec::new();
        let mut expected: HashSet<&str> = HashSet::new();
        for (j, &observed) in state.iter().enumerate() {
            if let Some((k, score)) = matched(j) {
                let text = self.texts[at[k]];
                expected.insert(text);
                if observed != text {
                    anomalies.push(Anomaly { observed: j, expected: k, similarity: score / 100.0 });
                }
            }
        }
        let (lo, hi) = parts.present;
        parts.missing = runs((lo..hi).filter(|&i| !expected.contains(self.texts[at[i]])));
        parts.extras = runs((0..state.len()).filter(|&j| matched(j).is_none()));
        (intersection, anomalies)
    }
}

/// [`prediction_parts`] for many patterns against one state, on all cores.
pub fn prediction_parts_many(
    patterns: &[Vec<u32>],
    state: &[u32],
    cutoff_positive: bool,
) -> Vec<Option<PredictionParts>> {
    let query = DifflibQuery::new(state, false);
    patterns
        .par_iter()
        .with_min_len(256)
        .map_init(|| query.new_scratch(), |scratch, p| parts_with(&query, scratch, p, cutoff_positive))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// Symbol texts for ids: similar-looking words, some non-ASCII, one empty.
    fn text(id: u32) -> String {
        ["", "cat", "cart", "car", "dog", "dig", "døg", "ab", "abc", "abcd", "zz", "z"][id as usize % 12]
            .repeat(1 + id as usize / 12)
    }

    /// `extractOne` written plainly: the first choice whose uncut `fuzz.ratio` is the highest,
    /// if that is at least the cutoff (which RapidFuzz holds as a C float).
    fn naive_best(token: &str, pattern: &[String], cutoff: f64) -> Option<(usize, f64)> {
        let cutoff = cutoff as f32 as f64;
        let mut best: Option<(usize, f64)> = None;
        for (k, p) in pattern.iter().enumerate() {
            let score = fuzz::ratio(token, p);
            if score >= cutoff && best.is_none_or(|(_, b)| score > b) {
                best = Some((k, score));
            }
        }
        best
    }

    /// The fuzzy and the exact path against oracles spelled out on strings: intersection,
    /// anomalies, missing, extras and the weighted similarity with its sums in KATO's order.
    #[test]
    fn prediction_infos_match_oracles() {
        let mut rng = Rng::new(12);
        let vocabulary: Vec<String> = (0..30).map(text).collect();
        let weight_of = |id: u32| if id.is_multiple_of(5) { 0.0 } else { 0.1 * id as f64 + 1.0 / 3.0 };
        let (mut anomalies_seen, mut weighted_seen) = (0, 0);
        for case in 0..300 {
            let patterns: Vec<Vec<u32>> = (0..6).map(|_| rng.sequence(9, 30)).collect();
            let lookup: Vec<i64> = (0..rng.below(8)).map(|_| rng.below(32) as i64 - 2).collect();
            let state = crate::matcher::query_from_lookup(&lookup);
            let state_text: Vec<String> = lookup
                .iter()
                .map(|&id| if id < 0 { format!("ca{id}") } else { vocabulary[id as usize].clone() })
                .collect();
            let state_refs: Vec<&str> = state_text.iter().map(String::as_str).collect();
            let state_weights: Vec<f64> =
                lookup.iter().map(|&id| if id < 0 { 0.7 } else { weight_of(id as u32) }).collect();
            let symbol_text = |id: u32| vocabulary.get(id as usize).map(String::as_str);
            let threshold = [0.3, 0.6, 0.8, 1.0][case % 4];
            let fuzzy = FuzzyTokens { threshold, state: &state_refs, symbol: &symbol_text };
            let weights = Weights { state: &state_weights, symbol: &weight_of };
            for use_fuzzy in [false, true] {
                let request = PredictionRequest {
                    state: &state,
                    cutoff_positive: case % 3 != 0,
                    weights: (case % 5 != 0).then_some(weights),
                    fuzzy: use_fuzzy.then_some(fuzzy),
                };
                let infos = prediction_infos(patterns.len(), |k| Cow::Borrowed(&patterns[k][..]), &request).unwrap();
                for (pattern, info) in patterns.iter().zip(infos) {
                    let plain = prediction_parts(pattern, &state, request.cutoff_positive);
                    assert_eq!(info.is_some(), plain.is_some());
                    let (Some(info), Some(plain)) = (info, plain) else { continue };
                    assert_eq!(
                        (&info.parts.blocks, info.parts.past_end, info.parts.present),
                        (&plain.blocks, plain.past_end, plain.present)
                    );
                    let flat = |ranges: &[(usize, usize)]| -> Vec<usize> {
                        ranges.iter().flat_map(|&(lo, hi)| lo..hi).collect()
                    };
                    let words: Vec<String> = pattern.iter().map(|&id| vocabulary[id as usize].clone()).collect();
                    let (intersection, missing, extras, anomalies) = if use_fuzzy {
                        let best: Vec<Option<(usize, f64)>> = state_text
                            .iter()
                            .map(|t| if words.is_empty() { None } else { naive_best(t, &words, threshold * 100.0) })
                            .collect();
                        let expected: HashSet<&String> = best.iter().flatten().map(|&(k, _)| &words[k]).collect();
                        let (lo, hi) = plain.present;
                        let anomalies: Vec<Anomaly> = best
                            .iter()
                            .enumerate()
                            .filter_map(|(j, b)| {
                                b.filter(|&(k, _)| words[k] != state_text[j]).map(|(k, s)| Anomaly {
                                    observed: j,
                                    expected: k,
                                    similarity: s / 100.0,
                                })
                            })
                            .collect();
                        (
                            (0..state.len()).filter(|&j| best[j].is_some()).collect::<Vec<_>>(),
                            (lo..hi).filter(|&i| !expected.contains(&words[i])).collect::<Vec<_>>(),
                            (0..state.len()).filter(|&j| best[j].is_none()).collect::<Vec<_>>(),
                            anomalies,
                        )
                    } else {
                        let blocks: Vec<usize> = plain.blocks.iter().flat_map(|b| b.j..b.j + b.size).collect();
                        (blocks, flat(&plain.missing), flat(&plain.extras), Vec::new())
                    };
                    assert_eq!(flat(&info.intersection), intersection, "case {case} fuzzy {use_fuzzy}");
                    assert_eq!(flat(&info.parts.missing), missing, "case {case} fuzzy {use_fuzzy}");
                    assert_eq!(flat(&info.parts.extras), extras, "case {case} fuzzy {use_fuzzy}");
                    assert_eq!(info.anomalies, anomalies, "case {case} fuzzy {use_fuzzy}");
                    // Python's sum: 0, then each weight added in order.
                    let weighted = request.weights.and_then(|_| {
                        let mut matched = 0.0;
                        for &j in &intersection {
                            matched += state_weights[j];
                        }
                        let mut total_state = 0.0;
                        for w in &state_weights {
                            total_state += w;
                        }
                        let mut total_pattern = 0.0;
                        for &id in pattern {
                            total_pattern += weight_of(id);
                        }
                        let total = total_state + total_pattern;
                        (total > 0.0).then(|| 2.0 * matched / total)
                    });
                    assert_eq!(info.weighted.map(f64::to_bits), weighted.map(f64::to_bits));
                    anomalies_seen += info.anomalies.len();
                    weighted_seen += info.weighted.is_some() as usize;
                }
            }
        }
        assert!(anomalies_seen > 100 && weighted_seen > 100, "{anomalies_seen} anomalies, {weighted_seen} weighted");
    }

    #[test]
    fn bad_requests_are_errors() {
        let texts = ["a"];
        let symbol = |_: u32| None;
        let fuzzy = FuzzyTokens { threshold: 0.5, state: &texts, symbol: &symbol };
        let request = PredictionRequest { state: &[1], cutoff_positive: true, weights: None, fuzzy: Some(fuzzy) };
        let patterns = [vec![7u32]];
        let run = |r: &PredictionRequest| prediction_infos(1, |k| Cow::Borrowed(&patterns[k][..]), r);
        assert_eq!(run(&request), Err(KatoError::MissingSymbolText(7)));
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let r = PredictionRequest { fuzzy: Some(FuzzyTokens { threshold: bad, ..fuzzy }), ..request };
            assert!(matches!(run(&r), Err(KatoError::InvalidThreshold(_))));
        }
        let r = PredictionRequest { fuzzy: Some(FuzzyTokens { state: &[], ..fuzzy }), ..request };
        assert!(matches!(run(&r), Err(KatoError::InvalidLayout(_))));
        let zero = |_: u32| 0.0;
        let r = PredictionRequest { fuzzy: None, weights: Some(Weights { state: &[], symbol: &zero }), ..request };
        assert!(matches!(run(&r), Err(KatoError::InvalidLayout(_))));
        assert_eq!(weighted_similarity(1.0, 0.0, 0.0), None);
        assert_eq!(weighted_similarity(1.0, 1.0, -1.0), None);
        assert_eq!(weighted_similarity(0.5, 1.0, 2.0), Some(2.0 * 0.5 / 3.0));
    }

    #[test]
    fn worked_example() {
        // pattern a b c d e, state b c x e: blocks (1,0,2) (4,3,1); present = b c d e.
        let parts = prediction_parts(&[0, 1, 2, 3, 4], &[1, 2, 9, 4], true).unwrap();
        assert_eq!(parts.blocks, vec![Block { i: 1, j: 0, size: 2 }, Block { i: 4, j: 3, size: 1 }]);
        assert_eq!((parts.past_end, parts.present), (1, (1, 5)));
        // present b c d e vs state b c x e: replace d -> x.
        assert_eq!(parts.missing, vec![(3, 4)]);
        assert_eq!(parts.extras, vec![(2, 3)]);
        assert_eq!(prediction_parts(&[1, 2], &[3], true), None);
        let none = prediction_parts(&[1, 2], &[3], false).unwrap();
        assert_eq!((none.past_end, none.present, none.missing, none.extras), (0, (0, 2), vec![(0, 2)], vec![(0, 1)]));
    }
}
