// Warp/block reductions and order-preserving float keys for the CUDA kernels in csrc/cuda/.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace cion {

template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T value, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1) value = op(value, __shfl_down_sync(0xffffffffu, value, offset));
  return value;
}

// Reduces one value per thread over the block; every thread gets the result. `buffer` holds one
// T per warp (32 entries cover any block). Contains __syncthreads: call from all threads.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T value, Op op, T* buffer) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  value = warp_reduce(value, op);
  __syncthreads();  // buffer may still be read by a previous call
  if (lane == 0) buffer[warp] = value;
  __syncthreads();
  T total = buffer[0];
  for (int w = 1; w < warps; ++w) total = op(total, buffer[w]);
  return total;
}

struct MaxOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};
struct MinOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a < b ? a : b; }
};
struct SumOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};

// Unsigned keys that sort like the floats they encode (negatives flipped, positives with the sign
// bit set): radix selection on them finds exact order statistics.
template <class T>
struct FloatKey;
template <>
struct FloatKey<float> {
  using type = uint32_t;
  static constexpr int kBits = 32;
  __device__ __forceinline__ static type encode(float v) {
    const uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  __device__ __forceinline__ static float decode(type k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
  }
};
template <>
struct FloatKey<double> {
  using type = unsigned long long;
  static constexpr int kBits = 64;
  __device__ __forceinline__ static type encode(double v) {
    const unsigned long long u = static_cast<unsigned long long>(__double_as_longlong(v));
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  }
  __device__ __forceinline__ static double decode(type k) {
    return __longlong_as_double(static_cast<long long>((k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k));
  }
};

}  // namespace cion
