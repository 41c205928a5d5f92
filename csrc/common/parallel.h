// OpenMP helpers: kernels write `parallel_for` and compile (serially) without OpenMP too.
#pragma once
#include <cstdint>

#if defined(CION_FAST_WITH_OPENMP)
#include <omp.h>
#endif

namespace cion {

inline int max_threads() {
#if defined(CION_FAST_WITH_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int thread_id() {
#if defined(CION_FAST_WITH_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Calls body(i) for i in [0, n), spread over threads with dynamic scheduling in chunks of `grain`
// (work items of uneven cost: queries with different numbers of matches, ragged tracklets).
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& body) {
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel for schedule(dynamic, grain)
  for (int64_t i = 0; i < n; ++i) body(i);
#else
  (void)grain;
  for (int64_t i = 0; i < n; ++i) body(i);
#endif
}

// Calls body(row_band, column_band, bands) for every cell of a bands x bands grid, one band per
// thread (bands = the threads the team got), in `bands` rounds: in round s thread t takes
// (t, (t + s) mod bands), so within a round no two threads share a row band or a column band, and a
// barrier separates the rounds. For work where a cell writes the state of both its bands.
template <class F>
void parallel_rounds(F&& body) {
#if defined(CION_FAST_WITH_OPENMP)
#pragma omp parallel
  {
    const int bands = omp_get_num_threads(), band = omp_get_thread_num();
    for (int round = 0; round < bands; ++round) {
      body(band, (band + round) % bands, bands);
#pragma omp barrier
    }
  }
#else
  body(0, 0, 1);
#endif
}

}  // namespace cion
