// CUDA ranking metrics: one block per query. The block sorts the query's few matches (rank sort in
// global scratch), then strides over the distance row once; each entry finds, by binary search,
// how many matches it precedes. Entries closer than every match (the common case near the top of
// a good ranking) are counted in a register, not with atomics, to avoid one hot counter.
#include <cuda_runtime.h>

#include <cmath>

#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "ops/rank_metrics.h"

namespace cion {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ bool key_less(double da, int64_t ia, double db, int64_t ib) {
  return da < db || (da == db && ia < ib);
}

// Number of sorted matches with key <= (x, j).
__device__ __forceinline__ int64_t matches_not_after(const double* keys, const int64_t* index,
                                                     int64_t count, double x, int64_t j) {
  int64_t lo = 0, hi = count;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (key_less(keys[mid], index[mid], x, j) || (keys[mid] == x && index[mid] == j))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

template <class T>
__global__ void __launch_bounds__(kThreads) rank_metrics_kernel(RankMetricsParams p) {
  const int64_t q = blockIdx.x;
  const T* row = static_cast<const T*>(p.distmat) + q * p.dist_row_stride;
  const int64_t G = p.num_gallery;
  const int64_t begin = p.match_begin[q];
  const int64_t n = p.match_end[q] - begin;
  const int64_t base = p.scratch_offsets[q];
  double* keys = p.scratch_distance + base;
  int64_t* index = p.scratch_index + base;
  unsigned long long* before = reinterpret_cast<unsigned long long*>(p.scratch_count + base);
  const int64_t query_cam = p.query_camids[q];

  __shared__ unsigned long long shared_before_all;
  __shared__ int shared_nan;
  if (threadIdx.x == 0) {
    shared_before_all = 0;
    shared_nan = 0;
  }

  // 1. Count the valid matches (same pid, different camera when remove_same_camera).
  int64_t P = 0;
  for (int64_t chunk = 0; chunk < n; chunk += blockDim.x) {
    const int64_t m = chunk + threadIdx.x;
    bool is_match = false;
    if (m < n) {
      const int64_t g = p.gallery_by_pid[begin + m];
      is_match = !(p.remove_same_camera && p.gallery_camids[g] == query_cam);
    }
    P += __syncthreads_count(is_match);
  }

  if (P == 0) {
    bool nan = false;
    for (int64_t j = threadIdx.x; j < G; j += blockDim.x) {
      const auto x = to_acc(row[j]);
      nan |= (x != x);
    }
    if (nan) atomicOr(p.status, 1);
    if (threadIdx.x == 0) {
      p.num_matches[q] = 0;
      p.first_match[q] = -1;
      p.average_precision[q] = NAN;
      p.inverse_negative_penalty[q] = NAN;
    }
    return;
  }

  // 2. Rank sort of the matches by (distance, gallery index): position = number of smaller keys.
  for (int64_t m = threadIdx.x; m < n; m += blockDim.x) {
    const int64_t g = p.gallery_by_pid[begin + m];
    if (p.remove_same_camera && p.gallery_camids[g] == query_cam) continue;
    const double d = static_cast<double>(to_acc(row[g]));
    if (d != d) atomicOr(p.status, 1);
    int64_t position = 0;
    for (int64_t other = 0; other < n; ++other) {
      const int64_t h = p.gallery_by_pid[begin + other];
      if (p.remove_same_camera && p.gallery_camids[h] == query_cam) continue;
      position += key_less(static_cast<double>(to_acc(row[h])), h, d, g);
    }
    if (position < P) {  // always true unless a NaN broke the order (then status reports it)
      keys[position] = d;
      index[position] = g;
    }
  }
  for (int64_t t = threadIdx.x; t <= n; t += blockDim.x) before[t] = 0;
  __syncthreads();

  // 3. One pass over the row.
  const double lowest = keys[0];
  const double highest = keys[P - 1];
  unsigned long long before_all = 0;
  bool nan = false;
  for (int64_t j = threadIdx.x; j < G; j += blockDim.x) {
    const double x = static_cast<double>(to_acc(row[j]));
    if (x < lowest) {
      ++before_all;
    } else if (x > highest) {
      // ranks after every match
    } else if (x != x) {
      nan = true;
    } else {
      const int64_t t = matches_not_after(keys, index, P, x, j);
      if (t < P) atomicAdd(before + t, 1ull);
    }
  }
  // Junk entries (same pid, same camera) were counted above like any other: take them back out.
  for (int64_t m = threadIdx.x; m < n; m += blockDim.x) {
    const int64_t g = p.gallery_by_pid[begin + m];
    if (!(p.remove_same_camera && p.gallery_camids[g] == query_cam)) continue;
    const double x = static_cast<double>(to_acc(row[g]));
    if (x != x) continue;
    const int64_t t = (x < lowest) ? 0 : matches_not_after(keys, index, P, x, g);
    if (t < P) atomicAdd(before + t, static_cast<unsigned long long>(-1ll));
  }
  if (nan) atomicOr(&shared_nan, 1);
  atomicAdd(&shared_before_all, before_all);
  __syncthreads();

  // 4. Prefix sums -> ranks -> AP / INP (P is small: one thread).
  if (threadIdx.x == 0) {
    if (shared_nan) atomicOr(p.status, 1);
    int64_t rank = static_cast<int64_t>(shared_before_all);
    double precision_sum = 0.0;
    for (int64_t m = 0; m < P; ++m) {
      rank += static_cast<int64_t>(before[m]);
      if (m == 0) p.first_match[q] = rank;
      precision_sum += static_cast<double>(m + 1) / static_cast<double>(rank + 1);
    }
    p.num_matches[q] = P;
    p.average_precision[q] = precision_sum / static_cast<double>(P);
    p.inverse_negative_penalty[q] = static_cast<double>(P) / static_cast<double>(rank + 1);
  }
}

}  // namespace

void rank_metrics_cuda(const RankMetricsParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  TensorView dtype_holder;
  dtype_holder.dtype = p.dist_dtype;
  dtype_holder.name = "distmat";
  dispatch_floating(dtype_holder, [&](auto tag) {
    using T = decltype(tag);
    rank_metrics_kernel<T><<<static_cast<unsigned>(p.num_query), kThreads, 0,
                             static_cast<cudaStream_t>(stream)>>>(p);
  });
  CION_CUDA_CHECK_LAUNCH();
}

}  // namespace cion
