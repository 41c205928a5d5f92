"""Denoising quality on the default synthetic world, against its ground truth (the README tables).

Runs CION's three levels with the default ``DenoiseConfig`` on two kinds of features of the same
world, so that denoising quality and feature quality can be told apart:

* ``stripe``: the training-free stripe descriptor (``cion_fast.features.stripe_histogram``);
* ``oracle``: features built from the true identities plus a per-camera shift and per-frame noise
  (``cion_fast.features.oracle_features``): what remains wrong there is the denoising's doing.

With ``--sweep`` it also varies each threshold around its default, one at a time: the numbers that
chose the defaults (each level must improve BCubed F over the previous one, for both features).

    python benchmarks/denoise_quality.py            # the two tables (about a minute)
    python benchmarks/denoise_quality.py --sweep    # plus the one-at-a-time sweep (a few minutes)
    python benchmarks/denoise_quality.py --quick    # the quick world, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

import cion_fast
from cion_fast.data.synth import WorldConfig, generate
from cion_fast.denoise import DenoiseConfig, denoise_tracklets, format_quality_table
from cion_fast.features import oracle_features, stripe_histogram

SWEEP = {
    "center_videos": [True, False],
    "prune_threshold": [0.3, 0.4, 0.5, 0.6],
    "reallocation_threshold": [0.5, 0.65, 0.7],
    "merge_threshold": [0.55, 0.62, 0.7],
    "frame_window": [None, 30],
    "cannot_link": [True, False],
    "link_threshold": [0.4, 0.45, 0.5, 0.6, 0.7],
    "mutual_k": [None, 1, 2],
    "window": [8, 16, 48],
    "min_images": [1, 4, 8, 16],
}


def run(tracklets, features, config: DenoiseConfig) -> dict:
    frame_video = np.repeat(tracklets.video, tracklets.lengths)
    result = denoise_tracklets(tracklets, features, config)
    rows = result.quality(tracklets.identity, frame_video)
    scores = [q.bcubed_f for q in rows.values()]
    return {
        "rows": rows,
        "bcubed_f": scores,
        "monotonic": all(b > a for a, b in zip(scores, scores[1:])),
        "seconds": sum(s["seconds"] for s in result.summary),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the quick world: seconds")
    p.add_argument("--sweep", action="store_true", help="also vary each threshold around its default")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "out" / "denoise_quality.json",
                   help="where the tables go (default benchmarks/out/denoise_quality.json)")
    args = p.parse_args()
    env = {"cion_fast": cion_fast.build_info(), "numpy": np.__version__}
    print(f"== denoise quality on the synthetic world (ground truth); cion_fast {env['cion_fast']['version']}")
    world_config = WorldConfig.quick() if args.quick else WorldConfig()
    start = time.perf_counter()
    tracklets = generate(world_config).tracklets
    print(f"   world: {tracklets!r} ({time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    features = {"stripe": stripe_histogram(tracklets.frames)}
    stripe_seconds = time.perf_counter() - start
    print(f"   stripe descriptor: {features['stripe'].shape[1]} dims, {tracklets.num_frames / stripe_seconds:.0f} frames/s")
    features["oracle"] = oracle_features(tracklets.identity, np.repeat(tracklets.camera, tracklets.lengths))

    config = DenoiseConfig()
    payload = {"environment": env, "world": world_config.to_dict(), "config": config.as_dict(), "tables": {}, "sweep": []}
    payload["stripe_frames_per_second"] = tracklets.num_frames / stripe_seconds
    for name, values in features.items():
        outcome = run(tracklets, values, config)
        print(f"\n   {name} features ({outcome['seconds']:.1f} s), each level improves BCubed F: {outcome['monotonic']}")
        print(format_quality_table(outcome["rows"]))
        print()
        print(format_quality_table(outcome["rows"], markdown=True))
        payload["tables"][name] = {stage: q.as_dict() for stage, q in outcome["rows"].items()}
        payload["tables"][name]["monotonic"] = outcome["monotonic"]

    if args.sweep:
        print("\n   one-at-a-time sweep around the defaults: BCubed F after tracklets / level 1 / 2 / 3 (* = not improving at every level)")
        for field, options in SWEEP.items():
            for value in options:
                changed = dataclasses.replace(config, **{field: value})
                if field == "window":
                    changed = dataclasses.replace(changed, stride=value // 2)
                cells = []
                entry = {"field": field, "value": value}
                for name, values in features.items():
                    outcome = run(tracklets, values, changed)
                    mark = "" if outcome["monotonic"] else "*"
                    cells.append(f"{name} " + " ".join(f"{f:.4f}" for f in outcome["bcubed_f"]) + mark)
                    entry[name] = {"bcubed_f": outcome["bcubed_f"], "monotonic": outcome["monotonic"],
                                   "images_kept": outcome["rows"]["level 3"].images_kept}
                payload["sweep"].append(entry)
                default = " (default)" if getattr(config, field) == value else ""
                print(f"   {field}={value}{default}: " + " | ".join(cells), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=float))
    print(f"   results written to {args.json}")


if __name__ == "__main__":
    main()
