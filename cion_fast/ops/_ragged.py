"""Validation shared by the tracklet ops (tracklet_similarity, tracklet_prune, sliding_range_link).

A ragged set of tracklets is ``features [M, D]`` plus ``offsets [N + 1]``: tracklet ``t`` owns the
rows ``offsets[t]:offsets[t + 1]``. The helpers here turn user input into what the kernels take
(float32/float64 C-contiguous features on their own device, int64 offsets on the same device) and
raise ``ValueError``/``TypeError`` naming the argument otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cion_fast import _arrays, _xp
from cion_fast.ops._extension import check_device_supported


def kernel_dtype(*features: Any) -> str:
    """The dtype the kernels compute in: float64 when every input is float64, else float32
    (float16/bfloat16 inputs are widened; accumulation is float32 either way)."""
    return "float64" if all(_arrays.dtype_name(x) == "float64" for x in features) else "float32"


def as_features(features: Any, name: str, shape_hint: str = "[M, D]") -> tuple[Any, _arrays.Placement]:
    """Validates a 2-D floating feature array; returns it with its placement (no copy yet)."""
    features = _arrays.as_feature_array(features, name, shape_hint)
    placement = _arrays.placement_of(features, name)
    check_device_supported(placement, name)
    return features, placement


def prepare_features(features: Any, dtype: str, cosine: bool = False) -> Any:
    """C-contiguous copy in ``dtype`` with the caller's library (no copy when already so).

    ``cosine``: the kernel compares rows by cosine, so rows whose squares leave float32's range
    must be rescaled (:func:`cion_fast._xp.rows_in_range`). The CPU kernels do it in the norm pass
    they make anyway (``rows_for_cosine`` in csrc/cpu/cosine.h: one read of the rows, not two;
    at 100,000 identities that pass here was 11 % of sliding_range_link's time); for CUDA it is
    done here.
    """
    features = _arrays.contiguous(_arrays.astype(features, dtype))
    on_cuda = _arrays.placement_of(features, "features").is_cuda
    return _xp.rows_in_range(features) if cosine and on_cuda else features


def as_offsets(offsets: Any, num_frames: int, name: str = "offsets", allow_empty: bool = True) -> np.ndarray:
    """Checks ragged offsets against ``num_frames`` rows; returns them as host int64.

    Valid offsets start at 0, never decrease and end at ``num_frames``. With ``allow_empty=False``
    no tracklet may be empty (two equal consecutive offsets).

    Example:
        >>> as_offsets([0, 2, 5], 5).tolist()
        [0, 2, 5]
        >>> as_offsets([0, 3, 2], 2)
        Traceback (most recent call last):
        ...
        ValueError: offsets must be non-decreasing, got offsets[2] = 2 < offsets[1] = 3
    """
    host = _arrays.as_index_array(offsets, name)
    if host.shape[0] < 1:
        raise ValueError(f"{name} must have N + 1 >= 1 entries (it starts with 0), got an empty array")
    if host[0] != 0:
        raise ValueError(f"{name} must start at 0, got {name}[0] = {host[0]}")
    # Neighbours are compared, never subtracted: a difference of two int64 offsets can wrap around
    # (0, 3 * 2**61, -3 * 2**61 has "positive" steps) and let a kernel read out of bounds.
    decreasing = host[1:] < host[:-1]
    if decreasing.any():
        i = int(np.argmax(decreasing))
        raise ValueError(
            f"{name} must be non-decreasing, got {name}[{i + 1}] = {host[i + 1]} < {name}[{i}] = {host[i]}"
        )
    if host[-1] != num_frames:
        raise ValueError(f"{name} must end at the number of feature rows ({num_frames}), got {name}[-1] = {host[-1]}")
    empty = host[1:] == host[:-1]
    if not allow_empty and empty.any():
        i = int(np.argmax(empty))
        raise ValueError(f"every tracklet needs at least one frame, but tracklet {i} of {name} is empty")
    return host


def on_placement(x: Any, name: str, placement: _arrays.Placement) -> Any:
    """Array ``x`` on ``placement``: as is when it already lives there, else through a host copy."""
    if _arrays.placement_of(x, name) == placement:
        return x
    return placement.from_numpy(np.ascontiguousarray(_arrays.to_numpy(x)))


def capsules(placement: _arrays.Placement, **arrays: Any) -> dict[str, Any]:
    """DLPack capsules of the named arrays for a kernel call on ``placement`` (None stays None)."""
    return {name: None if x is None else _arrays.to_dlpack(x, placement) for name, x in arrays.items()}


def new_status(placement: _arrays.Placement) -> Any:
    """A zeroed int32 [1] error flag for the CUDA kernels (None on the CPU, which raises directly)."""
    return placement.zeros((1,), "int32") if placement.is_cuda else None


def check_status(status: Any, names: tuple[str, ...]) -> None:
    """Raises the error a CUDA kernel flagged: bit i set means ``names[i]`` holds NaN or inf."""
    if status is None:
        return
    flags = int(_arrays.to_numpy(status)[0])
    for bit, name in enumerate(names):
        if flags & (1 << bit):
            raise ValueError(f"{name} contains NaN or inf values")


def as_sorted_video_ids(video_ids: Any, length: int, what: str) -> np.ndarray:
    """Host int64 video ids, one per ``what``, in non-decreasing order (the one rule of every
    cross-video step: the long sequence is the videos in id order, so ranges are contiguous).

    Example:
        >>> as_sorted_video_ids([0, 0, 1], 3, "tracklets").tolist()
        [0, 0, 1]
        >>> as_sorted_video_ids([1, 0], 2, "tracklets")
        Traceback (most recent call last):
        ...
        ValueError: video_ids must be sorted (tracklets ordered by video), got video_ids[1] = 0 < video_ids[0] = 1
    """
    host = _arrays.as_index_array(video_ids, "video_ids", length)
    decreasing = host[1:] < host[:-1]
    if decreasing.any():
        i = int(np.argmax(decreasing))
        raise ValueError(
            f"video_ids must be sorted ({what} ordered by video), got video_ids[{i + 1}] = "
            f"{host[i + 1]} < video_ids[{i}] = {host[i]}"
        )
    return host
