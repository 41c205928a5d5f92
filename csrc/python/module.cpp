// The one extension module, cion_fast._C: build information plus one bind_<op>() per op family.
#include <pybind11/pybind11.h>

#include "common/check.h"
#include "ops/runtime.h"

namespace py = pybind11;

namespace cion {
void bind_rank_metrics(py::module_& m);
void bind_tracklet_similarity(py::module_& m);
void bind_tracklet_prune(py::module_& m);
void bind_sliding_range_link(py::module_& m);
void bind_k_reciprocal(py::module_& m);
void bind_multicrop(py::module_& m);
void bind_widen_half(py::module_& m);
}  // namespace cion

#ifndef CION_FAST_VERSION
#define CION_FAST_VERSION "0.0.0+unknown"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "cion_fast compiled kernels (CPU/OpenMP and optional CUDA). Use cion_fast.ops.";
  // The kernels' input checks raise subclasses of ValueError / TypeError of their own, so that a
  // caller (the CLI) can tell a rejected input from a bug by type.
  py::register_exception<cion::ValueError>(m, "InputError", PyExc_ValueError);
  py::register_exception<cion::TypeError>(m, "InputTypeError", PyExc_TypeError);

  m.def("build_info", []() {
    const cion::BuildInfo info = cion::build_info();
    py::dict out;
    out["version"] = CION_FAST_VERSION;
    out["openmp"] = info.openmp;
    out["openmp_max_threads"] = info.openmp_max_threads;
    out["cuda"] = info.cuda;
    out["cuda_version"] = info.cuda_version.empty() ? py::object(py::none()) : py::str(info.cuda_version);
    py::list archs;
    for (const auto& arch : info.cuda_architectures) archs.append(arch);
    out["cuda_architectures"] = archs;
    out["multicrop_cpu_copy"] = info.multicrop_cpu_copy;
    return out;
  });
  m.def("cuda_device_count", &cion::cuda_device_count,
        "Number of CUDA devices usable now (0 when built without CUDA or with no driver/GPU).");

  cion::bind_rank_metrics(m);
  cion::bind_tracklet_similarity(m);
  cion::bind_tracklet_prune(m);
  cion::bind_sliding_range_link(m);
  cion::bind_k_reciprocal(m);
  cion::bind_multicrop(m);
  cion::bind_widen_half(m);
}
