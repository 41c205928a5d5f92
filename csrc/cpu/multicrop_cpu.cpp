// CPU multicrop: OpenMP over (image, view) pairs. One thread renders a whole view in planar float
// buffers of its own ([3, H, W]: 384 KB for a 256x128 view, 768 KB with its horizontally blurred
// copy, so they stay in the core's L2), a block of rows at a time so that consecutive steps find
// the block in L1:
//
//   resample   per output row, rows first (a weighted sum of a few whole source rows, uint8 ->
//              float with the 1/255 folded into the weights), then columns into the planes,
//              mirroring x when flipped; on AVX-512 through planar lines, 16 outputs at a time;
//   colour     one sweep over the block: each vector of pixels is loaded once, goes through the
//              jitter ops in the sampled order and grayscale in registers, and is either stored
//              back or finished (solarised, normalised, converted) straight into the output.
//              Contrast needs the mean gray of the *current* image, so when it is drawn the ops
//              before it run in the first sweep (the gray summed after it) and the rest in a second;
//   blur       horizontal pass of each reflect-padded row, then the vertical pass row by row, each
//              row of the three channels finished by a sweep without colour steps.
//
// Without contrast and blur a view is one sweep: resample, colour and finish per block of rows.
// The per-pixel maths is the shared code of ops/multicrop_math.h.

// The colour ops are selects between computed values (clamps, hue sectors, solarise): GCC
// vectorises them only without -ftrapping-math, and the AVX-512 / AVX2 copies of the hot loops
// (CION_SIMD_CLONES and the target-specific functions) must not contract a multiply-add. Both are
// set here, before any code: no result changes, and every copy is bit-identical to the baseline one
// (sampling, compiled here too, stays bit-exact).
#include "common/cpu_features.h"
CION_SIMD_CLONES_SAME_ROUNDING
// Vectors pass by value between the always-inlined colour helpers: no call, so no ABI is involved.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/cache_line_vector.h"
#include "common/dispatch.h"
// The hand-dispatched copies (planar AVX-512 resampling, AVX-512 / AVX2 colour sweep): x86 GCC, where
// the pragma above holds, so that they round as the baseline copy does.
#if defined(CION_X86_DISPATCH) && defined(CION_SAME_ROUNDING)
#define CION_MULTICROP_COPIES 1
#include <immintrin.h>
#endif
#include "common/parallel.h"
#include "ops/multicrop.h"
#include "ops/multicrop_math.h"

namespace cion {
namespace {

using namespace multicrop_math;

constexpr int64_t kBlockPixels = 2048;  // rows per block: about 24 KB of the three planes

// Loads and stores of a vector of floats (or of one float) at any float's address, through a type
// that may alias floats. Not memcpy: a byte copy may alias anything, and GCC split the 32-byte ones
// into halves whose reload then missed store forwarding.
template <class Floats>
struct AnyAddress {
  typedef Floats type;
};

#if defined(__GNUC__)
// Vectors of 16, 8 and 4 floats. The blur keeps a block of 16 sums in registers across its taps (a
// loop over the samples per tap loads and stores every sum at every tap), adding the terms in the
// same order as that loop: the same results wherever multiply-adds are not contracted (x86-64 GCC,
// see CION_SIMD_CLONES_SAME_ROUNDING). A vector type, not a 16-float array: GCC vectorised the
// array loop into a mix of widths, slower than before.
typedef float Floats16 __attribute__((vector_size(64)));
typedef float Floats8 __attribute__((vector_size(32)));
typedef float Floats4 __attribute__((vector_size(16)));  // SSE on x86-64, NEON on ARM
template <>
struct AnyAddress<Floats16> {
  typedef float type __attribute__((vector_size(64), aligned(4), may_alias));
};
template <>
struct AnyAddress<Floats8> {
  typedef float type __attribute__((vector_size(32), aligned(4), may_alias));
};
template <>
struct AnyAddress<Floats4> {
  typedef float type __attribute__((vector_size(16), aligned(4), may_alias));
};
#define CION_FLOAT_VECTORS 1
#endif

template <class Floats>
CION_COLOUR_OP Floats load_floats(const float* p) {
  return *reinterpret_cast<const typename AnyAddress<Floats>::type*>(p);
}
template <class Floats>
CION_COLOUR_OP void store_floats(float* p, Floats v) {
  *reinterpret_cast<typename AnyAddress<Floats>::type*>(p) = v;
}

// ---- leaf loops (one ISA clone each) ------------------------------------------------------------

// line[j] = sum_k w[k] * src[k * row_stride + j] for j < n: the row pass over HWC source rows. (Not in
// blocks of 16 sums held across the taps as the blur: GCC 12 converts a vector of bytes to floats
// one byte at a time, 1.5x slower.)
CION_SIMD_CLONES void rows_interleaved(const uint8_t* src, int64_t row_stride, const float* w, int64_t taps,
                                   int64_t n, float* line) {
  for (int64_t j = 0; j < n; ++j) line[j] = w[0] * static_cast<float>(src[j]);
  for (int64_t k = 1; k < taps; ++k) {
    const uint8_t* q = src + k * row_stride;
    const float wk = w[k];
    for (int64_t j = 0; j < n; ++j) line[j] += wk * static_cast<float>(q[j]);
  }
}

// Same over one CHW source plane, written into channel c of the interleaved line.
CION_SIMD_CLONES void rows_planar(const uint8_t* src, int64_t row_stride, const float* w, int64_t taps,
                              int64_t n, float* line) {
  for (int64_t j = 0; j < n; ++j) line[3 * j] = w[0] * static_cast<float>(src[j]);
  for (int64_t k = 1; k < taps; ++k) {
    const uint8_t* q = src + k * row_stride;
    const float wk = w[k];
    for (int64_t j = 0; j < n; ++j) line[3 * j] += wk * static_cast<float>(q[j]);
  }
}

// Column pass of one output row: out_{r,g,b}[x] = sum_k w[x][k] * line[first[x] + k], the line
// interleaved RGB, x mirrored when flipped. Every pixel runs the same `taps` (its weights are
// zero-padded to it and the line has zeroed slack after the last pixel): a per-pixel tap count
// alternates between two values and the loop exit then mispredicts at almost every pixel. Small
// counts are unrolled (Taps > 0), others loop (Taps == 0).
template <int Taps>
inline void columns_fixed(const float* line, const float* weights, const int64_t* first, int stride, int taps,
                          bool flip, int64_t W, float* out_r, float* out_g, float* out_b) {
  const int n = Taps > 0 ? Taps : taps;
  for (int64_t x = 0; x < W; ++x) {
    const int64_t xs = flip ? W - 1 - x : x;
    const float* wx = weights + xs * stride;
    const float* p = line + 3 * first[xs];
#if defined(CION_FLOAT_VECTORS)
    // One vector holds an interleaved RGB pixel plus the next pixel's red, computed and dropped.
    Floats4 acc = wx[0] * load_floats<Floats4>(p);
    for (int k = 1; k < n; ++k) acc += wx[k] * load_floats<Floats4>(p + 3 * k);
    out_r[x] = acc[0];
    out_g[x] = acc[1];
    out_b[x] = acc[2];
#else
    float r = 0.0f, g = 0.0f, b = 0.0f;
    for (int k = 0; k < n; ++k) {
      r += wx[k] * p[3 * k];
      g += wx[k] * p[3 * k + 1];
      b += wx[k] * p[3 * k + 2];
    }
    out_r[x] = r;
    out_g[x] = g;
    out_b[x] = b;
#endif
  }
}

CION_SIMD_CLONES void columns(const float* line, const float* weights, const int64_t* first, int stride, int taps,
                          bool flip, int64_t W, float* out_r, float* out_g, float* out_b) {
  switch (taps) {
    case 1: columns_fixed<1>(line, weights, first, stride, taps, flip, W, out_r, out_g, out_b); break;
    case 2: columns_fixed<2>(line, weights, first, stride, taps, flip, W, out_r, out_g, out_b); break;
    case 3: columns_fixed<3>(line, weights, first, stride, taps, flip, W, out_r, out_g, out_b); break;
    case 4: columns_fixed<4>(line, weights, first, stride, taps, flip, W, out_r, out_g, out_b); break;
    case 5: columns_fixed<5>(line, weights, first, stride, taps, flip, W, out_r, out_g, out_b); break;
    case 6: columns_fixed<6>(line, weights, first, stride, taps, flip, W, out_r, out_g, out_b); break;
    default: columns_fixed<0>(line, weights, first, stride, taps, flip, W, out_r, out_g, out_b); break;
  }
}

// Sum of the gray of n pixels in eight float lanes, lane l summing pixels l, l + 8, ... (a fixed
// order that needs no reassociation flags), then the tail and the lanes in double. The lanes are
// one vector: GCC vectorised the equivalent eight-float array through permutes, 3x slower.
CION_SIMD_CLONES double gray_sum(const float* r, const float* g, const float* b, int64_t n) {
  int64_t i = 0;
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#if defined(CION_FLOAT_VECTORS)
  Floats8 sums = {0, 0, 0, 0, 0, 0, 0, 0};
  for (; i + 8 <= n; i += 8)
    sums += gray_of(load_floats<Floats8>(r + i), load_floats<Floats8>(g + i), load_floats<Floats8>(b + i));
  for (int l = 0; l < 8; ++l) lanes[l] = sums[l];
#else
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += gray_of(r[i + l], g[i + l], b[i + l]);
#endif
  double total = 0.0;
  for (; i < n; ++i) total += gray_of(r[i], g[i], b[i]);
  for (int l = 0; l < 8; ++l) total += lanes[l];
  return total;
}

// dst[x] = k[r] * rows[r][x] + sum_{d = 1..r} k[r + d] * (rows[r - d][x] + rows[r + d][x]), rows[i]
// = base + offsets[i]: a symmetric kernel of 2 r + 1 taps over rows of W samples (the mirrored taps
// share a multiply), the terms added in that order for every x.
CION_SIMD_CLONES void blur_rows(const float* base, const int64_t* offsets, const float* kernel, int radius, int64_t W,
                                float* dst) {
  auto rows = [&](int i) { return base + offsets[i]; };
  const float* centre = rows(radius);
  int64_t x0 = 0;
#if defined(CION_FLOAT_VECTORS)
  for (; x0 + 16 <= W; x0 += 16) {
    Floats16 sum = kernel[radius] * load_floats<Floats16>(centre + x0);
    for (int d = 1; d <= radius; ++d)
      sum += kernel[radius + d] *
             (load_floats<Floats16>(rows(radius - d) + x0) + load_floats<Floats16>(rows(radius + d) + x0));
    store_floats(dst + x0, sum);
  }
#endif
  for (int64_t x = x0; x < W; ++x) {
    float sum = kernel[radius] * centre[x];
    for (int d = 1; d <= radius; ++d) sum += kernel[radius + d] * (rows(radius - d)[x] + rows(radius + d)[x]);
    dst[x] = sum;
  }
}

// ---- one view ------------------------------------------------------------------------------------

// Resampling taps of every output sample along one axis, zero-padded to a fixed stride.
struct AxisTaps {
  std::vector<float> weights;  // [out_size, stride], zero after count[i]
  std::vector<int64_t> first;  // [out_size] first source sample
  std::vector<int> count;      // [out_size]
  int stride = 0;
  int max_count = 0;

  void compute(int64_t in_size, int64_t out_size, Interpolation mode, float gain) {
    stride = max_resample_taps(in_size, out_size, mode);
    weights.assign(static_cast<size_t>(out_size * stride), 0.0f);
    first.resize(static_cast<size_t>(out_size));
    count.resize(static_cast<size_t>(out_size));
    max_count = 0;
    for (int64_t i = 0; i < out_size; ++i) {
      count[i] = resample_taps(in_size, out_size, i, mode, gain, &weights[i * stride], &first[i]);
      max_count = std::max(max_count, count[i]);
    }
  }
};

// ---- which copy runs ------------------------------------------------------------------------------

// The widest hand-dispatched copy this processor runs (the planar resampling needs AVX-512 BW/VL,
// the colour sweep has AVX-512, AVX2 and baseline widths), capped by CION_FAST_MULTICROP_ISA
// ("avx2" or "baseline", read once per process: the tests run every copy in a subprocess). Every
// copy gives the same bits. The CION_SIMD_CLONES loops are the loader's choice, not capped.
enum class MulticropCopy { kBaseline, kAvx2, kAvx512 };

MulticropCopy multicrop_copy() {
  static const MulticropCopy copy = [] {
#if defined(CION_MULTICROP_COPIES)
    const IsaCap cap = isa_cap("CION_FAST_MULTICROP_ISA");
    if (cap != IsaCap::kBaseline && cap != IsaCap::kAvx2 && cpu_has_avx512bw_vl()) return MulticropCopy::kAvx512;
    if (cap != IsaCap::kBaseline && cpu_has_avx2_fma()) return MulticropCopy::kAvx2;
#endif
    return MulticropCopy::kBaseline;
  }();
  return copy;
}

// ---- the resampling in AVX-512: planar lines, 16 outputs at a time --------------------------------
//
// Where every block of 16 output columns reads its taps from a window of 32 source samples (all
// upscales, and downscales up to ~1.8x: nearly every view of the CION recipe, all but local crops
// over ~120 pixels wide), the row pass writes one line per channel and the column pass makes each
// tap of 16 outputs one two-register permute of that window. The generic path (an interleaved
// line, one pixel's three channels per 4-lane vector) needs about seven times its instructions.
// Same terms in the same order, no contraction: the same bits.

// The column pass of one view in blocks of 16 output samples, in output order (flip applied), each
// block's taps zero-padded to the view's common count like the generic path's.
struct ColumnBlocks {
  std::vector<int64_t> base;    // [blocks] first source sample of the block's 32-sample window
  std::vector<int32_t> index;   // [blocks, taps, 16] source sample - base, per output and tap
  std::vector<float> weights;   // [blocks, taps, 16] 0 for the padded taps and past the last output
  bool fit = false;             // every block's taps lie inside its window

  void compute(const AxisTaps& cols, int64_t W, bool flip) {
    const int taps = cols.max_count;
    const int64_t blocks = (W + 15) / 16;
    base.assign(static_cast<size_t>(blocks), 0);
    index.assign(static_cast<size_t>(blocks * taps * 16), 0);
    weights.assign(static_cast<size_t>(blocks * taps * 16), 0.0f);
    fit = true;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t lanes = std::min<int64_t>(16, W - 16 * b);
      auto source_of = [&](int64_t lane) { return flip ? W - 1 - (16 * b + lane) : 16 * b + lane; };
      // first[] rises with the source sample, so the window starts at the lowest one's first tap
      // (every offset is checked to lie in the window all the same).
      base[b] = std::min(cols.first[source_of(0)], cols.first[source_of(lanes - 1)]);
      for (int64_t lane = 0; lane < lanes; ++lane) {
        const int64_t xs = source_of(lane);
        for (int k = 0; k < taps; ++k) {
          const int64_t offset = cols.first[xs] + k - base[b];
          fit = fit && offset >= 0 && offset < 32;
          index[(b * taps + k) * 16 + lane] = static_cast<int32_t>(fit ? offset : 0);
          weights[(b * taps + k) * 16 + lane] = cols.weights[xs * cols.stride + k];
        }
      }
    }
  }
};

#if defined(CION_MULTICROP_COPIES)
#define CION_AVX512_RESAMPLING __attribute__((target("avx512f,avx512bw,avx512vl")))

// Lanes [0, count) set.
CION_AVX512_RESAMPLING inline __mmask16 first_lanes(int64_t count) {
  return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}

// 16 byte samples in `keep` (0 elsewhere) as floats.
CION_AVX512_RESAMPLING inline __m512 byte_samples(const uint8_t* src, __mmask16 keep) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(keep, src)));
}

// Row pass of n samples of one CHW plane into line[0, n).
CION_AVX512_RESAMPLING void rows_to_line_avx512(const uint8_t* src, int64_t row_stride, const float* w,
                                                int64_t taps, int64_t n, float* line) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 keep = first_lanes(n - j);
    __m512 sum = _mm512_mul_ps(_mm512_set1_ps(w[0]), byte_samples(src + j, keep));
    for (int64_t k = 1; k < taps; ++k)
      sum = _mm512_add_ps(sum, _mm512_mul_ps(_mm512_set1_ps(w[k]), byte_samples(src + k * row_stride + j, keep)));
    _mm512_mask_storeu_ps(line + j, keep, sum);
  }
}

// The permutes that split 16 interleaved RGB pixels (three vectors of 16 samples) into channels.
// Channel c of pixel p is sample 3 p + c: vector 3 p + c >> 4, lane 3 p + c & 15. The first permute
// gathers it from vectors 0 and 1 (lanes 0 .. 10 or 0 .. 9), the second from vector 2.
struct ChannelSplit {
  alignas(64) int32_t from01[3][16];
  alignas(64) int32_t from2[3][16];
};
constexpr ChannelSplit channel_split() {
  ChannelSplit split{};
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 16; ++p) {
      const int e = 3 * p + c;
      split.from01[c][p] = e < 32 ? e : 0;
      split.from2[c][p] = e < 32 ? p : 16 + (e - 32);
    }
  return split;
}
constexpr ChannelSplit kChannelSplit = channel_split();

// Row pass of n HWC pixels into the three lines: 16 pixels (48 samples, three vectors summed
// together across the taps) at a time, split into channels by two permutes each.
CION_AVX512_RESAMPLING void rows_to_lines_avx512(const uint8_t* src, int64_t row_stride, const float* w,
                                                 int64_t taps, int64_t n, float* const lines[3]) {
  const int32_t(&from01)[3][16] = kChannelSplit.from01;
  const int32_t(&from2)[3][16] = kChannelSplit.from2;
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t samples = 3 * std::min<int64_t>(16, n - j);
    const __mmask16 keep[3] = {first_lanes(samples), first_lanes(samples - 16), first_lanes(samples - 32)};
    const uint8_t* at = src + 3 * j;
    __m512 sums[3];
    const __m512 w0 = _mm512_set1_ps(w[0]);
    for (int v = 0; v < 3; ++v) sums[v] = _mm512_mul_ps(w0, byte_samples(at + 16 * v, keep[v]));
    for (int64_t k = 1; k < taps; ++k) {
      const __m512 wk = _mm512_set1_ps(w[k]);
      for (int v = 0; v < 3; ++v)
        sums[v] = _mm512_add_ps(sums[v], _mm512_mul_ps(wk, byte_samples(at + k * row_stride + 16 * v, keep[v])));
    }
    for (int c = 0; c < 3; ++c) {
      const __m512 low = _mm512_permutex2var_ps(sums[0], _mm512_load_si512(from01[c]), sums[1]);
      const __m512 all = _mm512_permutex2var_ps(low, _mm512_load_si512(from2[c]), sums[2]);
      _mm512_mask_storeu_ps(lines[c] + j, first_lanes(n - j), all);
    }
  }
}

// Column pass of one output row from the three lines (zeroed for 32 samples past their ends): the
// three channels together, sharing each tap's indices and weights.
CION_AVX512_RESAMPLING void columns_avx512(const float* const lines[3], const ColumnBlocks& blocks, int taps,
                                           int64_t W, float* const out[3]) {
  for (int64_t b = 0; 16 * b < W; ++b) {
    const int32_t* index = &blocks.index[b * taps * 16];
    const float* weights = &blocks.weights[b * taps * 16];
    __m512 low[3], high[3], sums[3];
    for (int c = 0; c < 3; ++c) {
      low[c] = _mm512_loadu_ps(lines[c] + blocks.base[b]);
      high[c] = _mm512_loadu_ps(lines[c] + blocks.base[b] + 16);
    }
    for (int k = 0; k < taps; ++k) {
      const __m512i at = _mm512_loadu_si512(index + 16 * k);
      const __m512 wk = _mm512_loadu_ps(weights + 16 * k);
      for (int c = 0; c < 3; ++c) {
        const __m512 term = _mm512_mul_ps(wk, _mm512_permutex2var_ps(low[c], at, high[c]));
        sums[c] = k == 0 ? term : _mm512_add_ps(sums[c], term);
      }
    }
    const __mmask16 keep = first_lanes(W - 16 * b);
    for (int c = 0; c < 3; ++c) _mm512_mask_storeu_ps(out[c] + 16 * b, keep, sums[c]);
  }
}
#endif

// Per-thread buffers, reused across views and calls.
struct Scratch {
  AxisTaps rows, cols;
  ColumnBlocks column_blocks;           // the AVX-512 column pass's taps
  // The pixel buffers start on cache lines, and their rows too where W is a multiple of 16.
  CacheLineVector<float> line;          // the row-resampled source line(s) (+ zeroed slack)
  CacheLineVector<float> planes;        // [3, H, W] the view being built
  CacheLineVector<float> blurred;       // [3, H, W] the planes after the horizontal blur
  CacheLineVector<float> padded;        // [W + 2 r] one reflect-padded row
  CacheLineVector<float> rows_out;      // [3, W] one row of the three planes after the vertical blur
  std::vector<float> kernel;            // [2 r + 1] Gaussian weights
  std::vector<int64_t> shifts;          // [2 r + 1] 0 .. 2 r: the horizontal blur's taps in the padded row
  std::vector<int64_t> row_offsets;     // [H + 2 r] offset of each reflect-padded row: the vertical taps
  std::vector<int64_t> reflect_x;       // [W + 2 r] reflect-padding indices of a row
};

// ---- the colour sweep ------------------------------------------------------------------------

// One colour step: brightness and contrast blend with a constant (black, or the image's mean gray),
// saturation blends with each pixel's gray, hue rotates, grayscale replaces.
enum class ColourOp { kBlendConstant, kSaturation, kHue, kGrayscale };
struct ColourStep {
  ColourOp op;
  float factor;
  float value = 0.0f;  // kBlendConstant's constant
};

// What a view's last sweep does with its pixels: solarise (if drawn), normalise per channel and
// convert into the output.
struct Finish {
  bool solarize;
  float mean[3];
  float inv_std[3];
};

template <class Floats>
CION_COLOUR_OP void apply_step(const ColourStep& step, Floats rgb[3]) {
  switch (step.op) {
    case ColourOp::kBlendConstant: {
      const Floats value = step.value - Floats{};  // broadcast (x - 0 = x exactly, -0 included)
      for (int c = 0; c < 3; ++c) rgb[c] = blend(step.factor, rgb[c], value);
      break;
    }
    case ColourOp::kSaturation: {
      const Floats y = gray_of(rgb[0], rgb[1], rgb[2]);
      for (int c = 0; c < 3; ++c) rgb[c] = blend(step.factor, rgb[c], y);
      break;
    }
    case ColourOp::kHue: shift_hue(rgb[0], rgb[1], rgb[2], step.factor); break;
    case ColourOp::kGrayscale: rgb[0] = rgb[1] = rgb[2] = gray_of(rgb[0], rgb[1], rgb[2]); break;
  }
}

// The pixels [i, i + lanes of Floats) of one sweep, in registers: loaded, clamped (bicubic), every
// step applied and, given `finish`, finished.
template <class Floats>
CION_COLOUR_OP void colour_pixels(const ColourStep* steps, int count, bool clamp_first, float* const planes[3],
                                  int64_t i, const Finish* finish, Floats rgb[3]) {
  for (int c = 0; c < 3; ++c) rgb[c] = load_floats<Floats>(planes[c] + i);
  if (clamp_first)
    for (int c = 0; c < 3; ++c) rgb[c] = clamp01(rgb[c]);
  for (int k = 0; k < count; ++k) apply_step(steps[k], rgb);
  if (finish)
    for (int c = 0; c < 3; ++c)
      rgb[c] = ((finish->solarize ? solarize(rgb[c]) : rgb[c]) - finish->mean[c]) * finish->inv_std[c];
}

// The same, stored back into the planes or (finished) into out[c] (float; it may be the planes).
template <class Floats>
CION_COLOUR_OP void sweep_pixels(const ColourStep* steps, int count, bool clamp_first, float* const planes[3],
                                 int64_t i, const Finish* finish, float* const out[3]) {
  Floats rgb[3];
  colour_pixels(steps, count, clamp_first, planes, i, finish, rgb);
  for (int c = 0; c < 3; ++c) store_floats((finish ? out[c] : planes[c]) + i, rgb[c]);
}

template <class Floats>
CION_COLOUR_OP void sweep(const ColourStep* steps, int count, bool clamp_first, float* const planes[3], int64_t n,
                          const Finish* finish, float* const out[3]) {
  constexpr int64_t kLanes = sizeof(Floats) / sizeof(float);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) sweep_pixels<Floats>(steps, count, clamp_first, planes, i, finish, out);
  for (; i < n; ++i) sweep_pixels<float>(steps, count, clamp_first, planes, i, finish, out);
}

#if defined(CION_MULTICROP_COPIES) && defined(CION_FLOAT_VECTORS)
// The AVX-512 sweep. Finished pixels go to a cache-line-aligned output by non-temporal stores: the
// output is written once and read by the caller later, so its lines need not be read first nor
// kept (measured at batch 64: 5-6 % faster into the caller's buffers, 2-4 % into new outputs). Not
// where the planes are finished in place for a conversion: those are read right after. The thread
// fences them before its next view (multicrop_cpu).
__attribute__((target("avx512f"))) void sweep_avx512(const ColourStep* steps, int count, bool clamp_first,
                                                     float* const planes[3], int64_t n, const Finish* finish,
                                                     float* const out[3]) {
  bool aligned = finish != nullptr && out[0] != planes[0];
  for (int c = 0; c < 3; ++c) aligned = aligned && reinterpret_cast<uintptr_t>(out[c]) % kCacheLine == 0;
  if (!aligned) return sweep<Floats16>(steps, count, clamp_first, planes, n, finish, out);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Floats16 rgb[3];
    colour_pixels(steps, count, clamp_first, planes, i, finish, rgb);
    for (int c = 0; c < 3; ++c) _mm512_stream_ps(out[c] + i, rgb[c]);
  }
  for (; i < n; ++i) sweep_pixels<float>(steps, count, clamp_first, planes, i, finish, out);
}
__attribute__((target("avx2"))) void sweep_avx2(const ColourStep* steps, int count, bool clamp_first,
                                                float* const planes[3], int64_t n, const Finish* finish,
                                                float* const out[3]) {
  sweep<Floats8>(steps, count, clamp_first, planes, n, finish, out);
}
#endif

template <class T>
CION_SIMD_CLONES void to_storage(const float* in, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = from_float<T>(in[i]);
}

// One sweep over n pixels of the three planes (a block of rows): the clamp (clamp_first), the colour
// steps in order and, when `finish` is given, the finish into out[c]; else the planes are updated.
// Each pixel's three channels stay in registers through all of it, a vector of pixels at a time at
// this processor's width (16 AVX-512, 8 AVX2, 4 baseline), so every op costs its arithmetic only and
// the output's stores interleave with it. Outputs other than float32 are finished in the planes,
// then converted.
template <class T>
void colour_sweep(const ColourStep* steps, int count, bool clamp_first, float* const planes[3], int64_t n,
                  const Finish* finish, T* const out[3]) {
  if (count == 0 && !clamp_first && !finish) return;
  float* const* finished = planes;
  if constexpr (std::is_same<T, float>::value) finished = out;
#if defined(CION_MULTICROP_COPIES) && defined(CION_FLOAT_VECTORS)
  if (multicrop_copy() == MulticropCopy::kAvx512)
    sweep_avx512(steps, count, clamp_first, planes, n, finish, finished);
  else if (multicrop_copy() == MulticropCopy::kAvx2)
    sweep_avx2(steps, count, clamp_first, planes, n, finish, finished);
  else
#endif
#if defined(CION_FLOAT_VECTORS)
    sweep<Floats4>(steps, count, clamp_first, planes, n, finish, finished);
#else
    sweep<float>(steps, count, clamp_first, planes, n, finish, finished);
#endif
  if constexpr (!std::is_same<T, float>::value)
    if (finish)
      for (int c = 0; c < 3; ++c) to_storage(planes[c], n, out[c]);
}

// The view's colour steps in the drawn order, split at contrast: contrast blends with the mean gray
// of the image as it is at that point, so the steps after it (contrast first, its constant set
// once the mean is known) run in a second sweep.
struct ColourPlan {
  ColourStep before[5];  // steps up to contrast (all steps when there is no contrast)
  int n_before = 0;
  ColourStep after[5];   // contrast, then the steps after it
  int n_after = 0;
  bool contrast = false;
};

// torchvision's jitter op ids (brightness, contrast, saturation, hue); exact identities (factor
// 1, hue 0) are dropped: on [0, 1] data they change nothing, clamp included.
ColourPlan plan_colour(const MultiCropViewParams& vp, int64_t index) {
  ColourPlan plan;
  auto push = [&plan](ColourOp op, float factor) {
    if (plan.contrast)
      plan.after[plan.n_after++] = ColourStep{op, factor};
    else
      plan.before[plan.n_before++] = ColourStep{op, factor};
  };
  if (vp.jitter_applied[index]) {
    const float factors[4] = {vp.brightness[index], vp.contrast[index], vp.saturation[index], vp.hue[index]};
    constexpr ColourOp kJitterOps[4] = {ColourOp::kBlendConstant, ColourOp::kBlendConstant, ColourOp::kSaturation,
                                        ColourOp::kHue};
    for (int o = 0; o < 4; ++o) {
      const int op = static_cast<int>(vp.jitter_order[4 * index + o]);
      const float identity = op == 3 ? 0.0f : 1.0f;
      if (factors[op] == identity) continue;
      if (op == 1) plan.contrast = true;  // its step opens `after`
      push(kJitterOps[op], factors[op]);
    }
  }
  if (vp.grayscale[index]) push(ColourOp::kGrayscale, 0.0f);
  return plan;
}

struct Source {
  const uint8_t* data;
  int64_t height, width;
  bool channels_last;
};

// Whether this view resamples through the AVX-512 planar path (and if so, its column blocks set).
bool planar_resampling(Scratch& s, int64_t W, bool flip) {
#if defined(CION_MULTICROP_COPIES)
  if (multicrop_copy() != MulticropCopy::kAvx512) return false;
  s.column_blocks.compute(s.cols, W, flip);
  return s.column_blocks.fit;
#else
  (void)s, (void)W, (void)flip;
  return false;
#endif
}

template <class T>
void render_view(const MultiCropParams& p, int64_t b, int64_t v, Scratch& s) {
  const MultiCropSettings& st = p.settings;
  const int64_t V = st.num_views();
  const int64_t index = b * V + v;
  const bool is_global = v < st.n_global;
  const int64_t H = is_global ? st.global_height : st.local_height;
  const int64_t W = is_global ? st.global_width : st.local_width;
  const int64_t slot = is_global ? v : v - st.n_global;
  const int64_t n = H * W;
  T* out = static_cast<T*>(is_global ? p.global_views : p.local_views) + (slot * p.batch + b) * 3 * n;

  Source src;
  src.data = p.images + (p.image_offsets ? p.image_offsets[b] : b * p.image_stride);
  src.height = p.image_sizes ? p.image_sizes[2 * b] : p.height;
  src.width = p.image_sizes ? p.image_sizes[2 * b + 1] : p.width;
  src.channels_last = p.channels_last;
  if (p.sample) sample_view(st, p.seed, p.step, b, v, src.height, src.width, p.views);

  const MultiCropViewParams& vp = p.views;
  const int64_t* box = vp.box + 4 * index;
  const bool flip = vp.flip[index] != 0;
  ColourPlan plan = plan_colour(vp, index);
  const float sigma = vp.blur_sigma[index];
  const int radius = blur_radius(sigma);
  Finish finish;
  finish.solarize = vp.solarize[index] != 0;
  for (int c = 0; c < 3; ++c) {
    finish.mean[c] = st.mean[c];
    finish.inv_std[c] = 1.0f / st.std[c];
  }

  s.rows.compute(box[2], H, st.interpolation, 1.0f / 255.0f);
  s.cols.compute(box[3], W, st.interpolation, 1.0f);
  const bool planar = planar_resampling(s, W, flip);
  // The interleaved line, or the three planar ones (plane_stride apart), with the zeroed slack
  // their column pass reads: the zero-weight taps past the last pixel and the 4th lane, or the
  // 32-sample windows.
  const int64_t line_n = planar ? box[3] : 3 * box[3];
  const int64_t slack = planar ? 32 : 3 * s.cols.max_count + 1;
  const int64_t plane_stride = (line_n + slack + 15) / 16 * 16;  // each line on a cache line
  s.line.resize(static_cast<size_t>((planar ? 3 : 1) * plane_stride));
  float* line = s.line.data();
  for (int c = 0; c < (planar ? 3 : 1); ++c)
    std::fill(line + c * plane_stride + line_n, line + (c + 1) * plane_stride, 0.0f);
  s.planes.resize(static_cast<size_t>(3 * n));
  float* planes = s.planes.data();

  const int64_t block_rows = std::max<int64_t>(1, kBlockPixels / W);
  const bool one_sweep = !plan.contrast && radius == 0;
  double gray_total = 0.0;
  // Sweep 1: resample, the colour steps before contrast (all of them without contrast), and
  // either the finish (one sweep) or the gray sum for contrast.
  for (int64_t y0 = 0; y0 < H; y0 += block_rows) {
    const int64_t rows = std::min(block_rows, H - y0);
    for (int64_t y = y0; y < y0 + rows; ++y) {
      const float* wy = &s.rows.weights[y * s.rows.stride];
      const int64_t taps = s.rows.count[y];
      const int64_t row0 = box[0] + s.rows.first[y];
      float* out_r = planes + y * W;
#if defined(CION_MULTICROP_COPIES)
      if (planar) {
        float* const lines[3] = {line, line + plane_stride, line + 2 * plane_stride};
        if (src.channels_last) {
          rows_to_lines_avx512(src.data + (row0 * src.width + box[1]) * 3, 3 * src.width, wy, taps, box[3], lines);
        } else {
          for (int c = 0; c < 3; ++c)
            rows_to_line_avx512(src.data + (c * src.height + row0) * src.width + box[1], src.width, wy, taps,
                                box[3], lines[c]);
        }
        float* const out[3] = {out_r, out_r + n, out_r + 2 * n};
        columns_avx512(lines, s.column_blocks, s.cols.max_count, W, out);
        continue;
      }
#endif
      if (src.channels_last) {
        rows_interleaved(src.data + (row0 * src.width + box[1]) * 3, 3 * src.width, wy, taps, line_n, line);
      } else {
        for (int c = 0; c < 3; ++c)
          rows_planar(src.data + (c * src.height + row0) * src.width + box[1], src.width, wy, taps, box[3],
                      line + c);
      }
      columns(line, s.cols.weights.data(), s.cols.first.data(), s.cols.stride, s.cols.max_count, flip, W, out_r,
              out_r + n, out_r + 2 * n);
    }
    const int64_t offset = y0 * W, count = rows * W;
    float* const block[3] = {planes + offset, planes + n + offset, planes + 2 * n + offset};
    T* const out_block[3] = {out + offset, out + n + offset, out + 2 * n + offset};
    // Keys' cubic overshoots: clamp like PIL.
    colour_sweep(plan.before, plan.n_before, st.interpolation == Interpolation::kBicubic, block, count,
                 one_sweep ? &finish : nullptr, out_block);
    if (plan.contrast) gray_total += gray_sum(block[0], block[1], block[2], count);
  }
  if (one_sweep) return;

  // Sweep 2: contrast with the mean gray of the image so far, the remaining steps, and the finish
  // unless a blur follows.
  if (plan.contrast) {
    plan.after[0].value = static_cast<float>(gray_total / static_cast<double>(n));
    for (int64_t y0 = 0; y0 < H; y0 += block_rows) {
      const int64_t offset = y0 * W, count = std::min(block_rows, H - y0) * W;
      float* const block[3] = {planes + offset, planes + n + offset, planes + 2 * n + offset};
      T* const out_block[3] = {out + offset, out + n + offset, out + 2 * n + offset};
      colour_sweep(plan.after, plan.n_after, false, block, count, radius == 0 ? &finish : nullptr, out_block);
    }
    if (radius == 0) return;
  }

  // Blur: horizontal pass of each reflect-padded row into `blurred`, then the vertical pass over
  // the 2 r + 1 reflected rows of each channel into `rows`, finished straight into the output.
  const int taps = 2 * radius + 1;
  s.kernel.resize(static_cast<size_t>(taps));
  blur_weights(sigma, radius, s.kernel.data());
  s.blurred.resize(static_cast<size_t>(3 * n));
  s.padded.resize(static_cast<size_t>(W + 2 * radius));
  s.rows_out.resize(static_cast<size_t>(3 * W));
  s.shifts.resize(static_cast<size_t>(taps));
  for (int k = 0; k < taps; ++k) s.shifts[k] = k;
  // Reflected source index of every padded position (an integer modulo each: computed once).
  s.reflect_x.resize(static_cast<size_t>(W + 2 * radius));
  s.row_offsets.resize(static_cast<size_t>(H + 2 * radius));
  for (int64_t i = 0; i < W + 2 * radius; ++i) s.reflect_x[i] = reflect_index(i - radius, W);
  for (int64_t i = 0; i < H + 2 * radius; ++i) s.row_offsets[i] = reflect_index(i - radius, H) * W;
  float* padded = s.padded.data();
  float* blurred = s.blurred.data();
  for (int c = 0; c < 3; ++c) {
    const float* plane = planes + c * n;
    for (int64_t y = 0; y < H; ++y) {
      const float* src_row = plane + y * W;
      std::copy(src_row, src_row + W, padded + radius);
      for (int d = 0; d < radius; ++d) {
        padded[d] = src_row[s.reflect_x[d]];
        padded[W + radius + d] = src_row[s.reflect_x[W + radius + d]];
      }
      blur_rows(padded, s.shifts.data(), s.kernel.data(), radius, W, blurred + c * n + y * W);
    }
  }
  float* const rows_out[3] = {s.rows_out.data(), s.rows_out.data() + W, s.rows_out.data() + 2 * W};
  for (int64_t y = 0; y < H; ++y) {
    for (int c = 0; c < 3; ++c)
      blur_rows(blurred + c * n, s.row_offsets.data() + y, s.kernel.data(), radius, W, rows_out[c]);
    T* const out_row[3] = {out + y * W, out + n + y * W, out + 2 * n + y * W};
    colour_sweep(nullptr, 0, false, rows_out, W, &finish, out_row);
  }
}

}  // namespace

const char* multicrop_cpu_copy() {
  switch (multicrop_copy()) {
    case MulticropCopy::kAvx512: return "avx512";
    case MulticropCopy::kAvx2: return "avx2";
    default: return "baseline";
  }
}

void multicrop_cpu(const MultiCropParams& p) {
  const int64_t V = p.settings.num_views();
  TensorView dtype_holder;
  dtype_holder.dtype = p.out_dtype;
  dtype_holder.name = "out_dtype";
  dispatch_floating(dtype_holder, [&](auto tag) {
    using T = decltype(tag);
    // Views of one image are adjacent, so concurrent threads share its source rows in cache.
    parallel_for(p.batch * V, 1, [&](int64_t item) {
      static thread_local Scratch scratch;
      render_view<T>(p, item / V, item % V, scratch);
#if defined(CION_MULTICROP_COPIES)
      _mm_sfence();  // the non-temporal stores of the AVX-512 sweep, visible before the call returns
#endif
    });
  });
}

}  // namespace cion
