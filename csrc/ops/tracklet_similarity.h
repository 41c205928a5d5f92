// Similarity between ragged sets of frame features (tracklets), defined in docs/ALGORITHMS.md,
// "Tracklet kernels".
//
// A tracklet set is features [frames, dim] plus offsets [num + 1]: tracklet t owns the rows
// offsets[t] .. offsets[t + 1] (non-empty; the Python layer checks). Frames are compared by cosine
// similarity: every frame is scaled by its inverse L2 norm (0 for an all-zero frame, whose cosine
// with anything is then 0).
//
// Two kernels:
// * tracklet_centroids: per tracklet the mean of its L2-normalised frames, optionally normalised
//   again. 'centroid' and 'mean' similarities are dot products of these vectors: the mean of all
//   La * Lb pairwise cosines equals mean_a . mean_b, so neither mode needs a frame-pair product.
// * tracklet_pair_similarity: 'max', 'min', 'topk_mean' of the La x Lb cosine block of each pair,
//   reduced tile by tile without ever holding the M x M frame matrix. The pairs are either a list
//   [P, 2] or every (a, b) of A x B (dense).
//
// Device/stream contract: every pointer lives on the device passed to the dispatcher; CUDA work is
// enqueued on `stream` (the caller's current stream) and nothing synchronises. Non-finite features
// raise ValueError on the CPU; on CUDA they set `status` for the caller to read.
#pragma once
#include <cstdint>

#include "common/tensor_view.h"

namespace cion {

// One ragged set. features: float32 or float64 (`dtype`), C-contiguous [frames, dim].
struct RaggedSet {
  const void* features = nullptr;
  const int64_t* offsets = nullptr;  // [num + 1], offsets[0] == 0, non-decreasing, offsets[num] == frames
  int64_t num = 0;
  int64_t frames = 0;
  const char* name = "features";  // the Python argument, for error messages
};

struct TrackletCentroidsParams {
  RaggedSet set;
  DType dtype = DType::kFloat32;  // float32 or float64; the output has the same dtype
  int64_t dim = 0;
  // true: unit-length centroids ('centroid' mode: cosine of means); false: plain means of the
  // normalised frames ('mean' mode). A zero mean stays zero.
  bool normalize_result = true;
  void* out = nullptr;  // [num, dim], C-contiguous
  // CUDA only: inv_norm [frames] scratch (dtype of the features) and status [1] (bit 0 set when a
  // feature is NaN or inf).
  void* inv_norm = nullptr;
  int32_t* status = nullptr;
};

enum class PairReduce : int32_t { kMax = 0, kMin = 1, kTopkMean = 2 };

struct TrackletPairSimilarityParams {
  RaggedSet a;
  RaggedSet b;  // when same_set, b repeats a
  bool same_set = false;  // dense self-similarity: symmetric, each unordered pair computed once
  DType dtype = DType::kFloat32;  // of both feature arrays and of `out`
  int64_t dim = 0;
  PairReduce reduce = PairReduce::kMax;
  int64_t k = 1;  // topk_mean: mean of the min(k, La * Lb) largest cosines
  // false: plain dot products of the rows (used on already-reduced centroid rows).
  bool normalize = true;

  // pairs [num_pairs, 2] int64 (0 <= pairs[p][0] < a.num, 0 <= pairs[p][1] < b.num) -> out [num_pairs];
  // pairs == nullptr -> dense out [a.num, b.num], C-contiguous.
  const int64_t* pairs = nullptr;
  int64_t num_pairs = 0;
  void* out = nullptr;

  // CUDA only: inverse norms of every frame, [a.frames] and [b.frames] (dtype of the features;
  // inv_norm_b may equal inv_norm_a when same_set), and status [1] (bit 0: a non-finite value in
  // a's features, bit 1: in b's).
  void* inv_norm_a = nullptr;
  void* inv_norm_b = nullptr;
  int32_t* status = nullptr;
};

void tracklet_centroids(const TrackletCentroidsParams& params, Device device, int device_index, void* stream);
void tracklet_pair_similarity(const TrackletPairSimilarityParams& params, Device device, int device_index,
                              void* stream);

void tracklet_centroids_cpu(const TrackletCentroidsParams& params);
void tracklet_pair_similarity_cpu(const TrackletPairSimilarityParams& params);
#if defined(CION_FAST_WITH_CUDA)
void tracklet_centroids_cuda(const TrackletCentroidsParams& params, int device_index, void* stream);
void tracklet_pair_similarity_cuda(const TrackletPairSimilarityParams& params, int device_index, void* stream);
#endif

}  // namespace cion
