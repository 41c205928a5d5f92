// ReID ranking metrics (CMC / mAP / mINP); the protocol and tie rule: docs/ALGORITHMS.md,
// "Ranking metrics".
//
// Per query, only the positions of its matches in the ranked gallery matter. The matches are few:
// sort them by (distance, gallery index), then one read of the query's distance row counts how many
// valid gallery entries rank before each match (how: rank_metrics_cpu.cpp, rank_metrics_cuda.cu).
// No [Q, G] index matrix; the floor is one read of the distance matrix.
//
// Device/stream contract: every pointer lives on `device`; CUDA work is enqueued on `stream` (the
// caller's current stream) and nothing synchronises. Errors found inside a CUDA kernel (NaN
// distances) are written to `status` for the caller to read with the results.
#pragma once
#include <cstdint>

#include "common/tensor_view.h"

namespace cion {

struct RankMetricsParams {
  // distmat [num_query, num_gallery]: float16/bfloat16/float32/float64, row stride
  // `dist_row_stride` elements, unit column stride. Compared in float32 (float64 for float64 input).
  const void* distmat = nullptr;
  DType dist_dtype = DType::kFloat32;
  int64_t num_query = 0;
  int64_t num_gallery = 0;
  int64_t dist_row_stride = 0;

  const int64_t* query_camids = nullptr;    // [num_query]
  const int64_t* gallery_camids = nullptr;  // [num_gallery]
  // The gallery grouped by pid: gallery_by_pid [num_gallery] lists gallery indices ordered by pid
  // (stable), and query i's pid owns gallery_by_pid[match_begin[i] .. match_end[i]).
  const int64_t* gallery_by_pid = nullptr;
  const int64_t* match_begin = nullptr;  // [num_query]
  const int64_t* match_end = nullptr;    // [num_query]
  // Drop gallery entries with the query's pid *and* camid (the Market-1501 protocol).
  bool remove_same_camera = true;

  // Outputs, [num_query] each. A query with no valid match gets num_matches = 0, first_match = -1,
  // average_precision = inverse_negative_penalty = NaN.
  double* average_precision = nullptr;
  double* inverse_negative_penalty = nullptr;  // INP = matches / (1-based rank of the last match)
  int64_t* first_match = nullptr;              // 0-based rank of the first match
  int64_t* num_matches = nullptr;

  // CUDA only. scratch_offsets [num_query + 1]: exclusive prefix sum of (match_end - match_begin + 1);
  // scratch_distance (float64), scratch_index and scratch_count (int64) have
  // scratch_offsets[num_query] entries each: query i's sorted matches and per-match counters.
  const int64_t* scratch_offsets = nullptr;
  double* scratch_distance = nullptr;
  int64_t* scratch_index = nullptr;
  int64_t* scratch_count = nullptr;
  int32_t* status = nullptr;  // [1], set to 1 when a NaN distance is read
};

// Dispatches on the device of the arrays (CPU: OpenMP over queries; CUDA: one block per query).
void rank_metrics(const RankMetricsParams& params, Device device, int device_index, void* stream);

void rank_metrics_cpu(const RankMetricsParams& params);
#if defined(CION_FAST_WITH_CUDA)
void rank_metrics_cuda(const RankMetricsParams& params, int device_index, void* stream);
#endif

}  // namespace cion
