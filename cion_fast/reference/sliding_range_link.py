"""Plain-PyTorch sliding-range linking: one dense similarity matrix per range, links gathered with
``torch.nonzero`` and deduplicated with ``torch.unique``; components by min-label propagation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def connected_components(num_nodes: int, edges: torch.Tensor) -> torch.Tensor:
    """Reference of :func:`cion_fast.ops.connected_components`: every node takes the smallest label
    among its neighbours (and its label's label) until nothing changes; components are then
    numbered in the order of their smallest node.

    Example:
        >>> connected_components(6, torch.tensor([[4, 1], [2, 0], [1, 5]])).tolist()
        [0, 1, 0, 2, 1, 1]
    """
    labels = torch.arange(num_nodes)
    edges = edges.long().reshape(-1, 2)
    both = torch.cat([edges, edges.flip(1)])
    while True:
        updated = labels.scatter_reduce(0, both[:, 0], labels[both[:, 1]], reduce="amin")
        updated = updated[updated]  # pointer jumping: follow the label's own label
        if torch.equal(updated, labels):
            break
        labels = updated
    return torch.unique(labels, return_inverse=True)[1]


def sliding_range_link(
    features: torch.Tensor,
    video_ids: torch.Tensor,
    window: int = 8,
    stride: int = 4,
    threshold: float = 0.7,
    mutual_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`cion_fast.ops.sliding_range_link` (CPU torch tensors). Links come back
    sorted by (i, j) rather than in range order.

    Example:
        >>> x = torch.tensor([[1, 0], [0, 1], [1, 0.1], [0.1, 1], [1, 0]])
        >>> labels, links = sliding_range_link(x, torch.tensor([0, 0, 1, 1, 9]), 2, 1, 0.9)
        >>> labels.tolist(), links.tolist()
        ([0, 1, 0, 1, 0], [[0, 2], [1, 3], [2, 4]])
    """
    unit = F.normalize(features, dim=1)
    rank = torch.unique_consecutive(video_ids, return_inverse=True)[1]
    num_videos = int(rank[-1]) + 1 if rank.numel() else 0
    video_start = torch.searchsorted(rank, torch.arange(num_videos + 1))
    num_ranges = 1 if num_videos <= window else -(-(num_videos - window) // stride) + 1
    found = [torch.zeros((0, 2), dtype=torch.long)]
    for r in range(num_ranges):
        first, last = int(video_start[r * stride]), int(video_start[min(r * stride + window, num_videos)])
        block = unit[first:last]
        sims = block @ block.T
        cross = rank[first:last, None] != rank[None, first:last]
        upper = torch.arange(last - first)[:, None] < torch.arange(last - first)[None, :]
        link = cross & upper & (sims >= threshold)
        if mutual_k:
            # Exactly symmetric (a GEMM need not be): "j among i's top k" must see the value i's does.
            sims = (sims + sims.T) / 2
            link = cross & upper & (sims >= threshold)
            if mutual_k <= last - first:
                kth = sims.masked_fill(~cross, float("-inf")).topk(mutual_k, dim=1).values[:, -1]
            else:
                kth = torch.full((last - first,), float("-inf"), dtype=sims.dtype)
            link &= (sims >= kth[:, None]) & (sims >= kth[None, :])
        found.append(torch.nonzero(link) + first)
    links = torch.unique(torch.cat(found), dim=0)
    return connected_components(features.shape[0], links), links
