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
