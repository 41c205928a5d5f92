// Per-item steps of k-reciprocal re-ranking, shared verbatim by the CPU (one OpenMP iteration per
// item) and CUDA (one thread per item) implementations, so the two cannot drift apart.
// See ops/k_reciprocal.h for the stages and the notation.
#pragma once
#include <cstdint>

#include "common/dispatch.h"  // CION_HOST_DEVICE
#include "ops/k_reciprocal.h"

#if !defined(__CUDA_ARCH__)
#include <algorithm>
#endif

namespace cion {
namespace krr {

// Host side: calls f(T{}) with T = float or double. This op's distance sources are float32 or
// float64 only (the Python layer widens 16-bit input), which halves the instantiations.
template <class F>
void dispatch_float_or_double(DType dtype, const char* name, F&& f) {
  if (dtype == DType::kFloat32) return f(float{});
  if (dtype == DType::kFloat64) return f(double{});
  throw TypeError(str_cat(name, " must be float32 or float64, got ", dtype_name(dtype)));
}

// (value, index) order: the order of a stable argsort, so ties are broken by the smaller index.
CION_HOST_DEVICE bool ranks_before(double value, int64_t index, double other_value, int64_t other_index) {
  return value < other_value || (value == other_value && index < other_index);
}

// Inserts (value, index) into a list of `width` entries kept ascending; the last entry drops out.
// Call only when (value, index) ranks before the last entry. Walks past the larger values, then
// past equal values with larger indices (ranks_before in two loops: the first compares values
// only, 14 against 18.7 ns per insertion into lists of 20 on the CPU).
CION_HOST_DEVICE void offer(double* values, int64_t* indices, int64_t width, double value, int64_t index) {
  int64_t slot = width - 1;
  while (slot > 0 && value < values[slot - 1]) {
    values[slot] = values[slot - 1];
    indices[slot] = indices[slot - 1];
    --slot;
  }
  while (slot > 0 && value == values[slot - 1] && index < indices[slot - 1]) {
    values[slot] = values[slot - 1];
    indices[slot] = indices[slot - 1];
    --slot;
  }
  values[slot] = value;
  indices[slot] = index;
}

// Entry t of item i's rank list: the item itself, then its neighbours.
CION_HOST_DEVICE int64_t rank_at(const int64_t* neighbours, int64_t width, int64_t i, int64_t t) {
  return t == 0 ? i : neighbours[i * width + t - 1];
}

// Whether `item` is among the first m entries of j's rank list.
CION_HOST_DEVICE bool in_rank_prefix(const int64_t* neighbours, int64_t width, int64_t j, int64_t m,
                                     int64_t item) {
  if (j == item) return true;  // entry 0
  const int64_t* row = neighbours + j * width;
  for (int64_t t = 0; t + 1 < m; ++t)
    if (row[t] == item) return true;
  return false;
}

// R(i, m): the first m entries j of i's rank list that have i among their own first m entries.
// Writes them to out (in rank order), returns how many.
CION_HOST_DEVICE int64_t reciprocal_set(const int64_t* neighbours, int64_t width, int64_t i, int64_t m,
                                        int64_t* out) {
  int64_t count = 0;
  for (int64_t t = 0; t < m; ++t) {
    const int64_t j = rank_at(neighbours, width, i, t);
    if (in_rank_prefix(neighbours, width, j, m, i)) out[count++] = j;
  }
  return count;
}

// Sorts buffer[0..n) ascending and removes duplicates; returns the new length.
CION_HOST_DEVICE int64_t sort_unique(int64_t* buffer, int64_t n) {
#if defined(__CUDA_ARCH__)
  for (int64_t a = 1; a < n; ++a) {  // insertion sort: n is a few hundred at most
    const int64_t key = buffer[a];
    int64_t b = a;
    while (b > 0 && buffer[b - 1] > key) {
      buffer[b] = buffer[b - 1];
      --b;
    }
    buffer[b] = key;
  }
#else
  std::sort(buffer, buffer + n);
#endif
  int64_t unique = 0;
  for (int64_t a = 0; a < n; ++a)
    if (unique == 0 || buffer[a] != buffer[unique - 1]) buffer[unique++] = buffer[a];
  return unique;
}

// Whether a candidate set of `size` entries, `overlap` of them in R(i, m1), joins R*(i). The
// reference tests overlap > 2./3 * size in float64; for integer sizes below 1e5 that is exactly
// 3 * overlap > 2 * size (checked exhaustively), with no rounding to worry about.
CION_HOST_DEVICE bool candidate_joins(int64_t overlap, int64_t size) { return 3 * overlap > 2 * size; }

// Capacity of the buffer expanded_set needs: R(i, m1) plus one R(c, mh) per member c.
CION_HOST_DEVICE int64_t expansion_capacity(int64_t m1, int64_t mh) { return m1 + m1 * mh; }

// R*(i) (step 4), sorted ascending, into buffer (expansion_capacity entries); returns |R*(i)|.
// The candidate sets are appended after R(i, m1) and kept only when they pass the overlap test,
// so the buffer never holds more than R(i, m1) and one set per member.
CION_HOST_DEVICE int64_t expanded_set(const int64_t* neighbours, int64_t width, int64_t i, int64_t m1,
                                      int64_t mh, int64_t* buffer) {
  const int64_t base = reciprocal_set(neighbours, width, i, m1, buffer);
  int64_t size = base;
  for (int64_t a = 0; a < base; ++a) {
    int64_t* candidate = buffer + size;
    const int64_t candidate_size = reciprocal_set(neighbours, width, buffer[a], mh, candidate);
    int64_t overlap = 0;
    for (int64_t b = 0; b < candidate_size; ++b)
      for (int64_t c = 0; c < base; ++c)
        if (candidate[b] == buffer[c]) {
          ++overlap;
          break;
        }
    if (candidate_joins(overlap, candidate_size)) size += candidate_size;
  }
  return sort_unique(buffer, size);
}

#if !defined(__CUDA_ARCH__)
// The CPU form of expanded_set: the same R*(i), in less work. The candidate sets R(c, mh) come
// from `candidates` ([N, mh], row c holding candidate_sizes[c] entries, computed once per item
// instead of once per item whose R(i, m1) holds c: about m1 times), and `mark` ([N], all entries
// < 0 before the first call of a pass, owned by one thread) replaces the pairwise overlap scan
// and the duplicates: mark[x] == i means x is in R(i, m1), mark[x] == -2 - i that x was already
// added by a kept candidate set. Only distinct entries reach the sort.
inline int64_t expanded_set_marked(const int64_t* neighbours, int64_t width, int64_t i, int64_t m1, int64_t mh,
                                   const int64_t* candidates, const int64_t* candidate_sizes, int64_t* mark,
                                   int64_t* buffer) {
  const int64_t base = reciprocal_set(neighbours, width, i, m1, buffer);
  for (int64_t a = 0; a < base; ++a) mark[buffer[a]] = i;
  int64_t size = base;
  for (int64_t a = 0; a < base; ++a) {
    const int64_t* candidate = candidates + buffer[a] * mh;
    const int64_t candidate_size = candidate_sizes[buffer[a]];
    int64_t overlap = 0;
    for (int64_t b = 0; b < candidate_size; ++b) overlap += mark[candidate[b]] == i;
    if (candidate_joins(overlap, candidate_size))
      for (int64_t b = 0; b < candidate_size; ++b) {
        const int64_t x = candidate[b];
        if (mark[x] == i || mark[x] == -2 - i) continue;
        mark[x] = -2 - i;
        buffer[size++] = x;
      }
  }
  std::sort(buffer, buffer + size);
  return size;
}

// The CPU form of expansion_row: the same columns and sums (in the same row order), merged with
// one cursor per row (`cursor`: 2 k2 entries of scratch, each row's position then its end), so each
// emitted column costs 2 k2 steps instead of 2 k2 binary searches.
inline int64_t expansion_row_cursors(const int64_t* neighbours, int64_t width, int64_t i, int64_t k2,
                                     const int64_t* indptr, const int64_t* indices, const float* values,
                                     int64_t* out_indices, float* out_values, int64_t* cursor) {
  int64_t* end = cursor + k2;
  for (int64_t t = 0; t < k2; ++t) {
    const int64_t r = rank_at(neighbours, width, i, t);
    cursor[t] = indptr[r];
    end[t] = indptr[r + 1];
  }
  int64_t count = 0;
  for (;;) {
    int64_t next = INT64_MAX;
    for (int64_t t = 0; t < k2; ++t)
      if (cursor[t] < end[t] && indices[cursor[t]] < next) next = indices[cursor[t]];
    if (next == INT64_MAX) return count;
    float sum = 0.f;
    for (int64_t t = 0; t < k2; ++t)
      if (cursor[t] < end[t] && indices[cursor[t]] == next) sum += values[cursor[t]++];
    if (out_indices) {
      out_indices[count] = next;
      out_values[count] = sum / static_cast<float>(k2);
    }
    ++count;
  }
}
#endif

// First position p in [begin, end) with indices[p] > key (indices ascending).
CION_HOST_DEVICE int64_t upper_bound(const int64_t* indices, int64_t begin, int64_t end, int64_t key) {
  while (begin < end) {
    const int64_t mid = begin + (end - begin) / 2;
    if (indices[mid] <= key)
      begin = mid + 1;
    else
      end = mid;
  }
  return begin;
}

// Local query expansion of item i (step 6): the k2 rows rank[i][0..k2) of V merged by column
// (a k-way merge that keeps no per-row state: each step binary-searches every row for the first
// column after the last one emitted). With out_indices null, only counts. Returns the row length.
// Sums run in row order in float32 and divide by k2, as numpy's mean over axis 0 does.
CION_HOST_DEVICE int64_t expansion_row(const int64_t* neighbours, int64_t width, int64_t i, int64_t k2,
                                       const int64_t* indptr, const int64_t* indices, const float* values,
                                       int64_t* out_indices, float* out_values) {
  const int64_t kNone = INT64_MAX;
  int64_t last = -1;
  int64_t count = 0;
  for (;;) {
    int64_t next = kNone;
    for (int64_t t = 0; t < k2; ++t) {
      const int64_t r = rank_at(neighbours, width, i, t);
      const int64_t p = upper_bound(indices, indptr[r], indptr[r + 1], last);
      if (p < indptr[r + 1] && indices[p] < next) next = indices[p];
    }
    if (next == kNone) return count;
    if (out_indices) {
      float sum = 0.f;
      for (int64_t t = 0; t < k2; ++t) {
        const int64_t r = rank_at(neighbours, width, i, t);
        const int64_t p = upper_bound(indices, indptr[r], indptr[r + 1], last);
        if (p < indptr[r + 1] && indices[p] == next) sum += values[p];
      }
      out_indices[count] = next;
      out_values[count] = sum / static_cast<float>(k2);
    }
    ++count;
    last = next;
  }
}

// s(a, b) = sum_k min(V[a, k], V[b, k]) by merging the two sorted rows.
CION_HOST_DEVICE float min_overlap(const int64_t* indptr, const int64_t* indices, const float* values,
                                   int64_t a, int64_t b) {
  int64_t p = indptr[a], q = indptr[b];
  const int64_t p_end = indptr[a + 1], q_end = indptr[b + 1];
  float sum = 0.f;
  while (p < p_end && q < q_end) {
    if (indices[p] < indices[q]) {
      ++p;
    } else if (indices[q] < indices[p]) {
      ++q;
    } else {
      sum += values[p] < values[q] ? values[p] : values[q];
      ++p;
      ++q;
    }
  }
  return sum;
}

// J = 1 - s / (2 - s), unclamped as in the reference (SpCL clamps at 0).
CION_HOST_DEVICE float jaccard_from_overlap(float s, bool clamp_negative) {
  const float j = 1.f - s / (2.f - s);
  return (clamp_negative && j < 0.f) ? 0.f : j;
}

// The divisor of row i in D' (step 1): its maximum, or 1 when there is none to apply
// (SpCL variant: no row_max) or it is not positive (all distances zero: identical features).
CION_HOST_DEVICE double row_divisor(const double* row_max, int64_t i) {
  if (!row_max) return 1.0;
  const double m = row_max[i];
  return m > 0.0 ? m : 1.0;
}

// Looks up `key` in indices[begin, end) (ascending); returns its position or -1.
CION_HOST_DEVICE int64_t find_sorted(const int64_t* indices, int64_t begin, int64_t end, int64_t key) {
  const int64_t p = upper_bound(indices, begin, end, key) - 1;
  return (p >= begin && indices[p] == key) ? p : -1;
}

// What item i sees item j at, read from the three distance blocks: M[j, i] of
// M = [[q_q, q_g], [q_g^T, g_g]].
template <class T>
CION_HOST_DEVICE double block_distance(const KReciprocalWeightsParams& p, int64_t i, int64_t j) {
  const int64_t Q = p.num_query;
  if (j < Q)
    return i < Q ? static_cast<const T*>(p.q_q)[j * p.q_q_stride + i]
                 : static_cast<const T*>(p.q_g)[j * p.q_g_stride + (i - Q)];
  return i < Q ? static_cast<const T*>(p.q_g)[i * p.q_g_stride + (j - Q)]
               : static_cast<const T*>(p.g_g)[(j - Q) * p.g_g_stride + (i - Q)];
}

// Item i's feature row (kFeatures: see KReciprocalWeightsParams).
template <class T>
CION_HOST_DEVICE const T* feature_row(const KReciprocalWeightsParams& p, int64_t i) {
  return i < p.num_query ? static_cast<const T*>(p.features) + i * p.feature_row_stride
                         : static_cast<const T*>(p.gallery_features) + (i - p.num_query) * p.gallery_row_stride;
}

// D[i, j] for features when j is in i's rank list (see KReciprocalWeightsParams): true with the
// listed distance in *distance, else false (no lists given, or j not listed).
CION_HOST_DEVICE bool listed_distance(const KReciprocalWeightsParams& p, int64_t i, int64_t j, double* distance) {
  if (!p.neighbour_index) return false;
  const int64_t* listed = p.neighbour_index + i * p.num_neighbours;
  for (int64_t t = 0; t < p.num_neighbours; ++t) {
    if (listed[t] == j) {
      *distance = p.neighbour_value[i * p.num_neighbours + t];
      return true;
    }
  }
  return false;
}

// D[i, j] from a kNN graph: i's list, else j's (symmetric distances), else -- it is in neither --
// the largest distance i lists, a lower bound, with *estimated set.
template <class T>
CION_HOST_DEVICE double graph_distance(const KReciprocalWeightsParams& p, int64_t i, int64_t j, bool* estimated) {
  if (i == j) return 0.0;
  const T* dist = static_cast<const T*>(p.graph_distance);
  const int64_t K = p.graph_k;
  int64_t at = find_sorted(p.graph_index + i * K, 0, K, j);
  if (at >= 0) return static_cast<double>(dist[i * K + at]);
  at = find_sorted(p.graph_index + j * K, 0, K, i);
  if (at >= 0) return static_cast<double>(dist[j * K + at]);
  *estimated = true;
  double largest = 0.0;
  for (int64_t t = 0; t < K; ++t) {
    const double d = static_cast<double>(dist[i * K + t]);
    if (p.graph_index[i * K + t] >= 0 && d > largest) largest = d;
  }
  return largest;
}

}  // namespace krr
}  // namespace cion
