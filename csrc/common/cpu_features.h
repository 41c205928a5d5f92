// Run-time x86 feature checks for the CPU kernels' hand-dispatched paths: a path compiled with
// __attribute__((target(...))) runs only where the processor has those instructions, so one binary
// runs everywhere. Each answer is computed once.
#pragma once

#if defined(__GNUC__) && defined(__x86_64__)
#define CION_X86_DISPATCH 1

namespace cion {

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

inline bool cpu_has_f16c() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  }();
  return has;
}

}  // namespace cion
#endif
