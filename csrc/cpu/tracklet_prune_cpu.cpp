// CPU level-1 pruning: OpenMP over tracklets (dynamic: lengths vary); each tracklet's frames are
// read from memory once and then stay in cache for the incremental updates.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "ops/tracklet_prune.h"

namespace cion {
namespace {

template <class T>
double dot(const T* x, const T* y, int64_t dim) {
  double sum = 0.0;
  for (int64_t d = 0; d < dim; ++d) sum += static_cast<double>(x[d]) * static_cast<double>(y[d]);
  return sum;
}

struct Scratch {
  std::vector<double> inv, dots, sum;
};

// Prunes tracklet rows [f0, f1); returns false when a feature is NaN or inf.
template <class T>
bool prune_one(const TrackletPruneParams& p, int64_t f0, int64_t f1, Scratch& s) {
  const T* x = static_cast<const T*>(p.set.features);
  const int64_t L = f1 - f0, dim = p.dim;
  uint8_t* keep = p.keep + f0;
  s.inv.assign(L, 0.0);
  s.dots.assign(L, 0.0);
  s.sum.assign(dim, 0.0);
  bool finite = true;
  for (int64_t j = 0; j < L; ++j) {
    const T* row = x + (f0 + j) * dim;
    const double sq = dot(row, row, dim);
    finite &= std::isfinite(sq);
    s.inv[j] = sq > 0.0 ? 1.0 / std::sqrt(sq) : 0.0;
    for (int64_t d = 0; d < dim; ++d) s.sum[d] += static_cast<double>(row[d]) * s.inv[j];
  }
  if (!finite) return false;
  double norm2 = 0.0;  // |S|^2 = sum_j f_j . S
  for (int64_t j = 0; j < L; ++j) {
    const T* row = x + (f0 + j) * dim;
    double d_j = 0.0;
    for (int64_t d = 0; d < dim; ++d) d_j += static_cast<double>(row[d]) * s.sum[d];
    s.dots[j] = d_j * s.inv[j];
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
    const T* dropped = x + (f0 + worst) * dim;
    for (int64_t j = 0; j < L; ++j) {
      if (keep[j]) s.dots[j] -= dot(x + (f0 + j) * dim, dropped, dim) * (s.inv[j] * s.inv[worst]);
    }
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
