// Level-3 (long-range cross-video) linking (docs/ALGORITHMS.md, "Tracklet kernels"), and the
// connected components that turn links into identities (reused by level 2's merging).
//
// Identities are rows of features [I, dim], sorted by video. video_rank[i] is the rank of row i's
// video among the distinct videos (0 .. V-1, non-decreasing), video_start[v] the first row of rank
// v (video_start[V] = I). Range r covers ranks [r*stride, r*stride + window) for r = 0 .. R-1, the
// last one reaching rank V-1; its rows are [video_start[r*stride], video_start[min(r*stride+window, V)]).
//
// Inside range r, rows i < j of different videos are candidates, sim = cos(f_i, f_j). They link in r
// when sim >= threshold and, with mutual_k > 0, sim >= kth_r(i) and sim >= kth_r(j), kth_r(i)
// being the mutual_k-th largest similarity of i to its cross-video candidates in r (-inf when it
// has fewer): each is among the other's mutual_k most similar, ties included.
//
// A pair shared by several ranges is emitted once, by the first range where it links: without
// mutual_k that is the first range holding both (rows j >= first_new_row(r) for r > 0); with it,
// the earlier ranges' thresholds are checked. Links are (i, j) with i < j, ordered by range, then
// i, then j: the same list on every device.
//
// Work is split into items of kRowsPerItem consecutive rows of one range; the per-(range, row)
// entry e(r, i) = entry_offsets[r] + i - range_first_row(r) holds kth_r(i) (and, on CUDA, the row's
// link count). A kth_r(i) below the threshold is stored as -inf: the link test is the same, and the
// CPU then only needs to rank the similarities that reach the threshold.
//
// The number of links is known only at the end; the output is then requested from `sink`, which
// allocates it with the caller's library:
// * CPU: inverse norms (and NaN check; with mutual_k, where no range has over 2,048 new rows, taken
//   range by range inside the first pass), mutual-k thresholds, then every work item (or, from its kept
//   candidate list, every range) collects its links in its own buffer (in (i, j) order); the
//   buffers are copied into the output in item order.
// * CUDA: inverse norms, thresholds, counts[e] (links emitted by row i in range r), a scan into
//   link_offsets, one read of the total (and of the NaN flag) on the caller's stream, then a fill
//   pass that recomputes the similarities and writes each link where its row's count put it.
// Similarities are always recomputed by the same code, so every pass takes the same decisions (the
// CPU and CUDA dot products are also exactly symmetric: dot(x, y) == dot(y, x)).
//
// Device/stream contract: every pointer lives on the device passed to the dispatcher; CUDA work is
// enqueued on `stream` (the caller's current stream). The only wait is the one read of the number of
// links before the output is allocated; nothing synchronises the device. NaN/inf features raise
// ValueError.
#pragma once
#include <cstdint>

#include "common/dispatch.h"
#include "common/tensor_view.h"

namespace cion {

constexpr int64_t kRowsPerItem = 32;  // rows of one range per work item (one CUDA block)

struct SlidingRangeLinkParams {
  const void* features = nullptr;  // [num_identities, dim] float32/float64, C-contiguous
  DType dtype = DType::kFloat32;
  int64_t num_identities = 0;
  int64_t dim = 0;
  const int64_t* video_rank = nullptr;   // [num_identities]
  const int64_t* video_start = nullptr;  // [num_videos + 1]
  int64_t num_videos = 0;
  int64_t window = 8;
  int64_t stride = 4;
  int64_t num_ranges = 0;
  double threshold = 0.7;
  int64_t mutual_k = 0;  // 0: no mutual-neighbour condition

  const int64_t* entry_offsets = nullptr;  // [num_ranges + 1]: prefix sums of the range sizes
  const int64_t* item_offsets = nullptr;   // [num_ranges + 1]: prefix sums of ceil(size / kRowsPerItem)
  int64_t num_items = 0;                   // item_offsets[num_ranges]
  int64_t num_entries = 0;                 // entry_offsets[num_ranges]

  void* inv_norm = nullptr;  // [num_identities] scratch (dtype of the features)
  void* kth = nullptr;       // [entries] scratch (dtype of the features), with mutual_k only
  // CUDA only: scratch counts [entries], link_offsets [entries + 1] (exclusive scan, total last),
  // status [1].
  int64_t* counts = nullptr;
  int64_t* link_offsets = nullptr;
  int32_t* status = nullptr;
  int64_t* links = nullptr;  // [num_links, 2]: set by the implementation from the sink
};

// Where the links go once their number is known: allocate(context, n) returns an int64 [n, 2]
// C-contiguous buffer on the features' device (the binding allocates it with the caller's library).
// It is called once, from the calling thread.
struct LinkSink {
  int64_t* (*allocate)(void* context, int64_t num_links) = nullptr;
  void* context = nullptr;
};

void sliding_range_link(const SlidingRangeLinkParams& params, const LinkSink& sink, Device device,
                        int device_index, void* stream);

void sliding_range_link_cpu(const SlidingRangeLinkParams& params, const LinkSink& sink);
#if defined(CION_FAST_WITH_CUDA)
void sliding_range_link_cuda(const SlidingRangeLinkParams& params, const LinkSink& sink, int device_index,
                             void* stream);
#endif

// Connected components of an undirected graph. labels[v] = the component's number, components
// numbered 0, 1, ... in the order of their smallest node (so the result is canonical: the same on
// every device). CPU: union-find with path halving, the larger root hung under the smaller (every
// root is then its component's smallest node: one pass numbers them). CUDA: lock-free hooking of
// the larger root under the smaller (atomicCAS), pointer jumping, then a renumbering scan.
struct ConnectedComponentsParams {
  int64_t num_nodes = 0;
  const int64_t* edges = nullptr;  // [num_edges, 2], 0 <= node < num_nodes (checked by the caller)
  int64_t num_edges = 0;
  int64_t* labels = nullptr;  // [num_nodes] output
  int64_t* parent = nullptr;  // CUDA only: [num_nodes] scratch
};

void connected_components(const ConnectedComponentsParams& params, Device device, int device_index, void* stream);

void connected_components_cpu(const ConnectedComponentsParams& params);
#if defined(CION_FAST_WITH_CUDA)
void connected_components_cuda(const ConnectedComponentsParams& params, int device_index, void* stream);
#endif

// Range geometry shared by the CPU and CUDA kernels.
struct RangeGeometry {
  int64_t window, stride, num_videos;
  CION_HOST_DEVICE int64_t first_rank(int64_t r) const { return r * stride; }
  CION_HOST_DEVICE int64_t end_rank(int64_t r) const {
    return r * stride + window < num_videos ? r * stride + window : num_videos;
  }
  // First range holding rank v (ranks < window are in range 0).
  CION_HOST_DEVICE int64_t first_range_of_rank(int64_t v) const {
    return v < window ? 0 : (v - window + stride) / stride;
  }
};

}  // namespace cion
