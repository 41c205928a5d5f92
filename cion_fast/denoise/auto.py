"""Denoising thresholds chosen from the data itself, without ground truth (``thresholds="auto"``).

Two facts every tracker output gives for free:

* **positives**: frames of one tracklet show one person (mostly: the tracker's errors are rare);
* **certain negatives**: two tracklets present in the same frame of a video are two different
  people (the cannot-link constraint the levels already use).

From the (video-centred) features this module measures four similarity distributions:

====================  ==========================================================================
``frame_positive``    a frame vs the mean of the *other* frames of its tracklet
``frame_negative``    a frame vs the mean of a tracklet that shares one of its frame indices
``centroid_positive`` the centroids of the two halves of one tracklet
``centroid_negative`` the centroids of two tracklets that share a frame index
====================  ==========================================================================

and sets each level's threshold from them (rules in :data:`RULES`):

* level 1 prune (tau1): frames *below* it leave their tracklet: the midpoint between the frame
  negatives' and positives' medians (a frame closer to the typical other person than to its
  tracklet's typical frame is an outlier);
* level 2 reallocation (tau2): a pooled frame joins a tracklet only above the ``REALLOCATE_Q``
  quantile of the frame negatives (almost no other person reaches it);
* level 2 merge (tau3) and level 3 link (tau4): above the ``MERGE_Q`` / ``LINK_Q`` quantiles of
  the centroid negatives, never above the centroid positives' median (so an identity can link
  at all).

The quantiles were fixed once on the default synthetic world with the stripe descriptor, where
they reproduce the hand-tuned defaults' quality (``cion_fast.denoise`` docs); at run time nothing
reads ground truth. They adapt to any feature: a trained network's similarities live on another
scale than the stripe descriptor's, and these rules follow them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cion_fast import _arrays
from cion_fast.denoise import _dense
from cion_fast.denoise.config import DenoiseConfig
from cion_fast.denoise.levels import _expand, _normalised, _pair_cosines, _set_sums, cannot_link_pairs

__all__ = ["RULES", "auto_thresholds", "separation_auc", "similarity_distributions"]

REALLOCATE_Q = 0.95
MERGE_Q = 0.995
LINK_Q = 0.99
RULES = {
    "prune_threshold": "midpoint of the medians of frame_negative and frame_positive",
    "reallocation_threshold": f"quantile {REALLOCATE_Q} of frame_negative",
    "merge_threshold": f"quantile {MERGE_Q} of centroid_negative (at most the median of centroid_positive)",
    "link_threshold": f"quantile {LINK_Q} of centroid_negative (at most the median of centroid_positive)",
}
# At most this many tracklets / cannot-link pairs are sampled (seeded): the quantiles are stable
# long before, and the cost stays O(sample * D).
_MAX_SAMPLES = 20000


def similarity_distributions(features: np.ndarray, offsets: np.ndarray, video_ids: np.ndarray, frame_index: np.ndarray,
                             seed: int = 0) -> dict[str, np.ndarray]:
    """The four similarity samples of the module docstring (float32 1-D arrays, maybe empty).

    Args:
        features: float [M, D] frame features, already video-centred when the pipeline centres:
            numpy, torch (CPU or CUDA) or cupy; read once, a chunk of rows at a time, on their
            device (memory: the [N, D] float64 tracklet sums and one chunk).
        offsets: int64 [N+1] tracklet boundaries; video_ids: int64 [N]; frame_index: int64 [M].
        seed: the sampling seed.

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
    features = _dense.as_dense(_arrays.as_array(features, "features"))
    lengths = np.diff(offsets)
    tracklet = np.repeat(np.arange(lengths.shape[0]), lengths)
    sums = _set_sums(features, offsets, dtype="float64")
    # frame vs the mean of the other frames of its tracklet (tracklets of >= 2 frames)
    frames = np.flatnonzero(lengths[tracklet] >= 2)
    if frames.shape[0] > _MAX_SAMPLES:
        frames = np.sort(rng.choice(frames, _MAX_SAMPLES, replace=False))
    sampled_unit = _dense.host(_normalised(_dense.take(features, frames)))
    rest = _dense.host(_dense.take(sums, tracklet[frames])) - sampled_unit
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
        frame_negative = _cosine_rows(_dense.host(_normalised(_dense.take(features, pick))),
                                      _dense.host(_dense.take(sums, pairs[:, 1])))
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
    half_sums = _dense.host(_set_sums(features, half_offsets, offsets[long][owner] + step, dtype="float64"))
    centroid_positive = _cosine_rows(half_sums[0::2], half_sums[1::2])
    return {"frame_positive": frame_positive, "frame_negative": frame_negative,
            "centroid_positive": centroid_positive, "centroid_negative": centroid_negative}


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
        config: the other fields are kept.

    Returns:
        (the config with ``thresholds="fixed"`` and the chosen values, a report:
        ``{"thresholds": {name: value}, "distributions": {name: {"n", "median", "q05", "q95"}},
        "separation": {"frame_auc", "centroid_auc"} (:func:`separation_auc`), "rules": RULES}``).

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
    d = similarity_distributions(features, offsets, video_ids, frame_index)
    if d["centroid_negative"].shape[0] == 0 or d["centroid_positive"].shape[0] == 0:
        raise ValueError('thresholds="auto" needs tracklets that share a frame index in one video (certain negatives) '
                         "and tracklets of >= 4 frames (positives); these data have "
                         f"{d['centroid_negative'].shape[0]} and {d['centroid_positive'].shape[0]}: give fixed thresholds")
    pos_median = float(np.median(d["centroid_positive"]))
    chosen = {
        "prune_threshold": 0.5 * (float(np.median(d["frame_negative"])) + float(np.median(d["frame_positive"]))),
        "reallocation_threshold": float(np.quantile(d["frame_negative"], REALLOCATE_Q)),
        "merge_threshold": min(float(np.quantile(d["centroid_negative"], MERGE_Q)), pos_median),
        "link_threshold": min(float(np.quantile(d["centroid_negative"], LINK_Q)), pos_median),
    }
    chosen = {k: round(float(np.clip(v, -1.0, 1.0)), 4) for k, v in chosen.items()}
    summary = {name: {"n": int(v.shape[0]), "median": round(float(np.median(v)), 4) if v.shape[0] else None,
                      "q05": round(float(np.quantile(v, 0.05)), 4) if v.shape[0] else None,
                      "q95": round(float(np.quantile(v, 0.95)), 4) if v.shape[0] else None} for name, v in d.items()}
    separation = {"frame_auc": round(separation_auc(d["frame_positive"], d["frame_negative"]), 5),
                  "centroid_auc": round(separation_auc(d["centroid_positive"], d["centroid_negative"]), 5)}
    return dataclasses.replace(config, thresholds="fixed", **chosen), {"thresholds": chosen, "distributions": summary,
                                                                         "separation": separation, "rules": RULES}
