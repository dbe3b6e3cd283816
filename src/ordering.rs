//! The one definition of result order: similarity descending, then pattern name ascending
//! (Python's `str` order, which is UTF-8 byte order). Every tier's results are sorted here.

use std::cmp::Ordering;

/// A pattern that passed the threshold.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    pub similarity: f64,
    /// The name's first 16 bytes, big-endian, zero-padded: decides most name comparisons
    /// without touching the name arena.
    pub name_key: u128,
    pub slot: u32,
}

/// The ordering key of a name (see [`Hit::name_key`]).
pub fn name_key(name: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = name.len().min(16);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// Result order. `name_of` resolves the rare ties of [`Hit::name_key`] (names sharing 16 bytes).
#[inline]
pub fn compare<'a>(a: &Hit, b: &Hit, name_of: &impl Fn(u32) -> &'a str) -> Ordering {
    b.similarity
        .total_cmp(&a.similarity)
        .then_with(|| a.name_key.cmp(&b.name_key))
        .then_with(|| if a.slot == b.slot { Ordering::Equal } else { name_of(a.slot).cmp(name_of(b.slot)) })
}

/// Sorts `hits` into result order and keeps the first `limit` (all when `None`).
pub fn sort_and_truncate<'a>(hits: &mut Vec<Hit>, limit: Option<usize>, name_of: &(impl Fn(u32) -> &'a str + Sync)) {
    use rayon::slice::ParallelSliceMut;
    if let Some(k) = limit {
        if k == 0 {
            hits.clear();
            return;
        }
        if hits.len() > k {
            hits.select_nth_unstable_by(k - 1, |a, b| compare(a, b, name_of));
            hits.truncate(k);
        }
    }
    if hits.len() > 1 << 15 {
        hits.par_sort_unstable_by(|a, b| compare(a, b, name_of));
    } else {
        hits.sort_unstable_by(|a, b| compare(a, b, name_of));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_key_orders_like_python_strings() {
        let names = ["", "A", "AB", "AB\0", "ABCDEFGHIJKLMNOPQ", "ABCDEFGHIJKLMNOPR", "a", "é", "PTRN|00", "PTRN|0a"];
        for x in names {
            for y in names {
                let by_key = name_key(x).cmp(&name_key(y));
                // The key never contradicts the true order; equal keys defer to the names.
                assert!(by_key == Ordering::Equal || by_key == x.cmp(y), "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn sorts_by_similarity_then_name() {
        let names = ["b", "a", "c", "PTRN|1234567890abcdefX", "PTRN|1234567890abcdefA"];
        let sims = [0.5, 0.5, 0.9, 0.1, 0.1];
        let mut hits: Vec<Hit> = (0..5).map(|i| Hit { similarity: sims[i], name_key: name_key(names[i]), slot: i as u32 }).collect();
        let name_of = |slot: u32| names[slot as usize];
        sort_and_truncate(&mut hits, None, &name_of);
        let order: Vec<&str> = hits.iter().map(|h| names[h.slot as usize]).collect();
        assert_eq!(order, ["c", "a", "b", "PTRN|1234567890abcdefA", "PTRN|1234567890abcdefX"]);
        sort_and_truncate(&mut hits, Some(2), &name_of);
        assert_eq!(hits.len(), 2);
    }
}
