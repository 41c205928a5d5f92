"""Shared pieces of the drop-in adapters."""

from __future__ import annotations

import numpy as np

from cion_fast._arrays import as_float_array
from cion_fast._checks import check_int
from cion_fast.ops.rank_metrics import RankResult, evaluate_rank, evaluate_rank_cuhk03


def market1501_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int, use_metric_cuhk03: bool) -> tuple[RankResult, int]:
    """Runs our evaluator the way torchreid / fast-reid call theirs; returns (result, cmc length).

    Both libraries cut ``max_rank`` to the gallery size and return float32 CMC curves;
    ``use_metric_cuhk03`` runs :func:`~cion_fast.ops.evaluate_rank_cuhk03`.
    """
    max_rank = check_int(max_rank, "max_rank", 1)
    distmat = as_float_array(distmat, "distmat", 2, "[Q, G]")
    if use_metric_cuhk03:
        # torchreid / fast-reid draw from numpy's global RandomState: so do we, in their order, so
        # np.random.seed(s) before either call gives the same numbers
        result = evaluate_rank_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                                      seed=np.random.mtrand._rand)
        return result, len(result.cmc)
    cmc_length = min(max_rank, int(distmat.shape[1]))
    result = evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=cmc_length, return_per_query=True
    )
    return result, cmc_length
