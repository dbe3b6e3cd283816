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

/// The kernels that follow a count kernel in a query's pipeline.
pub const PIPELINE_KERNELS: [&str; 3] = ["class_histogram", "choose_cutoff", "select_candidates"];

/// Every `extern "C" __global__` function of [`KERNEL_SOURCE`]: the count kernels (one per token
/// width and word count or state bucket), then [`PIPELINE_KERNELS`].
pub fn entry_points() -> Vec<String> {
    let mut names = plan::count_kernels();
    names.extend(PIPELINE_KERNELS.iter().map(|s| s.to_string()));
    names
}

pub use limits::MAX_THREADS_PER_BLOCK;

#[cfg(test)]
mod tests {
    use super::limits::{MAX_DIFFLIB_STATE, MAX_LCS_WORDS};
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
            ("KATO_HISTOGRAM_CLASSES", limits::HISTOGRAM_CLASSES.to_string()),
            ("KATO_STATE_HEADER_WORDS", limits::STATE_HEADER_WORDS.to_string()),
            ("KATO_CONTROL_OUT_LEN", limits::CONTROL_OUT_LEN.to_string()),
            ("KATO_CONTROL_CUTOFF", limits::CONTROL_CUTOFF.to_string()),
            ("KATO_CONTROL_HISTOGRAM", limits::CONTROL_HISTOGRAM.to_string()),
            ("KATO_CONTROL_WORDS", limits::CONTROL_WORDS.to_string()),
            ("KATO_NO_CLASS", "0xFFFFFFFFu".to_string()),
            ("KATO_OVER_LIMIT", "0xFFFFFFFEu".to_string()),
            ("KATO_NO_SLOT", "0xFFFFFFFFu".to_string()),
            ("KATO_NO_SYMBOL", "0xFFFFFFFFu".to_string()),
        ] {
            assert!(prelude.contains(&format!("#define {name} {value}\n")), "{name} in {prelude}");
            assert!(KERNEL_FILE.contains(name), "{name} unused by the kernels");
        }
    }
}
