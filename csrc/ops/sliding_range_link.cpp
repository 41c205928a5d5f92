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

void sliding_range_link(const SlidingRangeLinkParams& params, const LinkSink& sink, Device device,
                        int device_index, void* stream) {
  CION_CHECK(params.window >= 1 && params.stride >= 1 && params.stride <= params.window,
             "need 1 <= stride <= window, got window=", params.window, ", stride=", params.stride);
  CION_CHECK(sink.allocate, "sliding_range_link needs a sink for its links");
  if (params.num_identities == 0) {
    sink.allocate(sink.context, 0);
    return;
  }
  if (device == Device::kCPU) {
    sliding_range_link_cpu(params, sink);
    return;
  }
#if defined(CION_FAST_WITH_CUDA)
  CION_CHECK(params.counts && params.link_offsets && params.status,
             "sliding_range_link on CUDA needs its scratch buffers");
  sliding_range_link_cuda(params, sink, device_index, stream);
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
