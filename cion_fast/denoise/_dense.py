"""The dense float work of denoising, done where the caller's features live.

The levels hold two kinds of arrays. The dense float ones — frame features [M, D], group sums and
centroids [K, D] — stay in the features' own library and device: a numpy array on the host, or a
torch tensor on its device (CPU or CUDA; cupy features are viewed as a torch tensor through DLPack,
no copy). The integer bookkeeping — labels, groups, candidate pairs, the union-find of the
cannot-link forest — is host numpy: it is O(M) int64, and the forest is sequential. So what crosses
between host and device per level is index arrays going in and scores or keep-masks coming back
(O(M + pairs) numbers), never the [M, D] matrix; on a GPU each such copy is also a synchronisation.

Every function here takes and returns the dense arrays of one library; ``index`` arguments are
host int64 numpy arrays. Nothing else in the levels touches a dense array directly except through
slicing (``x[a:b]``) and arithmetic, which both libraries share.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cion_fast import _arrays


def as_dense(features: Any) -> Any:
    """The features as the dense array the levels work on: numpy stays numpy, torch stays torch
    (detached), cupy becomes a torch tensor on its GPU sharing its memory (needs torch).

    Raises:
        TypeError: cupy features without a torch that sees their GPU.
    """
    framework = _arrays.framework_of(features)
    if framework == "numpy":
        return features
    if framework == "torch":
        return features.detach()
    try:
        import torch

        return torch.from_dlpack(features)
    except (ImportError, RuntimeError, BufferError) as error:  # no torch, or a CPU-only build of it
        raise TypeError("features: cupy arrays are denoised through torch, which is missing or cannot see their GPU "
                        f"({error}); install a CUDA build of torch, or pass a numpy array") from error


def is_torch(x: Any) -> bool:
    return not isinstance(x, np.ndarray)


def _index(x: Any, index: np.ndarray) -> Any:
    """``index`` in the form that indexes ``x`` (a tensor on x's device for torch)."""
    if isinstance(x, np.ndarray):
        return index
    import torch

    return torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64)).to(x.device)


def take(x: Any, index: np.ndarray) -> Any:
    """``x[index]``: the rows of ``x`` at the host int64 ``index`` (a new array)."""
    return x[_index(x, index)]


def put(x: Any, index: np.ndarray, values: Any) -> None:
    """``x[index] = values`` in place."""
    x[_index(x, index)] = values


def add_rows(x: Any, index: np.ndarray, values: Any) -> None:
    """``x[index] += values`` in place, for an ``index`` without repeats (one add per row, so the
    result does not depend on the order of the adds on any device)."""
    if isinstance(x, np.ndarray):
        x[index] += values
    else:
        x.index_add_(0, _index(x, index), values.to(x.dtype))


def placement(x: Any) -> _arrays.Placement:
    """Where the dense array ``x`` lives: new dense arrays are made with its ``empty``/``zeros``."""
    return _arrays.placement_of(x, "features")


def host_view(like: Any, array: np.ndarray) -> Any:
    """A host numpy ``array`` (e.g. a memory-mapped file) as ``like``'s library sees it: itself
    for numpy, a torch tensor sharing its memory for a torch CPU ``like``."""
    if isinstance(like, np.ndarray):
        return array
    import torch

    return torch.from_numpy(array)


def empty_like(x: Any) -> Any:
    return np.empty_like(x) if isinstance(x, np.ndarray) else x.new_empty(x.shape)


def float32(x: Any) -> Any:
    """``x`` as float32 (a copy, always: callers update the result in place)."""
    if isinstance(x, np.ndarray):
        out = _arrays.astype(x, "float32")  # float16: the extension's widening, not numpy's cast
        return out.copy() if out is x else out
    import torch

    return x.to(torch.float32, copy=True)


def normalised(rows: Any) -> Any:
    """float32 rows scaled to unit L2 norm (zero rows stay zero), scale-free: a row whose squares
    overflow or underflow float32 (entries near 1e20 or 1e-41, float64 ones beyond float32's
    range) is divided by its largest magnitude first. Only such rows are rescaled: the common case
    pays one look at the norms it computes anyway.

    Example:
        >>> normalised(np.array([[3e20, 4e20], [0.0, 0.0], [3e-41, 4e-41]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0], [0.6000000238418579, 0.800000011920929]]
    """
    with np.errstate(over="ignore", under="ignore"):  # such rows are found by their norms, below
        out = float32(rows)
        norms = _row_norms(out)
    odd = _odd_rows(norms)
    if odd.shape[0]:  # a zero or non-finite norm: rescale those rows from the input
        source = take(rows, odd)
        scaled = float32(source / _row_peaks(source)[:, None])
        put(out, odd, scaled)
        put(norms, odd, _row_norms(scaled))
    if isinstance(norms, np.ndarray):
        norms[norms == 0] = 1.0
    else:
        norms.masked_fill_(norms == 0, 1.0)
    out /= norms[:, None]
    return out


def _row_norms(rows: Any) -> Any:
    """The L2 norm of each float32 row, in the rows' library."""
    if isinstance(rows, np.ndarray):
        return np.sqrt(np.einsum("ij,ij->i", rows, rows))
    return rows.norm(dim=1)


def _odd_rows(norms: Any) -> np.ndarray:
    """Host int64 indices of the norms that are 0 or not finite."""
    if isinstance(norms, np.ndarray):
        return np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    import torch

    odd = ~torch.isfinite(norms) | (norms == 0)
    return host(torch.nonzero(odd).flatten()) if bool(odd.any()) else np.empty(0, np.int64)


def _row_peaks(rows: Any) -> Any:
    """The largest magnitude of each row (1 for a zero or empty row), in the rows' library."""
    if isinstance(rows, np.ndarray):
        peaks = np.abs(rows).max(axis=1) if rows.shape[1] else np.ones(rows.shape[0], rows.dtype)
        peaks[peaks == 0] = 1
        return peaks
    if rows.shape[1] == 0:
        return rows.new_ones(rows.shape[0])
    peaks = rows.abs().amax(dim=1)
    return peaks.masked_fill_(peaks == 0, 1)


def scale_rows(x: Any, scale: np.ndarray) -> Any:
    """``x * scale[:, None]`` for a host float vector ``scale`` [rows] (in x's dtype)."""
    if isinstance(x, np.ndarray):
        return x * scale[:, None].astype(x.dtype)
    import torch

    return x * torch.from_numpy(np.ascontiguousarray(scale)).to(device=x.device, dtype=x.dtype)[:, None]


def row_dots(a: Any, b: Any) -> np.ndarray:
    """Host float32 [n]: the dot product of each row of ``a`` with the same row of ``b``."""
    if isinstance(a, np.ndarray):
        return np.einsum("ij,ij->i", a, b)
    return host((a * b).sum(dim=1))


def all_finite(x: Any, chunk_rows: int) -> tuple[bool, int]:
    """(whether every entry of the 2-D ``x`` is finite, the first chunk start with one that is not).

    Chunked so that the temporary mask is one chunk; on a device the chunk verdicts are gathered
    there and read back once.
    """
    starts = range(0, x.shape[0], chunk_rows)
    if isinstance(x, np.ndarray):
        for start in starts:
            if not np.isfinite(x[start : start + chunk_rows]).all():
                return False, start
        return True, 0
    import torch

    verdicts = [torch.isfinite(x[start : start + chunk_rows]).all() for start in starts]
    if not verdicts:
        return True, 0
    good = host(torch.stack(verdicts))
    bad = np.flatnonzero(~good)
    return (True, 0) if bad.shape[0] == 0 else (False, int(bad[0]) * chunk_rows)


def host(x: Any) -> np.ndarray:
    """A host numpy array of ``x`` (no copy for numpy)."""
    return _arrays.to_numpy(x)


def to_caller(x: Any, features: Any) -> Any:
    """``x`` (a host numpy array, or a dense array of the levels) in the library and on the device
    of the caller's ``features`` (numpy, torch or cupy), as the ops return their results."""
    framework = _arrays.framework_of(features)
    if framework in ("numpy", None):  # None: a list, which the checks turned into numpy
        return host(x)
    if isinstance(x, np.ndarray):
        return _arrays.placement_of(features, "features").from_numpy(x)
    if framework == "torch":
        return x
    import cupy  # a dense torch array made from cupy features goes back through DLPack, no copy

    return cupy.from_dlpack(x)
