"""The demo's stages, each a function of the run and its typed inputs. Every stage's output lies at
``out/<stage name>`` (``.npz`` for features and evaluations under ``out/eval``)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cion_fast._demo.config import PRETRAINED_METHODS, DemoConfig
from cion_fast._demo.report import seed_suffix
from cion_fast._demo.stages import Stages
from cion_fast._io import atomic_write


@dataclass
class DemoRun:
    """A run directory, its config and its stages; the world is read once the world stage ran."""

    out: Path
    config: DemoConfig
    stages: Stages
    progress: bool
    log: Callable[[str], None]

    @functools.cached_property
    def tracklets(self) -> Any:
        from cion_fast.data import Tracklets

        return Tracklets.load(self.out / "world" / "tracklets")

    @functools.cached_property
    def market(self) -> Any:
        from cion_fast.data import read_market1501

        return read_market1501(self.out / "world" / "market", load_images=True)

    @functools.cached_property
    def train_size(self) -> tuple[int, int]:
        """The pre-training's global view size (the trainer's own multicrop config): the size every
        network sees at evaluation."""
        from cion_fast.ops import MultiCropConfig

        return tuple(MultiCropConfig.cion(**self.config.pretrain.multicrop_overrides()).global_size)

    def path(self, stage: str, key: str = "checkpoint") -> Path:
        """A path a stage recorded (relative to ``out``, so a moved run directory stays whole)."""
        return self.out / self.stages.results[stage][key]


def world(run: DemoRun) -> dict:
    """Stage ``world``: the synthetic world (tracklets + Market-style split) under ``out/world``."""
    from cion_fast.data.synth import generate

    def work() -> dict:
        made = generate(run.config.world)
        made.save(run.out / "world", overwrite=True)
        return made.summary()

    return run.stages.run("world", work, config=run.config.world.to_dict(), outputs=(run.out / "world",))


def stripe_features(run: DemoRun) -> None:
    """Stage ``features``: the training-free stripe descriptor of every frame."""
    from cion_fast.features import stripe_histogram
    from cion_fast.features.io import save_features

    def work() -> dict:
        features = stripe_histogram(np.asarray(run.tracklets.frames))
        save_features(run.out / "features.npz", features, run.tracklets, model="stripe")
        return {"dim": int(features.shape[1]), "frames": int(features.shape[0])}

    run.stages.run("features", work, after=("world",), outputs=(run.out / "features.npz",))


def learned_features(run: DemoRun, name: str, trained: str) -> None:
    """Stage ``name``: every frame's features from the pre-training stage ``trained``'s checkpoint."""
    checkpoint = run.path(trained)

    def work() -> dict:
        from cion_fast.features import extract_features
        from cion_fast.features.io import save_features
        from cion_fast.models import load_pretrained

        features = extract_features(load_pretrained(checkpoint), run.tracklets, batch_size=run.config.eval_batch_size,
                                    device=run.config.device, progress=run.progress, size=run.train_size)
        save_features(run.out / f"{name}.npz", features, run.tracklets, model=f"checkpoint:{checkpoint}")
        return {"dim": int(features.shape[1]), "frames": int(features.shape[0])}

    run.stages.run(name, work, after=("world", trained), outputs=(run.out / f"{name}.npz",))


def denoise(run: DemoRun, name: str, features: str) -> dict:
    """Stage ``name``: the three levels on the features of stage ``features``, into ``out/<name>``
    (:func:`cion_fast.denoise.io.denoise_to_directory`: the CLI's path and report schema)."""
    from cion_fast.denoise.io import THRESHOLD_NAMES, denoise_to_directory
    from cion_fast.features.io import load_features

    def work() -> dict:
        path = run.out / f"{features}.npz"
        done = denoise_to_directory(run.out / name, run.tracklets, load_features(path).features, run.config.denoise,
                                    progress=run.progress, inputs={"features_file": str(path)}, overwrite=True)
        report = done.report
        return {"quality": report["quality"], "thresholds": {k: report["config"][k] for k in THRESHOLD_NAMES},
                "separation": (report["calibration"] or {}).get("separation", {}).get("centroid_auc"),
                "estimate": report["estimate"]}

    return run.stages.run(name, work, config=run.config.denoise.as_dict(), after=(features,), outputs=(run.out / name,))


def pretrain_config(run: DemoRun, method: str, seed: int, recipe: dict | None = None, steps: int | None = None) -> Any:
    """The shared recipe for one method and seed (with a ``recipe``'s overrides,
    :func:`cion_fast._demo.recipes.apply_recipe`, and ``steps`` when given); checkpoints kept for
    the learning curve."""
    from cion_fast._demo.recipes import apply_recipe

    cfg = run.config
    base = apply_recipe(cfg.pretrain, recipe or {})
    steps = steps or base.steps
    return dataclasses.replace(base, method=PRETRAINED_METHODS[method][0], seed=seed, device=cfg.device, steps=steps,
                               progress=run.progress, checkpoint_every=max(1, steps // cfg.curve_points),
                               keep_checkpoints=cfg.curve_points + 1)


def _train(run: DemoRun, name: str, cfg: Any, labels: Any, until_step: int | None = None) -> dict:
    """Pre-trains (or resumes) into ``out/<name>``; Ctrl-C keeps the checkpoints and stops the demo.
    The result's ``run_dir`` and ``checkpoint`` are relative to ``out``."""
    from cion_fast.pretrain import pretrain
    from cion_fast.training import list_checkpoints

    run_dir = run.out / name
    result = pretrain(cfg, np.asarray(run.tracklets.frames), labels, run_dir, resume=bool(list_checkpoints(run_dir)),
                      until_step=until_step)
    if result.get("interrupted"):
        raise KeyboardInterrupt
    checkpoint = str(Path(result["checkpoint"]).relative_to(run.out))
    return {**{k: (str(v) if isinstance(v, Path) else v) for k, v in result.items()}, "run_dir": name, "checkpoint": checkpoint}


def pretrain(run: DemoRun, name: str, method: str, seed: int, identities: str, recipe: dict | None = None,
             steps: int | None = None) -> dict:
    """Stage ``name``: pre-training of ``method`` with ``seed`` (the shared recipe, or it with
    ``recipe``'s overrides; ``steps`` instead of the recipe's); CION on the labels of the denoising
    stage ``identities``, the tracklet baseline on the tracker's ids."""
    cfg = pretrain_config(run, method, seed, recipe, steps)
    kind = PRETRAINED_METHODS[method][1]
    after = ("world",) + ((identities,) if kind == "denoised" else ())
    labels = {"denoised": lambda: np.load(run.out / identities / "labels.npy"),
              "tracker": lambda: np.asarray(run.tracklets.tracklet_of_frame), None: lambda: None}[kind]
    # Every field that changes what is computed; the checkpoint cadence sets the learning curve's points.
    inputs = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "progress")}
    return run.stages.run(name, lambda: _train(run, name, cfg, labels()), config=inputs, after=after,
                          outputs=(run.out / name,))


def random_init(run: DemoRun, seed: int) -> dict:
    """Stage ``pretrain_random[_seed<s>]``: the trainer's own step-0 checkpoint for ``seed`` (every
    method of a seed starts from this backbone: the trainer seeds torch, then builds it)."""
    name = f"pretrain_random{seed_suffix(seed)}"
    cfg = dataclasses.replace(pretrain_config(run, "dino", seed), progress=False)  # no steps: no "pretrain dino 0/N" bar
    inputs = {k: v for k, v in cfg.to_dict().items() if k in ("arch", "last_stride", "ibn", "timm_kwargs", "seed")}
    return run.stages.run(name, lambda: _train(run, name, cfg, None, until_step=0),
                          config={**inputs, "size": list(run.train_size)}, after=("world",), outputs=(run.out / name,))


def validate(run: DemoRun, trained: str) -> dict:
    """Stage ``validate_<trained>``: plain cosine mAP / Rank-1 of stage ``trained``'s exported
    network on the validation split (:func:`cion_fast._demo.recipes.validation_split`: the labelled
    *train* identities, never the held-out query/gallery)."""
    from cion_fast._demo.recipes import validation_split

    def work() -> dict:
        from cion_fast.evaluate.retrieval import evaluate_features
        from cion_fast.features import extract_features
        from cion_fast.models import load_pretrained

        images, pids, camids = validation_split(run.market.train)
        features = extract_features(load_pretrained(run.path(trained)), images, batch_size=run.config.eval_batch_size,
                                    device=run.config.device, size=run.train_size)
        metrics = evaluate_features(features, features, pids, pids, camids, camids, metric="cosine")
        return {"mAP": metrics["mAP"], "rank1": metrics["rank1"], "queries": int(len(pids))}

    return run.stages.run(f"validate_{trained}", work, after=("world", trained))


def search_method(run: DemoRun, method: str, count: int, steps: int, seed: int, identities: str) -> list[dict]:
    """Stages ``search_<method>_<i>`` (and their ``validate_``): ``count`` configurations of
    ``method``'s search space (:func:`cion_fast._demo.recipes.draw_configurations`, the shared
    recipe first), each pre-trained ``steps`` steps with ``seed`` and scored on the validation
    split. One row per configuration: its knobs, validation mAP / Rank-1, whether the run ended
    collapsed (the trainer's monitors), its seconds."""
    from cion_fast._demo.recipes import draw_configurations, knobs_to_overrides

    rows = []
    for index, knobs in enumerate(draw_configurations(method, count, seed)):
        name = f"search_{method}_{index}"
        trained = pretrain(run, name, method, seed, identities, knobs_to_overrides(knobs), steps)
        scores = validate(run, name)
        rows.append({"index": index, "knobs": knobs, "validation_mAP": scores["mAP"], "validation_rank1": scores["rank1"],
                     "collapsed": bool(trained.get("collapse_warnings")), "prototypes": trained.get("prototypes"),
                     "teacher_entropy": trained.get("teacher_entropy"), "seconds": run.stages.timings[name]})
    return rows


def train_tuned(run: DemoRun, methods: tuple[str, ...], in_use: dict[int, str],
                recipes: dict[str, dict]) -> dict[tuple[str, int], str]:
    """Stages ``pretrain_<method>_tuned[_seed<s>]``: each of ``methods`` (all pre-training ones)
    at its own recipe (``recipes``: method -> knobs), same steps and batch as the shared protocol.
    (``<method>_tuned``, seed) -> stage."""
    from cion_fast._demo.recipes import knobs_to_overrides

    stages = {}
    for method in (m for m in methods if m in PRETRAINED_METHODS):
        for seed in run.config.seeds:
            name = stages[(f"{method}_tuned", seed)] = f"pretrain_{method}_tuned{seed_suffix(seed)}"
            pretrain(run, name, method, seed, in_use[seed], knobs_to_overrides(recipes[method]))
    return stages


def is_shared_recipe(run: DemoRun, method: str, knobs: dict) -> bool:
    """Whether ``knobs`` leave ``method``'s shared recipe as it is (the search may keep it)."""
    from cion_fast._demo.recipes import knobs_to_overrides

    seed = run.config.seeds[0]
    return pretrain_config(run, method, seed, knobs_to_overrides(knobs)) == pretrain_config(run, method, seed)


def reuse(run: DemoRun, name: str, earlier: str) -> dict:
    """Stage ``name``: the same recipe, seed and identities already trained as stage ``earlier``."""
    return run.stages.run(name, lambda: {**run.stages.results[earlier], "reused": True}, after=(earlier,))


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` written atomically.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "eval" / "x.npz"
        >>> _save_npz(path, query=np.ones(2))
        >>> np.load(path)["query"].tolist()
        [1.0, 1.0]
    """

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _network_metrics(run: DemoRun, trained: str, options: dict) -> tuple[dict, tuple]:
    """The figures of stage ``trained``'s exported network (and its student's and the learning curve
    for a pre-training past step 0)."""
    from cion_fast.evaluate.retrieval import evaluate_model
    from cion_fast.models import load_pretrained

    extract = dict(batch_size=run.config.eval_batch_size, device=run.config.device, size=run.train_size)
    query, gallery, checkpoint = run.market.query, run.market.gallery, run.path(trained)
    metrics, features = evaluate_model(load_pretrained(checkpoint), query, gallery, **extract, **options)
    if run.stages.results[trained]["step"] > 0:
        student, _ = evaluate_model(load_pretrained(checkpoint, network="student"), query, gallery, **extract, metric="cosine")
        metrics["student_mAP"], metrics["student_rank1"] = student["mAP"], student["rank1"]
        metrics["curve"] = _curve(run, trained, metrics["mAP"], extract)
    return metrics, features


def _curve(run: DemoRun, trained: str, final_map: float, extract: dict) -> list[list]:
    """[step, plain mAP] at every kept checkpoint of stage ``trained`` (the final one is the
    evaluation's own figure, not extracted twice)."""
    from cion_fast.evaluate.retrieval import evaluate_model
    from cion_fast.models import load_pretrained
    from cion_fast.training import list_checkpoints

    curve = []
    for path in list_checkpoints(run.path(trained, "run_dir")):
        step = int(path.name.split("-")[-1])
        if path.name == run.path(trained).name:
            curve.append([step, final_map])
        else:
            at_step, _ = evaluate_model(load_pretrained(path), run.market.query, run.market.gallery, **extract, metric="cosine")
            curve.append([step, at_step["mAP"]])
    return curve


def evaluate(run: DemoRun, method: str, seed: int, trained: str | None) -> dict:
    """Stage ``evaluate_<method>[_seed<s>]``: frozen features of the held-out query/gallery (the
    stripe descriptor, or the network of stage ``trained``); features kept in ``out/eval``."""
    name = f"{method}{seed_suffix(seed)}"
    options = dict(metric="cosine", rerank=run.config.rerank, camera_norm=run.config.camera_norm)
    path = run.out / "eval" / f"{name}.npz"

    def work() -> dict:
        from cion_fast.evaluate.retrieval import evaluate_features
        from cion_fast.features import stripe_histogram

        market = run.market
        if trained is None:
            features = stripe_histogram(market.query.images), stripe_histogram(market.gallery.images)
            metrics = evaluate_features(*features, market.query.pids, market.gallery.pids, market.query.camids,
                                        market.gallery.camids, **options)
        else:
            metrics, features = _network_metrics(run, trained, options)
        _save_npz(path, query=features[0], gallery=features[1])
        return metrics

    after = ("world",) + ((trained,) if trained else ())
    return run.stages.run(f"evaluate_{name}", work, config=options, after=after, outputs=(path,))


def finetune(run: DemoRun, method: str, seed: int, trained: str) -> dict:
    """Stage ``finetune_<method>[_seed<s>]``: supervised fine-tuning on the labelled train split from
    the checkpoint of stage ``trained`` (random init: the trainer's step 0), BNNeck figures."""
    name = f"finetune_{method}{seed_suffix(seed)}"
    steps, camera_norm = run.config.finetune_steps, run.config.camera_norm

    def work() -> dict:
        from cion_fast.finetune import FinetuneConfig, evaluate_finetuned
        from cion_fast.finetune import finetune as tune
        from cion_fast.training import list_checkpoints

        cfg = FinetuneConfig(arch=run.config.pretrain.arch, last_stride=None, image_size=run.train_size,
                             init=str(run.path(trained)), batch_size=32, steps=steps, seed=seed,
                             device=run.config.device, progress=run.progress, checkpoint_every=steps)
        if tune(cfg, run.market.train, run.out / name, resume=bool(list_checkpoints(run.out / name)))["interrupted"]:
            raise KeyboardInterrupt
        metrics = evaluate_finetuned(run.out / name, run.market.query, run.market.gallery, device=run.config.device,
                                     batch_size=run.config.eval_batch_size, camera_norm=camera_norm)["bnneck"]
        return {k: v for k, v in metrics.items() if not k.startswith("cmc")}

    return run.stages.run(name, work, config={"steps": steps, "camera_norm": camera_norm}, after=("world", trained),
                          outputs=(run.out / name,))


def _round_stage(r: int, seed: int) -> str:
    """The denoising stage of round ``r`` for ``seed`` (round 1 is shared by every seed).

    Example:
        >>> _round_stage(1, 3), _round_stage(2, 0), _round_stage(2, 1)
        ('denoise', 'denoise_round2', 'denoise_round2_seed1')
    """
    return "denoise" if r == 1 else f"denoise_round{r}{seed_suffix(seed)}"


def _better_separation(candidate: dict, current: dict) -> bool:
    """Whether a denoising round's features separate positives from certain negatives better
    (centroid AUC; fixed thresholds have no AUC: the later round is taken).

    Example:
        >>> _better_separation({"separation": 0.9}, {"separation": 0.95}), _better_separation({"separation": None}, {})
        (False, True)
    """
    new, old = candidate.get("separation"), current.get("separation")
    return new is None or old is None or new > old


def denoise_rounds(run: DemoRun, rounds: int) -> tuple[dict[int, str], dict[tuple[int, str], str]]:
    """Round 1 denoises the stripe descriptor; round r > 1, per seed, the features of a CION backbone
    pre-trained on the identities in use. A round's identities replace them only when its features
    separate the tracker's positives from its certain negatives better (label-free model selection).

    Returns:
        (seed -> the denoising stage whose identities CION trains on, (seed, denoising stage) -> the
        pre-training stage already trained on those identities).
    """
    stripe_features(run)
    denoise(run, "denoise", "features")
    in_use = {seed: "denoise" for seed in run.config.seeds}
    trained_on = {}
    for r in range(2, rounds + 1):
        for seed in run.config.seeds:
            trained = f"pretrain_cion_round{r - 1}{seed_suffix(seed)}"
            pretrain(run, trained, "cion", seed, in_use[seed])
            trained_on[(seed, in_use[seed])] = trained
            features = f"features_round{r}{seed_suffix(seed)}"
            learned_features(run, features, trained)
            result = denoise(run, _round_stage(r, seed), features)
            if _better_separation(result, run.stages.results[in_use[seed]]):
                in_use[seed] = _round_stage(r, seed)
    return in_use, trained_on


def rounds_table(run: DemoRun, rounds: int, in_use: dict[int, str]) -> list[dict]:
    """One row per denoising round: BCubed F (mean, std over seeds), thresholds and separation of
    seed 0, and how many seeds train CION on it."""
    table, seeds = [], run.config.seeds
    for r in range(1, rounds + 1):
        by_seed = {s: run.stages.results[_round_stage(r, s)] for s in seeds}
        scores = np.array([by_seed[s]["quality"]["level 3"]["bcubed_f"] for s in seeds])
        table.append({"round": r, "bcubed_f": float(scores.mean()), "bcubed_f_std": float(scores.std()),
                      "thresholds": by_seed[seeds[0]]["thresholds"], "separation": by_seed[seeds[0]]["separation"],
                      "seeds": {str(s): {"bcubed_f": by_seed[s]["quality"]["level 3"]["bcubed_f"],
                                         "thresholds": by_seed[s]["thresholds"], "separation": by_seed[s]["separation"],
                                         "used": in_use[s] == _round_stage(r, s)} for s in seeds},
                      "used_by_seeds": sum(in_use[s] == _round_stage(r, s) for s in seeds)})
        run.log(f"denoising round {r}: BCubed F {scores.mean():.3f} (separation AUC {table[-1]['separation']}, "
                f"thresholds {table[-1]['thresholds']}); CION trains on it for {table[-1]['used_by_seeds']} of {len(seeds)} seeds")
    return table


def train_methods(run: DemoRun, methods: tuple[str, ...], in_use: dict[int, str],
                  trained_on: dict[tuple[int, str], str]) -> dict[tuple[str, int], str]:
    """Pre-trains every method that learns (and takes the trainer's step 0 for ``random``) per seed;
    CION on the identities in use, reusing a round's run trained on them. (method, seed) -> stage."""
    stages = {}
    for method in (m for m in methods if m != "stripe"):
        for seed in run.config.seeds:
            name = stages[(method, seed)] = f"pretrain_{method}{seed_suffix(seed)}"
            if method == "random":
                random_init(run, seed)
            elif method == "cion" and (seed, in_use[seed]) in trained_on:
                reuse(run, name, trained_on[(seed, in_use[seed])])
            else:
                pretrain(run, name, method, seed, in_use[seed])
    return stages


def evaluate_methods(run: DemoRun, methods: tuple[str, ...], trained: dict[tuple[str, int], str]) -> dict[str, dict]:
    """method -> seed -> figures: frozen features (the stripe descriptor once), plus ``finetuned_*``
    figures when ``finetune_steps`` is set."""
    seeds = run.config.seeds
    per_seed = {m: {s: evaluate(run, m, s, trained.get((m, s))) for s in (seeds[:1] if m == "stripe" else seeds)}
                for m in methods}
    if run.config.finetune_steps:
        for (method, seed), stage in trained.items():
            tuned = finetune(run, method, seed, stage)
            per_seed[method][seed] = {**per_seed[method][seed], **{f"finetuned_{k}": v for k, v in tuned.items()}}
    return per_seed
