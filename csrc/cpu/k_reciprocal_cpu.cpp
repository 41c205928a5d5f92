// CPU k-reciprocal re-ranking: OpenMP over items (rows), per-thread buffers reused across items.
// The per-item logic lives in ops/k_reciprocal_steps.h, shared with the CUDA kernels.
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

// Row direction: each row item scans its block row once. Most values fail the threshold test
// against the row's current worst kept neighbour, so the loop is one compare per value.
template <class T>
void select_rows(const KReciprocalSelectParams& p, std::atomic<bool>& non_finite) {
  const int64_t W = p.num_neighbours;
  parallel_for(p.rows, 16, [&](int64_t r) {
    const int64_t item = p.row_begin + r;
    const T* row = static_cast<const T*>(p.block) + r * p.block_row_stride;
    const int64_t* columns = p.block_columns ? p.block_columns + r * p.block_row_stride : nullptr;
    double* values = p.neighbour_value + item * W;
    int64_t* indices = p.neighbour_index + item * W;
    double worst_value = values[W - 1];
    int64_t worst_index = indices[W - 1];
    double row_max = -std::numeric_limits<double>::infinity();
    bool finite = true;
    for (int64_t c = 0; c < p.cols; ++c) {
      const int64_t j = columns ? columns[c] : p.col_begin + c;
      if (j < 0) continue;  // graph padding: its distance is not read at all
      const double v = static_cast<double>(row[c]);
      finite &= std::isfinite(v);
      if (v > row_max) row_max = v;
      // The cheap test first (NaN fails it too); the full (value, index) order only near the top.
      if (v <= worst_value && j != item && krr::ranks_before(v, j, worst_value, worst_index)) {
        krr::offer(values, indices, W, v, j);
        worst_value = values[W - 1];
        worst_index = indices[W - 1];
      }
    }
    if (!finite) non_finite = true;
    if (p.row_max && row_max > p.row_max[item]) p.row_max[item] = row_max;
    if (p.raw_out && item < p.num_query && !columns) {
      // Columns >= num_query of this row are (query, gallery) distances: keep them raw.
      const int64_t first = std::max<int64_t>(p.num_query - p.col_begin, 0);
      float* out = p.raw_out + item * p.raw_out_row_stride + (p.col_begin + first - p.num_query);
      for (int64_t c = first; c < p.cols; ++c) out[c - first] = static_cast<float>(row[c]);
    }
  });
}

// Column direction (symmetric blocks): each thread owns a chunk of columns and walks down the
// block row by row, so reads stay contiguous; per-column thresholds live in small local arrays.
template <class T>
void select_columns(const KReciprocalSelectParams& p) {
  constexpr int64_t kChunk = 16;
  const int64_t W = p.num_neighbours;
  const int64_t chunks = (p.cols + kChunk - 1) / kChunk;
  parallel_for(chunks, 1, [&](int64_t chunk) {
    const int64_t c0 = chunk * kChunk;
    const int64_t width = std::min(kChunk, p.cols - c0);
    double worst_value[kChunk], col_max[kChunk];
    int64_t worst_index[kChunk];
    for (int64_t l = 0; l < width; ++l) {
      const int64_t item = p.col_begin + c0 + l;
      worst_value[l] = p.neighbour_value[item * W + W - 1];
      worst_index[l] = p.neighbour_index[item * W + W - 1];
      col_max[l] = -std::numeric_limits<double>::infinity();
    }
    for (int64_t r = 0; r < p.rows; ++r) {
      const T* row = static_cast<const T*>(p.block) + r * p.block_row_stride + c0;
      const int64_t j = p.row_begin + r;
      for (int64_t l = 0; l < width; ++l) {
        const double v = static_cast<double>(row[l]);
        if (v > col_max[l]) col_max[l] = v;
        if (v <= worst_value[l] && krr::ranks_before(v, j, worst_value[l], worst_index[l])) {
          const int64_t item = p.col_begin + c0 + l;
          if (item == j) continue;
          double* values = p.neighbour_value + item * W;
          int64_t* indices = p.neighbour_index + item * W;
          krr::offer(values, indices, W, v, j);
          worst_value[l] = values[W - 1];
          worst_index[l] = indices[W - 1];
        }
      }
    }
    if (p.row_max)
      for (int64_t l = 0; l < width; ++l) {
        const int64_t item = p.col_begin + c0 + l;
        if (col_max[l] > p.row_max[item]) p.row_max[item] = col_max[l];
      }
  });
}

// ---- stage 3: weights ------------------------------------------------------------------------

// Squared Euclidean distance with 16 independent partial sums, so the compiler vectorises it
// without reassociating a single running sum (no -ffast-math needed).
template <class T>
double squared_distance(const T* a, const T* b, int64_t dim) {
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
    select_rows<T>(p, non_finite);
    if (p.symmetric) select_columns<T>(p);
  });
  CION_CHECK(!non_finite, "non-finite distance (NaN or inf) in the distance block");
}

void k_reciprocal_expand_cpu(const KReciprocalExpandParams& p) {
  const int64_t capacity = krr::expansion_capacity(p.m1, p.mh);
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<int64_t> buffer(capacity);
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 64)
#endif
    for (int64_t i = 0; i < p.num_items; ++i) {
      const int64_t size = krr::expanded_set(p.neighbours, p.num_neighbours, i, p.m1, p.mh, buffer.data());
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
  parallel_for(p.num_items, 64, [&](int64_t i) {
    if (p.out_indptr) {
      krr::expansion_row(p.neighbours, p.num_neighbours, i, p.k2, p.indptr, p.indices, p.values,
                         p.out_indices + p.out_indptr[i], p.out_values + p.out_indptr[i]);
    } else {
      p.counts[i] = krr::expansion_row(p.neighbours, p.num_neighbours, i, p.k2, p.indptr, p.indices,
                                       p.values, nullptr, nullptr);
    }
  });
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
