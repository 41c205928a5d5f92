"""Models: timm backbones (with IBN-a and last-stride options for ResNets), heads, and the exports
(safetensors: :func:`save_backbone` / :func:`load_pretrained`; ONNX: :func:`export_onnx`).

Quick tour::

    >>> import torch
    >>> from cion_fast.models import build_backbone, DINOHead
    >>> net = build_backbone("resnet18", last_stride=1)
    >>> head = DINOHead(net.feature_dim, out_dim=4096, hidden_dim=256, bottleneck_dim=64)
    >>> head(net(torch.randn(2, 3, 64, 32))).shape
    torch.Size([2, 4096])
"""

from cion_fast.models.backbone import IBN, backbone_from_config, build_backbone, pooled_features
from cion_fast.models.heads import BNNeckHead, BNNeckOutput, DINOHead, ProjectionMLP, WeightNormLinear
from cion_fast.models.onnx_export import export_onnx
from cion_fast.models.pretrained import load_pretrained, read_safetensors_config, save_backbone

__all__ = [
    "IBN",
    "BNNeckHead",
    "BNNeckOutput",
    "DINOHead",
    "ProjectionMLP",
    "WeightNormLinear",
    "backbone_from_config",
    "build_backbone",
    "export_onnx",
    "load_pretrained",
    "pooled_features",
    "read_safetensors_config",
    "save_backbone",
]
