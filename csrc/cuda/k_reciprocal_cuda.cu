// CUDA k-reciprocal re-ranking. The per-item logic is ops/k_reciprocal_steps.h (shared with the
// CPU); here is only how the work is spread:
//   select       one warp per block row (ballot over 32 values against the row's threshold, lane 0
//                inserts the few that pass) and one thread per block column (coalesced reads);
//   expand, query expansion, transpose, pairs   one thread per item (sets of a few dozen);
//   weights      one warp per item (feature distances are warp-wide dot products);
//   jaccard      one thread block per row with a dense float accumulator row in scratch; the
//                inverted-index contributions are added with atomics, so the summation order (and
//                the last bits of J) may vary from run to run.
// Everything runs on the caller's stream; nothing synchronises.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "ops/k_reciprocal.h"
#include "ops/k_reciprocal_steps.h"

namespace cion {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

unsigned blocks_for(int64_t threads) { return static_cast<unsigned>(ceil_div(threads, kThreads)); }

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ double warp_max(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmax(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// ---- stage 1: select ---------------------------------------------------------------------------

// The distance at (r, c): the block value, or max(|a|^2 + |b|^2 - 2 a.b, 0) for a Gram block
// (the same expression as the CPU; a NaN stays NaN).
template <class T>
__device__ __forceinline__ double block_value(const KReciprocalSelectParams& p, T value, int64_t r, int64_t c) {
  if (!p.row_norms) return static_cast<double>(value);
  const T d = static_cast<const T*>(p.row_norms)[r] + static_cast<const T*>(p.col_norms)[c] - T(2) * value;
  return static_cast<double>(d < T(0) ? T(0) : d);
}

template <class T>
__global__ void __launch_bounds__(kThreads) select_rows_kernel(KReciprocalSelectParams p) {
  const int64_t r = global_thread() / kWarp;  // warp-uniform, so whole warps return together
  const int lane = threadIdx.x % kWarp;
  if (r >= p.rows) return;
  const int64_t item = p.row_begin + r;
  const int64_t W = p.num_neighbours;
  const T* row = static_cast<const T*>(p.block) + r * p.block_row_stride;
  const int64_t* columns = p.block_columns ? p.block_columns + r * p.block_row_stride : nullptr;
  double* values = p.neighbour_value + item * W;
  int64_t* indices = p.neighbour_index + item * W;
  const bool keep_raw = p.raw_out && item < p.num_query && !columns;

  double worst_value = values[W - 1];
  int64_t worst_index = indices[W - 1];
  double row_max = -INFINITY;
  bool finite = true;
  for (int64_t c0 = 0; c0 < p.cols; c0 += kWarp) {
    const int64_t c = c0 + lane;
    int64_t j = -1;
    double v = 0.0;
    if (c < p.cols) {
      j = columns ? columns[c] : p.col_begin + c;
      if (j >= 0) {
        v = block_value<T>(p, row[c], r, c);
        finite &= isfinite(v);
        row_max = fmax(row_max, v);
        if (keep_raw && j >= p.num_query) p.raw_out[item * p.raw_out_row_stride + (j - p.num_query)] = static_cast<float>(v);
      }
    }
    bool wanted = j >= 0 && j != item && v <= worst_value && krr::ranks_before(v, j, worst_value, worst_index);
    unsigned pending = __ballot_sync(kFullMask, wanted);
    while (pending) {  // rare once the list is full: most values fail the threshold
      const int source = __ffs(pending) - 1;
      const double value = __shfl_sync(kFullMask, v, source);
      const int64_t index = __shfl_sync(kFullMask, j, source);
      if (lane == 0) krr::offer(values, indices, W, value, index);
      __syncwarp();  // orders lane 0's writes before the other lanes read the new threshold
      worst_value = values[W - 1];
      worst_index = indices[W - 1];
      wanted = wanted && lane != source && krr::ranks_before(v, j, worst_value, worst_index);
      pending = __ballot_sync(kFullMask, wanted);
    }
  }
  row_max = warp_max(row_max);
  const bool all_finite = __all_sync(kFullMask, finite);
  if (lane == 0) {
    if (p.row_max && row_max > p.row_max[item]) p.row_max[item] = row_max;
    if (!all_finite && p.status) atomicOr(p.status, 1);
  }
}

// Symmetric blocks: column c's item scans the block top to bottom (consecutive threads read
// consecutive columns: coalesced). Values were checked for finiteness by the row pass.
template <class T>
__global__ void __launch_bounds__(kThreads) select_columns_kernel(KReciprocalSelectParams p) {
  const int64_t c = global_thread();
  if (c >= p.cols) return;
  const int64_t item = p.col_begin + c;
  const int64_t W = p.num_neighbours;
  double* values = p.neighbour_value + item * W;
  int64_t* indices = p.neighbour_index + item * W;
  double worst_value = values[W - 1];
  int64_t worst_index = indices[W - 1];
  double column_max = -INFINITY;
  const T* column = static_cast<const T*>(p.block) + c;
  for (int64_t r = 0; r < p.rows; ++r) {
    const double v = block_value<T>(p, column[r * p.block_row_stride], r, c);
    const int64_t j = p.row_begin + r;
    column_max = fmax(column_max, v);
    if (v <= worst_value && j != item && krr::ranks_before(v, j, worst_value, worst_index)) {
      krr::offer(values, indices, W, v, j);
      worst_value = values[W - 1];
      worst_index = indices[W - 1];
    }
  }
  if (p.row_max && column_max > p.row_max[item]) p.row_max[item] = column_max;
}

// ---- stage 2: expand ---------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads) expand_kernel(KReciprocalExpandParams p) {
  const int64_t i = global_thread();
  if (i >= p.num_items) return;
  int64_t* buffer = p.scratch + i * krr::expansion_capacity(p.m1, p.mh);
  if (!p.indices) {
    p.counts[i] = krr::expanded_set(p.neighbours, p.num_neighbours, i, p.m1, p.mh, buffer);
    return;
  }
  const int64_t begin = p.indptr[i], size = p.indptr[i + 1] - begin;  // the count pass left it here
  for (int64_t a = 0; a < size; ++a) p.indices[begin + a] = buffer[a];
}

// ---- stage 3: weights --------------------------------------------------------------------------

// One warp per item: distances (staged in `values` as float), then the shifted softmax.
template <class T>
__global__ void __launch_bounds__(kThreads) weights_kernel(KReciprocalWeightsParams p) {
  const int64_t i = global_thread() / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (i >= p.num_items) return;
  const int64_t begin = p.indptr[i], end = p.indptr[i + 1];
  const double divisor = krr::row_divisor(p.row_max, i);
  double lowest = INFINITY;
  if (p.source == KReciprocalSource::kFeatures) {
    using Acc = acc_t<T>;
    const T* xi = krr::feature_row<T>(p, i);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t j = p.indices[q];
      const T* xj = krr::feature_row<T>(p, j);
      double listed = 0.0;  // every lane reads the same list: the branch is uniform across the warp
      if (j != i && !krr::listed_distance(p, i, j, &listed)) {
        Acc partial = 0;
        for (int64_t d = lane; d < p.dim; d += kWarp) {
          const Acc diff = static_cast<Acc>(xi[d]) - static_cast<Acc>(xj[d]);
          partial += diff * diff;
        }
        listed = static_cast<double>(warp_sum(partial));
      }
      const double distance = listed / divisor;
      lowest = fmin(lowest, distance);
      if (lane == 0) p.values[q] = static_cast<float>(distance);
    }
  } else {
    unsigned long long estimated = 0;
    for (int64_t q = begin + lane; q < end; q += kWarp) {
      bool estimate = false;
      const double raw = p.source == KReciprocalSource::kBlocks ? krr::block_distance<T>(p, i, p.indices[q])
                                                                 : krr::graph_distance<T>(p, i, p.indices[q], &estimate);
      const double distance = raw / divisor;
      estimated += estimate;
      lowest = fmin(lowest, distance);
      p.values[q] = static_cast<float>(distance);
    }
    estimated = warp_sum(estimated);
    if (lane == 0 && estimated && p.estimated)
      atomicAdd(reinterpret_cast<unsigned long long*>(p.estimated), estimated);
    lowest = -warp_max(-lowest);
  }
  __syncwarp();
  double total = 0.0;
  for (int64_t q = begin + lane; q < end; q += kWarp) total += exp(-(static_cast<double>(p.values[q]) - lowest));
  total = warp_sum(total);
  __syncwarp();
  for (int64_t q = begin + lane; q < end; q += kWarp)
    p.values[q] = static_cast<float>(exp(-(static_cast<double>(p.values[q]) - lowest)) / total);
}

// ---- stages 4, 5 and the graph pairs: one thread per item ---------------------------------------

__global__ void __launch_bounds__(kThreads) query_expansion_kernel(KReciprocalExpansionParams p) {
  const int64_t i = global_thread();
  if (i >= p.num_items) return;
  if (p.out_indptr) {
    krr::expansion_row(p.neighbours, p.num_neighbours, i, p.k2, p.indptr, p.indices, p.values,
                       p.out_indices + p.out_indptr[i], p.out_values + p.out_indptr[i]);
  } else {
    p.counts[i] = krr::expansion_row(p.neighbours, p.num_neighbours, i, p.k2, p.indptr, p.indices, p.values,
                                     nullptr, nullptr);
  }
}

__global__ void __launch_bounds__(kThreads) transpose_kernel(KReciprocalTransposeParams p) {
  const int64_t i = p.row_begin + global_thread();
  if (i >= p.num_items) return;
  for (int64_t q = p.indptr[i]; q < p.indptr[i + 1]; ++q) {
    const int64_t k = p.indices[q];
    if (!p.colptr) {
      atomicAdd(reinterpret_cast<unsigned long long*>(p.col_counts + k), 1ull);
    } else {
      const int64_t at = static_cast<int64_t>(atomicAdd(reinterpret_cast<unsigned long long*>(p.cursor + k), 1ull));
      p.rows[at] = i;
      p.out_values[at] = p.values[q];
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) pairs_kernel(KReciprocalPairParams p) {
  const int64_t at = global_thread();
  if (at >= p.num_query * p.num_candidates) return;
  const int64_t q = at / p.num_candidates;
  const int64_t j = p.candidates[at];
  if (j < p.num_query) {  // padding, the query itself or another query
    p.out[at] = INFINITY;
    return;
  }
  const float s = krr::min_overlap(p.indptr, p.indices, p.values, q, j);
  const float original = static_cast<float>(static_cast<double>(static_cast<const T*>(p.distance)[at]) /
                                            krr::row_divisor(p.row_max, q));
  p.out[at] = krr::jaccard_from_overlap(s, false) * static_cast<float>(1.0 - p.lambda_value) +
              original * static_cast<float>(p.lambda_value);
}

// ---- stage 6: jaccard --------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads) jaccard_kernel(KReciprocalJaccardParams p) {
  using Mode = KReciprocalJaccardMode;
  using Scan = cub::BlockScan<int64_t, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ unsigned long long row_count;
  const int64_t width = p.num_items - p.col_begin;
  float* overlap = p.scratch + static_cast<int64_t>(blockIdx.x) * width;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = kThreads / kWarp;
  const float keep = static_cast<float>(1.0 - p.lambda_value);
  const float mix = static_cast<float>(p.lambda_value);

  for (int64_t i = p.row_begin + blockIdx.x; i < p.row_end; i += gridDim.x) {
    const int64_t r = i - p.row_begin;
    // s(i, .): each warp takes one non-zero k of row i, its lanes walk column k's rows.
    for (int64_t q = p.indptr[i] + warp; q < p.indptr[i + 1]; q += warps) {
      const int64_t k = p.indices[q];
      const float v = p.values[q];
      for (int64_t e = p.colptr[k] + lane; e < p.colptr[k + 1]; e += kWarp)
        atomicAdd(overlap + (p.inv_rows[e] - p.col_begin), fminf(v, p.inv_values[e]));
    }
    if (threadIdx.x == 0) row_count = 0;
    __syncthreads();

    if (p.mode == Mode::kRerank || p.mode == Mode::kDense) {
      float* out = p.out + r * p.out_row_stride;
      const double divisor = krr::row_divisor(p.row_max, i);
      for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
        const float s = overlap[j];
        overlap[j] = 0.f;
        if (p.mode == Mode::kRerank) {
          const float original = static_cast<float>(out[j] / divisor);
          out[j] = krr::jaccard_from_overlap(s, false) * keep + original * mix;
        } else {
          out[j] = krr::jaccard_from_overlap(s, p.clamp_negative);
        }
      }
    } else if (p.mode == Mode::kSparseCount) {
      unsigned long long count = 0;
      for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
        count += overlap[j] > 0.f;
        overlap[j] = 0.f;
      }
      atomicAdd(&row_count, count);
      __syncthreads();
      if (threadIdx.x == 0) p.counts[r] = static_cast<int64_t>(row_count);
    } else {  // kSparseFill: an ordered compaction, chunk by chunk (block-wide exclusive scan)
      int64_t base = p.out_indptr[r];
      for (int64_t j0 = 0; j0 < width; j0 += blockDim.x) {
        const int64_t j = j0 + threadIdx.x;
        const float s = j < width ? overlap[j] : 0.f;
        int64_t position, chunk_total;
        Scan(scan_storage).ExclusiveSum(static_cast<int64_t>(s > 0.f), position, chunk_total);
        if (s > 0.f) {
          p.out_indices[base + position] = j + p.col_begin;
          p.out_values[base + position] = krr::jaccard_from_overlap(s, p.clamp_negative);
        }
        if (j < width) overlap[j] = 0.f;
        base += chunk_total;
        __syncthreads();  // scan_storage is reused by the next chunk
      }
    }
    __syncthreads();  // the accumulator row is clean before the next row starts adding
  }
}

}  // namespace

void k_reciprocal_select_cuda(const KReciprocalSelectParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  auto s = static_cast<cudaStream_t>(stream);
  krr::dispatch_float_or_double(p.block_dtype, "block", [&](auto tag) {
    using T = decltype(tag);
    select_rows_kernel<T><<<blocks_for(p.rows * kWarp), kThreads, 0, s>>>(p);
    CION_CUDA_CHECK_LAUNCH();
    if (p.symmetric) {
      select_columns_kernel<T><<<blocks_for(p.cols), kThreads, 0, s>>>(p);
      CION_CUDA_CHECK_LAUNCH();
    }
  });
}

void k_reciprocal_expand_cuda(const KReciprocalExpandParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  expand_kernel<<<blocks_for(p.num_items), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  CION_CUDA_CHECK_LAUNCH();
}

void k_reciprocal_weights_cuda(const KReciprocalWeightsParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  krr::dispatch_float_or_double(p.dtype, "distance source", [&](auto tag) {
    using T = decltype(tag);
    weights_kernel<T><<<blocks_for(p.num_items * kWarp), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  });
  CION_CUDA_CHECK_LAUNCH();
}

void k_reciprocal_query_expansion_cuda(const KReciprocalExpansionParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  query_expansion_kernel<<<blocks_for(p.num_items), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  CION_CUDA_CHECK_LAUNCH();
}

void k_reciprocal_transpose_cuda(const KReciprocalTransposeParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  const int64_t rows = p.num_items - p.row_begin;
  if (rows == 0) return;
  transpose_kernel<<<blocks_for(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  CION_CUDA_CHECK_LAUNCH();
}

void k_reciprocal_jaccard_cuda(const KReciprocalJaccardParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  const int64_t rows = p.row_end - p.row_begin;
  const unsigned blocks = static_cast<unsigned>(rows < p.scratch_rows ? rows : p.scratch_rows);
  jaccard_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  CION_CUDA_CHECK_LAUNCH();
}

void k_reciprocal_pairs_cuda(const KReciprocalPairParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  krr::dispatch_float_or_double(p.dtype, "neighbor_distance", [&](auto tag) {
    using T = decltype(tag);
    pairs_kernel<T><<<blocks_for(p.num_query * p.num_candidates), kThreads, 0,
                      static_cast<cudaStream_t>(stream)>>>(p);
  });
  CION_CUDA_CHECK_LAUNCH();
}

}  // namespace cion
