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
:func:`quality` measures any labelling against ground truth. :mod:`cion_fast.denoise.auto` chooses
the thresholds from the data (``DenoiseConfig(thresholds="auto")``) and estimates the result's
purity without labels; :mod:`cion_fast.denoise.worlds` generates the world family they are
measured on (docs/DENOISE_FAMILY.md).

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
    (The fixed thresholds; ``thresholds="auto"`` in :mod:`cion_fast.denoise.auto` chooses them
    from the data instead.) On the default synthetic world as it was before the camera
    calibration of ``WorldConfig.camera_strength`` (600 people, 8 cameras, 48 videos; 32,077
    frames in 1,684 tracklets, BCubed F 0.591), by ``benchmarks/denoise_quality.py --sweep``
    (one setting at a time; "a | b" = final BCubed F with the stripe descriptor | oracle features):

    * ``center_videos=True``: 0.689 | 0.926; off: 0.030 | 0.914. Without it the descriptor's
      cosine between two people of one camera (0.86) beats one person's across cameras (0.69).
    * ``prune_threshold=0.4``: PLIP's 0.6 makes level 1 *lower* the descriptor's F (0.591 ->
      0.584, good frames pruned); 0.3 / 0.4 / 0.5 give level-1 F 0.595 / 0.595 / 0.592 and final
      0.686 / 0.689 / 0.689 | 0.921 / 0.926 / 0.931. Oracle features like higher values (0.937
      at 0.6); 0.4 keeps level 1 a clear gain for the descriptor.
    * ``reallocation_threshold=0.65``, ``merge_threshold=0.62`` (PLIP's): anything in
      0.5-0.7 is within 0.006 of them.
    * ``frame_window=None``: 30 frames changes nothing here.
    * ``cannot_link=True``: 0.689 | 0.926 against 0.687 | 0.931 off. Kept on: it never merges
      two people seen at the same moment, whatever the features.
    * ``link_threshold=0.45``: 0.40 / 0.45 / 0.50 / 0.60 / 0.70 give 0.669 / 0.689 / 0.692 /
      0.659 / 0.640 | 0.926 (0.924 at 0.7); on the quick world 0.45 beats 0.50 (0.692 against
      0.679), so 0.45.
    * ``mutual_k=None``: 1 / 2 give 0.691 / 0.692 | 0.865 / 0.921 (someone seen in several
      videos of a range has several true matches, k-reciprocity drops them).
    * ``window=8, stride=4`` (the default): 16/8 and 48/24 give 0.640 / 0.580 (level 3 then
      *lowers* F at 48) | 0.946 / 0.977: wide ranges help perfect features and hurt weak ones.
    * ``min_images=4``: 1 to 8 are equal; 16 gives 0.671 | 0.916.
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
