// CPU ranking metrics: OpenMP over queries, one read of each distance row.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "common/dispatch.h"
#include "common/parallel.h"
#include "ops/rank_metrics.h"

namespace cion {
namespace {

// Per-thread buffers, reused across queries.
template <class Acc>
struct QueryScratch {
  std::vector<std::pair<Acc, int64_t>> matches;  // (distance, gallery index), sorted
  std::vector<int64_t> junk;                      // same pid and same camera: not ranked
  std::vector<int64_t> before;                    // before[t]: valid entries preceding exactly t matches
};

// Number of sorted matches whose (distance, index) key is <= (x, j): the entry (x, j) ranks before
// matches t, t+1, ... (equal distances keep gallery order: the stable tie rule).
template <class Acc>
inline int64_t matches_not_after(const std::vector<std::pair<Acc, int64_t>>& matches, Acc x, int64_t j) {
  auto it = std::upper_bound(matches.begin(), matches.end(), std::make_pair(x, j));
  return it - matches.begin();
}

template <class T>
void rank_one_query(const RankMetricsParams& p, int64_t q, QueryScratch<acc_t<T>>& s,
                    std::atomic<bool>& saw_nan) {
  using Acc = acc_t<T>;
  const T* row = static_cast<const T*>(p.distmat) + q * p.dist_row_stride;
  const int64_t G = p.num_gallery;

  s.matches.clear();
  s.junk.clear();
  const int64_t query_cam = p.query_camids[q];
  for (int64_t m = p.match_begin[q]; m < p.match_end[q]; ++m) {
    const int64_t g = p.gallery_by_pid[m];
    if (p.remove_same_camera && p.gallery_camids[g] == query_cam)
      s.junk.push_back(g);
    else
      s.matches.emplace_back(static_cast<Acc>(to_acc(row[g])), g);
  }
  const int64_t P = static_cast<int64_t>(s.matches.size());
  p.num_matches[q] = P;
  if (P == 0) {
    bool nan = false;
    for (int64_t j = 0; j < G; ++j) {
      const Acc x = to_acc(row[j]);
      nan |= (x != x);
    }
    if (nan) saw_nan = true;
    p.first_match[q] = -1;
    p.average_precision[q] = std::numeric_limits<double>::quiet_NaN();
    p.inverse_negative_penalty[q] = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  for (const auto& match : s.matches) {
    if (match.first != match.first) {  // NaN would break the sort's ordering: stop here
      saw_nan = true;
      return;
    }
  }
  std::sort(s.matches.begin(), s.matches.end());

  s.before.assign(P + 1, 0);
  const Acc lowest = s.matches.front().first;
  const Acc highest = s.matches.back().first;
  int64_t before_all = 0;  // entries strictly closer than every match: the common fast path
  bool nan = false;
  for (int64_t j = 0; j < G; ++j) {
    const Acc x = to_acc(row[j]);
    if (x < lowest) {
      ++before_all;
    } else if (x > highest) {
      // after every match: ranks before none of them
    } else if (x != x) {
      nan = true;
    } else {
      ++s.before[matches_not_after(s.matches, x, j)];
    }
  }
  s.before[0] += before_all;
  for (const int64_t j : s.junk) {
    const Acc x = to_acc(row[j]);
    --s.before[matches_not_after(s.matches, x, j)];
  }
  if (nan) saw_nan = true;

  // rank of match m (0-based position in the ranked list without junk) = sum of before[0..m].
  int64_t rank = 0;
  double precision_sum = 0.0;
  for (int64_t m = 0; m < P; ++m) {
    rank += s.before[m];
    if (m == 0) p.first_match[q] = rank;
    precision_sum += static_cast<double>(m + 1) / static_cast<double>(rank + 1);
  }
  p.average_precision[q] = precision_sum / static_cast<double>(P);
  p.inverse_negative_penalty[q] = static_cast<double>(P) / static_cast<double>(rank + 1);
}

}  // namespace

void rank_metrics_cpu(const RankMetricsParams& p) {
  TensorView dtype_holder;
  dtype_holder.dtype = p.dist_dtype;
  dtype_holder.name = "distmat";
  std::atomic<bool> saw_nan{false};
  dispatch_floating(dtype_holder, [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
    {
      QueryScratch<Acc> scratch;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 16)
#endif
      for (int64_t q = 0; q < p.num_query; ++q) rank_one_query<T>(p, q, scratch, saw_nan);
    }
  });
  CION_CHECK(!saw_nan, "distmat contains NaN distances; rank metrics need a total order");
}

}  // namespace cion
