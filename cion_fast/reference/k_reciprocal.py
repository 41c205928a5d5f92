"""Plain-PyTorch k-reciprocal re-ranking and Jaccard distance: the 8 steps of docs/ALGORITHMS.md on
dense N x N tensors, like the reference numpy code, but vectorised with torch ops instead of Python
loops over sets. Readable first; it holds several N x N tensors, so keep N to a few thousand.

Same tie rule as :mod:`cion_fast.ops.k_reciprocal`: an item ranks itself first, other ties go to
the smaller index (a stable argsort).
"""

from __future__ import annotations

import torch


def _rank_lists(dist: torch.Tensor, rank_length: int) -> torch.Tensor:
    """[N, L] item indices by ascending distance, each item itself first (step 2)."""
    keyed = dist.clone()
    keyed.fill_diagonal_(-torch.inf)
    return torch.argsort(keyed, dim=1, stable=True)[:, :rank_length]


def _reciprocal(rank: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R(i, m) for every i, as (forward [N, m] = rank[:, :m], mask [N, m]: i is in j's first m)."""
    forward = rank[:, :m]
    items = torch.arange(rank.shape[0], device=rank.device)
    backward = rank[forward, :m]  # [N, m, m]
    return forward, (backward == items[:, None, None]).any(-1)


def _jaccard(dist: torch.Tensor, rank_length: int, k1: int, k2: int, rows: int) -> torch.Tensor:
    """J [rows, N] (steps 2-7) from D' [N, N] (row i = what item i sees)."""
    num_items = dist.shape[0]
    items = torch.arange(num_items, device=dist.device)
    rank = _rank_lists(dist, rank_length)
    m1 = min(k1 + 1, rank_length)
    mh = min(round(k1 / 2) + 1, rank_length)  # round half to even, like np.around

    # Step 3: R(i, k1) as a dense membership matrix.
    forward, reciprocal = _reciprocal(rank, m1)
    member = torch.zeros(num_items, num_items, dtype=torch.bool, device=dist.device)
    member[items[:, None].expand_as(forward), forward] = reciprocal

    # Step 4: candidate c = forward[i, a] brings R(c, h) when more than 2/3 of it lies in R(i, k1).
    half_forward, half_reciprocal = _reciprocal(rank, mh)
    candidate_sets = half_forward[forward]  # [N, m1, mh]
    candidate_mask = half_reciprocal[forward]
    overlap = (member.gather(1, candidate_sets.flatten(1)).view_as(candidate_mask) & candidate_mask).sum(-1)
    accepted = reciprocal & (3 * overlap > 2 * candidate_mask.sum(-1))
    expanded = member.clone()
    added = candidate_mask & accepted[..., None]
    expanded[items[:, None, None].expand_as(candidate_sets)[added], candidate_sets[added]] = True

    # Step 5: encoding.
    weights = torch.where(expanded, torch.exp(-dist), torch.zeros((), dtype=dist.dtype, device=dist.device))
    v = weights / weights.sum(1, keepdim=True)

    # Step 6: local query expansion, the mean of the rows of the k2 nearest (self included).
    if k2 > 1:
        v = sum(v[rank[:, t]] for t in range(k2)) / k2

    # Step 7: only the columns where row i is non-zero can contribute to s(i, .).
    jaccard = torch.empty(rows, num_items, dtype=dist.dtype, device=dist.device)
    for i in range(rows):
        columns = v[i].nonzero().squeeze(1)
        overlap_sum = torch.minimum(v[i, columns][None, :], v[:, columns]).sum(1)
        jaccard[i] = 1 - overlap_sum / (2 - overlap_sum)
    return jaccard


def re_ranking(
    q_g_dist: torch.Tensor,
    q_q_dist: torch.Tensor,
    g_g_dist: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> torch.Tensor:
    """Re-ranked [Q, G] distance from the three blocks, taken as they are (no squaring).

    Example:
        >>> import torch
        >>> x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
        >>> d = torch.cdist(x, x) ** 2
        >>> re_ranking(d[:5, 5:], d[:5, :5], d[5:, 5:], k1=6, k2=3).shape
        torch.Size([5, 25])
    """
    num_query = q_g_dist.shape[0]
    full = torch.cat([torch.cat([q_q_dist, q_g_dist], 1), torch.cat([q_g_dist.T, g_g_dist], 1)], 0)
    dist = (full / full.max(dim=0).values).T  # step 1: columns over their maxima, transposed
    jaccard = _jaccard(dist, k1 + 1, k1, k2, num_query)
    return ((1 - lambda_value) * jaccard + lambda_value * dist[:num_query])[:, num_query:]


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Dense [N, N] squared Euclidean distances (one GEMM), clamped at 0, zero diagonal."""
    norms = (x * x).sum(1)
    dist = (norms[:, None] + norms[None, :] - 2 * x @ x.T).clamp_(min=0)
    return dist.fill_diagonal_(0)


def k_reciprocal_rerank(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    normalize: bool = False,
) -> torch.Tensor:
    """Re-ranked [Q, G] distance from features (squared Euclidean distances).

    Example:
        >>> import torch
        >>> g = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
        >>> k_reciprocal_rerank(g[:3] + 0.01, g, k1=5, k2=3).argmin(1).tolist()
        [0, 1, 2]
    """
    x = torch.cat([query_features, gallery_features])
    if x.dtype != torch.float64:
        x = x.float()
    if normalize:
        x = torch.nn.functional.normalize(x, dim=1)
    num_query = query_features.shape[0]
    dist = squared_distances(x)
    return re_ranking(dist[:num_query, num_query:], dist[:num_query, :num_query], dist[num_query:, num_query:], k1, k2,
                      lambda_value)


def jaccard_distance(features: torch.Tensor, k1: int = 30, k2: int = 6, variant: str = "original") -> torch.Tensor:
    """Dense [N, N] k-reciprocal Jaccard distance ("original" or "spcl", see the op).

    Example:
        >>> import torch
        >>> x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
        >>> jaccard_distance(x, k1=5, k2=2).shape
        torch.Size([20, 20])
    """
    x = features if features.dtype == torch.float64 else features.float()
    dist = squared_distances(x)
    if variant == "original":
        return _jaccard(dist / dist.max(dim=1, keepdim=True).values, k1 + 1, k1, k2, x.shape[0])
    return _jaccard(dist, k1, k1, k2, x.shape[0]).clamp_(min=0)
