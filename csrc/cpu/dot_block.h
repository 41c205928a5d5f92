// Blocks of row-by-row dot products on the CPU, shared by the tracklet kernels
// (tracklet_similarity, sliding_range_link): the small (na x D) . (D x nb) products at their core.
//
// Guarantees the kernels rely on:
// * Every entry is computed with the same sequence of operations whatever its place in the block
//   (the same lanes, the same reduction tree, the tail padded with zeros), so a pair of rows always
//   gives the same bits, and dot(x, y) == dot(y, x) exactly. The link passes of sliding_range_link
//   recompute similarities and must reach the same decisions every time.
// * On x86-64 CPUs with AVX2 + FMA a copy compiled for them is chosen at run time (the package is
//   built for the baseline ISA, so without this the kernels would run on SSE2 at half the speed);
//   with AVX-512VL, a copy with wider tiles and the same operations per entry (the same bits); for
//   float32 on Intel's AVX-512 CPUs, a 16-lane copy holding two entries per register, again with
//   the same operations per entry (the same bits).
#pragma once
#include <cstdint>

namespace cion {

// out[i * ldo + j] = sum_d a[i * lda + d] * b[j * ldb + d] for i < na, j < nb, d < dim.
// Rows are contiguous (unit stride in d); lda/ldb/ldo in elements.
void dot_block(const float* a, int64_t lda, int64_t na, const float* b, int64_t ldb, int64_t nb,
               int64_t dim, float* out, int64_t ldo);
void dot_block(const double* a, int64_t lda, int64_t na, const double* b, int64_t ldb, int64_t nb,
               int64_t dim, double* out, int64_t ldo);

// Asks the memory system for [p, p + bytes) ahead of use (a no-op where unsupported). The pair
// kernels read tracklets at random places; fetching the next pair's rows hides that latency.
inline void prefetch_bytes(const void* p, int64_t bytes) {
#if defined(__GNUC__)
  const char* c = static_cast<const char*>(p);
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(c + offset, 0, 3);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace cion
