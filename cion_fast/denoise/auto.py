"""Denoising thresholds chosen from the data itself, without ground truth (``thresholds="auto"``).

Two facts every tracker output gives for free:

* **positives**: frames of one tracklet show one person (mostly: the tracker's errors are rare);
* **certain negatives**: two tracklets present in the same frame of a video are two different
  people (the cannot-link constraint the levels already use).

From the (video-centred) features this module measures five similarity samples:

====================  ==========================================================================
``frame_positive``    a frame vs the mean of the *other* frames of its tracklet
``frame_negative``    a frame vs the mean of a tracklet that shares one of its frame indices
``centroid_positive`` the centroids of the two halves of one tracklet
``centroid_negative`` the centroids of two tracklets that share a frame index
``cross_video``       the centroids of a tracklet and a random tracklet of another video of one
                      of its sliding ranges: level 3's candidates, almost all different people
====================  ==========================================================================

**Each decision faces many candidates.** A pooled frame is compared with every tracklet of its
video, a tracklet with every other tracklet of its video, an identity with every identity of the
other videos of its sliding ranges (hundreds). A threshold that lets a share ``q`` of the
negatives through makes about ``q x candidates`` wrong merges per decision, and connected
components chain them into giant identities. So every threshold is the point where the
*expected number of wrong merges per decision* equals ``DenoiseConfig.false_merge_rate``: the
``1 - rate / candidates`` quantile of the matching negative sample (:func:`tail_threshold`: the
sample's own quantile while it has one, a Gaussian tail beyond it). The negatives of each
decision are:

* reallocation (tau2): ``frame_negative``, candidates = tracklets per video;
* merge (tau3): ``centroid_negative`` (pairs of one video, centred alike), candidates = tracklets
  per video;
* link (tau4): ``cross_video``. Same-frame pairs are *not* used here: two tracklets of one video
  are centred by one mean that holds both, which pulls their cosine down (to -1 in a video of two
  tracklets), so their tail says little about pairs of different videos. Among the cross-video
  candidates the true matches are a small share (a person meets a few of hundreds), which leaves
  the sample's body and its 0.95 quantile the negatives', and the tail model starts there;
  candidates = cross-video tracklets in the ranges of a tracklet (median).

The tail model works on ``atanh(cosine)`` (a Fisher transform; cosines are bounded by 1), from the
0.95 quantile on, with the scale of the sample's body, or of its upper shoulder where that falls
off more slowly and the sample holds certain negatives only (look-alike people).

Merge and link never go above the median of ``centroid_positive`` (so that identities can merge
at all; the report says when that cap binds). Level 1 (tau1) decides one frame against its own
tracklet: the midpoint between the medians of ``frame_negative`` and ``frame_positive`` (a frame
closer to the typical other person than to its tracklet's typical frame is an outlier).

Nothing was fitted to one world: the rule has one knob (the rate) and its only constants are the
anchor quantile of the tail model (0.95) and the sample sizes. The world family of
:mod:`cion_fast.denoise.worlds` measures it against the best thresholds found with ground truth
(docs/DENOISE_FAMILY.md).
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Any

import numpy as np

from cion_fast import _arrays, _xp
from cion_fast._checks import check_int, check_real
from cion_fast.denoise.config import DenoiseConfig
from cion_fast.denoise.levels import (_check_anchored, _expand, _normalised, _pair_cosines, _segment_sums, _set_sums,
                                      cannot_link_pairs)

__all__ = ["RULES", "auto_thresholds", "candidates_per_decision", "choose_thresholds", "cross_video_sample", "range_partners", "label_free_estimate", "separation_auc", "similarity_distributions", "tail_rate",
           "tail_threshold"]

RULES = {
    "prune_threshold": "midpoint of the medians of frame_negative and frame_positive",
    "reallocation_threshold": "tail_threshold(frame_negative, rate / tracklets per video)",
    "merge_threshold": "tail_threshold(centroid_negative, rate / tracklets per video), at most the median of centroid_positive",
    "link_threshold": "tail_threshold(cross_video, rate / cross-video candidates), at most the median of centroid_positive",
}
# At most this many tracklets / cannot-link pairs are sampled (seeded): the quantiles are stable
# long before, and the cost stays O(sample * D).
_MAX_SAMPLES = 20000
# The tail model starts at this upper quantile: below it a sample's own quantiles are used.
TAIL_ANCHOR = 0.05
_GAUSS = NormalDist()


def tail_threshold(sample: np.ndarray, rate: float, pure: bool = True) -> float:
    """The cosine that a share ``rate`` of the population behind ``sample`` (cosines) reaches.

    For ``rate >= TAIL_ANCHOR`` the sample's ``1 - rate`` quantile. Beyond, where a few thousand
    samples hold no information, a Gaussian tail *of the Fisher transform* ``atanh(cosine)``
    (cosines are bounded by 1; in few dimensions their tail is much thinner than a Gaussian's,
    and atanh makes the cosine of random directions nearly Gaussian at any dimension): from the
    ``1 - TAIL_ANCHOR`` quantile (a heavier shoulder of the sample moves it up) onwards with the
    scale of the sample's body (median minus the 15.9 % quantile: the left side, which the few
    positives mixed into ``cross_video`` do not reach). A ``pure`` sample (certain negatives
    only) also lends its shoulder's slope (between the 0.80 and 0.95 quantiles) when it falls off
    more slowly than its body: a cluster of look-alike people is a bump in the upper tail, which
    the body does not see. ``cross_video`` is not pure (its few true matches sit in the upper
    tail and would steepen the shoulder), so links use the body's scale. :func:`tail_rate` is
    its inverse.

    Example:
        >>> sample = np.tanh(np.random.default_rng(0).normal(0, 0.1, size=100_000))
        >>> abs(round(tail_threshold(sample, 0.5), 2)), round(tail_threshold(sample, 1e-4), 2)   # tanh(0.1 * 3.72) = 0.356
        (0.0, 0.35)
    """
    sample = _fisher(_check_sample(sample))
    rate = check_real(rate, "rate", 0.0, 1.0)
    if rate == 0.0:
        raise ValueError("rate must be > 0 (a share of the population), got 0.0")
    if rate >= TAIL_ANCHOR:
        return float(np.tanh(np.quantile(sample, 1.0 - rate)))
    anchor, scale = _tail_model(sample, pure)
    return float(np.tanh(anchor + scale * (_GAUSS.inv_cdf(1.0 - rate) - _GAUSS.inv_cdf(1.0 - TAIL_ANCHOR))))


def tail_rate(sample: np.ndarray, value: Any, pure: bool = True) -> Any:
    """The share of the population behind ``sample`` at or above the cosine ``value`` (a float,
    or an array of them: one model, many values); the inverse of :func:`tail_threshold`.

    Example:
        >>> sample = np.tanh(np.random.default_rng(0).normal(0, 0.1, size=100_000))
        >>> round(tail_rate(sample, 0.0), 2), f"{tail_rate(sample, tail_threshold(sample, 1e-4)):.0e}"
        (0.5, '1e-04')
    """
    sample = np.sort(_fisher(_check_sample(sample)))
    values = np.atleast_1d(np.asarray(value, np.float64))
    if not np.isfinite(values).all():
        raise ValueError("value must be finite cosines")
    values = _fisher(values)
    anchor, scale = _tail_model(sample, pure)
    empirical = (sample.shape[0] - np.searchsorted(sample, values, side="left")) / sample.shape[0]
    z = _GAUSS.inv_cdf(1.0 - TAIL_ANCHOR) + (values - anchor) / scale
    modelled = 0.5 * _erfc(z / np.sqrt(2.0))  # the normal's upper tail
    rates = np.where(values <= anchor, empirical, modelled)
    return float(rates[0]) if np.ndim(value) == 0 else rates


def _erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function of each element (math.erfc: exact in the far tail, and
    numpy alone)."""
    return np.fromiter((math.erfc(float(v)) for v in x.ravel()), np.float64, x.size).reshape(x.shape)


def _check_sample(sample: Any) -> np.ndarray:
    """A non-empty 1-D float64 host array of finite cosines (the shared array checks: TypeError /
    ValueError naming ``sample``)."""
    values = _arrays.to_numpy(_arrays.as_float_array(sample, "sample", 1, "[n]")).astype(np.float64)
    if values.shape[0] == 0 or not np.isfinite(values).all():
        raise ValueError(f"sample must hold at least one value, all finite; got {values.shape[0]} values")
    return values


def _fisher(cosines: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(cosines, np.float64), -1 + 1e-7, 1 - 1e-7))


def _tail_model(sample: np.ndarray, pure: bool = True) -> tuple[float, float]:
    """(the 1 - TAIL_ANCHOR quantile, the tail's scale) of a (transformed) sample: the body's
    (median - 15.9 % quantile) and, for a ``pure`` sample, at least the shoulder's (the slope
    between the 1 - 4 * TAIL_ANCHOR and 1 - TAIL_ANCHOR quantiles)."""
    median, low, shoulder, anchor = np.quantile(sample, [0.5, _GAUSS.cdf(-1.0), 1.0 - 4 * TAIL_ANCHOR, 1.0 - TAIL_ANCHOR])
    scale = float(median - low)
    if pure:
        scale = max(scale, float(anchor - shoulder) / (_GAUSS.inv_cdf(1.0 - TAIL_ANCHOR) - _GAUSS.inv_cdf(1.0 - 4 * TAIL_ANCHOR)))
    return float(anchor), max(scale, 1e-6)


def range_partners(video_rank: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last video rank that shares a sliding range with each video rank (int64 [n]
    each): ranges cover ranks ``[r * stride, r * stride + window)`` as in
    :func:`cion_fast.ops.sliding_range_link`, and the ranges holding one rank are consecutive.

    Example:
        >>> [a.tolist() for a in range_partners(np.arange(6), window=4, stride=2)]
        [[0, 0, 0, 0, 2, 2], [3, 3, 5, 5, 5, 5]]
    """
    last = int(video_rank.max()) if video_rank.shape[0] else 0
    last_range = max(0, -(-(last - window + 1) // stride))
    first_range = np.maximum(0, -(-(video_rank - window + 1) // stride))
    final_range = np.minimum(video_rank // stride, last_range)
    return first_range * stride, np.minimum(final_range * stride + window - 1, last)


def candidates_per_decision(video_ids: np.ndarray, config: DenoiseConfig) -> dict[str, int]:
    """Comparisons one decision faces (medians over tracklets): ``within_video`` (the other
    tracklets of its video: reallocation, merge) and ``cross_video`` (the tracklets of the other
    videos of its sliding ranges: link).

    Example:
        >>> candidates_per_decision(np.array([0, 0, 1, 1, 1, 2]), DenoiseConfig(window=2, stride=1))
        {'within_video': 1, 'cross_video': 3}
    """
    return _candidates(video_ids, config)[0]


def _candidates(video_ids: np.ndarray, config: DenoiseConfig) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray]:
    """Candidates per decision (medians over tracklets) and, per tracklet, where its cross-video
    candidates lie: (counts, first candidate tracklet, count of its candidates, own video's
    first tracklet and length packed as [n, 2])."""
    _, rank = np.unique(video_ids, return_inverse=True)
    per_video = np.bincount(rank)
    video_start = np.r_[0, np.cumsum(per_video)]
    low, high = range_partners(rank, config.window, config.stride)
    own = per_video[rank]
    cross = video_start[high + 1] - video_start[low] - own
    counts = {"within_video": max(1, int(np.median(own - 1)) if own.shape[0] else 1),
              "cross_video": max(1, int(np.median(cross)) if cross.shape[0] else 1)}
    return counts, video_start[low], cross, np.stack([video_start[rank], own], axis=1)


def similarity_distributions(features: np.ndarray, offsets: np.ndarray, video_ids: np.ndarray, frame_index: np.ndarray,
                             seed: int = 0, config: DenoiseConfig = DenoiseConfig()) -> dict[str, np.ndarray]:
    """The five similarity samples of the module docstring (float32 1-D arrays, maybe empty).

    Args:
        features: float [M, D] frame features, already video-centred when the pipeline centres:
            numpy, torch (CPU or CUDA) or cupy; read once, a chunk of rows at a time, on their
            device (memory: the [N, D] float64 tracklet sums and one chunk).
        offsets: int64 [N+1] tracklet boundaries; video_ids: int64 [N]; frame_index: int64 [M].
        seed: the sampling seed.
        config: its ``window`` and ``stride`` define the cross-video candidates.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> people = rng.normal(size=(4, 8))
        >>> feats = np.repeat(people, 6, axis=0) + 0.1 * rng.normal(size=(24, 8))
        >>> d = similarity_distributions(feats, np.arange(0, 25, 6), np.zeros(4, np.int64), np.tile(np.arange(6), 4))
        >>> bool(np.median(d["frame_positive"]) > np.median(d["frame_negative"]))
        True
    """
    rng = np.random.default_rng(seed)
    # One pass over the features, where they are (numpy on the host, torch on its device), a chunk
    # of rows at a time: the tracklet sums [N, D] float64. Everything else reads sampled rows only.
    features = _xp.numpy_or_torch(_arrays.as_array(features, "features"))
    lengths = np.diff(offsets)
    tracklet = np.repeat(np.arange(lengths.shape[0]), lengths)
    sums = _set_sums(features, offsets, dtype="float64")
    # frame vs the mean of the other frames of its tracklet (tracklets of >= 2 frames)
    frames = np.flatnonzero(lengths[tracklet] >= 2)
    if frames.shape[0] > _MAX_SAMPLES:
        frames = np.sort(rng.choice(frames, _MAX_SAMPLES, replace=False))
    sampled_unit = _xp.host(_normalised(_xp.take(features, frames)))
    rest = _xp.host(_xp.take(sums, tracklet[frames])) - sampled_unit
    frame_positive = _cosine_rows(sampled_unit, rest)
    # cannot-link tracklet pairs (present at the same frame index of one video)
    frame_video = np.repeat(video_ids, lengths)
    pairs = cannot_link_pairs(tracklet, frame_video, frame_index)
    if pairs.shape[0] > _MAX_SAMPLES:
        pairs = pairs[np.sort(rng.choice(pairs.shape[0], _MAX_SAMPLES, replace=False))]
    centroids = _normalised(sums)
    centroid_negative = _pair_cosines(centroids, None, pairs) if pairs.shape[0] else np.empty(0, np.float32)
    # one random frame of the first tracklet vs the other tracklet's mean, for each pair
    if pairs.shape[0]:
        pick = offsets[pairs[:, 0]] + (rng.random(pairs.shape[0]) * lengths[pairs[:, 0]]).astype(np.int64)
        frame_negative = _cosine_rows(_xp.host(_normalised(_xp.take(features, pick))),
                                      _xp.host(_xp.take(sums, pairs[:, 1])))
    else:
        frame_negative = np.empty(0, np.float32)
    # the two halves of each tracklet of >= 4 frames
    long = np.flatnonzero(lengths >= 4)
    if long.shape[0] > _MAX_SAMPLES:
        long = np.sort(rng.choice(long, _MAX_SAMPLES, replace=False))
    counts, halves = lengths[long], lengths[long] // 2
    owner, step = _expand(counts)
    base = np.cumsum(counts) - counts  # where each sampled tracklet's frames start among `rows`
    half_offsets = np.zeros(2 * long.shape[0] + 1, dtype=np.int64)
    half_offsets[1::2], half_offsets[2::2] = base + halves, base + counts
    half_sums = _xp.host(_set_sums(features, half_offsets, offsets[long][owner] + step, dtype="float64"))
    centroid_positive = _cosine_rows(half_sums[0::2], half_sums[1::2])
    return {"frame_positive": frame_positive, "frame_negative": frame_negative,
            "centroid_positive": centroid_positive, "centroid_negative": centroid_negative,
            "cross_video": _cross_video(centroids, video_ids, config, rng)}


def cross_video_sample(features: Any, offsets: np.ndarray, video_ids: np.ndarray, config: DenoiseConfig = DenoiseConfig(),
                       seed: int = 0) -> np.ndarray:
    """Just the ``cross_video`` sample of :func:`similarity_distributions` (what
    :func:`label_free_estimate` needs), without reading any frame back to the host.

    Example:
        >>> feats = np.random.default_rng(0).normal(size=(40, 8))
        >>> cross_video_sample(feats, np.arange(0, 41, 4), np.repeat([0, 1], 5)).shape
        (10,)
    """
    features = _xp.numpy_or_torch(_arrays.as_array(features, "features"))
    centroids = _normalised(_set_sums(features, offsets, dtype="float64"))
    return _cross_video(centroids, video_ids, config, np.random.default_rng(seed))


def _cross_video(centroids: Any, video_ids: np.ndarray, config: DenoiseConfig, rng: np.random.Generator) -> np.ndarray:
    """Cosines of sampled tracklets with one uniformly drawn cross-video candidate each."""
    _, first, count, own = _candidates(video_ids, config)
    tracklets = np.flatnonzero(count > 0)
    if tracklets.shape[0] > _MAX_SAMPLES:
        tracklets = np.sort(rng.choice(tracklets, _MAX_SAMPLES, replace=False))
    if tracklets.shape[0] == 0:
        return np.empty(0, np.float32)
    pick = first[tracklets] + (rng.random(tracklets.shape[0]) * count[tracklets]).astype(np.int64)
    own_start, own_length = own[tracklets, 0], own[tracklets, 1]
    partner = np.where(pick >= own_start, pick + own_length, pick)  # skip the tracklet's own video
    return _pair_cosines(centroids, None, np.stack([tracklets, partner], axis=1))


def separation_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive similarity exceeds a random negative one (the ROC AUC,
    ties counted half): how well features separate the tracker's positives from its certain
    negatives, a label-free measure of how good they are for denoising.

    Example:
        >>> separation_auc(np.array([0.9, 0.8]), np.array([0.1, 0.85]))
        0.75
    """
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if positive.shape[0] == 0 or negative.shape[0] == 0:
        return float("nan")
    values = np.concatenate([positive, negative])
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.shape[0], np.float64)
    ranks[order] = np.arange(1, values.shape[0] + 1)
    # ties: the mean rank of their run
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.shape[0]]
    mean_rank = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, ends - starts)
    n_pos = positive.shape[0]
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * negative.shape[0]))


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def auto_thresholds(features: np.ndarray, offsets: np.ndarray, video_ids: np.ndarray, frame_index: np.ndarray,
                    config: DenoiseConfig = DenoiseConfig()) -> tuple[DenoiseConfig, dict[str, Any]]:
    """``config`` with its four thresholds chosen from the data (see the module docstring).

    Args:
        features, offsets, video_ids, frame_index: as :func:`similarity_distributions` (features
            video-centred when ``config.center_videos``; :func:`cion_fast.denoise.denoise` passes
            them so).
        config: ``false_merge_rate``, ``window`` and ``stride`` are read; the other fields are kept.

    Returns:
        (the config with ``thresholds="fixed"`` and the chosen values, a report:
        ``{"thresholds": {name: value}, "decisions": {name: {"value", "candidates",
        "false_merges_per_decision", "capped"}}, "distributions": {name: {"n", "median", "q05",
        "q95"}}, "separation": {"frame_auc", "centroid_auc"}`` (:func:`separation_auc`),
        ``"rules": RULES, "false_merge_rate"}``. ``false_merges_per_decision`` is the expected
        number of wrong merges a decision makes at the chosen value (candidates x the negatives'
        tail share): the rate, unless the positives' cap moved the value).

    Raises:
        ValueError: the data hold no cannot-link pair or no tracklet of >= 4 frames (nothing to
            learn the thresholds from: give fixed thresholds instead).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> people = rng.normal(size=(6, 16))
        >>> who = np.repeat([0, 1, 2, 3, 4, 5], 8)
        >>> feats = people[who] + 0.3 * rng.normal(size=(48, 16))
        >>> frame_index = np.tile(np.arange(8), 6)
        >>> cfg, report = auto_thresholds(feats, np.arange(0, 49, 8), np.array([0, 0, 0, 1, 1, 1]), frame_index)
        >>> -1 <= cfg.link_threshold <= 1, sorted(report["thresholds"]) == sorted(RULES)
        (True, True)
    """
    return choose_thresholds(similarity_distributions(features, offsets, video_ids, frame_index, config=config), video_ids,
                             config)


def choose_thresholds(d: dict[str, np.ndarray], video_ids: np.ndarray, config: DenoiseConfig) -> tuple[DenoiseConfig, dict[str, Any]]:
    """:func:`auto_thresholds` from samples already drawn (``d``: :func:`similarity_distributions`)."""
    if d["centroid_negative"].shape[0] == 0 or d["centroid_positive"].shape[0] == 0:
        raise ValueError('thresholds="auto" needs tracklets that share a frame index in one video (certain negatives) '
                         "and tracklets of >= 4 frames (positives); these data have "
                         f"{d['centroid_negative'].shape[0]} and {d['centroid_positive'].shape[0]}: give fixed thresholds")
    counts, _, _, _ = _candidates(video_ids, config)
    cap = float(np.median(d["centroid_positive"]))
    rate = config.false_merge_rate
    decisions = {}
    for name, sample, candidates, capped in (
            ("reallocation_threshold", d["frame_negative"], counts["within_video"], False),
            ("merge_threshold", d["centroid_negative"], counts["within_video"], True),
            ("link_threshold", d["cross_video"] if d["cross_video"].shape[0] else d["centroid_negative"],
             counts["cross_video"], True)):
        pure = name != "link_threshold"
        value = tail_threshold(sample, rate / candidates, pure)
        value = round(float(np.clip(min(value, cap) if capped else value, -1.0, 1.0)), 4)
        decisions[name] = {"value": value, "candidates": candidates, "capped": bool(capped and value >= round(cap, 4)),
                           "false_merges_per_decision": round(candidates * tail_rate(sample, value, pure), 5)}
    prune = 0.5 * (float(np.median(d["frame_negative"])) + float(np.median(d["frame_positive"])))
    chosen = {"prune_threshold": round(float(np.clip(prune, -1.0, 1.0)), 4),
              **{name: decision["value"] for name, decision in decisions.items()}}
    summary = {name: {"n": int(v.shape[0]), "median": round(float(np.median(v)), 4) if v.shape[0] else None,
                      "q05": round(float(np.quantile(v, 0.05)), 4) if v.shape[0] else None,
                      "q95": round(float(np.quantile(v, 0.95)), 4) if v.shape[0] else None} for name, v in d.items()}
    separation = {"frame_auc": round(separation_auc(d["frame_positive"], d["frame_negative"]), 5),
                  "centroid_auc": round(separation_auc(d["centroid_positive"], d["centroid_negative"]), 5)}
    report = {"thresholds": chosen, "decisions": decisions, "false_merge_rate": rate, "distributions": summary,
              "separation": separation, "rules": RULES}
    return dataclasses.replace(config, thresholds="fixed", **chosen), report


def label_free_estimate(features: Any, labels: np.ndarray, frame_video: np.ndarray, frame_index: np.ndarray,
                        cross_video: np.ndarray, candidates: int, anchored: np.ndarray | None = None) -> dict[str, Any]:
    """How pure the final identities look, measured without ground truth.

    An identity spread over several videos is made of *parts* (its frames in one video). A part
    that joined by chance resembles the rest of its identity only as much as the best of the
    ``candidates`` negatives it was compared with; so a part whose cosine to the rest of its
    identity is ``s`` is wrong with probability about ``min(1, candidates x P(negative >= s))``,
    the negatives' tail taken from ``cross_video`` (:func:`tail_rate`). From these:

    * ``false_part_rate``: the expected share of wrong parts among the parts of linked identities;
    * ``precision``: the expected BCubed precision of the labels if every wrong part were another
      person (a frame of a wrong part shares its identity with its own part only; a frame of a
      right part loses the frames of the wrong parts);
    * ``cannot_link_violations``: frames of an identity at a moment of one video where it
      already has a frame, among the ``anchored`` frames (those the tracker assigned; 0
      whenever the levels ran with ``cannot_link``);
    * ``parts``, ``linked_identities``.

    Errors inside a part (a frame of another person kept in a tracklet) are not counted: the
    estimate speaks for the merging and linking decisions.

    Args:
        features: float [M, D] the (video-centred) features the labels were made from.
        labels: int64 [M] final labels (-1 = dropped); frame_video, frame_index: int64 [M].
        cross_video: float cosines of cross-video candidate pairs
            (:func:`similarity_distributions`); candidates: comparisons per linking decision.
        anchored: optional bool [M], the frames whose moments count as constraints (None: all).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> f = np.repeat(rng.normal(size=(2, 32)), 5, axis=0) + 0.05 * rng.normal(size=(10, 32))
        >>> est = label_free_estimate(f, np.zeros(10, np.int64), np.repeat([0, 1], 5), np.tile(np.arange(5), 2),
        ...                           rng.normal(0, 0.1, 1000), candidates=100)
        >>> est["parts"], est["precision"] < 0.6      # two different people in one identity
        (2, True)
    """
    num_frames = features.shape[0]
    labels = _arrays.as_index_array(labels, "labels", num_frames)
    frame_video = _arrays.as_index_array(frame_video, "frame_video", num_frames)
    frame_index = _arrays.as_index_array(frame_index, "frame_index", num_frames)
    cross_video = _check_sample(cross_video)
    candidates = check_int(candidates, "candidates", 1)
    if anchored is not None:
        anchored = _check_anchored(anchored, num_frames)
    kept = np.flatnonzero(labels >= 0)
    videos = int(frame_video.max()) + 1 if num_frames else 1
    parts, part_of_frame, part_frames = np.unique(labels[kept] * videos + frame_video[kept], return_inverse=True,
                                                  return_counts=True)
    part_identity = parts // videos
    identity_parts = np.bincount(part_identity)
    linked = np.flatnonzero(identity_parts[part_identity] > 1)
    wrong = np.zeros(parts.shape[0])
    if linked.shape[0]:
        order = np.argsort(part_of_frame, kind="stable")
        offsets = np.r_[0, np.cumsum(part_frames)].astype(np.int64)
        part_sums = _set_sums(features, offsets, kept[order])
        identity_sums = _segment_sums(part_sums, part_identity, identity_parts.shape[0])
        rest = _normalised(_xp.take(identity_sums, part_identity[linked]) - _xp.take(part_sums, linked))
        cosine = _xp.row_dots(_normalised(_xp.take(part_sums, linked)), rest)
        wrong[linked] = np.minimum(1.0, candidates * tail_rate(cross_video, np.asarray(cosine, np.float64), False))
    constrained = labels if anchored is None else np.where(anchored, labels, -1)
    return {"precision": round(_expected_precision(wrong, part_frames, part_identity), 4),
            "false_part_rate": round(float(wrong[linked].mean()) if linked.shape[0] else 0.0, 4),
            "parts": int(parts.shape[0]), "linked_identities": int((identity_parts > 1).sum()),
            "cannot_link_violations": _same_identity_cannot_links(constrained, frame_video, frame_index)}


def _expected_precision(wrong: np.ndarray, frames: np.ndarray, identity: np.ndarray) -> float:
    """BCubed precision expected when part p is another person with probability wrong[p]."""
    if frames.shape[0] == 0:
        return 1.0
    size = np.bincount(identity, weights=frames)[identity]
    wrong_frames = np.bincount(identity, weights=wrong * frames)[identity] - wrong * frames
    per_frame = wrong * frames / size + (1 - wrong) * (1 - wrong_frames / size)
    return float((per_frame * frames).sum() / frames.sum())


def _same_identity_cannot_links(labels: np.ndarray, frame_video: np.ndarray, frame_index: np.ndarray) -> int:
    """Frames of one identity that share (video, frame index) with another frame of it."""
    kept = labels >= 0
    columns = (frame_index[kept], frame_video[kept], labels[kept])
    order = np.lexsort(columns)  # one sort (half the time of np.unique over rows at 10M frames)
    same = np.ones(max(order.shape[0] - 1, 0), dtype=bool)
    for column in columns:
        ordered = column[order]
        same &= ordered[1:] == ordered[:-1]
    return int(same.sum())
