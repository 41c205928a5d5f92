"""cion_fast.denoise: every level on hand-built cases with known answers, then whole pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.denoise import DenoiseConfig, center_videos, denoise, denoise_tracklets, level1, level2, level3
from cion_fast.denoise.levels import cannot_link_pairs, constrained_forest
from cion_fast.features import oracle_features

DIM = 16


def people(count, seed=0):
    """Orthonormal person directions."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(DIM, DIM)))
    return q[:count]


def frames_of(vectors, noise=0.02, seed=1):
    vectors = np.asarray(vectors, dtype=np.float64)
    return (vectors + noise * np.random.default_rng(seed).normal(size=vectors.shape)).astype(np.float32)


def at_angles(degrees):
    """Unit vectors in a plane at the given angles (cosine of two = cos of the angle between)."""
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    out = np.zeros((len(radians), DIM))
    out[:, 0], out[:, 1] = np.cos(radians), np.sin(radians)
    return out


def assert_same_partition(labels, expected):
    """labels and expected group the frames identically (same -1 frames, same blocks)."""
    labels, expected = np.asarray(labels), np.asarray(expected)
    np.testing.assert_array_equal(labels < 0, expected < 0)
    kept = expected >= 0
    pairs = np.stack([labels[kept], expected[kept]], axis=1)
    assert len(np.unique(pairs, axis=0)) == len(np.unique(labels[kept])) == len(np.unique(expected[kept])), (labels, expected)


# ---------------------------------------------------------------------------------------------- level 1


def test_level1_removes_contamination_and_short_tracklets():
    a, b, c = people(3)
    features = frames_of([a, a, a, b, a, a, a, c, c, c, c, a])
    # tracklet 0: A with one frame of B; tracklet 1: a single frame; tracklet 2: C.
    offsets = np.array([0, 7, 8, 12])
    features[7] = frames_of([b])[0]
    labels, summary = level1(features, offsets)
    np.testing.assert_array_equal(labels, [0, 0, 0, -1, 0, 0, 0, -1, 1, 1, 1, -1])
    assert summary == {"images": 9, "identities": 2, "frames_pooled": 3, "tracklets_dropped": 1}


def test_level1_cuts_an_identity_switch_tail():
    a, b = people(2)
    features = frames_of([a] * 6 + [b] * 3)
    labels, _ = level1(features, np.array([0, 9]))
    np.testing.assert_array_equal(labels, [0] * 6 + [-1] * 3)
    # A lower threshold keeps the tail: the threshold is what decides.
    kept, _ = level1(features, np.array([0, 9]), DenoiseConfig(prune_threshold=-1.0))
    np.testing.assert_array_equal(kept, [0] * 9)


# ---------------------------------------------------------------------------------------------- level 2


def test_level2_merges_two_fragments_of_one_person():
    a, b = people(2)
    features = frames_of([a] * 10 + [b] * 5)
    video = np.zeros(15, np.int64)
    index = np.r_[0:5, 10:15, 0:5]
    labels, summary = level2(features, video, index, np.repeat([0, 1, 2], 5))
    np.testing.assert_array_equal(labels, [0] * 10 + [1] * 5)
    assert summary["merges"] == 1 and summary["merges_refused_cannot_link"] == 0


def test_level2_never_merges_across_videos():
    (a,) = people(1)
    labels, _ = level2(frames_of([a] * 6), np.repeat([0, 1], 3), np.r_[0:3, 0:3], np.repeat([0, 1], 3))
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])


def test_level2_cannot_link_pair_is_never_merged():
    look_alike = at_angles([0, 20])  # cosine 0.94 >= merge threshold
    features = frames_of(np.repeat(look_alike, 5, axis=0))
    video = np.zeros(10, np.int64)
    index = np.r_[0:5, 3:8]  # both seen at frames 3 and 4: two different people
    labels = np.repeat([0, 1], 5)
    separate, summary = level2(features, video, index, labels)
    np.testing.assert_array_equal(separate, labels)
    assert summary["merges_refused_cannot_link"] == 1
    merged, _ = level2(features, video, index, labels, DenoiseConfig(cannot_link=False))
    np.testing.assert_array_equal(merged, np.zeros(10))


def test_level2_cannot_link_holds_through_a_chain():
    # T0 ~ T1 (cos 0.94), T1 ~ T2 (cos 0.91), T0 ~ T2 (0.71): all above tau3, but T0 and T2
    # share frame 4. The strongest merge (T0, T1) goes first; then T2 may join neither.
    features = frames_of(np.repeat(at_angles([0, 20, 45]), 4, axis=0), noise=0.0)
    video = np.zeros(12, np.int64)
    index = np.r_[1:5, 10:14, 4:8]
    labels = np.repeat([0, 1, 2], 4)
    result, summary = level2(features, video, index, labels)
    np.testing.assert_array_equal(result, [0] * 8 + [1] * 4)
    assert summary["merges_refused_cannot_link"] == 2
    chained, _ = level2(features, video, index, labels, DenoiseConfig(cannot_link=False))
    np.testing.assert_array_equal(chained, np.zeros(12))


def test_level2_reallocates_pooled_frames_within_their_video():
    a, b, c, x = people(4)
    vectors = [a] * 4 + [b] * 4 + [a] * 4 + [c] * 4 + [a, b, x, c]
    video = np.r_[np.zeros(8), np.ones(8), np.zeros(4)].astype(np.int64)
    index = np.r_[0:4, 0:4, 0:4, 0:4, 8, 9, 8, 6]
    # tracklets: A and B in video 0, A and C in video 1; pooled (video 0): A, B, an unknown X,
    # and C, who is only in video 1 -> discarded.
    labels = np.r_[np.repeat([0, 1, 2, 3], 4), [-1] * 4]
    result, summary = level2(frames_of(vectors), video, index, labels)
    expected = np.r_[np.repeat([0, 1, 2, 3], 4), [0, 1, -1, -1]]
    np.testing.assert_array_equal(result, expected)
    assert summary["frames_reallocated"] == 2 and summary["frames_discarded"] == 2


def test_level2_frame_window():
    (a,) = people(1)
    features = frames_of([a] * 5)
    args = (features, np.zeros(5, np.int64), np.array([0, 1, 2, 3, 30]), np.array([0, 0, 0, 0, -1]))
    assert level2(*args, DenoiseConfig(frame_window=5))[0][4] == -1
    assert level2(*args, DenoiseConfig(frame_window=27))[0][4] == 0
    assert level2(*args, DenoiseConfig(frame_window=None))[0][4] == 0


def test_level2_reallocated_frames_neither_wait_for_free_moments_nor_make_constraints():
    (a, b) = people(2)
    # Person a's track is cut in two (frames 0-3 and 10-13); tracklet 2 (person b, frames 0-13)
    # held a crop of a at frame 11, when a's own second piece runs (pooled by level 1). The crop
    # joins a group of a although that group is at frame 11 already, and its moment does not stop
    # a's two pieces from merging.
    features = frames_of([a] * 8 + [b] * 14 + [a])
    index = np.r_[0:4, 10:14, 0:14, 11]
    labels = np.r_[[0] * 4, [1] * 4, [2] * 14, -1]
    result, summary = level2(features, np.zeros(23, np.int64), index, labels)
    np.testing.assert_array_equal(result, np.r_[[0] * 8, [1] * 14, 0])
    assert summary["frames_reallocated"] == 1 and summary["merges_refused_cannot_link"] == 0


def test_level2_two_pooled_frames_of_one_moment_may_both_join():
    a, b = people(2)
    near, far = frames_of([a], noise=0.0)[0], (0.8 * a + 0.6 * b).astype(np.float32)
    features = np.concatenate([frames_of([a] * 3), [near, far]])
    result, _ = level2(features, np.zeros(5, np.int64), np.array([0, 1, 2, 7, 7]), np.array([0, 0, 0, -1, -1]))
    np.testing.assert_array_equal(result, [0, 0, 0, 0, 0])


def test_level2_rechecks_merged_identities():
    # Two tracklets merge (cos 0.66 >= 0.62), but inside the merged identity the second one's
    # frames are far from the rest (re-check with a stricter tau1) and are removed.
    features = frames_of(np.repeat(at_angles([0, 48.7]), [6, 2], axis=0), noise=0.0)
    config = DenoiseConfig(prune_threshold=0.9, merge_threshold=0.62)
    result, summary = level2(features, np.zeros(8, np.int64), np.r_[0:6, 10:12], np.repeat([0, 1], [6, 2]), config)
    np.testing.assert_array_equal(result, [0] * 6 + [-1] * 2)
    assert summary["merges"] == 1 and summary["frames_removed_by_recheck"] == 2


def test_level2_rejects_groups_spanning_videos():
    with pytest.raises(ValueError, match="spans several videos"):
        level2(frames_of(people(2)), np.array([0, 1]), np.array([0, 0]), np.array([0, 0]))


def test_cannot_link_pairs_and_constrained_forest():
    pairs = cannot_link_pairs(np.array([0, 1, 2, 0, 3]), np.array([0, 0, 0, 1, 1]), np.array([5, 5, 5, 5, 6]))
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2], [1, 2]])
    # 0-3 joins; 1-3 would join 1 and 0 (cannot-link): refused; 3-4 and 2-4 join; 0-4 is inside
    # one component already (skipped); 1-2 would again join 1 and 0: refused.
    edges = np.array([[0, 3], [1, 3], [3, 4], [2, 4], [0, 4], [1, 2]])
    accepted, refused = constrained_forest(5, edges, np.array([[0, 1]]))
    np.testing.assert_array_equal(accepted, [0, 2, 3])
    assert refused == 2
    # Without constraints: Kruskal's maximum spanning forest.
    accepted, refused = constrained_forest(5, edges, np.empty((0, 2), np.int64))
    np.testing.assert_array_equal(accepted, [0, 1, 2, 3])
    assert refused == 0


# ---------------------------------------------------------------------------------------------- level 3


def one_identity_per_video(num_videos, repeat_in, seed=0):
    """Video v shows person v; person 0 also appears in video ``repeat_in``."""
    q = np.linalg.qr(np.random.default_rng(seed).normal(size=(64, 64)))[0][:num_videos]
    identity = np.r_[np.repeat(np.arange(num_videos), 3), [0, 0, 0]]
    video = np.r_[np.repeat(np.arange(num_videos), 3), [repeat_in] * 3]
    order = np.argsort(video, kind="stable")
    features = (q[identity] + 0.01 * np.random.default_rng(seed + 1).normal(size=(len(identity), 64)))[order]
    labels = np.r_[np.repeat(np.arange(num_videos), 3), [num_videos] * 3][order]
    return features.astype(np.float32), video[order], np.tile(np.arange(3), num_videos + 1), labels, identity[order]


def test_level3_links_a_cross_video_pair_inside_the_range():
    features, video, index, labels, identity = one_identity_per_video(10, repeat_in=3)
    result, summary = level3(features, video, index, labels, DenoiseConfig(min_images=1))
    assert_same_partition(result, identity)
    assert summary["links"] == 1 and summary["identities"] == 10


def test_level3_does_not_link_outside_the_range():
    # 21 videos, window 8, stride 4: videos 0 and 20 are never in one range.
    features, video, index, labels, identity = one_identity_per_video(21, repeat_in=20)
    separate, summary = level3(features, video, index, labels, DenoiseConfig(min_images=1))
    assert summary["links"] == 0 and len(np.unique(separate)) == 22
    wide, _ = level3(features, video, index, labels, DenoiseConfig(min_images=1, window=21, stride=21))
    assert_same_partition(wide, identity)


def test_level3_guard_splits_a_weak_chain():
    # A (10 frames) -- B (2 frames) -- C (2 frames): A.B = cos 44 deg = 0.72, B.C = cos 45 deg =
    # 0.707, both >= 0.7, A.C = 0.02. The merged centroid sits near A, C's cosine to it is 0.30:
    # the guard cuts the weakest link (B-C); A+B then passes (B's cosine 0.80).
    features = frames_of(np.repeat(at_angles([0, 44, 89]), [10, 2, 2], axis=0), noise=0.0)
    video = np.repeat([0, 1, 2], [10, 2, 2])
    index = np.r_[0:10, 0:2, 0:2]
    labels = np.repeat([0, 1, 2], [10, 2, 2])
    config = DenoiseConfig(link_threshold=0.7, min_images=1)
    result, summary = level3(features, video, index, labels, config)
    np.testing.assert_array_equal(result, np.repeat([0, 0, 1], [10, 2, 2]))
    assert summary["links"] == 2 and summary["links_cut_by_guard"] == 1


def test_level3_guard_keeps_a_consistent_chain():
    features = frames_of(np.repeat(at_angles([0, 10, 20]), 3, axis=0), noise=0.0)
    result, summary = level3(features, np.repeat([0, 1, 2], 3), np.tile(np.arange(3), 3), np.repeat([0, 1, 2], 3), DenoiseConfig(min_images=1))
    np.testing.assert_array_equal(result, np.zeros(9))
    assert summary["links_cut_by_guard"] == 0


def test_level3_never_joins_a_cannot_link_pair_through_another_video():
    # P and Q (video 0, both at frame 2) both resemble X (video 1): the links P-X (cos 0.98) and
    # Q-X (0.95) would put P and Q in one identity; the weaker link is refused.
    features = frames_of(np.repeat(at_angles([0, 30, 12]), 3, axis=0), noise=0.0)
    video = np.repeat([0, 0, 1], 3)
    index = np.r_[0:3, 2:5, 0:3]
    labels = np.repeat([0, 1, 2], 3)
    config = DenoiseConfig(link_threshold=0.8, min_images=1)
    result, summary = level3(features, video, index, labels, config)
    np.testing.assert_array_equal(result, np.repeat([0, 1, 0], 3))
    assert summary["links"] == 2 and summary["links_refused_cannot_link"] == 1 and summary["links_cut_by_guard"] == 0
    joined, _ = level3(features, video, index, labels, DenoiseConfig(link_threshold=0.8, min_images=1, cannot_link=False))
    np.testing.assert_array_equal(joined, np.zeros(9))


def test_level3_constraints_come_from_anchored_frames_only():
    # The same P, Q, X, but Q's frame 2 is a reallocated frame (not anchored): P and Q no longer
    # provably co-occur, so both links stand; a wrong mask is refused by name.
    features = frames_of(np.repeat(at_angles([0, 30, 12]), 3, axis=0), noise=0.0)
    video, index, labels = np.repeat([0, 0, 1], 3), np.r_[0:3, 2:5, 0:3], np.repeat([0, 1, 2], 3)
    anchored = np.ones(9, bool)
    anchored[3] = False
    config = DenoiseConfig(link_threshold=0.8, min_images=1)
    np.testing.assert_array_equal(level3(features, video, index, labels, config, anchored=anchored)[0], np.zeros(9))
    with pytest.raises(TypeError, match="anchored"):
        level3(features, video, index, labels, config, anchored=np.ones(9))
    with pytest.raises(ValueError, match="anchored"):
        level3(features, video, index, labels, config, anchored=np.ones(8, bool))


def test_level3_mutual_k_and_min_images():
    # X in video 1 resembles both A and B of video 0; with mutual_k=1 only its best match links.
    features = frames_of(np.repeat(at_angles([0, 25, 10]), [3, 3, 3], axis=0), noise=0.0)
    video = np.repeat([0, 0, 1], 3)
    index = np.r_[0:3, 10:13, 0:3]
    labels = np.repeat([0, 1, 2], 3)
    both, _ = level3(features, video, index, labels, DenoiseConfig(link_threshold=0.8, min_images=1))
    np.testing.assert_array_equal(both, np.zeros(9))
    mutual, _ = level3(features, video, index, labels, DenoiseConfig(link_threshold=0.8, mutual_k=1, min_images=1))
    np.testing.assert_array_equal(mutual, np.repeat([0, 1, 0], 3))
    pruned, summary = level3(features, video, index, labels, DenoiseConfig(link_threshold=0.8, mutual_k=1, min_images=4))
    np.testing.assert_array_equal(pruned, np.repeat([0, -1, 0], 3))
    assert summary["identities_dropped_min_images"] == 1 and summary["frames_dropped_min_images"] == 3


# ---------------------------------------------------------------------------------------------- pipeline


def toy_world(seed=0, identities=60, videos=24, dim=64):
    """Tracker-like output with ground truth: appearances in nearby videos, fragmentation,
    identity switches, contamination and false positives; oracle features."""
    rng = np.random.default_rng(seed)
    rows = []  # (tracklet, video, frame index, identity)
    tracklet = 0
    for v in range(videos):
        centre = v * identities / videos
        present = np.unique(np.clip(rng.normal(centre, 4, 6).round().astype(int), 0, identities - 1))
        for person in present:
            start, length = int(rng.integers(0, 60)), int(rng.integers(10, 30))
            truth = np.full(length, person)
            others = present[present != person]
            if others.size and rng.random() < 0.2:  # identity switch: the tail is someone else
                truth[int(length * 0.7):] = rng.choice(others)
            if others.size and rng.random() < 0.3:  # contamination: a frame of a neighbour
                truth[rng.integers(0, length)] = rng.choice(others)
            cuts = [0, length]
            if rng.random() < 0.4:  # fragmentation
                cuts = [0, int(rng.integers(4, length - 4)), length]
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                rows += [(tracklet, v, start + i, truth[i]) for i in range(lo, hi)]
                tracklet += 1
        for _ in range(2):  # false positives: short background tracks
            start = int(rng.integers(0, 80))
            rows += [(tracklet, v, start + i, -1) for i in range(3)]
            tracklet += 1
    rows = np.array(rows, dtype=np.int64)
    offsets = np.r_[0, np.cumsum(np.bincount(rows[:, 0]))]
    video_ids = rows[offsets[:-1], 1]
    features = oracle_features(rows[:, 3], rows[:, 1] % 4, dim=dim, seed=seed)
    return features, offsets, video_ids, rows[:, 2], rows[:, 3], rows[:, 1]


def test_pipeline_each_level_improves_bcubed_f_on_a_toy_world():
    features, offsets, video_ids, index, identity, frame_video = toy_world()
    result = denoise(features, offsets, video_ids, index)
    assert len(result.levels) == 3 and all(labels.dtype == np.int64 for labels in result.levels)
    table = result.quality(identity, frame_video)
    scores = [q.bcubed_f for q in table.values()]
    assert all(later > earlier for earlier, later in zip(scores, scores[1:])), table
    assert scores[-1] > 0.85, table
    for labels, summary in zip(result.levels, result.summary):
        kept = labels[labels >= 0]
        np.testing.assert_array_equal(np.unique(kept), np.arange(summary["identities"]))
        assert summary["images"] == kept.size and summary["seconds"] >= 0


def test_pipeline_is_deterministic_and_validates_input():
    features, offsets, video_ids, index, _, _ = toy_world(seed=1, identities=20, videos=6)
    first = denoise(features, offsets, video_ids, index)
    second = denoise(features.astype(np.float64), offsets, video_ids, index)
    for a, b in zip(first.levels, second.levels):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="offsets"):
        denoise(features, offsets[:-1], video_ids[:-1], index)
    with pytest.raises(ValueError, match="video_ids"):
        denoise(features, offsets, video_ids[:-1], index)
    with pytest.raises(ValueError, match="frame_index"):
        denoise(features, offsets, video_ids, -index - 1)
    bad = features.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="features"):
        denoise(bad, offsets, video_ids, index)
    with pytest.raises(TypeError, match="config"):
        denoise(features, offsets, video_ids, index, config={"window": 4})


def test_denoise_tracklets_uses_the_tracklet_fields():
    features, offsets, video_ids, index, _, _ = toy_world(seed=2, identities=20, videos=6)

    class Tracklets:  # the attributes denoise_tracklets reads
        pass

    tracklets = Tracklets()
    tracklets.offsets, tracklets.video, tracklets.frame_index, tracklets.features = offsets, video_ids, index, features
    expected = denoise(features, offsets, video_ids, index)
    for a, b in zip(denoise_tracklets(tracklets).levels, expected.levels):
        np.testing.assert_array_equal(a, b)
    tracklets.features = None
    with pytest.raises(ValueError, match="features"):
        denoise_tracklets(tracklets)


def test_config_validation():
    with pytest.raises(ValueError, match="merge_threshold"):
        DenoiseConfig(merge_threshold=1.5)
    with pytest.raises(TypeError, match="window"):
        DenoiseConfig(window=2.5)
    with pytest.raises(ValueError, match="mutual_k"):
        DenoiseConfig(mutual_k=0)
    with pytest.raises(ValueError, match="unknown"):
        DenoiseConfig.from_dict({"tau9": 1})
    assert DenoiseConfig.from_dict(DenoiseConfig().as_dict()) == DenoiseConfig()


@pytest.fixture(scope="module")
def quick_world():
    from cion_fast.data.synth import WorldConfig, generate

    return generate(WorldConfig.quick()).tracklets


def test_quick_synthetic_world_oracle_features_every_level_improves(quick_world):
    t = quick_world
    features = oracle_features(t.identity, np.repeat(t.camera, t.lengths))
    table = denoise_tracklets(t, features).quality(t.identity, np.repeat(t.video, t.lengths))
    scores = [q.bcubed_f for q in table.values()]
    assert all(later > earlier for earlier, later in zip(scores, scores[1:])), table
    assert table["level 3"].bcubed_f > 0.9 and table["level 3"].cross_video_linked > 0.8, table


def test_quick_synthetic_world_stripe_features(quick_world):
    from cion_fast.features import stripe_histogram

    t = quick_world
    table = denoise_tracklets(t, stripe_histogram(t.frames)).quality(t.identity, np.repeat(t.video, t.lengths))
    assert table["level 2"].bcubed_f > table["tracklets"].bcubed_f
    assert table["level 3"].bcubed_f > table["level 2"].bcubed_f + 0.03, table


def test_center_videos_weights_by_tracklets_per_video():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(9, DIM)).astype(np.float32)
    offsets = np.array([0, 3, 5, 9])  # video 4: tracklets 0 and 1; video 2: tracklet 2 alone
    centred = center_videos(features, offsets, np.array([4, 4, 2]))
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(centred[5:], unit[5:], rtol=1e-6)  # one tracklet: unchanged
    np.testing.assert_allclose(centred[:5], unit[:5] - 0.5 * unit[:5].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert center_videos(features.astype(np.float16), offsets, np.array([4, 4, 2])).dtype == np.float16


def small_chunks(monkeypatch):
    """Chunks of frames, of pairs and of segment rows far smaller than any real input: every
    chunk boundary of the levels falls inside the toy worlds."""
    from cion_fast.denoise import levels

    monkeypatch.setattr(levels, "_CHUNK_ROWS", 37)
    monkeypatch.setattr(levels, "_CHUNK_PAIRS", 101)
    monkeypatch.setattr(levels, "_SEGMENT_BLOCK", 3)


def test_chunk_boundaries_do_not_change_the_result(monkeypatch):
    features, offsets, video_ids, index, _, _ = toy_world(seed=3, identities=30, videos=10)
    expected = denoise(features, offsets, video_ids, index)
    small_chunks(monkeypatch)
    chunked = denoise(features, offsets, video_ids, index)
    for a, b in zip(expected.levels, chunked.levels):
        np.testing.assert_array_equal(a, b)
    assert expected.summary[1]["frames_reallocated"] == chunked.summary[1]["frames_reallocated"] > 0


def test_a_level_that_keeps_nothing_gives_an_empty_labelling_not_an_index_error():
    # issue 14: level 1 pruning every frame made level 2 index an empty identity table
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 8)).astype(np.float32)
    result = denoise(features, np.arange(0, 41, 4), np.zeros(10, np.int64), np.tile(np.arange(4), 10),
                     DenoiseConfig(prune_threshold=0.99))
    assert all((labels == -1).all() for labels in result.levels)
    assert [s["images"] for s in result.summary] == [0, 0, 0]
    assert result.summary[1]["frames_discarded"] == 40


def test_unsorted_video_ids_are_refused_as_by_sliding_range_link():
    """One rule for every cross-video step: tracklets grouped by video, video ids non-decreasing."""
    from cion_fast.ops import sliding_range_link

    features = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"video_ids must be sorted \(tracklets ordered by video\), got video_ids\[1\] = 0 < video_ids\[0\] = 1"):
        denoise(features, [0, 2, 4, 6], [1, 0, 2], np.arange(6))
    with pytest.raises(ValueError, match=r"video_ids must be sorted \(features ordered by video\), got video_ids\[1\] = 0 < video_ids\[0\] = 1"):
        sliding_range_link(features[:3], [1, 0, 2])


def test_scratch_keeps_the_centred_copy_on_disk_with_the_same_labels(tmp_path):
    rng = np.random.default_rng(4)
    people = rng.normal(size=(4, 16))
    identity = np.repeat([0, 0, 1, 2, 1, 3, 3, 2], 5)
    features = (people[identity] + 0.2 * rng.normal(size=(40, 16))).astype(np.float16)
    offsets, videos = np.arange(0, 41, 5), np.array([0, 0, 0, 1, 1, 1, 2, 2])
    frame_index = np.tile(np.arange(5), 8)
    in_memory = denoise(features, offsets, videos, frame_index)
    on_disk = denoise(features, offsets, videos, frame_index, scratch=tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(in_memory.levels, on_disk.levels))
    assert list(tmp_path.iterdir()) == []  # the scratch file is removed
    with pytest.raises(ValueError, match="out must be a writable float16"):
        center_videos(features, offsets, videos, out=np.empty((40, 16), np.float32))


def test_denoise_is_scale_free_and_checks_its_flags():
    # Cosine is scale-free: finite features of any magnitude give the labels of the unscaled ones.
    rng = np.random.default_rng(3)
    identity = np.repeat([0, 0, 1, 2, 1], 4)
    features = rng.normal(size=(3, 16))[identity] + 0.1 * rng.normal(size=(20, 16))
    args = (np.arange(0, 21, 4), np.array([0, 0, 0, 1, 1]), np.tile(np.arange(4), 5) + np.repeat([0, 10, 0, 0, 10], 4))
    expected = denoise(features, *args).labels
    for scale in (1e20, 1e-41, 1e200):
        np.testing.assert_array_equal(denoise(features * scale, *args).labels, expected)
    np.testing.assert_array_equal(denoise((features * 1e20).astype(np.float32), *args).labels, expected)
    with pytest.raises(TypeError, match="progress"):
        denoise(features, *args, progress="no")
