//! Per-query launch tables for the count kernels of `kernels/match.cu`, built on the host: the
//! state's symbol table, the metric's tables, and the kernel variant that fits the state. The
//! device path uploads them; the host emulation of the kernels (tests) runs on them, so the
//! tables are tested together with the kernel source.

use crate::metrics::difflib::BIndex;
use crate::metrics::QuerySymbols;
use crate::store::MAX_SYMBOL_ID;

use super::limits::{DIFFLIB_BUCKETS, LCS_WORD_COUNTS, NO_SYMBOL, SHARED_TABLE_BYTES};

/// Bytes of dynamic shared memory ahead of the metric's tables: `keys` then `index`, rounded to
/// 16 bytes (the kernels compute the same offset).
fn symbol_table_bytes(capacity: usize) -> usize {
    (6 * capacity + 15) & !15
}

/// The state's distinct symbols as the kernels' open-addressing table (`kato_symbol_row` in
/// kernels/match.cu probes it exactly as [`SymbolHash::row`] does): capacity a power of two at
/// least twice the symbols, so every probe ends at an empty entry.
pub struct SymbolHash {
    /// A symbol id, or [`NO_SYMBOL`] for an empty entry.
    pub keys: Vec<u32>,
    /// The symbol's row in the metric's tables.
    pub index: Vec<u16>,
    /// `32 - log2(capacity)`: the hash is the top bits of `id * 0x9E3779B1`.
    pub shift: u32,
}

impl SymbolHash {
    const MIN_CAPACITY: usize = 16;

    /// `rows` gives each distinct symbol its row (< 65,536); symbols above [`MAX_SYMBOL_ID`]
    /// (unknown to the vocabulary: never in a pattern) are left out.
    fn new(rows: impl Iterator<Item = (u32, u16)>, distinct: usize) -> SymbolHash {
        let capacity = (2 * distinct).next_power_of_two().max(Self::MIN_CAPACITY);
        let mut table =
            SymbolHash { keys: vec![NO_SYMBOL; capacity], index: vec![0; capacity], shift: 32 - capacity.ilog2() };
        for (id, row) in rows.filter(|&(id, _)| id <= MAX_SYMBOL_ID) {
            let mut h = table.home(id);
            while table.keys[h] != NO_SYMBOL && table.keys[h] != id {
                h = (h + 1) & (capacity - 1);
            }
            table.keys[h] = id;
            table.index[h] = row;
        }
        table
    }

    fn home(&self, id: u32) -> usize {
        (id.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    pub fn capacity(&self) -> u32 {
        self.keys.len() as u32
    }

    /// The row of `id`, as the kernels find it.
    #[cfg(test)]
    pub fn row(&self, id: u32) -> Option<u16> {
        let mut h = self.home(id);
        loop {
            match self.keys[h] {
                key if key == id => return Some(self.index[h]),
                NO_SYMBOL => return None,
                _ => h = (h + 1) & (self.keys.len() - 1),
            }
        }
    }
}

/// The state's distinct symbol ids, ascending.
fn distinct_ids(state: &[u32]) -> impl Iterator<Item = u32> {
    let mut ids = state.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
}

/// Arguments of an `lcs_classes_*` launch for one state.
pub struct LcsTables {
    pub symbols: SymbolHash,
    /// Row r, u32 word k: bits `32k .. 32k + 32` of the positions of row r's symbol in the state
    /// (a u64 word is two of them, low half first, as both the host and the device store it).
    pub masks: Vec<u32>,
    pub distinct: u32,
    /// 32 (states of up to 32 symbols) or 64.
    pub word_bits: u32,
    pub words: u32,
    pub state_len: u32,
    pub masks_in_shared: bool,
}

impl LcsTables {
    /// `None` when the state is too long for the kernels: score it on the CPU.
    pub fn new(state: &[u32]) -> Option<LcsTables> {
        let (word_bits, words) = if state.len() <= 32 {
            (32, 1)
        } else {
            let needed = state.len().div_ceil(64);
            (64, *LCS_WORD_COUNTS.iter().find(|&&w| w >= needed)?)
        };
        let symbols = QuerySymbols::new(state);
        let distinct = symbols.distinct();
        let row_words = words * word_bits / 32;
        let mut masks = vec![0u32; distinct * row_words];
        for (k, &s) in state.iter().enumerate() {
            masks[symbols.slot(s) as usize * row_words + k / 32] |= 1 << (k % 32);
        }
        let hash = SymbolHash::new(distinct_ids(state).map(|id| (id, symbols.slot(id) as u16)), distinct);
        let masks_in_shared = symbol_table_bytes(hash.keys.len()) + masks.len() * 4 <= SHARED_TABLE_BYTES;
        Some(LcsTables {
            symbols: hash,
            masks,
            distinct: distinct as u32,
            word_bits: word_bits as u32,
            words: words as u32,
            state_len: state.len() as u32,
            masks_in_shared,
        })
    }

    /// Dynamic shared memory of the launch.
    pub fn shared_bytes(&self) -> u32 {
        let masks = if self.masks_in_shared { self.masks.len() * 4 } else { 0 };
        (symbol_table_bytes(self.symbols.keys.len()) + masks) as u32
    }
}

/// Arguments of a `difflib_classes_*` launch for one state (`b`).
pub struct DifflibTables {
    pub symbols: SymbolHash,
    pub b: Vec<u32>,
    /// `pos_starts[r] .. pos_starts[r + 1]`: where row r's positions are in `positions`
    /// (empty for a symbol autojunk found popular).
    pub pos_starts: Vec<u32>,
    /// Padded to an even count (the kernels copy it as u32 words).
    pub positions: Vec<u16>,
    pub bucket: u32,
}

impl DifflibTables {
    /// `None` when the state is longer than the kernels' largest bucket: score it on the CPU.
    pub fn new(state: &[u32], autojunk: bool) -> Option<DifflibTables> {
        let bucket = *DIFFLIB_BUCKETS.iter().find(|&&b| b >= state.len())?;
        let index = BIndex::new(state, autojunk);
        let distinct = index.symbols.distinct();
        let hash = SymbolHash::new(
            distinct_ids(state)
                .map(|id| (id, index.symbols.slot(id)))
                .filter(|&(_, slot)| slot != QuerySymbols::NONE)
                .map(|(id, slot)| (id, slot as u16)),
            distinct,
        );
        // Positions are < 256, so they fit u16; the kernel copies ceil(lb / 2) u32 words.
        let mut positions: Vec<u16> = index.positions.iter().map(|&p| p as u16).collect();
        positions.resize(positions.len().max(state.len()).next_multiple_of(2), 0);
        Some(DifflibTables {
            symbols: hash,
            b: state.to_vec(),
            pos_starts: index.starts,
            positions,
            bucket: bucket as u32,
        })
    }

    pub fn shared_bytes(&self) -> u32 {
        (symbol_table_bytes(self.symbols.keys.len()) + 4 * self.b.len() + 4 * self.pos_starts.len() + 2 * self.b.len())
            as u32
    }
}

/// The LCS kernel for `token_bytes`-byte tokens and a bit vector of `words` words of
/// `word_bits` bits.
pub fn lcs_kernel(token_bytes: u32, word_bits: u32, words: u32) -> String {
    format!("lcs_classes_u{}_w{word_bits}x{words}", 8 * token_bytes)
}

/// The difflib kernel for `token_bytes`-byte tokens and states of up to `bucket` symbols.
pub fn difflib_kernel(token_bytes: u32, bucket: u32) -> String {
    format!("difflib_classes_u{}_b{bucket}", 8 * token_bytes)
}

/// Every count kernel the tables can ask for: one per token width and word count or bucket.
pub fn count_kernels() -> Vec<String> {
    let mut names = Vec::new();
    for token_bytes in [2, 4] {
        names.push(lcs_kernel(token_bytes, 32, 1));
        names.extend(LCS_WORD_COUNTS.iter().map(|&w| lcs_kernel(token_bytes, 64, w as u32)));
    }
    for token_bytes in [2, 4] {
        names.extend(DIFFLIB_BUCKETS.iter().map(|&b| difflib_kernel(token_bytes, b as u32)));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_table_finds_every_state_symbol_and_nothing_else() {
        let state: Vec<u32> = (0..700).map(|k| (k * 7919) % 1_000_003).chain([MAX_SYMBOL_ID, u32::MAX - 3]).collect();
        let t = LcsTables::new(&state[..640]).unwrap();
        assert_eq!((t.word_bits, t.words), (64, 16));
        for (k, &id) in state[..640].iter().enumerate() {
            let row = t.symbols.row(id).expect("a state symbol") as usize;
            assert_ne!(t.masks[row * 32 + k / 32] & (1 << (k % 32)), 0);
        }
        assert_eq!(t.symbols.row(5), None);
        assert!(t.symbols.capacity() >= 2 * 640 && t.symbols.capacity().is_power_of_two());
    }

    #[test]
    fn variants_cover_the_state_with_the_fewest_words() {
        let words = |n: usize| LcsTables::new(&vec![1; n]).map(|t| (t.word_bits, t.words));
        assert_eq!(words(0), Some((32, 1)));
        assert_eq!(words(32), Some((32, 1)));
        assert_eq!(words(33), Some((64, 1)));
        assert_eq!(words(65), Some((64, 2)));
        assert_eq!(words(129), Some((64, 4)));
        assert_eq!(words(257), Some((64, 8)));
        assert_eq!(words(1024), Some((64, 16)));
        assert_eq!(words(1025), None);
        let bucket = |n: usize| DifflibTables::new(&vec![1; n], false).map(|t| t.bucket);
        assert_eq!((bucket(0), bucket(33), bucket(256), bucket(257)), (Some(32), Some(64), Some(256), None));
        for name in count_kernels() {
            assert!(super::super::KERNEL_SOURCE.contains(&format!("ENTRY({name},")), "{name} not in the kernel source");
        }
    }
}
