// Level-1 (single-tracklet) denoising, defined in docs/ALGORITHMS.md, "Tracklet kernels".
//
// Per tracklet, with f_j its L2-normalised frames and S the sum of the frames still kept:
//   s_j = cos(f_j, S - f_j)            (similarity to the mean of the *other* kept frames)
//   while at least 2 frames are kept and min_j s_j < threshold: drop argmin_j s_j (ties: lowest row;
//   with exactly 2 frames left both scores are the cosine between them and the earlier one goes)
// then a tracklet left with fewer than min_frames frames is dropped whole.
//
// Incremental form: with d_j = f_j . S and n_j = |f_j|^2 (1, or 0 for an all-zero frame),
//   s_j = (d_j - n_j) / sqrt(|S|^2 - 2 d_j + n_j),   |S|^2 = sum_j d_j,
// and dropping m only needs d_j -= f_j . f_m and |S|^2 -= 2 d_m - n_m: O(L * D) per drop, no
// recomputation of S. All of it runs in float64. A cosine against a zero vector (the other frames
// summing to ~0, |S - f_j|^2 <= 1e-12) counts as 0.
//
// Device/stream contract: every pointer lives on the device passed to the dispatcher; CUDA work is
// enqueued on `stream` and nothing synchronises. Non-finite features raise ValueError on the CPU
// and set `status` on CUDA.
#pragma once
#include <cstdint>

#include "common/tensor_view.h"
#include "ops/tracklet_similarity.h"

namespace cion {

struct TrackletPruneParams {
  RaggedSet set;  // tracklets may be empty here
  DType dtype = DType::kFloat32;  // of the features: float32 or float64
  int64_t dim = 0;
  double threshold = 0.6;
  int64_t min_frames = 2;
  uint8_t* keep = nullptr;  // [frames] bool (0/1) output: every entry is written

  // CUDA only: float64 scratch inv_norm [frames] and dots [frames] (the d_j), status [1] (bit 0:
  // a feature is NaN or inf).
  double* inv_norm = nullptr;
  double* dots = nullptr;
  int32_t* status = nullptr;
};

// Dispatches on the device (CPU: OpenMP over tracklets; CUDA: one block per tracklet).
void tracklet_prune(const TrackletPruneParams& params, Device device, int device_index, void* stream);

void tracklet_prune_cpu(const TrackletPruneParams& params);
#if defined(CION_FAST_WITH_CUDA)
void tracklet_prune_cuda(const TrackletPruneParams& params, int device_index, void* stream);
#endif

// The zero-vector rule shared by the CPU and CUDA kernels: below this squared norm, the sum of the
// other frames is treated as the zero vector (cosine 0).
constexpr double kPruneZeroNorm2 = 1e-12;

}  // namespace cion
