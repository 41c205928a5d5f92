// Binding of the k_reciprocal stages: DLPack capsules -> params structs. The stages are internal
// (cion_fast/ops/k_reciprocal.py chains them and validates user input with friendly messages);
// the checks here are the last line that keeps a wrong call from reading out of bounds.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "ops/k_reciprocal.h"
#include "python/dlpack_view.h"

namespace py = pybind11;

namespace cion {

namespace {

bool given(const py::object& capsule) { return !capsule.is_none(); }

void same_device(const TensorView& reference, std::initializer_list<const TensorView*> others) {
  for (const TensorView* v : others)
    if (v->data) check_same_device(reference, *v);
}

void check_float_or_double(const TensorView& v) {
  CION_CHECK_TYPE(v.dtype == DType::kFloat32 || v.dtype == DType::kFloat64, v.name,
                  " must be float32 or float64, got ", dtype_name(v.dtype));
}

// A CSR matrix with N rows: indptr [N + 1], indices [nnz], optional float32 values [nnz].
struct Csr {
  TensorView indptr, indices, values;
};

Csr csr(const py::object& indptr, const py::object& indices, const py::object& values, int64_t rows,
        const char* indptr_name, const char* indices_name, const char* values_name) {
  Csr m;
  m.indptr = checked_view(indptr, indptr_name, 1, DType::kInt64, rows + 1);
  m.indices = checked_view(indices, indices_name, 1, DType::kInt64);
  if (given(values)) {
    m.values = checked_view(values, values_name, 1, DType::kFloat32);
    CION_CHECK(m.values.shape[0] == m.indices.shape[0], values_name, " and ", indices_name,
               " must have the same length");
  }
  return m;
}

void select_binding(const py::object& block, const py::object& block_columns, const py::object& row_norms,
                    const py::object& col_norms, int64_t row_begin, int64_t col_begin,
                    bool symmetric, const py::object& row_max, const py::object& neighbour_value,
                    const py::object& neighbour_index, const py::object& raw_out, int64_t num_query,
                    const py::object& status, uintptr_t stream) {
  const TensorView b = view_from_dlpack(block, "block");
  check_ndim(b, 2);
  check_float_or_double(b);
  CION_CHECK(b.strides[1] == 1 || b.shape[1] <= 1, "block rows must be contiguous");
  const TensorView values = checked_view(neighbour_value, "neighbour_value", 2, DType::kFloat64, -1, true);
  const int64_t N = values.shape[0];
  const TensorView indices = checked_view(neighbour_index, "neighbour_index", 2, DType::kInt64, N, true);
  CION_CHECK(indices.shape[1] == values.shape[1], "neighbour_index and neighbour_value must have the same shape");
  const int64_t rows = b.shape[0], cols = b.shape[1];
  CION_CHECK(row_begin >= 0 && row_begin + rows <= N, "block rows out of range");
  TensorView columns, rnorms, cnorms, maxima, raw, flag;
  if (given(row_norms) || given(col_norms)) {
    rnorms = checked_view(row_norms, "row_norms", 1, b.dtype, rows);
    cnorms = checked_view(col_norms, "col_norms", 1, b.dtype, cols);
    CION_CHECK(!given(block_columns), "a kNN graph block holds distances, not dot products");
  }
  if (given(block_columns)) {
    columns = checked_view(block_columns, "block_columns", 2, DType::kInt64, rows);
    CION_CHECK(columns.shape[1] == cols && b.is_contiguous(), "block_columns must match a contiguous block");
    CION_CHECK(!symmetric, "a kNN graph block cannot be symmetric");
  } else {
    CION_CHECK(col_begin >= 0 && col_begin + cols <= N, "block columns out of range");
    CION_CHECK(!symmetric || row_begin + rows <= col_begin || col_begin + cols <= row_begin,
               "a symmetric block needs disjoint row and column ranges");
  }
  if (given(row_max)) maxima = checked_view(row_max, "row_max", 1, DType::kFloat64, N, true);
  if (given(raw_out)) {
    raw = view_from_dlpack(raw_out, "raw_out", true);
    check_ndim(raw, 2);
    check_dtype(raw, DType::kFloat32);
    CION_CHECK(raw.strides[1] == 1 || raw.shape[1] <= 1, "raw_out rows must be contiguous");
    CION_CHECK(raw.shape[0] == num_query && num_query + raw.shape[1] == N, "raw_out must be [Q, N - Q]");
  }
  if (given(status)) flag = checked_view(status, "status", 1, DType::kInt32, 1, true);
  same_device(b, {&values, &indices, &columns, &rnorms, &cnorms, &maxima, &raw, &flag});

  KReciprocalSelectParams p;
  p.block = b.data;
  p.block_dtype = b.dtype;
  p.block_columns = columns.ptr<const int64_t>();
  p.row_norms = rnorms.data;
  p.col_norms = cnorms.data;
  p.rows = rows;
  p.cols = cols;
  p.block_row_stride = b.strides[0];
  p.row_begin = row_begin;
  p.col_begin = col_begin;
  p.symmetric = symmetric;
  p.num_neighbours = values.shape[1];
  p.neighbour_value = values.ptr<double>();
  p.neighbour_index = indices.ptr<int64_t>();
  p.row_max = maxima.ptr<double>();
  p.raw_out = raw.ptr<float>();
  p.num_query = num_query;
  p.raw_out_row_stride = raw.data ? raw.strides[0] : 0;
  p.status = flag.ptr<int32_t>();
  py::gil_scoped_release release;
  k_reciprocal_select(p, b.device, b.device_index, reinterpret_cast<void*>(stream));
}

void expand_binding(const py::object& neighbours, int64_t m1, int64_t mh, const py::object& counts,
                    const py::object& indptr, const py::object& indices, const py::object& scratch,
                    uintptr_t stream) {
  const TensorView nb = checked_view(neighbours, "neighbours", 2, DType::kInt64);
  const int64_t N = nb.shape[0];
  KReciprocalExpandParams p;
  p.neighbours = nb.ptr<const int64_t>();
  p.num_items = N;
  p.num_neighbours = nb.shape[1];
  p.m1 = m1;
  p.mh = mh;
  TensorView c, ip, ix, s;
  if (given(indptr)) {
    ip = checked_view(indptr, "indptr", 1, DType::kInt64, N + 1);
    ix = checked_view(indices, "indices", 1, DType::kInt64, -1, true);
  } else {
    c = checked_view(counts, "counts", 1, DType::kInt64, N, true);
  }
  if (given(scratch)) {
    s = checked_view(scratch, "scratch", 2, DType::kInt64, N, true);
    CION_CHECK(m1 >= 1 && mh >= 1 && s.shape[1] >= m1 + m1 * mh, "scratch must be [N, m1 + m1 * mh]");
  }
  same_device(nb, {&c, &ip, &ix, &s});
  p.counts = c.ptr<int64_t>();
  p.indptr = ip.ptr<const int64_t>();
  p.indices = ix.ptr<int64_t>();
  p.scratch = s.ptr<int64_t>();
  py::gil_scoped_release release;
  k_reciprocal_expand(p, nb.device, nb.device_index, reinterpret_cast<void*>(stream));
}

void weights_binding(const py::object& indptr, const py::object& indices, const py::object& row_max,
                     const py::object& values, const py::object& features,
                     const py::object& gallery_features, const py::object& q_q,
                     const py::object& q_g, const py::object& g_g, const py::object& graph_index,
                     const py::object& graph_distance, const py::object& estimated, const py::object& neighbours,
                     const py::object& neighbour_distances, uintptr_t stream) {
  const TensorView ip = view_from_dlpack(indptr, "indptr");
  check_ndim(ip, 1);
  const int64_t N = ip.shape[0] - 1;
  const Csr m = csr(indptr, indices, py::none(), N, "indptr", "indices", "values");
  const TensorView out = checked_view(values, "values", 1, DType::kFloat32, m.indices.shape[0], true);
  KReciprocalWeightsParams p;
  p.num_items = N;
  p.indptr = m.indptr.ptr<const int64_t>();
  p.indices = m.indices.ptr<const int64_t>();
  p.values = out.ptr<float>();
  TensorView maxima, x, xg, qq, qg, gg, gi, gd, est, nb, nd;
  if (given(row_max)) maxima = checked_view(row_max, "row_max", 1, DType::kFloat64, N);
  p.row_max = maxima.ptr<const double>();
  if (given(features)) {
    x = view_from_dlpack(features, "features");
    check_ndim(x, 2);
    check_float_or_double(x);
    CION_CHECK(x.shape[0] <= N && (x.strides[1] == 1 || x.shape[1] <= 1),
               "features must be [Q, D] with Q <= N and contiguous rows");
    p.source = KReciprocalSource::kFeatures;
    p.dtype = x.dtype;
    p.features = x.data;
    p.num_query = x.shape[0];
    p.dim = x.shape[1];
    p.feature_row_stride = x.strides[0];
    if (x.shape[0] < N) {
      xg = view_from_dlpack(gallery_features, "gallery_features");
      check_ndim(xg, 2);
      check_dtype(xg, x.dtype);
      CION_CHECK(xg.shape[0] == N - x.shape[0] && xg.shape[1] == x.shape[1] && (xg.strides[1] == 1 || xg.shape[1] <= 1),
                 "gallery_features must be [N - Q, D] with features' D and contiguous rows");
      p.gallery_features = xg.data;
      p.gallery_row_stride = xg.strides[0];
    }
    if (given(neighbours)) {
      nb = checked_view(neighbours, "neighbours", 2, DType::kInt64, N);
      nd = checked_view(neighbour_distances, "neighbour_distances", 2, DType::kFloat64, N);
      CION_CHECK(nd.shape[1] == nb.shape[1], "neighbour_distances must have neighbours' shape");
      p.neighbour_index = nb.ptr<const int64_t>();
      p.neighbour_value = nd.ptr<const double>();
      p.num_neighbours = nb.shape[1];
    }
  } else if (given(q_g)) {
    qg = view_from_dlpack(q_g, "q_g");
    qq = view_from_dlpack(q_q, "q_q");
    gg = view_from_dlpack(g_g, "g_g");
    for (TensorView* v : {&qg, &qq, &gg}) {
      check_ndim(*v, 2);
      check_dtype(*v, qg.dtype);
      CION_CHECK(v->strides[1] == 1 || v->shape[1] <= 1, v->name, " rows must be contiguous");
    }
    check_float_or_double(qg);
    const int64_t Q = qg.shape[0], G = qg.shape[1];
    CION_CHECK(Q + G == N && qq.shape[0] == Q && qq.shape[1] == Q && gg.shape[0] == G && gg.shape[1] == G,
               "q_g [Q, G], q_q [Q, Q] and g_g [G, G] must cover the N items");
    p.source = KReciprocalSource::kBlocks;
    p.dtype = qg.dtype;
    p.q_q = qq.data;
    p.q_g = qg.data;
    p.g_g = gg.data;
    p.num_query = Q;
    p.q_q_stride = qq.strides[0];
    p.q_g_stride = qg.strides[0];
    p.g_g_stride = gg.strides[0];
  } else {
    gi = checked_view(graph_index, "graph_index", 2, DType::kInt64, N);
    gd = view_from_dlpack(graph_distance, "graph_distance");
    check_ndim(gd, 2);
    check_float_or_double(gd);
    check_contiguous(gd);
    CION_CHECK(gd.shape[0] == N && gd.shape[1] == gi.shape[1], "graph_distance must have graph_index's shape");
    est = checked_view(estimated, "estimated", 1, DType::kInt64, 1, true);
    p.source = KReciprocalSource::kGraph;
    p.dtype = gd.dtype;
    p.graph_index = gi.ptr<const int64_t>();
    p.graph_distance = gd.data;
    p.graph_k = gi.shape[1];
    p.estimated = est.ptr<int64_t>();
  }
  CION_CHECK(!given(neighbours) || given(features), "neighbours are read only with features");
  same_device(ip, {&m.indices, &out, &maxima, &x, &xg, &qq, &qg, &gg, &gi, &gd, &est, &nb, &nd});
  py::gil_scoped_release release;
  k_reciprocal_weights(p, ip.device, ip.device_index, reinterpret_cast<void*>(stream));
}

void query_expansion_binding(const py::object& neighbours, int64_t k2, const py::object& indptr,
                             const py::object& indices, const py::object& values, const py::object& counts,
                             const py::object& out_indptr, const py::object& out_indices,
                             const py::object& out_values, uintptr_t stream) {
  const TensorView nb = checked_view(neighbours, "neighbours", 2, DType::kInt64);
  const int64_t N = nb.shape[0];
  const Csr v = csr(indptr, indices, values, N, "indptr", "indices", "values");
  KReciprocalExpansionParams p;
  p.neighbours = nb.ptr<const int64_t>();
  p.num_items = N;
  p.num_neighbours = nb.shape[1];
  p.k2 = k2;
  p.indptr = v.indptr.ptr<const int64_t>();
  p.indices = v.indices.ptr<const int64_t>();
  p.values = v.values.ptr<const float>();
  CION_CHECK(p.values, "values is required");
  TensorView c, oi, ox, ov;
  if (given(out_indptr)) {
    oi = checked_view(out_indptr, "out_indptr", 1, DType::kInt64, N + 1);
    ox = checked_view(out_indices, "out_indices", 1, DType::kInt64, -1, true);
    ov = checked_view(out_values, "out_values", 1, DType::kFloat32, ox.shape[0], true);
  } else {
    c = checked_view(counts, "counts", 1, DType::kInt64, N, true);
  }
  same_device(nb, {&v.indptr, &v.indices, &v.values, &c, &oi, &ox, &ov});
  p.counts = c.ptr<int64_t>();
  p.out_indptr = oi.ptr<const int64_t>();
  p.out_indices = ox.ptr<int64_t>();
  p.out_values = ov.ptr<float>();
  py::gil_scoped_release release;
  k_reciprocal_query_expansion(p, nb.device, nb.device_index, reinterpret_cast<void*>(stream));
}

void transpose_binding(const py::object& indptr, const py::object& indices, const py::object& values,
                       int64_t row_begin, const py::object& col_counts, const py::object& colptr,
                       const py::object& rows, const py::object& out_values, const py::object& cursor,
                       uintptr_t stream) {
  const TensorView ip = view_from_dlpack(indptr, "indptr");
  check_ndim(ip, 1);
  const int64_t N = ip.shape[0] - 1;
  const Csr v = csr(indptr, indices, values, N, "indptr", "indices", "values");
  CION_CHECK(row_begin >= 0 && row_begin <= N, "row_begin out of range");
  KReciprocalTransposeParams p;
  p.num_items = N;
  p.row_begin = row_begin;
  p.indptr = v.indptr.ptr<const int64_t>();
  p.indices = v.indices.ptr<const int64_t>();
  p.values = v.values.ptr<const float>();
  CION_CHECK(p.values, "values is required");
  TensorView cc, cp, r, ov, cur;
  if (given(colptr)) {
    cp = checked_view(colptr, "colptr", 1, DType::kInt64, N + 1);
    r = checked_view(rows, "rows", 1, DType::kInt64, -1, true);
    ov = checked_view(out_values, "out_values", 1, DType::kFloat32, r.shape[0], true);
    if (given(cursor)) cur = checked_view(cursor, "cursor", 1, DType::kInt64, N, true);
  } else {
    cc = checked_view(col_counts, "col_counts", 1, DType::kInt64, N, true);
  }
  same_device(ip, {&v.indices, &v.values, &cc, &cp, &r, &ov, &cur});
  p.col_counts = cc.ptr<int64_t>();
  p.colptr = cp.ptr<const int64_t>();
  p.rows = r.ptr<int64_t>();
  p.out_values = ov.ptr<float>();
  p.cursor = cur.ptr<int64_t>();
  py::gil_scoped_release release;
  k_reciprocal_transpose(p, ip.device, ip.device_index, reinterpret_cast<void*>(stream));
}

void jaccard_binding(const std::string& mode, const py::object& indptr, const py::object& indices,
                     const py::object& values, const py::object& colptr, const py::object& inv_rows,
                     const py::object& inv_values, int64_t row_begin, int64_t row_end, int64_t col_begin,
                     bool clamp_negative, double lambda_value, const py::object& row_max, const py::object& out,
                     const py::object& counts, const py::object& out_indptr, const py::object& out_indices,
                     const py::object& out_values, const py::object& scratch, uintptr_t stream) {
  using Mode = KReciprocalJaccardMode;
  const TensorView ip = view_from_dlpack(indptr, "indptr");
  check_ndim(ip, 1);
  const int64_t N = ip.shape[0] - 1;
  const Csr v = csr(indptr, indices, values, N, "indptr", "indices", "values");
  const Csr inv = csr(colptr, inv_rows, inv_values, N, "colptr", "inv_rows", "inv_values");
  CION_CHECK(v.values.data && inv.values.data, "values and inv_values are required");
  CION_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= N && 0 <= col_begin && col_begin <= N,
             "row or column range out of bounds");
  const int64_t rows = row_end - row_begin, width = N - col_begin;
  KReciprocalJaccardParams p;
  if (mode == "rerank")
    p.mode = Mode::kRerank;
  else if (mode == "sparse_count")
    p.mode = Mode::kSparseCount;
  else if (mode == "sparse_fill")
    p.mode = Mode::kSparseFill;
  else if (mode == "dense")
    p.mode = Mode::kDense;
  else
    throw ValueError("unknown jaccard mode " + mode);
  TensorView maxima, o, c, oi, ox, ov, s;
  if (p.mode == Mode::kRerank || p.mode == Mode::kDense) {
    o = view_from_dlpack(out, "out", true);
    check_ndim(o, 2);
    check_dtype(o, DType::kFloat32);
    CION_CHECK(o.shape[0] == rows && o.shape[1] == width && (o.strides[1] == 1 || width <= 1),
               "out must be [rows, N - col_begin] with contiguous rows");
  }
  if (p.mode == Mode::kRerank) maxima = checked_view(row_max, "row_max", 1, DType::kFloat64, N);
  if (p.mode == Mode::kSparseCount) c = checked_view(counts, "counts", 1, DType::kInt64, rows, true);
  if (p.mode == Mode::kSparseFill) {
    oi = checked_view(out_indptr, "out_indptr", 1, DType::kInt64, rows + 1);
    ox = checked_view(out_indices, "out_indices", 1, DType::kInt64, -1, true);
    ov = checked_view(out_values, "out_values", 1, DType::kFloat32, ox.shape[0], true);
  }
  if (given(scratch)) {
    s = checked_view(scratch, "scratch", 2, DType::kFloat32, -1, true);
    CION_CHECK(s.shape[1] == width, "scratch must be [blocks, N - col_begin]");
  }
  same_device(ip, {&v.indices, &v.values, &inv.indptr, &inv.indices, &inv.values, &maxima, &o, &c, &oi, &ox,
                   &ov, &s});
  p.num_items = N;
  p.row_begin = row_begin;
  p.row_end = row_end;
  p.col_begin = col_begin;
  p.indptr = v.indptr.ptr<const int64_t>();
  p.indices = v.indices.ptr<const int64_t>();
  p.values = v.values.ptr<const float>();
  p.colptr = inv.indptr.ptr<const int64_t>();
  p.inv_rows = inv.indices.ptr<const int64_t>();
  p.inv_values = inv.values.ptr<const float>();
  p.clamp_negative = clamp_negative;
  p.lambda_value = lambda_value;
  p.row_max = maxima.ptr<const double>();
  p.out = o.ptr<float>();
  p.out_row_stride = o.data ? o.strides[0] : 0;
  p.counts = c.ptr<int64_t>();
  p.out_indptr = oi.ptr<const int64_t>();
  p.out_indices = ox.ptr<int64_t>();
  p.out_values = ov.ptr<float>();
  p.scratch = s.ptr<float>();
  p.scratch_rows = s.data ? s.shape[0] : 0;
  py::gil_scoped_release release;
  k_reciprocal_jaccard(p, ip.device, ip.device_index, reinterpret_cast<void*>(stream));
}

void pairs_binding(const py::object& candidates, const py::object& distance, const py::object& row_max,
                   const py::object& indptr, const py::object& indices, const py::object& values,
                   double lambda_value, const py::object& out, uintptr_t stream) {
  const TensorView cand = checked_view(candidates, "candidates", 2, DType::kInt64);
  const TensorView dist = view_from_dlpack(distance, "distance");
  check_ndim(dist, 2);
  check_float_or_double(dist);
  check_contiguous(dist);
  CION_CHECK(dist.shape[0] == cand.shape[0] && dist.shape[1] == cand.shape[1], "distance must match candidates");
  const TensorView ip = view_from_dlpack(indptr, "indptr");
  check_ndim(ip, 1);
  const int64_t N = ip.shape[0] - 1;
  const Csr v = csr(indptr, indices, values, N, "indptr", "indices", "values");
  CION_CHECK(v.values.data, "values is required");
  const TensorView maxima = checked_view(row_max, "row_max", 1, DType::kFloat64, N);
  const TensorView o = checked_view(out, "out", 2, DType::kFloat32, cand.shape[0], true);
  CION_CHECK(o.shape[1] == cand.shape[1], "out must match candidates");
  CION_CHECK(cand.shape[0] <= N, "more queries than items");
  same_device(cand, {&dist, &v.indptr, &v.indices, &v.values, &maxima, &o});
  KReciprocalPairParams p;
  p.num_query = cand.shape[0];
  p.num_candidates = cand.shape[1];
  p.candidates = cand.ptr<const int64_t>();
  p.distance = dist.data;
  p.dtype = dist.dtype;
  p.row_max = maxima.ptr<const double>();
  p.indptr = v.indptr.ptr<const int64_t>();
  p.indices = v.indices.ptr<const int64_t>();
  p.values = v.values.ptr<const float>();
  p.lambda_value = lambda_value;
  p.out = o.ptr<float>();
  py::gil_scoped_release release;
  k_reciprocal_pairs(p, cand.device, cand.device_index, reinterpret_cast<void*>(stream));
}

}  // namespace

void bind_k_reciprocal(py::module_& m) {
  const char* internal = "Internal stage of k-reciprocal re-ranking; use cion_fast.ops.k_reciprocal_rerank.";
  m.def("k_reciprocal_select", &select_binding, py::arg("block"), py::arg("block_columns"), py::arg("row_norms"),
        py::arg("col_norms"), py::arg("row_begin"),
        py::arg("col_begin"), py::arg("symmetric"), py::arg("row_max"), py::arg("neighbour_value"),
        py::arg("neighbour_index"), py::arg("raw_out"), py::arg("num_query"), py::arg("status"),
        py::arg("stream"), internal);
  m.def("k_reciprocal_expand", &expand_binding, py::arg("neighbours"), py::arg("m1"), py::arg("mh"),
        py::arg("counts"), py::arg("indptr"), py::arg("indices"), py::arg("scratch"), py::arg("stream"), internal);
  m.def("k_reciprocal_weights", &weights_binding, py::arg("indptr"), py::arg("indices"), py::arg("row_max"),
        py::arg("values"), py::arg("features"), py::arg("gallery_features"), py::arg("q_q"), py::arg("q_g"), py::arg("g_g"),
        py::arg("graph_index"), py::arg("graph_distance"), py::arg("estimated"), py::arg("neighbours"),
        py::arg("neighbour_distances"), py::arg("stream"), internal);
  m.def("k_reciprocal_query_expansion", &query_expansion_binding, py::arg("neighbours"), py::arg("k2"),
        py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("counts"), py::arg("out_indptr"),
        py::arg("out_indices"), py::arg("out_values"), py::arg("stream"), internal);
  m.def("k_reciprocal_transpose", &transpose_binding, py::arg("indptr"), py::arg("indices"), py::arg("values"),
        py::arg("row_begin"), py::arg("col_counts"), py::arg("colptr"), py::arg("rows"), py::arg("out_values"),
        py::arg("cursor"), py::arg("stream"), internal);
  m.def("k_reciprocal_jaccard", &jaccard_binding, py::arg("mode"), py::arg("indptr"), py::arg("indices"),
        py::arg("values"), py::arg("colptr"), py::arg("inv_rows"), py::arg("inv_values"), py::arg("row_begin"),
        py::arg("row_end"), py::arg("col_begin"), py::arg("clamp_negative"), py::arg("lambda_value"),
        py::arg("row_max"), py::arg("out"), py::arg("counts"), py::arg("out_indptr"), py::arg("out_indices"),
        py::arg("out_values"), py::arg("scratch"), py::arg("stream"), internal);
  m.def("k_reciprocal_pairs", &pairs_binding, py::arg("candidates"), py::arg("distance"), py::arg("row_max"),
        py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("lambda_value"), py::arg("out"),
        py::arg("stream"), internal);
}

}  // namespace cion
