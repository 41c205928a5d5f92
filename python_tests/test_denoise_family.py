"""The world family (cion_fast.denoise.worlds): the generator keeps its ground truth honest, and
on the small members the automatic thresholds stay within 0.03 BCubed F of the best fixed
thresholds found with ground truth, and never below level 2 (issue: denoising must hold on
tracklets it was never tuned on). The whole table: benchmarks/denoise_family.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cion_fast.denoise import DenoiseConfig, denoise
from cion_fast.denoise.worlds import FAMILY, HELD_OUT, FeatureWorldConfig, generate_feature_world, oracle_sweep


def test_worlds_follow_their_config():
    config = FeatureWorldConfig(videos=30, contamination=0.1, fragmentation=0.5, seed=3)
    world = generate_feature_world(config)
    again = generate_feature_world(config)
    np.testing.assert_array_equal(world.features, again.features)       # deterministic in the seed
    assert np.all(np.diff(world.video_ids) >= 0) and world.video_ids.max() < config.videos
    lengths = np.diff(world.offsets)
    assert lengths.min() >= 2
    # every tracklet's majority person; the rest of its frames are the contamination
    owner = np.array([np.bincount(world.identity[a:b]).argmax() for a, b in zip(world.offsets[:-1], world.offsets[1:])])
    foreign = (world.identity != np.repeat(owner, lengths)).mean()
    assert 0.3 * config.contamination < foreign < 1.5 * config.contamination
    # a person is at most once per video at any moment (fragments of one track never overlap)
    keys = np.stack([np.repeat(owner, lengths), world.frame_video, world.frame_index], axis=1)
    assert np.unique(keys, axis=0).shape[0] == keys.shape[0]
    # fragmentation: some people have two tracklets in one video
    pairs = np.unique(np.stack([owner, world.video_ids], axis=1), axis=0)
    assert pairs.shape[0] < owner.shape[0]
    with pytest.raises(ValueError, match="reappear"):
        FeatureWorldConfig(reappear=0.7, far_reappear=0.5)
    with pytest.raises(TypeError, match="tracks_per_video"):
        FeatureWorldConfig(tracks_per_video=3)
    with pytest.raises(ValueError, match="tracks_per_video"):
        FeatureWorldConfig(tracks_per_video=(1, 10**9))
    with pytest.raises(ValueError, match="frames"):
        FeatureWorldConfig(videos=100_000, tracks_per_video=(1, 1000), track_length=(2, 1000), video_length=1000)


def test_family_is_wide_and_keeps_members_apart():
    assert len(FAMILY) >= 12 and set(HELD_OUT) <= set(FAMILY)
    dims = [c.dim for c in FAMILY.values()]
    videos = [c.videos for c in FAMILY.values()]
    assert min(dims) <= 16 and max(dims) >= 512 and min(videos) <= 10 and max(videos) >= 2000
    assert min(c.tracks_per_video[0] for c in FAMILY.values()) <= 2
    assert max(c.tracks_per_video[1] for c in FAMILY.values()) >= 60
    assert len({(c.window, c.stride) for c in FAMILY.values()}) >= 3


# The small members (seconds each, oracle sweep included); held-out ones among them.
SMALL = ("tiny", "sparse", "fresh-d128-sparse-far")


@pytest.mark.parametrize("name", SMALL)
def test_auto_is_near_the_oracle_and_never_below_level_2(name):
    world = generate_feature_world(FAMILY[name])
    base = DenoiseConfig(window=world.config.window, stride=world.config.stride)
    result = denoise(world.features, world.offsets, world.video_ids, world.frame_index,
                     dataclasses.replace(base, thresholds="auto"))
    rows = result.quality(world.identity)
    _, oracle_f = oracle_sweep(world, base, passes=1)
    assert rows["level 3"].bcubed_f >= oracle_f - 0.03
    assert rows["level 3"].bcubed_f >= rows["level 2"].bcubed_f
    assert result.estimate["cannot_link_violations"] == 0


def test_estimate_falls_when_identities_are_over_linked():
    world = generate_feature_world(FAMILY["tiny"])
    run = lambda **kw: denoise(world.features, world.offsets, world.video_ids, world.frame_index,  # noqa: E731
                               DenoiseConfig(**kw))
    good, over = run(thresholds="auto"), run(link_threshold=0.2)
    true = [r.quality(world.identity)["level 3"].bcubed_precision for r in (good, over)]
    assert true[0] > true[1] + 0.1
    assert good.estimate["precision"] > over.estimate["precision"] + 0.05
    assert good.estimate["false_part_rate"] < over.estimate["false_part_rate"]
