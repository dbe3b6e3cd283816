// kato_gpu device kernels: count matching symbols between one state and every stored pattern.
//
// Layout (the same columnar store as the CPU tiers, mirrored on the device):
//   tokens  : u32 symbol ids of every pattern, concatenated
//   offsets : u64, pattern k is tokens[offsets[k] .. offsets[k + 1])
//   live    : u8 per slot, 0 for removed patterns
// One thread scores one pattern. Kernels write integer match counts M only; the similarity
// 2.0 * M / T is computed once, in float64, by the host (the same `ratio` the CPU tiers use), so
// GPU and CPU results agree bit for bit. `select_matches` applies the threshold on the device so
// only matches cross the bus; it divides with IEEE double division (`/` on doubles is correctly
// rounded in CUDA), which decides `sim >= threshold` exactly as the host would. With a result
// limit, `key_histogram` passes find the k-th best similarity exactly (radix select), so only the
// best k matches (and ties) cross the bus.
//
// Threads are assigned through `order`, a permutation of the mirrored slots sorted by pattern
// length (src/cuda/tier.rs): thread k of a launch over [begin, end) scores slot order[k], so the
// threads of a warp get patterns of similar length and a long pattern does not hold up 31 short
// ones. Outputs are indexed by k.
//
// The host prepares every per-state table (src/cuda/plan.rs). This file is compiled by NVRTC for
// the device and, unchanged, by a C++ compiler for the host with kernels/host_emulation.h, which
// is how it is tested without a GPU.

// The limits (KATO_MAX_LCS_WORDS, KATO_MAX_DIFFLIB_STATE, KATO_MAX_THREADS_PER_BLOCK) and the
// sentinels (KATO_NOT_SCORED for removed or length-pruned slots, KATO_OVER_LIMIT for a launch past
// a limit) are defined once, in src/cuda/limits.rs, which prepends them to this file; the host
// sizes its tables from the same constants. Each count kernel checks its launch against them
// and writes KATO_OVER_LIMIT rather than index past a per-thread array.
//
// Every kernel is declared __launch_bounds__(KATO_MAX_THREADS_PER_BLOCK, 1): any configured block
// size (up to 1024) launches, and the ", 1" (one resident block suffices) keeps ptxas from
// squeezing registers for two 1024-thread blocks per SM, which made difflib_count spill.
#if !defined(KATO_MAX_LCS_WORDS) || !defined(KATO_MAX_DIFFLIB_STATE) || !defined(KATO_MAX_THREADS_PER_BLOCK) \
    || !defined(KATO_NOT_SCORED) || !defined(KATO_OVER_LIMIT)
#error "kernel limits missing: this file is compiled with the #define block of src/cuda/limits.rs in front"
#endif

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

// This thread's position in [begin, end), or `end` when the thread has nothing to do.
__device__ __forceinline__ u32 kato_position(u32 begin, u32 end) {
    u32 k = begin + blockIdx.x * blockDim.x + threadIdx.x;
    return k < end ? k : end;
}

// The exact upper bound used by the CPU tiers: M <= min(|p|, |s|), so a pattern whose
// 2 * min / T is below the threshold cannot match and is skipped.
__device__ __forceinline__ bool kato_cannot_match(u64 pattern_len, u32 state_len, double threshold) {
    u64 shorter = pattern_len < state_len ? pattern_len : state_len;
    u64 total = pattern_len + state_len;
    double bound = total == 0 ? 1.0 : 2.0 * (double)shorter / (double)total;
    return bound < threshold;
}

// LCS length, bit-parallel over the state: `masks[id * words + w]` has bit k set when
// state[64 * w + k] == id (ids >= table_len occur nowhere in the state).
extern "C" __global__ void __launch_bounds__(KATO_MAX_THREADS_PER_BLOCK, 1) lcs_count(
    const u32* __restrict__ tokens, const u64* __restrict__ offsets, const u8* __restrict__ live,
    const u32* __restrict__ order, u32 begin, u32 end,
    const u64* __restrict__ masks, u32 table_len, u32 words, u32 state_len, double threshold,
    u32* __restrict__ counts)
{
    u32 k = kato_position(begin, end);
    if (k == end) return;
    // v[] has KATO_MAX_LCS_WORDS words, and `words` must cover the state.
    if (words == 0 || words > KATO_MAX_LCS_WORDS || state_len > 64u * words) {
        counts[k] = KATO_OVER_LIMIT;
        return;
    }
    u32 slot = order[k];
    u64 first = offsets[slot], last = offsets[slot + 1];
    if (!live[slot] || kato_cannot_match(last - first, state_len, threshold)) {
        counts[k] = KATO_NOT_SCORED;
        return;
    }
    u64 v[KATO_MAX_LCS_WORDS];
    for (u32 w = 0; w < words; ++w) v[w] = ~0ull;
    for (u64 i = first; i < last; ++i) {
        u32 c = tokens[i];
        if (c >= table_len) continue;
        const u64* m = masks + (u64)c * words;
        u64 carry = 0;
        for (u32 w = 0; w < words; ++w) {
            u64 x = v[w];
            u64 u = x & m[w];
            u64 sum = x + u;
            u64 c1 = sum < x;
            u64 sum2 = sum + carry;
            u64 c2 = sum2 < sum;
            carry = c1 | c2;
            // u is a subset of x's bits, so x - u never borrows.
            v[w] = sum2 | (x - u);
        }
    }
    u32 lcs = 0;
    u32 tail = state_len % 64;
    for (u32 w = 0; w < words; ++w) {
        u64 valid = (w + 1 == words && tail != 0) ? ((1ull << tail) - 1) : ~0ull;
        lcs += __popcll(~v[w] & valid);
    }
    counts[k] = lcs;
}

// difflib.SequenceMatcher(None, a=pattern, b=state, autojunk) matching-block total, as CPython
// computes it (see src/metrics/difflib.rs for the algorithm and its tie-breaking):
//   slot_of_id[id]  : index of id among the state's indexed symbols, or -1 (absent or popular);
//                     ids >= table_len are absent
//   pos_starts[s] .. pos_starts[s + 1] : the ascending positions in b of indexed symbol s
extern "C" __global__ void __launch_bounds__(KATO_MAX_THREADS_PER_BLOCK, 1) difflib_count(
    const u32* __restrict__ tokens, const u64* __restrict__ offsets, const u8* __restrict__ live,
    const u32* __restrict__ order, u32 begin, u32 end,
    const u32* __restrict__ b, u32 lb,
    const int* __restrict__ slot_of_id, u32 table_len,
    const u32* __restrict__ pos_starts, const u16* __restrict__ positions, double threshold,
    u32* __restrict__ counts)
{
    u32 k = kato_position(begin, end);
    if (k == end) return;
    // The j2len rows, set lists and range stack are sized for KATO_MAX_DIFFLIB_STATE symbols.
    if (lb > KATO_MAX_DIFFLIB_STATE) {
        counts[k] = KATO_OVER_LIMIT;
        return;
    }
    u32 slot = order[k];
    u64 first = offsets[slot], last = offsets[slot + 1];
    if (!live[slot] || kato_cannot_match(last - first, lb, threshold)) {
        counts[k] = KATO_NOT_SCORED;
        return;
    }
    // Pattern positions are u32 below.
    if (last - first > 0xFFFFFFFFull) {
        counts[k] = KATO_OVER_LIMIT;
        return;
    }
    const u32* a = tokens + first;
    u32 la = (u32)(last - first);

    // j2len rows of find_longest_match, indexed by j + 1, and the entries each row set.
    u16 row_a[KATO_MAX_DIFFLIB_STATE + 1], row_b[KATO_MAX_DIFFLIB_STATE + 1];
    u16 set_a[KATO_MAX_DIFFLIB_STATE], set_b[KATO_MAX_DIFFLIB_STATE];
    for (u32 j = 0; j <= lb; ++j) { row_a[j] = 0; row_b[j] = 0; }
    // Pending ranges (alo, ahi, blo, bhi); at most one more than the number of blocks found.
    u32 stack[4 * (KATO_MAX_DIFFLIB_STATE + 2)];
    u32 top = 0;
    stack[0] = 0; stack[1] = la; stack[2] = 0; stack[3] = lb; top = 1;
    u32 total = 0;
    while (top > 0) {
        --top;
        u32 alo = stack[4 * top], ahi = stack[4 * top + 1], blo = stack[4 * top + 2], bhi = stack[4 * top + 3];
        u32 best_i = alo, best_j = blo, best_size = 0;
        u16* prev = row_a; u16* cur = row_b;
        u16* prev_set = set_a; u16* cur_set = set_b;
        u32 prev_n = 0, cur_n = 0;
        for (u32 i = alo; i < ahi; ++i) {
            u32 c = a[i];
            int s = c < table_len ? slot_of_id[c] : -1;
            if (s >= 0) {
                u32 p = pos_starts[s], p_end = pos_starts[s + 1];
                while (p < p_end && positions[p] < blo) ++p;
                for (; p < p_end; ++p) {
                    u32 j = positions[p];
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
        while (best_i > alo && best_j > blo && a[best_i - 1] == b[best_j - 1]) {
            --best_i; --best_j; ++best_size;
        }
        while (best_i + best_size < ahi && best_j + best_size < bhi && a[best_i + best_size] == b[best_j + best_size]) {
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
    counts[k] = total;
}

// Orders similarities descending as unsigned integers: similarities are >= 0, where the bits of
// a double grow with its value, so the complement shrinks. No similarity has key 0.
__device__ __forceinline__ u64 kato_rank_key(double similarity) {
    return ~(u64)__double_as_longlong(similarity);
}

// Whether position k goes to the host, and its rank key: a similarity at or above the threshold
// goes with its key; a count the kernel refused (KATO_OVER_LIMIT) always goes, with key 0 (ahead
// of every similarity, so no top-k cut drops it), and the host then scores the query on the CPU.
__device__ __forceinline__ bool kato_selected(
    const u32* __restrict__ counts, const u64* __restrict__ offsets, const u32* __restrict__ order,
    u32 k, u32 state_len, double threshold, u64* key)
{
    u32 m = counts[k];
    if (m == KATO_OVER_LIMIT) {
        *key = 0;
        return true;
    }
    if (m == KATO_NOT_SCORED) return false;
    u32 slot = order[k];
    u64 total = offsets[slot + 1] - offsets[slot] + state_len;
    double similarity = total == 0 ? 1.0 : 2.0 * (double)m / (double)total;
    if (!(similarity >= threshold)) return false;
    *key = kato_rank_key(similarity);
    return true;
}

// One pass of the radix select behind top-k: counts, by the 8 bits of the rank key at `shift`,
// the passing positions whose key agrees with `prefix` on the bits of `prefix_mask`.
extern "C" __global__ void __launch_bounds__(KATO_MAX_THREADS_PER_BLOCK, 1) key_histogram(
    const u32* __restrict__ counts, const u64* __restrict__ offsets, const u32* __restrict__ order,
    u32 begin, u32 end, u32 state_len, double threshold,
    u64 prefix, u64 prefix_mask, u32 shift, u32* __restrict__ histogram)
{
    u32 k = kato_position(begin, end);
    if (k == end) return;
    u64 key;
    if (!kato_selected(counts, offsets, order, k, state_len, threshold, &key)) return;
    if ((key & prefix_mask) == prefix) atomicAdd(&histogram[(key >> shift) & 255u], 1u);
}

// Keeps the slots whose similarity 2.0 * M / T reaches the threshold and whose rank key is at
// most `max_key` (the k-th best key for top-k, ties included; all ones otherwise), appending
// (slot, M) pairs at an atomically claimed index. Order is arbitrary; the host sorts.
extern "C" __global__ void __launch_bounds__(KATO_MAX_THREADS_PER_BLOCK, 1) select_matches(
    const u32* __restrict__ counts, const u64* __restrict__ offsets,
    const u32* __restrict__ order, u32 begin, u32 end, u32 state_len, double threshold, u64 max_key,
    u32* __restrict__ out_slots, u32* __restrict__ out_counts, u32* __restrict__ out_len)
{
    u32 k = kato_position(begin, end);
    if (k == end) return;
    u64 key;
    if (!kato_selected(counts, offsets, order, k, state_len, threshold, &key) || key > max_key) return;
    u32 at = atomicAdd(out_len, 1u);
    out_slots[at] = order[k];
    out_counts[at] = counts[k];
}
