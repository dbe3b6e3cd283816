// The kernels' limits, defined here once. `prelude()` turns them into the `#define` block that is
// prepended to kernels/match.cu for NVRTC (src/cuda/mod.rs) and included before it in the host
// build of the kernels (build.rs, which `include!`s this file: plain items and `//` comments only).
// The kernel source defines none of them itself and refuses to compile without them.

/// States of up to `64 * MAX_LCS_WORDS` symbols are scored by `lcs_count` (its per-thread bit
/// vector has this many u64 words); longer states are scored on the CPU.
pub const MAX_LCS_WORDS: usize = 16;

/// States of up to this many symbols are scored by `difflib_count` (its per-thread `j2len` rows
/// and range stack are sized by it; positions must also fit a u16); longer ones on the CPU.
pub const MAX_DIFFLIB_STATE: usize = 256;

/// The `__launch_bounds__` of every kernel: the largest block the configuration accepts
/// (`threads_per_block`, a multiple of 32 up to the hardware's 1024), so any configured block
/// size launches.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;

/// A count kernel's output for removed slots and slots the length bound excludes: never a count.
pub const NOT_SCORED: u32 = u32::MAX;

/// A count kernel's output when the launch exceeds a limit above (the host should never launch
/// one): never a count. It always reaches the host, which then scores the query on the CPU.
pub const OVER_LIMIT: u32 = u32::MAX - 1;

// Positions of a difflib state are u16 on the device; a block is whole warps, at most 1024.
const _: () = assert!(MAX_DIFFLIB_STATE <= u16::MAX as usize);
const _: () = assert!(MAX_THREADS_PER_BLOCK.is_multiple_of(32) && MAX_THREADS_PER_BLOCK <= 1024);

/// The `#define` block for the kernel source.
pub fn prelude() -> String {
    format!(
        "// Generated from src/cuda/limits.rs, the one definition of the kernels' limits.\n\
         #define KATO_MAX_LCS_WORDS {MAX_LCS_WORDS}\n\
         #define KATO_MAX_DIFFLIB_STATE {MAX_DIFFLIB_STATE}\n\
         #define KATO_MAX_THREADS_PER_BLOCK {MAX_THREADS_PER_BLOCK}\n\
         #define KATO_NOT_SCORED {NOT_SCORED:#010X}u\n\
         #define KATO_OVER_LIMIT {OVER_LIMIT:#010X}u\n"
    )
}
