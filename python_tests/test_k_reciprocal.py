"""k_reciprocal: re-ranking and Jaccard distance against an independent float64 numpy oracle
written from its definition (docs/ALGORITHMS.md): dense matrices, Python sets, one item at a
time -- what torchreid's ``re_ranking`` computes."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.integrations import torchreid as torchreid_adapter
from cion_fast.ops import (
    jaccard_distance,
    k_reciprocal_rerank,
    k_reciprocal_rerank_from_distances,
    k_reciprocal_rerank_from_graph,
)
from cion_fast.reference import k_reciprocal as reference

from conftest import cupy, requires_torch, run_in_threads, to_framework, torch, value_errors_under_python_O

TOL = 1e-5


def oracle(full, num_query, k1, k2, lambda_value, variant="original"):
    """Steps 1-8 (docs/ALGORITHMS.md) on the full [N, N] matrix D (items: queries first).

    Returns (final [Q, G], J [N, N]). Step 2 ranks each item first, then by (distance, index).
    """
    full = np.asarray(full, dtype=np.float64)
    n = full.shape[0]
    if variant == "original":
        seen = (full / full.max(axis=0)[None, :]).T  # D'[i, j] = D[j, i] / max_k D[k, i]
        length = k1 + 1
    else:  # SpCL: raw distances, k1 items per list (self included)
        seen = full.T.copy()
        length = k1
    rank = [[i] + sorted((j for j in range(n) if j != i), key=lambda j: (seen[i, j], j)) for i in range(n)]

    def reciprocal(i, m):
        return {j for j in rank[i][:m] if i in rank[j][:m]}

    m1 = min(k1 + 1, length)
    mh = min(int(np.around(k1 / 2.0)) + 1, length)
    v = np.zeros((n, n))
    for i in range(n):
        base = reciprocal(i, m1)
        expanded = set(base)
        for c in base:
            candidate = reciprocal(c, mh)
            if len(candidate & base) > 2.0 / 3.0 * len(candidate):
                expanded |= candidate
        members = sorted(expanded)
        weight = np.exp(-seen[i, members])
        v[i, members] = weight / weight.sum()
    if k2 > 1:
        v = np.stack([v[rank[i][:k2]].mean(axis=0) for i in range(n)])
    overlap = np.stack([np.minimum(v[i][None, :], v).sum(axis=1) for i in range(n)])
    jaccard = 1 - overlap / (2 - overlap)
    if variant == "spcl":
        jaccard = np.maximum(jaccard, 0)
    final = (1 - lambda_value) * jaccard + lambda_value * seen
    return final[:num_query, num_query:], jaccard


def squared_distances(x):
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def clustered(n, dim, seed, clusters=None, spread=0.6):
    """Tie-free features with some cluster structure, so R* expansions actually happen."""
    rng = np.random.default_rng(seed)
    clusters = clusters or max(2, n // 8)
    centres = rng.normal(size=(clusters, dim))
    return centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim))


# ---- re-ranking from features ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_query,num_gallery,dim,k1,k2,lambda_value,tile_size",
    [
        (13, 90, 8, 20, 6, 0.3, None),  # the paper's parameters
        (13, 90, 8, 20, 6, 0.3, 7),  # many tiles, straddling the query/gallery border
        (1, 40, 5, 7, 1, 0.0, 9),  # k2 = 1 (no query expansion), lambda = 0 (pure Jaccard)
        (25, 60, 12, 9, 10, 1.0, 16),  # k2 = k1 + 1, lambda = 1 (original distance only)
        (10, 47, 6, 21, 4, 0.5, 13),  # odd k1: round(10.5) = 10 (half to even)
        (10, 47, 6, 23, 2, 0.2, None),  # odd k1: round(11.5) = 12
        (4, 26, 3, 1, 2, 0.3, None),  # smallest k1
        (6, 20, 4, 25, 6, 0.3, 5),  # k1 = N - 1: every item in every list
    ],
)
def test_rerank_from_features_matches_oracle(
    poisoned_outputs, num_query, num_gallery, dim, k1, k2, lambda_value, tile_size
):
    x = clustered(num_query + num_gallery, dim, seed=num_gallery + k1)
    expected, _ = oracle(squared_distances(x), num_query, k1, k2, lambda_value)
    for dtype in (np.float64, np.float32):
        features = x.astype(dtype)
        got = k_reciprocal_rerank(features[:num_query], features[num_query:], k1, k2, lambda_value, tile_size=tile_size)
        assert got.dtype == np.float32 and got.shape == (num_query, num_gallery)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_rerank_larger_problem_over_many_tiles(poisoned_outputs):
    x = clustered(260, 16, seed=5, clusters=20)
    expected, _ = oracle(squared_distances(x), 45, 20, 6, 0.3)
    got = k_reciprocal_rerank(x[:45].astype(np.float32), x[45:].astype(np.float32), tile_size=64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rerank_wide_tiles_match_reference(poisoned_outputs, dtype):
    """Tiles wider than the kernel's 512-column strips, cut into one band per thread, with a ragged
    last strip and chunk. Integer features make every distance exact in both dtypes, with many ties
    (decided by the tie rule), so float32 must give the float64 reference's rank lists."""
    x = np.random.default_rng(3).integers(-6, 7, size=(2400, 8)).astype(np.float64)
    features = torch.from_numpy(x)
    expected = reference.k_reciprocal_rerank(features[:300], features[300:], 20, 6, 0.3).numpy()
    got = k_reciprocal_rerank(x[:300].astype(dtype), x[300:].astype(dtype), 20, 6, 0.3, tile_size=1200)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


# Feature-path calls whose symmetric tiles are cut into thread bands: wide tiles (several strips
# per band), many small tiles, the dense Jaccard distance. (op name, input names, other arguments)
_TILE_CASES = [
    ("k_reciprocal_rerank", ("wide_q32", "wide_g32"), {"tile_size": 1200}),
    ("k_reciprocal_rerank", ("wide_q64", "wide_g64"), {"tile_size": 1200}),
    ("k_reciprocal_rerank", ("many_q", "many_g"), {"tile_size": 64}),
    ("jaccard_distance", ("small",), {"k1": 8, "k2": 1, "sparse": False, "tile_size": 11}),
]
_RUN_TILE_CASES = """
import sys, numpy as np, cion_fast.ops as ops
cases, inputs = {cases!r}, np.load("in.npz")
out = [getattr(ops, name)(*(inputs[k] for k in keys), **kwargs) for name, keys, kwargs in cases]
assert "torch" not in sys.modules
np.savez("out.npz", *out)
"""


@pytest.mark.parametrize("threads", ["1", "3"])
def test_feature_tiles_same_bits_under_other_thread_counts(threads, tmp_path):
    """The bands follow the thread count; the results must not: the cases rerun in a subprocess
    with one thread and with an odd count give this process's bits. The subprocess imports no torch
    (which sets the OpenMP runtime's thread count, shared with the kernels, to its own) and starts
    outside the repository root (whose source tree, without _C, would shadow the package)."""
    import os
    import subprocess
    import sys

    wide = np.random.default_rng(3).integers(-6, 7, size=(2400, 8))
    many = clustered(260, 16, seed=5, clusters=20).astype(np.float32)
    inputs = {"wide_q32": wide[:300].astype(np.float32), "wide_g32": wide[300:].astype(np.float32),
              "wide_q64": wide[:300].astype(np.float64), "wide_g64": wide[300:].astype(np.float64),
              "many_q": many[:45], "many_g": many[45:], "small": clustered(110, 8, seed=9).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **inputs)
    done = subprocess.run([sys.executable, "-c", _RUN_TILE_CASES.format(cases=_TILE_CASES)],
                          env={**os.environ, "OMP_NUM_THREADS": threads}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for i, (name, keys, kwargs) in enumerate(_TILE_CASES):
        expected = globals()[name](*(inputs[k] for k in keys), **kwargs)
        np.testing.assert_array_equal(got[f"arr_{i}"], expected, err_msg=f"case {i}")


def test_rerank_normalize_option():
    x = clustered(70, 10, seed=6) * np.random.default_rng(6).uniform(0.5, 3, size=(70, 1))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected, _ = oracle(squared_distances(unit), 10, 8, 3, 0.3)
    np.testing.assert_allclose(k_reciprocal_rerank(x[:10], x[10:], 8, 3, normalize=True), expected, rtol=0, atol=TOL)


@requires_torch
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_rerank_torch_input_returns_torch(dtype):
    x = torch.from_numpy(clustered(60, 8, seed=7)).to(getattr(torch, dtype))
    expected, _ = oracle(squared_distances(x.double().numpy()), 12, 10, 4, 0.3)
    got = k_reciprocal_rerank(x[:12].requires_grad_(dtype == "float32"), x[12:], 10, 4)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device.type == "cpu"
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=TOL)


def test_rerank_non_contiguous_and_readonly_inputs():
    x = clustered(50, 6, seed=8)
    expected, _ = oracle(squared_distances(x), 9, 6, 3, 0.3)
    wide = np.zeros((50, 12))
    wide[:, ::2] = x
    readonly = x.copy()
    readonly.flags.writeable = False
    for features in (wide[:, ::2], np.asfortranarray(x), readonly):
        np.testing.assert_allclose(k_reciprocal_rerank(features[:9], features[9:], 6, 3), expected, rtol=0, atol=TOL)


# ---- re-ranking from distance blocks --------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k1,k2,lambda_value,tile_size", [(20, 6, 0.3, None), (5, 1, 0.0, 7), (11, 12, 1.0, 3)])
def test_rerank_from_distances_matches_oracle(poisoned_outputs, symmetric, k1, k2, lambda_value, tile_size):
    rng = np.random.default_rng(k1)
    num_query, n = 17, 95
    full = squared_distances(clustered(n, 7, seed=k1))
    if not symmetric:  # step 1 reads columns: an asymmetric q_q / g_g shows it
        full = full + 0.3 * rng.random((n, n)) * (1 - np.eye(n))
    q_g, q_q, g_g = full[:num_query, num_query:], full[:num_query, :num_query], full[num_query:, num_query:]
    expected, _ = oracle(np.block([[q_q, q_g], [q_g.T, g_g]]), num_query, k1, k2, lambda_value)
    got = k_reciprocal_rerank_from_distances(q_g, q_q, g_g, k1, k2, lambda_value, tile_size=tile_size)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    got32 = k_reciprocal_rerank_from_distances(*(b.astype(np.float32) for b in (q_g, q_q, g_g)), k1, k2, lambda_value)
    np.testing.assert_allclose(got32, expected, rtol=0, atol=TOL)


def test_torchreid_adapter_squares_like_torchreid():
    x = clustered(80, 6, seed=9)
    euclidean = np.sqrt(squared_distances(x))
    q = 15
    squared = np.power(euclidean, 2).astype(np.float32)  # torchreid's first step
    expected, _ = oracle(squared, q, 20, 6, 0.3)
    got = torchreid_adapter.re_ranking(euclidean[:q, q:], euclidean[:q, :q], euclidean[q:, q:])
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


@requires_torch
def test_plain_pytorch_reference_matches_oracle():
    rng = np.random.default_rng(10)
    x = clustered(70, 5, seed=10)
    full = squared_distances(x) + 0.2 * rng.random((70, 70)) * (1 - np.eye(70))
    blocks = [torch.from_numpy(b) for b in (full[:12, 12:], full[:12, :12], full[12:, 12:])]
    blocks_as_given = np.block([[full[:12, :12], full[:12, 12:]], [full[:12, 12:].T, full[12:, 12:]]])
    expected, _ = oracle(blocks_as_given, 12, 9, 4, 0.3)
    np.testing.assert_allclose(reference.re_ranking(*blocks, 9, 4, 0.3).numpy(), expected, rtol=0, atol=1e-12)
    expected, jaccard = oracle(squared_distances(x), 12, 9, 4, 0.3)
    features = torch.from_numpy(x)
    got = reference.k_reciprocal_rerank(features[:12], features[12:], 9, 4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(reference.jaccard_distance(features, 9, 4).numpy(), jaccard, atol=1e-12)


# ---- Jaccard distance -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["original", "spcl"])
@pytest.mark.parametrize("k1,k2,tile_size", [(30, 6, None), (8, 1, 11), (5, 5, 20)])
def test_jaccard_distance_matches_oracle(poisoned_outputs, variant, k1, k2, tile_size):
    x = clustered(110, 8, seed=k1 + k2)
    if variant == "spcl":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)  # as SpCL calls it
    _, expected = oracle(squared_distances(x), 0, k1, k2, 0.0, variant)
    dense = jaccard_distance(x.astype(np.float32), k1, k2, variant=variant, sparse=False, tile_size=tile_size)
    assert dense.dtype == np.float32 and dense.shape == (110, 110)
    np.testing.assert_allclose(dense, expected, rtol=0, atol=TOL)

    scipy_sparse = pytest.importorskip("scipy.sparse", reason="numpy's sparse result is a scipy matrix")
    sparse = jaccard_distance(x, k1, k2, variant=variant, tile_size=tile_size)
    assert isinstance(sparse, scipy_sparse.csr_matrix) and sparse.has_sorted_indices
    # Stored: exactly the pairs with a non-zero overlap (J < 1), diagonal included; absent = 1.
    stored = np.zeros((110, 110), dtype=bool)
    stored[np.repeat(np.arange(110), np.diff(sparse.indptr)), sparse.indices] = True
    np.testing.assert_array_equal(stored, expected < 1 - 1e-6)
    assert np.all(stored.diagonal())
    np.testing.assert_allclose(np.where(stored, sparse.toarray(), 1.0), expected, rtol=0, atol=TOL)


@requires_torch
def test_jaccard_distance_torch_sparse_csr():
    x = torch.from_numpy(clustered(60, 6, seed=11)).float()
    _, expected = oracle(squared_distances(x.double().numpy()), 0, 10, 3, 0.0)
    sparse = jaccard_distance(x, 10, 3)
    assert sparse.layout == torch.sparse_csr and sparse.shape == (60, 60)
    dense = sparse.to_dense().numpy()
    present = np.zeros((60, 60), dtype=bool)
    crow, col = sparse.crow_indices().numpy(), sparse.col_indices().numpy()
    present[np.repeat(np.arange(60), np.diff(crow)), col] = True
    np.testing.assert_allclose(np.where(present, dense, 1.0), expected, rtol=0, atol=TOL)


# ---- kNN graph ------------------------------------------------------------------------------------


def knn_graph(full, k):
    """Each item's k nearest items, itself first (faiss-like), and their distances."""
    index = np.argsort(full, axis=1, kind="stable")[:, :k]
    return index, np.take_along_axis(full, index, axis=1)


def check_graph_result(result, expected, num_query, candidates):
    index, distance = result.index, result.distance
    assert index.shape == distance.shape == candidates[:num_query].shape
    for q in range(num_query):
        gallery = sorted(j - num_query for j in candidates[q] if j >= num_query)
        valid = index[q] >= 0
        assert sorted(index[q][valid].tolist()) == gallery  # exactly its gallery candidates
        assert np.all(np.isinf(distance[q][~valid]))
        assert np.all(np.diff(distance[q][valid]) >= 0)  # ascending
        np.testing.assert_allclose(distance[q][valid], expected[q, index[q][valid]], rtol=0, atol=TOL)


@pytest.mark.parametrize("k1,k2,lambda_value", [(20, 6, 0.3), (6, 1, 0.0), (9, 5, 1.0)])
def test_graph_with_complete_lists_is_exact(poisoned_outputs, k1, k2, lambda_value):
    num_query, n = 14, 80
    full = squared_distances(clustered(n, 6, seed=k1))
    expected, _ = oracle(full, num_query, k1, k2, lambda_value)
    index, distance = knn_graph(full, n)
    result = k_reciprocal_rerank_from_graph(index, distance, full.max(axis=1), num_query, k1, k2, lambda_value)
    assert result.num_estimated == 0
    check_graph_result(result, expected, num_query, index)


def test_graph_lists_without_self_shuffled_padded_int32():
    """faiss-style lists in any order, without the item itself, padded with -1: same result."""
    num_query, n, k = 12, 90, 60
    full = squared_distances(clustered(n, 6, seed=12))
    expected, _ = oracle(full, num_query, 10, 4, 0.3)
    index, distance = knn_graph(full, k)
    clean = k_reciprocal_rerank_from_graph(index, distance, full.max(axis=1), num_query, 10, 4, 0.3)
    assert clean.num_estimated == 0
    check_graph_result(clean, expected, num_query, index)

    rng = np.random.default_rng(12)
    index, distance = index[:, 1:], distance[:, 1:]
    order = rng.permuted(np.tile(np.arange(k - 1), (n, 1)), axis=1)
    index, distance = np.take_along_axis(index, order, 1), np.take_along_axis(distance, order, 1)
    index = np.concatenate([index, -np.ones((n, 3), dtype=index.dtype)], axis=1).astype(np.int32)
    distance = np.concatenate([distance, np.full((n, 3), np.inf)], axis=1)  # padding is never read
    messy = k_reciprocal_rerank_from_graph(index, distance, full.max(axis=1), num_query, 10, 4, 0.3)
    assert messy.num_estimated == 0
    check_graph_result(messy, expected, num_query, index)


@requires_torch
def test_graph_torch_input_returns_torch():
    num_query, n = 10, 60
    full = squared_distances(clustered(n, 5, seed=26))
    expected, _ = oracle(full, num_query, 8, 3, 0.3)
    index, distance = knn_graph(full, n)
    result = k_reciprocal_rerank_from_graph(torch.from_numpy(index), torch.from_numpy(distance).float(),
                                            torch.from_numpy(full.max(axis=1)), num_query, 8, 3, 0.3)
    assert isinstance(result.index, torch.Tensor) and result.index.dtype == torch.int64
    assert result.distance.dtype == torch.float32 and result.num_estimated == 0
    check_graph_result(result._replace(index=result.index.numpy(), distance=result.distance.numpy()), expected,
                       num_query, index)


def test_graph_estimates_are_counted_and_close():
    num_query, n = 15, 120
    full = squared_distances(clustered(n, 6, seed=13))
    expected, _ = oracle(full, num_query, 20, 6, 0.3)
    index, distance = knn_graph(full, 22)  # just enough for the rank lists
    result = k_reciprocal_rerank_from_graph(index, distance, full.max(axis=1), num_query)
    assert result.num_estimated > 0
    valid = result.index >= 0
    error = np.abs(result.distance[valid] - np.take_along_axis(expected, np.where(valid, result.index, 0), 1)[valid])
    assert error.max() < 0.05  # lower-bounded distances move the encodings a little


# ---- duplicates and degenerate data ---------------------------------------------------------------


def test_duplicate_features_do_not_crash_or_hang():
    x = clustered(40, 5, seed=14).astype(np.float32)
    x = np.concatenate([x, x, x[:10]])  # every item has exact duplicates: distance ties at 0
    out = k_reciprocal_rerank(x[:20], x[20:], 20, 6, tile_size=16)
    assert np.all(np.isfinite(out))
    same = k_reciprocal_rerank(np.ones((3, 4), np.float32), np.ones((9, 4), np.float32), 5, 3)
    assert np.all(np.isfinite(same))  # all distances 0: no division by the row maximum
    dense = jaccard_distance(x, 30, 6, sparse=False)
    assert np.all(np.isfinite(dense)) and np.allclose(dense.diagonal(), 0, atol=1e-6)
    graph_index, graph_distance = knn_graph(squared_distances(x.astype(np.float64)), 31)
    result = k_reciprocal_rerank_from_graph(graph_index, graph_distance, np.ones(90), 20, 20, 6)
    assert np.all(np.isfinite(result.distance[result.index >= 0]))


def test_duplicates_follow_the_tie_rule():
    """Exact ties (integer distances) follow the documented rule: self first, then by index."""
    rng = np.random.default_rng(15)
    points = rng.integers(0, 4, size=(40, 2)).astype(np.float64)
    full = squared_distances(points)
    expected, _ = oracle(full, 8, 6, 3, 0.3)
    got = k_reciprocal_rerank_from_distances(full[:8, 8:], full[:8, :8], full[8:, 8:], 6, 3, 0.3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


# ---- errors ---------------------------------------------------------------------------------------


def _features():
    x = clustered(30, 4, seed=16)
    return dict(query_features=x[:5], gallery_features=x[5:])


def _with_nan(x, value=np.nan):
    x = x.copy()
    x[1, 2] = value
    return x


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda a: dict(a, gallery_features=a["gallery_features"][:, :3]), ValueError, "same dimension"),
        (lambda a: dict(a, k1=30), ValueError, "k1 must be in"),
        (lambda a: dict(a, k1=0), ValueError, "k1 must be in"),
        (lambda a: dict(a, k1=2.5), TypeError, "k1 must be an integer"),
        (lambda a: dict(a, k1=True), TypeError, "k1 must be an integer"),
        (lambda a: dict(a, k1=5, k2=7), ValueError, "k2 must be in"),
        (lambda a: dict(a, k2=0), ValueError, "k2 must be in"),
        (lambda a: dict(a, lambda_value=-0.1), ValueError, r"lambda_value must be a finite number in \[0, 1\]"),
        (lambda a: dict(a, lambda_value=1.5), ValueError, r"lambda_value must be a finite number in \[0, 1\]"),
        (lambda a: dict(a, lambda_value=float("nan")), ValueError, r"lambda_value must be a finite number in \[0, 1\]"),
        (lambda a: dict(a, lambda_value="0.3"), TypeError, "lambda_value must be a real"),
        (lambda a: dict(a, query_features=_with_nan(a["query_features"])), ValueError, "query_features contains NaN"),
        (
            lambda a: dict(a, gallery_features=_with_nan(a["gallery_features"], np.inf)),
            ValueError,
            "gallery_features contains NaN or inf",
        ),
        (lambda a: dict(a, query_features=a["query_features"][:0]), ValueError, "at least one query"),
        (lambda a: dict(a, gallery_features=a["gallery_features"][:0]), ValueError, "at least one query"),
        (lambda a: dict(a, query_features=a["query_features"].astype(np.int64)), TypeError, "query_features must have"),
        (lambda a: dict(a, query_features=a["query_features"][0]), ValueError, "query_features must be 2-D"),
        (lambda a: dict(a, query_features="features"), TypeError, "query_features must be"),
        (lambda a: dict(a, normalize="yes"), TypeError, "normalize must be a bool"),
        (lambda a: dict(a, tile_size=0), ValueError, "tile_size"),
    ],
)
def test_rerank_bad_input(mutate, error, match):
    args = dict(_features(), k1=6, k2=3)
    with pytest.raises(error, match=match):
        k_reciprocal_rerank(**mutate(args))


@requires_torch
def test_rerank_mixed_libraries_are_rejected():
    args = _features()
    with pytest.raises(TypeError, match="same library"):
        k_reciprocal_rerank(args["query_features"], torch.from_numpy(args["gallery_features"]), 6, 3)


def test_from_distances_bad_input():
    full = squared_distances(clustered(30, 4, seed=17))
    q_g, q_q, g_g = full[:5, 5:], full[:5, :5], full[5:, 5:]
    with pytest.raises(ValueError, match=r"q_q must have shape \(5, 5\)"):
        k_reciprocal_rerank_from_distances(q_g, q_q[:4], g_g, 6, 3)
    with pytest.raises(ValueError, match=r"g_g must have shape \(25, 25\)"):
        k_reciprocal_rerank_from_distances(q_g, q_q, g_g[:, :24], 6, 3)
    with pytest.raises(ValueError, match="q_g, q_q or g_g contains NaN or inf"):
        k_reciprocal_rerank_from_distances(_with_nan(q_g), q_q, g_g, 6, 3)
    with pytest.raises(ValueError, match="q_g, q_q or g_g contains NaN or inf"):
        k_reciprocal_rerank_from_distances(q_g, q_q, _with_nan(g_g, np.inf), 6, 3)
    with pytest.raises(ValueError, match="at least one query and one gallery"):
        k_reciprocal_rerank_from_distances(q_g[:0], q_q[:0, :0], g_g, 6, 3)
    with pytest.raises(ValueError, match="k1 must be in"):
        k_reciprocal_rerank_from_distances(q_g, q_q, g_g, 30, 3)
    with pytest.raises(TypeError, match="q_g must have dtype"):
        k_reciprocal_rerank_from_distances(q_g.astype(np.int32), q_q, g_g, 6, 3)


def test_jaccard_distance_bad_input():
    x = clustered(20, 4, seed=18)
    with pytest.raises(ValueError, match="variant must be one of"):
        jaccard_distance(x, 5, 3, variant="fast")
    with pytest.raises(ValueError, match=r"k2 must be in \[1, k1 \(spcl\)\]"):
        jaccard_distance(x, 5, 6, variant="spcl")
    with pytest.raises(ValueError, match="k1 must be in"):
        jaccard_distance(x, 20, 3)
    with pytest.raises(ValueError, match="features contains NaN"):
        jaccard_distance(_with_nan(x), 5, 3)
    with pytest.raises(ValueError, match="at least 2 items"):
        jaccard_distance(x[:1], 1, 1)
    with pytest.raises(TypeError, match="sparse must be a bool"):
        jaccard_distance(x, 5, 3, sparse=1)


def test_graph_bad_input():
    full = squared_distances(clustered(30, 4, seed=19))
    index, distance = knn_graph(full, 10)
    maxima = full.max(axis=1)
    with pytest.raises(ValueError, match="num_query must be in"):
        k_reciprocal_rerank_from_graph(index, distance, maxima, 30, 5, 3)
    with pytest.raises(ValueError, match="neighbor_distance must have shape"):
        k_reciprocal_rerank_from_graph(index, distance[:, :9], maxima, 5, 5, 3)
    with pytest.raises(ValueError, match="row_max must have shape"):
        k_reciprocal_rerank_from_graph(index, distance, maxima[:29], 5, 5, 3)
    bad = index.copy()
    bad[3, 4] = 30
    with pytest.raises(ValueError, match="neighbor_index entries must be item indices"):
        k_reciprocal_rerank_from_graph(bad, distance, maxima, 5, 5, 3)
    twice = index.copy()
    twice[7, 6] = twice[7, 2]  # a neighbour listed twice used to repeat an item in the re-ranked row
    with pytest.raises(ValueError, match="lists an item twice"):
        k_reciprocal_rerank_from_graph(twice, distance, maxima, 5, 5, 3)
    with pytest.raises(ValueError, match="at least k1 = 12 listed neighbours"):
        k_reciprocal_rerank_from_graph(index, distance, maxima, 5, 12, 3)
    with pytest.raises(ValueError, match="neighbor_distance contains NaN"):
        k_reciprocal_rerank_from_graph(index, _with_nan(distance), maxima, 5, 5, 3)
    with pytest.raises(TypeError, match="neighbor_index must have dtype"):
        k_reciprocal_rerank_from_graph(index.astype(np.float32), distance, maxima, 5, 5, 3)


def test_checks_survive_python_O():
    out = value_errors_under_python_O("import numpy as np\nfrom cion_fast.ops import k_reciprocal_rerank",
                                      "k_reciprocal_rerank(np.zeros((2, 3)), np.ones((4, 3)), k1=6)")
    assert "ValueError k1 must be in [1, N - 1] with N = 6" in out


def test_threads_share_the_kernels_safely():
    problems = [clustered(60, 5, seed=20 + s) for s in range(4)]
    expected = [oracle(squared_distances(x), 10, 8, 3, 0.3)[0] for x in problems]
    results = run_in_threads(lambda i: k_reciprocal_rerank(problems[i][:10], problems[i][10:], 8, 3, tile_size=16),
                             len(problems))
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


# ---- CUDA parity ----------------------------------------------------------------------------------


def _gpu_frameworks():
    return ["torch_cuda"] + (["cupy"] if cupy is not None else [])


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch_cuda", "cupy"])
@pytest.mark.parametrize("tile_size", [None, 37])
def test_cuda_rerank_matches_cpu(framework, tile_size):
    if framework not in _gpu_frameworks():
        pytest.skip("cupy not installed")
    x = clustered(431, 33, seed=21, clusters=40).astype(np.float32)
    cpu = k_reciprocal_rerank(x[:97], x[97:], 20, 6, 0.3)
    gpu = k_reciprocal_rerank(to_framework(x[:97], framework), to_framework(x[97:], framework), 20, 6, 0.3,
                              tile_size=tile_size)
    from cion_fast import _arrays

    assert gpu.shape == cpu.shape and _arrays.placement_of(gpu, "result").is_cuda
    np.testing.assert_allclose(_arrays.to_numpy(gpu), cpu, rtol=0, atol=TOL)
    expected, _ = oracle(squared_distances(x[:200].astype(np.float64)), 40, 20, 6, 0.3)
    small = k_reciprocal_rerank(
        to_framework(x[:40], framework), to_framework(x[40:200], framework), tile_size=tile_size
    )
    np.testing.assert_allclose(_arrays.to_numpy(small), expected, rtol=0, atol=TOL)


@pytest.mark.cuda
@pytest.mark.parametrize("framework", ["torch_cuda", "cupy"])
def test_cuda_from_distances_and_graph_match_cpu(framework):
    if framework not in _gpu_frameworks():
        pytest.skip("cupy not installed")
    from cion_fast import _arrays

    rng = np.random.default_rng(22)
    n, q = 301, 53
    full = squared_distances(clustered(n, 9, seed=22)) + 0.2 * rng.random((n, n)) * (1 - np.eye(n))
    blocks = (full[:q, q:], full[:q, :q], full[q:, q:])
    cpu = k_reciprocal_rerank_from_distances(*blocks, 13, 5, 0.4)
    gpu = k_reciprocal_rerank_from_distances(*(to_framework(b, framework) for b in blocks), 13, 5, 0.4, tile_size=29)
    np.testing.assert_allclose(_arrays.to_numpy(gpu), cpu, rtol=0, atol=TOL)

    symmetric = squared_distances(clustered(n, 9, seed=23))
    index, distance = knn_graph(symmetric, 45)
    cpu = k_reciprocal_rerank_from_graph(index, distance, symmetric.max(1), q, 13, 5, 0.4)
    gpu = k_reciprocal_rerank_from_graph(*(to_framework(a, framework) for a in (index, distance, symmetric.max(1))), q,
                                         13, 5, 0.4)
    assert gpu.num_estimated == cpu.num_estimated
    np.testing.assert_allclose(_arrays.to_numpy(gpu.distance), cpu.distance, rtol=0, atol=TOL)
    # Near-equal re-ranked distances may swap places: compare the index where both gaps are clear.
    gaps = np.diff(cpu.distance, axis=1)
    strict = (np.pad(gaps, ((0, 0), (1, 0)), constant_values=np.inf) > 1e-5) & (
        np.pad(gaps, ((0, 0), (0, 1)), constant_values=np.inf) > 1e-5
    )
    np.testing.assert_array_equal(_arrays.to_numpy(gpu.index)[strict], cpu.index[strict])


@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["original", "spcl"])
def test_cuda_jaccard_distance_matches_cpu(variant):
    x = clustered(257, 17, seed=24, clusters=30).astype(np.float32)
    if variant == "spcl":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    cpu_dense = jaccard_distance(x, 30, 6, variant=variant, sparse=False)
    gpu_dense = jaccard_distance(torch.from_numpy(x).cuda(), 30, 6, variant=variant, sparse=False, tile_size=50)
    np.testing.assert_allclose(gpu_dense.cpu().numpy(), cpu_dense, rtol=0, atol=TOL)
    # The CPU side from torch too (a torch CSR tensor): numpy's would need scipy, which the GPU
    # machine lacks.
    cpu_sparse = jaccard_distance(torch.from_numpy(x), 30, 6, variant=variant)
    gpu_sparse = jaccard_distance(torch.from_numpy(x).cuda(), 30, 6, variant=variant)
    assert gpu_sparse.layout == torch.sparse_csr and gpu_sparse.device.type == "cuda"
    for part in ("crow_indices", "col_indices"):
        np.testing.assert_array_equal(getattr(gpu_sparse, part)().cpu().numpy(), getattr(cpu_sparse, part)().numpy())
    np.testing.assert_allclose(gpu_sparse.values().cpu().numpy(), cpu_sparse.values().numpy(), rtol=0, atol=TOL)


@pytest.mark.cuda
def test_cuda_errors_and_duplicates():
    x = clustered(60, 4, seed=25).astype(np.float32)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="query_features contains NaN"):
        k_reciprocal_rerank(torch.from_numpy(bad[:10]).cuda(), torch.from_numpy(x[10:]).cuda(), 8, 3)
    with pytest.raises(TypeError, match="same device|must share a device"):
        k_reciprocal_rerank(torch.from_numpy(x[:10]).cuda(), torch.from_numpy(x[10:]), 8, 3)
    full = squared_distances(x.astype(np.float64))
    blocks = [torch.from_numpy(b).cuda() for b in (_with_nan(full[:10, 10:]), full[:10, :10], full[10:, 10:])]
    with pytest.raises(ValueError, match="q_g, q_q or g_g contains NaN"):
        k_reciprocal_rerank_from_distances(*blocks, 8, 3)
    dup = np.concatenate([x, x, x])
    out = k_reciprocal_rerank(torch.from_numpy(dup[:30]).cuda(), torch.from_numpy(dup[30:]).cuda(), 20, 6)
    assert bool(torch.isfinite(out).all())


def test_graph_from_real_faiss_matches_the_dense_rerank():
    """The README's recipe with real faiss calls: an exact IndexFlatL2 kNN graph of all items (K =
    6 * k1, so no pair distance needs estimating) and each row's largest distance (here from a
    search of all N; at scale an upper bound will do), re-ranked from the graph, equals the dense
    k_reciprocal_rerank on the candidates."""
    faiss = pytest.importorskip("faiss", reason="faiss-cpu is in the test extra; skipped where its wheel cannot install")
    num_query, n, k1, k2 = 15, 120, 10, 4
    x = clustered(n, 8, seed=21).astype(np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    distance, neighbors = index.search(x, 6 * k1)  # squared L2, each item itself first
    farthest, _ = index.search(x, n)  # all items: the largest squared distance of each row
    row_max = farthest.max(axis=1)
    result = k_reciprocal_rerank_from_graph(neighbors, distance, row_max, num_query, k1, k2, 0.3)
    dense = k_reciprocal_rerank(x[:num_query], x[num_query:], k1, k2, 0.3)
    assert result.num_estimated == 0
    for q in range(num_query):
        valid = result.index[q] >= 0
        np.testing.assert_allclose(result.distance[q][valid], dense[q, result.index[q][valid]], rtol=0, atol=1e-5)


@requires_torch
def test_calls_inside_and_outside_inference_mode_share_the_tile_buffers():
    """The CPU tile buffers outlive a call: one made under torch.inference_mode must still take a
    later call's GEMM outside it (an inference tensor refuses in-place writes there)."""
    x = torch.nn.functional.normalize(torch.randn(300, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    with torch.inference_mode():
        inside = k_reciprocal_rerank(x[:50], x[50:], tile_size=97)
    outside = k_reciprocal_rerank(x[:50], x[50:], tile_size=97)
    with torch.inference_mode():
        again = k_reciprocal_rerank(x[:50], x[50:], tile_size=97)
    assert torch.equal(inside, outside) and torch.equal(outside, again)


def test_only_small_tile_buffers_outlive_a_call():
    """Tile buffers up to 8 MB are kept between calls (no fresh pages per call); a larger tile
    (a caller's tile_size) lives for its call only, so no call leaves hundreds of MB behind."""
    import cion_fast.ops.k_reciprocal as module

    x = np.random.default_rng(4).normal(size=(1600, 8)).astype(np.float32)
    kept = lambda: list(getattr(module._TILE_BUFFERS, "by_key", {}).values())  # noqa: E731
    k_reciprocal_rerank(x[:100], x[100:], tile_size=1600)  # one 1600 x 1600 float32 tile: 10 MB
    assert all(buffer.nbytes <= 8 << 20 for buffer in kept())
    k_reciprocal_rerank(x[:100], x[100:], tile_size=1000)  # 4 MB tiles: kept
    assert any(buffer.shape == (1000, 1000) for buffer in kept())
