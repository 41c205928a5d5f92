"""Shared pieces of the drop-in adapters."""

from __future__ import annotations

import numpy as np

from cion_fast.ops.rank_metrics import RankResult, evaluate_rank


def market1501_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int, use_metric_cuhk03: bool) -> tuple[RankResult, int]:
    """Runs our evaluator the way torchreid / fast-reid call theirs; returns (result, cmc length).

    Both libraries cut ``max_rank`` to the gallery size and return float32 CMC curves.
    """
    if use_metric_cuhk03:
        raise NotImplementedError(
            "CUHK03 single-shot evaluation (random gallery sampling per identity) is not built yet; "
            "use use_metric_cuhk03=False (the Market-1501 protocol)"
        )
    num_gallery = np.shape(distmat)[1]
    cmc_length = min(int(max_rank), int(num_gallery))
    result = evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=cmc_length, return_per_query=True
    )
    return result, cmc_length
