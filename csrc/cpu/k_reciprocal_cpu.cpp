// CPU k-reciprocal re-ranking: OpenMP over items (rows), per-thread buffers reused across items.
// The per-item logic lives in ops/k_reciprocal_steps.h, shared with the CUDA kernels; steps 4
// and 6 use the CPU forms there (expanded_set_marked, expansion_row_cursors): same results, less work.
#include "common/cpu_features.h"
CION_SIMD_CLONES_SAME_ROUNDING  // the distance loops below, in AVX-512 / AVX2 copies

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/dispatch.h"
#include "common/parallel.h"
#include "cpu/dot_block.h"
#include "ops/k_reciprocal.h"
#include "ops/k_reciprocal_steps.h"

namespace cion {
namespace {

// ---- stage 1: select -------------------------------------------------------------------------
//
// Nearly every value fails the "closer than the item's current L-1-th neighbour" test once the
// lists have filled up, so a strip of values is first compared with the thresholds in vectorised
// loops (16 independent lanes for the maxima: no -ffast-math needed); only in a chunk where one
// passes are its candidates flagged (vectorised too) and visited one by one. A symmetric tile is
// read once for its row and column items alike: a second read cost about as much as the first
// (one [1024, 1024] float32 tile at D = 768: 0.59-0.66 ms read as rows then as columns,
// 0.36-0.44 ms read once). Each row's next strip is a page away, where the hardware prefetchers
// stop, so it is fetched while this one is read: at Market-1501 size 3-5 % of the selection in the
// op (the tile just written by the GEMM), 18 % on tiles read back from memory (2026-12-05, Xeon).

constexpr int64_t kChunk = 64;   // values flagged together
constexpr int64_t kStrip = 512;  // values summarised per call; a strip's columns' state sits in local arrays
constexpr int64_t kChunksPerStrip = kStrip / kChunk;
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

// One strip of n <= kStrip values of a block row turned into distances (written to x): hit[chunk] is
// set when a value of the chunk is at most the row's threshold, or, with kColumns (symmetric
// blocks, read once for both their row and column items), at most its column's threshold, which is
// rare once the lists have filled up. Raises *row_max and, with kColumns, each column's maximum;
// clears *finite on a NaN or inf. The pointers never alias: __restrict spares the overlap checks.
template <class T, bool kGram, bool kColumns>
CION_SIMD_CLONES void summarise_strip(const T* __restrict row, const T* __restrict col_norms, T row_norm, int64_t n,
                                      T row_threshold, T* __restrict x, bool* __restrict hit, T* __restrict row_max,
                                      bool* __restrict finite, const T* __restrict threshold,
                                      T* __restrict column_max) {
  constexpr T kInf = std::numeric_limits<T>::infinity();
  T hi[kLanes], probe[kLanes];  // probe: x * 0 turns inf and NaN into NaN
  for (int l = 0; l < kLanes; ++l) hi[l] = -kInf, probe[l] = T(0);
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t end = std::min(c0 + kChunk, n);
    int chunk_hit[kLanes] = {};
    const auto visit = [&](int64_t c, int l) {
      const T v = block_value<T, kGram>(row[c], row_norm, kGram ? col_norms[c] : T(0));
      x[c] = v;
      hi[l] = v > hi[l] ? v : hi[l];
      probe[l] += v * T(0);
      chunk_hit[l] |= v <= row_threshold;
      if constexpr (kColumns) {
        column_max[c] = v > column_max[c] ? v : column_max[c];
        chunk_hit[l] |= v <= threshold[c];
      }
    };
    int64_t c = c0;
    for (; c + kLanes <= end; c += kLanes)
      for (int l = 0; l < kLanes; ++l) visit(c + l, l);
    for (; c < end; ++c) visit(c, 0);
    int any = 0;
    for (int l = 0; l < kLanes; ++l) any |= chunk_hit[l];
    hit[c0 / kChunk] = any != 0;
  }
  for (int l = 1; l < kLanes; ++l) {
    hi[0] = hi[l] > hi[0] ? hi[l] : hi[0];
    probe[0] += probe[l];
  }
  *finite &= probe[0] == T(0);
  *row_max = hi[0] > *row_max ? hi[0] : *row_max;
}

// One item's running list (see KReciprocalSelectParams) with a copy of its last entry, the one a
// value must rank before to get in.
struct NeighbourList {
  double* values;
  int64_t* indices;
  int64_t width;
  double worst_value;
  int64_t worst_index;

  NeighbourList(const KReciprocalSelectParams& p, int64_t item)
      : values(p.neighbour_value + item * p.num_neighbours),
        indices(p.neighbour_index + item * p.num_neighbours),
        width(p.num_neighbours),
        worst_value(values[width - 1]),
        worst_index(indices[width - 1]) {}

  // Offers item j at distance v (never the list's own item: the caller skips it).
  void offer(double v, int64_t j) {
    if (!(v <= worst_value) || !krr::ranks_before(v, j, worst_value, worst_index)) return;
    krr::offer(values, indices, width, v, j);
    worst_value = values[width - 1];
    worst_index = indices[width - 1];
  }
};

// The columns of a strip as items (symmetric blocks): their thresholds (their lists' last
// distances, as T: see select_strip) and running maxima.
template <class T>
struct StripColumns {
  T threshold[kStrip];
  T column_max[kStrip];
};

// flag[k] = 1 for the values of a flagged chunk (n <= kChunk) at most the row's threshold or, with
// kColumns, at most their column's: the candidates, found 16 at a time rather than one by one.
template <class T, bool kColumns>
CION_SIMD_CLONES void flag_candidates(const T* __restrict x, int64_t n, T row_threshold, const T* __restrict threshold,
                                      uint8_t* __restrict flag) {
  for (int64_t k = 0; k < n; ++k) {
    bool candidate = x[k] <= row_threshold;
    if constexpr (kColumns) candidate |= x[k] <= threshold[k];
    flag[k] = candidate;
  }
}

inline int lowest_set_bit(uint64_t word) {  // word != 0
#if defined(__GNUC__)
  return __builtin_ctzll(word);
#else
  int bit = 0;
  while (!((word >> bit) & 1)) ++bit;
  return bit;
#endif
}

// Calls visit(k) for each k with flag[k] set (flag: kChunk bytes of 0 or 1), in increasing order:
// eight flags per 64-bit word, so a chunk with few candidates costs a few word tests.
template <class F>
void for_each_flagged(const uint8_t* flag, F&& visit) {
  for (int64_t w = 0; w < kChunk; w += 8) {
    uint64_t word;
    std::memcpy(&word, flag + w, sizeof word);
    for (; word != 0; word &= word - 1) visit(w + lowest_set_bit(word) / 8);
  }
}

// One block row of one item over a strip of n <= kStrip columns, items first .. first + n - 1:
// the row item is offered the values that rank before its last neighbour; with `columns` set, each
// column item is offered the row item likewise (disjoint items: no value is an item's own).
// Keeps a query row's (query, gallery) values raw for the final step.
template <class T, bool kGram>
void select_strip(const KReciprocalSelectParams& p, const T* row, const T* col_norms, T row_norm, int64_t n,
                  int64_t item, int64_t first, NeighbourList& list, T* row_max, bool* finite,
                  StripColumns<T>* columns) {
  T x[kStrip];
  bool hit[kChunksPerStrip];
  // Thresholds are compared in T. T(worst) may round, but monotonically: a value of T at most worst
  // is at most T(worst), so no candidate is missed (and offer() compares in double).
  const T row_threshold = static_cast<T>(list.worst_value);
  if (columns)
    summarise_strip<T, kGram, true>(row, col_norms, row_norm, n, row_threshold, x, hit, row_max, finite,
                                    columns->threshold, columns->column_max);
  else
    summarise_strip<T, kGram, false>(row, col_norms, row_norm, n, row_threshold, x, hit, row_max, finite, nullptr,
                                     nullptr);
  if (p.raw_out && item < p.num_query) {
    float* raw = p.raw_out + item * p.raw_out_row_stride;
    for (int64_t k = std::max<int64_t>(p.num_query - first, 0); k < n; ++k)
      raw[first + k - p.num_query] = static_cast<float>(x[k]);
  }
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    if (!hit[c0 / kChunk]) continue;
    uint8_t flag[kChunk] = {};
    const int64_t m = std::min(kChunk, n - c0);
    if (columns)
      flag_candidates<T, true>(x + c0, m, static_cast<T>(list.worst_value), columns->threshold + c0, flag);
    else
      flag_candidates<T, false>(x + c0, m, static_cast<T>(list.worst_value), nullptr, flag);
    for_each_flagged(flag, [&](int64_t offset) {
      const int64_t k = c0 + offset;
      if (first + k != item) list.offer(static_cast<double>(x[k]), first + k);
      if (!columns || !(x[k] <= columns->threshold[k])) return;
      NeighbourList column(p, first + k);
      column.offer(static_cast<double>(x[k]), item);
      columns->threshold[k] = static_cast<T>(column.worst_value);
    });
  }
}

// Raises the running maximum of `item` (row_max is optional).
template <class T>
void raise_row_max(const KReciprocalSelectParams& p, int64_t item, T value) {
  if (p.row_max && static_cast<double>(value) > p.row_max[item]) p.row_max[item] = static_cast<double>(value);
}

// Row direction for dense blocks: each row item scans its block row once.
template <class T, bool kGram>
void select_rows(const KReciprocalSelectParams& p, std::atomic<bool>& non_finite) {
  const T* row_norms = static_cast<const T*>(p.row_norms);
  const T* col_norms = static_cast<const T*>(p.col_norms);
  parallel_for(p.rows, 16, [&](int64_t r) {
    const int64_t item = p.row_begin + r;
    const T* row = static_cast<const T*>(p.block) + r * p.block_row_stride;
    if (r + 1 < p.rows) prefetch_bytes(row + p.block_row_stride, std::min(kStrip, p.cols) * sizeof(T));
    NeighbourList list(p, item);
    T row_max = -std::numeric_limits<T>::infinity();
    bool finite = true;
    for (int64_t s0 = 0; s0 < p.cols; s0 += kStrip)
      select_strip<T, kGram>(p, row + s0, kGram ? col_norms + s0 : nullptr, kGram ? row_norms[r] : T(0),
                             std::min(kStrip, p.cols - s0), item, p.col_begin + s0, list, &row_max, &finite, nullptr);
    if (!finite) non_finite = true;
    raise_row_max(p, item, row_max);
  });
}

// One sub-block of a symmetric block, rows [r_begin, r_end) x columns [c_begin, c_end), read once
// for both sides, strip by strip. The caller guarantees that no other thread touches these row or
// column items meanwhile.
template <class T, bool kGram>
void select_sub_block(const KReciprocalSelectParams& p, int64_t r_begin, int64_t r_end, int64_t c_begin,
                      int64_t c_end, bool* finite) {
  const T* row_norms = static_cast<const T*>(p.row_norms);
  const T* col_norms = static_cast<const T*>(p.col_norms);
  const int64_t W = p.num_neighbours;
  StripColumns<T> columns;
  for (int64_t s0 = c_begin; s0 < c_end; s0 += kStrip) {
    const int64_t width = std::min(kStrip, c_end - s0);
    for (int64_t l = 0; l < width; ++l) {
      columns.threshold[l] = static_cast<T>(p.neighbour_value[(p.col_begin + s0 + l) * W + W - 1]);
      columns.column_max[l] = -std::numeric_limits<T>::infinity();
    }
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t item = p.row_begin + r;
      if (r + 1 < r_end)
        prefetch_bytes(static_cast<const T*>(p.block) + (r + 1) * p.block_row_stride + s0, width * sizeof(T));
      NeighbourList list(p, item);
      T row_max = -std::numeric_limits<T>::infinity();
      select_strip<T, kGram>(p, static_cast<const T*>(p.block) + r * p.block_row_stride + s0,
                             kGram ? col_norms + s0 : nullptr, kGram ? row_norms[r] : T(0), width, item,
                             p.col_begin + s0, list, &row_max, finite, &columns);
      raise_row_max(p, item, row_max);
    }
    for (int64_t l = 0; l < width; ++l) raise_row_max(p, p.col_begin + s0 + l, columns.column_max[l]);
  }
}

// Symmetric blocks (disjoint row and column items): the block is cut into bands x bands sub-blocks,
// one band per thread, visited in rounds where no two threads share a row band or a column band.
// Each value is read once, and every list has one writer at a time, so no locks.
template <class T, bool kGram>
void select_symmetric(const KReciprocalSelectParams& p, std::atomic<bool>& non_finite) {
  parallel_rounds([&](int row_band, int column_band, int bands) {
    bool finite = true;
    select_sub_block<T, kGram>(p, p.rows * row_band / bands, p.rows * (row_band + 1) / bands,
                               p.cols * column_band / bands, p.cols * (column_band + 1) / bands, &finite);
    if (!finite) non_finite = true;
  });
}

// Row direction for a kNN graph: K listed neighbours per row (few), padding skipped unread.
template <class T>
void select_rows_graph(const KReciprocalSelectParams& p, std::atomic<bool>& non_finite) {
  parallel_for(p.rows, 64, [&](int64_t r) {
    const int64_t item = p.row_begin + r;
    const T* row = static_cast<const T*>(p.block) + r * p.block_row_stride;
    const int64_t* columns = p.block_columns + r * p.block_row_stride;
    NeighbourList list(p, item);
    bool finite = true;
    for (int64_t c = 0; c < p.cols; ++c) {
      const int64_t j = columns[c];
      if (j < 0) continue;
      const double v = static_cast<double>(row[c]);
      finite &= std::isfinite(v);
      if (j != item) list.offer(v, j);
    }
    if (!finite) non_finite = true;
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
      double listed;
      if (i == j) return 0.0;
      if (krr::listed_distance(p, i, j, &listed)) return listed;
      return squared_distance(krr::feature_row<T>(p, i), krr::feature_row<T>(p, j), p.dim);
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
    } else if (p.symmetric) {
      p.row_norms ? select_symmetric<T, true>(p, non_finite) : select_symmetric<T, false>(p, non_finite);
    } else {
      p.row_norms ? select_rows<T, true>(p, non_finite) : select_rows<T, false>(p, non_finite);
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
