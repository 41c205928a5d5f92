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
  p.keep = checked_vector(keep, "keep", DType::kBool, p.set.frames, x, true).ptr<uint8_t>();
  if (x.device == Device::kCUDA) {
    p.inv_norm = checked_vector(inv_norm, "inv_norm", DType::kFloat64, p.set.frames, x, true).ptr<double>();
    p.dots = checked_vector(dots, "dots", DType::kFloat64, p.set.frames, x, true).ptr<double>();
    p.status = checked_vector(status, "status", DType::kInt32, 1, x, true).ptr<int32_t>();
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
