// CPU level-1 pruning: OpenMP over chunks of tracklets; each tracklet's rows are read from memory
// once, as they are stored (float32 or float64, never copied), into float64 vector registers, and
// the later passes (the sum S, the d_j, the updates after each drop) reread them from cache. The
// vector body (tracklet_prune_cpu_body.h) is compiled once per instruction set: AVX-512, AVX2 + FMA
// and the baseline; the widest the CPU has runs. The environment variable
// CION_FAST_TRACKLET_PRUNE_ISA (baseline, avx2) caps the choice, so that the tests run every copy
// on one machine. Before (one float64 copy of the normalised rows, then dot_block) it took 7.3x
// one read of the features; see benchmarks/NOTES.md, issue 27.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <utility>

#include "common/cpu_features.h"
#include "ops/tracklet_prune.h"

// The x86 copies: GCC only (#pragma GCC target); other compilers build the baseline copy alone.
#if defined(CION_X86_DISPATCH) && !defined(__clang__)
#define CION_PRUNE_X86_COPIES 1
#include <immintrin.h>
// The vector helpers pass vectors by value; they are always inlined, so no ABI is involved.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace cion {
namespace {

constexpr int kLanes = 8;  // float64 lanes of the widest copy (AVX-512): the buffers are padded to it

// A float64 buffer starting on a cache line (64-byte vector stores then never split a line).
class Buffer {
 public:
  double* get() const { return data_; }
  void reset(int64_t n) {  // zeroed: the vector loops read up to 7 entries past the end
    raw_.reset(new double[n + 2 * kLanes]());
    const uintptr_t misaligned = reinterpret_cast<uintptr_t>(raw_.get()) / sizeof(double) % kLanes;
    data_ = raw_.get() + (kLanes - misaligned) % kLanes;
  }

 private:
  std::unique_ptr<double[]> raw_;
  double* data_ = nullptr;
};

// Per-thread buffers, grown as needed, never shrunk or cleared.
struct Scratch {
  int64_t frames = 0, padded = 0, dim = -1;
  Buffer inv, n_frame, dots, score, column;  // [frames] by position among the kept frames
  std::unique_ptr<int64_t[]> live;      // [frames] the rows still kept, in order
  Buffer sum, dropped;                  // [padded] (dim rounded up to whole vectors)

  void reserve(int64_t L, int64_t d) {
    if (d != dim) {  // one dim per call: only the first tracklet of a thread gets here
      dim = d;
      padded = (d + kLanes - 1) / kLanes * kLanes;
      sum.reset(padded);
      dropped.reset(padded);
      frames = 0;
    }
    if (L > frames) {
      frames = std::max(L, 2 * frames);
      inv.reset(frames);
      n_frame.reset(frames);
      dots.reset(frames);
      score.reset(frames);
      column.reset(frames);
      live.reset(new int64_t[frames]);
    }
  }
};

using RangeFn = bool (*)(const TrackletPruneParams&, int64_t, int64_t, Scratch&);

namespace baseline {
#include "cpu/tracklet_prune_cpu_body.h"
}  // namespace baseline

#if defined(CION_PRUNE_X86_COPIES)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CION_PRUNE_BODY_AVX2 1
namespace avx2 {
#include "cpu/tracklet_prune_cpu_body.h"
}  // namespace avx2
#undef CION_PRUNE_BODY_AVX2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
#define CION_PRUNE_BODY_AVX512 1
namespace avx512 {
#include "cpu/tracklet_prune_cpu_body.h"
}  // namespace avx512
#undef CION_PRUNE_BODY_AVX512
#pragma GCC pop_options
#endif

// The widest copy the CPU runs, capped by CION_FAST_TRACKLET_PRUNE_ISA (read at every call).
template <class T>
RangeFn chosen_copy() {
#if defined(CION_PRUNE_X86_COPIES)
  const IsaCap cap = isa_cap("CION_FAST_TRACKLET_PRUNE_ISA");
  const bool baseline_only = cap == IsaCap::kBaseline;
  const bool avx2_at_most = cap == IsaCap::kAvx2;
  if (!baseline_only && !avx2_at_most && cpu_has_avx512f()) return &avx512::prune_range<T>;
  if (!baseline_only && cpu_has_avx2_fma()) return &avx2::prune_range<T>;
#endif
  return &baseline::prune_range<T>;
}

template <class T>
void prune(const TrackletPruneParams& p) {
  const RangeFn range = chosen_copy<T>();
  // Chunks of 64 tracklets handed out dynamically (lengths vary); a chunk is one contiguous stretch
  // of rows for the hardware prefetcher.
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (p.set.num + kChunk - 1) / kChunk;
  std::atomic<bool> finite{true};
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    Scratch scratch;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t t0 = c * kChunk, t1 = std::min(p.set.num, t0 + kChunk);
      if (!range(p, t0, t1, scratch)) finite.store(false, std::memory_order_relaxed);
    }
  }
  CION_CHECK(finite.load(), p.set.name, " contains NaN or inf values");
}

}  // namespace

void tracklet_prune_cpu(const TrackletPruneParams& p) {
  if (p.dtype == DType::kFloat64)
    prune<double>(p);
  else
    prune<float>(p);
}

}  // namespace cion
