"""The teacher's exponential moving average (DINO's teacher, UP-ReID's key encoder)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_update"]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` for every parameter pair
    (same architecture; buffers are not averaged: each network keeps its own BN statistics).

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> ema_update(a, b, 0.0); torch.equal(a.weight, b.weight)
        True
    """
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student must have the same parameters")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
