//! The device tier as the core sees it: the operations a device mirror of the bulk tier offers
//! ([`DeviceMirror`], implemented by `cuda`), what it reports, and [`DeviceLink`], which holds
//! one behind a read-write lock (queries run at once and share the mirror; syncs and removals
//! change it alone) with the failure policy in one place.
//! A device error never loses a pattern: the device is dropped, the CPU scans everything, the
//! failure is logged once and counted, and — when the configuration forbids falling back —
//! later queries report it instead of answering.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::metrics::Metric;
use crate::ordering::{Candidate, QueryPlan};
use crate::store::PatternStore;

/// A failure of a device mirror: a short stable `kind` (the `error_type` label of
/// `kato_gpu_errors_total`) and the message shown to users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceError {
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the device holds, for stats and KATO's `get_capacity_info()`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CapacityInfo {
    /// Slots mirrored, removed ones included (they stay until the next compaction).
    pub mirrored_patterns: usize,
    /// Mirrored slots whose pattern is still stored.
    pub live_mirrored_patterns: usize,
    pub mirrored_symbols: usize,
    pub capacity_patterns: usize,
    pub capacity_symbols: usize,
    pub budget_bytes: u64,
    pub used_bytes: u64,
    /// Bulk patterns that did not fit and are scored on the CPU.
    pub overflow_patterns: usize,
    /// Device memory now, from the driver (0 when it cannot be read).
    pub device_free_bytes: u64,
    pub device_total_bytes: u64,
}

/// The operations the matcher needs from a device tier, whatever its backend. Queries take
/// `&self` and may run at once; the other operations change the mirror.
pub trait DeviceMirror: Send + Sync {
    fn sync(&mut self, store: &PatternStore, bulk_end: usize) -> Result<usize, DeviceError>;
    fn kill(&mut self, slot: usize) -> Result<(), DeviceError>;
    fn reset(&mut self);
    fn mirrored(&self) -> usize;
    /// For each `(state, plan)`: the candidates of the mirrored slots `[0, upto)` that pass
    /// `plan` (with `limit`, those of the best classes holding at least `limit` of them), or
    /// `None` when the state does not fit the device or `upto` is not a slot count the mirror
    /// has had since its last reset (the caller scores those slots on the CPU).
    fn query_batch(
        &self,
        metric: Metric,
        queries: &[(&[u32], &QueryPlan)],
        limit: Option<usize>,
        upto: usize,
    ) -> Result<Vec<Option<Vec<Candidate>>>, DeviceError>;
    fn capacity_info(&self) -> CapacityInfo;
}

/// Counters and state of the device tier, for `get_stats()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceStatus {
    pub active: bool,
    pub capacity: Option<CapacityInfo>,
    /// Queries whose bulk tier was scored on the device.
    pub gpu_queries: u64,
    /// Queries whose state did not fit the kernels and were scored on the CPU.
    pub long_state_cpu_queries: u64,
    /// Device failures that moved all work back to the CPU.
    pub fallbacks: u64,
    pub last_error: Option<String>,
}

/// The device part of one query: the candidates the device found, and the first slot the CPU
/// must scan.
pub struct DevicePart {
    pub candidates: Vec<Candidate>,
    pub cpu_from: usize,
}

#[derive(Default)]
pub struct DeviceLink {
    tier: RwLock<Option<Box<dyn DeviceMirror>>>,
    fallback_to_cpu: bool,
    lost: AtomicBool,
    last_error: Mutex<Option<String>>,
    gpu_queries: AtomicU64,
    long_state_cpu_queries: AtomicU64,
    fallbacks: AtomicU64,
    /// Test hook: the next device query fails as a driver error would.
    fail_next_query: AtomicBool,
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl DeviceLink {
    /// Makes the next device query fail, to exercise the fallback path on a real device.
    pub fn simulate_failure(&self) {
        self.fail_next_query.store(true, Relaxed);
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<Box<dyn DeviceMirror>>> {
        self.tier.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Option<Box<dyn DeviceMirror>>> {
        self.tier.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a device tier into use and mirrors the bulk tier onto it.
    pub fn attach(
        &mut self,
        tier: Box<dyn DeviceMirror>,
        fallback_to_cpu: bool,
        store: &PatternStore,
        bulk_end: usize,
    ) {
        self.fallback_to_cpu = fallback_to_cpu;
        self.lost.store(false, Relaxed);
        *self.write() = Some(tier);
        self.sync(store, bulk_end);
    }

    fn fail(&self, tier: &mut Option<Box<dyn DeviceMirror>>, error: DeviceError) {
        log::warn!("GPU tier failed, every pattern is now scored on the CPU: {error}");
        *tier = None;
        self.lost.store(true, Relaxed);
        self.fallbacks.fetch_add(1, Relaxed);
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(error.kind.to_string()).or_default() += 1;
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    /// Runs `op` on the attached tier; a failure drops the tier (see the module documentation).
    fn with_tier(&self, op: impl FnOnce(&mut dyn DeviceMirror) -> Result<(), DeviceError>) {
        let mut tier = self.write();
        if let Some(t) = tier.as_mut() {
            if let Err(e) = op(t.as_mut()) {
                self.fail(&mut tier, e);
            }
        }
    }

    /// Mirrors slots `[mirrored, upto)` not yet on the device. Needs no exclusive access to the
    /// matcher: queries keep running (their device part waits for the upload to finish), and the
    /// slots past the bulk tier it may already hold are simply not scanned by the CPU.
    pub fn sync(&self, store: &PatternStore, upto: usize) {
        self.with_tier(|t| t.sync(store, upto).map(|_| ()));
    }

    pub fn kill(&self, slot: usize) {
        self.with_tier(|t| t.kill(slot));
    }

    /// After the store's slots changed (compaction, clear): mirror it again from slot 0.
    pub fn rebuild(&self, store: &PatternStore, bulk_end: usize) {
        self.with_tier(|t| {
            t.reset();
            t.sync(store, bulk_end).map(|_| ())
        });
    }

    /// Device failures by kind, for `kato_gpu_errors_total{error_type}`.
    pub fn errors(&self) -> std::collections::BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Slots `[0, mirrored())` are on the device now (0 without an active device).
    pub fn mirrored(&self) -> usize {
        self.read().as_ref().map_or(0, |t| t.mirrored())
    }

    /// Scores mirrored slots `[0, upto)` on the device (`upto` from [`DeviceLink::mirrored`];
    /// a sync in between does not change what is scored). `Err` only when the device was lost
    /// and the configuration forbids serving from the CPU.
    pub fn query(
        &self,
        metric: Metric,
        state: &[u32],
        plan: &QueryPlan,
        limit: Option<usize>,
        upto: usize,
    ) -> Result<DevicePart, String> {
        let mut parts = self.query_batch(metric, &[(state, plan)], limit, upto)?;
        Ok(parts.pop().expect("one part per query"))
    }

    /// [`DeviceLink::query`] for many `(state, plan)` pairs, scored together on the device:
    /// part `k` for pair `k`.
    pub fn query_batch(
        &self,
        metric: Metric,
        queries: &[(&[u32], &QueryPlan)],
        limit: Option<usize>,
        upto: usize,
    ) -> Result<Vec<DevicePart>, String> {
        let cpu_only = || queries.iter().map(|_| DevicePart { candidates: Vec::new(), cpu_from: 0 }).collect();
        let tier = self.read();
        let Some(t) = tier.as_ref() else {
            if self.lost.load(Relaxed) && !self.fallback_to_cpu {
                let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
                return Err(last.unwrap_or_else(|| "the GPU tier was lost".to_string()));
            }
            return Ok(cpu_only());
        };
        let outcome = if self.fail_next_query.swap(false, Relaxed) {
            Err(DeviceError { kind: "driver", message: "CUDA driver error: simulated device failure".to_string() })
        } else {
            t.query_batch(metric, queries, limit, upto)
        };
        match outcome {
            Ok(answers) => Ok(answers
                .into_iter()
                .map(|answer| match answer {
                    Some(candidates) => {
                        self.gpu_queries.fetch_add(1, Relaxed);
                        DevicePart { candidates, cpu_from: upto }
                    }
                    None => {
                        self.long_state_cpu_queries.fetch_add(1, Relaxed);
                        DevicePart { candidates: Vec::new(), cpu_from: 0 }
                    }
                })
                .collect()),
            Err(e) => {
                let message = e.to_string();
                drop(tier);
                let mut tier = self.write();
                // Another query may have failed and dropped the tier first: count it once.
                if tier.is_some() {
                    self.fail(&mut tier, e);
                }
                if self.fallback_to_cpu {
                    Ok(cpu_only())
                } else {
                    Err(message)
                }
            }
        }
    }

    pub fn status(&self) -> DeviceStatus {
        let tier = self.read();
        DeviceStatus {
            active: tier.is_some(),
            capacity: tier.as_ref().map(|t| t.capacity_info()),
            gpu_queries: self.gpu_queries.load(Relaxed),
            long_state_cpu_queries: self.long_state_cpu_queries.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}
