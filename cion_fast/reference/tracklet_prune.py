"""Plain-PyTorch level-1 pruning: tracklets padded to [N, L, D]; every step recomputes the scores
of the tracklets that dropped a frame in the previous step from their kept frames, and drops one
more frame from each of those that still have a frame below the threshold."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cion_fast.reference.tracklet_similarity import pad_tracklets


def tracklet_prune(
    features: torch.Tensor, offsets: torch.Tensor, threshold: float = 0.6, min_frames: int = 2, chunk: int = 4096
) -> torch.Tensor:
    """Reference of :func:`cion_fast.ops.tracklet_prune` (torch tensors in, bool [M] out).

    ``chunk`` tracklets are padded and processed together.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1, 0], [1, 0.1], [0.9, 0], [0, 1], [1, 1], [0, 1]])
        >>> tracklet_prune(x, torch.tensor([0, 4, 5, 6]), threshold=0.5).tolist()
        [True, True, True, False, False, False]
    """
    offsets = offsets.to(features.device).long()
    unit = F.normalize(features.double(), dim=1)
    keep = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    for start in range(0, offsets.shape[0] - 1, chunk):
        part = offsets[start : start + chunk + 1]
        frames, active = pad_tracklets(unit, part)
        nonzero = (frames.abs().sum(-1) > 0).double()
        live = torch.arange(frames.shape[0], device=features.device)  # tracklets that may still drop
        while live.numel():
            x, on, nz = frames[live], active[live], nonzero[live]
            total = (x * on[..., None]).sum(1)
            dots = (x * total[:, None, :]).sum(-1)
            others2 = (total * total).sum(1, keepdim=True) - 2 * dots + nz
            scores = torch.where(others2 > 1e-12, (dots - nz) / others2.clamp(min=1e-12).sqrt(), torch.zeros_like(dots))
            scores = scores.masked_fill(~on, float("inf"))
            worst_score, worst = scores.min(1)
            # Two frames left: equal scores up to rounding; the earlier frame goes.
            worst = torch.where(on.sum(1) == 2, on.double().argmax(1), worst)
            drop = (on.sum(1) >= 2) & (worst_score < threshold)
            active[live[drop], worst[drop]] = False
            live = live[drop]
        active &= active.sum(1, keepdim=True) >= min_frames
        slots = torch.arange(active.shape[1], device=features.device)
        rows = part[:-1, None] + slots[None, :]
        valid = slots[None, :] < (part[1:] - part[:-1])[:, None]
        keep[rows[valid]] = active[valid]
    return keep
