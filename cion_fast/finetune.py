"""Supervised fine-tuning: the strong ReID baseline of Luo et al. 2019 ("Bag of Tricks and a Strong
Baseline for Deep Person Re-identification", CVPR workshops; the BoT recipe of fast-reid/reid-strong-baseline).

The recipe, as implemented here:

* backbone: any timm model from :func:`cion_fast.models.build_backbone`, ResNets with last stride 1
  (optionally IBN-a), initialised randomly ("random"; "imagenet-free" is the same: we never
  download) or from a pre-trained backbone/checkpoint (:func:`cion_fast.models.load_pretrained`);
* head: BNNeck (:class:`cion_fast.models.BNNeckHead`): ID loss (cross-entropy with label smoothing
  0.1) on the classifier after the BN, batch-hard triplet loss (margin 0.3, Euclidean distance) on
  the feature before the BN;
* batches of P identities x K = 4 images (:class:`cion_fast.pretrain.sampler.IdentityBatchSampler`);
* augmentation on the whole batch with tensor ops: resize to ``image_size``, random horizontal flip,
  zero padding 10 + random crop, ImageNet normalisation, random erasing p = 0.5 (filled with 0 after
  normalisation, i.e. the ImageNet mean colour);
* Adam, base lr 3.5e-4, weight decay 5e-4; linear warm-up from 0.1 x over the first 10 epochs
  (capped at a quarter of the first phase, so short runs still train at the full rate; 120-epoch
  BoT runs are unaffected), then x 0.1 at 40 % and 70 % of the run.

Checkpoints use :mod:`cion_fast.pretrain.checkpoint` (``OUT/checkpoints/step-*/``, atomic
safetensors + JSON) with export prefix ``"backbone."``: ``load_pretrained(OUT/checkpoints/step-N)`` and
``cion-fast evaluate --checkpoint OUT/checkpoints/step-N`` give the fine-tuned backbone, whose output is the pooled
feature *before* the BNNeck. The BN-after feature (the recipe's test feature) needs the head:
:func:`load_finetuned` returns backbone + BN as one module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cion_fast._checks import (check_choice, check_flag, check_int, check_positive, check_probability, check_real,
                               check_text, check_type, checked, validate_fields)
from cion_fast._io import atomic_write_json
from cion_fast.data import ImageSet
from cion_fast.evaluate.features import IMAGENET_MEAN, IMAGENET_STD
from cion_fast.models import BNNeckHead, backbone_from_config, build_backbone, load_pretrained
from cion_fast.pretrain.checkpoint import latest_checkpoint, read_checkpoint, write_checkpoint
from cion_fast.pretrain.sampler import IdentityBatchSampler, KSchedule, TrainingPlan
from cion_fast.pretrain.upreid import random_erasing

__all__ = ["FinetuneConfig", "FinetuneModel", "augment_batch", "batch_hard_triplet_loss", "difficulty_report",
           "evaluate_finetuned", "finetune", "load_finetuned", "lr_at_step"]

EXPORT_PREFIX = "backbone."
RANDOM_INITS = ("random", "imagenet-free")
# Fields a resumed run may change: runtime settings, and the length (extending a run; the lr
# schedule is then recomputed over the new length).
_RESUME_FREE = ("device", "progress", "checkpoint_every", "keep_checkpoints", "steps", "epochs")


@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run (defaults: the Bag-of-Tricks recipe).

    Args:
        arch: timm architecture. last_stride, ibn: ResNet options (ignored with a pre-trained init,
            whose file carries its own architecture).
        init: "random", "imagenet-free" (same as random) or a path :func:`load_pretrained` reads.
        image_size: (H, W) training input size; batches are resized to it.
        batch_size: images per step, P x K. k: images per identity.
        steps, epochs: training length (exactly one).
        base_lr, weight_decay: Adam settings. warmup_epochs, warmup_factor: linear warm-up from
            ``warmup_factor * base_lr``. decay_at: fractions of the run where lr is multiplied by
            ``decay_factor``.
        label_smoothing, margin: the ID and triplet losses. id_weight, triplet_weight: loss weights.
        flip_p, padding, erasing_p: augmentation.
        device: "cpu", "cuda", "cuda:N" or None (CUDA when available). seed: sampler/augmentation seed.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        keep_checkpoints: checkpoints kept. progress: tqdm bar.

    Example:
        >>> FinetuneConfig(arch="resnet18", steps=10, batch_size=16).validate()
        >>> FinetuneConfig(steps=10, batch_size=18).validate()
        Traceback (most recent call last):
        ...
        ValueError: batch_size 18 must be divisible by k=4 (P identities x K images)
    """

    # Each field declares its accepted values and its help once (cion_fast._checks.checked): the
    # validation below and the `cion-fast finetune` flags both read them.
    arch: str = checked("resnet50", check_text, help="timm architecture")
    last_stride: int | None = checked(1, check_choice, (1, 2), optional=True, help="ResNets: stride of the last stage")
    ibn: bool = checked(False, check_flag, help="ResNets: IBN-a")
    init: str = checked("random", check_type, (str, os.PathLike),
                        help="random / imagenet-free (the same: nothing is downloaded) or a pre-trained backbone / checkpoint")
    image_size: tuple[int, int] = checked((256, 128), check_type, (tuple, list), help="training input size (H, W)")
    batch_size: int = checked(64, check_int, 1, help="images per step: P identities x k images")
    k: int = checked(4, check_int, 1, help="images per identity in a batch")
    steps: int | None = checked(None, check_int, 1, optional=True, help="training length in optimisation steps")
    epochs: int | None = checked(None, check_int, 1, optional=True, help="training length in epochs")
    base_lr: float = checked(3.5e-4, check_positive, help="Adam base learning rate")
    weight_decay: float = checked(5e-4, check_real, 0.0, math.inf, help="Adam weight decay")
    warmup_epochs: float = checked(10.0, check_real, 0.0, math.inf, help="linear warm-up length in epochs")
    warmup_factor: float = checked(0.1, check_positive, help="warm-up starts at this share of base_lr")
    decay_at: tuple[float, ...] = checked((0.4, 0.7), check_type, (tuple, list), help="shares of the run where lr decays")
    decay_factor: float = checked(0.1, check_positive, help="lr factor at each decay")
    label_smoothing: float = checked(0.1, check_probability, help="ID loss label smoothing")
    margin: float = checked(0.3, check_real, 0.0, math.inf, help="triplet margin")
    id_weight: float = checked(1.0, check_real, 0.0, math.inf, help="ID loss weight")
    triplet_weight: float = checked(1.0, check_real, 0.0, math.inf, help="triplet loss weight")
    flip_p: float = checked(0.5, check_probability, help="horizontal flip probability")
    padding: int = checked(10, check_int, 0, help="pad-and-crop pixels")
    erasing_p: float = checked(0.5, check_probability, help="random-erasing probability")
    device: str | None = checked(None, check_text, optional=True, help="cpu, cuda or cuda:N (default: cuda when available)")
    seed: int = checked(0, check_int, 0, help="sampler / augmentation seed")
    checkpoint_every: int = checked(500, check_int, 1, help="steps between checkpoints")
    keep_checkpoints: int = checked(2, check_int, 1, help="checkpoints kept")
    progress: bool = checked(True, check_flag, help="progress bar")

    def validate(self) -> None:
        """Raises ValueError/TypeError naming the first bad field."""
        validate_fields(self)
        if self.batch_size % self.k:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by k={self.k} (P identities x K images)")
        if self.batch_size // self.k < 2:
            raise ValueError(f"batch_size {self.batch_size} / k={self.k} gives fewer than 2 identities per batch: "
                             "the triplet loss needs negatives")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {self.image_size!r}")
        for i, size in enumerate(self.image_size):
            check_int(size, f"image_size[{i}]", 2)
        decay = tuple(check_real(d, "decay_at") for d in self.decay_at)
        if any(not 0.0 < d < 1.0 for d in decay) or any(a >= b for a, b in zip(decay, decay[1:])):
            raise ValueError(f"decay_at must increase strictly inside (0, 1), got {self.decay_at!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples as lists)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, os.PathLike) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinetuneConfig":
        """Inverse of :meth:`to_dict` (unknown keys raise ValueError).

        Example:
            >>> c = FinetuneConfig(steps=5)
            >>> FinetuneConfig.from_dict(c.to_dict()) == c
            True
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown FinetuneConfig fields {unknown}")
        data = dict(data)
        for key in ("image_size", "decay_at"):
            if key in data and data[key] is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) with Euclidean distances.

    For every anchor i: ``max(0, max_{j: y_j = y_i} d(i, j) - min_{j: y_j != y_i} d(i, j) + margin)``
    (the hardest positive may be the anchor itself, distance 0), averaged over anchors.

    Args:
        features: float [B, D]. labels: int [B]. margin: >= 0.

    Returns:
        scalar tensor, same dtype as ``features``.

    Raises:
        ValueError: shapes that do not match, or a batch with a single identity (no negative).

    Example:
        >>> f = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]])
        >>> float(batch_hard_triplet_loss(f, torch.tensor([0, 0, 1, 1]), margin=0.3))
        0.0
        >>> round(float(batch_hard_triplet_loss(f, torch.tensor([0, 1, 0, 1]), margin=0.3)), 4)  # 3 - 1 + 0.3
        2.3
    """
    if features.ndim != 2 or labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"features must be [B, D] and labels [B], got {tuple(features.shape)} and {tuple(labels.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    same = labels[:, None] == labels[None, :]
    if bool(same.all()):
        raise ValueError("labels: the batch holds a single identity, so no anchor has a negative")
    squared = (features.pow(2).sum(1, keepdim=True) + features.pow(2).sum(1)[None, :] - 2 * features @ features.t())
    dist = squared.clamp(min=1e-12).sqrt()
    hardest_positive = torch.where(same, dist, torch.zeros_like(dist)).max(dim=1).values
    hardest_negative = torch.where(same, torch.full_like(dist, float("inf")), dist).min(dim=1).values
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def lr_at_step(config: FinetuneConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step``: linear warm-up from ``warmup_factor * base_lr`` over
    ``warmup_epochs`` epochs (at most a quarter of the steps before the first decay), then step decay.

    Example:
        >>> c = FinetuneConfig(steps=100, warmup_epochs=1)
        >>> [round(lr_at_step(c, s, 100, 10) / c.base_lr, 3) for s in (0, 5, 10, 39, 40, 70)]
        [0.1, 0.55, 1.0, 1.0, 0.1, 0.01]
    """
    decay_steps = [int(math.ceil(d * total_steps - 1e-9)) for d in config.decay_at]
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if decay_steps:
        warmup = min(warmup, decay_steps[0] // 4)
    factor = config.decay_factor ** sum(step >= s for s in decay_steps)
    if step < warmup:
        factor *= config.warmup_factor + (1.0 - config.warmup_factor) * step / warmup
    return config.base_lr * factor


def augment_batch(images: torch.Tensor, image_size: tuple[int, int], flip_p: float = 0.5, padding: int = 10,
                  erasing_p: float = 0.5) -> torch.Tensor:
    """The recipe's training augmentation on a whole batch (torch's global RNG on the batch's device).

    Args:
        images: uint8 [B, H, W, 3] RGB. image_size: output (H, W). flip_p: horizontal flip
            probability. padding: zero padding before the random crop back to ``image_size``.
        erasing_p: random erasing probability (after normalisation, filled with 0).

    Returns:
        float32 [B, 3, H, W], ImageNet-normalised.

    Example:
        >>> x = torch.full((2, 16, 8, 3), 128, dtype=torch.uint8)
        >>> augment_batch(x, (32, 16)).shape
        torch.Size([2, 3, 32, 16])
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise TypeError(f"images must be uint8 [B, H, W, 3], got {images.dtype} {tuple(images.shape)}")
    device = images.device
    x = images.permute(0, 3, 1, 2).float() / 255.0
    h, w = int(image_size[0]), int(image_size[1])
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    n = x.shape[0]
    flip = torch.rand(n, device=device) < flip_p
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if padding:
        padded = F.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (n,), device=device)
        left = torch.randint(0, 2 * padding + 1, (n,), device=device)
        rows = (top[:, None] + torch.arange(h, device=device))[:, None, :, None]
        cols = (left[:, None] + torch.arange(w, device=device))[:, None, None, :]
        batch_index = torch.arange(n, device=device)[:, None, None, None]
        channel_index = torch.arange(3, device=device)[None, :, None, None]
        x = padded[batch_index, channel_index, rows, cols]
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return random_erasing(x, p=erasing_p) if erasing_p > 0 else x


class FinetuneModel(nn.Module):
    """Backbone + BNNeck head. ``forward(x)`` gives a :class:`cion_fast.models.BNNeckOutput`.

    Shapes: float [B, 3, H, W] -> features / bn_features float [B, D], logits float [B, classes].

    Example:
        >>> m = FinetuneModel(build_backbone("resnet18", last_stride=1), num_classes=5)
        >>> m(torch.randn(2, 3, 64, 32)).logits.shape
        torch.Size([2, 5])
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = BNNeckHead(int(backbone.feature_dim), num_classes)

    def forward(self, x: torch.Tensor):
        return self.head(self.backbone(x))


class _BNFeature(nn.Module):
    """Backbone then the BNNeck's BatchNorm: the recipe's test feature, float [B, D]."""

    def __init__(self, backbone: nn.Module, bottleneck: nn.BatchNorm1d, image_size: tuple[int, int] | None):
        super().__init__()
        self.backbone, self.bottleneck, self.image_size = backbone, bottleneck, image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_size is not None and tuple(x.shape[-2:]) != tuple(self.image_size):
            x = F.interpolate(x, size=tuple(self.image_size), mode="bilinear", align_corners=False)
        return self.bottleneck(self.backbone(x))


def load_finetuned(run_dir: str | os.PathLike, bn_feature: bool = True) -> nn.Module:
    """The fine-tuned network of a run (newest checkpoint) for feature extraction.

    Args:
        run_dir: a fine-tuning run or checkpoint directory.
        bn_feature: True: backbone + BNNeck BN, inputs resized to the training ``image_size``
            (the recipe's test feature). False: :func:`load_pretrained` (the pooled backbone feature).

    Returns:
        ``nn.Module`` on the CPU mapping float [B, 3, H, W] to float [B, D].
    """
    found = latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(f"run_dir: no checkpoint in {run_dir}")
    if not bn_feature:
        return load_pretrained(found)
    tensors, state = read_checkpoint(found)
    if state.get("format") != "cion_fast.finetune.checkpoint/1":
        raise ValueError(f"run_dir {run_dir}: not a fine-tuning checkpoint")
    bottleneck = nn.BatchNorm1d(int(tensors["head.bottleneck.weight"].shape[0]))
    bottleneck.load_state_dict({k[len("head.bottleneck."):]: v for k, v in tensors.items() if k.startswith("head.bottleneck.")})
    return _BNFeature(load_pretrained(found), bottleneck, tuple(state["config"]["image_size"]))


def evaluate_finetuned(run_dir: str | os.PathLike, query: ImageSet, gallery: ImageSet, device: str | None = None,
                       batch_size: int = 128, rerank: bool = False, camera_norm: bool = False,
                       size: tuple[int, int] | None = None) -> dict[str, dict[str, Any]]:
    """Retrieval metrics of a fine-tuned run on a query/gallery split, for both test features.

    Args:
        run_dir: fine-tuning run (newest checkpoint) or checkpoint directory.
        query, gallery: ImageSets with uint8 images [n, H, W, 3], pids, camids.
        device: torch device (default CUDA when available). batch_size: extraction batch.
        rerank: also k-reciprocal re-ranking. camera_norm: also test-time camera normalisation.
        size: (H, W) every crop is resized to first (None: native size); image paths of mixed
            sizes (real datasets) need it. ``cion-fast finetune`` passes the training size.

    Returns:
        ``{"bnneck": metrics, "pooled": metrics}``, cosine distance: the BN-after feature (at the
        training size; the recipe's test feature, whose ``feat_norm`` + Euclidean is cosine ranking)
        and the backbone's pooled feature as ``cion-fast evaluate`` sees it (native size); metrics
        as :func:`cion_fast.evaluate.retrieval.evaluate_features` returns them (``mAP``, ``mINP``,
        ``rank1``, ``rank5``, ``rank10``, ``cmc``).
    """
    from cion_fast.evaluate.retrieval import evaluate_model

    return {name: evaluate_model(load_finetuned(run_dir, bn_feature=bn_feature), query, gallery, batch_size=batch_size,
                                 device=device, rerank=rerank, camera_norm=camera_norm, size=size)[0]
            for name, bn_feature in (("bnneck", True), ("pooled", False))}


def difficulty_report(train: ImageSet, query: ImageSet, gallery: ImageSet, out_dir: str | os.PathLike, steps: int = 160,
                      arch: str = "resnet18", device: str | None = None, progress: bool = True) -> dict[str, dict[str, float]]:
    """How hard a labelled split is: the gap pre-training can win (the synthetic world's quality bar).

    Evaluates the query/gallery split with the training-free stripe descriptor
    (:func:`cion_fast.features.stripe_histogram`), then with the same backbone twice: at its
    random initialisation (pooled features) and after ``steps`` of supervised training on the true
    identities of ``train`` (:func:`finetune`, BNNeck feature), each with and without test-time
    camera normalisation.

    Args:
        train, query, gallery: ImageSets with uint8 images [n, H, W, 3]; training runs at the query
            images' size.
        out_dir: the fine-tuning run directory (resumed when it exists).
        steps: supervised steps (batch 32 = 8 identities x 4 images).
        arch: timm architecture. device: torch device (default CUDA when available).

    Returns:
        ``{"stripe": {...}, "random": {...}, "trained": {...}}`` with ``mAP``, ``mINP``, ``rank1``,
        ``mAP_camnorm``, ``rank1_camnorm`` (fractions).

    Example:
        >>> import tempfile
        >>> from cion_fast.data.synth import WorldConfig, generate
        >>> w = generate(WorldConfig.quick(identities=3, train_identities=8, eval_identities=4, videos=2))
        >>> r = difficulty_report(w.train, w.query, w.gallery, tempfile.mkdtemp(), steps=2, device="cpu", progress=False)
        >>> sorted(r), 0 < r["trained"]["mAP"] <= 1
        (['random', 'stripe', 'trained'], True)
    """
    from cion_fast.evaluate.retrieval import evaluate_features, evaluate_model
    from cion_fast.features import stripe_histogram
    from cion_fast.models import build_backbone

    keys = ("mAP", "mINP", "rank1", "mAP_camnorm", "rank1_camnorm")
    stripe = evaluate_features(stripe_histogram(query.images), stripe_histogram(gallery.images), query.pids, gallery.pids,
                               query.camids, gallery.camids, metric="cosine", camera_norm=True)
    torch.manual_seed(0)
    at_init, _ = evaluate_model(build_backbone(arch), query, gallery, device=device, camera_norm=True)
    size = tuple(int(v) for v in query.images.shape[1:3])
    config = FinetuneConfig(arch=arch, steps=steps, batch_size=32, image_size=size, device=device, progress=progress)
    resume = (Path(out_dir) / "config.json").exists()
    finetune(config, train, out_dir, resume=resume)
    trained = evaluate_finetuned(out_dir, query, gallery, device=device, camera_norm=True)["bnneck"]
    return {"stripe": {k: stripe[k] for k in keys}, "random": {k: at_init[k] for k in keys},
            "trained": {k: trained[k] for k in keys}}


def _build_backbone(config: FinetuneConfig) -> nn.Module:
    """The initial backbone: random, or our export / checkpoint (architecture from the file), or
    another state-dict file (official CION/DINO ``.pth``: architecture from ``config``)."""
    init = config.init
    if isinstance(init, str) and init in RANDOM_INITS:
        return build_backbone(config.arch, last_stride=config.last_stride, ibn=config.ibn)
    path = Path(init)
    if not path.exists():
        raise FileNotFoundError(f"init: {str(init)!r} is neither 'random', 'imagenet-free' nor an existing file/directory")
    if path.is_dir() or path.suffix == ".safetensors":
        return load_pretrained(path)
    return load_pretrained(path, config.arch, last_stride=config.last_stride, ibn=config.ibn)


def _train_labels(train: ImageSet) -> tuple[np.ndarray, np.ndarray, int]:
    """(kept image indices, labels 0..n-1 for them, n): images with pid >= 0 (Market junk, -1,
    is dropped), relabeled in sorted-pid order."""
    if not isinstance(train, ImageSet):
        raise TypeError(f"train must be a cion_fast.data.ImageSet, got {type(train).__name__}")
    if train.images is None:
        raise ValueError("train must hold pixels (ImageSet(images=...), read_market1501(..., load_images=True))")
    keep = np.flatnonzero(train.pids >= 0)
    _, labels = np.unique(train.pids[keep], return_inverse=True)
    n = int(labels.max()) + 1 if labels.size else 0
    if n < 2:
        raise ValueError(f"train holds {n} identities: supervised fine-tuning needs at least 2")
    return keep, labels.astype(np.int64), n


def _fingerprint(labels: np.ndarray, images: np.ndarray) -> str:
    """Hash of the labels, the image shape and a sample of 64 images (cheap, catches other data)."""
    sample = np.ascontiguousarray(images[:: max(1, len(images) // 64)])
    return hashlib.sha256(labels.tobytes() + str(images.shape).encode() + sample.tobytes()).hexdigest()[:16]


def _truncate_log(path: Path, step: int) -> None:
    """Drops log lines of steps after ``step`` (logged after the checkpoint a resumed run starts from)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def finetune(config: FinetuneConfig, train: ImageSet, out_dir: str | os.PathLike, resume: bool = False) -> dict[str, Any]:
    """Trains backbone + BNNeck on a labelled training split.

    Args:
        config: :class:`FinetuneConfig`. train: ImageSet with uint8 images [n, H, W, 3] and pids
            (negative pids, Market junk, are dropped; pids are relabeled 0..C-1).
        out_dir: run directory: ``config.json``, ``log.jsonl``, ``checkpoints/step-*/``.
        resume: continue from the newest checkpoint in ``out_dir``: same config (except device,
            progress, checkpointing and the length ``steps``/``epochs``, which may grow) and data.
            Ctrl-C during training writes a checkpoint of the last finished step first.

    Returns:
        dict with ``step`` (completed steps), ``total_steps``, ``loss`` (last step's total loss,
        float, nan when no step ran), ``id_loss``, ``triplet_loss``, ``checkpoint`` (path str),
        ``num_classes``, ``seconds``.

    Raises:
        ValueError / TypeError: bad config or data. FileNotFoundError: unknown init path, or
        ``resume`` with no checkpoint.

    Example:
        >>> from cion_fast.data.synth import WorldConfig, generate
        >>> world = generate(WorldConfig.quick(identities=20, train_identities=12, eval_identities=10))  # doctest: +SKIP
        >>> finetune(FinetuneConfig(arch="resnet18", steps=2, batch_size=16, image_size=(64, 32)),
        ...          world.train, "ft_run")["step"]  # doctest: +SKIP
        2
    """
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    config.validate()
    keep, labels, num_classes = _train_labels(train)
    images = train.images[keep]
    out_dir = Path(out_dir)
    device = torch.device(config.device if config.device else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} asked for but torch sees no CUDA device")

    resume_tensors: dict[str, torch.Tensor] = {}
    resume_state: dict[str, Any] = {}
    if resume:
        resume_tensors, resume_state = read_checkpoint(out_dir)
        saved = FinetuneConfig.from_dict(resume_state["config"])
        changed = {k: (v, getattr(config, k)) for k, v in saved.to_dict().items()
                   if k not in _RESUME_FREE and v != config.to_dict()[k]}
        if changed:
            raise ValueError(f"resume: config differs from the checkpoint's: {changed}")
        if resume_state.get("data") != _fingerprint(labels, images):
            raise ValueError("resume: train differs from the data the checkpoint was trained on")

    sampler = IdentityBatchSampler(labels, config.batch_size, seed=config.seed)
    plan = TrainingPlan(sampler, KSchedule.constant(config.k), steps=config.steps, epochs=config.epochs)
    steps_per_epoch = sampler.num_batches(config.k)
    backbone = backbone_from_config(resume_state["backbone_config"]) if resume else _build_backbone(config)
    model = FinetuneModel(backbone, num_classes).to(device)
    backbone_config = dict(model.backbone.backbone_config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.base_lr, weight_decay=config.weight_decay)
    step = 0
    if resume:
        own = model.state_dict()
        missing = sorted(k for k in own if k not in resume_tensors)
        if missing:
            raise ValueError(f"checkpoint {resume_state['path']} is missing keys {missing[:8]}")
        model.load_state_dict({k: resume_tensors[k] for k in own}, strict=True)
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in resume_tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                opt_state.setdefault(int(index), {})[name] = value.to(device)
        optimizer.load_state_dict({"state": opt_state, "param_groups": resume_state["optimizer"]["param_groups"]})
        step = int(resume_state["step"])
        _truncate_log(out_dir / "log.jsonl", step)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "config.json", config.to_dict())
    fingerprint = _fingerprint(labels, images)

    def save() -> Path:
        tensors = dict(model.state_dict())
        for index, values in optimizer.state_dict()["state"].items():
            for name, value in values.items():
                tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
        state = {"format": "cion_fast.finetune.checkpoint/1", "config": config.to_dict(), "step": step,
                 "optimizer": {"param_groups": optimizer.state_dict()["param_groups"]}, "data": fingerprint,
                 "num_classes": num_classes, "backbone_config": backbone_config,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return write_checkpoint(out_dir, step, tensors, state, backbone_config, EXPORT_PREFIX, keep=config.keep_checkpoints)

    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.total_steps, initial=step, desc="finetune", unit="step")
    model.train()
    start = time.time()
    last = {"loss": float("nan"), "id_loss": float("nan"), "triplet_loss": float("nan")}
    consistent = True  # False while the weights are one step ahead of ``step``
    try:
        with open(out_dir / "log.jsonl", "a") as log:
            while step < plan.total_steps:
                torch.manual_seed(config.seed * 1_000_003 + step)
                index = plan.batch(step)
                batch = torch.from_numpy(np.ascontiguousarray(images[index])).to(device)
                target = torch.from_numpy(labels[index]).to(device)
                x = augment_batch(batch, config.image_size, config.flip_p, config.padding, config.erasing_p)
                lr = lr_at_step(config, step, plan.total_steps, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                out = model(x)
                id_loss = F.cross_entropy(out.logits, target, label_smoothing=config.label_smoothing)
                tri_loss = batch_hard_triplet_loss(out.features, target, config.margin)
                loss = config.id_weight * id_loss + config.triplet_weight * tri_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower base_lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                consistent = False
                optimizer.step()
                step += 1
                consistent = True
                last = {"loss": loss.item(), "id_loss": id_loss.item(), "triplet_loss": tri_loss.item()}
                log.write(json.dumps({"step": step, "lr": lr, **last}) + "\n")
                log.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.3f}")
                if step % config.checkpoint_every == 0 and step < plan.total_steps:
                    save()
    except KeyboardInterrupt:
        if consistent and step:
            save()  # Ctrl-C: keep the finished steps; ``resume=True`` continues from here
        raise
    finally:
        if bar is not None:
            bar.close()
    checkpoint = save()
    return {"step": step, "total_steps": plan.total_steps, **last, "checkpoint": str(checkpoint),
            "num_classes": num_classes, "seconds": time.time() - start}
