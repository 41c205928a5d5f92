"""VOLO that takes inputs of any size: its position embedding is resampled to the input's grid.

timm's VOLO adds a position embedding of the fixed grid ``img_size / 16`` after the outlooker
stage, so a 128 x 64 local crop through a network built for 256 x 128 fails ("size of tensor a (4)
must match ... (8)"). The rest of VOLO takes any grid (outlook attention pads, class attention reads
any token count), so resampling the embedding to the current grid, as CION's own VOLO does, is all
that multi-crop needs. Kept in its own module so that importing :mod:`cion_fast.models` does not
import timm.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed_nhwc
from timm.models import checkpoint
from timm.models.volo import VOLO

__all__ = ["VOLOAnySize"]


class VOLOAnySize(VOLO):
    """timm's VOLO whose position embedding follows the input size (bicubic, as timm resamples ViT
    embeddings). Same parameters and state-dict keys as VOLO: :func:`cion_fast.models.build_backbone`
    sets it as the class of the VOLOs it builds.

    Shapes: as VOLO's: input float [B, 3, H, W] (H, W >= 16), features [B, C]; ``forward_tokens``
    takes the patch grid [B, H/8, W/8, C0] and returns [B, (H/16) * (W/16), C] (sizes rounded
    down).

    Example:
        >>> net = VOLOAnySize(layers=[1, 1, 1, 1], img_size=(64, 32), embed_dims=[16, 32, 32, 32],
        ...                   num_heads=[1, 2, 2, 2], num_classes=0)
        >>> net(torch.randn(2, 3, 64, 32)).shape, net(torch.randn(2, 3, 32, 16)).shape
        (torch.Size([2, 32]), torch.Size([2, 32]))
    """

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        # VOLO.forward_tokens with the embedding resampled to x's grid where it is added
        for idx, block in enumerate(self.network):
            if idx == 2 and self.pos_embed is not None:
                x = self.pos_drop(x + resample_abs_pos_embed_nhwc(self.pos_embed, list(x.shape[1:3])))
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])
