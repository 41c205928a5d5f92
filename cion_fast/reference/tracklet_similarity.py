"""Plain-PyTorch tracklet similarity: pad every tracklet to the longest one ([N, L, D]) and take
batched matrix products of the padded blocks, a chunk of pairs at a time.

This is what one writes without a ragged kernel, and what the benchmark measures against: each
pair costs L x L x D multiply-adds whatever its real lengths, and a chunk of C pairs holds
[C, L, D] copies of both sides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_tracklets(features: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, D] + offsets [N + 1] -> padded [N, L, D] (zeros past each end) and its mask [N, L]."""
    offsets = offsets.to(features.device).long()
    lengths = offsets[1:] - offsets[:-1]
    longest = int(lengths.max()) if lengths.numel() else 0
    slot = torch.arange(longest, device=features.device)
    mask = slot[None, :] < lengths[:, None]
    rows = (offsets[:-1, None] + slot[None, :]).clamp(max=max(features.shape[0] - 1, 0))
    padded = features[rows] * mask[..., None]
    return padded, mask


def tracklet_similarity(
    features: torch.Tensor,
    offsets: torch.Tensor,
    other_features: torch.Tensor | None = None,
    other_offsets: torch.Tensor | None = None,
    *,
    mode: str = "centroid",
    k: int | None = None,
    pairs: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Reference of :func:`cion_fast.ops.tracklet_similarity` (same arguments, torch tensors).

    ``chunk`` pairs are multiplied per ``torch.bmm`` call. Computes in the features' dtype.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.1]])
        >>> tracklet_similarity(x, torch.tensor([0, 2, 4]), mode="max").round(decimals=3)
        tensor([[1.0000, 0.9950],
                [0.9950, 1.0000]])
    """
    if other_features is None:
        other_features, other_offsets = features, offsets
    pa, mask_a = pad_tracklets(F.normalize(features, dim=1), offsets)
    pb, mask_b = pad_tracklets(F.normalize(other_features, dim=1), other_offsets)
    dense = pairs is None
    if dense:
        grid_a, grid_b = torch.meshgrid(
            torch.arange(pa.shape[0], device=pa.device), torch.arange(pb.shape[0], device=pa.device), indexing="ij"
        )
        pairs = torch.stack([grid_a.reshape(-1), grid_b.reshape(-1)], dim=1)
    pairs = pairs.to(pa.device).long()

    if mode in ("centroid", "mean"):
        mean_a = pa.sum(1) / mask_a.sum(1, keepdim=True)
        mean_b = pb.sum(1) / mask_b.sum(1, keepdim=True)
        if mode == "centroid":
            mean_a, mean_b = F.normalize(mean_a, dim=1), F.normalize(mean_b, dim=1)
        if dense:
            return mean_a @ mean_b.T
        return (mean_a[pairs[:, 0]] * mean_b[pairs[:, 1]]).sum(1)

    out = torch.empty(pairs.shape[0], dtype=pa.dtype, device=pa.device)
    for start in range(0, pairs.shape[0], chunk):
        block = pairs[start : start + chunk]
        sims = torch.bmm(pa[block[:, 0]], pb[block[:, 1]].transpose(1, 2))
        valid = mask_a[block[:, 0]][:, :, None] & mask_b[block[:, 1]][:, None, :]
        if mode == "max":
            out[start : start + chunk] = sims.masked_fill(~valid, float("-inf")).amax((1, 2))
        elif mode == "min":
            out[start : start + chunk] = sims.masked_fill(~valid, float("inf")).amin((1, 2))
        elif mode == "topk_mean":
            flat = sims.masked_fill(~valid, float("-inf")).flatten(1)
            top = flat.topk(min(k, flat.shape[1]), dim=1).values
            take = torch.clamp(valid.flatten(1).sum(1), max=k)
            keep = torch.arange(top.shape[1], device=top.device)[None, :] < take[:, None]
            out[start : start + chunk] = torch.where(keep, top, torch.zeros_like(top)).sum(1) / take
        else:
            raise ValueError(f"unknown mode {mode!r}")
    return out.reshape(pa.shape[0], pb.shape[0]) if dense else out
