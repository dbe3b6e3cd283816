//! KATO's prediction records, ranked natively: the scalars KATO's `Prediction` computes from a
//! prediction tuple and the pattern's events (evidence, confidence, snr, fragmentation), the
//! pre-potential KATO prunes by before its expensive metrics, and its single-symbol fast path.
//! Only the records KATO keeps reach Python. docs/ARCHITECTURE.md describes the semantics.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::error::Result;
use crate::matcher::Matcher;
use crate::metrics::difflib::DifflibQuery;
use crate::metrics::{PreparedQuery, Scorer, SimilarityRule};
use crate::ordering::{compare_ranked, LengthRow, NameOrder, QueryPlan};
use crate::prediction::{parts_with, weight_sum, weighted_similarity, PredictionParts, Weights};
use crate::store::PatternStore;

/// Patterns per parallel work item of the scan.
const CHUNK: usize = 4096;

/// What KATO's `Prediction.__init__` derives from a prediction tuple and the pattern's events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KatoScores {
    pub evidence: f64,
    pub confidence: f64,
    pub snr: f64,
    pub fragmentation: f64,
    /// `(evidence + confidence) * snr + (0.0 if fragmentation == -1 else 1.0 / (fragmentation + 1))`.
    pub pre_potential: f64,
    /// Past events are `events[..present_events.0]`, present events
    /// `events[present_events.0..present_events.1]`, the future the rest (after the tail fix).
    pub present_events: (usize, usize),
}

/// KATO's pruning score, in its operation order.
#[inline]
fn pre_potential(evidence: f64, confidence: f64, snr: f64, fragmentation: f64) -> f64 {
    (evidence + confidence) * snr + if fragmentation == -1.0 { 0.0 } else { 1.0 / (fragmentation + 1.0) }
}

/// `Prediction.__init__` on the tuple `parts` describes: `pattern` (flat) made of events of
/// `event_lens` symbols. The event walk takes whole events until it has covered the flat past,
/// then the flat present; when the first matched symbol occurs in the last past event, that event
/// moves to the present (KATO's "tail fix"). Extras are counted flat, before KATO re-aligns them.
pub fn kato_scores(pattern: &[u32], event_lens: &[u32], parts: &PredictionParts) -> KatoScores {
    let matches: usize = parts.blocks.iter().map(|b| b.size).sum();
    let extras: usize = parts.extras.iter().map(|&(lo, hi)| hi - lo).sum();
    let (past_len, present_len) = (parts.past_end, parts.present.1 - parts.present.0);
    let (mut covered, mut event) = (0usize, 0usize);
    while covered < past_len {
        covered += event_lens[event] as usize;
        event += 1;
    }
    let mut first_present = event;
    while covered < past_len + present_len {
        covered += event_lens[event] as usize;
        event += 1;
    }
    let event_start = |e: usize| event_lens[..e].iter().map(|&l| l as usize).sum::<usize>();
    if first_present > 0 {
        // Past events exist only when the past is non-empty, so there is a matching block.
        let first_match = pattern[parts.blocks[0].i];
        let last_past = event_start(first_present - 1)..event_start(first_present);
        if pattern[last_past].contains(&first_match) {
            first_present -= 1;
        }
    }
    let present_symbols = event_start(event) - event_start(first_present);
    let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let evidence = ratio(matches, pattern.len());
    let confidence = ratio(matches, present_symbols);
    let denominator = 2.0 * matches as f64 + extras as f64;
    let snr = if denominator > 0.0 { (2.0 * matches as f64 - extras as f64) / denominator } else { 0.0 };
    let fragmentation = parts.blocks.len() as f64 - 1.0;
    KatoScores {
        evidence,
        confidence,
        snr,
        fragmentation,
        pre_potential: pre_potential(evidence, confidence, snr, fragmentation),
        present_events: (first_present, event),
    }
}

/// An exact upper bound on the pre-potential of any pattern of `len` symbols whose LCS with a
/// state of `state_len` symbols is at most `lcs` (and at least 1 when `lcs` is): difflib's
/// matches form a common subsequence (1 <= m <= lcs; difflib finds a block whenever the two share
/// a symbol), the extras are the state symbols left unmatched by a second difflib run on a part
/// of the pattern (e >= state_len - lcs), the present events hold every match (m / len <=
/// confidence <= 1) and the fragmentation term is at most 1 (0 without a match). A negative snr
/// bound caps the product at the least evidence plus confidence times that bound. Every float
/// operation on the way is monotone in its inputs, so the bound holds for the rounded values too.
pub fn pre_potential_bound(lcs: usize, len: usize, state_len: usize) -> f64 {
    if lcs == 0 {
        // No match: evidence and confidence are 0, the fragmentation term too.
        return 0.0;
    }
    let evidence = lcs as f64 / len as f64;
    let extras = state_len.saturating_sub(lcs);
    let denominator = 2.0 * lcs as f64 + extras as f64;
    let snr = (2.0 * lcs as f64 - extras as f64) / denominator;
    let product = if snr >= 0.0 {
        (evidence + 1.0) * snr
    } else {
        let least = 1.0 / len as f64;
        (least + least) * snr
    };
    product + 1.0
}

/// One record KATO keeps: the pattern's slot, its similarity, its prediction parts and scores.
#[derive(Clone, Debug, PartialEq)]
pub struct RankedRecord {
    pub slot: u32,
    pub similarity: f64,
    pub parts: PredictionParts,
    pub scores: KatoScores,
}

/// The result of [`ranked_predictions`]: how many patterns KATO builds a prediction for, and the
/// best `keep` of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ranked {
    pub total: usize,
    pub records: Vec<RankedRecord>,
}

/// A pattern that passed the threshold, waiting for its parts.
#[derive(Clone, Copy)]
struct Pending {
    /// Index of its `(length, lcs)` class in bound order.
    class: u32,
    slot: u32,
    matches: u32,
}

/// The pre-potential bound of every `(length, lcs)` a query can meet, numbered in descending
/// bound order.
struct BoundTable {
    /// `first[len]`: index of `(len, 0)` in `rank`; `usize::MAX` for lengths not stored.
    first: Vec<usize>,
    /// `rank[first[len] + lcs]`: position of that pair in `bounds`.
    rank: Vec<u32>,
    /// Descending.
    bounds: Vec<f64>,
}

impl BoundTable {
    fn new(lengths: impl Iterator<Item = usize>, state_len: usize) -> BoundTable {
        let mut first = Vec::new();
        let mut pairs: Vec<f64> = Vec::new();
        for len in lengths {
            if first.len() <= len {
                first.resize(len + 1, usize::MAX);
            }
            first[len] = pairs.len();
            pairs.extend((0..=len.min(state_len)).map(|lcs| pre_potential_bound(lcs, len, state_len)));
        }
        let mut order: Vec<u32> = (0..pairs.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| pairs[b as usize].total_cmp(&pairs[a as usize]).then(a.cmp(&b)));
        let mut rank = vec![0; pairs.len()];
        for (r, &k) in order.iter().enumerate() {
            rank[k as usize] = r as u32;
        }
        BoundTable { first, rank, bounds: order.iter().map(|&k| pairs[k as usize]).collect() }
    }

    #[inline]
    fn class(&self, len: usize, lcs: usize) -> u32 {
        self.rank[self.first[len] + lcs]
    }
}

/// KATO's causal-belief predictions of `state` ranked as `predictPattern` prunes them: every
/// stored pattern with `rule` similarity `>= threshold` gets KATO's prediction parts and
/// `Prediction` scores; the best `keep` by pre-potential (descending, then name ascending, see
/// [`compare_ranked`]) are returned, with the number of all such patterns.
///
/// With `prune`, patterns are scored in descending order of [`pre_potential_bound`] and the scan
/// stops once no remaining bound can reach the `keep`-th best pre-potential; the result is the
/// same as without (the tests compare both).
pub fn ranked_predictions(
    matcher: &Matcher,
    state: &[u32],
    threshold: f64,
    keep: usize,
    rule: SimilarityRule,
    prune: bool,
) -> Result<Ranked> {
    matcher.check_query(state.len(), threshold, rule)?;
    let (store, order) = matcher.store_and_order();
    let plan = QueryPlan::with_rule(state.len(), threshold, store.lengths(), rule);
    let table = BoundTable::new(store.lengths(), state.len());
    let cutoff_positive = threshold > 0.0;
    let pending = match matcher.metric().prepare(state) {
        PreparedQuery::Lcs(q) => scan(&q, store, &plan, &table, true, cutoff_positive),
        PreparedQuery::Difflib(q) => scan(&q, store, &plan, &table, false, cutoff_positive),
    };
    let total = pending.iter().map(Vec::len).sum();
    let by_class = sort_by_class(pending, table.bounds.len());
    let query = DifflibQuery::new(state, false);
    let mut best: Vec<RankedRecord> = Vec::new();
    for (class, members) in by_class.iter().enumerate() {
        if keep == 0 {
            break;
        }
        if members.is_empty() {
            continue;
        }
        if prune && best.len() == keep && table.bounds[class] < best[keep - 1].scores.pre_potential {
            break;
        }
        let scored: Vec<RankedRecord> = members
            .par_iter()
            .with_min_len(64)
            .map_init(
                || query.new_scratch(),
                |scratch, &(slot, matches)| {
                    let pattern = store.tokens(slot);
                    let parts = parts_with(&query, scratch, &pattern, cutoff_positive)?;
                    let scores = kato_scores(&pattern, store.event_lens(slot), &parts);
                    let similarity = rule.similarity(matches as usize, pattern.len() + state.len());
                    Some(RankedRecord { slot, similarity, parts, scores })
                },
            )
            .flatten()
            .collect();
        best.extend(scored);
        keep_best(&mut best, keep, store, order);
    }
    Ok(Ranked { total, records: best })
}

/// The best `keep` of `records`, in ranking order.
fn keep_best(records: &mut Vec<RankedRecord>, keep: usize, store: &PatternStore, order: &NameOrder) {
    let by_rank = |a: &RankedRecord, b: &RankedRecord| -> Ordering {
        compare_ranked((a.scores.pre_potential, a.slot), (b.scores.pre_potential, b.slot), store, order)
    };
    if records.len() > keep {
        records.select_nth_unstable_by(keep, by_rank);
        records.truncate(keep);
    }
    records.sort_unstable_by(by_rank);
}

/// Every live pattern passing `plan`, with its bound class, chunk by chunk in slot order.
/// `lcs_metric`: the scorer counts the LCS itself; otherwise (difflib) the pattern's length
/// bounds its LCS. With a positive cutoff, a pattern without any match gets no prediction from
/// KATO and is left out (it can pass only when both sequences are empty).
fn scan<S: Scorer>(
    query: &S,
    store: &PatternStore,
    plan: &QueryPlan,
    table: &BoundTable,
    lcs_metric: bool,
    cutoff_positive: bool,
) -> Vec<Vec<Pending>> {
    let slots = store.slots();
    let state_len = query.state_len();
    (0..slots.div_ceil(CHUNK))
        .into_par_iter()
        .map_init(
            || (query.new_scratch(), Vec::with_capacity(CHUNK), vec![0u32; CHUNK]),
            |(scratch, needed, counts), chunk| {
                let first = (chunk * CHUNK) as u32;
                let end = ((chunk + 1) * CHUNK).min(slots);
                let run = store.run(first, end - first as usize);
                needed.clear();
                needed.extend((0..run.len()).map(|k| {
                    if store.is_live(first + k as u32) {
                        plan.row(run.pattern_len(k)).min_matches
                    } else {
                        LengthRow::NONE
                    }
                }));
                query.score_run(run, needed, counts, scratch);
                let mut found = Vec::new();
                for (k, (&need, &count)) in needed.iter().zip(counts.iter()).enumerate() {
                    if need == LengthRow::NONE || count < need {
                        continue;
                    }
                    let len = run.pattern_len(k);
                    let lcs = if lcs_metric { count as usize } else { len.min(state_len) };
                    if cutoff_positive && lcs == 0 {
                        continue;
                    }
                    found.push(Pending { class: table.class(len, lcs), slot: first + k as u32, matches: count });
                }
                found
            },
        )
        .collect()
}

/// `(slot, matches)` of the pending patterns grouped by class (a counting sort; slot order kept
/// within a class).
fn sort_by_class(pending: Vec<Vec<Pending>>, classes: usize) -> Vec<Vec<(u32, u32)>> {
    let mut counts = vec![0usize; classes];
    for p in pending.iter().flatten() {
        counts[p.class as usize] += 1;
    }
    let mut out: Vec<Vec<(u32, u32)>> = counts.into_iter().map(Vec::with_capacity).collect();
    for p in pending.into_iter().flatten() {
        out[p.class as usize].push((p.slot, p.matches));
    }
    out
}

/// Slots of the live patterns KATO's single-symbol path considers for `symbol`: those whose first
/// event is non-empty and starts with it. In slot order.
pub fn first_symbol_slots(matcher: &Matcher, symbol: u32) -> Vec<u32> {
    let (store, _) = matcher.store_and_order();
    let slots = store.slots();
    (0..slots.div_ceil(CHUNK))
        .into_par_iter()
        .flat_map_iter(|chunk| {
            let first = chunk * CHUNK;
            (first as u32..((chunk + 1) * CHUNK).min(slots) as u32).filter(move |&slot| {
                store.is_live(slot)
                    && store.event_lens(slot).first().is_some_and(|&l| l > 0)
                    && store.first_token(slot) == Some(symbol)
            })
        })
        .collect()
}

/// One record of KATO's single-symbol fast path (everything of its dict that depends on the
/// pattern besides the symbols, which `parts` locates).
#[derive(Clone, Debug, PartialEq)]
pub struct SingleSymbolRecord {
    pub slot: u32,
    pub parts: PredictionParts,
    /// State ranges of the matching intersection.
    pub intersection: Vec<(usize, usize)>,
    pub similarity: f64,
    pub evidence: f64,
    pub confidence: f64,
    pub snr: f64,
    pub fragmentation: i64,
    pub weighted_similarity: Option<f64>,
    pub weighted_evidence: Option<f64>,
    pub weighted_confidence: Option<f64>,
    pub weighted_snr: Option<f64>,
    pub potential: f64,
}

/// KATO's single-symbol fast path for the state `[symbol]`: every candidate of
/// [`first_symbol_slots`] scored at threshold 0.0 with the unrounded token similarity, its
/// metrics computed as that path does (weighted ones when `weights` are given, and then used in
/// the potential), the best `keep` by potential descending, then name ascending.
pub fn single_symbol_predictions(
    matcher: &Matcher,
    symbol: u32,
    keep: usize,
    weights: Option<Weights<'_>>,
) -> Result<Vec<SingleSymbolRecord>> {
    let state = [symbol];
    if let Some(w) = &weights {
        if w.state.len() != 1 {
            return Err(crate::error::KatoError::InvalidLayout(format!(
                "{} state weights for a state of 1 symbol",
                w.state.len()
            )));
        }
    }
    let (store, order) = matcher.store_and_order();
    let candidates = first_symbol_slots(matcher, symbol);
    let query = DifflibQuery::new(&state, false);
    let mut records: Vec<SingleSymbolRecord> = candidates
        .par_iter()
        .with_min_len(64)
        .map_init(
            || query.new_scratch(),
            |scratch, &slot| {
                let pattern = store.tokens(slot);
                let parts = parts_with(&query, scratch, &pattern, false)?;
                Some(single_symbol_record(slot, &pattern, parts, weights.as_ref()))
            },
        )
        .flatten()
        .collect();
    let by_rank = |a: &SingleSymbolRecord, b: &SingleSymbolRecord| {
        compare_ranked((a.potential, a.slot), (b.potential, b.slot), store, order)
    };
    if records.len() > keep {
        if keep == 0 {
            return Ok(Vec::new());
        }
        records.select_nth_unstable_by(keep - 1, by_rank);
        records.truncate(keep);
    }
    records.sort_unstable_by(by_rank);
    Ok(records)
}

fn single_symbol_record(
    slot: u32,
    pattern: &[u32],
    parts: PredictionParts,
    weights: Option<&Weights<'_>>,
) -> SingleSymbolRecord {
    let intersection: Vec<(usize, usize)> = parts.blocks.iter().map(|b| (b.j, b.j + b.size)).collect();
    let matches: usize = parts.blocks.iter().map(|b| b.size).sum();
    let extras: usize = parts.extras.iter().map(|&(lo, hi)| hi - lo).sum();
    let present = &pattern[parts.present.0..parts.present.1];
    let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    // The one state symbol starts the pattern: the LCS is 1.
    let similarity = SimilarityRule::Exact.similarity(1, pattern.len() + 1);
    let evidence = ratio(matches, pattern.len());
    let confidence = ratio(matches, present.len());
    let snr = ratio(matches, matches + extras);
    let fragmentation = parts.blocks.len() as i64 - 1;
    let (mut w_similarity, mut weighted_evidence, mut weighted_confidence, mut weighted_snr) = (None, None, None, None);
    if let Some(w) = weights {
        let from_state =
            |ranges: &[(usize, usize)]| weight_sum(ranges.iter().flat_map(|&(lo, hi)| w.state[lo..hi].iter().copied()));
        let from_pattern = |ids: &[u32]| weight_sum(ids.iter().map(|&id| (w.symbol)(id)));
        let (matched, whole, in_present, extra) =
            (from_state(&intersection), from_pattern(pattern), from_pattern(present), from_state(&parts.extras));
        let share = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        w_similarity = weighted_similarity(matched, weight_sum(w.state.iter().copied()), whole);
        weighted_evidence = Some(share(matched, whole));
        weighted_confidence = Some(share(matched, in_present));
        weighted_snr = Some(share(matched, matched + extra));
    }
    let fragment_term = if fragmentation == -1 { 0.0 } else { 1.0 / (fragmentation + 1) as f64 };
    let potential = (weighted_evidence.unwrap_or(evidence) + weighted_confidence.unwrap_or(confidence))
        * weighted_snr.unwrap_or(snr)
        + fragment_term;
    SingleSymbolRecord {
        slot,
        parts,
        intersection,
        similarity,
        evidence,
        confidence,
        snr,
        fragmentation,
        weighted_similarity: w_similarity,
        weighted_evidence,
        weighted_confidence,
        weighted_snr,
        potential,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metric;
    use crate::prediction::prediction_parts;
    use crate::testing::Rng;

    /// Random patterns of 1-4 events (some empty) over a small alphabet, so scores tie often.
    fn random_matcher(rng: &mut Rng, count: usize, metric: Metric) -> Matcher {
        let mut m = Matcher::new(metric);
        for k in 0..count {
            let events: Vec<Vec<u32>> = (0..1 + rng.below(4)).map(|_| rng.sequence(5, 6)).collect();
            let lens: Vec<u32> = events.iter().map(|e| e.len() as u32).collect();
            // Names out of slot order, so the name tie-break is exercised.
            m.insert_events(&format!("p{:04}", (k * 7919) % 10_007), &events.concat(), &lens).unwrap();
        }
        m
    }

    /// The unpruned result sorted the plain way: every passing pattern scored, sorted by
    /// (pre-potential descending, name ascending).
    fn brute_force(
        m: &Matcher,
        state: &[u32],
        threshold: f64,
        keep: usize,
        rule: SimilarityRule,
    ) -> Vec<(String, u64)> {
        let (store, _) = m.store_and_order();
        let mut all: Vec<(String, f64)> = Vec::new();
        for slot in 0..store.slots() as u32 {
            if !store.is_live(slot) {
                continue;
            }
            let pattern = m.tokens(slot);
            let lcs = crate::testing::naive_lcs(&pattern, state);
            let count = match m.metric() {
                Metric::Lcs => lcs,
                Metric::Difflib { autojunk } => crate::testing::naive_difflib(&pattern, state, autojunk),
            };
            let similarity = rule.similarity(count, pattern.len() + state.len());
            if similarity < threshold {
                continue;
            }
            let Some(parts) = prediction_parts(&pattern, state, threshold > 0.0) else { continue };
            let scores = kato_scores(&pattern, m.event_lens(slot), &parts);
            assert!(scores.pre_potential <= pre_potential_bound(lcs, pattern.len(), state.len()));
            all.push((m.name(slot).to_string(), scores.pre_potential));
        }
        all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        all.truncate(keep);
        all.into_iter().map(|(n, p)| (n, p.to_bits())).collect()
    }

    #[test]
    fn pruned_equals_unpruned_and_brute_force() {
        let mut rng = Rng::new(41);
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }] {
            let mut m = random_matcher(&mut rng, 3000, metric);
            for k in (0..3000).step_by(11) {
                m.remove(&format!("p{:04}", (k * 7919) % 10_007));
            }
            let mut pruned_less = 0;
            for q in 0..12 {
                let state = rng.sequence(12, 6);
                for threshold in [0.0, 0.1, 0.3, 0.6] {
                    for keep in [0, 1, 5, 40, 5000] {
                        let rules: &[SimilarityRule] = match metric {
                            Metric::Lcs => &[SimilarityRule::Exact, SimilarityRule::KatoRounded],
                            _ => &[SimilarityRule::Exact],
                        };
                        for &rule in rules {
                            let pruned = ranked_predictions(&m, &state, threshold, keep, rule, true).unwrap();
                            let full = ranked_predictions(&m, &state, threshold, keep, rule, false).unwrap();
                            assert_eq!(pruned, full, "q {q} t {threshold} keep {keep} {rule:?}");
                            let got: Vec<(String, u64)> = pruned
                                .records
                                .iter()
                                .map(|r| (m.name(r.slot).to_string(), r.scores.pre_potential.to_bits()))
                                .collect();
                            let want = brute_force(&m, &state, threshold, keep, rule);
                            if let Some(k) = (0..got.len().max(want.len())).find(|&k| got.get(k) != want.get(k)) {
                                panic!(
                                    "q {q} t {threshold} keep {keep}: at {k} got {:?} want {:?}",
                                    got.get(k),
                                    want.get(k)
                                );
                            }
                            pruned_less += (pruned.total > keep) as usize;
                        }
                    }
                }
            }
            assert!(pruned_less > 50);
        }
    }

    #[test]
    fn ties_are_broken_by_name() {
        let mut m = Matcher::new(Metric::Lcs);
        for name in ["d", "b", "c", "a"] {
            m.insert_events(name, &[1, 2], &[1, 1]).unwrap();
        }
        m.insert_events("z", &[1, 2, 3], &[3]).unwrap();
        let ranked = ranked_predictions(&m, &[1, 2], 0.1, 3, SimilarityRule::KatoRounded, true).unwrap();
        assert_eq!(ranked.total, 5);
        let names: Vec<&str> = ranked.records.iter().map(|r| m.name(r.slot)).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let single = single_symbol_predictions(&m, 1, 10, None).unwrap();
        let names: Vec<&str> = single.iter().map(|r| m.name(r.slot)).collect();
        // Shorter patterns have more evidence; equal ones tie and go by name.
        assert_eq!(names, ["a", "b", "c", "d", "z"]);
        assert!(single_symbol_predictions(&m, 2, 10, None).unwrap().is_empty());
    }

    /// KATO's event walk and tail fix on hand-made cases.
    #[test]
    fn event_walk_and_tail_fix() {
        // Events [a b c] [d e]; state [b c d]: past flat [a], present flat [b c d].
        let pattern = [0, 1, 2, 3, 4];
        let parts = prediction_parts(&pattern, &[1, 2, 3], true).unwrap();
        let s = kato_scores(&pattern, &[3, 2], &parts);
        // The past event [a b c] holds the first match b: it moves into the present.
        assert_eq!(s.present_events, (0, 2));
        assert_eq!(s.confidence, 3.0 / 5.0);
        assert_eq!(s.evidence, 3.0 / 5.0);
        assert_eq!((s.snr, s.fragmentation), (1.0, 0.0));
        assert_eq!(s.pre_potential, (0.6 + 0.6) * 1.0 + 1.0);
        // Events [a] [b c] [d e]; state [b d]: past event [a] does not hold b, stays past.
        let parts = prediction_parts(&pattern, &[1, 3], true).unwrap();
        let s = kato_scores(&pattern, &[1, 2, 2], &parts);
        assert_eq!(s.present_events, (1, 3));
        assert_eq!(s.confidence, 2.0 / 4.0);
        assert_eq!(s.fragmentation, 1.0);
        // Events [b] [b a]; state [b a x]: the block b a starts the second event, but the past
        // event [b] holds b by value, so it moves too.
        let pattern = [1, 1, 0];
        let parts = prediction_parts(&pattern, &[1, 0, 9], true).unwrap();
        assert_eq!(parts.past_end, 1);
        let s = kato_scores(&pattern, &[1, 2], &parts);
        assert_eq!(s.present_events, (0, 2));
        // No match at threshold 0: fragmentation -1 contributes nothing.
        let parts = prediction_parts(&[5, 6], &[1], false).unwrap();
        let s = kato_scores(&[5, 6], &[2], &parts);
        assert_eq!((s.fragmentation, s.snr, s.pre_potential), (-1.0, -1.0, 0.0));
    }
}
