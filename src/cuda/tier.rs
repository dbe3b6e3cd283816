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

use std::sync::{Condvar, Mutex};

use super::error::CudaError;
use super::limits::{HISTOGRAM_CLASSES, MAX_THREADS_PER_BLOCK, NO_CLASS, NO_SLOT, OVER_LIMIT};
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

/// Indices into [`Buf::Control`].
pub const OUT_LEN: usize = 0;
pub const CUTOFF: usize = 1;
pub const HISTOGRAM: usize = 2;
const CONTROL_WORDS: usize = HISTOGRAM + HISTOGRAM_CLASSES as usize + 1;

/// A run of u32 words in [`Buf::Tables`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Words {
    pub at: usize,
    pub len: usize,
}

/// The query plan as the count kernels read it (`Plan` in kernels/match.cu).
#[derive(Clone, Copy, Debug)]
pub struct PlanArgs {
    pub rows: Words,
    pub rows_len: u32,
    pub entry_class: Words,
    pub has_classes: u32,
}

/// The state's symbol table: `keys` (u32), `index` (u16 pairs in u32 words).
#[derive(Clone, Copy, Debug)]
pub struct SymbolArgs {
    pub keys: Words,
    pub index: Words,
    pub capacity: u32,
    pub shift: u32,
}

#[derive(Clone, Copy, Debug)]
pub enum MetricArgs {
    Lcs { word_bits: u32, words: u32, masks: Words, distinct: u32, masks_in_shared: u32, state_len: u32 },
    Difflib { bucket: u32, b: Words, lb: u32, pos_starts: Words, slots: u32, positions: Words },
}

/// One count-kernel launch over every mirrored position; its tables are in [`Buf::Tables`].
#[derive(Clone, Debug)]
pub struct CountLaunch {
    /// 2 or 4.
    pub token_bytes: u32,
    pub positions: u32,
    pub plan: PlanArgs,
    pub symbols: SymbolArgs,
    pub metric: MetricArgs,
    pub shared_bytes: u32,
}

impl CountLaunch {
    /// The kernel's name in kernels/match.cu.
    pub fn kernel(&self) -> String {
        match self.metric {
            MetricArgs::Lcs { word_bits, words, .. } => lcs_kernel(self.token_bytes, word_bits, words),
            MetricArgs::Difflib { bucket, .. } => difflib_kernel(self.token_bytes, bucket),
        }
    }
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
    /// Sets `elems` elements of `stream`'s scratch buffer `buf` from `at` to zero.
    fn zero_scratch(&self, stream: usize, buf: Buf, at: usize, elems: usize) -> Result<(), CudaError>;
    fn launch_count(&self, stream: usize, launch: &CountLaunch) -> Result<(), CudaError>;
    /// `class_histogram` over `positions` into the control block's `buckets` counters.
    fn launch_histogram(&self, stream: usize, positions: u32, buckets: u32) -> Result<(), CudaError>;
    /// `choose_cutoff`: the control block's cut-off for the best `limit`.
    fn launch_cutoff(&self, stream: usize, buckets: u32, limit: u32) -> Result<(), CudaError>;
    /// `select_candidates` into `OutSlots`/`OutClasses`, the count in the control block.
    fn launch_select(&self, stream: usize, positions: u32, limited: bool) -> Result<(), CudaError>;
    /// Waits for `stream` once and returns the selected `(slots, classes)`: the count and the
    /// first `expected` pairs come back in that one round trip; more, if there are, in a second.
    fn read_results(&self, stream: usize, expected: usize) -> Result<(Vec<u32>, Vec<u32>), CudaError>;
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
    /// class and two outputs.
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
        // What the growth replaces: the mirror, and the scratch sized by positions (each query
        // stream grows its own to the mirror's positions when it next runs).
        let per_position_scratch = (self.backend.capacity(Buf::LaneSlot, 0) * QUERY_STREAMS * 12) as u64;
        let now: u64 = Buf::MIRROR.iter().map(|&b| (self.backend.capacity(b, 0) * b.elem_bytes()) as u64).sum::<u64>()
            + per_position_scratch;
        let needed = (want_token_bytes + want_groups * 8 + want_positions * Self::POSITION_BYTES) as u64;
        if needed + self.used_bytes().saturating_sub(now) > self.budget_bytes {
            return Ok(false);
        }
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
    /// `upto` is not where an upload ended since the last reset.
    pub fn query(
        &self,
        metric: Metric,
        state: &[u32],
        plan: &QueryPlan,
        limit: Option<usize>,
        upto: usize,
    ) -> Result<Option<Vec<Candidate>>, CudaError> {
        let Ok(at) = self.boundaries.binary_search_by_key(&upto, |&(slots, _)| slots) else { return Ok(None) };
        let groups = self.boundaries[at].1;
        let mut tables = TableBuilder::default();
        let plan_args = PlanArgs {
            rows: tables.push(&plan.device_rows(self.longest)),
            rows_len: self.longest as u32 + 1,
            entry_class: tables.push(plan.entry_classes()),
            has_classes: u32::from(plan.has_classes()),
        };
        let (symbols, metric_args, shared_bytes) = match metric {
            Metric::Lcs => {
                let Some(t) = LcsTables::new(state) else { return Ok(None) };
                let args = MetricArgs::Lcs {
                    word_bits: t.word_bits,
                    words: t.words,
                    masks: tables.push(&t.masks),
                    distinct: t.distinct,
                    masks_in_shared: u32::from(t.masks_in_shared),
                    state_len: t.state_len,
                };
                (tables.push_symbols(&t.symbols), args, t.shared_bytes())
            }
            Metric::Difflib { autojunk } => {
                let Some(t) = DifflibTables::new(state, autojunk) else { return Ok(None) };
                let args = MetricArgs::Difflib {
                    bucket: t.bucket,
                    b: tables.push(&t.b),
                    lb: t.b.len() as u32,
                    pos_starts: tables.push(&t.pos_starts),
                    slots: t.pos_starts.len() as u32 - 1,
                    positions: tables.push_u16(&t.positions),
                };
                (tables.push_symbols(&t.symbols), args, t.shared_bytes())
            }
        };
        let positions = (groups * GROUP) as u32;
        if positions == 0 || limit == Some(0) {
            return Ok(Some(Vec::new()));
        }
        let launch = CountLaunch {
            token_bytes: self.token_bytes as u32,
            positions,
            plan: plan_args,
            symbols,
            metric: metric_args,
            shared_bytes,
        };
        let stream = self.take_stream();
        let outcome = self.run_pipeline(stream, &tables.words, &launch, plan, limit);
        self.free_streams.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
        self.stream_returned.notify_one();
        let (slots, classes) = outcome?;
        if classes.contains(&OVER_LIMIT) {
            // A kernel refused the launch as past its limits (the tables should have sent this
            // state to the CPU): nothing it returned is used, the CPU scores the query.
            log::warn!(
                "kato_gpu: a {metric:?} kernel refused a state of {} symbols as over its limits; scored on the CPU",
                state.len()
            );
            return Ok(None);
        }
        Ok(Some(slots.into_iter().zip(classes).map(|(slot, value)| Candidate { value, slot }).collect()))
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

    /// One query's work on `stream`: the tables' upload, the count kernel, the top-k kernels
    /// when there is a limit and a class table, the selection, and the one wait.
    fn run_pipeline(
        &self,
        stream: usize,
        tables: &[u32],
        launch: &CountLaunch,
        plan: &QueryPlan,
        limit: Option<usize>,
    ) -> Result<(Vec<u32>, Vec<u32>), CudaError> {
        let positions = launch.positions;
        // Scratch as large as the mirror's positions: what `make_room` budgeted.
        let scratch_positions = self.backend.capacity(Buf::LaneSlot, 0).max(positions as usize);
        for buf in [Buf::Classes, Buf::OutSlots, Buf::OutClasses] {
            self.backend.reserve_scratch(stream, buf, scratch_positions)?;
        }
        self.backend.reserve_scratch(stream, Buf::Tables, tables.len())?;
        self.backend.write_scratch(stream, Buf::Tables, 0, bytes_of(tables))?;
        self.backend.launch_count(stream, launch)?;
        let limited = match limit {
            // The cut-off is a class: without a class table the host keeps the best.
            Some(k) if plan.has_classes() => {
                let buckets = plan.class_count().min(HISTOGRAM_CLASSES as usize) as u32 + 1;
                self.backend.zero_scratch(stream, Buf::Control, 0, HISTOGRAM + buckets as usize)?;
                self.backend.launch_histogram(stream, positions, buckets)?;
                self.backend.launch_cutoff(stream, buckets, k.min(u32::MAX as usize) as u32)?;
                true
            }
            _ => {
                self.backend.zero_scratch(stream, Buf::Control, 0, HISTOGRAM)?;
                false
            }
        };
        self.backend.launch_select(stream, positions, limited)?;
        // What one round trip brings back: enough for a top-k and its ties, as a rule.
        let expected = limit.map_or(1 << 16, |k| k.saturating_mul(2).max(1 << 10)).min(positions as usize);
        self.backend.read_results(stream, expected)
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

    fn push_symbols(&mut self, symbols: &super::plan::SymbolHash) -> SymbolArgs {
        SymbolArgs {
            keys: self.push(&symbols.keys),
            index: self.push_u16(&symbols.index),
            capacity: symbols.capacity(),
            shift: symbols.shift,
        }
    }
}

/// The block size of the single-block `choose_cutoff` launch, and its shared memory.
pub const CUTOFF_THREADS: u32 = MAX_THREADS_PER_BLOCK;
pub const CUTOFF_SHARED_BYTES: u32 = 8 * CUTOFF_THREADS;
/// Shared memory of a `class_histogram` launch with `buckets` counters.
pub fn histogram_shared_bytes(buckets: u32) -> u32 {
    4 * buckets
}
