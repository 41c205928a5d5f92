"""The pseudo-label artefact (DESIGN.md, "Data on disk"): ``labels.npy`` (int64 per frame, the
final level), ``levels.npz`` (all three levels and the input tracklet labels) and
``report.json`` (configuration, per-level summary and timings, per-level quality)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cion_fast.denoise.pipeline import LEVEL_NAMES, DenoiseResult
from cion_fast.denoise.quality import Quality


def write_denoise_output(
    directory: str | os.PathLike,
    result: DenoiseResult,
    quality_rows: Mapping[str, Quality] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes the pseudo-label directory atomically (a reader sees all of it or none of it).

    Args:
        directory: output directory (created; replaced only with ``overwrite``).
        result: what :func:`~cion_fast.denoise.denoise` returned.
        quality_rows: optional per-stage :class:`Quality` (from ``result.quality(...)``).
        extra: more JSON-ready fields for ``report.json`` (inputs, total time, ...).
        overwrite: replace an existing directory.

    Returns:
        the directory path.

    Raises:
        FileExistsError: ``directory`` exists and ``overwrite`` is False.

    Example:
        >>> import tempfile, os
        >>> from cion_fast.denoise import DenoiseConfig
        >>> levels = [np.array([0, 0, -1])] * 3
        >>> result = DenoiseResult(levels, [{"level": n} for n in LEVEL_NAMES], np.array([0, 0, 0]), DenoiseConfig())
        >>> out = write_denoise_output(os.path.join(tempfile.mkdtemp(), "labels"), result)
        >>> np.load(out / "labels.npy").tolist(), sorted(os.listdir(out))
        ([0, 0, -1], ['labels.npy', 'levels.npz', 'report.json'])
    """
    from cion_fast import _arrays
    from cion_fast._io import atomic_directory

    report = {
        "config": result.config.as_dict(),
        "calibration": result.calibration,
        "estimate": result.estimate,
        "levels": result.summary,
        "quality": None if quality_rows is None else {name: q.as_dict() for name, q in quality_rows.items()},
        **(extra or {}),
    }
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        np.save(tmp / "labels.npy", _arrays.to_numpy(result.labels).astype(np.int64, copy=False))
        levels = {name.replace(" ", "_"): _arrays.to_numpy(labels) for name, labels in zip(LEVEL_NAMES, result.levels)}
        np.savez(tmp / "levels.npz", tracklets=_arrays.to_numpy(result.tracklet_labels), **levels)
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
    return Path(directory)
