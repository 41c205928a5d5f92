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

void check_vector(const TensorView& v, int64_t length, DType dtype) {
  check_ndim(v, 1);
  check_dtype(v, dtype);
  check_contiguous(v);
  CION_CHECK(v.shape[0] == length, v.name, " must have length ", length, ", got ", v.shape[0]);
}

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

  const TensorView qcam = view_from_dlpack(query_camids, "q_camids");
  const TensorView gcam = view_from_dlpack(gallery_camids, "g_camids");
  const TensorView order = view_from_dlpack(gallery_by_pid, "gallery_by_pid");
  const TensorView begin = view_from_dlpack(match_begin, "match_begin");
  const TensorView end = view_from_dlpack(match_end, "match_end");
  const TensorView ap = view_from_dlpack(average_precision, "average_precision", true);
  const TensorView inp = view_from_dlpack(inverse_negative_penalty, "inverse_negative_penalty", true);
  const TensorView first = view_from_dlpack(first_match, "first_match", true);
  const TensorView count = view_from_dlpack(num_matches, "num_matches", true);
  for (const TensorView* v : {&qcam, &begin, &end, &first, &count}) check_vector(*v, Q, DType::kInt64);
  for (const TensorView* v : {&gcam, &order}) check_vector(*v, G, DType::kInt64);
  for (const TensorView* v : {&ap, &inp}) check_vector(*v, Q, DType::kFloat64);
  for (const TensorView* v : {&qcam, &gcam, &order, &begin, &end, &ap, &inp, &first, &count})
    check_same_device(dist, *v);

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
    const TensorView offsets = view_from_dlpack(scratch_offsets, "scratch_offsets");
    check_vector(offsets, Q + 1, DType::kInt64);
    const TensorView sdist = view_from_dlpack(scratch_distance, "scratch_distance", true);
    const TensorView sindex = view_from_dlpack(scratch_index, "scratch_index", true);
    const TensorView scount = view_from_dlpack(scratch_count, "scratch_count", true);
    const TensorView flag = view_from_dlpack(status, "status", true);
    check_dtype(sdist, DType::kFloat64);
    check_dtype(sindex, DType::kInt64);
    check_dtype(scount, DType::kInt64);
    check_vector(flag, 1, DType::kInt32);
    CION_CHECK(sdist.numel() == sindex.numel() && sdist.numel() == scount.numel(),
               "scratch buffers must have the same length");
    for (const TensorView* v : {&offsets, &sdist, &sindex, &scount, &flag}) check_same_device(dist, *v);
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
