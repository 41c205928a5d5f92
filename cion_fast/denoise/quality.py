"""How good a pseudo-labelling is, measured against ground truth (the synthetic world knows it).

Every metric is computed from contingency tables (counts per (predicted, true) cell, per
(predicted, true, video) cell), never from an M x M pair matrix, so ten million frames cost a few
sorts.

Conventions (the same for every level, so levels can be compared):

* A frame whose label is -1 was *dropped*. Precision-type metrics (purity, pairwise precision,
  BCubed precision) are averaged over the kept frames only. Recall-type metrics are over *all*
  frames with a known identity, kept or dropped: a dropped frame is linked to nobody (a singleton),
  so dropping a good frame costs recall. "images kept" says what the dropping cost in data.
* A frame whose true identity is -1 (a false positive: background, a mis-detection) is a person
  of its own: it matches no other frame. It lowers the precision of the cluster that keeps it and
  takes no part in recall.
* A ratio with nothing to count (0 / 0, e.g. precision when every cluster is a singleton) is 1.0:
  nothing was wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from cion_fast import _arrays


@dataclass(frozen=True)
class Quality:
    """Quality of one labelling (see the module docstring for the conventions).

    Attributes:
        images: frames in total (M).
        images_kept: frames with a label (label >= 0).
        identities: distinct predicted labels among the kept frames.
        true_identities: distinct known true identities (true id >= 0) among all frames.
        purity: fraction of kept frames that belong to their cluster's majority true identity.
        pairwise_precision: same-cluster pairs of kept frames that are the same person / all
            same-cluster pairs.
        pairwise_recall: same-person pairs (known identity, all frames) that share a cluster /
            all same-person pairs.
        pairwise_f1: harmonic mean of the two.
        bcubed_precision: mean over kept frames of |cluster & class| / |cluster|.
        bcubed_recall: mean over known frames of |cluster & class| / |class| (a dropped frame
            counts as a singleton: 1 / |class|).
        bcubed_f: harmonic mean of the two.
        fragmentation: mean number of predicted identities per true identity, over the known
            identities that have at least one kept frame (1.0 is ideal).
        cross_video_linked: fraction of same-person pairs from *different* videos that share a
            cluster; None when no per-frame video ids were given.

    Example:
        >>> q = quality(np.array([0, 0, 1]), np.array([3, 3, 3]), video=np.array([0, 1, 1]))
        >>> q.identities, q.fragmentation, round(q.cross_video_linked, 3), sorted(q.as_dict())[:2]
        (2, 2.0, 0.5, ['bcubed_f', 'bcubed_precision'])
    """

    images: int
    images_kept: int
    identities: int
    true_identities: int
    purity: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    fragmentation: float
    cross_video_linked: float | None

    def as_dict(self) -> dict[str, Any]:
        """The metrics as a plain dict (JSON-ready)."""
        return asdict(self)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 1.0


def _harmonic(a: float, b: float) -> float:
    return 2.0 * a * b / (a + b) if a + b > 0 else 0.0


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int(np.sum(counts * (counts - 1) // 2))


def _cells(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of the stacked non-negative int64 keys and their counts: (rows [C, k], counts [C])."""
    if keys[0].size == 0:
        return np.empty((0, len(keys)), dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.lexsort(keys[::-1])
    stacked = np.stack([key[order] for key in keys], axis=1)
    change = np.ones(stacked.shape[0], dtype=bool)
    change[1:] = np.any(stacked[1:] != stacked[:-1], axis=1)
    starts = np.flatnonzero(change)
    counts = np.diff(np.append(starts, stacked.shape[0]))
    return stacked[starts], counts


def quality(labels: Any, true_identity: Any, video: Any = None) -> Quality:
    """Measures a labelling of M frames against their true identities.

    Args:
        labels: int [M] predicted identity per frame, -1 = dropped (any non-negative ids; they
            need not be consecutive). numpy, torch or cupy.
        true_identity: int [M] ground-truth identity per frame, -1 = unknown (a false positive).
        video: optional int [M] video id per frame; enables ``cross_video_linked``.

    Returns:
        :class:`Quality`.

    Raises:
        TypeError: an argument is not an int32/int64 array.
        ValueError: wrong rank or length, or labels / true identities below -1.

    Example:
        >>> q = quality(np.array([0, 0, 1, 1, -1]), np.array([7, 7, 7, 8, 8]))
        >>> q.images_kept, q.identities, round(q.bcubed_precision, 4), q.pairwise_precision
        (4, 2, 0.75, 0.5)
    """
    labels = _arrays.as_index_array(labels, "labels")
    truth = _arrays.as_index_array(true_identity, "true_identity", labels.shape[0])
    frame_video = None if video is None else _arrays.as_index_array(video, "video", labels.shape[0])
    for name, values in (("labels", labels), ("true_identity", truth)):
        if values.size and values.min() < -1:
            raise ValueError(f"{name} must be >= -1 (-1 = dropped / unknown), got {int(values.min())}")
    num_frames = labels.shape[0]
    kept = labels >= 0
    known = truth >= 0

    # Dense classes: known identities 0..L-1, then one singleton class per unknown frame.
    true_ids, known_class = np.unique(truth[known], return_inverse=True)
    num_known_classes = true_ids.shape[0]
    classes = np.empty(num_frames, dtype=np.int64)
    classes[known] = known_class
    classes[~known] = num_known_classes + np.arange(int((~known).sum()), dtype=np.int64)
    class_size = np.bincount(classes, minlength=num_known_classes)

    _, predicted = np.unique(labels[kept], return_inverse=True)
    predicted = predicted.astype(np.int64)
    kept_classes = classes[kept]
    cluster_size = np.bincount(predicted)
    cells, cell_count = _cells(predicted, kept_classes)
    cell_cluster, cell_class = cells[:, 0], cells[:, 1]
    cell_known = cell_class < num_known_classes
    num_kept = int(kept.sum())
    num_known = int(known.sum())

    # Purity: the largest cell of each cluster.
    largest = np.zeros(cluster_size.shape[0], dtype=np.int64)
    np.maximum.at(largest, cell_cluster, cell_count)
    purity = _ratio(largest.sum(), num_kept)

    true_pairs = _pairs(class_size[:num_known_classes])
    hit_pairs = _pairs(cell_count[cell_known])
    pairwise_precision = _ratio(hit_pairs, _pairs(cluster_size))
    pairwise_recall = _ratio(hit_pairs, true_pairs)

    squares = cell_count.astype(np.float64) ** 2
    bcubed_precision = _ratio(np.sum(squares / cluster_size[cell_cluster]), num_kept)
    dropped_known = classes[known & ~kept]
    recall_sum = np.sum(squares[cell_known] / class_size[cell_class[cell_known]])
    recall_sum += np.sum(1.0 / class_size[dropped_known])
    bcubed_recall = _ratio(recall_sum, num_known)

    known_cells_per_class = np.bincount(cell_class[cell_known], minlength=num_known_classes)
    present = known_cells_per_class > 0
    fragmentation = float(known_cells_per_class[present].mean()) if present.any() else 1.0

    cross_video_linked = None
    if frame_video is not None:
        # Same-person pairs from different videos = all same-person pairs - same-video ones.
        _, per_class_video = _cells(classes[known], frame_video[known])
        true_cross = true_pairs - _pairs(per_class_video)
        kept_known = kept & known
        _, per_cell_video = _cells(predicted[known[kept]], classes[kept_known], frame_video[kept_known])
        linked_cross = hit_pairs - _pairs(per_cell_video)
        cross_video_linked = _ratio(linked_cross, true_cross)

    return Quality(
        images=num_frames,
        images_kept=num_kept,
        identities=int(cluster_size.shape[0]),
        true_identities=int(num_known_classes),
        purity=purity,
        pairwise_precision=pairwise_precision,
        pairwise_recall=pairwise_recall,
        pairwise_f1=_harmonic(pairwise_precision, pairwise_recall),
        bcubed_precision=bcubed_precision,
        bcubed_recall=bcubed_recall,
        bcubed_f=_harmonic(bcubed_precision, bcubed_recall),
        fragmentation=fragmentation,
        cross_video_linked=cross_video_linked,
    )


_COLUMNS = (
    ("images kept", "images_kept", "{:d}"),
    ("ids", "identities", "{:d}"),
    ("purity", "purity", "{:.3f}"),
    ("pair P", "pairwise_precision", "{:.3f}"),
    ("pair R", "pairwise_recall", "{:.3f}"),
    ("pair F1", "pairwise_f1", "{:.3f}"),
    ("B3 P", "bcubed_precision", "{:.3f}"),
    ("B3 R", "bcubed_recall", "{:.3f}"),
    ("B3 F", "bcubed_f", "{:.3f}"),
    ("frag", "fragmentation", "{:.2f}"),
    ("x-video", "cross_video_linked", "{:.3f}"),
)


def format_quality_table(rows: Mapping[str, Quality], markdown: bool = False) -> str:
    """A fixed-width (or Markdown) table with one row per labelled stage.

    Args:
        rows: stage name -> :class:`Quality`, in display order.
        markdown: a GitHub Markdown table instead of aligned text.

    Example:
        >>> q = quality(np.array([0, 0, 1]), np.array([5, 5, 6]))
        >>> print(format_quality_table({"level 1": q}).splitlines()[0].split()[:3])
        ['stage', 'images', 'kept']
    """
    header = ["stage"] + [title for title, _, _ in _COLUMNS]
    body = []
    for name, q in rows.items():
        cells = [name]
        for _, field, fmt in _COLUMNS:
            value = getattr(q, field)
            cells.append("-" if value is None else fmt.format(value))
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header] + body
    )
