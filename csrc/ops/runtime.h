// What was compiled and what can run now.
#pragma once
#include <string>
#include <vector>

namespace cion {

struct BuildInfo {
  bool openmp = false;
  int openmp_max_threads = 1;
  bool cuda = false;
  std::string cuda_version;                      // nvcc version, empty without CUDA
  std::vector<std::string> cuda_architectures;   // e.g. {"80-real", ..., "90-virtual"}
  std::string multicrop_cpu_copy;                // "avx512", "avx2" or "baseline": multicrop_cpu_copy()
};

BuildInfo build_info();

// Number of usable CUDA devices; 0 without CUDA support, driver or GPU. Never throws.
int cuda_device_count();

}  // namespace cion
