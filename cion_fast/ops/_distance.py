"""Distance helpers shared by the ops that start from features: tiles of pairwise distances with
the caller's own library (BLAS on CPU, cuBLAS on GPU), row normalisation and a finiteness check.

The GEMM stays in the caller's library on purpose: it is the bulk of the work, those libraries
already run it near peak, and the tile comes back in the caller's framework on the caller's
device, ready to be handed to a kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _xp(framework: str) -> Any:
    """The array namespace of numpy or cupy (torch is handled separately)."""
    return np if framework == "numpy" else __import__("cupy")


def tile_distances(framework: str, query: Any, gallery: Any, gallery_sq: Any, metric: str) -> Any:
    """[tile, G] distances with the caller's library (BLAS / cuBLAS GEMM).

    ``metric``: ``"euclidean"``, ``"sqeuclidean"`` (``gallery_sq`` = squared row norms of
    ``gallery``) or ``"cosine"`` (rows already L2-normalised; ``gallery_sq`` unused). Squared
    distances are clamped at 0 (the expansion |q|^2 + |g|^2 - 2 q.g can round below it).
    """
    if framework == "torch":
        import torch

        if metric == "cosine":
            return torch.mm(query, gallery.T).neg_().add_(1)
        sq = torch.addmm(gallery_sq[None, :], query, gallery.T, alpha=-2.0)
        sq += (query * query).sum(1, keepdim=True)
        sq.clamp_(min=0)
        return sq.sqrt_() if metric == "euclidean" else sq
    xp = _xp(framework)
    if metric == "cosine":
        dist = query @ gallery.T
        return xp.subtract(1, dist, out=dist)
    sq = query @ gallery.T
    sq *= -2
    sq += gallery_sq[None, :]
    sq += (query * query).sum(1, keepdims=True)
    xp.maximum(sq, 0, out=sq)
    return xp.sqrt(sq, out=sq) if metric == "euclidean" else sq


def normalise_rows(framework: str, x: Any) -> Any:
    """Rows scaled to unit L2 norm (rows of zeros stay zero)."""
    if framework == "torch":
        import torch

        return torch.nn.functional.normalize(x, dim=1)
    xp = _xp(framework)
    norms = xp.sqrt((x * x).sum(1, keepdims=True))
    return x / xp.maximum(norms, 1e-12)


def check_finite(framework: str, x: Any, name: str) -> None:
    """ValueError naming ``name`` when ``x`` holds a NaN or an infinity."""
    if framework == "torch":
        import torch

        finite = bool(torch.isfinite(x).all())
    else:
        finite = bool(_xp(framework).isfinite(x).all())
    if not finite:
        raise ValueError(f"{name} contains NaN or inf values")
