// CPU level-1 pruning: OpenMP over tracklets (dynamic: lengths vary); each tracklet's frames are
// read from memory once, into a float64 normalised copy that stays in cache for the incremental
// updates.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "cpu/dot_block.h"
#include "ops/tracklet_prune.h"

namespace cion {
namespace {

struct Scratch {
  std::vector<double> unit;  // [L, dim] the tracklet's normalised frames, float64
  std::vector<double> inv, dots, sum, column;
};

// Prunes tracklet rows [f0, f1); returns false when a feature is NaN or inf. The dot products go
// through dot_block (float64, vectorised) on a float64 copy of the normalised frames.
template <class T>
bool prune_one(const TrackletPruneParams& p, int64_t f0, int64_t f1, Scratch& s) {
  const T* x = static_cast<const T*>(p.set.features) + f0 * p.dim;
  const int64_t L = f1 - f0, dim = p.dim;
  uint8_t* keep = p.keep + f0;
  s.unit.resize(L * dim);
  s.inv.resize(L);
  s.dots.resize(L);
  s.column.resize(L);
  s.sum.assign(dim, 0.0);
  for (int64_t k = 0; k < L * dim; ++k) s.unit[k] = static_cast<double>(x[k]);
  bool finite = true;
  for (int64_t j = 0; j < L; ++j) {
    double* row = s.unit.data() + j * dim;
    double sq;
    dot_block(row, dim, 1, row, dim, 1, dim, &sq, 1);
    finite &= std::isfinite(sq);
    s.inv[j] = sq > 0.0 ? 1.0 / std::sqrt(sq) : 0.0;
    for (int64_t d = 0; d < dim; ++d) row[d] *= s.inv[j];
    for (int64_t d = 0; d < dim; ++d) s.sum[d] += row[d];
  }
  if (!finite) return false;
  dot_block(s.unit.data(), dim, L, s.sum.data(), dim, 1, dim, s.dots.data(), 1);  // d_j = f_j . S
  double norm2 = 0.0;  // |S|^2 = sum_j f_j . S
  for (int64_t j = 0; j < L; ++j) {
    norm2 += s.dots[j];
    keep[j] = 1;
  }
  int64_t kept = L;
  while (kept >= 2) {
    int64_t worst = -1;
    double worst_score = 0.0;
    for (int64_t j = 0; j < L; ++j) {
      if (!keep[j]) continue;
      const double n_j = s.inv[j] > 0.0 ? 1.0 : 0.0;
      const double others2 = norm2 - 2.0 * s.dots[j] + n_j;
      const double score = others2 > kPruneZeroNorm2 ? (s.dots[j] - n_j) / std::sqrt(others2) : 0.0;
      if (worst < 0 || score < worst_score) {
        worst = j;
        worst_score = score;
      }
      // Two frames left: both scores are the cosine between them, equal up to rounding; the
      // earlier frame is the one to drop (the rule the CUDA kernel and the tests follow).
      if (kept == 2) break;
    }
    if (worst_score >= p.threshold) break;
    keep[worst] = 0;
    --kept;
    norm2 -= 2.0 * s.dots[worst] - (s.inv[worst] > 0.0 ? 1.0 : 0.0);
    // d_j -= f_j . f_worst for every frame (dropped ones are never read again).
    dot_block(s.unit.data(), dim, L, s.unit.data() + worst * dim, dim, 1, dim, s.column.data(), 1);
    for (int64_t j = 0; j < L; ++j) s.dots[j] -= s.column[j];
  }
  if (kept < p.min_frames) std::fill(keep, keep + L, uint8_t{0});
  return true;
}

template <class T>
void prune(const TrackletPruneParams& p) {
  std::atomic<bool> finite{true};
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
#endif
  {
    Scratch scratch;
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp for schedule(dynamic, 64)
#endif
    for (int64_t t = 0; t < p.set.num; ++t) {
      if (!prune_one<T>(p, p.set.offsets[t], p.set.offsets[t + 1], scratch))
        finite.store(false, std::memory_order_relaxed);
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
