//! The columnar pattern store shared by every tier: all patterns' symbol ids concatenated with an
//! offsets array, names in one byte arena. The same layout is mirrored on the GPU.

/// Largest symbol id a stored pattern may hold. Query symbols unknown to the vocabulary are given
/// ids above it, so they can never match a stored symbol.
pub const MAX_SYMBOL_ID: u32 = i32::MAX as u32;

#[derive(Default)]
pub struct PatternStore {
    tokens: Vec<u32>,
    offsets: Vec<u64>,
    name_bytes: Vec<u8>,
    name_offsets: Vec<u64>,
    live: Vec<bool>,
    live_count: usize,
}

impl PatternStore {
    pub fn new() -> PatternStore {
        PatternStore { offsets: vec![0], name_offsets: vec![0], ..Default::default() }
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

    pub fn reserve(&mut self, patterns: usize, tokens: usize, name_bytes: usize) {
        self.tokens.reserve(tokens);
        self.offsets.reserve(patterns);
        self.name_bytes.reserve(name_bytes);
        self.name_offsets.reserve(patterns);
        self.live.reserve(patterns);
    }

    /// Appends a pattern and returns its slot. Callers validate names and symbol ids first.
    pub fn push(&mut self, name: &str, tokens: &[u32]) -> u32 {
        let slot = self.live.len() as u32;
        self.tokens.extend_from_slice(tokens);
        self.offsets.push(self.tokens.len() as u64);
        self.name_bytes.extend_from_slice(name.as_bytes());
        self.name_offsets.push(self.name_bytes.len() as u64);
        self.live.push(true);
        self.live_count += 1;
        slot
    }

    #[inline]
    pub fn tokens(&self, slot: u32) -> &[u32] {
        let s = slot as usize;
        &self.tokens[self.offsets[s] as usize..self.offsets[s + 1] as usize]
    }

    #[inline]
    pub fn name(&self, slot: u32) -> &str {
        let s = slot as usize;
        let bytes = &self.name_bytes[self.name_offsets[s] as usize..self.name_offsets[s + 1] as usize];
        // Only whole `&str`s are ever pushed, so every name range is valid UTF-8.
        std::str::from_utf8(bytes).expect("name arena holds whole UTF-8 names")
    }

    #[inline]
    pub fn is_live(&self, slot: u32) -> bool {
        self.live[slot as usize]
    }

    /// Marks a slot removed; its data stays until [`PatternStore::compact`].
    pub fn kill(&mut self, slot: u32) {
        if std::mem::replace(&mut self.live[slot as usize], false) {
            self.live_count -= 1;
        }
    }

    /// Rewrites the store without removed slots. Returns, for each old slot, its new slot
    /// (`u32::MAX` for removed ones).
    pub fn compact(&mut self) -> Vec<u32> {
        let mut fresh = PatternStore::new();
        fresh.reserve(self.live_count, self.tokens.len(), self.name_bytes.len());
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
            + self.name_bytes.capacity()
            + self.name_offsets.capacity() * 8
            + self.live.capacity()
    }
}
