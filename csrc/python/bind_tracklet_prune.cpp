// Binding of the tracklet_prune op: DLPack capsules -> TrackletPruneParams. Values (offsets,
// threshold, min_frames) are validated in cion_fast/ops/tracklet_prune.py.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "ops/tracklet_prune.h"
#include "python/dlpack_view.h"
#include "python/ragged.h"

namespace py = pybind11;

namespace cion {

namespace {

TensorView vector_view(const py::object& capsule, const char* name, DType dtype, int64_t length,
                       const TensorView& like) {
  const TensorView v = view_from_dlpack(capsule, name, true);
  check_ndim(v, 1);
  check_dtype(v, dtype);
  check_contiguous(v);
  check_same_device(like, v);
  CION_CHECK(v.shape[0] == length, name, " must have length ", length, ", got ", v.shape[0]);
  return v;
}

void prune_binding(const py::object& features, const py::object& offsets, double threshold, int64_t min_frames,
                   const py::object& keep, const py::object& inv_norm, const py::object& dots,
                   const py::object& status, uintptr_t stream) {
  TensorView x;
  TrackletPruneParams p;
  p.set = ragged_from_dlpack(features, offsets, "features", "offsets", &x);
  p.dtype = x.dtype;
  p.dim = x.shape[1];
  p.threshold = threshold;
  p.min_frames = min_frames;
  p.keep = vector_view(keep, "keep", DType::kBool, p.set.frames, x).ptr<uint8_t>();
  if (x.device == Device::kCUDA) {
    p.inv_norm = vector_view(inv_norm, "inv_norm", DType::kFloat64, p.set.frames, x).ptr<double>();
    p.dots = vector_view(dots, "dots", DType::kFloat64, p.set.frames, x).ptr<double>();
    p.status = vector_view(status, "status", DType::kInt32, 1, x).ptr<int32_t>();
  }
  py::gil_scoped_release release;
  tracklet_prune(p, x.device, x.device_index, reinterpret_cast<void*>(stream));
}

}  // namespace

void bind_tracklet_prune(py::module_& m) {
  m.def("tracklet_prune", &prune_binding, py::arg("features"), py::arg("offsets"), py::arg("threshold"),
        py::arg("min_frames"), py::arg("keep"), py::arg("inv_norm"), py::arg("dots"), py::arg("status"),
        py::arg("stream"), "Level-1 keep-mask of every frame. Use cion_fast.ops.tracklet_prune.");
}

}  // namespace cion
