// CPU k-reciprocal re-ranking: OpenMP over items (rows), per-thread buffers reused across items.
// The per-item logic lives in ops/k_reciprocal_steps.h, shared with the CUDA kernels; steps 4
// and 6 use the CPU forms there (expanded_set_marked, expansion_row_cursors): same results, less work.
#include "common/cpu_features.h"
CION_SIMD_CLONES_SAME_ROUNDING  // the distance loops below, in AVX-512 / AVX2 copies

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "common/dispatch.h"
#include "common/parallel.h"
#include "ops/k_reciprocal.h"
#include "ops/k_reciprocal_steps.h"

namespace cion {
namespace {

// ---- stage 1: select -------------------------------------------------------------------------
//
// Nearly every value fails the "closer than the row's current L-1-th neighbour" test once the
// lists have filled up, so both passes first summarise a chunk of values with vectorisable
// min/max loops (16 independent lanes: no -ffast-math needed) and look at single values only
// when the chunk's minimum beats a threshold.

constexpr int64_t kChunk = 64;
constexpr int kLanes = 16;

// The distance at one position: the block value itself, or, for a Gram block,
// max(|a|^2 + |b|^2 - 2 a.b, 0). Written so that a NaN stays NaN (it is reported, not hidden).
template <class T, bool kGram>
inline T block_value(T value, T row_norm, T col_norm) {
  if constexpr (!kGram) {
    return value;
  } else {
    const T d = row_norm + col_norm - T(2) * value;
    return d < T(0) ? T(0) : d;
  }
}

// One chunk of n <= kChunk values of a block row turned into distances (written to `chunk`): returns
// their minimum; raises *row_max to their maximum and clears *finite on a NaN or inf.
template <class T, bool kGram>
CION_SIMD_CLONES T summarise_chunk(const T* row, const T* col_norms, T row_norm, int64_t n, T* chunk, T* row_max,
                                   bool* finite) {
  constexpr T kInf = std::numeric_limits<T>::infinity();
  T lo[kLanes], hi[kLanes], probe[kLanes];  // probe: x * 0 turns inf and NaN into NaN
  for (int l = 0; l < kLanes; ++l) lo[l] = kInf, hi[l] = -kInf, probe[l] = T(0);
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const T x = block_value<T, kGram>(row[c + l], row_norm, kGram ? col_norms[c + l] : T(0));
      chunk[c + l] = x;
      lo[l] = x < lo[l] ? x : lo[l];
      hi[l] = x > hi[l] ? x : hi[l];
      probe[l] += x * T(0);
    }
  for (; c < n; ++c) {
    const T x = block_value<T, kGram>(row[c], row_norm, kGram ? col_norms[c] : T(0));
    chunk[c] = x;
    lo[0] = x < lo[0] ? x : lo[0];
    hi[0] = x > hi[0] ? x : hi[0];
    probe[0] += x * T(0);
  }
  for (int l = 1; l < kLanes; ++l) {
    lo[0] = lo[l] < lo[0] ? lo[l] : lo[0];
    hi[0] = hi[l] > hi[0] ? hi[l] : hi[0];
    probe[0] += probe[l];
  }
  *finite &= probe[0] == T(0);
  *row_max = hi[0] > *row_max ? hi[0] : *row_max;
  return lo[0];
}

// Row direction for dense blocks: each row item scans its block row once.
template <class T, bool kGram>
void select_rows(const KReciprocalSelectParams& p, std::atomic<bool>& non_finite) {
  const int64_t W = p.num_neighbours;
  const T* row_norms = static_cast<const T*>(p.row_norms);
  const T* col_norms = static_cast<const T*>(p.col_norms);
  constexpr T kInf = std::numeric_limits<T>::infinity();
  parallel_for(p.rows, 16, [&](int64_t r) {
    const int64_t item = p.row_begin + r;
    const T* row = static_cast<const T*>(p.block) + r * p.block_row_stride;
    const T row_norm = kGram ? row_norms[r] : T(0);
    double* values = p.neighbour_value + item * W;
    int64_t* indices = p.neighbour_index + item * W;
    double worst_value = values[W - 1];
    int64_t worst_index = indices[W - 1];
    float* raw = p.raw_out && item < p.num_query ? p.raw_out + item * p.raw_out_row_stride : nullptr;
    T row_max = -kInf;
    bool finite = true;
    T chunk[kChunk];
    for (int64_t c0 = 0; c0 < p.cols; c0 += kChunk) {
      const int64_t n = std::min(kChunk, p.cols - c0);
      const T lowest = summarise_chunk<T, kGram>(row + c0, kGram ? col_norms + c0 : nullptr, row_norm, n, chunk,
                                                 &row_max, &finite);
      if (raw) {  // the (query, gallery) part of the chunk, kept raw for the final step
        const int64_t first = std::max<int64_t>(p.num_query - (p.col_begin + c0), 0);
        for (int64_t k = first; k < n; ++k) raw[p.col_begin + c0 + k - p.num_query] = static_cast<float>(chunk[k]);
      }
      if (static_cast<double>(lowest) > worst_value) continue;
      for (int64_t k = 0; k < n; ++k) {
        const double v = static_cast<double>(chunk[k]);
        const int64_t j = p.col_begin + c0 + k;
        if (v <= worst_value && j != item && krr::ranks_before(v, j, worst_value, worst_index)) {
          krr::offer(values, indices, W, v, j);
          worst_value = values[W - 1];
          worst_index = indices[W - 1];
        }
      }
    }
    if (!finite) non_finite = true;
    if (p.row_max && row_max > p.row_max[item]) p.row_max[item] = static_cast<double>(row_max);
  });
}

// Row direction for a kNN graph: K listed neighbours per row (few), padding skipped unread.
template <class T>
void select_rows_graph(const KReciprocalSelectParams& p, std::atomic<bool>& non_finite) {
  const int64_t W = p.num_neighbours;
  parallel_for(p.rows, 64, [&](int64_t r) {
    const int64_t item = p.row_begin + r;
    const T* row = static_cast<const T*>(p.block) + r * p.block_row_stride;
    const int64_t* columns = p.block_columns + r * p.block_row_stride;
    double* values = p.neighbour_value + item * W;
    int64_t* indices = p.neighbour_index + item * W;
    bool finite = true;
    for (int64_t c = 0; c < p.cols; ++c) {
      const int64_t j = columns[c];
      if (j < 0) continue;
      const double v = static_cast<double>(row[c]);
      finite &= std::isfinite(v);
      if (v <= values[W - 1] && j != item && krr::ranks_before(v, j, values[W - 1], indices[W - 1]))
        krr::offer(values, indices, W, v, j);
    }
    if (!finite) non_finite = true;
  });
}

// One block row across a chunk of `width` <= kChunk columns: the distances into x, each column's
// maximum raised; returns whether any distance is at most its column's threshold.
template <class T, bool kGram>
CION_SIMD_CLONES bool column_step(const T* row, T row_norm, const T* column_norm, const T* threshold, int64_t width,
                                  T* x, T* column_max) {
  int any = 0;
  for (int64_t l = 0; l < width; ++l) {
    const T v = block_value<T, kGram>(row[l], row_norm, column_norm[l]);
    x[l] = v;
    column_max[l] = v > column_max[l] ? v : column_max[l];
    any |= v <= threshold[l];
  }
  return any != 0;
}

// Column direction (symmetric blocks): each thread owns kChunk columns and walks down the block
// row by row (contiguous reads); the per-column thresholds sit in local arrays. Thresholds are
// compared in T: every kept value came from a block of this dtype, so T(worst) is exact.
// Non-finite values were already reported by the row pass over the same block.
template <class T, bool kGram>
void select_columns(const KReciprocalSelectParams& p) {
  const int64_t W = p.num_neighbours;
  const T* row_norms = static_cast<const T*>(p.row_norms);
  const T* col_norms = static_cast<const T*>(p.col_norms);
  constexpr T kInf = std::numeric_limits<T>::infinity();
  const int64_t chunks = (p.cols + kChunk - 1) / kChunk;
  parallel_for(chunks, 1, [&](int64_t chunk) {
    const int64_t c0 = chunk * kChunk;
    const int64_t width = std::min(kChunk, p.cols - c0);
    T threshold[kChunk], column_max[kChunk], column_norm[kChunk], x[kChunk];
    for (int64_t l = 0; l < width; ++l) {
      const int64_t item = p.col_begin + c0 + l;
      threshold[l] = static_cast<T>(p.neighbour_value[item * W + W - 1]);
      column_max[l] = -kInf;
      column_norm[l] = kGram ? col_norms[c0 + l] : T(0);
    }
    for (int64_t r = 0; r < p.rows; ++r) {
      const T* row = static_cast<const T*>(p.block) + r * p.block_row_stride + c0;
      const T row_norm = kGram ? row_norms[r] : T(0);
      if (!column_step<T, kGram>(row, row_norm, column_norm, threshold, width, x, column_max)) continue;
      const int64_t j = p.row_begin + r;
      for (int64_t l = 0; l < width; ++l) {
        if (!(x[l] <= threshold[l])) continue;
        const int64_t item = p.col_begin + c0 + l;
        double* values = p.neighbour_value + item * W;
        int64_t* indices = p.neighbour_index + item * W;
        const double v = static_cast<double>(x[l]);
        if (item == j || !krr::ranks_before(v, j, values[W - 1], indices[W - 1])) continue;
        krr::offer(values, indices, W, v, j);
        threshold[l] = static_cast<T>(values[W - 1]);
      }
    }
    if (p.row_max)
      for (int64_t l = 0; l < width; ++l) {
        const int64_t item = p.col_begin + c0 + l;
        const double m = static_cast<double>(column_max[l]);
        if (m > p.row_max[item]) p.row_max[item] = m;
      }
  });
}

// ---- stage 3: weights ------------------------------------------------------------------------

// Squared Euclidean distance with 16 independent partial sums, so the compiler vectorises it
// without reassociating a single running sum (no -ffast-math needed).
template <class T>
CION_SIMD_CLONES double squared_distance(const T* a, const T* b, int64_t dim) {
  using Acc = acc_t<T>;
  constexpr int kLanes = 16;
  Acc lanes[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= dim; d += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const Acc diff = static_cast<Acc>(a[d + l]) - static_cast<Acc>(b[d + l]);
      lanes[l] += diff * diff;
    }
  Acc sum = 0;
  for (; d < dim; ++d) {
    const Acc diff = static_cast<Acc>(a[d]) - static_cast<Acc>(b[d]);
    sum += diff * diff;
  }
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return static_cast<double>(sum);
}

// What item i sees item j at, from the source (see KReciprocalWeightsParams).
template <class T>
double source_distance(const KReciprocalWeightsParams& p, int64_t i, int64_t j, bool& estimated) {
  switch (p.source) {
    case KReciprocalSource::kFeatures: {
      const T* x = static_cast<const T*>(p.features);
      return i == j ? 0.0 : squared_distance(x + i * p.feature_row_stride, x + j * p.feature_row_stride, p.dim);
    }
    case KReciprocalSource::kBlocks:
      return krr::block_distance<T>(p, i, j);
    case KReciprocalSource::kGraph:
      return krr::graph_distance<T>(p, i, j, &estimated);
  }
  return 0.0;
}

}  // namespace

void k_reciprocal_select_cpu(const KReciprocalSelectParams& p) {
  std::atomic<bool> non_finite{false};
  krr::dispatch_float_or_double(p.block_dtype, "block", [&](auto tag) {
    using T = decltype(tag);
    if (p.block_columns) {
      select_rows_graph<T>(p, non_finite);
    } else if (p.row_norms) {
      select_rows<T, true>(p, non_finite);
      if (p.symmetric) select_columns<T, true>(p);
    } else {
      select_rows<T, false>(p, non_finite);
      if (p.symmetric) select_columns<T, false>(p);
    }
  });
  CION_CHECK(!non_finite, "non-finite distance (NaN or inf) in the distance block");
}

// The candidate sets R(c, mh) of every item are computed once per pass ([N, mh] int64: about as
// large as the neighbour lists), then each item's R*(i) from them with a per-thread marker array.
void k_reciprocal_expand_cpu(const KReciprocalExpandParams& p) {
  const int64_t W = p.num_neighbours;
  std::vector<int64_t> candidates(static_cast<size_t>(p.num_items * p.mh)), candidate_sizes(p.num_items);
  parallel_for(p.num_items, 256, [&](int64_t c) {
    candidate_sizes[c] = krr::reciprocal_set(p.neighbours, W, c, p.mh, candidates.data() + c * p.mh);
  });
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<int64_t> buffer(krr::expansion_capacity(p.m1, p.mh)), mark(p.num_items, -1);
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 64)
#endif
    for (int64_t i = 0; i < p.num_items; ++i) {
      const int64_t size = krr::expanded_set_marked(p.neighbours, W, i, p.m1, p.mh, candidates.data(),
                                                    candidate_sizes.data(), mark.data(), buffer.data());
      if (p.indices)
        std::copy(buffer.begin(), buffer.begin() + size, p.indices + p.indptr[i]);
      else
        p.counts[i] = size;
    }
  }
}

void k_reciprocal_weights_cpu(const KReciprocalWeightsParams& p) {
  std::atomic<int64_t> estimated{0};
  krr::dispatch_float_or_double(p.dtype, "distance source", [&](auto tag) {
    using T = decltype(tag);
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
    {
      std::vector<double> distance;
      int64_t local_estimated = 0;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 32)
#endif
      for (int64_t i = 0; i < p.num_items; ++i) {
        const int64_t begin = p.indptr[i], end = p.indptr[i + 1];
        if (begin == end) continue;
        const double divisor = krr::row_divisor(p.row_max, i);
        distance.resize(end - begin);
        double lowest = std::numeric_limits<double>::infinity();
        for (int64_t q = begin; q < end; ++q) {
          bool estimate = false;
          const double d = source_distance<T>(p, i, p.indices[q], estimate) / divisor;
          local_estimated += estimate;
          distance[q - begin] = d;
          lowest = std::min(lowest, d);
        }
        double total = 0.0;
        for (double& d : distance) {
          d = std::exp(-(d - lowest));
          total += d;
        }
        for (int64_t q = begin; q < end; ++q) p.values[q] = static_cast<float>(distance[q - begin] / total);
      }
      estimated += local_estimated;
    }
  });
  if (p.estimated) *p.estimated += estimated.load();
}

void k_reciprocal_query_expansion_cpu(const KReciprocalExpansionParams& p) {
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<int64_t> cursor(2 * p.k2);  // expansion_row_cursors' scratch
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 64)
#endif
    for (int64_t i = 0; i < p.num_items; ++i) {
      const int64_t at = p.out_indptr ? p.out_indptr[i] : 0;
      const int64_t count = krr::expansion_row_cursors(
          p.neighbours, p.num_neighbours, i, p.k2, p.indptr, p.indices, p.values,
          p.out_indptr ? p.out_indices + at : nullptr, p.out_indptr ? p.out_values + at : nullptr, cursor.data());
      if (!p.out_indptr) p.counts[i] = count;
    }
  }
}

// Sequential on purpose: it is a few milliseconds even at MSMT17 size, and filling rows in order
// keeps every column's rows ascending, so the Jaccard sums are deterministic.
void k_reciprocal_transpose_cpu(const KReciprocalTransposeParams& p) {
  const int64_t begin = p.indptr[p.row_begin], end = p.indptr[p.num_items];
  if (!p.colptr) {
    for (int64_t q = begin; q < end; ++q) ++p.col_counts[p.indices[q]];
    return;
  }
  std::vector<int64_t> cursor(p.colptr, p.colptr + p.num_items);
  for (int64_t i = p.row_begin; i < p.num_items; ++i)
    for (int64_t q = p.indptr[i]; q < p.indptr[i + 1]; ++q) {
      const int64_t at = cursor[p.indices[q]]++;
      p.rows[at] = i;
      p.out_values[at] = p.values[q];
    }
}

// One dense accumulator row per thread: s(i, .) is gathered through the inverted index (the
// reference's invIndex, in parallel), then turned into the requested output.
void k_reciprocal_jaccard_cpu(const KReciprocalJaccardParams& p) {
  using Mode = KReciprocalJaccardMode;
  const int64_t width = p.num_items - p.col_begin;
  const float keep = static_cast<float>(1.0 - p.lambda_value);
  const float mix = static_cast<float>(p.lambda_value);
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<float> overlap(width, 0.f);
    std::vector<uint8_t> seen;
    std::vector<int64_t> touched;
    const bool sparse = p.mode == Mode::kSparseCount || p.mode == Mode::kSparseFill;
    if (sparse) seen.assign(width, 0);
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 8)
#endif
    for (int64_t i = p.row_begin; i < p.row_end; ++i) {
      for (int64_t q = p.indptr[i]; q < p.indptr[i + 1]; ++q) {
        const int64_t k = p.indices[q];
        const float v = p.values[q];
        for (int64_t e = p.colptr[k]; e < p.colptr[k + 1]; ++e) {
          const int64_t j = p.inv_rows[e] - p.col_begin;
          overlap[j] += std::min(v, p.inv_values[e]);
          if (sparse && !seen[j]) {
            seen[j] = 1;
            touched.push_back(j);
          }
        }
      }
      const int64_t r = i - p.row_begin;
      if (p.mode == Mode::kRerank) {
        float* out = p.out + r * p.out_row_stride;
        const double divisor = krr::row_divisor(p.row_max, i);
        for (int64_t j = 0; j < width; ++j) {
          const float jaccard = krr::jaccard_from_overlap(overlap[j], false);
          const float original = static_cast<float>(out[j] / divisor);
          out[j] = jaccard * keep + original * mix;
          overlap[j] = 0.f;
        }
      } else if (p.mode == Mode::kDense) {
        float* out = p.out + r * p.out_row_stride;
        for (int64_t j = 0; j < width; ++j) {
          out[j] = krr::jaccard_from_overlap(overlap[j], p.clamp_negative);
          overlap[j] = 0.f;
        }
      } else {
        std::sort(touched.begin(), touched.end());
        int64_t count = 0;
        const int64_t at = p.mode == Mode::kSparseFill ? p.out_indptr[r] : 0;
        for (const int64_t j : touched) {
          if (overlap[j] > 0.f) {
            if (p.mode == Mode::kSparseFill) {
              p.out_indices[at + count] = j + p.col_begin;
              p.out_values[at + count] = krr::jaccard_from_overlap(overlap[j], p.clamp_negative);
            }
            ++count;
          }
          overlap[j] = 0.f;
          seen[j] = 0;
        }
        if (p.mode == Mode::kSparseCount) p.counts[r] = count;
        touched.clear();
      }
    }
  }
}

void k_reciprocal_pairs_cpu(const KReciprocalPairParams& p) {
  const float keep = static_cast<float>(1.0 - p.lambda_value);
  const float mix = static_cast<float>(p.lambda_value);
  krr::dispatch_float_or_double(p.dtype, "neighbor_distance", [&](auto tag) {
    using T = decltype(tag);
    const T* distance = static_cast<const T*>(p.distance);
    parallel_for(p.num_query, 16, [&](int64_t q) {
      const double divisor = krr::row_divisor(p.row_max, q);
      for (int64_t t = 0; t < p.num_candidates; ++t) {
        const int64_t at = q * p.num_candidates + t;
        const int64_t j = p.candidates[at];
        if (j < p.num_query) {  // padding, the query itself or another query
          p.out[at] = std::numeric_limits<float>::infinity();
          continue;
        }
        const float s = krr::min_overlap(p.indptr, p.indices, p.values, q, j);
        const float original = static_cast<float>(static_cast<double>(distance[at]) / divisor);
        p.out[at] = krr::jaccard_from_overlap(s, false) * keep + original * mix;
      }
    });
  });
}

}  // namespace cion
