// Host build of the shipped kernel source (tests only): kernels/match.cu compiled as C++ with
// kernels/host_emulation.h, and one emulated launch per kernel family with CUDA's launch
// geometry. kato_limits.h is the `#define` block of src/cuda/limits.rs (written by build.rs),
// the same text NVRTC gets in front of the kernel source.
//
// Blocks are emulated with fibers (ucontext): see host_emulation.h for the semantics. A launch
// that breaks them (barrier divergence) leaves a message for emulate_take_failure().
#include "host_emulation.h"
#include "kato_limits.h"
#include "match.cu"

#include <ucontext.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

enum class FiberState { Runnable, AtBarrier, Done };

struct Fiber {
    ucontext_t context;
    std::unique_ptr<unsigned char[]> stack;
    FiberState state = FiberState::Runnable;
    int barrier_line = 0;
};

// Enough for the deepest kernel frame (difflib's bucket-256 rows and stack, ~6 KB) many times
// over; never written unless used (operator new[] of this size maps pages lazily).
constexpr size_t STACK_BYTES = 64 << 10;
// Shared memory starts as this byte in every block: what a thread reads before anyone wrote it.
constexpr unsigned char POISON = 0xA5;

struct BlockRun {
    ucontext_t scheduler;
    std::vector<Fiber> fibers;
    const std::function<void()>* body = nullptr;
    unsigned current = 0;
};

thread_local BlockRun run;
// Test hooks (emulate_set_schedule): a barrier line to treat as absent, and whether threads run
// last to first between barriers.
thread_local int skipped_barrier_line = 0;
thread_local bool reverse_order = false;
thread_local std::string failure;

void fiber_main() {
    (*run.body)();
    run.fibers[run.current].state = FiberState::Done;
}

// Runs the threads of one block to the end, barrier by barrier; false on barrier divergence.
bool run_block(unsigned threads) {
    if (run.fibers.size() < threads) run.fibers.resize(threads);
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = run.fibers[t];
        if (!f.stack) f.stack.reset(new unsigned char[STACK_BYTES]);
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack.get();
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = &run.scheduler;
        makecontext(&f.context, fiber_main, 0);
        f.state = FiberState::Runnable;
    }
    for (;;) {
        for (unsigned i = 0; i < threads; ++i) {
            unsigned t = reverse_order ? threads - 1 - i : i;
            if (run.fibers[t].state != FiberState::Runnable) continue;
            run.current = t;
            threadIdx = {t, 0, 0};
            swapcontext(&run.scheduler, &run.fibers[t].context);
        }
        unsigned done = 0;
        int line = 0;
        bool same_barrier = true;
        for (unsigned t = 0; t < threads; ++t) {
            const Fiber& f = run.fibers[t];
            if (f.state == FiberState::Done) {
                ++done;
            } else {
                same_barrier = same_barrier && (line == 0 || line == f.barrier_line);
                line = f.barrier_line;
            }
        }
        if (done == threads) return true;
        if (done > 0 || !same_barrier) {
            failure = "barrier divergence in block " + std::to_string(blockIdx.x) + ": " + std::to_string(done) +
                      " of " + std::to_string(threads) + " threads ended while others wait at the __syncthreads() of "
                      "kernels/match.cu line " + std::to_string(line);
            return false;
        }
        for (unsigned t = 0; t < threads; ++t) run.fibers[t].state = FiberState::Runnable;
    }
}

template <typename Kernel>
void emulate_launch(unsigned grid, unsigned block_dim, size_t shared_bytes, Kernel kernel) {
    std::function<void()> body = kernel;
    run.body = &body;
    // u64 words: aligned for every type the kernels keep in shared memory.
    std::unique_ptr<u64[]> shared(new u64[shared_bytes / 8 + 2]);
    gridDim = {grid, 1, 1};
    blockDim = {block_dim, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = {b, 0, 0};
        std::memset(shared.get(), POISON, (shared_bytes / 8 + 2) * 8);
        kato_shared = reinterpret_cast<unsigned char*>(shared.get());
        if (!run_block(block_dim)) break;
    }
    run.body = nullptr;
}

unsigned blocks_for(unsigned positions, unsigned block_dim) { return (positions + block_dim - 1) / block_dim; }

// Every count kernel's signature (COUNT_ENTRY in match.cu).
typedef void (*CountKernel)(const void*, const u64*, const u32*, const u8*, u32, const u32*, const StateHeader*, u32,
                            u32*);

}  // namespace

void kato_emulated_barrier(int line) {
    if (line == skipped_barrier_line) return;
    Fiber& f = run.fibers[run.current];
    f.state = FiberState::AtBarrier;
    f.barrier_line = line;
    swapcontext(&f.context, &run.scheduler);
}

// Test hooks: the barrier at `skip_barrier_line` of kernels/match.cu is treated as absent (0:
// none), and `reverse` runs the threads of a block last to first between barriers.
extern "C" void emulate_set_schedule(int skip_barrier_line, int reverse) {
    skipped_barrier_line = skip_barrier_line;
    reverse_order = reverse != 0;
}

// The first failure of the emulation since the last call (barrier divergence), or "".
extern "C" const char* emulate_take_failure() {
    static thread_local std::string taken;
    taken = failure;
    failure.clear();
    return taken.c_str();
}

// What every count launch passes: the patterns, the batch's tables and headers, the output and
// the geometry (src/cuda/emulated.rs declares the same struct, #[repr(C)]).
struct EmulatedCount {
    u32 token_bytes;
    const void* tokens;
    const u64* group_base;
    const u32* lane_len;
    const u8* live;
    u32 positions;
    const u32* tables;
    const StateHeader* headers;
    u32 states;
    u32* classes;
    u32 block_dim;
    u32 shared_bytes;
};

namespace {

// Runs a count kernel with CUDA's batched geometry: `states` blocks per run of positions.
bool emulate_count(const EmulatedCount* c, CountKernel narrow, CountKernel wide) {
    if (c->token_bytes != 2 && c->token_bytes != 4) return false;
    CountKernel kernel = c->token_bytes == 2 ? narrow : wide;
    if (!kernel || c->states == 0) return false;
    emulate_launch(c->states * blocks_for(c->positions, c->block_dim), c->block_dim, c->shared_bytes, [&] {
        kernel(c->tokens, c->group_base, c->lane_len, c->live, c->positions, c->tables, c->headers, c->states,
               c->classes);
    });
    return true;
}

}  // namespace

// The lcs_classes_* kernel for (token bytes, word bits, words); false when none is compiled.
extern "C" bool emulate_lcs_classes(const EmulatedCount* c, u32 word_bits, u32 words) {
    if (word_bits == 32 && words == 1) return emulate_count(c, lcs_classes_u16_w32x1, lcs_classes_u32_w32x1);
    if (word_bits != 64) return false;
    switch (words) {
    case 1: return emulate_count(c, lcs_classes_u16_w64x1, lcs_classes_u32_w64x1);
    case 2: return emulate_count(c, lcs_classes_u16_w64x2, lcs_classes_u32_w64x2);
    case 4: return emulate_count(c, lcs_classes_u16_w64x4, lcs_classes_u32_w64x4);
    case 8: return emulate_count(c, lcs_classes_u16_w64x8, lcs_classes_u32_w64x8);
    case 16: return emulate_count(c, lcs_classes_u16_w64x16, lcs_classes_u32_w64x16);
    default: return false;
    }
}

// The difflib_classes_* kernel for (token bytes, bucket); false when none is compiled.
extern "C" bool emulate_difflib_classes(const EmulatedCount* c, u32 bucket) {
    switch (bucket) {
    case 32: return emulate_count(c, difflib_classes_u16_b32, difflib_classes_u32_b32);
    case 64: return emulate_count(c, difflib_classes_u16_b64, difflib_classes_u32_b64);
    case 128: return emulate_count(c, difflib_classes_u16_b128, difflib_classes_u32_b128);
    case 256: return emulate_count(c, difflib_classes_u16_b256, difflib_classes_u32_b256);
    default: return false;
    }
}

// `grid_per_state` blocks stride over each state's positions.
extern "C" void emulate_class_histogram(const u32* classes, u32 positions, const StateHeader* headers, u32 states,
                                        u32* control, u32 grid_per_state, u32 block_dim, u32 shared_bytes) {
    emulate_launch(states * grid_per_state, block_dim, shared_bytes,
                   [&] { class_histogram(classes, positions, headers, states, control); });
}

extern "C" void emulate_choose_cutoff(const StateHeader* headers, u32* control, u32 limit, u32 states, u32 block_dim,
                                      u32 shared_bytes) {
    emulate_launch(states, block_dim, shared_bytes, [&] { choose_cutoff(headers, control, limit); });
}

extern "C" void emulate_select_candidates(const u32* classes, const u32* lane_slot, u32 positions,
                                          const StateHeader* headers, u32 states, u32* control, u32* out_slots,
                                          u32* out_classes, u32 block_dim) {
    emulate_launch(states * blocks_for(positions, block_dim), block_dim, 0, [&] {
        select_candidates(classes, lane_slot, positions, headers, states, control, out_slots, out_classes);
    });
}
