//! The device tier: a mirror of the bulk tier's columnar store in device memory, and the query
//! that scores it with the kernels. Generic over a [`Backend`] (device memory + launches), so the
//! same logic runs on the CUDA driver and, in the tests, on the host emulation of the kernels.
//!
//! The device holds slots `[0, mirrored)`; the CPU scans everything after them (the recent tier
//! and any bulk patterns that did not fit), so every pattern is scored exactly once.

use super::error::CudaError;
use super::plan::{DifflibPlan, LcsPlan};
use super::OVER_LIMIT;
use crate::device::CapacityInfo;
use crate::metrics::Metric;
use crate::store::PatternStore;

/// The device buffers the tier uses. Element types are fixed per buffer (see [`Buf::elem_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buf {
    /// u32 symbol ids of the mirrored patterns, concatenated.
    Tokens,
    /// u64, mirrored + 1 entries.
    Offsets,
    /// u8 per mirrored slot.
    Live,
    /// u32 per mirrored slot: the slots ordered by pattern length (thread k scores order[k]).
    Order,
    /// u32 per mirrored slot: the count kernels' output.
    Counts,
    /// u32 per mirrored slot: `select_matches` output.
    OutSlots,
    OutCounts,
    /// One u32.
    OutLen,
    /// 256 u32: one radix-select pass (`key_histogram`).
    Histogram,
    /// Per-state tables (see [`super::plan`]).
    Masks,
    State,
    SlotOfId,
    PosStarts,
    Positions,
}

impl Buf {
    pub const ALL: [Buf; 14] = [
        Buf::Tokens,
        Buf::Offsets,
        Buf::Live,
        Buf::Order,
        Buf::Counts,
        Buf::OutSlots,
        Buf::OutCounts,
        Buf::OutLen,
        Buf::Histogram,
        Buf::Masks,
        Buf::State,
        Buf::SlotOfId,
        Buf::PosStarts,
        Buf::Positions,
    ];

    pub fn elem_bytes(self) -> usize {
        match self {
            Buf::Offsets | Buf::Masks => 8,
            Buf::Live => 1,
            Buf::Positions => 2,
            _ => 4,
        }
    }
}

/// Arguments of one count-kernel launch over slots `[0, slots)`; the tables are already in their
/// buffers.
#[derive(Clone, Copy, Debug)]
pub enum CountLaunch {
    Lcs { table_len: u32, words: u32, state_len: u32 },
    Difflib { state_len: u32, table_len: u32 },
}

/// Device memory and kernel launches.
pub trait Backend: Send {
    /// `(free, total)` device memory in bytes.
    fn memory_info(&self) -> Result<(u64, u64), CudaError>;
    /// Capacity of `buf` in elements.
    fn capacity(&self, buf: Buf) -> usize;
    /// Makes `buf` hold at least `elems` elements, keeping its first `keep` elements.
    fn reserve(&mut self, buf: Buf, elems: usize, keep: usize) -> Result<(), CudaError>;
    /// Copies `data` (elements of the buffer's type, as bytes) to `buf` at element `at`.
    fn write(&mut self, buf: Buf, at: usize, data: &[u8]) -> Result<(), CudaError>;
    /// Copies `out.len()` bytes from `buf` at element `at`.
    fn read(&mut self, buf: Buf, at: usize, out: &mut [u8]) -> Result<(), CudaError>;
    fn launch_count(&mut self, slots: u32, threshold: f64, launch: CountLaunch) -> Result<(), CudaError>;
    /// One radix-select pass: `Histogram[b]` += passing positions whose rank key matches
    /// `prefix` on `mask` and has byte `b` at `shift`.
    fn launch_histogram(
        &mut self,
        slots: u32,
        state_len: u32,
        threshold: f64,
        prefix: u64,
        mask: u64,
        shift: u32,
    ) -> Result<(), CudaError>;
    /// Appends passing `(slot, M)` pairs with rank key <= `max_key` to `OutSlots`/`OutCounts`.
    fn launch_select(&mut self, slots: u32, state_len: u32, threshold: f64, max_key: u64) -> Result<(), CudaError>;
}

fn bytes_of<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: only called with u8/u16/u32/i32/u64 slices, which have no padding or invalid bit
    // patterns; the byte view covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) }
}

/// Capacity rules from the configuration (KATO's `GPUMemoryManager` fields).
#[derive(Clone, Copy, Debug)]
pub struct TierLimits {
    pub memory_usage_fraction: f64,
    pub growth_buffer_fraction: f64,
    pub force_max_patterns: Option<usize>,
}

pub struct DeviceTier<B: Backend> {
    backend: B,
    limits: TierLimits,
    budget_bytes: u64,
    mirrored: usize,
    mirrored_tokens: usize,
    /// Mirrored slots whose pattern is still stored.
    live_mirrored: usize,
    overflow: usize,
}

impl<B: Backend> DeviceTier<B> {
    /// The memory budget is `free × memory_usage_fraction` at creation.
    pub fn new(backend: B, limits: TierLimits) -> Result<Self, CudaError> {
        let (free, _) = backend.memory_info()?;
        let budget_bytes = (free as f64 * limits.memory_usage_fraction) as u64;
        let mut tier = DeviceTier {
            backend,
            limits,
            budget_bytes,
            mirrored: 0,
            mirrored_tokens: 0,
            live_mirrored: 0,
            overflow: 0,
        };
        tier.backend.reserve(Buf::Offsets, 1, 0)?;
        tier.backend.write(Buf::Offsets, 0, bytes_of(&[0u64]))?;
        tier.backend.reserve(Buf::OutLen, 1, 0)?;
        tier.backend.reserve(Buf::Histogram, 256, 0)?;
        Ok(tier)
    }

    pub fn mirrored(&self) -> usize {
        self.mirrored
    }

    fn used_bytes(&self) -> u64 {
        Buf::ALL.iter().map(|&b| (self.backend.capacity(b) * b.elem_bytes()) as u64).sum()
    }

    pub fn capacity_info(&self) -> CapacityInfo {
        let (device_free_bytes, device_total_bytes) = self.backend.memory_info().unwrap_or((0, 0));
        CapacityInfo {
            device_free_bytes,
            device_total_bytes,
            mirrored_patterns: self.mirrored,
            live_mirrored_patterns: self.live_mirrored,
            mirrored_symbols: self.mirrored_tokens,
            capacity_patterns: self.backend.capacity(Buf::Live),
            capacity_symbols: self.backend.capacity(Buf::Tokens),
            budget_bytes: self.budget_bytes,
            used_bytes: self.used_bytes(),
            overflow_patterns: self.overflow,
        }
    }

    /// Bytes per pattern slot across the per-slot buffers.
    const SLOT_BYTES: usize = 8 + 1 + 4 * 4;

    /// Grows the per-pattern buffers to hold `slots` patterns and `tokens` symbols, with the
    /// growth buffer on top; `Ok(false)` when that exceeds the budget or `force_max_patterns`.
    fn make_room(&mut self, slots: usize, tokens: usize) -> Result<bool, CudaError> {
        if self.limits.force_max_patterns.is_some_and(|max| slots > max) {
            return Ok(false);
        }
        if slots <= self.backend.capacity(Buf::Live) && tokens <= self.backend.capacity(Buf::Tokens) {
            return Ok(true);
        }
        let grow = |n: usize| n + (n as f64 * self.limits.growth_buffer_fraction) as usize;
        let mut want_slots = grow(slots).max(self.backend.capacity(Buf::Live));
        if let Some(max) = self.limits.force_max_patterns {
            want_slots = want_slots.min(max);
        }
        let want_tokens = grow(tokens).max(self.backend.capacity(Buf::Tokens));
        let per_slot_now: usize =
            self.backend.capacity(Buf::Live) * Self::SLOT_BYTES + self.backend.capacity(Buf::Tokens) * 4;
        let needed = (want_slots * Self::SLOT_BYTES + want_tokens * 4) as u64;
        let others = self.used_bytes().saturating_sub(per_slot_now as u64);
        if needed + others > self.budget_bytes {
            return Ok(false);
        }
        let keep_slots = self.mirrored;
        self.backend.reserve(Buf::Tokens, want_tokens, self.mirrored_tokens)?;
        self.backend.reserve(Buf::Offsets, want_slots + 1, keep_slots + 1)?;
        self.backend.reserve(Buf::Live, want_slots, keep_slots)?;
        for buf in [Buf::Order, Buf::Counts, Buf::OutSlots, Buf::OutCounts] {
            self.backend.reserve(buf, want_slots, 0)?;
        }
        Ok(true)
    }

    /// Mirrors bulk slots `[mirrored, bulk_end)` of `store` in batches; what does not fit stays
    /// with the CPU. Returns how many patterns were uploaded.
    pub fn sync(&mut self, store: &PatternStore, bulk_end: usize) -> Result<usize, CudaError> {
        let start = self.mirrored;
        if bulk_end <= start {
            return Ok(0);
        }
        let mut end = match self.limits.force_max_patterns {
            Some(max) => bulk_end.min(max.max(start)),
            None => bulk_end,
        };
        let new_tokens: usize = (start as u32..end as u32).map(|s| store.len_of(s)).sum();
        if !self.make_room(end, self.mirrored_tokens + new_tokens)? {
            // Over the memory budget: mirror the prefix that fits the current capacity.
            let (cap_slots, cap_tokens) = (self.backend.capacity(Buf::Live), self.backend.capacity(Buf::Tokens));
            let limit = end;
            end = start;
            let mut tokens = self.mirrored_tokens;
            while end < limit && end < cap_slots && tokens + store.len_of(end as u32) <= cap_tokens {
                tokens += store.len_of(end as u32);
                end += 1;
            }
        }
        const BATCH: usize = 1 << 16;
        let mut at = start;
        while at < end {
            let batch_end = (at + BATCH).min(end);
            let mut tokens = Vec::new();
            let mut offsets = Vec::with_capacity(batch_end - at);
            let mut live = Vec::with_capacity(batch_end - at);
            for slot in at as u32..batch_end as u32 {
                store.extend_tokens(slot, &mut tokens);
                offsets.push((self.mirrored_tokens + tokens.len()) as u64);
                live.push(u8::from(store.is_live(slot)));
            }
            self.backend.write(Buf::Tokens, self.mirrored_tokens, bytes_of(&tokens))?;
            self.backend.write(Buf::Offsets, at + 1, bytes_of(&offsets))?;
            self.backend.write(Buf::Live, at, bytes_of(&live))?;
            self.mirrored_tokens += tokens.len();
            self.live_mirrored += live.iter().map(|&l| usize::from(l)).sum::<usize>();
            at = batch_end;
            self.mirrored = at;
        }
        self.overflow = bulk_end - end;
        self.upload_order(store)?;
        Ok(end - start)
    }

    /// Orders the mirrored slots by pattern length (counting sort; lengths past
    /// `LONGEST_BUCKET` share the last bucket), so each warp gets patterns of similar length.
    fn upload_order(&mut self, store: &PatternStore) -> Result<(), CudaError> {
        const LONGEST_BUCKET: usize = 4096;
        let bucket = |slot: u32| store.len_of(slot).min(LONGEST_BUCKET);
        let mut starts = vec![0usize; LONGEST_BUCKET + 2];
        for slot in 0..self.mirrored as u32 {
            starts[bucket(slot) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut order = vec![0u32; self.mirrored];
        for slot in 0..self.mirrored as u32 {
            let b = bucket(slot);
            order[starts[b]] = slot;
            starts[b] += 1;
        }
        self.backend.write(Buf::Order, 0, bytes_of(&order))
    }

    /// Marks a mirrored slot removed on the device.
    pub fn kill(&mut self, slot: usize) -> Result<(), CudaError> {
        if slot < self.mirrored {
            self.backend.write(Buf::Live, slot, &[0u8])?;
            // The matcher kills a slot once, when its live pattern is removed.
            self.live_mirrored = self.live_mirrored.saturating_sub(1);
        }
        Ok(())
    }

    /// Forgets the mirror (after a compaction or a clear); the next [`DeviceTier::sync`] uploads
    /// again from slot 0 into the buffers already allocated.
    pub fn reset(&mut self) {
        self.mirrored = 0;
        self.mirrored_tokens = 0;
        self.live_mirrored = 0;
        self.overflow = 0;
    }

    /// Scores the mirrored slots against `state`: `(slot, M)` for every match — with `limit`,
    /// only the best `limit` by similarity, plus any tied with the last — in no order, or
    /// `None` when the state does not fit the kernels (the caller scores on the CPU): too long
    /// for a plan, or refused by a kernel's own guard (`OVER_LIMIT`).
    pub fn query(
        &mut self,
        metric: Metric,
        state: &[u32],
        threshold: f64,
        limit: Option<usize>,
    ) -> Result<Option<Vec<(u32, u32)>>, CudaError> {
        let slots = self.mirrored as u32;
        let launch = match metric {
            Metric::Lcs => {
                let Some(plan) = LcsPlan::new(state) else { return Ok(None) };
                self.upload(Buf::Masks, &plan.masks)?;
                CountLaunch::Lcs { table_len: plan.table_len, words: plan.words, state_len: plan.state_len }
            }
            Metric::Difflib { autojunk } => {
                let Some(plan) = DifflibPlan::new(state, autojunk) else { return Ok(None) };
                self.upload(Buf::State, &plan.b)?;
                self.upload(Buf::SlotOfId, &plan.slot_of_id)?;
                self.upload(Buf::PosStarts, &plan.pos_starts)?;
                self.upload(Buf::Positions, &plan.positions)?;
                CountLaunch::Difflib { state_len: state.len() as u32, table_len: plan.slot_of_id.len() as u32 }
            }
        };
        if slots == 0 {
            return Ok(Some(Vec::new()));
        }
        self.backend.launch_count(slots, threshold, launch)?;
        let state_len = state.len() as u32;
        let max_key = match limit {
            Some(k) => self.kth_best_key(slots, state_len, threshold, k)?,
            None => u64::MAX,
        };
        self.backend.write(Buf::OutLen, 0, bytes_of(&[0u32]))?;
        self.backend.launch_select(slots, state_len, threshold, max_key)?;
        let mut len = [0u8; 4];
        self.backend.read(Buf::OutLen, 0, &mut len)?;
        let len = u32::from_ne_bytes(len) as usize;
        let mut found_slots = vec![0u8; len * 4];
        let mut found_counts = vec![0u8; len * 4];
        self.backend.read(Buf::OutSlots, 0, &mut found_slots)?;
        self.backend.read(Buf::OutCounts, 0, &mut found_counts)?;
        let word = |b: &[u8], k: usize| u32::from_ne_bytes([b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]]);
        let found: Vec<(u32, u32)> = (0..len).map(|k| (word(&found_slots, k), word(&found_counts, k))).collect();
        if found.iter().any(|&(_, m)| m == OVER_LIMIT) {
            // A kernel refused the launch as past its limits (the plans should have sent this
            // state to the CPU): nothing it returned is used, the CPU scores the query.
            log::warn!(
                "kato_gpu: a {metric:?} kernel refused a state of {} symbols as over its limits; scored on the CPU",
                state.len()
            );
            return Ok(None);
        }
        Ok(Some(found))
    }

    /// The rank key of the `k`-th best passing match (radix select, eight bits a pass, on the
    /// device), or all ones when fewer than `k` pass — so that selecting keys up to it keeps the
    /// best `k` and their ties. Only 256 counters cross the bus per pass.
    fn kth_best_key(&mut self, slots: u32, state_len: u32, threshold: f64, k: usize) -> Result<u64, CudaError> {
        if k == 0 {
            return Ok(0); // no key is <= 0 for a similarity in [0, 1]: nothing is selected
        }
        let (mut prefix, mut mask, mut rank) = (0u64, 0u64, k as u64);
        for shift in (0..64).step_by(8).rev() {
            self.backend.write(Buf::Histogram, 0, bytes_of(&[0u32; 256]))?;
            self.backend.launch_histogram(slots, state_len, threshold, prefix, mask, shift)?;
            let mut raw = [0u8; 256 * 4];
            self.backend.read(Buf::Histogram, 0, &mut raw)?;
            let counts = raw.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as u64);
            if shift == 56 && counts.clone().sum::<u64>() <= rank {
                return Ok(u64::MAX);
            }
            let mut below = 0;
            let mut bucket = 255;
            for (b, count) in counts.enumerate() {
                if below + count >= rank {
                    bucket = b as u64;
                    break;
                }
                below += count;
            }
            rank -= below;
            prefix |= bucket << shift;
            mask |= 0xFF << shift;
        }
        Ok(prefix)
    }

    fn upload<T: Copy>(&mut self, buf: Buf, values: &[T]) -> Result<(), CudaError> {
        // Never zero-sized: a launch always gets a valid pointer.
        self.backend.reserve(buf, values.len().max(1), 0)?;
        self.backend.write(buf, 0, bytes_of(values))
    }
}
