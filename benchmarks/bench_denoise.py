"""CION's three denoising levels on LUPerson-NL-shaped input (10.7M frames in 434K tracklets from
21K videos; CION denoised it to 3.9M images of 247K identities; its features at D = 256 are 11 GB
in float32 / 5.5 GB in float16). The default runs 1/100 of it, ``--full`` 1/4; every level is
linear in frames up to sorts, so the full-size time is about 4x the ``--full`` figure (the full
size itself, 207 s and 13.2 GiB at peak, was measured by hand: NOTES.md).

The features are synthetic but structured, so that every level has work to do (uniform random
vectors would be pruned whole by level 1): each tracklet follows a person (a random unit vector;
people reappear in nearby videos), frames add a per-camera offset and noise, a few frames are
contaminated by another person, tracklets overlap in time (cannot-link pairs). Each level is timed
once on the previous level's output; the ground-truth quality after level 3 is recorded.

    pytest benchmarks/bench_denoise.py --benchmark-only [--full]
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import bench

from cion_fast.denoise import DenoiseConfig, center_videos, level1, level2, level3, quality

SIZES = {"default": {"luperson_1/100": 0.01}, "full": {"luperson_1/4": 0.25}}  # fractions of LUPerson-NL
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


@pytest.fixture(scope="module")
def pipeline(size):
    """The input and every level's output (each timed level starts from the one before)."""
    features, offsets, video_ids, frame_index, identity = luperson_like(size)
    config = DenoiseConfig()
    frame_video = np.repeat(video_ids, np.diff(offsets))
    centred = center_videos(features, offsets, video_ids)
    labels1, _ = level1(centred, offsets, config)
    labels2, _ = level2(centred, frame_video, frame_index, labels1, config)
    labels3, _ = level3(centred, frame_video, frame_index, labels2, config)
    q = quality(labels3, identity, frame_video)
    return {"features": features, "centred": centred, "offsets": offsets, "video_ids": video_ids, "frame_video": frame_video,
            "frame_index": frame_index, "labels": (labels1, labels2), "config": config, "bcubed_f": q.bcubed_f,
            "group": f"denoise {features.shape[0]:,} frames, {offsets.shape[0] - 1:,} tracklets ({size:g} of LUPerson-NL), D = 256 float16"}


def _level(benchmark, pipeline, name, fn, **info):
    bench(benchmark, fn, role="cion_fast", group=f"{pipeline['group']}: {name}", rounds=1, warmup=False, **info)


def test_center_videos(benchmark, pipeline):
    p = pipeline
    _level(benchmark, p, "center videos", lambda: center_videos(p["features"], p["offsets"], p["video_ids"]))


def test_level1(benchmark, pipeline):
    p = pipeline
    _level(benchmark, p, "level 1", lambda: level1(p["centred"], p["offsets"], p["config"]))


def test_level2(benchmark, pipeline):
    p = pipeline
    _level(benchmark, p, "level 2", lambda: level2(p["centred"], p["frame_video"], p["frame_index"], p["labels"][0], p["config"]))


def test_level3(benchmark, pipeline):
    p = pipeline
    _level(benchmark, p, "level 3", lambda: level3(p["centred"], p["frame_video"], p["frame_index"], p["labels"][1], p["config"]),
           bcubed_f_level3=p["bcubed_f"])
