"""The demo's report: seed statistics, the verdict against every baseline, tables, plots and the
Markdown / HTML pages (written atomically)."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from cion_fast._io import atomic_write

# The order the paper claims, worst to best (the report says whether it holds).
CLAIMED_ORDER = ("random", "dino", "tracklet", "cion")
REPORT_METRICS = ("mAP", "mINP", "rank1", "rank5", "rank10", "mAP_rerank", "rank1_rerank", "mAP_camnorm", "rank1_camnorm",
                  "student_mAP", "student_rank1")


def seed_suffix(seed: int) -> str:
    """The stage-name suffix of a seed: none for seed 0.

    Example:
        >>> seed_suffix(0), seed_suffix(2)
        ('', '_seed2')
    """
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


def nest_finetuned(values: dict[str, Any]) -> dict[str, Any]:
    """Moves the ``finetuned_*`` figures (and their ``_std``) into ``values["finetuned"]``.

    Example:
        >>> nest_finetuned({"mAP": 0.1, "finetuned_mAP": 0.5, "seeds": [0]})
        {'mAP': 0.1, 'seeds': [0], 'finetuned': {'mAP': 0.5, 'seeds': [0]}}
    """
    tuned = {k[len("finetuned_"):]: v for k, v in values.items() if k.startswith("finetuned_")}
    out = {k: v for k, v in values.items() if not k.startswith("finetuned_")}
    if tuned:
        out["finetuned"] = {**tuned, "seeds": values["seeds"]}
    return out


def _gap(methods: dict[str, dict], low: str, high: str, metric: str) -> tuple[float, float, str]:
    """(gap high - low, the larger std of the two, ", N.Nx the larger std" or "")."""
    gap = methods[high][metric] - methods[low][metric]
    std = max(methods[low].get(f"{metric}_std", 0.0), methods[high].get(f"{metric}_std", 0.0))
    return gap, std, (f", {gap / std:.1f}x the larger std" if std > 0 else "")


def _ordered_present(methods: dict[str, dict], metric: str) -> list[str]:
    return [m for m in CLAIMED_ORDER if m in methods and metric in methods[m]]


def order_holds(methods: dict[str, dict], metric: str = "mAP") -> bool:
    """Whether the claimed order holds: each method of ``CLAIMED_ORDER`` present beats the one
    before it by more than the larger std of the two (False with fewer than two present).

    Example:
        >>> order_holds({"random": {"mAP": 0.05, "mAP_std": 0.01}, "cion": {"mAP": 0.30, "mAP_std": 0.02}})
        True
    """
    present = _ordered_present(methods, metric)
    gaps = [_gap(methods, low, high, metric) for low, high in zip(present, present[1:])]
    return len(present) >= 2 and all(gap > std for gap, std, _ in gaps)


def finetuned_of(methods: dict[str, dict]) -> dict[str, dict]:
    """The fine-tuned figures of the methods that have them (``methods[m]["finetuned"]``)."""
    return {m: v["finetuned"] for m, v in methods.items() if "finetuned" in v}


def baselines_above_cion(methods: dict[str, dict], metric: str = "mAP") -> list[str]:
    """The methods CION does not beat on ``metric`` (every one when there is no CION).

    Example:
        >>> baselines_above_cion({"stripe": {"mAP": 0.4}, "random": {"mAP": 0.05}, "cion": {"mAP": 0.3}})
        ['stripe']
    """
    if "cion" not in methods or metric not in methods["cion"]:
        return [m for m in methods if m != "cion"]
    return [m for m in methods if m != "cion" and metric in methods[m] and methods[m][metric] >= methods["cion"][metric]]


def ordering_sentence(methods: dict[str, dict], metric: str = "mAP", label: str = "plain mAP") -> str:
    """One sentence: does the claimed order random < DINO < tracklet < CION hold, and by how much
    (each gap against the larger std of the pair)?

    Example:
        >>> ordering_sentence({"random": {"mAP": 0.05, "mAP_std": 0.01}, "cion": {"mAP": 0.30, "mAP_std": 0.02}})
        'random < cion holds on plain mAP: random 5.0 < cion 30.0 (gap 25.0, 12.5x the larger std).'
    """
    present = _ordered_present(methods, metric)
    if len(present) < 2:
        return f"(the ordering needs at least two of {', '.join(CLAIMED_ORDER)})"
    holds, parts = order_holds(methods, metric), []
    for low, high in zip(present, present[1:]):
        gap, _, ratio = _gap(methods, low, high, metric)
        parts.append(f"{low} {100 * methods[low][metric]:.1f} {'<' if gap > 0 else '>='} {high} "
                     f"{100 * methods[high][metric]:.1f} (gap {100 * gap:.1f}{ratio})")
    return f"{' < '.join(present)} {'holds' if holds else 'does NOT hold'} on {label}: " + "; ".join(parts) + "."


def _columns_below(methods: dict[str, dict], name: str, metric: str) -> str:
    """"; below it on rank5, ..." for the other columns where CION does not beat ``name``."""
    cion, other = methods["cion"], methods[name]
    below = [k for k in REPORT_METRICS if k != metric and k in cion and k in other and cion[k] <= other[k]]
    return f"; below it on {', '.join(below)}" if below else ""


def baselines_sentence(methods: dict[str, dict], metric: str = "mAP", label: str = "plain mAP") -> str:
    """CION against every other method of the table, the training-free stripe descriptor included;
    says plainly which baselines CION does not beat, and on which other columns it falls short.

    Example:
        >>> baselines_sentence({"stripe": {"mAP": 0.4}, "random": {"mAP": 0.05}, "cion": {"mAP": 0.3}})
        'CION against every baseline on plain mAP: above random 5.0 (+25.0); BELOW stripe 40.0 (-10.0). CION does NOT beat stripe.'
        >>> baselines_sentence({"stripe": {"mAP": 0.2, "rank1": 0.5}, "cion": {"mAP": 0.3, "rank1": 0.4}})
        'CION against every baseline on plain mAP: above stripe 20.0 (+10.0; below it on rank1). CION beats every baseline on plain mAP.'
    """
    if "cion" not in methods or metric not in methods["cion"]:
        return "(no CION in this run: nothing to compare the baselines with)"
    others = sorted((m for m in methods if m != "cion" and metric in methods[m]), key=lambda m: methods[m][metric])
    above = set(baselines_above_cion(methods, metric))
    parts, below = [], [m for m in others if m in above]
    for name in others:
        gap, _, ratio = _gap(methods, name, "cion", metric)
        word = "above" if gap > 0 else "BELOW"
        parts.append(f"{word} {name} {100 * methods[name][metric]:.1f} ({100 * gap:+.1f}{ratio}"
                     f"{_columns_below(methods, name, metric)})")
    end = f"CION does NOT beat {', '.join(below)}." if below else f"CION beats every baseline on {label}."
    return f"CION against every baseline on {label}: " + "; ".join(parts) + ". " + end


def verdict(methods: dict[str, dict], finetune_steps: int) -> str:
    """The claimed ordering and CION against every baseline, frozen and (when run) fine-tuned.

    Example:
        >>> verdict({"random": {"mAP": 0.05}, "cion": {"mAP": 0.3}}, 0).split(". ")[1]
        'CION against every baseline on plain mAP: above random 5.0 (+25.0)'
    """
    text = ordering_sentence(methods) + " " + baselines_sentence(methods)
    tuned = finetuned_of(methods)
    if tuned:
        label = f"plain mAP after {finetune_steps} fine-tuning steps"
        text += " Fine-tuned: " + ordering_sentence(tuned, label=label) + " " + baselines_sentence(tuned, label=label)
    return text


def _settings_checked(report: dict) -> list[tuple[str, dict[str, dict]]]:
    """(label, methods) of every table the report shows: frozen and fine-tuned, per protocol."""
    protocols = [("", report["methods"])]
    if "tuned" in report:
        protocols = [("shared recipe, ", report["methods"]), ("own recipes, ", report["tuned"]["methods"])]
    settings = []
    for prefix, methods in protocols:
        settings.append((prefix + "frozen", methods))
        tuned = finetuned_of(methods)
        if tuned:
            settings.append((prefix + "fine-tuned", tuned))
    return settings


def headline(report: dict) -> str:
    """The report's first line: does the claimed order hold and does CION beat every baseline, in
    every table of the report (plain mAP); the sentences under each table give the figures.

    Example:
        >>> headline({"methods": {"random": {"mAP": 0.05}, "stripe": {"mAP": 0.4}, "cion": {"mAP": 0.3}}})
        'Verdict on plain mAP, in the 1 table below (frozen): random < cion holds in every table; CION does NOT beat stripe (frozen).'
        >>> headline({"methods": {"random": {"mAP": 0.05}, "dino": {"mAP": 0.2}}})
        'Verdict on plain mAP, in the 1 table below (frozen): random < dino holds in every table; no CION in this run.'
    """
    settings = _settings_checked(report)
    order = " < ".join(m for m in CLAIMED_ORDER if m in report["methods"])
    failed = [label for label, methods in settings if not order_holds(methods)]
    beaten = [(label, baselines_above_cion(methods)) for label, methods in settings]
    beaten = [f"{', '.join(names)} ({label})" for label, names in beaten if names]
    tables = f"{len(settings)} table{'s' if len(settings) > 1 else ''} below ({'; '.join(label for label, _ in settings)})"
    if "cion" not in report["methods"]:
        against = "; no CION in this run"
    else:
        against = "; CION does NOT beat " + "; ".join(beaten) if beaten else "; CION beats every baseline in every table"
    return (f"Verdict on plain mAP, in the {tables}: {order} "
            + (f"does NOT hold in: {', '.join(failed)}" if failed else "holds in every table") + against + ".")


def learning_curves(per_seed: dict[str, dict[int, dict]]) -> dict[str, dict[str, list]]:
    """name -> {"steps", "mAP", "mAP_std"}: plain mAP over steps, mean and std over seeds; step 0
    is the ``random`` evaluation of the same seed (the trainer's own step 0).

    Example:
        >>> curves = learning_curves({"random": {0: {"mAP": 0.1}}, "cion": {0: {"curve": [[10, 0.3], [20, 0.5]]}}})
        >>> curves["cion"]["steps"], curves["cion"]["mAP"]
        ([0, 10, 20], [0.1, 0.3, 0.5])
    """
    curves = {}
    for method, runs in per_seed.items():
        if not all("curve" in r for r in runs.values()):
            continue
        steps = sorted(set.intersection(*(set(step for step, _ in r["curve"]) for r in runs.values())))
        start = [0] if all(seed in per_seed.get("random", {}) for seed in runs) else []
        rows = [[per_seed["random"][seed]["mAP"]] * len(start) + [dict(map(tuple, r["curve"]))[s] for s in steps]
                for seed, r in runs.items()]
        values = np.array(rows, dtype=np.float64)
        curves[method] = {"steps": start + steps, "mAP": values.mean(0).tolist(), "mAP_std": values.std(0).tolist()}
    return curves


def _loss_curves(runs: dict[str, Path]) -> dict[str, tuple[list, list]]:
    """name -> (steps, losses) from each pre-training run directory's ``log.jsonl``."""
    curves = {}
    for method, run_dir in runs.items():
        log_path = Path(run_dir) / "log.jsonl"
        rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()] if log_path.exists() else []
        rows = [r for r in rows if "loss" in r and "step" in r]
        if rows:
            curves[method] = ([r["step"] for r in rows], [r["loss"] for r in rows])
    return curves


def _level_order(name: str) -> tuple[bool, str]:
    return (name != "tracklets", name)


def quality_table(rows: dict[str, dict]) -> str:
    """Markdown table of per-level quality rows (``Quality.as_dict()`` each; the tracklets first),
    by the one quality table of :mod:`cion_fast.denoise`.

    Example:
        >>> import numpy as np
        >>> from cion_fast.denoise import quality
        >>> row = quality(np.array([0, 0, 1]), np.array([5, 5, 6])).as_dict()
        >>> print(quality_table({"level 1": row}).splitlines()[2][:15])
        | level 1 | 3 |
    """
    from cion_fast.denoise import Quality, format_quality_table

    ordered = {level: Quality(**rows[level]) for level in sorted(rows, key=_level_order)}
    return format_quality_table(ordered, markdown=True)


def _cell(values: dict, metric: str) -> str:
    if metric not in values:
        return "—"
    if len(values.get("seeds", ())) > 1 and f"{metric}_std" in values:
        return f"{100 * values[metric]:.1f} ± {100 * values[metric + '_std']:.1f}"
    return f"{100 * values[metric]:.1f}"


def methods_table(methods: dict[str, dict]) -> str:
    """Markdown table of retrieval figures (%), mean ± std over seeds when there are several.

    Example:
        >>> print(methods_table({"cion": {"mAP": 0.25, "seeds": [0]}}).splitlines()[2])
        | cion | 25.0 |
    """
    present = [m for m in REPORT_METRICS if any(m in v for v in methods.values())]
    lines = ["| method | " + " | ".join(present) + " |", "|" + "---|" * (len(present) + 1)]
    lines += [f"| {name} | " + " | ".join(_cell(values, m) for m in present) + " |" for name, values in methods.items()]
    return "\n".join(lines)


def estimate_table(estimate: dict | None) -> str:
    """Markdown table of the label-free quality estimate of the labels CION trains on ("" without one).

    Example:
        >>> print(estimate_table({"false_merge_rate": 0.01}).splitlines()[-1])
        | false_merge_rate | 0.01 |
    """
    from cion_fast.denoise.io import estimate_items

    rows = estimate_items(estimate)
    return "\n".join(["| estimate (label-free) | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]) if rows else ""


def _figures(out: Path, report: dict, results: dict, market: Any) -> dict[str, Path]:
    """The report's PNG plots under ``out/figures``: name -> path."""
    from cion_fast.evaluate import plots

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    quality = {level: {"purity": row["purity"], "pairwise F1": row["pairwise_f1"], "BCubed F": row["bcubed_f"]}
               for level, row in sorted(report["denoise"].items(), key=lambda item: _level_order(item[0]))}
    shown = {"mAP": "mAP", "rank1": "Rank-1", "mAP_rerank": "mAP (re-ranked)", "mAP_camnorm": "mAP (camera-normalised)"}
    bars = {name: {label: 100 * values[key] for key, label in shown.items() if key in values}
            for name, values in report["methods"].items()}
    paths = {
        "denoise": plots.plot_bars(quality, figures / "denoise_quality.png", "denoising quality (ground truth)"),
        "methods": plots.plot_bars(bars, figures / "methods.png", "retrieval on held-out identities (frozen features)", "%"),
        "cmc": plots.plot_cmc({name: values["cmc"] for name, values in results.items()}, figures / "cmc.png"),
    }
    if all("cmc_camnorm" in v for v in results.values()):
        paths["cmc_camnorm"] = plots.plot_cmc({name: v["cmc_camnorm"] for name, v in results.items()},
                                              figures / "cmc_camnorm.png", title="CMC, camera-normalised features")
    return {**paths, **_curve_figures(out, report), "grid": _grid_figure(out, report, results, market)}


def _curve_figures(out: Path, report: dict) -> dict[str, Path]:
    """The pre-training loss and the learning curves (when there are any)."""
    from cion_fast.evaluate import plots

    paths = {}
    runs = {name: r["run_dir"] for name, r in report["pretrain"].items() if "_seed" not in name}
    losses = _loss_curves(runs)
    if losses:
        paths["loss"] = plots.plot_curves(losses, out / "figures" / "pretrain_loss.png", "pre-training loss", "loss")
    seeds = len(report["config"]["demo"]["seeds"])
    for key, curves, protocol, name in (("learning", report.get("curves"), "", "learning_curves.png"),
                                        ("learning_tuned", report.get("tuned", {}).get("curves"),
                                         ", each method at its own recipe", "learning_curves_tuned.png")):
        if curves:
            bands = {method: (c["steps"], [100 * v for v in c["mAP"]], [100 * v for v in c["mAP_std"]])
                     for method, c in curves.items()}
            title = f"held-out plain mAP during pre-training (mean ± std, {seeds} seed{'s' * (seeds > 1)}{protocol})"
            paths[key] = plots.plot_bands(bands, out / "figures" / name, title, "mAP (%)")
    return paths


def _grid_figure(out: Path, report: dict, results: dict, market: Any) -> Path:
    """Top-10 gallery matches of 8 queries with CION's features (or the last method's)."""
    from cion_fast._io import load_numpy
    from cion_fast.evaluate import plots
    from cion_fast.evaluate.retrieval import top_k_gallery

    shown = "cion" if "cion" in results else list(results)[-1]
    path = out / "eval" / f"{shown}{seed_suffix(report['config']['demo']['seeds'][0])}.npz"
    features = load_numpy(path, "evaluation features")
    rows = np.arange(min(8, len(market.query)))
    ranked = top_k_gallery(features["query"][rows], features["gallery"], top_k=10)
    hits = market.gallery.pids[ranked] == market.query.pids[rows, None]
    return plots.plot_retrieval_grid(market.query.images[rows], market.gallery.images, ranked, hits,
                                     out / "figures" / "retrieval_grid.png")


def _rounds_rows(report: dict) -> str:
    return "\n".join(f"| {r['round']} | {r['bcubed_f']:.3f} ± {r['bcubed_f_std']:.3f} | {r.get('separation')} | "
                     + ", ".join(f"{k.split('_')[0]} {v:.3f}" for k, v in r["thresholds"].items())
                     + f" | {r.get('used_by_seeds', '')} |" for r in report.get("denoise_rounds", []))


# What each plot shows, one line under it (the Markdown image's alt text, the HTML figure's caption).
FIGURE_CAPTIONS = {
    "denoise": "Denoising quality per level against the world's ground truth: purity, pairwise F1 and BCubed F.",
    "learning": "Held-out plain mAP at each pre-training checkpoint, mean ± std over seeds: how fast each method learns.",
    "learning_tuned": "The same learning curves with each method at its own recipe (the second protocol).",
    "methods": "Retrieval on held-out identities with frozen features, per method (higher is better).",
    "cmc": "CMC curves: the share of queries whose first true match is within the top k.",
    "cmc_camnorm": "CMC curves after test-time camera normalisation of the same features.",
    "loss": "Pre-training loss per step for each method's seed-0 run.",
    "grid": "Top-10 gallery matches of 8 queries with CION's features; green frames are the same identity.",
}


def _image(paths: dict[str, Path], key: str) -> str:
    return f"![{FIGURE_CAPTIONS[key]}](figures/{paths[key].name})" if key in paths else ""


def _finetuned_section(methods: dict[str, dict]) -> str:
    tuned = finetuned_of(methods)
    if not tuned:
        return ""
    return ("\n### After supervised fine-tuning on the labelled train split (same recipe and steps for every "
            "initialisation, BNNeck feature, %)\n\n" + methods_table(tuned) + "\n")


def collapse_sentence(pretrain: dict[str, dict]) -> str:
    """Which pre-training runs ended collapsed (the trainer's monitors at the last log line).

    Example:
        >>> collapse_sentence({"dino": {"collapsed": True, "prototypes": 3.1}, "cion": {"collapsed": False}})
        'Runs that ended COLLAPSED (a collapse warning at their last log line): dino (3.1 effective prototypes).'
    """
    collapsed = [f"{name} ({r['prototypes']:.1f} effective prototypes)" if r.get("prototypes") is not None else name
                 for name, r in pretrain.items() if r.get("collapsed")]
    if not collapsed:
        return "No pre-training run ended collapsed (the trainer's monitors at their last log line)."
    return "Runs that ended COLLAPSED (a collapse warning at their last log line): " + ", ".join(collapsed) + "."


def _tuned_section(report: dict, paths: dict[str, Path]) -> str:
    """The second protocol's section (``compare``): each method at its own recipe."""
    if "tuned" not in report:
        return ""
    from cion_fast._demo.recipes import describe

    tuned = report["tuned"]
    recipes = "\n".join(f"| {m} | {describe(knobs)}{'' if m in tuned['own_runs'] else ' (the shared recipe: its runs above)'} |"
                         for m, knobs in tuned["recipes"].items())
    return f"""
## Each method at its own recipe (chosen on the validation split; frozen features, %)

The same steps, batch, backbone and evaluation as above; each method's recipe was chosen by the
same search budget on the labelled train identities (`cion-fast search`, docs/RECIPES.md).

| method | recipe |
|---|---|
{recipes}

{methods_table(tuned["methods"])}

Each method at its own recipe: {tuned["verdict"]}
{_finetuned_section(tuned["methods"])}
{_image(paths, "learning_tuned")}
"""


def markdown(report: dict, paths: dict[str, Path]) -> str:
    """``report.md``: the rounds, the quality of the labels CION trains on, the methods, the verdict."""
    timings = "\n".join(f"| {k} | {v:.1f} |" for k, v in report["timings"].items())
    estimate = estimate_table(report.get("estimate"))
    return f"""# cion_fast demo report

**{headline(report)}**

{collapse_sentence(report.get("pretrain", {}))}

## Denoising rounds (thresholds chosen from the data; ground truth only measures)

| round | BCubed F (last level) | separation AUC (label-free) | thresholds | seeds training CION on it |
|---|---|---|---|---|
{_rounds_rows(report)}

A round's identities are used only when its features separate the tracker's positives (frames of
one tracklet) from its certain negatives (tracklets sharing a frame) better than the identities
in use before it (the best-separating round so far). The round CION trains on, per level:

{quality_table(report["denoise"])}

{estimate}

{_image(paths, "denoise")}

## Retrieval on held-out identities (frozen features, %)

{methods_table(report["methods"])}

{"One shared recipe for every method: " if "tuned" in report else ""}{report["verdict"]}
{_finetuned_section(report["methods"])}

{_tuned_section(report, paths)}
`student_*`: the student network of the same run (the exported network is the teacher for
DINO / tracklet / CION, the query encoder for UP-ReID). `random`: the trainer's own step-0 backbone.

{_image(paths, "learning")}

{_image(paths, "methods")}

{_image(paths, "cmc")}

{_image(paths, "cmc_camnorm")}

`*_camnorm`: the same features after test-time camera normalisation (each camera's mean feature
subtracted; label-free but transductive, see `cion_fast.evaluate.retrieval.camera_centered`).

{_image(paths, "loss")}

{_image(paths, "grid")}

## Timings (s)

| stage | seconds |
|---|---|
{timings}
"""


def html_page(report: dict, paths: dict[str, Path]) -> str:
    """``report.html``: the Markdown report rendered as one self-contained page (real tables, the
    figures embedded as PNG data, each with its caption), so it can be mailed or archived alone.

    Example:
        >>> page = html_page({"verdict": "cion wins", "denoise_rounds": [], "timings": {}, "denoise": {},
        ...                   "methods": {"cion": {"mAP": 0.3, "seeds": [0]}}}, {})
        >>> "<th>method</th>" in page and "<td>30.0</td>" in page and page.index("Verdict") < page.index("<table>")
        True
    """
    body = markdown_to_html(markdown(report, paths), paths)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>cion_fast demo report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em;line-height:1.4}"
            ".wide{overflow-x:auto}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
            "th:first-child,td:first-child{text-align:left}td{white-space:nowrap}th{background:#eee}img{max-width:100%}"
            "figcaption{color:#444;font-size:.9em}code{background:#f4f4f4}</style></head>"
            f"<body>{body}</body></html>")


def markdown_to_html(text: str, paths: dict[str, Path]) -> str:
    r"""The subset of Markdown the report writes, as HTML: headings, paragraphs, pipe tables,
    ``**bold**``, ``code`` and images (``figures/NAME`` embedded from ``paths`` as data URIs).

    Example:
        >>> markdown_to_html("## A\n\n| x | y |\n|---|---|\n| 1 | `b` |\n\n**ok**", {})
        "<h2>A</h2>\n<div class='wide'><table><tr><th>x</th><th>y</th></tr><tr><td>1</td><td><code>b</code></td></tr></table></div>\n<p><strong>ok</strong></p>"
    """
    blocks = [block.strip() for block in text.split("\n\n") if block.strip()]
    return "\n".join(_html_block(block, paths) for block in blocks)


def _html_block(block: str, paths: dict[str, Path]) -> str:
    lines = block.splitlines()
    if block.startswith("#"):
        level = len(block) - len(block.lstrip("#"))
        return f"<h{level}>{_inline(block[level:].strip())}</h{level}>"
    if all(line.startswith("|") for line in lines):
        rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines if not set(line) <= set("|-: ")]
        head = "".join(f"<th>{_inline(cell)}</th>" for cell in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in rows[1:])
        return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>"  # scrolls, never overflows the page
    if block.startswith("![") and block.endswith(")"):
        caption, source = block[2:-1].split("](", 1)
        return f'<figure><img src="{_embedded(source, paths)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    return f"<p>{_inline(' '.join(lines))}</p>"


def _inline(text: str) -> str:
    """Escapes ``text`` and renders its ``**bold**`` and ``code`` spans."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _embedded(source: str, paths: dict[str, Path]) -> str:
    """A data URI of the figure at ``source`` (``figures/NAME``), or the link when it is not on disk."""
    found = next((p for p in paths.values() if f"figures/{p.name}" == source), None)
    if found is None or not found.is_file():
        return html.escape(source)
    return "data:image/png;base64," + base64.b64encode(found.read_bytes()).decode()


def write_report(out: Path, report: dict, results: dict, market: Any) -> None:
    """Plots, ``report.md``, ``report.html`` and ``report.json``, each written atomically."""
    from cion_fast._io import atomic_write_json

    paths = _figures(out, report, results, market)
    atomic_write(out / "report.md", lambda p: p.write_text(markdown(report, paths)))
    atomic_write(out / "report.html", lambda p: p.write_text(html_page(report, paths)))
    atomic_write_json(out / "report.json", report)


def search_markdown(search: dict) -> str:
    """``search.md``: every configuration of every method with its validation figures, the chosen
    one in bold, collapsed runs marked.

    Example:
        >>> row = {"index": 0, "knobs": {"views": "light"}, "validation_mAP": 0.25, "validation_rank1": 0.5,
        ...        "collapsed": True, "prototypes": 3.0, "teacher_entropy": 0.1, "seconds": 9.0}
        >>> text = search_markdown({"methods": {"dino": [row]}, "chosen": {"dino": {"views": "light"}},
        ...                         "budget": {"configurations": 1, "steps": 5, "seed": 1000}})
        >>> text.splitlines()[-1]
        '| **0** | **views light** | **25.0** | **50.0** | COLLAPSED | 3.0 | 0.10 | 9 |'
    """
    from cion_fast._demo.recipes import describe

    budget = search["budget"]
    parts = [f"# Recipe search\n\nEvery method: {budget['configurations']} configurations of its search space (the "
             f"shared recipe first), {budget['steps']} pre-training steps each, seed {budget['seed']}; chosen by plain "
             "mAP on the validation split (every image of the labelled train identities queries the others; the "
             "held-out query/gallery is never seen). `collapsed`: the run ended with a collapse warning."]
    for method, rows in search["methods"].items():
        lines = [f"## {method}", "", "| # | recipe | validation mAP | validation Rank-1 | collapsed | prototypes | "
                 "teacher entropy | s |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            chosen = r["knobs"] == search["chosen"][method]
            bold = (lambda text: f"**{text}**") if chosen else str
            entropy = "—" if r["teacher_entropy"] is None else f"{r['teacher_entropy']:.2f}"
            prototypes = "—" if r["prototypes"] is None else f"{r['prototypes']:.1f}"
            cells = [r["index"], describe(r["knobs"]), f"{100 * r['validation_mAP']:.1f}", f"{100 * r['validation_rank1']:.1f}"]
            lines.append("| " + " | ".join(bold(c) for c in cells) + f" | {'COLLAPSED' if r['collapsed'] else 'no'} | "
                         f"{prototypes} | {entropy} | {r['seconds']:.0f} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def write_search_report(out: Path, search: dict) -> None:
    """``search.json``, ``search.md`` and ``figures/search.png`` (validation mAP of every
    configuration, per method), each written atomically."""
    from cion_fast._io import atomic_write_json
    from cion_fast.evaluate import plots

    (out / "figures").mkdir(exist_ok=True)
    bars = {m: {f"#{r['index']}": 100 * r["validation_mAP"] for r in rows} for m, rows in search["methods"].items()}
    plots.plot_bars(bars, out / "figures" / "search.png", "validation mAP of each configuration (#0: the shared recipe)", "%")
    atomic_write(out / "search.md", lambda p: p.write_text(search_markdown(search)))
    atomic_write_json(out / "search.json", search)
