// dtype dispatch and the 16-bit float storage types shared by CPU and CUDA code.
//
// Half / BFloat16 are plain 16-bit storage: kernels load them with to_float() and accumulate in
// float32 (docs/PROTOCOLS.md, "The array contract"). They compile in host and device code alike.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/tensor_view.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define CION_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CION_HOST_DEVICE inline
#endif

namespace cion {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

CION_HOST_DEVICE float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}
CION_HOST_DEVICE uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

CION_HOST_DEVICE float to_float(float x) { return x; }
CION_HOST_DEVICE float to_float(double x) { return static_cast<float>(x); }
CION_HOST_DEVICE float to_float(BFloat16 x) { return bits_to_float(uint32_t(x.bits) << 16); }
CION_HOST_DEVICE float to_float(Half x) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(x.bits));
#else
  // IEEE binary16 -> binary32, subnormals included.
  const uint32_t sign = uint32_t(x.bits & 0x8000u) << 16;
  uint32_t exponent = (x.bits >> 10) & 0x1fu;
  uint32_t mantissa = x.bits & 0x3ffu;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf/nan
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);
    // Subnormal: value = mantissa * 2^-24.
    float value = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -value : value;
  }
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

// Accumulation type: float64 data stays float64, everything else is computed in float32.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
CION_HOST_DEVICE double to_acc(double x) { return x; }
CION_HOST_DEVICE float to_acc(float x) { return x; }
CION_HOST_DEVICE float to_acc(Half x) { return to_float(x); }
CION_HOST_DEVICE float to_acc(BFloat16 x) { return to_float(x); }

// Round-to-nearest-even float -> bfloat16 / half (used for low-precision outputs).
CION_HOST_DEVICE BFloat16 to_bfloat16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{uint16_t((u >> 16) | 0x40u)};  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return BFloat16{uint16_t(u >> 16)};
}
CION_HOST_DEVICE Half to_half(float f) {
#if defined(__CUDA_ARCH__)
  return Half{__half_as_ushort(__float2half_rn(f))};
#else
  const uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return Half{uint16_t(sign | 0x7e00u)};  // NaN
  if (abs >= 0x477ff000u) return Half{uint16_t(sign | 0x7c00u)};  // overflow -> inf
  if (abs < 0x38800000u) {  // below 2^-14: a half subnormal (or zero)
    // Result bits = round(value * 2^24) = round(mant * 2^(e - 126)), e the float's biased exponent.
    const uint32_t shift = 126u - (abs >> 23);
    if (shift > 24u) return Half{uint16_t(sign)};
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t half_mant = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (half_mant & 1u))) ++half_mant;
    return Half{uint16_t(sign | half_mant)};
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return Half{uint16_t(sign | ((rounded - 0x38000000u) >> 13))};
#endif
}

template <class T>
CION_HOST_DEVICE T from_float(float f);
template <>
CION_HOST_DEVICE float from_float<float>(float f) { return f; }
template <>
CION_HOST_DEVICE double from_float<double>(float f) { return f; }
template <>
CION_HOST_DEVICE Half from_float<Half>(float f) { return to_half(f); }
template <>
CION_HOST_DEVICE BFloat16 from_float<BFloat16>(float f) { return to_bfloat16(f); }

// Calls f(T{}) with T the storage type of a floating dtype: float, double, Half or BFloat16.
template <class F>
decltype(auto) dispatch_floating(const TensorView& t, F&& f) {
  switch (t.dtype) {
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
    case DType::kFloat16: return f(Half{});
    case DType::kBFloat16: return f(BFloat16{});
    default: break;
  }
  throw TypeError(str_cat(t.name, " must be a floating array (float16, bfloat16, float32, float64), got ",
                          dtype_name(t.dtype)));
}

// Calls f(T{}) with T = int32_t or int64_t.
template <class F>
decltype(auto) dispatch_index(const TensorView& t, F&& f) {
  switch (t.dtype) {
    case DType::kInt32: return f(int32_t{});
    case DType::kInt64: return f(int64_t{});
    default: break;
  }
  throw TypeError(str_cat(t.name, " must be an integer array (int32 or int64), got ",
                          dtype_name(t.dtype)));
}

}  // namespace cion
