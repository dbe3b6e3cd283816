// Stand-ins for the CUDA built-ins that kernels/match.cu uses, so the same file compiles as C++
// for the host and its kernels can be run by an emulated launch (kernels/host_emulation.cpp).
//
// The kernels use no shared memory, no __syncthreads and no warp intrinsics: every thread works
// alone, so running the threads of a grid one after another is an exact emulation. None of those
// built-ins is defined here on purpose: a kernel that starts using one fails to compile for the
// host until this emulation learns it (a real barrier across emulated threads, per-block shared
// memory), rather than being tested under the wrong semantics.
#pragma once

#include <cstdint>

struct kato_dim3 {
    unsigned int x, y, z;
};

// Set by the emulated launch before each thread runs.
static thread_local kato_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
// Launch bounds only steer the device compiler's register allocation.
#define __launch_bounds__(...)
#define __restrict__ __restrict

#include <cstring>

static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }

static inline long long __double_as_longlong(double x) {
    long long bits;
    std::memcpy(&bits, &x, sizeof bits);
    return bits;
}

static inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
