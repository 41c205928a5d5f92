"""Drop-in replacements for ``torchreid.metrics.evaluate_rank`` and ``torchreid.utils.re_ranking``.

Example (in a torchreid code base)::

    # from torchreid.metrics import evaluate_rank
    # from torchreid.utils import re_ranking
    from cion_fast.integrations.torchreid import evaluate_rank, re_ranking

    distmat = re_ranking(distmat, distmat_qq, distmat_gg)
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
"""

from __future__ import annotations

import numpy as np

from cion_fast.integrations._common import market1501_rank
from cion_fast.ops.k_reciprocal import k_reciprocal_rerank_from_distances

__all__ = ["evaluate_rank", "re_ranking"]


def evaluate_rank(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    use_metric_cuhk03: bool = False,
    use_cython: bool = True,
):
    """torchreid's signature and return value: ``(cmc, mAP)``.

    Args:
        distmat: [Q, G] numpy array (or torch/cupy: accepted too).
        q_pids, g_pids, q_camids, g_camids: 1-D int arrays.
        max_rank: CMC length, cut to G as torchreid does.
        use_metric_cuhk03: CUHK03 single-shot protocol (one random gallery image per identity, 10
            repeats, from numpy's global RandomState as torchreid: same numbers after the same seed).
        use_cython: ignored (kept for signature compatibility).

    Returns:
        cmc: float32 numpy [min(max_rank, G)]; mAP: float.

    Example:
        >>> import numpy as np
        >>> cmc, mAP = evaluate_rank(np.array([[0.2, 0.1]]), np.array([3]), np.array([3, 4]),
        ...                          np.array([0]), np.array([1, 1]), max_rank=2)
        >>> cmc.tolist(), mAP
        ([0.0, 1.0], 0.5)
    """
    result, _ = market1501_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03)
    return result.cmc.astype(np.float32), result.mAP


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """torchreid's signature and result: the k-reciprocal re-ranked [Q, G] distance (float32).

    Like torchreid (and the authors' code), the three blocks are squared first (``np.power(d, 2)``
    in their own dtype, then float32), so pass the same Euclidean distances you would pass to
    torchreid. Unlike it, no N x N array is built: see
    :func:`cion_fast.ops.k_reciprocal_rerank_from_distances`, which takes the blocks as they are.

    Args:
        q_g_dist: [Q, G] numpy array; q_q_dist: [Q, Q]; g_g_dist: [G, G].
        k1, k2, lambda_value: as in torchreid (paper defaults 20, 6, 0.3).

    Returns:
        float32 numpy [Q, G].

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(12, 3))
        >>> d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))  # Euclidean; items 0-2 are queries
        >>> re_ranking(d[:3, 3:], d[:3, :3], d[3:, 3:], k1=4, k2=2).shape
        (3, 9)
    """
    squared = [np.power(np.asarray(d), 2).astype(np.float32) for d in (q_g_dist, q_q_dist, g_g_dist)]
    return k_reciprocal_rerank_from_distances(*squared, k1=k1, k2=k2, lambda_value=lambda_value)
