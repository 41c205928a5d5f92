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

from cion_fast._demo.config import DEMO_METHODS, METHODS, PRETRAINED_METHODS, SMALL_BUDGET_RECIPE, DemoConfig
from cion_fast._demo.report import (CLAIMED_ORDER, aggregate_seeds, baselines_sentence, methods_table,
                                    nest_finetuned, ordering_sentence, quality_table, verdict, write_report)

__all__ = ["CLAIMED_ORDER", "DEMO_METHODS", "METHODS", "PRETRAINED_METHODS", "SMALL_BUDGET_RECIPE",
           "DemoConfig", "aggregate_seeds", "baselines_sentence", "ordering_sentence", "run_demo"]

_PRETRAIN_FIELDS = ("step", "loss", "images_per_s", "view_share", "k", "reused")


def run_demo(out: str | os.PathLike, config: DemoConfig | None = None, progress: bool = True,
             log: Callable[[str], None] = print, methods: tuple[str, ...] = DEMO_METHODS) -> dict:
    """Runs (or resumes) the demo in ``out`` and returns the report dict (also in ``out/report.json``).

    Args:
        out: run directory; re-running reuses every stage whose inputs did not change.
        config: :class:`DemoConfig` (default: :meth:`DemoConfig.default`).
        progress: progress bars on long steps.
        log: where stage messages go.
        methods: which of :data:`METHODS` to train and evaluate (``cion-fast compare``: all).

    Returns:
        the report: ``{"denoise": {"tracklets" / level name: quality of the round CION trains on,
        seed 0}, "estimate": its label-free estimate (or None), "denoise_rounds": [{"round",
        "bcubed_f", "bcubed_f_std", "thresholds", "separation", "used_by_seeds", "seeds"}],
        "methods": {name: {metric: mean over seeds, metric_std, "seeds": [...]}}, "verdict": the
        ordering sentence, then CION against every baseline, "curves": {name:
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
    config = config or DemoConfig.default()
    run = pipeline.DemoRun(Path(out), config, Stages(Path(out), log), progress, log)
    world = pipeline.world(run)
    rounds = config.rounds if "cion" in methods else 1
    in_use, trained_on = pipeline.denoise_rounds(run, rounds)
    trained = pipeline.train_methods(run, methods, in_use, trained_on)
    per_seed = pipeline.evaluate_methods(run, methods, trained)
    report = _report(run, methods, per_seed, in_use, world, pipeline.rounds_table(run, rounds, in_use), trained)
    log("retrieval on the held-out query/gallery (%):\n" + methods_table(report["methods"]) + "\n" + report["verdict"])
    write_report(run.out, report, {m: runs[config.seeds[0]] for m, runs in per_seed.items()}, run.market)
    return report


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
    summary = {m: nest_finetuned(aggregate_seeds({s: {k: v for k, v in r.items() if not k.startswith("cmc") and k != "curve"}
                                                  for s, r in runs.items()})) for m, runs in per_seed.items()}
    pretrained = {method + seed_suffix(seed): run.stages.results[stage] for (method, seed), stage in trained.items()
                  if method in PRETRAINED_METHODS}
    return {
        "denoise": used["quality"], "estimate": used["estimate"], "denoise_rounds": rounds, "methods": summary,
        "verdict": verdict(summary, run.config.finetune_steps),
        "curves": learning_curves(per_seed),
        "config": {"demo": run.config.to_dict(), "world": world, "methods": list(methods)},
        "timings": dict(run.stages.timings),
        "pretrain": {name: {**{k: r.get(k) for k in _PRETRAIN_FIELDS}, "run_dir": str(run.out / r["run_dir"])}
                     for name, r in pretrained.items()},
    }
