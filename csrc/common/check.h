// Error handling shared by every kernel. Checks throw C++ exceptions that the bindings turn into
// Python ValueError / TypeError; they are ordinary code, so nothing removes them (no assert).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace cion {

// Bad values (shapes, ranges, NaN): becomes Python ValueError (pybind11 maps std::invalid_argument).
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Bad kinds (dtype, device): becomes Python TypeError (registered in csrc/python/module.cpp).
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

}  // namespace cion

#define CION_CHECK(cond, ...)                                       \
  do {                                                              \
    if (!(cond)) throw ::cion::ValueError(::cion::str_cat(__VA_ARGS__)); \
  } while (0)

#define CION_CHECK_TYPE(cond, ...)                                  \
  do {                                                              \
    if (!(cond)) throw ::cion::TypeError(::cion::str_cat(__VA_ARGS__)); \
  } while (0)

// CUDA runtime calls: a failure names the call and the CUDA error string.
#define CION_CUDA_CHECK(expr)                                                        \
  do {                                                                               \
    cudaError_t cion_err_ = (expr);                                                  \
    if (cion_err_ != cudaSuccess)                                                    \
      throw std::runtime_error(::cion::str_cat("CUDA error in ", #expr, ": ",        \
                                               cudaGetErrorString(cion_err_)));      \
  } while (0)
