"""Drop-in replacement for ``fastreid.evaluation.rank.evaluate_rank``.

Example (in a fast-reid code base)::

    # from fastreid.evaluation.rank import evaluate_rank
    from cion_fast.integrations.fastreid import evaluate_rank

    cmc, all_AP, all_INP = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids)
    mAP, mINP = np.mean(all_AP), np.mean(all_INP)
"""

from __future__ import annotations

import numpy as np

from cion_fast.integrations._common import market1501_rank

__all__ = ["evaluate_rank"]


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
    """fast-reid's signature and return value: ``(cmc, all_AP, all_INP)``.

    Returns:
        cmc: float32 numpy [min(max_rank, G)]; all_AP, all_INP: float32 numpy arrays with one
        entry per *valid* query (queries without a match are skipped, as fast-reid does).

    Example:
        >>> import numpy as np
        >>> cmc, aps, inps = evaluate_rank(np.array([[0.2, 0.1]]), np.array([3]), np.array([3, 4]),
        ...                                np.array([0]), np.array([1, 1]), max_rank=2)
        >>> aps.tolist(), inps.tolist()
        ([0.5], [0.5])
    """
    result, _ = market1501_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03)
    valid = result.first_match >= 0
    return (
        result.cmc.astype(np.float32),
        result.average_precision[valid].astype(np.float32),
        result.inverse_negative_penalty[valid].astype(np.float32),
    )
