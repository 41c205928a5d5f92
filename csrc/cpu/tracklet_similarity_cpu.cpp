// CPU tracklet similarity.
//
// Pair kernel: each pair's La x Lb cosine block is produced in cache-sized sub-blocks by the
// register-blocked dot_block and reduced on the spot as one array in 16 lanes (max / min; for
// topk_mean a bounded top-k buffer fed only the values at least the k-th largest lane maximum);
// the M x M frame matrix never exists. Features are scaled by their inverse norms after the dot
// product (cos = dot * (inv_i * inv_j)), so no normalised copy of the features is made.
//
// Candidate pairs are visited grouped by blocks of b-tracklets whose features fit in the
// last-level cache, and by a within a block: a's rows stay in L1/L2 across its consecutive pairs
// and the random reads of b's rows hit the cache. The next pair's rows are prefetched.
//
// The lane extremes run in AVX-512 / AVX2 copies; compare-and-select vectorises only without
// trapping maths (see cpu_features.h). The scaling and screening are cosine.h's.
#include "common/cpu_features.h"
CION_SIMD_CLONES_SAME_ROUNDING

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "cpu/cosine.h"
#include "cpu/dot_block.h"
#include "cpu/top_k.h"
#include "ops/tracklet_similarity.h"

namespace cion {
namespace {

constexpr int64_t kRowChunk = 64;           // a-rows per sub-block
constexpr int64_t kColChunk = 256;          // b-rows per sub-block: buffer of 64 x 256 values
constexpr int64_t kPairBlockBytes = 4 << 20;  // b-features per visiting block (a share of L3)
constexpr int64_t kPairsPerTask = 16;

template <class T>
struct PairScratch {
  std::vector<T> block;
  std::vector<T> candidates;  // topk_mean: the block's values that may be among the k largest
  TopK<T> topk;
  PairScratch() : block(kRowChunk * kColChunk), candidates(kRowChunk * kColChunk + 16) {}
};

// ---- leaf loops over a block and its rows (one ISA copy each) -----------------------------------

// Entries per group of lane_extremes: the groups of a block are its entries by residue modulo 16.
constexpr int kLanes = 16;

// lane[l] = max (Larger) or min (!Larger) of x[l], x[l + 16], x[l + 32], ... for x[0, n): 16
// independent running extremes, so the loop is vector compares instead of one chain of dependent
// ones (a chain was as slow as the block's dot products). A lane without entries holds init. NaN
// entries are skipped, as std::max / std::min skip them.
template <bool Larger, class T>
CION_SIMD_CLONES void lane_extremes(const T* x, int64_t n, T init, T* lane) {
  for (int l = 0; l < kLanes; ++l) lane[l] = init;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const T v = x[j + l];
      lane[l] = (Larger ? lane[l] < v : v < lane[l]) ? v : lane[l];
    }
  for (int l = 0; j + l < n; ++l) lane[l] = Larger ? std::max(lane[l], x[j + l]) : std::min(lane[l], x[j + l]);
}

template <class T>
struct PairKernel {
  const TrackletPairSimilarityParams& p;
  const T* features_a;
  const T* features_b;
  const T* inv_a;  // nullptr: no normalisation
  const T* inv_b;

  // Similarity of tracklet a of set A with tracklet b of set B.
  T operator()(int64_t a, int64_t b, PairScratch<T>& s) const {
    const int64_t a0 = p.a.offsets[a], a1 = p.a.offsets[a + 1];
    const int64_t b0 = p.b.offsets[b], b1 = p.b.offsets[b + 1];
    const int64_t dim = p.dim;
    T best = p.reduce == PairReduce::kMax ? -std::numeric_limits<T>::infinity()
                                          : std::numeric_limits<T>::infinity();
    if (p.reduce == PairReduce::kTopkMean) s.topk.reset(p.k);
    for (int64_t i0 = a0; i0 < a1; i0 += kRowChunk) {
      const int64_t ni = std::min(kRowChunk, a1 - i0);
      for (int64_t j0 = b0; j0 < b1; j0 += kColChunk) {
        const int64_t nj = std::min(kColChunk, b1 - j0);
        dot_block(features_a + i0 * dim, dim, ni, features_b + j0 * dim, dim, nj, dim, s.block.data(), nj);
        T* block = s.block.data();
        if (inv_a) {
          for (int64_t i = 0; i < ni; ++i) scale_to_cosines(block + i * nj, nj, inv_a[i0 + i], inv_b + j0);
        }
        // The block is contiguous ([ni, nj], row stride nj): reduced as one array.
        T lane[kLanes];
        switch (p.reduce) {
          case PairReduce::kMax:
            lane_extremes<true>(block, ni * nj, best, lane);
            best = *std::max_element(lane, lane + kLanes);
            break;
          case PairReduce::kMin:
            lane_extremes<false>(block, ni * nj, best, lane);
            best = *std::min_element(lane, lane + kLanes);
            break;
          case PairReduce::kTopkMean: {
            lane_extremes<true>(block, ni * nj, -std::numeric_limits<T>::infinity(), lane);
            T* candidates = s.candidates.data();
            const int64_t count = values_at_least(block, ni * nj, s.topk.block_bound(lane, kLanes), candidates);
            for (int64_t c = 0; c < count; ++c) s.topk.push(candidates[c]);
            break;
          }
        }
      }
    }
    return p.reduce == PairReduce::kTopkMean ? static_cast<T>(s.topk.mean()) : best;
  }

  void prefetch(int64_t a, int64_t b) const {
    const int64_t row_bytes = p.dim * static_cast<int64_t>(sizeof(T));
    prefetch_bytes(features_a + p.a.offsets[a] * p.dim, (p.a.offsets[a + 1] - p.a.offsets[a]) * row_bytes);
    prefetch_bytes(features_b + p.b.offsets[b] * p.dim, (p.b.offsets[b + 1] - p.b.offsets[b]) * row_bytes);
  }
};

// Stable counting sort of the pair indices by `key` (values in [0, num_keys)).
template <class Key>
void counting_sort(std::vector<int64_t>& order, int64_t num_keys, Key key) {
  std::vector<int64_t> start(num_keys + 1, 0);
  for (const int64_t p : order) ++start[key(p) + 1];
  for (int64_t k = 0; k < num_keys; ++k) start[k + 1] += start[k];
  std::vector<int64_t> sorted(order.size());
  for (const int64_t p : order) sorted[start[key(p)]++] = p;
  order.swap(sorted);
}

// Visiting order of the pairs: by block of b (features of ~kPairBlockBytes), then by a.
std::vector<int64_t> pair_order(const TrackletPairSimilarityParams& p, int64_t element_bytes) {
  const int64_t P = p.num_pairs;
  std::vector<int64_t> order(P);
  for (int64_t i = 0; i < P; ++i) order[i] = i;
  counting_sort(order, p.a.num, [&](int64_t i) { return p.pairs[2 * i]; });
  const int64_t bytes_per_frame = std::max<int64_t>(1, p.dim * element_bytes);
  const int64_t frames_per_block = std::max<int64_t>(1, kPairBlockBytes / bytes_per_frame);
  const int64_t num_blocks = p.b.frames / frames_per_block + 1;
  counting_sort(order, num_blocks, [&](int64_t i) { return p.b.offsets[p.pairs[2 * i + 1]] / frames_per_block; });
  return order;
}

template <class T>
void pair_similarity(TrackletPairSimilarityParams p) {
  std::vector<T> inv_a, inv_b, scaled_a, scaled_b;  // scaled_*: only for rows out of float32's range
  if (p.normalize) {
    inv_a.resize(p.a.frames);
    p.a.features = rows_for_cosine(static_cast<const T*>(p.a.features), p.a.frames, p.dim, inv_a.data(), &scaled_a,
                                   p.a.name);
    if (p.same_set) {
      p.b.features = p.a.features;
    } else {
      inv_b.resize(p.b.frames);
      p.b.features = rows_for_cosine(static_cast<const T*>(p.b.features), p.b.frames, p.dim, inv_b.data(), &scaled_b,
                                     p.b.name);
    }
  }
  const T* norms_a = p.normalize ? inv_a.data() : nullptr;
  const PairKernel<T> kernel{p, static_cast<const T*>(p.a.features), static_cast<const T*>(p.b.features),
                             norms_a, p.same_set ? norms_a : inv_b.data()};
  T* out = static_cast<T*>(p.out);

  if (p.pairs) {
    const std::vector<int64_t> order = pair_order(p, sizeof(T));
    const int64_t P = p.num_pairs;
    const int64_t tasks = (P + kPairsPerTask - 1) / kPairsPerTask;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
    {
      PairScratch<T> scratch;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 4)
#endif
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t end = std::min(P, (task + 1) * kPairsPerTask);
        for (int64_t q = task * kPairsPerTask; q < end; ++q) {
          const int64_t pair = order[q];
          if (q + 1 < end) kernel.prefetch(p.pairs[2 * order[q + 1]], p.pairs[2 * order[q + 1] + 1]);
          out[pair] = kernel(p.pairs[2 * pair], p.pairs[2 * pair + 1], scratch);
        }
      }
    }
    return;
  }

  // Dense: row a of the output, b in [0, num_b) (self-similarity: b >= a, mirrored).
  const int64_t nb = p.b.num;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    PairScratch<T> scratch;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t a = 0; a < p.a.num; ++a) {
      for (int64_t b = p.same_set ? a : 0; b < nb; ++b) {
        if (b + 1 < nb) kernel.prefetch(a, b + 1);
        const T value = kernel(a, b, scratch);
        out[a * nb + b] = value;
        if (p.same_set) out[b * nb + a] = value;
      }
    }
  }
}

template <class T>
void centroids(const TrackletCentroidsParams& p) {
  const T* x = static_cast<const T*>(p.set.features);
  T* out = static_cast<T*>(p.out);
  const int64_t dim = p.dim;
  std::atomic<bool> finite{true};
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<double> sum(dim);
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 16)
#endif
    for (int64_t t = 0; t < p.set.num; ++t) {
      std::fill(sum.begin(), sum.end(), 0.0);
      const int64_t f0 = p.set.offsets[t], f1 = p.set.offsets[t + 1];
      for (int64_t f = f0; f < f1; ++f) {
        const T* row = x + f * dim;
        double sq = 0.0;
        for (int64_t d = 0; d < dim; ++d) sq += static_cast<double>(row[d]) * static_cast<double>(row[d]);
        if (!std::isfinite(sq)) finite.store(false, std::memory_order_relaxed);
        if (sq <= 0.0) continue;  // an all-zero frame adds nothing to the mean
        const double inv = 1.0 / std::sqrt(sq);
        for (int64_t d = 0; d < dim; ++d) sum[d] += static_cast<double>(row[d]) * inv;
      }
      double scale = 1.0 / static_cast<double>(std::max<int64_t>(1, f1 - f0));
      if (p.normalize_result) {
        double sq = 0.0;
        for (int64_t d = 0; d < dim; ++d) sq += sum[d] * sum[d];
        scale = sq > 0.0 ? 1.0 / std::sqrt(sq) : 0.0;
      }
      for (int64_t d = 0; d < dim; ++d) out[t * dim + d] = static_cast<T>(sum[d] * scale);
    }
  }
  CION_CHECK(finite.load(), p.set.name, " contains NaN or inf values");
}

}  // namespace

void tracklet_centroids_cpu(const TrackletCentroidsParams& p) {
  if (p.dtype == DType::kFloat64)
    centroids<double>(p);
  else
    centroids<float>(p);
}

void tracklet_pair_similarity_cpu(const TrackletPairSimilarityParams& p) {
  if (p.dtype == DType::kFloat64)
    pair_similarity<double>(p);
  else
    pair_similarity<float>(p);
}

}  // namespace cion
