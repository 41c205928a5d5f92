"""Supervised fine-tuning: the strong ReID baseline of Luo et al. 2019 ("Bag of Tricks and a Strong
Baseline for Deep Person Re-identification", CVPR workshops; the BoT recipe of fast-reid/reid-strong-baseline).

The recipe, as implemented here:

* backbone: any timm model from :func:`cion_fast.models.build_backbone`, ResNets with last stride 1
  (optionally IBN-a), initialised randomly ("random"; "imagenet-free" is the same: we never
  download) or from a pre-trained backbone/checkpoint (:func:`cion_fast.models.load_pretrained`);
* head: BNNeck (:class:`cion_fast.models.BNNeckHead`): ID loss (cross-entropy with label smoothing
  0.1) on the classifier after the BN, batch-hard triplet loss (margin 0.3, Euclidean distance) on
  the feature before the BN;
* batches of P identities x K = 4 images (:class:`cion_fast.training.IdentityBatchSampler`);
* augmentation on the whole batch with tensor ops: resize to ``image_size``, random horizontal flip,
  zero padding 10 + random crop, ImageNet normalisation, random erasing p = 0.5 (filled with 0 after
  normalisation, i.e. the ImageNet mean colour);
* Adam, base lr 3.5e-4, weight decay 5e-4; linear warm-up from 0.1 x over the first 10 epochs
  (capped at a quarter of the first phase, so short runs still train at the full rate; 120-epoch
  BoT runs are unaffected), then x 0.1 at 40 % and 70 % of the run.

The run is a :class:`cion_fast.training.TrainingRun` (:class:`FinetuneRun`), the loop pre-training
uses: checkpoints of :mod:`cion_fast.training.checkpoint` (``OUT/checkpoints/step-*/``, atomic
safetensors + JSON), exact resume, SIGINT/SIGTERM write a checkpoint and stop, ``torchrun`` for many
processes (DDP; the batch is per process). The export prefix is ``"backbone."``: ``load_pretrained(OUT/checkpoints/step-N)`` and
``cion-fast evaluate --checkpoint OUT/checkpoints/step-N`` give the fine-tuned backbone, whose output is the pooled
feature *before* the BNNeck. The BN-after feature (the recipe's test feature) needs the head:
:func:`load_finetuned` returns backbone + BN as one module.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cion_fast._checks import (check_choice, check_flag, check_int, check_positive, check_probability, check_real,
                               check_text, check_type, checked, validate_fields)
from cion_fast.data import ImageSet
from cion_fast.models import BNNeckHead, backbone_from_config, build_backbone, load_pretrained
from cion_fast.ops import IMAGENET_MEAN, IMAGENET_STD
from cion_fast.training import (IdentityBatchSampler, KSchedule, TrainingPlan, TrainingRun, latest_checkpoint, list_checkpoints,
                                mix_seed,
                                optimizer_step, random_erasing, read_checkpoint)
from cion_fast.training.config import RUNTIME_KEYS, RunConfig

__all__ = ["FinetuneConfig", "FinetuneModel", "FinetuneRun", "augment_batch", "batch_hard_triplet_loss", "difficulty_report",
           "evaluate_finetuned", "finetune", "load_finetuned", "lr_at_step"]

CHECKPOINT_FORMAT = "cion_fast.finetune.checkpoint/1"
RANDOM_INITS = ("random", "imagenet-free")


@dataclass
class FinetuneConfig(RunConfig):
    """Settings of a fine-tuning run (defaults: the Bag-of-Tricks recipe).

    Args:
        arch: timm architecture. last_stride, ibn: ResNet options (ignored with a pre-trained init,
            whose file carries its own architecture).
        init: "random", "imagenet-free" (same as random), a pre-training run directory (its newest
            checkpoint) or a path :func:`load_pretrained` reads.
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
        keep_checkpoints: checkpoints kept. log_every: steps between log lines. progress: tqdm bar.

    A resumed run may change the runtime fields and the length (``steps``/``epochs``: extending a
    run; the lr schedule is then recomputed over the new length).

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
    log_every: int = checked(1, check_int, 1, help="steps between log lines")
    progress: bool = checked(True, check_flag, help="progress bar")

    resume_free = RUNTIME_KEYS + ("steps", "epochs")

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
    if state.get("format") != CHECKPOINT_FORMAT:
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
    finetune(config, train, out_dir, resume=bool(list_checkpoints(out_dir)))
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
        return load_pretrained(latest_checkpoint(path) or path)  # a pre-training run directory: its newest
    return load_pretrained(path, config.arch, last_stride=config.last_stride, ibn=config.ibn)


def _train_labels(train: ImageSet) -> tuple[np.ndarray, np.ndarray, int]:
    """(kept image indices, labels 0..n-1 for them, n): the images of identities (distractors and
    junk, as the set's ``distractor_pid`` / ``junk_pid`` mark them, dropped; MSMT17's person 0
    kept), relabeled in sorted-pid order."""
    if not isinstance(train, ImageSet):
        raise TypeError(f"train must be a cion_fast.data.ImageSet, got {type(train).__name__}")
    if train.images is None:
        raise ValueError("train must hold pixels (ImageSet(images=...), read_market1501(..., load_images=True))")
    keep = np.flatnonzero(train.identity_mask)
    _, labels = np.unique(train.pids[keep], return_inverse=True)
    n = int(labels.max()) + 1 if labels.size else 0
    if n < 2:
        raise ValueError(f"train holds {n} identities: supervised fine-tuning needs at least 2")
    return keep, labels.astype(np.int64), n


def _fingerprint(labels: np.ndarray, images: np.ndarray) -> str:
    """Hash of the labels, the image shape and a sample of 64 images (cheap, catches other data)."""
    sample = np.ascontiguousarray(images[:: max(1, len(images) // 64)])
    return hashlib.sha256(labels.tobytes() + str(images.shape).encode() + sample.tobytes()).hexdigest()[:16]


class FinetuneRun(TrainingRun):
    """A fine-tuning run (the shared loop of :class:`cion_fast.training.TrainingRun`).

    Args:
        config: :class:`FinetuneConfig`; with ``resume=True`` None takes the checkpoint's, and a
            given one may differ from it only in the runtime fields and the length.
        train: ImageSet with uint8 images [n, H, W, 3] and pids (distractors and junk, as the set
            marks them, are dropped; pids are relabeled 0..C-1).
        out_dir: run directory: ``config.json``, ``log.jsonl``, ``checkpoints/step-*/``.
        resume: continue from the newest checkpoint in ``out_dir`` (same data).

    Under ``torchrun`` every process trains on its own share of each epoch (``batch_size`` per
    process) and DDP averages the gradients; BatchNorm becomes SyncBatchNorm on GPUs.

    Example:
        >>> import tempfile
        >>> from cion_fast.data.synth import WorldConfig, generate
        >>> world = generate(WorldConfig.quick(identities=3, train_identities=8, eval_identities=4, videos=2))
        >>> cfg = FinetuneConfig(arch="resnet18", steps=2, batch_size=16, image_size=(64, 32), device="cpu", progress=False)
        >>> run = FinetuneRun(cfg, world.train, tempfile.mkdtemp())
        >>> run.num_classes, run.fit(until_step=1)["step"], run.fit()["finished"]
        (8, 1, True)
    """

    config_class = FinetuneConfig
    checkpoint_format = CHECKPOINT_FORMAT
    export_prefix = "backbone."
    progress_name = "finetune"

    def __init__(self, config: FinetuneConfig | None, train: ImageSet, out_dir: str | os.PathLike, resume: bool = False):
        super().__init__(config, out_dir, resume)
        keep, self.labels, self.num_classes = _train_labels(train)
        self.images = train.images[keep]
        if self.resume_state is not None and self.resume_state.get("num_classes") != self.num_classes:
            raise ValueError(f"train has {self.num_classes} identities, the checkpoint's classifier "
                             f"{self.resume_state.get('num_classes')}")
        self._start()

    def _data_fingerprint(self) -> str:
        return _fingerprint(self.labels, self.images)

    def _build(self) -> None:
        cfg, device = self.config, self.dist.device
        self.sampler = IdentityBatchSampler(self.labels, cfg.batch_size, seed=cfg.seed, rank=self.dist.rank,
                                            world_size=self.dist.world_size)
        self.plan = TrainingPlan(self.sampler, KSchedule.constant(cfg.k), steps=cfg.steps, epochs=cfg.epochs)
        self.steps_per_epoch = self.sampler.num_batches(cfg.k)
        torch.manual_seed(cfg.seed)  # a random init (backbone and classifier) is a function of the seed
        backbone = backbone_from_config(self.resume_state["backbone_config"]) if self.resume_state else _build_backbone(cfg)
        model = FinetuneModel(backbone, self.num_classes)
        self.backbone_config = dict(model.backbone.backbone_config)
        if self.dist.enabled and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(device)
        self.network: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.network = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.trainable, lr=cfg.base_lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)  # the recipe trains in float32

    def _checkpoint_module(self) -> nn.Module:
        return self.model

    def _extra_state(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def _step_seed(self, step: int) -> int:
        # Rank 0 keeps the single-process stream (its figures stay those of earlier releases).
        seed = self.config.seed
        return seed * 1_000_003 + step if self.dist.rank == 0 else mix_seed(seed, step, self.dist.rank, 2)

    def lr(self, step: int) -> float:
        """The learning rate at ``step`` (:func:`lr_at_step` over this run's plan)."""
        return lr_at_step(self.config, step, self.plan.total_steps, self.steps_per_epoch)

    def _train_step(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, device = self.config, self.dist.device
        index = self.plan.batch(step)
        batch = torch.from_numpy(np.ascontiguousarray(self.images[index])).to(device)
        target = torch.from_numpy(self.labels[index]).to(device)
        x = augment_batch(batch, cfg.image_size, cfg.flip_p, cfg.padding, cfg.erasing_p)
        self.timer.views_done()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(step)
        out = self.network(x)
        id_loss = F.cross_entropy(out.logits, target, label_smoothing=cfg.label_smoothing)
        triplet_loss = batch_hard_triplet_loss(out.features, target, cfg.margin)
        loss = cfg.id_weight * id_loss + cfg.triplet_weight * triplet_loss
        optimizer_step(loss, self.optimizer, self.scaler, self.trainable, clip_grad=0.0)
        return loss, {"id_loss": id_loss.detach(), "triplet_loss": triplet_loss.detach()}

    def _log_fields(self, step: int) -> dict[str, Any]:
        return {"lr": self.lr(step)}

    def _progress_postfix(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}"}

    def _summary(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"id_loss": record.get("id_loss", float("nan")), "triplet_loss": record.get("triplet_loss", float("nan")),
                "num_classes": self.num_classes}


def finetune(config: FinetuneConfig | None, train: ImageSet, out_dir: str | os.PathLike, resume: bool = False,
             until_step: int | None = None) -> dict[str, Any]:
    """Trains backbone + BNNeck on a labelled training split: builds a :class:`FinetuneRun`, runs
    :meth:`~cion_fast.training.TrainingRun.fit` and closes it.

    Args:
        config, train, out_dir, resume: as :class:`FinetuneRun`. until_step: stop (with a
            checkpoint) after this step instead of the end.

    Returns:
        :meth:`~cion_fast.training.TrainingRun.fit`'s dict (``step``, ``total_steps``,
        ``finished``, ``interrupted``: the signal number when SIGINT/SIGTERM stopped the run after
        a checkpoint, ``checkpoint`` path str, ``loss``, ``images_per_s``, ``seconds``, ...) plus
        ``id_loss``, ``triplet_loss`` (means of the last log interval) and ``num_classes``.

    Raises:
        ValueError / TypeError: bad config or data. FileNotFoundError: unknown init path, or
        ``resume`` with no checkpoint.

    Example:
        >>> import tempfile
        >>> from cion_fast.data.synth import WorldConfig, generate
        >>> world = generate(WorldConfig.quick(identities=3, train_identities=8, eval_identities=4, videos=2))
        >>> summary = finetune(FinetuneConfig(arch="resnet18", steps=2, batch_size=16, image_size=(64, 32), device="cpu",
        ...                                   progress=False), world.train, tempfile.mkdtemp())
        >>> summary["step"], summary["num_classes"], summary["interrupted"]
        (2, 8, None)
    """
    run = FinetuneRun(config, train, out_dir, resume=resume)
    try:
        return run.fit(until_step=until_step)
    finally:
        run.close()
