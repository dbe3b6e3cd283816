//! Exact `difflib` metric: M = the total size of `difflib.SequenceMatcher(None, pattern, state,
//! autojunk=...)`'s matching blocks, with the pattern as `a` and the state as `b`.
//!
//! Ratcliff/Obershelp as CPython implements it: the longest common contiguous block (ties: the
//! smallest `i` in `a`, then the smallest `j` in `b`), then recursion on the left and right
//! remainders. With autojunk and `len(b) >= 200`, symbols occurring more than `len(b) / 100 + 1`
//! times in `b` are "popular": left out of the index, but a found block is still extended across
//! equal neighbours, popular ones included, exactly as `find_longest_match` does. There is no
//! `isjunk`, so nothing is junk. M does not depend on the order in which blocks are found.

use super::lcs::{LcsQuery, LcsScratch};
use super::{QuerySymbols, Scorer};
use crate::store::{PatternRun, Token};

/// difflib's `b2j` for a state: where each symbol of `b` occurs, popular symbols left out.
/// Shared by the CPU scorer and the GPU launch tables, so both index `b` the same way.
pub struct BIndex {
    pub symbols: QuerySymbols,
    /// `positions[starts[slot]..starts[slot + 1]]`: ascending indices of that slot's symbol in
    /// `b`; empty for popular symbols.
    pub starts: Vec<u32>,
    pub positions: Vec<u32>,
    /// Whether autojunk left some symbol of `b` out as popular.
    pub has_popular: bool,
    /// When every symbol of `b` has a dense id: the range of `positions` of every id below
    /// `symbols.dense_len()`, then one empty range that larger ids are clamped to.
    span_of: Vec<(u32, u32)>,
}

impl BIndex {
    pub fn new(b: &[u32], autojunk: bool) -> BIndex {
        let symbols = QuerySymbols::new(b);
        let distinct = symbols.distinct();
        let mut counts = vec![0u32; distinct];
        for &s in b {
            counts[symbols.slot(s) as usize] += 1;
        }
        let n = b.len();
        let mut has_popular = false;
        if autojunk && n >= 200 {
            let popular_above = (n / 100 + 1) as u32;
            for c in counts.iter_mut() {
                if *c > popular_above {
                    *c = 0;
                    has_popular = true;
                }
            }
        }
        let mut starts = Vec::with_capacity(distinct + 1);
        let mut total = 0u32;
        starts.push(0);
        for &c in &counts {
            total += c;
            starts.push(total);
        }
        let mut fill: Vec<u32> = starts[..distinct].to_vec();
        let mut positions = vec![0u32; total as usize];
        for (j, &s) in b.iter().enumerate() {
            let slot = symbols.slot(s) as usize;
            if counts[slot] != 0 {
                positions[fill[slot] as usize] = j as u32;
                fill[slot] += 1;
            }
        }
        let mut span_of = Vec::new();
        if !symbols.has_sparse() {
            span_of = (0..symbols.dense_len() as u32)
                .map(|id| match symbols.slot(id) {
                    QuerySymbols::NONE => (0, 0),
                    slot => (starts[slot as usize], starts[slot as usize + 1]),
                })
                .chain([(0, 0)])
                .collect();
        }
        BIndex { symbols, starts, positions, has_popular, span_of }
    }
}

/// A state (`b`) prepared for difflib matching against many patterns (`a`).
pub struct DifflibQuery {
    b: Vec<u32>,
    index: BIndex,
    /// The same state prepared for LCS, an upper bound on M (every matching block is a common
    /// subsequence). `None` when its per-symbol bit masks (distinct symbols × state words) would
    /// outgrow [`MAX_LCS_MASK_WORDS`]: such states take the literal algorithm.
    lcs: Option<LcsQuery>,
}

/// Bound on the LCS masks a difflib query builds for its bound: they take distinct symbols ×
/// `len(b) / 64` words, quadratic in a long state of many distinct symbols. KATO's states (at most
/// a few hundred symbols) stay far below it.
const MAX_LCS_MASK_WORDS: usize = 1 << 16;

/// The cells of one pattern are kept only while they number at most this many per symbol of `a`
/// and `b` together; beyond it (long sequences over few symbols, where they grow as n·m) the
/// literal algorithm, whose memory is O(len(b)), scores the pattern instead. A one-word state
/// has at most 64 cells per symbol of `a`, so it never reaches the cap.
const MAX_CELLS_PER_SYMBOL: usize = 64;

/// Working memory for one thread: the `j2len` rows of `find_longest_match` as dense arrays
/// (index `j + 1`) with the list of entries each row set, so a row is cleared in O(entries).
pub struct DifflibScratch {
    prev: Vec<u32>,
    cur: Vec<u32>,
    prev_set: Vec<u32>,
    cur_set: Vec<u32>,
    pending: Vec<(usize, usize, usize, usize)>,
    lcs: LcsScratch,
    lcs_bounds: Vec<u32>,
    cells: Cells,
}

/// Every pair `(i, j)` with `a[i] == b[j]` (popular symbols aside) and the length of the common
/// run ending there, ordered by `i` then `j`: what `find_longest_match` reads, computed once per
/// pattern instead of once per recursion step.
#[derive(Default)]
struct Cells {
    /// `(i, j, run)`.
    list: Vec<(u32, u32, u32)>,
    /// One-word states: the rows of the pattern that have cells, `(i, position mask)`.
    rows: Vec<(u32, u64)>,
    /// `stamp[j] == base + i + 1` iff row i has a cell at j, whose run is `run_at[j]`: rows are
    /// told apart by stamp, so nothing is cleared between rows or patterns.
    stamp: Vec<u32>,
    run_at: Vec<u32>,
    base: u32,
}

impl DifflibQuery {
    pub fn new(state: &[u32], autojunk: bool) -> DifflibQuery {
        let index = BIndex::new(state, autojunk);
        let mask_words = index.symbols.distinct().saturating_mul(state.len().div_ceil(64));
        let lcs = (mask_words <= MAX_LCS_MASK_WORDS).then(|| LcsQuery::new(state));
        DifflibQuery { b: state.to_vec(), index, lcs }
    }

    /// Fills `cells` for pattern `a`; returns the first block, the longest run (the first in
    /// `(i, j)` order among equals, as `find_longest_match` over everything picks it). `None`
    /// (cells left unusable) once the cells would pass [`MAX_CELLS_PER_SYMBOL`].
    fn build_cells<T: Token>(&self, a: &[T], cells: &mut Cells) -> Option<Block> {
        let max_cells = MAX_CELLS_PER_SYMBOL.saturating_mul(a.len() + self.b.len());
        if cells.stamp.len() != self.b.len() + 1 || cells.base as usize >= (u32::MAX as usize) - a.len() - 2 {
            cells.stamp = vec![0; self.b.len() + 1];
            cells.run_at = vec![0; self.b.len() + 1];
            cells.base = 0;
        }
        cells.list.clear();
        // The end cell of the longest run so far.
        let (mut longest, mut end_i, mut end_j) = (0, 0, 0);
        for (i, &symbol) in a.iter().enumerate() {
            let row_start = cells.list.len();
            let here = cells.base + i as u32 + 1;
            let positions = self.positions_of(symbol.into());
            if row_start + positions.len() > max_cells {
                // Leave the stamps of a later pattern distinct from this one's.
                cells.base += a.len() as u32 + 1;
                cells.list.clear();
                return None;
            }
            // Descending j, so that j - 1 still holds the previous row when j is computed.
            for &j in positions.iter().rev() {
                let j = j as usize;
                let run = if j > 0 && cells.stamp[j - 1] == here - 1 { cells.run_at[j - 1] + 1 } else { 1 };
                cells.stamp[j] = here;
                cells.run_at[j] = run;
                cells.list.push((i as u32, j as u32, run));
                // Rows come in ascending i, a row's cells in descending j: a longer run wins, an
                // equal one only from the same row (a smaller j).
                if run > longest || (run == longest && i == end_i && run > 0) {
                    (longest, end_i, end_j) = (run, i, j);
                }
            }
            if positions.len() > 1 {
                cells.list[row_start..].reverse();
            }
        }
        cells.base += a.len() as u32 + 1;
        let size = longest as usize;
        Some(Block { i: (end_i + 1).saturating_sub(size), j: (end_j + 1).saturating_sub(size), size })
    }

    /// [`DifflibQuery::build_cells`] for a state of at most 64 symbols: a row's cells are the bits
    /// of the symbol's position mask, and the runs that continue are `mask & (previous << 1)`.
    fn build_cells_one_word<T: Token>(&self, lcs: &LcsQuery, a: &[T], cells: &mut Cells) -> Block {
        // First the rows that have cells, as (i, mask), gathered without a branch per symbol:
        // whether a symbol is in the state is unpredictable, and most are not.
        let rows_found = &mut cells.rows;
        rows_found.clear();
        rows_found.resize(a.len() + 1, (0, 0));
        let mut found = 0;
        for (i, &symbol) in a.iter().enumerate() {
            let mask = lcs.one_word_mask(symbol.into());
            rows_found[found] = (i as u32, mask);
            found += usize::from(mask != 0);
        }
        cells.list.clear();
        // rows[row]: the runs of the current row, rows[1 - row] those of the row before it.
        let (mut previous_i, mut previous, mut runs, mut row) = (u32::MAX, 0u64, [[0u32; 64]; 2], 0usize);
        let (mut longest, mut end_i, mut end_j) = (0, 0, 0);
        for &(i, mask) in &cells.rows[..found] {
            let adjacent = if previous_i.wrapping_add(1) == i { previous } else { 0 };
            let continued = mask & (adjacent << 1);
            let mut bits = mask;
            while bits != 0 {
                let j = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let run = if continued >> j & 1 == 1 { runs[1 - row][j - 1] + 1 } else { 1 };
                runs[row][j] = run;
                cells.list.push((i, j as u32, run));
                // Ascending i, then j: the first strictly longer run is CPython's choice.
                if run > longest {
                    (longest, end_i, end_j) = (run, i as usize, j);
                }
            }
            row = 1 - row;
            (previous_i, previous) = (i, mask);
        }
        let size = longest as usize;
        Block { i: (end_i + 1).saturating_sub(size), j: (end_j + 1).saturating_sub(size), size }
    }

    /// M for a state without popular symbols, knowing `lcs` (>= M) and `longest` (<= M, the
    /// first block): the recursion of `get_matching_blocks` over the cells, stopped as soon as
    /// the blocks found reach `lcs` (nothing more can be found) or what remains cannot reach
    /// `needed` (then any value below `needed` is returned).
    fn matches_from_cells(
        &self,
        a_len: usize,
        first: Block,
        lcs: u32,
        needed: u32,
        scratch: &mut DifflibScratch,
    ) -> u32 {
        let DifflibScratch { pending, cells, .. } = scratch;
        pending.clear();
        let mut total = first.size as u32;
        // Upper bound on what the pending ranges can still add.
        let mut room = 0u32;
        if first.i > 0 && first.j > 0 {
            pending.push((0, first.i, 0, first.j));
            room += first.i.min(first.j) as u32;
        }
        if first.i + first.size < a_len && first.j + first.size < self.b.len() {
            pending.push((first.i + first.size, a_len, first.j + first.size, self.b.len()));
            room += (a_len - first.i - first.size).min(self.b.len() - first.j - first.size) as u32;
        }
        if total + room < needed {
            return total + room;
        }
        while let Some((alo, ahi, blo, bhi)) = pending.pop() {
            room -= (ahi - alo).min(bhi - blo) as u32;
            let (mut best_i, mut best_j, mut best) = (alo, blo, 0usize);
            for &(i, j, run) in &cells.list {
                let (i, j) = (i as usize, j as usize);
                if i < alo || i >= ahi || j < blo || j >= bhi {
                    continue;
                }
                let k = (run as usize).min(i + 1 - alo).min(j + 1 - blo);
                if k > best {
                    (best_i, best_j, best) = (i + 1 - k, j + 1 - k, k);
                }
            }
            if best == 0 {
                continue;
            }
            total += best as u32;
            if total >= lcs {
                return total;
            }
            if alo < best_i && blo < best_j {
                pending.push((alo, best_i, blo, best_j));
                room += (best_i - alo).min(best_j - blo) as u32;
            }
            if best_i + best < ahi && best_j + best < bhi {
                pending.push((best_i + best, ahi, best_j + best, bhi));
                room += (ahi - best_i - best).min(bhi - best_j - best) as u32;
            }
            if total + room < needed {
                return total + room;
            }
        }
        total
    }

    #[inline(always)]
    fn positions_of(&self, symbol: u32) -> &[u32] {
        let index = &self.index;
        if !index.span_of.is_empty() {
            let (start, end) = index.span_of[(symbol as usize).min(index.span_of.len() - 1)];
            return &index.positions[start as usize..end as usize];
        }
        let slot = index.symbols.slot(symbol);
        if slot == QuerySymbols::NONE {
            return &[];
        }
        let slot = slot as usize;
        &index.positions[index.starts[slot] as usize..index.starts[slot + 1] as usize]
    }

    /// CPython's `find_longest_match(alo, ahi, blo, bhi)`; returns `(i, j, size)`.
    fn find_longest_match<T: Token>(
        &self,
        a: &[T],
        (alo, ahi, blo, bhi): (usize, usize, usize, usize),
        scratch: &mut DifflibScratch,
    ) -> (usize, usize, usize) {
        let b = &self.b[..];
        let (mut best_i, mut best_j, mut best_size) = (alo, blo, 0usize);
        let DifflibScratch { prev, cur, prev_set, cur_set, .. } = scratch;
        for (i, &symbol) in (alo..ahi).zip(&a[alo..ahi]) {
            let positions = self.positions_of(symbol.into());
            let start = positions.partition_point(|&j| (j as usize) < blo);
            for &j in &positions[start..] {
                let j = j as usize;
                if j >= bhi {
                    break;
                }
                // prev[j] holds j2len[j - 1] of the previous row (0 when unset).
                let k = prev[j] + 1;
                cur[j + 1] = k;
                cur_set.push(j as u32 + 1);
                if k as usize > best_size {
                    best_i = i + 1 - k as usize;
                    best_j = j + 1 - k as usize;
                    best_size = k as usize;
                }
            }
            for &idx in prev_set.iter() {
                prev[idx as usize] = 0;
            }
            prev_set.clear();
            std::mem::swap(prev, cur);
            std::mem::swap(prev_set, cur_set);
        }
        for &idx in prev_set.iter() {
            prev[idx as usize] = 0;
        }
        prev_set.clear();

        // Nothing is junk, so only the "extend by non-junk elements" loops can move; they pick up
        // popular elements left out of the index.
        while best_i > alo && best_j > blo && a[best_i - 1].into() == b[best_j - 1] {
            best_i -= 1;
            best_j -= 1;
            best_size += 1;
        }
        while best_i + best_size < ahi
            && best_j + best_size < bhi
            && a[best_i + best_size].into() == b[best_j + best_size]
        {
            best_size += 1;
        }
        (best_i, best_j, best_size)
    }
}

impl Scorer for DifflibQuery {
    type Scratch = DifflibScratch;

    fn new_scratch(&self) -> DifflibScratch {
        let n = self.b.len() + 1;
        DifflibScratch {
            prev: vec![0; n],
            cur: vec![0; n],
            prev_set: Vec::new(),
            cur_set: Vec::new(),
            pending: Vec::new(),
            lcs: self.lcs.as_ref().map_or_else(LcsScratch::default, |lcs| lcs.new_scratch()),
            lcs_bounds: Vec::new(),
            cells: Cells::default(),
        }
    }

    fn state_len(&self) -> usize {
        self.b.len()
    }

    fn matches<T: Token>(&self, a: &[T], scratch: &mut DifflibScratch) -> usize {
        let mut total = 0;
        self.for_each_block(a, scratch, |_, _, k| total += k);
        total
    }

    /// The LCS bound first (cheap, interleaved over the run): a pattern whose LCS is below
    /// `needed` cannot pass; LCS <= 1 is M itself (any common symbol is a block). The others go
    /// through the recursion on precomputed cells. States with popular symbols (autojunk) take
    /// the literal algorithm, whose block extension across popular symbols the bounds ignore.
    fn matches_at_least<T: Token>(
        &self,
        run: PatternRun<'_, T>,
        kept: &[u32],
        needed: &[u32],
        out: &mut [u32],
        scratch: &mut DifflibScratch,
    ) {
        let lcs_query = match &self.lcs {
            Some(lcs) if !self.index.has_popular => lcs,
            _ => {
                for &k in kept {
                    out[k as usize] = self.matches(run.pattern(k as usize), scratch) as u32;
                }
                return;
            }
        };
        let mut bounds = std::mem::take(&mut scratch.lcs_bounds);
        bounds.clear();
        bounds.resize(run.len(), 0);
        lcs_query.matches_at_least(run, kept, needed, &mut bounds, &mut scratch.lcs);
        for &k in kept {
            let k = k as usize;
            let (need, lcs) = (needed[k], bounds[k]);
            out[k] = if lcs < need || lcs <= 1 {
                lcs
            } else {
                let a = run.pattern(k);
                let first = if lcs_query.is_one_word() {
                    Some(self.build_cells_one_word(lcs_query, a, &mut scratch.cells))
                } else {
                    self.build_cells(a, &mut scratch.cells)
                };
                match first {
                    None => self.matches(a, scratch) as u32,
                    Some(first) if first.size as u32 == lcs => lcs,
                    Some(first) => self.matches_from_cells(a.len(), first, lcs, need, scratch),
                }
            };
        }
        scratch.lcs_bounds = bounds;
    }
}

impl DifflibQuery {
    /// Calls `found(i, j, size)` for every matching block of `a` against the state, in the
    /// order CPython's `get_matching_blocks` finds them (not sorted).
    fn for_each_block<T: Token>(
        &self,
        a: &[T],
        scratch: &mut DifflibScratch,
        mut found: impl FnMut(usize, usize, usize),
    ) {
        let mut pending = std::mem::take(&mut scratch.pending);
        pending.clear();
        pending.push((0, a.len(), 0, self.b.len()));
        while let Some(range @ (alo, ahi, blo, bhi)) = pending.pop() {
            let (i, j, k) = self.find_longest_match(a, range, scratch);
            if k > 0 {
                found(i, j, k);
                if alo < i && blo < j {
                    pending.push((alo, i, blo, j));
                }
                if i + k < ahi && j + k < bhi {
                    pending.push((i + k, ahi, j + k, bhi));
                }
            }
        }
        scratch.pending = pending;
    }

    /// `get_matching_blocks()` without the terminator: sorted, adjacent blocks merged.
    pub fn matching_blocks(&self, a: &[u32], scratch: &mut DifflibScratch) -> Vec<Block> {
        let mut blocks = Vec::new();
        self.for_each_block(a, scratch, |i, j, size| blocks.push(Block { i, j, size }));
        blocks.sort_unstable_by_key(|b| (b.i, b.j));
        let mut merged: Vec<Block> = Vec::with_capacity(blocks.len());
        for block in blocks {
            match merged.last_mut() {
                Some(last) if last.i + last.size == block.i && last.j + last.size == block.j => last.size += block.size,
                _ => merged.push(block),
            }
        }
        merged
    }
}

/// A matching block: `a[i..i + size] == b[j..j + size]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub i: usize,
    pub j: usize,
    pub size: usize,
}

/// One of CPython's `get_opcodes()` tags with its ranges in `a` and `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Replace { a: (usize, usize), b: (usize, usize) },
    Delete { a: (usize, usize) },
    Insert { b: (usize, usize) },
    Equal { a: (usize, usize), b: (usize, usize) },
}

/// CPython's `get_opcodes()` from the matching blocks of sequences of lengths `la` and `lb`.
pub fn opcodes(blocks: &[Block], la: usize, lb: usize) -> Vec<Opcode> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(2 * blocks.len() + 1);
    for &Block { i: ai, j: bj, size } in blocks.iter().chain(std::iter::once(&Block { i: la, j: lb, size: 0 })) {
        if i < ai && j < bj {
            out.push(Opcode::Replace { a: (i, ai), b: (j, bj) });
        } else if i < ai {
            out.push(Opcode::Delete { a: (i, ai) });
        } else if j < bj {
            out.push(Opcode::Insert { b: (j, bj) });
        }
        (i, j) = (ai + size, bj + size);
        if size > 0 {
            out.push(Opcode::Equal { a: (ai, i), b: (bj, j) });
        }
    }
    out
}

/// Total matching-block size of one pair (`a` = pattern, `b` = state).
pub fn matches(pattern: &[u32], state: &[u32], autojunk: bool) -> usize {
    let query = DifflibQuery::new(state, autojunk);
    let mut scratch = query.new_scratch();
    query.matches(pattern, &mut scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ratio;
    use crate::testing::{naive_difflib, Rng};

    #[test]
    fn known_cases() {
        // difflib.SequenceMatcher(None, [0, 2, 1, 0], [2, 0]).ratio() == 1/3 (LCS would give 2/3).
        assert_eq!(matches(&[0, 2, 1, 0], &[2, 0], false), 1);
        assert_eq!(ratio(1, 6), 1.0 / 3.0);
        assert_eq!(matches(&[], &[], false), 0);
        assert_eq!(matches(&[1, 2, 3], &[1, 2, 3], false), 3);
        // "abxcd" vs "abcd": blocks "ab" and "cd".
        assert_eq!(matches(&[0, 1, 9, 2, 3], &[0, 1, 2, 3], false), 4);
    }

    #[test]
    fn ids_beyond_the_dense_table_agree_with_naive_port() {
        let mut rng = Rng::new(12);
        let big = |x: u32| if x.is_multiple_of(2) { x } else { u32::MAX - x };
        for _ in 0..1000 {
            let b: Vec<u32> = rng.sequence(250, 6).into_iter().map(big).collect();
            let a: Vec<u32> = rng.sequence(250, 6).into_iter().map(big).collect();
            for autojunk in [false, true] {
                assert_eq!(matches(&a, &b, autojunk), naive_difflib(&a, &b, autojunk));
            }
        }
    }

    #[test]
    fn agrees_with_naive_port() {
        let mut rng = Rng::new(11);
        for case in 0..3000 {
            let alphabet = 1 + rng.below(if case % 3 == 0 { 3 } else { 30 });
            let long = case % 5 == 0;
            let len_b = if long { 195 + rng.below(120) } else { rng.below(40) };
            let len_a = if long { rng.below(300) } else { rng.below(40) };
            let b: Vec<u32> = (0..len_b).map(|_| rng.below(alphabet) as u32).collect();
            let a: Vec<u32> = (0..len_a).map(|_| rng.below(alphabet) as u32).collect();
            for autojunk in [false, true] {
                assert_eq!(matches(&a, &b, autojunk), naive_difflib(&a, &b, autojunk), "a={a:?} b={b:?} aj={autojunk}");
            }
        }
    }

    /// Scores `patterns` against `state` through the run path, as the matcher does.
    fn score_all(patterns: &[Vec<u32>], state: &[u32], autojunk: bool) -> (Vec<u32>, DifflibScratch) {
        let mut store = crate::store::PatternStore::new();
        for (k, p) in patterns.iter().enumerate() {
            store.push(&format!("p{k}"), p);
        }
        let query = DifflibQuery::new(state, autojunk);
        let mut scratch = query.new_scratch();
        let needed = vec![0; store.slots()];
        let kept: Vec<u32> = (0..store.slots() as u32).collect();
        let mut out = vec![0; store.slots()];
        query.score_run(store.run(0, store.slots()), &kept, &needed, &mut out, &mut scratch);
        (out, scratch)
    }

    /// Regression: the cells of a long pattern against a long state over few symbols grow as
    /// n·m (60,000 symbols over 5 asked for 6 GiB and aborted). Past the cap the literal
    /// algorithm scores the pattern, still exactly, and the cells stay bounded.
    #[test]
    fn cells_stay_bounded_and_exact_for_long_sequences_over_few_symbols() {
        let mut rng = Rng::new(41);
        for (len, alphabet) in [(800, 2), (1200, 5), (700, 3), (300, 40)] {
            let state: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
            let mut patterns: Vec<Vec<u32>> =
                (0..4).map(|_| (0..len + rng.below(300)).map(|_| rng.below(alphabet) as u32).collect()).collect();
            patterns.push(state.clone());
            patterns.push(state[len / 3..].to_vec());
            for autojunk in [false, true] {
                let (got, scratch) = score_all(&patterns, &state, autojunk);
                for (p, &m) in patterns.iter().zip(&got) {
                    assert_eq!(m as usize, naive_difflib(p, &state, autojunk), "len {len} alphabet {alphabet}");
                }
                let longest = patterns.iter().map(Vec::len).max().unwrap();
                assert!(scratch.cells.list.capacity() <= 2 * MAX_CELLS_PER_SYMBOL * (longest + len));
            }
        }
    }

    #[test]
    fn sixty_thousand_symbols_over_five_do_not_exhaust_memory() {
        let mut rng = Rng::new(42);
        let state: Vec<u32> = (0..60_000).map(|_| rng.below(5) as u32).collect();
        let (got, scratch) = score_all(std::slice::from_ref(&state), &state, false);
        assert_eq!(got, [60_000]);
        assert!(scratch.cells.list.capacity() <= 2 * MAX_CELLS_PER_SYMBOL * 120_000);
    }

    /// A long state of many distinct symbols builds no quadratic LCS masks, and still scores
    /// exactly (through the literal algorithm).
    #[test]
    fn many_distinct_symbols_skip_the_lcs_masks() {
        let state: Vec<u32> = (0..20_000).collect();
        let query = DifflibQuery::new(&state, false);
        assert!(query.lcs.is_none());
        let pattern: Vec<u32> = (0..20_000).rev().step_by(3).chain(5_000..5_100).collect();
        let (got, _) = score_all(std::slice::from_ref(&pattern), &state, false);
        assert_eq!(got[0] as usize, naive_difflib(&pattern, &state, false));
    }
}
