// CPU sliding-range linking and connected components.
//
// Linking: OpenMP over work items (kRowsPerItem rows of one range, dynamic schedule: ranges differ
// in size). An item computes its rows' similarity strip against the range in blocks of kColChunk
// columns with dot_block, so the working memory is O(threads * kRowsPerItem * kColChunk) plus the
// links found, whatever the number of identities. Each item keeps its links in its own buffer; one
// pass finds them, and a copy in item order lays them out once the output is allocated. With
// mutual_k, small ranges first compute their thresholds over each pair once (the symmetric pass)
// and keep the candidate pairs it saw, which the link step then filters (kCandidateBudgetBytes).
//
// Components: sequential union-find (path halving, union by rank) over the link list: O(L alpha),
// a small cost next to the similarity passes that produce the links in parallel.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "cpu/dot_block.h"
#include "cpu/top_k.h"
#include "ops/sliding_range_link.h"

namespace cion {
namespace {

constexpr int64_t kColChunk = 256;
constexpr int64_t kSymmetricRows = 2048;  // ranges up to this size get their thresholds in one task
// With mutual_k, the threshold pass keeps each small range's candidate pairs (cosine at least the
// threshold) so that the link pass filters them instead of computing every similarity again. Past
// this many bytes of kept candidates (a low threshold makes nearly every pair one), the remaining
// ranges drop theirs and their links are found by the second pass as before.
constexpr int64_t kCandidateBudgetBytes = int64_t{512} << 20;

template <class T>
struct Candidate {
  int64_t i, j;  // i < j, different videos, both in the range
  T sim;
};

template <class T>
struct Linker {
  const SlidingRangeLinkParams& p;
  RangeGeometry g;
  const T* x;
  const T* inv;
  T* kth;

  explicit Linker(const SlidingRangeLinkParams& params)
      : p(params),
        g{params.window, params.stride, params.num_videos},
        x(static_cast<const T*>(params.features)),
        inv(static_cast<const T*>(params.inv_norm)),
        kth(static_cast<T*>(params.kth)) {}

  int64_t range_begin(int64_t r) const { return p.video_start[g.first_rank(r)]; }
  int64_t range_end(int64_t r) const { return p.video_start[g.end_rank(r)]; }
  int64_t entry(int64_t r, int64_t i) const { return p.entry_offsets[r] + i - range_begin(r); }

  // The range of an item and its first row.
  void locate(int64_t item, int64_t* range, int64_t* row) const {
    const int64_t* end = p.item_offsets + p.num_ranges + 1;
    *range = (std::upper_bound(p.item_offsets, end, item) - p.item_offsets) - 1;
    *row = range_begin(*range) + (item - p.item_offsets[*range]) * kRowsPerItem;
  }

  // cos(f_i, f_j) for the rows [i0, i1) x [j0, j1), into block (row-major, leading dim j1 - j0).
  void similarities(int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* block) const {
    const int64_t nj = j1 - j0;
    dot_block(x + i0 * p.dim, p.dim, i1 - i0, x + j0 * p.dim, p.dim, nj, p.dim, block, nj);
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) block[(i - i0) * nj + (j - j0)] *= inv[i] * inv[j];
  }

  bool mutual_in(int64_t r, int64_t i, int64_t j, T sim) const {
    return sim >= kth[entry(r, i)] && sim >= kth[entry(r, j)];
  }

  // Does range r emit the candidate pair (i < j, different videos, both in r)?
  bool emits(int64_t r, int64_t i, int64_t j, T sim) const {
    if (!(static_cast<double>(sim) >= p.threshold)) return false;
    if (p.mutual_k == 0) return true;  // the caller only visits pairs new to range r
    if (!mutual_in(r, i, j, sim)) return false;
    for (int64_t earlier = g.first_range_of_rank(p.video_rank[j]); earlier < r; ++earlier)
      if (mutual_in(earlier, i, j, sim)) return false;  // emitted by that range already
    return true;
  }

  // Only similarities reaching the threshold can make links, so only those enter the top-k
  // buffers: with at least mutual_k of them the k-th largest is the threshold that matters, with
  // fewer the true one is below the link threshold and -inf is equivalent.
  bool offer(T sim) const { return static_cast<double>(sim) >= p.threshold; }
  void store_threshold(int64_t r, int64_t i, TopK<T>& top) const {
    kth[entry(r, i)] = top.size() >= p.mutual_k ? top.kth_largest() : -std::numeric_limits<T>::infinity();
  }

  // kth[e(r, i)] for every row of range r, one task: each unordered pair is computed once (upper
  // triangle, in strips of kRowsPerItem rows) and offered to both rows. For ranges of at most
  // kSymmetricRows rows (per-task memory: one top-k buffer per row).
  // Every pair offered to the top-k buffers is also appended to `candidates` when given.
  void range_thresholds(int64_t r, std::vector<T>& block, std::vector<TopK<T>>& top,
                        std::vector<Candidate<T>>* candidates) const {
    const int64_t b = range_begin(r), e = range_end(r);
    if (static_cast<int64_t>(top.size()) < e - b) top.resize(e - b);
    for (int64_t i = b; i < e; ++i) top[i - b].reset(p.mutual_k);
    for (int64_t i0 = b; i0 < e; i0 += kRowsPerItem) {
      const int64_t i1 = std::min(i0 + kRowsPerItem, e);
      for (int64_t j0 = i0; j0 < e; j0 += kColChunk) {
        const int64_t j1 = std::min(j0 + kColChunk, e);
        similarities(i0, i1, j0, j1, block.data());
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t video = p.video_rank[i];
          for (int64_t j = std::max(j0, i + 1); j < j1; ++j) {
            const T sim = block[(i - i0) * (j1 - j0) + (j - j0)];
            if (p.video_rank[j] == video || !offer(sim)) continue;
            top[i - b].push(sim);
            top[j - b].push(sim);
            if (candidates) candidates->push_back({i, j, sim});
          }
        }
      }
    }
    for (int64_t i = b; i < e; ++i) store_threshold(r, i, top[i - b]);
  }

  // kth[e(r, i)] for one item's rows (ranges too large for range_thresholds): the full strip of the
  // rows against the range.
  void item_thresholds(int64_t item, std::vector<T>& block, std::vector<TopK<T>>& top) const {
    int64_t r, i0;
    locate(item, &r, &i0);
    const int64_t b = range_begin(r), e = range_end(r);
    const int64_t i1 = std::min(i0 + kRowsPerItem, e);
    if (static_cast<int64_t>(top.size()) < kRowsPerItem) top.resize(kRowsPerItem);
    for (int64_t i = i0; i < i1; ++i) top[i - i0].reset(p.mutual_k);
    for (int64_t j0 = b; j0 < e; j0 += kColChunk) {
      const int64_t j1 = std::min(j0 + kColChunk, e);
      similarities(i0, i1, j0, j1, block.data());
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t video = p.video_rank[i];
        for (int64_t j = j0; j < j1; ++j) {
          const T sim = block[(i - i0) * (j1 - j0) + (j - j0)];
          if (p.video_rank[j] != video && offer(sim)) top[i - i0].push(sim);
        }
      }
    }
    for (int64_t i = i0; i < i1; ++i) store_threshold(r, i, top[i - i0]);
  }

  // The links range r emits, from its kept candidates, into found[item] of each of its items in
  // (i, j) order: the layout links() gives, without a second similarity pass.
  void links_from_candidates(int64_t r, std::vector<Candidate<T>>& candidates,
                             std::vector<std::vector<int64_t>>& found) const {
    std::sort(candidates.begin(), candidates.end(),
              [](const Candidate<T>& a, const Candidate<T>& b) { return a.i != b.i ? a.i < b.i : a.j < b.j; });
    const int64_t b = range_begin(r);
    for (int64_t item = p.item_offsets[r]; item < p.item_offsets[r + 1]; ++item) found[item].clear();
    for (const Candidate<T>& c : candidates) {
      if (!emits(r, c.i, c.j, c.sim)) continue;
      std::vector<int64_t>& out = found[p.item_offsets[r] + (c.i - b) / kRowsPerItem];
      out.push_back(c.i);
      out.push_back(c.j);
    }
  }

  // Appends the links the item's rows emit to `out`, in (i, j) order (`rows` is per-row scratch).
  void links(int64_t item, std::vector<T>& block, std::vector<int64_t> (&rows)[kRowsPerItem],
             std::vector<int64_t>& out) const {
    int64_t r, i0;
    locate(item, &r, &i0);
    const int64_t e = range_end(r);
    const int64_t i1 = std::min(i0 + kRowsPerItem, e);
    // Without mutual_k only pairs with j beyond the previous range are new to this one.
    const int64_t lowest = (p.mutual_k == 0 && r > 0) ? range_end(r - 1) : range_begin(r);
    auto first_candidate = [&](int64_t i) { return std::max(lowest, p.video_start[p.video_rank[i] + 1]); };
    for (int64_t i = i0; i < i1; ++i) rows[i - i0].clear();
    for (int64_t j0 = first_candidate(i0); j0 < e; j0 += kColChunk) {
      const int64_t j1 = std::min(j0 + kColChunk, e);
      similarities(i0, i1, j0, j1, block.data());
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = std::max(j0, first_candidate(i)); j < j1; ++j) {
          if (emits(r, i, j, block[(i - i0) * (j1 - j0) + (j - j0)])) {
            rows[i - i0].push_back(i);
            rows[i - i0].push_back(j);
          }
        }
      }
    }
    out.clear();
    for (int64_t i = i0; i < i1; ++i) out.insert(out.end(), rows[i - i0].begin(), rows[i - i0].end());
  }
};

template <class T>
void run(const SlidingRangeLinkParams& p, const LinkSink& sink) {
  CION_CHECK(row_inverse_norms(static_cast<const T*>(p.features), p.num_identities, p.dim, static_cast<T*>(p.inv_norm)),
             "features contains NaN or inf values");
  const Linker<T> linker(p);
  std::vector<std::vector<int64_t>> found(p.num_items);  // each item's links, (i, j) interleaved
  // Small ranges' candidate pairs, kept from the threshold pass (empty and not `kept` otherwise).
  std::vector<std::vector<Candidate<T>>> candidates(p.mutual_k > 0 ? p.num_ranges : 0);
  std::vector<uint8_t> kept(candidates.size(), 0);
  std::atomic<int64_t> kept_bytes{0};
  auto small = [&](int64_t r) { return linker.range_end(r) - linker.range_begin(r) <= kSymmetricRows; };
  auto range_of = [&](int64_t item) {
    int64_t r, row;
    linker.locate(item, &r, &row);
    return r;
  };
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<T> block(kRowsPerItem * kColChunk);
    if (p.mutual_k > 0) {
      std::vector<TopK<T>> top;
      // Small ranges one task each (each pair computed once); large ones split into items.
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1) nowait
#endif
      for (int64_t r = 0; r < p.num_ranges; ++r) {
        if (!small(r)) continue;
        linker.range_thresholds(r, block, top, &candidates[r]);
        const int64_t bytes = static_cast<int64_t>(candidates[r].size() * sizeof(Candidate<T>));
        if (kept_bytes.fetch_add(bytes) + bytes <= kCandidateBudgetBytes) {
          kept[r] = 1;
        } else {
          kept_bytes.fetch_sub(bytes);
          std::vector<Candidate<T>>().swap(candidates[r]);
        }
      }
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t item = 0; item < p.num_items; ++item) {
        int64_t r, row;
        linker.locate(item, &r, &row);
        if (!small(r)) linker.item_thresholds(item, block, top);
      }
    }  // the loop's implicit barrier: every threshold is written before any is read below
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1) nowait
#endif
    for (int64_t r = 0; r < static_cast<int64_t>(candidates.size()); ++r)
      if (kept[r]) linker.links_from_candidates(r, candidates[r], found);
    std::vector<int64_t> rows[kRowsPerItem];
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t item = 0; item < p.num_items; ++item)
      if (candidates.empty() || !kept[range_of(item)]) linker.links(item, block, rows, found[item]);
  }
  std::vector<int64_t> start(p.num_items + 1, 0);
  for (int64_t item = 0; item < p.num_items; ++item)
    start[item + 1] = start[item] + static_cast<int64_t>(found[item].size());
  int64_t* out = sink.allocate(sink.context, start[p.num_items] / 2);
  parallel_for(p.num_items, 64,
               [&](int64_t item) { std::copy(found[item].begin(), found[item].end(), out + start[item]); });
}

int64_t find_root(std::vector<int64_t>& parent, int64_t v) {
  while (parent[v] != v) {
    parent[v] = parent[parent[v]];  // path halving
    v = parent[v];
  }
  return v;
}

}  // namespace

void sliding_range_link_cpu(const SlidingRangeLinkParams& p, const LinkSink& sink) {
  if (p.dtype == DType::kFloat64)
    run<double>(p, sink);
  else
    run<float>(p, sink);
}

void connected_components_cpu(const ConnectedComponentsParams& p) {
  const int64_t n = p.num_nodes;
  std::vector<int64_t> parent(n);
  std::vector<uint8_t> rank(n, 0);
  for (int64_t v = 0; v < n; ++v) parent[v] = v;
  for (int64_t e = 0; e < p.num_edges; ++e) {
    int64_t a = find_root(parent, p.edges[2 * e]);
    int64_t b = find_root(parent, p.edges[2 * e + 1]);
    if (a == b) continue;
    if (rank[a] < rank[b]) std::swap(a, b);
    parent[b] = a;
    if (rank[a] == rank[b]) ++rank[a];
  }
  // Number the components in the order of their first (= smallest) node.
  std::vector<int64_t> number(n, -1);
  int64_t next = 0;
  for (int64_t v = 0; v < n; ++v) {
    const int64_t root = find_root(parent, v);
    if (number[root] < 0) number[root] = next++;
    p.labels[v] = number[root];
  }
}

}  // namespace cion
