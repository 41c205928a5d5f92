"""Backbones over timm: any timm architecture, features before the classifier.

ResNets get two ReID options: ``last_stride=1`` (the last stage keeps a 16x reduction, as in the
strong ReID baseline) and ``ibn=True`` (IBN-a: the first BatchNorm of every block in the first three
stages becomes half InstanceNorm, half BatchNorm, as in IBN-Net's ``resnet50_ibn_a``, CION's
headline model). Transformers with a fixed input grid (ViT, Swin, VOLO, ...) take ``img_size``;
ViTs and Swins are built with ``dynamic_img_size=True`` and VOLOs resample their position embedding
(:class:`cion_fast.models._volo.VOLOAnySize`), so local crops of another size go through the same
network.

Every backbone built here carries two attributes the rest of the package relies on:
``feature_dim`` (int, the width of the pooled features, measured by one forward pass at build time:
timm's ``num_features`` is the width before the head convolution of GhostNet, MobileNetV3, LCNet,
...) and ``backbone_config`` (a JSON-able dict that :func:`build_backbone` rebuilds the same network
from; exports store it).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

__all__ = ["IBN", "backbone_from_config", "build_backbone", "pooled_features"]


class IBN(nn.Module):
    """Instance-Batch Normalisation (IBN-a, Pan et al. ECCV 2018): the first ``half`` channels go
    through ``InstanceNorm2d(affine=True)``, the others through ``BatchNorm2d``.

    Parameter names (``IN.weight``, ``BN.running_mean``, ...) match IBN-Net's and CION's code, so
    their checkpoints load.

    Args:
        planes: number of channels C.
        ratio: share of channels given to InstanceNorm (IBN-Net: 0.5).

    Shapes: input and output float [B, C, H, W], any device.

    Example:
        >>> layer = IBN(64)
        >>> layer(torch.randn(2, 64, 8, 4)).shape
        torch.Size([2, 64, 8, 4])
    """

    def __init__(self, planes: int, ratio: float = 0.5):
        super().__init__()
        if not isinstance(planes, int) or planes < 2:
            raise ValueError(f"planes must be an int >= 2, got {planes!r}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {ratio!r}")
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(second.contiguous())], dim=1)


def _is_resnet(model: nn.Module) -> bool:
    from timm.models.resnet import ResNet

    return isinstance(model, ResNet)


def _set_last_stride_one(model: nn.Module) -> None:
    """Removes the stride-2 downsampling of the first block of ``layer4`` (in place)."""
    block = model.layer4[0]
    for parent in list(block.modules()):
        for child_name, child in list(parent.named_children()):
            stride = getattr(child, "stride", None)
            if stride in (2, (2, 2)):
                if isinstance(child, nn.Conv2d):
                    child.stride = (1, 1)
                elif isinstance(child, nn.AvgPool2d):
                    setattr(parent, child_name, nn.Identity())
                else:
                    raise ValueError(
                        f"last_stride=1 does not know how to remove the stride of {type(child).__name__} "
                        "in layer4; use last_stride=2 for this ResNet variant"
                    )
    model.feature_info[-1]["reduction"] = model.feature_info[-1]["reduction"] // 2


def _apply_ibn_a(model: nn.Module) -> None:
    """Replaces ``bn1`` of every block in ``layer1``-``layer3`` by :class:`IBN` (in place)."""
    for stage in (model.layer1, model.layer2, model.layer3):
        for block in stage:
            if not isinstance(getattr(block, "bn1", None), nn.BatchNorm2d):
                raise ValueError(f"ibn=True needs ResNet blocks with a BatchNorm2d bn1, got {type(block).__name__}")
            block.bn1 = IBN(block.bn1.num_features)


def _is_volo(model: nn.Module) -> bool:
    from timm.models.volo import VOLO

    return isinstance(model, VOLO)


def _measured_width(model: nn.Module, input_hw: tuple[int, int], name: str) -> int:
    """The width C of what ``model`` returns for one zero image of ``input_hw``, which must be a
    pooled [1, C]. Eval mode, because BatchNorm refuses a batch of one in training mode; the model
    is left in training mode."""
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, *input_hw))
    model.train()
    if out.ndim != 2:
        raise ValueError(f"{name!r} built with {model.backbone_config['timm_kwargs']} returns features of shape "
                         f"{tuple(out.shape)} for a [1, 3, {input_hw[0]}, {input_hw[1]}] input, not pooled [B, C]")
    return int(out.shape[1])


def _probe(name: str) -> nn.Module:
    """The architecture built on the meta device (no memory, no weights) to see what it accepts."""
    import timm

    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=0)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def build_backbone(
    name: str,
    pretrained: bool = False,
    last_stride: int | None = None,
    ibn: bool = False,
    img_size: tuple[int, int] | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm model without classifier: ``model(x)`` gives pooled features.

    Args:
        name: any timm architecture name (``timm.list_models()``), e.g. ``"resnet50"``,
            ``"vit_small_patch16_224"``.
        pretrained: load timm's ImageNet weights. Downloads them unless they are cached, so it
            fails offline; pre-training from scratch (the default) needs nothing.
        last_stride: ResNets only: 1 keeps ``layer4`` at the resolution of ``layer3`` (ReID
            practice), 2 is the architecture's own; None leaves the architecture as it is.
        ibn: ResNets only: IBN-a normalisation in the first three stages (``resnet50`` +
            ``ibn=True`` is ResNet50-IBN-a).
        img_size: (H, W) input size for architectures with a fixed grid (ViT, Swin, VOLO, ...);
            ViTs and Swins also get ``dynamic_img_size=True`` and VOLOs resample their position
            embedding, so smaller local crops pass. Ignored by CNNs, which take any size.
        **timm_kwargs: passed to ``timm.create_model`` (``drop_path_rate=0.1``, ...).

    Returns:
        ``nn.Module`` on the CPU, float32, in training mode, with ``feature_dim`` (int, measured:
        one forward pass of a zero image of ``img_size``, or of timm's ImageNet input size) and
        ``backbone_config`` (dict) attributes. Input float [B, 3, H, W]; output float
        [B, feature_dim].

    Raises:
        ValueError: unknown architecture, ``last_stride``/``ibn`` on a non-ResNet, bad values,
            ``timm_kwargs`` the model's constructor refuses or that make it return something other
            than pooled [B, C] features (``global_pool=""``).

    Example:
        >>> net = build_backbone("resnet18", last_stride=1, ibn=True)
        >>> net.feature_dim, net(torch.randn(2, 3, 64, 32)).shape
        (512, torch.Size([2, 512]))
        >>> ghost = build_backbone("ghostnet_050")  # 480 channels pooled, then a 1x1 head conv to 1280
        >>> ghost.feature_dim, ghost.num_features
        (1280, 480)
        >>> vit = build_backbone("vit_tiny_patch16_224", img_size=(64, 32))
        >>> vit(torch.randn(2, 3, 32, 16)).shape
        torch.Size([2, 192])
    """
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8] if isinstance(name, str) else []
        hint = f"; similar names: {', '.join(close)}" if close else "; see timm.list_models()"
        raise ValueError(f"name (architecture) {name!r} is not a timm model{hint}")
    if last_stride not in (None, 1, 2):
        raise ValueError(f"last_stride must be 1, 2 or None, got {last_stride!r}")
    if not isinstance(ibn, bool):
        raise TypeError(f"ibn must be a bool, got {type(ibn).__name__}")
    if img_size is not None:
        if len(tuple(img_size)) != 2 or any(int(s) < 1 for s in img_size):
            raise ValueError(f"img_size must be (H, W) with positive sizes, got {img_size!r}")
        img_size = (int(img_size[0]), int(img_size[1]))
    for key in ("num_classes", "pretrained"):
        if key in timm_kwargs:
            raise ValueError(f"{key} is set by build_backbone; do not pass it in timm_kwargs")

    probe = _probe(name)
    resnet = _is_resnet(probe)
    if (last_stride is not None or ibn) and not resnet:
        raise ValueError(f"last_stride and ibn apply to timm ResNets only; {name!r} is a {type(probe).__name__}")
    kwargs = dict(timm_kwargs)
    if img_size is not None:
        if hasattr(probe, "dynamic_img_size"):
            kwargs.setdefault("img_size", img_size)
            kwargs.setdefault("dynamic_img_size", True)
        elif "img_size" in inspect.signature(type(probe).__init__).parameters:
            kwargs.setdefault("img_size", img_size)
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except (TypeError, ValueError, AssertionError) as error:
        if not timm_kwargs:
            raise
        # the values are only checked by the model's constructor (drop_path_rate="abc" fails in a division there)
        raise ValueError(f"timm_kwargs {timm_kwargs} (--timm-kwarg KEY=VALUE) do not suit timm's {name!r}: "
                         f"{type(error).__name__}: {error}") from error
    except (OSError, RuntimeError) as error:
        if not pretrained:
            raise
        raise RuntimeError(f"pretrained=True: timm could not load ImageNet weights for {name!r} (offline, or none published): "
                           f"{error}. Pre-training from scratch needs none (pretrained=False).") from error
    if last_stride == 1:
        _set_last_stride_one(model)
    if ibn:
        _apply_ibn_a(model)
    if _is_volo(model):
        from cion_fast.models._volo import VOLOAnySize

        model.__class__ = VOLOAnySize
    model.backbone_config = {
        "arch": name,
        "last_stride": last_stride,
        "ibn": ibn,
        "timm_kwargs": _jsonable(kwargs),
    }
    model.feature_dim = _measured_width(model, img_size or tuple(model.pretrained_cfg["input_size"][1:]), name)
    return model


def backbone_from_config(config: dict) -> nn.Module:
    """Rebuilds a backbone from its ``backbone_config`` dict (random weights).

    Example:
        >>> net = build_backbone("resnet18", last_stride=1)
        >>> backbone_from_config(net.backbone_config).backbone_config == net.backbone_config
        True
    """
    if not isinstance(config, dict) or "arch" not in config:
        raise ValueError(f"config must be a backbone_config dict with an 'arch' entry, got {config!r}")
    kwargs = dict(config.get("timm_kwargs") or {})
    if isinstance(kwargs.get("img_size"), list):
        kwargs["img_size"] = tuple(kwargs["img_size"])
    return build_backbone(config["arch"], last_stride=config.get("last_stride"), ibn=bool(config.get("ibn", False)), **kwargs)


def _as_nchw(model: nn.Module, features: torch.Tensor, input_hw) -> torch.Tensor:
    if features.ndim == 4:
        if getattr(model, "output_fmt", "NCHW") == "NHWC":
            return features.permute(0, 3, 1, 2)
        return features
    if features.ndim == 3 and hasattr(model, "patch_embed"):
        prefix = int(getattr(model, "num_prefix_tokens", 0))
        patch = model.patch_embed.patch_size
        h, w = int(input_hw[0]) // patch[0], int(input_hw[1]) // patch[1]
        tokens = features[:, prefix:]
        if tokens.shape[1] != h * w:
            raise ValueError(f"cannot reshape {tokens.shape[1]} patch tokens to a {h}x{w} grid")
        return tokens.transpose(1, 2).reshape(features.shape[0], features.shape[2], h, w)
    raise ValueError(
        f"{type(model).__name__} gives features of shape {tuple(features.shape)}, not a feature map; "
        "stripe pooling needs a CNN or a ViT-like backbone"
    )


def pooled_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and the feature map from one forward pass.

    Args:
        model: a backbone from :func:`build_backbone`.
        x: float [B, 3, H, W].

    Returns:
        (pooled float [B, feature_dim], feature map float [B, C, h, w]).

    Example:
        >>> net = build_backbone("resnet18")
        >>> pooled, fmap = pooled_features(net, torch.randn(2, 3, 64, 32))
        >>> pooled.shape, fmap.shape
        (torch.Size([2, 512]), torch.Size([2, 512, 2, 1]))
    """
    features = model.forward_features(x)
    pooled = model.forward_head(features, pre_logits=True)
    return pooled, _as_nchw(model, features, x.shape[-2:])
