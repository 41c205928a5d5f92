"""Thresholds from the data (``DenoiseConfig(thresholds="auto")``): the similarity samples and the
AUC against brute-force float64 oracles written from the module's definitions, the rules, and the
pipeline using them."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.denoise import DenoiseConfig, denoise
from cion_fast.denoise.auto import LINK_Q, MERGE_Q, REALLOCATE_Q, auto_thresholds, separation_auc, similarity_distributions


def _oracle_auc(pos, neg):
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


@pytest.mark.parametrize("seed", range(4))
def test_separation_auc_matches_pair_counting_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 7, size=rng.integers(1, 40)).astype(np.float32) / 7  # many ties
    neg = rng.integers(0, 5, size=rng.integers(1, 30)).astype(np.float32) / 7
    assert separation_auc(pos, neg) == pytest.approx(_oracle_auc(pos, neg), abs=1e-12)
    assert np.isnan(separation_auc(pos, neg[:0]))


def _world(rng, people=5, frames=6, dim=12, noise=0.3):
    """Two videos; in each, every person is one tracklet of ``frames`` frames seen at the same
    frame indices (so every pair of tracklets of a video is a cannot-link pair)."""
    centres = rng.normal(size=(people, dim))
    rows, offsets, video, frame_index = [], [0], [], []
    for v in range(2):
        for p in range(people):
            rows.append(centres[p] + noise * rng.normal(size=(frames, dim)))
            offsets.append(offsets[-1] + frames)
            video.append(v)
            frame_index.extend(range(frames))
    return np.vstack(rows).astype(np.float32), np.array(offsets), np.array(video), np.array(frame_index)


def test_distributions_match_their_definitions():
    rng = np.random.default_rng(3)
    feats, offsets, video, frame_index = _world(rng)
    d = similarity_distributions(feats, offsets, video, frame_index)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))  # noqa: E731
    tracklets = [unit[offsets[t]:offsets[t + 1]].astype(np.float64) for t in range(len(offsets) - 1)]
    positive = [cos(f, t.sum(0) - f) for t in tracklets for f in t]
    np.testing.assert_allclose(np.sort(d["frame_positive"]), np.sort(positive), atol=1e-5)
    halves = [cos(t[: len(t) // 2].sum(0), t[len(t) // 2:].sum(0)) for t in tracklets]
    np.testing.assert_allclose(np.sort(d["centroid_positive"]), np.sort(halves), atol=1e-5)
    pairs = [(a, b) for a in range(len(tracklets)) for b in range(a + 1, len(tracklets)) if video[a] == video[b]]
    negative = [cos(tracklets[a].sum(0), tracklets[b].sum(0)) for a, b in pairs]
    np.testing.assert_allclose(np.sort(d["centroid_negative"]), np.sort(negative), atol=1e-5)
    assert d["frame_negative"].shape[0] == len(pairs)
    assert np.median(d["frame_positive"]) > np.median(d["frame_negative"])


def test_rules_and_the_pipeline_use_them():
    rng = np.random.default_rng(5)
    feats, offsets, video, frame_index = _world(rng, people=8)
    config, report = auto_thresholds(feats, offsets, video, frame_index)
    d = similarity_distributions(feats, offsets, video, frame_index)
    pos_median = float(np.median(d["centroid_positive"]))
    expected = {
        "prune_threshold": 0.5 * (np.median(d["frame_negative"]) + np.median(d["frame_positive"])),
        "reallocation_threshold": np.quantile(d["frame_negative"], REALLOCATE_Q),
        "merge_threshold": min(np.quantile(d["centroid_negative"], MERGE_Q), pos_median),
        "link_threshold": min(np.quantile(d["centroid_negative"], LINK_Q), pos_median),
    }
    for name, value in expected.items():
        assert getattr(config, name) == pytest.approx(value, abs=1e-4)
        assert report["thresholds"][name] == getattr(config, name)
    assert config.thresholds == "fixed" and 0.9 < report["separation"]["centroid_auc"] <= 1.0
    result = denoise(feats, offsets, video, frame_index, DenoiseConfig(thresholds="auto", center_videos=False))
    assert result.calibration["thresholds"] == report["thresholds"]
    assert result.config.link_threshold == config.link_threshold
    # Well-separated people: every person's two tracklets (one per video) end up as one identity.
    person = np.tile(np.repeat(np.arange(8), 6), 2)
    for p in range(8):
        assert len(np.unique(result.labels[person == p])) == 1
    assert len(np.unique(result.labels)) == 8


def test_no_certain_negatives_is_a_clear_error():
    feats = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="fixed thresholds"):
        auto_thresholds(feats, np.array([0, 6, 12]), np.array([0, 1]), np.tile(np.arange(6), 2))
    with pytest.raises(ValueError, match="thresholds must be one of"):
        DenoiseConfig(thresholds="sometimes")
