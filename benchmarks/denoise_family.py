"""Denoising on the world family (:mod:`cion_fast.denoise.worlds`): automatic thresholds against
the fixed defaults and against the best fixed thresholds found with ground truth (the oracle
sweep), member by member, the held-out members apart. Writes the table of docs/DENOISE_FAMILY.md.

    python benchmarks/denoise_family.py                      # every member (a few minutes on 2 cores)
    python benchmarks/denoise_family.py --members base tiny  # some
    python benchmarks/denoise_family.py --json out.json      # also the figures as JSON
    python benchmarks/denoise_family.py --estimate           # does the label-free estimate track precision?
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from cion_fast.denoise import DenoiseConfig, denoise
from cion_fast.denoise.worlds import FAMILY, HELD_OUT, generate_feature_world, oracle_sweep

_DIGITS = 3


def measure(name: str, rate: float | None = None) -> dict:
    """Final BCubed F (and level 2's, precision, the label-free estimate) of one member under
    the fixed defaults, the automatic thresholds and the oracle sweep."""
    world = generate_feature_world(FAMILY[name])
    base = DenoiseConfig(window=world.config.window, stride=world.config.stride)
    auto = dataclasses.replace(base, thresholds="auto", **({} if rate is None else {"false_merge_rate": rate}))
    row = {"member": name, "held_out": name in HELD_OUT, "frames": int(world.features.shape[0]),
           "tracklets": int(world.video_ids.shape[0])}
    for label, config in (("fixed", base), ("auto", auto)):
        start = time.perf_counter()
        result = denoise(world.features, world.offsets, world.video_ids, world.frame_index, config)
        rows = result.quality(world.identity)
        row[label] = {"level2_f": round(rows["level 2"].bcubed_f, _DIGITS), "f": round(rows["level 3"].bcubed_f, _DIGITS),
                      "precision": round(rows["level 3"].bcubed_precision, _DIGITS),
                      "recall": round(rows["level 3"].bcubed_recall, _DIGITS),
                      "seconds": round(time.perf_counter() - start, 2)}
        if label == "auto":
            row["auto"]["thresholds"] = result.calibration["thresholds"]
            row["auto"]["estimate"] = result.estimate
    best, best_f = oracle_sweep(world, base)
    row["oracle"] = {"f": round(best_f, _DIGITS),
                     "thresholds": {k: getattr(best, k) for k in ("prune_threshold", "reallocation_threshold",
                                                                   "merge_threshold", "link_threshold")}}
    return row


def table(rows: list[dict]) -> str:
    """The Markdown table of docs/DENOISE_FAMILY.md."""
    lines = ["| member | frames | fixed F | auto level 2 F | **auto F** | oracle F | auto - oracle | auto P | estimated P |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        est = (r["auto"].get("estimate") or {}).get("precision")
        lines.append(f"| {r['member']}{' (held out)' if r['held_out'] else ''} | {r['frames']:,} | {r['fixed']['f']:.3f} | "
                     f"{r['auto']['level2_f']:.3f} | **{r['auto']['f']:.3f}** | {r['oracle']['f']:.3f} | "
                     f"{r['auto']['f'] - r['oracle']['f']:+.3f} | {r['auto']['precision']:.3f} | "
                     f"{'-' if est is None else f'{est:.3f}'} |")
    return "\n".join(lines)


# Labellings of every member that span pure to over-linked identities, for --estimate.
ESTIMATE_CONFIGS = {"fixed defaults": {}, "auto": {"thresholds": "auto"},
                    "auto, rate 1": {"thresholds": "auto", "false_merge_rate": 1.0}, "fixed, link 0.35": {"link_threshold": 0.35}}


def estimate_rows(members) -> list[dict]:
    """True BCubed precision and the label-free estimate, every member x ESTIMATE_CONFIGS."""
    rows = []
    for name in members:
        world = generate_feature_world(FAMILY[name])
        for label, changes in ESTIMATE_CONFIGS.items():
            config = DenoiseConfig(window=world.config.window, stride=world.config.stride, **changes)
            result = denoise(world.features, world.offsets, world.video_ids, world.frame_index, config)
            rows.append({"member": name, "config": label, "true": result.quality(world.identity)["level 3"].bcubed_precision,
                         "estimate": result.estimate["precision"]})
            print(f"{name:22s} {label:18s} true P {rows[-1]['true']:.3f}  estimated {rows[-1]['estimate']:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="*", default=list(FAMILY), choices=list(FAMILY))
    parser.add_argument("--rate", type=float, default=None, help="false_merge_rate (default: DenoiseConfig's)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--estimate", action="store_true", help="rank correlation of the estimate with true precision")
    args = parser.parse_args()
    if args.estimate:
        rows = estimate_rows([m for m in args.members if FAMILY[m].videos <= 1000])
        from scipy.stats import spearmanr

        rho = spearmanr([r["true"] for r in rows], [r["estimate"] for r in rows]).statistic
        print(f"rank correlation over {len(rows)} labellings: {rho:.3f}")
        return
    rows = []
    for name in args.members:
        rows.append(measure(name, args.rate))
        r = rows[-1]
        print(f"{name:16s} fixed {r['fixed']['f']:.3f}  auto L2 {r['auto']['level2_f']:.3f} auto {r['auto']['f']:.3f} "
              f"(P {r['auto']['precision']:.3f})  oracle {r['oracle']['f']:.3f}  {r['auto']['thresholds']}", flush=True)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
