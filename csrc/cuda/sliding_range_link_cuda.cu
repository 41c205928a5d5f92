// CUDA sliding-range linking and connected components.
//
// Linking: one block per work item (kRowsPerItem = 32 rows of one range), 8 warps. The block
// sweeps the range's columns in tiles of 32: warp w owns rows w, w + 8, w + 16, w + 24 of the item
// and lane l column l of the tile, with the feature chunks of both staged in shared memory.
// * thresholds: per row, an exact radix selection of the mutual_k-th largest cross-video
//   similarity (8 bits per pass, one 256-bin shared histogram per row, the tiles recomputed on
//   every pass);
// * count / fill: a warp ballot over the tile's columns gives each emitted link its place in (i, j)
//   order, so the fill pass writes exactly where the count pass counted, in the CPU's order; between
//   them a single-block scan of the counts and the one read of the total.
//
// Components: lock-free union-find (hook the larger root under the smaller with atomicCAS, path
// halving while hooking), then pointer chasing to the roots, then the same scan numbering the
// roots (the components' smallest nodes) in index order.
#include <cuda_runtime.h>

#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"
#include "cuda/tracklet_common.cuh"
#include "ops/sliding_range_link.h"

namespace cion {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = static_cast<int>(kRowsPerItem);  // 32: one tile row per lane
constexpr int kRowsPerWarp = kRows / kWarps;         // 4
constexpr int kBins = 256;
static_assert(kRows == 32, "the strip layout maps one tile column to each lane");

template <class T>
struct Chunk {
  static constexpr int kSize = sizeof(T) == 8 ? 16 : 32;  // feature dims staged per step
};

template <class T>
struct Tiles {
  T rows[kRows][Chunk<T>::kSize + 1];
  T cols[kRows][Chunk<T>::kSize + 1];
};

template <class T>
struct Linker {
  const SlidingRangeLinkParams& p;
  RangeGeometry g;
  const T* x;
  const T* inv;
  const T* kth;

  __device__ Linker(const SlidingRangeLinkParams& params)
      : p(params),
        g{params.window, params.stride, params.num_videos},
        x(static_cast<const T*>(params.features)),
        inv(static_cast<const T*>(params.inv_norm)),
        kth(static_cast<const T*>(params.kth)) {}

  __device__ int64_t range_begin(int64_t r) const { return p.video_start[g.first_rank(r)]; }
  __device__ int64_t range_end(int64_t r) const { return p.video_start[g.end_rank(r)]; }
  __device__ int64_t entry(int64_t r, int64_t i) const { return p.entry_offsets[r] + i - range_begin(r); }

  __device__ void locate(int64_t item, int64_t* range, int64_t* row) const {
    int64_t lo = 0, hi = p.num_ranges;  // the last r with item_offsets[r] <= item
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) >> 1;
      if (p.item_offsets[mid] <= item)
        lo = mid;
      else
        hi = mid;
    }
    *range = lo;
    *row = range_begin(lo) + (item - p.item_offsets[lo]) * kRowsPerItem;
  }

  // Dot products of rows i0 + warp + 8q (q < 4, zero past i1) with column j0 + lane (zero past j1).
  // Contains __syncthreads: call from the whole block.
  __device__ void dots(int64_t i0, int64_t i1, int64_t j0, int64_t j1, Tiles<T>& t, T acc[kRowsPerWarp]) const {
    constexpr int KC = Chunk<T>::kSize;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int q = 0; q < kRowsPerWarp; ++q) acc[q] = T(0);
    for (int64_t k0 = 0; k0 < p.dim; k0 += KC) {
      for (int e = threadIdx.x; e < kRows * KC; e += kThreads) {
        const int r = e / KC, c = e % KC;
        const bool in_dim = k0 + c < p.dim;
        t.rows[r][c] = (in_dim && i0 + r < i1) ? x[(i0 + r) * p.dim + k0 + c] : T(0);
        t.cols[r][c] = (in_dim && j0 + r < j1) ? x[(j0 + r) * p.dim + k0 + c] : T(0);
      }
      __syncthreads();
#pragma unroll 8
      for (int kk = 0; kk < KC; ++kk) {
        const T col = t.cols[lane][kk];
#pragma unroll
        for (int q = 0; q < kRowsPerWarp; ++q) acc[q] += t.rows[warp + kWarps * q][kk] * col;
      }
      __syncthreads();
    }
  }

  // cos(f_i, f_j) from their dot product; the product of inverse norms is symmetric in i, j.
  __device__ T similarity(T dot, int64_t i, int64_t j) const { return dot * (inv[i] * inv[j]); }

  __device__ bool mutual_in(int64_t r, int64_t i, int64_t j, T sim) const {
    return sim >= kth[entry(r, i)] && sim >= kth[entry(r, j)];
  }

  __device__ bool emits(int64_t r, int64_t i, int64_t j, T sim) const {
    if (!(static_cast<double>(sim) >= p.threshold)) return false;
    if (p.mutual_k == 0) return true;  // only pairs new to range r are visited
    if (!mutual_in(r, i, j, sim)) return false;
    for (int64_t earlier = g.first_range_of_rank(p.video_rank[j]); earlier < r; ++earlier)
      if (mutual_in(earlier, i, j, sim)) return false;
    return true;
  }
};

template <class T>
struct ThresholdShared {
  Tiles<T> tiles;
  unsigned int histogram[kRows][kBins];
  typename FloatKey<T>::type prefix[kRows];
  long long remaining[kRows];
};

template <class T>
__global__ void thresholds_kernel(SlidingRangeLinkParams params) {
  using Key = FloatKey<T>;
  using K = typename Key::type;
  __shared__ ThresholdShared<T> s;
  const Linker<T> L(params);
  const SlidingRangeLinkParams& p = params;
  T* kth_out = static_cast<T*>(p.kth);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t item = blockIdx.x; item < p.num_items; item += gridDim.x) {
    int64_t r, i0;
    L.locate(item, &r, &i0);
    const int64_t b = L.range_begin(r), e = L.range_end(r);
    const int64_t i1 = i0 + kRows < e ? i0 + kRows : e;
    if (threadIdx.x < kRows) {
      s.prefix[threadIdx.x] = 0;
      s.remaining[threadIdx.x] = p.mutual_k;
    }
    for (int shift = Key::kBits - 8; shift >= 0; shift -= 8) {
      for (int bin = threadIdx.x; bin < kRows * kBins; bin += kThreads) (&s.histogram[0][0])[bin] = 0;
      __syncthreads();
      const K high_mask = shift + 8 >= Key::kBits ? K(0) : ~K(0) << (shift + 8);
      for (int64_t j0 = b; j0 < e; j0 += kRows) {
        T acc[kRowsPerWarp];
        L.dots(i0, i1, j0, e, s.tiles, acc);
        const int64_t j = j0 + lane;
#pragma unroll
        for (int q = 0; q < kRowsPerWarp; ++q) {
          const int row = warp + kWarps * q;
          const int64_t i = i0 + row;
          if (i >= i1 || j >= e || p.video_rank[j] == p.video_rank[i]) continue;
          const K key = Key::encode(L.similarity(acc[q], i, j));
          if ((key & high_mask) == s.prefix[row]) atomicAdd(&s.histogram[row][(key >> shift) & 0xff], 1u);
        }
      }
      __syncthreads();
      if (threadIdx.x < kRows) {  // thread t walks row t's histogram from the top
        const int row = threadIdx.x;
        long long remaining = s.remaining[row];
        for (int bin = kBins - 1; bin >= 0; --bin) {
          const long long count = s.histogram[row][bin];
          if (count >= remaining) {
            s.prefix[row] |= static_cast<K>(bin) << shift;
            break;
          }
          remaining -= count;
        }
        s.remaining[row] = remaining;  // unchanged meaning when the row has fewer than k candidates
      }
      __syncthreads();
    }
    if (threadIdx.x < kRows && i0 + threadIdx.x < i1) {
      const int64_t i = i0 + threadIdx.x;
      const int64_t video = p.video_rank[i];
      const int64_t candidates = (e - b) - (p.video_start[video + 1] - p.video_start[video]);
      // As on the CPU: a k-th largest below the link threshold is stored as -inf (same decisions).
      const T kth = Key::decode(s.prefix[threadIdx.x]);
      const bool binding = candidates >= p.mutual_k && static_cast<double>(kth) >= p.threshold;
      kth_out[L.entry(r, i)] = binding ? kth : T(-INFINITY);
    }
    __syncthreads();
  }
}

template <class T, bool kFill>
__global__ void links_kernel(SlidingRangeLinkParams params) {
  __shared__ Tiles<T> tiles;
  const Linker<T> L(params);
  const SlidingRangeLinkParams& p = params;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int64_t item = blockIdx.x; item < p.num_items; item += gridDim.x) {
    int64_t r, i0;
    L.locate(item, &r, &i0);
    const int64_t e = L.range_end(r);
    const int64_t i1 = i0 + kRows < e ? i0 + kRows : e;
    // Without mutual_k only pairs with j beyond the previous range are new to this one.
    const int64_t lowest = (p.mutual_k == 0 && r > 0) ? L.range_end(r - 1) : L.range_begin(r);
    auto first_candidate = [&](int64_t i) {
      const int64_t next_video = p.video_start[p.video_rank[i] + 1];
      return next_video > lowest ? next_video : lowest;
    };
    long long found[kRowsPerWarp] = {0, 0, 0, 0};  // the same in every lane of the warp
    for (int64_t j0 = first_candidate(i0); j0 < e; j0 += kRows) {
      T acc[kRowsPerWarp];
      L.dots(i0, i1, j0, e, tiles, acc);
      const int64_t j = j0 + lane;
#pragma unroll
      for (int q = 0; q < kRowsPerWarp; ++q) {
        const int64_t i = i0 + warp + kWarps * q;
        const bool emitted = i < i1 && j < e && j >= first_candidate(i) && L.emits(r, i, j, L.similarity(acc[q], i, j));
        const unsigned ballot = __ballot_sync(0xffffffffu, emitted);
        if (kFill && emitted) {
          const long long at = p.link_offsets[L.entry(r, i)] + found[q] + __popc(ballot & lanes_below);
          p.links[2 * at] = i;
          p.links[2 * at + 1] = j;
        }
        found[q] += __popc(ballot);
      }
    }
    if (!kFill && lane == 0) {
#pragma unroll
      for (int q = 0; q < kRowsPerWarp; ++q) {
        const int64_t i = i0 + warp + kWarps * q;
        if (i < i1) p.counts[L.entry(r, i)] = found[q];
      }
    }
  }
}

// out[i] = in[0] + ... + in[i - 1] for i < n, and *total (when given) = the sum of all. One block
// walks the array in tiles of blockDim values, carrying the running sum; in == out is fine (each
// thread reads its own entry before writing it). One block is enough here: the arrays scanned
// (counts per range row, root flags) are small next to the passes that produce them.
__global__ void exclusive_scan_kernel(const int64_t* in, int64_t n, int64_t* out, int64_t* total) {
  __shared__ long long warp_totals[32];
  __shared__ long long carry;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const long long value = i < n ? in[i] : 0;
    long long inclusive = value;
    for (int offset = 1; offset < 32; offset <<= 1) {
      const long long up = __shfl_up_sync(0xffffffffu, inclusive, offset);
      if (lane >= offset) inclusive += up;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    long long before = carry;
    for (int w = 0; w < warp; ++w) before += warp_totals[w];
    if (i < n) out[i] = before + inclusive - value;
    __syncthreads();
    if (threadIdx.x == 0)
      for (int w = 0; w < warps; ++w) carry += warp_totals[w];
    __syncthreads();
  }
  if (threadIdx.x == 0 && total != nullptr) *total = carry;
}

template <class T>
void link(SlidingRangeLinkParams p, const LinkSink& sink, cudaStream_t s) {
  launch_inverse_norms(static_cast<const T*>(p.features), p.num_identities, p.dim, static_cast<T*>(p.inv_norm),
                       p.status, 1, s);
  if (p.mutual_k > 0) {
    thresholds_kernel<T><<<grid_for(p.num_items), kThreads, 0, s>>>(p);
    CION_CUDA_CHECK_LAUNCH();
  }
  links_kernel<T, false><<<grid_for(p.num_items), kThreads, 0, s>>>(p);
  CION_CUDA_CHECK_LAUNCH();
  exclusive_scan_kernel<<<1, 1024, 0, s>>>(p.counts, p.num_entries, p.link_offsets, p.link_offsets + p.num_entries);
  CION_CUDA_CHECK_LAUNCH();
  // The one wait: the number of links (and the NaN flag) decide the output's size.
  int64_t num_links = 0;
  int32_t status = 0;
  CION_CUDA_CHECK(cudaMemcpyAsync(&num_links, p.link_offsets + p.num_entries, sizeof num_links,
                                  cudaMemcpyDeviceToHost, s));
  CION_CUDA_CHECK(cudaMemcpyAsync(&status, p.status, sizeof status, cudaMemcpyDeviceToHost, s));
  CION_CUDA_CHECK(cudaStreamSynchronize(s));
  CION_CHECK(status == 0, "features contains NaN or inf values");
  p.links = sink.allocate(sink.context, num_links);
  if (num_links == 0) return;
  links_kernel<T, true><<<grid_for(p.num_items), kThreads, 0, s>>>(p);
  CION_CUDA_CHECK_LAUNCH();
}

// ---- connected components ----

__device__ __forceinline__ int64_t load(const int64_t* p) { return *static_cast<const volatile int64_t*>(p); }

// Root of v, halving the path on the way (every write stores an ancestor: safe under races).
__device__ int64_t find_and_halve(int64_t* parent, int64_t v) {
  while (true) {
    const int64_t up = load(parent + v);
    if (up == v) return v;
    const int64_t grand = load(parent + up);
    if (grand != up) *static_cast<volatile int64_t*>(parent + v) = grand;
    v = grand;
  }
}

__global__ void init_parents_kernel(int64_t* parent, int64_t n) {
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x)
    parent[v] = v;
}

__global__ void hook_kernel(const int64_t* edges, int64_t num_edges, int64_t* parent) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < num_edges;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t u = edges[2 * e], v = edges[2 * e + 1];
    while (true) {
      u = find_and_halve(parent, u);
      v = find_and_halve(parent, v);
      if (u == v) break;
      if (u < v) {
        const int64_t tmp = u;
        u = v;
        v = tmp;
      }
      // Hook the larger root u under v, unless u stopped being a root meanwhile (then retry).
      const unsigned long long seen = atomicCAS(reinterpret_cast<unsigned long long*>(parent + u),
                                                static_cast<unsigned long long>(u), static_cast<unsigned long long>(v));
      if (seen == static_cast<unsigned long long>(u)) break;
    }
  }
}

// parent[v] = root of v. Reads only, except each thread's own entry: a path-halving write here
// could put a stale ancestor back over a finished entry.
__global__ void flatten_kernel(int64_t* parent, int64_t n) {
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t root = v;
    for (int64_t up = load(parent + root); up != root; up = load(parent + root)) root = up;
    *static_cast<volatile int64_t*>(parent + v) = root;
  }
}

__global__ void root_flags_kernel(const int64_t* parent, int64_t* flags, int64_t n) {
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x)
    flags[v] = parent[v] == v;
}

__global__ void label_from_root_kernel(const int64_t* parent, int64_t* labels, int64_t n) {
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (parent[v] != v) labels[v] = labels[parent[v]];  // roots keep their own number
}

}  // namespace

void sliding_range_link_cuda(const SlidingRangeLinkParams& p, const LinkSink& sink, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::kFloat64)
    link<double>(p, sink, s);
  else
    link<float>(p, sink, s);
}

void connected_components_cuda(const ConnectedComponentsParams& p, int device_index, void* stream) {
  DeviceGuard guard(device_index);
  const auto s = static_cast<cudaStream_t>(stream);
  const int blocks = grid_for(ceil_div(p.num_nodes, kThreads));
  init_parents_kernel<<<blocks, kThreads, 0, s>>>(p.parent, p.num_nodes);
  CION_CUDA_CHECK_LAUNCH();
  if (p.num_edges > 0) {
    hook_kernel<<<grid_for(ceil_div(p.num_edges, kThreads)), kThreads, 0, s>>>(p.edges, p.num_edges, p.parent);
    CION_CUDA_CHECK_LAUNCH();
  }
  flatten_kernel<<<blocks, kThreads, 0, s>>>(p.parent, p.num_nodes);
  CION_CUDA_CHECK_LAUNCH();
  // labels[root] = number of roots before it: the components numbered by their smallest node.
  root_flags_kernel<<<blocks, kThreads, 0, s>>>(p.parent, p.labels, p.num_nodes);
  CION_CUDA_CHECK_LAUNCH();
  exclusive_scan_kernel<<<1, 1024, 0, s>>>(p.labels, p.num_nodes, p.labels, nullptr);
  CION_CUDA_CHECK_LAUNCH();
  label_from_root_kernel<<<blocks, kThreads, 0, s>>>(p.parent, p.labels, p.num_nodes);
  CION_CUDA_CHECK_LAUNCH();
}

}  // namespace cion
