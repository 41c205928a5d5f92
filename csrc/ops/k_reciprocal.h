// k-reciprocal re-ranking and Jaccard distance; "step N" below is step N of docs/ALGORITHMS.md,
// "k-reciprocal re-ranking and Jaccard distance".
//
// Never a dense N x N array: the op is a chain of stages on sparse data, each a kernel below.
//
//   distance tiles ──select──► rank lists ──expand──► R* (CSR) ──weights──► V ──query expansion──► V_qe
//   (caller's GEMM)            [N, L-1]                                                             │
//                                                   output ◄──jaccard── inverted index ◄──transpose─┘
//
// Items are numbered 0..N-1, queries first (0..Q-1). D'[i, j] (step 1) is "the distance
// item i sees to item j": D'[i, j] = D[j, i] / max_k D[k, i]. Every stage reads distances in that
// orientation, so "row i" below always means what item i sees (column i of D; the same
// as row i whenever D is symmetric, e.g. distances between features).
//
// Rank lists. Item i's rank list is (i, neighbours[i, 0], ..., neighbours[i, L-2]): the item itself
// first (step 2), then its L-1 nearest other items ordered by (distance, index) -- the order
// of a stable argsort, so results are deterministic under ties. L = k1 + 1 for the original
// algorithm and L = k1 for the SpCL variant (its kNN search returns k1 items, self included).
//
// Sparse rows (R*, V, V_qe) are CSR with int64 offsets and column indices sorted ascending.
//
// Device/stream contract: every pointer lives on `device`; CUDA work is enqueued on `stream` (the
// caller's current stream) and nothing synchronises. All sizes and offsets are int64.
#pragma once
#include <cstdint>

#include "common/tensor_view.h"

namespace cion {

// Stage 1. Folds one block of distances into the running rank lists and row maxima.
//
// block [rows, cols] (float32 or float64, unit column stride, row stride `block_row_stride`):
// block[r, c] is the distance item (row_begin + r) sees to item (col_begin + c), or, when
// `block_columns` is set, to item block_columns[r * block_row_stride + c] (a kNN graph; entries < 0
// are padding and skipped). An item never enters its own list (it is always first).
//
// Gram blocks (row_norms and col_norms set): block[r, c] is the dot product a.b of two feature
// rows and the distance is max(|a|^2 + |b|^2 - 2 a.b, 0), computed here while the block is read
// anyway, so the caller's library runs the bare GEMM and no elementwise pass over the tile.
//
// symmetric: the block also holds the distances the column items see to the row items
// (D[a, b] == D[b, a], disjoint row and column ranges): they are folded in too, so each pair of
// tiles is computed once.
struct KReciprocalSelectParams {
  const void* block = nullptr;
  DType block_dtype = DType::kFloat32;
  const int64_t* block_columns = nullptr;  // optional, [rows, block_row_stride]
  const void* row_norms = nullptr;         // optional, [rows], block dtype: squared row norms
  const void* col_norms = nullptr;         // optional, [cols], block dtype: squared column norms
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t block_row_stride = 0;
  int64_t row_begin = 0;
  int64_t col_begin = 0;
  bool symmetric = false;

  int64_t num_neighbours = 0;        // L - 1 (>= 1)
  double* neighbour_value = nullptr;  // [N, L-1] running state, ascending; start at +inf
  int64_t* neighbour_index = nullptr; // [N, L-1] running state; start at -1 (empty slot)
  double* row_max = nullptr;          // [N] running max of each row (diagonal included); start at
                                      // -inf; optional (the graph API is given the maxima)

  // Optional raw query x gallery block: raw_out[r, c - num_query] = block value for
  // r < num_query <= c (row items only; with queries first, no other pairs carry such values).
  float* raw_out = nullptr;  // [num_query, raw_out_row_stride] float32
  int64_t num_query = 0;
  int64_t raw_out_row_stride = 0;

  int32_t* status = nullptr;  // CUDA only, [1]: set to 1 when a non-finite distance is read
};

// Stage 2. Expanded k-reciprocal sets R*(i) (steps 3-4), in two passes: with indices ==
// nullptr, counts[i] = |R*(i)|; then, with indptr = the exclusive prefix sum of the counts,
// indices receives each sorted set.
//   R(i, m) = { j in rank[i][0..m) : i in rank[j][0..m) }   (m = entries of the rank list)
//   R*(i)   = R(i, m1) U { R(c, mh) : c in R(i, m1), |R(c, mh) n R(i, m1)| > 2/3 |R(c, mh)| }
// with m1 = min(k1 + 1, L) and mh = min(round_half_even(k1 / 2) + 1, L).
struct KReciprocalExpandParams {
  const int64_t* neighbours = nullptr;  // [N, L-1]
  int64_t num_items = 0;
  int64_t num_neighbours = 0;  // L - 1
  int64_t m1 = 0;
  int64_t mh = 0;
  int64_t* counts = nullptr;         // [N], count pass
  const int64_t* indptr = nullptr;   // [N + 1], fill pass
  int64_t* indices = nullptr;        // [nnz], fill pass
  // CUDA only: [N, m1 + m1 * mh] int64, written by the count pass and read by the fill pass
  // (each thread's candidate union; the CPU recomputes instead).
  int64_t* scratch = nullptr;
};

// Where stage 3 reads D'(i, j) for j in R*(i): exactly, from one of three sources.
enum class KReciprocalSource { kFeatures, kBlocks, kGraph };

// Stage 3. Encoding (step 5): values[p] = exp(-d_p) / sum over the row of exp(-d), with
// d = D'[i, j] = distance / row_max[i] (no division when row_max is null: the SpCL variant, or
// when row_max[i] <= 0). Computed as exp(-(d - min d)) so raw SpCL distances cannot underflow.
struct KReciprocalWeightsParams {
  int64_t num_items = 0;
  const int64_t* indptr = nullptr;   // [N + 1]
  const int64_t* indices = nullptr;  // [nnz]
  const double* row_max = nullptr;   // [N] or null
  float* values = nullptr;           // [nnz] output

  KReciprocalSource source = KReciprocalSource::kFeatures;
  DType dtype = DType::kFloat32;  // of the source arrays: float32 or float64

  // kFeatures: squared Euclidean distance between item rows, kept as the caller's two arrays
  // (no copy joining them): item i's row is features[i] for i < num_query (below), else
  // gallery_features[i - num_query] (row strides given; num_query = N: no second array).
  // When stage 1's rank lists are given, a j in i's list is taken at its listed distance (the
  // value the ranking computed: no second read of two feature rows, which at Market-1501 size was
  // 93 % of the pairs and all of this stage's time); only the other pairs read the features.
  const void* features = nullptr;          // [num_query, dim]
  const void* gallery_features = nullptr;  // [N - num_query, dim] or null
  int64_t dim = 0;
  int64_t feature_row_stride = 0;
  int64_t gallery_row_stride = 0;
  const int64_t* neighbour_index = nullptr;  // [N, num_neighbours] or null (stage 1's lists)
  const double* neighbour_value = nullptr;   // [N, num_neighbours], with neighbour_index
  int64_t num_neighbours = 0;

  // kBlocks: the full matrix M = [[q_q, q_g], [q_g^T, g_g]] given as blocks (Q = num_query);
  // item i sees item j at distance M[j, i]. num_query: the items before the gallery, both sources.
  const void* q_q = nullptr;  // [Q, Q], row stride q_q_stride
  const void* q_g = nullptr;  // [Q, G], row stride q_g_stride
  const void* g_g = nullptr;  // [G, G], row stride g_g_stride
  int64_t num_query = 0;
  int64_t q_q_stride = 0, q_g_stride = 0, g_g_stride = 0;

  // kGraph: each item's K listed neighbours sorted by index (graph_index [N, K] int64, padding
  // -1 first) with their distances graph_distance [N, K]. D[i, j] is looked up in i's list, else
  // in j's (distances are symmetric), else it is not known: the largest distance listed for i
  // (a lower bound) stands in and `estimated` [1] counts it.
  const int64_t* graph_index = nullptr;
  const void* graph_distance = nullptr;
  int64_t graph_k = 0;
  int64_t* estimated = nullptr;  // [1], zeroed by the caller; atomically incremented
};

// Stage 4. Local query expansion (step 6): V_qe[i] = mean of V[rank[i][0..k2)]. Two passes
// like stage 2: counts, then (out_indptr set) out_indices / out_values.
struct KReciprocalExpansionParams {
  const int64_t* neighbours = nullptr;  // [N, L-1]
  int64_t num_items = 0;
  int64_t num_neighbours = 0;
  int64_t k2 = 1;  // 1 <= k2 <= L
  const int64_t* indptr = nullptr;
  const int64_t* indices = nullptr;
  const float* values = nullptr;
  int64_t* counts = nullptr;             // [N], count pass
  const int64_t* out_indptr = nullptr;   // [N + 1], fill pass
  int64_t* out_indices = nullptr;
  float* out_values = nullptr;
};

// Stage 5. Inverted index: the transpose of V_qe restricted to rows >= row_begin. Count pass:
// col_counts[k] += entries in column k (zeroed by the caller); fill pass (colptr set): rows and
// out_values per column, rows ascending on the CPU (any order on CUDA).
struct KReciprocalTransposeParams {
  int64_t num_items = 0;
  int64_t row_begin = 0;
  const int64_t* indptr = nullptr;
  const int64_t* indices = nullptr;
  const float* values = nullptr;
  int64_t* col_counts = nullptr;     // [N], count pass
  const int64_t* colptr = nullptr;   // [N + 1], fill pass
  int64_t* rows = nullptr;
  float* out_values = nullptr;
  int64_t* cursor = nullptr;  // CUDA only, [N]: fill positions (a copy of colptr[0..N))
};

// Stage 6. Jaccard distance (step 7) of rows [row_begin, row_end) against items
// >= col_begin (the inverted index must hold exactly the rows >= col_begin):
//   s(i, j) = sum_k min(V_qe[i, k], V_qe[j, k]),   J(i, j) = 1 - s / (2 - s).
enum class KReciprocalJaccardMode {
  kRerank,       // out [rows, G] holds the raw query x gallery distances (stage 1's raw_out) and
                 // becomes (1 - lambda) J + lambda raw / row_max (step 8); col_begin = Q
  kSparseCount,  // counts[r] = number of j with s > 0
  kSparseFill,   // out_indptr given: out_indices (ascending) / out_values = J where s > 0
  kDense,        // out [rows, N - col_begin] = J (1 where s = 0)
};

struct KReciprocalJaccardParams {
  KReciprocalJaccardMode mode = KReciprocalJaccardMode::kRerank;
  int64_t num_items = 0;
  int64_t row_begin = 0;
  int64_t row_end = 0;
  int64_t col_begin = 0;
  const int64_t* indptr = nullptr;  // V_qe
  const int64_t* indices = nullptr;
  const float* values = nullptr;
  const int64_t* colptr = nullptr;  // inverted index
  const int64_t* inv_rows = nullptr;
  const float* inv_values = nullptr;
  bool clamp_negative = false;  // SpCL clamps J at 0 (rounding can make it slightly negative)

  double lambda_value = 0.0;        // kRerank
  const double* row_max = nullptr;  // kRerank, [N]
  float* out = nullptr;             // kRerank / kDense: [rows, out_row_stride]
  int64_t out_row_stride = 0;
  int64_t* counts = nullptr;        // kSparseCount, [rows]
  const int64_t* out_indptr = nullptr;  // kSparseFill, [rows + 1]
  int64_t* out_indices = nullptr;
  float* out_values = nullptr;
  // CUDA only: [scratch_rows, N - col_begin] float32, zeroed by the caller: one dense accumulator
  // per thread block (the kernel runs scratch_rows blocks over the rows).
  float* scratch = nullptr;
  int64_t scratch_rows = 0;
};

// Stage 6 for the graph API: the re-ranked distance of given candidate pairs only, each Jaccard
// term a sorted-row intersection (no inverted index, O(N K) memory):
//   out[q, t] = (1 - lambda) J(q, candidates[q, t]) + lambda distance[q, t] / row_max[q]
// for gallery candidates (index >= num_query); +inf for padding (< 0), the query itself and other
// queries.
struct KReciprocalPairParams {
  int64_t num_query = 0;
  int64_t num_candidates = 0;          // K
  const int64_t* candidates = nullptr; // [Q, K] item indices
  const void* distance = nullptr;      // [Q, K] float32/float64 raw distances
  DType dtype = DType::kFloat32;
  const double* row_max = nullptr;     // [N]
  const int64_t* indptr = nullptr;     // V_qe
  const int64_t* indices = nullptr;
  const float* values = nullptr;
  double lambda_value = 0.0;
  float* out = nullptr;                // [Q, K]
};

void k_reciprocal_select(const KReciprocalSelectParams& p, Device device, int device_index, void* stream);
void k_reciprocal_expand(const KReciprocalExpandParams& p, Device device, int device_index, void* stream);
void k_reciprocal_weights(const KReciprocalWeightsParams& p, Device device, int device_index, void* stream);
void k_reciprocal_query_expansion(const KReciprocalExpansionParams& p, Device device, int device_index,
                                  void* stream);
void k_reciprocal_transpose(const KReciprocalTransposeParams& p, Device device, int device_index, void* stream);
void k_reciprocal_jaccard(const KReciprocalJaccardParams& p, Device device, int device_index, void* stream);
void k_reciprocal_pairs(const KReciprocalPairParams& p, Device device, int device_index, void* stream);

void k_reciprocal_select_cpu(const KReciprocalSelectParams& p);
void k_reciprocal_expand_cpu(const KReciprocalExpandParams& p);
void k_reciprocal_weights_cpu(const KReciprocalWeightsParams& p);
void k_reciprocal_query_expansion_cpu(const KReciprocalExpansionParams& p);
void k_reciprocal_transpose_cpu(const KReciprocalTransposeParams& p);
void k_reciprocal_jaccard_cpu(const KReciprocalJaccardParams& p);
void k_reciprocal_pairs_cpu(const KReciprocalPairParams& p);
#if defined(CION_FAST_WITH_CUDA)
void k_reciprocal_select_cuda(const KReciprocalSelectParams& p, int device_index, void* stream);
void k_reciprocal_expand_cuda(const KReciprocalExpandParams& p, int device_index, void* stream);
void k_reciprocal_weights_cuda(const KReciprocalWeightsParams& p, int device_index, void* stream);
void k_reciprocal_query_expansion_cuda(const KReciprocalExpansionParams& p, int device_index, void* stream);
void k_reciprocal_transpose_cuda(const KReciprocalTransposeParams& p, int device_index, void* stream);
void k_reciprocal_jaccard_cuda(const KReciprocalJaccardParams& p, int device_index, void* stream);
void k_reciprocal_pairs_cuda(const KReciprocalPairParams& p, int device_index, void* stream);
#endif

}  // namespace cion
