"""``cion-fast demo`` and ``cion-fast compare``: the CION pipeline on the built-in synthetic world.

Stages (each writes its artefacts atomically under ``out/`` and is skipped when they exist, so an
interrupted run resumes where it stopped):

1. ``world``                 synthesise the world (``out/world``: tracklets + Market-style split),
2. ``features``              the training-free stripe descriptor of every tracklet frame (``out/features.npz``),
3. ``denoise``               CION's three denoising levels on them, thresholds chosen from the data
                             (``thresholds="auto"``; ground truth only measures the result) (``out/denoise``),
4. further rounds (``rounds``, default 2): ``pretrain_cion_round<r>`` pre-trains CION on round r's
   identities, ``features_round<r+1>`` re-extracts every frame with that backbone and
   ``denoise_round<r+1>`` denoises again: learned features refine the identities,
5. ``pretrain_<m>``          pre-training of each method ``m`` that learns (``out/pretrain_<m>``; CION on
                             the last round's identities; resumes from its newest checkpoint),
6. ``evaluate_<m>``          frozen features of the held-out query/gallery at the training size, with and
                             without k-reciprocal re-ranking and camera normalisation, for the exported
                             network and the student, plus plain mAP at every kept checkpoint (the
                             learning curve) (``out/eval/<m>.npz``),
7. report                    ``report.json``, ``report.md``, ``report.html`` and PNG plots.

With several ``seeds`` every pre-training (and every round after the first) runs once per seed,
stage names gaining ``_seed<s>`` for s > 0, and the report gives mean and std over seeds.

The methods (:data:`METHODS`): ``stripe`` (the training-free descriptor), ``random`` (the backbone
at its random initialisation: step 0 of every pre-training of the same seed), ``dino``
(instance-level self-distillation), ``tracklet`` (CION's distillation with the raw tracker ids as
identities), ``cion`` (with the denoised identities) and ``upreid``. The demo runs
:data:`DEMO_METHODS`; the comparison runs them all with the same recipe and budget (steps x batch
size, backbone, views, schedules). A comparison in a demo's directory reuses everything the demo
already finished.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cion_fast._io import atomic_write_json

# name -> (PretrainConfig.method, which labels it trains on: "denoised", "tracker" or None).
PRETRAINED_METHODS = {
    "dino": ("dino", None),
    "tracklet": ("cion", "tracker"),
    "cion": ("cion", "denoised"),
    "upreid": ("upreid", None),
}
METHODS = ("stripe", "random", *PRETRAINED_METHODS)
DEMO_METHODS = ("stripe", "random", "cion")
# The order the paper claims, worst to best (the report says whether it holds).
CLAIMED_ORDER = ("random", "dino", "tracklet", "cion")

REPORT_METRICS = ("mAP", "mINP", "rank1", "rank5", "rank10", "mAP_rerank", "rank1_rerank", "mAP_camnorm", "rank1_camnorm",
                  "student_mAP", "student_rank1")
QUALITY_COLUMNS = (
    "images_kept", "identities", "purity", "pairwise_precision", "pairwise_recall", "pairwise_f1",
    "bcubed_precision", "bcubed_recall", "bcubed_f", "fragmentation", "cross_video_linked",
)


@dataclass
class DemoConfig:
    """What the demo runs. :meth:`default` and :meth:`quick` are the two presets; every field can
    be overridden.

    Attributes:
        world: :class:`cion_fast.data.synth.WorldConfig` fields (overrides of the preset).
        pretrain: :class:`cion_fast.pretrain.PretrainConfig` fields, shared by every method.
        denoise: :class:`cion_fast.denoise.DenoiseConfig` fields (default: thresholds from the data).
        rounds: denoising rounds: 1 = stripe features only; 2 = then again on the features of a
            CION backbone pre-trained on round 1's identities; and so on.
        seeds: pre-training seeds; the report gives the mean and std over them.
        curve_points: checkpoints per pre-training evaluated for the learning curve.
        finetune_steps: 0, or supervised fine-tuning steps on the world's labelled ``train`` split
            for every backbone (random init included; :func:`cion_fast.finetune.finetune`, the
            same recipe and budget for all), evaluated beside the frozen features (the paper's
            protocol: its claims are about fine-tuned accuracy).
        rerank: also evaluate with k-reciprocal re-ranking.
        camera_norm: also evaluate after test-time camera normalisation
            (:func:`cion_fast.evaluate.retrieval.camera_centered`; ``*_camnorm`` figures).
        eval_batch_size: images per forward pass when extracting features.
        device: ``"cpu"``, ``"cuda"``; None = CUDA when available.

    Example:
        >>> DemoConfig.quick().pretrain["arch"], DemoConfig.quick().rounds
        ('test_resnet', 2)
    """

    world: dict = field(default_factory=dict)
    pretrain: dict = field(default_factory=dict)
    denoise: dict = field(default_factory=lambda: {"thresholds": "auto"})
    rounds: int = 2
    seeds: tuple = (0,)
    curve_points: int = 5
    finetune_steps: int = 0
    rerank: bool = True
    camera_norm: bool = True
    eval_batch_size: int = 256
    device: str | None = None

    def __post_init__(self):
        self.seeds = tuple(self.seeds)
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an int >= 1, got {self.rounds!r}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds) \
                or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct ints >= 0, got {self.seeds!r}")
        if isinstance(self.curve_points, bool) or not isinstance(self.curve_points, int) or self.curve_points < 1:
            raise ValueError(f"curve_points must be an int >= 1, got {self.curve_points!r}")
        if isinstance(self.finetune_steps, bool) or not isinstance(self.finetune_steps, int) or self.finetune_steps < 0:
            raise ValueError(f"finetune_steps must be an int >= 0, got {self.finetune_steps!r}")

    @classmethod
    def default(cls) -> "DemoConfig":
        """The default world (32k frames, 600 people, 8 cameras), 1,500 steps per pre-training."""
        return cls(world={}, pretrain=dict(SMALL_BUDGET_RECIPE, steps=1500))

    @classmethod
    def quick(cls) -> "DemoConfig":
        """A small world (60 people, 4 cameras), 300 steps per pre-training."""
        return cls(world=dict(identities=60, train_identities=10, eval_identities=30, cameras=4, videos=6),
                   pretrain=dict(SMALL_BUDGET_RECIPE, steps=300))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


class _Stages:
    """Runs named stages once: a stage whose marker ``out/stages/<name>.json`` exists is skipped
    and its recorded result returned; a stage that raises (or is interrupted) leaves no marker."""

    def __init__(self, out: Path, log: Callable[[str], None]):
        self.out = out
        self.log = log
        self.timings: dict[str, float] = {}
        (out / "stages").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, work: Callable[[], dict]) -> dict:
        marker = self.out / "stages" / f"{name}.json"
        if marker.exists():
            record = json.loads(marker.read_text())
            self.timings[name] = record["seconds"]
            self.log(f"[{name}] done in an earlier run ({record['seconds']:.1f} s): skipped")
            return record["result"]
        self.log(f"[{name}] ...")
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
        self.timings[name] = seconds
        atomic_write_json(marker, {"seconds": seconds, "result": result})
        self.log(f"[{name}] done in {seconds:.1f} s")
        return result


def _quality_table(rows: dict[str, dict]) -> str:
    head = "| level | " + " | ".join(QUALITY_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(QUALITY_COLUMNS) + 1)]
    for level in sorted(rows, key=lambda name: (name != "tracker", name)):  # tracker, level1, level2, ...
        values = rows[level]
        cells = [f"{values[c]:.3f}" if isinstance(values[c], float) else str(values[c]) for c in QUALITY_COLUMNS]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _methods_table(methods: dict[str, dict]) -> str:
    present = [m for m in REPORT_METRICS if any(m in v for v in methods.values())]
    lines = ["| method | " + " | ".join(present) + " |", "|" + "---|" * (len(present) + 1)]
    for name, values in methods.items():
        cells = []
        for m in present:
            if m not in values:
                cells.append("—")
            elif len(values.get("seeds", ())) > 1 and f"{m}_std" in values:
                cells.append(f"{100 * values[m]:.1f} ± {100 * values[m + '_std']:.1f}")
            else:
                cells.append(f"{100 * values[m]:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finetuned_section(methods: dict[str, dict]) -> str:
    tuned = {m: v["finetuned"] for m, v in methods.items() if "finetuned" in v}
    if not tuned:
        return ""
    return ("\n### After supervised fine-tuning on the labelled train split (same recipe and steps for every "
            "initialisation, BNNeck feature, %)\n\n" + _methods_table(tuned) + "\n")


def _seed_suffix(seed: int) -> str:
    return "" if seed == 0 else f"_seed{seed}"


def aggregate_seeds(per_seed: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Mean and std (population, ``ddof=0``) over seeds of every scalar metric.

    Example:
        >>> r = aggregate_seeds({0: {"mAP": 0.2}, 1: {"mAP": 0.4}})
        >>> round(r["mAP"], 3), round(r["mAP_std"], 3), r["seeds"]
        (0.3, 0.1, [0, 1])
    """
    seeds = sorted(per_seed)
    keys = [k for k, v in per_seed[seeds[0]].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out: dict[str, Any] = {}
    for key in keys:
        values = np.array([per_seed[s][key] for s in seeds], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    out["seeds"] = seeds
    return out


def ordering_sentence(methods: dict[str, dict], metric: str = "mAP", label: str = "plain mAP") -> str:
    """One sentence: does the claimed order random < DINO < tracklet < CION hold, and by how much
    (each gap against the larger std of the pair)?

    Example:
        >>> ordering_sentence({"random": {"mAP": 0.05, "mAP_std": 0.01}, "cion": {"mAP": 0.30, "mAP_std": 0.02}})
        'random < cion holds on plain mAP: random 5.0 < cion 30.0 (gap 25.0, 12.5x the larger std).'
    """
    present = [m for m in CLAIMED_ORDER if m in methods and metric in methods[m]]
    if len(present) < 2:
        return f"(the ordering needs at least two of {', '.join(CLAIMED_ORDER)})"
    parts, holds = [], True
    for low, high in zip(present, present[1:]):
        gap = methods[high][metric] - methods[low][metric]
        std = max(methods[low].get(f"{metric}_std", 0.0), methods[high].get(f"{metric}_std", 0.0))
        clear = gap > std
        holds = holds and clear
        ratio = f", {gap / std:.1f}x the larger std" if std > 0 else ""
        parts.append(f"{low} {100 * methods[low][metric]:.1f} {'<' if gap > 0 else '>='} {high} "
                     f"{100 * methods[high][metric]:.1f} (gap {100 * gap:.1f}{ratio})")
    verdict = "holds" if holds else "does NOT hold"
    return f"{' < '.join(present)} {verdict} on {label}: " + "; ".join(parts) + "."


def run_demo(out: str | os.PathLike, config: DemoConfig | None = None, progress: bool = True,
             log: Callable[[str], None] = print, methods: tuple[str, ...] = DEMO_METHODS) -> dict:
    """Runs (or resumes) the demo in ``out`` and returns the report dict (also in ``out/report.json``).

    Args:
        out: run directory; re-running with the same directory skips finished stages.
        config: :class:`DemoConfig` (default: :meth:`DemoConfig.default`).
        progress: progress bars on long steps.
        log: where stage messages go.
        methods: which of :data:`METHODS` to train and evaluate (``cion-fast compare``: all).

    Returns:
        the report: ``{"denoise": {level: quality of the round CION trains on, seed 0},
        "denoise_rounds": [{"round", "bcubed_f", "bcubed_f_std", "thresholds", "separation",
        "used_by_seeds", "seeds"}], "methods": {name: {metric:
        mean over seeds, metric_std, "seeds": [...]}}, "ordering": sentence, "curves": {name:
        {"steps", "mAP", "mAP_std"}}, "config": {...}, "timings": {...}, "pretrain": {method:
        {...}}}``; ``config["methods"]`` lists the methods in the order of :data:`METHODS`.

    Raises:
        ValueError: an unknown method.
        KeyboardInterrupt: on Ctrl-C; finished stages (and pre-training checkpoints) are kept.
    """
    from cion_fast.data import Tracklets, read_market1501
    from cion_fast.data.synth import WorldConfig, generate

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {', '.join(METHODS)}, got {list(methods)}")
    methods = tuple(m for m in METHODS if m in methods)
    config = config or DemoConfig.default()
    out = Path(out)
    stages = _Stages(out, log)
    world_dir = out / "world"
    train_size = tuple(config.pretrain.get("multicrop", {}).get("global_size", (256, 128)))

    def make_world() -> dict:
        world = generate(WorldConfig(**config.world) if config.world else WorldConfig())
        world.save(world_dir, overwrite=True)
        return world.summary()

    world_summary = stages.run("world", make_world)
    tracklets = Tracklets.load(world_dir / "tracklets")
    market = read_market1501(world_dir / "market", load_images=True)
    frame_video = tracklets.video[tracklets.tracklet_of_frame]

    def stripe_features() -> dict:
        from cion_fast.features import stripe_histogram
        from cion_fast.features.io import save_features

        features = stripe_histogram(np.asarray(tracklets.frames))
        save_features(out / "features.npz", features, tracklets, model="stripe")
        return {"dim": int(features.shape[1]), "frames": int(features.shape[0])}

    def learned_features(checkpoint: str, path: Path) -> Callable[[], dict]:
        def work() -> dict:
            from cion_fast.evaluate import extract_features
            from cion_fast.features.io import save_features
            from cion_fast.models import load_pretrained

            features = extract_features(load_pretrained(checkpoint), tracklets, batch_size=config.eval_batch_size,
                                        device=config.device, progress=progress, size=train_size)
            save_features(path, features, tracklets, model=f"checkpoint:{checkpoint}")
            return {"dim": int(features.shape[1]), "frames": int(features.shape[0]), "checkpoint": checkpoint}
        return work

    def denoise_stage(features_path: Path, out_dir: Path) -> Callable[[], dict]:
        def work() -> dict:
            from cion_fast.denoise import DenoiseConfig, denoise, quality
            from cion_fast.denoise.io import write_denoise_output
            from cion_fast.features.io import load_features

            features = load_features(features_path).features
            result = denoise(features, tracklets.offsets, tracklets.video, tracklets.frame_index,
                             DenoiseConfig(**config.denoise), progress=progress)
            # Ground truth only measures the result; nothing above read it.
            rows = {"tracker": quality(tracklets.tracklet_of_frame, tracklets.identity, frame_video)}
            for level, labels in enumerate(result.levels, start=1):
                rows[f"level{level}"] = quality(labels, tracklets.identity, frame_video)
            write_denoise_output(out_dir, result, rows, overwrite=True)
            thresholds = {k: getattr(result.config, k) for k in
                          ("prune_threshold", "reallocation_threshold", "merge_threshold", "link_threshold")}
            separation = (result.calibration or {}).get("separation", {}).get("centroid_auc")
            return {"quality": {name: dataclasses.asdict(q) for name, q in rows.items()}, "thresholds": thresholds,
                    "separation": separation}
        return work

    def pretrain_stage(method: str, seed: int, labels_path: Path | None, run_dir: Path) -> Callable[[], dict]:
        def work() -> dict:
            from cion_fast.pretrain import PretrainConfig, pretrain
            from cion_fast.training import list_checkpoints

            labels = {"denoised": lambda: np.load(labels_path),
                      "tracker": lambda: np.asarray(tracklets.tracklet_of_frame),
                      None: lambda: None}[PRETRAINED_METHODS[method][1]]()
            # One shared recipe for every method (PretrainConfig drops the local views UP-ReID never
            # uses); checkpoints kept for the learning curve.
            steps = config.pretrain["steps"]
            every = max(1, steps // config.curve_points)
            cfg = PretrainConfig(**{**config.pretrain, "method": PRETRAINED_METHODS[method][0], "seed": seed,
                                    "device": config.device, "progress": progress, "checkpoint_every": every,
                                    "keep_checkpoints": config.curve_points + 1})
            result = pretrain(cfg, np.asarray(tracklets.frames), labels, run_dir, resume=bool(list_checkpoints(run_dir)))
            if result.get("interrupted"):
                raise KeyboardInterrupt
            return {**{k: (str(v) if isinstance(v, Path) else v) for k, v in result.items()}, "run_dir": str(run_dir)}
        return work

    # ---- denoising rounds (round 1 on the stripe descriptor; later rounds per seed)
    stages.run("features", stripe_features)
    first_round = stages.run("denoise", denoise_stage(out / "features.npz", out / "denoise"))
    round_results = {1: {seed: first_round for seed in config.seeds}}
    labels_dir = {seed: out / "denoise" for seed in config.seeds}
    in_use = {seed: (1, round_results[1][seed]) for seed in config.seeds}  # (round, result) whose labels CION trains on
    round_runs: dict[tuple[int, int], dict] = {}  # (round, seed) -> the CION pre-training on that round's identities
    needs_cion = "cion" in methods
    for r in range(2, config.rounds + 1 if needs_cion else 1):
        round_results[r] = {}
        for seed in config.seeds:
            tag = f"round{r - 1}{_seed_suffix(seed)}"
            previous = stages.run(f"pretrain_cion_{tag}", pretrain_stage("cion", seed, labels_dir[seed] / "labels.npy",
                                                                         out / f"pretrain_cion_{tag}"))
            round_runs[(r - 1, seed)] = previous
            tag = f"round{r}{_seed_suffix(seed)}"
            stages.run(f"features_{tag}", learned_features(previous["checkpoint"], out / f"features_{tag}.npz"))
            result = stages.run(f"denoise_{tag}", denoise_stage(out / f"features_{tag}.npz", out / f"denoise_{tag}"))
            round_results[r][seed] = result
            # Label-free model selection: a round's identities replace the previous ones only when its
            # features separate the tracker's positives from its certain negatives better (AUC).
            if _better_separation(result, in_use[seed][1]):
                labels_dir[seed], in_use[seed] = out / f"denoise_{tag}", (r, result)
    denoise_rounds = []
    for r, by_seed in round_results.items():
        scores = np.array([by_seed[s]["quality"]["level3"]["bcubed_f"] for s in config.seeds])
        denoise_rounds.append({"round": r, "bcubed_f": float(scores.mean()), "bcubed_f_std": float(scores.std()),
                               "thresholds": by_seed[config.seeds[0]]["thresholds"],
                               "separation": by_seed[config.seeds[0]].get("separation"),
                               "seeds": {str(s): {"bcubed_f": by_seed[s]["quality"]["level3"]["bcubed_f"],
                                                  "thresholds": by_seed[s]["thresholds"],
                                                  "separation": by_seed[s].get("separation"),
                                                  "used": in_use[s][0] == r} for s in config.seeds},
                               "used_by_seeds": sum(in_use[s][0] == r for s in config.seeds)})
        used = denoise_rounds[-1]["used_by_seeds"]
        log(f"denoising round {r}: BCubed F {scores.mean():.3f} (separation AUC {by_seed[config.seeds[0]].get('separation')}, "
            f"thresholds {by_seed[config.seeds[0]]['thresholds']}); CION trains on it for {used} of {len(config.seeds)} seeds")
    last_round = in_use[config.seeds[0]][1]["quality"]
    log("denoising quality against ground truth (the round CION trains on, seed 0):\n" + _quality_table(last_round))

    # ---- pre-training of every method and seed
    pretrained = {}
    for m in methods:
        if m not in PRETRAINED_METHODS:
            continue
        for seed in config.seeds:
            name = f"{m}{_seed_suffix(seed)}"
            earlier = round_runs.get((in_use[seed][0], seed)) if m == "cion" else None
            if earlier is not None:  # the same recipe, seed and identities already trained in a round: reuse it
                pretrained[name] = stages.run(f"pretrain_{name}", lambda earlier=earlier: {**earlier, "reused": True})
            else:
                pretrained[name] = stages.run(f"pretrain_{name}", pretrain_stage(m, seed, labels_dir[seed] / "labels.npy",
                                                                                 out / f"pretrain_{name}"))

    query, gallery = market.query, market.gallery
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    (out / "eval").mkdir(exist_ok=True)

    def evaluate_stage(method: str, seed: int) -> Callable[[], dict]:
        def work() -> dict:
            import torch

            from cion_fast.evaluate.retrieval import evaluate_features, evaluate_model
            from cion_fast.features import stripe_histogram
            from cion_fast.models import build_backbone, load_pretrained
            from cion_fast.training import list_checkpoints

            options = dict(metric="cosine", rerank=config.rerank, camera_norm=config.camera_norm)
            extract = dict(batch_size=config.eval_batch_size, device=config.device, size=train_size)
            name = f"{method}{_seed_suffix(seed)}"
            if method == "stripe":
                q, g = stripe_histogram(query.images), stripe_histogram(gallery.images)
                metrics = evaluate_features(q, g, *ids, **options)
            elif method == "random":
                torch.manual_seed(seed)  # the trainer's initialisation for this seed
                model = build_backbone(config.pretrain.get("arch", "resnet50"))
                metrics, (q, g) = evaluate_model(model, query, gallery, **extract, **options)
            else:
                checkpoint = pretrained[name]["checkpoint"]
                metrics, (q, g) = evaluate_model(load_pretrained(checkpoint), query, gallery, **extract, **options)
                student, _ = evaluate_model(load_pretrained(checkpoint, network="student"), query, gallery, **extract,
                                            metric="cosine")
                metrics["student_mAP"], metrics["student_rank1"] = student["mAP"], student["rank1"]
                curve = []
                for path in list_checkpoints(pretrained[name].get("run_dir", out / f"pretrain_{name}")):
                    step = int(path.name.split("-")[-1])
                    at_step, _ = evaluate_model(load_pretrained(path), query, gallery, **extract, metric="cosine")
                    curve.append([step, at_step["mAP"]])
                metrics["curve"] = curve
            np.savez(out / "eval" / f"{name}.npz", query=q, gallery=g)
            return metrics
        return work

    def finetune_stage(method: str, seed: int) -> Callable[[], dict]:
        def work() -> dict:
            from cion_fast.finetune import FinetuneConfig, evaluate_finetuned, finetune
            from cion_fast.training import list_checkpoints

            name = f"{method}{_seed_suffix(seed)}"
            run_dir = out / f"finetune_{name}"
            # last_stride=None: the pre-trained backbones' own architecture, for random init too.
            cfg = FinetuneConfig(arch=config.pretrain.get("arch", "resnet50"), last_stride=None, image_size=train_size,
                                 init="random" if method == "random" else pretrained[name]["checkpoint"], batch_size=32,
                                 steps=config.finetune_steps, seed=seed, device=config.device, progress=progress,
                                 checkpoint_every=config.finetune_steps)
            if finetune(cfg, market.train, run_dir, resume=bool(list_checkpoints(run_dir)))["interrupted"]:
                raise KeyboardInterrupt
            metrics = evaluate_finetuned(run_dir, query, gallery, device=config.device, batch_size=config.eval_batch_size,
                                         camera_norm=config.camera_norm)["bnneck"]
            return {k: v for k, v in metrics.items() if not k.startswith("cmc")}
        return work

    per_seed = {m: {seed: stages.run(f"evaluate_{m}{_seed_suffix(seed)}", evaluate_stage(m, seed))
                    for seed in (config.seeds[:1] if m == "stripe" else config.seeds)} for m in methods}
    if config.finetune_steps:
        for m in methods:
            if m == "stripe":
                continue
            for seed in config.seeds:
                tuned = stages.run(f"finetune_{m}{_seed_suffix(seed)}", finetune_stage(m, seed))
                per_seed[m][seed] = {**per_seed[m][seed], **{f"finetuned_{k}": v for k, v in tuned.items()}}
    results = {m: runs[config.seeds[0]] for m, runs in per_seed.items()}  # seed 0's CMC curves for the plots
    summary = {m: _nest_finetuned(aggregate_seeds({s: {k: v for k, v in r.items() if not k.startswith("cmc") and k != "curve"}
                                                   for s, r in runs.items()})) for m, runs in per_seed.items()}
    curves = _learning_curves(per_seed)
    ordering = ordering_sentence(summary)
    if config.finetune_steps:
        tuned = {m: v["finetuned"] for m, v in summary.items() if "finetuned" in v}
        ordering += " Fine-tuned: " + ordering_sentence(tuned, label=f"plain mAP after {config.finetune_steps} fine-tuning steps")
    log("retrieval on the held-out query/gallery (%):\n" + _methods_table(summary) + "\n" + ordering)

    report = {
        "denoise": last_round,
        "denoise_rounds": denoise_rounds,
        "methods": summary,
        "ordering": ordering,
        "curves": curves,
        "config": {"demo": config.to_dict(), "world": world_summary, "methods": list(methods)},
        "timings": dict(stages.timings),
        "pretrain": {m: {k: r.get(k) for k in ("step", "loss", "images_per_s", "view_share", "k", "run_dir", "reused")}
                     for m, r in pretrained.items()},
    }
    write_report(out, report, results, market)
    atomic_write_json(out / "report.json", report)
    return report


def _nest_finetuned(values: dict[str, Any]) -> dict[str, Any]:
    """Moves the ``finetuned_*`` figures (and their ``_std``) into ``values["finetuned"]``."""
    tuned = {k[len("finetuned_"):]: v for k, v in values.items() if k.startswith("finetuned_")}
    out = {k: v for k, v in values.items() if not k.startswith("finetuned_")}
    if tuned:
        out["finetuned"] = {**tuned, "seeds": values["seeds"]}
    return out


def _better_separation(candidate: dict, current: dict) -> bool:
    """Whether a denoising round's features separate positives from certain negatives better
    (centroid AUC; fixed thresholds have no AUC: the later round is taken)."""
    new, old = candidate.get("separation"), current.get("separation")
    return new is None or old is None or new > old


def _learning_curves(per_seed: dict[str, dict[int, dict]]) -> dict[str, dict[str, list]]:
    """name -> {"steps", "mAP", "mAP_std"}: plain mAP over steps, mean and std over seeds; step 0
    is the random initialisation of the same seed (the trainer's)."""
    curves = {}
    for method, runs in per_seed.items():
        if not all("curve" in r for r in runs.values()):
            continue
        steps = sorted(set.intersection(*(set(step for step, _ in r["curve"]) for r in runs.values())))
        rows = []
        for seed, r in runs.items():
            at = dict((step, value) for step, value in r["curve"])
            start = per_seed["random"][seed]["mAP"] if "random" in per_seed and seed in per_seed["random"] else None
            rows.append(([start] if start is not None else []) + [at[s] for s in steps])
        values = np.array(rows, dtype=np.float64)
        all_steps = ([0] if values.shape[1] > len(steps) else []) + steps
        curves[method] = {"steps": all_steps, "mAP": values.mean(0).tolist(), "mAP_std": values.std(0).tolist()}
    return curves


def _loss_curves(runs: dict[str, Path]) -> dict[str, tuple[list, list]]:
    """name -> (steps, losses) from each pre-training run directory's ``log.jsonl``."""
    curves = {}
    for method, run_dir in runs.items():
        log_path = Path(run_dir) / "log.jsonl"
        if log_path.exists():
            rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if "loss" in r and "step" in r]
            if rows:
                curves[method] = ([r["step"] for r in rows], [r["loss"] for r in rows])
    return curves


def write_report(out: Path, report: dict, methods: dict, market: Any) -> None:
    """Plots + ``report.md`` + ``report.html`` for a demo report (``report.json`` written by the caller)."""
    from cion_fast.evaluate import plots
    from cion_fast.evaluate.retrieval import top_k_gallery

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    quality_groups = {level: {"purity": row["purity"], "pairwise F1": row["pairwise_f1"], "BCubed F": row["bcubed_f"]}
                      for level, row in sorted(report["denoise"].items(), key=lambda item: (item[0] != "tracker", item[0]))}
    shown_metrics = {"mAP": "mAP", "rank1": "Rank-1", "mAP_rerank": "mAP (re-ranked)", "mAP_camnorm": "mAP (camera-normalised)"}
    method_groups = {name: {label: 100 * values[key] for key, label in shown_metrics.items() if key in values}
                     for name, values in report["methods"].items()}
    paths = {
        "denoise": plots.plot_bars(quality_groups, figures / "denoise_quality.png", "denoising quality (ground truth)"),
        "methods": plots.plot_bars(method_groups, figures / "methods.png", "retrieval on held-out identities (frozen features)", "%"),
        "cmc": plots.plot_cmc({name: values["cmc"] for name, values in methods.items()}, figures / "cmc.png"),
        **({"cmc_camnorm": plots.plot_cmc({name: values["cmc_camnorm"] for name, values in methods.items()},
                                          figures / "cmc_camnorm.png", title="CMC, camera-normalised features")} if all("cmc_camnorm" in v for v in methods.values()) else {}),
    }
    first_seed = report["config"]["demo"]["seeds"][0]
    curves = _loss_curves({name: r.get("run_dir") or out / f"pretrain_{name}" for name, r in report["pretrain"].items()
                           if "_seed" not in name})
    if curves:
        paths["loss"] = plots.plot_curves(curves, figures / "pretrain_loss.png", "pre-training loss", "loss")
    if report.get("curves"):
        bands = {name: (c["steps"], [100 * v for v in c["mAP"]], [100 * v for v in c["mAP_std"]]) for name, c in report["curves"].items()}
        seeds = len(report["config"]["demo"]["seeds"])
        paths["learning"] = plots.plot_bands(bands, figures / "learning_curves.png",
                                             f"held-out plain mAP during pre-training (mean ± std, {seeds} seed{'s' * (seeds > 1)})", "mAP (%)")
    shown = "cion" if "cion" in methods else list(methods)[-1]
    features = np.load(out / "eval" / f"{shown}{_seed_suffix(first_seed)}.npz")
    rows = np.arange(min(8, len(market.query)))
    ranked = top_k_gallery(features["query"][rows], features["gallery"], top_k=10)
    hits = market.gallery.pids[ranked] == market.query.pids[rows, None]
    paths["grid"] = plots.plot_retrieval_grid(market.query.images[rows], market.gallery.images, ranked, hits,
                                              figures / "retrieval_grid.png")

    timings = "\n".join(f"| {k} | {v:.1f} |" for k, v in report["timings"].items())
    loss_figure = f"![pre-training loss](figures/{paths['loss'].name})" if "loss" in paths else ""
    learning_figure = f"![learning curves](figures/{paths['learning'].name})" if "learning" in paths else ""
    rounds = "\n".join(f"| {r['round']} | {r['bcubed_f']:.3f} ± {r['bcubed_f_std']:.3f} | {r.get('separation')} | "
                       + ", ".join(f"{k.split('_')[0]} {v:.3f}" for k, v in r["thresholds"].items())
                       + f" | {r.get('used_by_seeds', '')} |" for r in report.get("denoise_rounds", []))
    camnorm_figure = f"![CMC, camera-normalised](figures/{paths['cmc_camnorm'].name})" if "cmc_camnorm" in paths else ""
    markdown = f"""# cion_fast demo report

## Denoising rounds (thresholds chosen from the data; ground truth only measures)

| round | BCubed F (last level) | separation AUC (label-free) | thresholds | seeds training CION on it |
|---|---|---|---|---|
{rounds}

A round's identities are used only when its features separate the tracker's positives (frames of
one tracklet) from its certain negatives (tracklets sharing a frame) better than the previous
round's. The round CION trains on, per level:

{_quality_table(report["denoise"])}

![denoising quality](figures/{paths["denoise"].name})

## Retrieval on held-out identities (frozen features, %)

{_methods_table(report["methods"])}

**{report.get("ordering", "")}**
{_finetuned_section(report["methods"])}

`student_*`: the student network of the same run (the exported network is the teacher for
DINO / tracklet / CION, the query encoder for UP-ReID).

{learning_figure}

![methods](figures/{paths["methods"].name})

![CMC](figures/{paths["cmc"].name}) {camnorm_figure}

`*_camnorm`: the same features after test-time camera normalisation (each camera's mean feature
subtracted; label-free but transductive, see `cion_fast.evaluate.retrieval.camera_centered`).

{loss_figure}

![retrieval grid: {shown} features, green = same identity](figures/{paths["grid"].name})

## Timings (s)

| stage | seconds |
|---|---|
{timings}
"""
    (out / "report.md").write_text(markdown)
    images = "".join(f'<figure><img src="figures/{p.name}"><figcaption>{html.escape(k)}</figcaption></figure>' for k, p in paths.items())
    body = "".join(f"<pre>{html.escape(block)}</pre>" for block in (_quality_table(report["denoise"]), _methods_table(report["methods"]),
                                                                    report.get("ordering", "")))
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>cion_fast demo report</title>"
        f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}</style></head>"
        f"<body><h1>cion_fast demo report</h1>{body}{images}</body></html>"
    )
