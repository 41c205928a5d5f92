"""CION's three denoising levels on LUPerson-NL-shaped input (10.7M frames in 434K tracklets from
21K videos; CION denoised it to 3.9M images of 247K identities; its features at D = 256 are 11 GB
in float32 / 5.5 GB in float16). The default runs 1/100 of it, ``--full`` 1/4,
``--denoise-fraction 1`` the whole (measured: 4 min 12 s on 2 cores with the input generated,
the automatic thresholds and the label-free estimate timed, 2.5 GiB of heap, 10.1 GiB of disk for
the features and their centred copy).

The features are synthetic but structured, so that every level has work to do (uniform random
vectors would be pruned whole by level 1): each tracklet follows a person (a random unit vector;
people reappear in nearby videos), frames add a per-camera offset and noise, a few frames are
contaminated by another person, tracklets overlap in time (cannot-link pairs). The features are
memory-mapped from a file and the video-centred copy written to another (``cion-fast denoise
--scratch``), so the heap holds only the levels' working sets. With ``--device cuda`` the features
are uploaded to the GPU first (untimed) and every level runs there, the centred copy included.
Each level is timed once on the previous level's output; the ground-truth quality after level 3
is recorded. As ``cion-fast denoise`` does by default, the automatic thresholds are chosen first
(a stage of their own, on the centred features) and the levels use them; the label-free estimate
of the result is the last stage.

    pytest benchmarks/bench_denoise.py --benchmark-only [--full | --denoise-fraction 1] [--device cuda]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import bench, on_device

from cion_fast.denoise import DenoiseConfig, center_videos, level1, level2, level3, quality
from cion_fast.denoise.auto import auto_thresholds, candidates_per_decision, cross_video_sample, label_free_estimate

SIZES = {"default": {"luperson_1/100": 0.01}, "full": {"luperson_1/4": 0.25}}  # fractions of LUPerson-NL
FULL = {"frames": 10_700_000, "tracklets": 434_000, "videos": 21_000}


def luperson_like(fraction: float, directory, dim: int = 256, seed: int = 0):
    """(features float16 [M, D] memory-mapped read-only from ``directory/features.npy``, as
    ``cion-fast denoise`` maps a features file; offsets [N+1], video per tracklet [N], frame
    index [M], identity [M])."""
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
    path = Path(directory) / "features.npy"
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(num_frames, dim))
    chunk = 1 << 20
    for lo in range(0, num_frames, chunk):
        hi = min(lo + chunk, num_frames)
        rows = people[identity[lo:hi]] + cameras[camera[lo:hi]]
        rows += rng.standard_normal(rows.shape, dtype=np.float32) * np.float32(0.5 / np.sqrt(dim))
        features[lo:hi] = rows
    features.flush()
    del features
    return np.load(path, mmap_mode="r"), offsets, video, frame_index, identity


@pytest.fixture(scope="module")
def pipeline(size, device, request, tmp_path_factory):
    """The input; each level's output is kept for the next (a test that runs alone computes the
    levels before it untimed). The features file and the centred copy (10 GB at full size) are
    deleted when the module ends: pytest keeps its last temporary directories."""
    fraction = request.config.getoption("--denoise-fraction") or size
    directory = tmp_path_factory.mktemp("denoise")
    features, offsets, video_ids, frame_index, identity = luperson_like(fraction, directory)
    where = "memory-mapped"
    if device == "cuda":
        features, where = on_device(np.asarray(features), device), "on the GPU"
    yield {"features": features, "device": device, "scratch": None if device == "cuda" else directory / "centred.npy", "offsets": offsets, "video_ids": video_ids, "frame_video": np.repeat(video_ids, np.diff(offsets)),
            "frame_index": frame_index, "identity": identity, "config": DenoiseConfig(), "done": {},
            "group": f"denoise {features.shape[0]:,} frames, {offsets.shape[0] - 1:,} tracklets ({fraction:g} of LUPerson-NL), "
                     f"D = 256 float16 {where}"}
    for path in directory.iterdir():  # (a memory-mapped file stays readable until its last map goes)
        path.unlink()


# As `cion-fast denoise` runs by default: the automatic thresholds before level 1 (the levels use
# the values they choose), the label-free estimate after level 3.
STAGES = ("center videos", "auto thresholds", "level 1", "level 2", "level 3", "estimate")


def _stage(p, name):
    """The call of stage ``name`` on the outputs of the stages before it."""
    done = p["done"]
    config = done.get("auto thresholds", p["config"])
    if name == "center videos":  # on the host into a memory-mapped file, as `cion-fast denoise --scratch DIR` does
        if p["scratch"] is None:
            return lambda: center_videos(p["features"], p["offsets"], p["video_ids"])
        out = lambda: np.lib.format.open_memmap(p["scratch"], mode="w+", dtype=np.float16, shape=p["features"].shape)  # noqa: E731
        return lambda: center_videos(p["features"], p["offsets"], p["video_ids"], out=out())
    centred = done["center videos"]
    if name == "auto thresholds":
        return lambda: auto_thresholds(centred, p["offsets"], p["video_ids"], p["frame_index"], config)[0]
    if name == "level 1":
        return lambda: level1(centred, p["offsets"], config)[0]
    if name == "level 2":
        return lambda: level2(centred, p["frame_video"], p["frame_index"], done["level 1"], config)[0]
    if name == "level 3":
        return lambda: level3(centred, p["frame_video"], p["frame_index"], done["level 2"], config, anchored=done["level 1"] >= 0)[0]
    candidates = candidates_per_decision(p["video_ids"], config)["cross_video"]
    return lambda: label_free_estimate(centred, done["level 3"], p["frame_video"], p["frame_index"],
                                       cross_video_sample(centred, p["offsets"], p["video_ids"], config), candidates,
                                       anchored=done["level 1"] >= 0)


@pytest.mark.parametrize("stage", STAGES)
def test_stage(benchmark, pipeline, stage):
    for before in STAGES[:STAGES.index(stage)]:
        if before not in pipeline["done"]:
            pipeline["done"][before] = _stage(pipeline, before)()
    result = bench(benchmark, _stage(pipeline, stage), role="cion_fast", group=f"{pipeline['group']}: {stage}", rounds=1,
                   warmup=False, device=pipeline["device"])
    pipeline["done"][stage] = result
    if stage == "auto thresholds":
        benchmark.extra_info.update({name: getattr(result, name) for name in ("prune_threshold", "reallocation_threshold",
                                                                              "merge_threshold", "link_threshold")})
    if stage == "level 3":
        q = quality(result, pipeline["identity"], pipeline["frame_video"])
        benchmark.extra_info.update(bcubed_f=q.bcubed_f, bcubed_precision=q.bcubed_precision, images_kept=q.images_kept,
                                    identities=q.identities)
    if stage == "estimate":
        benchmark.extra_info.update(result)
