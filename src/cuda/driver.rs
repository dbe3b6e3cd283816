//! The [`Backend`] on a real GPU, through cudarc (driver API, loaded at run time). It loads the
//! shipped kernels as NVRTC builds them for device 0 (a cubin for its exact architecture, or PTX
//! for one NVRTC cannot target: [`nvrtc::kernel_image_cached`], cached on disk), and keeps one
//! device allocation per [`Buf`].
//!
//! This file has never run on hardware in this project's CI (there is no GPU there); the tier
//! logic above it is tested with the emulated backend, the kernels on the host, and the PTX is
//! compiled in CI. `pytest -m gpu` exercises it where a GPU exists (docs/GPU.md).

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::device;
use super::error::{catch, CudaError};
use super::nvrtc::{self, KernelImage};
use super::tier::{Backend, Buf, CountLaunch};
use super::MAX_THREADS_PER_BLOCK;

fn driver_error(what: &str) -> impl Fn(cudarc::driver::DriverError) -> CudaError + '_ {
    move |e| CudaError::Driver(format!("{what}: {e:?}"))
}

pub struct CudaBackend {
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    lcs: CudaFunction,
    difflib: CudaFunction,
    histogram: CudaFunction,
    select: CudaFunction,
    threads_per_block: u32,
    buffers: HashMap<Buf, CudaSlice<u8>>,
    capacity: HashMap<Buf, usize>,
}

impl CudaBackend {
    /// Device 0, if it exists and meets `min_compute_capability`; the kernels compiled for it.
    pub fn open(min_compute_capability: f64, threads_per_block: u32) -> Result<CudaBackend, CudaError> {
        let info = device::probe(min_compute_capability);
        if let Some(reason) = info.reason {
            return Err(CudaError::Unavailable(reason));
        }
        // The kernels are compiled with __launch_bounds__(MAX_THREADS_PER_BLOCK): a larger block
        // would fail every launch, a block that is not whole warps wastes lanes.
        if threads_per_block == 0 || threads_per_block > MAX_THREADS_PER_BLOCK || !threads_per_block.is_multiple_of(32)
        {
            return Err(CudaError::Unavailable(format!(
                "threads_per_block must be a multiple of 32 from 32 to {MAX_THREADS_PER_BLOCK}, got {threads_per_block}"
            )));
        }
        let (major, minor) = info.compute_capability.unwrap_or((0, 0));
        let (image, what) = match nvrtc::kernel_image_cached(&format!("sm_{major}{minor}"))? {
            KernelImage::Cubin { arch, image } => (Ptx::from_binary(image), format!("the {arch} cubin")),
            KernelImage::Ptx { arch, ptx } => (Ptx::from_src(ptx), format!("the {arch} PTX")),
        };
        catch(|| {
            let ctx = CudaContext::new(0).map_err(driver_error("creating a context on device 0"))?;
            let stream = ctx.default_stream();
            let loading = format!("loading {what} of the kernels");
            let module = ctx.load_module(image).map_err(driver_error(&loading))?;
            log::info!("kato_gpu: loaded {what} of the kernels on device 0 (compute capability {major}.{minor})");
            let function = |name: &str| module.load_function(name).map_err(driver_error("finding a kernel"));
            Ok(CudaBackend {
                lcs: function("lcs_count")?,
                difflib: function("difflib_count")?,
                histogram: function("key_histogram")?,
                select: function("select_matches")?,
                _module: module.clone(),
                stream,
                threads_per_block,
                buffers: HashMap::new(),
                capacity: HashMap::new(),
            })
        })
    }

    fn config(&self, threads: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (threads.div_ceil(self.threads_per_block).max(1), 1, 1),
            block_dim: (self.threads_per_block, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn buffer(&self, buf: Buf) -> Result<&CudaSlice<u8>, CudaError> {
        self.buffers.get(&buf).ok_or_else(|| CudaError::Driver(format!("device buffer {buf:?} was never allocated")))
    }
}

impl Backend for CudaBackend {
    fn memory_info(&self) -> Result<(u64, u64), CudaError> {
        catch(|| {
            let (free, total) = self.stream.context().mem_get_info().map_err(driver_error("cuMemGetInfo"))?;
            Ok((free as u64, total as u64))
        })
    }

    fn capacity(&self, buf: Buf) -> usize {
        self.capacity.get(&buf).copied().unwrap_or(0)
    }

    fn reserve(&mut self, buf: Buf, elems: usize, keep: usize) -> Result<(), CudaError> {
        if elems <= self.capacity(buf) {
            return Ok(());
        }
        catch(|| {
            let bytes = elems * buf.elem_bytes();
            let mut fresh = self.stream.alloc_zeros::<u8>(bytes).map_err(driver_error("allocating device memory"))?;
            let keep_bytes = keep.min(self.capacity(buf)) * buf.elem_bytes();
            if keep_bytes > 0 {
                let old = self.buffer(buf)?;
                self.stream
                    .memcpy_dtod(&old.slice(..keep_bytes), &mut fresh.slice_mut(..keep_bytes))
                    .map_err(driver_error("copying device memory"))?;
            }
            self.buffers.insert(buf, fresh);
            self.capacity.insert(buf, elems);
            Ok(())
        })
    }

    fn write(&mut self, buf: Buf, at: usize, data: &[u8]) -> Result<(), CudaError> {
        if data.is_empty() {
            return Ok(());
        }
        catch(|| {
            let offset = at * buf.elem_bytes();
            let stream = self.stream.clone();
            let target =
                self.buffers.get_mut(&buf).ok_or_else(|| CudaError::Driver(format!("{buf:?} not allocated")))?;
            stream
                .memcpy_htod(data, &mut target.slice_mut(offset..offset + data.len()))
                .map_err(driver_error("copying to the device"))
        })
    }

    fn read(&mut self, buf: Buf, at: usize, out: &mut [u8]) -> Result<(), CudaError> {
        if out.is_empty() {
            return Ok(());
        }
        catch(|| {
            let offset = at * buf.elem_bytes();
            let source = self.buffer(buf)?;
            self.stream
                .memcpy_dtoh(&source.slice(offset..offset + out.len()), out)
                .map_err(driver_error("copying from the device"))
        })
    }

    fn launch_count(&mut self, slots: u32, threshold: f64, launch: CountLaunch) -> Result<(), CudaError> {
        catch(|| {
            let cfg = self.config(slots);
            let b = |buf| self.buffer(buf);
            let (tokens, offsets, live, order, counts) =
                (b(Buf::Tokens)?, b(Buf::Offsets)?, b(Buf::Live)?, b(Buf::Order)?, b(Buf::Counts)?);
            let begin = 0u32;
            match launch {
                CountLaunch::Lcs { table_len, words, state_len } => {
                    let masks = b(Buf::Masks)?;
                    let mut args = self.stream.launch_builder(&self.lcs);
                    args.arg(tokens).arg(offsets).arg(live).arg(order).arg(&begin).arg(&slots);
                    args.arg(masks).arg(&table_len).arg(&words).arg(&state_len).arg(&threshold).arg(counts);
                    // SAFETY: argument order and types follow `lcs_count` in kernels/match.cu; the
                    // tier sized every buffer for `slots` patterns and the state's tables.
                    unsafe { args.launch(cfg) }.map_err(driver_error("launching lcs_count"))?;
                }
                CountLaunch::Difflib { state_len, table_len } => {
                    let (state, slot_of_id, starts, positions) =
                        (b(Buf::State)?, b(Buf::SlotOfId)?, b(Buf::PosStarts)?, b(Buf::Positions)?);
                    let mut args = self.stream.launch_builder(&self.difflib);
                    args.arg(tokens).arg(offsets).arg(live).arg(order).arg(&begin).arg(&slots);
                    args.arg(state).arg(&state_len).arg(slot_of_id).arg(&table_len).arg(starts).arg(positions);
                    args.arg(&threshold).arg(counts);
                    // SAFETY: as above, for `difflib_count`.
                    unsafe { args.launch(cfg) }.map_err(driver_error("launching difflib_count"))?;
                }
            }
            Ok(())
        })
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
        catch(|| {
            let cfg = self.config(slots);
            let b = |buf| self.buffer(buf);
            let begin = 0u32;
            let mut args = self.stream.launch_builder(&self.histogram);
            args.arg(b(Buf::Counts)?)
                .arg(b(Buf::Offsets)?)
                .arg(b(Buf::Order)?)
                .arg(&begin)
                .arg(&slots)
                .arg(&state_len)
                .arg(&threshold);
            args.arg(&prefix).arg(&mask).arg(&shift).arg(b(Buf::Histogram)?);
            // SAFETY: as above, for `key_histogram`; the histogram holds 256 counters.
            unsafe { args.launch(cfg) }.map_err(driver_error("launching key_histogram"))?;
            Ok(())
        })
    }

    fn launch_select(&mut self, slots: u32, state_len: u32, threshold: f64, max_key: u64) -> Result<(), CudaError> {
        catch(|| {
            let cfg = self.config(slots);
            let b = |buf| self.buffer(buf);
            let begin = 0u32;
            let mut args = self.stream.launch_builder(&self.select);
            args.arg(b(Buf::Counts)?)
                .arg(b(Buf::Offsets)?)
                .arg(b(Buf::Order)?)
                .arg(&begin)
                .arg(&slots)
                .arg(&state_len)
                .arg(&threshold)
                .arg(&max_key);
            args.arg(b(Buf::OutSlots)?).arg(b(Buf::OutCounts)?).arg(b(Buf::OutLen)?);
            // SAFETY: as above, for `select_matches`; the outputs hold `slots` entries.
            unsafe { args.launch(cfg) }.map_err(driver_error("launching select_matches"))?;
            Ok(())
        })
    }
}
