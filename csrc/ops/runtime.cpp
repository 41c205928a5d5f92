#include "ops/runtime.h"

#include <sstream>

#include "common/parallel.h"
#include "ops/multicrop.h"

#if defined(CION_FAST_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace cion {

BuildInfo build_info() {
  BuildInfo info;
#if defined(CION_FAST_WITH_OPENMP)
  info.openmp = true;
#endif
  info.openmp_max_threads = max_threads();
  info.multicrop_cpu_copy = multicrop_cpu_copy();
#if defined(CION_FAST_WITH_CUDA)
  info.cuda = true;
  info.cuda_version = CION_FAST_CUDA_VERSION;
  std::stringstream archs(CION_FAST_CUDA_ARCHS);
  for (std::string arch; std::getline(archs, arch, ',');) info.cuda_architectures.push_back(arch);
#endif
  return info;
}

int cuda_device_count() {
#if defined(CION_FAST_WITH_CUDA)
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls start clean
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

}  // namespace cion
