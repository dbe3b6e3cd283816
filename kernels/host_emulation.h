// Stand-ins for the CUDA built-ins that kernels/match.cu uses, so the same file compiles as C++
// for the host and its kernels run in an emulated launch (kernels/host_emulation.cpp).
//
// A block is emulated as its threads run as cooperative tasks (fibers, one stack each) on one OS
// thread: each runs until it reaches __syncthreads() or ends, and the block moves past a barrier
// only when every thread of the block has arrived at that same barrier; a block where some
// threads wait at a barrier that others skip (they ended, or wait at another) is reported as
// barrier divergence. Each block gets its own dynamic shared memory (`kato_shared`), filled with
// a poison byte, so a read that a missing barrier lets run before the write it needs sees
// garbage. Blocks run one after another. Warp intrinsics and static __shared__ arrays are not
// emulated: a kernel that uses them fails to compile for the host, rather than being tested
// under the wrong semantics.
#pragma once

#include <cstdint>
#include <cstring>

#define KATO_HOST_EMULATION 1

struct kato_dim3 {
    unsigned int x, y, z;
};

// Set by the emulated launch whenever a thread of the block is resumed.
static thread_local kato_dim3 threadIdx, blockIdx, blockDim, gridDim;
// The running block's dynamic shared memory.
static thread_local unsigned char* kato_shared;

#define __global__
#define __device__
#define __forceinline__ inline
// Launch bounds only steer the device compiler's register allocation.
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) alignas(n)

// Waits at a barrier (a fiber switch); `line` identifies the barrier in kernels/match.cu.
void kato_emulated_barrier(int line);
#define __syncthreads() kato_emulated_barrier(__LINE__)

static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }

// Fibers of one OS thread never run at once, so a plain read-modify-write is atomic here.
static inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
    unsigned int old = *address;
    *address = old + value;
    return old;
}
