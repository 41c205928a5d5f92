#include "ops/sliding_range_link.h"

namespace cion {

#if !defined(CION_FAST_WITH_CUDA)
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw TypeError(str_cat(what, " is a CUDA array but cion_fast was built without CUDA support "
                                "(see cion_fast.build_info())"));
}
}  // namespace
#endif

void sliding_range_link_count(const SlidingRangeLinkParams& params, Device device, int device_index, void* stream) {
  if (params.num_identities == 0) return;
  CION_CHECK(params.window >= 1 && params.stride >= 1 && params.stride <= params.window,
             "need 1 <= stride <= window, got window=", params.window, ", stride=", params.stride);
  if (device == Device::kCPU) {
    sliding_range_link_count_cpu(params);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  CION_CHECK(params.status, "sliding_range_link on CUDA needs its status buffer");
  sliding_range_link_count_cuda(params, device_index, stream);
#else
  no_cuda("features");
#endif
}

void sliding_range_link_fill(const SlidingRangeLinkParams& params, Device device, int device_index, void* stream) {
  if (params.num_identities == 0) return;
  if (device == Device::kCPU) {
    sliding_range_link_fill_cpu(params);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  sliding_range_link_fill_cuda(params, device_index, stream);
#else
  no_cuda("features");
#endif
}

void connected_components(const ConnectedComponentsParams& params, Device device, int device_index, void* stream) {
  if (params.num_nodes == 0) return;
  if (device == Device::kCPU) {
    connected_components_cpu(params);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  CION_CHECK(params.parent, "connected_components on CUDA needs its parent scratch");
  connected_components_cuda(params, device_index, stream);
#else
  no_cuda("edges");
#endif
}

}  // namespace cion
