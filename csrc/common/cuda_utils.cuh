// Small CUDA helpers shared by the kernels in csrc/cuda/.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/check.h"

namespace cion {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Checks the launch itself (bad configuration); errors inside the kernel surface at the caller's
// next synchronisation, as with any asynchronous CUDA library.
#define CION_CUDA_CHECK_LAUNCH() CION_CUDA_CHECK(cudaGetLastError())

// Sets the device an array lives on for the duration of a scope, restoring the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CION_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) CION_CUDA_CHECK(cudaSetDevice(device));
    changed_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

}  // namespace cion
