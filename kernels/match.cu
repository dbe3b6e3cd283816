// kato_gpu device kernels: one pipeline per query, from the mirrored patterns to the candidates
// of the query's best similarity classes.
//
// Layout (src/cuda/tier.rs mirrors the bulk tier this way):
//   Patterns are kept in "warp groups" of 32, sorted by length within each upload, so the 32
//   patterns a warp scores have about the same length. Position p = 32 * g + lane is lane `lane`
//   of group g; symbol i of its pattern is tokens[group_base[g] + 32 * i + lane]: a warp reading
//   symbol i of its 32 patterns reads 32 adjacent tokens (one coalesced load). Tokens are u16
//   while every stored id fits (as on the host), u32 after. Per position: lane_slot (the store
//   slot, KATO_NO_SLOT for an empty lane), lane_len (0 for an empty lane) and live (0 once the
//   pattern is removed).
//
// Exactness: no floating point anywhere on the device. The host's query plan (src/ordering.rs,
// QueryPlan) already resolved, per pattern length P, the least match count that passes the
// threshold (`rows[2P]`, KATO_NO_CLASS when none does) and where each passing (M, P) falls in
// result order (`entry_class[rows[2P + 1] + M - rows[2P]]`, a "similarity class", 0 = best).
// A count kernel writes each position's class (or M itself when the plan keeps no class table:
// has_classes == 0), or KATO_NO_CLASS; the host turns classes back into similarities with the
// same plan the CPU tiers use, so both agree bit for bit.
//
// Per batch of states: count kernel -> [class_histogram -> choose_cutoff] (with a result limit)
// -> select_candidates, which appends (slot, class) for every class up to the cut-off: the best
// k and everything tied with the k-th. One query is a batch of one.
//
// Batches: a launch scores `states` states (one kernel variant: the host groups states by it)
// over the same patterns. Block b works on state b % states and on the b / states-th run of
// positions, so the blocks of all states that read the same patterns are adjacent in launch
// order, run side by side, and share their tokens through L2: the tokens stream from device
// memory about once per batch instead of once per state. State s has its own header
// (StateHeader: where its tables are in `tables`), classes and outputs at s * positions, and
// control block at s * KATO_CONTROL_WORDS ([out_len, cutoff, -, -, histogram], zeroed by the
// host before the batch).
//
// Shared memory: every kernel uses only the dynamic block `kato_shared` (sized by the host at
// launch), never a static __shared__ array, so the host emulation (kernels/host_emulation.h)
// can hand each emulated block fresh, poisoned shared memory and catch a missing barrier.
//
// The limits (KATO_MAX_LCS_WORDS, KATO_MAX_DIFFLIB_STATE, KATO_MAX_THREADS_PER_BLOCK,
// KATO_HISTOGRAM_CLASSES), the header and control layouts (KATO_STATE_HEADER_WORDS,
// KATO_CONTROL_*) and sentinels (KATO_NO_CLASS, KATO_OVER_LIMIT, KATO_NO_SLOT,
// KATO_NO_SYMBOL) are defined once, in src/cuda/limits.rs, which prepends them to this file.
// Every kernel is __launch_bounds__(KATO_MAX_THREADS_PER_BLOCK, 1): any configured block size
// launches, and ", 1" keeps ptxas from squeezing registers for two 1024-thread blocks per SM.
#if !defined(KATO_MAX_LCS_WORDS) || !defined(KATO_MAX_DIFFLIB_STATE) || !defined(KATO_MAX_THREADS_PER_BLOCK) \
    || !defined(KATO_HISTOGRAM_CLASSES) || !defined(KATO_NO_CLASS) || !defined(KATO_OVER_LIMIT) \
    || !defined(KATO_NO_SLOT) || !defined(KATO_NO_SYMBOL) || !defined(KATO_STATE_HEADER_WORDS) \
    || !defined(KATO_CONTROL_OUT_LEN) || !defined(KATO_CONTROL_CUTOFF) \
    || !defined(KATO_CONTROL_HISTOGRAM) || !defined(KATO_CONTROL_WORDS)
#error "kernel limits missing: this file is compiled with the #define block of src/cuda/limits.rs in front"
#endif
// The largest kernels instantiated below (64-bit x 16 words, bucket 256) are these limits.
static_assert(KATO_MAX_LCS_WORDS == 16 && KATO_MAX_DIFFLIB_STATE == 256, "instantiate the kernels for the new limits");

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

#ifndef KATO_HOST_EMULATION
extern __shared__ __align__(16) unsigned char kato_shared[];
#endif

#define ENTRY extern "C" __global__ void __launch_bounds__(KATO_MAX_THREADS_PER_BLOCK, 1)

// The patterns' side of a count launch (see the layout above).
struct Patterns {
    const void* tokens;
    const u64* group_base;
    const u32* lane_len;
    const u8* live;
    u32 positions;
};

// The query plan's side: rows[2P] = least passing M for length P (KATO_NO_CLASS: none passes),
// rows[2P + 1] = the class-table index of (least M, P); lengths >= rows_len are never scored.
struct Plan {
    const u32* rows;
    u32 rows_len;
    const u32* entry_class;
    u32 has_classes;
};

// A state's part of a count launch (src/cuda/tier.rs writes the same layout): word offsets into
// the batch's `tables` and the state's scalars. `buckets` is its histogram's bucket count (0:
// no top-k on the device for this state: every passing position is selected). `metric` is, for
// LCS: masks, distinct, masks_in_shared, state_len; for difflib: b, lb, pos_starts, slots,
// positions.
struct StateHeader {
    u32 rows, rows_len, entry_class, has_classes;
    u32 keys, index, capacity, shift;
    u32 buckets;
    u32 metric[7];
};
static_assert(sizeof(StateHeader) == 4 * KATO_STATE_HEADER_WORDS, "StateHeader is KATO_STATE_HEADER_WORDS words");

// What block blockIdx.x of a batched launch works on (see "Batches" above).
struct BatchBlock {
    u32 state, run;
};
__device__ __forceinline__ BatchBlock kato_batch_block(u32 states) {
    return BatchBlock{blockIdx.x % states, blockIdx.x / states};
}

__device__ __forceinline__ Plan kato_plan(const u32* tables, const StateHeader& h) {
    return Plan{tables + h.rows, h.rows_len, tables + h.entry_class, h.has_classes};
}

// The state's distinct symbols as an open-addressing table: keys[h] is a symbol id or
// KATO_NO_SYMBOL (empty), index[h] its row in the metric's tables. Capacity is a power of two
// at least twice the symbols, so a probe ends at an empty entry. Hash and probe order are the
// host's too (src/cuda/plan.rs, SymbolHash), which builds the table.
__device__ __forceinline__ u32 kato_symbol_row(const u32* keys, const u16* index, u32 capacity_mask, u32 shift, u32 id) {
    u32 h = (id * 0x9E3779B1u) >> shift;
    // At most one lap: a table without an empty entry (which the host never builds) ends too.
    for (u32 probes = 0; probes <= capacity_mask; ++probes) {
        u32 key = keys[h];
        if (key == id) return index[h];
        if (key == KATO_NO_SYMBOL) return KATO_NO_SYMBOL;
        h = (h + 1) & capacity_mask;
    }
    return KATO_NO_SYMBOL;
}

template <typename T>
__device__ __forceinline__ u32 kato_token(const Patterns& p, u64 base, u32 lane, u32 i) {
    return ((const T*)p.tokens)[base + 32ull * i + lane];
}

// The least passing M for this position's pattern, or KATO_NO_CLASS when it cannot pass (removed,
// empty lane, or too short/long for the threshold): the length test the CPU tiers make too.
__device__ __forceinline__ u32 kato_least_matches(const Patterns& p, const Plan& plan, u32 pos, u32 len) {
    if (!p.live[pos] || len >= plan.rows_len) return KATO_NO_CLASS;
    return plan.rows[2 * len];
}

__device__ __forceinline__ u32 kato_class(const Plan& plan, u32 len, u32 least, u32 matches) {
    if (matches < least) return KATO_NO_CLASS;
    return plan.has_classes ? plan.entry_class[plan.rows[2 * len + 1] + matches - least] : matches;
}

// Copies `n` u32 words into shared memory, all threads of the block taking part.
__device__ __forceinline__ void kato_copy_words(u32* to, const u32* from, u32 n) {
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) to[i] = from[i];
}

// The state's symbol table in shared memory: keys[capacity] then index[capacity], copied by the
// whole block (a barrier must follow before any lookup). Returns where the metric's tables
// start, 16-byte aligned (the host computes the same offset, src/cuda/plan.rs).
__device__ __forceinline__ unsigned char* kato_load_symbols(
    const u32* keys, const u16* index, u32 capacity, u32** keys_s, u16** index_s)
{
    *keys_s = (u32*)kato_shared;
    *index_s = (u16*)(*keys_s + capacity);
    kato_copy_words(*keys_s, keys, capacity);
    kato_copy_words((u32*)*index_s, (const u32*)index, capacity / 2);
    return kato_shared + ((6u * capacity + 15u) & ~15u);
}

// The pattern this thread scores, once the block's tables are loaded.
struct Work {
    u32 pos, len, least, lane;
    u64 base;
};

// Claims this thread's position: false when there is nothing to score — past the positions, or
// its output is already written: KATO_OVER_LIMIT when the launch is past the kernel's limit,
// KATO_NO_CLASS when the pattern cannot pass.
__device__ __forceinline__ bool kato_claim(const Patterns& p, const Plan& plan, u32 run, bool over_limit, u32* classes,
                                           Work* w) {
    w->pos = run * blockDim.x + threadIdx.x;
    if (w->pos >= p.positions) return false;
    if (over_limit) {  // the host picked too small a kernel: refuse, never overrun its arrays
        classes[w->pos] = KATO_OVER_LIMIT;
        return false;
    }
    w->len = p.lane_len[w->pos];
    w->least = kato_least_matches(p, plan, w->pos, w->len);
    if (w->least == KATO_NO_CLASS) {
        classes[w->pos] = KATO_NO_CLASS;
        return false;
    }
    w->lane = w->pos % 32;
    w->base = p.group_base[w->pos / 32];
    return true;
}

// ---------------------------------------------------------------------------------------------
// One symbol of a pattern: v advances by the state positions holding it (mask row `row`;
// KATO_NO_SYMBOL, a symbol absent from the state, leaves v as it is).
template <typename W, int WORDS>
__device__ __forceinline__ void lcs_step(W (&v)[WORDS], const W* __restrict__ mask_rows, u32 row) {
    if (row == KATO_NO_SYMBOL) return;
    const W* m = mask_rows + (u64)row * WORDS;
    W carry = 0;
#pragma unroll
    for (int w = 0; w < WORDS; ++w) {
        W x = v[w];
        W u = x & m[w];
        W sum = x + u;
        W c1 = sum < x;
        W sum2 = sum + carry;
        W c2 = sum2 < sum;
        carry = c1 | c2;
        // u is a subset of x's bits, so x - u never borrows.
        v[w] = sum2 | (x - u);
    }
}

// LCS length, bit-parallel over the state (Allison-Dix / Hyyrö): bit k of mask row r is set when
// state[k] is the symbol of row r. W is the word (u32 for states of <= 32 symbols, else u64),
// WORDS the words of the bit vector, a compile-time constant so the vector lives in registers.
// Shared memory: keys[capacity] (u32), index[capacity] (u16), then the mask rows when
// `masks_in_shared` (the host decides: they fit its shared-memory budget); otherwise the rows
// are read from global memory, where they stay in L1/L2.
template <typename T, typename W, int WORDS>
__device__ __forceinline__ void lcs_classes(Patterns p, const u32* __restrict__ tables,
                                            const StateHeader* __restrict__ headers, u32 states,
                                            u32* __restrict__ all_classes)
{
    // The header is read where each field is used, not held in registers across the pattern
    // loop: the 16-word variant needs all 64 registers for the loop itself.
    const BatchBlock batch = kato_batch_block(states);
    const StateHeader* h = headers + batch.state;
    const u32 capacity = h->capacity, shift = h->shift;
    const W* masks = (const W*)(tables + h->metric[0]);
    const u32 distinct = h->metric[1], masks_in_shared = h->metric[2];
    u32* classes = all_classes + (u64)batch.state * p.positions;
    u32* keys_s;
    u16* index_s;
    W* masks_s = (W*)kato_load_symbols(tables + h->keys, (const u16*)(tables + h->index), capacity, &keys_s, &index_s);
    const u32 mask_words = distinct * WORDS * (u32)(sizeof(W) / 4);
    if (masks_in_shared) kato_copy_words((u32*)masks_s, (const u32*)masks, mask_words);
    __syncthreads();
    const W* mask_rows = masks_in_shared ? masks_s : masks;

    const u32 bits = 8 * sizeof(W);
    Work work;
    if (!kato_claim(p, kato_plan(tables, *h), batch.run, h->metric[3] > bits * WORDS, classes, &work)) return;
    const u32 len = work.len, lane = work.lane;
    const u64 base = work.base;
    W v[WORDS];
#pragma unroll
    for (int w = 0; w < WORDS; ++w) v[w] = ~(W)0;
    auto symbol_row = [&](u32 i) {
        return kato_symbol_row(keys_s, index_s, capacity - 1, shift, kato_token<T>(p, base, lane, i));
    };
    u32 i = 0;
    // Rows of tokens are loaded a few ahead of the steps that use them, so a warp has several
    // loads in flight instead of waiting on each in turn (the loads are independent; the steps
    // are a chain through v): four, or two for the 16-word vector, which leaves no registers for
    // more.
    if (WORDS < 16) {
        for (; i + 4 <= len; i += 4) {
            u32 r0 = symbol_row(i), r1 = symbol_row(i + 1), r2 = symbol_row(i + 2), r3 = symbol_row(i + 3);
            lcs_step<W, WORDS>(v, mask_rows, r0);
            lcs_step<W, WORDS>(v, mask_rows, r1);
            lcs_step<W, WORDS>(v, mask_rows, r2);
            lcs_step<W, WORDS>(v, mask_rows, r3);
        }
    } else {
        for (; i + 2 <= len; i += 2) {
            u32 r0 = symbol_row(i), r1 = symbol_row(i + 1);
            lcs_step<W, WORDS>(v, mask_rows, r0);
            lcs_step<W, WORDS>(v, mask_rows, r1);
        }
    }
    for (; i < len; ++i) lcs_step<W, WORDS>(v, mask_rows, symbol_row(i));
    // Words past the state keep all ones (their mask bits are 0), so they add nothing; the last
    // word's bits past the state are masked off.
    const u32 state_len = h->metric[3];
    u32 matches = 0;
#pragma unroll
    for (int w = 0; w < WORDS; ++w) {
        u32 first_bit = (u32)w * bits;
        W valid = state_len >= first_bit + bits ? ~(W)0
                  : state_len > first_bit     ? (((W)1 << (state_len - first_bit)) - 1)
                                              : (W)0;
        W lost = ~v[w] & valid;
        matches += sizeof(W) == 8 ? __popcll((u64)lost) : __popc((u32)lost);
    }
    classes[work.pos] = kato_class(kato_plan(tables, *h), len, work.least, matches);
}

// Every count kernel takes the same arguments: the mirror, the batch's tables, its states'
// headers (in `tables` too) and the classes of every state.
#define COUNT_ENTRY(NAME, BODY)                                                                                   \
    ENTRY NAME(const void* tokens, const u64* group_base, const u32* lane_len, const u8* live, u32 positions,      \
               const u32* tables, const StateHeader* headers, u32 states, u32* classes) {                         \
        BODY(Patterns{tokens, group_base, lane_len, live, positions}, tables, headers, states, classes);           \
    }
#define LCS_ENTRY(NAME, T, W, WORDS) COUNT_ENTRY(NAME, (lcs_classes<T, W, WORDS>))

LCS_ENTRY(lcs_classes_u16_w32x1, u16, u32, 1)
LCS_ENTRY(lcs_classes_u16_w64x1, u16, u64, 1)
LCS_ENTRY(lcs_classes_u16_w64x2, u16, u64, 2)
LCS_ENTRY(lcs_classes_u16_w64x4, u16, u64, 4)
LCS_ENTRY(lcs_classes_u16_w64x8, u16, u64, 8)
LCS_ENTRY(lcs_classes_u16_w64x16, u16, u64, 16)
LCS_ENTRY(lcs_classes_u32_w32x1, u32, u32, 1)
LCS_ENTRY(lcs_classes_u32_w64x1, u32, u64, 1)
LCS_ENTRY(lcs_classes_u32_w64x2, u32, u64, 2)
LCS_ENTRY(lcs_classes_u32_w64x4, u32, u64, 4)
LCS_ENTRY(lcs_classes_u32_w64x8, u32, u64, 8)
LCS_ENTRY(lcs_classes_u32_w64x16, u32, u64, 16)

// ---------------------------------------------------------------------------------------------
// difflib.SequenceMatcher(None, a=pattern, b=state, autojunk) matching-block total, as CPython
// computes it (see src/metrics/difflib.rs for the algorithm and its tie-breaking). LB, the
// state-length bucket (32, 64, 128 or 256), sizes the per-thread j2len rows and range stack, so
// a short state costs a short local array.
// Shared memory: keys[capacity] (u32), index[capacity] (u16; the symbol's slot in the state's
// index: absent and popular symbols are not in the table), then b[lb] (u32),
// pos_starts[slots + 1] (u32) and positions[] (u16): pos_starts[s] .. pos_starts[s + 1] are the
// ascending positions in b of indexed symbol s.
template <typename T, int LB>
__device__ __forceinline__ void difflib_classes(Patterns p, const u32* __restrict__ tables,
                                                const StateHeader* __restrict__ headers, u32 states,
                                                u32* __restrict__ all_classes)
{
    const BatchBlock batch = kato_batch_block(states);
    const StateHeader h = headers[batch.state];
    const Plan plan = kato_plan(tables, h);
    const u32 capacity = h.capacity, shift = h.shift;
    const u32* keys = tables + h.keys;
    const u16* index = (const u16*)(tables + h.index);
    const u32* b_global = tables + h.metric[0];
    const u32 lb = h.metric[1];
    const u32* starts_global = tables + h.metric[2];
    const u32 slots = h.metric[3];
    const u16* positions_global = (const u16*)(tables + h.metric[4]);
    u32* classes = all_classes + (u64)batch.state * p.positions;
    u32* keys_s;
    u16* index_s;
    u32* b = (u32*)kato_load_symbols(keys, index, capacity, &keys_s, &index_s);
    u32* pos_starts = b + lb;
    u16* positions = (u16*)(pos_starts + slots + 1);
    kato_copy_words(b, b_global, lb);
    kato_copy_words(pos_starts, starts_global, slots + 1);
    // lb positions at most, padded by the host to an even count.
    kato_copy_words((u32*)positions, (const u32*)positions_global, (lb + 1) / 2);
    __syncthreads();

    Work work;
    if (!kato_claim(p, plan, batch.run, lb > LB, classes, &work)) return;
    const u32 la = work.len, lane = work.lane;
    const u64 base = work.base;

    // j2len rows of find_longest_match, indexed by j + 1, and the entries each row set.
    u16 row_a[LB + 1], row_b[LB + 1];
    u16 set_a[LB], set_b[LB];
    for (u32 j = 0; j <= lb; ++j) { row_a[j] = 0; row_b[j] = 0; }
    // Pending ranges (alo, ahi, blo, bhi); at most one more than the number of blocks found.
    u32 stack[4 * (LB + 2)];
    u32 top = 1;
    stack[0] = 0; stack[1] = la; stack[2] = 0; stack[3] = lb;
    u32 total = 0;
    while (top > 0) {
        --top;
        u32 alo = stack[4 * top], ahi = stack[4 * top + 1], blo = stack[4 * top + 2], bhi = stack[4 * top + 3];
        u32 best_i = alo, best_j = blo, best_size = 0;
        u16* prev = row_a; u16* cur = row_b;
        u16* prev_set = set_a; u16* cur_set = set_b;
        u32 prev_n = 0, cur_n = 0;
        for (u32 i = alo; i < ahi; ++i) {
            u32 s = kato_symbol_row(keys_s, index_s, capacity - 1, shift, kato_token<T>(p, base, lane, i));
            if (s != KATO_NO_SYMBOL) {
                u32 q = pos_starts[s], q_end = pos_starts[s + 1];
                while (q < q_end && positions[q] < blo) ++q;
                for (; q < q_end; ++q) {
                    u32 j = positions[q];
                    if (j >= bhi) break;
                    u32 run = (u32)prev[j] + 1;
                    cur[j + 1] = (u16)run;
                    cur_set[cur_n++] = (u16)(j + 1);
                    if (run > best_size) {
                        best_i = i + 1 - run;
                        best_j = j + 1 - run;
                        best_size = run;
                    }
                }
            }
            for (u32 t = 0; t < prev_n; ++t) prev[prev_set[t]] = 0;
            u16* swap_row = prev; prev = cur; cur = swap_row;
            u16* swap_set = prev_set; prev_set = cur_set; cur_set = swap_set;
            prev_n = cur_n; cur_n = 0;
        }
        for (u32 t = 0; t < prev_n; ++t) prev[prev_set[t]] = 0;
        // Nothing is junk: extend across equal neighbours (popular symbols are not indexed).
        while (best_i > alo && best_j > blo && kato_token<T>(p, base, lane, best_i - 1) == b[best_j - 1]) {
            --best_i; --best_j; ++best_size;
        }
        while (best_i + best_size < ahi && best_j + best_size < bhi
               && kato_token<T>(p, base, lane, best_i + best_size) == b[best_j + best_size]) {
            ++best_size;
        }
        if (best_size > 0) {
            total += best_size;
            if (alo < best_i && blo < best_j) {
                stack[4 * top] = alo; stack[4 * top + 1] = best_i; stack[4 * top + 2] = blo; stack[4 * top + 3] = best_j;
                ++top;
            }
            if (best_i + best_size < ahi && best_j + best_size < bhi) {
                stack[4 * top] = best_i + best_size; stack[4 * top + 1] = ahi;
                stack[4 * top + 2] = best_j + best_size; stack[4 * top + 3] = bhi;
                ++top;
            }
        }
    }
    classes[work.pos] = kato_class(plan, la, work.least, total);
}

#define DIFFLIB_ENTRY(NAME, T, LB) COUNT_ENTRY(NAME, (difflib_classes<T, LB>))

DIFFLIB_ENTRY(difflib_classes_u16_b32, u16, 32)
DIFFLIB_ENTRY(difflib_classes_u16_b64, u16, 64)
DIFFLIB_ENTRY(difflib_classes_u16_b128, u16, 128)
DIFFLIB_ENTRY(difflib_classes_u16_b256, u16, 256)
DIFFLIB_ENTRY(difflib_classes_u32_b32, u32, 32)
DIFFLIB_ENTRY(difflib_classes_u32_b64, u32, 64)
DIFFLIB_ENTRY(difflib_classes_u32_b128, u32, 128)
DIFFLIB_ENTRY(difflib_classes_u32_b256, u32, 256)

// ---------------------------------------------------------------------------------------------
// Top-k: how many positions of each state fall in each class, for the first `buckets - 1`
// classes, the last bucket counting every class past them (`buckets` from the state's header;
// 0: the state has no top-k on the device, and is skipped). Counters live in shared memory
// per block (`buckets` u32), flushed to the state's histogram with one atomic per non-zero
// bucket; the blocks of a state stride over its positions. KATO_OVER_LIMIT is not counted: it
// always reaches the host (see select_candidates), which then answers that state on the CPU.
ENTRY class_histogram(const u32* __restrict__ all_classes, u32 positions, const StateHeader* __restrict__ headers,
                      u32 states, u32* __restrict__ all_control) {
    const BatchBlock batch = kato_batch_block(states);
    const u32* classes = all_classes + (u64)batch.state * positions;
    const u32 buckets = headers[batch.state].buckets;
    u32* histogram = all_control + batch.state * KATO_CONTROL_WORDS + KATO_CONTROL_HISTOGRAM;
    u32* counts = (u32*)kato_shared;
    if (buckets == 0 || buckets > KATO_HISTOGRAM_CLASSES + 1) return;  // no top-k, or more than the host sized
    for (u32 b = threadIdx.x; b < buckets; b += blockDim.x) counts[b] = 0;
    __syncthreads();
    const u32 stride = gridDim.x / states * blockDim.x;
    for (u32 pos = batch.run * blockDim.x + threadIdx.x; pos < positions; pos += stride) {
        u32 c = classes[pos];
        if (c == KATO_NO_CLASS || c == KATO_OVER_LIMIT) continue;
        atomicAdd(&counts[c < buckets - 1 ? c : buckets - 1], 1u);
    }
    __syncthreads();
    for (u32 b = threadIdx.x; b < buckets; b += blockDim.x) {
        if (counts[b] != 0) atomicAdd(&histogram[b], counts[b]);
    }
}

// One block per state (blockIdx.x): the last class the state's best `limit` positions need,
// written to its cut-off word — the first class at which the running count reaches `limit` — or
// KATO_NO_CLASS (every class) when fewer than `limit` positions pass or the count reaches it
// only in the overflow bucket. Each thread sums a run of buckets, a block-wide inclusive scan
// (Hillis-Steele, in shared memory: blockDim u64) finds the thread whose run crosses `limit`,
// and that thread walks its run.
ENTRY choose_cutoff(const StateHeader* __restrict__ headers, u32* __restrict__ all_control, u32 limit) {
    u32* control = all_control + blockIdx.x * KATO_CONTROL_WORDS;
    const u32 buckets = headers[blockIdx.x].buckets;
    const u32* histogram = control + KATO_CONTROL_HISTOGRAM;
    u32* cutoff = control + KATO_CONTROL_CUTOFF;
    if (buckets == 0) return;  // no top-k for this state
    u64* partial = (u64*)kato_shared;
    u32 t = threadIdx.x, n = blockDim.x;
    u32 per = (buckets + n - 1) / n;
    u32 lo = t * per < buckets ? t * per : buckets;
    u32 hi = lo + per < buckets ? lo + per : buckets;
    u64 sum = 0;
    for (u32 b = lo; b < hi; ++b) sum += histogram[b];
    partial[t] = sum;
    __syncthreads();
    for (u32 offset = 1; offset < n; offset <<= 1) {
        u64 add = t >= offset ? partial[t - offset] : 0;
        __syncthreads();
        partial[t] += add;
        __syncthreads();
    }
    u64 before = t == 0 ? 0 : partial[t - 1];
    if (t == n - 1 && partial[t] < limit) *cutoff = KATO_NO_CLASS;
    if (before < limit && partial[t] >= limit) {
        for (u32 b = lo; b < hi; ++b) {
            before += histogram[b];
            if (before >= limit) {
                *cutoff = b == buckets - 1 ? KATO_NO_CLASS : b;
                break;
            }
        }
    }
}

// Appends (slot, class) of every position of a state whose class is at most the state's cut-off
// (every class when it has no top-k) to its outputs, at an atomically claimed index; order is
// arbitrary, the host orders. A KATO_OVER_LIMIT always goes: the host then discards that state's
// answer.
ENTRY select_candidates(const u32* __restrict__ all_classes, const u32* __restrict__ lane_slot, u32 positions,
                        const StateHeader* __restrict__ headers, u32 states, u32* __restrict__ all_control, u32* __restrict__ all_out_slots,
                        u32* __restrict__ all_out_classes) {
    const BatchBlock batch = kato_batch_block(states);
    u32 pos = batch.run * blockDim.x + threadIdx.x;
    if (pos >= positions) return;
    const u64 first = (u64)batch.state * positions;
    u32 c = all_classes[first + pos];
    if (c == KATO_NO_CLASS) return;
    u32* control = all_control + batch.state * KATO_CONTROL_WORDS;
    if (headers[batch.state].buckets != 0 && c > control[KATO_CONTROL_CUTOFF] && c != KATO_OVER_LIMIT) return;
    u32 at = atomicAdd(&control[KATO_CONTROL_OUT_LEN], 1u);
    all_out_slots[first + at] = lane_slot[pos];
    all_out_classes[first + at] = c;
}
