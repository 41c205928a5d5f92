"""Thresholds from the data (``DenoiseConfig(thresholds="auto")``): the similarity samples and the
AUC against brute-force float64 oracles written from the module's definitions, the rules, and the
pipeline using them."""

from __future__ import annotations

import numpy as np
import pytest

from cion_fast.denoise import DenoiseConfig, denoise
from cion_fast.denoise.auto import (TAIL_ANCHOR, auto_thresholds, candidates_per_decision, label_free_estimate, range_partners,
                                    separation_auc, similarity_distributions, tail_rate, tail_threshold)


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


def _world(rng, people=5, frames=6, dim=12, noise=0.3, videos=2):
    """``videos`` videos; in each, every person is one tracklet of ``frames`` frames seen at the same
    frame indices (so every pair of tracklets of a video is a cannot-link pair)."""
    centres = rng.normal(size=(people, dim))
    rows, offsets, video, frame_index = [], [0], [], []
    for v in range(videos):
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


def _tail_oracle(sample, rate, pure=True):
    """float64 from the rule's statement: the empirical quantile down to TAIL_ANCHOR, beyond it
    a normal tail of atanh(cosine) from the anchor quantile with the body's left scale (or, for
    pure samples, the 0.80-0.95 shoulder's slope when larger)."""
    norm = pytest.importorskip("scipy.stats", reason="scipy's normal quantiles are the oracle's").norm

    z = np.arctanh(np.clip(np.asarray(sample, np.float64), -1 + 1e-7, 1 - 1e-7))
    if rate >= TAIL_ANCHOR:
        return float(np.tanh(np.quantile(z, 1 - rate)))
    scale = np.median(z) - np.quantile(z, norm.cdf(-1))
    if pure:
        scale = max(scale, (np.quantile(z, 0.95) - np.quantile(z, 0.80)) / (norm.isf(0.05) - norm.isf(0.20)))
    return float(np.tanh(np.quantile(z, 1 - TAIL_ANCHOR) + scale * (norm.isf(rate) - norm.isf(TAIL_ANCHOR))))


@pytest.mark.parametrize("seed", [0, 1])
def test_tail_threshold_and_rate_match_the_rule(seed):
    rng = np.random.default_rng(seed)
    sample = np.tanh(rng.normal(rng.uniform(-0.2, 0.2), rng.uniform(0.05, 0.4), size=int(rng.integers(300, 5000))))
    for pure in (True, False):
        for rate in (0.5, 0.1, 0.05, 0.01, 1e-4, 1e-7):
            value = tail_threshold(sample, rate, pure)
            assert value == pytest.approx(_tail_oracle(sample, rate, pure), abs=1e-9)
            if rate < TAIL_ANCHOR:
                assert tail_rate(sample, value, pure) == pytest.approx(rate, rel=1e-6)
    assert tail_threshold(sample, 1e-6) < 1.0
    values = np.r_[np.linspace(-1, 1, 41), sample[:5]]
    np.testing.assert_array_equal(tail_rate(sample, values), [tail_rate(sample, float(v)) for v in values])


def test_tail_rule_refuses_bad_input_by_name():
    with pytest.raises(ValueError, match="sample"):
        tail_threshold(np.array([]), 0.01)
    with pytest.raises(ValueError, match="sample"):
        tail_rate(np.array([0.1, np.nan]), 0.5)
    with pytest.raises(TypeError, match="sample"):
        tail_threshold(np.array(["a"]), 0.01)
    with pytest.raises(ValueError, match="rate"):
        tail_threshold(np.array([0.1, 0.2]), 0.0)
    with pytest.raises(ValueError, match="rate"):
        tail_threshold(np.array([0.1, 0.2]), 1.5)
    with pytest.raises(ValueError, match="value"):
        tail_rate(np.array([0.1, 0.2]), np.inf)


def test_range_partners_and_candidates_match_the_ranges():
    rng = np.random.default_rng(2)
    for window, stride, videos in ((8, 4, 21), (4, 2, 9), (3, 3, 10), (5, 1, 5), (16, 8, 3)):
        ranges = [set(range(r * stride, min(r * stride + window, videos))) for r in range(videos)
                  if r * stride < videos and (r == 0 or (r - 1) * stride + window < videos)]
        lo, hi = range_partners(np.arange(videos), window, stride)
        for v in range(videos):
            partners = set().union(*[r for r in ranges if v in r])
            assert (lo[v], hi[v]) == (min(partners), max(partners))
        video_ids = np.sort(rng.integers(0, videos, 60))
        counts = candidates_per_decision(video_ids, DenoiseConfig(window=window, stride=stride))
        _, rank = np.unique(video_ids, return_inverse=True)
        ranks = rank.max() + 1
        ranges = [set(range(r * stride, min(r * stride + window, ranks))) for r in range(ranks)
                  if r * stride < ranks and (r == 0 or (r - 1) * stride + window < ranks)]
        cross = [sum(1 for u in range(60) if rank[u] != rank[t] and any(rank[u] in r and rank[t] in r for r in ranges))
                 for t in range(60)]
        within = [int((rank == rank[t]).sum()) - 1 for t in range(60)]
        assert counts == {"within_video": max(1, int(np.median(within))), "cross_video": max(1, int(np.median(cross)))}


def test_cross_video_sample_holds_range_candidates_only():
    rng = np.random.default_rng(4)
    feats, offsets, video, frame_index = _world(rng, people=5, videos=12)
    config = DenoiseConfig(window=4, stride=2)
    d = similarity_distributions(feats, offsets, video, frame_index, config=config)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    cent = np.stack([unit[offsets[t]:offsets[t + 1]].sum(0) for t in range(len(offsets) - 1)])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    allowed = {round(float(cent[a] @ cent[b]), 4) for a in range(len(video)) for b in range(len(video))
               if video[a] != video[b] and
               any(r * 2 <= min(video[a], video[b]) and max(video[a], video[b]) < r * 2 + 4 for r in range(12))}
    assert d["cross_video"].shape[0] == len(video)
    assert all(round(float(c), 4) in allowed for c in d["cross_video"])


def test_rules_and_the_pipeline_use_them():
    rng = np.random.default_rng(5)
    feats, offsets, video, frame_index = _world(rng, people=8)
    config, report = auto_thresholds(feats, offsets, video, frame_index)
    d = similarity_distributions(feats, offsets, video, frame_index)
    counts = candidates_per_decision(video, DenoiseConfig())
    cap = float(np.median(d["centroid_positive"]))
    rate = DenoiseConfig().false_merge_rate
    expected = {
        "prune_threshold": 0.5 * (np.median(d["frame_negative"]) + np.median(d["frame_positive"])),
        "reallocation_threshold": _tail_oracle(d["frame_negative"], rate / counts["within_video"]),
        "merge_threshold": min(_tail_oracle(d["centroid_negative"], rate / counts["within_video"]), cap),
        "link_threshold": min(_tail_oracle(d["cross_video"], rate / counts["cross_video"], pure=False), cap),
    }
    for name, value in expected.items():
        assert getattr(config, name) == pytest.approx(value, abs=1e-4)
        assert report["thresholds"][name] == getattr(config, name)
    for name, decision in report["decisions"].items():
        assert decision["value"] == report["thresholds"][name]
        if not decision["capped"]:
            assert decision["false_merges_per_decision"] == pytest.approx(rate, rel=0.05)
    assert config.thresholds == "fixed" and 0.9 < report["separation"]["centroid_auc"] <= 1.0
    result = denoise(feats, offsets, video, frame_index, DenoiseConfig(thresholds="auto", center_videos=False))
    assert result.calibration["thresholds"] == report["thresholds"]
    assert result.config.link_threshold == config.link_threshold
    # Well-separated people: every person's two tracklets (one per video) end up as one identity.
    person = np.tile(np.repeat(np.arange(8), 6), 2)
    for p in range(8):
        assert len(np.unique(result.labels[person == p])) == 1
    assert len(np.unique(result.labels)) == 8
    assert result.estimate["precision"] > 0.99 and result.estimate["cannot_link_violations"] == 0


def test_false_merge_rate_is_the_one_knob():
    rng = np.random.default_rng(6)
    feats, offsets, video, frame_index = _world(rng, people=8, videos=6)
    strict, _ = auto_thresholds(feats, offsets, video, frame_index, DenoiseConfig(false_merge_rate=1e-4))
    loose, _ = auto_thresholds(feats, offsets, video, frame_index, DenoiseConfig(false_merge_rate=0.5))
    for name in ("reallocation_threshold", "merge_threshold", "link_threshold"):
        assert getattr(strict, name) >= getattr(loose, name)
    with pytest.raises(ValueError, match="false_merge_rate"):
        DenoiseConfig(false_merge_rate=0.0)


def _estimate_oracle(labels, parts_wrong):
    """BCubed precision from its definition when the parts listed in ``parts_wrong`` are other
    people: each such part is a class of its own."""
    truth = labels.copy()
    for k, part in enumerate(parts_wrong):
        truth[part] = 1000 + k
    from cion_fast.denoise import quality

    return quality(labels, truth).bcubed_precision


def test_label_free_estimate_flags_a_wrong_part_and_counts_violations():
    rng = np.random.default_rng(7)
    people = rng.normal(size=(3, 64))
    who = np.repeat([0, 0, 0, 1], 6)                 # video 3 holds someone else
    feats = people[who] + 0.05 * rng.normal(size=(24, 64))
    video = np.repeat([0, 1, 2, 3], 6)
    frame = np.tile(np.arange(6), 4)
    negatives = np.tanh(rng.normal(0, 0.12, 5000))
    labels = np.zeros(24, np.int64)
    est = label_free_estimate(feats, labels, video, frame, negatives, candidates=100)
    assert est["parts"] == 4 and est["linked_identities"] == 1 and est["cannot_link_violations"] == 0
    assert est["false_part_rate"] == pytest.approx(0.25, abs=0.01)
    assert est["precision"] == pytest.approx(_estimate_oracle(labels, [np.arange(18, 24)]), abs=0.01)
    clean = label_free_estimate(feats, np.repeat([0, 0, 0, 1], 6), video, frame, negatives, candidates=100)
    assert clean["precision"] > 0.999 and clean["false_part_rate"] < 0.001
    # two frames of one identity at one moment of one video: a violation
    clash = np.r_[0, 0, np.full(22, -1)]
    assert label_free_estimate(feats, clash, np.zeros(24, np.int64), np.zeros(24, np.int64), negatives, 100)[
        "cannot_link_violations"] == 1


def test_no_certain_negatives_is_a_clear_error():
    feats = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="fixed thresholds"):
        auto_thresholds(feats, np.array([0, 6, 12]), np.array([0, 1]), np.tile(np.arange(6), 2))
    with pytest.raises(ValueError, match="thresholds must be one of"):
        DenoiseConfig(thresholds="sometimes")
