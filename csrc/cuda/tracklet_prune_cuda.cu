// CUDA level-1 pruning: one block per tracklet (grid-stride). The block computes the frames'
// inverse norms (a warp per frame), the dots d_j = f_j . S with S staged in shared memory one
// chunk of dimensions at a time (any D fits), then runs the drop loop: a block-wide arg-min of the
// scores (ties to the lowest row), and, per drop, d_j -= f_j . f_m with a warp per kept frame.
// Everything is float64, as on the CPU; the keep-mask doubles as the "still kept" flags.
#include <cuda_runtime.h>

#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"
#include "cuda/tracklet_common.cuh"
#include "ops/tracklet_prune.h"

namespace cion {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

struct ArgMin {
  double score;
  int64_t index;  // -1: none
};

__device__ __forceinline__ ArgMin better(ArgMin a, ArgMin b) {
  if (a.index < 0) return b;
  if (b.index < 0) return a;
  return (b.score < a.score || (b.score == a.score && b.index < a.index)) ? b : a;
}

__device__ __forceinline__ ArgMin block_argmin(ArgMin v, ArgMin* buffer) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    ArgMin other;
    other.score = __shfl_down_sync(0xffffffffu, v.score, offset);
    other.index = __shfl_down_sync(0xffffffffu, v.index, offset);
    v = better(v, other);
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) buffer[threadIdx.x >> 5] = v;
  __syncthreads();
  ArgMin result = buffer[0];
  for (int w = 1; w < kWarps; ++w) result = better(result, buffer[w]);
  return result;
}

template <class T>
__device__ __forceinline__ double warp_dot(const T* x, const T* y, int64_t dim, int lane) {
  double sum = 0.0;
  for (int64_t d = lane; d < dim; d += 32) sum += static_cast<double>(x[d]) * static_cast<double>(y[d]);
  return warp_reduce(sum, SumOp{});
}

template <class T>
__global__ void __launch_bounds__(kThreads) prune_kernel(TrackletPruneParams p) {
  __shared__ double sum_chunk[kThreads];
  __shared__ double reduce_buffer[32];
  __shared__ ArgMin argmin_buffer[32];
  const T* x = static_cast<const T*>(p.set.features);
  const int64_t dim = p.dim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  for (int64_t t = blockIdx.x; t < p.set.num; t += gridDim.x) {
    const int64_t f0 = p.set.offsets[t], f1 = p.set.offsets[t + 1];
    const int64_t L = f1 - f0;
    if (L == 0) continue;  // block-uniform
    uint8_t* keep = p.keep + f0;
    double* inv = p.inv_norm + f0;
    double* dots = p.dots + f0;
    bool finite = true;
    for (int64_t j = warp; j < L; j += kWarps) {
      const T* row = x + (f0 + j) * dim;
      const double sq = warp_dot(row, row, dim, lane);
      if (lane == 0) {
        finite &= isfinite(sq);
        inv[j] = sq > 0.0 ? 1.0 / sqrt(sq) : 0.0;
        dots[j] = 0.0;
        keep[j] = 1;
      }
    }
    if (!__syncthreads_and(finite)) {  // block-uniform: report, skip this tracklet (the call raises)
      if (threadIdx.x == 0) atomicOr(p.status, 1);
      continue;
    }

    // d_j = f_j . S, S = sum of normalised frames, built kThreads dimensions at a time.
    for (int64_t d0 = 0; d0 < dim; d0 += kThreads) {
      const int64_t d = d0 + threadIdx.x;
      double s = 0.0;
      if (d < dim)
        for (int64_t j = 0; j < L; ++j) s += static_cast<double>(x[(f0 + j) * dim + d]) * inv[j];
      sum_chunk[threadIdx.x] = s;
      __syncthreads();
      const int64_t width = dim - d0 < kThreads ? dim - d0 : kThreads;
      for (int64_t j = warp; j < L; j += kWarps) {
        const T* row = x + (f0 + j) * dim + d0;
        double partial = 0.0;
        for (int64_t e = lane; e < width; e += 32) partial += static_cast<double>(row[e]) * sum_chunk[e];
        partial = warp_reduce(partial, SumOp{});
        if (lane == 0) dots[j] += partial * inv[j];
      }
      __syncthreads();
    }

    double local = 0.0;
    for (int64_t j = threadIdx.x; j < L; j += kThreads) local += dots[j];
    double norm2 = block_reduce(local, SumOp{}, reduce_buffer);  // |S|^2, the same in every thread

    int64_t kept = L;
    while (kept >= 2) {
      ArgMin mine{0.0, -1};
      for (int64_t j = threadIdx.x; j < L; j += kThreads) {
        if (!keep[j]) continue;
        const double n_j = inv[j] > 0.0 ? 1.0 : 0.0;
        const double others2 = norm2 - 2.0 * dots[j] + n_j;
        const double score = others2 > kPruneZeroNorm2 ? (dots[j] - n_j) / sqrt(others2) : 0.0;
        mine = better(mine, ArgMin{score, j});
      }
      ArgMin worst = block_argmin(mine, argmin_buffer);
      if (kept == 2) {
        // Both scores are the cosine between the two frames: the earlier one goes (as on the CPU).
        int64_t first = -1;
        for (int64_t j = threadIdx.x; j < L; j += kThreads)
          if (keep[j]) first = first < 0 ? j : first;
        worst.index = static_cast<int64_t>(block_reduce(
            static_cast<double>(first < 0 ? L : first), MinOp{}, reduce_buffer));
        // Its own score, recomputed from the same values the CPU uses.
        const double n_w = inv[worst.index] > 0.0 ? 1.0 : 0.0;
        const double others2 = norm2 - 2.0 * dots[worst.index] + n_w;
        worst.score = others2 > kPruneZeroNorm2 ? (dots[worst.index] - n_w) / sqrt(others2) : 0.0;
      }
      if (worst.score >= p.threshold) break;  // block-uniform
      const int64_t m = worst.index;
      norm2 -= 2.0 * dots[m] - (inv[m] > 0.0 ? 1.0 : 0.0);
      --kept;
      __syncthreads();  // everyone has read dots[m] and keep[] before they change
      if (threadIdx.x == 0) keep[m] = 0;
      const T* dropped = x + (f0 + m) * dim;
      for (int64_t j = warp; j < L; j += kWarps) {
        if (j == m || !keep[j]) continue;  // warp-uniform
        const double f = warp_dot(x + (f0 + j) * dim, dropped, dim, lane);
        if (lane == 0) dots[j] -= f * (inv[j] * inv[m]);
      }
      __syncthreads();
    }
    if (kept < p.min_frames)
      for (int64_t j = threadIdx.x; j < L; j += kThreads) keep[j] = 0;
    __syncthreads();
  }
}

}  // namespace

void tracklet_prune_cuda(const TrackletPruneParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  if (p.set.num == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::kFloat64)
    prune_kernel<double><<<grid_for(p.set.num), kThreads, 0, s>>>(p);
  else
    prune_kernel<float><<<grid_for(p.set.num), kThreads, 0, s>>>(p);
  CION_CUDA_CHECK_LAUNCH();
}

}  // namespace cion
