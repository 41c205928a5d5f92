"""The features artefact (docs/DATA_FORMATS.md, "Features"): one ``.npz`` with the frame features,
the tracklet offsets and the index (video, camera, frame index, ground-truth identity), so the next
stage needs nothing else to run."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cion_fast._io import archive_field, atomic_write, load_numpy

FORMAT_NAME = "cion_fast.features"
FORMAT_VERSION = 1
_FIELDS = ("features", "offsets", "video", "camera", "frame_index", "identity")


@dataclass
class FeatureFile:
    """Frame features with the tracklet index they belong to.

    Attributes:
        features: float16/float32 [M, D].
        offsets: int64 [N+1] tracklet t is frames ``offsets[t]:offsets[t+1]``.
        video, camera: int64 [N] per tracklet.
        frame_index, identity: int64 [M] per frame (identity -1 = unknown).
        model: what produced the features (``"stripe"``, ``"timm:resnet50"``, ...).

    Example:
        >>> f = FeatureFile(np.zeros((2, 4), np.float32), np.array([0, 2]), np.array([0]), np.array([0]),
        ...                 np.array([0, 1]), np.array([-1, -1]), "zeros")
        >>> f.features.shape, f.model
        ((2, 4), 'zeros')
    """

    features: np.ndarray
    offsets: np.ndarray
    video: np.ndarray
    camera: np.ndarray
    frame_index: np.ndarray
    identity: np.ndarray
    model: str


def save_features(path: str | os.PathLike, features: Any, tracklets: Any, model: str) -> Path:
    """Writes features and the index of ``tracklets`` to ``path`` (``.npz``) atomically.

    Args:
        path: output file; written under a temporary name and renamed, so a reader never sees a
            half-written file.
        features: float [M, D] one row per frame of ``tracklets``, or a list of row blocks
            [m_i, D] of one dtype whose rows add up to M (e.g. memory-mapped shards): written one
            after the other, never concatenated in memory.
        tracklets: a ``cion_fast.data.Tracklets`` (offsets, video, camera, frame_index, identity).
        model: a description of the feature extractor, stored in the file.

    Example:
        >>> import tempfile, os
        >>> from types import SimpleNamespace
        >>> t = SimpleNamespace(offsets=np.array([0, 2]), video=np.array([0]), camera=np.array([1]),
        ...                     frame_index=np.array([0, 1]), identity=np.array([4, 4]))
        >>> path = save_features(os.path.join(tempfile.mkdtemp(), "f.npz"), np.eye(2, dtype=np.float32), t, "demo")
        >>> load_features(path).model
        'demo'
    """
    as_blocks = isinstance(features, (list, tuple)) and all(getattr(b, "ndim", None) == 2 for b in features) and len(features) > 0
    blocks = [np.asarray(b) for b in features] if as_blocks else [np.asarray(features)]
    num_frames = np.asarray(tracklets.frame_index).shape[0]
    widths, dtypes = {b.shape[1] for b in blocks if b.ndim == 2}, {b.dtype for b in blocks}
    rows = sum(b.shape[0] for b in blocks if b.ndim == 2)
    if not blocks or any(b.ndim != 2 for b in blocks) or len(widths) > 1 or len(dtypes) > 1 or rows != num_frames:
        raise ValueError(f"features must be [M, D] (or row blocks of one width and dtype) with M = {num_frames} frames, "
                         f"got {[tuple(b.shape) for b in blocks][:4]} {sorted(str(d) for d in dtypes)}")
    width = widths.pop() if widths else 0
    arrays = {name: np.asarray(getattr(tracklets, name), dtype=np.int64) for name in _FIELDS[1:]}
    arrays.update(format=np.asarray(FORMAT_NAME), version=np.asarray(FORMAT_VERSION), model=np.asarray(str(model)))

    def write(temporary: Path) -> None:
        # The layout np.savez writes (uncompressed members NAME.npy), with the feature matrix
        # streamed block by block, a bounded number of rows at a time.
        with zipfile.ZipFile(temporary, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("features.npy", mode="w", force_zip64=True) as member:
                header = {"descr": np.lib.format.dtype_to_descr(blocks[0].dtype), "fortran_order": False,
                          "shape": (rows, width)}
                np.lib.format.write_array_header_1_0(member, header)
                step = max(1, (16 << 20) // max(1, width * blocks[0].dtype.itemsize))
                for block in blocks:
                    for start in range(0, block.shape[0], step):
                        member.write(np.ascontiguousarray(block[start:start + step]).data)
            for name, value in arrays.items():
                with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, value, allow_pickle=False)

    return atomic_write(path, write)


def load_features(path: str | os.PathLike, mmap: bool = True) -> FeatureFile:
    """Reads a file written by :func:`save_features`, checking its fields.

    Args:
        path: the ``.npz`` file.
        mmap: memory-map the feature matrix (read-only; the file is uncompressed), so a matrix
            larger than memory is paged in as it is used; False reads it into memory.

    Returns:
        :class:`FeatureFile` (features keep their stored dtype, float16 or float32).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a features file, a missing field or one of the wrong dtype or shape, or
            inconsistent lengths (named).

    Example:
        >>> import tempfile, os
        >>> from types import SimpleNamespace
        >>> t = SimpleNamespace(offsets=np.array([0, 1]), video=np.array([3]), camera=np.array([0]),
        ...                     frame_index=np.array([7]), identity=np.array([-1]))
        >>> path = save_features(os.path.join(tempfile.mkdtemp(), "f.npz"), np.ones((1, 2), np.float16), t, "ones")
        >>> stored = load_features(path)
        >>> stored.features.dtype, stored.video.tolist(), stored.frame_index.tolist()
        (dtype('float16'), [3], [7])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} does not exist")
    fields = load_numpy(path, "features file", archive=True, mmap_mode="r" if mmap else None)
    if str(fields.get("format", "")) != FORMAT_NAME:
        raise ValueError(f"{path} is not a cion_fast features file (no format tag {FORMAT_NAME!r})")

    def field(name: str, kind: str, ndim: int) -> np.ndarray:
        return archive_field(fields, name, path, "features file", kind, ndim)

    result = FeatureFile(field("features", "float", 2), *(field(name, "int64", 1) for name in _FIELDS[1:]),
                         model=str(field("model", "str", 0)))
    num_frames = result.frame_index.shape[0]
    if result.features.shape[0] != num_frames or result.identity.shape[0] != num_frames:
        raise ValueError(f"features file {path}: features {result.features.shape} / identity do not match {num_frames} frames")
    num_tracklets = result.video.shape[0]
    if result.offsets.shape[0] != num_tracklets + 1 or result.camera.shape[0] != num_tracklets or result.offsets[-1] != num_frames:
        raise ValueError(f"features file {path}: offsets / video / camera do not match the tracklets and frames")
    return result
