"""Similarity between tracklets (ragged sets of frame features).

Defined in ``docs/ALGORITHMS.md``, "Tracklet kernels". Frames are compared by cosine similarity
(features are L2-normalised inside; an all-zero frame has cosine 0 with everything). Modes, for
tracklets ``a`` (frames ``A``, ``La`` of them) and ``b`` (``B``, ``Lb``):

========== ==================================================================================
centroid   cosine of the two means of normalised frames
mean       mean of all ``La * Lb`` frame cosines (= dot product of the two means)
max        largest frame cosine
min        smallest frame cosine
topk_mean  mean of the ``min(k, La * Lb)`` largest frame cosines (robust to a few outliers)
========== ==================================================================================

``centroid`` and ``mean`` reduce each tracklet to one vector first (a kernel), then take dot
products: the dense result is one GEMM of the centroids with the caller's library (BLAS/cuBLAS).
``max``/``min``/``topk_mean`` run a fused kernel that produces each pair's ``La x Lb`` cosine block
in cache-sized tiles and reduces it on the spot: the ``M x M`` frame matrix is never formed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cion_fast import _arrays, _checks
from cion_fast.ops import _ragged
from cion_fast.ops._extension import kernels

MODES = ("centroid", "mean", "max", "min", "topk_mean")
_REDUCE = {"max": 0, "min": 1, "topk_mean": 2}


class _Set:
    """One ragged set on the kernels' terms: contiguous features in the compute dtype, validated
    offsets on the features' device."""

    def __init__(self, name: str, features: Any, host_offsets: np.ndarray, placement: _arrays.Placement):
        self.name = name
        self.features = features
        self.offsets = placement.from_numpy(host_offsets)
        self.num = len(host_offsets) - 1
        self.frames = int(features.shape[0])


def _ragged_set(features: Any, offsets: Any, dtype: str, placement: _arrays.Placement, names: tuple[str, str],
                mode: str) -> _Set:
    host_offsets = _ragged.as_offsets(offsets, int(features.shape[0]), names[1], allow_empty=False)
    # Only the frame-pair modes take float32 dot products of raw frames (scaled by the inverse norms
    # after): centroid/mean normalise each frame first, in float64, so any finite scale is safe there
    # and the rescaling pass would be wasted (denoising's level 2 runs them on every chunk).
    rescale = mode in _REDUCE
    return _Set(names[0], _ragged.prepare_features(features, dtype, cosine=rescale), host_offsets, placement)


def _rows_as_set(rows: Any, placement: _arrays.Placement, name: str) -> _Set:
    """Each row of [N, D] as a one-frame tracklet (the centroid vectors in pairs mode)."""
    return _Set(name, rows, np.arange(int(rows.shape[0]) + 1, dtype=np.int64), placement)


def _check_mode(mode: Any, k: Any) -> int | None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "topk_mean":
        if k is None:
            raise ValueError("mode='topk_mean' needs k (the number of largest frame cosines to average)")
        return _checks.check_int(k, "k", 1)
    if k is not None:
        raise ValueError(f"k only applies to mode='topk_mean', got k={k!r} with mode={mode!r}")
    return None


def _as_pairs(pairs: Any, num_a: int, num_b: int, placement: _arrays.Placement, name_b: str) -> Any:
    pairs = _arrays.as_array(pairs, "pairs")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must have shape [P, 2], got {tuple(pairs.shape)}")
    _arrays.require_dtype(pairs, "pairs", ("int32", "int64"))
    pairs = _arrays.contiguous(_arrays.astype(_ragged.on_placement(pairs, "pairs", placement), "int64"))
    if pairs.shape[0]:
        for column, limit, what in ((0, num_a, "features"), (1, num_b, name_b)):
            lo, hi = int(pairs[:, column].min()), int(pairs[:, column].max())
            if lo < 0 or hi >= limit:
                raise ValueError(
                    f"pairs[:, {column}] must index the {limit} tracklets of {what}, got values in [{lo}, {hi}]"
                )
    return pairs


def _centroids(s: _Set, placement: _arrays.Placement, normalize: bool, status: Any) -> Any:
    dtype = _arrays.dtype_name(s.features)
    out = placement.empty((s.num, int(s.features.shape[1])), dtype)
    inv_norm = placement.empty((s.frames,), dtype) if placement.is_cuda else None
    arrays = _ragged.capsules(placement, features=s.features, offsets=s.offsets, out=out, inv_norm=inv_norm, status=status)
    kernels().tracklet_centroids(**arrays, name=s.name, normalize_result=normalize, stream=placement.stream())
    return out


def _pair_kernel(
    a: _Set, b: _Set | None, placement: _arrays.Placement, reduce: int, k: int, normalize: bool,
    pairs: Any, status: Any,
) -> Any:
    dtype = _arrays.dtype_name(a.features)
    shape = (a.num, a.num if b is None else b.num) if pairs is None else (int(pairs.shape[0]),)
    out = placement.empty(shape, dtype)
    inv_a = placement.empty((a.frames,), dtype) if placement.is_cuda else None
    inv_b = placement.empty((b.frames,), dtype) if placement.is_cuda and b is not None else None
    arrays = _ragged.capsules(
        placement, features=a.features, offsets=a.offsets, other_features=None if b is None else b.features,
        other_offsets=None if b is None else b.offsets, pairs=pairs, out=out, inv_norm_a=inv_a, inv_norm_b=inv_b,
        status=status,
    )
    kernels().tracklet_pair_similarity(**arrays, reduce=reduce, k=k, normalize=normalize, stream=placement.stream())
    return out


def tracklet_similarity(
    features: Any,
    offsets: Any,
    other_features: Any = None,
    other_offsets: Any = None,
    *,
    mode: str = "centroid",
    k: int | None = None,
    pairs: Any = None,
) -> Any:
    """Cosine-based similarity between tracklets, dense or for a list of candidate pairs.

    Args:
        features: [M, D] float16/bfloat16/float32/float64 frame features of set A, numpy / torch
            (CPU or CUDA) / cupy. Rows need not be normalised.
        offsets: [N_A + 1] int32/int64 (any framework): tracklet ``t`` is rows
            ``offsets[t]:offsets[t + 1]``. Starts at 0, non-decreasing, ends at M; no tracklet may
            be empty.
        other_features, other_offsets: set B, same conventions and device as A (both or neither;
            default: B = A).
        mode: ``"centroid"`` (default), ``"mean"``, ``"max"``, ``"min"`` or ``"topk_mean"``
            (see the module docstring).
        k: for ``"topk_mean"`` only (required there): average of the ``min(k, La * Lb)`` largest
            frame cosines of a pair.
        pairs: optional [P, 2] int32/int64 candidate pairs ``(index in A, index in B)``; moved to
            the features' device when it lives elsewhere.

    Returns:
        [N_A, N_B] dense similarities, or [P] with ``pairs``; float32 (float64 when the features
        are float64), in the caller's framework on the features' device. With B = A the dense
        result is symmetric and its diagonal compares each tracklet with itself (frame pairs
        ``(i, i)`` included).

    Raises:
        ValueError: bad offsets, empty tracklets, pairs out of range, unknown mode, k missing or
            < 1, NaN/inf features, dimension mismatch.
        TypeError: unsupported array types or dtypes, arrays on different devices, CUDA arrays
            without a CUDA build.

    On CUDA the call waits for the kernels to finish (it reads back the NaN flag).

    Speed: the floor is a GEMM worth the useful dot products (every frame pair of every asked
    pair) at the BLAS rate. ``max``/``min``/``topk_mean`` stay above it by the pairs' ragged, small
    cosine blocks (register tiles of 4 x 6 frames, 4 x 3 without AVX-512VL, each entry ending in a
    sum across 8 lanes; on Intel's AVX-512 CPUs, two entries per 16-lane register) and the
    reduction of each block (the top-k inserts only values at least the k-th largest of 16 group
    maxima): on a 2-core Intel Xeon, 2.0-2.65x the floor at 1,000 tracklets and 50,000 pairs and
    2.3-2.8x at 4,000 and 200,000 (``topk_mean`` 2.9-3.4x). ``mean`` and ``centroid`` reduce
    each tracklet first and are bound by reading the frames, not by the GEMM
    (benchmarks/NOTES.md, issue 27).

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import tracklet_similarity
        >>> features = np.array([[1, 0], [0, 1], [1, 1], [1, 0.1]], dtype=np.float32)
        >>> offsets = np.array([0, 2, 4])  # tracklet 0 = rows 0-1, tracklet 1 = rows 2-3
        >>> tracklet_similarity(features, offsets, mode="max").round(3)
        array([[1.   , 0.995],
               [0.995, 1.   ]], dtype=float32)
        >>> tracklet_similarity(features, offsets, mode="min", pairs=[[0, 1]]).round(3)
        array([0.1], dtype=float32)
    """
    reduce_k = _check_mode(mode, k)
    features, placement = _ragged.as_features(features, "features")
    if (other_features is None) != (other_offsets is None):
        raise ValueError("other_features and other_offsets go together: pass both or neither")
    same_set = other_features is None
    if same_set:
        dtype = _ragged.kernel_dtype(features)
    else:
        other_features, other_placement = _ragged.as_features(other_features, "other_features", "[M_B, D]")
        _arrays.check_same_device({"features": placement, "other_features": other_placement})
        if other_placement.framework != placement.framework:
            raise TypeError("features and other_features must come from the same library")
        if other_features.shape[1] != features.shape[1]:
            raise ValueError(
                f"features and other_features must have the same dimension, got {features.shape[1]} "
                f"and {other_features.shape[1]}"
            )
        dtype = _ragged.kernel_dtype(features, other_features)

    a = _ragged_set(features, offsets, dtype, placement, ("features", "offsets"), mode)
    b = None if same_set else _ragged_set(other_features, other_offsets, dtype, placement,
                                          ("other_features", "other_offsets"), mode)
    other = a if b is None else b
    if pairs is not None:
        pairs = _as_pairs(pairs, a.num, other.num, placement, other.name)
        if pairs.shape[0] == 0:
            return placement.empty((0,), dtype)
    elif a.num == 0 or other.num == 0:
        return placement.empty((a.num, other.num), dtype)
    else:  # the dense [N, N'] result, whichever mode computes it
        _checks.check_bytes(a.num * other.num * np.dtype(dtype).itemsize, "offsets",
                            f"the dense {a.num}x{other.num} similarity of every pair (pass pairs= for a subset)")
    status = _ragged.new_status(placement)

    if mode in ("centroid", "mean"):
        normalize = mode == "centroid"
        centres_a = _centroids(a, placement, normalize, status)
        if b is not None:
            # The centroid kernel reports its input in bit 0: B gets a flag of its own.
            status_b = _ragged.new_status(placement)
            centres_b = _centroids(b, placement, normalize, status_b)
            _ragged.check_status(status_b, ("other_features",))
        else:
            centres_b = centres_a
        _ragged.check_status(status, ("features",))
        if pairs is None:
            return centres_a @ centres_b.T  # one GEMM with the caller's library
        rows_a = _rows_as_set(centres_a, placement, "features")
        rows_b = None if b is None else _rows_as_set(centres_b, placement, "other_features")
        # The dot product of two one-frame "tracklets" (max over a 1 x 1 block), without normalising.
        return _pair_kernel(rows_a, rows_b, placement, _REDUCE["max"], 1, False, pairs, status)

    out = _pair_kernel(a, b, placement, _REDUCE[mode], reduce_k or 1, True, pairs, status)
    _ragged.check_status(status, ("features", "other_features"))
    return out
