"""Pre-training: CION identity-guided self-distillation, instance-level DINO and UP-ReID on one
trainer, a :class:`cion_fast.training.TrainingRun` (AMP, DDP through torchrun, atomic checkpoints,
exact resume).

Quick tour::

    >>> import torch
    >>> from cion_fast.pretrain import IdentityDINOLoss, KSchedule
    >>> loss_fn = IdentityDINOLoss(out_dim=32, n_crops=4)
    >>> loss_fn(torch.randn(4 * 8, 32), torch.randn(2 * 8, 32), k=4).shape
    torch.Size([])
    >>> KSchedule.cion().k_at(0.5)
    4

Training (CPU here; a GPU and torchrun work the same way)::

    from cion_fast.data import Tracklets
    from cion_fast.pretrain import PretrainConfig, pretrain
    tracklets = Tracklets.load("world/tracklets")
    labels = np.load("labels.npy")                       # one identity per frame, -1 = dropped
    cfg = PretrainConfig(method="cion", arch="resnet50", ibn=True, last_stride=1, epochs=100)
    pretrain(cfg, tracklets.frames, labels, "runs/cion")  # checkpoints in runs/cion/checkpoints
"""

from cion_fast.pretrain.config import METHODS, PretrainConfig
from cion_fast.pretrain.distill import DistillationMethod, MultiCropWrapper
from cion_fast.pretrain.loss import IdentityDINOLoss
from cion_fast.pretrain.ema import ema_update
from cion_fast.pretrain.trainer import Trainer, pretrain
from cion_fast.pretrain.upreid import UPReIDEncoder, UPReIDMethod, stripe_rois
from cion_fast.pretrain.views import ViewBatch
# The shared training layer's names most pre-training users reach for, re-exported (same objects).
from cion_fast.training import (IdentityBatchSampler, KSchedule, TrainingPlan, clip_gradients, cosine_schedule, export_backbone,
                                latest_checkpoint, optimizer_step, param_groups, random_erasing, read_checkpoint)

__all__ = [
    "METHODS",
    "DistillationMethod",
    "IdentityBatchSampler",
    "IdentityDINOLoss",
    "KSchedule",
    "MultiCropWrapper",
    "PretrainConfig",
    "Trainer",
    "TrainingPlan",
    "UPReIDEncoder",
    "UPReIDMethod",
    "ViewBatch",
    "clip_gradients",
    "cosine_schedule",
    "ema_update",
    "export_backbone",
    "latest_checkpoint",
    "optimizer_step",
    "param_groups",
    "pretrain",
    "random_erasing",
    "read_checkpoint",
    "stripe_rois",
]
