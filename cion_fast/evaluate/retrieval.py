"""Retrieval evaluation on features: metrics with and without k-reciprocal re-ranking.

Built on the kernels: :func:`cion_fast.ops.evaluate_rank_from_features` (never holds Q x G) and
:func:`cion_fast.ops.k_reciprocal_rerank` (Zhong et al. 2017, k1=20, k2=6, lambda=0.3).

Optional test-time camera normalisation (:func:`camera_centered`, ``camera_norm=True``) is a
departure from the plain protocol, reported beside it (``*_camnorm`` keys), never instead of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cion_fast._arrays import as_feature_array, as_index_array, check_same_device, placement_of
from cion_fast.ops import evaluate_rank, evaluate_rank_from_features


@dataclass(frozen=True)
class RerankConfig:
    """k-reciprocal re-ranking parameters (the paper's defaults)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def check_items(self, num_items: int) -> None:
        """Each image is re-ranked by its k1 nearest others: a split of ``num_items`` <= k1 query +
        gallery images is too small. Refused, not re-ranked with a smaller k1: figures with another
        k1 would not compare with the protocol's."""
        if num_items <= self.k1:
            raise ValueError(f"rerank: k-reciprocal re-ranking (k1 = {self.k1}) needs more than {self.k1} query + gallery "
                             f"images, this split has {num_items}: evaluate it without re-ranking")


def camera_centered(query_features: Any, gallery_features: Any, q_camids: Any, g_camids: Any) -> tuple[Any, Any]:
    """Subtracts from every feature the mean feature of its camera (over query and gallery).

    Test-time camera normalisation (the mean part of camera-based batch normalisation, Zhuang et
    al., ECCV 2020): it needs no identity label, only the camera ids the protocol already has, and
    removes what a camera adds to every crop it sees (illumination, colour cast, background).
    Transductive: it uses the statistics of the whole test set, so it is reported beside the
    plain protocol, never instead of it.

    Args:
        query_features: float [Q, D] (numpy / torch / cupy, CPU or CUDA).
        gallery_features: float [G, D], same library and device.
        q_camids, g_camids: int [Q], [G] camera ids.

    Returns:
        (query, gallery): new arrays of the input's library, device and dtype.

    Example:
        >>> q = np.array([[1.0, 5.0], [3.0, 5.0]])
        >>> g = np.array([[2.0, 9.0], [4.0, 9.0]])
        >>> cq, cg = camera_centered(q, g, np.array([0, 1]), np.array([0, 1]))
        >>> cq.tolist(), cg.tolist()
        ([[-0.5, -2.0], [-0.5, -2.0]], [[0.5, 2.0], [0.5, 2.0]])
    """
    query = as_feature_array(query_features, "query_features", "[Q, D]")
    gallery = as_feature_array(gallery_features, "gallery_features", "[G, D]")
    placement = check_same_device({"query_features": placement_of(query, "query_features"),
                                   "gallery_features": placement_of(gallery, "gallery_features")})
    q_cam = as_index_array(q_camids, "q_camids", query.shape[0])
    g_cam = as_index_array(g_camids, "g_camids", gallery.shape[0])
    query, gallery = query * 1, gallery * 1  # copies, whatever the library
    for camera in np.unique(np.concatenate([q_cam, g_cam])):
        q_rows = placement.from_numpy(np.flatnonzero(q_cam == camera))
        g_rows = placement.from_numpy(np.flatnonzero(g_cam == camera))
        mean = (query[q_rows].sum(0) + gallery[g_rows].sum(0)) / (len(q_rows) + len(g_rows))
        query[q_rows] -= mean
        gallery[g_rows] -= mean
    return query, gallery


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
    camera_norm: bool = False,
    max_rank: int = 50,
) -> dict[str, Any]:
    """mAP, mINP, Rank-1/5/10 and the CMC curve; with ``rerank`` also the ``*_rerank`` figures,
    with ``camera_norm`` also the ``*_camnorm`` figures (plain ranking of :func:`camera_centered`
    features).

    Args:
        query_features: [Q, D] float array (numpy / torch / cupy, CPU or CUDA).
        gallery_features: [G, D], same library and device.
        q_pids, g_pids, q_camids, g_camids: 1-D int arrays.
        metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"`` for the plain ranking.
            Re-ranking always works on squared Euclidean distances of L2-normalised features
            (as ReID code bases run it).
        rerank: also evaluate the k-reciprocal re-ranked distances (ValueError for a split of at
            most ``rerank_config.k1`` query + gallery images: :meth:`RerankConfig.check_items`).
        camera_norm: also evaluate after test-time camera normalisation.

    Returns:
        dict with ``mAP``, ``mINP``, ``rank1``, ``rank5``, ``rank10`` (floats), ``cmc`` (list of
        floats), with ``rerank`` the same keys suffixed ``_rerank``, with ``camera_norm`` suffixed
        ``_camnorm``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> gallery = rng.normal(size=(12, 8)).astype(np.float32)
        >>> query = gallery[:4] + 0.05 * rng.normal(size=(4, 8)).astype(np.float32)
        >>> out = evaluate_features(query, gallery, np.arange(4), np.arange(12) % 6,
        ...                         np.zeros(4, np.int64), np.ones(12, np.int64), max_rank=10)
        >>> out["rank1"]
        1.0
    """
    if rerank:
        rerank_config.check_items(len(query_features) + len(gallery_features))
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
    if camera_norm:
        centred = camera_centered(query_features, gallery_features, q_camids, g_camids)
        normalised = evaluate_rank_from_features(*centred, q_pids, g_pids, q_camids, g_camids, metric=metric, max_rank=max_rank)
        out.update({f"{name}_camnorm": value for name, value in normalised.summary().items()})
        out["cmc_camnorm"] = normalised.cmc.tolist()
    return out


def evaluate_model(
    model: Any,
    query: Any,
    gallery: Any,
    *,
    batch_size: int = 128,
    device: Any = None,
    flip: bool = False,
    progress: bool = False,
    size: tuple[int, int] | None = None,
    metric: str = "cosine",
    **options: Any,
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """Embeds a query/gallery split with a network and evaluates the features.

    :func:`cion_fast.features.extract_features` on both sides, then :func:`evaluate_features`.

    Args:
        model: ``torch.nn.Module`` mapping float [B, 3, H, W] to [B, D].
        query, gallery: :class:`cion_fast.data.ImageSet` holding uint8 images [n, H, W, 3] or image
            paths (read batch by batch; images of mixed sizes need ``size``),
            ``pids`` and ``camids``.
        batch_size, device, flip, progress, size: as :func:`~cion_fast.features.extract_features`
            (``size``: resize the crops to the network's training size first).
        metric: plain-ranking metric (cosine here, as ReID evaluates frozen features).
        **options: further :func:`evaluate_features` keywords (``rerank``, ``camera_norm``, ...).

    Returns:
        (metrics as :func:`evaluate_features` returns them, (query features [Q, D], gallery
        features [G, D]) as float32 numpy).

    Example:
        >>> import torch
        >>> from cion_fast.data import ImageSet
        >>> crops = np.random.default_rng(0).integers(0, 256, (6, 8, 4, 3), dtype=np.uint8)
        >>> query = ImageSet(images=crops[:3], pids=np.array([1, 2, 3]), camids=np.zeros(3, np.int64))
        >>> gallery = ImageSet(images=crops, pids=np.arange(1, 7), camids=np.ones(6, np.int64))
        >>> metrics, (q, g) = evaluate_model(torch.nn.Flatten(), query, gallery, device="cpu")
        >>> metrics["rank1"], q.shape, g.shape
        (1.0, (3, 96), (6, 96))
    """
    from cion_fast.features import extract_features

    for name, split in (("query", query), ("gallery", gallery)):
        if (getattr(split, "images", None) is None and getattr(split, "paths", None) is None) or not hasattr(split, "pids") \
                or not hasattr(split, "camids"):
            raise TypeError(f"{name} must be an ImageSet (images or paths, pids, camids)")
    features = tuple(extract_features(model, split.images if split.images is not None else split.paths, batch_size, device,
                                      flip=flip, progress=progress, size=size)
                     for split in (query, gallery))
    metrics = evaluate_features(*features, query.pids, gallery.pids, query.camids, gallery.camids, metric=metric, **options)
    return metrics, features


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
