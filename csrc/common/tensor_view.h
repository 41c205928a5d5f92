// A framework-free view of an array: pointer, dtype, device, shape and strides (in elements).
// Built by the bindings from a DLPack capsule; kernels never see Python, torch or cupy.
#pragma once
#include <cstdint>

#include "common/check.h"

namespace cion {

enum class DType { kUInt8, kBool, kInt32, kInt64, kFloat16, kBFloat16, kFloat32, kFloat64 };
enum class Device { kCPU, kCUDA };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kUInt8: return "uint8";
    case DType::kBool: return "bool";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
  }
  return "unknown";
}

struct TensorView {
  static constexpr int kMaxDims = 8;
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Device device = Device::kCPU;
  int device_index = 0;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements, not bytes
  const char* name = "array";      // the Python argument name, for error messages

  int64_t size(int d) const { return shape[d]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }
  bool is_contiguous() const {
    if (numel() == 0) return true;  // empty arrays may export any strides (numpy: all zero)
    int64_t expected = 1;
    for (int d = ndim - 1; d >= 0; --d) {
      if (shape[d] != 1 && strides[d] != expected) return false;
      expected *= shape[d];
    }
    return true;
  }
  template <class T>
  T* ptr() const { return static_cast<T*>(data); }
};

inline void check_ndim(const TensorView& t, int ndim) {
  CION_CHECK(t.ndim == ndim, t.name, " must have ", ndim, " dimension(s), got ", t.ndim);
}
inline void check_dtype(const TensorView& t, DType dtype) {
  CION_CHECK_TYPE(t.dtype == dtype, t.name, " must have dtype ", dtype_name(dtype), ", got ",
                  dtype_name(t.dtype));
}
inline void check_contiguous(const TensorView& t) {
  CION_CHECK(t.is_contiguous(), t.name, " must be C-contiguous (the Python layer copies it)");
}
inline void check_same_device(const TensorView& a, const TensorView& b) {
  CION_CHECK_TYPE(a.device == b.device && a.device_index == b.device_index, a.name, " and ", b.name,
                  " must be on the same device");
}
inline bool is_floating(DType t) {
  return t == DType::kFloat16 || t == DType::kBFloat16 || t == DType::kFloat32 ||
         t == DType::kFloat64;
}

}  // namespace cion
