//! A [`Backend`] that runs the shipped kernels on the host (feature `kernel-emulation`): "device"
//! buffers are host memory and launches call the host build of kernels/match.cu. It lets the
//! tests drive the whole device tier — mirroring, capacity, removals, queries, failures —
//! without a GPU.

use std::collections::HashMap;

use super::error::CudaError;
use super::tier::{Backend, Buf, CountLaunch};
use super::{MAX_DIFFLIB_STATE, MAX_LCS_WORDS};

extern "C" {
    pub fn emulate_lcs_count(
        tokens: *const u32,
        offsets: *const u64,
        live: *const u8,
        order: *const u32,
        begin: u32,
        end: u32,
        masks: *const u64,
        table_len: u32,
        words: u32,
        state_len: u32,
        threshold: f64,
        counts: *mut u32,
        block_dim: u32,
    );
    pub fn emulate_difflib_count(
        tokens: *const u32,
        offsets: *const u64,
        live: *const u8,
        order: *const u32,
        begin: u32,
        end: u32,
        b: *const u32,
        lb: u32,
        slot_of_id: *const i32,
        table_len: u32,
        pos_starts: *const u32,
        positions: *const u16,
        threshold: f64,
        counts: *mut u32,
        block_dim: u32,
    );
    pub fn emulate_key_histogram(
        counts: *const u32,
        offsets: *const u64,
        order: *const u32,
        begin: u32,
        end: u32,
        state_len: u32,
        threshold: f64,
        prefix: u64,
        prefix_mask: u64,
        shift: u32,
        histogram: *mut u32,
        block_dim: u32,
    );
    pub fn emulate_select_matches(
        counts: *const u32,
        offsets: *const u64,
        order: *const u32,
        begin: u32,
        end: u32,
        state_len: u32,
        threshold: f64,
        max_key: u64,
        out_slots: *mut u32,
        out_counts: *mut u32,
        out_len: *mut u32,
        block_dim: u32,
    );
}

/// Launch geometry used by the emulated launches (any block size gives the same result).
const BLOCK_DIM: u32 = 128;

pub struct EmulatedBackend {
    /// u64 words, so every buffer is aligned for every element type.
    buffers: HashMap<Buf, Vec<u64>>,
    capacity: HashMap<Buf, usize>,
    free_bytes: u64,
    /// Launches left before every later launch fails (simulated device failure).
    pub launches_before_failure: Option<usize>,
    /// Count launches pass a state one past the kernels' limit (a host that disagrees with the
    /// kernels about their limits), to exercise the kernels' guards through the tier.
    pub over_limit_launches: bool,
}

impl EmulatedBackend {
    pub fn new(free_bytes: u64) -> EmulatedBackend {
        EmulatedBackend {
            buffers: HashMap::new(),
            capacity: HashMap::new(),
            free_bytes,
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

    fn check_failure(&mut self) -> Result<(), CudaError> {
        match self.launches_before_failure.as_mut() {
            Some(0) => Err(CudaError::Driver("simulated launch failure".to_string())),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Backend for EmulatedBackend {
    fn memory_info(&self) -> Result<(u64, u64), CudaError> {
        Ok((self.free_bytes, self.free_bytes))
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
        let mut fresh = vec![0u64; words];
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

    fn read(&mut self, buf: Buf, at: usize, out: &mut [u8]) -> Result<(), CudaError> {
        if out.is_empty() {
            return Ok(());
        }
        let offset = at * buf.elem_bytes();
        assert!(offset + out.len() <= self.capacity(buf) * buf.elem_bytes(), "read past {buf:?}");
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr::<u8>(buf).add(offset), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn launch_count(&mut self, slots: u32, threshold: f64, launch: CountLaunch) -> Result<(), CudaError> {
        self.check_failure()?;
        let counts = self.ptr_mut::<u32>(Buf::Counts);
        let launch = match launch {
            CountLaunch::Lcs { table_len, .. } if self.over_limit_launches => CountLaunch::Lcs {
                table_len,
                words: MAX_LCS_WORDS as u32 + 1,
                state_len: 64 * (MAX_LCS_WORDS as u32 + 1),
            },
            CountLaunch::Difflib { table_len, .. } if self.over_limit_launches => {
                CountLaunch::Difflib { state_len: MAX_DIFFLIB_STATE as u32 + 1, table_len }
            }
            launch => launch,
        };
        // SAFETY: the tier sized every buffer for `slots` patterns and uploaded the tables (an
        // over-limit launch reads none of the state's tables: the kernels' guards stop first).
        unsafe {
            match launch {
                CountLaunch::Lcs { table_len, words, state_len } => emulate_lcs_count(
                    self.ptr(Buf::Tokens),
                    self.ptr(Buf::Offsets),
                    self.ptr(Buf::Live),
                    self.ptr(Buf::Order),
                    0,
                    slots,
                    self.ptr(Buf::Masks),
                    table_len,
                    words,
                    state_len,
                    threshold,
                    counts,
                    BLOCK_DIM,
                ),
                CountLaunch::Difflib { state_len, table_len } => emulate_difflib_count(
                    self.ptr(Buf::Tokens),
                    self.ptr(Buf::Offsets),
                    self.ptr(Buf::Live),
                    self.ptr(Buf::Order),
                    0,
                    slots,
                    self.ptr(Buf::State),
                    state_len,
                    self.ptr(Buf::SlotOfId),
                    table_len,
                    self.ptr(Buf::PosStarts),
                    self.ptr(Buf::Positions),
                    threshold,
                    counts,
                    BLOCK_DIM,
                ),
            }
        }
        Ok(())
    }

    fn launch_histogram(
        &mut self,
        slots: u32,
        state_len: u32,
        threshold: f64,
        prefix: u64,
        mask: u64,
        shift: u32,
    ) -> Result<(), CudaError> {
        self.check_failure()?;
        let histogram = self.ptr_mut::<u32>(Buf::Histogram);
        // SAFETY: as above; the histogram holds 256 counters.
        unsafe {
            emulate_key_histogram(
                self.ptr(Buf::Counts),
                self.ptr(Buf::Offsets),
                self.ptr(Buf::Order),
                0,
                slots,
                state_len,
                threshold,
                prefix,
                mask,
                shift,
                histogram,
                BLOCK_DIM,
            )
        };
        Ok(())
    }

    fn launch_select(&mut self, slots: u32, state_len: u32, threshold: f64, max_key: u64) -> Result<(), CudaError> {
        self.check_failure()?;
        let (out_slots, out_counts, out_len) =
            (self.ptr_mut::<u32>(Buf::OutSlots), self.ptr_mut::<u32>(Buf::OutCounts), self.ptr_mut::<u32>(Buf::OutLen));
        // SAFETY: as above.
        unsafe {
            emulate_select_matches(
                self.ptr(Buf::Counts),
                self.ptr(Buf::Offsets),
                self.ptr(Buf::Order),
                0,
                slots,
                state_len,
                threshold,
                max_key,
                out_slots,
                out_counts,
                out_len,
                BLOCK_DIM,
            )
        };
        Ok(())
    }
}
