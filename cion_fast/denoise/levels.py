"""The three CION denoising levels, each a pure function from (features, labels) to new labels.

Labels are int64 per frame, -1 = not in any identity. Groups are handled as ragged sets (frames
sorted by label) and every similarity goes through :mod:`cion_fast.ops`; the Python loops are per
chunk of frames, per guard round or per accepted merge, never per frame.

The features, and every dense array made from them (group sums, centroids), stay in the caller's
library and on its device: a numpy array on the host, a torch tensor on its device (CPU or CUDA;
cupy features are viewed as a torch tensor through DLPack, no copy), a CUDA one denoised on its
GPU by the CUDA kernels; their dense arithmetic goes through :mod:`cion_fast._xp`. The integer
bookkeeping (labels, groups, candidate pairs, the union-find of the cannot-link forest) is host
numpy: it is O(M) int64, and the forest is sequential. So what crosses between host and device per
level is index arrays going in and scores or keep-masks coming back, never the [M, D] matrix; on a
GPU each such copy is also a synchronisation. The public functions validate their input once and call the private
``_level*``/``_center_videos``, which take checked input (the pipeline calls those directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cion_fast import _arrays, _xp, ops
from cion_fast.denoise.config import DenoiseConfig

# Frames gathered and normalised at a time (bounds temporary memory at ~CHUNK x D x 4 bytes).
_CHUNK_ROWS = 1 << 17
# Candidate (frame, tracklet) or (tracklet, tracklet) pairs scored per kernel call.
_CHUNK_PAIRS = 1 << 22
# Longest run summed row by row in _sorted_segment_sums (longer runs are summed in blocks first).
_SEGMENT_BLOCK = 64


# ---------------------------------------------------------------------------------------------
# validation


def _check_features(features: Any) -> Any:
    """A 2-D float feature matrix [M, D] checked finite (chunked), as the dense array the levels
    work on (:func:`_xp.numpy_or_torch`: numpy stays on the host, torch/cupy on their device).

    Raises TypeError for a non-float array and ValueError for a wrong rank or NaN/inf.
    """
    features = _arrays.as_feature_array(features, "features", "[M, D]")
    # TypeError now, not after the first pass: a torch device other than CPU/CUDA, or CUDA
    # features with a build of cion_fast without CUDA.
    ops.check_device_supported(_arrays.placement_of(features, "features"), "features")
    features = _xp.numpy_or_torch(features)
    finite, start = _xp.all_finite(features, _CHUNK_ROWS)
    if not finite:
        raise ValueError("features contain NaN or inf (rows from %d on)" % start)
    return features


def _check_labels(labels: Any, num_frames: int, name: str = "labels") -> np.ndarray:
    """int64 host labels [M], each >= -1."""
    labels = _arrays.as_index_array(labels, name, num_frames)
    if labels.size and labels.min() < -1:
        raise ValueError(f"{name} must be >= -1 (-1 = no identity), got {int(labels.min())}")
    return labels


def _check_anchored(anchored: Any, num_frames: int) -> np.ndarray:
    """bool host mask [M] (the shared array checks: TypeError / ValueError naming ``anchored``)."""
    anchored = _arrays.as_array(anchored, "anchored")
    _arrays.require_ndim(anchored, "anchored", 1, "[M]")
    _arrays.require_dtype(anchored, "anchored", ("bool",))
    if anchored.shape[0] != num_frames:
        raise ValueError(f"anchored must have length {num_frames}, got {anchored.shape[0]}")
    return _arrays.to_numpy(anchored)


def _check_frame_index(frame_index: Any, num_frames: int) -> np.ndarray:
    """int64 host frame indices [M], each >= 0."""
    frame_index = _arrays.as_index_array(frame_index, "frame_index", num_frames)
    if frame_index.size and frame_index.min() < 0:
        raise ValueError(f"frame_index must be >= 0, got {int(frame_index.min())}")
    return frame_index


def _check_offsets(offsets: Any, num_frames: int) -> np.ndarray:
    """int64 host offsets [N+1]: 0, non-decreasing, ending at M (the ops' one check)."""
    return ops.as_offsets(offsets, num_frames, "offsets")


# ---------------------------------------------------------------------------------------------
# ragged helpers


def dense_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumbers labels >= 0 to 0..K-1 in order of first appearance; -1 stays. Returns (labels, K).

    Example:
        >>> dense_labels(np.array([7, -1, 3, 7, 5]))
        (array([ 0, -1,  1,  0,  2]), 3)
    """
    out = np.full(labels.shape[0], -1, dtype=np.int64)
    kept = labels >= 0
    if not kept.any():
        return out, 0
    _, first, inverse = np.unique(labels[kept], return_index=True, return_inverse=True)
    rank = np.empty(first.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    out[kept] = rank[inverse]
    return out, int(first.shape[0])


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ragged counts [n]: (owner [sum], position within owner [sum])."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    owner = np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(total, dtype=np.int64) - starts[owner]


def _normalised(rows: Any) -> Any:
    """float32 rows scaled to unit L2 norm, scale-free (:func:`cion_fast._xp.normalise_rows`)."""
    return _xp.normalise_rows(rows, "float32")


def _sorted_segment_sums(rows: Any, starts: np.ndarray) -> Any:
    """[S, D] sums of consecutive row runs ``rows[starts[s]:starts[s + 1]]`` (``starts[0] == 0``,
    strictly increasing; the last run ends at the last row).

    A loop over the position inside the runs (at most ``_SEGMENT_BLOCK`` steps), each adding one
    row to every run still that long: contiguous row adds, several times faster than
    ``np.add.reduceat`` along axis 0. Longer runs are first summed in blocks of that length.
    """
    lengths = np.diff(np.r_[starts, rows.shape[0]])
    longest = int(lengths.max())
    if longest > _SEGMENT_BLOCK:
        blocks = (lengths + _SEGMENT_BLOCK - 1) // _SEGMENT_BLOCK
        owner, step = _expand(blocks)
        block_sums = _sorted_segment_sums(rows, starts[owner] + step * _SEGMENT_BLOCK)
        return _sorted_segment_sums(block_sums, np.cumsum(blocks) - blocks)
    by_length = np.argsort(-lengths, kind="stable")
    negative_length = -lengths[by_length]
    first = starts[by_length]
    acc = _xp.take(rows, first)  # a new array, in the rows' dtype
    for position in range(1, longest):
        alive = int(np.searchsorted(negative_length, -position, side="left"))
        acc[:alive] += _xp.take(rows, first[:alive] + position)
    out = _xp.empty_like(acc)
    _xp.put(out, by_length, acc)
    return out


def _segment_sums(rows: Any, segment: np.ndarray, num_segments: int, out: Any = None) -> Any:
    """out[s] += sum of rows with segment s (dense rows [n, D] float32, host segment [n] in
    0..S-1; ``out`` None: zeros [S, D] like ``rows``)."""
    if out is None:
        out = _arrays.placement_of(rows, "features").zeros((num_segments, rows.shape[1]), "float32")
    if rows.shape[0] == 0:
        return out
    order = np.argsort(segment, kind="stable")
    sorted_segment = segment[order]
    starts = _first_of_runs(sorted_segment)
    _xp.add_rows(out, sorted_segment[starts], _sorted_segment_sums(_xp.take(rows, order), starts))
    return out


@dataclass
class _Groups:
    """The frames of K groups (labels 0..K-1) as a ragged set, with per-group facts.

    Attributes:
        order: int64 [n] frame indices sorted by group (stable: frame order inside a group).
        offsets: int64 [K+1] group g is ``order[offsets[g]:offsets[g+1]]``.
        video: int64 [K] the video of each group (all its frames share it).
        first, last: int64 [K] smallest and largest frame index of the group.
    """

    order: np.ndarray
    offsets: np.ndarray
    video: np.ndarray
    first: np.ndarray
    last: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def _groups_of(labels: np.ndarray, num_groups: int, frame_video: np.ndarray, frame_index: np.ndarray) -> _Groups:
    """:class:`_Groups` of dense labels; ValueError when a group spans two videos."""
    members = np.flatnonzero(labels >= 0)
    order = members[np.argsort(labels[members], kind="stable")]
    counts = np.bincount(labels[members], minlength=num_groups)
    offsets = np.zeros(num_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    starts = offsets[:-1]
    if num_groups == 0:
        empty = np.empty(0, dtype=np.int64)
        return _Groups(order, offsets, empty, empty, empty)
    videos = frame_video[order]
    indices = frame_index[order]
    low_video = np.minimum.reduceat(videos, starts)
    if np.any(np.maximum.reduceat(videos, starts) != low_video):
        raise ValueError("labels: an identity spans several videos; levels 2 and 3 take single-video groups")
    return _Groups(
        order=order,
        offsets=offsets,
        video=low_video,
        first=np.minimum.reduceat(indices, starts),
        last=np.maximum.reduceat(indices, starts),
    )


def _checked_and_returned(level, features: Any, frame_video: Any, frame_index: Any, labels: Any, config: DenoiseConfig,
                          **extra: Any):
    """Public level 2 or 3: checks the input, runs ``level`` (``_level2``/``_level3``) on it and
    returns its labels where the caller's features are."""
    dense = _check_features(features)
    num_frames = dense.shape[0]
    frame_video = _arrays.as_index_array(frame_video, "frame_video", num_frames)
    frame_index = _check_frame_index(frame_index, num_frames)
    if extra.get("anchored") is not None:
        extra["anchored"] = _check_anchored(extra["anchored"], num_frames)
    result, summary = level(dense, frame_video, frame_index, _check_labels(labels, num_frames), config, **extra)
    return _xp.to_caller(result, features), summary


def _grouped(features: Any, labels: np.ndarray, frame_video: np.ndarray, frame_index: np.ndarray):
    """The groups of checked level-2/3 input: (dense labels int64 [M], number of groups K,
    :class:`_Groups`, per-group sums of the normalised features float32 [K, D] on the features'
    device)."""
    labels, num_groups = dense_labels(labels)
    groups = _groups_of(labels, num_groups, frame_video, frame_index)
    return labels, num_groups, groups, _group_sums(features, groups)


def _rows(features: Any, lo: int, hi: int, rows: np.ndarray | None) -> Any:
    """``features[lo:hi]`` (``rows`` None) or ``features[rows[lo:hi]]``."""
    return features[lo:hi] if rows is None else _xp.take(features, rows[lo:hi])


def _set_sums(features: Any, offsets: np.ndarray, rows: np.ndarray | None = None, dtype: str = "float32") -> Any:
    """[N, D] of ``dtype`` (float32 or float64, the accumulation's) on the features' device: the
    sum of the L2-normalised rows of each ragged set ``features[rows[offsets[t]:offsets[t + 1]]]``
    (``rows`` None: the features' own rows; an empty set sums to 0), a chunk of sets at a time:
    memory beyond the result is one chunk of rows."""
    sums = _arrays.placement_of(features, "features").zeros((offsets.shape[0] - 1, features.shape[1]), dtype)
    for first, last in _ragged_chunks(offsets):
        lo, hi = int(offsets[first]), int(offsets[last])
        if hi == lo:
            continue
        chunk = _arrays.astype(_normalised(_rows(features, lo, hi, rows)), dtype)
        starts = offsets[first:last] - lo
        filled = np.flatnonzero(np.diff(offsets[first : last + 1]) > 0)
        _xp.put(sums, first + filled, _sorted_segment_sums(chunk, starts[filled]))
    return sums


def _group_sums(features: Any, groups: _Groups) -> Any:
    """float32 [K, D]: the sum of each group's L2-normalised frame features (its unnormalised
    centroid; cosine to it equals cosine to the centroid)."""
    return _set_sums(features, groups.offsets, groups.order)


def _ragged_chunks(offsets: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive ranges ``[first, last)`` of ragged sets holding about ``_CHUNK_ROWS`` rows each
    (a larger set forms a range of its own)."""
    num_sets = offsets.shape[0] - 1
    marks = np.arange(_CHUNK_ROWS, int(offsets[-1]), _CHUNK_ROWS)
    bounds = np.unique(np.r_[0, np.searchsorted(offsets, marks, side="left").clip(max=num_sets), num_sets])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _prune(features: Any, offsets: np.ndarray, rows: np.ndarray | None, config: DenoiseConfig) -> np.ndarray:
    """bool [n] keep-mask of ``ops.tracklet_prune`` over ragged sets, run a chunk of sets at a time
    (the op widens its input to float32: chunks bound that copy). The sets are
    ``features[rows[offsets[t]:offsets[t + 1]]]`` (``rows`` None: the features' own rows)."""
    keep = np.empty(int(offsets[-1]), dtype=bool)
    for first, last in _ragged_chunks(offsets):
        lo, hi = int(offsets[first]), int(offsets[last])
        chunk = _rows(features, lo, hi, rows)
        keep[lo:hi] = _xp.host(
            ops.tracklet_prune(chunk, offsets[first : last + 1] - lo, threshold=config.prune_threshold, min_frames=config.min_frames)
        ).astype(bool)
    return keep


def _single_rows(rows: Any) -> tuple[Any, np.ndarray]:
    """Rows as one-frame tracklets for ``ops.tracklet_similarity``: (rows, offsets 0..n)."""
    return rows, np.arange(rows.shape[0] + 1, dtype=np.int64)


def _pair_cosines(rows_a: Any, rows_b: Any, pairs: np.ndarray) -> np.ndarray:
    """Host float32 [P] cosine of dense rows_a[pairs[:, 0]] and rows_b[pairs[:, 1]] (rows_b None:
    rows_a), through ``ops.tracklet_similarity`` on one-row sets, in chunks of host pairs."""
    out = np.empty(pairs.shape[0], dtype=np.float32)
    a, a_offsets = _single_rows(rows_a)
    b, b_offsets = (None, None) if rows_b is None else _single_rows(rows_b)
    for start in range(0, pairs.shape[0], _CHUNK_PAIRS):
        chunk = np.ascontiguousarray(pairs[start : start + _CHUNK_PAIRS])
        out[start : start + chunk.shape[0]] = _xp.host(
            ops.tracklet_similarity(a, a_offsets, b, b_offsets, mode="centroid", pairs=chunk)
        )
    return out


def _first_of_runs(keys: np.ndarray) -> np.ndarray:
    """Positions where a sorted key array starts a new run."""
    if keys.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def cannot_link_pairs(labels: np.ndarray, frame_video: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
    """int64 [C, 2] distinct label pairs (a < b) that hold a frame of the same video at the same
    frame index: seen at the same moment, hence different people.

    Example:
        >>> cannot_link_pairs(np.array([0, 0, 1, 2]), np.array([5, 5, 5, 5]), np.array([1, 2, 2, 9]))
        array([[0, 1]])
    """
    members = np.flatnonzero(labels >= 0)
    order = members[np.lexsort((frame_index[members], frame_video[members]))]
    video, index = frame_video[order], frame_index[order]
    same = (video[1:] == video[:-1]) & (index[1:] == index[:-1])
    if not same.any():
        return np.empty((0, 2), dtype=np.int64)
    run_start = np.flatnonzero(np.r_[True, ~same])
    run_end = np.r_[run_start[1:], order.shape[0]]
    run_of = np.repeat(np.arange(run_start.shape[0]), run_end - run_start)
    partners = run_end[run_of] - np.arange(order.shape[0]) - 1
    first, step = _expand(partners)
    second = first + 1 + step
    a, b = labels[order[first]], labels[order[second]]
    distinct = a != b
    pairs = np.stack([np.minimum(a, b)[distinct], np.maximum(a, b)[distinct]], axis=1)
    return np.unique(pairs, axis=0) if pairs.shape[0] else pairs


def constrained_forest(num_nodes: int, edges: np.ndarray, cannot: np.ndarray) -> tuple[np.ndarray, int]:
    """Greedy union-find over ``edges`` in the given order that never joins a cannot-link pair.

    Pass the edges sorted by decreasing similarity: an edge is accepted when it joins two
    different components and the union would not put a cannot-link pair into one component
    (directly or through any chain); it is refused when it would; it is skipped (neither) when
    its ends are already joined. Each component keeps the set of nodes it must never join. The
    accepted edges form a spanning forest of the resulting components (with no cannot-link pairs:
    the maximum spanning forest).

    Args:
        num_nodes: nodes are 0..num_nodes-1.
        edges: int64 [E, 2] candidate edges, strongest first.
        cannot: int64 [C, 2] pairs that must end in different components.

    Returns:
        (indices into ``edges`` of the accepted edges int64 [A], number of refused edges).

    Example:
        >>> edges = np.array([[0, 1], [1, 2], [0, 2], [2, 3]])
        >>> constrained_forest(4, edges, np.array([[0, 3]]))
        (array([0, 1]), 1)
    """
    parent = list(range(num_nodes))
    forbidden: dict[int, set[int]] = {}
    for a, b in cannot.tolist():
        forbidden.setdefault(a, set()).add(b)
        forbidden.setdefault(b, set()).add(a)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    accepted = []
    refused = 0
    for index, (a, b) in enumerate(edges.tolist()):
        root_a, root_b = find(a), find(b)
        if root_a == root_b:
            continue
        set_a, set_b = forbidden.get(root_a, ()), forbidden.get(root_b, ())
        small, other_root = (set_a, root_b) if len(set_a) <= len(set_b) else (set_b, root_a)
        if any(find(node) == other_root for node in small):
            refused += 1
            continue
        if len(set_a) < len(set_b):
            root_a, root_b = root_b, root_a
        parent[root_b] = root_a
        if root_b in forbidden:
            forbidden.setdefault(root_a, set()).update(forbidden.pop(root_b))
        accepted.append(index)
    return np.asarray(accepted, dtype=np.int64), refused


# ---------------------------------------------------------------------------------------------
# input normalisation


def center_videos(features: Any, offsets: Any, video_ids: Any, out: Any = None) -> Any:
    """Removes each video's common component (scene, camera, lighting) from its frame features.

    Every frame feature is L2-normalised, then ``w_v`` times the mean normalised feature of its
    video ``v`` is subtracted, with ``w_v = 1 - 1 / (tracklets of v)``: a video of one tracklet
    is left as it is (its mean *is* its person), a video of many tracklets loses almost all of
    its mean. What two people of one scene share is the scene; what one person shares across
    scenes is the person, so this separates identity from video (training-free descriptors need
    it most: their cosine between people of one camera is higher than between one person's views
    in two cameras).

    Args:
        features: float [M, D] (float16 stays float16, anything else becomes float32): numpy,
            torch (CPU or CUDA) or cupy; the work runs on the features' device.
        offsets: int64 [N+1] tracklet offsets.
        video_ids: int64 [N] video of each tracklet.
        out: where to write the result: a writable [M, D] array of the result's dtype in the
            features' library and device, e.g. for numpy features a memory-mapped file
            (``np.lib.format.open_memmap(path, "w+", ...)``) so that the copy lives on disk, not in
            memory; None allocates it.

    Returns:
        the centred features [M, D] in the features' library and device (not re-normalised;
        cosine similarity is used downstream): ``out`` when given. Memory besides the result:
        O(videos x D) and one chunk of rows.

    Example:
        >>> scene = np.array([0, 0, 2.0])                   # what every frame of the video shares
        >>> people = np.repeat(np.eye(3)[:2], 2, axis=0)       # two tracklets, two people
        >>> f = people + scene
        >>> c = center_videos(f, np.array([0, 2, 4]), np.array([7, 7]))
        >>> cosine = lambda a, b: round(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), 2)
        >>> cosine(f[0], f[2]), cosine(c[0], c[2])             # the two people, before and after
        (0.8, 0.38)
    """
    dense = _check_features(features)
    offsets = _check_offsets(offsets, dense.shape[0])
    video_ids = _arrays.as_index_array(video_ids, "video_ids", offsets.shape[0] - 1)
    if out is not None:
        _check_out(out, _arrays.as_array(features, "features"))
    centred = _center_videos(dense, offsets, video_ids, None if out is None else _xp.numpy_or_torch(out))
    return out if out is not None else _xp.to_caller(centred, features)


def _centred_dtype(features: Any) -> str:
    """The dtype of the centred copy: float16 stays float16, anything else becomes float32."""
    return "float16" if _arrays.dtype_name(features) == "float16" else "float32"


def _check_out(out: Any, features: Any) -> None:
    """ValueError unless ``out`` can hold the centred copy of the caller's (checked) ``features``:
    same library, device and shape, the centred dtype, writable (a torch ``out`` contiguous: an
    expanded tensor would alias its rows)."""
    dtype = _centred_dtype(features)
    framework = _arrays.framework_of(out)
    fits = (framework == _arrays.framework_of(features) and tuple(out.shape) == tuple(features.shape)
            and _arrays.dtype_name(out) == dtype and _arrays.placement_of(out, "out") == _arrays.placement_of(features, "features")
            and (out.flags.writeable if framework == "numpy" else out.is_contiguous() if framework == "torch" else True))
    if not fits:
        raise ValueError(f"out must be a writable {dtype} array of shape {tuple(features.shape)} on the features' device, got "
                         f"{type(out).__name__} {getattr(out, 'dtype', None)} {tuple(getattr(out, 'shape', ()))}")


def _center_videos(features: Any, offsets: np.ndarray, video_ids: np.ndarray, out: Any = None) -> Any:
    """:func:`center_videos` on checked input (dense features; ``out`` checked or None)."""
    _, video_rank = np.unique(video_ids, return_inverse=True)
    num_videos = int(video_rank.max()) + 1 if video_rank.size else 0
    frame_video = np.repeat(video_rank, np.diff(offsets))
    sums = _segment_sums(_set_sums(features, offsets), video_rank, num_videos)
    frames = np.bincount(frame_video, minlength=num_videos)
    weight = 1.0 - 1.0 / np.bincount(video_rank, minlength=num_videos)
    shift = _xp.scale_rows(sums, weight / np.maximum(frames, 1))
    if out is None:
        out = _arrays.placement_of(features, "features").empty(tuple(features.shape), _centred_dtype(features))
    for start in range(0, features.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        out[start:stop] = _normalised(features[start:stop]) - _xp.take(shift, frame_video[start:stop])
    return out


# ---------------------------------------------------------------------------------------------
# level 1


def level1(features: Any, offsets: Any, config: DenoiseConfig = DenoiseConfig()) -> tuple[Any, dict]:
    """Level 1, single-tracklet denoising: ``ops.tracklet_prune`` on every tracklet.

    Args:
        features: float [M, D] frame features (any scale: cosine similarity is used): numpy,
            torch (CPU or CUDA) or cupy; the work runs on the features' device.
        offsets: int64 [N+1] tracklet t is frames ``offsets[t]:offsets[t+1]``.
        config: ``prune_threshold`` and ``min_frames`` are used.

    Returns:
        (labels int64 [M] in the features' library and device: the surviving tracklet of each
        frame renumbered 0..K-1, -1 for frames removed into the pool; summary dict).

    Example:
        >>> f = np.array([[1, 0], [1, 0.1], [0, 1], [1, 0.05]], dtype=np.float32)
        >>> level1(f, np.array([0, 4]))[0]
        array([ 0,  0, -1,  0])
    """
    dense = _check_features(features)
    labels, summary = _level1(dense, _check_offsets(offsets, dense.shape[0]), config)
    return _xp.to_caller(labels, features), summary


def _level1(features: Any, offsets: np.ndarray, config: DenoiseConfig) -> tuple[np.ndarray, dict]:
    """:func:`level1` on checked input; host labels."""
    keep = _prune(features, offsets, None, config)
    tracklet = np.repeat(np.arange(offsets.shape[0] - 1, dtype=np.int64), np.diff(offsets))
    labels, num_groups = dense_labels(np.where(keep, tracklet, -1))
    summary = {
        "images": int(keep.sum()),
        "identities": num_groups,
        "frames_pooled": int((~keep).sum()),
        "tracklets_dropped": int(offsets.shape[0] - 1 - num_groups),
    }
    return labels, summary


# ---------------------------------------------------------------------------------------------
# level 2


def _reallocate(
    features: Any,
    labels: np.ndarray,
    groups: _Groups,
    sums: Any,
    frame_video: np.ndarray,
    frame_index: np.ndarray,
    config: DenoiseConfig,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pooled frames -> most similar same-video group centroid if >= tau2.
    Returns (frames int64 [R], their groups int64 [R], pooled frame count).

    A group's own moments do not bar a pooled frame: a frame pruned from one tracklet is most
    often a neighbour caught by its box, at a moment when the neighbour's own track runs, so it
    belongs to a group that already has that moment (measured: refusing it dropped 2 % of the
    frames of the sparse family member and lost 0.03 BCubed F)."""
    pool = np.flatnonzero(labels < 0)
    empty = np.empty(0, dtype=np.int64)
    if pool.shape[0] == 0 or groups.video.shape[0] == 0:
        return empty, empty, int(pool.shape[0])
    by_video = np.argsort(groups.video, kind="stable")
    sorted_video = groups.video[by_video]
    pool_video = frame_video[pool]
    low = np.searchsorted(sorted_video, pool_video, side="left")
    candidates = np.searchsorted(sorted_video, pool_video, side="right") - low
    pool_rows = _xp.take(features, pool)
    frames, targets = [], []
    total = np.cumsum(candidates)
    cuts = np.searchsorted(total, np.arange(_CHUNK_PAIRS, int(total[-1]), _CHUNK_PAIRS), side="right")
    edges = np.unique(np.r_[0, cuts, pool.shape[0]])
    for start, stop in zip(edges[:-1], edges[1:]):
        owner, step = _expand(candidates[start:stop])
        owner += start
        group = by_video[low[owner] + step]
        index = frame_index[pool[owner]]
        valid = np.ones(owner.shape[0], dtype=bool)
        if config.frame_window is not None:
            window = config.frame_window
            valid &= (index >= groups.first[group] - window) & (index <= groups.last[group] + window)
        owner, group = owner[valid], group[valid]
        if owner.shape[0] == 0:
            continue
        cosine = _pair_cosines(pool_rows, sums, np.stack([owner, group], axis=1))
        best = np.lexsort((-cosine, owner))
        best = best[_first_of_runs(owner[best])]
        good = best[cosine[best] >= config.reallocation_threshold]
        frames.append(pool[owner[good]])
        targets.append(group[good])
    if not frames:
        return empty, empty, int(pool.shape[0])
    return np.concatenate(frames), np.concatenate(targets), int(pool.shape[0])


def _video_pairs(groups: _Groups) -> np.ndarray:
    """int64 [P, 2] every pair of groups of one video (a listed before b in video order)."""
    by_video = np.argsort(groups.video, kind="stable")
    sorted_video = groups.video[by_video]
    video_end = np.searchsorted(sorted_video, sorted_video, side="right")
    partners = video_end - np.arange(by_video.shape[0]) - 1
    first, step = _expand(partners)
    return np.stack([by_video[first], by_video[first + 1 + step]], axis=1)


def _recheck(features: Any, labels: np.ndarray, changed: np.ndarray, config: DenoiseConfig) -> np.ndarray:
    """Level 1's check (``ops.tracklet_prune``) on the groups flagged in ``changed`` [K];
    returns the labels with removed frames set to -1."""
    members = np.flatnonzero((labels >= 0) & changed[labels.clip(min=0)])
    if members.shape[0] == 0:
        return labels
    members = members[np.argsort(labels[members], kind="stable")]
    _, counts = np.unique(labels[members], return_counts=True)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    keep = _prune(features, offsets, members, config)
    labels = labels.copy()
    labels[members[~keep]] = -1
    return labels


def level2(
    features: Any,
    frame_video: Any,
    frame_index: Any,
    labels: Any,
    config: DenoiseConfig = DenoiseConfig(),
) -> tuple[np.ndarray, dict]:
    """Level 2, short-range single-video denoising: reallocation, merging under cannot-link, re-check.

    1. Every pooled frame (label -1) joins the group of its own video whose centroid is most
       similar, when the cosine is >= ``reallocation_threshold`` (and, with ``frame_window``, the
       group's kept frames are within that many frames); otherwise it stays -1. A group that
       already has a frame at that moment may take it: a pruned frame is mostly a neighbour
       caught by a tracklet's box while the neighbour's own track runs.
    2. Groups of one video whose centroids have cosine >= ``merge_threshold`` are merged: the
       candidate merges are taken strongest first, and with ``cannot_link`` a merge that would put
       two groups sharing a frame index into one identity (directly or through a chain) is refused
       (:func:`constrained_forest`; only the frames of the input groups count, not the
       reallocated ones); the identities are ``ops.connected_components`` of the accepted merges.
    3. ``ops.tracklet_prune`` (level 1's check) runs again on every identity that changed.

    Args:
        features: float [M, D]: numpy, torch (CPU or CUDA) or cupy; the work runs on its device.
        frame_video: int64 [M] video id of each frame.
        frame_index: int64 [M] frame index (time) of each frame, >= 0.
        labels: int64 [M] level-1 labels (each group within one video), -1 = pooled.
        config: ``reallocation_threshold``, ``frame_window``, ``cannot_link``,
            ``merge_threshold``, ``prune_threshold`` and ``min_frames`` are used.

    Returns:
        (labels int64 [M] in the features' library and device, renumbered 0..K-1 with -1 =
        dropped; summary dict).

    Example:
        >>> f = np.array([[1, 0], [1, 0.1], [1, 0.05], [0.98, 0.1], [0, 1]], dtype=np.float32)
        >>> level2(f, np.zeros(5, dtype=np.int64), np.array([0, 1, 5, 6, 2]), np.array([0, 0, 1, 1, -1]))[0]
        array([ 0,  0,  0,  0, -1])
    """
    return _checked_and_returned(_level2, features, frame_video, frame_index, labels, config)


def _level2(features: Any, frame_video: np.ndarray, frame_index: np.ndarray, labels: np.ndarray,
            config: DenoiseConfig) -> tuple[np.ndarray, dict]:
    """:func:`level2` on checked input; host labels."""
    labels, num_groups, groups, sums = _grouped(features, labels, frame_video, frame_index)
    if num_groups == 0:  # an earlier level kept no frame: an empty labelling is a valid result
        summary = dict.fromkeys(("images", "identities", "frames_reallocated", "frames_discarded", "merges",
                                 "merges_refused_cannot_link", "frames_removed_by_recheck"), 0)
        return labels.copy(), {**summary, "frames_discarded": int(labels.shape[0])}

    frames, targets, pooled = _reallocate(features, labels, groups, sums, frame_video, frame_index, config)
    # Constraints come from the tracker's assignments only: a reallocated frame was moved by
    # similarity, and its moment may be one its person also has in another group (a crop of a
    # neighbour's box shows a person whose own track runs at that frame).
    cannot = cannot_link_pairs(labels, frame_video, frame_index) if config.cannot_link else None
    labels = labels.copy()
    labels[frames] = targets
    _segment_sums(_normalised(_xp.take(features, frames)), targets, num_groups, sums)

    pairs = _video_pairs(groups)
    cosine = _pair_cosines(sums, None, pairs)
    strong = np.flatnonzero(cosine >= config.merge_threshold)
    candidates = pairs[strong[np.argsort(-cosine[strong], kind="stable")]]
    refused = 0
    if config.cannot_link:
        accepted, refused = constrained_forest(num_groups, candidates, cannot)
        candidates = candidates[accepted]
    identity = _arrays.to_numpy(ops.connected_components(num_groups, candidates)).astype(np.int64)
    identity, num_identities = dense_labels(identity)

    changed = np.bincount(identity, minlength=num_identities) > 1
    changed[identity[targets]] = True
    merged = np.where(labels >= 0, identity[labels.clip(min=0)], -1)
    checked = _recheck(features, merged, changed, config)
    result, count = dense_labels(checked)
    summary = {
        "images": int((result >= 0).sum()),
        "identities": count,
        "frames_reallocated": int(frames.shape[0]),
        "frames_discarded": int(pooled - frames.shape[0]),
        "merges": int(num_groups - num_identities),
        "merges_refused_cannot_link": int(refused),
        "frames_removed_by_recheck": int(((merged >= 0) & (checked < 0)).sum()),
    }
    return result, summary


# ---------------------------------------------------------------------------------------------
# level 3


def _guard(
    centroids: Any, sums: Any, forest: np.ndarray, forest_cosine: np.ndarray, threshold: float
) -> tuple[np.ndarray, int]:
    """Splits linked identities that fail the intra-identity check, along their weakest links.

    ``forest`` holds the accepted links as a maximum spanning forest (strongest first, see
    :func:`constrained_forest`). A component fails when one of its parts (a level-2 identity) has
    a cosine < ``threshold`` to the component's centroid (the mean of all its frames). Each round
    cuts, in every failing component, its forest edge of lowest cosine, which splits it in two;
    the pieces are checked again, until every component passes (a single part always passes).
    Cutting the weakest forest edge is the same as deleting the component's weakest links one by
    one until it falls apart, in one step. Returns (component of each node [K], edges cut).
    """
    num_nodes = centroids.shape[0]
    component = _arrays.to_numpy(ops.connected_components(num_nodes, forest)).astype(np.int64)
    active = np.ones(forest.shape[0], dtype=bool)
    dirty = np.flatnonzero(np.bincount(component, minlength=num_nodes)[component] > 1)
    cut = 0
    while dirty.shape[0]:
        comps, local = np.unique(component[dirty], return_inverse=True)
        centre = _normalised(_segment_sums(_xp.take(sums, dirty), local, comps.shape[0]))
        part_cosine = _xp.row_dots(_xp.take(centroids, dirty), _xp.take(centre, local))
        failing = np.unique(comps[local[part_cosine < threshold]])
        if failing.shape[0] == 0:
            break
        edge_component = component[forest[:, 0]]
        candidate = np.flatnonzero(active & np.isin(edge_component, failing))
        order = candidate[np.lexsort((forest_cosine[candidate], edge_component[candidate]))]
        weakest = order[_first_of_runs(edge_component[order])]
        active[weakest] = False
        cut += int(weakest.shape[0])
        split = np.isin(component, failing)
        component = _arrays.to_numpy(ops.connected_components(num_nodes, forest[active])).astype(np.int64)
        dirty = np.flatnonzero(split & (np.bincount(component, minlength=num_nodes)[component] > 1))
    return component, cut


def level3(
    features: Any,
    frame_video: Any,
    frame_index: Any,
    labels: Any,
    config: DenoiseConfig = DenoiseConfig(),
    anchored: Any = None,
) -> tuple[np.ndarray, dict]:
    """Level 3, long-range cross-video denoising: sliding range + linking relation, then the guard.

    Identities (level-2 labels, each within one video) are ordered by (video, first frame);
    ``ops.sliding_range_link`` compares the centroids of identities of different videos inside
    every range of ``window`` consecutive videos (ranges ``stride`` apart) and links those with
    cosine >= ``link_threshold`` (and mutual top-``mutual_k`` when set). The links are accepted
    strongest first (:func:`constrained_forest`); with ``cannot_link``, a link that would put two
    identities of one video seen at the same frame into one identity, directly or through a
    chain, is refused. The accepted links (a maximum spanning forest) join identities across
    videos; chains cross range borders. The guard (:func:`_guard`) then splits every linked
    identity whose parts are not all within ``link_threshold`` of its centroid, along its weakest
    links. Identities with fewer than ``min_images`` frames are dropped.

    Video ids are taken to be in time order (their sort order is the long sequence).

    Args:
        features: float [M, D]: numpy, torch (CPU or CUDA) or cupy; the work runs on its device.
        frame_video: int64 [M] video id of each frame.
        frame_index: int64 [M] frame index of each frame, >= 0.
        labels: int64 [M] level-2 labels, -1 = dropped.
        config: ``window``, ``stride``, ``link_threshold``, ``mutual_k``, ``cannot_link`` and
            ``min_images`` are used.
        anchored: optional bool [M]: the frames whose moments are constraints (None: all).
            :func:`~cion_fast.denoise.denoise` passes the frames the tracker put in their group
            (not those level 2 reallocated, whose moment its person may also hold elsewhere).

    Returns:
        (labels int64 [M] in the features' library and device, renumbered 0..K-1, -1 = dropped;
        summary dict).

    Example:
        >>> f = np.array([[1, 0], [1, 0.1], [0.9, 0.1], [1, 0], [0, 1]], dtype=np.float32)
        >>> video = np.array([0, 0, 1, 1, 2])
        >>> level3(f, video, np.array([0, 1, 0, 1, 0]), np.array([0, 0, 1, 1, 2]), DenoiseConfig(min_images=1))[0]
        array([0, 0, 0, 0, 1])
    """
    return _checked_and_returned(_level3, features, frame_video, frame_index, labels, config, anchored=anchored)


def _level3(features: Any, frame_video: np.ndarray, frame_index: np.ndarray, labels: np.ndarray,
            config: DenoiseConfig, anchored: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """:func:`level3` on checked input; host labels."""
    labels, num_groups, groups, sums = _grouped(features, labels, frame_video, frame_index)
    if num_groups == 0:  # an earlier level kept no frame: an empty labelling is a valid result
        return labels.copy(), dict.fromkeys(("images", "identities", "links", "links_refused_cannot_link", "links_cut_by_guard",
                                             "identities_linked", "identities_dropped_min_images", "frames_dropped_min_images"), 0)
    centroids = _normalised(sums)

    _, video_rank = np.unique(groups.video, return_inverse=True)
    order = np.lexsort((groups.first, video_rank))
    links = np.empty((0, 2), dtype=np.int64)
    if num_groups:
        _, sorted_links = ops.sliding_range_link(
            _xp.take(centroids, order),
            video_rank[order].astype(np.int64),
            window=config.window,
            stride=config.stride,
            threshold=config.link_threshold,
            mutual_k=config.mutual_k,
        )
        links = order[_xp.host(sorted_links).astype(np.int64).reshape(-1, 2)]
    link_cosine = _pair_cosines(centroids, None, links) if links.shape[0] else np.empty(0, np.float32)
    strongest_first = np.argsort(-link_cosine, kind="stable")
    constrained = labels if anchored is None else np.where(anchored, labels, -1)
    cannot = cannot_link_pairs(constrained, frame_video, frame_index) if config.cannot_link else np.empty((0, 2), np.int64)
    accepted, refused = constrained_forest(num_groups, links[strongest_first], cannot)
    forest = links[strongest_first[accepted]]
    component, cut = _guard(centroids, sums, forest, link_cosine[strongest_first[accepted]], config.link_threshold)
    component, num_components = dense_labels(component)

    frames = np.bincount(component, weights=groups.counts, minlength=num_components)
    large = frames >= config.min_images
    final = np.where(labels >= 0, component[labels.clip(min=0)], -1)
    final[(final >= 0) & ~large[final.clip(min=0)]] = -1
    result, count = dense_labels(final)
    summary = {
        "images": int((result >= 0).sum()),
        "identities": count,
        "links": int(links.shape[0]),
        "links_refused_cannot_link": int(refused),
        "links_cut_by_guard": cut,
        "identities_linked": int(num_groups - num_components),
        "identities_dropped_min_images": int((~large).sum()),
        "frames_dropped_min_images": int(frames[~large].sum()),
    }
    return result, summary
