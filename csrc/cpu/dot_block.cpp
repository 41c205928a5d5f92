// Register-blocked dot products: a tile of RA rows of `a` by RB rows of `b` keeps RA*RB vector
// accumulators in registers and streams both row sets once along d (RA + RB loads feed RA*RB
// multiply-adds). 4 x 3 tiles use 12 of the 16 AVX2 registers for accumulators (4 x 6 with
// AVX-512VL's 32); the rows and columns left over get tiles of their own size. On Intel's AVX-512
// CPUs, float32 blocks go through a 16-lane copy that computes two entries per register. Each
// entry ends in a sum across its 8 lanes (4 for float64) by one fixed tree; the vector copies run
// that tree for several accumulators at once (a quarter of a 256-long entry's instructions went to
// reducing it one accumulator at a time).
#include "cpu/dot_block.h"

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/cache_line_vector.h"
#include "common/cpu_features.h"

#if defined(CION_X86_DISPATCH)
#include <immintrin.h>
#endif

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

// horizontal_sum of kLanes accumulators at once: the same additions for every entry, but each
// level adds two vectors of lanes from several accumulators (22 shuffles and adds for 8 float
// entries, against about 10 per entry alone). `out` holds the sums in order.
// Float, 8 lanes: level 1 adds lanes l and l + 4, level 2 l and l + 2, level 3 l and l + 1.
// (Vectors by reference: returned by value they would change the ABI of these always-inlined
// helpers outside the AVX copies, which GCC warns about.)
CION_ALWAYS_INLINE void fold_lanes(const Vec<float>::type& x, const Vec<float>::type& y, Vec<float>::type& t) {
  t = __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11) + __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15);
}
CION_ALWAYS_INLINE void sums_in_order(const Vec<float>::type (&acc)[8], Vec<float>::type& out) {
  using V = Vec<float>::type;
  // [t(0) | t(1)] ... : four sums of lanes l, l + 4 per accumulator.
  V t01, t23, t45, t67;
  fold_lanes(acc[0], acc[1], t01);
  fold_lanes(acc[2], acc[3], t23);
  fold_lanes(acc[4], acc[5], t45);
  fold_lanes(acc[6], acc[7], t67);
  // Per 128-bit half [u0(x), u1(x), u0(z), u1(z)] with u0 = t0 + t2, u1 = t1 + t3.
  const V u0123 = __builtin_shufflevector(t01, t23, 0, 1, 8, 9, 4, 5, 12, 13) +
                  __builtin_shufflevector(t01, t23, 2, 3, 10, 11, 6, 7, 14, 15);
  const V u4567 = __builtin_shufflevector(t45, t67, 0, 1, 8, 9, 4, 5, 12, 13) +
                  __builtin_shufflevector(t45, t67, 2, 3, 10, 11, 6, 7, 14, 15);
  // u0 + u1: [s0, s2, s4, s6, s1, s3, s5, s7].
  const V sums = __builtin_shufflevector(u0123, u4567, 0, 2, 8, 10, 4, 6, 12, 14) +
                 __builtin_shufflevector(u0123, u4567, 1, 3, 9, 11, 5, 7, 13, 15);
  out = __builtin_shufflevector(sums, sums, 0, 4, 1, 5, 2, 6, 3, 7);
}
// Double, 4 lanes: level 1 adds lanes l and l + 2, level 2 l and l + 1.
CION_ALWAYS_INLINE void sums_in_order(const Vec<double>::type (&acc)[4], Vec<double>::type& out) {
  using V = Vec<double>::type;
  const V t01 = __builtin_shufflevector(acc[0], acc[1], 0, 1, 4, 5) + __builtin_shufflevector(acc[0], acc[1], 2, 3, 6, 7);
  const V t23 = __builtin_shufflevector(acc[2], acc[3], 0, 1, 4, 5) + __builtin_shufflevector(acc[2], acc[3], 2, 3, 6, 7);
  const V sums = __builtin_shufflevector(t01, t23, 0, 4, 2, 6) + __builtin_shufflevector(t01, t23, 1, 5, 3, 7);
  out = __builtin_shufflevector(sums, sums, 0, 2, 1, 3);  // from [s0, s2, s1, s3]
}

// out[r * ldo + c] = horizontal_sum(acc[r][c]): kLanes accumulators at a time through
// sums_in_order (row-major order), the last RA * RB % kLanes one by one.
template <class T, int RA, int RB>
CION_ALWAYS_INLINE void store_sums(const typename Vec<T>::type (&acc)[RA][RB], T* out, int64_t ldo) {
  using V = typename Vec<T>::type;
  constexpr int kLanes = Vec<T>::kLanes, kGrouped = RA * RB / kLanes * kLanes;
  for (int g = 0; g < kGrouped; g += kLanes) {
    V group[kLanes];
    for (int e = 0; e < kLanes; ++e) group[e] = acc[(g + e) / RB][(g + e) % RB];
    V sums;
    sums_in_order(group, sums);
    for (int e = 0; e < kLanes; ++e) out[(g + e) / RB * ldo + (g + e) % RB] = sums[e];
  }
  for (int e = kGrouped; e < RA * RB; ++e) out[e / RB * ldo + e % RB] = horizontal_sum<T>(acc[e / RB][e % RB]);
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
  if constexpr (kPin) {  // the AVX2 / AVX-512VL copies
    store_sums<T, RA, RB>(acc, out, ldo);
  } else {
    for (int r = 0; r < RA; ++r)
      for (int c = 0; c < RB; ++c) out[r * ldo + c] = horizontal_sum<T>(acc[r][c]);
  }
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

// The 16-lane copy (float32): a 512-bit register holds the 8-lane accumulators of two entries, (r, c)
// in its low half and (r + 1, c) in its high half. Rows r and r + 1 of a are packed side by side
// once per strip of 6 rows (pack_pairs), so one aligned load gives both, and b's 8 values are
// broadcast to both halves straight from memory: a step is P + C loads and P * C multiply-adds,
// no shuffle. (Pairing b's rows instead costs an insert per pair and step, on the port the second
// 512-bit FMA unit shares: 28 issue slots for 24 multiply-adds.) Each entry still gets the 8-lane
// copies' operations (one FMA per 8 values of d, in order; the same zero-padded tail and reduction
// tree), so the same bits, from half as many multiply-add instructions. On a 2-core Xeon
// (benchmarks/NOTES.md), D = 256, the strips of sliding_range_link at 100k identities: one thread
// 120-129 GFLOP/s from cache against 109-118 with b's rows paired; two threads 198-201 against
// 178-180 with the features streamed from memory.
#define CION_PAIRS_TARGET __attribute__((target("avx512f,avx512vl,avx2,fma"), always_inline)) inline

// [v | v] as 16 lanes.
CION_PAIRS_TARGET __m512 both_halves(const Vec<float>::type& v) {
  return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(__m256(v))));
}

// horizontal_sum's tree on each 8-lane half, for 8 accumulators (16 entries) at once, level by level.
// Level 1 adds lanes l and l + 4 of every entry; an entry's four sums then fill a quarter:
//   T(x, y) = [x.low, x.high, y.low, y.high] (quarters), lanes s_l + s_{l+4}.
CION_PAIRS_TARGET __m512 fold_quarters(__m512 x, __m512 y) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}
// Level 2 (t_0 + t_2, t_1 + t_3) of two level-1 results, per quarter [u0(x), u1(x), u0(y), u1(y)].
CION_PAIRS_TARGET __m512 fold_halves(__m512 x, __m512 y) {
  return _mm512_add_ps(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
}
// Level 3 (u_0 + u_1), per quarter [x's first, x's second, y's first, y's second].
CION_PAIRS_TARGET __m512 fold_pairs(__m512 x, __m512 y) {
  return _mm512_add_ps(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}
// The 16 entries of 8 accumulators, each [(r, c) | (r + 1, c)] for c = 0..7, summed with
// horizontal_sum's tree (every entry the same additions; 21 shuffles and adds and one permute):
// row r's 8 sums in the low half of the result, row r + 1's in the high half.
CION_PAIRS_TARGET __m512 row_pair_sums(const __m512 (&acc)[8]) {
  const __m512 sums = fold_pairs(fold_halves(fold_quarters(acc[0], acc[1]), fold_quarters(acc[2], acc[3])),
                                 fold_halves(fold_quarters(acc[4], acc[5]), fold_quarters(acc[6], acc[7])));
  // Quarter 0 holds row r's even columns, quarter 1 row r + 1's, quarters 2 and 3 their odd ones.
  const __m512i order = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  return _mm512_permutexvar_ps(order, sums);
}

// Rows [0, n) of a (n <= 2 P) packed in P pairs, step by step along d:
// panel[(k * P + h / 2) * 16 + (h % 2) * 8 + l] = a[h * lda + 8 k + l] for row h, zero past dim and
// past row n, so that one aligned load gives a pair's 8 values of a step.
template <int P>
CION_PAIRS_TARGET void pack_pairs(const float* a, int64_t lda, int n, int64_t dim, float* panel) {
  const int64_t steps = (dim + 7) / 8, full = dim / 8;
  for (int64_t k = 0; k < steps; ++k)
    for (int h = 0; h < 2 * P; ++h) {
      float* to = panel + (k * P + h / 2) * 16 + (h % 2) * 8;
      if (h < n && k < full) {
        std::memcpy(to, a + h * lda + 8 * k, 8 * sizeof(float));
      } else {
        std::memset(to, 0, 8 * sizeof(float));
        if (h < n) std::memcpy(to, a + h * lda + 8 * k, (dim - 8 * k) * sizeof(float));
      }
    }
}

// A tile of P pairs of packed rows by C (<= 8) rows of b: P * C accumulators, each holding two
// entries [(2 p, c) | (2 p + 1, c)]; b's 8 values broadcast to both halves. Writes rows [0, n).
template <int P, int C>
CION_PAIRS_TARGET void tile_packed(const float* panel, const float* b, int64_t ldb, int64_t dim, int n, float* out,
                                   int64_t ldo) {
  __m512 acc[P][8];
  for (int p = 0; p < P; ++p)
    for (int c = 0; c < 8; ++c) acc[p][c] = _mm512_setzero_ps();
  const int64_t full = dim / 8;
  for (int64_t k = 0; k < full; ++k) {
    __m512 va[P];
    for (int p = 0; p < P; ++p) va[p] = _mm512_load_ps(panel + (k * P + p) * 16);
    for (int c = 0; c < C; ++c) {
      Vec<float>::type v;
      load(b + c * ldb + 8 * k, v);
      const __m512 vb = both_halves(v);
      for (int p = 0; p < P; ++p) acc[p][c] += va[p] * vb;  // contracted (or not) as the 8-lane copies are
    }
  }
  if (full * 8 < dim) {
    __m512 va[P];
    for (int p = 0; p < P; ++p) va[p] = _mm512_load_ps(panel + (full * P + p) * 16);
    const __mmask8 tail = static_cast<__mmask8>((1u << (dim - 8 * full)) - 1);
    for (int c = 0; c < C; ++c) {
      const __m512 vb = both_halves(Vec<float>::type(_mm256_maskz_loadu_ps(tail, b + c * ldb + 8 * full)));
      for (int p = 0; p < P; ++p) acc[p][c] += va[p] * vb;
    }
  }
  constexpr __mmask8 kColumns = static_cast<__mmask8>((1u << C) - 1);
  for (int p = 0; p < P && 2 * p < n; ++p) {
    const __m512 sums = row_pair_sums(acc[p]);
    _mm256_mask_storeu_ps(out + 2 * p * ldo, kColumns, _mm512_castps512_ps256(sums));
    if (2 * p + 1 < n)
      _mm256_mask_storeu_ps(out + (2 * p + 1) * ldo, kColumns,
                            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sums), 1)));
  }
}

// The last nb (< 8) columns of a strip: one tile of their width.
template <int P, int C>
CION_PAIRS_TARGET void strip_packed_tail(const float* panel, const float* b, int64_t ldb, int64_t nb, int64_t dim,
                                         int n, float* out, int64_t ldo) {
  if constexpr (C > 0) {
    if (nb == C)
      tile_packed<P, C>(panel, b, ldb, dim, n, out, ldo);
    else
      strip_packed_tail<P, C - 1>(panel, b, ldb, nb, dim, n, out, ldo);
  }
}

// n (<= 2 P) rows of a packed, against every row of b: tiles of 8 columns, then one narrower tile.
template <int P>
CION_PAIRS_TARGET void strip_packed(const float* a, int64_t lda, int n, const float* b, int64_t ldb, int64_t nb,
                                    int64_t dim, float* panel, float* out, int64_t ldo) {
  pack_pairs<P>(a, lda, n, dim, panel);
  int64_t j = 0;
  for (; j + 8 <= nb; j += 8) tile_packed<P, 8>(panel, b + j * ldb, ldb, dim, n, out + j, ldo);
  strip_packed_tail<P, 7>(panel, b + j * ldb, ldb, nb - j, dim, n, out + j, ldo);
}

// Strips of 6 rows of a (3 pairs), then one strip of the 1-5 rows left.
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void block_avx512_pairs(const float* a, int64_t lda, int64_t na,
                                                                            const float* b, int64_t ldb, int64_t nb,
                                                                            int64_t dim, float* out, int64_t ldo) {
  thread_local CacheLineVector<float> panel;  // grown to the widest dim this thread has seen
  const size_t size = static_cast<size_t>(3 * 16 * ((dim + 7) / 8));
  if (panel.size() < size) panel.resize(size);
  int64_t i = 0;
  for (; i + 6 <= na; i += 6) strip_packed<3>(a + i * lda, lda, 6, b, ldb, nb, dim, panel.data(), out + i * ldo, ldo);
  const int rest = static_cast<int>(na - i);
  if (rest > 4) strip_packed<3>(a + i * lda, lda, rest, b, ldb, nb, dim, panel.data(), out + i * ldo, ldo);
  else if (rest > 2) strip_packed<2>(a + i * lda, lda, rest, b, ldb, nb, dim, panel.data(), out + i * ldo, ldo);
  else if (rest > 0) strip_packed<1>(a + i * lda, lda, rest, b, ldb, nb, dim, panel.data(), out + i * ldo, ldo);
}

#endif

template <class T>
using BlockFn = void (*)(const T*, int64_t, int64_t, const T*, int64_t, int64_t, int64_t, T*, int64_t);

template <class T>
void baseline_block(const T* a, int64_t lda, int64_t na, const T* b, int64_t ldb, int64_t nb, int64_t dim,
                    T* out, int64_t ldo) {
  block<T, false, 3>(a, lda, na, b, ldb, nb, dim, out, ldo);
}

// The widest copy the CPU runs, capped by CION_FAST_DOT_BLOCK_ISA ("avx512vl", "avx2" or "baseline",
// read once per process: the tests run every copy in a subprocess). The 16-lane (float32 on Intel
// CPUs), AVX-512VL and AVX2 copies give the same bits; the baseline one, without FMA, its own.
// The 16-lane copy runs where cpu_has_full_width_avx512() expects 512-bit units (Intel); AMD's Zen 4
// splits a 512-bit multiply-add in two 256-bit halves (the copy was not measured there).
template <class T>
BlockFn<T> chosen_block() {
#if defined(CION_DOT_BLOCK_AVX2)
  const IsaCap cap = isa_cap("CION_FAST_DOT_BLOCK_ISA");
  const bool baseline_only = cap == IsaCap::kBaseline;
  const bool avx2_at_most = baseline_only || cap == IsaCap::kAvx2;
  const bool avx512vl_at_most = avx2_at_most || cap == IsaCap::kAvx512vl;
  if constexpr (std::is_same_v<T, float>) {
    if (!avx512vl_at_most && cpu_has_avx512vl() && cpu_has_full_width_avx512()) return &block_avx512_pairs;
  }
  if (!avx2_at_most && cpu_has_avx512vl()) return &block_avx512vl<T>;
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

}  // namespace cion
