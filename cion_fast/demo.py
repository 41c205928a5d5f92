"""``cion-fast demo`` and ``cion-fast compare``: the CION pipeline on the built-in synthetic world.

Stages (each writes its artefacts atomically under ``out/``; a stage is keyed by what it was computed
from, its config slice and the stages it reads: an unchanged one is reused, a changed one runs again
with everything downstream, an interrupted one resumes; the log says which and why,
:mod:`cion_fast._demo.stages`):

1. ``world``                 synthesise the world (``out/world``: tracklets + Market-style split),
2. ``features``              the training-free stripe descriptor of every tracklet frame (``out/features.npz``),
3. ``denoise``               CION's three denoising levels on them, thresholds chosen from the data
                             (``thresholds="auto"``; ground truth only measures the result) (``out/denoise``),
4. further rounds (``rounds``, default 2; 1 with ``--quick``): ``pretrain_cion_round<r>`` pre-trains CION
   on the identities in use (the best-separating round so far), ``features_round<r+1>`` re-extracts every frame with that backbone and
   ``denoise_round<r+1>`` denoises again: learned features refine the identities,
5. ``pretrain_<m>``          pre-training of each method ``m`` that learns (``out/pretrain_<m>``; CION on
                             the identities in use, the best-separating round's; resumes from its newest checkpoint),
6. ``evaluate_<m>``          frozen features of the held-out query/gallery at the training size, with and
                             without k-reciprocal re-ranking and camera normalisation, for the exported
                             network and the student, plus plain mAP at every kept checkpoint (the
                             learning curve) (``out/eval/<m>.npz``),
7. ``finetune_<m>``          with ``finetune_steps``: supervised fine-tuning of every backbone on the
                             labelled train split (``out/finetune_<m>``),
8. report                    ``report.json``, ``report.md``, ``report.html`` (written atomically) and PNG
                             plots; the verdict sets CION against every baseline of the table.

With ``recipes`` (``cion-fast compare``'s second protocol) steps 5-7 run again for every method
whose recipe is not the shared one, as ``pretrain_<m>_tuned``, ``evaluate_<m>_tuned`` and
``finetune_<m>_tuned``. The recipe search (:func:`run_search`, ``cion-fast search``) adds
``search_<m>_<i>`` (pre-training of configuration ``i``) and ``validate_search_<m>_<i>``.

With several ``seeds`` every pre-training (and every round after the first) runs once per seed,
stage names gaining ``_seed<s>`` for s > 0, and the report gives mean and std over seeds.

The methods (:data:`METHODS`): ``stripe`` (the training-free descriptor), ``random`` (the backbone
at its random initialisation: the trainer's own step 0, shared by every pre-training of the seed,
``out/pretrain_random``), ``dino``
(instance-level self-distillation), ``tracklet`` (CION's distillation with the raw tracker ids as
identities), ``cion`` (with the denoised identities) and ``upreid``. The demo runs
:data:`DEMO_METHODS`; the comparison runs them all with the same recipe and budget (steps x batch
size, backbone, views, schedules). A comparison in a demo's directory reuses everything the demo
already finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from cion_fast._checks import check_int
from cion_fast._demo.config import DEMO_METHODS, METHODS, PRETRAINED_METHODS, SMALL_BUDGET_RECIPE, DemoConfig
from cion_fast._demo.recipes import SEARCH_SEED, SEARCH_SPACES, TUNED_RECIPES, check_recipes, draw_configurations
from cion_fast._demo.report import (CLAIMED_ORDER, aggregate_seeds, baselines_sentence, headline, methods_table,
                                    nest_finetuned, ordering_sentence, quality_table, verdict, write_report)

__all__ = ["CLAIMED_ORDER", "DEMO_METHODS", "METHODS", "PRETRAINED_METHODS", "SEARCH_SPACES", "SMALL_BUDGET_RECIPE",
           "TUNED_RECIPES", "DemoConfig", "aggregate_seeds", "baselines_sentence", "ordering_sentence", "run_demo",
           "run_search"]

_PRETRAIN_FIELDS = ("step", "loss", "images_per_s", "view_share", "k", "reused", "teacher_entropy", "prototypes",
                    "collapse_warnings")


def run_demo(out: str | os.PathLike, config: DemoConfig | None = None, progress: bool = True,
             log: Callable[[str], None] = print, methods: tuple[str, ...] = DEMO_METHODS,
             recipes: dict[str, dict] | None = None) -> dict:
    """Runs (or resumes) the demo in ``out`` and returns the report dict (also in ``out/report.json``).

    Args:
        out: run directory; re-running reuses every stage whose inputs did not change.
        config: :class:`DemoConfig` (default: :meth:`DemoConfig.default`).
        progress: progress bars on long steps.
        log: where stage messages go.
        methods: which of :data:`METHODS` to train and evaluate (``cion-fast compare``: all).
        recipes: None, or method -> knobs (:data:`TUNED_RECIPES`, or a search's ``chosen``): then
            every method that pre-trains is also trained at its own recipe with the same steps and
            batch (``pretrain_<m>_tuned``), evaluated the same way, and the report gains
            ``"tuned": {"recipes", "own_runs", "methods", "verdict", "curves"}`` beside the shared
            recipe's (``own_runs``: the methods whose recipe is not the shared one; the others'
            rows are the shared protocol's runs).

    Returns:
        the report: ``{"denoise": {"tracklets" / level name: quality of the round CION trains on,
        seed 0}, "estimate": its label-free estimate (or None), "denoise_rounds": [{"round",
        "bcubed_f", "bcubed_f_std", "thresholds", "separation", "used_by_seeds", "seeds"}],
        "methods": {name: {metric: mean over seeds, metric_std, "seeds": [...]}}, "verdict": the
        ordering sentence, then CION against every baseline, "headline": one line over every table
        of the report (:func:`cion_fast._demo.report.headline`), "curves": {name:
        {"steps", "mAP", "mAP_std"}}, "config": {...}, "timings": {...}, "pretrain": {method:
        {...}}}``; ``config["methods"]`` lists the methods in the order of :data:`METHODS`.

    Raises:
        ValueError: an unknown method.
        KeyboardInterrupt: on Ctrl-C; finished stages (and pre-training checkpoints) are kept.

    Example (the stripe descriptor alone on a tiny world: nothing trains):
        >>> import tempfile
        >>> from dataclasses import replace
        >>> from cion_fast.data.synth import WorldConfig
        >>> world = WorldConfig.quick(identities=30, train_identities=5, eval_identities=20, cameras=3, videos=4)
        >>> tiny, out, said = replace(DemoConfig.quick(), world=world), tempfile.mkdtemp(), []
        >>> report = run_demo(out, tiny, progress=False, log=said.append, methods=("stripe",))
        >>> said[0], sorted(report["denoise"])
        ('[world] computing: not run before', ['level 1', 'level 2', 'level 3', 'tracklets'])
        >>> said.clear()
        >>> _ = run_demo(out, replace(tiny, rerank=False), progress=False, log=said.append, methods=("stripe",))
        >>> [m[: m.index("]") + 1] for m in said if "] done in" in m]  # only what the change touches runs again
        ['[evaluate_stripe]']
    """
    from cion_fast._demo import run as pipeline
    from cion_fast._demo.stages import Stages

    methods = _checked_methods(methods)
    if recipes is not None:  # a missing or unknown recipe fails before anything runs
        check_recipes(recipes, "recipes")
        missing = [m for m in methods if m in PRETRAINED_METHODS and m not in recipes]
        if missing:
            raise ValueError(f"recipes has no recipe for {', '.join(missing)}")
    config = config or DemoConfig.default()
    run = pipeline.DemoRun(Path(out), config, Stages(Path(out), log), progress, log)
    world = pipeline.world(run)
    rounds = config.rounds if "cion" in methods else 1
    in_use, trained_on = pipeline.denoise_rounds(run, rounds)
    trained = pipeline.train_methods(run, methods, in_use, trained_on)
    per_seed = pipeline.evaluate_methods(run, methods, trained)
    report = _report(run, methods, per_seed, in_use, world, pipeline.rounds_table(run, rounds, in_use), trained)
    log("retrieval on the held-out query/gallery (%):\n" + methods_table(report["methods"]) + "\n" + report["verdict"])
    if recipes is not None:
        report["tuned"] = _tuned_protocol(run, methods, per_seed, in_use, recipes)
        report["pretrain"].update(report["tuned"].pop("pretrain"))
        report["timings"] = dict(run.stages.timings)  # the second protocol's stages too
        log("each method at its own recipe (%):\n" + methods_table(report["tuned"]["methods"]) + "\n"
            + report["tuned"]["verdict"])
    report["headline"] = headline(report)
    log(report["headline"])
    write_report(run.out, report, {m: runs[config.seeds[0]] for m, runs in per_seed.items()}, run.market)
    return report


def _tuned_protocol(run, methods: tuple[str, ...], per_seed: dict, in_use: dict, recipes: dict[str, dict]) -> dict:
    """The second protocol: each method that pre-trains at its own recipe. The training-free and
    random-init rows are the shared protocol's (they have no recipe), and so are the runs of a
    method whose chosen recipe is the shared one (not trained twice)."""
    from cion_fast._demo import run as pipeline
    from cion_fast._demo.report import learning_curves, seed_suffix

    own = tuple(m for m in methods if m in PRETRAINED_METHODS and not pipeline.is_shared_recipe(run, m, recipes[m]))
    trained = pipeline.train_tuned(run, own, in_use, recipes)
    tuned = pipeline.evaluate_methods(run, tuple(f"{m}_tuned" for m in own), trained)
    rows = {m: (tuned[f"{m}_tuned"] if m in own else runs) for m, runs in per_seed.items()}
    summary = _summarise(rows)
    return {"recipes": {m: recipes[m] for m in methods if m in PRETRAINED_METHODS}, "own_runs": list(own), "methods": summary,
            "verdict": verdict(summary, run.config.finetune_steps), "curves": learning_curves(rows),
            "pretrain": {label + seed_suffix(seed): _pretrain_fields(run, stage) for (label, seed), stage in trained.items()}}


def _summarise(per_seed: dict) -> dict:
    """method -> mean ± std over seeds of every scalar figure (curves and CMC left out)."""
    return {m: nest_finetuned(aggregate_seeds({s: {k: v for k, v in r.items() if not k.startswith("cmc") and k != "curve"}
                                               for s, r in runs.items()})) for m, runs in per_seed.items()}


def _pretrain_fields(run, stage: str) -> dict:
    """What the report keeps of a pre-training stage's result: its figures, the collapse monitors
    (``collapsed``: the run ended with a collapse warning), its run directory."""
    result = run.stages.results[stage]
    return {**{k: result.get(k) for k in _PRETRAIN_FIELDS}, "collapsed": bool(result.get("collapse_warnings")),
            "run_dir": str(run.out / result["run_dir"])}


def _checked_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """``methods`` in the order of :data:`METHODS`; ValueError for an unknown or no method.

    Example:
        >>> _checked_methods(("cion", "stripe"))
        ('stripe', 'cion')
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {', '.join(METHODS)}, got {list(methods)}")
    return tuple(m for m in METHODS if m in methods)


def _report(run, methods: tuple[str, ...], per_seed: dict, in_use: dict, world: dict, rounds: list,
            trained: dict[tuple[str, int], str]) -> dict:
    """The report dict (see :func:`run_demo`) from the stages' results; ``trained``: (method, seed)
    -> the stage that pre-trained it."""
    from cion_fast._demo.report import learning_curves, seed_suffix

    used = run.stages.results[in_use[run.config.seeds[0]]]
    run.log("denoising quality against ground truth (the round CION trains on, seed 0):\n" + quality_table(used["quality"]))
    summary = _summarise(per_seed)
    pretrained = {method + seed_suffix(seed): stage for (method, seed), stage in trained.items() if method in PRETRAINED_METHODS}
    return {
        "denoise": used["quality"], "estimate": used["estimate"], "denoise_rounds": rounds, "methods": summary,
        "verdict": verdict(summary, run.config.finetune_steps),
        "curves": learning_curves(per_seed),
        "config": {"demo": run.config.to_dict(), "world": world, "methods": list(methods)},
        "timings": dict(run.stages.timings),
        "pretrain": {name: _pretrain_fields(run, stage) for name, stage in pretrained.items()},
    }


def run_search(out: str | os.PathLike, config: DemoConfig | None = None, methods: tuple[str, ...] = tuple(SEARCH_SPACES),
               configurations: int = 6, steps: int | None = None, seed: int = SEARCH_SEED, progress: bool = True,
               log: Callable[[str], None] = print) -> dict:
    """The recipe search (``cion-fast search``): for every method that pre-trains, the same number
    of configurations of its search space (:data:`SEARCH_SPACES`; the shared recipe first), each
    pre-trained the same ``steps`` with the search ``seed`` (not one of the comparison's seeds) and
    scored by plain mAP on the validation split (the labelled *train* identities; the held-out
    query/gallery is never seen). The best configuration of each method is its ``chosen`` recipe.

    Args:
        out: run directory (stages shared with ``run_demo`` / ``compare`` in the same directory).
        config: :class:`DemoConfig` (world, denoising, the shared recipe); default the default one.
        methods: subset of :data:`SEARCH_SPACES`' methods.
        configurations: configurations per method (the tuning budget, equal for all).
        steps: pre-training steps per configuration (default: half the shared recipe's).
        seed: the search's pre-training seed.

    Returns:
        ``{"methods": {method: [row per configuration: "index", "knobs", "validation_mAP",
        "validation_rank1", "collapsed", "prototypes", "teacher_entropy", "seconds"]}, "chosen":
        {method: knobs}, "budget": {"configurations", "steps", "seed"}, "config": ...}``, also in
        ``out/search.json`` with ``out/search.md`` and ``out/figures/search.png``.

    Example (one configuration of 2 steps on a tiny world):
        >>> import tempfile
        >>> from dataclasses import replace
        >>> from cion_fast.data.synth import WorldConfig
        >>> world = WorldConfig.quick(identities=30, train_identities=5, eval_identities=20, cameras=3, videos=4)
        >>> tiny = replace(DemoConfig.quick(), world=world)
        >>> found = run_search(tempfile.mkdtemp(), tiny, ("dino",), configurations=1, steps=2, progress=False, log=lambda m: None)
        >>> found["chosen"]["dino"]["views"], found["methods"]["dino"][0]["index"]
        ('light', 0)
    """
    from cion_fast._demo import run as pipeline
    from cion_fast._demo.report import write_search_report
    from cion_fast._demo.stages import Stages

    unknown = [m for m in methods if m not in SEARCH_SPACES]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {', '.join(SEARCH_SPACES)}, got {list(methods)}")
    check_int(seed, "seed", 0)
    check_int(configurations, "configurations", 1)
    if steps is not None:
        check_int(steps, "steps", 1)
    for method in methods:  # a budget the space cannot hold fails before any work
        draw_configurations(method, configurations, seed, name="configurations")
    config = config or DemoConfig.default()
    steps = steps or max(1, config.pretrain.steps // 2)
    run = pipeline.DemoRun(Path(out), config, Stages(Path(out), log), progress, log)
    pipeline.world(run)
    in_use, _ = pipeline.denoise_rounds(run, 1)
    rows = {m: pipeline.search_method(run, m, configurations, steps, seed, in_use[config.seeds[0]]) for m in methods}
    chosen = {m: max(found, key=lambda r: (r["validation_mAP"], -r["index"]))["knobs"] for m, found in rows.items()}
    search = {"methods": rows, "chosen": chosen, "budget": {"configurations": configurations, "steps": steps, "seed": seed},
              "config": {"demo": config.to_dict()}, "timings": dict(run.stages.timings)}
    write_search_report(run.out, search)
    for method, knobs in chosen.items():
        log(f"{method}: chose {knobs}")
    return search
