//! Independent oracles and a seeded generator for the core's unit tests (compiled for tests only).
//! The oracles are deliberately naive: quadratic dynamic programming and a literal transcription
//! of CPython's algorithm, sharing no code with the fast paths they check.

use std::collections::HashMap;

/// SplitMix64: small, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), or 0 when n == 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn sequence(&mut self, max_len: usize, alphabet: usize) -> Vec<u32> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.below(alphabet) as u32).collect()
    }
}

/// Longest common subsequence by the textbook O(n·m) table.
pub fn naive_lcs(a: &[u32], b: &[u32]) -> usize {
    let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i][j] =
                if a[i - 1] == b[j - 1] { table[i - 1][j - 1] + 1 } else { table[i - 1][j].max(table[i][j - 1]) };
        }
    }
    table[a.len()][b.len()]
}

/// CPython's SequenceMatcher (isjunk=None) transcribed with hash maps, recursion and lists.
pub fn naive_difflib(a: &[u32], b: &[u32], autojunk: bool) -> usize {
    let mut b2j: HashMap<u32, Vec<usize>> = HashMap::new();
    for (j, &x) in b.iter().enumerate() {
        b2j.entry(x).or_default().push(j);
    }
    if autojunk && b.len() >= 200 {
        let ntest = b.len() / 100 + 1;
        b2j.retain(|_, idxs| idxs.len() <= ntest);
    }
    fn longest(
        a: &[u32],
        b: &[u32],
        b2j: &HashMap<u32, Vec<usize>>,
        alo: usize,
        ahi: usize,
        blo: usize,
        bhi: usize,
    ) -> (usize, usize, usize) {
        let (mut bi, mut bj, mut bs) = (alo, blo, 0usize);
        let mut j2len: HashMap<usize, usize> = HashMap::new();
        for (i, symbol) in (alo..ahi).zip(&a[alo..ahi]) {
            let mut new: HashMap<usize, usize> = HashMap::new();
            if let Some(js) = b2j.get(symbol) {
                for &j in js {
                    if j < blo {
                        continue;
                    }
                    if j >= bhi {
                        break;
                    }
                    let k = if j == 0 { 0 } else { *j2len.get(&(j - 1)).unwrap_or(&0) } + 1;
                    new.insert(j, k);
                    if k > bs {
                        bi = i + 1 - k;
                        bj = j + 1 - k;
                        bs = k;
                    }
                }
            }
            j2len = new;
        }
        while bi > alo && bj > blo && a[bi - 1] == b[bj - 1] {
            bi -= 1;
            bj -= 1;
            bs += 1;
        }
        while bi + bs < ahi && bj + bs < bhi && a[bi + bs] == b[bj + bs] {
            bs += 1;
        }
        (bi, bj, bs)
    }
    fn recurse(
        a: &[u32],
        b: &[u32],
        b2j: &HashMap<u32, Vec<usize>>,
        alo: usize,
        ahi: usize,
        blo: usize,
        bhi: usize,
    ) -> usize {
        let (i, j, k) = longest(a, b, b2j, alo, ahi, blo, bhi);
        if k == 0 {
            return 0;
        }
        let mut total = k;
        if alo < i && blo < j {
            total += recurse(a, b, b2j, alo, i, blo, j);
        }
        if i + k < ahi && j + k < bhi {
            total += recurse(a, b, b2j, i + k, ahi, j + k, bhi);
        }
        total
    }
    recurse(a, b, &b2j, 0, a.len(), 0, b.len())
}
