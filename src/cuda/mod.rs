//! The GPU tier: the shipped kernel source, its compilation by NVRTC, device discovery, and the
//! per-state launch tables shared by the device path and the host emulation of the kernels.
//!
//! Nothing here links against CUDA: the driver (`libcuda`) and NVRTC are loaded at run time by
//! cudarc, and every entry point checks for them first, so a machine without them gets an error
//! value, never a panic.

use std::sync::LazyLock;

pub mod device;
pub mod error;
pub mod limits;
pub mod nvrtc;
pub mod plan;

pub mod driver;
pub mod link;
pub mod tier;

#[cfg(all(test, feature = "kernel-emulation"))]
pub mod emulated;
#[cfg(all(test, feature = "kernel-emulation"))]
mod emulation;

/// kernels/match.cu as shipped; it compiles only behind [`limits::prelude`] (see [`KERNEL_SOURCE`]).
const KERNEL_FILE: &str = include_str!("../../kernels/match.cu");

/// The kernels as NVRTC compiles them: the limits' `#define` block, then kernels/match.cu (the
/// host emulation compiles the same two texts).
pub static KERNEL_SOURCE: LazyLock<String> = LazyLock::new(|| limits::prelude() + KERNEL_FILE);

/// Every `extern "C" __global__` function of [`KERNEL_SOURCE`].
pub const ENTRY_POINTS: [&str; 4] = ["lcs_count", "difflib_count", "key_histogram", "select_matches"];

#[cfg(all(test, feature = "kernel-emulation"))]
pub use limits::NOT_SCORED;
pub use limits::{MAX_DIFFLIB_STATE, MAX_LCS_WORDS, MAX_THREADS_PER_BLOCK, OVER_LIMIT};

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel file leaves every limit to the prelude (one definition), and refuses to compile
    /// without it.
    #[test]
    fn limits_are_defined_only_by_the_prelude() {
        assert!(!KERNEL_FILE.contains("#define KATO_"), "kernels/match.cu defines a limit itself");
        assert!(KERNEL_FILE.contains("#error"));
        let prelude = limits::prelude();
        assert!(KERNEL_SOURCE.starts_with(&prelude) && KERNEL_SOURCE.ends_with(KERNEL_FILE));
        for (name, value) in [
            ("KATO_MAX_LCS_WORDS", MAX_LCS_WORDS.to_string()),
            ("KATO_MAX_DIFFLIB_STATE", MAX_DIFFLIB_STATE.to_string()),
            ("KATO_MAX_THREADS_PER_BLOCK", MAX_THREADS_PER_BLOCK.to_string()),
            ("KATO_NOT_SCORED", "0xFFFFFFFFu".to_string()),
            ("KATO_OVER_LIMIT", "0xFFFFFFFEu".to_string()),
        ] {
            assert!(prelude.contains(&format!("#define {name} {value}\n")), "{name} in {prelude}");
            assert!(KERNEL_FILE.contains(name), "{name} unused by the kernels");
        }
    }
}
