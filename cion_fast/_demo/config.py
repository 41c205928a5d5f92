"""What the demo runs: :class:`DemoConfig`, made of the real typed configs and checked when built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cion_fast._checks import check_flag, check_int, check_text, check_type, checked, validate_fields

# name -> (PretrainConfig.method, which labels it trains on: "denoised", "tracker" or None).
PRETRAINED_METHODS = {
    "dino": ("dino", None),
    "tracklet": ("cion", "tracker"),
    "cion": ("cion", "denoised"),
    "upreid": ("upreid", None),
}
METHODS = ("stripe", "random", *PRETRAINED_METHODS)
DEMO_METHODS = ("stripe", "random", "cion")

# The recipe for small budgets: CION's machinery (identity-guided distillation, growing K, EMA
# teacher, multi-crop) at a size a 2-core CPU trains for thousands of steps. Chosen by the sweep in
# docs/SMALL_BUDGET.md; why each value:
# - test_resnet (timm, 0.4 M parameters) at 64 x 32: ~240 images/s of training on 2 cores (ResNet-18
#   at the same size: 55, so 100 steps instead of 1,000 in the same minutes);
# - EMA momentum 0.95 -> 0.99: a teacher that averages ~20-100 steps keeps < 1e-20 of its random init
#   after 1,000 steps (DINO's 0.996 -> 1 over 100 steps keeps 82 %: an exported random init);
# - no frozen last layer, 5 % warm-up, base lr 1e-2: every schedule a share of the steps;
# - out_dim 1,024 (not 65,536): a few hundred images per batch cannot spread over more prototypes;
# - light views: no colour jitter, grayscale, blur or solarisation (in this world, as for clothes in
#   real ReID, colour identifies the person: the default jitter lets a view's mean colour find its
#   own source among 32 only 19-38 % of the time, 88-91 % without); crops and flips stay;
# - UP-ReID's queue 4,096 (65,536 random keys would outnumber the keys a short run produces).
SMALL_BUDGET_RECIPE = dict(
    method="cion",
    arch="test_resnet",
    batch_size=32,
    k_values=(2, 4),
    k_boundaries=(0.5,),
    out_dim=1024,
    head_hidden_dim=256,
    head_bottleneck_dim=64,
    base_lr=1e-2,
    warmup=0.05,
    momentum=(0.95, 0.99),
    freeze_last_layer=0.0,
    queue_size=4096,
    checkpoint_every=100,
    log_every=25,
    multicrop={"global_size": (64, 32), "local_size": (32, 16), "n_local": 2, "jitter_p": 0.0, "grayscale_p": 0.0,
               "blur_p": (0.0, 0.0, 0.0), "solarize_p": (0.0, 0.0, 0.0)},
)


def _world():
    from cion_fast.data.synth import WorldConfig

    return WorldConfig()


def _pretrain(steps: int = 1500):
    from cion_fast.pretrain.config import PretrainConfig

    return PretrainConfig(**SMALL_BUDGET_RECIPE, steps=steps)


def _denoise():
    from cion_fast.denoise.config import DenoiseConfig

    return DenoiseConfig(thresholds="auto")


def _check_seeds(value: Any, name: str) -> None:
    check_type(value, name, (tuple, list))
    for seed in value:
        check_int(seed, f"{name}[]", 0)
    if not value or len(set(value)) != len(value):
        raise ValueError(f"{name} must be distinct ints >= 0, at least one, got {value!r}")


@dataclass
class DemoConfig:
    """What the demo runs; :meth:`default` and :meth:`quick` are the two presets. Every field is
    checked when the config is built, so a typo fails before anything runs.

    Attributes:
        world: the :class:`cion_fast.data.synth.WorldConfig`.
        pretrain: the :class:`cion_fast.pretrain.PretrainConfig` every method shares (the demo sets
            ``method``, ``seed``, ``device``, ``progress`` and the checkpoint cadence per run).
        denoise: the :class:`cion_fast.denoise.DenoiseConfig` (default: thresholds from the data).
        rounds: denoising rounds: 1 = stripe features only; 2 = then again on the features of a
            CION backbone pre-trained on round 1's identities; and so on.
        seeds: pre-training seeds; the report gives the mean and std over them.
        curve_points: checkpoints per pre-training evaluated for the learning curve.
        finetune_steps: 0, or supervised fine-tuning steps on the world's labelled ``train`` split
            for every backbone (random init included; :func:`cion_fast.finetune.finetune`, the
            same recipe and budget for all), evaluated beside the frozen features.
        rerank: also evaluate with k-reciprocal re-ranking.
        camera_norm: also evaluate after test-time camera normalisation (``*_camnorm`` figures).
        eval_batch_size: images per forward pass when extracting features.
        device: ``"cpu"``, ``"cuda"``; None = CUDA when available.

    Example:
        >>> DemoConfig.quick().pretrain.arch, DemoConfig.quick().rounds
        ('test_resnet', 1)
        >>> DemoConfig(rounds=0)
        Traceback (most recent call last):
        ...
        ValueError: rounds must be >= 1, got 0
    """

    world: Any = checked(None, factory=_world)
    pretrain: Any = checked(None, factory=_pretrain)
    denoise: Any = checked(None, factory=_denoise)
    rounds: int = checked(2, check_int, 1)
    seeds: tuple = checked((0,), _check_seeds)
    curve_points: int = checked(5, check_int, 1)
    finetune_steps: int = checked(0, check_int, 0)
    rerank: bool = checked(True, check_flag)
    camera_norm: bool = checked(True, check_flag)
    eval_batch_size: int = checked(256, check_int, 1)
    device: str | None = checked(None, check_text, optional=True)

    def __post_init__(self):
        from cion_fast.data.synth import WorldConfig
        from cion_fast.denoise.config import DenoiseConfig
        from cion_fast.pretrain.config import PretrainConfig

        for name, kind in (("world", WorldConfig), ("pretrain", PretrainConfig), ("denoise", DenoiseConfig)):
            check_type(getattr(self, name), name, (kind,))
        validate_fields(self)
        if self.pretrain.steps is None:
            raise ValueError("pretrain: the demo counts pre-training in steps (the learning curve's axis); give steps")
        self.seeds = tuple(self.seeds)

    @classmethod
    def default(cls) -> "DemoConfig":
        """The default world (32k frames, 600 people, 8 cameras), 1,500 steps per pre-training."""
        return cls()

    @classmethod
    def quick(cls) -> "DemoConfig":
        """The quick world (:meth:`cion_fast.data.synth.WorldConfig.quick`), one round of 900
        steps: on the calibrated quick world 300 steps leave CION below the stripe descriptor
        (16.5 against 26.4 plain mAP; the same backbone trained 300 steps on the *true*
        identities reaches only 18-24 %), one round of 900 steps reaches 30.1 in about the
        time two rounds of 300 took (2 min 11 s on 2 cores), and the second round's identities
        were never the ones kept."""
        from cion_fast.data.synth import WorldConfig

        return cls(world=WorldConfig.quick(), pretrain=_pretrain(steps=900), rounds=1)

    def to_dict(self) -> dict:
        """JSON-ready: every field, the typed configs as their own dicts."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "world": self.world.to_dict(), "pretrain": self.pretrain.to_dict(),
                "denoise": self.denoise.as_dict(), "seeds": list(self.seeds)}
