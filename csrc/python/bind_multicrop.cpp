// Binding of the multicrop op: DLPack capsules + a settings dict -> MultiCropParams. The config,
// image layout and explicit parameters are validated (with friendlier messages) in
// cion_fast/ops/multicrop.py; these checks are the last line that keeps a wrong call from reading
// or writing out of bounds.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/philox.h"
#include "ops/multicrop.h"
#include "python/dlpack_view.h"

namespace py = pybind11;

namespace cion {

namespace {

template <size_t N>
void read_doubles(const py::dict& settings, const char* key, double (&out)[N]) {
  const auto values = settings[key].cast<std::vector<double>>();
  CION_CHECK(values.size() == N, "settings['", key, "'] must have ", N, " values");
  for (size_t i = 0; i < N; ++i) out[i] = values[i];
}

template <size_t N>
void read_floats(const py::dict& settings, const char* key, float (&out)[N]) {
  double values[N];
  read_doubles(settings, key, values);
  for (size_t i = 0; i < N; ++i) out[i] = static_cast<float>(values[i]);
}

MultiCropSettings parse_settings(const py::dict& d) {
  MultiCropSettings s;
  s.n_global = d["n_global"].cast<int64_t>();
  s.n_local = d["n_local"].cast<int64_t>();
  double size[2];
  read_doubles(d, "global_size", size);
  s.global_height = static_cast<int64_t>(size[0]);
  s.global_width = static_cast<int64_t>(size[1]);
  read_doubles(d, "local_size", size);
  s.local_height = static_cast<int64_t>(size[0]);
  s.local_width = static_cast<int64_t>(size[1]);
  CION_CHECK(s.n_global >= 0 && s.n_local >= 0 && s.num_views() < (1 << 16), "view counts out of range");
  CION_CHECK(s.global_height >= 2 && s.global_width >= 2 && s.local_height >= 2 && s.local_width >= 2,
             "view sizes must be at least 2 x 2");
  read_doubles(d, "global_scale", s.global_scale);
  read_doubles(d, "local_scale", s.local_scale);
  read_doubles(d, "ratio", s.ratio);
  CION_CHECK(s.ratio[0] > 0.0 && s.ratio[0] <= s.ratio[1], "ratio must satisfy 0 < lo <= hi");
  // Computed once on the host, so CPU and CUDA sampling start from the same doubles.
  s.log_ratio[0] = std::log(s.ratio[0]);
  s.log_ratio[1] = std::log(s.ratio[1]);
  s.flip_p = d["flip_p"].cast<double>();
  s.jitter_p = d["jitter_p"].cast<double>();
  read_doubles(d, "brightness", s.brightness);
  read_doubles(d, "contrast", s.contrast);
  read_doubles(d, "saturation", s.saturation);
  read_doubles(d, "hue", s.hue);
  CION_CHECK(s.hue[0] >= -0.5 && s.hue[1] <= 0.5, "hue factors must lie in [-0.5, 0.5]");
  s.grayscale_p = d["grayscale_p"].cast<double>();
  read_doubles(d, "blur_p", s.blur_p);
  read_doubles(d, "blur_sigma", s.blur_sigma);
  read_doubles(d, "solarize_p", s.solarize_p);
  read_floats(d, "mean", s.mean);
  read_floats(d, "std", s.std);
  const std::string mode = d["interpolation"].cast<std::string>();
  CION_CHECK(mode == "bilinear" || mode == "bicubic", "interpolation must be 'bilinear' or 'bicubic'");
  s.interpolation = mode == "bilinear" ? Interpolation::kBilinear : Interpolation::kBicubic;
  return s;
}

void check_param_array(const TensorView& t, const TensorView& images, int64_t batch, int64_t views,
                       int64_t last, DType dtype) {
  check_dtype(t, dtype);
  check_contiguous(t);
  check_same_device(images, t);
  const int ndim = last > 0 ? 3 : 2;
  check_ndim(t, ndim);
  CION_CHECK(t.shape[0] == batch && t.shape[1] == views && (last == 0 || t.shape[2] == last), t.name,
             " must have shape [", batch, ", ", views, last > 0 ? str_cat(", ", last) : std::string(), "]");
}

void multicrop_binding(const py::object& images, const py::object& image_offsets,
                       const py::object& image_sizes, int64_t batch, int64_t height, int64_t width,
                       int64_t max_height, int64_t max_width, bool channels_last,
                       const py::dict& settings, uint64_t seed, uint64_t step, bool sample,
                       double max_blur_sigma,
                       const py::object& box, const py::object& flip, const py::object& jitter_applied,
                       const py::object& brightness, const py::object& contrast,
                       const py::object& saturation, const py::object& hue,
                       const py::object& jitter_order, const py::object& grayscale,
                       const py::object& blur_sigma, const py::object& solarize,
                       const py::object& global_views, const py::object& local_views, uintptr_t stream) {
  MultiCropParams p;
  p.settings = parse_settings(settings);
  const int64_t V = p.settings.num_views();

  const TensorView img = view_from_dlpack(images, "images");
  check_dtype(img, DType::kUInt8);
  check_contiguous(img);
  p.images = img.ptr<uint8_t>();
  p.batch = batch;
  p.height = height;
  p.width = width;
  p.max_height = max_height;
  p.max_width = max_width;
  p.channels_last = channels_last;
  CION_CHECK(batch >= 0 && batch < (int64_t(1) << 32), "batch size out of range");

  const TensorView offsets = optional_view_from_dlpack(image_offsets, "offsets");
  const TensorView sizes = optional_view_from_dlpack(image_sizes, "sizes");
  CION_CHECK((offsets.data == nullptr) == (sizes.data == nullptr), "offsets and sizes go together");
  if (offsets.data) {  // ragged
    check_ndim(offsets, 1);
    check_dtype(offsets, DType::kInt64);
    check_contiguous(offsets);
    check_ndim(sizes, 2);
    check_dtype(sizes, DType::kInt64);
    check_contiguous(sizes);
    check_same_device(img, offsets);
    check_same_device(img, sizes);
    CION_CHECK(offsets.shape[0] == batch && sizes.shape[0] == batch && sizes.shape[1] == 2,
               "offsets must be [B] and sizes [B, 2]");
    p.image_offsets = offsets.ptr<int64_t>();
    p.image_sizes = sizes.ptr<int64_t>();
    if (img.device == Device::kCPU) {
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t h = p.image_sizes[2 * b], w = p.image_sizes[2 * b + 1], o = p.image_offsets[b];
        // h and w are bounded first, so 3 * h * w cannot overflow; o is compared, never added.
        CION_CHECK(h >= 2 && w >= 2 && h <= max_height && w <= max_width && o >= 0 &&
                       o <= img.numel() - 3 * h * w,
                   "image ", b, " lies outside the buffer or is smaller than 2 x 2");
      }
    }
  } else {
    CION_CHECK(height >= 2 && width >= 2 && height <= max_height && width <= max_width,
               "images must be at least 2 x 2");
    p.image_stride = 3 * height * width;
    CION_CHECK(batch * p.image_stride <= img.numel(), "images holds fewer than batch images");
  }

  p.seed = seed;
  p.step = step;
  p.sample = sample;
  CION_CHECK(max_blur_sigma >= 0.0 && max_blur_sigma <= 64.0, "max_blur_sigma out of range");
  p.max_blur_sigma = static_cast<float>(max_blur_sigma);
  const TensorView t_box = view_from_dlpack(box, "box", true);
  const TensorView t_flip = view_from_dlpack(flip, "flip", true);
  const TensorView t_jitter = view_from_dlpack(jitter_applied, "jitter_applied", true);
  const TensorView t_brightness = view_from_dlpack(brightness, "brightness", true);
  const TensorView t_contrast = view_from_dlpack(contrast, "contrast", true);
  const TensorView t_saturation = view_from_dlpack(saturation, "saturation", true);
  const TensorView t_hue = view_from_dlpack(hue, "hue", true);
  const TensorView t_order = view_from_dlpack(jitter_order, "jitter_order", true);
  const TensorView t_gray = view_from_dlpack(grayscale, "grayscale", true);
  const TensorView t_sigma = view_from_dlpack(blur_sigma, "blur_sigma", true);
  const TensorView t_solarize = view_from_dlpack(solarize, "solarize", true);
  check_param_array(t_box, img, batch, V, 4, DType::kInt64);
  check_param_array(t_order, img, batch, V, 4, DType::kInt64);
  for (const TensorView* t : {&t_flip, &t_jitter, &t_gray, &t_solarize})
    check_param_array(*t, img, batch, V, 0, DType::kBool);
  for (const TensorView* t : {&t_brightness, &t_contrast, &t_saturation, &t_hue, &t_sigma})
    check_param_array(*t, img, batch, V, 0, DType::kFloat32);
  p.views.box = t_box.ptr<int64_t>();
  p.views.flip = t_flip.ptr<uint8_t>();
  p.views.jitter_applied = t_jitter.ptr<uint8_t>();
  p.views.brightness = t_brightness.ptr<float>();
  p.views.contrast = t_contrast.ptr<float>();
  p.views.saturation = t_saturation.ptr<float>();
  p.views.hue = t_hue.ptr<float>();
  p.views.jitter_order = t_order.ptr<int64_t>();
  p.views.grayscale = t_gray.ptr<uint8_t>();
  p.views.blur_sigma = t_sigma.ptr<float>();
  p.views.solarize = t_solarize.ptr<uint8_t>();

  const TensorView t_global = view_from_dlpack(global_views, "global_views", true);
  const TensorView t_local = view_from_dlpack(local_views, "local_views", true);
  const MultiCropSettings& s = p.settings;
  for (const TensorView* t : {&t_global, &t_local}) {
    check_ndim(*t, 5);
    if (t->numel() > 0) check_contiguous(*t);  // numpy exports empty arrays with zero strides
    check_same_device(img, *t);
    CION_CHECK_TYPE(t->dtype == DType::kFloat32 || t->dtype == DType::kFloat16 || t->dtype == DType::kBFloat16,
                    t->name, " must be float32, float16 or bfloat16");
  }
  CION_CHECK(t_global.dtype == t_local.dtype, "global_views and local_views must share a dtype");
  CION_CHECK(t_global.shape[0] == s.n_global && t_global.shape[1] == batch && t_global.shape[2] == 3 &&
                 t_global.shape[3] == s.global_height && t_global.shape[4] == s.global_width,
             "global_views must have shape [n_global, B, 3, H, W]");
  CION_CHECK(t_local.shape[0] == s.n_local && t_local.shape[1] == batch && t_local.shape[2] == 3 &&
                 t_local.shape[3] == s.local_height && t_local.shape[4] == s.local_width,
             "local_views must have shape [n_local, B, 3, h, w]");
  p.global_views = t_global.data;
  p.local_views = t_local.data;
  p.out_dtype = t_global.dtype;

  if (!sample && img.device == Device::kCPU) {
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t h = p.image_sizes ? p.image_sizes[2 * b] : height;
      const int64_t w = p.image_sizes ? p.image_sizes[2 * b + 1] : width;
      for (int64_t v = 0; v < V; ++v) {
        const int64_t* bx = p.views.box + 4 * (b * V + v);
        CION_CHECK(bx[0] >= 0 && bx[1] >= 0 && bx[2] >= 1 && bx[3] >= 1 && bx[0] + bx[2] <= h &&
                       bx[1] + bx[3] <= w,
                   "box of image ", b, ", view ", v, " lies outside the image");
        for (int k = 0; k < 4; ++k) {
          const int64_t op = p.views.jitter_order[4 * (b * V + v) + k];
          CION_CHECK(op >= 0 && op < 4, "jitter_order entries must be in [0, 4)");
        }
      }
    }
  }

  py::gil_scoped_release release;
  multicrop(p, img.device, img.device_index, reinterpret_cast<void*>(stream));
}

}  // namespace

void bind_multicrop(py::module_& m) {
  m.def("multicrop", &multicrop_binding, py::arg("images"), py::arg("image_offsets"),
        py::arg("image_sizes"), py::arg("batch"), py::arg("height"), py::arg("width"),
        py::arg("max_height"), py::arg("max_width"), py::arg("channels_last"), py::arg("settings"),
        py::arg("seed"), py::arg("step"), py::arg("sample"), py::arg("max_blur_sigma"), py::arg("box"), py::arg("flip"),
        py::arg("jitter_applied"), py::arg("brightness"), py::arg("contrast"), py::arg("saturation"),
        py::arg("hue"), py::arg("jitter_order"), py::arg("grayscale"), py::arg("blur_sigma"),
        py::arg("solarize"), py::arg("global_views"), py::arg("local_views"), py::arg("stream"),
        "Renders every multi-crop view of a uint8 batch. Use cion_fast.ops.multicrop.");
  m.def(
      "philox4x32_10",
      [](std::vector<uint32_t> counter, std::vector<uint32_t> key) {
        CION_CHECK(counter.size() == 4 && key.size() == 2, "counter has 4 words, key 2");
        const Philox4x32 out = philox4x32_10(Philox4x32{{counter[0], counter[1], counter[2], counter[3]}},
                                             key[0], key[1]);
        return std::vector<uint32_t>{out.v[0], out.v[1], out.v[2], out.v[3]};
      },
      py::arg("counter"), py::arg("key"),
      "The Philox4x32-10 block function the samplers use (exposed for known-answer tests).");
}

}  // namespace cion
