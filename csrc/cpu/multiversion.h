// Runtime ISA dispatch for the CPU kernels: a function marked INITKIT_MULTIVERSION is compiled
// for AVX-512 (x86-64-v4), AVX2 (x86-64-v3) and baseline x86-64, and the loader picks the best
// clone for the running CPU, so a default build runs on any x86-64 and still uses AVX-512 here.
// FP contraction is off for the whole build (setup.py, CMakeLists.txt), so every clone of a fill
// gives the same bits.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define INITKIT_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define INITKIT_MULTIVERSION
#endif

#include <cstdlib>
#include <cstring>

namespace initkit {

// The widest hand-written kernels this CPU runs (cpu/fill_simd.h's fills, cpu/dense_kernel.cpp's
// GEMM), capped by INITKIT_CPU_KERNELS: "avx2", or "portable" (no hand-written kernel; the GEMM
// engine then is MKL or oneDNN). Read once, at first use; the tests run every level this CPU has
// and compare the bits.
enum class CpuKernels { kPortable, kAvx2, kAvx512 };
inline CpuKernels cpu_kernels() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const CpuKernels level = [] {
    const char* cap = std::getenv("INITKIT_CPU_KERNELS");
    const bool portable = cap != nullptr && std::strcmp(cap, "portable") == 0;
    const bool avx2 = cap != nullptr && std::strcmp(cap, "avx2") == 0;
    // The AVX2 kernels use FMA and POPCNT too: every AVX2 CPU has both, but a VM may hide them.
    if (portable || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
        !__builtin_cpu_supports("popcnt"))
      return CpuKernels::kPortable;
    if (avx2 || !__builtin_cpu_supports("avx512f")) return CpuKernels::kAvx2;
    return CpuKernels::kAvx512;
  }();
  return level;
#else
  return CpuKernels::kPortable;
#endif
}

}  // namespace initkit
