//! KATO's prediction records, ranked natively: the scalars KATO's `Prediction` computes from a
//! prediction tuple and the pattern's events (evidence, confidence, snr, fragmentation), the
//! pre-potential KATO prunes by before its expensive metrics, and its single-symbol fast path.
//! Only the records KATO keeps reach Python. docs/ARCHITECTURE.md describes the semantics.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::error::Result;
use crate::matcher::{CandidateNames, Matcher, SlotMask};
use crate::metrics::difflib::DifflibQuery;
use crate::metrics::lcs::LcsQuery;
use crate::metrics::{PreparedQuery, Scorer, SimilarityRule};
use crate::ordering::{compare_ranked, LengthRow, NameOrder, QueryPlan};
use crate::parallel::spread_over_cores;
use crate::prediction::{parts_with, weight_sum, weighted_similarity, PredictionParts, Weights};
use crate::store::{AnyRun, PatternStore, Token};

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
    let shape = MatchShape {
        matches,
        blocks: parts.blocks.len(),
        extras,
        past_len: parts.past_end,
        present_len: parts.present.1 - parts.present.0,
        first_match: parts.blocks.first().map(|b| b.i),
    };
    scores_of(pattern, event_lens, &shape)
}

/// The counts of a prediction tuple that KATO's scores depend on.
struct MatchShape {
    matches: usize,
    blocks: usize,
    extras: usize,
    past_len: usize,
    present_len: usize,
    /// Where the first matching block starts in the pattern.
    first_match: Option<usize>,
}

/// [`kato_scores`] from the counts alone: the pruning bound computes one pattern's exact scores
/// with it, bit for bit as the full record gets them.
fn scores_of<T: Token>(pattern: &[T], event_lens: &[u32], shape: &MatchShape) -> KatoScores {
    let MatchShape { matches, blocks, extras, past_len, present_len, first_match } = *shape;
    let (mut covered, mut event) = (0usize, 0usize);
    while covered < past_len {
        covered += event_lens[event] as usize;
        event += 1;
    }
    let mut first_present = event;
    let past_symbols = covered;
    while covered < past_len + present_len {
        covered += event_lens[event] as usize;
        event += 1;
    }
    if first_present > 0 {
        // Past events exist only when the past is non-empty, so there is a matching block.
        let first_match: u32 = pattern[first_match.expect("a non-empty past has a block")].into();
        let last_past = past_symbols - event_lens[first_present - 1] as usize..past_symbols;
        if pattern[last_past].iter().any(|&s| s.into() == first_match) {
            first_present -= 1;
        }
    }
    let present_symbols = covered - event_lens[..first_present].iter().map(|&l| l as usize).sum::<usize>();
    let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let evidence = ratio(matches, pattern.len());
    let confidence = ratio(matches, present_symbols);
    let denominator = 2.0 * matches as f64 + extras as f64;
    let snr = if denominator > 0.0 { (2.0 * matches as f64 - extras as f64) / denominator } else { 0.0 };
    let fragmentation = blocks as f64 - 1.0;
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

/// Added to the evaluated maximum of [`fragmented_bound`]: the bound is argued on real numbers,
/// and the scores are computed in floats. Each side is a handful of operations on values below 4,
/// so the two differ from the real numbers by far less than 1e-14; the slack only ever admits
/// a few more patterns to the exact computation.
const FLOAT_SLACK: f64 = 1e-9;

/// What [`fragmented_bound`] knows of a pattern whose difflib blocks are not one block alone.
#[derive(Clone, Copy, Debug)]
struct Fragments {
    /// Pattern length.
    len: usize,
    /// m is in `least_matches..=most_matches`.
    least_matches: usize,
    most_matches: usize,
    least_blocks: usize,
    /// No block is longer.
    longest: usize,
    least_extras: usize,
    /// The present events hold at least this many symbols.
    least_present: usize,
}

/// Upper bound on `(evidence + confidence) * snr` of `m` matches (real-valued, see
/// [`fragmented_bound`]).
#[inline]
fn product_bound(m: usize, f: &Fragments) -> f64 {
    let (m, e) = (m as f64, f.least_extras as f64);
    let snr = (2.0 * m - e) / (2.0 * m + e);
    let evidence = m / f.len as f64;
    if snr >= 0.0 {
        let confidence = if (f.least_present as f64) > m { m / f.least_present as f64 } else { 1.0 };
        (evidence + confidence) * snr
    } else {
        (evidence + evidence) * snr
    }
}

/// Upper bound on the pre-potential of a pattern as `f` describes it, with k >= ceil(m /
/// longest) blocks besides `least_blocks`.
///
/// Why it holds, for a fixed m: evidence is m / len; confidence is m over the present events'
/// symbols, which hold every match and are part of the pattern, so m / len <= confidence <=
/// min(1, m / least_present); snr = (2m - e) / (2m + e) falls as e grows, so it is at most its
/// value at `least_extras` (snr_b). When snr_b >= 0 the product is at most
/// (m / len + min(1, m / least_present)) * snr_b (a negative snr only lowers it); when snr_b < 0
/// the product is negative and largest with the least evidence plus confidence, 2m / len. The
/// fragmentation term is 1 / k.
///
/// Over m, that product bound P(m) first falls then rises: for 2m < e it is
/// (2 / len) x (x - e) / (x + e) with x = 2m, whose derivative has the sign of x² + 2xe - e²
/// (negative below x = (√2 - 1)e, positive above); for 2m >= e both factors are non-negative and
/// do not fall. So on any range of m, P is largest at an end of it. The fragmentation term is
/// constant on each range of m that needs the same least k. The first two such ranges are
/// bounded one by one; every m beyond them needs at least two more blocks than the least, and
/// gets 1 / k plus the largest P anywhere (a looser bound, cheaper than walking on).
fn fragmented_bound(f: &Fragments) -> f64 {
    let most_matches = f.most_matches.max(f.least_matches);
    let p = |m: usize| product_bound(m, f);
    let (p_least, p_most) = (p(f.least_matches), p(most_matches));
    // m in lo..=hi needs at least k blocks.
    let k = f.least_blocks.max(f.least_matches.div_ceil(f.longest));
    let hi = most_matches.min(k * f.longest);
    let mut best = p_least.max(p(hi)) + 1.0 / k as f64;
    if hi < most_matches {
        let (lo, hi) = (hi + 1, most_matches.min((k + 1) * f.longest));
        best = best.max(p(lo).max(p(hi)) + 1.0 / (k + 1) as f64);
        if hi < most_matches {
            best = best.max(p_least.max(p_most) + 1.0 / (k + 2) as f64);
        }
    }
    best + FLOAT_SLACK
}

/// Symbols of the events that hold pattern positions `a..b` (`a < b <= pattern length`).
fn events_around(event_lens: &[u32], a: usize, b: usize) -> usize {
    let (mut start, mut first) = (0usize, None);
    for &l in event_lens {
        let end = start + l as usize;
        if first.is_none() && a < end {
            first = Some(start);
        }
        if b <= end {
            return end - first.unwrap_or(start);
        }
        start = end;
    }
    b - a
}

/// The query side of [`pattern_bound`]: the state's per-symbol position masks when it fits one
/// 64-bit word.
struct BoundQuery {
    state_len: usize,
    masks: Option<LcsQuery>,
}

impl BoundQuery {
    fn new(state: &[u32]) -> BoundQuery {
        let masks = (!state.is_empty() && state.len() <= 64).then(|| LcsQuery::new(state));
        BoundQuery { state_len: state.len(), masks }
    }
}

/// Working memory of [`pattern_bound`].
#[derive(Default)]
struct BoundScratch {
    rows: Vec<u64>,
    /// R_t and R_{t+1} over the pattern (see [`pattern_bound`]).
    runs: Vec<u64>,
    next: Vec<u64>,
}

/// Bits `0..n` set (`n <= 64`).
#[inline]
fn below(n: usize) -> u64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

/// An upper bound on the pre-potential [`kato_scores`] gives `pattern` (of `event_lens`) against
/// the state, knowing that its difflib matches number at most `most_matches` and its LCS with the
/// state is at most `lcs`: the exact pre-potential when difflib finds a single block, else
/// [`fragmented_bound`]. States of more than 64 symbols get [`pre_potential_bound`]. Returns the
/// bound and whether it is the exact pre-potential.
///
/// difflib's first block is the longest common run (C symbols; the first in (end in pattern,
/// end in state) order among equals, as CPython's `find_longest_match` keeps it), found here
/// bit-parallel, one pass over the pattern per length: with R_t(i) the state positions j where a
/// common run of at least t symbols ends at (i, j), R_1(i) is the position mask of the pattern's
/// symbol i and R_t(i) = R_{t-1}(i) & (R_{t-1}(i - 1) << 1).
/// difflib then recurses on the pattern and state parts left of the block and those right of it;
/// each pair that shares a symbol yields at least one more block. When neither does, the
/// tuple is that block alone: past = the pattern before it, present = the block, which difflib
/// matches whole against the state, so the extras are the other `state_len - C` symbols — the
/// exact scores follow. Otherwise k >= 1 + (sides sharing a symbol), m >= C + that count, every
/// block has at most C symbols, and the extras are at least `state_len - lcs` (the second run
/// matches a common subsequence).
fn pattern_bound<T: Token>(
    query: &BoundQuery,
    scratch: &mut BoundScratch,
    pattern: &[T],
    event_lens: &[u32],
    most_matches: usize,
    lcs: usize,
) -> (f64, bool) {
    let state_len = query.state_len;
    if most_matches == 0 {
        // No common symbol, no block: evidence, confidence and the fragmentation term are 0, and
        // so is the pre-potential (0.0, never -0.0).
        return (0.0, true);
    }
    let Some(masks) = &query.masks else {
        // A common symbol exists, so difflib finds a block: the LCS is at least 1.
        return (pre_potential_bound(lcs, pattern.len(), state_len), false);
    };
    let BoundScratch { rows, runs, next } = scratch;
    rows.clear();
    rows.extend(pattern.iter().map(|&symbol| masks.one_word_mask(symbol.into())));
    if rows.iter().fold(0, |acc, &r| acc | r) == 0 {
        return (0.0, true);
    }
    // Whole passes over the pattern, one per run length, without a branch per position.
    runs.clone_from(rows);
    next.clear();
    next.resize(rows.len(), 0);
    let mut longest = 1;
    loop {
        let mut any = 0;
        // No run longer than one ends at the pattern's first position.
        next[0] = 0;
        for (n, w) in next[1..].iter_mut().zip(runs.windows(2)) {
            *n = w[1] & (w[0] << 1);
            any |= *n;
        }
        if any == 0 {
            break;
        }
        std::mem::swap(runs, next);
        longest += 1;
    }
    // The first run of that length, by its end in the pattern, then in the state.
    let end_i = runs.iter().position(|&r| r != 0).expect("a run of that length exists");
    let end_j = runs[end_i].trailing_zeros() as usize;
    let (i0, j0) = (end_i + 1 - longest, end_j + 1 - longest);
    let before = below(j0);
    let after = !below(j0 + longest);
    // The last pattern position left of the block with a symbol in the state left of it, the
    // first right of it with one right of it.
    let left = rows[..i0].iter().rposition(|&r| r & before != 0);
    let right = rows[i0 + longest..].iter().position(|&r| r & after != 0).map(|t| t + i0 + longest);
    if left.is_none() && right.is_none() {
        let shape = MatchShape {
            matches: longest,
            blocks: 1,
            extras: state_len - longest,
            past_len: i0,
            present_len: longest,
            first_match: Some(i0),
        };
        return (scores_of(pattern, event_lens, &shape).pre_potential, true);
    }
    // A side that shares a symbol has a block, which holds a position that shares one: the
    // present (first block to last) starts at or before `left` and ends after `right`.
    let sides = usize::from(left.is_some()) + usize::from(right.is_some());
    let present = (left.unwrap_or(i0), right.map_or(i0 + longest, |t| t + 1));
    let fragments = Fragments {
        len: pattern.len(),
        least_matches: longest + sides,
        most_matches: most_matches.min(lcs),
        least_blocks: 1 + sides,
        longest,
        least_extras: state_len.saturating_sub(lcs),
        least_present: events_around(event_lens, present.0, present.1),
    };
    (fragmented_bound(&fragments), false)
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
    slot: u32,
    matches: u32,
    /// [`pattern_bound`] (0.0 when not pruning).
    bound: f64,
    /// Whether `bound` is the exact pre-potential.
    exact: bool,
}

/// KATO's causal-belief predictions of `state` ranked as `predictPattern` prunes them: every
/// stored pattern with `rule` similarity `>= threshold` gets KATO's prediction parts and
/// `Prediction` scores; the best `keep` by pre-potential (descending, then name ascending, see
/// [`compare_ranked`]) are returned, with the number of all such patterns.
///
/// With `prune`, every passing pattern gets [`pattern_bound`] during the scan; the `keep` with the
/// highest bounds are scored first, and of the rest only those whose bound reaches the `keep`-th
/// best pre-potential found so far (a lower bound on the final one; a bound equal to it may still
/// win on name). The result is the same as without (the tests compare both).
pub fn ranked_predictions(
    matcher: &Matcher,
    state: &[u32],
    threshold: f64,
    keep: usize,
    rule: SimilarityRule,
    prune: bool,
) -> Result<Ranked> {
    ranked_predictions_among(matcher, state, threshold, keep, rule, prune, None)
}

/// [`ranked_predictions`] over only the patterns named in `among` (every live pattern when
/// None): KATO's candidates after a filter pipeline. Names not stored are ignored, and so are
/// empty patterns (KATO caches no pattern data for them, so it never scores them).
pub fn ranked_predictions_among(
    matcher: &Matcher,
    state: &[u32],
    threshold: f64,
    keep: usize,
    rule: SimilarityRule,
    prune: bool,
    among: Option<&CandidateNames>,
) -> Result<Ranked> {
    matcher.check_query(state.len(), threshold, rule)?;
    let among = among.map(|names| {
        let (store, _) = matcher.store_and_order();
        let slots = names.iter().filter_map(|n| matcher.slot_of(n)).filter(|&s| store.len_of(s) > 0);
        SlotMask::from_slots(store.slots(), slots)
    });
    let among = among.as_ref();
    let (store, order) = matcher.store_and_order();
    let plan = QueryPlan::with_rule(state.len(), threshold, store.lengths(), rule);
    let cutoff_positive = threshold > 0.0;
    let bounds = (prune && keep > 0).then(|| BoundQuery::new(state));
    let chunks = match matcher.metric().prepare(state) {
        PreparedQuery::Lcs(q) => scan(&q, store, &plan, bounds.as_ref(), true, cutoff_positive, among),
        PreparedQuery::Difflib(q) => scan(&q, store, &plan, bounds.as_ref(), false, cutoff_positive, among),
    };
    let total = chunks.iter().map(Vec::len).sum();
    let query = DifflibQuery::new(state, false);
    let score = |members: &[Pending]| -> Vec<RankedRecord> {
        members
            .par_iter()
            .with_min_len(16)
            .map_init(
                || query.new_scratch(),
                |scratch, p| {
                    let pattern = store.tokens(p.slot);
                    let parts = parts_with(&query, scratch, &pattern, cutoff_positive)?;
                    let scores = kato_scores(&pattern, store.event_lens(p.slot), &parts);
                    debug_assert!(bounds.is_none() || scores.pre_potential <= p.bound);
                    debug_assert!(!p.exact || scores.pre_potential.to_bits() == p.bound.to_bits());
                    let similarity = rule.similarity(p.matches as usize, pattern.len() + state.len());
                    Some(RankedRecord { slot: p.slot, similarity, parts, scores })
                },
            )
            .flatten()
            .collect()
    };
    if keep == 0 {
        return Ok(Ranked { total, records: Vec::new() });
    }
    if bounds.is_none() || total <= keep {
        let mut records = score(&chunks.concat());
        keep_best(&mut records, keep, store, order);
        return Ok(Ranked { total, records });
    }
    // The keep-th best exact pre-potential is at most the final keep-th best: a pattern whose
    // bound is below it cannot be kept (one equal to it may still win on name).
    let mut exact: Vec<f64> =
        chunks.par_iter().flat_map_iter(|c| c.iter().filter(|p| p.exact).map(|p| p.bound)).collect();
    let floor = if exact.len() >= keep {
        *exact.select_nth_unstable_by(keep - 1, |a, b| b.total_cmp(a)).1
    } else {
        f64::NEG_INFINITY
    };
    let (exact, inexact): (Vec<Pending>, Vec<Pending>) = chunks
        .par_iter()
        .flat_map_iter(|c| c.iter().filter(|p| p.bound >= floor).copied())
        .collect::<Vec<Pending>>()
        .into_iter()
        .partition(|p| p.exact);
    // The inexact ones get their parts, then rank with the exact ones by pre-potential; the exact
    // ones that stay get their parts last.
    let mut ranked: Vec<(f64, u32, Option<RankedRecord>)> =
        score(&inexact).into_iter().map(|r| (r.scores.pre_potential, r.slot, Some(r))).collect();
    ranked.extend(exact.iter().map(|p| (p.bound, p.slot, None)));
    let by_rank = |a: &(f64, u32, Option<RankedRecord>), b: &(f64, u32, Option<RankedRecord>)| {
        compare_ranked((a.0, a.1), (b.0, b.1), store, order)
    };
    if ranked.len() > keep {
        ranked.select_nth_unstable_by(keep, by_rank);
        ranked.truncate(keep);
    }
    let staying: std::collections::HashSet<u32> = ranked.iter().filter(|r| r.2.is_none()).map(|r| r.1).collect();
    let staying: Vec<Pending> = exact.into_iter().filter(|p| staying.contains(&p.slot)).collect();
    let mut records = score(&staying);
    records.extend(ranked.into_iter().filter_map(|r| r.2));
    keep_best(&mut records, keep, store, order);
    Ok(Ranked { total, records })
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

/// Every live pattern passing `plan`, chunk by chunk in slot order, with its [`pattern_bound`]
/// when `bounds` is given. `lcs_metric`: the scorer counts the LCS itself; otherwise (difflib) it
/// counts difflib's matches, and the pattern's length bounds the LCS. With a positive cutoff, a
/// pattern without any match gets no prediction from KATO and is left out (it can pass only when
/// both sequences are empty).
fn scan<S: Scorer>(
    query: &S,
    store: &PatternStore,
    plan: &QueryPlan,
    bounds: Option<&BoundQuery>,
    lcs_metric: bool,
    cutoff_positive: bool,
    among: Option<&SlotMask>,
) -> Vec<Vec<Pending>> {
    let slots = store.slots();
    let state_len = query.state_len();
    spread_over_cores(
        0..slots.div_ceil(CHUNK),
        || (query.new_scratch(), Vec::with_capacity(CHUNK), Vec::new(), vec![0u32; CHUNK], BoundScratch::default()),
        |(scratch, needed, kept, counts, bound_scratch), chunk| {
            let first = (chunk * CHUNK) as u32;
            let end = ((chunk + 1) * CHUNK).min(slots);
            let run = store.run(first, end - first as usize);
            needed.clear();
            needed.extend((0..run.len()).map(|k| {
                let slot = first + k as u32;
                if store.is_live(slot) && among.is_none_or(|m| m.contains(slot)) {
                    plan.row(run.pattern_len(k)).min_matches
                } else {
                    LengthRow::NONE
                }
            }));
            crate::metrics::kept_indices(needed, kept);
            query.score_run(run, kept, needed, counts, scratch);
            let mut found = Vec::new();
            for &k in kept.iter() {
                let (k, need, count) = (k as usize, needed[k as usize], counts[k as usize]);
                if count < need {
                    continue;
                }
                let len = run.pattern_len(k);
                let lcs = if lcs_metric { count as usize } else { len.min(state_len) };
                if cutoff_positive && lcs == 0 {
                    continue;
                }
                let slot = first + k as u32;
                let (bound, exact) = match bounds {
                    None => (0.0, false),
                    Some(b) => {
                        let events = store.event_lens(slot);
                        let m = count as usize;
                        match run {
                            AnyRun::Narrow(r) => pattern_bound(b, bound_scratch, r.pattern(k), events, m, lcs),
                            AnyRun::Wide(r) => pattern_bound(b, bound_scratch, r.pattern(k), events, m, lcs),
                        }
                    }
                };
                found.push(Pending { slot, matches: count, bound, exact });
            }
            found
        },
    )
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
            check_bound(&pattern, m.event_lens(slot), state, count, lcs, m.metric());
            all.push((m.name(slot).to_string(), scores.pre_potential));
        }
        all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        all.truncate(keep);
        all.into_iter().map(|(n, p)| (n, p.to_bits())).collect()
    }

    /// [`pattern_bound`] holds for the pattern's actual scores, and is them, bit for bit, where it
    /// says it is exact. `count`: the metric's M.
    fn check_bound(pattern: &[u32], event_lens: &[u32], state: &[u32], count: usize, lcs: usize, metric: Metric) {
        let query = BoundQuery::new(state);
        let (most_matches, lcs_bound) = match metric {
            Metric::Lcs => (lcs, lcs),
            Metric::Difflib { .. } => (count, pattern.len().min(state.len())),
        };
        let (bound, exact) =
            pattern_bound(&query, &mut BoundScratch::default(), pattern, event_lens, most_matches, lcs_bound);
        let parts = prediction_parts(pattern, state, false).unwrap();
        let pre = kato_scores(pattern, event_lens, &parts).pre_potential;
        assert!(pre <= bound, "pre {pre} > bound {bound}: p {pattern:?} {event_lens:?} s {state:?}");
        if exact {
            assert_eq!(pre.to_bits(), bound.to_bits(), "p {pattern:?} {event_lens:?} s {state:?}");
        }
        if !exact && query.masks.is_some() {
            assert!(parts.blocks.len() > 1, "p {pattern:?} s {state:?}");
        }
    }

    /// Events of random sizes (empty ones included) covering `len` symbols.
    fn random_events(rng: &mut Rng, len: usize) -> Vec<u32> {
        let mut lens = Vec::new();
        let mut left = len;
        while left > 0 || rng.below(4) == 0 {
            let l = rng.below(left.min(9) + 1);
            lens.push(l as u32);
            left -= l;
        }
        lens
    }

    /// A pattern meant to stress the bound: pieces of the state (long common runs, repeated
    /// symbols), shuffled, with symbols of a small alphabet between them.
    fn adversarial_pattern(rng: &mut Rng, state: &[u32], alphabet: usize) -> Vec<u32> {
        let mut pattern = Vec::new();
        for _ in 0..rng.below(5) {
            match rng.below(4) {
                0 if !state.is_empty() => {
                    let a = rng.below(state.len());
                    let b = a + rng.below(state.len() - a) + 1;
                    pattern.extend_from_slice(&state[a..b]);
                }
                1 => {
                    let symbol = rng.below(alphabet) as u32;
                    pattern.extend(std::iter::repeat_n(symbol, 1 + rng.below(6)));
                }
                _ => pattern.extend(rng.sequence(8, alphabet)),
            }
        }
        pattern
    }

    /// A state: short over a tiny alphabet, around one word (63-65 symbols), or longer.
    fn adversarial_state(rng: &mut Rng, alphabet: usize) -> Vec<u32> {
        let len = match rng.below(5) {
            0 => rng.below(4),
            1 => 5 + rng.below(20),
            2 => 63 + rng.below(3),
            3 => 64,
            _ => 66 + rng.below(80),
        };
        let mut state: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
        if rng.below(3) == 0 && len > 4 {
            // A repeated run, so the longest common run has ties and repeats itself.
            let a = rng.below(len - 3);
            let run = state[a..a + 3].to_vec();
            for (k, s) in state.iter_mut().enumerate().skip(a + 3) {
                *s = run[k % 3];
            }
        }
        state
    }

    #[test]
    fn bound_holds_on_adversarial_patterns() {
        let mut rng = Rng::new(97);
        let mut exact = 0;
        for case in 0..20_000 {
            let alphabet = [2, 3, 5, 12, 40][case % 5];
            let state = adversarial_state(&mut rng, alphabet);
            let pattern = adversarial_pattern(&mut rng, &state, alphabet);
            let event_lens = random_events(&mut rng, pattern.len());
            let lcs = crate::testing::naive_lcs(&pattern, &state);
            let difflib = crate::testing::naive_difflib(&pattern, &state, false);
            for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }] {
                check_bound(&pattern, &event_lens, &state, difflib, lcs, metric);
            }
            let query = BoundQuery::new(&state);
            exact += pattern_bound(&query, &mut BoundScratch::default(), &pattern, &event_lens, lcs, lcs).1 as usize;
        }
        assert!(exact > 2000, "{exact}");
    }

    /// Ranking with adversarial patterns and states (see [`bound_holds_on_adversarial_patterns`]):
    /// pruned, unpruned and brute force agree.
    #[test]
    fn pruned_equals_unpruned_on_adversarial_patterns() {
        let mut rng = Rng::new(5);
        for round in 0..6 {
            let alphabet = [3, 6, 20][round % 3];
            let states: Vec<Vec<u32>> = (0..8).map(|_| adversarial_state(&mut rng, alphabet)).collect();
            let mut m = Matcher::new(Metric::Lcs);
            for k in 0..1500 {
                let pattern = adversarial_pattern(&mut rng, &states[k % states.len()], alphabet);
                let lens = random_events(&mut rng, pattern.len());
                m.insert_events(&format!("p{:04}", (k * 7919) % 10_007), &pattern, &lens).unwrap();
            }
            for state in &states {
                for threshold in [0.0, 0.1, 0.4] {
                    for keep in [1, 7, 60, 2000] {
                        let rule = SimilarityRule::KatoRounded;
                        let pruned = ranked_predictions(&m, state, threshold, keep, rule, true).unwrap();
                        let full = ranked_predictions(&m, state, threshold, keep, rule, false).unwrap();
                        assert_eq!(pruned, full, "round {round} t {threshold} keep {keep} s {state:?}");
                        let got: Vec<(String, u64)> = pruned
                            .records
                            .iter()
                            .map(|r| (m.name(r.slot).to_string(), r.scores.pre_potential.to_bits()))
                            .collect();
                        assert_eq!(got, brute_force(&m, state, threshold, keep, rule));
                    }
                }
            }
        }
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
