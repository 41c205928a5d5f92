// CPU ranking metrics: OpenMP over queries; each distance row is read from memory once.
//
// Per query, rank(m) = number of valid gallery entries ranked before match m. Three ways to get it:
//  * AVX-512, float32, up to 30 matches per pass (the usual ReID case): one read of the row packs
//    the entries at most the farthest match (only those can precede a match), then each packed
//    block of 16 is compared with every match's threshold, counting in register accumulators.
//    Work: G / 16 packing steps plus P / 16 compares per entry ranked before the last match; while
//    it compares, the thread fetches its next row, so the read and the compares overlap.
//  * few matches otherwise: for each match, count the entries with a smaller key in a branch-free
//    SIMD loop. The row stays in L2 across these passes: P * G compares at vector width.
//  * many matches: one pass in which each entry finds, by binary search, how many matches it
//    precedes (a histogram), then prefix sums. O(G log P).
// Keys are (distance, gallery index): equal distances keep gallery order (the stable tie rule).
// Measured against the floor (one read of the matrix): benchmarks/NOTES.md.
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
  std::vector<float> packed;                      // AVX-512 path: the entries that may precede a match
  // The distance row this thread most likely reads next (the next query of its chunk): the AVX-512
  // path fetches it into cache while it compares, so that memory keeps streaming.
  const char* next_row = nullptr;
  int64_t next_row_bytes = 0;
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
// Matches per register pass of the AVX-512 path: one zmm accumulator each (30 of the 32: the block
// and the constant one take the other two), the thresholds broadcast from memory (held in registers
// too, they spilled: 20 % slower). A query with more matches takes one more pass over its row
// (from cache): 24 left 8.6 % of the benchmark's Market-size queries (and more of MSMT17's) two passes.
constexpr int64_t kRegisterMatches = 30;

// Adds one block of entries (the `lanes` of x) to every match's counter: an entry precedes match k
// when it is below threshold[k]. Also notes NaN entries.
template <int N>
__attribute__((target("avx512f"), always_inline)) inline void count_block(__m512i (&acc)[N], const float (&threshold)[N],
                                                                          __m512 x, __mmask16 lanes, __mmask16& nan) {
  const __m512i one = _mm512_set1_epi32(1);
  nan |= _mm512_mask_cmp_ps_mask(lanes, x, x, _CMP_UNORD_Q);
#pragma GCC unroll kRegisterMatches  // the accumulators stay in registers only when unrolled
  for (int k = 0; k < N; ++k)
    acc[k] = _mm512_mask_add_epi32(acc[k], _mm512_mask_cmp_ps_mask(lanes, x, _mm512_set1_ps(threshold[k]), _CMP_LT_OQ),
                                   acc[k], one);
}

// Writes the entries of row[start, end) that may precede a match (x < filter, or NaN: to be
// reported) to packed[n ..), in order, and returns the new n. packed has 16 spare entries: each
// block stores 16 lanes, of which the first popcount(keep) count. The pack goes through a register
// and a plain store: a compressing store to memory is microcoded on Zen 4.
__attribute__((target("avx512f"))) inline int64_t pack_candidates(const float* row, int64_t start, int64_t end,
                                                                  __m512 filter, float* packed, int64_t n) {
  int64_t j = start;
  for (; j + 16 <= end; j += 16) {
    const __m512 x = _mm512_loadu_ps(row + j);
    const __mmask16 keep = _mm512_cmp_ps_mask(x, filter, _CMP_NGE_UQ);
    _mm512_storeu_ps(packed + n, _mm512_maskz_compress_ps(keep, x));
    n += __builtin_popcount(keep);
  }
  if (j < end) {
    const __mmask16 valid = static_cast<__mmask16>((1u << (end - j)) - 1u);
    const __m512 x = _mm512_maskz_loadu_ps(valid, row + j);
    const __mmask16 keep = _mm512_mask_cmp_ps_mask(valid, x, filter, _CMP_NGE_UQ);
    _mm512_storeu_ps(packed + n, _mm512_maskz_compress_ps(keep, x));
    n += __builtin_popcount(keep);
  }
  return n;
}

// rank[m] for matches [first, first + N) over the float32 row; false when the row holds a NaN.
// Entry j precedes match (d, g) when row[j] < d, or row[j] == d and j < g: so entries before g are
// compared with nextafter(d, +inf) (x <= d is x < nextup(d) for finite d) and entries from g on with
// d. The row is cut in segments at the matches' gallery indices (sorted), inside which every
// threshold is fixed.
//
// Two steps. Only entries at most the pass's farthest match distance can precede any of its
// matches: the first step packs those (and NaNs) of each segment, in one read of the row, one
// compare per 16 entries. The second compares each packed block with every threshold. The work is
// G / 16 packing steps plus P compares per 16 entries ranked before the last match: a third of the
// row in the benchmark's problem, a few per cent for a trained model whose matches lie near the
// front. N is a template parameter so that the accumulators and thresholds live in registers.
template <int N>
__attribute__((target("avx512f"))) bool ranks_avx512_pass(const float* row, int64_t G, QueryScratch<float>& s,
                                                          int64_t first) {
  float threshold[N];
  std::pair<int64_t, int> boundary[N];  // (gallery index, slot), sorted by index
  for (int k = 0; k < N; ++k) {
    const auto& match = s.matches[first + k];
    threshold[k] = std::nextafter(match.first, std::numeric_limits<float>::infinity());
    boundary[k] = {match.second, k};
  }
  std::sort(boundary, boundary + N);

  // Matches are sorted by distance: the last slot's nextup(d) is the largest threshold of the pass.
  const __m512 filter = _mm512_set1_ps(threshold[N - 1]);
  s.packed.resize(G + 16);
  float* packed = s.packed.data();
  int64_t segment_end[N + 1];  // packed[segment_end[b - 1], segment_end[b]) is segment b's
  int64_t num_packed = 0;
  for (int b = 0; b <= N; ++b) {
    num_packed = pack_candidates(row, b > 0 ? boundary[b - 1].first : 0, b < N ? boundary[b].first : G, filter,
                                 packed, num_packed);
    segment_end[b] = num_packed;
  }

  // The compares below touch no memory: the next row is fetched meanwhile, its lines spread over
  // the compare steps, the rest after them (without this the read and the compares took turns:
  // 30 % slower at Market).
  const int64_t compare_steps = num_packed / 16 + N + 1;
  const int64_t next_lines = s.next_row_bytes / 64;
  const int64_t lines_per_step = (next_lines + compare_steps - 1) / compare_steps;
  int64_t next_line = 0;
  const auto prefetch_next_row = [&](int64_t lines) {
    for (const int64_t stop = std::min(next_lines, next_line + lines); next_line < stop; ++next_line)
      __builtin_prefetch(s.next_row + next_line * 64);
  };
  __m512i acc[N];
  for (int k = 0; k < N; ++k) acc[k] = _mm512_setzero_si512();
  __mmask16 nan = 0;
  int64_t j = 0;
  for (int b = 0; b <= N; ++b) {
    for (; j + 16 <= segment_end[b]; j += 16) {
      prefetch_next_row(lines_per_step);
      count_block<N>(acc, threshold, _mm512_loadu_ps(packed + j), 0xFFFF, nan);
    }
    if (j < segment_end[b]) {
      prefetch_next_row(lines_per_step);
      const __mmask16 valid = static_cast<__mmask16>((1u << (segment_end[b] - j)) - 1u);
      count_block<N>(acc, threshold, _mm512_maskz_loadu_ps(valid, packed + j), valid, nan);
      j = segment_end[b];
    }
    if (b < N) threshold[boundary[b].second] = s.matches[first + boundary[b].second].first;
  }
  prefetch_next_row(next_lines);
  for (int k = 0; k < N; ++k) {
    alignas(64) int32_t lanes[16];
    _mm512_store_si512(lanes, acc[k]);
    int64_t total = 0;
    for (const int32_t lane : lanes) total += lane;
    s.rank[first + k] = total;
  }
  return nan == 0;
}

// One pass for `count` (1..kRegisterMatches) matches from `first`: the instantiation with that many
// registers. False when the row holds a NaN.
template <int... N>
bool ranks_avx512_dispatch(const float* row, int64_t G, QueryScratch<float>& s, int64_t first, int64_t count,
                           std::integer_sequence<int, N...>) {
  bool no_nan = true;
  ((count == N + 1 ? (no_nan = ranks_avx512_pass<N + 1>(row, G, s, first), true) : false) || ...);
  return no_nan;
}

// Whether the AVX-512 path applies: float32 rows, a processor with AVX-512F, rows short enough for
// 32-bit lane counters, finite thresholds (x <= inf is not x < nextup(inf)). When it does, it also
// reports whether the row holds a NaN (the first pass reads every entry).
template <class Acc>
bool avx512_ranks(const Acc* row, int64_t G, QueryScratch<Acc>& s, bool& row_has_nan) {
  if constexpr (!std::is_same_v<Acc, float>) {
    return false;
  } else {
    if (!cpu_has_avx512f() || G >= (int64_t{1} << 31) || !std::isfinite(s.matches.back().first)) return false;
    const int64_t P = static_cast<int64_t>(s.matches.size());
    row_has_nan = false;
    for (int64_t first = 0; first < P && !row_has_nan; first += kRegisterMatches)
      row_has_nan = !ranks_avx512_dispatch(row, G, s, first, std::min(kRegisterMatches, P - first),
                                           std::make_integer_sequence<int, kRegisterMatches>{});
    return true;
  }
}
#else
template <class Acc>
bool avx512_ranks(const Acc*, int64_t, QueryScratch<Acc>&, bool&) {
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

// rank[m] of every sorted match (the path by count and processor); false when the row holds a NaN.
template <class Acc>
bool rank_matches(const Acc* row, int64_t G, QueryScratch<Acc>& s) {
  const int64_t P = static_cast<int64_t>(s.matches.size());
  s.rank.resize(P);
  bool row_has_nan = false;
  if (P <= kDirectCountMaxMatches && avx512_ranks(row, G, s, row_has_nan)) return !row_has_nan;
  if (has_nan(row, G)) return false;
  if (P > kDirectCountMaxMatches)
    ranks_by_histogram(row, G, s);
  else
    ranks_by_counting(row, G, s);
  return true;
}

// Asks for the distances of query q's matches ahead of time: they are read first, scattered over
// the row, before the row is streamed in; fetched on demand, their cache misses were half the time
// of a query at Market-1501 size.
template <class T>
void prefetch_match_distances(const RankMetricsParams& p, int64_t q) {
  if (q >= p.num_query) return;
  const T* row = static_cast<const T*>(p.distmat) + q * p.dist_row_stride;
  for (int64_t m = p.match_begin[q]; m < p.match_end[q]; ++m) __builtin_prefetch(row + p.gallery_by_pid[m]);
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

  s.matches.clear();
  s.junk.clear();
  const int64_t query_cam = p.query_camids[q];
  bool match_is_nan = false;  // checked before sorting: NaN keys break the sort's ordering
  for (int64_t m = p.match_begin[q]; m < p.match_end[q]; ++m) {
    const int64_t g = p.gallery_by_pid[m];
    if (p.remove_same_camera && p.gallery_camids[g] == query_cam) {
      s.junk.push_back(g);
    } else {
      s.matches.emplace_back(row[g], g);
      match_is_nan |= row[g] != row[g];
    }
  }
  const int64_t P = static_cast<int64_t>(s.matches.size());
  p.num_matches[q] = P;
  if (match_is_nan || (P == 0 && has_nan(row, G))) {
    saw_nan = true;
    return;
  }
  if (P == 0) {
    p.first_match[q] = -1;
    p.average_precision[q] = std::numeric_limits<double>::quiet_NaN();
    p.inverse_negative_penalty[q] = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  std::sort(s.matches.begin(), s.matches.end());
  const bool has_next = q + 1 < p.num_query;
  s.next_row = has_next ? reinterpret_cast<const char*>(raw_row + p.dist_row_stride) : nullptr;
  s.next_row_bytes = has_next ? G * static_cast<int64_t>(sizeof(T)) : 0;
  if (!rank_matches(row, G, s)) {
    saw_nan = true;
    return;
  }
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
      for (int64_t q = 0; q < p.num_query; ++q) {
        prefetch_match_distances<T>(p, q + 1);  // the next query of this thread's chunk, mostly
        rank_one_query<T>(p, q, scratch, saw_nan);
      }
    }
  });
  CION_CHECK(!saw_nan, "distmat contains NaN distances; rank metrics need a total order");
}

}  // namespace cion
