"""CION's progressive multi-level denoising: noisy tracklets -> identities consistent across videos.

**This is our reconstruction.** CION (NeurIPS 2024) released no denoising code (it ships the
finished labels) and its paper gives no thresholds. The three levels follow the paper's
description and the same first author's PLIP "seed filter" (cosine thresholds 0.6 / 0.65 / 0.62);
the cannot-link constraint and the chaining guard are ours. Every threshold is configuration
(:class:`DenoiseConfig`); the defaults were chosen on the synthetic world's ground truth
(``DEFAULTS_CHOSEN`` below).

Levels (each a pure function on arrays, built on :mod:`cion_fast.ops`):

1. :func:`level1`, single tracklet: ``ops.tracklet_prune`` removes frames far from the rest of
   their tracklet into a pool; tracklets left too short are dropped.
2. :func:`level2`, short range within one video: pooled frames are reallocated to the most similar
   tracklet of their video (or discarded); tracklets of one video that are similar enough merge
   (``ops.connected_components``) unless they share a frame index (cannot-link, also through
   chains); level 1's check runs again on the merged identities.
3. :func:`level3`, long range across videos: identities ordered by (video, first frame) are linked
   inside a sliding range of videos (``ops.sliding_range_link``); a guard splits linked
   identities whose parts are not all close to the merged centroid, along their weakest links;
   small identities are dropped.

:func:`denoise` chains them on plain arrays, :func:`denoise_tracklets` on a ``Tracklets``, and
:func:`quality` measures any labelling against ground truth.

Example:
    >>> import numpy as np
    >>> from cion_fast.denoise import DenoiseConfig, denoise, quality
    >>> rng = np.random.default_rng(0)
    >>> identity = np.repeat([0, 0, 1, 2, 1], 4)
    >>> features = rng.normal(size=(3, 16))[identity] + 0.1 * rng.normal(size=(20, 16))
    >>> result = denoise(features, np.arange(0, 21, 4), np.array([0, 0, 0, 1, 1]),
    ...                  np.tile(np.arange(4), 5) + np.repeat([0, 10, 0, 0, 10], 4))
    >>> quality(result.labels, identity).bcubed_f
    1.0

DEFAULTS_CHOSEN
    (filled in below)
"""

from cion_fast.denoise.config import DenoiseConfig
from cion_fast.denoise.levels import center_videos, level1, level2, level3
from cion_fast.denoise.pipeline import DenoiseResult, denoise, denoise_tracklets
from cion_fast.denoise.quality import Quality, format_quality_table, quality

__all__ = [
    "DenoiseConfig",
    "DenoiseResult",
    "Quality",
    "center_videos",
    "denoise",
    "denoise_tracklets",
    "format_quality_table",
    "level1",
    "level2",
    "level3",
    "quality",
]
