"""``cion-fast demo`` and ``cion-fast compare``: the CION pipeline on the built-in synthetic world.

Stages (each writes its artefacts atomically under ``out/`` and is skipped when they exist, so an
interrupted run resumes where it stopped):

1. ``world``            synthesise the world (``out/world``: tracklets + Market-style split),
2. ``features``         the training-free stripe descriptor of every tracklet frame (``out/features.npz``),
3. ``denoise``          CION's three denoising levels, measured against ground truth (``out/denoise``),
4. ``pretrain_<m>``     pre-training of each method ``m`` that learns (``out/pretrain_<m>``; resumes
                        from its newest checkpoint),
5. ``evaluate_<m>``     frozen features of the held-out query/gallery, with and without k-reciprocal
                        re-ranking (``out/eval/<m>.npz``),
6. report               ``report.json``, ``report.md``, ``report.html`` and PNG plots.

The methods (:data:`METHODS`): ``stripe`` (the training-free descriptor), ``random`` (the backbone
at its random initialisation), ``dino`` (instance-level self-distillation), ``tracklet``
(CION's distillation with the raw tracker ids as identities), ``cion`` (with the denoised
identities) and ``upreid``. The demo runs :data:`DEMO_METHODS`; the comparison runs them all with
the same pre-training budget (steps x batch size) and backbone. A comparison in a demo's directory
reuses everything the demo already finished.
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

REPORT_METRICS = ("mAP", "mINP", "rank1", "rank5", "rank10", "mAP_rerank", "rank1_rerank", "mAP_camnorm", "rank1_camnorm")
QUALITY_COLUMNS = (
    "images_kept", "identities", "purity", "pairwise_precision", "pairwise_recall", "pairwise_f1",
    "bcubed_precision", "bcubed_recall", "bcubed_f", "fragmentation", "cross_video_linked",
)


@dataclass
class DemoConfig:
    """What the demo runs. :meth:`default` (about 10 minutes on a 2-core CPU) and :meth:`quick`
    (about 2 minutes) are the two presets; every field can be overridden.

    Attributes:
        world: :class:`cion_fast.data.synth.WorldConfig` fields (overrides of the preset).
        pretrain: :class:`cion_fast.pretrain.PretrainConfig` fields.
        denoise: :class:`cion_fast.denoise.DenoiseConfig` fields.
        rerank: also evaluate with k-reciprocal re-ranking.
        camera_norm: also evaluate after test-time camera normalisation
            (:func:`cion_fast.evaluate.retrieval.camera_centered`; ``*_camnorm`` figures).
        eval_batch_size: images per forward pass when extracting features.
        device: ``"cpu"``, ``"cuda"``; None = CUDA when available.

    Example:
        >>> DemoConfig.quick().pretrain["arch"]
        'resnet18'
    """

    world: dict = field(default_factory=dict)
    pretrain: dict = field(default_factory=dict)
    denoise: dict = field(default_factory=dict)
    rerank: bool = True
    camera_norm: bool = True
    eval_batch_size: int = 128
    device: str | None = None

    @classmethod
    def default(cls) -> "DemoConfig":
        return cls(world={}, pretrain=dict(_SMALL_TRAINING, steps=100, batch_size=32))

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(
            world=dict(identities=60, train_identities=10, eval_identities=30, cameras=4, videos=6),
            pretrain=dict(
                _SMALL_TRAINING, steps=16, batch_size=16, checkpoint_every=8,
                multicrop={"global_size": (64, 32), "local_size": (32, 16), "n_local": 2},
            ),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# A backbone and views a 2-core CPU trains in minutes: 128 x 64 global views, 2 local views.
_SMALL_TRAINING = dict(
    method="cion",
    arch="resnet18",
    k_values=(2, 4),
    k_boundaries=(0.5,),
    out_dim=4096,
    head_hidden_dim=512,
    head_bottleneck_dim=128,
    base_lr=2e-3,
    checkpoint_every=20,
    multicrop={"global_size": (128, 64), "local_size": (64, 32), "n_local": 2},
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
        lines.append(f"| {name} | " + " | ".join(f"{100 * values[m]:.1f}" if m in values else "—" for m in present) + " |")
    return "\n".join(lines)


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
        the report: ``{"denoise": {...}, "methods": {...}, "config": {...}, "timings": {...},
        "pretrain": {method: {...}}}``; ``config["methods"]`` lists the methods in the order of
        :data:`METHODS`.

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

    stages.run("features", stripe_features)

    def denoise_stage() -> dict:
        from cion_fast.denoise import DenoiseConfig, denoise, quality
        from cion_fast.denoise.io import write_denoise_output
        from cion_fast.features.io import load_features

        features = load_features(out / "features.npz").features
        result = denoise(features, tracklets.offsets, tracklets.video, tracklets.frame_index,
                         DenoiseConfig(**config.denoise), progress=progress)
        rows = {"tracker": quality(tracklets.tracklet_of_frame, tracklets.identity, frame_video)}
        for level, labels in enumerate(result.levels, start=1):
            rows[f"level{level}"] = quality(labels, tracklets.identity, frame_video)
        write_denoise_output(out / "denoise", result, rows, overwrite=True)
        return {name: dataclasses.asdict(q) for name, q in rows.items()}

    denoise_rows = stages.run("denoise", denoise_stage)
    log("denoising quality against ground truth:\n" + _quality_table(denoise_rows))

    def pretrain_stage(method: str) -> dict:
        from cion_fast.pretrain import PretrainConfig, pretrain

        labels = {"denoised": lambda: np.load(out / "denoise" / "labels.npy"),
                  "tracker": lambda: np.asarray(tracklets.tracklet_of_frame),
                  None: lambda: None}[PRETRAINED_METHODS[method][1]]()
        run_dir = out / f"pretrain_{method}"
        # One shared config for every method (PretrainConfig drops the local views UP-ReID never uses).
        cfg = PretrainConfig(**{**config.pretrain, "method": PRETRAINED_METHODS[method][0], "device": config.device,
                                "progress": progress})
        resume = (run_dir / "config.json").exists()
        result = pretrain(cfg, np.asarray(tracklets.frames), labels, run_dir, resume=resume)
        if result.get("interrupted"):
            raise KeyboardInterrupt
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in result.items()}

    pretrained = {m: stages.run(f"pretrain_{m}", lambda m=m: pretrain_stage(m)) for m in methods if m in PRETRAINED_METHODS}

    query, gallery = market.query, market.gallery
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    (out / "eval").mkdir(exist_ok=True)

    def evaluate_stage(method: str) -> dict:
        import torch

        from cion_fast.evaluate.retrieval import evaluate_features, evaluate_model
        from cion_fast.features import stripe_histogram
        from cion_fast.models import build_backbone, load_pretrained

        options = dict(metric="cosine", rerank=config.rerank, camera_norm=config.camera_norm)
        if method == "stripe":
            q, g = stripe_histogram(query.images), stripe_histogram(gallery.images)
            metrics = evaluate_features(q, g, *ids, **options)
        else:
            if method == "random":
                torch.manual_seed(0)
                model = build_backbone(config.pretrain.get("arch", "resnet50"))
            else:
                model = load_pretrained(pretrained[method]["checkpoint"])
            metrics, (q, g) = evaluate_model(model, query, gallery, batch_size=config.eval_batch_size,
                                             device=config.device, **options)
        np.savez(out / "eval" / f"{method}.npz", query=q, gallery=g)
        return metrics

    results = {m: stages.run(f"evaluate_{m}", lambda m=m: evaluate_stage(m)) for m in methods}
    log("retrieval on the held-out query/gallery (%):\n" + _methods_table(results))

    report = {
        "denoise": denoise_rows,
        "methods": {name: {k: v for k, v in values.items() if not k.startswith("cmc")} for name, values in results.items()},
        "config": {"demo": config.to_dict(), "world": world_summary, "methods": list(methods)},
        "timings": dict(stages.timings),
        "pretrain": {m: {k: r.get(k) for k in ("step", "loss", "images_per_s", "view_share", "k")} for m, r in pretrained.items()},
    }
    write_report(out, report, results, market)
    atomic_write_json(out / "report.json", report)
    return report


def _loss_curves(out: Path, methods: list[str]) -> dict[str, tuple[list, list]]:
    """method -> (steps, losses) from each pre-training run's ``log.jsonl``."""
    curves = {}
    for method in methods:
        log_path = out / f"pretrain_{method}" / "log.jsonl"
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
    curves = _loss_curves(out, list(report["pretrain"]))
    if curves:
        paths["loss"] = plots.plot_curves(curves, figures / "pretrain_loss.png", "pre-training loss", "loss")
    shown = "cion" if "cion" in methods else list(methods)[-1]
    features = np.load(out / "eval" / f"{shown}.npz")
    rows = np.arange(min(8, len(market.query)))
    ranked = top_k_gallery(features["query"][rows], features["gallery"], top_k=10)
    hits = market.gallery.pids[ranked] == market.query.pids[rows, None]
    paths["grid"] = plots.plot_retrieval_grid(market.query.images[rows], market.gallery.images, ranked, hits,
                                              figures / "retrieval_grid.png")

    timings = "\n".join(f"| {k} | {v:.1f} |" for k, v in report["timings"].items())
    loss_figure = f"![pre-training loss](figures/{paths['loss'].name})" if "loss" in paths else ""
    camnorm_figure = f"![CMC, camera-normalised](figures/{paths['cmc_camnorm'].name})" if "cmc_camnorm" in paths else ""
    markdown = f"""# cion_fast demo report

## Denoising quality (against the synthetic world's ground truth)

{_quality_table(report["denoise"])}

![denoising quality](figures/{paths["denoise"].name})

## Retrieval on held-out identities (frozen features, %)

{_methods_table(report["methods"])}

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
    body = "".join(f"<pre>{html.escape(block)}</pre>" for block in (_quality_table(report["denoise"]), _methods_table(report["methods"])))
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>cion_fast demo report</title>"
        f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}</style></head>"
        f"<body><h1>cion_fast demo report</h1>{body}{images}</body></html>"
    )
