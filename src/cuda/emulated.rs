//! A [`Backend`] that runs the shipped kernels on the host (feature `kernel-emulation`): "device"
//! buffers are host memory and launches run the host build of kernels/match.cu, a block at a
//! time with its threads as fibers that meet at barriers (kernels/host_emulation.h). It lets the
//! tests drive the whole device tier — mirroring, capacity, removals, queries, failures —
//! without a GPU.

use std::collections::HashMap;
use std::ffi::CStr;

use super::error::CudaError;
use super::limits::{DIFFLIB_BUCKETS, MAX_LCS_WORDS};
use super::tier::{
    histogram_shared_bytes, Backend, Buf, CountLaunch, MetricArgs, Words, CUTOFF, CUTOFF_SHARED_BYTES, CUTOFF_THREADS,
    HISTOGRAM, OUT_LEN,
};

extern "C" {
    fn emulate_set_schedule(skip_barrier_line: i32, reverse: i32);
    fn emulate_take_failure() -> *const std::ffi::c_char;
    fn emulate_lcs_classes(
        token_bytes: u32,
        word_bits: u32,
        words: u32,
        tokens: *const u8,
        group_base: *const u64,
        lane_len: *const u32,
        live: *const u8,
        positions: u32,
        rows: *const u32,
        rows_len: u32,
        entry_class: *const u32,
        has_classes: u32,
        keys: *const u32,
        index: *const u16,
        capacity: u32,
        shift: u32,
        masks: *const u32,
        distinct: u32,
        masks_in_shared: u32,
        state_len: u32,
        classes: *mut u32,
        block_dim: u32,
        shared_bytes: u32,
    ) -> bool;
    fn emulate_difflib_classes(
        token_bytes: u32,
        bucket: u32,
        tokens: *const u8,
        group_base: *const u64,
        lane_len: *const u32,
        live: *const u8,
        positions: u32,
        rows: *const u32,
        rows_len: u32,
        entry_class: *const u32,
        has_classes: u32,
        keys: *const u32,
        index: *const u16,
        capacity: u32,
        shift: u32,
        b: *const u32,
        lb: u32,
        pos_starts: *const u32,
        slots: u32,
        positions_in_b: *const u16,
        classes: *mut u32,
        block_dim: u32,
        shared_bytes: u32,
    ) -> bool;
    fn emulate_class_histogram(
        classes: *const u32,
        positions: u32,
        buckets: u32,
        histogram: *mut u32,
        grid: u32,
        block_dim: u32,
        shared_bytes: u32,
    );
    fn emulate_choose_cutoff(
        histogram: *const u32,
        buckets: u32,
        limit: u32,
        cutoff: *mut u32,
        block_dim: u32,
        shared_bytes: u32,
    );
    fn emulate_select_candidates(
        classes: *const u32,
        lane_slot: *const u32,
        positions: u32,
        cutoff: *const u32,
        limited: u32,
        out_slots: *mut u32,
        out_classes: *mut u32,
        out_len: *mut u32,
        block_dim: u32,
    );
}

/// How the emulation runs blocks, for the tests that prove it catches a missing barrier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The `__syncthreads()` on this line of kernels/match.cu is treated as absent.
    pub skipped_barrier_line: Option<u32>,
    /// Threads of a block run last to first between barriers.
    pub reverse: bool,
}

pub struct EmulatedBackend {
    /// u64 words, so every buffer is aligned for every element type.
    buffers: HashMap<Buf, Vec<u64>>,
    capacity: HashMap<Buf, usize>,
    free_bytes: u64,
    /// The block size of the count, histogram and select launches.
    pub block_dim: u32,
    /// Blocks of a histogram launch (it strides over the positions).
    pub histogram_grid: u32,
    pub schedule: Schedule,
    /// Launches left before every later launch fails (simulated device failure).
    pub launches_before_failure: Option<usize>,
    /// Count launches name a kernel too small for the state (a host that disagrees with the
    /// kernels about their limits), to exercise the kernels' guards through the tier.
    pub over_limit_launches: bool,
}

impl EmulatedBackend {
    pub fn new(free_bytes: u64) -> EmulatedBackend {
        EmulatedBackend {
            buffers: HashMap::new(),
            capacity: HashMap::new(),
            free_bytes,
            block_dim: 128,
            histogram_grid: 3,
            schedule: Schedule::default(),
            launches_before_failure: None,
            over_limit_launches: false,
        }
    }

    fn ptr<T>(&self, buf: Buf) -> *const T {
        self.buffers.get(&buf).map_or(std::ptr::null(), |v| v.as_ptr() as *const T)
    }

    fn ptr_mut<T>(&mut self, buf: Buf) -> *mut T {
        self.buffers.get_mut(&buf).map_or(std::ptr::null_mut(), |v| v.as_mut_ptr() as *mut T)
    }

    /// A run of the query tables.
    fn table<T>(&self, words: Words) -> *const T {
        assert!(words.at + words.len <= self.capacity(Buf::Tables), "{words:?} past the tables");
        // SAFETY: in bounds (just checked).
        unsafe { self.ptr::<u32>(Buf::Tables).add(words.at) as *const T }
    }

    /// Before a launch: the simulated failure, and the schedule for this thread's launches.
    fn before_launch(&mut self) -> Result<(), CudaError> {
        match self.launches_before_failure.as_mut() {
            Some(0) => return Err(CudaError::Driver("simulated launch failure".to_string())),
            Some(n) => *n -= 1,
            None => {}
        }
        let line = self.schedule.skipped_barrier_line.map_or(0, |l| l as i32);
        // SAFETY: plain setters of thread-local settings.
        unsafe { emulate_set_schedule(line, i32::from(self.schedule.reverse)) };
        Ok(())
    }

    /// After a launch: what the emulation found wrong (barrier divergence) is a launch error.
    fn after_launch(&self, kernel: &str) -> Result<(), CudaError> {
        // SAFETY: the emulation returns a NUL-terminated string it owns until the next call.
        let failure = unsafe { CStr::from_ptr(emulate_take_failure()) }.to_string_lossy().into_owned();
        if failure.is_empty() {
            Ok(())
        } else {
            Err(CudaError::Driver(format!("{kernel}: {failure}")))
        }
    }
}

impl Backend for EmulatedBackend {
    fn memory_info(&self) -> Result<(u64, u64), CudaError> {
        Ok((self.free_bytes, self.free_bytes))
    }

    fn local_memory_bytes(&self) -> u64 {
        0
    }

    fn capacity(&self, buf: Buf) -> usize {
        self.capacity.get(&buf).copied().unwrap_or(0)
    }

    fn reserve(&mut self, buf: Buf, elems: usize, keep: usize) -> Result<(), CudaError> {
        if elems <= self.capacity(buf) {
            return Ok(());
        }
        let words = (elems * buf.elem_bytes()).div_ceil(8);
        let old = self.buffers.remove(&buf).unwrap_or_default();
        // Fresh device memory is garbage, not zeros: the tier must write what it reads.
        let mut fresh = vec![0xA5A5_A5A5_A5A5_A5A5u64; words];
        let keep_words = (keep * buf.elem_bytes()).div_ceil(8).min(old.len());
        fresh[..keep_words].copy_from_slice(&old[..keep_words]);
        self.buffers.insert(buf, fresh);
        self.capacity.insert(buf, elems);
        Ok(())
    }

    fn write(&mut self, buf: Buf, at: usize, data: &[u8]) -> Result<(), CudaError> {
        if data.is_empty() {
            return Ok(());
        }
        let offset = at * buf.elem_bytes();
        assert!(offset + data.len() <= self.capacity(buf) * buf.elem_bytes(), "write past {buf:?}");
        // SAFETY: the range was checked against the buffer's capacity just above.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr_mut::<u8>(buf).add(offset), data.len()) };
        Ok(())
    }

    fn zero(&mut self, buf: Buf, at: usize, elems: usize) -> Result<(), CudaError> {
        self.write(buf, at, &vec![0u8; elems * buf.elem_bytes()])
    }

    fn launch_count(&mut self, launch: &CountLaunch) -> Result<(), CudaError> {
        self.before_launch()?;
        let mut launch = launch.clone();
        if self.over_limit_launches {
            // The smallest kernel of the family, whatever the state needs.
            launch.metric = match launch.metric {
                MetricArgs::Lcs { masks, distinct, masks_in_shared, state_len, .. } => {
                    MetricArgs::Lcs { word_bits: 32, words: 1, masks, distinct, masks_in_shared, state_len }
                }
                MetricArgs::Difflib { b, lb, pos_starts, slots, positions, .. } => {
                    MetricArgs::Difflib { bucket: DIFFLIB_BUCKETS[0] as u32, b, lb, pos_starts, slots, positions }
                }
            };
        }
        let (plan, symbols) = (launch.plan, launch.symbols);
        let classes = self.ptr_mut::<u32>(Buf::Classes);
        // SAFETY: the tier sized every buffer for `positions` and packed the tables it names.
        let known = unsafe {
            match launch.metric {
                MetricArgs::Lcs { word_bits, words, masks, distinct, masks_in_shared, state_len } => {
                    debug_assert!(words as usize <= MAX_LCS_WORDS);
                    emulate_lcs_classes(
                        launch.token_bytes,
                        word_bits,
                        words,
                        self.ptr(Buf::Tokens),
                        self.ptr(Buf::GroupBase),
                        self.ptr(Buf::LaneLen),
                        self.ptr(Buf::Live),
                        launch.positions,
                        self.table(plan.rows),
                        plan.rows_len,
                        self.table(plan.entry_class),
                        plan.has_classes,
                        self.table(symbols.keys),
                        self.table(symbols.index),
                        symbols.capacity,
                        symbols.shift,
                        self.table(masks),
                        distinct,
                        masks_in_shared,
                        state_len,
                        classes,
                        self.block_dim,
                        launch.shared_bytes,
                    )
                }
                MetricArgs::Difflib { bucket, b, lb, pos_starts, slots, positions } => emulate_difflib_classes(
                    launch.token_bytes,
                    bucket,
                    self.ptr(Buf::Tokens),
                    self.ptr(Buf::GroupBase),
                    self.ptr(Buf::LaneLen),
                    self.ptr(Buf::Live),
                    launch.positions,
                    self.table(plan.rows),
                    plan.rows_len,
                    self.table(plan.entry_class),
                    plan.has_classes,
                    self.table(symbols.keys),
                    self.table(symbols.index),
                    symbols.capacity,
                    symbols.shift,
                    self.table(b),
                    lb,
                    self.table(pos_starts),
                    slots,
                    self.table(positions),
                    classes,
                    self.block_dim,
                    launch.shared_bytes,
                ),
            }
        };
        if !known {
            return Err(CudaError::Driver(format!("no kernel {}", launch.kernel())));
        }
        self.after_launch(&launch.kernel())
    }

    fn launch_histogram(&mut self, positions: u32, buckets: u32) -> Result<(), CudaError> {
        self.before_launch()?;
        // SAFETY: the control block holds HISTOGRAM + buckets counters; classes cover positions.
        unsafe {
            let histogram = self.ptr_mut::<u32>(Buf::Control).add(HISTOGRAM);
            emulate_class_histogram(
                self.ptr(Buf::Classes),
                positions,
                buckets,
                histogram,
                self.histogram_grid,
                self.block_dim,
                histogram_shared_bytes(buckets),
            )
        };
        self.after_launch("class_histogram")
    }

    fn launch_cutoff(&mut self, buckets: u32, limit: u32) -> Result<(), CudaError> {
        self.before_launch()?;
        // SAFETY: as above.
        unsafe {
            let control = self.ptr_mut::<u32>(Buf::Control);
            emulate_choose_cutoff(
                control.add(HISTOGRAM),
                buckets,
                limit,
                control.add(CUTOFF),
                CUTOFF_THREADS,
                CUTOFF_SHARED_BYTES,
            )
        };
        self.after_launch("choose_cutoff")
    }

    fn launch_select(&mut self, positions: u32, limited: bool) -> Result<(), CudaError> {
        self.before_launch()?;
        let (out_slots, out_classes) = (self.ptr_mut::<u32>(Buf::OutSlots), self.ptr_mut::<u32>(Buf::OutClasses));
        // SAFETY: as above; the outputs hold one entry per position.
        unsafe {
            let control = self.ptr_mut::<u32>(Buf::Control);
            emulate_select_candidates(
                self.ptr(Buf::Classes),
                self.ptr(Buf::LaneSlot),
                positions,
                control.add(CUTOFF),
                u32::from(limited),
                out_slots,
                out_classes,
                control.add(OUT_LEN),
                self.block_dim,
            )
        };
        self.after_launch("select_candidates")
    }

    fn read_results(&mut self, _expected: usize) -> Result<(Vec<u32>, Vec<u32>), CudaError> {
        // SAFETY: the control block and outputs were written by the launches above.
        unsafe {
            let len = *self.ptr::<u32>(Buf::Control).add(OUT_LEN) as usize;
            let slots = std::slice::from_raw_parts(self.ptr::<u32>(Buf::OutSlots), len).to_vec();
            let classes = std::slice::from_raw_parts(self.ptr::<u32>(Buf::OutClasses), len).to_vec();
            Ok((slots, classes))
        }
    }
}
