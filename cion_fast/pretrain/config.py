"""The configuration of a pre-training run: one dataclass, stored in every checkpoint as JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["METHODS", "PretrainConfig", "RUNTIME_KEYS"]

METHODS = ("cion", "dino", "upreid")
UPREID_TERMS = ("nce", "gc", "icc")

# Keys that only say how a run is executed, not what it computes: they may change on --resume.
RUNTIME_KEYS = ("device", "checkpoint_every", "keep_checkpoints", "log_every", "progress")

# Multicrop settings each method starts from (on top of MultiCropConfig.cion()); user overrides win.
_METHOD_MULTICROP = {
    "cion": {},
    "dino": {},
    # UP-ReID (ours): two global views only, MoCo v2-like recipe without colour jitter (LUP).
    "upreid": {"n_local": 0, "jitter_p": 0.0, "blur_p": (0.5, 0.5, 0.5), "solarize_p": (0.0, 0.0, 0.0)},
}
# Methods whose losses see the two global views only: local views would be rendered and never used,
# so their n_local is always 0, whatever the overrides say (one config can then serve every method).
_GLOBAL_VIEWS_ONLY = ("upreid",)


@dataclass
class PretrainConfig:
    """Everything that defines a pre-training run (defaults: CION's recipe).

    Training length: exactly one of ``steps`` and ``epochs``. ``batch_size`` is per process
    (per GPU); the learning rate scales with the global batch ``batch_size * world_size``.

    Attributes (groups):
        method: ``"cion"`` (identity-guided distillation), ``"dino"`` (instance level: K = 1,
            every frame its own identity) or ``"upreid"`` (MoCo v2 + GC + ICC, see
            :mod:`cion_fast.pretrain.upreid`).
        arch, last_stride, ibn, timm_kwargs: the backbone
            (:func:`cion_fast.models.build_backbone`; ViTs get ``img_size = global size``).
        steps, epochs, batch_size, seed: length, per-rank batch, base seed.
        k_values, k_boundaries: CION's growing-K schedule (``dino`` and ``upreid`` use K = 1).
        base_lr, min_lr, warmup: lr = base_lr * global batch / 256, linear warm-up over the first
            ``warmup`` fraction of steps, cosine to ``min_lr``.
        weight_decay: (start, end) of the cosine weight-decay schedule on >= 2-D weights.
        momentum: (start, end) of the cosine teacher/key-encoder EMA momentum.
        clip_grad: per-tensor gradient norm limit (0 disables).
        freeze_last_layer: share of the steps during which the DINO head's last layer gets no
            update (DINO freezes it for 1 of 100 epochs: 0.01). Every schedule is a share of the
            run's steps, never a sampler epoch: an epoch's length depends on the labels (a
            frame-level DINO epoch is ~K times longer than CION's), so epoch-based schedules
            would give the methods different recipes.
        out_dim, head_hidden_dim, head_bottleneck_dim: the DINO head.
        student_temp, teacher_temp, teacher_temp_final, teacher_temp_warmup, center_momentum:
            the loss; when ``teacher_temp_final`` is set the teacher temperature goes linearly from
            ``teacher_temp`` to it over the first ``teacher_temp_warmup`` fraction of steps.
        multicrop: overrides of :class:`cion_fast.ops.MultiCropConfig` fields on top of
            ``MultiCropConfig.cion()`` (e.g. ``{"global_size": [128, 64], "n_local": 4}``);
            ``upreid`` uses the two global views only, so its ``n_local`` is set to 0.
        upreid_terms, queue_size, proj_dim, moco_temp, gc_weight, icc_weight, n_stripes,
            stripe_temp, stripe_min_overlap, erase_p, key_bn_splits: UP-ReID.
        amp: mixed precision (float16 autocast + GradScaler); None = on for CUDA, off on CPU.
        deterministic: ``torch.use_deterministic_algorithms(True)`` (bit-exact resume on CPU).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; None = CUDA when available (under torchrun,
            ``cuda:LOCAL_RANK``).
        checkpoint_every, keep_checkpoints, log_every, progress: bookkeeping (may change on resume).

    Example:
        >>> cfg = PretrainConfig(method="dino", arch="resnet18", steps=10, batch_size=8)
        >>> cfg.k_schedule().values
        (1,)
        >>> PretrainConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> PretrainConfig(method="upreid", steps=10, multicrop={"n_local": 4}).multicrop
        {'n_local': 0}
    """

    method: str = "cion"
    arch: str = "resnet50"
    last_stride: int | None = None
    ibn: bool = False
    timm_kwargs: dict = field(default_factory=dict)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 48
    seed: int = 0
    k_values: tuple = (2, 4, 6, 8)
    k_boundaries: tuple = (0.4, 0.6, 0.8)
    base_lr: float = 5e-4
    min_lr: float = 1e-6
    warmup: float = 0.1
    weight_decay: tuple = (0.04, 0.4)
    momentum: tuple | None = None
    clip_grad: float = 3.0
    freeze_last_layer: float = 0.01
    out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    teacher_temp_final: float | None = None
    teacher_temp_warmup: float = 0.3
    center_momentum: float = 0.9
    multicrop: dict = field(default_factory=dict)
    upreid_terms: tuple = UPREID_TERMS
    queue_size: int = 65536
    proj_dim: int = 128
    moco_temp: float = 0.1
    gc_weight: float = 1.0
    icc_weight: float = 1.0
    n_stripes: int = 6
    stripe_temp: float = 0.1
    stripe_min_overlap: float = 0.5
    erase_p: float = 0.5
    key_bn_splits: int = 2
    amp: bool | None = None
    deterministic: bool = False
    device: str | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    progress: bool = True

    def __post_init__(self):
        for name in ("k_values", "k_boundaries", "weight_decay", "momentum", "upreid_terms"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))
        self.multicrop = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(self.multicrop).items()}
        if self.method in _GLOBAL_VIEWS_ONLY and "n_local" in self.multicrop:
            self.multicrop["n_local"] = 0
        if self.momentum is None:
            self.momentum = (0.999, 0.999) if self.method == "upreid" else (0.996, 1.0)
        self.validate()

    def validate(self) -> None:
        """Raises ValueError/TypeError naming the first bad field."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        for name in ("steps", "epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("batch_size", "out_dim", "head_hidden_dim", "head_bottleneck_dim", "queue_size", "proj_dim",
                     "n_stripes", "key_bn_splits", "checkpoint_every", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("base_lr", "student_temp", "teacher_temp", "moco_temp", "stripe_temp"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("warmup", "freeze_last_layer", "teacher_temp_warmup", "center_momentum", "stripe_min_overlap", "erase_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.min_lr < 0 or self.clip_grad < 0:
            raise ValueError("min_lr and clip_grad must be >= 0")
        if len(self.weight_decay) != 2 or len(self.momentum) != 2:
            raise ValueError("weight_decay and momentum are (start, end) pairs")
        if not all(0.0 <= m <= 1.0 for m in self.momentum):
            raise ValueError(f"momentum values must be in [0, 1], got {self.momentum!r}")
        unknown = [t for t in self.upreid_terms if t not in UPREID_TERMS]
        if unknown or not self.upreid_terms:
            raise ValueError(f"upreid_terms must be a non-empty subset of {UPREID_TERMS}, got {self.upreid_terms!r}")
        if not isinstance(self.timm_kwargs, dict) or not isinstance(self.multicrop, dict):
            raise TypeError("timm_kwargs and multicrop must be dicts")
        self.k_schedule()

    def k_schedule(self):
        """The :class:`~cion_fast.pretrain.sampler.KSchedule` of this method (K = 1 for dino/upreid)."""
        from cion_fast.pretrain.sampler import KSchedule

        if self.method == "cion":
            return KSchedule(self.k_values, self.k_boundaries)
        return KSchedule.constant(1)

    def multicrop_overrides(self) -> dict[str, Any]:
        """MultiCropConfig field values on top of ``MultiCropConfig.cion()``: the method's own, then ours."""
        return {**_METHOD_MULTICROP[self.method], **self.multicrop}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""

        def plain(value):
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PretrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (ValueError naming them)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        return cls(**data)

    def differences(self, other: "PretrainConfig", ignore: tuple = RUNTIME_KEYS) -> dict[str, tuple]:
        """``{field: (self value, other value)}`` for fields that differ, except ``ignore``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}
