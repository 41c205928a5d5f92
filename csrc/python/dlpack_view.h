// DLPack capsules -> cion::TensorView. The only place that knows the DLPack ABI.
//
// The Python layer (cion_fast/_arrays.py) calls `__dlpack__(stream=...)` on every array and hands
// the capsule here. We only *borrow* the tensor: the capsule keeps its name, so its producer frees
// it when Python drops the capsule, and the caller keeps the array alive for the whole call.
#pragma once
#include <pybind11/pybind11.h>

#include "common/tensor_view.h"

namespace cion {

// `name` is the Python argument name used in error messages (a string literal).
// `writable`: the kernel writes into it; a read-only export is a ValueError.
TensorView view_from_dlpack(const pybind11::object& capsule, const char* name, bool writable = false);

// Same, with `None` -> an empty view (data == nullptr, ndim == 0) for optional arguments.
TensorView optional_view_from_dlpack(const pybind11::object& capsule, const char* name,
                                     bool writable = false);

// A checked view for the bindings: `ndim` dimensions, `dtype`, C-contiguous, `length` entries
// along dimension 0 (-1: any) and, when `like` is given, on the same device as it.
TensorView checked_view(const pybind11::object& capsule, const char* name, int ndim, DType dtype,
                        int64_t length = -1, bool writable = false, const TensorView* like = nullptr);

// checked_view for a 1-D array of `length` entries on the device of `like`.
inline TensorView checked_vector(const pybind11::object& capsule, const char* name, DType dtype,
                                 int64_t length, const TensorView& like, bool writable = false) {
  return checked_view(capsule, name, 1, dtype, length, writable, &like);
}

}  // namespace cion
