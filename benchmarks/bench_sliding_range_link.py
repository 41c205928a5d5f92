"""``sliding_range_link`` (level-3 linking + connected components) against the plain-PyTorch
reference (a dense similarity matrix per range, torch.unique, label propagation) and the floor, a
GEMM worth one dot product per distinct cross-video pair in a range (similarities do not depend
on the range).

Target (the issue): 400k identities over 20k videos (D = 256, window 8) in under 5 s on the
2-core machine, with memory O(identities x D).

    pytest benchmarks/bench_sliding_range_link.py --benchmark-only [--full] [--device cuda]
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import as_torch, bench, equivalent_gemm, on_device

from cion_fast._arrays import to_numpy
from cion_fast.ops import sliding_range_link
from cion_fast.reference import sliding_range_link as reference

SIZES = {  # (identities, videos, D)
    "default": {"small": (100_000, 5_000, 256)},
    "full": {"issue": (400_000, 20_000, 256)},
}
WINDOW, STRIDE, THRESHOLD = 8, 4, 0.7


def make_problem(num_identities: int, num_videos: int, dim: int, seed: int = 0):
    """Identities sorted by video (~20 per video). People recur in nearby videos: the identity of
    video v shows person 5 v + U[0, 40), so a person spans ~8 consecutive videos."""
    rng = np.random.default_rng(seed)
    video_ids = np.sort(rng.integers(0, num_videos, num_identities))
    person = 5 * video_ids + rng.integers(0, 40, num_identities)
    centres = rng.standard_normal((int(person.max()) + 1, dim), dtype=np.float32)
    features = centres[person] + 0.5 * rng.standard_normal((num_identities, dim), dtype=np.float32)
    return features, video_ids


def distinct_pairs(video_ids: np.ndarray, window: int, stride: int) -> float:
    """Cross-video pairs sharing at least one range, each counted once: the similarities any
    method has to compute (range r adds the pairs whose later video is past range r - 1)."""
    _, counts = np.unique(video_ids, return_counts=True)
    before = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)  # identities before each video
    total, start, previous_end = 0.0, 0, 0
    while True:
        end = min(start + window, len(counts))
        for v in range(max(start + 1, previous_end), end):
            total += counts[v] * (before[v] - before[start])
        if end == len(counts):
            return total
        previous_end, start = end, start + stride


@pytest.fixture(scope="module")
def problem(size, device):
    """Inputs after the correctness check, in float64 on both sides so that no similarity sits
    within rounding of the threshold or of a mutual-k boundary: the same links (as a set: the
    reference sorts them) and the same partition, with and without mutual_k."""
    features, video_ids = make_problem(*size)
    ours = (on_device(features, device), on_device(video_ids, device))
    ref = (as_torch(features, device), as_torch(video_ids, device))
    check = 20_000  # identities in the float64 check (the reference is slow at full size)
    for mutual_k in (None, 5):
        labels, links = sliding_range_link(as_torch(features[:check], device).double(), ref[1][:check], WINDOW, STRIDE, THRESHOLD, mutual_k)
        ref_labels, ref_links = reference.sliding_range_link(as_torch(features[:check], "cpu").double(), as_torch(video_ids[:check], "cpu"),
                                                             WINDOW, STRIDE, THRESHOLD, mutual_k)
        links = to_numpy(links)
        np.testing.assert_array_equal(np.array(sorted(map(tuple, links.tolist()))).reshape(-1, 2), to_numpy(ref_links))
        np.testing.assert_array_equal(to_numpy(labels), to_numpy(ref_labels))
    return {"ours": ours, "ref": ref, "pairs": distinct_pairs(video_ids, WINDOW, STRIDE), "dim": size[2],
            "feature_mb": features.nbytes / 2**20, "size": size}


def _group(problem, mutual_k):
    identities, videos, dim = problem["size"]
    return f"sliding_range_link {identities} identities, {videos} videos, D = {dim}, mutual_k = {mutual_k}"


@pytest.mark.parametrize("mutual_k", [None, 5])
def test_cion_fast(benchmark, problem, device, mutual_k):
    bench(benchmark, lambda: sliding_range_link(*problem["ours"], WINDOW, STRIDE, THRESHOLD, mutual_k), role="cion_fast",
          group=_group(problem, mutual_k), device=device, feature_mb=problem["feature_mb"])


@pytest.mark.parametrize("mutual_k", [None, 5])
def test_reference(benchmark, problem, device, mutual_k):
    bench(benchmark, lambda: reference.sliding_range_link(*problem["ref"], WINDOW, STRIDE, THRESHOLD, mutual_k), role="reference",
          group=_group(problem, mutual_k), device=device, rounds=1, warmup=False)


@pytest.mark.parametrize("mutual_k", [None, 5])
def test_floor(benchmark, problem, device, mutual_k):
    bench(benchmark, equivalent_gemm(2 * problem["dim"] * problem["pairs"], device, problem["dim"]), role="floor",
          group=_group(problem, mutual_k), device=device, note="one dot product per distinct pair in a range",
          million_pairs=problem["pairs"] / 1e6)
