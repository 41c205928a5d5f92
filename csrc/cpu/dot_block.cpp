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
// in its low half and (r, c + 1) in its high half: a's 8 values broadcast to both halves, b's rows c
// and c + 1 side by side. Each entry still gets the 8-lane copies' operations (one FMA per 8 values
// of d, in order; the same zero-padded tail and reduction tree), so the same bits, from half as many
// multiply-add instructions, at the price of one insert per pair and step. RA x RP tiles cover RA
// rows of a and 2 RP rows of b. On a 2-core Xeon (benchmarks/NOTES.md), one thread, D = 256: blocks
// of 12 x 12 to 64 x 256 at 105-130 GFLOP/s against 90-105 for the 8-lane copy, 7 x 13 no faster;
// the inserts, the reductions and the ragged edges keep it far from the FMA units' 224.
#define CION_PAIRS_TARGET __attribute__((target("avx512f,avx512vl,avx2,fma"), always_inline)) inline

// [low | high] and [v | v] as 16 lanes.
CION_PAIRS_TARGET __m512 side_by_side(const Vec<float>::type& low, const Vec<float>::type& high) {
  return _mm512_castpd_ps(
      _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(__m256(low))), _mm256_castps_pd(__m256(high)), 1));
}
CION_PAIRS_TARGET __m512 both_halves(const Vec<float>::type& v) {
  return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(__m256(v))));
}

// horizontal_sum's tree on each 8-lane half, in registers: lane 0 ends with the low half's sum, lane
// 8 with the high half's (s[l] += s[l + 4], then s[l] += s[l + 2], then s[0] += s[1]).
CION_PAIRS_TARGET __m512 pair_sums(__m512 x) {
  x = _mm512_add_ps(x, _mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(3, 3, 1, 1)));
  x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(1, 1, 1, 1)));
}

// The 16 entries of rows r and r + 1 of a tile of 4 pairs (their 8 accumulators) summed with
// pair_sums' tree, every entry getting the same additions, but 8 accumulators reduced together
// (21 shuffles and adds and one permute, against 48 and 16 extractions one accumulator at a
// time): out_r[0..8) and out_r1[0..8).
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
CION_PAIRS_TARGET void store_row_pair_sums(const __m512 (&row)[4], const __m512 (&next)[4], float* out_row,
                                           float* out_next) {
  const __m512 sums = fold_pairs(fold_halves(fold_quarters(row[0], row[1]), fold_quarters(row[2], row[3])),
                                 fold_halves(fold_quarters(next[0], next[1]), fold_quarters(next[2], next[3])));
  // Quarter k of `sums` holds columns k and 4 + k of row r, then of row r + 1.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512 rows = _mm512_permutexvar_ps(order, sums);
  _mm256_storeu_ps(out_row, _mm512_castps512_ps256(rows));
  _mm256_storeu_ps(out_next, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(rows), 1)));
}

// One step along d: 8 values of RA rows of a and of 2 RP rows of b into the accumulators.
template <int RA, int RP>
CION_PAIRS_TARGET void pairs_step(__m512 (&acc)[RA][RP], const Vec<float>::type (&va)[RA],
                                  const Vec<float>::type (&vb)[RP][2]) {
  __m512 wide_b[RP];
  for (int q = 0; q < RP; ++q) wide_b[q] = side_by_side(vb[q][0], vb[q][1]);
  for (int r = 0; r < RA; ++r) {
    const __m512 wide_a = both_halves(va[r]);
    for (int q = 0; q < RP; ++q) acc[r][q] += wide_a * wide_b[q];  // contracted (or not) as the 8-lane copies are
  }
}

template <int RA, int RP>
CION_PAIRS_TARGET void tile_pairs(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t dim, float* out,
                                  int64_t ldo) {
  using V8 = Vec<float>::type;
  __m512 acc[RA][RP];
  for (int r = 0; r < RA; ++r)
    for (int q = 0; q < RP; ++q) acc[r][q] = _mm512_setzero_ps();
  const int64_t full = dim - dim % 8;
  for (int64_t d = 0; d < full; d += 8) {
    V8 va[RA], vb[RP][2];
    for (int r = 0; r < RA; ++r) load(a + r * lda + d, va[r]);
    for (int q = 0; q < RP; ++q) {
      load(b + 2 * q * ldb + d, vb[q][0]);
      load(b + (2 * q + 1) * ldb + d, vb[q][1]);
    }
    pairs_step<RA, RP>(acc, va, vb);
  }
  if (full < dim) {
    V8 va[RA], vb[RP][2];
    for (int r = 0; r < RA; ++r) load_tail(a + r * lda + full, dim - full, va[r]);
    for (int q = 0; q < RP; ++q) {
      load_tail(b + 2 * q * ldb + full, dim - full, vb[q][0]);
      load_tail(b + (2 * q + 1) * ldb + full, dim - full, vb[q][1]);
    }
    pairs_step<RA, RP>(acc, va, vb);
  }
  int r = 0;
  if constexpr (RP == 4) {
    for (; r + 1 < RA; r += 2) store_row_pair_sums(acc[r], acc[r + 1], out + r * ldo, out + (r + 1) * ldo);
  }
  for (; r < RA; ++r)
    for (int q = 0; q < RP; ++q) {
      const __m512 sums = pair_sums(acc[r][q]);
      out[r * ldo + 2 * q] = _mm512_cvtss_f32(sums);
      out[r * ldo + 2 * q + 1] = _mm_cvtss_f32(_mm512_extractf32x4_ps(sums, 2));
    }
}

// The last nb (< 2 P) columns of a strip: tiles of fewer pairs, then an odd column in an 8-lane tile.
template <int RA, int P>
CION_PAIRS_TARGET void strip_pairs_tail(
    const float* a, int64_t lda, const float* b, int64_t ldb, int64_t nb, int64_t dim, float* out, int64_t ldo) {
  if constexpr (P > 0) {
    if (nb >= 2 * P) {
      tile_pairs<RA, P>(a, lda, b, ldb, dim, out, ldo);
      b += 2 * P * ldb, out += 2 * P, nb -= 2 * P;
    }
    strip_pairs_tail<RA, P - 1>(a, lda, b, ldb, nb, dim, out, ldo);
  } else if (nb == 1) {
    tile<float, RA, 1, true>(a, lda, b, ldb, dim, out, ldo);
  }
}

// Tiles of 4 pairs (8 rows of b), then the narrower tiles of strip_pairs_tail. With 6 rows of a,
// 24 accumulators, 4 pairs and one row of a fill 29 of the 32 registers (4 rows x 6 pairs measured
// 3-7 % slower on blocks of 32-64 rows, 4 x 3 10-15 % slower).
template <int RA>
CION_PAIRS_TARGET void strip_pairs(
    const float* a, int64_t lda, const float* b, int64_t ldb, int64_t nb, int64_t dim, float* out, int64_t ldo) {
  constexpr int kPairs = 4;
  int64_t j = 0;
  for (; j + 2 * kPairs <= nb; j += 2 * kPairs) tile_pairs<RA, kPairs>(a, lda, b + j * ldb, ldb, dim, out + j, ldo);
  strip_pairs_tail<RA, kPairs - 1>(a, lda, b + j * ldb, ldb, nb - j, dim, out + j, ldo);
}

// Strips of 6 rows of a, then one strip of the 1-5 rows left.
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void block_avx512_pairs(const float* a, int64_t lda, int64_t na,
                                                                            const float* b, int64_t ldb, int64_t nb,
                                                                            int64_t dim, float* out, int64_t ldo) {
  constexpr int RA = 6;
  int64_t i = 0;
  for (; i + RA <= na; i += RA) strip_pairs<RA>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
  if (na - i == 5) strip_pairs<5>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
  if (na - i == 4) strip_pairs<4>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
  if (na - i == 3) strip_pairs<3>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
  if (na - i == 2) strip_pairs<2>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
  if (na - i == 1) strip_pairs<1>(a + i * lda, lda, b, ldb, nb, dim, out + i * ldo, ldo);
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
