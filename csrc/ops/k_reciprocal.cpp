#include "ops/k_reciprocal.h"

namespace cion {

// Each stage: CPU implementation, or the CUDA one under CION_FAST_WITH_CUDA.
#if defined(CION_FAST_WITH_CUDA)
#define CION_KRR_DISPATCH(stage)                          \
  if (device == Device::kCPU) {                           \
    k_reciprocal_##stage##_cpu(p);                        \
    return;                                               \
  }                                                       \
  k_reciprocal_##stage##_cuda(p, device_index, stream)
#else
namespace {
[[noreturn]] void no_cuda() {
  throw TypeError("the arrays are CUDA arrays but cion_fast was built without CUDA support "
                  "(see cion_fast.build_info())");
}
}  // namespace
#define CION_KRR_DISPATCH(stage)   \
  if (device == Device::kCPU) {    \
    k_reciprocal_##stage##_cpu(p); \
    return;                        \
  }                                \
  no_cuda()
#endif

void k_reciprocal_select(const KReciprocalSelectParams& p, Device device, int device_index, void* stream) {
  if (p.rows == 0 || p.cols == 0) return;
  CION_CHECK(p.num_neighbours >= 1, "k_reciprocal_select needs at least one neighbour slot");
  CION_KRR_DISPATCH(select);
}

void k_reciprocal_expand(const KReciprocalExpandParams& p, Device device, int device_index, void* stream) {
  if (p.num_items == 0) return;
  CION_CHECK(p.m1 >= 1 && p.mh >= 1 && p.m1 <= p.num_neighbours + 1 && p.mh <= p.num_neighbours + 1,
             "k_reciprocal_expand: m1 and mh must lie in [1, L]");
  CION_CHECK(device == Device::kCPU || p.scratch, "k_reciprocal_expand on CUDA needs its scratch buffer");
  CION_KRR_DISPATCH(expand);
}

void k_reciprocal_weights(const KReciprocalWeightsParams& p, Device device, int device_index, void* stream) {
  if (p.num_items == 0) return;
  CION_KRR_DISPATCH(weights);
}

void k_reciprocal_query_expansion(const KReciprocalExpansionParams& p, Device device, int device_index,
                                  void* stream) {
  if (p.num_items == 0) return;
  CION_CHECK(p.k2 >= 1 && p.k2 <= p.num_neighbours + 1, "k_reciprocal_query_expansion: k2 must lie in [1, L]");
  CION_KRR_DISPATCH(query_expansion);
}

void k_reciprocal_transpose(const KReciprocalTransposeParams& p, Device device, int device_index, void* stream) {
  if (p.num_items == 0) return;
  CION_CHECK(device == Device::kCPU || !p.colptr || p.cursor,
             "k_reciprocal_transpose on CUDA needs its cursor buffer");
  CION_KRR_DISPATCH(transpose);
}

void k_reciprocal_jaccard(const KReciprocalJaccardParams& p, Device device, int device_index, void* stream) {
  if (p.row_end <= p.row_begin) return;
  CION_CHECK(device == Device::kCPU || (p.scratch && p.scratch_rows >= 1),
             "k_reciprocal_jaccard on CUDA needs its scratch buffer");
  CION_KRR_DISPATCH(jaccard);
}

void k_reciprocal_pairs(const KReciprocalPairParams& p, Device device, int device_index, void* stream) {
  if (p.num_query == 0 || p.num_candidates == 0) return;
  CION_KRR_DISPATCH(pairs);
}

#undef CION_KRR_DISPATCH

}  // namespace cion
