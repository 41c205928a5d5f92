// CPU sliding-range linking and connected components.
//
// Linking: OpenMP over work items (kRowsPerItem rows of one range, dynamic schedule: ranges differ
// in size). An item computes its rows' similarity strip against the range in blocks of kColChunk
// columns with dot_block, so the working memory is O(threads * kRowsPerItem * kColChunk) plus the
// links found, whatever the number of identities. Only cosines reaching the threshold can link or
// enter a top-k buffer: a strip's rows are made cosines and screened 16 at a time (cosine.h), and
// only the few that pass are looked at one by one. Each item keeps its links in its own buffer; one
// pass finds them, and a copy in item order lays them out once the output is allocated. With
// mutual_k, small ranges first collect the candidate pairs new to each of them (every distinct pair
// computed once, although a pair lies in about window / stride ranges), assemble each range's list
// from those, take its thresholds from it and filter it into links (kCandidateBudgetBytes). Where
// no range's new rows pass kSymmetricRows, the rows' norms are taken in that first pass, range by
// range (NormsInFirstPass); otherwise in a pass of their own before it (rows_for_cosine).
//
// Components: sequential union-find (path halving, the larger root under the smaller) over the link
// list, a small cost next to the similarity passes that produce the links in parallel.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "common/parallel.h"
#include "cpu/cosine.h"
#include "cpu/dot_block.h"
#include "cpu/top_k.h"
#include "ops/sliding_range_link.h"

namespace cion {
namespace {

constexpr int64_t kColChunk = 256;
// Ranges up to this many rows keep candidate lists (one task each); the norms are taken in the first
// pass where no range has more new rows than this (NormsInFirstPass::worthwhile).
constexpr int64_t kSymmetricRows = 2048;
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
bool in_pair_order(const Candidate<T>& a, const Candidate<T>& b) {
  return a.i != b.i ? a.i < b.i : a.j < b.j;
}

// Puts a list of candidates in (i, j) order. passing_pairs gives them in that order already where
// each strip's columns fit in one block of kColChunk (nearly always): then this is one check.
template <class T>
void into_pair_order(std::vector<Candidate<T>>& list) {
  if (!std::is_sorted(list.begin(), list.end(), in_pair_order<T>))
    std::sort(list.begin(), list.end(), in_pair_order<T>);
}

// A thread's working memory: one strip of dot products, the positions of its entries that pass.
template <class T>
struct Scratch {
  std::vector<T> block = std::vector<T>(kRowsPerItem * kColChunk);
  std::vector<int32_t> passing = std::vector<int32_t>(kColChunk + 16);
};

template <class T>
struct Linker {
  const SlidingRangeLinkParams& p;
  RangeGeometry g;
  const T* x;
  const T* inv;
  T* kth;
  T at_least;  // a cosine passes the threshold when at least this (cosine.h)

  explicit Linker(const SlidingRangeLinkParams& params)
      : p(params),
        g{params.window, params.stride, params.num_videos},
        x(static_cast<const T*>(params.features)),
        inv(static_cast<const T*>(params.inv_norm)),
        kth(static_cast<T*>(params.kth)),
        at_least(at_least_in<T>(params.threshold)) {}

  int64_t range_begin(int64_t r) const { return p.video_start[g.first_rank(r)]; }
  int64_t range_end(int64_t r) const { return p.video_start[g.end_rank(r)]; }
  int64_t entry(int64_t r, int64_t i) const { return p.entry_offsets[r] + i - range_begin(r); }

  // The range of an item and its first row.
  void locate(int64_t item, int64_t* range, int64_t* row) const {
    const int64_t* end = p.item_offsets + p.num_ranges + 1;
    *range = (std::upper_bound(p.item_offsets, end, item) - p.item_offsets) - 1;
    *row = range_begin(*range) + (item - p.item_offsets[*range]) * kRowsPerItem;
  }

  // visit(i, j, sim) for the pairs of rows [i0, i1) x columns [first(i), e) whose cosine reaches
  // the threshold (only those can make links or enter a top-k buffer), in (i, j) order; first(i)
  // is non-decreasing in i. Rows sharing their first candidate (at most kRowsPerItem) form a strip
  // whose columns start there, so no pair before a row's first candidate is computed and dropped
  // (strips of a fixed 32 rows computed 14-22 % more pairs than the candidates at 100k identities).
  // A strip's dot products come in blocks of kColChunk columns; a row's cosines are taken and
  // screened 16 at a time.
  template <class First, class Visit>
  void passing_pairs(int64_t i0, int64_t i1, int64_t e, First first, Scratch<T>& s, Visit visit) const {
    for (int64_t s0 = i0, s1; s0 < i1; s0 = s1) {
      const int64_t start = first(s0), last = std::min(i1, s0 + kRowsPerItem);
      for (s1 = s0 + 1; s1 < last && first(s1) == start; ++s1) {
      }
      for (int64_t j0 = start; j0 < e; j0 += kColChunk) {
        const int64_t nj = std::min(kColChunk, e - j0);
        dot_block(x + s0 * p.dim, p.dim, s1 - s0, x + j0 * p.dim, p.dim, nj, p.dim, s.block.data(), nj);
        for (int64_t i = s0; i < s1; ++i) {
          T* cosines = s.block.data() + (i - s0) * nj;
          const int64_t count = cosines_at_least(cosines, nj, inv[i], inv + j0, at_least, s.passing.data());
          for (int64_t c = 0; c < count; ++c) visit(i, j0 + s.passing[c], cosines[s.passing[c]]);
        }
      }
    }
  }

  bool mutual_in(int64_t r, int64_t i, int64_t j, T sim) const {
    return sim >= kth[entry(r, i)] && sim >= kth[entry(r, j)];
  }

  // Does range r emit the candidate pair (i < j, different videos, both in r)?
  bool emits(int64_t r, int64_t i, int64_t j, T sim) const {
    if (!(sim >= at_least)) return false;
    if (p.mutual_k == 0) return true;  // the caller only visits pairs new to range r
    if (!mutual_in(r, i, j, sim)) return false;
    for (int64_t earlier = g.first_range_of_rank(p.video_rank[j]); earlier < r; ++earlier)
      if (mutual_in(earlier, i, j, sim)) return false;  // emitted by that range already
    return true;
  }

  // Only similarities reaching the threshold can make links, so only those enter the top-k
  // buffers (passing_pairs gives no others): with at least mutual_k of them the k-th largest is the
  // threshold that matters, with fewer the true one is below the link threshold and -inf is
  // equivalent.
  void store_threshold(int64_t r, int64_t i, TopK<T>& top) const {
    kth[entry(r, i)] = top.size() >= p.mutual_k ? top.kth_largest() : -std::numeric_limits<T>::infinity();
  }

  // The first row of range r whose pairs are new to it: its later row's video lies past range
  // r - 1, so the pair is in no earlier range (each distinct pair is new to exactly one range).
  int64_t first_new_row(int64_t r) const { return r > 0 ? std::max(range_begin(r), range_end(r - 1)) : range_begin(r); }

  // The first row of the video after row i's: pairs of i with any earlier row are not candidates.
  int64_t next_video_row(int64_t i) const { return p.video_start[p.video_rank[i] + 1]; }

  // Appends to `out` range r's candidate pairs (i < j, different videos, cosine at least the
  // threshold: the only ones that reach a top-k buffer or link) with j >= lowest, computed in
  // strips of rows that share their first candidate (`lowest`, or their next video's first row).
  void collect_candidates(int64_t r, int64_t lowest, Scratch<T>& s, std::vector<Candidate<T>>& out) const {
    auto first = [&](int64_t i) { return std::max(lowest, next_video_row(i)); };  // later videos only: j > i
    passing_pairs(range_begin(r), range_end(r), range_end(r), first, s,
                  [&](int64_t i, int64_t j, T sim) { out.push_back({i, j, sim}); });
  }

  // The ranges whose new pairs can lie in range r: those that hold r's first video, and r.
  int64_t first_source(int64_t r) const { return g.first_range_of_rank(g.first_rank(r)); }

  // Range r's candidates, in (i, j) order, from the new pairs of its sources (`fresh`, per range,
  // each in (i, j) order), when every source kept them: the pairs of a source lying in r are those
  // whose earlier row is in r too. Each source's share is merged in.
  bool assemble_candidates(int64_t r, const std::vector<std::vector<Candidate<T>>>& fresh,
                           const std::vector<uint8_t>& fresh_kept, std::vector<Candidate<T>>& out) const {
    for (int64_t source = first_source(r); source <= r; ++source)
      if (!fresh_kept[source]) return false;
    const int64_t b = range_begin(r);
    auto in_r = [b](const Candidate<T>& c) { return c.i >= b; };
    size_t count = 0;  // reserved exactly: kCandidateBudgetBytes counts sizes, not capacities
    for (int64_t source = first_source(r); source <= r; ++source)
      count += static_cast<size_t>(std::count_if(fresh[source].begin(), fresh[source].end(), in_r));
    out.reserve(count);
    for (int64_t source = first_source(r); source <= r; ++source) {
      const auto merged = static_cast<std::ptrdiff_t>(out.size());
      std::copy_if(fresh[source].begin(), fresh[source].end(), std::back_inserter(out), in_r);
      std::inplace_merge(out.begin(), out.begin() + merged, out.end(), in_pair_order<T>);
    }
    return true;
  }

  // kth[e(r, i)] for every row of range r from all its candidate pairs, each offered to both rows.
  void thresholds_from(int64_t r, const std::vector<Candidate<T>>& candidates, std::vector<TopK<T>>& top) const {
    const int64_t b = range_begin(r), e = range_end(r);
    if (static_cast<int64_t>(top.size()) < e - b) top.resize(e - b);
    for (int64_t i = b; i < e; ++i) top[i - b].reset(p.mutual_k);
    for (const Candidate<T>& c : candidates) {
      top[c.i - b].push(c.sim);
      top[c.j - b].push(c.sim);
    }
    for (int64_t i = b; i < e; ++i) store_threshold(r, i, top[i - b]);
  }

  // kth[e(r, i)] for one item's rows (ranges too large for a candidate list): the full strip of the
  // rows against the range.
  void item_thresholds(int64_t item, Scratch<T>& s, std::vector<TopK<T>>& top) const {
    int64_t r, i0;
    locate(item, &r, &i0);
    const int64_t b = range_begin(r), e = range_end(r);
    const int64_t i1 = std::min(i0 + kRowsPerItem, e);
    if (static_cast<int64_t>(top.size()) < kRowsPerItem) top.resize(kRowsPerItem);
    for (int64_t i = i0; i < i1; ++i) top[i - i0].reset(p.mutual_k);
    const int64_t* video = p.video_rank;
    passing_pairs(i0, i1, e, [b](int64_t) { return b; }, s, [&](int64_t i, int64_t j, T sim) {
      if (video[j] != video[i]) top[i - i0].push(sim);
    });
    for (int64_t i = i0; i < i1; ++i) store_threshold(r, i, top[i - i0]);
  }

  // The links range r emits, from its kept candidates (in (i, j) order), in that order: the layout
  // links() gives its items, all in found[] of the range's first item (the others left empty: the
  // output lays the items out in order), without a second similarity pass. One allocation per
  // range (a vector per item grown link by link made tens of thousands at 100k identities).
  void links_from_candidates(int64_t r, std::vector<Candidate<T>>& candidates,
                             std::vector<std::vector<int64_t>>& found) const {
    if (p.item_offsets[r] == p.item_offsets[r + 1]) return;  // no rows (not from _Ranges)
    for (int64_t item = p.item_offsets[r]; item < p.item_offsets[r + 1]; ++item) found[item].clear();
    std::vector<int64_t>& out = found[p.item_offsets[r]];
    out.reserve(candidates.size());  // room for half as many links as candidates (most ranges)
    for (const Candidate<T>& c : candidates) {
      if (!emits(r, c.i, c.j, c.sim)) continue;
      out.push_back(c.i);
      out.push_back(c.j);
    }
  }

  // Appends the links the item's rows emit to `out`, in (i, j) order (`rows` is per-row scratch).
  void links(int64_t item, Scratch<T>& s, std::vector<int64_t> (&rows)[kRowsPerItem],
             std::vector<int64_t>& out) const {
    int64_t r, i0;
    locate(item, &r, &i0);
    const int64_t e = range_end(r);
    const int64_t i1 = std::min(i0 + kRowsPerItem, e);
    // Without mutual_k only pairs with j beyond the previous range are new to this one.
    const int64_t lowest = (p.mutual_k == 0 && r > 0) ? range_end(r - 1) : range_begin(r);
    auto first_candidate = [&](int64_t i) { return std::max(lowest, next_video_row(i)); };
    for (int64_t i = i0; i < i1; ++i) rows[i - i0].clear();
    passing_pairs(i0, i1, e, first_candidate, s, [&](int64_t i, int64_t j, T sim) {
      if (emits(r, i, j, sim)) {
        rows[i - i0].push_back(i);
        rows[i - i0].push_back(j);
      }
    });
    out.clear();
    for (int64_t i = i0; i < i1; ++i) out.insert(out.end(), rows[i - i0].begin(), rows[i - i0].end());
  }
};

// The rows' inverse norms taken range by range in the first pass (mutual_k only), each range's share
// just before its strips read those rows again: they then come from memory once, not twice (a
// separate norm pass read all the features first). Range r's share is [end of range r - 1, end of
// range r) (from row 0 for the first range): the shares cover every row once, and as ranges skip
// no video, a share is its range's new rows. Its strips also read rows of earlier ranges' shares,
// and wait for those. Ranges are handed out in order and a share is taken before any wait, so
// every wait ends. Where a row calls for the rescaled copy (rows_for_cosine), the pass gives up
// and the caller starts again with that copy.
template <class T>
class NormsInFirstPass {
 public:
  NormsInFirstPass(const SlidingRangeLinkParams& p, const Linker<T>& linker)
      : p_(p), linker_(linker), ready_(new std::atomic<uint8_t>[static_cast<size_t>(p.num_ranges)]()) {}

  // Whether sharing the norms out this way keeps the threads busy: no share over kSymmetricRows
  // (a range of one huge video would take all the norms on one thread).
  static bool worthwhile(const SlidingRangeLinkParams& p, const Linker<T>& linker) {
    if (p.mutual_k == 0 || p.num_ranges == 0) return false;
    for (int64_t r = 0; r < p.num_ranges; ++r)
      if (share_end(p, linker, r) - share_begin(linker, r) > kSymmetricRows) return false;
    return true;
  }

  // Takes range r's share, then waits for the shares of the earlier ranges holding its rows. False
  // where some range gave up (every thread then skips the ranges left, without their norms).
  bool take(int64_t r) {
    if (gave_up()) {
      ready_[r].store(1, std::memory_order_release);
      return false;
    }
    const int64_t b = share_begin(linker_, r), rows = share_end(p_, linker_, r) - b;
    const T* x = static_cast<const T*>(p_.features);
    if (!inverse_norms_in_range(x + b * p_.dim, rows, p_.dim, static_cast<T*>(p_.inv_norm) + b)) gave_up_.store(true);
    ready_[r].store(1, std::memory_order_release);
    for (int64_t earlier = r - 1; earlier >= 0 && linker_.range_end(earlier) > linker_.range_begin(r); --earlier)
      while (!ready_[earlier].load(std::memory_order_acquire)) {
        if (gave_up()) return false;
        std::this_thread::yield();
      }
    return !gave_up();
  }

  bool gave_up() const { return gave_up_.load(std::memory_order_relaxed); }

 private:
  static int64_t share_begin(const Linker<T>& linker, int64_t r) { return r > 0 ? linker.range_end(r - 1) : 0; }
  static int64_t share_end(const SlidingRangeLinkParams& p, const Linker<T>& linker, int64_t r) {
    return r + 1 < p.num_ranges ? linker.range_end(r) : p.num_identities;
  }

  const SlidingRangeLinkParams& p_;
  const Linker<T>& linker_;
  std::unique_ptr<std::atomic<uint8_t>[]> ready_;  // [num_ranges]: range r's share is in
  std::atomic<bool> gave_up_{false};
};

// Every link, into the output `sink` allocates. With `norms` the first pass takes the rows' inverse
// norms (NormsInFirstPass), and the call returns false, before anything is allocated, where it gave
// up; without, p.inv_norm already holds them.
template <class T>
bool link_all(const SlidingRangeLinkParams& p, NormsInFirstPass<T>* norms, const LinkSink& sink) {
  const Linker<T> linker(p);
  std::vector<std::vector<int64_t>> found(p.num_items);  // each item's links, (i, j) interleaved
  // With mutual_k, small ranges keep their candidate pairs: first the pairs new to each range
  // (`fresh`: every distinct pair computed once), then each range's whole list, assembled from
  // its sources' new pairs (or computed, where a source has none), which gives its thresholds and
  // then its links. Lists past kCandidateBudgetBytes are dropped: their ranges take the strips.
  const int64_t lists = p.mutual_k > 0 ? p.num_ranges : 0;
  std::vector<std::vector<Candidate<T>>> fresh(lists), candidates(lists);
  std::vector<uint8_t> fresh_kept(lists, 0), kept(lists, 0);
  std::atomic<int64_t> kept_bytes{0}, next_range{0};
  auto keep = [&](std::vector<Candidate<T>>& list) {
    const int64_t bytes = static_cast<int64_t>(list.size() * sizeof(Candidate<T>));
    if (kept_bytes.fetch_add(bytes) + bytes <= kCandidateBudgetBytes) return uint8_t{1};
    kept_bytes.fetch_sub(bytes);
    std::vector<Candidate<T>>().swap(list);
    return uint8_t{0};
  };
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
    Scratch<T> scratch;
    if (p.mutual_k > 0) {
      std::vector<Candidate<T>> found_here;  // grown once per thread, copied out at its size
      // Each thread takes the next range in order (NormsInFirstPass relies on the order).
      for (int64_t r; (r = next_range.fetch_add(1)) < p.num_ranges;) {
        if (norms && !norms->take(r)) continue;
        if (!small(r)) continue;
        found_here.clear();
        linker.collect_candidates(r, linker.first_new_row(r), scratch, found_here);
        into_pair_order(found_here);
        fresh[r].assign(found_here.begin(), found_here.end());
        fresh_kept[r] = keep(fresh[r]);
      }
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp barrier
#endif
    }
    // Every thread reads the same answer after the barrier, so all of them skip the loops below.
    if (!(norms && norms->gave_up())) {
      if (p.mutual_k > 0) {
        std::vector<TopK<T>> top;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1) nowait
#endif
        for (int64_t r = 0; r < p.num_ranges; ++r) {
          if (!small(r)) continue;
          if (!linker.assemble_candidates(r, fresh, fresh_kept, candidates[r])) {
            linker.collect_candidates(r, linker.range_begin(r), scratch, candidates[r]);
            into_pair_order(candidates[r]);
          }
          linker.thresholds_from(r, candidates[r], top);
          kept[r] = keep(candidates[r]);
        }
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t item = 0; item < p.num_items; ++item)
          if (!small(range_of(item))) linker.item_thresholds(item, scratch, top);
      }  // the loop's implicit barrier: every threshold is written before any is read below
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1) nowait
#endif
      for (int64_t r = 0; r < lists; ++r)
        if (kept[r]) linker.links_from_candidates(r, candidates[r], found);
      std::vector<int64_t> rows[kRowsPerItem];
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t item = 0; item < p.num_items; ++item)
        if (lists == 0 || !kept[range_of(item)]) linker.links(item, scratch, rows, found[item]);
    }
  }
  if (norms && norms->gave_up()) return false;
  std::vector<int64_t> start(p.num_items + 1, 0);
  for (int64_t item = 0; item < p.num_items; ++item)
    start[item + 1] = start[item] + static_cast<int64_t>(found[item].size());
  int64_t* out = sink.allocate(sink.context, start[p.num_items] / 2);
  parallel_for(p.num_items, 64,
               [&](int64_t item) { std::copy(found[item].begin(), found[item].end(), out + start[item]); });
  return true;
}

template <class T>
void run(SlidingRangeLinkParams p, const LinkSink& sink) {
  {
    const Linker<T> linker(p);
    if (NormsInFirstPass<T>::worthwhile(p, linker)) {
      NormsInFirstPass<T> norms(p, linker);
      if (link_all<T>(p, &norms, sink)) return;
    }
  }
  std::vector<T> scaled;  // only for rows out of float32's range
  p.features = rows_for_cosine(static_cast<const T*>(p.features), p.num_identities, p.dim, static_cast<T*>(p.inv_norm),
                               &scaled, "features");
  link_all<T>(p, nullptr, sink);
}

template <class Index>
Index find_root(std::vector<Index>& parent, Index v) {
  while (parent[v] != v) {
    parent[v] = parent[parent[v]];  // path halving
    v = parent[v];
  }
  return v;
}

// Union-find over Index-wide parents (int32 where the nodes fit: half the memory to hop through).
// A union hangs the larger root under the smaller, so every root is its component's smallest node
// and one pass in node order numbers the components: a node is numbered before any larger one.
template <class Index>
void components(const ConnectedComponentsParams& p) {
  const Index n = static_cast<Index>(p.num_nodes);
  std::vector<Index> parent(n);
  for (Index v = 0; v < n; ++v) parent[v] = v;
  for (int64_t e = 0; e < p.num_edges; ++e) {
    Index a = find_root(parent, static_cast<Index>(p.edges[2 * e]));
    Index b = find_root(parent, static_cast<Index>(p.edges[2 * e + 1]));
    if (a == b) continue;
    if (b < a) std::swap(a, b);
    parent[b] = a;
  }
  int64_t next = 0;
  for (Index v = 0; v < n; ++v) {
    const Index root = find_root(parent, v);
    p.labels[v] = root == v ? next++ : p.labels[root];
  }
}

}  // namespace

void sliding_range_link_cpu(const SlidingRangeLinkParams& p, const LinkSink& sink) {
  if (p.dtype == DType::kFloat64)
    run<double>(p, sink);
  else
    run<float>(p, sink);
}

void connected_components_cpu(const ConnectedComponentsParams& p) {
  if (p.num_nodes <= std::numeric_limits<int32_t>::max())
    components<int32_t>(p);
  else
    components<int64_t>(p);
}

}  // namespace cion
