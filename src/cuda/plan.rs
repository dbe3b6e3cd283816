//! Per-state launch tables for the kernels in `kernels/match.cu`, built on the host. The device
//! path uploads them; the host emulation of the kernels (tests) passes them directly, so the
//! tables are tested together with the kernel source.

use crate::metrics::difflib::BIndex;
use crate::metrics::QuerySymbols;
use crate::store::MAX_SYMBOL_ID;

use super::{MAX_DIFFLIB_STATE, MAX_LCS_WORDS};

/// Largest per-state table uploaded to the device; beyond it the state is scored on the CPU.
const MAX_TABLE_BYTES: usize = 64 << 20;

/// Dense table size covering every stored-symbol id of the state (unknown-symbol sentinels above
/// [`MAX_SYMBOL_ID`] never occur in a pattern and are left out).
fn table_len(state: &[u32]) -> usize {
    state.iter().copied().filter(|&s| s <= MAX_SYMBOL_ID).max().map_or(0, |m| m as usize + 1)
}

/// Arguments of `lcs_count` for one state.
pub struct LcsPlan {
    /// `masks[id * words + w]`: bit k set iff `state[64 * w + k] == id`.
    pub masks: Vec<u64>,
    pub table_len: u32,
    pub words: u32,
    pub state_len: u32,
}

impl LcsPlan {
    /// `None` when the state is too long for the kernel or its table too large: score it on
    /// the CPU.
    pub fn new(state: &[u32]) -> Option<LcsPlan> {
        let words = state.len().div_ceil(64).max(1);
        let table_len = table_len(state);
        if words > MAX_LCS_WORDS || table_len * words * 8 > MAX_TABLE_BYTES {
            return None;
        }
        let mut masks = vec![0u64; table_len * words];
        for (pos, &s) in state.iter().enumerate() {
            if (s as usize) < table_len {
                masks[s as usize * words + pos / 64] |= 1u64 << (pos % 64);
            }
        }
        Some(LcsPlan { masks, table_len: table_len as u32, words: words as u32, state_len: state.len() as u32 })
    }
}

/// Arguments of `difflib_count` for one state (`b`).
pub struct DifflibPlan {
    pub b: Vec<u32>,
    /// Slot of each id in the state's index, -1 when absent (ids >= `slot_of_id.len()` too).
    pub slot_of_id: Vec<i32>,
    pub pos_starts: Vec<u32>,
    pub positions: Vec<u16>,
}

impl DifflibPlan {
    /// `None` when the state is longer than the kernel's `j2len` rows: score it on the CPU.
    pub fn new(state: &[u32], autojunk: bool) -> Option<DifflibPlan> {
        let table_len = table_len(state);
        if state.len() > MAX_DIFFLIB_STATE || table_len * 4 > MAX_TABLE_BYTES {
            return None;
        }
        let index = BIndex::new(state, autojunk);
        let slot_of_id = (0..table_len as u32)
            .map(|id| match index.symbols.slot(id) {
                QuerySymbols::NONE => -1,
                slot => slot as i32,
            })
            .collect();
        // Positions are < MAX_DIFFLIB_STATE, so they fit u16.
        let positions = index.positions.iter().map(|&p| p as u16).collect();
        Some(DifflibPlan { b: state.to_vec(), slot_of_id, pos_starts: index.starts, positions })
    }
}
