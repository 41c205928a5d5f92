// The maths of the multicrop op written once for host and device (CION_HOST_DEVICE): parameter
// sampling, resampling filter taps, colour operations, blur kernels and reflect indexing. The CPU
// loops (csrc/cpu/multicrop_cpu.cpp) and the CUDA kernels (csrc/cuda/multicrop_cuda.cu) call these
// same functions, so the two backends sample bit-identical parameters and agree on pixels to float
// rounding.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/philox.h"
#include "ops/multicrop.h"

namespace cion {
namespace multicrop_math {

// ---- stage 1: parameter sampling (bit-reproducible: see common/philox.h) ------------------------

// Probability group of view v for blur_p / solarize_p: 0 = global view 1, 1 = other global views,
// 2 = local views.
CION_HOST_DEVICE int view_group(int64_t v, int64_t n_global) {
  return v < n_global ? (v == 0 ? 0 : 1) : 2;
}

CION_HOST_DEVICE double to_double(int64_t x) { return static_cast<double>(x); }

// torchvision RandomResizedCrop.get_params: 10 tries of (area scale ~ U(scale), log aspect ~
// U(log ratio)) until the box fits, else a centre crop clamped to the ratio range. Writes
// (top, left, height, width).
CION_HOST_DEVICE void random_resized_crop(PhiloxStream& rng, const MultiCropSettings& s,
                                          const double scale[2], int64_t height, int64_t width,
                                          int64_t* box) {
  const double area = mul_rn(to_double(height), to_double(width));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = mul_rn(area, lerp_rn(scale[0], scale[1], rng.uniform()));
    const double aspect = exp_reproducible(lerp_rn(s.log_ratio[0], s.log_ratio[1], rng.uniform()));
    const int64_t w = static_cast<int64_t>(round_half_even(sqrt_rn(mul_rn(target_area, aspect))));
    const int64_t h = static_cast<int64_t>(round_half_even(sqrt_rn(div_rn(target_area, aspect))));
    if (0 < w && w <= width && 0 < h && h <= height) {
      box[0] = rng.below(static_cast<uint64_t>(height - h + 1));
      box[1] = rng.below(static_cast<uint64_t>(width - w + 1));
      box[2] = h;
      box[3] = w;
      return;
    }
  }
  const double in_ratio = div_rn(to_double(width), to_double(height));
  int64_t w = width, h = height;
  if (in_ratio < s.ratio[0]) {
    h = static_cast<int64_t>(round_half_even(div_rn(to_double(w), s.ratio[0])));
  } else if (in_ratio > s.ratio[1]) {
    w = static_cast<int64_t>(round_half_even(mul_rn(to_double(h), s.ratio[1])));
  }
  // Only an extreme ratio range could round a side to 0 (torchvision would then fail): keep >= 1.
  h = h < 1 ? 1 : (h > height ? height : h);
  w = w < 1 ? 1 : (w > width ? width : w);
  box[0] = (height - h) / 2;
  box[1] = (width - w) / 2;
  box[2] = h;
  box[3] = w;
}

CION_HOST_DEVICE float uniform_float(PhiloxStream& rng, const double range[2]) {
  return static_cast<float>(lerp_rn(range[0], range[1], rng.uniform()));
}

// Draws every parameter of view v of image b (source height x width) and writes entry (b, v) of
// the arrays. The draws come in a fixed sequence from one Philox stream keyed by (seed, step, b, v):
// crop tries, flip, jitter, order, factors, grayscale, blur, solarise.
CION_HOST_DEVICE void sample_view(const MultiCropSettings& s, uint64_t seed, uint64_t step, int64_t b,
                                  int64_t v, int64_t height, int64_t width,
                                  const MultiCropViewParams& out) {
  PhiloxStream rng(seed, static_cast<uint32_t>(v), static_cast<uint32_t>(b),
                   static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32));
  const int64_t index = b * s.num_views() + v;
  const bool is_global = v < s.n_global;
  random_resized_crop(rng, s, is_global ? s.global_scale : s.local_scale, height, width, out.box + 4 * index);
  out.flip[index] = rng.bernoulli(s.flip_p);
  out.jitter_applied[index] = rng.bernoulli(s.jitter_p);
  // torch.randperm(4) as a Fisher-Yates shuffle.
  int64_t order[4] = {0, 1, 2, 3};
  for (int i = 3; i > 0; --i) {
    const int64_t j = rng.below(static_cast<uint64_t>(i + 1));
    const int64_t swap = order[i];
    order[i] = order[j];
    order[j] = swap;
  }
  for (int i = 0; i < 4; ++i) out.jitter_order[4 * index + i] = order[i];
  out.brightness[index] = uniform_float(rng, s.brightness);
  out.contrast[index] = uniform_float(rng, s.contrast);
  out.saturation[index] = uniform_float(rng, s.saturation);
  out.hue[index] = uniform_float(rng, s.hue);
  out.grayscale[index] = rng.bernoulli(s.grayscale_p);
  const int group = view_group(v, s.n_global);
  const bool blur = rng.bernoulli(s.blur_p[group]);
  const float sigma = uniform_float(rng, s.blur_sigma);
  out.blur_sigma[index] = blur ? sigma : 0.0f;
  out.solarize[index] = rng.bernoulli(s.solarize_p[group]);
}

// ---- stage 2: resampling taps (torch antialiased interpolate, align_corners=False) --------------

CION_HOST_DEVICE float filter_half_width(Interpolation mode) {
  return mode == Interpolation::kBilinear ? 1.0f : 2.0f;
}

CION_HOST_DEVICE float resample_filter(float x, Interpolation mode) {
  x = x < 0.0f ? -x : x;
  if (mode == Interpolation::kBilinear) return x < 1.0f ? 1.0f - x : 0.0f;
  constexpr float a = -0.5f;  // Keys' cubic, as PIL and torch's antialiased bicubic use
  if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
  if (x < 2.0f) return (((x - 5.0f) * x + 8.0f) * x - 4.0f) * a;
  return 0.0f;
}

// Upper bound on the taps of any output sample when `in_size` <= max_in_size samples are resampled
// to `out_size`: the window [centre - support + 0.5, centre + support + 0.5) holds at most
// floor(2 support) + 1 samples (support = half_width * max(scale, 1)); one more covers the float
// rounding of the scale in resample_taps.
inline int max_resample_taps(int64_t max_in_size, int64_t out_size, Interpolation mode) {
  const double scale = static_cast<double>(max_in_size) / static_cast<double>(out_size);
  const double support = filter_half_width(mode) * (scale >= 1.0 ? scale : 1.0);
  return static_cast<int>(std::ceil(2.0 * support)) + 2;
}

// Taps of output sample i when `in_size` samples are resampled to `out_size`, as torch's
// _compute_weights_aa computes them (same float/double steps): the filter is centred on
// scale * (i + 0.5), widened by the downscale factor, and the weights normalised to sum to
// `gain` (the caller folds the 1/255 of uint8 -> [0, 1] into it). Writes the weights, returns the
// tap count and sets *first to the first source sample.
CION_HOST_DEVICE int resample_taps(int64_t in_size, int64_t out_size, int64_t i, Interpolation mode,
                                   float gain, float* weights, int64_t* first) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const float support = filter_half_width(mode) * (scale >= 1.0f ? scale : 1.0f);
  const float center = scale * (static_cast<float>(i) + 0.5f);
  const float inv_scale = scale >= 1.0f ? static_cast<float>(1.0 / static_cast<double>(scale)) : 1.0f;
  int64_t lo = static_cast<int64_t>(static_cast<double>(center) - static_cast<double>(support) + 0.5);
  int64_t hi = static_cast<int64_t>(static_cast<double>(center) + static_cast<double>(support) + 0.5);
  lo = lo < 0 ? 0 : lo;
  hi = hi > in_size ? in_size : hi;
  const int count = static_cast<int>(hi - lo);
  float total = 0.0f;
  for (int j = 0; j < count; ++j) {
    const float offset = static_cast<float>(lo + j) - center;
    const float w = resample_filter(
        static_cast<float>((static_cast<double>(offset) + 0.5) * static_cast<double>(inv_scale)), mode);
    weights[j] = w;
    total += w;
  }
  const float norm = total != 0.0f ? gain / total : 0.0f;
  for (int j = 0; j < count; ++j) weights[j] *= norm;
  *first = lo;
  return count;
}

// ---- colour operations on [0, 1] floats (torchvision tensor semantics) --------------------------
//
// Templates over `Floats`: float, or on the CPU a GCC vector of floats (its fused colour sweep),
// with the same operations in every lane; selects are written as ternaries, which act lane by lane
// on vectors. Forced inline on the CPU so that each processor-specific copy of the sweep compiles
// them at its own vector width.
#if defined(__CUDACC__) || !defined(__GNUC__)
#define CION_COLOUR_OP CION_HOST_DEVICE
#else
#define CION_COLOUR_OP inline __attribute__((always_inline))
#endif

template <class Floats>
CION_COLOUR_OP Floats clamp01(Floats x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

// ITU-R 601 luma (torchvision's tensor path uses 0.2989 for red; PIL and we use 0.299).
template <class Floats>
CION_COLOUR_OP Floats gray_of(Floats r, Floats g, Floats b) {
  return 0.299f * r + 0.587f * g + 0.114f * b;
}

// a * x + (1 - a) * y clamped to [0, 1]: torchvision's _blend.
template <class Floats>
CION_COLOUR_OP Floats blend(float factor, Floats x, Floats y) {
  return clamp01(factor * x + (1.0f - factor) * y);
}

// One channel of HSV -> RGB: v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6 and
// n = 5, 3, 1 for R, G, B. The same function of (h, s, v) as the sector table of torchvision's
// _hsv2rgb (R = v q p p t v, G = t v v q p p, B = p p t v v q over the six sectors; p = v (1 - s),
// q = v (1 - s f), t = v (1 - s (1 - f))), written without a six-way select: GCC does not
// vectorise that one.
template <class Floats>
CION_COLOUR_OP Floats hsv_channel(float n, Floats h6, Floats v, Floats vs) {
  const Floats k_raw = n + h6;
  const Floats k_wrapped = k_raw - 6.0f;
  const Floats k = k_raw >= 6.0f ? k_wrapped : k_raw;
  const Floats rising = 4.0f - k;
  Floats m = k < rising ? k : rising;
  m = m < 1.0f ? m : 1.0f;
  m = m > 0.0f ? m : 0.0f;
  return v - vs * m;
}

// torchvision adjust_hue: RGB -> HSV, h <- (h + shift) mod 1, HSV -> RGB. Inputs in [0, 1], shift
// in [-0.5, 0.5]; outputs stay in [min, max] of the input channels. Written as selects between
// values that are all computed, so that the CPU loop vectorises and the GPU does not diverge.
template <class Floats>
CION_COLOUR_OP void shift_hue(Floats& r, Floats& g, Floats& b, float shift) {
  const Floats max_rg = r > g ? r : g, min_rg = r < g ? r : g;  // each one max/min instruction
  const Floats maxc = max_rg > b ? max_rg : b;
  const Floats minc = min_rg < b ? min_rg : b;
  const auto flat = maxc == minc;
  const Floats chroma = maxc - minc;
  const Floats s = chroma / (flat ? 1.0f : maxc);
  // torchvision divides by the chroma three times; one reciprocal changes the last bit only.
  const Floats inv_chroma = 1.0f / (flat ? 1.0f : chroma);
  const Floats rc = (maxc - r) * inv_chroma, gc = (maxc - g) * inv_chroma, bc = (maxc - b) * inv_chroma;
  const Floats h_red = bc - gc, h_green = 2.0f + rc - bc, h_blue = 4.0f + gc - rc;
  const Floats h6 = maxc == r ? h_red : (maxc == g ? h_green : h_blue);
  // h6 / 6 + 1 lies in [5/6, 11/6], so fmod(., 1) is one conditional subtraction; after the shift
  // h lies in (-0.5, 1.5), so Python's % 1.0 is one conditional correction.
  const Floats h_raw = h6 * (1.0f / 6.0f) + 1.0f;
  const Floats h_wrapped = h_raw - 1.0f;
  const Floats h = (h_raw >= 1.0f ? h_wrapped : h_raw) + shift;
  const Floats h_up = h + 1.0f, h_down = h - 1.0f;
  const Floats hue6 = 6.0f * (h < 0.0f ? h_up : (h >= 1.0f ? h_down : h));
  const Floats vs = maxc * s;
  r = hsv_channel(5.0f, hue6, maxc, vs);
  g = hsv_channel(3.0f, hue6, maxc, vs);
  b = hsv_channel(1.0f, hue6, maxc, vs);
}

// x >= 0.5 -> 1 - x (PIL's solarize at threshold 128).
template <class Floats>
CION_COLOUR_OP Floats solarize(Floats x) {
  const Floats inverted = 1.0f - x;
  return x >= 0.5f ? inverted : x;
}

// ---- Gaussian blur (torchvision gaussian_blur with kernel size 2 * ceil(3 sigma) + 1) -----------

// ceil(3 sigma) computed in double: 3 * a float is exact there, so every backend gets the same radius.
CION_HOST_DEVICE int blur_radius(float sigma) {
  return sigma > 0.0f ? static_cast<int>(ceil(3.0 * static_cast<double>(sigma))) : 0;
}
inline int max_blur_radius(double max_sigma) {
  return max_sigma > 0.0 ? static_cast<int>(std::ceil(3.0 * static_cast<double>(static_cast<float>(max_sigma)))) : 0;
}

// weights[0 .. 2 * radius]: exp(-d^2 / (2 sigma^2)) for d = -radius .. radius, normalised.
CION_HOST_DEVICE void blur_weights(float sigma, int radius, float* weights) {
  const float inv_two_var = 1.0f / (2.0f * sigma * sigma);
  float total = 0.0f;
  for (int d = -radius; d <= radius; ++d) {
    const float w = expf(-static_cast<float>(d * d) * inv_two_var);
    weights[d + radius] = w;
    total += w;
  }
  for (int d = 0; d <= 2 * radius; ++d) weights[d] /= total;
}

// torch.nn.functional.pad(mode="reflect") index for i in (-inf, inf), n >= 2: mirror about the
// first and last samples without repeating them, folded again when the padding exceeds n - 1.
CION_HOST_DEVICE int64_t reflect_index(int64_t i, int64_t n) {
  if (i >= 0 && i < n) return i;  // the common case, without a 64-bit modulo
  const int64_t period = 2 * (n - 1);
  i %= period;
  i = i < 0 ? i + period : i;
  return i < n ? i : period - i;
}

}  // namespace multicrop_math
}  // namespace cion
