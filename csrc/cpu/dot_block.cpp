// Register-blocked dot products: a tile of RA rows of `a` by RB rows of `b` keeps RA*RB vector
// accumulators in registers and streams both row sets once along d (RA + RB loads feed RA*RB
// multiply-adds). 4 x 3 tiles use 12 of the 16 AVX2 registers for accumulators (4 x 6 with
// AVX-512VL's 32); the rows and columns left over get tiles of their own size.
#include "cpu/dot_block.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/cpu_features.h"
#include "common/parallel.h"

namespace cion {
namespace {

#if defined(__GNUC__)
#define CION_ALWAYS_INLINE inline __attribute__((always_inline))
// 32-byte vectors (8 floats / 4 doubles) through the GCC/Clang vector extension: AVX2 registers in
// the AVX2 copy, pairs of SSE registers (or NEON registers) elsewhere.
template <class T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  // Unaligned, aliasing-safe view for loads straight from the feature rows.
  typedef T unaligned __attribute__((vector_size(32), aligned(alignof(T)), may_alias));
  static constexpr int kLanes = 32 / sizeof(T);
};

template <class T>
CION_ALWAYS_INLINE void load(const T* p, typename Vec<T>::type& v) {
  v = *reinterpret_cast<const typename Vec<T>::unaligned*>(p);
}

// The last dim % lanes elements, zero-padded: the same vector code then handles the tail. Copied
// into a padded buffer and loaded whole: filled lane by lane, the vector left the tail's products in
// the branches of the fill, where GCC did not fuse them with their adds in some tile shapes (and did
// in others), so a pair of rows gave different bits in different places when dim % 8 != 0.
template <class T>
CION_ALWAYS_INLINE void load_tail(const T* p, int64_t n, typename Vec<T>::type& v) {
  T padded[Vec<T>::kLanes] = {};
  std::memcpy(padded, p, static_cast<size_t>(n) * sizeof(T));
  std::memcpy(&v, padded, sizeof v);
}

// Makes v opaque to the optimiser, so it stays in the register it was loaded into. Without it GCC
// folds the load of a's row into each of its RB multiply-adds (RA * RB + RB loads a step instead of
// RA + RB), and a 4 x 3 tile then waits on the load ports, not on the multiply-adds.
// Only in the AVX2 and AVX-512VL copies: elsewhere a 32-byte vector fits no single register.
template <bool kPin, class V>
CION_ALWAYS_INLINE void pin_in_register(V& v) {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (kPin) asm("" : "+x"(v));
#endif
}

// Fixed pairwise reduction tree over the lanes: the same order for every entry.
template <class T>
CION_ALWAYS_INLINE T horizontal_sum(const typename Vec<T>::type& x) {
  constexpr int kLanes = Vec<T>::kLanes;
  T s[kLanes];
  for (int l = 0; l < kLanes; ++l) s[l] = x[l];
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) s[l] += s[l + width];
  return s[0];
}

template <class T, int RA, int RB, bool kPin>
CION_ALWAYS_INLINE void tile(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t dim, T* out,
                             int64_t ldo) {
  using V = typename Vec<T>::type;
  constexpr int kLanes = Vec<T>::kLanes;
  V acc[RA][RB];
  for (int r = 0; r < RA; ++r)
    for (int c = 0; c < RB; ++c) acc[r][c] = V{};
  const int64_t full = dim - dim % kLanes;
  for (int64_t d = 0; d < full; d += kLanes) {
    V vb[RB];
    for (int c = 0; c < RB; ++c) load(b + c * ldb + d, vb[c]);
    for (int r = 0; r < RA; ++r) {
      V va;
      load(a + r * lda + d, va);
      pin_in_register<kPin>(va);
      for (int c = 0; c < RB; ++c) acc[r][c] += va * vb[c];
    }
  }
  if (full < dim) {
    V va[RA], vb[RB];
    for (int r = 0; r < RA; ++r) load_tail(a + r * lda + full, dim - full, va[r]);
    for (int c = 0; c < RB; ++c) load_tail(b + c * ldb + full, dim - full, vb[c]);
    for (int r = 0; r < RA; ++r)
      for (int c = 0; c < RB; ++c) acc[r][c] += va[r] * vb[c];
  }
  for (int r = 0; r < RA; ++r)
    for (int c = 0; c < RB; ++c) out[r * ldo + c] = horizontal_sum<T>(acc[r][c]);
}

#else  // no vector extension (e.g. MSVC): plain loops, same guarantees (one fixed order per entry)
#define CION_ALWAYS_INLINE inline

template <class T, int RA, int RB, bool>
inline void tile(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t dim, T* out, int64_t ldo) {
  for (int r = 0; r < RA; ++r)
    for (int c = 0; c < RB; ++c) {
      T s = 0;
      for (int64_t d = 0; d < dim; ++d) s += a[r * lda + d] * b[c * ldb + d];
      out[r * ldo + c] = s;
    }
}
#endif

// The last nb (< W) columns of a strip: one tile of their width (an edge tile of the full width
// would reload a's rows for every column).
template <class T, bool kPin, int RA, int W>
CION_ALWAYS_INLINE void strip_tail(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t nb, int64_t dim,
                                   T* out, int64_t ldo) {
  if constexpr (W > 0) {
    if (nb == W)
      tile<T, RA, W, kPin>(a, lda, b, ldb, dim, out, ldo);
    else
      strip_tail<T, kPin, RA, W - 1>(a, lda, b, ldb, nb, dim, out, ldo);
  }
}

// One strip of RA rows of `a` against every row of `b`: tiles of RA x RB, then one narrower tile.
template <class T, bool kPin, int RA, int RB>
CION_ALWAYS_INLINE void strip(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t nb, int64_t dim,
                              T* out, int64_t ldo) {
  int64_t j = 0;
  for (; j + RB <= nb; j += RB) tile<T, RA, RB, kPin>(a, lda, b + j * ldb, ldb, dim, out + j, ldo);
  strip_tail<T, kPin, RA, RB - 1>(a, lda, b + j * ldb, ldb, nb - j, dim, out + j, ldo);
}

// Strips of 4 rows in tiles of 4 x RB (4 RB accumulators, RB rows of b and one row of a in
// registers: RB = 3 fills the 16 AVX2 registers, RB = 6 31 of the 32 of AVX-512VL), then one strip
// of the 1-3 rows left.
template <class T, bool kPin, int RB>
CION_ALWAYS_INLINE void block(const T* a, int64_t lda, int64_t na, const T* b, int64_t ldb,
                              int64_t nb, int64_t dim, T* out, int64_t ldo) {
  constexpr int RA = 4;
  int64_t i = 0;
  for (; i + RA <= na; i += RA) strip<T, kPin, RA, RB>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
  if (na - i == 3) strip<T, kPin, 3, RB>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
  if (na - i == 2) strip<T, kPin, 2, RB>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
  if (na - i == 1) strip<T, kPin, 1, RB>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
}

#if defined(CION_X86_DISPATCH)
#define CION_DOT_BLOCK_AVX2 1
template <class T>
__attribute__((target("avx2,fma"))) void block_avx2(const T* a, int64_t lda, int64_t na, const T* b, int64_t ldb,
                                                    int64_t nb, int64_t dim, T* out, int64_t ldo) {
  block<T, true, 3>(a, lda, na, b, ldb, nb, dim, out, ldo);
}

// The same 8-lane vectors with AVX-512VL's 32 registers: 4 x 6 tiles (10 loads per 24 FMAs instead
// of 7 per 12, half as many edge tiles across a row of b). Each entry's operations are the AVX2
// copy's, so both copies give the same bits.
template <class T>
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void block_avx512vl(const T* a, int64_t lda, int64_t na,
                                                                        const T* b, int64_t ldb, int64_t nb,
                                                                        int64_t dim, T* out, int64_t ldo) {
  block<T, true, 6>(a, lda, na, b, ldb, nb, dim, out, ldo);
}

#endif

template <class T>
bool inverse_norms(const T* x, int64_t rows, int64_t dim, T* inv_norm) {
  std::atomic<bool> finite{true};
  parallel_for(rows, 1024, [&](int64_t r) {
    const T* row = x + r * dim;
    // Eight independent partial sums: the adds overlap instead of waiting on one another (a single
    // running sum made this loop as slow as the similarity pass it prepares).
    constexpr int kLanes = 8;
    double lanes[kLanes] = {};
    int64_t d = 0;
    for (; d + kLanes <= dim; d += kLanes)
      for (int l = 0; l < kLanes; ++l) lanes[l] += static_cast<double>(row[d + l]) * static_cast<double>(row[d + l]);
    double sum = 0.0;
    for (; d < dim; ++d) sum += static_cast<double>(row[d]) * static_cast<double>(row[d]);
    for (int l = 0; l < kLanes; ++l) sum += lanes[l];
    // A NaN or inf anywhere makes the sum NaN or inf (squares of finite float32 cannot overflow a
    // double), so one test per row catches every non-finite feature.
    if (!std::isfinite(sum)) finite.store(false, std::memory_order_relaxed);
    inv_norm[r] = sum > 0.0 ? static_cast<T>(1.0 / std::sqrt(sum)) : T(0);
  });
  return finite.load();
}

template <class T>
using BlockFn = void (*)(const T*, int64_t, int64_t, const T*, int64_t, int64_t, int64_t, T*, int64_t);

template <class T>
void baseline_block(const T* a, int64_t lda, int64_t na, const T* b, int64_t ldb, int64_t nb, int64_t dim,
                    T* out, int64_t ldo) {
  block<T, false, 3>(a, lda, na, b, ldb, nb, dim, out, ldo);
}

// The widest copy the CPU runs, capped by CION_FAST_DOT_BLOCK_ISA ("avx2" or "baseline", read once
// per process: the tests run every copy in a subprocess). The AVX2 and AVX-512VL copies give the
// same bits; the baseline one, without FMA, its own.
template <class T>
BlockFn<T> chosen_block() {
#if defined(CION_DOT_BLOCK_AVX2)
  const char* cap = std::getenv("CION_FAST_DOT_BLOCK_ISA");
  const bool baseline_only = cap && std::strcmp(cap, "baseline") == 0;
  const bool avx2_at_most = cap && std::strcmp(cap, "avx2") == 0;
  if (!baseline_only && !avx2_at_most && cpu_has_avx512vl()) return &block_avx512vl<T>;
  if (!baseline_only && cpu_has_avx2_fma()) return &block_avx2<T>;
#endif
  return &baseline_block<T>;
}

template <class T>
void dispatch_block(const T* a, int64_t lda, int64_t na, const T* b, int64_t ldb, int64_t nb,
                    int64_t dim, T* out, int64_t ldo) {
  static const BlockFn<T> chosen = chosen_block<T>();
  chosen(a, lda, na, b, ldb, nb, dim, out, ldo);
}

}  // namespace

void dot_block(const float* a, int64_t lda, int64_t na, const float* b, int64_t ldb, int64_t nb,
               int64_t dim, float* out, int64_t ldo) {
  dispatch_block(a, lda, na, b, ldb, nb, dim, out, ldo);
}

void dot_block(const double* a, int64_t lda, int64_t na, const double* b, int64_t ldb, int64_t nb,
               int64_t dim, double* out, int64_t ldo) {
  dispatch_block(a, lda, na, b, ldb, nb, dim, out, ldo);
}

bool row_inverse_norms(const float* x, int64_t rows, int64_t dim, float* inv_norm) {
  return inverse_norms(x, rows, dim, inv_norm);
}

bool row_inverse_norms(const double* x, int64_t rows, int64_t dim, double* inv_norm) {
  return inverse_norms(x, rows, dim, inv_norm);
}

}  // namespace cion
