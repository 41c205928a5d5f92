// Cosines from blocks of dot products (cosine.h). The loops marked CION_SIMD_CLONES run in
// AVX-512 / AVX2 copies with the baseline's roundings (no a * b + c contracted into an FMA).
#include "common/cpu_features.h"
CION_SIMD_CLONES_SAME_ROUNDING

#include "cpu/cosine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"

#if defined(CION_X86_DISPATCH)
#include <immintrin.h>
#endif

namespace cion {
namespace {

// The sum of squares of a row in float64. Eight independent partial sums: the adds overlap instead
// of waiting on one another (a single running sum made this loop as slow as the similarity pass it
// prepares).
template <class T>
double squared_norm(const T* row, int64_t dim) {
  constexpr int kLanes = 8;
  double lanes[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= dim; d += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += static_cast<double>(row[d + l]) * static_cast<double>(row[d + l]);
  double sum = 0.0;
  for (; d < dim; ++d) sum += static_cast<double>(row[d]) * static_cast<double>(row[d]);
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

// squared_norm of `count` consecutive rows of x into sums, four rows at a time: one row's eight
// sums are chains of dim / 8 dependent adds, four rows' chains overlap. The same operations per row
// (every copy, vectorised or not, gives squared_norm's bits).
template <class T>
CION_SIMD_CLONES void squared_norms(const T* x, int64_t count, int64_t dim, double* sums) {
  constexpr int kRows = 4, kLanes = 8;
  int64_t r = 0;
  for (; r + kRows <= count; r += kRows) {
    double lanes[kRows][kLanes] = {};
    int64_t d = 0;
    for (; d + kLanes <= dim; d += kLanes)
      for (int q = 0; q < kRows; ++q)
        for (int l = 0; l < kLanes; ++l) {
          const double v = static_cast<double>(x[(r + q) * dim + d + l]);
          lanes[q][l] += v * v;
        }
    for (int q = 0; q < kRows; ++q) {
      double sum = 0.0;
      for (int64_t e = d; e < dim; ++e) sum += static_cast<double>(x[(r + q) * dim + e]) * static_cast<double>(x[(r + q) * dim + e]);
      for (int l = 0; l < kLanes; ++l) sum += lanes[q][l];
      sums[r + q] = sum;
    }
  }
  for (; r < count; ++r) sums[r] = squared_norm(x + r * dim, dim);
}

// Whether a row's squared norm (summed in float64) calls for a look at the row: outside
// [2^-60, 2^60], or not finite (a NaN or inf entry, or float64 squares past the range). A sum of 0
// is an all-zero row for float32 (whose squares cannot vanish in float64), which the kernels give
// similarity 0; for float64 it may be squares that vanished, so those rows are looked at too.
// The squares of the safe norms [2^-30, 2^30] (_LARGEST_SAFE_NORM and _SMALLEST_SAFE_NORM of
// cion_fast/_xp.py, which the CUDA path and re-ranking use).
constexpr double kLargestSafeSquaredNorm = 0x1p60;
constexpr double kSmallestSafeSquaredNorm = 0x1p-60;

template <class T>
bool out_of_range(double sum) {
  const bool zero_is_fine = std::is_same_v<T, float>;
  return !(sum <= kLargestSafeSquaredNorm) || (sum < kSmallestSafeSquaredNorm && (sum > 0.0 || !zero_is_fine));
}

template <class T>
T inverse_norm(double sum) {
  return sum > 0.0 ? static_cast<T>(1.0 / std::sqrt(sum)) : T(0);
}

// The rare pass behind rows_for_cosine: `scaled` = x with each out-of-range row times 2^-e, e the
// exponent of its largest magnitude (frexp: peak = m 2^e, m in [0.5, 1)); ldexp is exact.
template <class T>
const T* rescaled_rows(const T* x, int64_t rows, int64_t dim, T* inv_norm, std::vector<T>* scaled, const char* name) {
  scaled->assign(x, x + rows * dim);
  std::atomic<bool> finite{true};
  parallel_for(rows, 1024, [&](int64_t r) {
    T* row = scaled->data() + r * dim;
    if (!out_of_range<T>(squared_norm(row, dim))) return;
    double peak = 0.0;
    bool finite_row = true;
    for (int64_t d = 0; d < dim; ++d) {
      const double magnitude = std::fabs(static_cast<double>(row[d]));
      finite_row &= std::isfinite(magnitude);
      peak = std::max(peak, magnitude);
    }
    if (!finite_row) {
      finite.store(false, std::memory_order_relaxed);
      return;
    }
    if (peak == 0.0) return;  // an all-zero row
    int exponent = 0;
    std::frexp(peak, &exponent);
    for (int64_t d = 0; d < dim; ++d) row[d] = std::ldexp(row[d], -exponent);
    inv_norm[r] = inverse_norm<T>(squared_norm(row, dim));
  });
  CION_CHECK(finite.load(), name, " contains NaN or inf values");
  return scaled->data();
}

template <class T>
bool norms_in_range(const T* x, int64_t rows, int64_t dim, T* inv_norm) {
  constexpr int64_t kChunk = 256;  // rows of squared norms on the stack
  bool in_range = true;
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t count = std::min(kChunk, rows - r0);
    double sums[kChunk];
    squared_norms(x + r0 * dim, count, dim, sums);
    for (int64_t r = 0; r < count; ++r) {
      in_range &= !out_of_range<T>(sums[r]);
      inv_norm[r0 + r] = inverse_norm<T>(sums[r]);
    }
  }
  return in_range;
}

template <class T>
const T* cosine_rows(const T* x, int64_t rows, int64_t dim, T* inv_norm, std::vector<T>* scaled, const char* name) {
  constexpr int64_t kRowsPerTask = 256;
  std::atomic<bool> in_range{true};
  parallel_for((rows + kRowsPerTask - 1) / kRowsPerTask, 4, [&](int64_t task) {
    const int64_t r0 = task * kRowsPerTask;
    if (!norms_in_range(x + r0 * dim, std::min(kRowsPerTask, rows - r0), dim, inv_norm + r0))
      in_range.store(false, std::memory_order_relaxed);
  });
  return in_range.load() ? x : rescaled_rows(x, rows, dim, inv_norm, scaled, name);
}

// ---- a block's cosines and the entries that matter -----------------------------------------------

template <class T>
CION_SIMD_CLONES void scale_row(T* row, int64_t n, T inv_i, const T* inv_cols) {
  for (int64_t j = 0; j < n; ++j) row[j] *= inv_i * inv_cols[j];
}

template <class T>
int64_t values_at_least_scalar(const T* x, int64_t n, T bound, T* out) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j)
    if (x[j] >= bound) out[count++] = x[j];
  return count;
}

template <class T>
int64_t positions_at_least_scalar(const T* x, int64_t n, T bound, int32_t* out) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j)
    if (x[j] >= bound) out[count++] = static_cast<int32_t>(j);
  return count;
}

#if defined(CION_X86_DISPATCH)
// The AVX-512 screenings run where the CPU has AVX-512F and CION_FAST_DOT_BLOCK_ISA, the cap on
// the tracklet kernels' copies (dot_block.cpp), allows an AVX-512 copy: the tests that run those
// kernels under the "avx2" and "baseline" caps run the scalar screenings too.
bool screens_with_avx512() {
  static const bool chosen = [] {
    const IsaCap cap = isa_cap("CION_FAST_DOT_BLOCK_ISA");
    return cpu_has_avx512f() && (cap == IsaCap::kNone || cap == IsaCap::kAvx512vl);
  }();
  return chosen;
}

// Few values pass (a top-k's screening bound, a link threshold): 16 tested per compare, stored
// only when one passes.
__attribute__((target("avx512f"))) int64_t values_at_least_avx512(const float* x, int64_t n, float bound,
                                                                  float* out) {
  const __m512 low = _mm512_set1_ps(bound);
  int64_t count = 0, j = 0;
  for (; j + 16 <= n; j += 16) {
    const __mmask16 keep = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + j), low, _CMP_GE_OQ);
    if (keep == 0) continue;
    _mm512_storeu_ps(out + count, _mm512_maskz_compress_ps(keep, _mm512_loadu_ps(x + j)));
    count += __builtin_popcount(keep);
  }
  return count + values_at_least_scalar(x + j, n - j, bound, out + count);
}

// scale_row then the positions of the values at least `bound`, in one sweep (16 lanes, the tail masked): each value is scaled
// as scale_row rounds it (two multiplies: nothing to contract, so every copy's bits), stored,
// compared.
__attribute__((target("avx512f"))) int64_t cosines_at_least_avx512(float* row, int64_t n, float inv_i,
                                                                   const float* inv_cols, float bound, int32_t* out) {
  const __m512 low = _mm512_set1_ps(bound), scale = _mm512_set1_ps(inv_i);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t count = 0;
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 in_row = n - j >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m512 cosines = _mm512_mul_ps(_mm512_maskz_loadu_ps(in_row, row + j),
                                         _mm512_mul_ps(scale, _mm512_maskz_loadu_ps(in_row, inv_cols + j)));
    _mm512_mask_storeu_ps(row + j, in_row, cosines);
    const __mmask16 keep = _mm512_mask_cmp_ps_mask(in_row, cosines, low, _CMP_GE_OQ);
    if (keep == 0) continue;
    const __m512i position = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(j)));
    _mm512_storeu_si512(out + count, _mm512_maskz_compress_epi32(keep, position));
    count += __builtin_popcount(keep);
  }
  return count;
}
#endif

}  // namespace

const float* rows_for_cosine(const float* x, int64_t rows, int64_t dim, float* inv_norm, std::vector<float>* scaled,
                             const char* name) {
  return cosine_rows(x, rows, dim, inv_norm, scaled, name);
}

const double* rows_for_cosine(const double* x, int64_t rows, int64_t dim, double* inv_norm,
                              std::vector<double>* scaled, const char* name) {
  return cosine_rows(x, rows, dim, inv_norm, scaled, name);
}

bool inverse_norms_in_range(const float* x, int64_t rows, int64_t dim, float* inv_norm) {
  return norms_in_range(x, rows, dim, inv_norm);
}
bool inverse_norms_in_range(const double* x, int64_t rows, int64_t dim, double* inv_norm) {
  return norms_in_range(x, rows, dim, inv_norm);
}

void scale_to_cosines(float* row, int64_t n, float inv_i, const float* inv_cols) { scale_row(row, n, inv_i, inv_cols); }
void scale_to_cosines(double* row, int64_t n, double inv_i, const double* inv_cols) {
  scale_row(row, n, inv_i, inv_cols);
}

int64_t cosines_at_least(float* row, int64_t n, float inv_i, const float* inv_cols, float bound, int32_t* out) {
#if defined(CION_X86_DISPATCH)
  if (screens_with_avx512()) return cosines_at_least_avx512(row, n, inv_i, inv_cols, bound, out);
#endif
  scale_row(row, n, inv_i, inv_cols);
  return positions_at_least_scalar(row, n, bound, out);
}
int64_t cosines_at_least(double* row, int64_t n, double inv_i, const double* inv_cols, double bound, int32_t* out) {
  scale_row(row, n, inv_i, inv_cols);
  return positions_at_least_scalar(row, n, bound, out);
}

int64_t values_at_least(const float* x, int64_t n, float bound, float* out) {
#if defined(CION_X86_DISPATCH)
  if (screens_with_avx512()) return values_at_least_avx512(x, n, bound, out);
#endif
  return values_at_least_scalar(x, n, bound, out);
}
int64_t values_at_least(const double* x, int64_t n, double bound, double* out) {
  return values_at_least_scalar(x, n, bound, out);
}

}  // namespace cion
