"""Batch augmentations shared by pre-training (UP-ReID's erased views) and fine-tuning (BoT)."""

from __future__ import annotations

import math

import torch

__all__ = ["random_erasing"]


def random_erasing(images: torch.Tensor, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), value: float = 0.0, tries: int = 10) -> torch.Tensor:
    """torchvision's ``RandomErasing`` for a whole batch at once (new tensor, input untouched).

    Each image, with probability p, gets one rectangle of area ``scale`` x image area and aspect
    (h/w) log-uniform in ``ratio`` set to ``value``; the first of ``tries`` candidates that fits is
    used, none when no candidate fits (torchvision's behaviour). Randomness: torch's global RNG on
    the images' device.

    Shapes: float [N, C, H, W] -> float [N, C, H, W], same device and dtype.

    Example:
        >>> x = torch.ones(4, 3, 32, 16)
        >>> y = random_erasing(x, p=1.0)
        >>> bool((y == 0).any()), y.shape
        (True, torch.Size([4, 3, 32, 16]))
    """
    n, _, h, w = images.shape
    device = images.device
    area = h * w * torch.empty(n, tries, device=device).uniform_(*scale)
    log_ratio = torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    eh = torch.sqrt(area * aspect).round().long()
    ew = torch.sqrt(area / aspect).round().long()
    fits = (eh < h) & (ew < w)
    first = torch.argmax(fits.int(), dim=1)
    rows = torch.arange(n, device=device)
    eh, ew = eh[rows, first], ew[rows, first]
    apply = fits.any(dim=1) & (torch.rand(n, device=device) < p)
    top = (torch.rand(n, device=device) * (h - eh + 1).clamp(min=1)).long()
    left = (torch.rand(n, device=device) * (w - ew + 1).clamp(min=1)).long()
    ys = torch.arange(h, device=device)[None, :]
    xs = torch.arange(w, device=device)[None, :]
    in_rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])
    in_cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :]) & apply[:, None, None]
    return torch.where(mask[:, None], torch.as_tensor(value, dtype=images.dtype, device=device), images)
