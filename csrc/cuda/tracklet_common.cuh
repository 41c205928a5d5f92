// Helpers shared by the tracklet kernels in csrc/cuda/: inverse L2 norms of feature rows, grid sizes.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"

namespace cion {

// inv[r] = 1 / ||x[r]|| (0 for an all-zero row), one warp per row, the sum of squares in float64.
// A NaN or inf makes the sum non-finite: `bit` is then or-ed into *status.
template <class T>
__global__ void __launch_bounds__(256) inverse_norms_kernel(const T* x, int64_t rows, int64_t dim, T* inv,
                                                            int32_t* status, int32_t bit) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
    const T* row = x + r * dim;
    double sum = 0.0;
    for (int64_t d = lane; d < dim; d += 32) sum += static_cast<double>(row[d]) * static_cast<double>(row[d]);
    sum = warp_reduce(sum, SumOp{});
    if (lane == 0) {
      if (!isfinite(sum)) atomicOr(status, bit);
      inv[r] = sum > 0.0 ? static_cast<T>(1.0 / sqrt(sum)) : T(0);
    }
  }
}

// A grid size for `items` independent work items handled by grid-stride loops.
inline int grid_for(int64_t items) {
  return static_cast<int>(items < (int64_t{1} << 20) ? items : (int64_t{1} << 20));
}

template <class T>
void launch_inverse_norms(const T* x, int64_t rows, int64_t dim, T* inv, int32_t* status, int32_t bit,
                          cudaStream_t stream) {
  if (rows == 0) return;
  inverse_norms_kernel<T><<<grid_for(ceil_div(rows, 8)), 256, 0, stream>>>(x, rows, dim, inv, status, bit);
  CION_CUDA_CHECK_LAUNCH();
}

}  // namespace cion
