#include "ops/tracklet_similarity.h"

namespace cion {

#if !defined(CION_FAST_WITH_CUDA)
namespace {
[[noreturn]] void no_cuda() {
  throw TypeError("features is a CUDA array but cion_fast was built without CUDA support "
                  "(see cion_fast.build_info())");
}
}  // namespace
#endif

void tracklet_centroids(const TrackletCentroidsParams& params, Device device, int device_index, void* stream) {
  if (params.set.num == 0) return;
  if (device == Device::kCPU) {
    tracklet_centroids_cpu(params);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  CION_CHECK(params.inv_norm && params.status, "tracklet_centroids on CUDA needs its scratch buffers");
  tracklet_centroids_cuda(params, device_index, stream);
#else
  no_cuda();
#endif
}

void tracklet_pair_similarity(const TrackletPairSimilarityParams& params, Device device, int device_index,
                              void* stream) {
  const bool dense = params.pairs == nullptr;
  if (dense ? (params.a.num == 0 || params.b.num == 0) : params.num_pairs == 0) return;
  CION_CHECK(params.k >= 1, "k must be >= 1, got ", params.k);
  if (device == Device::kCPU) {
    tracklet_pair_similarity_cpu(params);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  CION_CHECK(params.inv_norm_a && params.inv_norm_b && params.status,
             "tracklet_pair_similarity on CUDA needs its scratch buffers");
  tracklet_pair_similarity_cuda(params, device_index, stream);
#else
  no_cuda();
#endif
}

}  // namespace cion
