"""Array math in the caller's own library: the one place that knows how numpy, cupy and torch spell
the few dense operations the ops and the denoising levels do themselves (everything else is a
kernel, reached through :mod:`cion_fast._arrays`).

Every function takes arrays of one library (numpy or cupy, which share numpy's API, or torch, CPU
or CUDA) and returns arrays of that same library on the same device; ``index`` arguments are host
int64 numpy arrays. Nothing here synchronises a device except where a value must reach the host
(:func:`host`, :func:`all_finite`, :func:`check_finite`).

Scale: features are finite but not bounded. Squares of float32 entries near 1e20 overflow and
those near 1e-41 underflow, so every quantity that is scale-free by definition (cosine, a ranking
by distance) is computed here so that it stays so: :func:`normalise_rows` rescales the rows whose
norms leave float32's range, and :func:`common_scale` finds the power of two that brings a set of
rows into range without changing any ratio between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cion_fast import _arrays


def is_torch(x: Any) -> bool:
    return _arrays.framework_of(x) == "torch"


def _lib(x: Any) -> Any:
    """numpy or cupy: the numpy-like namespace of a non-torch array."""
    return np if isinstance(x, np.ndarray) else __import__("cupy")


def host(x: Any) -> np.ndarray:
    """A host numpy array of ``x`` (no copy for numpy)."""
    return _arrays.to_numpy(x)


def _index(x: Any, index: np.ndarray) -> Any:
    """``index`` in the form that indexes ``x`` (an array on x's device for torch and cupy)."""
    if isinstance(x, np.ndarray):
        return index
    if is_torch(x):
        import torch

        return torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64)).to(x.device)
    return _arrays.placement_of(x, "x").from_numpy(index)


# ---- rows ---------------------------------------------------------------------------------------


def take(x: Any, index: np.ndarray) -> Any:
    """``x[index]``: the rows of ``x`` at the host int64 ``index`` (a new array)."""
    return x[_index(x, index)]


def put(x: Any, index: np.ndarray, values: Any) -> None:
    """``x[index] = values`` in place."""
    x[_index(x, index)] = values


def add_rows(x: Any, index: np.ndarray, values: Any) -> None:
    """``x[index] += values`` in place, for an ``index`` without repeats (one add per row, so the
    result does not depend on the order of the adds on any device)."""
    if is_torch(x):
        x.index_add_(0, _index(x, index), values.to(x.dtype))
    else:
        x[_index(x, index)] += values


def scale_rows(x: Any, scale: np.ndarray) -> Any:
    """``x * scale[:, None]`` for a host float vector ``scale`` [rows] (in x's dtype)."""
    if isinstance(x, np.ndarray):
        return x * scale[:, None].astype(x.dtype)
    if is_torch(x):
        import torch

        return x * torch.from_numpy(np.ascontiguousarray(scale)).to(device=x.device, dtype=x.dtype)[:, None]
    return x * _index(x, scale).astype(x.dtype)[:, None]


def row_dots(a: Any, b: Any) -> np.ndarray:
    """Host [n]: the dot product of each row of ``a`` with the same row of ``b``."""
    if is_torch(a):
        return host((a * b).sum(dim=1))
    return host(_lib(a).einsum("ij,ij->i", a, b))


def squared_row_norms(rows: Any, chunk_rows: int = 1024) -> Any:
    """[N] sum of squares of each row of the 2-D ``rows``, in their library, dtype and device: the
    values of ``(rows * rows).sum(1)`` (on the CPU the same bits: each row is reduced alone), taken
    ``chunk_rows`` rows at a time so that the temporary product is one chunk, not a copy of
    ``rows`` (it set the peak memory of ranking 82,161 gallery features: 242 MB)."""
    num_rows = int(rows.shape[0])
    if num_rows <= chunk_rows:
        return (rows * rows).sum(1)
    out = rows.new_empty((num_rows,)) if is_torch(rows) else _lib(rows).empty((num_rows,), dtype=rows.dtype)
    for start in range(0, num_rows, chunk_rows):
        block = rows[start : start + chunk_rows]
        out[start : start + chunk_rows] = (block * block).sum(1)
    return out


def row_norms(rows: Any) -> Any:
    """The L2 norm of each row, in the rows' library and dtype (inf or 0 where squares leave the
    dtype's range: see :func:`normalise_rows`)."""
    if is_torch(rows):
        return rows.norm(dim=1)
    xp = _lib(rows)
    return xp.sqrt(xp.einsum("ij,ij->i", rows, rows))


def row_peaks(rows: Any) -> Any:
    """The largest magnitude of each row (1 for a zero or empty row), in the rows' library."""
    if is_torch(rows):
        if rows.shape[1] == 0:
            return rows.new_ones(rows.shape[0])
        peaks = rows.abs().amax(dim=1)
        return peaks.masked_fill_(peaks == 0, 1)
    xp = _lib(rows)
    peaks = xp.abs(rows).max(axis=1) if rows.shape[1] else xp.ones(rows.shape[0], rows.dtype)
    peaks[peaks == 0] = 1
    return peaks


def _nonzero(mask: Any) -> np.ndarray:
    """Host int64 indices where the 1-D boolean ``mask`` is true."""
    if is_torch(mask):
        import torch

        return host(torch.nonzero(mask).flatten()) if bool(mask.any()) else np.empty(0, np.int64)
    return np.flatnonzero(host(mask)).astype(np.int64)


def _masked_fill(x: Any, mask: Any, value: float) -> None:
    if is_torch(x):
        x.masked_fill_(mask, value)
    else:
        x[mask] = value


def _isfinite(x: Any) -> Any:
    if is_torch(x):
        import torch

        return torch.isfinite(x)
    return _lib(x).isfinite(x)


def normalise_rows(rows: Any, dtype: str | None = None) -> Any:
    """Rows scaled to unit L2 norm (zero rows stay zero), as a new array of ``dtype`` (default:
    the rows' own), and scale-free: a row whose squares overflow or underflow (entries near 1e20
    or 1e-41 in float32, float64 ones beyond float32's range) is divided by its largest magnitude
    first. Only such rows are rescaled: the common case pays one look at the norms it computes
    anyway.

    Example:
        >>> normalise_rows(np.array([[3e20, 4e20], [0.0, 0.0], [3e-41, 4e-41]]), "float32").tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0], [0.6000000238418579, 0.800000011920929]]
    """
    dtype = dtype or _arrays.dtype_name(rows)
    with np.errstate(over="ignore", under="ignore"):  # such rows are found by their norms, below
        out = _arrays.astype(rows, dtype)
        out = copy(out) if out is rows else out  # updated in place below
        norms = row_norms(out)
    odd = _nonzero(~_isfinite(norms) | (norms == 0))
    if odd.shape[0]:  # a zero or non-finite norm: rescale those rows from the input
        source = take(rows, odd)
        scaled = _arrays.astype(source / row_peaks(source)[:, None], dtype)
        put(out, odd, scaled)
        put(norms, odd, row_norms(scaled))
    _masked_fill(norms, norms == 0, 1.0)
    out /= norms[:, None]
    return out


def common_exponent(*row_sets: Any) -> int:
    """The power of two, ``2**k``, that brings the rows of ``row_sets`` (finite arrays of one
    library) to a largest norm whose square float32 holds with room for a GEMM's sums: k = 0 when
    they already are. Apply it with :func:`times_power_of_two`.

    A ranking by Euclidean distance (and re-ranking, whose distances are divided by a row maximum)
    does not change when all vectors are multiplied by one number; a power of two changes no ratio
    at all, so every distance is exact up to that factor. Rows far smaller than the largest are as
    small after scaling as before, relative to it: no single float32 scale can hold both.

    Example:
        >>> common_exponent(np.full((2, 4), 1e20, np.float32)), common_exponent(np.ones((2, 4), np.float32))
        (-67, 0)
    """
    sets = [rows for rows in row_sets if rows.shape[0] and rows.shape[1]]
    if not sets:
        return 0
    with np.errstate(over="ignore", under="ignore"):  # an overflowing square is what we look for
        largest = max(float(host(row_norms(rows)).max()) for rows in sets)
    if _SMALLEST_SAFE_NORM <= largest <= _LARGEST_SAFE_NORM:
        return 0
    peak = max(float(host(abs(rows).max())) for rows in sets)
    return 0 if peak == 0 else -int(np.frexp(peak)[1])


def squared_norms_in_range(squared_norms: Any) -> bool:
    """Whether rows with these squared norms ([N], from :func:`squared_row_norms`; N >= 1) are
    finite and need no scaling (:func:`common_exponent` would return 0): the test made from norms a
    caller computes anyway. A NaN or inf entry makes its row's norm NaN or inf, and so False.

    Example:
        >>> squared_norms_in_range(np.array([1.0, 4.0])), squared_norms_in_range(np.array([1.0, np.nan]))
        (True, False)
    """
    largest = float(host(squared_norms.max()))
    return _SMALLEST_SAFE_NORM**2 <= largest <= _LARGEST_SAFE_NORM**2


def times_power_of_two(x: Any, exponent: int) -> Any:
    """``x * 2**exponent`` as a new array, exact (barring subnormals), for exponents beyond what
    the dtype can hold as a number (2**136 is not a float32): applied in steps of at most 2**64."""
    out = copy(x)
    while exponent:
        step = max(-64, min(64, exponent))
        out *= 2.0**step
        exponent -= step
    return out


def rows_in_range(rows: Any) -> Any:
    """``rows`` [N, D], or a copy whose rows with a norm outside float32's safe range (squares that
    overflow or vanish, see :func:`common_exponent`) are each multiplied by a power of two that
    brings their largest entry into [0.5, 1). For kernels that L2-normalise every row themselves:
    a cosine does not see a row's scale, and a power of two leaves the other digits as they were.

    Example:
        >>> rows_in_range(np.array([[1e20, 0.0], [3.0, 4.0]], np.float32)).tolist()
        [[0.677626371383667, 0.0], [3.0, 4.0]]
    """
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        return rows
    with np.errstate(over="ignore", under="ignore"):  # overflowing squares are what we look for
        norms = row_norms(rows)
    odd = _nonzero(~_isfinite(norms) | (norms > _LARGEST_SAFE_NORM) | (norms < _SMALLEST_SAFE_NORM))
    if odd.shape[0] == 0:
        return rows
    source = take(rows, odd)
    exponent = -np.frexp(host(row_peaks(source)).astype(np.float64))[1]
    half = exponent // 2  # each factor a normal number of the dtype: 2**136 is not a float32
    out = copy(rows)
    put(out, odd, scale_rows(scale_rows(source, np.ldexp(1.0, half)), np.ldexp(1.0, exponent - half)))
    return out


# A norm up to 2^30 keeps squares and a GEMM's sums of D products far below float32's 2^128; norms
# below 2^-30 bring products near float32's subnormals (2^-126), where precision is lost.
_LARGEST_SAFE_NORM = 2.0**30
_SMALLEST_SAFE_NORM = 2.0**-30


# ---- whole arrays -------------------------------------------------------------------------------


def copy(x: Any) -> Any:
    """A new array equal to ``x``."""
    return x.clone() if is_torch(x) else x.copy()


def empty_like(x: Any) -> Any:
    return x.new_empty(x.shape) if is_torch(x) else _lib(x).empty_like(x)


def concat_rows(a: Any, b: Any) -> Any:
    if is_torch(a):
        import torch

        return torch.cat([a, b], dim=0)
    return _lib(a).concatenate([a, b], axis=0)


def cumsum_into(values: Any, out: Any) -> None:
    """``out[:] = cumsum(values)`` (1-D, same library and device)."""
    if is_torch(values):
        import torch

        torch.cumsum(values, 0, out=out)
    else:
        _lib(values).cumsum(values, out=out)


def argsort_rows(x: Any) -> Any:
    """Per-row stable argsort (int64)."""
    if is_torch(x):
        import torch

        return torch.sort(x, dim=1, stable=True).indices
    return _lib(x).argsort(x, axis=1, kind="stable").astype("int64")


def take_along_rows(x: Any, order: Any) -> Any:
    if is_torch(x):
        import torch

        return torch.take_along_dim(x, order, dim=1)
    return _lib(x).take_along_axis(x, order, axis=1)


def gram(a: Any, b: Any, out: Any = None) -> Any:
    """[len(a), len(b)] dot products ``a @ b.T`` with the caller's library (BLAS / cuBLAS): the bare
    GEMM, for kernels that fold the norms into their own pass over the tile. ``out``: a
    C-contiguous [len(a), len(b)] array of that library and dtype to write into, for callers
    that reuse one tile buffer (a fresh tile per GEMM can cost page faults)."""
    if is_torch(a):
        import torch

        return torch.mm(a, b.T, out=out)
    return _lib(a).matmul(a, b.T, out=out)


def tile_distances(query: Any, gallery: Any, gallery_sq: Any, metric: str) -> Any:
    """[tile, G] distances with the caller's library (BLAS / cuBLAS GEMM).

    ``metric``: ``"euclidean"``, ``"sqeuclidean"`` (``gallery_sq`` = squared row norms of
    ``gallery``) or ``"cosine"`` (rows already L2-normalised; ``gallery_sq`` unused). Squared
    distances are clamped at 0 (the expansion |q|^2 + |g|^2 - 2 q.g can round below it).
    """
    if is_torch(query):
        import torch

        if metric == "cosine":
            return torch.mm(query, gallery.T).neg_().add_(1)
        sq = torch.addmm(gallery_sq[None, :], query, gallery.T, alpha=-2.0)
        sq += (query * query).sum(1, keepdim=True)
        sq.clamp_(min=0)
        return sq.sqrt_() if metric == "euclidean" else sq
    xp = _lib(query)
    if metric == "cosine":
        dist = query @ gallery.T
        return xp.subtract(1, dist, out=dist)
    sq = query @ gallery.T
    sq *= -2
    sq += gallery_sq[None, :]
    sq += (query * query).sum(1, keepdims=True)
    xp.maximum(sq, 0, out=sq)
    return xp.sqrt(sq, out=sq) if metric == "euclidean" else sq


# ---- finiteness ---------------------------------------------------------------------------------


def _sum_is_finite(x: Any) -> bool:
    """Whether the sum of ``x`` is finite, which proves every entry finite (a NaN or an infinity
    makes every sum holding it NaN or infinite): one read, no mask the size of ``x``. A sum that is
    not finite may also be an overflow of finite entries: callers then look entry by entry. 16-bit
    values are summed in float32, where their sum cannot overflow."""
    if is_torch(x):
        import torch

        wide = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None
        return bool(torch.isfinite(x.detach().sum(dtype=wide)))
    wide = np.float32 if x.dtype == np.float16 else None
    if isinstance(x, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):  # the overflow is the case handled
            return bool(np.isfinite(x.sum(dtype=wide)))
    return bool(_isfinite(x.sum(dtype=wide)))


def all_finite(x: Any, chunk_rows: int) -> tuple[bool, int]:
    """(whether every entry of the 2-D ``x`` is finite, the first chunk start with one that is not).

    Usually one sum (:func:`_sum_is_finite`); else chunked so that the temporary mask is one
    chunk, and on a device the chunk verdicts are gathered there and read back once.
    """
    if _sum_is_finite(x):
        return True, 0
    starts = range(0, x.shape[0], chunk_rows)
    if isinstance(x, np.ndarray):
        for start in starts:
            if not np.isfinite(x[start : start + chunk_rows]).all():
                return False, start
        return True, 0
    verdicts = [_isfinite(x[start : start + chunk_rows]).all() for start in starts]
    if not verdicts:
        return True, 0
    if is_torch(x):
        import torch

        good = host(torch.stack(verdicts))
    else:
        good = host(_lib(x).stack(verdicts))
    bad = np.flatnonzero(~good)
    return (True, 0) if bad.shape[0] == 0 else (False, int(bad[0]) * chunk_rows)


def check_finite(x: Any, name: str) -> None:
    """ValueError naming ``name`` when ``x`` holds a NaN or an infinity (usually one sum:
    :func:`_sum_is_finite`)."""
    if not _sum_is_finite(x) and not bool(_isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values")


# ---- crossing libraries -------------------------------------------------------------------------


def numpy_or_torch(features: Any) -> Any:
    """``features`` as numpy or torch, for code written against those two: numpy stays numpy, torch
    stays torch (detached), cupy becomes a torch tensor on its GPU sharing its memory (needs torch).

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


def host_view(like: Any, array: np.ndarray) -> Any:
    """A host numpy ``array`` (e.g. a memory-mapped file) as ``like``'s library sees it: itself
    for numpy, a torch tensor sharing its memory for a torch CPU ``like``."""
    if not is_torch(like):
        return array
    import torch

    return torch.from_numpy(array)


def to_caller(x: Any, caller: Any) -> Any:
    """``x`` (a host numpy array, or an array from :func:`numpy_or_torch`) in the library and on
    the device of the caller's array ``caller`` (numpy, torch or cupy), as the ops return results."""
    framework = _arrays.framework_of(caller)
    if framework in ("numpy", None):  # None: a list, which the checks turned into numpy
        return host(x)
    if isinstance(x, np.ndarray):
        return _arrays.placement_of(caller, "features").from_numpy(x)
    if framework == "torch":
        return x
    import cupy  # a torch array made from cupy features goes back through DLPack, no copy

    return cupy.from_dlpack(x)
