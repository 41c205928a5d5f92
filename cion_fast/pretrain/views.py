"""One batch of training views, as every method receives it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ViewBatch"]


@dataclass
class ViewBatch:
    """The views of one batch, on the training device.

    Attributes:
        images: uint8 [B, H, W, 3] source images (UP-ReID's global consistency embeds them).
        global_views: float [n_global, B, 3, Hg, Wg] (normalised; float16/bfloat16 allowed).
        local_views: float [n_local, B, 3, Hl, Wl] (n_local may be 0).
        boxes: int64 [B, n_global + n_local, 4] crop boxes (top, left, height, width) in source
            pixels, globals first; None when not requested.

    Example:
        >>> vb = ViewBatch.random(batch=4, n_local=2, global_size=(64, 32), local_size=(32, 16))
        >>> vb.global_views.shape, vb.local_views.shape, vb.boxes.shape
        (torch.Size([2, 4, 3, 64, 32]), torch.Size([2, 4, 3, 32, 16]), torch.Size([4, 4, 4]))
    """

    images: torch.Tensor
    global_views: torch.Tensor
    local_views: torch.Tensor
    boxes: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.global_views.shape[1])

    @classmethod
    def random(cls, batch: int, n_local: int, global_size: tuple[int, int], local_size: tuple[int, int],
               source_size: tuple[int, int] | None = None, generator: torch.Generator | None = None) -> "ViewBatch":
        """Random views and boxes (CPU, float32) for examples and unit tests of the methods.

        Boxes cover random vertical ranges of the full-width source (``source_size`` defaults to
        ``global_size``).
        """
        sh, sw = source_size or global_size
        images = torch.randint(0, 256, (batch, sh, sw, 3), dtype=torch.uint8, generator=generator)
        g = torch.randn(2, batch, 3, *global_size, generator=generator)
        loc = torch.randn(n_local, batch, 3, *local_size, generator=generator)
        views = 2 + n_local
        height = torch.randint(sh // 2, sh + 1, (batch, views), generator=generator)
        top = (torch.rand(batch, views, generator=generator) * (sh - height + 1)).long()
        boxes = torch.stack([top, torch.zeros_like(top), height, torch.full_like(top, sw)], dim=-1)
        return cls(images, g, loc, boxes)
