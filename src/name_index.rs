//! Name → slot lookup without a second copy of the names.
//!
//! A `HashMap<Box<str>, u32>` would store every name again (plus an allocation each: about 90
//! bytes per pattern for KATO's 45-byte names). This table stores only `(slot, hash)` per bucket,
//! 8 bytes, and compares names in the store's arena. Open addressing with linear probing;
//! removal shifts the following entries back, so there are no tombstones. The stored 32-bit hash
//! lets a probe skip most name comparisons and lets the table grow without reading any name.

use std::hash::{BuildHasher, RandomState};

use rayon::prelude::*;

use crate::store::PatternStore;

const EMPTY: u32 = u32::MAX;

/// Buckets per partition of [`NameIndex::build`]: 32 KiB, so a partition's probes stay in cache.
const PARTITION: usize = 4096;

/// Grow when more than 7/8 of the buckets are used.
const MAX_LOAD_NUM: usize = 7;
const MAX_LOAD_DEN: usize = 8;

/// The bucket a hash starts probing from in a table of `mask + 1` buckets: the high bits, as the
/// low ones are compared.
fn home(hash: u32, mask: usize) -> usize {
    ((hash as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

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

    fn home(&self, hash: u32) -> usize {
        home(hash, self.mask())
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
        if let Some(capacity) = self.capacity_for(additional) {
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

    /// The buckets for `additional` more names without growing in between.
    fn capacity_for(&self, additional: usize) -> Option<usize> {
        let needed = self.len + additional;
        (needed * MAX_LOAD_DEN > self.buckets.len() * MAX_LOAD_NUM)
            .then(|| (needed * MAX_LOAD_DEN / MAX_LOAD_NUM + 1).next_power_of_two().max(16))
    }

    /// The index of every slot of `store`, all of them live (a snapshot's load), built on every
    /// core; `Err(slot)` for a slot whose name another slot has too.
    ///
    /// Inserting 10M names one by one is one cache miss each into a 128 MB table (about 4 s).
    /// Instead the names are hashed in parallel, grouped by the partition of the table their
    /// probe starts in (a counting sort), and each partition filled by its own task. A probe
    /// that would run past its partition's end is set aside and placed afterwards by the
    /// ordinary insertion. Linear probing only needs every bucket between an entry's home and
    /// its place to be full, whatever the order of insertion, so the table is a valid one; it
    /// is not bucket for bucket the one sequential insertion would give, which nothing needs.
    pub fn build(store: &PatternStore) -> Result<NameIndex, u32> {
        let mut index = NameIndex::default();
        let n = store.slots();
        let Some(capacity) = index.capacity_for(n) else { return Ok(index) };
        let hashes: Vec<u32> = (0..n as u32).into_par_iter().map(|slot| index.hash(store.name(slot))).collect();
        let mut buckets: Vec<Bucket> = (0..capacity).into_par_iter().map(|_| VACANT).collect();
        let region = PARTITION.min(capacity);
        let partition = |hash: u32| home(hash, capacity - 1) / region;
        let mut starts = vec![0usize; capacity / region + 1];
        for &hash in &hashes {
            starts[partition(hash) + 1] += 1;
        }
        for p in 1..starts.len() {
            starts[p] += starts[p - 1];
        }
        // The hash travels with its slot: the partitions then read their entries in order.
        let mut grouped = vec![VACANT; n];
        let mut next = starts.clone();
        for (slot, &hash) in hashes.iter().enumerate() {
            let p = partition(hash);
            grouped[next[p]] = Bucket { slot: slot as u32, hash };
            next[p] += 1;
        }
        drop(hashes);
        let same = |a: u32, b: u32| store.name(a) == store.name(b);
        let spilled = buckets
            .par_chunks_mut(region)
            .enumerate()
            .map(|(p, local)| {
                let mut spilled = Vec::new();
                for &Bucket { slot, hash } in &grouped[starts[p]..starts[p + 1]] {
                    let mut at = home(hash, capacity - 1) - p * region;
                    loop {
                        let Some(bucket) = local.get_mut(at) else {
                            spilled.push(Bucket { slot, hash });
                            break;
                        };
                        if bucket.slot == EMPTY {
                            *bucket = Bucket { slot, hash };
                            break;
                        }
                        if bucket.hash == hash && same(bucket.slot, slot) {
                            return Err(slot);
                        }
                        at += 1;
                    }
                }
                Ok(spilled)
            })
            .collect::<Result<Vec<_>, u32>>()?;
        index.buckets = buckets;
        let spilled: Vec<Bucket> = spilled.into_iter().flatten().collect();
        index.len = n - spilled.len();
        for bucket in spilled {
            if index.contains(store.name(bucket.slot), store) {
                return Err(bucket.slot);
            }
            index.place(bucket);
            index.len += 1;
        }
        Ok(index)
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

    /// A table built in partitions finds what one built by insertion finds, including names
    /// placed after their partition overflowed, and removal and insertion go on from it.
    #[test]
    fn a_built_index_agrees_with_a_hash_map() {
        let mut rng = Rng::new(6);
        for n in [0, 1, 3000, 60_000] {
            let mut store = PatternStore::new();
            let mut oracle: HashMap<String, u32> = HashMap::new();
            while oracle.len() < n {
                let name = format!("PTRN|{:x}", rng.below(1 << 40));
                if !oracle.contains_key(&name) {
                    oracle.insert(name.clone(), store.push(&name, &[]));
                }
            }
            let mut index = NameIndex::build(&store).map_err(|_| "a repeat").unwrap();
            assert_eq!(index.len(), n);
            for (name, &slot) in &oracle {
                assert_eq!(index.get(name, &store), Some(slot), "{name}");
            }
            assert_eq!(index.get("PTRN|absent", &store), None);
            let names: Vec<String> = oracle.keys().cloned().collect();
            for name in names.iter().filter(|_| rng.below(2) == 0) {
                assert_eq!(index.remove(name, &store), oracle.remove(name));
            }
            for k in 0..1000 {
                let name = format!("PTRN|new{k}");
                let slot = store.push(&name, &[]);
                index.insert(&name, slot);
                oracle.insert(name, slot);
            }
            for (name, &slot) in &oracle {
                assert_eq!(index.get(name, &store), Some(slot), "{name}");
            }
            for name in names.iter().filter(|name| !oracle.contains_key(*name)) {
                assert_eq!(index.get(name, &store), None);
            }
        }
    }

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
