//! The device tier: a mirror of the bulk tier's store in device memory, laid out for the kernels
//! (warp groups, see kernels/match.cu), and the query pipeline that scores it. Generic over a
//! [`Backend`] (device memory + launches), so the same logic runs on the CUDA driver and, in the
//! tests, on the host emulation of the kernels.
//!
//! The device holds slots `[0, mirrored)`; the CPU scans everything after them (the recent tier
//! and any bulk patterns that did not fit), so every pattern is scored exactly once.
//!
//! Queries share the mirror and run concurrently, each on one of [`QUERY_STREAMS`] streams with
//! its own scratch buffers (a query takes a free stream, or waits for one); changes to the mirror
//! (syncs, removals, resets) take `&mut self`, so they wait for the queries in flight (the caller
//! holds the tier behind a read-write lock), and reach the device before the next query starts.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use rayon::prelude::*;

use super::error::CudaError;
use super::limits::{
    CONTROL_WORDS, HISTOGRAM_CLASSES, MAX_BATCH_STATES, MAX_THREADS_PER_BLOCK, NO_CLASS, NO_SLOT, OVER_LIMIT,
    STATE_HEADER_WORDS,
};
use super::plan::{difflib_kernel, lcs_kernel, DifflibTables, LcsTables};
use crate::device::CapacityInfo;
use crate::metrics::Metric;
use crate::ordering::{Candidate, LengthRow, QueryPlan};
use crate::store::PatternStore;

// The kernels read a length row's "no M passes" as KATO_NO_CLASS.
const _: () = assert!(LengthRow::NONE == NO_CLASS);

/// Patterns per warp group: one per lane.
pub const GROUP: usize = 32;

/// Queries the device runs at once, each on its own stream with its own scratch buffers.
pub const QUERY_STREAMS: usize = 4;

/// The device buffers the tier uses. Element types are fixed per buffer (see [`Buf::elem_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buf {
    /// The mirrored patterns' symbols, warp-group interleaved: u16 or u32 by the store's width,
    /// so counted in bytes.
    Tokens,
    /// u64 per warp group: where its first row starts in `Tokens` (in tokens).
    GroupBase,
    /// Per position (32 per group): the store slot, or [`NO_SLOT`] for an empty lane.
    LaneSlot,
    /// Per position: the pattern's length (0 for an empty lane).
    LaneLen,
    /// u8 per position: 0 once removed (and for empty lanes).
    Live,
    /// u32 per position: the count kernel's class (or M), or [`NO_CLASS`].
    Classes,
    /// u32 per position: `select_candidates`' output.
    OutSlots,
    OutClasses,
    /// u32: `[out_len, cutoff, histogram (HISTOGRAM_CLASSES + 1 buckets)]`.
    Control,
    /// u32 words: the query's tables (plan rows, class table, symbol table, metric tables),
    /// packed and uploaded in one copy.
    Tables,
}

impl Buf {
    /// The mirror: one of each, written by syncs and removals.
    pub const MIRROR: [Buf; 5] = [Buf::Tokens, Buf::GroupBase, Buf::LaneSlot, Buf::LaneLen, Buf::Live];
    /// A query's scratch: one of each per query stream.
    pub const SCRATCH: [Buf; 5] = [Buf::Classes, Buf::OutSlots, Buf::OutClasses, Buf::Control, Buf::Tables];

    pub fn elem_bytes(self) -> usize {
        match self {
            Buf::Tokens | Buf::Live => 1,
            Buf::GroupBase => 8,
            _ => 4,
        }
    }
}

/// A run of u32 words in [`Buf::Tables`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Words {
    pub at: usize,
    pub len: usize,
}

/// The count kernel a state needs: the smallest variant of its metric that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CountKernel {
    Lcs { word_bits: u32, words: u32 },
    Difflib { bucket: u32 },
}

/// A state's part of a count launch, as the kernels read it (`StateHeader` in
/// kernels/match.cu): where its tables are in [`Buf::Tables`] (word offsets) and its scalars.
/// `metric` is, for LCS: masks, distinct, masks_in_shared, state_len; for difflib: b, lb,
/// pos_starts, slots, positions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StateHeader {
    pub rows: u32,
    pub rows_len: u32,
    pub entry_class: u32,
    pub has_classes: u32,
    pub keys: u32,
    pub index: u32,
    pub capacity: u32,
    pub shift: u32,
    /// The state's histogram buckets; 0: no top-k on the device (every passing position is
    /// selected).
    pub buckets: u32,
    pub metric: [u32; 7],
}

const _: () = assert!(std::mem::size_of::<StateHeader>() == 4 * STATE_HEADER_WORDS);

/// One count-kernel launch: `states` states (each with its header in [`Buf::Tables`], all
/// needing `kernel`) over every mirrored position.
#[derive(Clone, Debug)]
pub struct CountLaunch {
    /// 2 or 4.
    pub token_bytes: u32,
    pub kernel: CountKernel,
    pub positions: u32,
    pub states: u32,
    /// The states' headers, `STATE_HEADER_WORDS` words each.
    pub headers: Words,
    /// The largest of the states' shared memory.
    pub shared_bytes: u32,
}

impl CountLaunch {
    /// The kernel's name in kernels/match.cu.
    pub fn kernel_name(&self) -> String {
        match self.kernel {
            CountKernel::Lcs { word_bits, words } => lcs_kernel(self.token_bytes, word_bits, words),
            CountKernel::Difflib { bucket } => difflib_kernel(self.token_bytes, bucket),
        }
    }
}

/// A state's selected candidates as the device returns them: `(slots, classes)`.
pub type Selected = (Vec<u32>, Vec<u32>);

/// The pipeline launches after the count: every state of the batch, on `stream`'s scratch.
#[derive(Clone, Copy, Debug)]
pub struct BatchLaunch {
    pub positions: u32,
    pub states: u32,
    pub headers: Words,
    /// The largest bucket count of the states (the histogram's shared memory), 0 when none has
    /// a top-k.
    pub buckets: u32,
}

/// Device memory and kernel launches. The mirror's buffers change only through `&mut self`; a
/// query works on one query stream (`stream < QUERY_STREAMS`) with that stream's scratch
/// buffers, through `&self`, and the tier never gives one stream to two queries at once. On a
/// stream nothing waits for the device until [`Backend::read_results`].
pub trait Backend: Send + Sync {
    /// `(free, total)` device memory in bytes.
    fn memory_info(&self) -> Result<(u64, u64), CudaError>;
    /// Device memory the driver reserves for the kernels' per-thread local memory when they
    /// first launch (counted against the tier's budget).
    fn local_memory_bytes(&self) -> u64;
    /// Capacity in elements of a mirror buffer (`stream` ignored), or of `stream`'s scratch
    /// buffer `buf`.
    fn capacity(&self, buf: Buf, stream: usize) -> usize;
    /// Makes mirror buffer `buf` hold at least `elems` elements, keeping its first `keep`.
    fn reserve(&mut self, buf: Buf, elems: usize, keep: usize) -> Result<(), CudaError>;
    /// Copies `data` (elements of the buffer's type, as bytes) to mirror buffer `buf` at `at`.
    fn write(&mut self, buf: Buf, at: usize, data: &[u8]) -> Result<(), CudaError>;
    /// Returns once every write to the mirror has reached the device.
    fn flush(&mut self) -> Result<(), CudaError>;
    /// Makes `stream`'s scratch buffer `buf` hold at least `elems` elements (contents not kept).
    fn reserve_scratch(&self, stream: usize, buf: Buf, elems: usize) -> Result<(), CudaError>;
    /// Copies `data` to `stream`'s scratch buffer `buf` at element `at`.
    fn write_scratch(&self, stream: usize, buf: Buf, at: usize, data: &[u8]) -> Result<(), CudaError>;
    /// Frees every query stream's per-position scratch (classes and outputs), which a batch may
    /// have grown into the budget's spare room: the mirror needs that room to grow. The next
    /// query on a stream reserves it again.
    fn release_scratch(&mut self);
    /// Sets `elems` elements of `stream`'s scratch buffer `buf` from `at` to zero.
    fn zero_scratch(&self, stream: usize, buf: Buf, at: usize, elems: usize) -> Result<(), CudaError>;
    fn launch_count(&self, stream: usize, launch: &CountLaunch) -> Result<(), CudaError>;
    /// `class_histogram` over each state's positions into its control block's counters.
    fn launch_histogram(&self, stream: usize, batch: &BatchLaunch) -> Result<(), CudaError>;
    /// `choose_cutoff`: each state's cut-off for its best `limit`.
    fn launch_cutoff(&self, stream: usize, batch: &BatchLaunch, limit: u32) -> Result<(), CudaError>;
    /// `select_candidates` into each state's part of `OutSlots`/`OutClasses`, the count in its
    /// control block.
    fn launch_select(&self, stream: usize, batch: &BatchLaunch) -> Result<(), CudaError>;
    /// Waits for `stream` once and returns each state's selected `(slots, classes)`: the counts
    /// and the first `expected` pairs of each come back in that one round trip; more, if there
    /// are, in a second.
    fn read_results(&self, stream: usize, batch: &BatchLaunch, expected: usize) -> Result<Vec<Selected>, CudaError>;
}

pub(crate) fn bytes_of<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: only called with u8/u16/u32/u64 slices, which have no padding or invalid bit
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

/// Where the slots of one upload go: sorted by length, then cut into warp groups.
struct Layout {
    /// The slots in position order (`GROUP` per group; the last group may be short).
    slots: Vec<u32>,
    /// Rows (the longest length) of each group.
    rows: Vec<usize>,
}

impl Layout {
    fn new(store: &PatternStore, start: usize, end: usize) -> Layout {
        let mut slots: Vec<u32> = (start as u32..end as u32).collect();
        slots.sort_by_key(|&s| store.len_of(s));
        let rows = slots.chunks(GROUP).map(|g| g.iter().map(|&s| store.len_of(s)).max().unwrap_or(0)).collect();
        Layout { slots, rows }
    }

    fn token_rows(&self) -> usize {
        self.rows.iter().sum()
    }
}

pub struct DeviceTier<B: Backend> {
    backend: B,
    limits: TierLimits,
    budget_bytes: u64,
    /// Slots `[0, mirrored)` are on the device.
    mirrored: usize,
    /// Symbols of the mirrored patterns (padding excluded).
    mirrored_tokens: usize,
    /// Mirrored slots whose pattern is still stored.
    live_mirrored: usize,
    overflow: usize,
    /// Warp groups in use, and token rows they take (`GROUP` tokens a row).
    groups: usize,
    token_rows: usize,
    /// 2 or 4: the store's width when the mirror was made.
    token_bytes: usize,
    /// The longest mirrored pattern (the plan's rows cover lengths up to it).
    longest: usize,
    /// Position of each mirrored slot, for removals.
    position_of: Vec<u32>,
    /// Query streams not in use, and a signal when one is returned.
    free_streams: Mutex<Vec<usize>>,
    stream_returned: Condvar,
    /// Held while a query stream grows its scratch into the budget's spare room.
    scratch_growth: Mutex<()>,
    /// `(mirrored, groups)` after the latest uploads since the last reset, ascending: slots
    /// `[0, mirrored)` occupy exactly the first `groups` warp groups. A query names the
    /// boundary it read before a sync may have moved it; the last [`Self::BOUNDARIES`] are kept.
    boundaries: Vec<(usize, usize)>,
}

impl<B: Backend> DeviceTier<B> {
    /// The memory budget is `free × memory_usage_fraction` at creation, less what the driver
    /// keeps for the kernels' local memory.
    pub fn new(backend: B, limits: TierLimits) -> Result<Self, CudaError> {
        let (free, _) = backend.memory_info()?;
        let budget_bytes =
            ((free as f64 * limits.memory_usage_fraction) as u64).saturating_sub(backend.local_memory_bytes());
        let tier = DeviceTier {
            backend,
            limits,
            budget_bytes,
            mirrored: 0,
            mirrored_tokens: 0,
            live_mirrored: 0,
            overflow: 0,
            groups: 0,
            token_rows: 0,
            token_bytes: 2,
            longest: 0,
            position_of: Vec::new(),
            free_streams: Mutex::new((0..QUERY_STREAMS).collect()),
            stream_returned: Condvar::new(),
            scratch_growth: Mutex::new(()),
            boundaries: vec![(0, 0)],
        };
        for stream in 0..QUERY_STREAMS {
            tier.backend.reserve_scratch(stream, Buf::Control, CONTROL_WORDS)?;
            tier.backend.reserve_scratch(stream, Buf::Tables, 1 << 12)?;
        }
        Ok(tier)
    }

    pub fn mirrored(&self) -> usize {
        self.mirrored
    }

    #[cfg(all(test, feature = "kernel-emulation"))]
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn used_bytes(&self) -> u64 {
        let mirror: u64 = Buf::MIRROR.iter().map(|&b| (self.backend.capacity(b, 0) * b.elem_bytes()) as u64).sum();
        let scratch: u64 = (0..QUERY_STREAMS)
            .flat_map(|stream| Buf::SCRATCH.map(|b| (self.backend.capacity(b, stream) * b.elem_bytes()) as u64))
            .sum();
        mirror + scratch + self.backend.local_memory_bytes()
    }

    pub fn capacity_info(&self) -> CapacityInfo {
        let (device_free_bytes, device_total_bytes) = self.backend.memory_info().unwrap_or((0, 0));
        CapacityInfo {
            device_free_bytes,
            device_total_bytes,
            mirrored_patterns: self.mirrored,
            live_mirrored_patterns: self.live_mirrored,
            mirrored_symbols: self.mirrored_tokens,
            capacity_patterns: self.backend.capacity(Buf::LaneSlot, 0),
            capacity_symbols: self.backend.capacity(Buf::Tokens, 0) / self.token_bytes,
            budget_bytes: self.budget_bytes,
            used_bytes: self.used_bytes(),
            overflow_patterns: self.overflow,
        }
    }

    const BOUNDARIES: usize = 64;

    /// Bytes per position: the mirror's slot, length and live byte, and each query stream's
    /// class and two outputs for one state (a batch of more takes the budget's spare room).
    const POSITION_BYTES: usize = 4 + 4 + 1 + QUERY_STREAMS * (4 + 4 + 4);

    /// Whether `positions` positions in `groups` groups and `token_rows` rows fit the budget (and
    /// `force_max_patterns`), growing the buffers by the growth fraction when they must grow.
    fn make_room(&mut self, slots: usize, groups: usize, token_rows: usize) -> Result<bool, CudaError> {
        if self.limits.force_max_patterns.is_some_and(|max| slots > max) {
            return Ok(false);
        }
        let positions = groups * GROUP;
        let token_bytes = token_rows * GROUP * self.token_bytes;
        let fits_now = positions <= self.backend.capacity(Buf::LaneSlot, 0)
            && groups <= self.backend.capacity(Buf::GroupBase, 0)
            && token_bytes <= self.backend.capacity(Buf::Tokens, 0);
        if fits_now {
            return Ok(true);
        }
        let grow = |n: usize| n + (n as f64 * self.limits.growth_buffer_fraction) as usize;
        let want_groups = grow(groups).max(self.backend.capacity(Buf::GroupBase, 0));
        let want_positions = (want_groups * GROUP).max(self.backend.capacity(Buf::LaneSlot, 0));
        let want_token_bytes = grow(token_bytes).max(self.backend.capacity(Buf::Tokens, 0));
        // What the growth replaces: the mirror, and the per-position scratch (one state per query
        // stream is part of `needed`; what batches grew past that is freed below, so the grown
        // mirror and the streams' scratch stay within the budget).
        let now: u64 = Buf::MIRROR.iter().map(|&b| (self.backend.capacity(b, 0) * b.elem_bytes()) as u64).sum::<u64>()
            + self.scratch_bytes();
        let needed = (want_token_bytes + want_groups * 8 + want_positions * Self::POSITION_BYTES) as u64;
        if needed + self.used_bytes().saturating_sub(now) > self.budget_bytes {
            return Ok(false);
        }
        self.backend.release_scratch();
        let (keep_groups, keep_positions) = (self.groups, self.groups * GROUP);
        self.backend.reserve(Buf::Tokens, want_token_bytes, self.token_rows * GROUP * self.token_bytes)?;
        self.backend.reserve(Buf::GroupBase, want_groups, keep_groups)?;
        for buf in [Buf::LaneSlot, Buf::LaneLen, Buf::Live] {
            self.backend.reserve(buf, want_positions, keep_positions)?;
        }
        Ok(true)
    }

    /// Mirrors bulk slots `[mirrored, bulk_end)` of `store`; what does not fit stays with the
    /// CPU. Returns how many patterns were uploaded. A store that has widened to u32 symbols
    /// since the mirror was made is mirrored again from slot 0, as u32.
    pub fn sync(&mut self, store: &PatternStore, bulk_end: usize) -> Result<usize, CudaError> {
        if store.token_width() != self.token_bytes {
            self.reset();
            self.token_bytes = store.token_width();
        }
        let start = self.mirrored;
        if bulk_end <= start {
            return Ok(0);
        }
        let mut end = match self.limits.force_max_patterns {
            Some(max) => bulk_end.min(max.max(start)),
            None => bulk_end,
        };
        let mut layout = Layout::new(store, start, end);
        // Over the budget: the longest prefix of the slots that fits (binary search).
        if !self.make_room(end, self.groups + layout.rows.len(), self.token_rows + layout.token_rows())? {
            let (mut fits, mut fails) = (start, end);
            while fails - fits > 1 {
                let mid = fits + (fails - fits) / 2;
                let trial = Layout::new(store, start, mid);
                if self.make_room(mid, self.groups + trial.rows.len(), self.token_rows + trial.token_rows())? {
                    fits = mid;
                } else {
                    fails = mid;
                }
            }
            end = fits;
            layout = Layout::new(store, start, end);
        }
        self.upload(store, &layout)?;
        self.backend.flush()?;
        self.mirrored = end;
        if self.boundaries.len() == Self::BOUNDARIES {
            self.boundaries.remove(0);
        }
        self.boundaries.push((self.mirrored, self.groups));
        self.overflow = bulk_end - end;
        Ok(end - start)
    }

    /// Writes `layout`'s groups after the groups already on the device, in batches.
    fn upload(&mut self, store: &PatternStore, layout: &Layout) -> Result<(), CudaError> {
        const BATCH_GROUPS: usize = 2048;
        if self.position_of.len() < self.mirrored + layout.slots.len() {
            self.position_of.resize(self.mirrored + layout.slots.len(), NO_SLOT);
        }
        let mut pattern = Vec::new();
        for (batch, rows) in layout.slots.chunks(GROUP * BATCH_GROUPS).zip(layout.rows.chunks(BATCH_GROUPS)) {
            let batch_rows: usize = rows.iter().sum();
            let mut tokens = vec![0u32; batch_rows * GROUP];
            let mut bases = Vec::with_capacity(rows.len());
            let positions = rows.len() * GROUP;
            let (mut lane_slot, mut lane_len, mut live) =
                (vec![NO_SLOT; positions], vec![0u32; positions], vec![0u8; positions]);
            let mut row = 0;
            for (g, (group, &group_rows)) in batch.chunks(GROUP).zip(rows).enumerate() {
                bases.push(((self.token_rows + row) * GROUP) as u64);
                for (lane, &slot) in group.iter().enumerate() {
                    pattern.clear();
                    store.extend_tokens(slot, &mut pattern);
                    for (i, &t) in pattern.iter().enumerate() {
                        tokens[(row + i) * GROUP + lane] = t;
                    }
                    let at = g * GROUP + lane;
                    (lane_slot[at], lane_len[at], live[at]) =
                        (slot, pattern.len() as u32, u8::from(store.is_live(slot)));
                    self.position_of[slot as usize] = ((self.groups + g) * GROUP + lane) as u32;
                    self.mirrored_tokens += pattern.len();
                    self.live_mirrored += usize::from(store.is_live(slot));
                    self.longest = self.longest.max(pattern.len());
                }
                row += group_rows;
            }
            let token_at = self.token_rows * GROUP * self.token_bytes;
            if self.token_bytes == 2 {
                let narrow: Vec<u16> = tokens.iter().map(|&t| t as u16).collect();
                self.backend.write(Buf::Tokens, token_at, bytes_of(&narrow))?;
            } else {
                self.backend.write(Buf::Tokens, token_at, bytes_of(&tokens))?;
            }
            let first = self.groups * GROUP;
            self.backend.write(Buf::GroupBase, self.groups, bytes_of(&bases))?;
            self.backend.write(Buf::LaneSlot, first, bytes_of(&lane_slot))?;
            self.backend.write(Buf::LaneLen, first, bytes_of(&lane_len))?;
            self.backend.write(Buf::Live, first, &live)?;
            self.groups += rows.len();
            self.token_rows += batch_rows;
        }
        Ok(())
    }

    /// Marks a mirrored slot removed on the device.
    pub fn kill(&mut self, slot: usize) -> Result<(), CudaError> {
        if slot < self.mirrored {
            self.backend.write(Buf::Live, self.position_of[slot] as usize, &[0u8])?;
            self.backend.flush()?;
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
        self.groups = 0;
        self.token_rows = 0;
        self.longest = 0;
        self.position_of.clear();
        self.boundaries = vec![(0, 0)];
    }

    /// Scores mirrored slots `[0, upto)` against `state` under `plan` (the query's plan, built
    /// over every stored length): the candidate of every such pattern that passes — with
    /// `limit`, only those in the best classes holding at least `limit` of them (the best
    /// `limit` and their ties) — in no order; or `None` when the caller must score those slots
    /// on the CPU: the state is too long for the kernels, a kernel's own guard refused it, or
    /// `upto` is not where an upload ended since the last reset. (The matcher always calls
    /// [`DeviceTier::query_batch`]; this is the one-state form the tests use.)
    #[cfg(all(test, feature = "kernel-emulation"))]
    pub fn query(
        &self,
        metric: Metric,
        state: &[u32],
        plan: &QueryPlan,
        limit: Option<usize>,
        upto: usize,
    ) -> Result<Option<Vec<Candidate>>, CudaError> {
        Ok(self.query_batch(metric, &[(state, plan)], limit, upto)?.pop().flatten())
    }

    /// [`DeviceTier::query`] for many `(state, plan)` pairs at once, answer `k` for pair `k`.
    /// States that need the same count kernel are scored together, up to
    /// [`MAX_BATCH_STATES`] per launch (as many as the budget's spare room gives scratch for),
    /// so the patterns stream from device memory once per batch; batches of different kernels
    /// run on different query streams at once.
    pub fn query_batch(
        &self,
        metric: Metric,
        queries: &[(&[u32], &QueryPlan)],
        limit: Option<usize>,
        upto: usize,
    ) -> Result<Vec<Option<Vec<Candidate>>>, CudaError> {
        let mut answers: Vec<Option<Vec<Candidate>>> = (0..queries.len()).map(|_| None).collect();
        let Ok(at) = self.boundaries.binary_search_by_key(&upto, |&(slots, _)| slots) else { return Ok(answers) };
        let positions = self.boundaries[at].1 * GROUP;
        let tables: Vec<Option<StateTables>> =
            queries.iter().map(|&(state, _)| StateTables::new(metric, state)).collect();
        if positions == 0 || limit == Some(0) {
            for (answer, t) in answers.iter_mut().zip(&tables) {
                *answer = t.as_ref().map(|_| Vec::new());
            }
            return Ok(answers);
        }
        let mut by_kernel: BTreeMap<CountKernel, Vec<usize>> = BTreeMap::new();
        for (k, t) in tables.iter().enumerate() {
            if let Some(t) = t {
                by_kernel.entry(t.kernel()).or_default().push(k);
            }
        }
        let batches: Vec<&[usize]> = by_kernel.values().flat_map(|members| members.chunks(MAX_BATCH_STATES)).collect();
        let batch = |members: &&[usize]| {
            let stream = self.take_stream();
            let outcome = self.run_batch(stream, members, &tables, queries, positions, limit);
            self.free_streams.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
            self.stream_returned.notify_one();
            outcome
        };
        let outcomes: Vec<_> = if batches.len() == 1 {
            batches.iter().map(batch).collect()
        } else {
            batches.par_iter().map(batch).collect()
        };
        for outcome in outcomes {
            for (k, candidates) in outcome? {
                if candidates.is_none() {
                    // A kernel refused the state as past its limits (the tables should have sent it
                    // to the CPU): nothing it returned is used, the CPU scores that query.
                    log::warn!(
                        "kato_gpu: a {metric:?} kernel refused a state of {} symbols as over its limits; scored on \
                         the CPU",
                        queries[k].0.len()
                    );
                }
                answers[k] = candidates;
            }
        }
        Ok(answers)
    }
}

/// One state's tables for the count kernels, before they are packed.
enum StateTables {
    Lcs(LcsTables),
    Difflib(DifflibTables),
}

impl StateTables {
    /// `None` when the state is too long for the kernels.
    fn new(metric: Metric, state: &[u32]) -> Option<StateTables> {
        match metric {
            Metric::Lcs => LcsTables::new(state).map(StateTables::Lcs),
            Metric::Difflib { autojunk } => DifflibTables::new(state, autojunk).map(StateTables::Difflib),
        }
    }

    fn kernel(&self) -> CountKernel {
        match self {
            StateTables::Lcs(t) => CountKernel::Lcs { word_bits: t.word_bits, words: t.words },
            StateTables::Difflib(t) => CountKernel::Difflib { bucket: t.bucket },
        }
    }

    fn shared_bytes(&self) -> u32 {
        match self {
            StateTables::Lcs(t) => t.shared_bytes(),
            StateTables::Difflib(t) => t.shared_bytes(),
        }
    }

    /// Packs the state's tables and `plan`'s rows (lengths up to `longest`) into `tables`; its
    /// header.
    fn pack(&self, plan: &QueryPlan, longest: usize, buckets: u32, tables: &mut TableBuilder) -> StateHeader {
        let rows = tables.push(&plan.device_rows(longest));
        let entry_class = tables.push(plan.entry_classes());
        let (symbols, metric) = match self {
            StateTables::Lcs(t) => {
                let masks = tables.push(&t.masks);
                (&t.symbols, [masks.at as u32, t.distinct, u32::from(t.masks_in_shared), t.state_len, 0, 0, 0])
            }
            StateTables::Difflib(t) => {
                let b = tables.push(&t.b);
                let pos_starts = tables.push(&t.pos_starts);
                let positions = tables.push_u16(&t.positions);
                let slots = t.pos_starts.len() as u32 - 1;
                (&t.symbols, [b.at as u32, t.b.len() as u32, pos_starts.at as u32, slots, positions.at as u32, 0, 0])
            }
        };
        StateHeader {
            rows: rows.at as u32,
            rows_len: longest as u32 + 1,
            entry_class: entry_class.at as u32,
            has_classes: u32::from(plan.has_classes()),
            keys: tables.push(&symbols.keys).at as u32,
            index: tables.push_u16(&symbols.index).at as u32,
            capacity: symbols.capacity(),
            shift: symbols.shift,
            buckets,
            metric,
        }
    }
}

impl StateHeader {
    fn words(&self) -> [u32; STATE_HEADER_WORDS] {
        let mut words = [0; STATE_HEADER_WORDS];
        words[..9].copy_from_slice(&[
            self.rows,
            self.rows_len,
            self.entry_class,
            self.has_classes,
            self.keys,
            self.index,
            self.capacity,
            self.shift,
            self.buckets,
        ]);
        words[9..].copy_from_slice(&self.metric);
        words
    }
}

impl<B: Backend> DeviceTier<B> {
    /// A free query stream, waiting (asleep) while all are in use.
    fn take_stream(&self) -> usize {
        let mut free = self.free_streams.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(stream) = free.pop() {
                return stream;
            }
            free = self.stream_returned.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Per-position scratch bytes of every query stream now.
    fn scratch_bytes(&self) -> u64 {
        (0..QUERY_STREAMS)
            .flat_map(|stream| Self::PER_POSITION_SCRATCH.map(|b| (self.backend.capacity(b, stream) * 4) as u64))
            .sum()
    }

    const PER_POSITION_SCRATCH: [Buf; 3] = [Buf::Classes, Buf::OutSlots, Buf::OutClasses];

    /// How many states `stream` scores per launch, with its scratch reserved for them: one
    /// state always (the mirror's budget counts one per stream), more — up to all of
    /// `table_words` (each state's packed tables) — as far as the budget's spare room allows.
    fn batch_width(&self, stream: usize, positions: usize, table_words: &[usize]) -> Result<usize, CudaError> {
        // One stream at a time decides, so two never spend the same spare room.
        let _deciding = self.scratch_growth.lock().unwrap_or_else(|e| e.into_inner());
        let spare = self.budget_bytes.saturating_sub(self.used_bytes());
        let held = |buf: Buf| self.backend.capacity(buf, stream);
        let widest_tables = table_words.iter().copied().max().unwrap_or(0);
        // What `width` states need beyond what the stream holds, in bytes.
        let growth = |width: usize| {
            let more = |buf: Buf, elems: usize| (elems.saturating_sub(held(buf)) * buf.elem_bytes()) as u64;
            Self::PER_POSITION_SCRATCH.iter().map(|&b| more(b, width * positions)).sum::<u64>()
                + more(Buf::Control, width * CONTROL_WORDS)
                + more(Buf::Tables, width * widest_tables)
        };
        let mut width = table_words.len().max(1);
        while width > 1 && growth(width) > spare {
            width -= 1;
        }
        let one_state = self.backend.capacity(Buf::LaneSlot, 0).max(positions);
        for buf in Self::PER_POSITION_SCRATCH {
            self.backend.reserve_scratch(stream, buf, (width * positions).max(one_state))?;
        }
        self.backend.reserve_scratch(stream, Buf::Control, width * CONTROL_WORDS)?;
        self.backend.reserve_scratch(stream, Buf::Tables, width * widest_tables)?;
        Ok(width)
    }

    /// The states `members` (indices into `tables` and `queries`, all needing one kernel) on
    /// `stream`, as many per launch as [`Self::batch_width`] gives: each state's candidates, or
    /// `None` where a kernel refused it.
    #[allow(clippy::type_complexity)]
    fn run_batch(
        &self,
        stream: usize,
        members: &[usize],
        tables: &[Option<StateTables>],
        queries: &[(&[u32], &QueryPlan)],
        positions: usize,
        limit: Option<usize>,
    ) -> Result<Vec<(usize, Option<Vec<Candidate>>)>, CudaError> {
        let table_words: Vec<usize> = members
            .iter()
            .map(|&k| {
                let mut alone = TableBuilder::default();
                tables[k].as_ref().expect("only states with tables").pack(queries[k].1, self.longest, 0, &mut alone);
                alone.words.len() + STATE_HEADER_WORDS + 4
            })
            .collect();
        let width = self.batch_width(stream, positions, &table_words)?;
        let mut answers = Vec::with_capacity(members.len());
        for launch in members.chunks(width) {
            let states: Vec<(&StateTables, &QueryPlan)> =
                launch.iter().map(|&k| (tables[k].as_ref().expect("only states with tables"), queries[k].1)).collect();
            let results = self.run_pipeline(stream, &states, positions, limit)?;
            for (&k, (slots, classes)) in launch.iter().zip(results) {
                let candidates = (!classes.contains(&OVER_LIMIT))
                    .then(|| slots.into_iter().zip(classes).map(|(slot, value)| Candidate { value, slot }).collect());
                answers.push((k, candidates));
            }
        }
        Ok(answers)
    }

    /// One launch's work on `stream`: the tables' upload, the count kernel, the top-k kernels
    /// for the states with a limit and a class table, the selection, and the one wait.
    fn run_pipeline(
        &self,
        stream: usize,
        states: &[(&StateTables, &QueryPlan)],
        positions: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Selected>, CudaError> {
        let mut tables = TableBuilder::default();
        let mut header_words = Vec::with_capacity(states.len() * STATE_HEADER_WORDS);
        let (mut most_buckets, mut shared_bytes) = (0, 0);
        for &(t, plan) in states {
            // The cut-off is a class: without a class table the host keeps the best.
            let buckets = match limit {
                Some(_) if plan.has_classes() => plan.class_count().min(HISTOGRAM_CLASSES as usize) as u32 + 1,
                _ => 0,
            };
            most_buckets = most_buckets.max(buckets);
            shared_bytes = shared_bytes.max(t.shared_bytes());
            header_words.extend(t.pack(plan, self.longest, buckets, &mut tables).words());
        }
        let headers = tables.push(&header_words);
        let n = states.len();
        self.backend.reserve_scratch(stream, Buf::Control, n * CONTROL_WORDS)?;
        self.backend.reserve_scratch(stream, Buf::Tables, tables.words.len())?;
        self.backend.write_scratch(stream, Buf::Tables, 0, bytes_of(&tables.words))?;
        self.backend.zero_scratch(stream, Buf::Control, 0, n * CONTROL_WORDS)?;
        let (positions, states_u32) = (positions as u32, n as u32);
        self.backend.launch_count(
            stream,
            &CountLaunch {
                token_bytes: self.token_bytes as u32,
                kernel: states[0].0.kernel(),
                positions,
                states: states_u32,
                headers,
                shared_bytes,
            },
        )?;
        let batch = BatchLaunch { positions, states: states_u32, headers, buckets: most_buckets };
        if let (Some(k), true) = (limit, most_buckets > 0) {
            self.backend.launch_histogram(stream, &batch)?;
            self.backend.launch_cutoff(stream, &batch, k.min(u32::MAX as usize) as u32)?;
        }
        self.backend.launch_select(stream, &batch)?;
        // What one round trip brings back: enough for a top-k and its ties, as a rule.
        let expected = limit.map_or(1 << 16, |k| k.saturating_mul(2).max(1 << 10)).min(positions as usize);
        self.backend.read_results(stream, &batch, expected)
    }
}

/// The query's tables packed into u32 words, each run starting on a 16-byte boundary (u64 mask
/// words are read in place).
#[derive(Default)]
struct TableBuilder {
    words: Vec<u32>,
}

impl TableBuilder {
    fn push(&mut self, values: &[u32]) -> Words {
        self.words.resize(self.words.len().next_multiple_of(4), 0);
        let at = self.words.len();
        self.words.extend_from_slice(values);
        // Never empty: every argument is a valid pointer.
        if values.is_empty() {
            self.words.push(0);
        }
        Words { at, len: values.len() }
    }

    fn push_u16(&mut self, values: &[u16]) -> Words {
        let words: Vec<u32> =
            values.chunks(2).map(|p| p[0] as u32 | (p.get(1).copied().unwrap_or(0) as u32) << 16).collect();
        self.push(&words)
    }
}

/// The block size of the single-block `choose_cutoff` launch, and its shared memory.
pub const CUTOFF_THREADS: u32 = MAX_THREADS_PER_BLOCK;
pub const CUTOFF_SHARED_BYTES: u32 = 8 * CUTOFF_THREADS;
/// Shared memory of a `class_histogram` launch with `buckets` counters.
pub fn histogram_shared_bytes(buckets: u32) -> u32 {
    4 * buckets
}
