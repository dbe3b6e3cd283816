// Host build of the shipped kernel source (tests only): kernels/match.cu compiled as C++ with
// kernels/host_emulation.h, and one emulated launch per kernel with the CUDA launch geometry.
// kato_limits.h is the `#define` block of src/cuda/limits.rs (written by build.rs), the same
// text NVRTC gets in front of the kernel source.
#include "host_emulation.h"
#include "kato_limits.h"
#include "match.cu"

template <typename Kernel>
static void emulate_launch(unsigned int threads, unsigned int block_dim, Kernel kernel) {
    unsigned int grid = (threads + block_dim - 1) / block_dim;
    gridDim = {grid, 1, 1};
    blockDim = {block_dim, 1, 1};
    for (unsigned int b = 0; b < grid; ++b) {
        for (unsigned int t = 0; t < block_dim; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            kernel();
        }
    }
}

extern "C" void emulate_lcs_count(const u32* tokens, const u64* offsets, const u8* live, const u32* order, u32 begin,
                                  u32 end, const u64* masks, u32 table_len, u32 words, u32 state_len, double threshold,
                                  u32* counts, u32 block_dim) {
    emulate_launch(end - begin, block_dim, [&] {
        lcs_count(tokens, offsets, live, order, begin, end, masks, table_len, words, state_len, threshold, counts);
    });
}

extern "C" void emulate_difflib_count(const u32* tokens, const u64* offsets, const u8* live, const u32* order,
                                      u32 begin, u32 end, const u32* b, u32 lb, const int* slot_of_id, u32 table_len,
                                      const u32* pos_starts, const u16* positions, double threshold, u32* counts,
                                      u32 block_dim) {
    emulate_launch(end - begin, block_dim, [&] {
        difflib_count(tokens, offsets, live, order, begin, end, b, lb, slot_of_id, table_len, pos_starts, positions,
                      threshold, counts);
    });
}

extern "C" void emulate_key_histogram(const u32* counts, const u64* offsets, const u32* order, u32 begin, u32 end,
                                      u32 state_len, double threshold, u64 prefix, u64 prefix_mask, u32 shift,
                                      u32* histogram, u32 block_dim) {
    emulate_launch(end - begin, block_dim, [&] {
        key_histogram(counts, offsets, order, begin, end, state_len, threshold, prefix, prefix_mask, shift, histogram);
    });
}

extern "C" void emulate_select_matches(const u32* counts, const u64* offsets, const u32* order, u32 begin, u32 end,
                                       u32 state_len, double threshold, u64 max_key, u32* out_slots, u32* out_counts,
                                       u32* out_len, u32 block_dim) {
    emulate_launch(end - begin, block_dim, [&] {
        select_matches(counts, offsets, order, begin, end, state_len, threshold, max_key, out_slots, out_counts,
                       out_len);
    });
}
