//! The columnar pattern store shared by every tier: all patterns' symbol ids concatenated with an
//! offsets array, names in an arena. The same layout is mirrored on the GPU.
//!
//! The name arena is a list of fixed-size, reference-counted chunks, so a query result can keep
//! the names of its matches alive ([`NameSnapshot`]) without copying them: a later append copies
//! at most the last chunk (and only while a result still holds it); a compaction builds new chunks.

use std::collections::BTreeMap;
use std::sync::Arc;

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
    #[inline]
    pub fn name(&self, slot: u32) -> &str {
        let chunk = &self.0[slot as usize / NAME_CHUNK];
        let k = slot as usize % NAME_CHUNK;
        let start = if k == 0 { 0 } else { chunk.ends[k - 1] as usize };
        // Only whole `&str`s are ever pushed, so every name range is valid UTF-8.
        std::str::from_utf8(&chunk.bytes[start..chunk.ends[k] as usize]).expect("name arena holds whole UTF-8 names")
    }

    fn push(&mut self, name: &str) {
        if self.0.last().is_none_or(|c| c.ends.len() == NAME_CHUNK) {
            self.0.push(Arc::new(NameChunk { bytes: Vec::new(), ends: Vec::with_capacity(NAME_CHUNK) }));
        }
        let chunk = Arc::make_mut(self.0.last_mut().expect("a chunk was just ensured"));
        chunk.bytes.extend_from_slice(name.as_bytes());
        chunk.ends.push(chunk.bytes.len() as u32);
    }

    fn memory_bytes(&self) -> usize {
        self.0.iter().map(|c| c.bytes.capacity() + c.ends.capacity() * 4).sum()
    }
}

/// Consecutive stored patterns: their symbols back to back and their offsets into the store.
#[derive(Clone, Copy)]
pub struct PatternRun<'a> {
    tokens: &'a [u32],
    /// `count + 1` absolute offsets; `tokens` starts at `offsets[0]`.
    offsets: &'a [u64],
}

impl<'a> PatternRun<'a> {
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k`-th pattern of the run.
    #[inline]
    pub fn pattern(&self, k: usize) -> &'a [u32] {
        let base = self.offsets[0];
        &self.tokens[(self.offsets[k] - base) as usize..(self.offsets[k + 1] - base) as usize]
    }

    /// Every symbol of the run, back to back.
    pub fn tokens(&self) -> &'a [u32] {
        self.tokens
    }

    /// Length of the `k`-th pattern.
    #[inline]
    pub fn pattern_len(&self, k: usize) -> usize {
        (self.offsets[k + 1] - self.offsets[k]) as usize
    }
}

#[derive(Default)]
pub struct PatternStore {
    tokens: Vec<u32>,
    offsets: Vec<u64>,
    names: NameSnapshot,
    live: Vec<bool>,
    live_count: usize,
    /// Live patterns per length: a query's plan is built over the lengths present.
    lengths: BTreeMap<usize, usize>,
}

impl PatternStore {
    pub fn new() -> PatternStore {
        PatternStore { offsets: vec![0], ..Default::default() }
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
        self.tokens.len()
    }

    pub fn reserve(&mut self, patterns: usize, tokens: usize) {
        self.tokens.reserve(tokens);
        self.offsets.reserve(patterns);
        self.live.reserve(patterns);
    }

    /// Appends a pattern and returns its slot. Callers validate names and symbol ids first.
    pub fn push(&mut self, name: &str, tokens: &[u32]) -> u32 {
        let slot = self.live.len() as u32;
        self.tokens.extend_from_slice(tokens);
        self.offsets.push(self.tokens.len() as u64);
        self.names.push(name);
        self.live.push(true);
        self.live_count += 1;
        *self.lengths.entry(tokens.len()).or_insert(0) += 1;
        slot
    }

    /// Slots `first..first + count` as one contiguous run.
    #[inline]
    pub fn run(&self, first: u32, count: usize) -> PatternRun<'_> {
        let offsets = &self.offsets[first as usize..first as usize + count + 1];
        PatternRun { tokens: &self.tokens[offsets[0] as usize..offsets[count] as usize], offsets }
    }

    /// The distinct lengths of the live patterns, ascending.
    pub fn lengths(&self) -> impl Iterator<Item = usize> + '_ {
        self.lengths.keys().copied()
    }

    #[inline]
    pub fn tokens(&self, slot: u32) -> &[u32] {
        let s = slot as usize;
        &self.tokens[self.offsets[s] as usize..self.offsets[s + 1] as usize]
    }

    #[inline]
    pub fn name(&self, slot: u32) -> &str {
        self.names.name(slot)
    }

    #[inline]
    pub fn is_live(&self, slot: u32) -> bool {
        self.live[slot as usize]
    }

    /// Marks a slot removed; its data stays until [`PatternStore::compact`].
    pub fn kill(&mut self, slot: u32) {
        if std::mem::replace(&mut self.live[slot as usize], false) {
            self.live_count -= 1;
            let len = self.tokens(slot).len();
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
        fresh.reserve(self.live_count, self.tokens.len());
        let mut remap = vec![u32::MAX; self.slots()];
        for slot in 0..self.slots() as u32 {
            if self.is_live(slot) {
                remap[slot as usize] = fresh.push(self.name(slot), self.tokens(slot));
            }
        }
        *self = fresh;
        remap
    }

    /// Bytes held by the store's arrays (capacity, not length).
    pub fn memory_bytes(&self) -> usize {
        self.tokens.capacity() * 4
            + self.offsets.capacity() * 8
            + self.names.memory_bytes()
            + self.live.capacity()
    }
}
