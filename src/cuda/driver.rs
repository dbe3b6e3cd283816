//! The [`Backend`] on a real GPU, through cudarc (driver API, loaded at run time). It loads the
//! shipped kernels as NVRTC builds them for device 0 (a cubin for its exact architecture, or PTX
//! for one NVRTC cannot target: [`nvrtc::kernel_image_cached`], cached on disk), and keeps one
//! device allocation per [`Buf`].
//!
//! Queries run on [`QUERY_STREAMS`] streams of their own, each with its own scratch buffers and
//! pinned host memory, so queries from several threads overlap on the device. Everything a query
//! does is queued on its stream — the tables' upload from pinned memory, a memset, the kernels,
//! the copies of the results into pinned memory — and the host waits once, in
//! [`Backend::read_results`] (a blocking wait: the context is created with
//! `CU_CTX_SCHED_BLOCKING_SYNC`, so the waiting thread sleeps instead of spinning on a core).
//! The mirror is written on a stream of its own, and [`Backend::flush`] waits for it before the
//! tier lets the next query run; so cudarc's per-buffer event tracking is turned off (the tier
//! orders the streams itself).
//!
//! This file has never run on hardware in this project's CI (there is no GPU there); the tier
//! logic above it is tested with the emulated backend, the kernels on the host, and the kernels
//! are compiled by NVRTC in CI. `make gpu-check` exercises it where a GPU exists (docs/GPU.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PinnedHostSlice,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::device;
use super::error::{catch, CudaError};
use super::limits::SHARED_TABLE_BYTES;
use super::limits::{CONTROL_OUT_LEN, CONTROL_WORDS};
use super::nvrtc::{self, KernelImage};
use super::tier::{
    histogram_shared_bytes, Backend, BatchLaunch, Buf, CountLaunch, Selected, Words, CUTOFF_SHARED_BYTES,
    CUTOFF_THREADS, QUERY_STREAMS,
};
use super::{entry_points, MAX_THREADS_PER_BLOCK};

fn driver_error(what: &str) -> impl Fn(cudarc::driver::DriverError) -> CudaError + '_ {
    move |e| CudaError::Driver(format!("{what}: {e:?}"))
}

/// Blocks of a `class_histogram` launch per SM: enough to fill the device, few enough that the
/// per-block flush of its counters stays small.
const HISTOGRAM_BLOCKS_PER_SM: u32 = 2;

/// One query stream: its scratch buffers and pinned host memory.
struct QueryStream {
    stream: Arc<CudaStream>,
    buffers: HashMap<Buf, CudaSlice<u8>>,
    capacity: HashMap<Buf, usize>,
    /// Pinned host memory the query tables are staged in, and the results land in.
    staging: Option<PinnedHostSlice<u8>>,
    results: Option<PinnedHostSlice<u32>>,
}

pub struct CudaBackend {
    /// The stream the mirror is written on.
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    kernels: HashMap<String, CudaFunction>,
    threads_per_block: u32,
    multiprocessors: u32,
    local_memory_bytes: u64,
    /// The mirror's buffers.
    buffers: HashMap<Buf, CudaSlice<u8>>,
    capacity: HashMap<Buf, usize>,
    queries: Vec<Mutex<QueryStream>>,
}

/// The device address of element `at` of `buf` in `buffers`.
fn address(
    buffers: &HashMap<Buf, CudaSlice<u8>>,
    stream: &Arc<CudaStream>,
    buf: Buf,
    at: usize,
) -> Result<u64, CudaError> {
    let slice = buffers.get(&buf).ok_or_else(|| CudaError::Driver(format!("{buf:?} was never allocated")))?;
    let (base, _sync) = slice.device_ptr(stream);
    Ok(base + (at * buf.elem_bytes()) as u64)
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
            ctx.set_blocking_synchronize().map_err(driver_error("making synchronization blocking"))?;
            // SAFETY: called before any allocation or stream of this context exists; the tier
            // orders the mirror's stream and the query streams itself (see the module comment).
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.default_stream();
            let loading = format!("loading {what} of the kernels");
            let module = ctx.load_module(image).map_err(driver_error(&loading))?;
            log::info!("kato_gpu: loaded {what} of the kernels on device 0 (compute capability {major}.{minor})");
            let mut kernels = HashMap::new();
            for name in entry_points() {
                let function = module.load_function(&name).map_err(driver_error("finding a kernel"))?;
                kernels.insert(name, function);
            }
            let attribute = |a| ctx.attribute(a).map_err(driver_error("reading a device attribute"));
            let multiprocessors = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
            let threads_per_sm =
                attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)? as u64;
            // The driver backs the largest per-thread local memory of any kernel for every thread
            // that can be resident (reserved at the first launch, outside our allocations).
            let mut local_per_thread = 0u64;
            for function in kernels.values() {
                let bytes = function
                    .get_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)
                    .map_err(driver_error("reading a kernel's local memory"))?;
                local_per_thread = local_per_thread.max(bytes.max(0) as u64);
            }
            let local_memory_bytes = local_per_thread * threads_per_sm * multiprocessors as u64;
            log::info!(
                "kato_gpu: the kernels' local memory takes {local_memory_bytes} bytes of device memory \
                 ({local_per_thread} a thread), counted in the memory budget"
            );
            let mut queries = Vec::with_capacity(QUERY_STREAMS);
            for _ in 0..QUERY_STREAMS {
                let stream = ctx.new_stream().map_err(driver_error("creating a stream"))?;
                queries.push(Mutex::new(QueryStream {
                    stream,
                    buffers: HashMap::new(),
                    capacity: HashMap::new(),
                    staging: None,
                    results: None,
                }));
            }
            Ok(CudaBackend {
                _module: module.clone(),
                stream,
                kernels,
                threads_per_block,
                multiprocessors,
                local_memory_bytes,
                buffers: HashMap::new(),
                capacity: HashMap::new(),
                queries,
            })
        })
    }

    /// A launch over `positions` positions of each of `states` states (the batched geometry of
    /// kernels/match.cu: `states` blocks per run of positions).
    fn config(&self, positions: u32, states: u32, shared_bytes: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (positions.div_ceil(self.threads_per_block).max(1) * states, 1, 1),
            block_dim: (self.threads_per_block, 1, 1),
            shared_mem_bytes: shared_bytes,
        }
    }

    fn kernel(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.kernels.get(name).ok_or_else(|| CudaError::Driver(format!("no kernel {name} in the module")))
    }

    fn query(&self, stream: usize) -> MutexGuard<'_, QueryStream> {
        self.queries[stream].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device address of mirror buffer `buf`, as `query` will use it.
    fn mirror(&self, q: &QueryStream, buf: Buf) -> Result<u64, CudaError> {
        address(&self.buffers, &q.stream, buf, 0)
    }

    /// Pinned host memory of at least `len` elements in `slot`, grown (doubling) when short.
    /// `write_combined` for memory the host only writes (uploads): faster to fill and to copy,
    /// but very slow for the host to read, so never for results.
    fn pinned<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        stream: &Arc<CudaStream>,
        slot: &mut Option<PinnedHostSlice<T>>,
        len: usize,
        write_combined: bool,
    ) -> Result<*mut T, CudaError> {
        if slot.as_ref().is_none_or(|p| p.len() < len) {
            let flags = if write_combined { cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED } else { 0 };
            // SAFETY: the memory is written before it is read (uploads) or read only where the
            // device wrote it (results).
            let fresh = unsafe { stream.context().alloc_pinned_with_flags::<T>(len.next_power_of_two(), flags) }
                .map_err(driver_error("allocating pinned host memory"))?;
            *slot = Some(fresh);
        }
        let pinned = slot.as_mut().expect("allocated just above");
        pinned.as_mut_ptr().map_err(driver_error("waiting for pinned host memory"))
    }
}

impl QueryStream {
    fn address(&self, buf: Buf, at: usize) -> Result<u64, CudaError> {
        address(&self.buffers, &self.stream, buf, at)
    }

    fn table(&self, words: Words) -> Result<u64, CudaError> {
        if words.at + words.len > self.capacity.get(&Buf::Tables).copied().unwrap_or(0) {
            return Err(CudaError::Driver(format!("query table {words:?} past the table buffer")));
        }
        self.address(Buf::Tables, words.at)
    }

    fn buffer(&self, buf: Buf) -> Result<&CudaSlice<u8>, CudaError> {
        self.buffers.get(&buf).ok_or_else(|| CudaError::Driver(format!("{buf:?} was never allocated")))
    }
}

impl Backend for CudaBackend {
    fn memory_info(&self) -> Result<(u64, u64), CudaError> {
        catch(|| {
            let (free, total) = self.stream.context().mem_get_info().map_err(driver_error("cuMemGetInfo"))?;
            Ok((free as u64, total as u64))
        })
    }

    fn local_memory_bytes(&self) -> u64 {
        self.local_memory_bytes
    }

    fn capacity(&self, buf: Buf, stream: usize) -> usize {
        let capacity = if Buf::SCRATCH.contains(&buf) {
            self.query(stream).capacity.get(&buf).copied()
        } else {
            self.capacity.get(&buf).copied()
        };
        capacity.unwrap_or(0)
    }

    fn reserve(&mut self, buf: Buf, elems: usize, keep: usize) -> Result<(), CudaError> {
        if elems <= self.capacity(buf, 0) {
            return Ok(());
        }
        catch(|| {
            let bytes = elems * buf.elem_bytes();
            let mut fresh = self.stream.alloc_zeros::<u8>(bytes).map_err(driver_error("allocating device memory"))?;
            let keep_bytes = keep.min(self.capacity(buf, 0)) * buf.elem_bytes();
            if keep_bytes > 0 {
                let old = self.buffers.get(&buf).ok_or_else(|| CudaError::Driver(format!("{buf:?} lost")))?;
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
            // From pageable memory: the driver has staged it when the call returns.
            let target =
                self.buffers.get_mut(&buf).ok_or_else(|| CudaError::Driver(format!("{buf:?} not allocated")))?;
            stream
                .memcpy_htod(data, &mut target.slice_mut(offset..offset + data.len()))
                .map_err(driver_error("copying to the device"))
        })
    }

    fn flush(&mut self) -> Result<(), CudaError> {
        catch(|| self.stream.synchronize().map_err(driver_error("waiting for the mirror's copies")))
    }

    fn reserve_scratch(&self, stream: usize, buf: Buf, elems: usize) -> Result<(), CudaError> {
        let mut q = self.query(stream);
        if elems <= q.capacity.get(&buf).copied().unwrap_or(0) {
            return Ok(());
        }
        catch(|| {
            let fresh = q
                .stream
                .alloc_zeros::<u8>(elems * buf.elem_bytes())
                .map_err(driver_error("allocating device memory"))?;
            q.buffers.insert(buf, fresh);
            q.capacity.insert(buf, elems);
            Ok(())
        })
    }

    fn release_scratch(&mut self) {
        for q in &self.queries {
            let q = &mut *q.lock().unwrap_or_else(|e| e.into_inner());
            for buf in [Buf::Classes, Buf::OutSlots, Buf::OutClasses] {
                q.buffers.remove(&buf);
                q.capacity.remove(&buf);
            }
        }
    }

    fn write_scratch(&self, stream: usize, buf: Buf, at: usize, data: &[u8]) -> Result<(), CudaError> {
        if data.is_empty() {
            return Ok(());
        }
        let q = &mut *self.query(stream);
        catch(|| {
            let offset = at * buf.elem_bytes();
            // Through pinned memory, so the copy is asynchronous: the staging memory is reused
            // only after this stream's wait at the end of the query.
            let pinned = CudaBackend::pinned(&q.stream, &mut q.staging, data.len(), true)?;
            // SAFETY: `pinned` holds at least data.len() bytes, and no copy from it is in flight.
            let source = unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), pinned, data.len());
                std::slice::from_raw_parts(pinned, data.len())
            };
            let target = q.buffers.get_mut(&buf).ok_or_else(|| CudaError::Driver(format!("{buf:?} not allocated")))?;
            q.stream
                .memcpy_htod(source, &mut target.slice_mut(offset..offset + data.len()))
                .map_err(driver_error("copying to the device"))
        })
    }

    fn zero_scratch(&self, stream: usize, buf: Buf, at: usize, elems: usize) -> Result<(), CudaError> {
        let q = &mut *self.query(stream);
        catch(|| {
            let (from, to) = (at * buf.elem_bytes(), (at + elems) * buf.elem_bytes());
            let target = q.buffers.get_mut(&buf).ok_or_else(|| CudaError::Driver(format!("{buf:?} not allocated")))?;
            q.stream.memset_zeros(&mut target.slice_mut(from..to)).map_err(driver_error("clearing device memory"))
        })
    }

    fn launch_count(&self, stream: usize, launch: &CountLaunch) -> Result<(), CudaError> {
        let q = self.query(stream);
        catch(|| {
            let name = launch.kernel_name();
            let kernel = self.kernel(&name)?;
            if launch.shared_bytes as usize > SHARED_TABLE_BYTES {
                return Err(CudaError::Driver(format!("{name} asks for {} B of shared memory", launch.shared_bytes)));
            }
            let cfg = self.config(launch.positions, launch.states, launch.shared_bytes);
            let addresses = [
                self.mirror(&q, Buf::Tokens)?,
                self.mirror(&q, Buf::GroupBase)?,
                self.mirror(&q, Buf::LaneLen)?,
                self.mirror(&q, Buf::Live)?,
            ];
            let (tables, headers, classes) =
                (q.address(Buf::Tables, 0)?, q.table(launch.headers)?, q.address(Buf::Classes, 0)?);
            let mut args = q.stream.launch_builder(kernel);
            for address in &addresses {
                args.arg(address);
            }
            args.arg(&launch.positions).arg(&tables).arg(&headers).arg(&launch.states).arg(&classes);
            // SAFETY: argument order and types follow COUNT_ENTRY in kernels/match.cu (pointers
            // passed as their 64-bit addresses); the tier sized the classes for every state's
            // positions and packed every table the headers name.
            unsafe { args.launch(cfg) }.map_err(driver_error("launching a count kernel"))?;
            Ok(())
        })
    }

    fn launch_histogram(&self, stream: usize, batch: &BatchLaunch) -> Result<(), CudaError> {
        let q = self.query(stream);
        catch(|| {
            let kernel = self.kernel("class_histogram")?;
            // Each state's blocks stride over its positions: enough blocks to fill the device.
            let per_state = batch
                .positions
                .div_ceil(self.threads_per_block)
                .min((HISTOGRAM_BLOCKS_PER_SM * self.multiprocessors).div_ceil(batch.states))
                .max(1);
            let mut cfg = self.config(batch.positions, batch.states, histogram_shared_bytes(batch.buckets));
            cfg.grid_dim.0 = per_state * batch.states;
            let (classes, headers, control) =
                (q.address(Buf::Classes, 0)?, q.table(batch.headers)?, q.address(Buf::Control, 0)?);
            let mut args = q.stream.launch_builder(kernel);
            args.arg(&classes).arg(&batch.positions).arg(&headers).arg(&batch.states).arg(&control);
            // SAFETY: as above, for `class_histogram`; each control block holds its counters.
            unsafe { args.launch(cfg) }.map_err(driver_error("launching class_histogram"))?;
            Ok(())
        })
    }

    fn launch_cutoff(&self, stream: usize, batch: &BatchLaunch, limit: u32) -> Result<(), CudaError> {
        let q = self.query(stream);
        catch(|| {
            let kernel = self.kernel("choose_cutoff")?;
            let cfg = LaunchConfig {
                grid_dim: (batch.states, 1, 1),
                block_dim: (CUTOFF_THREADS, 1, 1),
                shared_mem_bytes: CUTOFF_SHARED_BYTES,
            };
            let (headers, control) = (q.table(batch.headers)?, q.address(Buf::Control, 0)?);
            let mut args = q.stream.launch_builder(kernel);
            args.arg(&headers).arg(&control).arg(&limit);
            // SAFETY: as above, for `choose_cutoff`.
            unsafe { args.launch(cfg) }.map_err(driver_error("launching choose_cutoff"))?;
            Ok(())
        })
    }

    fn launch_select(&self, stream: usize, batch: &BatchLaunch) -> Result<(), CudaError> {
        let q = self.query(stream);
        catch(|| {
            let kernel = self.kernel("select_candidates")?;
            let cfg = self.config(batch.positions, batch.states, 0);
            let addresses = [
                q.address(Buf::Classes, 0)?,
                self.mirror(&q, Buf::LaneSlot)?,
                q.table(batch.headers)?,
                q.address(Buf::Control, 0)?,
                q.address(Buf::OutSlots, 0)?,
                q.address(Buf::OutClasses, 0)?,
            ];
            let mut args = q.stream.launch_builder(kernel);
            args.arg(&addresses[0]).arg(&addresses[1]).arg(&batch.positions).arg(&addresses[2]).arg(&batch.states);
            args.arg(&addresses[3]).arg(&addresses[4]).arg(&addresses[5]);
            // SAFETY: as above, for `select_candidates`; the outputs hold one entry per position
            // and state.
            unsafe { args.launch(cfg) }.map_err(driver_error("launching select_candidates"))?;
            Ok(())
        })
    }

    fn read_results(&self, stream: usize, batch: &BatchLaunch, expected: usize) -> Result<Vec<Selected>, CudaError> {
        let q = &mut *self.query(stream);
        catch(|| {
            let (states, positions) = (batch.states as usize, batch.positions as usize);
            let expected = expected.min(positions);
            // Layout of the pinned results: [out_len (states), then per state slots (expected),
            // classes (expected)].
            let words = states * (1 + 2 * expected);
            let pinned = CudaBackend::pinned(&q.stream, &mut q.results, words, false)?;
            // SAFETY: `pinned` holds `words` u32; the copies below fill what is read.
            let host = unsafe { std::slice::from_raw_parts_mut(pinned, words) };
            let (lens, pairs) = host.split_at_mut(states);
            let stream = &q.stream;
            let copy = |from: &CudaSlice<u8>, at: usize, to: &mut [u32]| -> Result<(), CudaError> {
                if to.is_empty() {
                    return Ok(());
                }
                // SAFETY: a byte view of the u32s, for the byte-typed device buffer.
                let bytes = unsafe { std::slice::from_raw_parts_mut(to.as_mut_ptr() as *mut u8, 4 * to.len()) };
                stream
                    .memcpy_dtoh(&from.slice(4 * at..4 * at + bytes.len()), bytes)
                    .map_err(driver_error("copying results"))
            };
            let (control, out_slots, out_classes) =
                (q.buffer(Buf::Control)?, q.buffer(Buf::OutSlots)?, q.buffer(Buf::OutClasses)?);
            for (state, (len, pair)) in lens.iter_mut().zip(pairs.chunks_mut(2 * expected.max(1))).enumerate() {
                copy(control, state * CONTROL_WORDS + CONTROL_OUT_LEN, std::slice::from_mut(len))?;
                let (slots, classes) = pair.split_at_mut(expected.min(pair.len()));
                copy(out_slots, state * positions, slots)?;
                copy(out_classes, state * positions, classes)?;
            }
            // The batch's one wait.
            stream.synchronize().map_err(driver_error("waiting for the device"))?;
            let mut results = Vec::with_capacity(states);
            let mut more = Vec::new();
            for (state, &len) in lens.iter().enumerate() {
                let (len, pair) = (len as usize, &pairs[state * 2 * expected..(state + 1) * 2 * expected]);
                let first = len.min(expected);
                results.push((pair[..first].to_vec(), pair[expected..expected + first].to_vec()));
                if len > expected {
                    // More than one round trip's worth (no limit, or many ties): a second copy.
                    let (mut slots, mut classes) = (vec![0u32; len - expected], vec![0u32; len - expected]);
                    copy(out_slots, state * positions + expected, &mut slots)?;
                    copy(out_classes, state * positions + expected, &mut classes)?;
                    more.push((state, slots, classes));
                }
            }
            if !more.is_empty() {
                stream.synchronize().map_err(driver_error("waiting for the device"))?;
                for (state, mut slots, mut classes) in more {
                    results[state].0.append(&mut slots);
                    results[state].1.append(&mut classes);
                }
            }
            Ok(results)
        })
    }
}
