"""Heads: the DINO projection head, the MoCo v2 projection MLP and the BNNeck ReID head."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BNNeckHead", "BNNeckOutput", "DINOHead", "ProjectionMLP", "WeightNormLinear"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _trunc_normal_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class WeightNormLinear(nn.Module):
    """Weight-normalised linear layer without bias, ``y = x (g * v / ||v||)^T`` (row norms).

    The norm ``g`` is a buffer fixed at 1 (DINO's ``norm_last_layer=True``), so only the direction
    ``v`` trains. State-dict keys are ``weight_g`` [out, 1] and ``weight_v`` [out, in], the names of
    ``torch.nn.utils.weight_norm`` used by DINO's and CION's checkpoints.

    Shapes: input float [B, in_dim], output float [B, out_dim].

    Example:
        >>> layer = WeightNormLinear(8, 5)
        >>> layer(torch.randn(3, 8)).shape
        torch.Size([3, 5])
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.register_buffer("weight_g", torch.ones(out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_g * F.normalize(self.weight_v, dim=1)
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """DINO's projection head, as CION uses it.

    Linear(in_dim, hidden) -> GELU -> Linear(hidden, hidden) -> GELU -> Linear(hidden, bottleneck)
    -> L2 normalise -> :class:`WeightNormLinear` (bottleneck -> out_dim, no bias, norm frozen at 1).
    Linear weights start truncated-normal (std 0.02), biases 0, as in DINO.

    Args:
        in_dim: backbone feature width d.
        out_dim: number of prototypes (65536 by default; CION's released heads have 65336, which
            loads the same way, see :meth:`from_state_dict`).
        hidden_dim: 2048 in DINO/CION.
        bottleneck_dim: 256 in DINO/CION.

    Shapes: input float [B, in_dim], output float [B, out_dim] (logits), same device.
    State-dict keys: ``mlp.0/2/4.{weight,bias}``, ``last_layer.weight_g``, ``last_layer.weight_v``
    (DINO's names).

    Example:
        >>> head = DINOHead(384, out_dim=1024, hidden_dim=64, bottleneck_dim=32)
        >>> head(torch.randn(4, 384)).shape
        torch.Size([4, 1024])
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        _positive_int(in_dim, "in_dim")
        _positive_int(out_dim, "out_dim")
        _positive_int(hidden_dim, "hidden_dim")
        _positive_int(bottleneck_dim, "bottleneck_dim")
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.mlp.apply(_trunc_normal_init)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "") -> "DINOHead":
        """A head sized after, and loaded with, a state dict (ours, DINO's or CION's).

        Args:
            state: tensors with keys ``prefix + "mlp.0.weight"``, ..., ``prefix + "last_layer.weight_v"``.
            prefix: e.g. ``"module.head."`` for CION's ``["teacher"]`` dict.

        Raises:
            ValueError: missing keys (named).

        Example:
            >>> head = DINOHead(16, out_dim=65336, hidden_dim=8, bottleneck_dim=4)
            >>> DINOHead.from_state_dict(head.state_dict()).out_dim
            65336
        """
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        needed = ["mlp.0.weight", "mlp.4.weight", "last_layer.weight_v"]
        missing = [prefix + k for k in needed if k not in sub]
        if missing:
            raise ValueError(f"state is missing DINO head keys {missing}")
        hidden, in_dim = sub["mlp.0.weight"].shape
        bottleneck = sub["mlp.4.weight"].shape[0]
        out_dim = sub["last_layer.weight_v"].shape[0]
        head = cls(int(in_dim), int(out_dim), int(hidden), int(bottleneck))
        _load_strict(head, sub, "state")
        return head


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """load_state_dict(strict) with a ValueError naming missing/unexpected keys, shape clashes and
    tensors of the wrong kind or with non-finite values."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)} in all)")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)} in all)")
        if wrong:
            parts.append(f"shape mismatches {wrong[:8]}")
        raise ValueError(f"{name} does not fit {type(module).__name__}: " + "; ".join(parts))
    for key, tensor in own.items():
        _check_values(state[key], tensor, f"{name}: tensor {key!r}")
    module.load_state_dict(state, strict=True)


def _check_values(given: torch.Tensor, own: torch.Tensor, where: str) -> None:
    """``given`` may replace ``own``: load_state_dict would silently cast integer weights to float
    and load NaN or infinity. The kind is the network's own, so integer buffers (BatchNorm's
    num_batches_tracked) stay integer."""
    if _kind(given) != _kind(own):
        raise ValueError(f"{where} is {given.dtype}, expected {own.dtype} (or another {_kind(own)} dtype)")
    if given.is_floating_point() and not bool(torch.isfinite(given).all()):
        raise ValueError(f"{where} holds NaN or infinite values")


def _kind(tensor: torch.Tensor) -> str:
    if tensor.dtype == torch.bool:
        return "bool"
    return "floating-point" if tensor.is_floating_point() else "complex" if tensor.is_complex() else "integer"


class ProjectionMLP(nn.Module):
    """MoCo v2's projection MLP: Linear(in, hidden) -> ReLU -> Linear(hidden, out).

    Args:
        in_dim: backbone feature width (2048 for ResNet-50).
        hidden_dim: defaults to ``in_dim`` (MoCo v2: 2048 -> 2048 -> 128).
        out_dim: embedding width (128).

    Shapes: float [B, in_dim] -> float [B, out_dim] (not normalised).

    Example:
        >>> ProjectionMLP(512)(torch.randn(3, 512)).shape
        torch.Size([3, 128])
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128):
        super().__init__()
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        _positive_int(in_dim, "in_dim")
        _positive_int(hidden_dim, "hidden_dim")
        _positive_int(out_dim, "out_dim")
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BNNeckOutput(NamedTuple):
    """What :class:`BNNeckHead` returns.

    Attributes:
        features: float [B, in_dim] before the BN (for the triplet loss).
        bn_features: float [B, in_dim] after the BN (for retrieval at test time).
        logits: float [B, num_classes] (for the ID loss), or None when ``num_classes == 0``.

    Example:
        >>> out = BNNeckOutput(torch.zeros(2, 4), torch.ones(2, 4), None)
        >>> out.bn_features.shape, out.logits is None
        (torch.Size([2, 4]), True)
    """

    features: torch.Tensor
    bn_features: torch.Tensor
    logits: torch.Tensor | None


class BNNeckHead(nn.Module):
    """BNNeck (Luo et al., "Bag of Tricks", 2019): BatchNorm1d with a frozen zero bias, then a
    bias-free classifier.

    Triplet loss on ``features``, ID loss (label smoothing) on ``logits``, retrieval with
    ``bn_features``. BN weight starts at 1, classifier weights normal(0, 0.001).

    Args:
        in_dim: feature width.
        num_classes: training identities (0: no classifier, ``logits`` is None).

    Shapes: float [B, in_dim] -> :class:`BNNeckOutput`.

    Example:
        >>> head = BNNeckHead(512, num_classes=10)
        >>> out = head(torch.randn(4, 512))
        >>> out.bn_features.shape, out.logits.shape
        (torch.Size([4, 512]), torch.Size([4, 10]))
    """

    def __init__(self, in_dim: int, num_classes: int = 0):
        super().__init__()
        _positive_int(in_dim, "in_dim")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        self.bottleneck = nn.BatchNorm1d(in_dim)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_dim, num_classes, bias=False) if num_classes else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> BNNeckOutput:
        bn = self.bottleneck(x)
        logits = self.classifier(bn) if self.classifier is not None else None
        return BNNeckOutput(x, bn, logits)
