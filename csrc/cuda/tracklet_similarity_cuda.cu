// CUDA tracklet similarity.
//
// inverse_norms_kernel (cuda/tracklet_common.cuh): one warp per frame row (NaN/inf -> a status bit).
// centroids_kernel: one block per tracklet, threads along the feature dimension.
// pair_kernel: one block per tracklet pair (grid-stride). The pair's La x Lb cosine block is
// produced in 32 x 32 output tiles, 2 x 2 outputs per thread, from feature chunks staged in shared
// memory, and reduced on the fly: max / min by a block reduction, topk_mean by an exact radix
// selection (8 bits per pass over order-preserving keys, recomputing the tiles on every pass:
// recomputation is cheaper than storing La * Lb values per pair) then one pass summing the values
// above the selected one. The M x M frame matrix is never stored.
#include <cuda_runtime.h>

#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"
#include "cuda/tracklet_common.cuh"
#include "ops/tracklet_similarity.h"

namespace cion {
namespace {

constexpr int kThreads = 256;  // 16 x 16 threads
constexpr int kTile = 32;      // a 32 x 32 output tile: 2 x 2 outputs per thread
constexpr int kRadixBins = 256;

// Feature-dimension chunk staged in shared memory (both tiles take ~8.5 KB either way).
template <class T>
struct Chunk {
  static constexpr int kSize = sizeof(T) == 8 ? 16 : 32;
};

template <class T>
__global__ void __launch_bounds__(kThreads) centroids_kernel(TrackletCentroidsParams p, const T* inv) {
  __shared__ double buffer[32];
  const T* x = static_cast<const T*>(p.set.features);
  T* out = static_cast<T*>(p.out);
  for (int64_t t = blockIdx.x; t < p.set.num; t += gridDim.x) {
    const int64_t f0 = p.set.offsets[t], f1 = p.set.offsets[t + 1];
    const double mean_scale = 1.0 / static_cast<double>(f1 - f0 > 0 ? f1 - f0 : 1);
    double sq = 0.0;
    for (int64_t d = threadIdx.x; d < p.dim; d += blockDim.x) {
      double sum = 0.0;
      for (int64_t f = f0; f < f1; ++f) sum += static_cast<double>(x[f * p.dim + d]) * static_cast<double>(inv[f]);
      sq += sum * sum;
      out[t * p.dim + d] = static_cast<T>(sum * mean_scale);
    }
    if (p.normalize_result) {
      // Rescale the means written above to unit length (each thread rereads its own entries).
      const double norm2 = block_reduce(sq * mean_scale * mean_scale, SumOp{}, buffer);
      const double scale = norm2 > 0.0 ? 1.0 / sqrt(norm2) : 0.0;
      for (int64_t d = threadIdx.x; d < p.dim; d += blockDim.x)
        out[t * p.dim + d] = static_cast<T>(static_cast<double>(out[t * p.dim + d]) * scale);
    }
  }
}

template <class T>
struct PairShared {
  T a[kTile][Chunk<T>::kSize + 1];
  T b[kTile][Chunk<T>::kSize + 1];
  unsigned long long histogram[kRadixBins];
  double reduce_double[32];
  T reduce_value[32];
  typename FloatKey<T>::type prefix;
  long long remaining;
};

// Calls visit(value) for every cosine of frames [a0, a1) x [b0, b1), each from exactly one thread.
template <class T, class Visit>
__device__ __forceinline__ void for_each_cosine(const TrackletPairSimilarityParams& p, int64_t a0, int64_t a1,
                                                int64_t b0, int64_t b1, PairShared<T>& s, Visit visit) {
  constexpr int KC = Chunk<T>::kSize;
  const T* xa = static_cast<const T*>(p.a.features);
  const T* xb = static_cast<const T*>(p.b.features);
  const T* inv_a = static_cast<const T*>(p.inv_norm_a);
  const T* inv_b = static_cast<const T*>(p.inv_norm_b);
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  for (int64_t i0 = a0; i0 < a1; i0 += kTile) {
    for (int64_t j0 = b0; j0 < b1; j0 += kTile) {
      T acc[2][2] = {{T(0), T(0)}, {T(0), T(0)}};
      for (int64_t k0 = 0; k0 < p.dim; k0 += KC) {
        for (int e = threadIdx.x; e < kTile * KC; e += kThreads) {
          const int row = e / KC, col = e % KC;
          const bool in_dim = k0 + col < p.dim;
          s.a[row][col] = (in_dim && i0 + row < a1) ? xa[(i0 + row) * p.dim + k0 + col] : T(0);
          s.b[row][col] = (in_dim && j0 + row < b1) ? xb[(j0 + row) * p.dim + k0 + col] : T(0);
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < KC; ++kk) {
          const T a_0 = s.a[ty][kk], a_1 = s.a[ty + 16][kk];
          const T b_0 = s.b[tx][kk], b_1 = s.b[tx + 16][kk];
          acc[0][0] += a_0 * b_0;
          acc[0][1] += a_0 * b_1;
          acc[1][0] += a_1 * b_0;
          acc[1][1] += a_1 * b_1;
        }
        __syncthreads();
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t i = i0 + ty + 16 * r;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int64_t j = j0 + tx + 16 * c;
          if (i < a1 && j < b1) visit(p.normalize ? acc[r][c] * (inv_a[i] * inv_b[j]) : acc[r][c]);
        }
      }
    }
  }
}

// Mean of the k largest cosines of the block (k < count): radix-select the k-th largest key, then
// sum everything above it and add the tied copies of it that belong to the top k.
template <class T>
__device__ __forceinline__ T topk_mean(const TrackletPairSimilarityParams& p, int64_t a0, int64_t a1, int64_t b0,
                                       int64_t b1, int64_t k, PairShared<T>& s) {
  using Key = FloatKey<T>;
  using K = typename Key::type;
  if (threadIdx.x == 0) {
    s.prefix = 0;
    s.remaining = k;
  }
  for (int shift = Key::kBits - 8; shift >= 0; shift -= 8) {
    for (int bin = threadIdx.x; bin < kRadixBins; bin += blockDim.x) s.histogram[bin] = 0;
    __syncthreads();
    const K prefix = s.prefix;
    const K high_mask = shift + 8 >= Key::kBits ? K(0) : ~K(0) << (shift + 8);
    for_each_cosine(p, a0, a1, b0, b1, s, [&](T v) {
      const K key = Key::encode(v);
      if ((key & high_mask) == prefix) atomicAdd(&s.histogram[(key >> shift) & 0xff], 1ull);
    });
    __syncthreads();
    if (threadIdx.x == 0) {
      long long remaining = s.remaining;
      for (int bin = kRadixBins - 1; bin >= 0; --bin) {
        const long long count = static_cast<long long>(s.histogram[bin]);
        if (count >= remaining) {
          s.prefix = prefix | (static_cast<K>(bin) << shift);
          break;
        }
        remaining -= count;
      }
      s.remaining = remaining;  // copies of the selected key that are inside the top k
    }
    __syncthreads();
  }
  // Read before the syncs below: thread 0 overwrites both when the block moves to its next pair.
  const K kth = s.prefix;
  const long long remaining = s.remaining;
  double sum = 0.0;
  for_each_cosine(p, a0, a1, b0, b1, s, [&](T v) {
    if (Key::encode(v) > kth) sum += static_cast<double>(v);
  });
  sum = block_reduce(sum, SumOp{}, s.reduce_double);
  return static_cast<T>((sum + static_cast<double>(remaining) * static_cast<double>(Key::decode(kth))) /
                        static_cast<double>(k));
}

template <class T>
__device__ __forceinline__ T pair_value(const TrackletPairSimilarityParams& p, int64_t a, int64_t b, PairShared<T>& s) {
  const int64_t a0 = p.a.offsets[a], a1 = p.a.offsets[a + 1];
  const int64_t b0 = p.b.offsets[b], b1 = p.b.offsets[b + 1];
  const int64_t count = (a1 - a0) * (b1 - b0);
  if (p.reduce == PairReduce::kMax || p.reduce == PairReduce::kMin) {
    const bool is_max = p.reduce == PairReduce::kMax;
    T best = is_max ? T(-INFINITY) : T(INFINITY);
    for_each_cosine(p, a0, a1, b0, b1, s, [&](T v) { best = is_max ? (v > best ? v : best) : (v < best ? v : best); });
    return is_max ? block_reduce(best, MaxOp{}, s.reduce_value) : block_reduce(best, MinOp{}, s.reduce_value);
  }
  if (p.k < count) return topk_mean(p, a0, a1, b0, b1, p.k, s);
  double sum = 0.0;  // k covers the whole block: its mean
  for_each_cosine(p, a0, a1, b0, b1, s, [&](T v) { sum += static_cast<double>(v); });
  return static_cast<T>(block_reduce(sum, SumOp{}, s.reduce_double) / static_cast<double>(count));
}

// No __launch_bounds__: with it ptxas (CUDA 13) caps registers low enough to spill.
template <class T>
__global__ void pair_kernel(TrackletPairSimilarityParams p) {
  __shared__ PairShared<T> s;
  T* out = static_cast<T*>(p.out);
  const bool dense = p.pairs == nullptr;
  const int64_t items = dense ? p.a.num * p.b.num : p.num_pairs;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t a = dense ? item / p.b.num : p.pairs[2 * item];
    const int64_t b = dense ? item % p.b.num : p.pairs[2 * item + 1];
    if (dense && p.same_set && b < a) continue;  // the mirror of (b, a), written there
    const T value = pair_value(p, a, b, s);
    if (threadIdx.x == 0) {
      out[item] = value;
      if (dense && p.same_set) out[b * p.b.num + a] = value;
    }
  }
}

}  // namespace

void tracklet_centroids_cuda(const TrackletCentroidsParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  const auto s = static_cast<cudaStream_t>(stream);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    launch_inverse_norms(static_cast<const T*>(p.set.features), p.set.frames, p.dim, static_cast<T*>(p.inv_norm),
                         p.status, 1, s);
    centroids_kernel<T><<<grid_for(p.set.num), kThreads, 0, s>>>(p, static_cast<const T*>(p.inv_norm));
    CION_CUDA_CHECK_LAUNCH();
  };
  if (p.dtype == DType::kFloat64)
    run(double{});
  else
    run(float{});
}

void tracklet_pair_similarity_cuda(const TrackletPairSimilarityParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  const auto s = static_cast<cudaStream_t>(stream);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    if (p.normalize) {
      launch_inverse_norms(static_cast<const T*>(p.a.features), p.a.frames, p.dim, static_cast<T*>(p.inv_norm_a),
                           p.status, 1, s);
      if (!p.same_set)
        launch_inverse_norms(static_cast<const T*>(p.b.features), p.b.frames, p.dim,
                             static_cast<T*>(p.inv_norm_b), p.status, 2, s);
    }
    const int64_t items = p.pairs ? p.num_pairs : p.a.num * p.b.num;
    pair_kernel<T><<<grid_for(items), kThreads, 0, s>>>(p);
    CION_CUDA_CHECK_LAUNCH();
  };
  if (p.dtype == DType::kFloat64)
    run(double{});
  else
    run(float{});
}

}  // namespace cion
