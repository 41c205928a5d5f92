"""The pseudo-label artefact: ``labels.npy`` (int64 per frame, the final level), ``levels.npz``
(all three levels and the input tracklet labels) and ``report.json`` (one schema, whoever writes
it: ``config``, ``calibration``, ``estimate``, ``levels``, ``quality`` keyed by ``"tracklets"`` and
:data:`~cion_fast.denoise.pipeline.LEVEL_NAMES`, then the caller's ``inputs`` and ``seconds``).

:func:`denoise_to_directory` is the one way from tracklets and features to that directory (the
``cion-fast denoise`` command and the demo take it)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cion_fast._checks import check_choice
from cion_fast.denoise.auto import RULES
from cion_fast.denoise.config import DenoiseConfig
from cion_fast.denoise.pipeline import LEVEL_NAMES, DenoiseResult, denoise
from cion_fast.denoise.quality import Quality

# The four thresholds by name, in level order (the configuration fields ``thresholds="auto"`` sets).
THRESHOLD_NAMES = tuple(RULES)


@dataclass
class DenoiseOutput:
    """What :func:`denoise_to_directory` did: the result, its ground-truth quality (None without
    ground truth), the ``report.json`` it wrote and the directory."""

    result: DenoiseResult
    quality: dict[str, Quality] | None
    report: dict[str, Any]
    directory: Path


def upload(features: Any, device: str = "cpu", scratch: str | os.PathLike | None = None) -> Any:
    """The features where the levels run: as they are for ``"cpu"``; for ``"cuda"`` a torch tensor
    on the current GPU, copied a block of rows at a time, so the host holds one block of a
    (memory-mapped) matrix, never a second copy of it.

    Example:
        >>> upload(np.ones((2, 3), np.float32)).shape
        (2, 3)
        >>> upload(np.ones((2, 3), np.float32), "cuda", scratch="/tmp")
        Traceback (most recent call last):
        ...
        ValueError: scratch keeps host features on disk; with device 'cuda' they are centred on the GPU: drop one
    """
    import cion_fast

    if check_choice(device, "device", ("cpu", "cuda")) == "cpu":
        return features
    if scratch is not None:
        raise ValueError("scratch keeps host features on disk; with device 'cuda' they are centred on the GPU: drop one")
    try:
        import torch
    except ImportError:
        raise ValueError("device 'cuda' needs torch (pip install torch)") from None
    if not (cion_fast.cuda_available() and torch.cuda.is_available()):
        raise ValueError("device 'cuda': no usable GPU, a CPU-only torch, or cion_fast built without CUDA (cion-fast info)")
    out = torch.empty(features.shape, dtype=getattr(torch, features.dtype.name), device="cuda")
    block = max(1, (64 << 20) // max(1, features.shape[1] * features.dtype.itemsize))  # 64 MB of rows
    for start in range(0, features.shape[0], block):
        out[start : start + block].copy_(torch.from_numpy(np.array(features[start : start + block])))
    return out


def denoise_to_directory(directory: str | os.PathLike, tracklets: Any, features: Any, config: DenoiseConfig,
                         progress: bool = False, scratch: str | os.PathLike | None = None, device: str = "cpu",
                         inputs: Mapping[str, Any] | None = None, overwrite: bool = False) -> DenoiseOutput:
    """Denoises ``tracklets`` with ``features`` and writes the pseudo-label directory; the quality
    against ground truth is measured (after the levels, which never read it) when the tracklets
    carry any.

    Args:
        directory, overwrite: as :func:`write_denoise_output`.
        tracklets: a ``cion_fast.data.Tracklets`` (index; ``identity`` = ground truth, -1 unknown).
        features: float [M, D] frame features (numpy, torch or cupy; see :func:`~cion_fast.denoise.denoise`).
        config, progress, scratch: as :func:`~cion_fast.denoise.denoise`.
        device: ``"cpu"``, or ``"cuda"``: host features are uploaded first (:func:`upload`).
        inputs: JSON-ready description of the inputs for ``report.json``.

    Raises:
        FileExistsError: ``directory`` exists and ``overwrite`` is False (before denoising).

    Example:
        >>> import tempfile, os
        >>> from cion_fast.data import Tracklets
        >>> t = Tracklets(np.zeros((12, 8, 4, 3), np.uint8), offsets=np.arange(0, 13, 4), video=np.arange(3),
        ...               camera=np.zeros(3, np.int64), frame_index=np.tile(np.arange(4), 3), identity=np.repeat([5, 6, 7], 4))
        >>> done = denoise_to_directory(os.path.join(tempfile.mkdtemp(), "labels"), t,
        ...                             np.repeat(np.eye(3, dtype=np.float32), 4, axis=0), DenoiseConfig())
        >>> sorted(done.report["quality"]), done.quality["level 3"].bcubed_f
        (['level 1', 'level 2', 'level 3', 'tracklets'], 1.0)
    """
    if Path(directory).exists() and not overwrite:  # before the work, not after it
        raise FileExistsError(f"{directory} already exists (pass overwrite=True to replace it)")
    features = upload(features, device, scratch)
    start = time.perf_counter()
    result = denoise(features, tracklets.offsets, tracklets.video, tracklets.frame_index, config, progress=progress,
                     scratch=scratch)
    extra = {"inputs": dict(inputs or {}), "seconds": time.perf_counter() - start}
    rows = None
    if (np.asarray(tracklets.identity) >= 0).any():
        rows = result.quality(tracklets.identity, np.repeat(tracklets.video, tracklets.lengths))
    report = denoise_report(result, rows, extra)
    return DenoiseOutput(result, rows, report, _write(directory, result, report, overwrite))


def estimate_items(estimate: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The label-free estimate (``DenoiseResult.estimate``) as (name, value) rows: nested keys
    dotted, numbers to 4 significant digits; none for None.

    Example:
        >>> estimate_items({"false_merge_rate": 0.012345, "separation": {"auc": 0.9}})
        [('false_merge_rate', '0.01235'), ('separation.auc', '0.9')]
    """
    rows = []
    for key, value in (estimate or {}).items():
        if isinstance(value, Mapping):
            rows += [(f"{key}.{name}", text) for name, text in estimate_items(value)]
        else:
            rows.append((key, f"{value:.4g}" if isinstance(value, float) else str(value)))
    return rows


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
    return _write(directory, result, denoise_report(result, quality_rows, extra), overwrite)


def denoise_report(result: DenoiseResult, quality_rows: Mapping[str, Quality] | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict:
    """The ``report.json`` of a pseudo-label directory, as the dict a reader of the file gets
    (JSON types: lists, not tuples): config, calibration, label-free estimate, per-level summary,
    quality against ground truth (None without it), then ``extra``."""
    report = {
        "config": result.config.as_dict(),
        "calibration": result.calibration,
        "estimate": result.estimate,
        "levels": result.summary,
        "quality": None if quality_rows is None else {name: q.as_dict() for name, q in quality_rows.items()},
        **(extra or {}),
    }
    return json.loads(json.dumps(report))


def _write(directory: str | os.PathLike, result: DenoiseResult, report: dict, overwrite: bool) -> Path:
    from cion_fast import _arrays
    from cion_fast._io import atomic_directory

    with atomic_directory(directory, overwrite=overwrite) as tmp:
        np.save(tmp / "labels.npy", _arrays.to_numpy(result.labels).astype(np.int64, copy=False))
        levels = {name.replace(" ", "_"): _arrays.to_numpy(labels) for name, labels in zip(LEVEL_NAMES, result.levels)}
        np.savez(tmp / "levels.npz", tracklets=_arrays.to_numpy(result.tracklet_labels), **levels)
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
    return Path(directory)
