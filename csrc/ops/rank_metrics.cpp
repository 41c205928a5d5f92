#include "ops/rank_metrics.h"

namespace cion {

void rank_metrics(const RankMetricsParams& params, Device device, int device_index, void* stream) {
  if (params.num_query == 0) return;
  if (device == Device::kCPU) {
    rank_metrics_cpu(params);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  CION_CHECK(params.scratch_offsets && params.scratch_distance && params.scratch_index &&
                 params.scratch_count &&
                 params.status,
             "rank_metrics on CUDA needs its scratch buffers");
  rank_metrics_cuda(params, device_index, stream);
#else
  throw TypeError("distmat is a CUDA array but cion_fast was built without CUDA support "
                  "(see cion_fast.build_info())");
#endif
}

}  // namespace cion
