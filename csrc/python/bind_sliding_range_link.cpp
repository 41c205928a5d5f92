// Binding of the sliding_range_link op family (linking and connected components): DLPack capsules
// -> params. The range bookkeeping arrays are built and values are validated in
// cion_fast/ops/sliding_range_link.py.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "ops/sliding_range_link.h"
#include "python/dlpack_view.h"

namespace py = pybind11;

namespace cion {

namespace {

// The sink's context: the Python callable that allocates the links with the caller's library
// (returning a DLPack capsule), and the device the links must live on.
struct PythonSink {
  const py::function* allocate;
  const TensorView* like;
};

int64_t* allocate_links(void* context, int64_t num_links) {
  const PythonSink& sink = *static_cast<const PythonSink*>(context);
  py::gil_scoped_acquire gil;  // the kernel runs with the GIL released
  const py::object capsule = (*sink.allocate)(num_links);
  const TensorView out = view_from_dlpack(capsule, "links", true);
  check_ndim(out, 2);
  check_dtype(out, DType::kInt64);
  check_same_device(*sink.like, out);
  CION_CHECK(out.shape[0] == num_links && out.shape[1] == 2, "allocate must return an int64 [", num_links,
             ", 2] array");
  if (num_links > 0) check_contiguous(out);
  return out.ptr<int64_t>();  // the Python caller keeps the array alive
}

void link_binding(const py::object& features, const py::object& video_rank, const py::object& video_start,
                  int64_t window, int64_t stride, double threshold, int64_t mutual_k,
                  const py::object& entry_offsets, const py::object& item_offsets, int64_t num_items,
                  int64_t num_entries, const py::object& inv_norm, const py::object& kth, const py::object& counts,
                  const py::object& link_offsets, const py::object& status, const py::function& allocate,
                  uintptr_t stream) {
  SlidingRangeLinkParams p;
  const TensorView x = view_from_dlpack(features, "features");
  check_ndim(x, 2);
  CION_CHECK_TYPE(x.dtype == DType::kFloat32 || x.dtype == DType::kFloat64,
                  "features must be float32 or float64 here (the Python layer casts 16-bit floats)");
  check_contiguous(x);
  p.features = x.data;
  p.dtype = x.dtype;
  p.num_identities = x.shape[0];
  p.dim = x.shape[1];
  p.video_rank = checked_vector(video_rank, "video_rank", DType::kInt64, p.num_identities, x, false).ptr<int64_t>();
  const TensorView starts = view_from_dlpack(video_start, "video_start");
  CION_CHECK(starts.ndim == 1 && starts.shape[0] >= 1, "video_start must be 1-D and non-empty");
  p.video_start = checked_vector(video_start, "video_start", DType::kInt64, starts.shape[0], x, false).ptr<int64_t>();
  p.num_videos = starts.shape[0] - 1;
  p.window = window;
  p.stride = stride;
  p.threshold = threshold;
  CION_CHECK(mutual_k >= 0, "mutual_k must be >= 0 (0: off)");
  p.mutual_k = mutual_k;
  const TensorView entries = view_from_dlpack(entry_offsets, "entry_offsets");
  CION_CHECK(entries.ndim == 1 && entries.shape[0] >= 1, "entry_offsets must be 1-D and non-empty");
  p.num_ranges = entries.shape[0] - 1;
  p.entry_offsets =
      checked_vector(entry_offsets, "entry_offsets", DType::kInt64, p.num_ranges + 1, x, false).ptr<int64_t>();
  p.item_offsets = checked_vector(item_offsets, "item_offsets", DType::kInt64, p.num_ranges + 1, x, false).ptr<int64_t>();
  p.num_items = num_items;
  CION_CHECK(num_entries >= 0, "num_entries must be >= 0");
  p.num_entries = num_entries;
  p.inv_norm = checked_vector(inv_norm, "inv_norm", x.dtype, p.num_identities, x, true).data;
  if (mutual_k > 0) p.kth = checked_vector(kth, "kth", x.dtype, p.num_entries, x, true).data;
  if (x.device == Device::kCUDA) {
    p.counts = checked_vector(counts, "counts", DType::kInt64, p.num_entries, x, true).ptr<int64_t>();
    p.link_offsets =
        checked_vector(link_offsets, "link_offsets", DType::kInt64, p.num_entries + 1, x, true).ptr<int64_t>();
    p.status = checked_vector(status, "status", DType::kInt32, 1, x, true).ptr<int32_t>();
  }
  PythonSink context{&allocate, &x};
  LinkSink sink;
  sink.allocate = &allocate_links;
  sink.context = &context;
  py::gil_scoped_release release;
  sliding_range_link(p, sink, x.device, x.device_index, reinterpret_cast<void*>(stream));
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
    p.parent = checked_vector(parent, "parent", DType::kInt64, num_nodes, out, true).ptr<int64_t>();
  py::gil_scoped_release release;
  connected_components(p, out.device, out.device_index, reinterpret_cast<void*>(stream));
}

}  // namespace

void bind_sliding_range_link(py::module_& m) {
  m.attr("SLIDING_RANGE_ROWS_PER_ITEM") = kRowsPerItem;
  m.def("sliding_range_link", &link_binding, py::arg("features"), py::arg("video_rank"), py::arg("video_start"),
        py::arg("window"), py::arg("stride"), py::arg("threshold"), py::arg("mutual_k"), py::arg("entry_offsets"),
        py::arg("item_offsets"), py::arg("num_items"), py::arg("num_entries"), py::arg("inv_norm"), py::arg("kth"),
        py::arg("counts"),
        py::arg("link_offsets"), py::arg("status"), py::arg("allocate"), py::arg("stream"),
        "Cross-video links in sliding ranges; allocate(n) returns the [n, 2] output's DLPack capsule. "
        "Use cion_fast.ops.sliding_range_link.");
  m.def("connected_components", &components_binding, py::arg("num_nodes"), py::arg("edges"), py::arg("labels"),
        py::arg("parent"), py::arg("stream"), "Component labels. Use cion_fast.ops.connected_components.");
}

}  // namespace cion
