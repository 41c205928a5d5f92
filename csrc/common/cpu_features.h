// Run-time x86 feature checks for the CPU kernels' hand-dispatched paths: a path compiled with
// __attribute__((target(...))) runs only where the processor has those instructions, so one binary
// runs everywhere. Each answer is computed once.
#pragma once

#include <cstdint>  // on glibc, defines __GLIBC__, tested below

// CION_SIMD_CLONES: a loop function compiled for AVX-512, AVX2 and baseline x86-64 (SSE2, what the
// portable wheel targets), the copy picked once per process by the loader (GCC target_clones, an
// ifunc: GCC on glibc x86-64 only; elsewhere the one baseline copy). The AVX-512 and AVX2 copies
// would contract a * b + c into an FMA and round differently from the baseline, so a file that
// uses the macro on floating-point arithmetic starts with CION_SIMD_CLONES_SAME_ROUNDING, which
// also lets GCC vectorise compare-and-select loops (no-trapping-math: no FP exception is observed).
// Where that holds (GCC), CION_SAME_ROUNDING is defined: a file may then also hand-dispatch float
// arithmetic to target() copies and keep the baseline's bits; elsewhere it keeps one copy.
#if defined(__GNUC__) && !defined(__clang__)
#define CION_SIMD_CLONES_SAME_ROUNDING \
  _Pragma("GCC optimize(\"no-trapping-math\")") _Pragma("GCC optimize(\"fp-contract=off\")")
#define CION_SAME_ROUNDING 1
#else
#define CION_SIMD_CLONES_SAME_ROUNDING
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define CION_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CION_SIMD_CLONES
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define CION_X86_DISPATCH 1

#include <cstdlib>
#include <cstring>

namespace cion {

// The widest copy a kernel may run, as an environment variable names it: "avx512vl", "avx2" or
// "baseline" (unset or anything else: no cap). The tests set these (CION_FAST_DOT_BLOCK_ISA,
// CION_FAST_TRACKLET_PRUNE_ISA, CION_FAST_MULTICROP_ISA) to run every copy on one machine.
enum class IsaCap { kNone, kAvx512vl, kAvx2, kBaseline };

inline IsaCap isa_cap(const char* variable) {
  const char* cap = std::getenv(variable);
  if (cap == nullptr) return IsaCap::kNone;
  if (std::strcmp(cap, "avx512vl") == 0) return IsaCap::kAvx512vl;
  if (std::strcmp(cap, "avx2") == 0) return IsaCap::kAvx2;
  if (std::strcmp(cap, "baseline") == 0) return IsaCap::kBaseline;
  return IsaCap::kNone;
}

inline bool cpu_has_avx2_fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

inline bool cpu_has_avx512f() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
  }();
  return has;
}

inline bool cpu_has_avx512vl() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  }();
  return has;
}

// AVX-512 with byte and word operations (masked byte loads) and the 128/256-bit forms.
inline bool cpu_has_avx512bw_vl() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return has;
}

// Whether 512-bit multiply-adds may run at twice the 256-bit rate: Intel's AVX-512 cores (the Xeon
// of benchmarks/NOTES.md: 224 against 118 GFLOP/s; parts with one 512-bit FMA unit gain less). AMD's
// Zen 4 executes each 512-bit operation as two 256-bit halves. No CPUID bit says how wide the units
// are, so the vendor decides; the callers' copies give the same bits, so only speed depends on it.
inline bool cpu_has_full_width_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_is("intel");
  }();
  return has;
}

inline bool cpu_has_f16c() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  }();
  return has;
}

}  // namespace cion
#endif
