//! The columnar pattern store shared by every tier: all patterns' symbol ids concatenated with an
//! offsets array, names in an arena. The same layout is mirrored on the GPU.
//!
//! The name arena is a list of fixed-size, reference-counted chunks, so a query result can keep
//! the names of its matches alive ([`NameSnapshot`]) without copying them: a later append copies
//! at most the last chunk (and only while a result still holds it); a compaction builds new chunks.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;

/// A stored symbol id: patterns are kept as u16 while every stored id fits (half the memory and
/// half the bytes a scan streams), as u32 from the first larger id on.
pub trait Token: Copy + Into<u32> + Send + Sync + 'static {
    /// The run itself when it holds u16 symbols, the width the SIMD kernels read.
    fn as_narrow(run: PatternRun<'_, Self>) -> Option<PatternRun<'_, u16>> {
        let _ = run;
        None
    }
}
impl Token for u16 {
    fn as_narrow(run: PatternRun<'_, u16>) -> Option<PatternRun<'_, u16>> {
        Some(run)
    }
}
impl Token for u32 {}

/// Every pattern's symbols back to back, in the narrowest width that holds them.
pub(crate) enum TokenColumn {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Default for TokenColumn {
    fn default() -> TokenColumn {
        TokenColumn::Narrow(Vec::new())
    }
}

/// Grows `v` to hold `additional` more items by 1.25x steps (not 2x): big stores keep little
/// unused capacity, at the price of a few more copies while loading.
fn reserve_gently<T>(v: &mut Vec<T>, additional: usize) {
    let needed = v.len() + additional;
    if needed > v.capacity() {
        let target = needed.max(v.capacity() + v.capacity() / 4);
        v.reserve_exact(target - v.len());
    }
}

/// Largest symbol id a stored pattern may hold. Query symbols unknown to the vocabulary are given
/// ids above it, so they can never match a stored symbol.
pub const MAX_SYMBOL_ID: u32 = i32::MAX as u32;

/// Names per arena chunk.
const NAME_CHUNK: usize = 4096;

#[derive(Clone, Default)]
pub struct NameChunk {
    bytes: Vec<u8>,
    /// `ends[k]`: end of the k-th name of the chunk in `bytes`.
    ends: Vec<u32>,
}

/// The names of a store at one moment, valid for the slots that existed then.
#[derive(Clone, Default)]
pub struct NameSnapshot(Vec<Arc<NameChunk>>);

impl NameSnapshot {
    /// The bytes of [`NameSnapshot::name`] (compared as bytes, UTF-8 orders as `str` does).
    #[inline]
    pub fn name_bytes(&self, slot: u32) -> &[u8] {
        let chunk = &self.0[slot as usize / NAME_CHUNK];
        let k = slot as usize % NAME_CHUNK;
        let start = if k == 0 { 0 } else { chunk.ends[k - 1] as usize };
        &chunk.bytes[start..chunk.ends[k] as usize]
    }

    #[inline]
    pub fn name(&self, slot: u32) -> &str {
        // Only whole `&str`s are ever pushed, so every name range is valid UTF-8.
        std::str::from_utf8(self.name_bytes(slot)).expect("name arena holds whole UTF-8 names")
    }

    fn push(&mut self, name: &str) {
        if self.0.last().is_none_or(|c| c.ends.len() == NAME_CHUNK) {
            // A full chunk never grows again: give back its spare capacity (unless a result
            // still shares it).
            if let Some(full) = self.0.last_mut().and_then(Arc::get_mut) {
                full.bytes.shrink_to_fit();
            }
            self.0.push(Arc::new(NameChunk { bytes: Vec::new(), ends: Vec::with_capacity(NAME_CHUNK) }));
        }
        let chunk = Arc::make_mut(self.0.last_mut().expect("a chunk was just ensured"));
        chunk.bytes.extend_from_slice(name.as_bytes());
        chunk.ends.push(chunk.bytes.len() as u32);
    }

    fn memory_bytes(&self) -> usize {
        self.0.iter().map(|c| c.bytes.capacity() + c.ends.capacity() * 4).sum()
    }

    fn len(&self) -> usize {
        self.0.last().map_or(0, |c| (self.0.len() - 1) * NAME_CHUNK + c.ends.len())
    }

    /// The names of `text` cut at `ends` (the end of each name, ascending), as the arena holds
    /// them; built a chunk per task. The text names the first rule broken: a name that is empty
    /// or not whole UTF-8, or ends out of order or past the text.
    pub(crate) fn from_text(text: &[u8], ends: &[u64]) -> Result<NameSnapshot, String> {
        if ends.last().map_or(0, |&end| end) != text.len() as u64 {
            return Err("bad name boundaries: the names do not span their text".into());
        }
        let chunks = ends
            .par_chunks(NAME_CHUNK)
            .enumerate()
            .map(|(c, chunk_ends)| {
                let start = if c == 0 { 0 } else { ends[c * NAME_CHUNK - 1] };
                let end = chunk_ends[chunk_ends.len() - 1];
                let bytes = usize::try_from(start)
                    .ok()
                    .zip(usize::try_from(end).ok())
                    .and_then(|(start, end)| text.get(start..end))
                    .and_then(|bytes| std::str::from_utf8(bytes).ok())
                    .ok_or_else(|| format!("bad name boundaries or text near name {}", c * NAME_CHUNK))?;
                let mut relative = Vec::with_capacity(chunk_ends.len());
                let mut previous = 0;
                for (k, &e) in chunk_ends.iter().enumerate() {
                    // Strictly ascending: no empty name, and every end within `start..=end`.
                    if e <= start + u64::from(previous) || !bytes.is_char_boundary((e - start) as usize) {
                        return Err(format!("bad name boundaries at name {}", c * NAME_CHUNK + k));
                    }
                    previous = u32::try_from(e - start).map_err(|_| "a name chunk longer than 4 GiB".to_string())?;
                    relative.push(previous);
                }
                Ok(Arc::new(NameChunk { bytes: bytes.as_bytes().to_vec(), ends: relative }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(NameSnapshot(chunks))
    }
}

/// Consecutive stored patterns: their symbols back to back and their offsets into the store.
pub struct PatternRun<'a, T> {
    tokens: &'a [T],
    /// `count + 1` absolute offsets; `tokens` starts at `offsets[0]`.
    offsets: &'a [u64],
}

impl<T> Clone for PatternRun<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for PatternRun<'_, T> {}

/// A run in the store's current token width.
#[derive(Clone, Copy)]
pub enum AnyRun<'a> {
    Narrow(PatternRun<'a, u16>),
    Wide(PatternRun<'a, u32>),
}

impl AnyRun<'_> {
    pub fn len(&self) -> usize {
        match self {
            AnyRun::Narrow(run) => run.len(),
            AnyRun::Wide(run) => run.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn pattern_len(&self, k: usize) -> usize {
        match self {
            AnyRun::Narrow(run) => run.pattern_len(k),
            AnyRun::Wide(run) => run.pattern_len(k),
        }
    }

    /// See [`PatternRun::offsets`].
    #[inline]
    pub fn offsets(&self) -> &[u64] {
        match self {
            AnyRun::Narrow(run) => run.offsets(),
            AnyRun::Wide(run) => run.offsets(),
        }
    }
}

impl<'a, T> PatternRun<'a, T> {
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k`-th pattern of the run.
    #[inline]
    pub fn pattern(&self, k: usize) -> &'a [T] {
        let base = self.offsets[0];
        &self.tokens[(self.offsets[k] - base) as usize..(self.offsets[k + 1] - base) as usize]
    }

    /// Every symbol of the run, back to back.
    pub fn tokens(&self) -> &'a [T] {
        self.tokens
    }

    /// Length of the `k`-th pattern.
    #[inline]
    pub fn pattern_len(&self, k: usize) -> usize {
        (self.offsets[k + 1] - self.offsets[k]) as usize
    }

    /// The run's `len() + 1` offsets into the store's symbols (absolute: subtract the first).
    #[inline]
    pub fn offsets(&self) -> &'a [u64] {
        self.offsets
    }

    /// Where the `k`-th pattern starts in [`PatternRun::tokens`].
    #[inline]
    pub fn start(&self, k: usize) -> usize {
        (self.offsets[k] - self.offsets[0]) as usize
    }
}

#[derive(Default)]
pub struct PatternStore {
    tokens: TokenColumn,
    offsets: Vec<u64>,
    names: NameSnapshot,
    live: Vec<bool>,
    live_count: usize,
    /// Every pattern's event lengths back to back (KATO patterns are lists of events); slot `s`
    /// has `event_lens[event_offsets[s]..event_offsets[s + 1]]`, summing to its length.
    event_lens: Vec<u32>,
    event_offsets: Vec<u64>,
    /// Live patterns per length: a query's plan is built over the lengths present.
    lengths: BTreeMap<usize, usize>,
}

impl PatternStore {
    pub fn new() -> PatternStore {
        PatternStore { offsets: vec![0], event_offsets: vec![0], ..Default::default() }
    }

    /// The names as they are now; cheap (one reference count per chunk).
    pub fn names(&self) -> NameSnapshot {
        self.names.clone()
    }

    /// Slots ever used (live or removed) since the last compaction.
    pub fn slots(&self) -> usize {
        self.live.len()
    }

    pub fn live_count(&self) -> usize {
        self.live_count
    }

    pub fn token_count(&self) -> usize {
        self.offsets[self.offsets.len() - 1] as usize
    }

    /// Bytes per stored symbol: 2 while every id fits in 16 bits, then 4.
    pub fn token_width(&self) -> usize {
        match self.tokens {
            TokenColumn::Narrow(_) => 2,
            TokenColumn::Wide(_) => 4,
        }
    }

    pub fn reserve(&mut self, patterns: usize, tokens: usize) {
        match &mut self.tokens {
            TokenColumn::Narrow(t) => reserve_gently(t, tokens),
            TokenColumn::Wide(t) => reserve_gently(t, tokens),
        }
        reserve_gently(&mut self.offsets, patterns);
        reserve_gently(&mut self.live, patterns);
        reserve_gently(&mut self.event_offsets, patterns);
    }

    /// Appends a pattern of one event and returns its slot. Callers validate names and symbol
    /// ids first.
    pub fn push(&mut self, name: &str, tokens: &[u32]) -> u32 {
        self.push_events(name, tokens, &[tokens.len() as u32])
    }

    /// Appends a pattern made of events of `event_lens` symbols (summing to `tokens.len()`,
    /// which callers check) and returns its slot.
    pub fn push_events(&mut self, name: &str, tokens: &[u32], event_lens: &[u32]) -> u32 {
        debug_assert_eq!(event_lens.iter().map(|&l| l as usize).sum::<usize>(), tokens.len());
        self.event_lens.extend_from_slice(event_lens);
        self.event_offsets.push(self.event_lens.len() as u64);
        let slot = self.live.len() as u32;
        if let TokenColumn::Narrow(narrow) = &self.tokens {
            if tokens.iter().any(|&t| t > u16::MAX as u32) {
                let mut wide = Vec::new();
                reserve_gently(&mut wide, narrow.len() + tokens.len());
                wide.extend(narrow.iter().map(|&t| u32::from(t)));
                self.tokens = TokenColumn::Wide(wide);
            }
        }
        match &mut self.tokens {
            // Every id fits: checked just above.
            TokenColumn::Narrow(t) => t.extend(tokens.iter().map(|&id| id as u16)),
            TokenColumn::Wide(t) => t.extend_from_slice(tokens),
        }
        self.offsets.push(self.offsets[self.offsets.len() - 1] + tokens.len() as u64);
        self.names.push(name);
        self.live.push(true);
        self.live_count += 1;
        *self.lengths.entry(tokens.len()).or_insert(0) += 1;
        slot
    }

    /// A store of these columns (as [`PatternStore`] lays them out, `names` one per pattern),
    /// every slot live: how a snapshot is loaded without re-learning. The text names the first
    /// layout rule broken; nothing is trusted that could make a later read panic. The checks run
    /// on every core: at 10M patterns they are a good part of a load.
    pub(crate) fn from_columns(
        tokens: TokenColumn,
        offsets: Vec<u64>,
        names: NameSnapshot,
        event_lens: Vec<u32>,
        event_offsets: Vec<u64>,
    ) -> Result<PatternStore, String> {
        let n = names.len();
        let token_count = match &tokens {
            TokenColumn::Narrow(t) => t.len(),
            TokenColumn::Wide(t) => t.len(),
        };
        for (what, offsets, total) in
            [("offsets", &offsets, token_count), ("event offsets", &event_offsets, event_lens.len())]
        {
            if offsets.len() != n + 1 || offsets[0] != 0 || offsets[n] != total as u64 {
                return Err(format!("{what} do not span their column"));
            }
            if offsets.par_windows(2).any(|w| w[0] > w[1]) {
                return Err(format!("{what} decrease"));
            }
        }
        if let TokenColumn::Wide(t) = &tokens {
            if t.par_iter().any(|&id| id > MAX_SYMBOL_ID) {
                return Err("a symbol id is out of range".into());
            }
        }
        let lengths = (0..n)
            .into_par_iter()
            .try_fold(BTreeMap::new, |mut lengths: BTreeMap<usize, usize>, k| {
                let len = offsets[k + 1] - offsets[k];
                let events = &event_lens[event_offsets[k] as usize..event_offsets[k + 1] as usize];
                if events.iter().map(|&l| u64::from(l)).sum::<u64>() != len {
                    return Err(format!("the events of pattern {k} do not add up to its length"));
                }
                *lengths.entry(len as usize).or_insert(0) += 1;
                Ok(lengths)
            })
            .try_reduce(BTreeMap::new, |mut a, b| {
                for (len, count) in b {
                    *a.entry(len).or_insert(0) += count;
                }
                Ok(a)
            })?;
        Ok(PatternStore {
            tokens,
            offsets,
            names,
            live: vec![true; n],
            live_count: n,
            event_lens,
            event_offsets,
            lengths,
        })
    }

    /// Slots `first..first + count` as one contiguous run.
    #[inline]
    pub fn run(&self, first: u32, count: usize) -> AnyRun<'_> {
        let offsets = &self.offsets[first as usize..first as usize + count + 1];
        let range = offsets[0] as usize..offsets[count] as usize;
        match &self.tokens {
            TokenColumn::Narrow(t) => AnyRun::Narrow(PatternRun { tokens: &t[range], offsets }),
            TokenColumn::Wide(t) => AnyRun::Wide(PatternRun { tokens: &t[range], offsets }),
        }
    }

    /// The distinct lengths of the live patterns, ascending.
    pub fn lengths(&self) -> impl Iterator<Item = usize> + '_ {
        self.lengths.keys().copied()
    }

    /// The symbol ids of a slot (borrowed when stored as u32, widened when stored as u16).
    pub fn tokens(&self, slot: u32) -> Cow<'_, [u32]> {
        let s = slot as usize;
        let range = self.offsets[s] as usize..self.offsets[s + 1] as usize;
        match &self.tokens {
            TokenColumn::Narrow(t) => Cow::Owned(t[range].iter().map(|&id| u32::from(id)).collect()),
            TokenColumn::Wide(t) => Cow::Borrowed(&t[range]),
        }
    }

    /// Appends the symbol ids of a slot to `out`.
    pub fn extend_tokens(&self, slot: u32, out: &mut Vec<u32>) {
        let s = slot as usize;
        let range = self.offsets[s] as usize..self.offsets[s + 1] as usize;
        match &self.tokens {
            TokenColumn::Narrow(t) => out.extend(t[range].iter().map(|&id| u32::from(id))),
            TokenColumn::Wide(t) => out.extend_from_slice(&t[range]),
        }
    }

    /// The length of a slot's pattern.
    #[inline]
    pub fn len_of(&self, slot: u32) -> usize {
        (self.offsets[slot as usize + 1] - self.offsets[slot as usize]) as usize
    }

    #[inline]
    pub fn name(&self, slot: u32) -> &str {
        self.names.name(slot)
    }

    #[inline]
    pub fn name_bytes(&self, slot: u32) -> &[u8] {
        self.names.name_bytes(slot)
    }

    /// The first symbol of a slot's pattern, `None` when it is empty.
    #[inline]
    pub fn first_token(&self, slot: u32) -> Option<u32> {
        let s = slot as usize;
        let (lo, hi) = (self.offsets[s] as usize, self.offsets[s + 1] as usize);
        (lo < hi).then(|| match &self.tokens {
            TokenColumn::Narrow(t) => u32::from(t[lo]),
            TokenColumn::Wide(t) => t[lo],
        })
    }

    /// The lengths of a slot's events, in order.
    #[inline]
    pub fn event_lens(&self, slot: u32) -> &[u32] {
        let s = slot as usize;
        &self.event_lens[self.event_offsets[s] as usize..self.event_offsets[s + 1] as usize]
    }

    /// Whether each of slots `first..first + count` is live.
    #[inline]
    pub fn live_run(&self, first: u32, count: usize) -> &[bool] {
        &self.live[first as usize..first as usize + count]
    }

    #[inline]
    pub fn is_live(&self, slot: u32) -> bool {
        self.live[slot as usize]
    }

    /// Marks a slot removed; its data stays until [`PatternStore::compact`].
    pub fn kill(&mut self, slot: u32) {
        if std::mem::replace(&mut self.live[slot as usize], false) {
            self.live_count -= 1;
            let len = self.len_of(slot);
            match self.lengths.get_mut(&len) {
                Some(count) if *count > 1 => *count -= 1,
                _ => {
                    self.lengths.remove(&len);
                }
            }
        }
    }

    /// Rewrites the store without removed slots. Returns, for each old slot, its new slot
    /// (`u32::MAX` for removed ones).
    pub fn compact(&mut self) -> Vec<u32> {
        let mut fresh = PatternStore::new();
        fresh.reserve(self.live_count, self.token_count());
        if let TokenColumn::Wide(_) = self.tokens {
            fresh.tokens = TokenColumn::Wide(Vec::new());
            fresh.reserve(0, self.token_count());
        }
        let mut remap = vec![u32::MAX; self.slots()];
        for slot in 0..self.slots() as u32 {
            if self.is_live(slot) {
                remap[slot as usize] = fresh.push_events(self.name(slot), &self.tokens(slot), self.event_lens(slot));
            }
        }
        *self = fresh;
        remap
    }

    /// Bytes held by the store's arrays (capacity, not length).
    pub fn memory_bytes(&self) -> usize {
        let tokens = match &self.tokens {
            TokenColumn::Narrow(t) => t.capacity() * 2,
            TokenColumn::Wide(t) => t.capacity() * 4,
        };
        tokens
            + self.offsets.capacity() * 8
            + self.names.memory_bytes()
            + self.live.capacity()
            + self.event_lens.capacity() * 4
            + self.event_offsets.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Symbols are kept as u16 until the first larger id, then every pattern (earlier ones
    /// included) reads back the same, through runs and a compaction.
    #[test]
    fn widens_on_the_first_large_id_and_keeps_every_pattern() {
        let patterns: Vec<Vec<u32>> =
            vec![vec![1, 2, 65_535], vec![], vec![7; 40], vec![65_536, 3], vec![MAX_SYMBOL_ID, 0], vec![9]];
        let mut store = PatternStore::new();
        for (k, p) in patterns.iter().enumerate() {
            store.push(&format!("p{k}"), p);
            assert_eq!(store.token_width(), if k < 3 { 2 } else { 4 });
            for (j, q) in patterns[..=k].iter().enumerate() {
                assert_eq!(&*store.tokens(j as u32), &q[..]);
            }
        }
        let AnyRun::Wide(run) = store.run(1, 4) else { panic!("the store is wide") };
        assert_eq!((0..4).map(|k| run.pattern(k).to_vec()).collect::<Vec<_>>(), patterns[1..5].to_vec());
        store.kill(0);
        let remap = store.compact();
        assert_eq!(store.token_width(), 4);
        for (old, p) in patterns.iter().enumerate().skip(1) {
            assert_eq!(&*store.tokens(remap[old]), &p[..]);
            assert_eq!(store.len_of(remap[old]), p.len());
        }
        assert_eq!(store.token_count(), patterns[1..].iter().map(Vec::len).sum::<usize>());
    }

    /// Event lengths follow their patterns through kills and compactions; a plain push is one
    /// event of the whole pattern.
    #[test]
    fn events_survive_compaction() {
        let mut store = PatternStore::new();
        store.push_events("a", &[1, 2, 3], &[1, 2]);
        store.push("b", &[4, 5]);
        store.push_events("c", &[6, 7, 8, 9], &[0, 3, 1]);
        store.push_events("d", &[], &[]);
        assert_eq!(store.event_lens(1), &[2]);
        store.kill(0);
        store.kill(3);
        let remap = store.compact();
        assert_eq!((remap[0], remap[3]), (u32::MAX, u32::MAX));
        assert_eq!(store.event_lens(remap[1]), &[2]);
        assert_eq!(store.event_lens(remap[2]), &[0, 3, 1]);
        assert_eq!(&*store.tokens(remap[2]), &[6, 7, 8, 9]);
    }
}
