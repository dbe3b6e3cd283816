//! Name → slot lookup without a second copy of the names.
//!
//! A `HashMap<Box<str>, u32>` would store every name again (plus an allocation each: about 90
//! bytes per pattern for KATO's 45-byte names). This table stores only `(slot, hash)` per bucket,
//! 8 bytes, and compares names in the store's arena. Open addressing with linear probing;
//! removal shifts the following entries back, so there are no tombstones. The stored 32-bit hash
//! lets a probe skip most name comparisons and lets the table grow without reading any name.

use std::hash::{BuildHasher, RandomState};

use crate::store::PatternStore;

const EMPTY: u32 = u32::MAX;

/// Grow when more than 7/8 of the buckets are used.
const MAX_LOAD_NUM: usize = 7;
const MAX_LOAD_DEN: usize = 8;

#[derive(Clone, Copy)]
struct Bucket {
    slot: u32,
    hash: u32,
}

const VACANT: Bucket = Bucket { slot: EMPTY, hash: 0 };

#[derive(Default)]
pub struct NameIndex {
    buckets: Vec<Bucket>,
    len: usize,
    hasher: RandomState,
}

impl NameIndex {
    fn hash(&self, name: &str) -> u32 {
        let h = self.hasher.hash_one(name);
        (h ^ (h >> 32)) as u32
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The bucket a hash starts probing from: the high bits, as the low ones are compared.
    fn home(&self, hash: u32) -> usize {
        ((hash as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Index of the bucket holding `name`, if any.
    fn find(&self, name: &str, store: &PatternStore) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let hash = self.hash(name);
        let mut at = self.home(hash);
        loop {
            let bucket = self.buckets[at];
            if bucket.slot == EMPTY {
                return None;
            }
            if bucket.hash == hash && store.name(bucket.slot) == name {
                return Some(at);
            }
            at = (at + 1) & self.mask();
        }
    }

    pub fn get(&self, name: &str, store: &PatternStore) -> Option<u32> {
        self.find(name, store).map(|at| self.buckets[at].slot)
    }

    pub fn contains(&self, name: &str, store: &PatternStore) -> bool {
        self.find(name, store).is_some()
    }

    /// Makes room for `additional` more names without growing in between.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len + additional;
        if needed * MAX_LOAD_DEN > self.buckets.len() * MAX_LOAD_NUM {
            let capacity = (needed * MAX_LOAD_DEN / MAX_LOAD_NUM + 1).next_power_of_two().max(16);
            self.rehash(capacity);
        }
    }

    fn rehash(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![VACANT; capacity]);
        for bucket in old.into_iter().filter(|b| b.slot != EMPTY) {
            self.place(bucket);
        }
    }

    fn place(&mut self, bucket: Bucket) {
        let mut at = self.home(bucket.hash);
        while self.buckets[at].slot != EMPTY {
            at = (at + 1) & self.mask();
        }
        self.buckets[at] = bucket;
    }

    /// Records `name` (at `slot` of the store); the caller has checked it is not there yet.
    pub fn insert(&mut self, name: &str, slot: u32) {
        self.reserve(1);
        let hash = self.hash(name);
        self.place(Bucket { slot, hash });
        self.len += 1;
    }

    /// Forgets `name`; returns its slot.
    pub fn remove(&mut self, name: &str, store: &PatternStore) -> Option<u32> {
        let mut hole = self.find(name, store)?;
        let slot = self.buckets[hole].slot;
        self.buckets[hole] = VACANT;
        self.len -= 1;
        // Backward-shift: move each following entry of the probe run into the hole when the hole
        // lies between its home and where it sits.
        let mut at = (hole + 1) & self.mask();
        while self.buckets[at].slot != EMPTY {
            let home = self.home(self.buckets[at].hash);
            let distance_here = at.wrapping_sub(home) & self.mask();
            let distance_hole = hole.wrapping_sub(home) & self.mask();
            if distance_hole < distance_here {
                self.buckets[hole] = self.buckets[at];
                self.buckets[at] = VACANT;
                hole = at;
            }
            at = (at + 1) & self.mask();
        }
        Some(slot)
    }

    /// Follows a compaction of the store (`remap[old] = new slot`).
    pub fn remap(&mut self, remap: &[u32]) {
        for bucket in self.buckets.iter_mut().filter(|b| b.slot != EMPTY) {
            bucket.slot = remap[bucket.slot as usize];
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use std::collections::HashMap;

    /// Against a HashMap, through growth, removals (backward shifts) and a compaction.
    #[test]
    fn agrees_with_a_hash_map() {
        let mut rng = Rng::new(5);
        let mut store = PatternStore::new();
        let mut index = NameIndex::default();
        let mut oracle: HashMap<String, u32> = HashMap::new();
        for round in 0..4 {
            for _ in 0..5000 {
                let name = format!("PTRN|{:x}", rng.below(20_000));
                if oracle.contains_key(&name) {
                    assert!(index.contains(&name, &store));
                    continue;
                }
                let slot = store.push(&name, &[]);
                index.insert(&name, slot);
                oracle.insert(name, slot);
            }
            let names: Vec<String> = oracle.keys().cloned().collect();
            for name in names.iter().filter(|_| rng.below(3) == 0) {
                let slot = oracle.remove(name).unwrap();
                assert_eq!(index.remove(name, &store), Some(slot));
                assert_eq!(index.remove(name, &store), None);
                store.kill(slot);
            }
            if round == 2 {
                let remap = store.compact();
                index.remap(&remap);
                for slot in oracle.values_mut() {
                    *slot = remap[*slot as usize];
                }
            }
            assert_eq!(index.len(), oracle.len());
            for (name, &slot) in &oracle {
                assert_eq!(index.get(name, &store), Some(slot), "{name}");
            }
            for _ in 0..2000 {
                let name = format!("PTRN|{:x}", 20_000 + rng.below(20_000));
                assert_eq!(index.get(&name, &store), None);
            }
        }
    }
}
