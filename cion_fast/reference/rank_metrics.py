"""Plain-PyTorch ranking metrics: sort every row, then read the match positions.

What torchreid/fast-reid compute (with a stable sort), written with torch ops on chunks of rows.
"""

from __future__ import annotations

import numpy as np
import torch

from cion_fast.ops.rank_metrics import RankResult


def evaluate_rank(
    distmat: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    max_rank: int = 50,
    remove_same_camera: bool = True,
    chunk: int = 256,
) -> RankResult:
    """Reference CMC/mAP/mINP. distmat [Q, G] torch (any float dtype, any device); ids [Q]/[G].

    Example:
        >>> import torch
        >>> d = torch.tensor([[0.1, 0.5, 0.9], [0.7, 0.2, 0.3]])
        >>> r = evaluate_rank(d, torch.tensor([1, 2]), torch.tensor([1, 2, 2]),
        ...                   torch.tensor([0, 0]), torch.tensor([1, 1, 1]), max_rank=3)
        >>> r.mAP
        1.0
    """
    device = distmat.device
    q_pids, g_pids = q_pids.to(device).long(), g_pids.to(device).long()
    q_camids, g_camids = q_camids.to(device).long(), g_camids.to(device).long()
    num_query = distmat.shape[0]
    cmc_hits = torch.zeros(max_rank, dtype=torch.float64, device=device)
    ap_all, inp_all, first_all = [], [], []
    for start in range(0, num_query, chunk):
        rows = slice(start, min(start + chunk, num_query))
        order = torch.argsort(distmat[rows], dim=1, stable=True)
        matches = g_pids[order] == q_pids[rows, None]
        if remove_same_camera:
            junk = matches & (g_camids[order] == q_camids[rows, None])
        else:
            junk = torch.zeros_like(matches)
        for r in range(matches.shape[0]):
            hits = matches[r][~junk[r]].to(torch.float64)
            num_hits = hits.sum()
            if num_hits == 0:
                ap_all.append(float("nan"))
                inp_all.append(float("nan"))
                first_all.append(-1)
                continue
            positions = torch.nonzero(hits).flatten()
            cumulative = hits.cumsum(0)
            precision_at_hits = cumulative[positions] / (positions + 1).to(torch.float64)
            ap_all.append(float(precision_at_hits.mean()))
            inp_all.append(float(num_hits / (positions[-1] + 1)))
            first = int(positions[0])
            first_all.append(first)
            if first < max_rank:
                cmc_hits[first:] += 1
    ap = np.asarray(ap_all, dtype=np.float64)
    valid = ~np.isnan(ap)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery")
    return RankResult(
        cmc=(cmc_hits / num_valid).cpu().numpy(),
        mAP=float(ap[valid].mean()),
        mINP=float(np.asarray(inp_all)[valid].mean()),
        num_valid_queries=num_valid,
        num_queries=num_query,
        average_precision=ap,
        inverse_negative_penalty=np.asarray(inp_all, dtype=np.float64),
        first_match=np.asarray(first_all, dtype=np.int64),
    )
