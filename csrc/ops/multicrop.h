// Fused multi-crop augmentation (DINO / CION views); the recipe and its departures from torchvision:
// docs/ALGORITHMS.md, "Multi-crop augmentation".
//
// One call turns a batch of uint8 RGB images into every global and local view. Two stages:
//   1. sample (optional): per (image, view), draw the crop box, flip, colour-jitter factors and
//      order, grayscale, blur sigma and solarise flag with Philox keyed by (seed, step, image,
//      view) -- see multicrop_math.h, shared by host and device so both draw identical values;
//   2. render: per (image, view), antialiased resize of the box, flip, colour ops in the sampled
//      order, grayscale, Gaussian blur, solarise, normalise, store.
//
// Device/stream contract: every pointer lives on `device`; CUDA work is enqueued on `stream` (the
// caller's current stream) and nothing synchronises. The parameter arrays are validated by the
// caller (the Python layer) when they are given rather than sampled: the kernels trust boxes to lie
// inside their image.
#pragma once
#include <cstdint>

#include "common/dispatch.h"  // CION_HOST_DEVICE
#include "common/tensor_view.h"

namespace cion {

enum class Interpolation : int { kBilinear = 0, kBicubic = 1 };

// Configuration scalars (cion_fast.ops.MultiCropConfig, validated in Python). Views are numbered
// globals first: v < n_global is global view v, then local views.
struct MultiCropSettings {
  int64_t n_global = 2;
  int64_t n_local = 8;
  int64_t global_height = 256, global_width = 128;
  int64_t local_height = 128, local_width = 64;
  double global_scale[2] = {0.8, 1.0};  // crop area / image area, uniform in [lo, hi)
  double local_scale[2] = {0.05, 0.8};
  double ratio[2] = {0.4, 0.6};          // crop width / height, log-uniform
  double log_ratio[2] = {0.0, 0.0};      // log(ratio), computed once by the caller (host)
  double flip_p = 0.5;
  double jitter_p = 0.8;
  // Colour-jitter factor ranges [lo, hi] (torchvision ColorJitter: brightness b -> [1 - b, 1 + b]).
  double brightness[2] = {0.6, 1.4};
  double contrast[2] = {0.6, 1.4};
  double saturation[2] = {0.8, 1.2};
  double hue[2] = {-0.1, 0.1};
  double grayscale_p = 0.2;
  double blur_p[3] = {1.0, 0.1, 0.5};      // global view 1, other global views, local views
  double blur_sigma[2] = {0.1, 2.0};
  double solarize_p[3] = {0.0, 0.2, 0.0};  // same grouping
  // Per-channel normalisation, always filled by the binding from MultiCropConfig (whose default is
  // cion_fast.ops.IMAGENET_MEAN / IMAGENET_STD, the one definition); identity until then.
  float mean[3] = {0.0f, 0.0f, 0.0f};
  float std[3] = {1.0f, 1.0f, 1.0f};
  Interpolation interpolation = Interpolation::kBilinear;

  CION_HOST_DEVICE int64_t num_views() const { return n_global + n_local; }
};

// Per (image, view) parameters, each array [batch, num_views, ...] C-contiguous, on `device`.
// Written by the sample stage, read by the render stage (or given by the caller).
struct MultiCropViewParams {
  int64_t* box = nullptr;           // [B, V, 4] (top, left, height, width) in source pixels
  uint8_t* flip = nullptr;          // [B, V] bool: mirror the view horizontally
  uint8_t* jitter_applied = nullptr;  // [B, V] bool: apply the four colour ops below
  float* brightness = nullptr;      // [B, V] factors; used only where jitter_applied
  float* contrast = nullptr;        // [B, V]
  float* saturation = nullptr;      // [B, V]
  float* hue = nullptr;             // [B, V] in [-0.5, 0.5]
  int64_t* jitter_order = nullptr;  // [B, V, 4] a permutation of 0 brightness, 1 contrast,
                                    // 2 saturation, 3 hue (torchvision's ids)
  uint8_t* grayscale = nullptr;     // [B, V] bool
  float* blur_sigma = nullptr;      // [B, V] Gaussian sigma in output pixels; 0 = no blur
  uint8_t* solarize = nullptr;      // [B, V] bool
};

struct MultiCropParams {
  // Source images, uint8 RGB. Image b starts at element `image_offsets[b]` of `images` (or at
  // b * image_stride when image_offsets is null) and has size image_sizes[2b] x image_sizes[2b+1]
  // (or height x width when image_sizes is null). channels_last: HWC (pixel (y, x, c) at
  // (y * W + x) * 3 + c), else CHW (at (c * H + y) * W + x).
  const uint8_t* images = nullptr;
  const int64_t* image_offsets = nullptr;  // [B] or null
  const int64_t* image_sizes = nullptr;    // [B, 2] (height, width) or null
  int64_t image_stride = 0;
  int64_t height = 0, width = 0;  // the uniform size when image_sizes is null
  int64_t max_height = 0, max_width = 0;  // the largest source (bounds the filter tap counts)
  bool channels_last = true;
  int64_t batch = 0;

  MultiCropSettings settings;
  uint64_t seed = 0;
  uint64_t step = 0;
  bool sample = true;  // false: the view parameters are given, skip stage 1
  MultiCropViewParams views;
  // Largest blur sigma of any view (the config's range when sampling, else the given maximum):
  // sizes the CUDA kernel's shared-memory halo.
  float max_blur_sigma = 0.0f;

  // Outputs, C-contiguous: global_views [n_global, B, 3, global_height, global_width] and
  // local_views [n_local, B, 3, local_height, local_width], of dtype out_dtype (float32, float16
  // or bfloat16). Values are (x - mean) / std of the augmented view in [0, 1].
  void* global_views = nullptr;
  void* local_views = nullptr;
  DType out_dtype = DType::kFloat32;
};

// Dispatches on the device of the arrays (CPU: OpenMP over (image, view); CUDA: one block per
// (image, view)).
void multicrop(const MultiCropParams& params, Device device, int device_index, void* stream);

void multicrop_cpu(const MultiCropParams& params);

// Which copy of the CPU kernel's hand-dispatched loops this process runs: "avx512", "avx2" or
// "baseline" (the widest the processor has, capped by CION_FAST_MULTICROP_ISA).
const char* multicrop_cpu_copy();
#if defined(CION_FAST_WITH_CUDA)
void multicrop_cuda(const MultiCropParams& params, int device_index, void* stream);
#endif

}  // namespace cion
