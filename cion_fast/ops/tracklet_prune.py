"""Level-1 (single-tracklet) denoising of CION: drop the frames that do not look like the rest of
their tracklet.

Defined in ``docs/ALGORITHMS.md``, "Tracklet kernels". CION's paper gives no thresholds; the
default 0.6 follows PLIP's seed filter and is configuration, to be tuned on the synthetic world's
ground truth.
"""

from __future__ import annotations

from typing import Any

from cion_fast import _checks
from cion_fast.ops import _ragged
from cion_fast.ops._extension import kernels


def tracklet_prune(features: Any, offsets: Any, threshold: float = 0.6, min_frames: int = 2) -> Any:
    """Keep-mask of the frames that survive single-tracklet outlier pruning.

    For each tracklet, with every frame L2-normalised: ``s_j`` = cosine of frame ``j`` with the
    mean of the *other* kept frames; while at least two frames are kept and the smallest ``s_j``
    is below ``threshold``, that frame is dropped (ties: the earliest row; with two frames left,
    both scores are the cosine between them and the earlier frame goes) and the scores are updated
    incrementally. A tracklet left with fewer than ``min_frames`` frames is dropped whole.
    A cosine with a zero vector counts as 0 (all-zero frames, or other frames summing to ~0).

    Args:
        features: [M, D] float16/bfloat16/float32/float64 frame features, numpy / torch (CPU or
            CUDA) / cupy. Computed in float64 inside.
        offsets: [N + 1] int32/int64 (any framework): tracklet ``t`` is rows
            ``offsets[t]:offsets[t + 1]``; starts at 0, non-decreasing, ends at M (empty tracklets
            are allowed).
        threshold: finite real; frames scoring below it are pruned (default 0.6).
        min_frames: integer >= 0; tracklets with fewer surviving frames are dropped (default 2).

    Returns:
        [M] bool keep-mask in the caller's framework on the features' device.

    Raises:
        ValueError: bad offsets, NaN/inf features, non-finite threshold, negative min_frames.
        TypeError: unsupported array types or dtypes, CUDA arrays without a CUDA build.

    On CUDA the call waits for the kernel to finish (it reads back the NaN flag).

    Speed: the floor is one read of the features (each frame is read from memory once). The CPU
    kernel stays above it by its float64 arithmetic on rows converted from float32 in cache: the
    norms, then ``S`` and the ``d_j``, take two or three converting multiply-add passes over every
    frame, and each drop one more over the frames still kept (benchmarks/NOTES.md, issue 27).

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import tracklet_prune
        >>> features = np.array([[1, 0], [1, 0.1], [0.9, 0], [0, 1], [1, 1], [0, 1]], dtype=np.float32)
        >>> tracklet_prune(features, offsets=[0, 4, 5, 6], threshold=0.5)
        array([ True,  True,  True, False, False, False])
    """
    features, placement = _ragged.as_features(features, "features")
    threshold = _checks.check_real(threshold, "threshold")
    min_frames = _checks.check_int(min_frames, "min_frames", 0)
    num_frames = int(features.shape[0])
    host_offsets = _ragged.as_offsets(offsets, num_frames, "offsets", allow_empty=True)
    keep = placement.empty((num_frames,), "bool")
    if num_frames == 0:
        return keep
    features = _ragged.prepare_features(features, _ragged.kernel_dtype(features))
    status = _ragged.new_status(placement)
    inv_norm = dots = None  # float64 scratch of the CUDA kernel
    if placement.is_cuda:
        inv_norm, dots = placement.empty((num_frames,), "float64"), placement.empty((num_frames,), "float64")
    arrays = _ragged.capsules(
        placement, features=features, offsets=placement.from_numpy(host_offsets), keep=keep, inv_norm=inv_norm,
        dots=dots, status=status,
    )
    kernels().tracklet_prune(**arrays, threshold=threshold, min_frames=min_frames, stream=placement.stream())
    _ragged.check_status(status, ("features",))
    return keep
