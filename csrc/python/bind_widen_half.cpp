// Binding of widen_half: two CPU DLPack capsules of the same number of elements. Used by
// cion_fast/_arrays.py's astype for numpy float16 -> float32.
#include <pybind11/pybind11.h>

#include "common/check.h"
#include "ops/widen_half.h"
#include "python/dlpack_view.h"

namespace py = pybind11;

namespace cion {

namespace {

void widen_binding(const py::object& src, const py::object& dst) {
  const TensorView s = view_from_dlpack(src, "src");
  const TensorView d = view_from_dlpack(dst, "dst", true);
  check_dtype(s, DType::kFloat16);
  check_dtype(d, DType::kFloat32);
  CION_CHECK_TYPE(s.device == Device::kCPU && d.device == Device::kCPU, "src and dst must be host arrays");
  check_contiguous(s);
  check_contiguous(d);
  CION_CHECK(s.numel() == d.numel(), "src and dst must have the same number of elements, got ", s.numel(), " and ",
             d.numel());
  WidenHalfParams p;
  p.src = s.ptr<uint16_t>();
  p.dst = d.ptr<float>();
  p.count = s.numel();
  py::gil_scoped_release release;
  widen_half_cpu(p);
}

}  // namespace

void bind_widen_half(py::module_& m) {
  m.def("widen_half", &widen_binding, py::arg("src"), py::arg("dst"),
        "float16 -> float32 of two contiguous host arrays. Use cion_fast._arrays.astype.");
}

}  // namespace cion
