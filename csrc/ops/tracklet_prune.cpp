#include "ops/tracklet_prune.h"

namespace cion {

void tracklet_prune(const TrackletPruneParams& params, Device device, int device_index, void* stream) {
  if (params.set.frames == 0) return;
  if (device == Device::kCPU) {
    tracklet_prune_cpu(params);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  CION_CHECK(params.inv_norm && params.dots && params.status, "tracklet_prune on CUDA needs its scratch buffers");
  tracklet_prune_cuda(params, device_index, stream);
#else
  throw TypeError("features is a CUDA array but cion_fast was built without CUDA support "
                  "(see cion_fast.build_info())");
#endif
}

}  // namespace cion
