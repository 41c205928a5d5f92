"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) and the k-reciprocal Jaccard distance.

The algorithm, its steps 1-8 (numbered as cited below) and the departures: ``docs/ALGORITHMS.md``,
"k-reciprocal re-ranking and Jaccard distance". Same result as the reference code (torchreid's
``re_ranking``, bit-identical to the authors' original) on tie-free data, without any dense N x N
array:

1. Distances come in tiles: a bare GEMM (dot products) in the caller's library for features,
   whose norms the kernel folds in as it reads the tile, or slices of the given blocks. A kernel
   folds each tile into every item's running top-(L-1) neighbours and row maximum (a partial
   selection, no sort) and keeps the raw query x gallery block, which is the only dense array:
   the output. Feature distances are symmetric, so each pair of tiles is computed once and folded
   in both directions: half the GEMM of the full distance matrix.
2. The expanded k-reciprocal sets R*, the encodings V and the query-expanded V are CSR rows of a
   few dozen entries; their distances come from the blocks, or, for features, from the rank lists
   where listed (93 % of them at Market size) and from the two feature rows otherwise.
3. The Jaccard sums run through an inverted index (column -> rows), in parallel.

Memory is O(N * k1 * k2) plus the [Q, G] output; time is the (half) GEMM plus a small remainder.

Departures from the reference code, on purpose:

* Each item is ranked first in its own list (step 2), and ties among the others are broken
  by index (a stable order): the reference's argsort leaves tie order unspecified, and with
  duplicate features it can push an item out of its own list (then its row of V is 0/0 = NaN).
* A row whose maximum distance is 0 (all items identical) is not divided by it (no NaN).

The torchreid adapter (:func:`cion_fast.integrations.torchreid.re_ranking`) takes the same three
blocks as :func:`k_reciprocal_rerank_from_distances` and squares them first, as torchreid does.

Synchronisation (CUDA): every kernel is enqueued on the caller's current stream, but a call reads
four scalars to the host, each of which waits for the work queued before it: the non-finite flag
of the distance pass (to raise ValueError on NaN/inf, once per call, not per tile) and the sizes
of the three sparse matrices it builds (the encodings V, the query-expanded V, the inverted
index), to allocate them; the graph variant reads a fifth, the count of estimated distances.
These reads are kept on purpose. The flag cannot go: a NaN must raise ValueError from this call.
The sizes could be replaced by bounds known in advance (a row of V holds at most m1 + m1 * mh
entries, 252 for k1 = 20; a row of the query-expanded V and the inverted index at most k2 times
that, 1,512), but the bounds are 20x, 60x and 72x the sizes measured on Market-like features
(2026-12-04: 12.6, 25.2 and 20.9 entries per row at N = 6,000, k1 = 20, k2 = 6): at MSMT17's
N = 93,820 that is 3.7 GB of buffers for 66 MB of data, to save three waits of a few microseconds
each in a call that waits for its flag anyway.
"""

from __future__ import annotations

import math
import threading
from typing import Any, NamedTuple

import numpy as np

from cion_fast import _arrays, _checks, _xp
from cion_fast.ops._extension import check_device_supported, kernels

__all__ = [
    "GraphRerank",
    "jaccard_distance",
    "k_reciprocal_rerank",
    "k_reciprocal_rerank_from_distances",
    "k_reciprocal_rerank_from_graph",
]

_VARIANTS = ("original", "spcl")
# Feature tiles are [tile, tile] GEMM outputs; block tiles of given distances are [tile, N]. On
# the CPU a 1024 tile (4 MB) is read back by the selection from cache: 3-15 % faster than 2048 at
# Q + G = 3,000, Market-1501 and MSMT17 sizes, the GEMM itself included (benchmarks/NOTES.md).
_FEATURE_TILE = {"cpu": 1024, "cuda": 4096}
_BLOCK_TILE_ELEMENTS = 1 << 24  # 64 MB of float32
# CUDA Jaccard: thread blocks sharing the rows, each with one dense accumulator row of scratch.
_CUDA_JACCARD_BLOCKS = 256


class _Settings(NamedTuple):
    k1: int
    k2: int
    lambda_value: float
    rank_length: int  # L: entries of each rank list, the item itself included
    m1: int  # rank entries behind R(i, k1)
    mh: int  # rank entries behind R(c, round_half_even(k1 / 2))


def _settings(k1: Any, k2: Any, lambda_value: Any, num_items: int, variant: str = "original") -> _Settings:
    """Validates the parameters against N items (k1 < N, 1 <= k2 <= L, 0 <= lambda <= 1)."""
    _checks.check_choice(variant, "variant", _VARIANTS)
    k1 = _checks.check_int(k1, "k1")
    k2 = _checks.check_int(k2, "k2")
    lowest_k1 = 2 if variant == "spcl" else 1
    if not lowest_k1 <= k1 < num_items:
        raise ValueError(f"k1 must be in [{lowest_k1}, N - 1] with N = {num_items} items, got k1 = {k1}")
    rank_length = k1 + 1 if variant == "original" else k1
    if not 1 <= k2 <= rank_length:
        bound = "k1 + 1" if variant == "original" else "k1 (spcl)"
        raise ValueError(f"k2 must be in [1, {bound}] = [1, {rank_length}], got k2 = {k2}")
    lambda_value = _checks.check_probability(lambda_value, "lambda_value")
    half = round(k1 / 2)  # Python rounds half to even, like the reference's np.around
    return _Settings(k1, k2, lambda_value, rank_length, min(k1 + 1, rank_length), min(half + 1, rank_length))


def _check_tile(tile_size: Any) -> int | None:
    if tile_size is None:
        return None
    return _checks.check_int(tile_size, "tile_size", 1)


def _detach(x: Any) -> Any:
    return x.detach() if _arrays.framework_of(x) == "torch" else x


class _Run:
    """One call's arrays, on the caller's device, with the caller's library."""

    def __init__(self, placement: _arrays.Placement):
        self.placement = placement
        self.framework = placement.framework
        self.stream = placement.stream()
        self.C = kernels()

    def dl(self, x: Any) -> Any:
        return None if x is None else _arrays.to_dlpack(x, self.placement)

    def full(self, shape: tuple[int, ...], dtype: str, value: float) -> Any:
        out = self.placement.empty(shape, dtype)
        out[...] = value
        return out

    def indptr(self, counts: Any) -> tuple[Any, int]:
        """CSR offsets [n + 1] from per-row counts [n], and their total (one scalar to the host)."""
        indptr = self.placement.zeros((int(counts.shape[0]) + 1,), "int64")
        _xp.cumsum_into(counts, indptr[1:])
        return indptr, int(_arrays.to_numpy(indptr[-1:])[0])

    def check_status(self, status: Any, message: str) -> None:
        if status is not None and int(_arrays.to_numpy(status)[0]) != 0:
            raise ValueError(message)


# ---- the stages ---------------------------------------------------------------------------------


class _RankLists(NamedTuple):
    neighbours: Any  # [N, L-1] int64: each item's nearest other items, ascending
    row_max: Any  # [N] float64
    distances: Any  # [N, L-1] float64: the neighbours' distances, as each item sees them


class _Items(NamedTuple):
    """The N items' feature rows as the caller's arrays, never joined into one copy (at Market-1501
    size the join cost 43 ms and 158 MB): item i is query[i] for i < Q, else gallery[i - Q];
    gallery is None when query holds all N rows (jaccard_distance). squared_norms [N], once known
    (:meth:`checked`), else None."""

    query: Any
    gallery: Any
    squared_norms: Any = None

    @property
    def count(self) -> int:
        return int(self.query.shape[0]) + (0 if self.gallery is None else int(self.gallery.shape[0]))

    @property
    def parts(self) -> list[Any]:
        return [self.query] if self.gallery is None else [self.query, self.gallery]

    def rows(self, start: int, stop: int) -> Any:
        """Rows [start, stop): a view, or a copy of the two pieces when the range straddles the
        border (one tile per call of the ranking)."""
        border = int(self.query.shape[0])
        if stop <= border:
            return self.query[start:stop]
        if start >= border:
            return self.gallery[start - border : stop - border]
        return _xp.concat_rows(self.query[start:], self.gallery[: stop - border])

    def with_squared_norms(self) -> "_Items":
        """The items with their [N] squared row norms (:func:`cion_fast._xp.squared_row_norms`)."""
        norms = [_xp.squared_row_norms(part) for part in self.parts]
        joined = norms[0] if len(norms) == 1 else _xp.concat_rows(*norms)
        return self._replace(squared_norms=_arrays.contiguous(joined))

    def checked(self, names: tuple[str, ...]) -> "_Items":
        """The items checked finite (ValueError naming the array, ``names`` in the order of
        :attr:`parts`) and brought into float32's range, with their squared norms. Both arrays are
        multiplied by the one power of two that keeps their squared distances inside float32
        (:func:`cion_fast._xp.common_exponent`): re-ranking divides every distance by a row maximum
        and the Jaccard distance reads only ranks, so the result is the same, and finite. The norms
        the ranking needs decide both when all is well: one read of the rows, not three."""
        items = self.with_squared_norms()
        if _xp.squared_norms_in_range(items.squared_norms):
            return items
        for part, name in zip(self.parts, names):
            _xp.check_finite(part, name)
        exponent = _xp.common_exponent(*self.parts)
        if not exponent:
            return items
        scaled = [_xp.times_power_of_two(part, exponent) for part in self.parts]
        return _Items(scaled[0], scaled[1] if len(scaled) > 1 else None).with_squared_norms()


class _Csr(NamedTuple):
    indptr: Any
    indices: Any
    values: Any


def _new_rank_state(run: _Run, num_items: int, settings: _Settings) -> tuple[Any, Any]:
    width = settings.rank_length - 1
    return run.full((num_items, width), "float64", math.inf), run.full((num_items, width), "int64", -1)


def _select(
    run: _Run,
    block: Any,
    state: tuple[Any, Any],
    row_begin: int,
    col_begin: int,
    *,
    symmetric: bool = False,
    block_columns: Any = None,
    norms: tuple[Any, Any] = (None, None),
    row_max: Any = None,
    raw_out: Any = None,
    num_query: int = 0,
    status: Any = None,
) -> None:
    """Folds one distance block into the rank-list state (see KReciprocalSelectParams)."""
    values, indices = state
    run.C.k_reciprocal_select(
        block=run.dl(block), block_columns=run.dl(block_columns), row_norms=run.dl(norms[0]),
        col_norms=run.dl(norms[1]), row_begin=row_begin, col_begin=col_begin,
        symmetric=symmetric, row_max=run.dl(row_max), neighbour_value=run.dl(values),
        neighbour_index=run.dl(indices), raw_out=run.dl(raw_out), num_query=num_query, status=run.dl(status),
        stream=run.stream,
    )


_TILE_BUFFERS = threading.local()  # by_key: the last call's small CPU tile buffers, by (framework, dtype, shape)
_MAX_KEPT_TILE_BYTES = 8 << 20  # a default 1024 x 1024 tile in float64; larger tiles: a new array each


def _tile_buffers(placement: _arrays.Placement, shapes: set[tuple[int, int]], dtype: str) -> dict:
    """GEMM tile buffers for a call's tile shapes, reused from tile to tile and kept for the
    thread's next call: on the CPU, for tiles up to 8 MB (a fresh 4 MB tile per GEMM cost 50 ms of
    page faults at Market-1501 size, and one fresh set per call 1.7 ms of 34 at Q 500, G 2,500, on
    the 2-core Xeon, 2026-12-05; the floor's plain loop of GEMMs pays neither). A shape not in the
    dict (larger tiles; CUDA, whose caching allocator already reuses memory) gets a new array per
    tile, as before. Per thread, so concurrent calls never share one."""
    if placement.is_cuda:
        return {}
    kept = _TILE_BUFFERS.__dict__.get("by_key", {})
    buffers = {}
    for shape in shapes:
        if math.prod(shape) * np.dtype(dtype).itemsize <= _MAX_KEPT_TILE_BYTES:
            key = (placement.framework, dtype, shape)
            buffers[key] = kept[key] if key in kept else _new_tile_buffer(placement, shape, dtype)
    _TILE_BUFFERS.by_key = buffers
    return {key[2]: buffer for key, buffer in buffers.items()}


def _new_tile_buffer(placement: _arrays.Placement, shape: tuple[int, int], dtype: str) -> Any:
    """For torch, made with its inference mode off: a tensor made inside it could not be written
    to by a later call outside it, while a normal tensor can be written to in both."""
    if placement.framework != "torch":
        return placement.empty(shape, dtype)
    import torch

    with torch.inference_mode(False):
        return placement.empty(shape, dtype)


def _rank_from_features(
    run: _Run, items: _Items, settings: _Settings, tile_size: int | None, raw_out: Any = None, num_query: int = 0
) -> _RankLists:
    """Rank lists and row maxima of squared Euclidean distances between the N items' rows.

    Tiles (a, b) with a <= b only: a symmetric tile is folded into both its row and its column
    items. Each tile is a bare GEMM (dot products) in the caller's library; the kernel turns it
    into max(|a|^2 + |b|^2 - 2 a.b, 0) as it reads it. Fills raw_out [Q, G] with the raw query x
    gallery distances when given.
    """
    num_items = items.count
    tile = tile_size or _FEATURE_TILE[run.placement.device]
    state = _new_rank_state(run, num_items, settings)
    row_max = run.full((num_items,), "float64", -math.inf)
    status = run.placement.zeros((1,), "int32") if run.placement.is_cuda else None
    squared_norms = (items if items.squared_norms is not None else items.with_squared_norms()).squared_norms
    starts = range(0, num_items, tile)
    tile_rows = [items.rows(a, min(a + tile, num_items)) for a in starts]
    shapes = {(min(tile, num_items - a), min(tile, num_items - b)) for a in starts for b in starts if b >= a}
    buffers = _tile_buffers(run.placement, shapes, _arrays.dtype_name(tile_rows[0]))
    for a in starts:
        rows = slice(a, min(a + tile, num_items))
        for b in range(a, num_items, tile):
            cols = slice(b, min(b + tile, num_items))
            out = buffers.get((rows.stop - rows.start, cols.stop - cols.start))
            block = _xp.gram(tile_rows[a // tile], tile_rows[b // tile], out=out)
            _select(
                run, block, state, a, b, symmetric=b != a, norms=(squared_norms[rows], squared_norms[cols]),
                row_max=row_max, raw_out=raw_out, num_query=num_query, status=status,
            )
    run.check_status(status, "non-finite distance (NaN or inf) in the distance block")
    return _RankLists(state[1], row_max, state[0])


def _encode(run: _Run, ranks: _RankLists, settings: _Settings, row_max: Any, **source: Any) -> tuple[_Csr, int]:
    """V_qe (steps 3-6) as CSR, and how many distances the graph source had to estimate."""
    neighbours = ranks.neighbours
    num_items = int(neighbours.shape[0])
    placement = run.placement
    scratch = None
    if placement.is_cuda:
        scratch = placement.empty((num_items, settings.m1 + settings.m1 * settings.mh), "int64")
    counts = placement.empty((num_items,), "int64")
    common = dict(
        neighbours=run.dl(neighbours), m1=settings.m1, mh=settings.mh, scratch=run.dl(scratch), stream=run.stream
    )
    run.C.k_reciprocal_expand(counts=run.dl(counts), indptr=None, indices=None, **common)
    indptr, nnz = run.indptr(counts)
    indices = placement.empty((nnz,), "int64")
    run.C.k_reciprocal_expand(counts=None, indptr=run.dl(indptr), indices=run.dl(indices), **common)
    del scratch

    values = placement.empty((nnz,), "float32")
    estimated = placement.zeros((1,), "int64") if "graph_index" in source else None
    names = ("features", "gallery_features", "q_q", "q_g", "g_g", "graph_index", "graph_distance")
    sources = {name: run.dl(source.get(name)) for name in names}
    listed = "features" in source  # the ranking's distances stand in for a second read of the features
    run.C.k_reciprocal_weights(
        indptr=run.dl(indptr), indices=run.dl(indices), row_max=run.dl(row_max), values=run.dl(values),
        estimated=run.dl(estimated), neighbours=run.dl(neighbours) if listed else None,
        neighbour_distances=run.dl(ranks.distances) if listed else None, stream=run.stream, **sources,
    )
    num_estimated = 0 if estimated is None else int(_arrays.to_numpy(estimated)[0])
    v = _Csr(indptr, indices, values)
    if settings.k2 == 1:
        return v, num_estimated

    common = dict(neighbours=run.dl(neighbours), k2=settings.k2, indptr=run.dl(v.indptr), indices=run.dl(v.indices),
                  values=run.dl(v.values), stream=run.stream)
    run.C.k_reciprocal_query_expansion(
        counts=run.dl(counts), out_indptr=None, out_indices=None, out_values=None, **common
    )
    qe_indptr, qe_nnz = run.indptr(counts)
    qe_indices = placement.empty((qe_nnz,), "int64")
    qe_values = placement.empty((qe_nnz,), "float32")
    run.C.k_reciprocal_query_expansion(
        counts=None, out_indptr=run.dl(qe_indptr), out_indices=run.dl(qe_indices), out_values=run.dl(qe_values),
        **common,
    )
    return _Csr(qe_indptr, qe_indices, qe_values), num_estimated


def _inverted_index(run: _Run, v: _Csr, row_begin: int) -> _Csr:
    """Column -> (rows >= row_begin, values) of V_qe: the transpose, as CSR over columns."""
    num_items = int(v.indptr.shape[0]) - 1
    common = dict(indptr=run.dl(v.indptr), indices=run.dl(v.indices), values=run.dl(v.values), row_begin=row_begin,
                  stream=run.stream)
    col_counts = run.placement.zeros((num_items,), "int64")
    run.C.k_reciprocal_transpose(col_counts=run.dl(col_counts), colptr=None, rows=None, out_values=None, cursor=None,
                                 **common)
    colptr, nnz = run.indptr(col_counts)
    rows = run.placement.empty((nnz,), "int64")
    values = run.placement.empty((nnz,), "float32")
    cursor = _xp.copy(colptr[:-1]) if run.placement.is_cuda else None
    run.C.k_reciprocal_transpose(col_counts=None, colptr=run.dl(colptr), rows=run.dl(rows), out_values=run.dl(values),
                                 cursor=run.dl(cursor), **common)
    return _Csr(colptr, rows, values)


def _jaccard(
    run: _Run,
    mode: str,
    v: _Csr,
    inverted: _Csr,
    rows: tuple[int, int],
    col_begin: int,
    *,
    clamp_negative: bool = False,
    lambda_value: float = 0.0,
    row_max: Any = None,
    out: Any = None,
    counts: Any = None,
    out_csr: tuple[Any, Any, Any] = (None, None, None),
) -> None:
    """Jaccard of rows [rows[0], rows[1]) against items >= col_begin (see KReciprocalJaccardParams)."""
    num_items = int(v.indptr.shape[0]) - 1
    scratch = None
    if run.placement.is_cuda:
        blocks = max(1, min(rows[1] - rows[0], _CUDA_JACCARD_BLOCKS))
        scratch = run.placement.zeros((blocks, num_items - col_begin), "float32")
    out_indptr, out_indices, out_values = out_csr
    run.C.k_reciprocal_jaccard(
        mode=mode, indptr=run.dl(v.indptr), indices=run.dl(v.indices), values=run.dl(v.values),
        colptr=run.dl(inverted.indptr), inv_rows=run.dl(inverted.indices), inv_values=run.dl(inverted.values),
        row_begin=rows[0], row_end=rows[1], col_begin=col_begin, clamp_negative=clamp_negative,
        lambda_value=lambda_value, row_max=run.dl(row_max), out=run.dl(out), counts=run.dl(counts),
        out_indptr=run.dl(out_indptr), out_indices=run.dl(out_indices), out_values=run.dl(out_values),
        scratch=run.dl(scratch), stream=run.stream,
    )


def _rerank_output(run: _Run, v: _Csr, settings: _Settings, row_max: Any, out: Any, num_query: int) -> Any:
    """Turns out [Q, G] (raw distances) into the re-ranked distance (steps 7-8)."""
    inverted = _inverted_index(run, v, num_query)
    _jaccard(run, "rerank", v, inverted, (0, num_query), num_query, lambda_value=settings.lambda_value,
             row_max=row_max, out=out)
    return out


# ---- input handling -----------------------------------------------------------------------------


def _features_pair(query_features: Any, gallery_features: Any) -> tuple[Any, Any, _arrays.Placement]:
    query = _arrays.as_feature_array(query_features, "query_features", "[Q, D]")
    gallery = _arrays.as_feature_array(gallery_features, "gallery_features", "[G, D]")
    if _arrays.framework_of(query) != _arrays.framework_of(gallery):
        raise TypeError(
            "query_features and gallery_features must come from the same library, got "
            f"{_arrays.framework_of(query)} and {_arrays.framework_of(gallery)}"
        )
    placement = _arrays.check_same_device(
        {
            "query_features": _arrays.placement_of(query, "query_features"),
            "gallery_features": _arrays.placement_of(gallery, "gallery_features"),
        }
    )
    if query.shape[0] == 0 or gallery.shape[0] == 0:
        raise ValueError(
            f"need at least one query and one gallery feature, got Q = {query.shape[0]}, G = {gallery.shape[0]}"
        )
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            "query_features and gallery_features must have the same dimension, "
            f"got {query.shape[1]} and {gallery.shape[1]}"
        )
    return _detach(query), _detach(gallery), placement


def _compute_dtype(*arrays: Any) -> str:
    """float64 when every input is float64; float32 otherwise (16-bit input is widened)."""
    return "float64" if all(_arrays.dtype_name(a) == "float64" for a in arrays) else "float32"


def _prepare_features(x: Any, dtype: str, normalize: bool, name: str) -> Any:
    """x in the compute dtype, C-contiguous; checked finite and L2-normalised with ``normalize``
    (else :meth:`_Items.checked` checks it, from the norms the ranking needs anyway)."""
    x = _arrays.contiguous(_arrays.astype(x, dtype))
    if not normalize:
        return x
    _xp.check_finite(x, name)
    return _xp.normalise_rows(x)


# ---- public API ---------------------------------------------------------------------------------


def k_reciprocal_rerank(
    query_features: Any,
    gallery_features: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    normalize: bool = False,
    tile_size: int | None = None,
) -> Any:
    """k-reciprocal re-ranked query x gallery distance, straight from features.

    The distance is the squared Euclidean distance between rows, as in the authors' feature code.
    Distances are computed tile by tile with the caller's library (BLAS on CPU, cuBLAS on GPU),
    each pair of tiles once (the matrix is symmetric); nothing N x N is ever held.

    Args:
        query_features: [Q, D] float16/bfloat16/float32/float64, numpy / torch (CPU or CUDA) / cupy.
        gallery_features: [G, D], same library and device. Distances are computed in float64 when
            both are float64, else in float32.
        k1: size of the k-reciprocal neighbourhood, 1 <= k1 < Q + G (the paper: 20).
        k2: size of the local query expansion, 1 <= k2 <= k1 + 1 (1: none; the paper: 6).
        lambda_value: weight of the original distance, in [0, 1] (the paper: 0.3).
        normalize: L2-normalise the features first.
        tile_size: items per distance tile (default 1024 on CPU, 4096 on GPU); memory per tile is
            tile_size^2 floats.

    Returns:
        [Q, G] float32 in the caller's library, on the caller's device:
        ``(1 - lambda) * Jaccard + lambda * normalised original distance``.

    Raises:
        ValueError: empty query or gallery, different feature dimensions, NaN/inf features,
            k1 >= Q + G, k2 outside [1, k1 + 1], lambda outside [0, 1].
        TypeError: non-float features, mixed libraries or devices, CUDA input without a CUDA build.

    Speed: the floor is the distance GEMM of the symmetric half, (Q + G)^2 D / 2 multiply-adds in
    the caller's BLAS. The CPU run stays above it by reading each GEMM tile back once to select the
    neighbours of its row and column items (at Market-1501 size on the Xeon below, 0.23 s of 2.9:
    the tile read back from the last-level cache, ~3 M list insertions, the raw query x gallery
    values written to fresh pages), by the R* sets, encodings and Jaccard sums (0.1 s) and by
    Python (0.07 s). On a 2-core AMD EPYC: 1.07-1.17x the floor at Market-1501 size and 1.12-1.2x
    at MSMT17's (D = 768: a cheaper GEMM for the same selection; both vary between runs), 2.1-2.4x
    at Q 500, G 2,500, D 256 where the GEMM is small. On a 2-core Intel Xeon, whose BLAS runs
    twice as fast for the same selection: 1.07-1.16x, 1.25-1.32x and 2.9-3.2x
    (benchmarks/NOTES.md, RESULTS.md, issue 27). CPU tile buffers of up to 8 MB stay allocated
    per thread until its next call (at most 3: 12 MB with the default tile in float32).

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import k_reciprocal_rerank
        >>> rng = np.random.default_rng(0)
        >>> gallery = rng.normal(size=(40, 8)).astype(np.float32)
        >>> query = gallery[:3] + 0.05 * rng.normal(size=(3, 8)).astype(np.float32)
        >>> dist = k_reciprocal_rerank(query, gallery, k1=5, k2=3)
        >>> dist.shape, dist.dtype
        ((3, 40), dtype('float32'))
        >>> dist.argmin(axis=1).tolist()  # each query finds the gallery item it was made from
        [0, 1, 2]
    """
    query, gallery, placement = _features_pair(query_features, gallery_features)
    num_query, num_gallery = int(query.shape[0]), int(gallery.shape[0])
    settings = _settings(k1, k2, lambda_value, num_query + num_gallery)
    normalize = _checks.check_flag(normalize, "normalize")
    tile_size = _check_tile(tile_size)
    check_device_supported(placement, "query_features")
    run = _Run(placement)
    dtype = _compute_dtype(query, gallery)
    query = _prepare_features(query, dtype, normalize, "query_features")
    gallery = _prepare_features(gallery, dtype, normalize, "gallery_features")
    items = _Items(query, gallery)
    items = items if normalize else items.checked(("query_features", "gallery_features"))
    del query, gallery

    out = placement.empty((num_query, num_gallery), "float32", "query_features and gallery_features")
    ranks = _rank_from_features(run, items, settings, tile_size, raw_out=out, num_query=num_query)
    v, _ = _encode(run, ranks, settings, ranks.row_max, features=items.query, gallery_features=items.gallery)
    return _rerank_output(run, v, settings, ranks.row_max, out, num_query)


def k_reciprocal_rerank_from_distances(
    q_g: Any,
    q_q: Any,
    g_g: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    tile_size: int | None = None,
) -> Any:
    """k-reciprocal re-ranking from the three distance blocks, taken as they are (no squaring).

    The blocks form the full matrix ``M = [[q_q, q_g], [q_g^T, g_g]]`` of the reference code,
    and step 1 is applied to it literally: item i sees item j at ``M[j, i] / max_k
    M[k, i]`` (column maxima). For symmetric ``q_q`` and ``g_g`` that is "row i over its own
    maximum"; otherwise the columns of ``q_q`` and ``g_g`` are what counts, as in the reference.

    Args:
        q_g: [Q, G] query x gallery distances, float16/bfloat16/float32/float64 (numpy, torch
            CPU/CUDA or cupy; all three blocks from one library on one device).
        q_q: [Q, Q] query x query distances.
        g_g: [G, G] gallery x gallery distances.
        k1, k2, lambda_value: as in :func:`k_reciprocal_rerank`.
        tile_size: items per tile of distance rows (default: about 64 MB of float32).

    Returns:
        [Q, G] float32 re-ranked distance, in the caller's library and device.

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import k_reciprocal_rerank_from_distances
        >>> rng = np.random.default_rng(1)
        >>> x = rng.normal(size=(30, 4))
        >>> d = ((x[:, None] - x[None]) ** 2).sum(-1)  # squared Euclidean, items 0-4 are queries
        >>> out = k_reciprocal_rerank_from_distances(d[:5, 5:], d[:5, :5], d[5:, 5:], k1=6, k2=3)
        >>> out.shape, out.dtype
        ((5, 25), dtype('float32'))
    """
    blocks = {"q_g": q_g, "q_q": q_q, "g_g": g_g}
    hints = {"q_g": "[Q, G]", "q_q": "[Q, Q]", "g_g": "[G, G]"}
    blocks = {name: _detach(_arrays.as_float_array(x, name, 2, hints[name])) for name, x in blocks.items()}
    frameworks = {name: _arrays.framework_of(x) for name, x in blocks.items()}
    if len(set(frameworks.values())) != 1:
        raise TypeError(f"q_g, q_q and g_g must come from the same library, got {frameworks}")
    placement = _arrays.check_same_device({name: _arrays.placement_of(x, name) for name, x in blocks.items()})
    num_query, num_gallery = (int(s) for s in blocks["q_g"].shape)
    if num_query == 0 or num_gallery == 0:
        raise ValueError(f"q_g must have at least one query and one gallery item, got shape {(num_query, num_gallery)}")
    for name, expected in (("q_q", (num_query, num_query)), ("g_g", (num_gallery, num_gallery))):
        if tuple(blocks[name].shape) != expected:
            raise ValueError(
                f"{name} must have shape {expected} to match q_g {(num_query, num_gallery)}, "
                f"got {tuple(blocks[name].shape)}"
            )
    num_items = num_query + num_gallery
    settings = _settings(k1, k2, lambda_value, num_items)
    tile_size = _check_tile(tile_size) or max(1, _BLOCK_TILE_ELEMENTS // num_items)
    check_device_supported(placement, "q_g")
    run = _Run(placement)
    dtype = _compute_dtype(*blocks.values())
    q_g, q_q, g_g = (_arrays.rows_contiguous(_arrays.astype(blocks[name], dtype)) for name in ("q_g", "q_q", "g_g"))

    # Tiles of "what item i sees" = column i of M: [q_q[:, i] | q_g[i, :]] for a query and
    # [q_g[:, g] | g_g[:, g]] for gallery item g, gathered into one reused buffer. Tiles never
    # straddle the query/gallery border.
    out = placement.empty((num_query, num_gallery), "float32", "q_g")
    state = _new_rank_state(run, num_items, settings)
    row_max = run.full((num_items,), "float64", -math.inf)
    status = placement.zeros((1,), "int32") if placement.is_cuda else None
    buffer = placement.empty((min(tile_size, num_items), num_items), dtype)
    try:
        for begin, end, offset in ((0, num_query, 0), (num_query, num_items, num_query)):
            for a in range(begin, end, tile_size):
                rows = slice(a - offset, min(a + tile_size, end) - offset)
                block = buffer[: rows.stop - rows.start]
                if offset == 0:
                    block[:, :num_query] = q_q[:, rows].T
                    block[:, num_query:] = q_g[rows, :]
                else:
                    block[:, :num_query] = q_g[:, rows].T
                    block[:, num_query:] = g_g[:, rows].T
                _select(run, block, state, a, 0, row_max=row_max, raw_out=out, num_query=num_query, status=status)
        run.check_status(status, "non-finite distance")
    except ValueError as error:
        if "non-finite" not in str(error):
            raise
        raise ValueError("q_g, q_q or g_g contains NaN or inf values") from error

    ranks = _RankLists(state[1], row_max, state[0])
    v, _ = _encode(run, ranks, settings, row_max, q_q=q_q, q_g=q_g, g_g=g_g)
    return _rerank_output(run, v, settings, row_max, out, num_query)


class GraphRerank(NamedTuple):
    """Result of :func:`k_reciprocal_rerank_from_graph`.

    Attributes:
        index: [Q, K] int64 gallery indices (0-based in the gallery), each row ordered by
            re-ranked distance; -1 past the query's gallery candidates.
        distance: [Q, K] float32 re-ranked distances, ascending; +inf past the candidates.
        num_estimated: how many distances inside the expanded sets R* were in neither item's
            list and were replaced by a lower bound (the item's largest listed distance). 0 means
            the result is exact; a larger K makes it rarer.
    """

    index: Any
    distance: Any
    num_estimated: int


def k_reciprocal_rerank_from_graph(
    neighbor_index: Any,
    neighbor_distance: Any,
    row_max: Any,
    num_query: int,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> GraphRerank:
    """k-reciprocal re-ranking of a kNN graph, for galleries too large for a [Q, G] output.

    Give each of the N = Q + G items (queries first) its K nearest items, e.g. from a faiss
    search of all features against themselves, and each item's largest distance to any item (the
    normaliser of step 1). Memory and time are O(N * K): each query's K candidates are
    re-ranked, and the rest of the gallery is never touched.

    Exactness: rank lists need the k1 nearest other items of every item (K >= k1, or K >= k1 + 1
    when the lists include the item itself, as faiss's do). The encoding also needs distances
    between members of the expanded sets; each is read from either item's list (distances are
    taken as symmetric), and when neither lists the other it is replaced by a lower bound and
    counted in ``num_estimated``. K of about 3 * k1 makes that rare.

    Args:
        neighbor_index: [N, K] int32/int64 item indices (entries < 0 are padding; the item itself
            may appear, it is ignored), numpy / torch (CPU or CUDA) / cupy.
        neighbor_distance: [N, K] float distances matching neighbor_index (any order).
        row_max: [N] float, each item's largest distance to any item (e.g. from a
            farthest-neighbour search, or an upper bound).
        num_query: Q, the number of leading items that are queries (1 <= Q < N).
        k1, k2, lambda_value: as in :func:`k_reciprocal_rerank`.

    Returns:
        :class:`GraphRerank` with ``index`` and ``distance`` [Q, K] in the caller's library.

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import k_reciprocal_rerank_from_graph
        >>> rng = np.random.default_rng(2)
        >>> x = rng.normal(size=(50, 6))
        >>> d = ((x[:, None] - x[None]) ** 2).sum(-1)
        >>> index = np.argsort(d, axis=1)[:, :15]  # each item's 15 nearest, itself included
        >>> result = k_reciprocal_rerank_from_graph(index, np.take_along_axis(d, index, 1),
        ...                                         d.max(1), num_query=5, k1=5, k2=3)
        >>> result.index.shape, result.distance.dtype
        ((5, 15), dtype('float32'))
    """
    index = _detach(_arrays.as_array(neighbor_index, "neighbor_index"))
    _arrays.require_ndim(index, "neighbor_index", 2, "[N, K]")
    _arrays.require_dtype(index, "neighbor_index", ("int32", "int64"))
    distance = _detach(_arrays.as_float_array(neighbor_distance, "neighbor_distance", 2, "[N, K]"))
    maxima = _detach(_arrays.as_float_array(row_max, "row_max", 1, "[N]"))
    arrays = {"neighbor_index": index, "neighbor_distance": distance, "row_max": maxima}
    frameworks = {name: _arrays.framework_of(x) for name, x in arrays.items()}
    if len(set(frameworks.values())) != 1:
        raise TypeError(
            f"neighbor_index, neighbor_distance and row_max must come from the same library, got {frameworks}"
        )
    placement = _arrays.check_same_device({name: _arrays.placement_of(x, name) for name, x in arrays.items()})
    num_items, num_candidates = (int(s) for s in index.shape)
    if tuple(distance.shape) != (num_items, num_candidates):
        raise ValueError(
            f"neighbor_distance must have shape {(num_items, num_candidates)} like neighbor_index, "
            f"got {tuple(distance.shape)}"
        )
    if tuple(maxima.shape) != (num_items,):
        raise ValueError(f"row_max must have shape {(num_items,)}, got {tuple(maxima.shape)}")
    num_query = _checks.check_int(num_query, "num_query")
    if not 1 <= num_query < num_items:
        raise ValueError(f"num_query must be in [1, N - 1] with N = {num_items} items, got {num_query}")
    if num_candidates == 0:
        raise ValueError("neighbor_index must list at least one neighbour per item (K >= 1)")
    settings = _settings(k1, k2, lambda_value, num_items)
    check_device_supported(placement, "neighbor_index")
    run = _Run(placement)
    index = _arrays.contiguous(_arrays.astype(index, "int64"))
    if bool(((index < -1) | (index >= num_items)).any()):
        raise ValueError(f"neighbor_index entries must be item indices in [0, {num_items}) or -1 (padding)")
    order = _xp.argsort_rows(index)  # each list sorted by item index, for exact look-ups
    sorted_index = _xp.take_along_rows(index, order)
    if num_candidates > 1 and bool(((sorted_index[:, 1:] == sorted_index[:, :-1]) & (sorted_index[:, 1:] >= 0)).any()):
        raise ValueError("neighbor_index lists an item twice in one row (each neighbour once; pad with -1)")
    dtype = _compute_dtype(distance)
    distance = _arrays.contiguous(_arrays.astype(distance, dtype))
    maxima = _arrays.contiguous(_arrays.astype(maxima, "float64"))
    _xp.check_finite(maxima, "row_max")

    state = _new_rank_state(run, num_items, settings)
    status = placement.zeros((1,), "int32") if placement.is_cuda else None
    try:
        _select(run, distance, state, 0, 0, block_columns=index, status=status)
        run.check_status(status, "non-finite distance")
    except ValueError as error:
        if "non-finite" not in str(error):
            raise
        raise ValueError("neighbor_distance contains NaN or inf values (outside padding)") from error
    if bool((state[1][:, -1] < 0).any()):
        raise ValueError(
            f"every item needs at least k1 = {settings.k1} listed neighbours other than itself "
            "(raise K or lower k1)"
        )

    ranks = _RankLists(state[1], maxima, state[0])
    v, num_estimated = _encode(
        run, ranks, settings, maxima,
        graph_index=sorted_index, graph_distance=_xp.take_along_rows(distance, order),
    )

    candidates, candidate_distance = index[:num_query], distance[:num_query]
    reranked = placement.empty((num_query, num_candidates), "float32")
    run.C.k_reciprocal_pairs(
        candidates=run.dl(candidates), distance=run.dl(candidate_distance), row_max=run.dl(maxima),
        indptr=run.dl(v.indptr), indices=run.dl(v.indices), values=run.dl(v.values),
        lambda_value=settings.lambda_value, out=run.dl(reranked), stream=run.stream,
    )
    order = _xp.argsort_rows(reranked)
    reranked = _xp.take_along_rows(reranked, order)
    gallery_index = _xp.take_along_rows(candidates, order) - num_query
    gallery_index[reranked == math.inf] = -1
    return GraphRerank(gallery_index, reranked, num_estimated)


def jaccard_distance(
    features: Any,
    k1: int = 30,
    k2: int = 6,
    variant: str = "original",
    sparse: bool = True,
    tile_size: int | None = None,
) -> Any:
    """k-reciprocal Jaccard distance between all items: the clustering distance of unsupervised
    ReID (SpCL, cluster-contrast: DBSCAN on it). Steps 1-7 with every item a query.

    Variants:

    * ``"original"``: Zhong et al. as in :func:`k_reciprocal_rerank`: rank lists of k1 + 1
      items, distances divided by each row's maximum, J unclamped.
    * ``"spcl"``: SpCL's ``compute_jaccard_distance``: rank lists of k1 items (its kNN search
      returns k1 items, self included), encodings a softmax of the raw squared distances (no
      division by the row maximum), J clamped at 0. SpCL passes L2-normalised features, for which
      the squared distance is its ``2 - 2 x.y``; normalise them before calling.

    Args:
        features: [N, D] float16/bfloat16/float32/float64 (numpy, torch CPU/CUDA, cupy).
        k1: 1 <= k1 < N (2 <= k1 for spcl). k2: 1 <= k2 <= L (k1 + 1, or k1 for spcl).
        variant: ``"original"`` or ``"spcl"``.
        sparse: return only the pairs with a non-zero overlap (J < 1), as a sparse matrix.
        tile_size: items per distance tile, as in :func:`k_reciprocal_rerank`.

    Returns:
        N x N float32 Jaccard distance. ``sparse=True``: a ``scipy.sparse.csr_matrix`` for numpy
        input, a ``torch.sparse_csr_tensor`` for torch (on its device), a
        ``cupyx.scipy.sparse.csr_matrix`` for cupy; stored entries are the pairs with a non-zero
        overlap (the diagonal included, stored as explicit zeros) and every absent pair is at
        distance 1, which is what ``sklearn.cluster.DBSCAN(metric="precomputed")`` expects of a
        sparse distance graph (absent = not a neighbour). ``sparse=False``: a dense [N, N] array.

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import jaccard_distance
        >>> rng = np.random.default_rng(3)
        >>> centres = rng.normal(size=(4, 16))
        >>> x = np.repeat(centres, 10, axis=0) + 0.1 * rng.normal(size=(40, 16))
        >>> d = jaccard_distance(x.astype(np.float32), k1=8, k2=3)
        >>> d.shape, d.format
        ((40, 40), 'csr')
        >>> bool(d[0, 1] < 0.5), bool(d[0, 39] == 0)  # same cluster close; other clusters absent
        (True, True)
    """
    x = _detach(_arrays.as_feature_array(features, "features", "[N, D]"))
    placement = _arrays.placement_of(x, "features")
    num_items = int(x.shape[0])
    if num_items < 2:
        raise ValueError(f"features must hold at least 2 items, got {num_items}")
    settings = _settings(k1, k2, 0.0, num_items, variant)
    sparse = _checks.check_flag(sparse, "sparse")
    tile_size = _check_tile(tile_size)
    check_device_supported(placement, "features")
    run = _Run(placement)
    if not sparse:  # refused before the ranking, which is the long part
        _checks.check_bytes(num_items * num_items * 4, "features", f"the dense {num_items}x{num_items} float32 output "
                            "(pass sparse=True)")
    items = _Items(_prepare_features(x, _compute_dtype(x), False, "features"), None).checked(("features",))

    ranks = _rank_from_features(run, items, settings, tile_size)
    row_max = ranks.row_max if variant == "original" else None
    v, _ = _encode(run, ranks, settings, row_max, features=items.query)
    inverted = _inverted_index(run, v, 0)
    clamp = variant == "spcl"
    rows = (0, num_items)
    if not sparse:
        out = placement.empty((num_items, num_items), "float32", "features")
        _jaccard(run, "dense", v, inverted, rows, 0, clamp_negative=clamp, out=out)
        return out
    counts = placement.empty((num_items,), "int64")
    _jaccard(run, "sparse_count", v, inverted, rows, 0, counts=counts)
    indptr, nnz = run.indptr(counts)
    indices = placement.empty((nnz,), "int64")
    values = placement.empty((nnz,), "float32")
    _jaccard(run, "sparse_fill", v, inverted, rows, 0, clamp_negative=clamp, out_csr=(indptr, indices, values))
    return _sparse_matrix(run.framework, indptr, indices, values, num_items)


def _sparse_matrix(framework: str, indptr: Any, indices: Any, values: Any, n: int) -> Any:
    if framework == "torch":
        import torch

        # Built by our kernel (sorted, in range): skip torch's O(nnz) invariant check.
        return torch.sparse_csr_tensor(indptr, indices, values, size=(n, n), check_invariants=False)
    if framework == "cupy":
        import cupyx.scipy.sparse

        if max(n, int(indices.shape[0])) < 2**31:  # older CuPy releases take int32 indices only
            indices, indptr = indices.astype("int32"), indptr.astype("int32")
        return cupyx.scipy.sparse.csr_matrix((values, indices, indptr), shape=(n, n))
    try:
        import scipy.sparse
    except ImportError as error:  # pragma: no cover - scipy is a test dependency
        raise ImportError("jaccard_distance(sparse=True) on numpy input needs scipy; pass sparse=False") from error
    return scipy.sparse.csr_matrix((values, indices, indptr), shape=(n, n))
