"""cion_fast.denoise.quality: hand-computed examples and an O(M^2) brute-force oracle."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from cion_fast.denoise import format_quality_table, quality

from conftest import requires_torch, torch


def test_hand_computed_example():
    # Clusters {0: a, 1: a, 2: b} and {3: b, 4: b}; frame 5 (b) dropped. |a| = 2, |b| = 4.
    labels = np.array([0, 0, 0, 1, 1, -1])
    truth = np.array([1, 1, 2, 2, 2, 2])
    video = np.array([0, 0, 1, 0, 1, 1])
    q = quality(labels, truth, video)
    assert (q.images, q.images_kept, q.identities, q.true_identities) == (6, 5, 2, 2)
    assert q.purity == pytest.approx(4 / 5)
    # predicted pairs: 3 + 1; right: (0, 1) and (3, 4); true pairs: 1 + 6.
    assert q.pairwise_precision == pytest.approx(2 / 4)
    assert q.pairwise_recall == pytest.approx(2 / 7)
    assert q.pairwise_f1 == pytest.approx(4 / 11)
    # BCubed precision: 2/3, 2/3, 1/3, 1, 1; recall: 1, 1, 1/4, 2/4, 2/4 and 1/4 (dropped).
    assert q.bcubed_precision == pytest.approx(11 / 15)
    assert q.bcubed_recall == pytest.approx(7 / 12)
    assert q.bcubed_f == pytest.approx(154 / 237)
    assert q.fragmentation == pytest.approx(1.5)
    # b's cross-video pairs: (2,3), (3,4), (3,5); only (3,4) shares a cluster.
    assert q.cross_video_linked == pytest.approx(1 / 3)


def test_false_positive_frames_are_people_of_their_own():
    q = quality(np.array([0, 0, 0]), np.array([5, 5, -1]))
    assert q.purity == pytest.approx(2 / 3)
    assert q.pairwise_precision == pytest.approx(1 / 3)
    assert q.pairwise_recall == 1.0
    assert q.bcubed_precision == pytest.approx(5 / 9)
    assert q.bcubed_recall == 1.0
    assert q.true_identities == 1
    assert q.cross_video_linked is None


def test_perfect_and_empty_labellings():
    truth = np.array([3, 3, 4, 4, 4])
    perfect = quality(np.array([9, 9, 2, 2, 2]), truth, np.array([0, 1, 0, 1, 1]))
    for field in ("purity", "pairwise_precision", "pairwise_recall", "bcubed_f", "fragmentation", "cross_video_linked"):
        assert getattr(perfect, field) == 1.0, field
    dropped = quality(np.full(5, -1), truth)
    assert (dropped.images_kept, dropped.identities) == (0, 0)
    assert dropped.pairwise_recall == 0.0
    assert dropped.bcubed_recall == pytest.approx((2 * 1 / 2 + 3 * 1 / 3) / 5)
    assert quality(np.empty(0, np.int64), np.empty(0, np.int64)).images == 0


def brute_force(labels, truth, video):
    """Definitions from the module docstring, one frame / one pair at a time, exact fractions."""
    m = len(labels)
    cls = [t if t >= 0 else ("fp", i) for i, t in enumerate(truth)]
    kept = [i for i in range(m) if labels[i] >= 0]
    known = [i for i in range(m) if truth[i] >= 0]

    def ratio(a, b):
        return Fraction(a, b) if b else Fraction(1)

    precision = ratio(
        sum(Fraction(sum(labels[j] == labels[i] and cls[j] == cls[i] for j in kept), sum(labels[j] == labels[i] for j in kept)) for i in kept),
        len(kept),
    )
    recall = ratio(
        sum(
            Fraction(
                sum(cls[j] == cls[i] and (j == i or (labels[i] >= 0 and labels[j] == labels[i])) for j in range(m)),
                sum(cls[j] == cls[i] for j in range(m)),
            )
            for i in known
        ),
        len(known),
    )
    pairs = list(itertools.combinations(range(m), 2))
    same_pred = [(i, j) for i, j in pairs if labels[i] >= 0 and labels[i] == labels[j]]
    same_true = [(i, j) for i, j in pairs if truth[i] >= 0 and truth[i] == truth[j]]
    hits = [p for p in same_true if p in set(same_pred)]
    cross = [(i, j) for i, j in same_true if video[i] != video[j]]
    clusters = {}
    for i in kept:
        clusters.setdefault(labels[i], []).append(cls[i])
    majority = sum(max(c.count(x) for x in c) for c in clusters.values())
    per_identity = {}
    for i in kept:
        if truth[i] >= 0:
            per_identity.setdefault(truth[i], set()).add(labels[i])
    return {
        "bcubed_precision": precision,
        "bcubed_recall": recall,
        "pairwise_precision": ratio(len(hits), len(same_pred)),
        "pairwise_recall": ratio(len(hits), len(same_true)),
        "purity": ratio(majority, len(kept)),
        "fragmentation": Fraction(sum(len(s) for s in per_identity.values()), len(per_identity)) if per_identity else 1,
        "cross_video_linked": ratio(sum(p in set(same_pred) for p in cross), len(cross)),
    }


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    labels = rng.integers(-1, 5, m) * 3 + 1  # sparse, non-consecutive ids
    labels[labels < 0] = -1
    truth = rng.integers(-1, 4, m)
    video = rng.integers(0, 3, m)
    q = quality(labels, truth, video)
    expected = brute_force(labels.tolist(), truth.tolist(), video.tolist())
    for field, value in expected.items():
        assert getattr(q, field) == pytest.approx(float(value), abs=1e-12), field
    assert q.images_kept == int((labels >= 0).sum())
    assert q.identities == len(set(labels[labels >= 0].tolist()))


def test_renaming_predicted_ids_changes_nothing():
    rng = np.random.default_rng(7)
    labels = rng.integers(-1, 20, 300)
    truth = rng.integers(0, 10, 300)
    renamed = np.where(labels >= 0, 1000 - 7 * labels, -1)
    original, after = quality(labels, truth).as_dict(), quality(renamed, truth).as_dict()
    assert original.keys() == after.keys()
    for key, value in original.items():
        if value is None:  # cross_video_linked without per-frame videos
            assert after[key] is None, key
        else:
            assert after[key] == pytest.approx(value, rel=1e-12), key


@requires_torch
def test_torch_input():
    labels = np.array([0, 0, 1, -1])
    truth = np.array([1, 1, 2, 2])
    assert quality(torch.from_numpy(labels), torch.from_numpy(truth)) == quality(labels, truth)


def test_bad_input():
    with pytest.raises(ValueError, match="true_identity"):
        quality(np.zeros(3, np.int64), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="labels"):
        quality(np.array([-2, 0]), np.array([0, 0]))
    with pytest.raises(TypeError, match="labels"):
        quality(np.zeros(2, np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="video"):
        quality(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(3, np.int64))


def test_table():
    rows = {"tracklets": quality(np.array([0, 1]), np.array([0, 0]), np.array([0, 1])), "level 1": quality(np.array([0, 0]), np.array([0, 0]))}
    text = format_quality_table(rows)
    lines = text.splitlines()
    assert len(lines) == 3 and lines[1].startswith("tracklets") and lines[2].rstrip().endswith("-")
    markdown = format_quality_table(rows, markdown=True)
    assert markdown.splitlines()[1].startswith("|---") and markdown.count("\n") == 3
