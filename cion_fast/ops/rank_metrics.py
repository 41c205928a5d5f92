"""ReID ranking metrics: CMC, mAP and mINP under the Market-1501 protocol.

Protocol, tie rule and departures: ``docs/ALGORITHMS.md``, "Ranking metrics". Same numbers as
torchreid / fast-reid evaluators on tie-free data, without sorting the gallery: per query only the
positions of its matches are found (one pass over the distance row), so the cost is one read of the
distance matrix: its floor. What keeps it above (about 2-2.5x that read at Market-1501 and MSMT17
sizes on a 2-core AMD EPYC and a 2-core Intel Xeon, ``benchmarks/NOTES.md``): each entry ranked
before a query's farthest match is compared with every match (P compares per 16 entries on
AVX-512), the others with one threshold.

Departures from the reference code, on purpose:

* Ties are broken by gallery index (a *stable* ranking); the Cython evaluators use an unstable
  sort, so their tie order is unspecified.
* When fewer than ``max_rank`` gallery entries remain after junk removal, the CMC simply stays at
  its last value (the Cython code reads stale memory there).
* NaN distances raise ``ValueError`` instead of ranking somewhere arbitrary.
* pid -1 (junk images of Market-1501) is a dataset-loading matter: drop those images when reading
  the dataset (``cion_fast.data.read_market1501`` does); here -1 is just another pid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cion_fast import _arrays, _checks, _xp
from cion_fast.ops._extension import check_device_supported, kernels

_METRICS = ("euclidean", "sqeuclidean", "cosine")


@dataclass
class RankResult:
    """Ranking metrics of one evaluation.

    Attributes:
        cmc: float64 [max_rank]; ``cmc[r]`` = fraction of valid queries whose first true match is
            at rank <= r (0-based), i.e. Rank-(r+1) accuracy.
        mAP: mean average precision over valid queries.
        mINP: mean inverse negative penalty (Ye et al., TPAMI 2021) over valid queries.
        num_valid_queries: queries with at least one valid match (the others are skipped).
        num_queries: all queries.
        average_precision: float64 [Q] per-query AP (NaN for skipped queries); only with
            ``return_per_query=True``, else None.
        inverse_negative_penalty: float64 [Q] per-query INP (NaN when skipped), or None.
        first_match: int64 [Q] 0-based rank of the first true match (-1 when skipped), or None.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_queries: int
    average_precision: np.ndarray | None = None
    inverse_negative_penalty: np.ndarray | None = None
    first_match: np.ndarray | None = None

    def rank(self, k: int) -> float:
        """Rank-k accuracy (k is 1-based: ``rank(1)`` is Rank-1)."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"k must be in [1, {len(self.cmc)}], got {k}")
        return float(self.cmc[k - 1])

    def summary(self) -> dict[str, float]:
        """mAP, mINP and Rank-1/5/10 (those within max_rank) as a plain dict."""
        out = {"mAP": self.mAP, "mINP": self.mINP}
        for k in (1, 5, 10):
            if k <= len(self.cmc):
                out[f"rank{k}"] = self.rank(k)
        return out

    def __str__(self) -> str:
        parts = [f"{name}={value:.4f}" for name, value in self.summary().items()]
        return f"RankResult({', '.join(parts)}, valid queries {self.num_valid_queries}/{self.num_queries})"


def _check_max_rank(max_rank: Any) -> int:
    max_rank = _checks.check_int(max_rank, "max_rank", 1)
    _checks.check_allocation(max_rank, 24, "max_rank", "the CMC curve")  # counts, cumsum, float64 result
    return max_rank


_COUNTED_PID_SPAN = 2**16  # gallery pids within this span are grouped by counting (_Identities)


class _Identities:
    """Host-side pid/camid bookkeeping: the gallery grouped by pid, each query's match range."""

    def __init__(self, q_pids, g_pids, q_camids, g_camids, num_query: int, num_gallery: int):
        self.q_pids = _arrays.as_index_array(q_pids, "q_pids", num_query)
        g_pids = _arrays.as_index_array(g_pids, "g_pids", num_gallery)
        self.q_camids = _arrays.as_index_array(q_camids, "q_camids", num_query)
        self.g_camids = _arrays.as_index_array(g_camids, "g_camids", num_gallery)
        lowest, highest = int(g_pids.min()), int(g_pids.max())
        if highest - lowest < _COUNTED_PID_SPAN:
            self._group_by_counting(g_pids, lowest, highest)
        else:
            self.gallery_by_pid = np.argsort(g_pids, kind="stable").astype(np.int64)
            sorted_pids = g_pids[self.gallery_by_pid]
            self.match_begin = np.searchsorted(sorted_pids, self.q_pids, side="left").astype(np.int64)
            self.match_end = np.searchsorted(sorted_pids, self.q_pids, side="right").astype(np.int64)

    def _group_by_counting(self, g_pids: np.ndarray, lowest: int, highest: int) -> None:
        """The same grouping for pids spanning fewer than 2**16 values (every ReID dataset): a radix
        sort of 16-bit offsets and one count per pid, 10x faster than sorting int64 pids and
        searching each query's (1.2 ms -> 0.1 ms at Market-1501 size, 8 % of a call)."""
        offsets = (g_pids - lowest).astype(np.uint16)
        self.gallery_by_pid = np.argsort(offsets, kind="stable").astype(np.int64)
        counts = np.bincount(offsets, minlength=1)
        ends = np.cumsum(counts)
        known = (self.q_pids >= lowest) & (self.q_pids <= highest)  # others have no match
        slot = np.where(known, self.q_pids - lowest, 0)  # a wrapped difference is never used
        self.match_end = np.where(known, ends[slot], 0).astype(np.int64)
        self.match_begin = np.where(known, ends[slot] - counts[slot], 0).astype(np.int64)


class _PerQuery:
    """Per-query kernel outputs, allocated with the caller's library on the caller's device."""

    def __init__(self, placement: _arrays.Placement, num_query: int):
        self.average_precision = placement.empty((num_query,), "float64")
        self.inverse_negative_penalty = placement.empty((num_query,), "float64")
        self.first_match = placement.empty((num_query,), "int64")
        self.num_matches = placement.empty((num_query,), "int64")
        self.status = placement.zeros((1,), "int32") if placement.is_cuda else None

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return tuple(
            _arrays.to_numpy(a)
            for a in (self.average_precision, self.inverse_negative_penalty, self.first_match, self.num_matches)
        )


def _run_kernel(
    distmat: Any,
    placement: _arrays.Placement,
    ids: _Identities,
    device_ids: dict[str, Any],
    rows: slice,
    remove_same_camera: bool,
    out: _PerQuery,
) -> None:
    """Ranks the queries ``rows`` of ``ids`` against the gallery; ``distmat`` holds those rows."""
    dl = lambda x: _arrays.to_dlpack(x, placement)  # noqa: E731 - local shorthand
    scratch = {"scratch_offsets": None, "scratch_distance": None, "scratch_index": None, "scratch_count": None}
    if placement.is_cuda:
        sizes = ids.match_end[rows] - ids.match_begin[rows] + 1
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        total = int(offsets[-1])
        scratch = {
            "scratch_offsets": dl(placement.from_numpy(offsets)),
            "scratch_distance": dl(placement.empty((total,), "float64")),
            "scratch_index": dl(placement.empty((total,), "int64")),
            "scratch_count": dl(placement.empty((total,), "int64")),
        }
    kernels().rank_metrics(
        distmat=dl(distmat),
        query_camids=dl(device_ids["q_camids"][rows]),
        gallery_camids=dl(device_ids["g_camids"]),
        gallery_by_pid=dl(device_ids["gallery_by_pid"]),
        match_begin=dl(device_ids["match_begin"][rows]),
        match_end=dl(device_ids["match_end"][rows]),
        remove_same_camera=remove_same_camera,
        average_precision=dl(out.average_precision[rows]),
        inverse_negative_penalty=dl(out.inverse_negative_penalty[rows]),
        first_match=dl(out.first_match[rows]),
        num_matches=dl(out.num_matches[rows]),
        status=dl(out.status) if out.status is not None else None,
        stream=placement.stream(),
        **scratch,
    )


def _device_ids(ids: _Identities, placement: _arrays.Placement) -> dict[str, Any]:
    names = ("q_camids", "g_camids", "gallery_by_pid", "match_begin", "match_end")
    return {name: placement.from_numpy(getattr(ids, name)) for name in names}


def _summarise(out: _PerQuery, max_rank: int, return_per_query: bool) -> RankResult:
    average_precision, inverse_negative_penalty, first_match, num_matches = out.to_numpy()
    if out.status is not None and int(_arrays.to_numpy(out.status)[0]) != 0:
        raise ValueError("distmat contains NaN distances; rank metrics need a total order")
    valid = num_matches > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            "no query has a valid match in the gallery (same pid on a different camera when "
            "remove_same_camera=True); check the pids/camids passed in"
        )
    first_valid = np.minimum(first_match[valid], max_rank)
    cmc = np.cumsum(np.bincount(first_valid, minlength=max_rank + 1)[:max_rank]) / num_valid
    result = RankResult(
        cmc=cmc.astype(np.float64),
        mAP=float(np.mean(average_precision[valid])),
        mINP=float(np.mean(inverse_negative_penalty[valid])),
        num_valid_queries=num_valid,
        num_queries=len(num_matches),
    )
    if return_per_query:
        result.average_precision = average_precision
        result.inverse_negative_penalty = inverse_negative_penalty
        result.first_match = first_match
    return result


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    remove_same_camera: bool = True,
    return_per_query: bool = False,
) -> RankResult:
    """CMC, mAP and mINP from a query-gallery distance matrix (smaller = more similar).

    Args:
        distmat: [Q, G] float16/bfloat16/float32/float64, numpy / torch (CPU or CUDA) / cupy.
            Compared in float32 (float64 input in float64). Rows must be contiguous; other
            layouts are copied.
        q_pids, g_pids: [Q] / [G] int32 or int64 identity labels (any framework; moved to host).
        q_camids, g_camids: [Q] / [G] int32 or int64 camera labels.
        max_rank: length of the returned CMC curve (>= 1). Unlike torchreid, it is not cut to G.
        remove_same_camera: drop gallery entries sharing the query's pid *and* camera
            (Market-1501 protocol). False keeps every entry.
        return_per_query: also return per-query AP, INP and first-match rank.

    Returns:
        :class:`RankResult` (host numpy/float values whatever the input framework).

    Raises:
        ValueError: empty query or gallery, length mismatches, NaN distances, no valid query.
        TypeError: unsupported array types or dtypes, CUDA input without a CUDA build.

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import evaluate_rank
        >>> distmat = np.array([[0.1, 0.5, 0.9], [0.7, 0.2, 0.3]])
        >>> result = evaluate_rank(distmat, q_pids=[1, 2], g_pids=[1, 2, 2],
        ...                        q_camids=[0, 0], g_camids=[1, 1, 1], max_rank=3)
        >>> result.cmc.tolist(), result.mAP
        ([1.0, 1.0, 1.0], 1.0)
    """
    distmat = _arrays.as_float_array(distmat, "distmat", 2, "[Q, G]")
    num_query, num_gallery = (int(s) for s in distmat.shape)
    if num_query == 0 or num_gallery == 0:
        raise ValueError(f"distmat must have at least one query and one gallery entry, got shape {(num_query, num_gallery)}")
    max_rank = _check_max_rank(max_rank)
    remove_same_camera = _checks.check_flag(remove_same_camera, "remove_same_camera")
    return_per_query = _checks.check_flag(return_per_query, "return_per_query")
    ids = _Identities(q_pids, g_pids, q_camids, g_camids, num_query, num_gallery)

    placement = _arrays.placement_of(distmat, "distmat")
    check_device_supported(placement, "distmat")
    distmat = _arrays.rows_contiguous(distmat)
    out = _PerQuery(placement, num_query)
    _run_kernel(distmat, placement, ids, _device_ids(ids, placement), slice(0, num_query), remove_same_camera, out)
    return _summarise(out, max_rank, return_per_query)


def evaluate_rank_cuhk03(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    num_repeats: int = 10,
    seed: int | np.random.RandomState = 0,
) -> RankResult:
    """CUHK03's single-shot protocol, as torchreid's ``eval_cuhk03`` (``use_metric_cuhk03=True``).

    Per query, gallery entries of its own pid *and* camera are removed; then, ``num_repeats`` times,
    one gallery image per remaining identity is drawn at random and the CMC of that sampled
    gallery is taken; the query's CMC is the mean over the repeats. mAP (and mINP) are over the
    whole kept gallery, as torchreid computes AP (it equals :func:`evaluate_rank`'s).

    The draws follow torchreid's order exactly: ``np.random.RandomState(seed)``, queries in order,
    then repeats, then the kept identities in order of their best rank, one ``choice`` each; so
    with ``np.random.seed(seed)`` before torchreid's call the numbers are the same. Ties in a
    distance row are ranked by gallery index (stable sort), the rule of :func:`evaluate_rank`;
    torchreid's ``np.argsort`` leaves tie order to numpy. As torchreid, ``max_rank`` is cut to G;
    where fewer identities than ``max_rank`` remain, the curve stays at its last value (torchreid
    fails on the shape there).

    Args:
        distmat, q_pids, g_pids, q_camids, g_camids: as :func:`evaluate_rank` (the ranking runs
            on the host; a CUDA matrix is copied once).
        max_rank: CMC length (cut to the gallery size).
        num_repeats: gallery samplings per query (torchreid: 10).
        seed: the RandomState seed of the sampling, or a ``np.random.RandomState`` to draw from.

    Returns:
        :class:`RankResult`: ``cmc`` float64 [min(max_rank, G)], ``mAP``, ``mINP``, valid queries.

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import evaluate_rank_cuhk03
        >>> distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
        >>> # pid 2's images rank 1st and 3rd, the match (pid 1) 2nd and 4th: one image of each is
        >>> # drawn, and the match comes first only when pid 2's 3rd-ranked image is drawn and
        >>> # the match's 2nd-ranked one: a quarter of the draws
        >>> r = evaluate_rank_cuhk03(distmat, [1], [2, 1, 2, 1], [0], [1, 1, 1, 1], max_rank=2, num_repeats=4000)
        >>> abs(float(r.cmc[0]) - 0.25) < 0.03, float(r.cmc[1]), r.mAP == (1 / 2 + 2 / 4) / 2
        (True, 1.0, True)
    """
    max_rank = _check_max_rank(max_rank)
    num_repeats = _checks.check_int(num_repeats, "num_repeats", 1, 10_000)
    if isinstance(seed, np.random.RandomState):
        rng = seed  # e.g. numpy's global state, as torchreid draws (the drop-in adapters pass it)
    else:
        rng = np.random.RandomState(_checks.check_int(seed, "seed", 0, 2**32 - 1))
    # evaluate_rank validates every input and gives the per-query AP / INP; the sampled CMC below
    # ranks the host copies it checked
    full = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=1, return_per_query=True)
    distmat = np.asarray(_arrays.to_numpy(distmat), dtype=np.float64)
    q_pids, g_pids, q_camids, g_camids = (np.asarray(_arrays.to_numpy(_arrays.as_array(x, "ids")), dtype=np.int64)
                                          for x in (q_pids, g_pids, q_camids, g_camids))
    cmc_length = min(max_rank, distmat.shape[1])
    cmc_sum = np.zeros(cmc_length)
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        ranked_pids = g_pids[order]
        keep = ~((ranked_pids == q_pids[q]) & (g_camids[order] == q_camids[q]))
        kept = ranked_pids[keep]
        if not (kept == q_pids[q]).any():
            continue  # no valid match: skipped, as by evaluate_rank
        # identities in order of their best-ranked image, each with its positions in the kept list
        unique, first, inverse = np.unique(kept, return_index=True, return_inverse=True)
        by_first = np.argsort(first, kind="stable")
        members = np.argsort(inverse, kind="stable")  # positions grouped by identity, ascending
        starts = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(unique)))])
        sizes = (starts[1:] - starts[:-1])[by_first]
        draws = rng.randint(0, np.tile(sizes, num_repeats)).reshape(num_repeats, -1)  # torchreid's choice() order
        chosen = members[starts[:-1][by_first][None, :] + draws]  # [repeats, identities] positions in `kept`
        true_column = int(np.flatnonzero(unique[by_first] == q_pids[q])[0])
        rank = (chosen < chosen[:, [true_column]]).sum(axis=1)  # sampled images ranked above the match
        cmc_sum += (np.arange(cmc_length)[None, :] >= rank[:, None]).mean(axis=0)
    result = RankResult(cmc=cmc_sum / full.num_valid_queries, mAP=full.mAP, mINP=full.mINP,
                        num_valid_queries=full.num_valid_queries, num_queries=full.num_queries)
    # per-query AP / INP over the whole kept gallery (the fast-reid adapter returns them)
    result.average_precision = full.average_precision
    result.inverse_negative_penalty = full.inverse_negative_penalty
    result.first_match = full.first_match
    return result


def evaluate_rank_from_features(
    query_features: Any,
    gallery_features: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    metric: str = "euclidean",
    max_rank: int = 50,
    remove_same_camera: bool = True,
    return_per_query: bool = False,
    tile_size: int | None = None,
) -> RankResult:
    """Ranking metrics straight from features, never holding the [Q, G] distance matrix.

    Distance tiles of ``tile_size`` queries are computed with the caller's library (one GEMM per
    tile: BLAS on CPU, cuBLAS on GPU) and ranked in place by the same kernel as
    :func:`evaluate_rank`. Memory: O(tile_size * G + (Q + G) * D).

    Args:
        query_features: [Q, D] float16/bfloat16/float32/float64 (16-bit inputs are computed in
            float32; float64 stays float64).
        gallery_features: [G, D], same dtype family and device as ``query_features``.
        q_pids, g_pids, q_camids, g_camids: as in :func:`evaluate_rank`.
        metric: ``"euclidean"`` (torchreid's default), ``"sqeuclidean"`` or ``"cosine"``
            (1 - cosine similarity of L2-normalised rows). Euclidean and squared Euclidean rank
            identically.
        max_rank, remove_same_camera, return_per_query: as in :func:`evaluate_rank`.
        tile_size: queries per tile; default keeps a tile near 64 MB of float32.

    Returns:
        :class:`RankResult`.

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import evaluate_rank_from_features
        >>> rng = np.random.default_rng(0)
        >>> gallery = rng.normal(size=(6, 8)).astype(np.float32)
        >>> query = gallery[[0, 3]] + 0.01
        >>> result = evaluate_rank_from_features(query, gallery, [0, 3], [0, 1, 2, 3, 4, 5],
        ...                                      [0, 0], [1] * 6, max_rank=5)
        >>> result.mAP
        1.0
    """
    _checks.check_choice(metric, "metric", _METRICS)
    query = _arrays.as_feature_array(query_features, "query_features", "[Q, D]")
    gallery = _arrays.as_feature_array(gallery_features, "gallery_features", "[G, D]")
    placement = _arrays.check_same_device(
        {
            "query_features": _arrays.placement_of(query, "query_features"),
            "gallery_features": _arrays.placement_of(gallery, "gallery_features"),
        }
    )
    if _arrays.framework_of(query) != _arrays.framework_of(gallery):
        raise TypeError("query_features and gallery_features must come from the same library")
    num_query, num_gallery = int(query.shape[0]), int(gallery.shape[0])
    if num_query == 0 or num_gallery == 0:
        raise ValueError(f"need at least one query and one gallery feature, got Q={num_query}, G={num_gallery}")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query_features and gallery_features must have the same dimension, got {query.shape[1]} and {gallery.shape[1]}"
        )
    if tile_size is None:
        tile_size = max(1, min(num_query, (1 << 24) // max(num_gallery, 1)))
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    max_rank = _check_max_rank(max_rank)
    remove_same_camera = _checks.check_flag(remove_same_camera, "remove_same_camera")
    return_per_query = _checks.check_flag(return_per_query, "return_per_query")
    ids = _Identities(q_pids, g_pids, q_camids, g_camids, num_query, num_gallery)
    check_device_supported(placement, "query_features")

    compute_dtype = "float64" if _arrays.dtype_name(query) == "float64" and _arrays.dtype_name(gallery) == "float64" else "float32"
    query = _arrays.contiguous(_arrays.astype(query, compute_dtype))
    gallery = _arrays.contiguous(_arrays.astype(gallery, compute_dtype))
    _xp.check_finite(query, "query_features")
    _xp.check_finite(gallery, "gallery_features")
    if metric == "cosine":
        query, gallery = _xp.normalise_rows(query), _xp.normalise_rows(gallery)
    else:  # a ranking by distance is the same for features all scaled by one power of two
        exponent = _xp.common_exponent(query, gallery)
        if exponent:
            query, gallery = _xp.times_power_of_two(query, exponent), _xp.times_power_of_two(gallery, exponent)
    gallery_sq = None if metric == "cosine" else _xp.squared_row_norms(gallery)

    out = _PerQuery(placement, num_query)
    device_ids = _device_ids(ids, placement)
    for start in range(0, num_query, int(tile_size)):
        rows = slice(start, min(start + int(tile_size), num_query))
        tile = _xp.tile_distances(query[rows], gallery, gallery_sq, metric)
        _run_kernel(tile, placement, ids, device_ids, rows, remove_same_camera, out)
    return _summarise(out, max_rank, return_per_query)

