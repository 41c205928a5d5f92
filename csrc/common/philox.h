// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11 "Parallel random numbers: as
// easy as 1, 2, 3") and bit-reproducible arithmetic helpers, for host and device alike.
//
// Why counter-based: every random decision is a pure function of (key, counter), so a CPU loop and
// a CUDA kernel that walk the same counters draw the same numbers in any thread order, and one
// view's draws never depend on how many other views exist (docs/PROTOCOLS.md, "Randomness").
//
// Why the *_rn helpers: nvcc contracts a * b + c into one fused multiply-add by default, which
// rounds once instead of twice. Host x86-64 code (no -mfma) rounds twice. Randomly sampled
// parameters must be bit-identical on both, so sampling code spells every multiply and add with
// these helpers (device: the non-contractable __dmul_rn/__dadd_rn intrinsics; hosts with FMA: a
// forced rounding of each product). sqrt and division are correctly rounded IEEE operations on
// both sides; exp is computed here from + and * only.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dispatch.h"  // CION_HOST_DEVICE

namespace cion {

struct Philox4x32 {
  uint32_t v[4];
};

CION_HOST_DEVICE uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
}

// Philox4x32 with 10 rounds: the Random123 reference algorithm and constants.
CION_HOST_DEVICE Philox4x32 philox4x32_10(Philox4x32 counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kMul0, counter.v[0], &hi0);
    const uint32_t lo1 = mulhilo32(kMul1, counter.v[2], &hi1);
    counter = Philox4x32{{hi1 ^ counter.v[1] ^ key0, lo1, hi0 ^ counter.v[3] ^ key1, lo0}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// A sequential stream of 32-bit draws: block b of the stream is philox(counter_base + b in word 0).
// Callers put their identity (view, image, step) in words 1..3 and the low 16 bits of word 0 count
// blocks, so one stream holds up to 2^16 * 4 draws.
class PhiloxStream {
 public:
  CION_HOST_DEVICE PhiloxStream(uint64_t seed, uint32_t word0_high, uint32_t word1, uint32_t word2,
                                uint32_t word3)
      : key0_(static_cast<uint32_t>(seed)),
        key1_(static_cast<uint32_t>(seed >> 32)),
        word0_high_(word0_high << 16),
        word1_(word1),
        word2_(word2),
        word3_(word3) {}

  CION_HOST_DEVICE uint32_t next() {
    if (used_ == 4) {
      block_ = philox4x32_10(Philox4x32{{word0_high_ | block_index_, word1_, word2_, word3_}}, key0_, key1_);
      ++block_index_;
      used_ = 0;
    }
    return block_.v[used_++];
  }

  // Uniform double in [0, 1): a 32-bit draw scaled exactly by 2^-32.
  CION_HOST_DEVICE double uniform() { return static_cast<double>(next()) * 2.3283064365386963e-10; }

  // Integer in [0, n) for 1 <= n <= 2^32 (multiply-shift; bias below n / 2^32, negligible here).
  CION_HOST_DEVICE int64_t below(uint64_t n) {
    return static_cast<int64_t>((static_cast<uint64_t>(next()) * n) >> 32);
  }

  // True with probability p (p <= 0: never, p >= 1: always).
  CION_HOST_DEVICE bool bernoulli(double p) { return uniform() < p; }

 private:
  uint32_t key0_, key1_, word0_high_, word1_, word2_, word3_;
  uint32_t block_index_ = 0;
  uint32_t used_ = 4;
  Philox4x32 block_{{0, 0, 0, 0}};
};

// ---- bit-reproducible double arithmetic (see the header comment) --------------------------------

CION_HOST_DEVICE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#elif defined(__FP_FAST_FMA)
  // A host ISA with FMA (aarch64, -mfma): GCC's default -ffp-contract=fast would fuse this product
  // into the caller's add. A volatile store forces the rounding.
  volatile double product = a * b;
  return product;
#else
  return a * b;
#endif
}
CION_HOST_DEVICE double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
CION_HOST_DEVICE double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
CION_HOST_DEVICE double sqrt_rn(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
// Round half to even, like Python's round() (the host uses the default rounding mode).
CION_HOST_DEVICE double round_half_even(double a) {
#if defined(__CUDA_ARCH__)
  return rint(a);
#else
  return std::nearbyint(a);
#endif
}
// lo + u * (hi - lo), twice rounded everywhere.
CION_HOST_DEVICE double lerp_rn(double lo, double hi, double u) { return add_rn(lo, mul_rn(u, add_rn(hi, -lo))); }

// exp(x) for |x| < 700 from + and * only, so that host and device agree to the bit. Accurate to a
// few ulp: x = k ln2 + r with |r| <= ln2 / 2, then a degree-13 Taylor polynomial (truncation error
// below 1e-17 relative) and an exact scaling by 2^k.
CION_HOST_DEVICE double exp_reproducible(double x) {
  constexpr double kInvLn2 = 1.4426950408889634;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // ln 2 split so that k * kLn2Hi is exact
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  const double k = round_half_even(mul_rn(x, kInvLn2));
  const double r = add_rn(add_rn(x, -mul_rn(k, kLn2Hi)), -mul_rn(k, kLn2Lo));
  // 1/n! for n = 13 .. 0 (Horner from the highest power).
  constexpr double kInvFactorial[14] = {
      1.6059043836821613e-10, 2.08767569878681e-09,   2.505210838544172e-08, 2.755731922398589e-07,
      2.7557319223985893e-06, 2.48015873015873e-05,   1.984126984126984e-04, 1.388888888888889e-03,
      8.333333333333333e-03,  4.1666666666666664e-02, 0.16666666666666666,   0.5,
      1.0,                    1.0};
  double p = kInvFactorial[0];
  for (int n = 1; n < 14; ++n) p = add_rn(mul_rn(p, r), kInvFactorial[n]);
#if defined(__CUDA_ARCH__)
  return ldexp(p, static_cast<int>(k));
#else
  return std::ldexp(p, static_cast<int>(k));
#endif
}

}  // namespace cion
