// Binding of the tracklet_similarity op family: DLPack capsules -> params. Values (offsets, pairs,
// mode, k) are validated in cion_fast/ops/tracklet_similarity.py.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "ops/tracklet_similarity.h"
#include "python/dlpack_view.h"
#include "python/ragged.h"

namespace py = pybind11;

namespace cion {

namespace {

void check_output(const TensorView& out, const TensorView& like, int ndim, const int64_t* shape) {
  check_ndim(out, ndim);
  check_dtype(out, like.dtype);
  check_contiguous(out);
  check_same_device(like, out);
  for (int d = 0; d < ndim; ++d)
    CION_CHECK(out.shape[d] == shape[d], out.name, " has the wrong shape (dimension ", d, " is ",
               out.shape[d], ", expected ", shape[d], ")");
}

int32_t* status_pointer(const py::object& status, const TensorView& like) {
  if (status.is_none()) return nullptr;
  const TensorView flag = view_from_dlpack(status, "status", true);
  check_ndim(flag, 1);
  check_dtype(flag, DType::kInt32);
  CION_CHECK(flag.shape[0] == 1, "status must have one entry");
  check_same_device(like, flag);
  return flag.ptr<int32_t>();
}

void* scratch_pointer(const py::object& scratch, const char* name, const TensorView& like, int64_t length) {
  if (scratch.is_none()) return nullptr;
  const TensorView v = view_from_dlpack(scratch, name, true);
  check_ndim(v, 1);
  check_dtype(v, like.dtype);
  check_same_device(like, v);
  CION_CHECK(v.shape[0] == length, name, " must have length ", length, ", got ", v.shape[0]);
  return v.data;
}

void centroids_binding(const py::object& features, const py::object& offsets, const std::string& name,
                       bool normalize_result, const py::object& out, const py::object& inv_norm,
                       const py::object& status, uintptr_t stream) {
  TensorView x;
  TrackletCentroidsParams p;
  p.set = ragged_from_dlpack(features, offsets, name.c_str(), "offsets", &x);
  p.dtype = x.dtype;
  p.dim = x.shape[1];
  p.normalize_result = normalize_result;
  const TensorView result = view_from_dlpack(out, "out", true);
  const int64_t shape[2] = {p.set.num, p.dim};
  check_output(result, x, 2, shape);
  p.out = result.data;
  p.inv_norm = scratch_pointer(inv_norm, "inv_norm", x, p.set.frames);
  p.status = status_pointer(status, x);
  py::gil_scoped_release release;
  tracklet_centroids(p, x.device, x.device_index, reinterpret_cast<void*>(stream));
}

void pair_similarity_binding(const py::object& features, const py::object& offsets,
                             const py::object& other_features, const py::object& other_offsets,
                             int reduce, int64_t k, bool normalize, const py::object& pairs,
                             const py::object& out, const py::object& inv_norm_a,
                             const py::object& inv_norm_b, const py::object& status, uintptr_t stream) {
  CION_CHECK(reduce >= 0 && reduce <= 2, "reduce must be 0 (max), 1 (min) or 2 (topk_mean)");
  TensorView xa, xb;
  TrackletPairSimilarityParams p;
  p.a = ragged_from_dlpack(features, offsets, "features", "offsets", &xa);
  p.same_set = other_features.is_none();
  if (p.same_set) {
    p.b = p.a;
    xb = xa;
  } else {
    p.b = ragged_from_dlpack(other_features, other_offsets, "other_features", "other_offsets", &xb);
    check_same_device(xa, xb);
    check_dtype(xb, xa.dtype);
    CION_CHECK(xb.shape[1] == xa.shape[1], "features and other_features must have the same dimension");
  }
  p.dtype = xa.dtype;
  p.dim = xa.shape[1];
  p.reduce = static_cast<PairReduce>(reduce);
  p.k = k;
  p.normalize = normalize;

  const TensorView result = view_from_dlpack(out, "out", true);
  if (pairs.is_none()) {
    const int64_t shape[2] = {p.a.num, p.b.num};
    check_output(result, xa, 2, shape);
  } else {
    const TensorView list = view_from_dlpack(pairs, "pairs");
    check_ndim(list, 2);
    check_dtype(list, DType::kInt64);
    check_contiguous(list);
    check_same_device(xa, list);
    CION_CHECK(list.shape[1] == 2, "pairs must have shape [P, 2]");
    p.pairs = list.ptr<int64_t>();
    p.num_pairs = list.shape[0];
    const int64_t shape[1] = {p.num_pairs};
    check_output(result, xa, 1, shape);
  }
  p.out = result.data;
  p.inv_norm_a = scratch_pointer(inv_norm_a, "inv_norm_a", xa, p.a.frames);
  p.inv_norm_b = p.same_set ? p.inv_norm_a : scratch_pointer(inv_norm_b, "inv_norm_b", xa, p.b.frames);
  p.status = status_pointer(status, xa);
  py::gil_scoped_release release;
  tracklet_pair_similarity(p, xa.device, xa.device_index, reinterpret_cast<void*>(stream));
}

}  // namespace

void bind_tracklet_similarity(py::module_& m) {
  m.def("tracklet_centroids", &centroids_binding, py::arg("features"), py::arg("offsets"),
        py::arg("name"), py::arg("normalize_result"), py::arg("out"), py::arg("inv_norm"),
        py::arg("status"), py::arg("stream"),
        "Per-tracklet mean of L2-normalised frames. Use cion_fast.ops.tracklet_similarity.");
  m.def("tracklet_pair_similarity", &pair_similarity_binding, py::arg("features"), py::arg("offsets"),
        py::arg("other_features"), py::arg("other_offsets"), py::arg("reduce"), py::arg("k"),
        py::arg("normalize"), py::arg("pairs"), py::arg("out"), py::arg("inv_norm_a"),
        py::arg("inv_norm_b"), py::arg("status"), py::arg("stream"),
        "max / min / top-k mean of pairwise frame cosines. Use cion_fast.ops.tracklet_similarity.");
}

}  // namespace cion
