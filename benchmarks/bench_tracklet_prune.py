"""``tracklet_prune`` (level-1 denoising) against the plain-PyTorch padded reference and the floor,
one read of the features (each frame is read once; the work is a few dot products per frame).

Target (the issue): 1M frames in 100k tracklets (D = 256) in under 2 s on the 2-core machine.

    pytest benchmarks/bench_tracklet_prune.py --benchmark-only [--full] [--device cuda]
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import as_torch, bench, on_device

from cion_fast._arrays import to_numpy
from cion_fast.ops import tracklet_prune
from cion_fast.reference import tracklet_prune as reference

SIZES = {  # (tracklets, D)
    "default": {"small": (20_000, 256)},
    "full": {"issue": (100_000, 256)},
}


def make_problem(num_tracklets: int, dim: int, outlier_rate: float = 0.15, seed: int = 0):
    """Tracklets of 2-18 frames (10 on average) around their own centre; a share of frames
    belong to someone else (identity switches, contamination)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 19, num_tracklets)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    owner = np.repeat(np.arange(num_tracklets), lengths)
    switched = rng.random(len(owner)) < outlier_rate
    owner[switched] = rng.integers(0, num_tracklets, int(switched.sum()))
    features = rng.standard_normal((num_tracklets, dim), dtype=np.float32)[owner]
    features += 0.8 * rng.standard_normal(features.shape, dtype=np.float32)
    return features, offsets


@pytest.fixture(scope="module")
def problem(size, device):
    """Inputs after the correctness check: the same kept frames as the reference (whose one run
    here is also why its timing below is a single round)."""
    features, offsets = make_problem(*size)
    ours = (on_device(features, device), on_device(offsets, device))
    ref = (as_torch(features, device), as_torch(offsets, device))
    keep = to_numpy(tracklet_prune(*ours))
    np.testing.assert_array_equal(keep, to_numpy(reference.tracklet_prune(*ref)))
    return {"ours": ours, "ref": ref, "kept": float(keep.mean()),
            "group": f"tracklet_prune {features.shape[0]} frames in {size[0]} tracklets, D = {size[1]}"}


def test_cion_fast(benchmark, problem, device):
    bench(benchmark, lambda: tracklet_prune(*problem["ours"]), role="cion_fast", group=problem["group"], device=device,
          kept=problem["kept"])


def test_reference(benchmark, problem, device):
    bench(benchmark, lambda: reference.tracklet_prune(*problem["ref"]), role="reference", group=problem["group"],
          device=device, rounds=1, warmup=False)


def test_floor_one_read(benchmark, problem, device):
    features = problem["ref"][0]
    bench(benchmark, lambda: features.sum(), role="floor", group=problem["group"], device=device, note="one read of the features")
