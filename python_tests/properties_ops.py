"""Property-based suite (hypothesis) for the public ops: random shapes, dtypes, layouts and values,
and hostile scalars. Each call either matches the op's float64 oracle (the ones the unit tests use,
written from docs/ALGORITHMS.md) or raises ValueError/TypeError naming an argument.

This file is not collected by a plain ``pytest`` run (no ``test_`` prefix): ``test_properties.py``
runs it in a child process, so a crash (SIGSEGV/SIGABRT) fails that test instead of killing pytest.
Run it alone with ``pytest python_tests/properties_ops.py``.

Array values come from numpy generators seeded by hypothesis (generic values: no exact ties that
float32 rounding could break); shapes, dtypes, layouts and every scalar argument come from
hypothesis directly, hostile integers included.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cion_fast._checks import memory_bytes
from cion_fast.ops import (connected_components, evaluate_rank, evaluate_rank_from_features, jaccard_distance,
                           k_reciprocal_rerank, sliding_range_link, tracklet_prune, tracklet_similarity)
from test_k_reciprocal import oracle as rerank_oracle
from test_k_reciprocal import TOL as RERANK_TOL
from test_k_reciprocal import squared_distances
from test_rank_metrics import oracle as rank_oracle
from test_sliding_range_link import canonical, oracle_components, oracle_link
from test_tracklet_prune import oracle as prune_oracle
from test_tracklet_similarity import oracle as similarity_oracle

# Bounded: the whole file runs in well under a minute on 2 cores; derandomised so CI is repeatable.
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Every kind of scalar a user might pass: hostile integers at and beyond int64's edges, special
# floats, bools (flags are not integers), None, strings, numpy scalars.
HOSTILE_SCALARS = st.one_of(
    st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64, -2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.integers(-2**63, 2**63 - 1).map(np.int64),
)

FLOAT_DTYPES = st.sampled_from([np.float32, np.float64, np.float16])
SEEDS = st.integers(0, 2**32 - 1)


def layout(x: np.ndarray, kind: str) -> np.ndarray:
    """The same values in another memory layout: C order, Fortran order, or a strided view."""
    if kind == "fortran":
        return np.asfortranarray(x)
    if kind == "strided":
        wide = np.zeros((x.shape[0], 2 * x.shape[1]), x.dtype)
        wide[:, ::2] = x
        return wide[:, ::2]
    return x


LAYOUTS = st.sampled_from(["c", "fortran", "strided"])


def clean_error(error: Exception, names: tuple[str, ...]) -> bool:
    return isinstance(error, (ValueError, TypeError)) and any(name in str(error) for name in names)


def call_or_clean_error(call, names: tuple[str, ...]):
    """The call's result, or None when it raised a ValueError/TypeError naming one of ``names``."""
    try:
        return call()
    except (ValueError, TypeError) as error:
        assert clean_error(error, names), f"{type(error).__name__} names none of {names}: {error}"
        return None


def tolerance(dtype) -> float:
    return {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-10}[dtype]


# ---- shapes, dtypes, layouts, values: results match the oracles --------------------------------

@SETTINGS
@given(lengths=st.lists(st.integers(0, 6), min_size=0, max_size=7), dim=st.integers(1, 9), dtype=FLOAT_DTYPES,
       kind=LAYOUTS, mode=st.sampled_from(["centroid", "max", "mean", "topk_mean"]), k=st.integers(1, 40), seed=SEEDS)
def test_tracklet_similarity_matches_oracle(lengths, dim, dtype, kind, mode, k, seed):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    features = rng.normal(size=(int(offsets[-1]), dim)).astype(dtype)
    k = k if mode == "topk_mean" else None
    got = call_or_clean_error(lambda: tracklet_similarity(layout(features, kind), offsets, mode=mode, k=k),
                              ("offsets", "features", "tracklet"))
    if got is None:  # refused: only an empty tracklet in a frame mode may be
        assert 0 in lengths
        return
    expected = similarity_oracle(features.astype(np.float64), offsets, mode=mode, k=k)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=tolerance(dtype) * 5)


@SETTINGS
@given(lengths=st.lists(st.integers(1, 8), min_size=1, max_size=6), dim=st.integers(2, 8), kind=LAYOUTS,
       threshold=st.floats(-1, 1), min_frames=st.integers(0, 5), seed=SEEDS)
def test_tracklet_prune_matches_oracle(lengths, dim, kind, threshold, min_frames, seed):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    centres = rng.normal(size=(len(lengths), dim))
    features = centres[np.repeat(np.arange(len(lengths)), lengths)] + rng.normal(size=(int(offsets[-1]), dim))
    got = tracklet_prune(layout(features, kind), offsets, threshold=threshold, min_frames=min_frames)
    np.testing.assert_array_equal(np.asarray(got, bool), prune_oracle(features, offsets, threshold, min_frames))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the oracle's mean over no valid query
@SETTINGS
@given(num_query=st.integers(1, 7), num_gallery=st.integers(1, 12), num_pids=st.integers(1, 5),
       max_rank=st.integers(1, 20), remove_same_camera=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=SEEDS)
def test_evaluate_rank_matches_oracle(num_query, num_gallery, num_pids, max_rank, remove_same_camera, dtype, seed):
    rng = np.random.default_rng(seed)
    distmat = rng.random((num_query, num_gallery)).astype(dtype)
    q_pids, g_pids = rng.integers(0, num_pids, num_query), rng.integers(0, num_pids, num_gallery)
    q_camids, g_camids = rng.integers(0, 2, num_query), rng.integers(0, 2, num_gallery)
    expected = rank_oracle(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, remove_same_camera)
    if expected["num_valid"] == 0:
        with pytest.raises(ValueError, match="no query has a valid match"):
            evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                          remove_same_camera=remove_same_camera)
        return
    got = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                        remove_same_camera=remove_same_camera)
    np.testing.assert_allclose(got.cmc, expected["cmc"], atol=1e-12)
    assert got.mAP == pytest.approx(expected["mAP"], abs=1e-12)
    assert got.mINP == pytest.approx(expected["mINP"], abs=1e-12)


@SETTINGS
@given(num_nodes=st.integers(0, 12), num_edges=st.integers(0, 20), seed=SEEDS, dtype=st.sampled_from([np.int32, np.int64]))
def test_connected_components_matches_oracle(num_nodes, num_edges, seed, dtype):
    rng = np.random.default_rng(seed)
    edges = rng.integers(0, max(num_nodes, 1), (num_edges if num_nodes else 0, 2)).astype(dtype)
    got = connected_components(num_nodes, edges)
    np.testing.assert_array_equal(canonical(got), oracle_components(num_nodes, edges.astype(np.int64)))


@SETTINGS
@given(videos=st.integers(1, 7), per_video=st.integers(1, 3), dim=st.integers(2, 6), window=st.integers(1, 9),
       stride_share=st.floats(0.01, 1.0), threshold=st.floats(-0.5, 0.9), mutual_k=st.one_of(st.none(), st.integers(1, 6)),
       seed=SEEDS)
def test_sliding_range_link_matches_oracle(videos, per_video, dim, window, stride_share, threshold, mutual_k, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, per_video + 1, videos)
    video_ids = np.repeat(np.sort(rng.choice(10 * videos, videos, replace=False)), counts)
    features = rng.normal(size=(len(video_ids), dim))
    stride = max(1, int(round(stride_share * window)))
    expected_links, expected_labels = oracle_link(features, video_ids, window, stride, threshold, mutual_k)
    labels, links = sliding_range_link(features, video_ids, window, stride, threshold, mutual_k)
    np.testing.assert_array_equal(links, expected_links)
    np.testing.assert_array_equal(labels, expected_labels)


@SETTINGS
@given(num_query=st.integers(1, 6), num_gallery=st.integers(1, 10), dim=st.integers(2, 6), k1=st.integers(1, 8),
       k2=st.integers(1, 8), lambda_value=st.floats(0, 1), seed=SEEDS)
def test_k_reciprocal_rerank_matches_oracle(num_query, num_gallery, dim, k1, k2, lambda_value, seed):
    x = np.random.default_rng(seed).normal(size=(num_query + num_gallery, dim))
    valid = k1 < num_query + num_gallery and k2 <= k1 + 1
    got = call_or_clean_error(lambda: k_reciprocal_rerank(x[:num_query], x[num_query:], k1=k1, k2=k2,
                                                          lambda_value=lambda_value), ("k1", "k2"))
    assert (got is not None) == valid
    if got is not None:
        expected, _ = rerank_oracle(squared_distances(x), num_query, k1, k2, lambda_value)
        np.testing.assert_allclose(got, expected, rtol=0, atol=RERANK_TOL)  # float32 output, as the reference


# ---- any finite scale, either byte order: the answer the definition gives ----------------------

_OFF40, _VID40 = np.array([0, 5, 9, 20, 31, 40]), np.repeat(np.arange(5), 8)
_IDS40 = (np.arange(10) % 4, np.arange(30) % 4, np.zeros(10, np.int64), np.ones(30, np.int64))

# Every op that starts from features, reduced to numbers to compare.
FEATURE_OPS = {
    "tracklet_similarity.max": lambda x: tracklet_similarity(x, _OFF40, mode="max"),
    "tracklet_similarity.centroid": lambda x: tracklet_similarity(x, _OFF40, mode="centroid"),
    "tracklet_similarity.topk_mean": lambda x: tracklet_similarity(x, _OFF40, mode="topk_mean", k=4),
    "tracklet_prune": lambda x: tracklet_prune(x, _OFF40, threshold=0.1),
    "sliding_range_link": lambda x: sliding_range_link(x, _VID40, window=3, stride=1, threshold=0.3, mutual_k=3)[1],
    "k_reciprocal_rerank": lambda x: k_reciprocal_rerank(x[:10], x[10:], k1=6, k2=3),
    "k_reciprocal_rerank.normalize": lambda x: k_reciprocal_rerank(x[:10], x[10:], k1=6, k2=3, normalize=True),
    "jaccard_distance": lambda x: jaccard_distance(x, k1=6, k2=3, sparse=False),
    "evaluate_rank_from_features.cosine":
        lambda x: evaluate_rank_from_features(x[:10], x[10:40], *_IDS40, metric="cosine").mAP,
    "evaluate_rank_from_features.euclidean":
        lambda x: evaluate_rank_from_features(x[:10], x[10:40], *_IDS40, metric="euclidean").mAP,
}


@SETTINGS
@given(op=st.sampled_from(sorted(FEATURE_OPS)), exponent=st.integers(-37, 37), big_endian=st.booleans(), seed=SEEDS)
def test_any_finite_scale_and_byte_order_give_the_defined_answer(op, exponent, big_endian, seed):
    """Cosines and distance rankings do not depend on the features' scale, nor on how the bytes are
    ordered: the op on features scaled by 10**exponent (squares beyond float32 from 1e19 up, below
    its normal range from 1e-19 down) matches the op on the same values at unit scale."""
    x = np.random.default_rng(seed).normal(size=(40, 8))
    scaled = (x * 10.0**exponent).astype(np.float32)
    reference = (scaled.astype(np.float64) / 10.0**exponent).astype(np.float32)
    given = scaled.astype(">f4") if big_endian else scaled
    got, expected = (np.asarray(FEATURE_OPS[op](values), np.float64) for values in (given, reference))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


# ---- hostile scalars: a result or a clean error naming the argument ----------------------------

_F = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
_OFFSETS = np.array([0, 3, 7, 12])
_D = np.random.default_rng(1).random((5, 9)).astype(np.float32)
_PIDS = (np.arange(5) % 3, np.arange(9) % 3, np.zeros(5, np.int64), np.ones(9, np.int64))

SCALAR_CALLS = {
    "tracklet_similarity.k": lambda v: tracklet_similarity(_F, _OFFSETS, mode="topk_mean", k=v),
    "tracklet_prune.threshold": lambda v: tracklet_prune(_F, _OFFSETS, threshold=v),
    "tracklet_prune.min_frames": lambda v: tracklet_prune(_F, _OFFSETS, min_frames=v),
    "sliding_range_link.window": lambda v: sliding_range_link(_F[:3], [0, 0, 1], window=v, stride=1),
    "sliding_range_link.stride": lambda v: sliding_range_link(_F[:3], [0, 0, 1], window=2**62, stride=v),
    "sliding_range_link.threshold": lambda v: sliding_range_link(_F[:3], [0, 0, 1], threshold=v),
    "sliding_range_link.mutual_k": lambda v: sliding_range_link(_F[:3], [0, 0, 1], mutual_k=v),
    "connected_components.num_nodes": lambda v: connected_components(v, np.zeros((0, 2), np.int64)),
    "k_reciprocal_rerank.k1": lambda v: k_reciprocal_rerank(_F[:4], _F[4:], k1=v, k2=1),
    "k_reciprocal_rerank.k2": lambda v: k_reciprocal_rerank(_F[:4], _F[4:], k1=4, k2=v),
    "k_reciprocal_rerank.lambda_value": lambda v: k_reciprocal_rerank(_F[:4], _F[4:], k1=4, k2=2, lambda_value=v),
    "k_reciprocal_rerank.tile_size": lambda v: k_reciprocal_rerank(_F[:4], _F[4:], k1=4, k2=2, tile_size=v),
    "evaluate_rank.max_rank": lambda v: evaluate_rank(_D, *_PIDS, max_rank=v),
    "evaluate_rank.remove_same_camera": lambda v: evaluate_rank(_D, *_PIDS, remove_same_camera=v),
}


# Sizes this machine could hold are valid requests (the op would allocate and fill them); the
# hostile-scalar test does not make them. Larger ones must be refused up front.
ALLOCATING = {"connected_components.num_nodes": 16, "evaluate_rank.max_rank": 24}


@pytest.mark.parametrize("target", sorted(SCALAR_CALLS))
@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(value=HOSTILE_SCALARS)
def test_hostile_scalar_gives_result_or_clean_error(target, value):
    name = target.split(".", 1)[1]
    if target in ALLOCATING and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        assume(not 2**20 < int(value) <= memory_bytes() // ALLOCATING[target])
    call_or_clean_error(lambda: SCALAR_CALLS[target](value), (name,))
