"""Drop-in replacement for ``torchreid.metrics.evaluate_rank``.

Example (in a torchreid code base)::

    # from torchreid.metrics import evaluate_rank
    from cion_fast.integrations.torchreid import evaluate_rank

    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
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
    """torchreid's signature and return value: ``(cmc, mAP)``.

    Args:
        distmat: [Q, G] numpy array (or torch/cupy: accepted too).
        q_pids, g_pids, q_camids, g_camids: 1-D int arrays.
        max_rank: CMC length, cut to G as torchreid does.
        use_metric_cuhk03: CUHK03 single-shot protocol (NotImplementedError for now).
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
