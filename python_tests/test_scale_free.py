"""Finite features of any magnitude give the answer their scale-free definition promises.

Cosine and rankings by distance do not depend on the features' scale, yet float32 squares of
entries near 1e20 overflow and those near 1e-30 vanish. Every op that starts from features is run
on features multiplied by such scales and compared with its result on the same features brought
back to unit scale in float64 (the op's own tests compare that with a float64 oracle; denoising's
own test is in test_denoise.py). Subnormal inputs (1e-41) hold fewer digits than the unscaled
features, so the reference is made from what the scaled input holds, not from the original.
"""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast import ops

torch = pytest.importorskip("torch")

SCALES = [1e20, 1e18, 1e-20, 1e-30, 1e-41]


def _features(rows: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def _scaled(x: np.ndarray, scale: float, framework: str = "numpy"):
    scaled = (x.astype(np.float64) * scale).astype(np.float32)
    return torch.from_numpy(scaled) if framework == "torch" else scaled


def _unit(x: np.ndarray, scale: float) -> np.ndarray:
    """What ``_scaled(x, scale)`` holds, at unit scale: the reference input."""
    return (_scaled(x, scale).astype(np.float64) / scale).astype(np.float32)


def _numpy(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("metric", ["cosine", "euclidean", "sqeuclidean"])
def test_rank_metrics_from_features(framework, scale, metric):
    query, gallery = _features(30, seed=1), _features(200, seed=2)
    rng = np.random.default_rng(3)
    ids = (rng.integers(0, 20, 30), rng.integers(0, 20, 200), np.zeros(30, int), np.ones(200, int))
    base = ops.evaluate_rank_from_features(_unit(query, scale), _unit(gallery, scale), *ids, metric=metric)
    got = ops.evaluate_rank_from_features(_scaled(query, scale, framework), _scaled(gallery, scale, framework),
                                          *ids, metric=metric)
    assert got.mAP == pytest.approx(base.mAP, abs=1e-6)
    np.testing.assert_array_equal(got.cmc, base.cmc)


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("normalize", [True, False])
def test_k_reciprocal_rerank(framework, scale, normalize):
    query, gallery = _features(20, seed=4), _features(90, seed=5)
    base = ops.k_reciprocal_rerank(_unit(query, scale), _unit(gallery, scale), k1=6, k2=3, normalize=normalize)
    got = ops.k_reciprocal_rerank(_scaled(query, scale, framework), _scaled(gallery, scale, framework),
                                  k1=6, k2=3, normalize=normalize)
    np.testing.assert_allclose(_numpy(got), base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", SCALES)
def test_jaccard_distance(scale):
    x = _features(80, seed=6)
    base = ops.jaccard_distance(_unit(x, scale), k1=6, k2=3, sparse=False)
    np.testing.assert_allclose(ops.jaccard_distance(_scaled(x, scale), k1=6, k2=3, sparse=False), base,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("mode", ["centroid", "mean", "max", "min", "topk_mean"])
def test_tracklet_similarity(framework, scale, mode):
    x, offsets = _features(230, seed=7), np.array([0, 5, 9, 30, 100, 230])
    k = 3 if mode == "topk_mean" else None
    base = ops.tracklet_similarity(_unit(x, scale), offsets, mode=mode, k=k)
    got = ops.tracklet_similarity(_scaled(x, scale, framework), offsets, mode=mode, k=k)
    np.testing.assert_allclose(_numpy(got), base, atol=1e-5, rtol=0)


def test_tracklet_similarity_mixed_scales_in_one_tracklet():
    """Rows of one tracklet at 1e20 and 1e-30 side by side: each frame is normalised on its own."""
    x, offsets = _features(40, seed=8), np.array([0, 10, 25, 40])
    scales = np.where(np.arange(40) % 2 == 0, 1e20, 1e-30)
    mixed = (x.astype(np.float64) * scales[:, None]).astype(np.float32)
    for mode in ("max", "mean", "centroid"):
        np.testing.assert_allclose(ops.tracklet_similarity(mixed, offsets, mode=mode),
                                   ops.tracklet_similarity(x, offsets, mode=mode), atol=2e-5, rtol=0)


@pytest.mark.parametrize("scale", SCALES)
def test_sliding_range_link(scale):
    x, videos = _features(60, seed=9), np.repeat(np.arange(6), 10)
    base = ops.sliding_range_link(_unit(x, scale), videos, window=3, stride=1, threshold=0.3, mutual_k=3)
    got = ops.sliding_range_link(_scaled(x, scale), videos, window=3, stride=1, threshold=0.3, mutual_k=3)
    assert base[0].shape[0] > 0
    np.testing.assert_array_equal(got[0], base[0])
    np.testing.assert_array_equal(got[1], base[1])


@pytest.mark.parametrize("scale", SCALES)
def test_tracklet_prune(scale):
    x, offsets = _features(230, seed=10), np.array([0, 5, 9, 30, 100, 230])
    base = ops.tracklet_prune(_unit(x, scale), offsets, threshold=0.1)
    assert 0 < base.sum() < 230
    np.testing.assert_array_equal(ops.tracklet_prune(_scaled(x, scale), offsets, threshold=0.1), base)

