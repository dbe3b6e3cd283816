//! A [`Backend`] that runs the shipped kernels on the host (feature `kernel-emulation`): "device"
//! buffers are host memory and launches run the host build of kernels/match.cu, a block at a
//! time with its threads as fibers that meet at barriers (kernels/host_emulation.h). It lets the
//! tests drive the whole device tier — mirroring, capacity, removals, queries, failures —
//! without a GPU.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Condvar, Mutex};

use super::error::CudaError;
use super::limits::{CONTROL_OUT_LEN, CONTROL_WORDS, DIFFLIB_BUCKETS};
use super::tier::{
    histogram_shared_bytes, Backend, BatchLaunch, Buf, CountKernel, CountLaunch, Selected, Words, CUTOFF_SHARED_BYTES,
    CUTOFF_THREADS, QUERY_STREAMS,
};

extern "C" {
    fn emulate_set_schedule(skip_barrier_line: i32, reverse: i32);
    fn emulate_take_failure() -> *const std::ffi::c_char;
    fn emulate_lcs_classes(count: *const EmulatedCount, word_bits: u32, words: u32) -> bool;
    fn emulate_difflib_classes(count: *const EmulatedCount, bucket: u32) -> bool;
    fn emulate_class_histogram(
        classes: *const u32,
        positions: u32,
        headers: *const u32,
        states: u32,
        control: *mut u32,
        grid_per_state: u32,
        block_dim: u32,
        shared_bytes: u32,
    );
    fn emulate_choose_cutoff(
        headers: *const u32,
        control: *mut u32,
        limit: u32,
        states: u32,
        block_dim: u32,
        shared_bytes: u32,
    );
    fn emulate_select_candidates(
        classes: *const u32,
        lane_slot: *const u32,
        positions: u32,
        headers: *const u32,
        states: u32,
        control: *mut u32,
        out_slots: *mut u32,
        out_classes: *mut u32,
        block_dim: u32,
    );
}

/// What every count launch passes (`EmulatedCount` in kernels/host_emulation.cpp).
#[repr(C)]
struct EmulatedCount {
    token_bytes: u32,
    tokens: *const u8,
    group_base: *const u64,
    lane_len: *const u32,
    live: *const u8,
    positions: u32,
    tables: *const u32,
    headers: *const u32,
    states: u32,
    classes: *mut u32,
    block_dim: u32,
    shared_bytes: u32,
}

/// How the emulation runs blocks, for the tests that prove it catches a missing barrier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The `__syncthreads()` on this line of kernels/match.cu is treated as absent.
    pub skipped_barrier_line: Option<u32>,
    /// Threads of a block run last to first between barriers.
    pub reverse: bool,
}

/// One query stream's scratch buffers.
#[derive(Default)]
struct Scratch {
    buffers: HashMap<Buf, Vec<u64>>,
    capacity: HashMap<Buf, usize>,
}

pub struct EmulatedBackend {
    /// The mirror; u64 words, so every buffer is aligned for every element type.
    buffers: HashMap<Buf, Vec<u64>>,
    capacity: HashMap<Buf, usize>,
    scratch: Vec<Mutex<Scratch>>,
    free_bytes: u64,
    /// The block size of the count, histogram and select launches.
    pub block_dim: u32,
    /// Blocks of a histogram launch (it strides over the positions).
    pub histogram_grid: u32,
    pub schedule: Schedule,
    /// Launches left before every later launch fails (simulated device failure).
    pub launches_before_failure: Option<usize>,
    launches: Mutex<usize>,
    /// Count launches name a kernel too small for the state (a host that disagrees with the
    /// kernels about their limits), to exercise the kernels' guards through the tier.
    pub over_limit_launches: bool,
    /// The states of each count launch so far, in order (what the batch tests read).
    pub count_launches: Mutex<Vec<u32>>,
    /// Test hook: each query waits, before its results, until this many queries are inside the
    /// device at once (10 s at most, then its read fails): proof that queries overlap.
    pub meet: Option<usize>,
    /// Queries inside the device now, and whether `meet` of them ever were at once.
    in_flight: Mutex<(usize, bool)>,
    arrivals: Condvar,
}

impl EmulatedBackend {
    pub fn new(free_bytes: u64) -> EmulatedBackend {
        EmulatedBackend {
            buffers: HashMap::new(),
            capacity: HashMap::new(),
            scratch: (0..QUERY_STREAMS).map(|_| Mutex::new(Scratch::default())).collect(),
            free_bytes,
            block_dim: 128,
            histogram_grid: 3,
            schedule: Schedule::default(),
            launches_before_failure: None,
            launches: Mutex::new(0),
            over_limit_launches: false,
            count_launches: Mutex::new(Vec::new()),
            meet: None,
            in_flight: Mutex::new((0, false)),
            arrivals: Condvar::new(),
        }
    }

    fn mirror<T>(&self, buf: Buf) -> *const T {
        self.buffers.get(&buf).map_or(std::ptr::null(), |v| v.as_ptr() as *const T)
    }

    /// Runs `launch` with `stream`'s scratch (locked for the launch) and the launch settings:
    /// the simulated failure first, the emulation's failure report after.
    fn launch(&self, stream: usize, kernel: &str, launch: impl FnOnce(&mut Scratch)) -> Result<(), CudaError> {
        if let Some(limit) = self.launches_before_failure {
            let mut launches = self.launches.lock().unwrap();
            if *launches >= limit {
                return Err(CudaError::Driver("simulated launch failure".to_string()));
            }
            *launches += 1;
        }
        let line = self.schedule.skipped_barrier_line.map_or(0, |l| l as i32);
        // SAFETY: plain setters of thread-local settings.
        unsafe { emulate_set_schedule(line, i32::from(self.schedule.reverse)) };
        launch(&mut self.scratch[stream].lock().unwrap());
        // SAFETY: the emulation returns a NUL-terminated string it owns until the next call.
        let failure = unsafe { CStr::from_ptr(emulate_take_failure()) }.to_string_lossy().into_owned();
        if failure.is_empty() {
            Ok(())
        } else {
            Err(CudaError::Driver(format!("{kernel}: {failure}")))
        }
    }
}

impl Scratch {
    fn ptr<T>(&self, buf: Buf) -> *const T {
        self.buffers.get(&buf).map_or(std::ptr::null(), |v| v.as_ptr() as *const T)
    }

    fn ptr_mut<T>(&mut self, buf: Buf) -> *mut T {
        self.buffers.get_mut(&buf).map_or(std::ptr::null_mut(), |v| v.as_mut_ptr() as *mut T)
    }

    /// Panics unless the per-position scratch holds `states * positions` entries.
    fn check_classes(&self, positions: u32, states: u32) {
        let needed = positions as usize * states as usize;
        for buf in [Buf::Classes, Buf::OutSlots, Buf::OutClasses] {
            assert!(self.capacity.get(&buf).copied().unwrap_or(0) >= needed, "{buf:?} smaller than the batch");
        }
    }

    /// A run of the query tables.
    fn table<T>(&self, words: Words) -> *const T {
        assert!(
            words.at + words.len <= self.capacity.get(&Buf::Tables).copied().unwrap_or(0),
            "{words:?} past the tables"
        );
        // SAFETY: in bounds (just checked).
        unsafe { self.ptr::<u32>(Buf::Tables).add(words.at) as *const T }
    }
}

/// Grows `buffers[buf]` to `elems` elements, keeping the first `keep`; fresh memory is garbage,
/// not zeros, as on a device: the tier must write what it reads.
fn grow(buffers: &mut HashMap<Buf, Vec<u64>>, capacity: &mut HashMap<Buf, usize>, buf: Buf, elems: usize, keep: usize) {
    if elems <= capacity.get(&buf).copied().unwrap_or(0) {
        return;
    }
    let words = (elems * buf.elem_bytes()).div_ceil(8);
    let old = buffers.remove(&buf).unwrap_or_default();
    let mut fresh = vec![0xA5A5_A5A5_A5A5_A5A5u64; words];
    let keep_words = (keep * buf.elem_bytes()).div_ceil(8).min(old.len());
    fresh[..keep_words].copy_from_slice(&old[..keep_words]);
    buffers.insert(buf, fresh);
    capacity.insert(buf, elems);
}

/// Copies `data` into `buffers[buf]` at element `at`, within its capacity.
fn copy_in(buffers: &mut HashMap<Buf, Vec<u64>>, capacity: &HashMap<Buf, usize>, buf: Buf, at: usize, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let offset = at * buf.elem_bytes();
    assert!(offset + data.len() <= capacity.get(&buf).copied().unwrap_or(0) * buf.elem_bytes(), "write past {buf:?}");
    let target = buffers.get_mut(&buf).expect("allocated with its capacity");
    // SAFETY: the range was checked against the buffer's capacity just above.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), (target.as_mut_ptr() as *mut u8).add(offset), data.len()) };
}

impl Backend for EmulatedBackend {
    fn memory_info(&self) -> Result<(u64, u64), CudaError> {
        Ok((self.free_bytes, self.free_bytes))
    }

    fn local_memory_bytes(&self) -> u64 {
        0
    }

    fn capacity(&self, buf: Buf, stream: usize) -> usize {
        if Buf::SCRATCH.contains(&buf) {
            self.scratch[stream].lock().unwrap().capacity.get(&buf).copied().unwrap_or(0)
        } else {
            self.capacity.get(&buf).copied().unwrap_or(0)
        }
    }

    fn reserve(&mut self, buf: Buf, elems: usize, keep: usize) -> Result<(), CudaError> {
        grow(&mut self.buffers, &mut self.capacity, buf, elems, keep);
        Ok(())
    }

    fn write(&mut self, buf: Buf, at: usize, data: &[u8]) -> Result<(), CudaError> {
        copy_in(&mut self.buffers, &self.capacity, buf, at, data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CudaError> {
        Ok(())
    }

    fn reserve_scratch(&self, stream: usize, buf: Buf, elems: usize) -> Result<(), CudaError> {
        let scratch = &mut *self.scratch[stream].lock().unwrap();
        grow(&mut scratch.buffers, &mut scratch.capacity, buf, elems, 0);
        Ok(())
    }

    fn release_scratch(&mut self) {
        for scratch in &self.scratch {
            let scratch = &mut *scratch.lock().unwrap();
            for buf in [Buf::Classes, Buf::OutSlots, Buf::OutClasses] {
                scratch.buffers.remove(&buf);
                scratch.capacity.remove(&buf);
            }
        }
    }

    fn write_scratch(&self, stream: usize, buf: Buf, at: usize, data: &[u8]) -> Result<(), CudaError> {
        let scratch = &mut *self.scratch[stream].lock().unwrap();
        copy_in(&mut scratch.buffers, &scratch.capacity, buf, at, data);
        Ok(())
    }

    fn zero_scratch(&self, stream: usize, buf: Buf, at: usize, elems: usize) -> Result<(), CudaError> {
        self.write_scratch(stream, buf, at, &vec![0u8; elems * buf.elem_bytes()])
    }

    fn launch_count(&self, stream: usize, launch: &CountLaunch) -> Result<(), CudaError> {
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            in_flight.0 += 1;
            in_flight.1 |= self.meet.is_some_and(|meet| in_flight.0 >= meet);
        }
        self.arrivals.notify_all();
        self.count_launches.lock().unwrap().push(launch.states);
        let mut launch = launch.clone();
        if self.over_limit_launches {
            // The smallest kernel of the family, whatever the states need.
            launch.kernel = match launch.kernel {
                CountKernel::Lcs { .. } => CountKernel::Lcs { word_bits: 32, words: 1 },
                CountKernel::Difflib { .. } => CountKernel::Difflib { bucket: DIFFLIB_BUCKETS[0] as u32 },
            };
        }
        let mut known = true;
        let kernel = launch.kernel_name();
        self.launch(stream, &kernel, |scratch| {
            let classes = scratch.ptr_mut::<u32>(Buf::Classes);
            let s = &*scratch;
            let count = EmulatedCount {
                token_bytes: launch.token_bytes,
                tokens: self.mirror(Buf::Tokens),
                group_base: self.mirror(Buf::GroupBase),
                lane_len: self.mirror(Buf::LaneLen),
                live: self.mirror(Buf::Live),
                positions: launch.positions,
                tables: s.ptr(Buf::Tables),
                headers: s.table(launch.headers),
                states: launch.states,
                classes,
                block_dim: self.block_dim,
                shared_bytes: launch.shared_bytes,
            };
            s.check_classes(launch.positions, launch.states);
            // SAFETY: the tier sized the classes for `states * positions` (checked above) and
            // packed every table the headers name.
            known = unsafe {
                match launch.kernel {
                    CountKernel::Lcs { word_bits, words } => emulate_lcs_classes(&count, word_bits, words),
                    CountKernel::Difflib { bucket } => emulate_difflib_classes(&count, bucket),
                }
            };
        })?;
        if !known {
            return Err(CudaError::Driver(format!("no kernel {kernel}")));
        }
        Ok(())
    }

    fn launch_histogram(&self, stream: usize, batch: &BatchLaunch) -> Result<(), CudaError> {
        self.launch(stream, "class_histogram", |scratch| {
            scratch.check_classes(batch.positions, batch.states);
            // SAFETY: each state's control block holds its counters; classes cover its positions.
            unsafe {
                emulate_class_histogram(
                    scratch.ptr(Buf::Classes),
                    batch.positions,
                    scratch.table(batch.headers),
                    batch.states,
                    scratch.ptr_mut::<u32>(Buf::Control),
                    self.histogram_grid,
                    self.block_dim,
                    histogram_shared_bytes(batch.buckets),
                )
            }
        })
    }

    fn launch_cutoff(&self, stream: usize, batch: &BatchLaunch, limit: u32) -> Result<(), CudaError> {
        self.launch(stream, "choose_cutoff", |scratch| {
            // SAFETY: as above.
            unsafe {
                emulate_choose_cutoff(
                    scratch.table(batch.headers),
                    scratch.ptr_mut::<u32>(Buf::Control),
                    limit,
                    batch.states,
                    CUTOFF_THREADS,
                    CUTOFF_SHARED_BYTES,
                )
            }
        })
    }

    fn launch_select(&self, stream: usize, batch: &BatchLaunch) -> Result<(), CudaError> {
        self.launch(stream, "select_candidates", |scratch| {
            scratch.check_classes(batch.positions, batch.states);
            let (out_slots, out_classes) =
                (scratch.ptr_mut::<u32>(Buf::OutSlots), scratch.ptr_mut::<u32>(Buf::OutClasses));
            // SAFETY: as above; the outputs hold one entry per position and state.
            unsafe {
                emulate_select_candidates(
                    scratch.ptr(Buf::Classes),
                    self.mirror(Buf::LaneSlot),
                    batch.positions,
                    scratch.table(batch.headers),
                    batch.states,
                    scratch.ptr_mut::<u32>(Buf::Control),
                    out_slots,
                    out_classes,
                    self.block_dim,
                )
            }
        })
    }

    fn read_results(&self, stream: usize, batch: &BatchLaunch, _expected: usize) -> Result<Vec<Selected>, CudaError> {
        let met = match self.meet {
            Some(_) => {
                let in_flight = self.in_flight.lock().unwrap();
                let (in_flight, waited) = self
                    .arrivals
                    .wait_timeout_while(in_flight, std::time::Duration::from_secs(10), |state| !state.1)
                    .unwrap();
                drop(in_flight);
                !waited.timed_out()
            }
            None => true,
        };
        let scratch = self.scratch[stream].lock().unwrap();
        let positions = batch.positions as usize;
        let results = (0..batch.states as usize)
            .map(|state| {
                // SAFETY: the control blocks and outputs were written by the launches above; a
                // state's outputs are its `positions` entries.
                unsafe {
                    let len = *scratch.ptr::<u32>(Buf::Control).add(state * CONTROL_WORDS + CONTROL_OUT_LEN) as usize;
                    assert!(len <= positions, "more candidates than positions");
                    let first = state * positions;
                    let slots = std::slice::from_raw_parts(scratch.ptr::<u32>(Buf::OutSlots).add(first), len).to_vec();
                    let classes =
                        std::slice::from_raw_parts(scratch.ptr::<u32>(Buf::OutClasses).add(first), len).to_vec();
                    (slots, classes)
                }
            })
            .collect();
        drop(scratch);
        self.in_flight.lock().unwrap().0 -= 1;
        if met {
            Ok(results)
        } else {
            Err(CudaError::Driver("queries did not meet inside the device".to_string()))
        }
    }
}
