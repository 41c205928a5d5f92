// CPU ranking metrics: OpenMP over queries; each distance row is read from memory once.
//
// Per query, rank(m) = number of valid gallery entries ranked before match m. Three ways to get it:
//  * AVX-512, float32, up to 24 matches per pass (the usual ReID case): one pass over the row
//    compares each block of 16 entries with every match's threshold (broadcast from memory),
//    counting in 24 register accumulators: 2 instructions per (block, match), the row loaded
//    once. Compute-bound: P * G / 16 compares and masked adds per query (benchmarks/NOTES.md).
//  * few matches otherwise: for each match, count the entries with a smaller key in a branch-free
//    SIMD loop. The row stays in L2 across these passes: P * G compares at vector width.
//  * many matches: one pass in which each entry finds, by binary search, how many matches it
//    precedes (a histogram), then prefix sums. O(G log P).
// Keys are (distance, gallery index): equal distances keep gallery order (the stable tie rule).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "common/cpu_features.h"
#include "common/dispatch.h"
#include "common/parallel.h"
#include "ops/rank_metrics.h"

#if defined(CION_X86_DISPATCH)
#include <immintrin.h>
#endif

namespace cion {
namespace {

// Above this many matches the binary-search histogram beats one counting pass per match.
constexpr int64_t kDirectCountMaxMatches = 48;

// Entries of x[0, n) strictly below h (or, with or_equal, at most h). NaN never counts.
// 32-bit block counters keep the loop a plain vector compare-and-subtract.
#define CION_DEFINE_COUNT(NAME, TYPE, OP)                                  \
  CION_SIMD_CLONES int64_t NAME(const TYPE* x, int64_t n, TYPE h) {        \
    int64_t total = 0;                                                     \
    for (int64_t start = 0; start < n; start += (int64_t(1) << 30)) {      \
      const int64_t end = std::min(n, start + (int64_t(1) << 30));         \
      uint32_t count = 0;                                                  \
      for (int64_t i = start; i < end; ++i) count += (x[i] OP h);          \
      total += count;                                                      \
    }                                                                      \
    return total;                                                          \
  }
CION_DEFINE_COUNT(count_below, float, <)
CION_DEFINE_COUNT(count_at_most, float, <=)
CION_DEFINE_COUNT(count_below, double, <)
CION_DEFINE_COUNT(count_at_most, double, <=)
#undef CION_DEFINE_COUNT

#define CION_DEFINE_HAS_NAN(TYPE)                                 \
  CION_SIMD_CLONES bool has_nan(const TYPE* x, int64_t n) {       \
    bool nan = false;                                             \
    for (int64_t i = 0; i < n; ++i) nan |= (x[i] != x[i]);        \
    return nan;                                                   \
  }
CION_DEFINE_HAS_NAN(float)
CION_DEFINE_HAS_NAN(double)
#undef CION_DEFINE_HAS_NAN

// Per-thread buffers, reused across queries.
template <class Acc>
struct QueryScratch {
  std::vector<std::pair<Acc, int64_t>> matches;  // (distance, gallery index), sorted
  std::vector<int64_t> junk;                      // same pid and same camera: not ranked
  std::vector<int64_t> before;                    // histogram path: entries preceding exactly t matches
  std::vector<int64_t> rank;                      // rank of each match among valid entries
  std::vector<Acc> converted;                     // 16-bit rows widened to float32
};

// Number of sorted matches whose key is <= (x, j): the entry (x, j) ranks before matches t, t+1, ...
template <class Acc>
inline int64_t matches_not_after(const std::vector<std::pair<Acc, int64_t>>& matches, Acc x, int64_t j) {
  return std::upper_bound(matches.begin(), matches.end(), std::make_pair(x, j)) - matches.begin();
}

// rank[m] by one counting pass per match: entries before index g that are <= d, plus entries
// from g on that are < d (g itself, equal to d, is in neither).
template <class Acc>
void ranks_by_counting(const Acc* row, int64_t G, QueryScratch<Acc>& s) {
  for (size_t m = 0; m < s.matches.size(); ++m) {
    const Acc d = s.matches[m].first;
    const int64_t g = s.matches[m].second;
    s.rank[m] = count_at_most(row, g, d) + count_below(row + g, G - g, d);
  }
}

#if defined(CION_X86_DISPATCH)
// Matches per register pass of the AVX-512 path: one zmm accumulator each (24 of the 32), the
// thresholds broadcast from memory (held in registers too, they spilled: 20 % slower).
constexpr int64_t kRegisterMatches = 24;

// rank[m] for matches [first, first + N) in one pass over the float32 row. Entry j precedes match
// (d, g) when row[j] < d, or row[j] == d and j < g: so entries before g are compared with
// nextafter(d, +inf) (x <= d is x < nextup(d) for finite d) and entries from g on with d. The row is
// walked in segments between the matches' gallery indices (sorted), inside which every threshold is
// fixed; a segment's ragged end is a masked compare. N is a template parameter so that the
// accumulators and thresholds live in registers (the loops over them unroll).
template <int N>
__attribute__((target("avx512f"))) void ranks_avx512_pass(const float* row, int64_t G, QueryScratch<float>& s,
                                                          int64_t first) {
  float threshold[N];
  std::pair<int64_t, int> boundary[N];  // (gallery index, slot), sorted by index
  for (int k = 0; k < N; ++k) {
    const auto& match = s.matches[first + k];
    threshold[k] = std::nextafter(match.first, std::numeric_limits<float>::infinity());
    boundary[k] = {match.second, k};
  }
  std::sort(boundary, boundary + N);
  __m512i acc[N];
  for (int k = 0; k < N; ++k) acc[k] = _mm512_setzero_si512();
  const __m512i one = _mm512_set1_epi32(1);
  int64_t start = 0;
  for (int b = 0; b <= N; ++b) {
    const int64_t end = b < N ? boundary[b].first : G;
    int64_t j = start;
    for (; j + 16 <= end; j += 16) {
      const __m512 x = _mm512_loadu_ps(row + j);
      for (int k = 0; k < N; ++k)
        acc[k] = _mm512_mask_add_epi32(acc[k], _mm512_cmp_ps_mask(x, _mm512_set1_ps(threshold[k]), _CMP_LT_OQ),
                                       acc[k], one);
    }
    if (j < end) {
      const __mmask16 valid = static_cast<__mmask16>((1u << (end - j)) - 1u);
      const __m512 x = _mm512_maskz_loadu_ps(valid, row + j);
      for (int k = 0; k < N; ++k)
        acc[k] = _mm512_mask_add_epi32(acc[k], _mm512_mask_cmp_ps_mask(valid, x, _mm512_set1_ps(threshold[k]), _CMP_LT_OQ),
                                       acc[k], one);
    }
    if (b < N) threshold[boundary[b].second] = s.matches[first + boundary[b].second].first;
    start = end;
  }
  for (int k = 0; k < N; ++k) {
    alignas(64) int32_t lanes[16];
    _mm512_store_si512(lanes, acc[k]);
    int64_t total = 0;
    for (const int32_t lane : lanes) total += lane;
    s.rank[first + k] = total;
  }
}

// One pass for `count` (1..16) matches from `first`: the instantiation with that many registers.
template <int... N>
void ranks_avx512_dispatch(const float* row, int64_t G, QueryScratch<float>& s, int64_t first, int64_t count,
                           std::integer_sequence<int, N...>) {
  ((count == N + 1 ? (ranks_avx512_pass<N + 1>(row, G, s, first), true) : false) || ...);
}

// Whether the AVX-512 path applies: float32 rows, a processor with AVX-512F, rows short enough for
// 32-bit lane counters, finite thresholds (x <= inf is not x < nextup(inf)).
template <class Acc>
bool avx512_ranks(const Acc* row, int64_t G, QueryScratch<Acc>& s) {
  if constexpr (!std::is_same_v<Acc, float>) {
    return false;
  } else {
    if (!cpu_has_avx512f() || G >= (int64_t{1} << 31) || !std::isfinite(s.matches.back().first)) return false;
    const int64_t P = static_cast<int64_t>(s.matches.size());
    for (int64_t first = 0; first < P; first += kRegisterMatches)
      ranks_avx512_dispatch(row, G, s, first, std::min(kRegisterMatches, P - first),
                            std::make_integer_sequence<int, kRegisterMatches>{});
    return true;
  }
}
#else
template <class Acc>
bool avx512_ranks(const Acc*, int64_t, QueryScratch<Acc>&) {
  return false;
}
#endif

// rank[m] by a histogram of "how many matches does each entry precede" and prefix sums.
template <class Acc>
void ranks_by_histogram(const Acc* row, int64_t G, QueryScratch<Acc>& s) {
  const int64_t P = static_cast<int64_t>(s.matches.size());
  s.before.assign(P + 1, 0);
  const Acc lowest = s.matches.front().first;
  const Acc highest = s.matches.back().first;
  int64_t before_all = 0;  // entries strictly closer than every match: the common fast path
  for (int64_t j = 0; j < G; ++j) {
    const Acc x = row[j];
    if (x < lowest)
      ++before_all;
    else if (!(x > highest))  // in range (NaN rows were rejected before)
      ++s.before[matches_not_after(s.matches, x, j)];
  }
  s.before[0] += before_all;
  int64_t rank = 0;
  for (int64_t m = 0; m < P; ++m) {
    rank += s.before[m];
    s.rank[m] = rank;
  }
}

template <class T>
void rank_one_query(const RankMetricsParams& p, int64_t q, QueryScratch<acc_t<T>>& s,
                    std::atomic<bool>& saw_nan) {
  using Acc = acc_t<T>;
  const T* raw_row = static_cast<const T*>(p.distmat) + q * p.dist_row_stride;
  const int64_t G = p.num_gallery;
  const Acc* row;
  if constexpr (std::is_same_v<T, Acc>) {
    row = raw_row;
  } else {
    s.converted.resize(G);
    for (int64_t j = 0; j < G; ++j) s.converted[j] = to_acc(raw_row[j]);
    row = s.converted.data();
  }
  if (has_nan(row, G)) {
    saw_nan = true;
    return;
  }

  s.matches.clear();
  s.junk.clear();
  const int64_t query_cam = p.query_camids[q];
  for (int64_t m = p.match_begin[q]; m < p.match_end[q]; ++m) {
    const int64_t g = p.gallery_by_pid[m];
    if (p.remove_same_camera && p.gallery_camids[g] == query_cam)
      s.junk.push_back(g);
    else
      s.matches.emplace_back(row[g], g);
  }
  const int64_t P = static_cast<int64_t>(s.matches.size());
  p.num_matches[q] = P;
  if (P == 0) {
    p.first_match[q] = -1;
    p.average_precision[q] = std::numeric_limits<double>::quiet_NaN();
    p.inverse_negative_penalty[q] = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  std::sort(s.matches.begin(), s.matches.end());
  s.rank.resize(P);
  if (P > kDirectCountMaxMatches)
    ranks_by_histogram(row, G, s);
  else if (!avx512_ranks(row, G, s))
    ranks_by_counting(row, G, s);
  // Junk entries (same pid, same camera) were counted like any other entry: take them back out.
  for (const int64_t j : s.junk) {
    for (int64_t m = matches_not_after(s.matches, row[j], j); m < P; ++m) --s.rank[m];
  }

  double precision_sum = 0.0;
  for (int64_t m = 0; m < P; ++m)
    precision_sum += static_cast<double>(m + 1) / static_cast<double>(s.rank[m] + 1);
  p.first_match[q] = s.rank[0];
  p.average_precision[q] = precision_sum / static_cast<double>(P);
  p.inverse_negative_penalty[q] = static_cast<double>(P) / static_cast<double>(s.rank[P - 1] + 1);
}

}  // namespace

void rank_metrics_cpu(const RankMetricsParams& p) {
  TensorView dtype_holder;
  dtype_holder.dtype = p.dist_dtype;
  dtype_holder.name = "distmat";
  std::atomic<bool> saw_nan{false};
  dispatch_floating(dtype_holder, [&](auto tag) {
    using T = decltype(tag);
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
    {
      QueryScratch<acc_t<T>> scratch;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 16)
#endif
      for (int64_t q = 0; q < p.num_query; ++q) rank_one_query<T>(p, q, scratch, saw_nan);
    }
  });
  CION_CHECK(!saw_nan, "distmat contains NaN distances; rank metrics need a total order");
}

}  // namespace cion
