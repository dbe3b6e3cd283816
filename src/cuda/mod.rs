//! The GPU tier: the shipped kernel source, its compilation by NVRTC, device discovery, and the
//! per-state launch tables shared by the device path and the host emulation of the kernels.
//!
//! Nothing here links against CUDA: the driver (`libcuda`) and NVRTC are loaded at run time by
//! cudarc, and every entry point checks for them first, so a machine without them gets an error
//! value, never a panic.

pub mod device;
pub mod error;
pub mod nvrtc;
pub mod plan;

pub mod driver;
pub mod link;
pub mod tier;

#[cfg(all(test, feature = "kernel-emulation"))]
pub mod emulated;
#[cfg(all(test, feature = "kernel-emulation"))]
mod emulation;

/// The kernels, compiled by NVRTC for the device (and by a C++ compiler for the host tests).
pub const KERNEL_SOURCE: &str = include_str!("../../kernels/match.cu");

/// Every `extern "C" __global__` function of [`KERNEL_SOURCE`].
pub const ENTRY_POINTS: [&str; 4] = ["lcs_count", "difflib_count", "key_histogram", "select_matches"];

/// Mirrors `KATO_MAX_LCS_WORDS` in the kernel source: longer `lcs` states are scored on the CPU.
pub const MAX_LCS_WORDS: usize = 16;

/// Mirrors `KATO_MAX_DIFFLIB_STATE`: longer `difflib` states are scored on the CPU.
pub const MAX_DIFFLIB_STATE: usize = 256;

/// Mirrors `KATO_NOT_SCORED` (the host emulation of the kernels checks it).
#[cfg(all(test, feature = "kernel-emulation"))]
pub const NOT_SCORED: u32 = u32::MAX;
