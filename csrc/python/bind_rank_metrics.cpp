// Binding of the rank_metrics op: DLPack capsules -> RankMetricsParams. Shapes and dtypes are
// validated (with friendlier messages) in cion_fast/ops/rank_metrics.py; these checks are the
// last line that keeps a wrong call from reading out of bounds.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "ops/rank_metrics.h"
#include "python/dlpack_view.h"

namespace py = pybind11;

namespace cion {

namespace {

void rank_metrics_binding(const py::object& distmat, const py::object& query_camids,
                          const py::object& gallery_camids, const py::object& gallery_by_pid,
                          const py::object& match_begin, const py::object& match_end,
                          bool remove_same_camera, const py::object& average_precision,
                          const py::object& inverse_negative_penalty, const py::object& first_match,
                          const py::object& num_matches, const py::object& scratch_offsets,
                          const py::object& scratch_distance, const py::object& scratch_index,
                          const py::object& scratch_count, const py::object& status, uintptr_t stream) {
  const TensorView dist = view_from_dlpack(distmat, "distmat");
  check_ndim(dist, 2);
  CION_CHECK(dist.strides[1] == 1 || dist.shape[1] <= 1, "distmat rows must be contiguous");
  const int64_t Q = dist.shape[0], G = dist.shape[1];

  const auto int64_vector = [&](const py::object& capsule, const char* name, int64_t length, bool writable) {
    return checked_vector(capsule, name, DType::kInt64, length, dist, writable);
  };
  const TensorView qcam = int64_vector(query_camids, "q_camids", Q, false);
  const TensorView gcam = int64_vector(gallery_camids, "g_camids", G, false);
  const TensorView order = int64_vector(gallery_by_pid, "gallery_by_pid", G, false);
  const TensorView begin = int64_vector(match_begin, "match_begin", Q, false);
  const TensorView end = int64_vector(match_end, "match_end", Q, false);
  const TensorView first = int64_vector(first_match, "first_match", Q, true);
  const TensorView count = int64_vector(num_matches, "num_matches", Q, true);
  const TensorView ap = checked_vector(average_precision, "average_precision", DType::kFloat64, Q, dist, true);
  const TensorView inp =
      checked_vector(inverse_negative_penalty, "inverse_negative_penalty", DType::kFloat64, Q, dist, true);

  RankMetricsParams p;
  p.distmat = dist.data;
  p.dist_dtype = dist.dtype;
  p.num_query = Q;
  p.num_gallery = G;
  p.dist_row_stride = dist.strides[0];
  p.query_camids = qcam.ptr<int64_t>();
  p.gallery_camids = gcam.ptr<int64_t>();
  p.gallery_by_pid = order.ptr<int64_t>();
  p.match_begin = begin.ptr<int64_t>();
  p.match_end = end.ptr<int64_t>();
  p.remove_same_camera = remove_same_camera;
  p.average_precision = ap.ptr<double>();
  p.inverse_negative_penalty = inp.ptr<double>();
  p.first_match = first.ptr<int64_t>();
  p.num_matches = count.ptr<int64_t>();

  if (dist.device == Device::kCUDA) {
    const TensorView offsets = int64_vector(scratch_offsets, "scratch_offsets", Q + 1, false);
    const TensorView sdist = checked_view(scratch_distance, "scratch_distance", 1, DType::kFloat64, -1, true, &dist);
    const int64_t total = sdist.shape[0];
    const TensorView sindex = int64_vector(scratch_index, "scratch_index", total, true);
    const TensorView scount = int64_vector(scratch_count, "scratch_count", total, true);
    const TensorView flag = checked_vector(status, "status", DType::kInt32, 1, dist, true);
    p.scratch_offsets = offsets.ptr<int64_t>();
    p.scratch_distance = sdist.ptr<double>();
    p.scratch_index = sindex.ptr<int64_t>();
    p.scratch_count = scount.ptr<int64_t>();
    p.status = flag.ptr<int32_t>();
  }

  py::gil_scoped_release release;
  rank_metrics(p, dist.device, dist.device_index, reinterpret_cast<void*>(stream));
}

}  // namespace

void bind_rank_metrics(py::module_& m) {
  m.def("rank_metrics", &rank_metrics_binding, py::arg("distmat"), py::arg("query_camids"),
        py::arg("gallery_camids"), py::arg("gallery_by_pid"), py::arg("match_begin"),
        py::arg("match_end"), py::arg("remove_same_camera"), py::arg("average_precision"),
        py::arg("inverse_negative_penalty"), py::arg("first_match"), py::arg("num_matches"),
        py::arg("scratch_offsets"), py::arg("scratch_distance"), py::arg("scratch_index"),
        py::arg("scratch_count"), py::arg("status"), py::arg("stream"),
        "Per-query AP / INP / first-match rank / match count. Use cion_fast.ops.evaluate_rank.");
}

}  // namespace cion
