// CUDA multicrop: one small kernel samples the parameters (one thread per view, the shared code
// of ops/multicrop_math.h, so the draws equal the CPU's bit for bit), then one block renders each
// (view, image):
//
//   1. the block computes the view's resampling taps (rows and columns) into shared memory;
//   2. when contrast is drawn, a first pass over the view resamples every pixel, applies the
//      colour ops that precede contrast and sums the gray: a block reduction gives the mean;
//   3. the view is then produced tile by tile (kTileW x tile_h outputs): the tile plus a blur halo
//      of r pixels (reflected at the view's border) is resampled and coloured into shared memory,
//      blurred separably there (vertical, then horizontal), then solarised, normalised and stored
//      with consecutive threads on consecutive x of one channel row (coalesced).
//
// Resampling reads the uint8 source directly (a few taps per axis; the source image stays in L1/L2
// while its views are rendered), so no intermediate image ever goes to global memory and no
// scratch buffers are needed. All indexing of the images and outputs is 64-bit.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "ops/multicrop.h"
#include "ops/multicrop_math.h"

namespace cion {
namespace {

using namespace multicrop_math;

constexpr int kThreads = 256;
constexpr int kTileW = 64;         // tile width: 64 consecutive x per channel row -> coalesced stores
constexpr int kMaxTileH = 16;
constexpr int kSampleThreads = 128;

// The view's colour program: ops 0..3 in the sampled order (identities dropped), then grayscale
// (op 4). `contrast_at` is the position of contrast, or -1.
struct ColourProgram {
  int op[5];
  float factor[5];
  int count;
  int contrast_at;
  float mean[3], inv_std[3];  // normalisation, indexed by a runtime channel in the store loop
};

constexpr int kProgramWords = (sizeof(ColourProgram) + 3) / 4;

// Sizes shared by the host (launch configuration) and the kernel (carving shared memory).
struct Geometry {
  int taps_y[2];  // max row taps of global [0] and local [1] views
  int taps_x[2];
  int max_radius;  // largest blur radius of any view
  int tile_h;

  // Selects without indexing: a runtime index into a kernel parameter would copy it to local memory.
  __host__ __device__ int rows(int kind) const { return kind == 0 ? taps_y[0] : taps_y[1]; }
  __host__ __device__ int cols(int kind) const { return kind == 0 ? taps_x[0] : taps_x[1]; }
};

struct SharedLayout {
  float* weights_y;  // [H, taps_y]
  float* weights_x;  // [W, taps_x]
  int* first_y;      // [H]
  int* count_y;      // [H]
  int* first_x;      // [W]
  int* count_x;      // [W]
  float* tile;       // [3, tile_h + 2 R, kTileW + 2 R] resampled and coloured, with halo
  float* partial;    // [3, tile_h, kTileW + 2 R] after the vertical blur
  float* kernel;     // [2 R + 1]
  float* reduce;     // [kThreads / 32]
  struct ColourProgram* program;  // [1], block-uniform: read by broadcast, not kept in registers
};

__host__ __device__ inline int64_t align4(int64_t n) { return (n + 3) & ~int64_t(3); }

// Shared-memory floats/ints needed by a view of H x W (kind 0 global, 1 local); carved in order.
__host__ __device__ inline int64_t shared_words(const Geometry& g, int kind, int64_t H, int64_t W) {
  const int64_t halo_w = kTileW + 2 * g.max_radius;
  const int64_t halo_h = g.tile_h + 2 * g.max_radius;
  return align4(H * g.rows(kind)) + align4(W * g.cols(kind)) + align4(2 * H) + align4(2 * W) +
         align4(3 * halo_h * halo_w) + align4(3 * g.tile_h * halo_w) + align4(2 * g.max_radius + 1) +
         kThreads / 32 + kProgramWords;
}

__device__ SharedLayout carve(float* base, const Geometry& g, int kind, int64_t H, int64_t W) {
  SharedLayout s;
  const int64_t halo_w = kTileW + 2 * g.max_radius;
  const int64_t halo_h = g.tile_h + 2 * g.max_radius;
  float* p = base;
  s.weights_y = p;
  p += align4(H * g.rows(kind));
  s.weights_x = p;
  p += align4(W * g.cols(kind));
  s.first_y = reinterpret_cast<int*>(p);
  s.count_y = s.first_y + H;
  p += align4(2 * H);
  s.first_x = reinterpret_cast<int*>(p);
  s.count_x = s.first_x + W;
  p += align4(2 * W);
  s.tile = p;
  p += align4(3 * halo_h * halo_w);
  s.partial = p;
  p += align4(3 * g.tile_h * halo_w);
  s.kernel = p;
  p += align4(2 * g.max_radius + 1);
  s.reduce = p;
  p += kThreads / 32;
  s.program = reinterpret_cast<ColourProgram*>(p);
  return s;
}

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(MultiCropParams p) {
  const int64_t V = p.settings.num_views();
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= p.batch * V) return;
  const int64_t b = item / V, v = item % V;
  const int64_t height = p.image_sizes ? p.image_sizes[2 * b] : p.height;
  const int64_t width = p.image_sizes ? p.image_sizes[2 * b + 1] : p.width;
  sample_view(p.settings, p.seed, p.step, b, v, height, width, p.views);
}

// Block-wide sum; every thread gets the result.
__device__ float block_sum(float value, float* reduce) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) reduce[warp] = value;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += reduce[w];
  __syncthreads();  // reduce[] may be reused right after
  return total;
}

struct ViewSource {
  const uint8_t* data;  // pixel (0, 0) channel 0 of the box
  int64_t pixel_stride, row_stride, channel_stride;
};

// Antialiased resample of view pixel (y, x): rows of taps first, then columns (the CPU's order).
// View coordinates are 32-bit (sides <= 4096, validated in Python); source offsets 64-bit.
__device__ __forceinline__ void resample_pixel(const ViewSource& src, const SharedLayout& s, int taps_y,
                                               int taps_x, int y, int x, float rgb[3]) {
  const float* wy = s.weights_y + y * taps_y;
  const float* wx = s.weights_x + x * taps_x;
  const int count_y = s.count_y[y], count_x = s.count_x[x];
  const uint8_t* origin = src.data + static_cast<int64_t>(s.first_y[y]) * src.row_stride +
                          static_cast<int64_t>(s.first_x[x]) * src.pixel_stride;
  rgb[0] = rgb[1] = rgb[2] = 0.0f;
  for (int kx = 0; kx < count_x; ++kx) {
    const uint8_t* column = origin + kx * src.pixel_stride;
    float r = 0.0f, g = 0.0f, b = 0.0f;
    for (int ky = 0; ky < count_y; ++ky) {
      const uint8_t* q = column + ky * src.row_stride;
      const float w = wy[ky];
      r += w * static_cast<float>(__ldg(q));
      g += w * static_cast<float>(__ldg(q + src.channel_stride));
      b += w * static_cast<float>(__ldg(q + 2 * src.channel_stride));
    }
    rgb[0] += wx[kx] * r;
    rgb[1] += wx[kx] * g;
    rgb[2] += wx[kx] * b;
  }
}

__device__ __forceinline__ void apply_op(int op, float factor, float mean, float rgb[3]) {
  switch (op) {
    case 0:
      for (int c = 0; c < 3; ++c) rgb[c] = clamp01(factor * rgb[c]);
      break;
    case 1:
      for (int c = 0; c < 3; ++c) rgb[c] = blend(factor, rgb[c], mean);
      break;
    case 2: {
      const float y = gray_of(rgb[0], rgb[1], rgb[2]);
      for (int c = 0; c < 3; ++c) rgb[c] = blend(factor, rgb[c], y);
      break;
    }
    case 3:
      shift_hue(rgb[0], rgb[1], rgb[2], factor);
      break;
    default: {
      const float y = gray_of(rgb[0], rgb[1], rgb[2]);
      rgb[0] = rgb[1] = rgb[2] = y;
      break;
    }
  }
}

__device__ ColourProgram colour_program(const MultiCropViewParams& vp, int64_t index) {
  ColourProgram prog;
  prog.count = 0;
  prog.contrast_at = -1;
  if (vp.jitter_applied[index]) {
    const float factors[4] = {vp.brightness[index], vp.contrast[index], vp.saturation[index], vp.hue[index]};
    for (int o = 0; o < 4; ++o) {
      const int op = static_cast<int>(vp.jitter_order[4 * index + o]);
      if (factors[op] == (op == 3 ? 0.0f : 1.0f)) continue;  // exact identity on [0, 1] data
      if (op == 1) prog.contrast_at = prog.count;
      prog.op[prog.count] = op;
      prog.factor[prog.count] = factors[op];
      ++prog.count;
    }
  }
  if (vp.grayscale[index]) {
    prog.op[prog.count] = 4;
    prog.factor[prog.count] = 0.0f;
    ++prog.count;
  }
  return prog;
}

template <class Out>
__global__ void __launch_bounds__(kThreads) render_kernel(MultiCropParams p, Geometry g) {
  extern __shared__ float shared[];
  const MultiCropSettings& st = p.settings;
  const int64_t B = p.batch, V = st.num_views();
  // Views outer, images inner: the heavier global views start first, and consecutive blocks
  // write consecutive output slices.
  const int64_t v = blockIdx.x / B, b = blockIdx.x % B;
  const int64_t index = b * V + v;
  const bool is_global = v < st.n_global;
  const int kind = is_global ? 0 : 1;
  const int H = static_cast<int>(is_global ? st.global_height : st.local_height);
  const int W = static_cast<int>(is_global ? st.global_width : st.local_width);
  const int taps_y = g.rows(kind), taps_x = g.cols(kind);
  const int64_t slot = is_global ? v : v - st.n_global;
  Out* out = static_cast<Out*>(is_global ? p.global_views : p.local_views) + (slot * B + b) * 3 * int64_t(H) * W;
  const SharedLayout s = carve(shared, g, kind, H, W);

  const MultiCropViewParams& vp = p.views;
  const int64_t* box = vp.box + 4 * index;
  const int64_t img_h = p.image_sizes ? p.image_sizes[2 * b] : p.height;
  const int64_t img_w = p.image_sizes ? p.image_sizes[2 * b + 1] : p.width;
  ViewSource src;
  src.pixel_stride = p.channels_last ? 3 : 1;
  src.row_stride = p.channels_last ? 3 * img_w : img_w;
  src.channel_stride = p.channels_last ? 1 : img_h * img_w;
  src.data = p.images + (p.image_offsets ? p.image_offsets[b] : b * p.image_stride) +
             box[0] * src.row_stride + box[1] * src.pixel_stride;
  const bool flip = vp.flip[index] != 0;
  const float sigma = vp.blur_sigma[index];
  const int radius = min(blur_radius(sigma), g.max_radius);  // <= max_radius by construction
  const bool solarize_view = vp.solarize[index] != 0;
  const ColourProgram& prog = *s.program;

  // 1. Taps (flip folded into the column table: column x reads the taps of W - 1 - x).
  for (int i = threadIdx.x; i < H + W; i += blockDim.x) {
    int64_t first = 0;
    if (i < H) {
      s.count_y[i] = resample_taps(box[2], H, i, st.interpolation, 1.0f / 255.0f, s.weights_y + i * taps_y, &first);
      s.first_y[i] = static_cast<int>(first);
    } else {
      const int x = i - H, xs = flip ? W - 1 - x : x;
      s.count_x[x] = resample_taps(box[3], W, xs, st.interpolation, 1.0f, s.weights_x + x * taps_x, &first);
      s.first_x[x] = static_cast<int>(first);
    }
  }
  if (threadIdx.x == 0) {
    *s.program = colour_program(vp, index);
    for (int c = 0; c < 3; ++c) {
      s.program->mean[c] = st.mean[c];
      s.program->inv_std[c] = 1.0f / st.std[c];
    }
    if (radius > 0) blur_weights(sigma, radius, s.kernel);
  }
  __syncthreads();

  // 2. Mean gray of the image as contrast finds it.
  float mean = 0.0f;
  if (prog.contrast_at >= 0) {
    float sum = 0.0f;
    for (int i = threadIdx.x; i < H * W; i += blockDim.x) {
      const int y = i / W;
      float rgb[3];
      resample_pixel(src, s, taps_y, taps_x, y, i - y * W, rgb);
      if (st.interpolation == Interpolation::kBicubic)
        for (int c = 0; c < 3; ++c) rgb[c] = clamp01(rgb[c]);
      for (int o = 0; o < prog.contrast_at; ++o) apply_op(prog.op[o], prog.factor[o], 0.0f, rgb);
      sum += gray_of(rgb[0], rgb[1], rgb[2]);
    }
    mean = block_sum(sum, s.reduce) / static_cast<float>(H * W);
  }

  // 3. Tiles.
  const int halo_w = kTileW + 2 * radius, halo_h = g.tile_h + 2 * radius;
  const int stride_w = kTileW + 2 * g.max_radius;  // row pitch of the shared tile buffers
  const int64_t tile_plane = static_cast<int64_t>(g.tile_h + 2 * g.max_radius) * stride_w;
  const int64_t partial_plane = static_cast<int64_t>(g.tile_h) * stride_w;
  for (int y0 = 0; y0 < H; y0 += g.tile_h) {
    for (int x0 = 0; x0 < W; x0 += kTileW) {
      for (int e = threadIdx.x; e < halo_h * halo_w; e += blockDim.x) {
        const int i = e / halo_w, j = e % halo_w;
        const int y = static_cast<int>(reflect_index(y0 - radius + i, H));
        const int x = static_cast<int>(reflect_index(x0 - radius + j, W));
        float rgb[3];
        resample_pixel(src, s, taps_y, taps_x, y, x, rgb);
        if (st.interpolation == Interpolation::kBicubic)
          for (int c = 0; c < 3; ++c) rgb[c] = clamp01(rgb[c]);
        for (int o = 0; o < prog.count; ++o) apply_op(prog.op[o], prog.factor[o], mean, rgb);
        for (int c = 0; c < 3; ++c) s.tile[c * tile_plane + i * stride_w + j] = rgb[c];
      }
      __syncthreads();
      const float* rows = s.tile + radius * stride_w;  // the tile's first output row, halo left
      if (radius > 0) {
        // Vertical blur of every tile row, halo columns included.
        for (int e = threadIdx.x; e < 3 * g.tile_h * halo_w; e += blockDim.x) {
          const int c = e / (g.tile_h * halo_w), rem = e % (g.tile_h * halo_w);
          const int i = rem / halo_w, j = rem % halo_w;
          const float* column = s.tile + c * tile_plane + i * stride_w + j;
          float acc = s.kernel[radius] * column[radius * stride_w];
          for (int d = 1; d <= radius; ++d)
            acc += s.kernel[radius + d] * (column[(radius - d) * stride_w] + column[(radius + d) * stride_w]);
          s.partial[c * partial_plane + i * stride_w + j] = acc;
        }
        __syncthreads();
        rows = s.partial;
      }
      const int64_t tile_plane_read = radius > 0 ? partial_plane : tile_plane;
      for (int e = threadIdx.x; e < 3 * g.tile_h * kTileW; e += blockDim.x) {
        const int c = e / (g.tile_h * kTileW), rem = e % (g.tile_h * kTileW);
        const int i = rem / kTileW, j = rem % kTileW;
        const int y = y0 + i, x = x0 + j;
        if (y >= H || x >= W) continue;
        const float* centre = rows + c * tile_plane_read + i * stride_w + j + radius;
        float value = centre[0];
        if (radius > 0) {
          value *= s.kernel[radius];
          for (int d = 1; d <= radius; ++d) value += s.kernel[radius + d] * (centre[-d] + centre[d]);
        }
        if (solarize_view) value = solarize(value);
        out[(static_cast<int64_t>(c) * H + y) * W + x] = from_float<Out>((value - prog.mean[c]) * prog.inv_std[c]);
      }
      __syncthreads();  // the next tile overwrites the shared buffers
    }
  }
}

int max_taps_of(const MultiCropParams& p, int64_t out_size, bool rows) {
  return max_resample_taps(rows ? p.max_height : p.max_width, out_size, p.settings.interpolation);
}

}  // namespace

void multicrop_cuda(const MultiCropParams& p, int device_index, void* stream_ptr) {
  DeviceGuard guard(device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const MultiCropSettings& st = p.settings;
  const int64_t V = st.num_views();
  const int64_t blocks = p.batch * V;
  CION_CHECK(blocks < (int64_t(1) << 31), "too many views in one call: ", blocks);

  if (p.sample) {
    sample_kernel<<<static_cast<unsigned>(ceil_div(blocks, kSampleThreads)), kSampleThreads, 0, stream>>>(p);
    CION_CUDA_CHECK_LAUNCH();
  }

  Geometry g;
  g.taps_y[0] = max_taps_of(p, st.global_height, true);
  g.taps_x[0] = max_taps_of(p, st.global_width, false);
  g.taps_y[1] = max_taps_of(p, st.local_height, true);
  g.taps_x[1] = max_taps_of(p, st.local_width, false);
  g.max_radius = max_blur_radius(p.max_blur_sigma);
  int optin = 0;
  CION_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_index));
  // The tallest tile (up to kMaxTileH rows) whose buffers fit in the block's shared memory.
  size_t bytes = 0;
  for (g.tile_h = kMaxTileH; g.tile_h >= 1; g.tile_h /= 2) {
    int64_t words = 0;
    if (st.n_global > 0) words = std::max(words, shared_words(g, 0, st.global_height, st.global_width));
    if (st.n_local > 0) words = std::max(words, shared_words(g, 1, st.local_height, st.local_width));
    bytes = static_cast<size_t>(words) * sizeof(float);
    if (bytes <= static_cast<size_t>(optin)) break;
  }
  CION_CHECK(g.tile_h >= 1, "multicrop views of this size (or sources this much larger than the views) "
             "need more shared memory than the GPU has: ", bytes, " > ", optin, " bytes");

  TensorView dtype_holder;
  dtype_holder.dtype = p.out_dtype;
  dtype_holder.name = "out_dtype";
  dispatch_floating(dtype_holder, [&](auto tag) {
    using Out = decltype(tag);
    if (bytes > 48 * 1024)
      CION_CUDA_CHECK(cudaFuncSetAttribute(render_kernel<Out>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(bytes)));
    render_kernel<Out><<<static_cast<unsigned>(blocks), kThreads, bytes, stream>>>(p, g);
  });
  CION_CUDA_CHECK_LAUNCH();
}

}  // namespace cion
