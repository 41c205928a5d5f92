"""Self-distillation methods: ``cion`` (identity-guided) and ``dino`` (instance level, K = 1).

Student and teacher are the same network (backbone + :class:`~cion_fast.models.DINOHead`); the
teacher is an EMA of the student and sees only the two global crops; the student sees all crops.
The loss is :class:`~cion_fast.pretrain.loss.IdentityDINOLoss`.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from cion_fast.models import DINOHead
from cion_fast.pretrain.loss import IdentityDINOLoss
from cion_fast.pretrain.views import ViewBatch

__all__ = ["DistillationMethod", "MultiCropWrapper"]


class MultiCropWrapper(nn.Module):
    """Backbone + head over crops of several resolutions (DINO's wrapper).

    Each element of the input list is one batch of same-size crops; the backbone runs once per
    element, the head once on all features, and the output keeps the input's row order.

    Shapes: list of float [N_i, 3, H_i, W_i] -> float [sum N_i, head out_dim].

    Example:
        >>> from cion_fast.models import build_backbone
        >>> net = build_backbone("resnet18")
        >>> wrapper = MultiCropWrapper(net, DINOHead(net.feature_dim, 64, 32, 16))
        >>> wrapper([torch.randn(4, 3, 64, 32), torch.randn(8, 3, 32, 16)]).shape
        torch.Size([12, 64])
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        features = torch.cat([self.backbone(x) for x in crops if x.shape[0] > 0])
        return self.head(features)


class DistillationMethod(nn.Module):
    """CION / DINO: student, EMA teacher and the identity-guided loss in one module.

    State-dict keys: ``student.backbone.*``, ``student.head.*``, ``teacher.*`` (same layout),
    ``loss.center``. The teacher's backbone is what gets exported.

    Args:
        backbone: a backbone from :func:`cion_fast.models.build_backbone` (becomes the student's;
            the teacher gets a copy).
        n_crops: student crops per image (2 global + locals).
        out_dim, hidden_dim, bottleneck_dim: the DINO head.
        student_temp, teacher_temp, center_momentum: the loss.

    Example:
        >>> from cion_fast.models import build_backbone
        >>> method = DistillationMethod(build_backbone("resnet18"), n_crops=4, out_dim=64, hidden_dim=32, bottleneck_dim=16)
        >>> views = ViewBatch.random(batch=6, n_local=2, global_size=(64, 32), local_size=(32, 16))
        >>> loss, metrics = method.training_step(method.student, views, k=2)
        >>> loss.ndim
        0
    """

    export_prefix = "teacher.backbone."

    def __init__(self, backbone: nn.Module, n_crops: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 student_temp: float = 0.1, teacher_temp: float = 0.04, center_momentum: float = 0.9):
        super().__init__()
        self.student = MultiCropWrapper(backbone, DINOHead(backbone.feature_dim, out_dim, hidden_dim, bottleneck_dim))
        self.teacher = copy.deepcopy(self.student)
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.loss = IdentityDINOLoss(out_dim, n_crops, student_temp, teacher_temp, center_momentum)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The student head's last layer (frozen during the first epoch(s))."""
        return list(self.student.head.last_layer.parameters())

    def ema_pairs(self) -> tuple[nn.Module, nn.Module]:
        """(teacher, student): the teacher follows the student by EMA."""
        return self.teacher, self.student

    def training_step(self, student: Callable, views: ViewBatch, k: int,
                      teacher_temp: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one batch (the centre is updated).

        Args:
            student: ``self.student`` or its DDP wrapper (the only call that builds a graph).
            views: the batch's views; B identity-contiguous (P x K); ``local_views`` may hold 0 crops.
            k: images per identity.
            teacher_temp: the scheduled teacher temperature (None: the loss's own).

        Returns:
            (scalar loss with graph, the collapse monitors of
            :meth:`~cion_fast.pretrain.loss.IdentityDINOLoss.monitors`).
        """
        globals_flat = views.global_views.flatten(0, 1)
        with torch.no_grad():
            teacher_out = self.teacher([globals_flat])
        monitors = self.loss.monitors(teacher_out, teacher_temp)
        student_out = student([globals_flat, views.local_views.flatten(0, 1)])
        return self.loss(student_out, teacher_out, k, teacher_temp=teacher_temp), monitors
