#include "ops/multicrop.h"

namespace cion {

void multicrop(const MultiCropParams& params, Device device, int device_index, void* stream) {
  if (params.batch == 0 || params.settings.num_views() == 0) return;
  if (device == Device::kCPU) {
    multicrop_cpu(params);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  multicrop_cuda(params, device_index, stream);
#else
  throw TypeError("images is a CUDA array but cion_fast was built without CUDA support "
                  "(see cion_fast.build_info())");
#endif
}

}  // namespace cion
