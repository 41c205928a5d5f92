"""Level-3 (long-range cross-video) linking of CION, and connected components.

Defined in ``docs/ALGORITHMS.md``, "Tracklet kernels" and "Progressive denoising". Identities are
ordered along the long sequence of videos; a *sliding range* of ``window`` videos moves by
``stride`` videos, and only identities of different videos inside a common range are compared.
Links found in all ranges are joined by connected components, so chains cross range borders without
any N x N matrix over the sequence: the cost is O(I * window * identities per video * D) and the
memory O(I * D).

CION's paper gives no thresholds; the defaults (0.7, window 8, stride window/2) are configuration,
to be tuned on the synthetic world's ground truth. The chaining guard (splitting identities whose
parts disagree) belongs to the denoising pipeline, built on these two functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cion_fast import _arrays, _checks
from cion_fast.ops import _ragged
from cion_fast.ops._extension import check_device_supported, kernels


def _check_edges(edges: Any, num_nodes: int) -> Any:
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"edges must have shape [E, 2], got {tuple(edges.shape)}")
    _arrays.require_dtype(edges, "edges", ("int32", "int64"))
    edges = _arrays.contiguous(_arrays.astype(edges, "int64"))
    if edges.shape[0]:
        lo, hi = int(edges.min()), int(edges.max())
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"edges must hold node indices in [0, {num_nodes}), got values in [{lo}, {hi}]")
    return edges


def _components(num_nodes: int, edges: Any, placement: _arrays.Placement) -> Any:
    """Labels of checked int64 [E, 2] ``edges`` on ``placement``."""
    labels = placement.empty((num_nodes,), "int64")
    parent = placement.empty((num_nodes,), "int64") if placement.is_cuda else None
    arrays = _ragged.capsules(placement, edges=edges, labels=labels, parent=parent)
    kernels().connected_components(**arrays, num_nodes=num_nodes, stream=placement.stream())
    return labels


def connected_components(num_nodes: int, edges: Any) -> Any:
    """Connected components of an undirected graph given as an edge list.

    Args:
        num_nodes: number of nodes (integer >= 0); nodes are ``0 .. num_nodes - 1``.
        edges: [E, 2] int32/int64 node pairs (numpy / torch CPU or CUDA / cupy, or a list).
            Self-loops and repeated edges are fine.

    Returns:
        int64 [num_nodes] labels in the edges' framework and device: components are numbered
        0, 1, ... in the order of their smallest node (node 0 is always in component 0), so equal
        partitions give equal labels on every device.

    Raises:
        ValueError: edges of the wrong shape or out of range, negative num_nodes.
        TypeError: unsupported array types or dtypes, CUDA arrays without a CUDA build.

    On CUDA the call waits once, to read the edges' smallest and largest node for the range check.

    Example:
        >>> from cion_fast.ops import connected_components
        >>> connected_components(6, [[4, 1], [2, 0], [1, 5]])
        array([0, 1, 0, 2, 1, 1])
    """
    num_nodes = _checks.check_int(num_nodes, "num_nodes", 0)
    _checks.check_allocation(num_nodes, 16, "num_nodes", "the labels and the union-find parents")
    edges = _arrays.as_array(edges, "edges")
    placement = _arrays.placement_of(edges, "edges")
    check_device_supported(placement, "edges")
    return _components(num_nodes, _check_edges(edges, num_nodes), placement)


class _Ranges:
    """Host-side range bookkeeping: video ranks, video starts, entries and work items."""

    def __init__(self, video_ids: np.ndarray, window: int, stride: int, rows_per_item: int):
        num = len(video_ids)
        changes = np.flatnonzero(video_ids[1:] != video_ids[:-1]) + 1
        self.video_rank = np.zeros(num, dtype=np.int64)
        self.video_rank[changes] = 1
        np.cumsum(self.video_rank, out=self.video_rank)
        self.video_start = np.concatenate([[0], changes, [num]]).astype(np.int64)
        num_videos = len(self.video_start) - 1
        self.num_ranges = 1 if num_videos <= window else -(-(num_videos - window) // stride) + 1
        first = np.arange(self.num_ranges, dtype=np.int64) * stride
        sizes = self.video_start[np.minimum(first + window, num_videos)] - self.video_start[first]
        self.entry_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.item_offsets = np.concatenate([[0], np.cumsum(-(-sizes // rows_per_item))]).astype(np.int64)


def sliding_range_link(
    features: Any,
    video_ids: Any,
    window: int = 8,
    stride: int = 4,
    threshold: float = 0.7,
    mutual_k: int | None = None,
) -> tuple[Any, Any]:
    """Links identities of different videos inside sliding ranges of videos, then groups them.

    Ranges cover the video *ranks* (distinct ``video_ids`` in sorted order) ``[r * stride,
    r * stride + window)`` for ``r = 0, 1, ...`` until the last video is covered. Two identities
    link when they come from different videos of a common range, the cosine of their features is
    ``>= threshold`` and, with ``mutual_k``, each is among the other's ``mutual_k`` most similar
    cross-video candidates in that range (ties included). A link found in several ranges is listed
    once.

    Args:
        features: [I, D] float16/bfloat16/float32/float64 identity features (e.g. centroids),
            numpy / torch (CPU or CUDA) / cupy; normalised inside (a zero row has cosine 0).
        video_ids: [I] int32/int64 video of each identity, sorted (non-decreasing), any framework.
        window: videos per range (>= 1).
        stride: videos between range starts (1 <= stride <= window; default window / 2 for 8).
        threshold: cosine needed for a link (finite real).
        mutual_k: None (off) or an integer >= 1.

    Returns:
        ``(labels, links)``: int64 [I] component labels (numbered in the order of each
        component's first identity, as :func:`connected_components`) and int64 [L, 2] links
        ``(i, j)`` with ``i < j``, ordered by range, then ``i``, then ``j``; both in the
        features' framework and device.

    Raises:
        ValueError: video_ids unsorted or of the wrong length, window < 1, stride outside [1, window],
            mutual_k < 1, non-finite threshold, NaN/inf features.
        TypeError: unsupported array types or dtypes, CUDA arrays without a CUDA build.

    On CUDA the call waits once, to read the number of links before allocating them (with the
    caller's library, like every output).

    Speed: the floor is one dot product per distinct cross-video pair in a range, as a GEMM at the
    BLAS rate. The CPU kernel computes each distinct pair about once (in strips of rows that share
    their first candidate: 1.00 dot products per candidate pair at 100,000 identities), in small
    register tiles that sum each entry across 8 lanes and run below the BLAS rate (the lane sums'
    reductions and the strips' ragged edges), plus the rows' norms (one read of the features; with
    ``mutual_k`` taken range by range, just before the range's strips read the same rows), the
    screening of each strip for cosines reaching the threshold and, with ``mutual_k``, each range's
    candidate lists and top-k: on a 2-core Intel Xeon, with ``mutual_k`` = 5, 2.4-2.6x the floor at
    100,000 identities (34-43 ms between runs) and 2.8-2.9x at 400,000 (0.15-0.18 s); without,
    2.5-2.7x and 2.9-3.0x (benchmarks/NOTES.md, issue 27).

    Example:
        >>> import numpy as np
        >>> from cion_fast.ops import sliding_range_link
        >>> features = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1], [1, 0]], dtype=np.float32)
        >>> labels, links = sliding_range_link(features, video_ids=[0, 0, 1, 1, 9], window=2, stride=1, threshold=0.9)
        >>> labels, links.tolist()
        (array([0, 1, 0, 1, 0]), [[0, 2], [1, 3], [2, 4]])
    """
    features, placement = _ragged.as_features(features, "features", "[I, D]")
    num = int(features.shape[0])
    video_ids = _ragged.as_sorted_video_ids(video_ids, num, "features")
    window = _checks.check_int(window, "window", 1)
    stride = _checks.check_int(stride, "stride", 1)
    if stride > window:
        raise ValueError(f"stride must be <= window (ranges must not skip videos), got stride={stride} > window={window}")
    threshold = _checks.check_real(threshold, "threshold")
    mutual_k = 0 if mutual_k is None else _checks.check_int(mutual_k, "mutual_k", 1)
    if num == 0:
        return placement.empty((0,), "int64"), placement.empty((0, 2), "int64")
    # A range wider than all videos is one range, and a mutual-k beyond all items constrains nothing:
    # clamping keeps every later sum (range starts + window) far from int64's edge.
    num_videos = int(np.count_nonzero(video_ids[1:] != video_ids[:-1])) + 1
    if window >= num_videos:
        window, stride = num_videos, min(stride, num_videos)
    mutual_k = min(mutual_k, num)

    dtype = _ragged.kernel_dtype(features)
    features = _ragged.prepare_features(features, dtype, cosine=True)
    ranges = _Ranges(video_ids, window, stride, int(kernels().SLIDING_RANGE_ROWS_PER_ITEM))
    entries = int(ranges.entry_offsets[-1])
    cuda = placement.is_cuda
    arrays = _ragged.capsules(
        placement,
        features=features,
        video_rank=placement.from_numpy(ranges.video_rank),
        video_start=placement.from_numpy(ranges.video_start),
        entry_offsets=placement.from_numpy(ranges.entry_offsets),
        item_offsets=placement.from_numpy(ranges.item_offsets),
        inv_norm=placement.empty((num,), dtype),
        kth=placement.empty((entries,), dtype) if mutual_k else None,
        # CUDA only: per-(range, row) link counts, their scan, the NaN flag.
        counts=placement.empty((entries,), "int64") if cuda else None,
        link_offsets=placement.empty((entries + 1,), "int64") if cuda else None,
        status=_ragged.new_status(placement),
    )
    found = []  # the links, allocated by the kernel's call once it knows how many there are

    def allocate(num_links: int) -> Any:
        found.append(placement.empty((num_links, 2), "int64", "threshold (the links it accepts)"))
        return _arrays.to_dlpack(found[-1], placement)

    try:
        kernels().sliding_range_link(
            **arrays, window=window, stride=stride, threshold=threshold, mutual_k=mutual_k,
            num_items=int(ranges.item_offsets[-1]), num_entries=entries, allocate=allocate, stream=placement.stream(),
        )
    except MemoryError as error:  # the CPU kernel collects links before it can know their number
        raise ValueError(f"threshold = {threshold} (mutual_k = {mutual_k or None}) accepts more links than fit in "
                         "memory: raise the threshold or set mutual_k") from error
    links = found[-1]
    return _components(num, links, placement), links
