"""Schedules and optimisation helpers shared by every training run (DINO's recipe, as CION uses it;
fine-tuning uses :func:`optimizer_step` with its own schedule).

* learning rate: ``base_lr * global_batch / 256``, linear warm-up from 0, then cosine to
  ``min_lr`` (per iteration);
* weight decay: cosine 0.04 -> 0.4, applied to >= 2-D weights only;
* teacher EMA momentum: cosine 0.996 -> 1 (:func:`cion_fast.pretrain.ema.ema_update`);
* gradients clipped per parameter tensor at 3.0 (after the GradScaler has unscaled them).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["clip_gradients", "cosine_schedule", "optimizer_step", "param_groups"]


def cosine_schedule(step: int, total_steps: int, base: float, final: float, warmup_steps: int = 0, warmup_start: float = 0.0) -> float:
    """DINO's ``cosine_scheduler`` evaluated at one step.

    Linear from ``warmup_start`` to ``base`` over ``warmup_steps`` (step 0 gives ``warmup_start``),
    then ``final + (base - final) * (1 + cos(pi * t / T)) / 2`` with t the step after warm-up and
    T = total_steps - warmup_steps.

    Example:
        >>> [round(cosine_schedule(s, 10, 1.0, 0.0, warmup_steps=2), 3) for s in (0, 1, 2, 6, 9)]
        [0.0, 0.5, 1.0, 0.5, 0.038]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = min(int(warmup_steps), total_steps)
    if step < warmup_steps:
        return warmup_start + (base - warmup_start) * step / warmup_steps
    span = total_steps - warmup_steps
    t = step - warmup_steps
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * t / span))


def param_groups(model: nn.Module) -> list[dict]:
    """Two AdamW groups: >= 2-D weights (weight decay scheduled) and the rest (biases, norms: none).

    Frozen parameters (``requires_grad=False``) are left out.

    Returns:
        ``[{"params": [...], "name": "decay"}, {"params": [...], "name": "no_decay", "weight_decay": 0.0}]``.

    Example:
        >>> groups = param_groups(nn.Linear(4, 3))
        >>> [len(g["params"]) for g in groups]
        [1, 1]
    """
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "name": "decay"}, {"params": no_decay, "name": "no_decay", "weight_decay": 0.0}]


@torch.no_grad()
def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> None:
    """Scales each parameter's gradient down to an L2 norm of at most ``max_norm`` (DINO's
    per-tensor clipping, not a global norm). Call after ``GradScaler.unscale_``.

    Example:
        >>> p = nn.Parameter(torch.zeros(3)); p.grad = torch.tensor([3.0, 4.0, 0.0])
        >>> clip_gradients([p], 1.0); round(float(p.grad.norm()), 4)
        1.0
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, parameters: list[torch.Tensor],
                   clip_grad: float, frozen: Iterable[torch.Tensor] = ()) -> None:
    """One update: zero grads, scaled backward, **unscale**, per-tensor clip, drop the gradients of
    ``frozen`` parameters, step (skipped by the scaler on inf/NaN), update the scale.

    The unscale comes before the clipping, so the limit applies to the true gradients (CION's code
    clipped the scaled ones). With a disabled scaler (CPU, float32) the scaler calls are no-ops.

    Args:
        loss: scalar with a graph.
        optimizer: the optimiser over ``parameters``.
        scaler: a ``torch.amp.GradScaler`` (enabled or not).
        parameters: parameters to clip (the trainable ones).
        clip_grad: per-tensor L2 limit; 0 disables clipping.
        frozen: parameters whose gradient is dropped this step (the DINO head's last layer in epoch 0).

    Example:
        >>> layer = nn.Linear(3, 1, bias=False)
        >>> sgd = torch.optim.SGD(layer.parameters(), lr=1.0)
        >>> scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        >>> before = layer.weight.detach().clone()
        >>> optimizer_step(100 * layer(torch.ones(1, 3)).sum(), sgd, scaler, list(layer.parameters()), 3.0)
        >>> round(float((before - layer.weight.detach()).norm()), 4)  # the unscaled gradient (norm 173.2) clipped to 3
        3.0
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if clip_grad > 0:
        clip_gradients(parameters, clip_grad)
    for param in frozen:
        param.grad = None
    scaler.step(optimizer)
    scaler.update()
