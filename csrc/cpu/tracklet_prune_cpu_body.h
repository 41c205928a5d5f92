// The vector body of the CPU tracklet_prune kernel (float64 lanes), included by
// tracklet_prune_cpu.cpp once per instruction set, each time inside its own namespace and, for the
// x86 copies, inside a `#pragma GCC target` region (CION_PRUNE_BODY_AVX512 marks the AVX-512 one:
// GCC does not define __AVX512F__ there). No include guard, no includes: it relies on
// the includes of tracklet_prune_cpu.cpp, and on its Scratch and kLanes.
//
// Per tracklet of L rows x_j (float32 or float64 as stored, never copied), f_j = x_j * inv_j:
//   1. |x_j|^2 in float64 (4 vector accumulators), inv_j = 1 / |x_j|: the one read from memory;
//   2. S = sum_j f_j, in column blocks of 8 vectors (the block of S stays in registers);
//   3. d_j = f_j . S, 4 rows at a time (one accumulator per row). With AVX-512, tracklets of up to
//      kShortRows rows (dim a multiple of 8) do 2 and 3 in one pass: a column's f_j stay in
//      registers from the sum to the dot products;
//   4. per drop of m: d_j -= inv_j * (x_j . f_m) over the frames still kept.
// Steps 2-4 read rows that step 1 has just brought into cache. Every pass converts them to float64
// again: a float64 copy made once costs more (its stores stall the stream from memory).

#if defined(__GNUC__)
#define PRUNE_INLINE inline __attribute__((always_inline))
// Vectors of kW doubles, one register each: zmm (8) with AVX-512, ymm (4) with AVX2, xmm (2) else.
// (Vectors wider than the registers make GCC shuffle them through memory.) The lane count sets
// the order of the sums, so the copies round differently; each gives equal bits for equal rows.
#if defined(CION_PRUNE_BODY_AVX512)
constexpr int kW = 8;
#elif defined(CION_PRUNE_BODY_AVX2)
constexpr int kW = 4;
#else
constexpr int kW = 2;
#endif
typedef double V __attribute__((vector_size(8 * kW)));
typedef double VUnaligned __attribute__((vector_size(8 * kW), aligned(8), may_alias));
typedef float FUnaligned __attribute__((vector_size(4 * kW), aligned(4), may_alias));

PRUNE_INLINE V load(const float* p) {
#if defined(CION_PRUNE_BODY_AVX512)
  // One vcvtps2pd from memory (GCC 12 makes two of __builtin_convertvector; _mm512_cvtps_pd would
  // do, but its undefined pass-through value makes GCC 12 warn).
  return reinterpret_cast<V>(_mm512_maskz_cvtps_pd(0xFF, _mm256_loadu_ps(p)));
#else
  return __builtin_convertvector(*reinterpret_cast<const FUnaligned*>(p), V);
#endif
}
PRUNE_INLINE V load(const double* p) { return *reinterpret_cast<const VUnaligned*>(p); }
PRUNE_INLINE void store(double* p, const V& v) { *reinterpret_cast<VUnaligned*>(p) = v; }
PRUNE_INLINE V splat(double x) { return x - V{}; }  // x - 0 is x, -0 included

// The product as rounded to float64, kept from being fused into the add that follows (FMA
// contraction would add the exact product instead): S must be the sum of the rounded unit frames
// for exact ties to stay exact (D = 1: x * (1 / |x|) rounds to +-1, and a sum of them is exact).
PRUNE_INLINE V rounded(const V& product) {
  V v = product;
#if defined(CION_PRUNE_BODY_AVX512) || defined(CION_PRUNE_BODY_AVX2)
  __asm__("" : "+v"(v));
#elif defined(__aarch64__)
  __asm__("" : "+w"(v));
#elif !defined(__x86_64__) || defined(__FMA__)  // a baseline that may have FMA
  __asm__("" : "+m"(v));
#endif
  return v;
}
#else  // no vector extension (e.g. MSVC): plain arrays of 4 lanes, no FMA contraction
#define PRUNE_INLINE inline
constexpr int kW = 4;
struct V {
  double v[kW];
  double& operator[](int l) { return v[l]; }
  double operator[](int l) const { return v[l]; }
};
inline V operator+(V a, const V& b) {
  for (int l = 0; l < kW; ++l) a.v[l] += b.v[l];
  return a;
}
inline V operator-(V a, const V& b) {
  for (int l = 0; l < kW; ++l) a.v[l] -= b.v[l];
  return a;
}
inline V operator*(V a, const V& b) {
  for (int l = 0; l < kW; ++l) a.v[l] *= b.v[l];
  return a;
}
inline V operator/(V a, const V& b) {
  for (int l = 0; l < kW; ++l) a.v[l] /= b.v[l];
  return a;
}
inline V& operator+=(V& a, const V& b) { return a = a + b; }
template <class T>
inline V load(const T* p) {
  V v;
  for (int l = 0; l < kW; ++l) v.v[l] = static_cast<double>(p[l]);
  return v;
}
inline void store(double* p, const V& v) {
  for (int l = 0; l < kW; ++l) p[l] = v.v[l];
}
inline V splat(double x) {
  V v;
  for (int l = 0; l < kW; ++l) v.v[l] = x;
  return v;
}
inline V rounded(const V& v) { return v; }
#endif
static_assert(kLanes % kW == 0, "the scratch buffers are padded to whole vectors of every copy");

// The last n < kW elements, zero-padded, so that the vector code handles the tail.
template <class T>
PRUNE_INLINE V load_tail(const T* p, int64_t n) {
  V v{};
  for (int64_t l = 0; l < n; ++l) v[l] = static_cast<double>(p[l]);
  return v;
}

// Fixed pairwise tree over the lanes: the same order for every row.
PRUNE_INLINE double horizontal_sum(const V& x) {
  double s[kW];
  for (int l = 0; l < kW; ++l) s[l] = x[l];
  for (int width = kW / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) s[l] += s[l + width];
  return s[0];
}

// |x|^2 in float64. NaN or inf anywhere in the row makes it NaN or inf (squares of finite float32
// cannot overflow a double).
template <class T>
PRUNE_INLINE double sum_squares(const T* x, int64_t dim) {
  V a0{}, a1{}, a2{}, a3{};
  int64_t d = 0;
  for (; d + 4 * kW <= dim; d += 4 * kW) {
    const V x0 = load(x + d), x1 = load(x + d + kW), x2 = load(x + d + 2 * kW),
            x3 = load(x + d + 3 * kW);
    a0 += x0 * x0;
    a1 += x1 * x1;
    a2 += x2 * x2;
    a3 += x3 * x3;
  }
  for (; d + kW <= dim; d += kW) {
    const V x0 = load(x + d);
    a0 += x0 * x0;
  }
  if (d < dim) {
    const V x0 = load_tail(x + d, dim - d);
    a1 += x0 * x0;
  }
  return horizontal_sum((a0 + a1) + (a2 + a3));
}

// sum[d] = sum_j x_j[d] * inv[j] over rows [0, rows) (row stride ld), for d < dim rounded up to
// whole vectors (the lanes past dim are 0). Column blocks of 8 vectors keep the block's sums in
// registers while the rows go by.
template <class T>
PRUNE_INLINE void scaled_row_sum(const T* x, int64_t ld, int64_t rows, int64_t dim, const double* inv,
                                 double* sum) {
  constexpr int kBlock = 8 * kW;
  int64_t c = 0;
  for (; c + kBlock <= dim; c += kBlock) {
    V s0{}, s1{}, s2{}, s3{}, s4{}, s5{}, s6{}, s7{};
    for (int64_t j = 0; j < rows; ++j) {
      const V w = splat(inv[j]);
      const T* r = x + j * ld + c;
      s0 += rounded(load(r) * w);
      s1 += rounded(load(r + kW) * w);
      s2 += rounded(load(r + 2 * kW) * w);
      s3 += rounded(load(r + 3 * kW) * w);
      s4 += rounded(load(r + 4 * kW) * w);
      s5 += rounded(load(r + 5 * kW) * w);
      s6 += rounded(load(r + 6 * kW) * w);
      s7 += rounded(load(r + 7 * kW) * w);
    }
    store(sum + c, s0);
    store(sum + c + kW, s1);
    store(sum + c + 2 * kW, s2);
    store(sum + c + 3 * kW, s3);
    store(sum + c + 4 * kW, s4);
    store(sum + c + 5 * kW, s5);
    store(sum + c + 6 * kW, s6);
    store(sum + c + 7 * kW, s7);
  }
  for (; c + kW <= dim; c += kW) {
    V s{};
    for (int64_t j = 0; j < rows; ++j) s += rounded(load(x + j * ld + c) * splat(inv[j]));
    store(sum + c, s);
  }
  if (c < dim) {
    V s{};
    for (int64_t j = 0; j < rows; ++j) s += rounded(load_tail(x + j * ld + c, dim - c) * splat(inv[j]));
    store(sum + c, s);
  }
}

// out[r] = f_r . v for R rows (v zero-padded to whole vectors), one accumulator per row running
// along d: the same operations for a row whatever the block, so equal rows always give equal bits.
// kScaled: each row is scaled by its w first (the unit frame f = x * w, rounded as if it had been
// stored): with v = S, equal unit frames then give equal d_j even where x differs (D = 1:
// x * (1 / |x|) rounds to +-1 and S is exact). Otherwise w multiplies the dot product (v = f_m:
// x . f_m is then exact for D = 1, and the one rounding of w * (x . f_m) gives the same +-1).
template <int R, bool kScaled, class T>
PRUNE_INLINE void block_dot(const T* const* r, const double* w, const double* v, int64_t dim, double* out) {
  V scale[R], a[R];
  for (int k = 0; k < R; ++k) {
    scale[k] = splat(w[k]);
    a[k] = V{};
  }
  int64_t d = 0;
  for (; d + kW <= dim; d += kW) {
    const V y = load(v + d);
    for (int k = 0; k < R; ++k) a[k] += (kScaled ? load(r[k] + d) * scale[k] : load(r[k] + d)) * y;
  }
  if (d < dim) {
    const V y = load(v + d);
    for (int k = 0; k < R; ++k) {
      const V x = load_tail(r[k] + d, dim - d);
      a[k] += (kScaled ? x * scale[k] : x) * y;
    }
  }
  for (int k = 0; k < R; ++k) out[k] = kScaled ? horizontal_sum(a[k]) : w[k] * horizontal_sum(a[k]);
}

// out[i] = f_{rows[i]} . v for i < n, where f_j = x_j * inv[i] (see block_dot for kScaled). Blocks
// of 4 rows, and of 3 + 2 rather than 4 + 1 at the end: a lone row is one chain of dependent adds.
template <bool kScaled, class T>
PRUNE_INLINE void rows_dot(const T* x, int64_t dim, const int64_t* rows, int64_t n, const double* v,
                           const double* inv, double* out) {
  const T* r[4];
  int64_t i = 0;
  for (; n - i >= 4 && n - i != 5; i += 4) {
    for (int k = 0; k < 4; ++k) r[k] = x + rows[i + k] * dim;
    block_dot<4, kScaled>(r, inv + i, v, dim, out + i);
  }
  if (n - i == 5 || n - i == 3) {
    for (int k = 0; k < 3; ++k) r[k] = x + rows[i + k] * dim;
    block_dot<3, kScaled>(r, inv + i, v, dim, out + i);
    i += 3;
  }
  if (n - i == 2) {
    for (int k = 0; k < 2; ++k) r[k] = x + rows[i + k] * dim;
    block_dot<2, kScaled>(r, inv + i, v, dim, out + i);
  } else if (n - i == 1) {
    r[0] = x + rows[i] * dim;
    block_dot<1, kScaled>(r, inv + i, v, dim, out + i);
  }
}

// sq[j] <- 1 / sqrt(sq[j]) (0 for 0) for j < n, 8 at a time (the array is padded); false when
// some sq[j] is NaN or inf.
PRUNE_INLINE bool inverse_norms(double* sq, int64_t n) {
  bool finite = true;
  for (int64_t j = 0; j < n; ++j) finite &= std::isfinite(sq[j]);
#if defined(CION_PRUNE_BODY_AVX512)
  const V one = splat(1.0);
  for (int64_t j = 0; j < n; j += kW) {
    const __m512d v = reinterpret_cast<__m512d>(load(sq + j));
    const __mmask8 positive = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_GT_OQ);
    const __m512d root = _mm512_maskz_sqrt_pd(positive, v);
    store(sq + j, reinterpret_cast<V>(_mm512_maskz_div_pd(positive, reinterpret_cast<__m512d>(one), root)));
  }
#else
  for (int64_t j = 0; j < n; ++j) sq[j] = sq[j] > 0.0 ? 1.0 / std::sqrt(sq[j]) : 0.0;
#endif
  return finite;
}

// score[i] = (d_i - n_i) / sqrt(|S|^2 - 2 d_i + n_i), or 0 where that radicand is <= kPruneZeroNorm2
// (the other frames sum to ~0), for i < n rounded up to whole vectors (the arrays are padded).
PRUNE_INLINE void scores(const double* dots, const double* n_frame, int64_t n, double norm2, double* score) {
  const V total = splat(norm2), two = splat(2.0), zero_norm2 = splat(kPruneZeroNorm2);
  for (int64_t i = 0; i < n; i += kW) {
    const V d = load(dots + i), n_i = load(n_frame + i);
    const V others2 = total - two * d + n_i;
#if defined(CION_PRUNE_BODY_AVX512)
    const V root = reinterpret_cast<V>(_mm512_maskz_sqrt_pd(0xFF, reinterpret_cast<__m512d>(others2)));
#elif defined(CION_PRUNE_BODY_AVX2)
    const V root = reinterpret_cast<V>(_mm256_sqrt_pd(reinterpret_cast<__m256d>(others2)));
#else
    V root{};
    for (int l = 0; l < kW; ++l) root[l] = std::sqrt(std::max(others2[l], 0.0));
#endif
    const V quotient = (d - n_i) / root;  // NaN or inf in the lanes that the select drops
    V out{};
#if defined(__GNUC__)
    out = others2 > zero_norm2 ? quotient : V{};
#else
    for (int l = 0; l < kW; ++l) out[l] = others2[l] > zero_norm2[l] ? quotient[l] : 0.0;
#endif
    store(score + i, out);
  }
}

#if defined(CION_PRUNE_BODY_AVX512)
// S and d_j = f_j . S of a tracklet of L rows in one pass over its columns, 8 at a time: the L unit
// frames' lanes stay in registers between the sum and the dot products (L of them and L
// accumulators: up to 15 rows fit the 32 AVX-512 registers; 16-18 spill a few and are still faster
// than two passes, measured). The same operations in the same order as scaled_row_sum then
// rows_dot<true>.
constexpr int kShortRows = 18;

template <int L, class T>
PRUNE_INLINE void sum_and_dots(const T* x, int64_t dim, const double* inv, double* dots) {  // dim % 8 == 0
  V a[L];
  for (int j = 0; j < L; ++j) a[j] = V{};
  for (int64_t d = 0; d < dim; d += kW) {
    V u[L];
    V s{};
#pragma GCC unroll 16
    for (int j = 0; j < L; ++j) {
      u[j] = rounded(load(x + j * dim + d) * splat(inv[j]));
      s += u[j];
    }
#pragma GCC unroll 16
    for (int j = 0; j < L; ++j) a[j] += u[j] * s;
  }
  for (int j = 0; j < L; ++j) dots[j] = horizontal_sum(a[j]);
}

template <class T, int... Ls>
PRUNE_INLINE bool sum_and_dots_of(const T* x, int64_t L, int64_t dim, const double* inv, double* dots,
                                  std::integer_sequence<int, Ls...>) {
  return ((L == Ls + 2 ? (sum_and_dots<Ls + 2>(x, dim, inv, dots), true) : false) || ...);
}

// Tracklets of 2 to kShortRows rows of whole vectors (dim % 8 == 0); false (nothing done) for the
// others.
template <class T>
PRUNE_INLINE bool short_sum_and_dots(const T* x, int64_t L, int64_t dim, const double* inv, double* dots) {
  return dim % kW == 0 &&
         sum_and_dots_of(x, L, dim, inv, dots, std::make_integer_sequence<int, kShortRows - 1>{});
}
#else
template <class T>
PRUNE_INLINE bool short_sum_and_dots(const T*, int64_t, int64_t, const double*, double*) {
  return false;
}
#endif

// Prunes one tracklet of L >= 1 rows; returns false when a feature is NaN or inf. The per-frame
// arrays are indexed by position among the frames still kept (live[i] is the row), and compacted
// at every drop, so that the scores are computed 8 at a time.
template <class T>
PRUNE_INLINE bool prune_tracklet(const T* x, int64_t L, int64_t dim, double threshold, int64_t min_frames,
                                 uint8_t* keep, Scratch& s) {
  s.reserve(L, dim);
  double* inv = s.inv.get();
  double* n_frame = s.n_frame.get();  // |f_j|^2: 1, or 0 for an all-zero frame
  double* dots = s.dots.get();
  double* score = s.score.get();
  double* column = s.column.get();
  int64_t* live = s.live.get();
  for (int64_t j = 0; j < L; ++j) inv[j] = sum_squares(x + j * dim, dim);
  if (!inverse_norms(inv, L)) return false;
  if (L < 2) {  // nothing to compare with
    keep[0] = L >= min_frames;
    return true;
  }
  for (int64_t j = 0; j < L; ++j) {
    live[j] = j;
    n_frame[j] = inv[j] > 0.0 ? 1.0 : 0.0;
    keep[j] = 1;
  }
  if (!short_sum_and_dots(x, L, dim, inv, dots)) {
    scaled_row_sum(x, dim, L, dim, inv, s.sum.get());
    rows_dot<true>(x, dim, live, L, s.sum.get(), inv, dots);  // d_j = f_j . S
  }
  double norm2 = 0.0;  // |S|^2 = sum_j f_j . S
  for (int64_t j = 0; j < L; ++j) norm2 += dots[j];
  int64_t kept = L;
  while (kept >= 2) {
    scores(dots, n_frame, kept, norm2, score);
    // The first of equal minima. Two frames left: both scores are the cosine between them, equal
    // up to rounding; the earlier frame is the one to drop (the rule the CUDA kernel and the tests
    // follow).
    int64_t worst = 0;
    if (kept > 2)
      for (int64_t i = 1; i < kept; ++i)
        if (score[i] < score[worst]) worst = i;
    if (score[worst] >= threshold) break;
    const int64_t m = live[worst];
    keep[m] = 0;
    norm2 -= 2.0 * dots[worst] - n_frame[worst];
    --kept;
    if (kept < 2) break;  // the last frame's d_j is never read again
    // f_m, then the arrays without position `worst`.
    double* f_m = s.dropped.get();
    const T* x_m = x + m * dim;
    const double inv_m = inv[worst];
    int64_t d = 0;
    for (; d + kW <= dim; d += kW) store(f_m + d, load(x_m + d) * splat(inv_m));
    if (d < dim) store(f_m + d, load_tail(x_m + d, dim - d) * splat(inv_m));
    for (int64_t i = worst; i < kept; ++i) {
      live[i] = live[i + 1];
      inv[i] = inv[i + 1];
      n_frame[i] = n_frame[i + 1];
      dots[i] = dots[i + 1];
    }
    // d_j -= f_j . f_m for the frames still kept.
    rows_dot<false>(x, dim, live, kept, f_m, inv, column);
    for (int64_t i = 0; i < kept; ++i) dots[i] -= column[i];
  }
  if (kept < min_frames) std::fill(keep, keep + L, uint8_t{0});
  return true;
}

// Tracklets [t0, t1) of p; false when a feature is NaN or inf (the remaining ones are still pruned:
// the caller raises anyway).
template <class T>
bool prune_range(const TrackletPruneParams& p, int64_t t0, int64_t t1, Scratch& s) {
  const T* features = static_cast<const T*>(p.set.features);
  bool finite = true;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t f0 = p.set.offsets[t], L = p.set.offsets[t + 1] - f0;
    if (L > 0)
      finite &= prune_tracklet(features + f0 * p.dim, L, p.dim, p.threshold, p.min_frames, p.keep + f0, s);
  }
  return finite;
}

#undef PRUNE_INLINE
