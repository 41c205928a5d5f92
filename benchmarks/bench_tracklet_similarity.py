"""``tracklet_similarity`` against the plain-PyTorch reference (padded batched matmul), every mode,
over candidate pairs and dense, and the floor: a GEMM worth the useful dot products (the frame
pairs of the candidate tracklet pairs for max/min/topk_mean; the centroids for mean/centroid).

Target (the issue): pairwise ``max`` for 4,000 tracklets of 4-28 frames (D = 256) over 200,000
pairs at least 5x faster than the reference (reach for 20x), at a fraction of its memory.

    pytest benchmarks/bench_tracklet_similarity.py --benchmark-only [--full] [--device cuda]
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import as_torch, bench, equivalent_gemm, on_device

from cion_fast._arrays import to_numpy
from cion_fast.ops import tracklet_similarity
from cion_fast.reference import tracklet_similarity as reference

SIZES = {  # (tracklets, candidate pairs, D)
    "default": {"small": (1_000, 50_000, 256)},
    "full": {"issue": (4_000, 200_000, 256)},
}
# (mode, k, over candidate pairs?)
CASES = [("max", None, True), ("min", None, True), ("topk_mean", 5, True), ("mean", None, True), ("centroid", None, True),
         ("centroid", None, False)]
CASE_IDS = ["max", "min", "topk_mean", "mean", "centroid", "centroid_dense"]


def make_problem(num_tracklets: int, num_pairs: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 29, num_tracklets)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    centres = rng.standard_normal((num_tracklets, dim), dtype=np.float32)
    features = np.repeat(centres, lengths, axis=0) + 0.7 * rng.standard_normal((int(offsets[-1]), dim), dtype=np.float32)
    pairs = rng.integers(0, num_tracklets, (num_pairs, 2))
    return features, offsets, pairs, lengths


@pytest.fixture(scope="module")
def problem(size, device):
    """Inputs on the device (numpy on the CPU, torch on the GPU) and torch for the reference,
    after the correctness check of every case against the reference."""
    features, offsets, pairs, lengths = make_problem(*size)
    ours = tuple(on_device(a, device) for a in (features, offsets, pairs))
    ref = tuple(as_torch(a, device) for a in (features, offsets, pairs))
    for mode, k, paired in CASES:
        got = tracklet_similarity(ours[0], ours[1], mode=mode, k=k, pairs=ours[2] if paired else None)
        expected = reference.tracklet_similarity(ref[0], ref[1], mode=mode, k=k, pairs=ref[2] if paired else None)
        np.testing.assert_allclose(to_numpy(got), to_numpy(expected), rtol=0, atol=2e-5, err_msg=f"mode {mode}")
    num_tracklets, num_pairs, dim = size
    pair_flops = 2 * dim * float((lengths[pairs[:, 0]] * lengths[pairs[:, 1]]).sum())
    return {"ours": ours, "ref": ref, "dim": dim, "num_tracklets": num_tracklets, "num_pairs": num_pairs,
            "frames": features.shape[0], "pair_flops": pair_flops}


def _case(problem, index):
    mode, k, paired = CASES[index]
    what = f"{problem['num_pairs']} pairs" if paired else f"dense {problem['num_tracklets']}^2"
    group = f"tracklet_similarity {CASE_IDS[index]}, {problem['num_tracklets']} tracklets, {what}, D = {problem['dim']}"
    if mode in ("max", "min", "topk_mean"):
        flops = problem["pair_flops"]
    else:  # centroids first, then one dot product per pair (or per entry of the dense matrix)
        outputs = problem["num_pairs"] if paired else problem["num_tracklets"] ** 2
        flops = 2 * problem["dim"] * (problem["frames"] + outputs)
    return mode, k, paired, group, flops


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_cion_fast(benchmark, problem, device, case):
    mode, k, paired, group, _ = _case(problem, case)
    features, offsets, pairs = problem["ours"]
    bench(benchmark, lambda: tracklet_similarity(features, offsets, mode=mode, k=k, pairs=pairs if paired else None),
          role="cion_fast", group=group, device=device)


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_reference(benchmark, problem, device, case):
    mode, k, paired, group, _ = _case(problem, case)
    features, offsets, pairs = problem["ref"]
    bench(benchmark, lambda: reference.tracklet_similarity(features, offsets, mode=mode, k=k, pairs=pairs if paired else None),
          role="reference", group=group, device=device, rounds=1)


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_floor(benchmark, problem, device, case):
    *_, group, flops = _case(problem, case)
    bench(benchmark, equivalent_gemm(flops, device, problem["dim"]), role="floor", group=group, device=device,
          note="a GEMM worth the useful dot products", gflop=flops / 1e9)
