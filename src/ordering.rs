//! The one definition of result order: similarity descending, then pattern name ascending
//! (Python's `str` order, which is UTF-8 byte order). Every tier's results are sorted here.
//!
//! Comparing names in the arena for every comparison would dominate large results, so each slot
//! carries an order key: `2 * (rank + 1)` for names ranked at the last [`NameOrder::rebuild`]
//! (rank = position in name order), `2 * p + 1` for names added since, where `p` counts the
//! ranked names below them (so the key falls between its two ranked neighbours). Key order never contradicts name order; only two names added since the last
//! rebuild can share a key, and those are compared by name.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::metrics::{passes, SimilarityRule};
use crate::store::PatternStore;

/// A pattern that passed the threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub similarity: f64,
    pub slot: u32,
}

/// A query's result in result order, as two parallel arrays (handed to NumPy without copying).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matches {
    pub similarities: Vec<f64>,
    pub slots: Vec<u32>,
}

impl Matches {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Hit> + '_ {
        self.similarities.iter().zip(&self.slots).map(|(&similarity, &slot)| Hit { similarity, slot })
    }
}

impl From<Vec<Hit>> for Matches {
    fn from(hits: Vec<Hit>) -> Matches {
        Matches {
            similarities: hits.iter().map(|h| h.similarity).collect(),
            slots: hits.iter().map(|h| h.slot).collect(),
        }
    }
}

/// Entry of a per-rank working array for a rank that is not in the result.
const NO_CLASS: u32 = u32::MAX;

/// Work on fewer items than this runs on the calling thread. Handing it to the rayon pool costs
/// a thread wake-up, and from a thread outside the pool (a Python thread) a second one to resume
/// the caller: on a busy machine either can come milliseconds late, far more than the work.
pub const SERIAL_BELOW: usize = 1 << 15;

/// Per-slot order keys (see the module documentation).
#[derive(Default)]
pub struct NameOrder {
    keys: Vec<u64>,
    /// Slots ranked at the last rebuild, in name order. Removed slots may remain until the next
    /// rebuild; their names are still in the store, so searching past them stays correct.
    ranked: Vec<u32>,
    /// Keys given since the last rebuild (odd keys, which can tie and then need a name compare).
    unranked: usize,
    /// Per-rank working arrays of [`QueryPlan::finish`], all entries [`NO_CLASS`], kept between
    /// queries so that large results do not pay for fresh memory each time.
    sweep_buffers: Mutex<Vec<Vec<AtomicU32>>>,
}

impl NameOrder {
    #[inline]
    pub fn key(&self, slot: u32) -> u64 {
        self.keys[slot as usize]
    }

    /// Slots ranked at the last rebuild, in name order (may include removed slots).
    pub fn ranked(&self) -> &[u32] {
        &self.ranked
    }

    /// Gives the next slot (just pushed to `store`) its key.
    pub fn push(&mut self, store: &PatternStore, name: &str) {
        let below = self.ranked.partition_point(|&s| store.name(s) < name);
        self.keys.push(2 * below as u64 + 1);
        self.unranked += 1;
    }

    /// Whether enough names were added since the last rebuild that ties among them could slow
    /// sorting: rebuilding then costs O(n) once per n/8 additions, amortised O(1) per pattern.
    pub fn needs_rebuild(&self) -> bool {
        self.unranked > 1024.max(self.ranked.len() / 8)
    }

    pub fn reserve(&mut self, additional: usize) {
        self.keys.reserve(additional);
    }

    /// Ranks every live slot of `store`; keys become `2 * (rank + 1)`.
    pub fn rebuild(&mut self, store: &PatternStore) {
        *self = self.rebuilt(store, store.slots());
    }

    /// The order [`NameOrder::rebuild`] would give slots `..upto`, computed without changing
    /// `self`, so it can be prepared while queries run and swapped in at once.
    pub fn rebuilt(&self, store: &PatternStore, upto: usize) -> NameOrder {
        let by_name = |a: &u32, b: &u32| store.name(*a).cmp(store.name(*b));
        let mut fresh: Vec<u32> = (0..upto as u32)
            .filter(|&s| store.is_live(s) && self.keys.get(s as usize).is_none_or(|k| k % 2 == 1))
            .collect();
        // Bulk loads often arrive in name order already.
        if !fresh.is_sorted_by(|a, b| by_name(a, b) != Ordering::Greater) {
            fresh.par_sort_unstable_by(by_name);
        }
        let old: Vec<u32> = self.ranked.iter().copied().filter(|&s| (s as usize) < upto && store.is_live(s)).collect();
        let mut merged = Vec::with_capacity(old.len() + fresh.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < fresh.len() {
            let take_old = j == fresh.len() || (i < old.len() && by_name(&old[i], &fresh[j]) == Ordering::Less);
            if take_old {
                merged.push(old[i]);
                i += 1;
            } else {
                merged.push(fresh[j]);
                j += 1;
            }
        }
        let mut keys = vec![u64::MAX; upto];
        for (rank, &slot) in merged.iter().enumerate() {
            keys[slot as usize] = 2 * (rank as u64 + 1);
        }
        NameOrder { keys, ranked: merged, unranked: 0, sweep_buffers: Mutex::default() }
    }

    /// The order of a store whose `slots` are all live and ranked by name in `ranked` (as a
    /// snapshot holds it); `None` unless `ranked` holds every slot once. That the ranking is
    /// the names' order is the snapshot writer's guarantee, kept by the file's checksums: a
    /// check would compare 10M pairs of names at random places (about 1 s). A wrong order
    /// could only misorder results, never make a read go out of bounds.
    pub fn from_ranked(store: &PatternStore, ranked: Vec<u32>) -> Option<NameOrder> {
        let slots = store.slots();
        if ranked.len() != slots {
            return None;
        }
        let keys: Vec<AtomicU64> = (0..slots).into_par_iter().map(|_| AtomicU64::new(u64::MAX)).collect();
        let set = ranked
            .par_iter()
            .enumerate()
            .try_for_each(|(rank, &slot)| keys.get(slot as usize).map(|key| key.store(2 * (rank as u64 + 1), Relaxed)));
        // `slots` ranks each set one key: every key is set only if no slot came twice.
        if set.is_none() || keys.par_iter().any(|key| key.load(Relaxed) == u64::MAX) {
            return None;
        }
        let keys = keys.into_iter().map(AtomicU64::into_inner).collect();
        Some(NameOrder { keys, ranked, unranked: 0, sweep_buffers: Mutex::default() })
    }

    /// Follows a compaction of the store (`remap[old] = new slot`, `u32::MAX` when removed).
    pub fn remap(&mut self, remap: &[u32]) {
        let live = remap.iter().filter(|&&s| s != u32::MAX).count();
        let mut keys = vec![0; live];
        for (old, &new) in remap.iter().enumerate() {
            if new != u32::MAX {
                keys[new as usize] = self.keys[old];
            }
        }
        self.keys = keys;
        self.ranked = self.ranked.iter().map(|&s| remap[s as usize]).filter(|&s| s != u32::MAX).collect();
        self.sweep_buffers = Mutex::default();
    }

    pub fn memory_bytes(&self) -> usize {
        let buffers: usize = self.sweep_buffers.lock().map_or(0, |b| b.iter().map(|v| v.capacity() * 4).sum());
        self.keys.capacity() * 8 + self.ranked.capacity() * 4 + buffers
    }

    /// A per-rank array with every entry [`NO_CLASS`].
    fn take_sweep_buffer(&self) -> Vec<AtomicU32> {
        let reused = self.sweep_buffers.lock().ok().and_then(|mut pool| pool.pop());
        reused.unwrap_or_else(|| (0..self.ranked.len()).map(|_| AtomicU32::new(NO_CLASS)).collect())
    }

    /// Returns a buffer of [`NameOrder::take_sweep_buffer`] whose entries are all back to
    /// [`NO_CLASS`].
    fn return_sweep_buffer(&self, buffer: Vec<AtomicU32>) {
        if let Ok(mut pool) = self.sweep_buffers.lock() {
            if buffer.len() == self.ranked.len() && pool.len() < 4 {
                pool.push(buffer);
            }
        }
    }
}

/// Name order of two slots: by key, then (for two names added since the last re-ranking) by name.
#[inline]
fn compare_names(a: (u64, u32), b: (u64, u32), store: &PatternStore) -> Ordering {
    // Bytes: UTF-8 orders as its code points, as `str` does, without re-checking the encoding.
    a.0.cmp(&b.0)
        .then_with(|| if a.1 == b.1 { Ordering::Equal } else { store.name_bytes(a.1).cmp(store.name_bytes(b.1)) })
}

/// Result order.
#[inline]
pub fn compare(a: &Hit, b: &Hit, store: &PatternStore, order: &NameOrder) -> Ordering {
    b.similarity
        .total_cmp(&a.similarity)
        .then_with(|| compare_names((order.key(a.slot), a.slot), (order.key(b.slot), b.slot), store))
}

/// KATO's ranking of prediction records (the pre-potential of `predictPattern`'s pruning, the
/// potential of the single-symbol path): `(score, slot)` by score descending, then name
/// ascending. Scores are compared as Python compares floats (-0.0 equals 0.0; they are never NaN).
#[inline]
pub fn compare_ranked(a: (f64, u32), b: (f64, u32), store: &PatternStore, order: &NameOrder) -> Ordering {
    let score = |x: f64| x + 0.0;
    score(b.0).total_cmp(&score(a.0)).then_with(|| compare_names((order.key(a.1), a.1), (order.key(b.1), b.1), store))
}

/// Sorts `hits` into result order and keeps the first `limit` (all when `None`).
pub fn sort_and_truncate(hits: &mut Vec<Hit>, limit: Option<usize>, store: &PatternStore, order: &NameOrder) {
    let by_result_order = |a: &Hit, b: &Hit| compare(a, b, store, order);
    if let Some(k) = limit {
        if k == 0 {
            hits.clear();
            return;
        }
        if hits.len() > k {
            hits.select_nth_unstable_by(k - 1, by_result_order);
            hits.truncate(k);
        }
    }
    if hits.len() >= SERIAL_BELOW {
        hits.par_sort_unstable_by(by_result_order);
    } else {
        hits.sort_unstable_by(by_result_order);
    }
}

/// Result order of two results from different matchers (the shards of one distributed matcher):
/// similarity descending, then name ascending in UTF-8 byte order (Python's `str` order). The
/// same rule as [`compare`], for names that live in different stores.
#[inline]
pub fn compare_named(a: (f64, &str), b: (f64, &str)) -> Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()))
}

/// A part of [`merge_ranked`] that is not in result order: `(part, position)` of the first
/// entry out of order (or of the part itself, position `usize::MAX`, when its two arrays differ
/// in length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotRanked {
    pub part: usize,
    pub position: usize,
}

/// K-way merge of results that are each already in result order (one per shard): the first
/// `limit` (all when `None`) `(part, position)` pairs of their union in result order. Each part
/// holds `(similarities, names)` of equal length. The per-shard results may be truncated to
/// `limit` themselves: the first `limit` of the union are among the first `limit` of each part.
pub fn merge_ranked<S: AsRef<str>>(
    parts: &[(&[f64], &[S])],
    limit: Option<usize>,
) -> std::result::Result<Vec<(u32, u32)>, NotRanked> {
    use std::collections::BinaryHeap;

    for (part, (sims, names)) in parts.iter().enumerate() {
        if sims.len() != names.len() {
            return Err(NotRanked { part, position: usize::MAX });
        }
        if let Some(position) = (1..sims.len())
            .find(|&k| compare_named((sims[k - 1], names[k - 1].as_ref()), (sims[k], names[k].as_ref())).is_gt())
        {
            return Err(NotRanked { part, position });
        }
    }
    let total: usize = parts.iter().map(|p| p.0.len()).sum();
    let wanted = limit.map_or(total, |k| k.min(total));
    // The heap's greatest entry is the next in result order, hence the reversed comparison.
    struct Head<'a> {
        similarity: f64,
        name: &'a str,
        part: u32,
        position: u32,
    }
    impl Ord for Head<'_> {
        fn cmp(&self, other: &Self) -> Ordering {
            compare_named((other.similarity, other.name), (self.similarity, self.name))
                .then_with(|| other.part.cmp(&self.part))
        }
    }
    impl PartialOrd for Head<'_> {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl PartialEq for Head<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other).is_eq()
        }
    }
    impl Eq for Head<'_> {}
    let head = |part: usize, position: usize| Head {
        similarity: parts[part].0[position],
        name: parts[part].1[position].as_ref(),
        part: part as u32,
        position: position as u32,
    };
    let mut heap: BinaryHeap<Head<'_>> =
        (0..parts.len()).filter(|&p| !parts[p].0.is_empty()).map(|p| head(p, 0)).collect();
    let mut merged = Vec::with_capacity(wanted);
    while merged.len() < wanted {
        let Some(next) = heap.pop() else { break };
        merged.push((next.part, next.position));
        let following = next.position as usize + 1;
        if following < parts[next.part as usize].0.len() {
            heap.push(head(next.part as usize, following));
        }
    }
    Ok(merged)
}

/// A pattern that counted enough matches, as a scan reports it: `value` is a class of
/// [`QueryPlan`] (or the match count M when the plan has no classes), `slot` the pattern's slot.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub value: u32,
    pub slot: u32,
}

/// What one query needs to know per pattern length `P`: the least match count that passes the
/// threshold, and where each passing `(M, P)` falls in result order.
#[derive(Clone, Copy, Debug)]
pub struct LengthRow {
    /// The least M with `passes(ratio(M, P + S), threshold)`; [`LengthRow::NONE`] when no M up to
    /// `min(P, S)` passes, so patterns of this length need not be scored at all.
    pub min_matches: u32,
    /// Index of `(min_matches, P)` in the plan's class table.
    first_entry: u32,
}

impl LengthRow {
    pub const NONE: u32 = crate::metrics::SKIP;
    const SKIP: LengthRow = LengthRow { min_matches: LengthRow::NONE, first_entry: 0 };
}

/// Lengths below this are looked up in a dense table; longer ones by binary search.
const DENSE_LENGTHS: usize = 1 << 16;

/// Above this many passing `(M, P)` pairs a plan keeps no class table; hits are then ordered by
/// comparing similarities (same order, slower).
const MAX_CLASS_ENTRIES: usize = 1 << 18;

/// The threshold and result order of one query, resolved per `(M, P)` before scanning.
///
/// For a state of `S` symbols the similarity of a pattern depends only on its match count M and
/// length P: `rule.similarity(M, P + S)`. The plan evaluates that formula once per passing pair of the
/// lengths stored and numbers the distinct similarities in result order ("classes", descending).
/// A scan then tests `M >= min_matches` (an integer compare) and reports a class per hit; results
/// are ordered by a counting pass over classes and a sort by name key within each class.
pub struct QueryPlan {
    state_len: usize,
    dense: Vec<LengthRow>,
    /// Rows of lengths `>= DENSE_LENGTHS`, ascending by length.
    long: Vec<(usize, LengthRow)>,
    /// `entry_class[first_entry + M - min_matches]`; empty without a class table.
    entry_class: Vec<u32>,
    /// The similarity of each class; classes are in result order. Under a rule that maps
    /// different `2M/T` to one value, those pairs share a class, so their patterns are ordered
    /// by name among themselves.
    class_similarity: Vec<f64>,
    rule: SimilarityRule,
}

impl QueryPlan {
    /// The plan of one query: `lengths` are the distinct lengths of the patterns that may be
    /// scored, ascending; the threshold test, the classes and the similarities reported all use
    /// `rule.similarity`.
    pub fn with_rule(
        state_len: usize,
        threshold: f64,
        lengths: impl Iterator<Item = usize>,
        rule: SimilarityRule,
    ) -> QueryPlan {
        QueryPlan::with_class_limit(state_len, threshold, lengths, rule, MAX_CLASS_ENTRIES)
    }

    fn with_class_limit(
        state_len: usize,
        threshold: f64,
        lengths: impl Iterator<Item = usize>,
        rule: SimilarityRule,
        max_class_entries: usize,
    ) -> QueryPlan {
        let mut plan = QueryPlan {
            state_len,
            dense: Vec::new(),
            long: Vec::new(),
            entry_class: Vec::new(),
            class_similarity: Vec::new(),
            rule,
        };
        let similarity = |m: usize, len: usize| rule.similarity(m, len + state_len);
        // (similarity, entry) of every passing (M, P).
        let mut entries: Vec<(f64, u32)> = Vec::new();
        let mut too_many = false;
        for len in lengths {
            let most = len.min(state_len);
            let passing = |m: usize| passes(similarity(m, len), threshold);
            // The similarity never decreases with M, so the passing counts are a suffix of 0..=most.
            let (mut least, mut above) = (0, most + 1);
            while least < above {
                let mid = (least + above) / 2;
                if passing(mid) {
                    above = mid;
                } else {
                    least = mid + 1;
                }
            }
            let row = if least > most {
                LengthRow::SKIP
            } else {
                let first_entry = entries.len() as u32;
                if !too_many {
                    entries.extend((least..=most).map(|m| (similarity(m, len), first_entry + (m - least) as u32)));
                    too_many = entries.len() > max_class_entries;
                }
                LengthRow { min_matches: least as u32, first_entry }
            };
            if len < DENSE_LENGTHS {
                if plan.dense.len() <= len {
                    plan.dense.resize(len + 1, LengthRow::SKIP);
                }
                plan.dense[len] = row;
            } else {
                plan.long.push((len, row));
            }
        }
        if !too_many {
            entries.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            plan.entry_class = vec![0; entries.len()];
            for &(similarity, entry) in &entries {
                if plan.class_similarity.last().is_none_or(|&last| last.to_bits() != similarity.to_bits()) {
                    plan.class_similarity.push(similarity);
                }
                plan.entry_class[entry as usize] = plan.class_similarity.len() as u32 - 1;
            }
        }
        plan
    }

    /// The row of patterns of `len` symbols (one that skips them when no such length was given).
    #[inline]
    pub fn row(&self, len: usize) -> LengthRow {
        match self.dense.get(len) {
            Some(&row) => row,
            None if len < DENSE_LENGTHS => LengthRow::SKIP,
            None => match self.long.binary_search_by_key(&len, |&(l, _)| l) {
                Ok(k) => self.long[k].1,
                Err(_) => LengthRow::SKIP,
            },
        }
    }

    /// Every length below this has its row in a dense table (the longest length stored, plus one,
    /// up to 2^16).
    pub fn dense_lengths(&self) -> usize {
        self.dense.len()
    }

    /// The candidate of a pattern of `row` with `matches >= row.min_matches`.
    #[inline]
    pub fn candidate(&self, row: LengthRow, matches: u32, slot: u32) -> Candidate {
        let value = if self.has_classes() {
            self.entry_class[(row.first_entry + matches - row.min_matches) as usize]
        } else {
            matches
        };
        Candidate { value, slot }
    }

    /// Whether the plan numbers its similarities (a class table); without one, candidates carry
    /// the match count M.
    pub fn has_classes(&self) -> bool {
        !self.class_similarity.is_empty()
    }

    /// The number of classes (0 without a class table).
    pub fn class_count(&self) -> usize {
        self.class_similarity.len()
    }

    /// The rows as the device kernels read them: for each length P up to `longest`, the least
    /// passing M ([`LengthRow::NONE`] when none passes) and the class-table index of that M.
    pub fn device_rows(&self, longest: usize) -> Vec<u32> {
        (0..=longest).map(|len| self.row(len)).flat_map(|row| [row.min_matches, row.first_entry]).collect()
    }

    /// The class of each passing `(M, P)`, at `first_entry + M - min_matches` of its length's row.
    pub fn entry_classes(&self) -> &[u32] {
        &self.entry_class
    }

    /// The least match count with which a pattern of `len` symbols (and its `row`) falls in
    /// class `worst` or a better one; [`LengthRow::NONE`] when none does, so it need not be
    /// scored. Without a class table, or with `worst` = `u32::MAX` (no bound), `row.min_matches`. A pattern's class never gets worse as
    /// its M grows, so the answer is a binary search over `min_matches..=min(len, S)`.
    pub fn min_matches_within(&self, row: LengthRow, len: usize, worst: u32) -> u32 {
        if row.min_matches == LengthRow::NONE || !self.has_classes() {
            return row.min_matches;
        }
        let class = |m: u32| self.entry_class[(row.first_entry + m - row.min_matches) as usize];
        let (mut least, mut most) = (row.min_matches, len.min(self.state_len) as u32);
        if class(most) > worst {
            return LengthRow::NONE;
        }
        while least < most {
            let mid = (least + most) / 2;
            if class(mid) <= worst {
                most = mid;
            } else {
                least = mid + 1;
            }
        }
        least
    }

    /// Puts the candidates of every scan chunk (and the device) into result order and keeps the
    /// first `limit`.
    pub fn finish(
        &self,
        parts: Vec<Vec<Candidate>>,
        limit: Option<usize>,
        store: &PatternStore,
        order: &NameOrder,
    ) -> Matches {
        if limit == Some(0) {
            return Matches::default();
        }
        if !self.has_classes() {
            let mut hits: Vec<Hit> = parts
                .into_iter()
                .flatten()
                .map(|c| Hit {
                    similarity: self.rule.similarity(c.value as usize, store.len_of(c.slot) + self.state_len),
                    slot: c.slot,
                })
                .collect();
            sort_and_truncate(&mut hits, limit, store, order);
            return hits.into();
        }
        let classes = self.class_similarity.len();
        let count_part = |mut counts: Vec<usize>, part: &Vec<Candidate>| {
            for c in part {
                counts[c.value as usize] += 1;
            }
            counts
        };
        let candidates: usize = parts.iter().map(Vec::len).sum();
        let counts = if candidates < SERIAL_BELOW {
            parts.iter().fold(vec![0usize; classes], count_part)
        } else {
            parts
                .par_iter()
                .fold(|| vec![0usize; classes], count_part)
                .reduce(|| vec![0usize; classes], |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect())
        };
        let last = last_class_needed(&counts, limit.unwrap_or(usize::MAX));
        let counts = &counts[..=last];
        let total: usize = counts.iter().sum();
        let keep = limit.map_or(total, |k| k.min(total));
        // The sweep walks the whole name order and fills whole classes; sorting fills only what
        // is returned, so the last class (often far larger than what is left of the limit: a
        // top-100 may end in a class of tens of thousands) keeps just its first names, found in
        // one linear selection. So the size of the result decides, not that of the classes.
        let sweep = keep >= order.ranked().len() / SWEEP_FRACTION;
        let mut filled = counts.to_vec();
        if !sweep {
            filled[last] -= total - keep;
        }
        let size = if sweep { total } else { keep };
        let mut slots = vec![0u32; size];
        let mut similarities = vec![0f64; size];
        {
            let (slot_groups, similarity_groups) =
                (split_groups(&mut slots, &filled), split_groups(&mut similarities, &filled));
            let fill = |(class, group): (usize, &mut [f64])| group.fill(self.class_similarity[class]);
            if size < SERIAL_BELOW {
                similarity_groups.into_iter().enumerate().for_each(fill);
            } else {
                similarity_groups.into_par_iter().enumerate().for_each(fill);
            }
            if sweep {
                fill_by_sweep(&parts, slot_groups, order, store);
            } else {
                fill_by_sort(&parts, slot_groups, order, store);
            }
        }
        slots.truncate(keep);
        similarities.truncate(keep);
        Matches { similarities, slots }
    }
}

/// The classes of the candidates a top-`limit` scan has found so far, shared by all its chunks.
/// Once `limit` patterns are known in classes up to `worst`, no pattern of a worse class can be
/// among the best `limit`: chunks scanned later need not score it (see
/// [`QueryPlan::min_matches_within`]), and whatever was found in a worse class is dropped. The
/// tally only ever grows, so a chunk reading it while others add is merely less strict.
pub struct ClassTally {
    counts: Vec<AtomicU32>,
    limit: usize,
    worst: AtomicU32,
}

impl ClassTally {
    /// Class bound of [`ClassTally::worst`] while fewer than `limit` candidates are known.
    pub const NONE: u32 = u32::MAX;

    /// The tally of a query keeping its best `limit`; `None` without a limit or a class table
    /// (nothing to bound then).
    pub fn new(plan: &QueryPlan, limit: Option<usize>) -> Option<ClassTally> {
        let limit = limit.filter(|&k| k > 0 && plan.has_classes())?;
        Some(ClassTally {
            counts: (0..plan.class_count()).map(|_| AtomicU32::new(0)).collect(),
            limit,
            worst: AtomicU32::new(Self::NONE),
        })
    }

    /// The worst class that can still be among the best `limit`, or [`ClassTally::NONE`].
    #[inline]
    pub fn worst(&self) -> u32 {
        self.worst.load(Relaxed)
    }

    /// Counts one chunk's candidates, tightens the bound, and drops those candidates that can
    /// no longer be among the best `limit`.
    pub fn add(&self, found: &mut Vec<Candidate>) {
        if found.is_empty() {
            return;
        }
        for c in found.iter() {
            self.counts[c.value as usize].fetch_add(1, Relaxed);
        }
        let last = (self.worst() as usize).min(self.counts.len() - 1);
        let mut seen = 0usize;
        for (class, count) in self.counts[..=last].iter().enumerate() {
            seen += count.load(Relaxed) as usize;
            if seen >= self.limit {
                self.worst.fetch_min(class as u32, Relaxed);
                break;
            }
        }
        let worst = self.worst();
        if worst != Self::NONE {
            found.retain(|c| c.value <= worst);
        }
    }
}

/// `items` cut into consecutive groups of `counts[k]` items.
fn split_groups<'a, T>(items: &'a mut [T], counts: &[usize]) -> Vec<&'a mut [T]> {
    let mut groups = Vec::with_capacity(counts.len());
    let mut rest = items;
    for &count in counts {
        let (group, tail) = rest.split_at_mut(count);
        groups.push(group);
        rest = tail;
    }
    groups
}

/// Fills each class's group with the slots of its candidates in name order by sorting each
/// group: for results small next to the store.
fn fill_by_sort(parts: &[Vec<Candidate>], groups: Vec<&mut [u32]>, order: &NameOrder, store: &PatternStore) {
    let mut keyed: Vec<Vec<(u64, u32)>> = groups.iter().map(|g| Vec::with_capacity(g.len())).collect();
    for c in parts.iter().flatten() {
        if let Some(group) = keyed.get_mut(c.value as usize) {
            group.push((order.key(c.slot), c.slot));
        }
    }
    let candidates: usize = keyed.iter().map(Vec::len).sum();
    let fill = |(group, mut keyed): (&mut [u32], Vec<(u64, u32)>)| {
        let by_name = |&a: &(u64, u32), &b: &(u64, u32)| compare_names(a, b, store);
        // A group smaller than its class takes the class's first names only.
        if keyed.len() > group.len() {
            keyed.select_nth_unstable_by(group.len(), by_name);
            keyed.truncate(group.len());
        }
        keyed.sort_unstable_by(by_name);
        for (out, (_, slot)) in group.iter_mut().zip(keyed) {
            *out = slot;
        }
    };
    if candidates < SERIAL_BELOW {
        groups.into_iter().zip(keyed).for_each(fill);
    } else {
        groups.into_par_iter().zip(keyed).with_min_len(8).for_each(fill);
    }
}

/// Fills each class's group with the slots of its candidates in name order by walking the whole
/// name order once: O(store + result) with no comparisons, for results that are a large part of
/// the store. Names added since the last re-ranking (odd keys) are sorted apart and merged in.
/// The walk is split into blocks of ranks, one per task, each filling its own part of every group.
fn fill_by_sweep(parts: &[Vec<Candidate>], groups: Vec<&mut [u32]>, order: &NameOrder, store: &PatternStore) {
    let classes = groups.len();
    let ranked = order.ranked();
    let class_at_rank = order.take_sweep_buffer();
    let mut unranked: Vec<(u64, u32, u32)> = parts
        .par_iter()
        .flat_map_iter(|part| {
            let class_at_rank = &class_at_rank;
            part.iter().filter(|c| (c.value as usize) < classes).filter_map(move |c| {
                let key = order.key(c.slot);
                if key.is_multiple_of(2) {
                    class_at_rank[(key / 2 - 1) as usize].store(c.value, Relaxed);
                    None
                } else {
                    Some((key, c.slot, c.value))
                }
            })
        })
        .collect();
    unranked.sort_unstable_by(|a, b| compare_names((a.0, a.1), (b.0, b.1), store));

    // Blocks of ranks; block b also takes the unranked names that sort among its ranks (key
    // 2p + 1 falls just before rank p, whose key is 2p + 2).
    let blocks = (rayon::current_num_threads() * 4).clamp(1, ranked.len().max(1));
    let block_len = ranked.len().div_ceil(blocks).max(1);
    let block_of_key = |key: u64| ((key / 2) as usize / block_len).min(blocks - 1);
    let unranked_ends: Vec<usize> = (0..blocks)
        .map(|b| if b + 1 == blocks { unranked.len() } else { unranked.partition_point(|u| block_of_key(u.0) <= b) })
        .collect();
    let block_ranks = |b: usize| (b * block_len).min(ranked.len())..((b + 1) * block_len).min(ranked.len());
    let block_unranked = |b: usize| &unranked[if b == 0 { 0 } else { unranked_ends[b - 1] }..unranked_ends[b]];

    let per_block: Vec<Vec<usize>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let mut n = vec![0usize; classes];
            for cell in &class_at_rank[block_ranks(b)] {
                let class = cell.load(Relaxed);
                if class != NO_CLASS {
                    n[class as usize] += 1;
                }
            }
            for u in block_unranked(b) {
                n[u.2 as usize] += 1;
            }
            n
        })
        .collect();
    // pieces[b][class]: the part of each group that block b fills.
    let mut pieces: Vec<Vec<&mut [u32]>> = (0..blocks).map(|_| Vec::with_capacity(classes)).collect();
    for (class, group) in groups.into_iter().enumerate() {
        let mut rest = group;
        for (b, block_counts) in per_block.iter().enumerate() {
            let (piece, tail) = rest.split_at_mut(block_counts[class]);
            pieces[b].push(piece);
            rest = tail;
        }
    }
    pieces.into_par_iter().enumerate().for_each(|(b, mut pieces)| {
        let mut filled = vec![0usize; classes];
        let mut put = |class: u32, slot: u32| {
            let at = &mut filled[class as usize];
            pieces[class as usize][*at] = slot;
            *at += 1;
        };
        let mut pending = block_unranked(b).iter().peekable();
        let ranks = block_ranks(b);
        for (rank, (cell, &slot)) in ranks.clone().zip(class_at_rank[ranks.clone()].iter().zip(&ranked[ranks])) {
            let key = 2 * (rank as u64 + 1);
            while let Some(&&(odd_key, odd_slot, odd_class)) = pending.peek() {
                if odd_key > key {
                    break;
                }
                put(odd_class, odd_slot);
                pending.next();
            }
            let class = cell.load(Relaxed);
            if class != NO_CLASS {
                put(class, slot);
                cell.store(NO_CLASS, Relaxed);
            }
        }
        for &(_, odd_slot, odd_class) in pending {
            put(odd_class, odd_slot);
        }
    });
    order.return_sweep_buffer(class_at_rank);
}

/// A result holding at least 1/SWEEP_FRACTION of the ranked names is put in order by one walk
/// over the name order instead of sorting.
const SWEEP_FRACTION: usize = 16;

/// The last class (by result order) needed to hold the best `limit` of `counts`.
fn last_class_needed(counts: &[usize], limit: usize) -> usize {
    let mut seen = 0;
    for (class, &count) in counts.iter().enumerate() {
        seen += count;
        if seen >= limit {
            return class;
        }
    }
    counts.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// Keys never contradict name order, before and after rebuilds, with removals in between.
    #[test]
    fn keys_agree_with_name_order() {
        let mut rng = Rng::new(9);
        let mut store = PatternStore::new();
        let mut order = NameOrder::default();
        let mut names = Vec::new();
        for round in 0..6 {
            for _ in 0..300 {
                let name = format!("P{}-{}", rng.below(5000), names.len());
                store.push(&name, &[]);
                order.push(&store, &name);
                names.push(name);
            }
            for _ in 0..40 {
                store.kill(rng.below(store.slots()) as u32);
            }
            if round % 2 == 1 {
                order.rebuild(&store);
            }
            let live: Vec<u32> = (0..store.slots() as u32).filter(|&s| store.is_live(s)).collect();
            for &a in &live {
                for &b in live.iter().step_by(7) {
                    let by_key = order.key(a).cmp(&order.key(b));
                    let by_name = names[a as usize].cmp(&names[b as usize]);
                    assert!(
                        by_key == Ordering::Equal || by_key == by_name,
                        "{} {}",
                        names[a as usize],
                        names[b as usize]
                    );
                    if round % 2 == 1 && a != b && by_name != Ordering::Equal {
                        assert_ne!(by_key, Ordering::Equal, "after a rebuild every key is distinct");
                    }
                }
            }
        }
    }

    /// Every path of [`QueryPlan::finish`] (class table or not; sorted groups or the sweep over
    /// the name order, with names added since the last re-ranking, some between the same ranked
    /// neighbours; limits) gives the order of a plain sort by (similarity desc, name asc).
    #[test]
    fn plans_order_results_like_a_plain_sort() {
        use crate::metrics::lcs;
        use crate::testing::naive_lcs;
        let mut rng = Rng::new(21);
        let mut store = PatternStore::new();
        let mut order = NameOrder::default();
        let add = |store: &mut PatternStore, order: &mut NameOrder, rng: &mut Rng, count: usize| {
            for _ in 0..count {
                // Few distinct prefixes: many new names fall between the same ranked neighbours.
                let name = format!("N{}-{}", rng.below(40), store.slots());
                let pattern = rng.sequence(30, 8);
                store.push(&name, &pattern);
                order.push(store, &name);
            }
        };
        add(&mut store, &mut order, &mut rng, 3000);
        order.rebuild(&store);
        add(&mut store, &mut order, &mut rng, 700);
        for slot in (0..store.slots() as u32).step_by(11) {
            store.kill(slot);
        }
        for query in 0..40 {
            let state = rng.sequence(if query % 10 == 0 { 80 } else { 20 }, 8);
            let threshold = [0.0, 0.1, 0.35, 0.6, 0.9][query % 5];
            // Odd queries under KATO's rounding, its formula spelled out.
            let rule = if query % 2 == 1 { SimilarityRule::KatoRounded } else { SimilarityRule::Exact };
            let formula = |l: usize, t: usize| match rule {
                _ if t == 0 => (rule == SimilarityRule::Exact) as u8 as f64,
                SimilarityRule::Exact => 2.0 * l as f64 / t as f64,
                SimilarityRule::KatoRounded => (2.0 * l as f64 / t as f64 * 100.0) / 100.0,
            };
            let mut expected: Vec<(f64, &str, u32)> = (0..store.slots() as u32)
                .filter(|&s| store.is_live(s))
                .map(|s| {
                    (formula(naive_lcs(&store.tokens(s), &state), store.len_of(s) + state.len()), store.name(s), s)
                })
                .filter(|&(similarity, _, _)| similarity >= threshold)
                .collect();
            expected.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
            for class_limit in [MAX_CLASS_ENTRIES, 0] {
                let plan = QueryPlan::with_class_limit(state.len(), threshold, store.lengths(), rule, class_limit);
                let candidates: Vec<Candidate> = (0..store.slots() as u32)
                    .filter(|&s| store.is_live(s))
                    .filter_map(|s| {
                        let row = plan.row(store.len_of(s));
                        let m = lcs::matches(&store.tokens(s), &state) as u32;
                        (row.min_matches != LengthRow::NONE && m >= row.min_matches).then(|| plan.candidate(row, m, s))
                    })
                    .collect();
                let parts: Vec<Vec<Candidate>> = candidates.chunks(97).map(<[Candidate]>::to_vec).collect();
                for limit in [None, Some(1), Some(25), Some(expected.len() + 3)] {
                    let got = plan.finish(parts.clone(), limit, &store, &order);
                    let want = &expected[..limit.map_or(expected.len(), |k| k.min(expected.len()))];
                    let got: Vec<(u64, u32)> = got.iter().map(|h| (h.similarity.to_bits(), h.slot)).collect();
                    let want: Vec<(u64, u32)> =
                        want.iter().map(|&(similarity, _, slot)| (similarity.to_bits(), slot)).collect();
                    let first_difference = got.iter().zip(&want).position(|(g, w)| g != w);
                    assert!(
                        got.len() == want.len() && first_difference.is_none(),
                        "query {query} {rule:?} threshold {threshold} class limit {class_limit} limit {limit:?}: {} results, {} expected, first difference at {first_difference:?}: {:?} vs {:?}",
                        got.len(),
                        want.len(),
                        first_difference.map(|k| got[k]),
                        first_difference.map(|k| (want[k], store.name(want[k].1), store.name(got[k].1), order.key(want[k].1), order.key(got[k].1))),
                    );
                }
            }
        }
    }

    #[test]
    fn sorts_by_similarity_then_name() {
        let mut store = PatternStore::new();
        let mut order = NameOrder::default();
        let names = ["b", "a", "c", "PTRN|1234567890abcdefX", "PTRN|1234567890abcdefA"];
        for n in names {
            store.push(n, &[]);
            order.push(&store, n);
        }
        let sims = [0.5, 0.5, 0.9, 0.1, 0.1];
        let hits = || -> Vec<Hit> { (0..5).map(|i| Hit { similarity: sims[i], slot: i as u32 }).collect() };
        for rebuilt in [false, true] {
            if rebuilt {
                order.rebuild(&store);
            }
            let mut h = hits();
            sort_and_truncate(&mut h, None, &store, &order);
            let got: Vec<&str> = h.iter().map(|h| names[h.slot as usize]).collect();
            assert_eq!(got, ["c", "a", "b", "PTRN|1234567890abcdefA", "PTRN|1234567890abcdefX"]);
            sort_and_truncate(&mut h, Some(2), &store, &order);
            assert_eq!(h.len(), 2);
        }
    }

    #[test]
    fn merges_ranked_parts_into_one_result_order() {
        let a: (&[f64], &[&str]) = (&[0.9, 0.5, 0.5, 0.1], &["x", "a", "c", "b"]);
        let b: (&[f64], &[&str]) = (&[0.9, 0.5, 0.2], &["w", "b", "z"]);
        let empty: (&[f64], &[&str]) = (&[], &[]);
        let parts = [a, empty, b];
        let all = merge_ranked(&parts, None).unwrap();
        let names: Vec<&str> = all.iter().map(|&(p, i)| parts[p as usize].1[i as usize]).collect();
        assert_eq!(names, ["w", "x", "a", "b", "c", "z", "b"]);
        assert_eq!(merge_ranked(&parts, Some(3)).unwrap(), all[..3].to_vec());
        assert_eq!(merge_ranked(&parts, Some(0)).unwrap(), vec![]);
        assert_eq!(merge_ranked(&parts, Some(100)).unwrap(), all);
        // Name order is byte order: "Z" < "a" < "é".
        let c: (&[f64], &[&str]) = (&[0.5, 0.5], &["Z", "é"]);
        let d: (&[f64], &[&str]) = (&[0.5], &["a"]);
        let got: Vec<(u32, u32)> = merge_ranked(&[c, d], None).unwrap();
        assert_eq!(got, vec![(0, 0), (1, 0), (0, 1)]);
    }

    #[test]
    fn refuses_parts_out_of_result_order() {
        let bad: (&[f64], &[&str]) = (&[0.5, 0.5], &["b", "a"]);
        let ok: (&[f64], &[&str]) = (&[0.5], &["a"]);
        assert_eq!(merge_ranked(&[ok, bad], None), Err(NotRanked { part: 1, position: 1 }));
        let rising: (&[f64], &[&str]) = (&[0.1, 0.2], &["a", "b"]);
        assert_eq!(merge_ranked(&[rising], None), Err(NotRanked { part: 0, position: 1 }));
        let uneven: (&[f64], &[&str]) = (&[0.1], &["a", "b"]);
        assert_eq!(merge_ranked(&[uneven], None), Err(NotRanked { part: 0, position: usize::MAX }));
    }
}
