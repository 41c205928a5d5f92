"""ReID ranking metrics (CMC / mAP / mINP): ``evaluate_rank`` against the plain-PyTorch reference
(a full stable sort per row), a bare ``np.argsort`` of the matrix (what torchreid's / fast-reid's
Cython evaluators pay before anything else: fast-reid's takes about one argsort) and the floor,
one read of the distance matrix; at MSMT17 size also ``evaluate_rank_from_features`` (distance
tiles, never the whole matrix) against its floor, the distance GEMM.

    pytest benchmarks/bench_rank_metrics.py --benchmark-only [--full] [--device cuda]
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import as_torch, bench, equivalent_gemm, on_device

from cion_fast._arrays import to_numpy
from cion_fast.ops import evaluate_rank, evaluate_rank_from_features
from cion_fast.reference.rank_metrics import evaluate_rank as reference

SIZES = {  # (queries, gallery, identities, feature dim for evaluate_rank_from_features)
    "default": {"small": (500, 4000, 300, 64), "market1501": (3368, 15913, 751, 256)},
    "full": {"market1501": (3368, 15913, 751, 768), "msmt17": (11659, 82161, 3060, 768)},
}
REFERENCE_MAX_GALLERY = 20_000  # the reference sorts a copy of every row: MSMT17 takes minutes and GBs


def synthetic_problem(num_query: int, num_gallery: int, num_pids: int, seed: int = 0):
    """Distances in [0, 1.6) with true matches pulled closer (a realistic mAP, not 0 or 1)."""
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, num_pids, num_gallery)
    q_pids = g_pids[rng.integers(0, num_gallery, num_query)]
    q_camids = rng.integers(0, 6, num_query)
    g_camids = rng.integers(0, 6, num_gallery)
    distmat = rng.random((num_query, num_gallery), dtype=np.float32)
    distmat += np.float32(0.6) * (q_pids[:, None] != g_pids[None, :])
    return distmat, q_pids, g_pids, q_camids, g_camids


@pytest.fixture(scope="module")
def problem(size, device):
    """The problem on the device, after the correctness check: per-query AP and first match equal
    the reference on the first 300 queries."""
    num_query, num_gallery, num_pids, dim = size
    arrays = synthetic_problem(num_query, num_gallery, num_pids)
    rows = (arrays[0][:300], arrays[1][:300], arrays[2], arrays[3][:300], arrays[4])
    ours = evaluate_rank(*(on_device(a, device) for a in rows), return_per_query=True)
    expected = reference(*(as_torch(a, "cpu") for a in rows))
    np.testing.assert_allclose(to_numpy(ours.average_precision), to_numpy(expected.average_precision), rtol=0, atol=1e-9)
    group = f"evaluate_rank {num_query} x {num_gallery}"
    return {"arrays": arrays, "device_arrays": [on_device(a, device) for a in arrays], "group": group,
            "matrix_mb": arrays[0].nbytes / 2**20, "dim": dim}


def test_cion_fast(benchmark, problem, device):
    result = bench(benchmark, lambda: evaluate_rank(*problem["device_arrays"]), role="cion_fast", group=problem["group"],
                   device=device, matrix_mb=problem["matrix_mb"])
    benchmark.extra_info["mAP"] = float(result.mAP)


def test_reference(benchmark, problem, device):
    if problem["arrays"][0].shape[1] > REFERENCE_MAX_GALLERY:
        pytest.skip(f"the reference at a gallery over {REFERENCE_MAX_GALLERY} takes minutes and a sorted copy of the matrix")
    tensors = [as_torch(a, device) for a in problem["arrays"]]
    bench(benchmark, lambda: reference(*tensors), role="reference", group=problem["group"], device=device, rounds=1, warmup=False)


def test_np_argsort_baseline(benchmark, problem, device):
    if problem["arrays"][0].shape[1] > REFERENCE_MAX_GALLERY:
        pytest.skip("a full argsort at MSMT17 size needs 7 GB of int64 indices (the Cython evaluators' 11-20 GB)")
    distmat = problem["arrays"][0]
    bench(benchmark, lambda: np.argsort(distmat, axis=1), role="baseline", group=problem["group"], device="cpu",
          note="np.argsort of the matrix on the CPU: what torchreid's / fast-reid's Cython evaluators pay first")


def test_floor_one_read(benchmark, problem, device):
    distmat = as_torch(problem["arrays"][0], device)
    bench(benchmark, lambda: distmat.sum(), role="floor", group=problem["group"], device=device, note="one read of the matrix")


@pytest.fixture(scope="module")
def feature_problem(problem, device):
    """Query / gallery features of the same identities (D from the size), for the tiled path."""
    rng = np.random.default_rng(1)
    _, q_pids, g_pids, q_camids, g_camids = problem["arrays"]
    dim = problem["dim"]
    centres = rng.normal(size=(int(max(q_pids.max(), g_pids.max())) + 1, dim)).astype(np.float32)
    query = centres[q_pids] + rng.normal(size=(len(q_pids), dim)).astype(np.float32)
    gallery = centres[g_pids] + rng.normal(size=(len(g_pids), dim)).astype(np.float32)
    ids = (q_pids, g_pids, q_camids, g_camids)
    # Correctness first: on 200 queries x 2,000 gallery images, equal to evaluate_rank of the
    # explicit float64 squared-Euclidean matrix (the same ranking as Euclidean).
    q, g = query[:200], gallery[:2000]
    sub_ids = (q_pids[:200], g_pids[:2000], q_camids[:200], g_camids[:2000])
    explicit = ((q[:, None, :].astype(np.float64) - g[None, :, :]) ** 2).sum(-1)
    got = evaluate_rank_from_features(on_device(q, device), on_device(g, device), *(on_device(a, device) for a in sub_ids))
    expected = evaluate_rank(explicit, *sub_ids)
    assert abs(got.mAP - expected.mAP) < 1e-5, (got.mAP, expected.mAP)
    inputs = [on_device(a, device) for a in (query, gallery, *ids)]
    return {"inputs": inputs, "flops": 2.0 * len(q_pids) * len(g_pids) * dim, "dim": dim,
            "group": f"evaluate_rank_from_features {len(q_pids)} x {len(g_pids)}, D = {dim}"}


def test_from_features(benchmark, feature_problem, device):
    bench(benchmark, lambda: evaluate_rank_from_features(*feature_problem["inputs"]), role="cion_fast",
          group=feature_problem["group"], device=device, rounds=1, gemm_tflop=feature_problem["flops"] / 1e12)


def test_from_features_floor_gemm(benchmark, feature_problem, device):
    bench(benchmark, equivalent_gemm(feature_problem["flops"], device, feature_problem["dim"]), role="floor",
          group=feature_problem["group"], device=device, rounds=1, note="the Q x G distance GEMM")
