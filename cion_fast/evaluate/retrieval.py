"""Retrieval evaluation on features: metrics with and without k-reciprocal re-ranking.

Built on the kernels: :func:`cion_fast.ops.evaluate_rank_from_features` (never holds Q x G) and
:func:`cion_fast.ops.k_reciprocal_rerank` (Zhong et al. 2017, k1=20, k2=6, lambda=0.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cion_fast.ops import evaluate_rank, evaluate_rank_from_features


@dataclass(frozen=True)
class RerankConfig:
    """k-reciprocal re-ranking parameters (the paper's defaults)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


def evaluate_features(
    query_features: Any,
    gallery_features: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    metric: str = "euclidean",
    rerank: bool = False,
    rerank_config: RerankConfig = RerankConfig(),
    max_rank: int = 50,
) -> dict[str, Any]:
    """mAP, mINP, Rank-1/5/10 and the CMC curve; with ``rerank`` also the ``*_rerank`` figures.

    Args:
        query_features: [Q, D] float array (numpy / torch / cupy, CPU or CUDA).
        gallery_features: [G, D], same library and device.
        q_pids, g_pids, q_camids, g_camids: 1-D int arrays.
        metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"`` for the plain ranking.
            Re-ranking always works on squared Euclidean distances of L2-normalised features
            (as ReID code bases run it).
        rerank: also evaluate the k-reciprocal re-ranked distances.

    Returns:
        dict with ``mAP``, ``mINP``, ``rank1``, ``rank5``, ``rank10`` (floats), ``cmc`` (list of
        floats), and with ``rerank`` the same keys suffixed ``_rerank``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> gallery = rng.normal(size=(12, 8)).astype(np.float32)
        >>> query = gallery[:4] + 0.05 * rng.normal(size=(4, 8)).astype(np.float32)
        >>> out = evaluate_features(query, gallery, np.arange(4), np.arange(12) % 6,
        ...                         np.zeros(4, np.int64), np.ones(12, np.int64), max_rank=10)
        >>> out["rank1"]
        1.0
    """
    plain = evaluate_rank_from_features(
        query_features, gallery_features, q_pids, g_pids, q_camids, g_camids, metric=metric, max_rank=max_rank
    )
    out: dict[str, Any] = {**plain.summary(), "cmc": plain.cmc.tolist()}
    if rerank:
        from cion_fast.ops import k_reciprocal_rerank

        distmat = k_reciprocal_rerank(
            query_features,
            gallery_features,
            k1=rerank_config.k1,
            k2=rerank_config.k2,
            lambda_value=rerank_config.lambda_value,
            normalize=True,
        )
        reranked = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
        out.update({f"{name}_rerank": value for name, value in reranked.summary().items()})
        out["cmc_rerank"] = reranked.cmc.tolist()
    return out


def top_k_gallery(query_features: np.ndarray, gallery_features: np.ndarray, top_k: int = 10) -> np.ndarray:
    """Indices [Q, top_k] of the closest gallery rows by cosine similarity (for retrieval grids).

    Example:
        >>> g = np.eye(4, dtype=np.float32)
        >>> int(top_k_gallery(g[[2]], g, top_k=2)[0, 0])
        2
    """
    q = np.asarray(query_features, dtype=np.float32)
    g = np.asarray(gallery_features, dtype=np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    similarity = q @ g.T
    top_k = min(top_k, g.shape[0])
    candidates = np.argpartition(-similarity, top_k - 1, axis=1)[:, :top_k]
    order = np.argsort(-np.take_along_axis(similarity, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1).astype(np.int64)
