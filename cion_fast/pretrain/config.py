"""The configuration of a pre-training run: one dataclass, stored in every checkpoint as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cion_fast._checks import (check_choice, check_flag, check_int, check_positive, check_probability, check_real,
                               check_text, check_type, checked, validate_fields)
from cion_fast.training.config import RunConfig

__all__ = ["METHODS", "PretrainConfig"]

METHODS = ("cion", "dino", "upreid")
UPREID_TERMS = ("nce", "gc", "icc")

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
class PretrainConfig(RunConfig):
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

    # Each field declares its accepted values and its help once (cion_fast._checks.checked): the
    # validation below and the `cion-fast pretrain` flags both read them.
    method: str = checked("cion", check_choice, METHODS,
                          help="cion: identity-guided distillation; dino: instance level; upreid: MoCo v2 + GC + ICC")
    arch: str = checked("resnet50", check_text, help="any timm architecture")
    last_stride: int | None = checked(None, check_choice, (1, 2), optional=True, help="ResNets: stride of the last stage")
    ibn: bool = checked(False, check_flag, help="ResNets: IBN-a (resnet50 + ibn = ResNet50-IBN-a)")
    timm_kwargs: dict = checked(None, check_type, (dict,), factory=dict, help="extra timm.create_model arguments")
    steps: int | None = checked(None, check_int, 1, optional=True, help="training length in optimisation steps")
    epochs: int | None = checked(None, check_int, 1, optional=True, help="training length in epochs")
    batch_size: int = checked(48, check_int, 1, help="images per process (per GPU); divisible by every K")
    seed: int = checked(0, check_int, 0, help="base seed")
    k_values: tuple = checked((2, 4, 6, 8), check_type, (tuple, list), help="cion: K of each phase")
    k_boundaries: tuple = checked((0.4, 0.6, 0.8), check_type, (tuple, list), help="cion: where each next phase starts (share of the steps)")
    base_lr: float = checked(5e-4, check_positive, help="base learning rate per 256 images")
    min_lr: float = checked(1e-6, check_real, 0.0, math.inf, help="final learning rate")
    warmup: float = checked(0.1, check_probability, help="warm-up share of the steps")
    weight_decay: tuple = checked((0.04, 0.4), check_type, (tuple, list), help="(start, end) of the weight decay")
    momentum: tuple | None = checked(None, check_type, (tuple, list), optional=True,
                                     help="(start, end) of the teacher EMA momentum (default: by method)")
    clip_grad: float = checked(3.0, check_real, 0.0, math.inf, help="per-tensor gradient norm limit, 0 = off")
    freeze_last_layer: float = checked(0.01, check_probability, help="share of the steps with the head's last layer frozen")
    out_dim: int = checked(65536, check_int, 1, help="DINO head prototypes")
    head_hidden_dim: int = checked(2048, check_int, 1, help="DINO head hidden width")
    head_bottleneck_dim: int = checked(256, check_int, 1, help="DINO head bottleneck width")
    student_temp: float = checked(0.1, check_positive, help="student temperature")
    teacher_temp: float = checked(0.04, check_positive, help="teacher temperature")
    teacher_temp_final: float | None = checked(None, check_positive, optional=True,
                                               help="warm the teacher temperature up to this value")
    teacher_temp_warmup: float = checked(0.3, check_probability, help="share of the steps of the teacher temperature warm-up")
    center_momentum: float = checked(0.9, check_probability, help="momentum of the teacher centre")
    multicrop: dict = checked(None, check_type, (dict,), factory=dict, help="MultiCropConfig overrides")
    upreid_terms: tuple = checked(UPREID_TERMS, check_type, (tuple, list), help="upreid: loss terms to use (ablation)")
    queue_size: int = checked(65536, check_int, 1, help="upreid: MoCo queue length")
    proj_dim: int = checked(128, check_int, 1, help="upreid: projection width")
    moco_temp: float = checked(0.1, check_positive, help="upreid: InfoNCE temperature")
    gc_weight: float = checked(1.0, check_real, 0.0, math.inf, help="upreid: weight of the global-consistency term")
    icc_weight: float = checked(1.0, check_real, 0.0, math.inf, help="upreid: weight of the intrinsic-contrastive term")
    n_stripes: int = checked(6, check_int, 1, help="upreid: horizontal stripes")
    stripe_temp: float = checked(0.1, check_positive, help="upreid: stripe temperature")
    stripe_min_overlap: float = checked(0.5, check_probability, help="upreid: least overlap of matched stripes")
    erase_p: float = checked(0.5, check_probability, help="upreid: random-erasing probability")
    key_bn_splits: int = checked(2, check_int, 1, help="upreid: shuffled-BN splits of the key encoder")
    amp: bool | None = checked(None, check_flag, optional=True, help="float16 mixed precision (default: on for CUDA)")
    deterministic: bool = checked(False, check_flag, help="deterministic algorithms (exact resume)")
    device: str | None = checked(None, check_text, optional=True,
                                 help="cpu, cuda or cuda:N (default: cuda when available; torchrun: cuda:LOCAL_RANK)")
    checkpoint_every: int = checked(500, check_int, 1, help="steps between checkpoints")
    keep_checkpoints: int = checked(2, check_int, 1, help="checkpoints kept")
    log_every: int = checked(10, check_int, 1, help="steps between log lines")
    progress: bool = checked(True, check_flag, help="progress bar")

    def __post_init__(self):
        for name in ("k_values", "k_boundaries", "weight_decay", "momentum", "upreid_terms"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        if isinstance(self.multicrop, dict):
            self.multicrop = {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.multicrop.items()}
        if self.method in _GLOBAL_VIEWS_ONLY and isinstance(self.multicrop, dict) and "n_local" in self.multicrop:
            self.multicrop["n_local"] = 0
        if self.momentum is None:
            self.momentum = (0.999, 0.999) if self.method == "upreid" else (0.996, 1.0)
        self.validate()

    def validate(self) -> None:
        """Raises ValueError/TypeError naming the first bad field."""
        validate_fields(self)
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        for name in ("weight_decay", "momentum"):
            pair = getattr(self, name)
            if len(pair) != 2:
                raise ValueError(f"{name} is a (start, end) pair, got {pair!r}")
            for i, value in enumerate(pair):
                (check_probability if name == "momentum" else check_real)(value, f"{name}[{i}]")
        unknown = [t for t in self.upreid_terms if t not in UPREID_TERMS]
        if unknown or not self.upreid_terms:
            raise ValueError(f"upreid_terms must be a non-empty subset of {UPREID_TERMS}, got {self.upreid_terms!r}")
        self.k_schedule()

    def k_schedule(self):
        """The :class:`~cion_fast.training.sampler.KSchedule` of this method (K = 1 for dino/upreid)."""
        from cion_fast.training.sampler import KSchedule

        if self.method == "cion":
            return KSchedule(self.k_values, self.k_boundaries)
        return KSchedule.constant(1)

    def multicrop_overrides(self) -> dict[str, Any]:
        """MultiCropConfig field values on top of ``MultiCropConfig.cion()``: the method's own, then ours."""
        return {**_METHOD_MULTICROP[self.method], **self.multicrop}
