// The kernels' limits, defined here once. `prelude()` turns them into the `#define` block that is
// prepended to kernels/match.cu for NVRTC (src/cuda/mod.rs) and included before it in the host
// build of the kernels (build.rs, which `include!`s this file: plain items and `//` comments only).
// The kernel source defines none of them itself and refuses to compile without them.

/// States of up to `64 * MAX_LCS_WORDS` symbols are scored by the `lcs_classes_*` kernels (their
/// bit vector has at most this many u64 words, in registers); longer states are scored on the CPU.
pub const MAX_LCS_WORDS: usize = 16;

/// The word counts the LCS kernels are compiled for (u64 words; states of up to 32 symbols use
/// the 32-bit kernel): a state gets the smallest that covers it.
pub const LCS_WORD_COUNTS: [usize; 5] = [1, 2, 4, 8, 16];

/// States of up to this many symbols are scored by the `difflib_classes_*` kernels (their
/// per-thread `j2len` rows and range stack are sized by the state's bucket, the largest being
/// this; positions must also fit a u16); longer ones on the CPU.
pub const MAX_DIFFLIB_STATE: usize = 256;

/// The state-length buckets the difflib kernels are compiled for: a state gets the smallest
/// bucket that holds it, so a short state costs short per-thread arrays.
pub const DIFFLIB_BUCKETS: [usize; 4] = [32, 64, 128, 256];

/// The `__launch_bounds__` of every kernel: the largest block the configuration accepts
/// (`threads_per_block`, a multiple of 32 up to the hardware's 1024), so any configured block
/// size launches.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;

/// Classes `class_histogram` counts one by one (in shared memory); classes past them share one
/// overflow bucket, and a top-k whose cut-off falls there keeps every class.
pub const HISTOGRAM_CLASSES: u32 = 4096;

/// States one batched pipeline scores together: each launch covers them all, so the patterns'
/// tokens stream from device memory once for the batch. Their scratch (a class, a slot and a
/// class out per position and state) is taken from the memory budget's spare room.
pub const MAX_BATCH_STATES: usize = 16;

/// u32 words of a state's header in a count launch (`StateHeader` in kernels/match.cu and
/// src/cuda/tier.rs): where its tables are, and its scalars.
pub const STATE_HEADER_WORDS: usize = 16;

/// A state's control block, u32 words, zeroed before each batch: the candidates it selected, its
/// cut-off class, then (from a 16-byte boundary) its histogram.
pub const CONTROL_OUT_LEN: usize = 0;
pub const CONTROL_CUTOFF: usize = 1;
pub const CONTROL_HISTOGRAM: usize = 4;
pub const CONTROL_WORDS: usize = CONTROL_HISTOGRAM + HISTOGRAM_CLASSES as usize + 1;

/// A count kernel's output for a position that does not pass: removed, an empty lane, a length
/// the threshold excludes, or too few matches. Never a class or a match count.
pub const NO_CLASS: u32 = u32::MAX;

/// A count kernel's output when the launch exceeds a limit above (the host should never launch
/// one): never a class. It always reaches the host, which then scores the query on the CPU.
pub const OVER_LIMIT: u32 = u32::MAX - 1;

/// `lane_slot` of an empty lane of a warp group.
pub const NO_SLOT: u32 = u32::MAX;

/// An empty entry of the state's symbol table, and "absent" from a lookup: never a stored id.
pub const NO_SYMBOL: u32 = u32::MAX;

/// Dynamic shared memory a count launch may use without the opt-in every GPU since sm_70 allows
/// beyond it: the LCS mask rows go to shared memory only when the whole table fits.
pub const SHARED_TABLE_BYTES: usize = 48 << 10;

// Positions of a difflib state are u16 on the device; a block is whole warps, at most 1024; the
// histogram's counters and the cut-off scan's partial sums fit the shared-memory budget.
const _: () = assert!(MAX_DIFFLIB_STATE <= u16::MAX as usize);
const _: () = assert!(MAX_THREADS_PER_BLOCK.is_multiple_of(32) && MAX_THREADS_PER_BLOCK <= 1024);
const _: () = assert!(LCS_WORD_COUNTS[LCS_WORD_COUNTS.len() - 1] == MAX_LCS_WORDS);
const _: () = assert!(DIFFLIB_BUCKETS[DIFFLIB_BUCKETS.len() - 1] == MAX_DIFFLIB_STATE);
const _: () = assert!((HISTOGRAM_CLASSES as usize + 1) * 4 <= SHARED_TABLE_BYTES);
const _: () = assert!(MAX_THREADS_PER_BLOCK as usize * 8 <= SHARED_TABLE_BYTES);
const _: () = assert!(CONTROL_HISTOGRAM > CONTROL_CUTOFF && CONTROL_HISTOGRAM.is_multiple_of(4));

/// The `#define` block for the kernel source.
pub fn prelude() -> String {
    format!(
        "// Generated from src/cuda/limits.rs, the one definition of the kernels' limits.\n\
         #define KATO_MAX_LCS_WORDS {MAX_LCS_WORDS}\n\
         #define KATO_MAX_DIFFLIB_STATE {MAX_DIFFLIB_STATE}\n\
         #define KATO_MAX_THREADS_PER_BLOCK {MAX_THREADS_PER_BLOCK}\n\
         #define KATO_HISTOGRAM_CLASSES {HISTOGRAM_CLASSES}\n\
         #define KATO_STATE_HEADER_WORDS {STATE_HEADER_WORDS}\n\
         #define KATO_CONTROL_OUT_LEN {CONTROL_OUT_LEN}\n\
         #define KATO_CONTROL_CUTOFF {CONTROL_CUTOFF}\n\
         #define KATO_CONTROL_HISTOGRAM {CONTROL_HISTOGRAM}\n\
         #define KATO_CONTROL_WORDS {CONTROL_WORDS}\n\
         #define KATO_NO_CLASS {NO_CLASS:#010X}u\n\
         #define KATO_OVER_LIMIT {OVER_LIMIT:#010X}u\n\
         #define KATO_NO_SLOT {NO_SLOT:#010X}u\n\
         #define KATO_NO_SYMBOL {NO_SYMBOL:#010X}u\n"
    )
}
