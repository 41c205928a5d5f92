"""Plots for reports (PNG, matplotlib's non-interactive Agg backend; imported lazily).

Every function takes plain numbers/arrays and a path, writes one PNG and returns the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Lays out, writes and closes a figure; returns the path."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def plot_cmc(curves: Mapping[str, Sequence[float]], path: str | Path, max_rank: int = 20,
             title: str = "CMC on the held-out query / gallery") -> Path:
    """CMC curves, one line per method.

    Args:
        curves: method name -> CMC values (cmc[r] = Rank-(r+1) accuracy in [0, 1]).
        path: output PNG.
        max_rank: ranks shown on the x axis.

    Example:
        >>> import tempfile, os
        >>> out = plot_cmc({"a": [0.5, 0.7, 0.9]}, os.path.join(tempfile.mkdtemp(), "cmc.png"))
        >>> out.exists()
        True
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=float)[:max_rank]
        ax.plot(np.arange(1, len(cmc) + 1), 100 * cmc, marker="o", markersize=3, label=name)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_bars(
    groups: Mapping[str, Mapping[str, float]], path: str | Path, title: str, ylabel: str = ""
) -> Path:
    """Grouped bar chart: groups (x positions) x series (bars within a group).

    Args:
        groups: group name -> {series name -> value}, e.g. denoising level -> {metric -> value}.

    Example:
        >>> import tempfile, os
        >>> out = plot_bars({"level1": {"F": 0.5}, "level2": {"F": 0.6}},
        ...                 os.path.join(tempfile.mkdtemp(), "bars.png"), "quality")
        >>> out.exists()
        True
    """
    plt = _pyplot()
    names = list(groups)
    series = list(dict.fromkeys(s for values in groups.values() for s in values))  # first-seen order
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(names) * max(len(series), 1) * 0.5), 4))
    x = np.arange(len(names))
    for i, name in enumerate(series):
        values = [groups[g].get(name, np.nan) for g in names]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, names)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str, ylabel: str
) -> Path:
    """Lines over training steps, one per run (e.g. each method's pre-training loss).

    Args:
        curves: run name -> (steps, values).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "loss.png")
        >>> plot_curves({"cion": ([0, 1, 2], [3.0, 2.5, 2.2])}, path, "loss", "loss").exists()
        True
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, (steps, values) in curves.items():
        ax.plot(steps, values, linewidth=1.2, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bands(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], path: str | Path, title: str,
    ylabel: str
) -> Path:
    """Mean lines with a +- std band over training steps, one per method (e.g. mAP over seeds).

    Args:
        curves: name -> (steps, means, stds), three sequences of one length.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "map.png")
        >>> plot_bands({"cion": ([0, 10], [5.0, 30.0], [0.5, 2.0])}, path, "mAP", "%").exists()
        True
    """
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, (steps, means, stds) in curves.items():
        means, stds = np.asarray(means, float), np.asarray(stds, float)
        (line,) = ax.plot(steps, means, linewidth=1.4, marker="o", markersize=3, label=name)
        ax.fill_between(steps, means - stds, means + stds, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_retrieval_grid(
    query_images: np.ndarray,
    gallery_images: np.ndarray,
    ranked_gallery: np.ndarray,
    hits: np.ndarray,
    path: str | Path,
    top_k: int = 10,
) -> Path:
    """Queries (first column) with their top-k gallery images; green frame = same identity, red = not.

    Args:
        query_images: uint8 [R, H, W, 3], one row of the grid per query.
        gallery_images: uint8 [G, H, W, 3].
        ranked_gallery: int64 [R, >= top_k] gallery indices in rank order per query.
        hits: bool [R, >= top_k], True where the ranked gallery image has the query's identity.

    Example:
        >>> import tempfile, os
        >>> q = np.zeros((2, 16, 8, 3), np.uint8); g = np.full((5, 16, 8, 3), 200, np.uint8)
        >>> out = plot_retrieval_grid(q, g, np.tile(np.arange(5), (2, 1)), np.eye(2, 5, dtype=bool),
        ...                           os.path.join(tempfile.mkdtemp(), "grid.png"), top_k=5)
        >>> out.exists()
        True
    """
    plt = _pyplot()
    rows, (height, width) = len(query_images), query_images.shape[1:3]
    border = max(2, height // 32)
    canvas = np.full((rows * (height + 2 * border), (top_k + 1) * (width + 2 * border) + width // 2, 3), 255, np.uint8)
    for r in range(rows):
        y = r * (height + 2 * border) + border
        canvas[y : y + height, border : border + width] = query_images[r]
        for k in range(top_k):
            x = (k + 1) * (width + 2 * border) + width // 2 + border
            colour = (40, 170, 60) if hits[r, k] else (210, 40, 40)
            canvas[y - border : y + height + border, x - border : x + width + border] = colour
            canvas[y : y + height, x : x + width] = gallery_images[ranked_gallery[r, k]]
    fig, ax = plt.subplots(figsize=(canvas.shape[1] / 60, canvas.shape[0] / 60))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"query | top-{top_k} gallery (green: same identity)", fontsize=9)
    return _save(fig, path, dpi=100)
