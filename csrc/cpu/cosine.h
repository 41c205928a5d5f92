// Cosines from blocks of dot products on the CPU, shared by the tracklet kernels
// (tracklet_similarity, sliding_range_link): the rows' inverse norms, the scaling of a block's
// dot products into cosines, and the screening of a block for the few entries that matter.
//
// The norm and scaling loops run in AVX-512 / AVX2 copies where the CPU has them (cpu_features.h),
// with the baseline copy's roundings: every copy gives the same bits. The screenings have an
// AVX-512 path for float32 and a scalar one (compares only: the same positions and values; the
// sweep that scales and screens a row at once rounds as scale_to_cosines, two multiplies that no
// compiler can contract).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace cion {

// The rows of x [rows, dim] that the cosine kernels take dot products of, and their inverse norms.
// A row whose norm leaves [2^-30, 2^30] (squares that overflow or vanish in a float32 dot product)
// is multiplied by the power of two that brings its largest entry into [0.5, 1), as
// cion_fast._xp.rows_in_range does (the CUDA path calls that first): a cosine does not see a
// row's scale, and a power of two changes no digit. Returns x itself or, only when such a row
// exists, scaled->data() holding that copy; inv_norm[r] = 1 / ||row r|| of the rows returned (0
// for an all-zero row), the squares summed in float64 (eight partial sums per row, in a fixed
// order), parallel over rows. Throws ValueError "<name> contains NaN or inf values". One read of
// the rows in the common case, not two.
const float* rows_for_cosine(const float* x, int64_t rows, int64_t dim, float* inv_norm, std::vector<float>* scaled,
                             const char* name);
const double* rows_for_cosine(const double* x, int64_t rows, int64_t dim, double* inv_norm,
                              std::vector<double>* scaled, const char* name);

// rows_for_cosine's inverse norms of rows [0, rows) of x, on the calling thread, where no row calls
// for the rescaled copy: false where one does (out of range, NaN or inf; inv_norm is then written
// but not to be used: rows_for_cosine takes over). For kernels that take the norms of each block of
// rows just before they read it again (sliding_range_link), so that the rows come from memory once.
bool inverse_norms_in_range(const float* x, int64_t rows, int64_t dim, float* inv_norm);
bool inverse_norms_in_range(const double* x, int64_t rows, int64_t dim, double* inv_norm);

// row[j] *= inv_i * inv_cols[j] for j < n: a row of dot products made cosines, rounded as
// dot * (inv_i * inv_j) everywhere (row and inv_cols do not overlap).
void scale_to_cosines(float* row, int64_t n, float inv_i, const float* inv_cols);
void scale_to_cosines(double* row, int64_t n, double inv_i, const double* inv_cols);

// The values of x[0, n) at least `bound` (NaN never), in order, into out; returns their count.
// out holds n + 16 entries (16 lanes are stored at a time).
int64_t values_at_least(const float* x, int64_t n, float bound, float* out);
int64_t values_at_least(const double* x, int64_t n, double bound, double* out);

// scale_to_cosines, then the positions j of the cosines row[j] >= bound (NaN never), increasing,
// into out; returns their count. One sweep where the CPU has AVX-512 (the same values and
// positions). n < 2^31; out holds n + 16 entries.
int64_t cosines_at_least(float* row, int64_t n, float inv_i, const float* inv_cols, float bound, int32_t* out);
int64_t cosines_at_least(double* row, int64_t n, double inv_i, const double* inv_cols, double bound, int32_t* out);

// The smallest T that compares at least `threshold` as a double: `static_cast<double>(v) >=
// threshold` is `v >= at_least_in<T>(threshold)`, so a kernel compares in its own type (and 16
// lanes at a time). NaN gives NaN (nothing passes).
template <class T>
T at_least_in(double threshold) {
  if constexpr (std::is_same_v<T, double>) {
    return threshold;
  } else {
    constexpr T kLargest = std::numeric_limits<T>::max();
    if (std::isnan(threshold)) return std::numeric_limits<T>::quiet_NaN();
    if (threshold > kLargest) return std::numeric_limits<T>::infinity();
    if (threshold < -kLargest) return -kLargest;
    T v = static_cast<T>(threshold);  // rounded to nearest: possibly below the threshold
    if (static_cast<double>(v) < threshold) v = std::nextafter(v, std::numeric_limits<T>::infinity());
    return v;
  }
}

}  // namespace cion
