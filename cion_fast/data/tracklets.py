"""``Tracklets``: ragged runs of person crops (the input of the CION pipeline) and their directory
format on disk.

A tracklet set holds ``M`` frames in ``N`` tracklets. Tracklet ``t`` owns frames
``offsets[t]:offsets[t + 1]`` (CSR layout, the same ragged convention as the ``tracklet_*`` kernels).

Directory format (written by :meth:`Tracklets.save`, read by :meth:`Tracklets.load`)::

    DIR/index.npz     one row per frame: tracklet, video, camera, frame, slot, identity (int64 [M]),
                      plus offsets int64 [N+1], tracklet_video / tracklet_camera int64 [N],
                      storage ("array" | "files"), format version, and for "files" the image
                      paths relative to DIR (str [S])
    DIR/frames.npy    "array" storage: uint8 [S, H, W, 3]; frame i is frames[slot[i]] (memory-mapped)
    DIR/images/...    "files" storage: one image per slot (bytes copied unchanged)
    DIR/features.npy  optional float [M, D]

Every field is checked on load; a missing image, a truncated index or an array of the wrong shape
raises an error that names the file and the field. Nothing is silently skipped. ``save`` writes into
a temporary directory and renames it into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from cion_fast._checks import check_flag, image_array, int_array, is_path_array, path_list
from cion_fast._io import archive_field, atomic_directory, load_numpy
from cion_fast.data._io import outside_root, read_images

__all__ = ["Tracklets"]

FORMAT_NAME = "cion_fast.tracklets"
FORMAT_VERSION = 1
_PER_FRAME = ("tracklet", "video", "camera", "frame", "slot", "identity")


class Tracklets:
    """Ragged tracklets: frames, CSR offsets, per-tracklet video/camera, per-frame frame index and
    ground-truth identity, optional per-frame features.

    Args:
        frames: uint8 [M, H, W, 3] RGB crops (a numpy array, possibly memory-mapped), or a sequence
            of M image paths (str or ``os.PathLike``; files are read lazily with Pillow).
        offsets: int64 [N + 1]; ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == M``.
        video: int64 [N], the video of each tracklet.
        camera: int64 [N], the camera of each tracklet.
        frame_index: int64 [M], the frame number of each frame inside its video.
        identity: int64 [M], ground-truth identity per frame, -1 where unknown (default: all -1).
        features: optional float [M, D] (float16/float32/float64).

    Raises:
        TypeError: a field has the wrong type or dtype (the message names the field).
        ValueError: a field has the wrong shape/length, or ``offsets`` is not a valid CSR array.

    Example:
        >>> import numpy as np
        >>> from cion_fast.data import Tracklets
        >>> rng = np.random.default_rng(0)
        >>> frames = rng.integers(0, 256, (5, 16, 8, 3), dtype=np.uint8)
        >>> t = Tracklets(frames, offsets=[0, 3, 5], video=[0, 0], camera=[1, 1],
        ...               frame_index=[0, 1, 2, 1, 2], identity=[7, 7, 7, 9, 9])
        >>> t.num_tracklets, t.num_frames, t.lengths.tolist()
        (2, 5, [3, 2])
        >>> t.select(np.array([True, False, False, True, True])).offsets.tolist()
        [0, 1, 3]
    """

    def __init__(self, frames, offsets, video, camera, frame_index, identity=None, features=None):
        self.offsets = int_array(offsets, "offsets")
        if len(self.offsets) < 1:
            raise ValueError("offsets must have N + 1 >= 1 entries, got an empty array")
        self.video = int_array(video, "video")
        self.camera = int_array(camera, "camera")
        self.frame_index = int_array(frame_index, "frame_index")
        m = len(self.frame_index)
        self.identity = np.full(m, -1, np.int64) if identity is None else int_array(identity, "identity")
        self.frames = self._check_frames(frames)
        self.features = None if features is None else self._check_features(features)
        self._validate()

    # -- validation -----------------------------------------------------------------------------
    @staticmethod
    def _check_frames(frames):
        if isinstance(frames, np.ndarray) and not is_path_array(frames):
            return image_array(frames, "frames")
        return path_list(frames, "frames")

    def _check_features(self, features) -> np.ndarray:
        feats = np.asarray(features)
        if feats.dtype not in (np.float16, np.float32, np.float64):
            raise TypeError(f"features must be float16/float32/float64 [M, D], got dtype {feats.dtype}")
        if feats.ndim != 2:
            raise ValueError(f"features must be 2-D [M, D], got shape {list(feats.shape)}")
        return feats

    def _validate(self) -> None:
        n = len(self.offsets) - 1
        m = len(self.frame_index)
        off = self.offsets
        if off[0] != 0:
            raise ValueError(f"offsets must start at 0, got offsets[0] = {off[0]}")
        decreasing = off[1:] < off[:-1]  # compared, not subtracted: a difference could wrap around in int64
        if decreasing.any():
            t = int(np.flatnonzero(decreasing)[0])
            raise ValueError(f"offsets must be non-decreasing, got offsets[{t}] = {off[t]} > offsets[{t + 1}] = {off[t + 1]}")
        if off[-1] != m:
            raise ValueError(f"offsets must end at M = len(frame_index) = {m}, got offsets[-1] = {off[-1]}")
        for name in ("video", "camera"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have one entry per tracklet (N = {n}), got {len(getattr(self, name))}")
        if len(self.identity) != m:
            raise ValueError(f"identity must have one entry per frame (M = {m}), got {len(self.identity)}")
        if len(self.frames) != m:
            raise ValueError(f"frames must have one entry per frame (M = {m}), got {len(self.frames)}")
        if self.features is not None and len(self.features) != m:
            raise ValueError(f"features must have one row per frame (M = {m}), got {len(self.features)}")
        if (self.identity < -1).any():
            raise ValueError(f"identity must be >= -1 (-1 = unknown), got {int(self.identity.min())}")
        if (self.frame_index < 0).any():
            raise ValueError(f"frame_index must be >= 0 (a frame number inside its video), got {int(self.frame_index.min())}")

    # -- properties -----------------------------------------------------------------------------
    @property
    def num_tracklets(self) -> int:
        """N, the number of tracklets."""
        return len(self.offsets) - 1

    @property
    def num_frames(self) -> int:
        """M, the number of frames."""
        return len(self.frame_index)

    def __len__(self) -> int:
        return self.num_tracklets

    @property
    def lengths(self) -> np.ndarray:
        """int64 [N], frames per tracklet."""
        return np.diff(self.offsets)

    @property
    def tracklet_of_frame(self) -> np.ndarray:
        """int64 [M], the tracklet of every frame."""
        return np.repeat(np.arange(self.num_tracklets, dtype=np.int64), self.lengths)

    @property
    def has_pixels(self) -> bool:
        """True when ``frames`` is an in-memory (or memory-mapped) uint8 array, False for paths."""
        return isinstance(self.frames, np.ndarray)

    def frames_of(self, t: int) -> slice:
        """The frame range of tracklet ``t`` (a slice into every per-frame array).

        Example:
            >>> import numpy as np
            >>> from cion_fast.data import Tracklets
            >>> t = Tracklets(np.zeros((3, 2, 2, 3), np.uint8), [0, 1, 3], [0, 0], [0, 0], [5, 6, 7])
            >>> t.frame_index[t.frames_of(1)].tolist()
            [6, 7]
        """
        if not -self.num_tracklets <= t < self.num_tracklets:
            raise IndexError(f"tracklet {t} out of range for {self.num_tracklets} tracklets")
        t %= self.num_tracklets
        return slice(int(self.offsets[t]), int(self.offsets[t + 1]))

    def images(self, index=None) -> np.ndarray:
        """The pixels of frames ``index`` (all frames by default) as uint8 [k, H, W, 3].

        Path-based sets read the files with Pillow; all of them must have the same size.

        Example:
            >>> import numpy as np
            >>> from cion_fast.data import Tracklets
            >>> t = Tracklets(np.ones((2, 4, 2, 3), np.uint8), [0, 2], [0], [0], [0, 1])
            >>> t.images([1]).shape
            (1, 4, 2, 3)
        """
        idx = np.arange(self.num_frames) if index is None else np.atleast_1d(np.asarray(index))
        if self.has_pixels:
            return np.asarray(self.frames[idx])
        return read_images([self.frames[int(i)] for i in idx])

    def __repr__(self) -> str:
        kind = f"pixels {list(self.frames.shape[1:])}" if self.has_pixels else "paths"
        known = int((self.identity >= 0).sum())
        return (f"Tracklets(N={self.num_tracklets}, M={self.num_frames}, {kind}, videos={len(np.unique(self.video))}, "
                f"cameras={len(np.unique(self.camera))}, identity known for {known} frames"
                f"{', features ' + str(list(self.features.shape)) if self.features is not None else ''})")

    # -- transformations ------------------------------------------------------------------------
    def select(self, frame_mask) -> "Tracklets":
        """Keeps the frames where ``frame_mask`` (bool [M]) is True; tracklets left without frames
        are dropped, offsets are recomputed, the order is kept.

        Example:
            >>> import numpy as np
            >>> from cion_fast.data import Tracklets
            >>> t = Tracklets(np.zeros((4, 2, 2, 3), np.uint8), [0, 2, 4], [0, 1], [0, 0], [0, 1, 0, 1])
            >>> s = t.select(np.array([False, False, True, False]))
            >>> s.num_tracklets, s.video.tolist(), s.frame_index.tolist()
            (1, [1], [0])
        """
        mask = np.asarray(frame_mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"frame_mask must be a bool array [M], got dtype {mask.dtype}")
        if mask.shape != (self.num_frames,):
            raise ValueError(f"frame_mask must have shape [{self.num_frames}], got {list(mask.shape)}")
        csum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        kept = csum[self.offsets[1:]] - csum[self.offsets[:-1]]
        keep_t = kept > 0
        offsets = np.concatenate([[0], np.cumsum(kept[keep_t])]).astype(np.int64)
        idx = np.flatnonzero(mask)
        frames = self.frames[idx] if self.has_pixels else [self.frames[i] for i in idx]
        return Tracklets(
            frames, offsets, self.video[keep_t], self.camera[keep_t], self.frame_index[idx],
            self.identity[idx], None if self.features is None else self.features[idx],
        )

    def with_features(self, features) -> "Tracklets":
        """A copy sharing frames and index arrays, with ``features`` float [M, D] attached.

        Example:
            >>> import numpy as np
            >>> from cion_fast.data import Tracklets
            >>> t = Tracklets(np.zeros((2, 2, 2, 3), np.uint8), [0, 2], [0], [0], [0, 1])
            >>> t.with_features(np.ones((2, 4), np.float32)).features.shape
            (2, 4)
        """
        return Tracklets(self.frames, self.offsets, self.video, self.camera, self.frame_index, self.identity, features)

    # -- disk format ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes the tracklet directory (see the module docstring) atomically; returns its path.

        Pixel sets go to one ``frames.npy``; path sets have their files copied (bytes unchanged)
        to ``images/``.

        Raises:
            FileExistsError: ``directory`` exists and ``overwrite`` is False.
            FileNotFoundError: an image file of a path-based set is missing.

        Example:
            >>> import numpy as np, tempfile, os
            >>> from cion_fast.data import Tracklets
            >>> rng = np.random.default_rng(1)
            >>> t = Tracklets(rng.integers(0, 256, (3, 8, 4, 3), dtype=np.uint8), [0, 3], [2], [0], [5, 6, 7], [4, 4, 4])
            >>> d = t.save(os.path.join(tempfile.mkdtemp(), "tracklets"))
            >>> u = Tracklets.load(d)
            >>> bool((u.frames == t.frames).all()), u.identity.tolist()
            (True, [4, 4, 4])
        """
        arrays = self._index_arrays("array" if self.has_pixels else "files")
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            if self.has_pixels:
                np.save(tmp / "frames.npy", np.ascontiguousarray(self.frames))
            else:
                arrays["paths"] = self._copy_images(tmp)
            if self.features is not None:
                np.save(tmp / "features.npy", self.features)
            np.savez(tmp / "index.npz", **arrays)
        return Path(directory)

    def _index_arrays(self, storage: str) -> dict:
        """The fields of ``index.npz`` (see the module docstring) but the image paths; frame ``i``
        in slot ``i``. Also used by writers that fill ``frames.npy`` themselves (MOT import)."""
        tracklet = self.tracklet_of_frame
        return {
            "format": np.array(FORMAT_NAME),
            "version": np.array(FORMAT_VERSION, np.int64),
            "tracklet": tracklet,
            "video": self.video[tracklet],
            "camera": self.camera[tracklet],
            "frame": self.frame_index,
            "slot": np.arange(self.num_frames, dtype=np.int64),
            "identity": self.identity,
            "offsets": self.offsets,
            "tracklet_video": self.video,
            "tracklet_camera": self.camera,
            "storage": np.array(storage),
        }

    def _copy_images(self, tmp: Path) -> np.ndarray:
        """Copies the image files of a path set into ``tmp/images/``; their relative paths str [M]."""
        rel = []
        (tmp / "images").mkdir()
        tracklet = self.tracklet_of_frame
        for i, src in enumerate(self.frames):
            src = Path(src)
            if not src.is_file():
                raise FileNotFoundError(f"frame {i} of tracklet {int(tracklet[i])}: image file {src} does not exist")
            name = f"images/{i:08d}{src.suffix.lower()}"
            shutil.copyfile(src, tmp / name)
            rel.append(name)
        return np.array(rel, dtype=str) if rel else np.zeros(0, dtype="<U1")

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True, allow_outside_root: bool = False) -> "Tracklets":
        """Reads a tracklet directory written by :meth:`save`, checking every field.

        Args:
            directory: the tracklet directory.
            mmap: memory-map ``frames.npy`` (read-only) instead of reading it into memory.
            allow_outside_root: accept frame paths of an index that leave the directory (``../``,
                absolute paths: frames kept on another disk). Refused by default, so an index from
                elsewhere cannot make the reader open files outside the data unasked.

        Raises:
            FileNotFoundError: the directory, its index or its frame array is missing (a missing
                image file is reported when it is read: the files are not scanned at start-up).
            ValueError: the index is truncated/unreadable or inconsistent, or an array has the wrong
                dtype/shape (the message names the file and the field).

        Example:
            >>> import numpy as np, tempfile, os
            >>> from cion_fast.data import Tracklets
            >>> t = Tracklets(np.full((2, 4, 2, 3), 9, np.uint8), [0, 1, 2], [0, 0], [3, 3], [0, 0], [1, 2])
            >>> Tracklets.load(t.save(os.path.join(tempfile.mkdtemp(), "t"))).camera.tolist()
            [3, 3]
        """
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"tracklet directory {root} does not exist")
        index_path = root / "index.npz"
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} is missing: {root} is not a tracklet directory (or was only partly written)")
        data = load_numpy(index_path, "tracklet index", archive=True)

        def field(name: str, kind: str, ndim: int) -> np.ndarray:
            return archive_field(data, name, index_path, "tracklet index", kind, ndim)

        if str(field("format", "str", 0)) != FORMAT_NAME:
            raise ValueError(f"{index_path}: format is {str(data['format'])!r}, expected {FORMAT_NAME!r}")
        if int(field("version", "int64", 0)) > FORMAT_VERSION:
            raise ValueError(f"{index_path}: format version {int(data['version'])} is newer than this reader ({FORMAT_VERSION})")
        cols = {name: field(name, "int64", 1) for name in _PER_FRAME + ("offsets", "tracklet_video", "tracklet_camera")}
        m = len(cols["frame"])
        for name in _PER_FRAME:
            if len(cols[name]) != m:
                raise ValueError(f"{index_path}: field '{name}' has {len(cols[name])} rows, expected one per frame ({m})")
        try:
            tracklets_probe = cls(np.zeros((m, 1, 1, 3), np.uint8), cols["offsets"], cols["tracklet_video"],
                                  cols["tracklet_camera"], cols["frame"], cols["identity"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{index_path}: inconsistent index: {err}") from err
        tracklet = tracklets_probe.tracklet_of_frame
        if not np.array_equal(cols["tracklet"], tracklet):
            raise ValueError(f"{index_path}: field 'tracklet' does not match 'offsets'")
        for per_frame, per_tracklet in (("video", "tracklet_video"), ("camera", "tracklet_camera")):
            if not np.array_equal(cols[per_frame], cols[per_tracklet][tracklet]):
                raise ValueError(f"{index_path}: field '{per_frame}' does not match '{per_tracklet}' of the frame's tracklet")

        storage = str(field("storage", "str", 0))
        slot = cols["slot"]
        if storage == "array":
            frames_path = root / "frames.npy"
            if not frames_path.is_file():
                raise FileNotFoundError(f"{frames_path} is missing (storage 'array')")
            store = load_numpy(frames_path, "frame array", archive=False, mmap_mode="r" if mmap else None)
            if store.dtype != np.uint8 or store.ndim != 4 or store.shape[3] != 3:
                raise ValueError(f"{frames_path} must hold uint8 [S, H, W, 3], got {store.dtype} {list(store.shape)}")
            _check_slots(slot, len(store), index_path)
            frames = store if np.array_equal(slot, np.arange(len(store))) else np.asarray(store[slot])
        elif storage == "files":
            rel = field("paths", "str", 1)
            _check_slots(slot, len(rel), index_path)
            outside = np.flatnonzero(outside_root(rel))
            if outside.shape[0] and not check_flag(allow_outside_root, "allow_outside_root"):
                raise ValueError(f"{index_path}: {outside.shape[0]} frame paths leave the tracklet directory "
                                 f"(e.g. {str(rel[outside[0]])!r}); paths must be relative to {root} "
                                 "unless allow_outside_root=True")
            # The index lists the files: no scan and no stat of each at start-up (minutes for the
            # 10M crops of LUPerson-NL on a network filesystem). A missing or damaged file is
            # reported, by name, when it is read.
            prefix = str(root)
            frames = [os.path.join(prefix, str(rel[s])) for s in slot]
        else:
            raise ValueError(f"{index_path}: unknown storage {storage!r} (expected 'array' or 'files')")

        features = None
        feat_path = root / "features.npy"
        if feat_path.exists():
            features = load_numpy(feat_path, "feature array", archive=False, mmap_mode="r" if mmap else None)
        try:
            return cls(frames, cols["offsets"], cols["tracklet_video"], cols["tracklet_camera"], cols["frame"],
                       cols["identity"], features)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{root}: {err}") from err


def _check_slots(slot: np.ndarray, count: int, index_path: Path) -> None:
    if len(slot) and (slot.min() < 0 or slot.max() >= count):
        raise ValueError(f"{index_path}: field 'slot' indexes {count} stored images but holds values in "
                         f"[{int(slot.min())}, {int(slot.max())}]")
