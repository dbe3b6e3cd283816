//! The symbol vocabulary: a bidirectional `symbol <-> id` map, and its file store.
//!
//! - [`Vocabulary`]: the map itself, in memory;
//! - [`VocabularyDocument`]: the stored JSON layout (KATO's `gpu_vocabulary` document) and its validation;
//! - [`FileStore`]: a crash-safe file (snapshot plus append-only log) whose cost per learn is O(new symbols).

mod document;
mod file_store;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

pub use document::VocabularyDocument;
pub use file_store::FileStore;

use crate::error::{KatoError, Result};
use crate::store::MAX_SYMBOL_ID;

/// Hasher for keys that already are hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type HashKeyed<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// Symbol <-> id. Ids are assigned sequentially from 0 (gaps only if a loaded document had them) and never exceed
/// [`MAX_SYMBOL_ID`].
///
/// Every symbol is stored once, in one arena string: a `HashMap<Box<str>, u32>` beside a `Vec<Box<str>>` would hold
/// each symbol twice, with two allocations. The lookup table keeps only `(hash, position)`, and compares the symbol in
/// the arena; the rare symbols whose 64-bit hash equals an earlier one's go to `collisions`. Positions are dense;
/// `ids` maps them to ids only when a loaded document had gaps, so an ordinary vocabulary pays nothing for gaps and a
/// document with a huge `next_id` but few symbols costs no memory.
#[derive(Clone)]
pub struct Vocabulary {
    text: String,
    /// End of each position's symbol in `text` (the start is the previous end).
    ends: Vec<u64>,
    /// Ascending id of each position, or `None` when every id equals its position.
    ids: Option<Vec<u32>>,
    next_id: u32,
    /// Hash -> the first position with that hash.
    index: HashKeyed<u32>,
    /// Hash -> the further positions with that hash, ascending.
    collisions: HashKeyed<Vec<u32>>,
    hasher: RandomState,
    /// All ones, except in tests that force hash collisions.
    hash_mask: u64,
}

impl Default for Vocabulary {
    fn default() -> Self {
        Vocabulary::new()
    }
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A summary: the full map of a large vocabulary would swamp any message it appears in.
        f.debug_struct("Vocabulary").field("len", &self.len()).field("next_id", &self.next_id).finish()
    }
}

/// Equal when both map the same ids to the same symbols and have the same `next_id`.
impl PartialEq for Vocabulary {
    fn eq(&self, other: &Vocabulary) -> bool {
        self.next_id == other.next_id && self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Vocabulary {}

impl Vocabulary {
    pub fn new() -> Vocabulary {
        Vocabulary::with_hash_mask(u64::MAX)
    }

    fn with_hash_mask(hash_mask: u64) -> Vocabulary {
        Vocabulary {
            text: String::new(),
            ends: Vec::new(),
            ids: None,
            next_id: 0,
            index: HashKeyed::default(),
            collisions: HashKeyed::default(),
            hasher: RandomState::new(),
            hash_mask,
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The id the next new symbol gets.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    fn hash(&self, symbol: &str) -> u64 {
        self.hasher.hash_one(symbol) & self.hash_mask
    }

    fn at(&self, position: usize) -> &str {
        let start = if position == 0 { 0 } else { self.ends[position - 1] as usize };
        &self.text[start..self.ends[position] as usize]
    }

    fn id_at(&self, position: usize) -> u32 {
        match &self.ids {
            None => position as u32,
            Some(ids) => ids[position],
        }
    }

    fn position(&self, symbol: &str) -> Option<usize> {
        let hash = self.hash(symbol);
        let first = *self.index.get(&hash)? as usize;
        if self.at(first) == symbol {
            return Some(first);
        }
        let more = self.collisions.get(&hash)?;
        more.iter().map(|&p| p as usize).find(|&p| self.at(p) == symbol)
    }

    pub fn id(&self, symbol: &str) -> Option<u32> {
        self.position(symbol).map(|p| self.id_at(p))
    }

    pub fn symbol(&self, id: u32) -> Option<&str> {
        let position = match &self.ids {
            None => id as usize,
            Some(ids) => ids.binary_search(&id).ok()?,
        };
        (position < self.len()).then(|| self.at(position))
    }

    /// `(id, symbol)` in ascending id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        (0..self.len()).map(|p| (self.id_at(p), self.at(p)))
    }

    /// The distinct symbols of `symbols` not yet in the vocabulary, in order of first appearance.
    pub fn unseen<'a>(&self, symbols: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let mut seen = HashSet::new();
        symbols.into_iter().filter(|s| self.position(s).is_none() && seen.insert(*s)).collect()
    }

    /// Appends `symbol` with `id` (above every id held, and unseen).
    fn push_one(&mut self, id: u32, symbol: &str) {
        let position = self.len() as u32;
        self.text.push_str(symbol);
        self.ends.push(self.text.len() as u64);
        match &mut self.ids {
            Some(ids) => ids.push(id),
            None if id != position => {
                let mut ids: Vec<u32> = (0..position).collect();
                ids.push(id);
                self.ids = Some(ids);
            }
            None => {}
        }
        let hash = self.hash(symbol);
        match self.index.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(position);
            }
            Entry::Occupied(_) => self.collisions.entry(hash).or_default().push(position),
        }
        self.next_id = id + 1;
    }

    /// Appends `new` (distinct and unseen) with ids `next_id..`; returns the first id.
    /// `Err(KatoError::VocabularyFull)` and no change if the last id would exceed [`MAX_SYMBOL_ID`].
    pub fn push_all(&mut self, new: &[&str]) -> Result<u32> {
        let first = self.next_id;
        if new.is_empty() {
            return Ok(first);
        }
        if u64::from(first) + new.len() as u64 - 1 > u64::from(MAX_SYMBOL_ID) {
            return Err(KatoError::VocabularyFull { next_id: u64::from(first), adding: new.len() });
        }
        debug_assert_eq!(self.unseen(new.iter().copied()).len(), new.len(), "push_all: symbols not distinct and new");
        self.text.reserve(new.iter().map(|s| s.len()).sum());
        self.ends.reserve(new.len());
        self.index.reserve(new.len());
        for (offset, symbol) in new.iter().enumerate() {
            self.push_one(first + offset as u32, symbol);
        }
        Ok(first)
    }

    /// Adds `symbol` with `id` for a document or log being loaded: ids must ascend and symbols be new, or the text
    /// names the problem.
    fn load_one(&mut self, id: u32, symbol: &str) -> std::result::Result<(), String> {
        if id < self.next_id {
            return Err(format!("id {id} of {symbol:?} is not above the previous id {}", self.next_id - 1));
        }
        if id > MAX_SYMBOL_ID {
            return Err(format!("id {id} of {symbol:?} exceeds the largest symbol id {MAX_SYMBOL_ID}"));
        }
        if let Some(other) = self.id(symbol) {
            return Err(format!("symbol {symbol:?} has two ids, {other} and {id}"));
        }
        self.push_one(id, symbol);
        Ok(())
    }

    /// Undoes pushes: forgets every id >= `next_id` (used to roll back when persisting fails).
    pub fn truncate(&mut self, next_id: u32) {
        if next_id >= self.next_id {
            return;
        }
        let keep = match &self.ids {
            None => (next_id as usize).min(self.len()),
            Some(ids) => ids.partition_point(|&id| id < next_id),
        };
        // Newest first: a hash's newest position is the last of its collisions, or the indexed one if it has none.
        for position in (keep..self.len()).rev() {
            let hash = self.hash(self.at(position));
            if let Some(more) = self.collisions.get_mut(&hash) {
                debug_assert_eq!(more.last(), Some(&(position as u32)));
                more.pop();
                if more.is_empty() {
                    self.collisions.remove(&hash);
                }
            } else {
                let removed = self.index.remove(&hash);
                debug_assert_eq!(removed, Some(position as u32));
            }
        }
        let text_end = if keep == 0 { 0 } else { self.ends[keep - 1] as usize };
        self.text.truncate(text_end);
        self.ends.truncate(keep);
        if let Some(ids) = &mut self.ids {
            ids.truncate(keep);
            // Ids ascend and are distinct, so the last equal to its position means every one is.
            if ids.last().is_none_or(|&last| last as usize == keep - 1) {
                self.ids = None;
            }
        }
        self.next_id = next_id;
    }

    pub fn clear(&mut self) {
        *self = Vocabulary::with_hash_mask(self.hash_mask);
    }

    /// Heap bytes held (capacities, so an estimate of what the allocator holds).
    pub fn memory_bytes(&self) -> usize {
        let index_entry = std::mem::size_of::<(u64, u32)>() + 1;
        let collision_entry = std::mem::size_of::<(u64, Vec<u32>)>() + 1;
        self.text.capacity()
            + self.ends.capacity() * std::mem::size_of::<u64>()
            + self.ids.as_ref().map_or(0, |ids| ids.capacity() * std::mem::size_of::<u32>())
            + self.index.capacity() * index_entry
            + self.collisions.capacity() * collision_entry
            + self.collisions.values().map(|v| v.capacity() * std::mem::size_of::<u32>()).sum::<usize>()
    }

    /// A vocabulary of `symbols` with the ascending `ids` (one each) and `next_id` (above every
    /// id), as a snapshot holds it; the text names the problem if they do not form one.
    pub fn from_parts(ids: &[u32], symbols: &[&str], next_id: u32) -> std::result::Result<Vocabulary, String> {
        if ids.len() != symbols.len() {
            return Err(format!("{} ids for {} symbols", ids.len(), symbols.len()));
        }
        let mut vocab = Vocabulary::new();
        vocab.text.reserve(symbols.iter().map(|s| s.len()).sum());
        vocab.ends.reserve(symbols.len());
        vocab.index.reserve(symbols.len());
        for (&id, symbol) in ids.iter().zip(symbols) {
            vocab.load_one(id, symbol)?;
        }
        if next_id < vocab.next_id || next_id > MAX_SYMBOL_ID.saturating_add(1) {
            return Err(format!("next_id {next_id} is not above every id"));
        }
        vocab.next_id = next_id;
        Ok(vocab)
    }

    /// The stored layout of this vocabulary.
    pub fn document(&self) -> VocabularyDocument {
        VocabularyDocument {
            symbol_to_id: self.iter().map(|(id, s)| (s.to_owned(), i64::from(id))).collect(),
            id_to_symbol: self.iter().map(|(id, s)| (id.to_string(), s.to_owned())).collect(),
            vocab_size: Some(self.len() as i64),
            next_id: i64::from(self.next_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn symbols(n: usize, prefix: &str) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    /// Checks every lookup of `vocab` against the oracle `pairs` (id, symbol).
    fn assert_matches(vocab: &Vocabulary, pairs: &[(u32, String)], next_id: u32) {
        assert_eq!(vocab.len(), pairs.len());
        assert_eq!(vocab.is_empty(), pairs.is_empty());
        assert_eq!(vocab.next_id(), next_id);
        let listed: Vec<(u32, String)> = vocab.iter().map(|(i, s)| (i, s.to_owned())).collect();
        assert_eq!(listed, pairs);
        for (id, symbol) in pairs {
            assert_eq!(vocab.id(symbol), Some(*id), "{symbol}");
            assert_eq!(vocab.symbol(*id), Some(symbol.as_str()));
        }
        assert_eq!(vocab.symbol(next_id), None);
        assert_eq!(vocab.id("never pushed"), None);
    }

    #[test]
    fn push_lookup_and_iterate() {
        let mut vocab = Vocabulary::new();
        assert_matches(&vocab, &[], 0);
        assert_eq!(vocab.push_all(&[]).unwrap(), 0);
        let first = ["a", "", "VCTR|ff", "日本語", "emoji 🎉"];
        assert_eq!(vocab.push_all(&first).unwrap(), 0);
        assert_eq!(vocab.push_all(&["b"]).unwrap(), 5);
        let oracle: Vec<(u32, String)> =
            first.iter().chain(["b"].iter()).enumerate().map(|(i, s)| (i as u32, s.to_string())).collect();
        assert_matches(&vocab, &oracle, 6);
        assert!(vocab.memory_bytes() > 0);
    }

    #[test]
    fn unseen_keeps_first_appearance_order_and_drops_known_and_repeats() {
        let mut vocab = Vocabulary::new();
        vocab.push_all(&["x", "y"]).unwrap();
        let found = vocab.unseen(["c", "x", "a", "c", "", "y", "a", "b", ""]);
        assert_eq!(found, ["c", "a", "", "b"]);
        assert!(vocab.unseen(["x", "y", "x"]).is_empty());
    }

    #[test]
    fn truncate_rolls_back_pushes_exactly() {
        let mut vocab = Vocabulary::new();
        let base = symbols(50, "s");
        vocab.push_all(&refs(&base)).unwrap();
        let before = vocab.clone();
        let extra = symbols(30, "t");
        let first = vocab.push_all(&refs(&extra)).unwrap();
        assert_eq!(first, 50);
        vocab.truncate(first);
        assert_eq!(vocab, before);
        let oracle: Vec<(u32, String)> = base.iter().enumerate().map(|(i, s)| (i as u32, s.clone())).collect();
        assert_matches(&vocab, &oracle, 50);
        for s in &extra {
            assert_eq!(vocab.id(s), None);
        }
        // The rolled-back ids are handed out again, to whatever comes next.
        assert_eq!(vocab.push_all(&["t3", "new"]).unwrap(), 50);
        assert_eq!(vocab.symbol(50), Some("t3"));
        assert_eq!(vocab.id("new"), Some(51));
        vocab.truncate(1000);
        assert_eq!(vocab.next_id(), 52);
        vocab.truncate(0);
        assert_matches(&vocab, &[], 0);
    }

    #[test]
    fn full_vocabulary_refuses_and_stays_unchanged() {
        let mut vocab = Vocabulary::new();
        vocab.load_one(MAX_SYMBOL_ID - 1, "last but one").unwrap();
        let before = vocab.clone();
        let err = vocab.push_all(&["a", "b"]).unwrap_err();
        assert_eq!(err, KatoError::VocabularyFull { next_id: u64::from(MAX_SYMBOL_ID), adding: 2 });
        assert!(err.to_string().contains(&MAX_SYMBOL_ID.to_string()), "{err}");
        assert_eq!(vocab, before);
        assert_eq!(vocab.push_all(&["a"]).unwrap(), MAX_SYMBOL_ID);
        assert_eq!(vocab.next_id() as u64, u64::from(MAX_SYMBOL_ID) + 1);
        assert_eq!(vocab.push_all(&["b"]).unwrap_err(), KatoError::VocabularyFull { next_id: 1 << 31, adding: 1 });
        assert_eq!(vocab.id("a"), Some(MAX_SYMBOL_ID));
    }

    #[test]
    fn gaps_from_a_loaded_document() {
        let mut vocab = Vocabulary::new();
        vocab.load_one(0, "zero").unwrap();
        vocab.load_one(7, "seven").unwrap();
        vocab.load_one(1_000_000_000, "big").unwrap();
        assert!(vocab.load_one(7, "again").is_err());
        assert!(vocab.load_one(2_000_000_000, "zero").is_err());
        assert_eq!(vocab.symbol(3), None);
        assert_eq!(vocab.symbol(7), Some("seven"));
        assert_eq!(vocab.push_all(&["next"]).unwrap(), 1_000_000_001);
        let oracle = vec![
            (0, "zero".to_string()),
            (7, "seven".to_string()),
            (1_000_000_000, "big".to_string()),
            (1_000_000_001, "next".to_string()),
        ];
        assert_matches(&vocab, &oracle, 1_000_000_002);
        vocab.truncate(8);
        assert_matches(&vocab, &oracle[..2], 8);
        vocab.truncate(1);
        assert_matches(&vocab, &oracle[..1], 1);
        // Dense again: ids equal positions.
        assert!(vocab.ids.is_none());
        assert_eq!(vocab.push_all(&["one"]).unwrap(), 1);
    }

    /// With a 2-bit hash nearly every symbol collides; lookups, truncation and re-pushes must still agree with the
    /// oracle.
    #[test]
    fn colliding_hashes() {
        let mut rng = Rng::new(11);
        let mut vocab = Vocabulary::with_hash_mask(0b11);
        let mut oracle: Vec<(u32, String)> = Vec::new();
        let mut serial = 0;
        for _ in 0..40 {
            if rng.below(3) == 0 && !oracle.is_empty() {
                let keep = rng.below(oracle.len() + 1);
                oracle.truncate(keep);
                vocab.truncate(keep as u32);
            } else {
                let batch: Vec<String> = (0..1 + rng.below(20)).map(|i| format!("c{serial}-{i}")).collect();
                serial += 1;
                let first = vocab.push_all(&refs(&batch)).unwrap();
                assert_eq!(first as usize, oracle.len());
                oracle.extend(batch.into_iter().enumerate().map(|(i, s)| (first + i as u32, s)));
            }
            assert_matches(&vocab, &oracle, oracle.len() as u32);
        }
        vocab.clear();
        assert_matches(&vocab, &[], 0);
    }

    #[test]
    fn document_round_trips() {
        let mut vocab = Vocabulary::new();
        vocab.push_all(&["a", "ß", "", "🎉"]).unwrap();
        let doc = vocab.document();
        assert_eq!(doc.vocab_size, Some(4));
        assert_eq!(doc.next_id, 4);
        assert_eq!(doc.id_to_symbol[3], ("3".to_string(), "🎉".to_string()));
        assert_eq!(doc.symbol_to_id[1], ("ß".to_string(), 1));
        assert_eq!(doc.into_vocabulary("test").unwrap(), vocab);
    }

    #[test]
    fn vocabulary_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Vocabulary>();
        check::<FileStore>();
    }
}
