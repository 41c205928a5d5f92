// float16 -> float32 on the CPU: F16C when the processor has it (checked at run time, so one
// binary runs everywhere), else an exact scalar conversion; blocks of elements over OpenMP threads.
#include <cstring>

#include "common/cpu_features.h"
#include "common/parallel.h"
#include "ops/widen_half.h"

#if defined(CION_X86_DISPATCH)
#include <immintrin.h>
#endif

namespace cion {

namespace {

// Elements per work item: 256 KB of output, large enough that the thread start-up is amortised.
constexpr int64_t kBlock = 1 << 16;

float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  uint32_t exponent = (half >> 10) & 0x1fu;
  uint32_t mantissa = half & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {  // infinity or NaN: all exponent bits set, mantissa kept
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal: rebias the exponent from 15 to 127
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal (mantissa * 2^-24): normalise it, a float32 holds it as a normal number
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

void widen_scalar(const uint16_t* src, float* dst, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = half_to_float(src[i]);
}

#if defined(CION_X86_DISPATCH)
__attribute__((target("avx,f16c"))) void widen_f16c(const uint16_t* src, float* dst, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(half));
  }
  widen_scalar(src + i, dst + i, count - i);
}
#endif

}  // namespace

void widen_half_cpu(const WidenHalfParams& p) {
  void (*widen)(const uint16_t*, float*, int64_t) = widen_scalar;
#if defined(CION_X86_DISPATCH)
  if (cpu_has_f16c()) widen = widen_f16c;
#endif
  const int64_t blocks = (p.count + kBlock - 1) / kBlock;
  parallel_for(blocks, 1, [&](int64_t b) {
    const int64_t begin = b * kBlock;
    widen(p.src + begin, p.dst + begin, (p.count - begin < kBlock) ? p.count - begin : kBlock);
  });
}

}  // namespace cion
