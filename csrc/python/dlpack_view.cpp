#include "python/dlpack_view.h"

#include <cstdint>

namespace py = pybind11;

namespace {

// The DLPack ABI (dmlc/dlpack, v0.8 legacy and v1.x versioned structs), restated so that no header
// of any framework is needed.
enum DLDeviceType : int32_t { kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13 };
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
enum DLDataTypeCode : uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLBool = 6 };
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; NULL means compact row-major
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  uint64_t flags;
  DLTensor dl_tensor;
};
constexpr uint64_t kDLPackFlagBitmaskReadOnly = 1ull << 0;

cion::DType convert_dtype(const DLDataType& t, const char* name) {
  CION_CHECK_TYPE(t.lanes == 1, name, ": vector dtypes (lanes != 1) are not supported");
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 16) return cion::DType::kFloat16;
      if (t.bits == 32) return cion::DType::kFloat32;
      if (t.bits == 64) return cion::DType::kFloat64;
      break;
    case kDLBfloat:
      if (t.bits == 16) return cion::DType::kBFloat16;
      break;
    case kDLInt:
      if (t.bits == 32) return cion::DType::kInt32;
      if (t.bits == 64) return cion::DType::kInt64;
      break;
    case kDLUInt:
      if (t.bits == 8) return cion::DType::kUInt8;
      break;
    case kDLBool:
      if (t.bits == 8) return cion::DType::kBool;
      break;
    default:
      break;
  }
  throw cion::TypeError(cion::str_cat(name, ": unsupported dtype (DLPack code ", int(t.code),
                                      ", ", int(t.bits), " bits)"));
}

cion::TensorView convert(const DLTensor& t, const char* name) {
  cion::TensorView v;
  v.name = name;
  CION_CHECK(t.ndim <= cion::TensorView::kMaxDims, name, " has ", t.ndim, " dimensions; at most ",
             cion::TensorView::kMaxDims, " are supported");
  v.ndim = t.ndim;
  v.dtype = convert_dtype(t.dtype, name);
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  switch (t.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      v.device = cion::Device::kCPU;
      break;
    case kDLCUDA:
    case kDLCUDAManaged:
      v.device = cion::Device::kCUDA;
      break;
    default:
      throw cion::TypeError(cion::str_cat(name, ": arrays on DLPack device type ",
                                          t.device.device_type, " are not supported (CPU or CUDA)"));
  }
  v.device_index = t.device.device_id;
  int64_t expected = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    v.shape[d] = t.shape[d];
    v.strides[d] = t.strides ? t.strides[d] : expected;
    expected *= t.shape[d];
  }
  return v;
}

}  // namespace

namespace cion {

TensorView view_from_dlpack(const py::object& object, const char* name, bool writable) {
  CION_CHECK_TYPE(PyCapsule_CheckExact(object.ptr()), name,
                  ": expected a DLPack capsule (the Python layer converts arrays)");
  PyObject* capsule = object.ptr();
  if (PyCapsule_IsValid(capsule, "dltensor_versioned")) {
    auto* managed =
        static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(capsule, "dltensor_versioned"));
    CION_CHECK(!(writable && (managed->flags & kDLPackFlagBitmaskReadOnly)), name,
               " is read-only but the kernel writes into it");
    return convert(managed->dl_tensor, name);
  }
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    return convert(managed->dl_tensor, name);
  }
  throw ValueError(str_cat(name, ": the DLPack capsule was already consumed or is not a tensor"));
}

TensorView optional_view_from_dlpack(const py::object& object, const char* name, bool writable) {
  if (object.is_none()) {
    TensorView empty;
    empty.name = name;
    return empty;
  }
  return view_from_dlpack(object, name, writable);
}

TensorView checked_view(const py::object& capsule, const char* name, int ndim, DType dtype, int64_t length,
                        bool writable, const TensorView* like) {
  const TensorView v = view_from_dlpack(capsule, name, writable);
  check_ndim(v, ndim);
  check_dtype(v, dtype);
  check_contiguous(v);
  if (length >= 0)
    CION_CHECK(v.shape[0] == length, name, " must have ", length, " entries along dimension 0, got ", v.shape[0]);
  if (like) check_same_device(*like, v);
  return v;
}

}  // namespace cion
