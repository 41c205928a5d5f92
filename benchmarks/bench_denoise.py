"""Benchmark: CION's three denoising levels on LUPerson-NL-shaped input.

LUPerson-NL: 10.7M frames in 434K tracklets from 21K videos (CION denoised it to 3.9M images of
247K identities). Its features at D = 256 are 11 GB in float32 / 5.5 GB in float16; this machine
runs a documented fraction (``--fraction``, default 1/4, features stored as float16) and the
full-size time is extrapolated linearly (every level is linear in frames up to sorts), labelled
as such.

The features are synthetic but structured, so that every level has work to do (uniform random
vectors would be pruned whole by level 1): each tracklet follows a person (a random unit vector;
people reappear in nearby videos), frames add a per-camera offset and noise, a few frames are
contaminated by another person, tracklets overlap in time (cannot-link pairs).

    python benchmarks/bench_denoise.py                 # 1/4 of LUPerson-NL
    python benchmarks/bench_denoise.py --fraction 1    # the full size (needs ~20 GB RAM)
    python benchmarks/bench_denoise.py --quick         # a smoke run in seconds
"""

from __future__ import annotations

import time

import numpy as np

from _common import PeakMemory, parser, print_header, write_json

from cion_fast.denoise import DenoiseConfig, center_videos, level1, level2, level3, quality

FULL = {"frames": 10_700_000, "tracklets": 434_000, "videos": 21_000}


def luperson_like(fraction: float, dim: int = 256, seed: int = 0):
    """(features float16 [M, D], offsets [N+1], video per tracklet [N], frame index [M], identity [M])."""
    rng = np.random.default_rng(seed)
    num_tracklets = max(int(FULL["tracklets"] * fraction), 2)
    num_videos = max(int(FULL["videos"] * fraction), 1)
    mean_length = FULL["frames"] / FULL["tracklets"]
    lengths = rng.integers(8, int(2 * mean_length) - 7, num_tracklets)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    num_frames = int(offsets[-1])
    video = np.sort(rng.integers(0, num_videos, num_tracklets))
    # People: about two tracklets each, reappearing in nearby videos.
    num_people = num_tracklets // 2
    person = np.clip((video / num_videos * num_people + rng.normal(0, 15, num_tracklets)).astype(np.int64), 0, num_people - 1)
    start = rng.integers(0, 400, num_tracklets)
    tracklet_of_frame = np.repeat(np.arange(num_tracklets), lengths)
    frame_index = start[tracklet_of_frame] + (np.arange(num_frames) - offsets[tracklet_of_frame])
    identity = person[tracklet_of_frame]
    contaminated = rng.random(num_frames) < 0.03
    identity[contaminated] = rng.integers(0, num_people, int(contaminated.sum()))
    camera = (video % 50)[tracklet_of_frame]
    people = rng.standard_normal((num_people, dim), dtype=np.float32)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    cameras = rng.standard_normal((50, dim), dtype=np.float32)
    cameras *= 0.5 / np.linalg.norm(cameras, axis=1, keepdims=True)
    features = np.empty((num_frames, dim), dtype=np.float16)
    chunk = 1 << 20
    for lo in range(0, num_frames, chunk):
        hi = min(lo + chunk, num_frames)
        rows = people[identity[lo:hi]] + cameras[camera[lo:hi]]
        rows += rng.standard_normal(rows.shape, dtype=np.float32) * np.float32(0.5 / np.sqrt(dim))
        features[lo:hi] = rows
    return features, offsets, video, frame_index, identity


def main() -> None:
    p = parser(__doc__.split("\n")[1])
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of LUPerson-NL's size (default 1/4)")
    args = p.parse_args()
    fraction = 0.002 if args.quick else args.fraction
    env = print_header("denoise: CION levels 1-3 on LUPerson-NL-shaped input")
    t0 = time.perf_counter()
    features, offsets, video_ids, frame_index, identity = luperson_like(fraction)
    print(
        f"   input: {features.shape[0]:,} frames, {offsets.shape[0] - 1:,} tracklets, {len(np.unique(video_ids)):,} videos, "
        f"D={features.shape[1]} {features.dtype} ({features.nbytes / 2**30:.2f} GiB); fraction {fraction:g} of LUPerson-NL; "
        f"generated in {time.perf_counter() - t0:.1f} s"
    )
    config = DenoiseConfig()  # the defaults, center_videos included (timed as its own step)
    frame_video = np.repeat(video_ids, np.diff(offsets))
    centred = {}

    def center(_):
        centred["features"] = center_videos(features, offsets, video_ids)
        return None, {"dtype": str(centred["features"].dtype)}

    steps = (
        ("center videos", center),
        ("level 1", lambda _: level1(centred["features"], offsets, config)),
        ("level 2", lambda labels: level2(centred["features"], frame_video, frame_index, labels, config)),
        ("level 3", lambda labels: level3(centred["features"], frame_video, frame_index, labels, config)),
    )
    rows = {}
    labels = None
    for name, step in steps:
        with PeakMemory() as memory:
            start = time.perf_counter()
            labels, summary = step(labels)
            seconds = time.perf_counter() - start
        rows[name] = {
            "seconds": seconds,
            "peak_mb": memory.peak_bytes / 2**20,
            "extrapolated_full_seconds": seconds / fraction,
            "summary": summary,
        }
        print(
            f"   {name:13s}: {seconds:8.2f} s  peak +{memory.peak_bytes / 2**20:8.1f} MB  "
            f"(full size, extrapolated: {seconds / fraction:8.1f} s)  {summary}"
        )
    total = sum(row["seconds"] for row in rows.values())
    q = quality(labels, identity, frame_video)
    print(f"   total {total:.1f} s (full size, extrapolated: {total / fraction:.0f} s = {total / fraction / 60:.1f} min)")
    print(f"   ground truth of the synthetic input after level 3: BCubed F {q.bcubed_f:.3f}, {q.images_kept:,} images, {q.identities:,} identities")
    write_json(
        "denoise",
        {
            "environment": env,
            "fraction": fraction,
            "input": {"frames": int(features.shape[0]), "tracklets": int(offsets.shape[0] - 1), "videos": int(len(np.unique(video_ids))),
                      "dim": int(features.shape[1]), "dtype": str(features.dtype), "feature_bytes": int(features.nbytes)},
            "config": config.as_dict(),
            "levels": rows,
            "total_seconds": total,
            "extrapolated_full_seconds": total / fraction,
            "quality_level3": q.as_dict(),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
