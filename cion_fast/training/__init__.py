"""What every training run shares: the step loop (:class:`TrainingRun`: AMP-ready optimiser step,
gradient clipping, signals, determinism, JSON-lines log, progress bar), torchrun set-up
(:class:`Distributed`), atomic checkpoints with one save/restore of model, optimiser, scaler and
sampler position, exact resume, schedules in steps, the identity batch sampler and batch augmentations.

Pre-training (:class:`cion_fast.pretrain.Trainer`: CION, DINO, UP-ReID) and fine-tuning
(:func:`cion_fast.finetune.finetune`) are both :class:`TrainingRun` subclasses; the methods' own
code (losses, heads, teacher EMA, queues; the ReID head and losses) stays in their modules.

Example:
    >>> from cion_fast.training import KSchedule, cosine_schedule
    >>> KSchedule.cion().k_at(0.5), round(cosine_schedule(5, 10, 1.0, 0.0), 3)
    (4, 0.5)
"""

from cion_fast.training.augment import random_erasing
from cion_fast.training.checkpoint import (export_backbone, latest_checkpoint, list_checkpoints, load_optimizer_tensors,
                                          optimizer_tensors, read_checkpoint, remove_stale_temporaries, write_checkpoint)
from cion_fast.training.config import RUNTIME_KEYS, RunConfig
from cion_fast.training.distributed import Distributed, StepTimer, mix_seed
from cion_fast.training.optim import clip_gradients, cosine_schedule, optimizer_step, param_groups
from cion_fast.training.run import TrainingRun
from cion_fast.training.sampler import IdentityBatchSampler, KSchedule, TrainingPlan

__all__ = [
    "Distributed",
    "IdentityBatchSampler",
    "KSchedule",
    "RUNTIME_KEYS",
    "RunConfig",
    "StepTimer",
    "TrainingPlan",
    "TrainingRun",
    "clip_gradients",
    "cosine_schedule",
    "export_backbone",
    "latest_checkpoint",
    "list_checkpoints",
    "load_optimizer_tensors",
    "mix_seed",
    "optimizer_step",
    "optimizer_tensors",
    "param_groups",
    "random_erasing",
    "read_checkpoint",
    "remove_stale_temporaries",
    "write_checkpoint",
]
