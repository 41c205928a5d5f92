// Binding of the sliding_range_link op family (linking passes and connected components): DLPack
// capsules -> params. The range bookkeeping arrays are built and values are validated in
// cion_fast/ops/sliding_range_link.py.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "ops/sliding_range_link.h"
#include "python/dlpack_view.h"

namespace py = pybind11;

namespace cion {

namespace {

TensorView vector_view(const py::object& capsule, const char* name, DType dtype, int64_t length,
                       const TensorView& like, bool writable) {
  const TensorView v = view_from_dlpack(capsule, name, writable);
  check_ndim(v, 1);
  check_dtype(v, dtype);
  check_contiguous(v);
  check_same_device(like, v);
  CION_CHECK(v.shape[0] == length, name, " must have length ", length, ", got ", v.shape[0]);
  return v;
}

struct LinkArrays {
  TensorView features;
  SlidingRangeLinkParams params;
};

LinkArrays link_params(const py::object& features, const py::object& video_rank, const py::object& video_start,
                       int64_t window, int64_t stride, double threshold, int64_t mutual_k,
                       const py::object& entry_offsets, const py::object& item_offsets,
                       const py::object& inv_norm, const py::object& kth, const py::object& counts,
                       const py::object& status) {
  LinkArrays out;
  TensorView& x = out.features;
  SlidingRangeLinkParams& p = out.params;
  x = view_from_dlpack(features, "features");
  check_ndim(x, 2);
  CION_CHECK_TYPE(x.dtype == DType::kFloat32 || x.dtype == DType::kFloat64,
                  "features must be float32 or float64 here (the Python layer casts 16-bit floats)");
  check_contiguous(x);
  p.features = x.data;
  p.dtype = x.dtype;
  p.num_identities = x.shape[0];
  p.dim = x.shape[1];
  p.video_rank = vector_view(video_rank, "video_rank", DType::kInt64, p.num_identities, x, false).ptr<int64_t>();
  const TensorView starts = view_from_dlpack(video_start, "video_start");
  CION_CHECK(starts.ndim == 1 && starts.shape[0] >= 1, "video_start must be 1-D and non-empty");
  p.video_start = vector_view(video_start, "video_start", DType::kInt64, starts.shape[0], x, false).ptr<int64_t>();
  p.num_videos = starts.shape[0] - 1;
  p.window = window;
  p.stride = stride;
  p.threshold = threshold;
  CION_CHECK(mutual_k >= 0, "mutual_k must be >= 0 (0: off)");
  p.mutual_k = mutual_k;
  const TensorView entries = view_from_dlpack(entry_offsets, "entry_offsets");
  CION_CHECK(entries.ndim == 1 && entries.shape[0] >= 1, "entry_offsets must be 1-D and non-empty");
  p.num_ranges = entries.shape[0] - 1;
  p.entry_offsets = vector_view(entry_offsets, "entry_offsets", DType::kInt64, p.num_ranges + 1, x, false).ptr<int64_t>();
  p.item_offsets = vector_view(item_offsets, "item_offsets", DType::kInt64, p.num_ranges + 1, x, false).ptr<int64_t>();
  p.inv_norm = vector_view(inv_norm, "inv_norm", x.dtype, p.num_identities, x, true).data;
  const TensorView count_view = view_from_dlpack(counts, "counts", true);
  CION_CHECK(count_view.ndim == 1, "counts must be 1-D");
  p.counts = vector_view(counts, "counts", DType::kInt64, count_view.shape[0], x, true).ptr<int64_t>();
  if (mutual_k > 0) p.kth = vector_view(kth, "kth", x.dtype, count_view.shape[0], x, true).data;
  if (!status.is_none()) p.status = vector_view(status, "status", DType::kInt32, 1, x, true).ptr<int32_t>();
  return out;
}

void count_binding(const py::object& features, const py::object& video_rank, const py::object& video_start,
                   int64_t window, int64_t stride, double threshold, int64_t mutual_k,
                   const py::object& entry_offsets, const py::object& item_offsets, int64_t num_items,
                   const py::object& inv_norm, const py::object& kth, const py::object& counts,
                   const py::object& status, uintptr_t stream) {
  LinkArrays a = link_params(features, video_rank, video_start, window, stride, threshold, mutual_k,
                             entry_offsets, item_offsets, inv_norm, kth, counts, status);
  a.params.num_items = num_items;
  py::gil_scoped_release release;
  sliding_range_link_count(a.params, a.features.device, a.features.device_index, reinterpret_cast<void*>(stream));
}

void fill_binding(const py::object& features, const py::object& video_rank, const py::object& video_start,
                  int64_t window, int64_t stride, double threshold, int64_t mutual_k,
                  const py::object& entry_offsets, const py::object& item_offsets, int64_t num_items,
                  const py::object& inv_norm, const py::object& kth, const py::object& counts,
                  const py::object& link_offsets, const py::object& links, uintptr_t stream) {
  LinkArrays a = link_params(features, video_rank, video_start, window, stride, threshold, mutual_k,
                             entry_offsets, item_offsets, inv_norm, kth, counts, py::none());
  a.params.num_items = num_items;
  const TensorView count_view = view_from_dlpack(counts, "counts");
  a.params.link_offsets =
      vector_view(link_offsets, "link_offsets", DType::kInt64, count_view.shape[0], a.features, false).ptr<int64_t>();
  const TensorView out = view_from_dlpack(links, "links", true);
  check_ndim(out, 2);
  check_dtype(out, DType::kInt64);
  check_same_device(a.features, out);
  CION_CHECK(out.shape[1] == 2, "links must have shape [L, 2]");
  if (out.shape[0] == 0) return;
  check_contiguous(out);
  a.params.links = out.ptr<int64_t>();
  py::gil_scoped_release release;
  sliding_range_link_fill(a.params, a.features.device, a.features.device_index, reinterpret_cast<void*>(stream));
}

void components_binding(int64_t num_nodes, const py::object& edges, const py::object& labels,
                        const py::object& parent, uintptr_t stream) {
  ConnectedComponentsParams p;
  CION_CHECK(num_nodes >= 0, "num_nodes must be >= 0");
  p.num_nodes = num_nodes;
  const TensorView out = view_from_dlpack(labels, "labels", true);
  check_ndim(out, 1);
  check_dtype(out, DType::kInt64);
  CION_CHECK(out.shape[0] == num_nodes, "labels must have length num_nodes");
  if (num_nodes == 0) return;
  check_contiguous(out);
  p.labels = out.ptr<int64_t>();
  const TensorView list = view_from_dlpack(edges, "edges");
  check_ndim(list, 2);
  check_dtype(list, DType::kInt64);
  check_same_device(out, list);
  CION_CHECK(list.shape[1] == 2, "edges must have shape [E, 2]");
  p.num_edges = list.shape[0];
  if (p.num_edges > 0) {
    check_contiguous(list);
    p.edges = list.ptr<int64_t>();
  }
  if (out.device == Device::kCUDA)
    p.parent = vector_view(parent, "parent", DType::kInt64, num_nodes, out, true).ptr<int64_t>();
  py::gil_scoped_release release;
  connected_components(p, out.device, out.device_index, reinterpret_cast<void*>(stream));
}

}  // namespace

void bind_sliding_range_link(py::module_& m) {
  m.attr("SLIDING_RANGE_ROWS_PER_ITEM") = kRowsPerItem;
  m.def("sliding_range_link_count", &count_binding, py::arg("features"), py::arg("video_rank"),
        py::arg("video_start"), py::arg("window"), py::arg("stride"), py::arg("threshold"), py::arg("mutual_k"),
        py::arg("entry_offsets"), py::arg("item_offsets"), py::arg("num_items"), py::arg("inv_norm"),
        py::arg("kth"), py::arg("counts"), py::arg("status"), py::arg("stream"),
        "Linking passes 1-2 (norms, mutual-k thresholds, link counts). Use cion_fast.ops.sliding_range_link.");
  m.def("sliding_range_link_fill", &fill_binding, py::arg("features"), py::arg("video_rank"),
        py::arg("video_start"), py::arg("window"), py::arg("stride"), py::arg("threshold"), py::arg("mutual_k"),
        py::arg("entry_offsets"), py::arg("item_offsets"), py::arg("num_items"), py::arg("inv_norm"),
        py::arg("kth"), py::arg("counts"), py::arg("link_offsets"), py::arg("links"), py::arg("stream"),
        "Linking pass 3 (writes the links). Use cion_fast.ops.sliding_range_link.");
  m.def("connected_components", &components_binding, py::arg("num_nodes"), py::arg("edges"), py::arg("labels"),
        py::arg("parent"), py::arg("stream"), "Component labels. Use cion_fast.ops.connected_components.");
}

}  // namespace cion
