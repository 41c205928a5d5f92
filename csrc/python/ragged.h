// Ragged tracklet sets from DLPack capsules: the checks shared by the tracklet bindings. The Python
// layer (cion_fast/ops/_ragged.py) validates values with friendlier messages; these checks keep a
// wrong call from reading out of bounds.
#pragma once
#include <pybind11/pybind11.h>

#include "ops/tracklet_similarity.h"
#include "python/dlpack_view.h"

namespace cion {

// features [frames, dim] float32/float64 C-contiguous and offsets [num + 1] int64 on its device.
// The offsets' values (0 first, non-decreasing, frames last) are the Python layer's to check.
inline RaggedSet ragged_from_dlpack(const pybind11::object& features, const pybind11::object& offsets,
                                    const char* features_name, const char* offsets_name, TensorView* view) {
  *view = view_from_dlpack(features, features_name);
  check_ndim(*view, 2);
  CION_CHECK_TYPE(view->dtype == DType::kFloat32 || view->dtype == DType::kFloat64, features_name,
                  " must be float32 or float64 here (the Python layer casts 16-bit floats), got ",
                  dtype_name(view->dtype));
  check_contiguous(*view);
  const TensorView off = view_from_dlpack(offsets, offsets_name);
  check_ndim(off, 1);
  check_dtype(off, DType::kInt64);
  check_contiguous(off);
  check_same_device(*view, off);
  CION_CHECK(off.shape[0] >= 1, offsets_name, " must have at least one entry");
  if (off.device == Device::kCPU) {
    // Checked again where the pointers are formed (Python checked a host copy already; CUDA
    // offsets stay on the device). Neighbours are compared, never subtracted: no wrap-around.
    const int64_t* o = off.ptr<int64_t>();
    CION_CHECK(o[0] == 0 && o[off.shape[0] - 1] == view->shape[0], offsets_name,
               " must start at 0 and end at the number of rows");
    for (int64_t i = 1; i < off.shape[0]; ++i) CION_CHECK(o[i] >= o[i - 1], offsets_name, " must be non-decreasing");
  }
  RaggedSet set;
  set.features = view->data;
  set.offsets = off.ptr<int64_t>();
  set.num = off.shape[0] - 1;
  set.frames = view->shape[0];
  set.name = features_name;
  return set;
}

}  // namespace cion
