//! The one definition of result order: similarity descending, then pattern name ascending
//! (Python's `str` order, which is UTF-8 byte order). Every tier's results are sorted here.
//!
//! Comparing names in the arena for every comparison would dominate large results, so each slot
//! carries an order key: `2 * (rank + 1)` for names ranked at the last [`NameOrder::rebuild`]
//! (rank = position in name order), `2 * p + 1` for names added since, where `p` counts the
//! ranked names below them (so the key falls between its two ranked neighbours). Key order never contradicts name order; only two names added since the last
//! rebuild can share a key, and those are compared by name.

use std::cmp::Ordering;

use rayon::slice::ParallelSliceMut;

use crate::store::PatternStore;

/// A pattern that passed the threshold.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    pub similarity: f64,
    pub order_key: u64,
    pub slot: u32,
}

/// Per-slot order keys (see the module documentation).
#[derive(Default)]
pub struct NameOrder {
    keys: Vec<u64>,
    /// Slots ranked at the last rebuild, in name order. Removed slots may remain until the next
    /// rebuild; their names are still in the store, so searching past them stays correct.
    ranked: Vec<u32>,
    /// Keys given since the last rebuild (odd keys, which can tie and then need a name compare).
    unranked: usize,
}

impl NameOrder {
    #[inline]
    pub fn key(&self, slot: u32) -> u64 {
        self.keys[slot as usize]
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
        NameOrder { keys, ranked: merged, unranked: 0 }
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
    }

    pub fn clear(&mut self) {
        *self = NameOrder::default();
    }

    pub fn memory_bytes(&self) -> usize {
        self.keys.capacity() * 8 + self.ranked.capacity() * 4
    }
}

/// Result order.
#[inline]
pub fn compare(a: &Hit, b: &Hit, store: &PatternStore) -> Ordering {
    b.similarity
        .total_cmp(&a.similarity)
        .then_with(|| a.order_key.cmp(&b.order_key))
        .then_with(|| if a.slot == b.slot { Ordering::Equal } else { store.name(a.slot).cmp(store.name(b.slot)) })
}

/// Sorts `hits` into result order and keeps the first `limit` (all when `None`).
pub fn sort_and_truncate(hits: &mut Vec<Hit>, limit: Option<usize>, store: &PatternStore) {
    if let Some(k) = limit {
        if k == 0 {
            hits.clear();
            return;
        }
        if hits.len() > k {
            hits.select_nth_unstable_by(k - 1, |a, b| compare(a, b, store));
            hits.truncate(k);
        }
    }
    if hits.len() > 1 << 15 {
        hits.par_sort_unstable_by(|a, b| compare(a, b, store));
    } else {
        hits.sort_unstable_by(|a, b| compare(a, b, store));
    }
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
                    assert!(by_key == Ordering::Equal || by_key == by_name, "{} {}", names[a as usize], names[b as usize]);
                    if round % 2 == 1 && a != b && by_name != Ordering::Equal {
                        assert_ne!(by_key, Ordering::Equal, "after a rebuild every key is distinct");
                    }
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
        let hits = |order: &NameOrder| -> Vec<Hit> {
            (0..5).map(|i| Hit { similarity: sims[i], order_key: order.key(i as u32), slot: i as u32 }).collect()
        };
        for rebuilt in [false, true] {
            if rebuilt {
                order.rebuild(&store);
            }
            let mut h = hits(&order);
            sort_and_truncate(&mut h, None, &store);
            let got: Vec<&str> = h.iter().map(|h| names[h.slot as usize]).collect();
            assert_eq!(got, ["c", "a", "b", "PTRN|1234567890abcdefA", "PTRN|1234567890abcdefX"]);
            sort_and_truncate(&mut h, Some(2), &store);
            assert_eq!(h.len(), 2);
        }
    }
}
