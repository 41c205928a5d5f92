"""Labelled image sets and readers for real on-disk layouts.

* :class:`ImageSet`: person images (in memory or as paths) with person ids and camera ids, the unit of
  ReID evaluation (query / gallery) and supervised training.
* :func:`read_market1501` / :func:`write_market1501`: the Market-1501 layout
  (``bounding_box_train``, ``query``, ``bounding_box_test``; names like ``0002_c1s1_000451_03.jpg``).
  Reading follows torchreid's ``Market1501`` dataset: the person id is the number before ``_c``,
  the camera id is the number after ``c`` made 0-based, junk images (pid -1) are dropped and
  distractors (pid 0) are kept. Unlike torchreid, pids are *not* relabelled (call
  :meth:`ImageSet.relabeled` for contiguous training labels) and files are sorted by
  (pid, camid, sequence, frame, name) so the order is reproducible.
* :func:`read_dukemtmc`, :func:`read_cuhk03`, :func:`read_msmt17`, :func:`read_dataset`: the other
  ReID datasets as they ship.
* :func:`read_tracklet_folders`: tracker output laid out as ``<video>/<track>/<frame>.jpg|png``.

Which pids are not people of the identity set is carried by each :class:`ImageSet`
(``distractor_pid``, ``junk_pid``), set by the reader of its dataset: Market-1501 and the layouts
read as Market-1501 (DukeMTMC-reID, CUHK03-NP, the synthetic world) mark distractors with pid 0 and
junk with -1; MSMT17 numbers its people from 0 and has neither, so its person 0 is an identity.

Extensions: readers accept ``.jpg``, ``.jpeg`` and ``.png`` (any case); other files in the image
folders are ignored (real Market-1501 ships a ``Thumbs.db``). :func:`write_market1501` writes PNG by
default (lossless, so a written set reads back bit-identical); ``image_format="jpg"`` writes JPEG
(quality 95) under ``.jpg`` names, for tools that only glob ``*.jpg`` (torchreid does).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from cion_fast._checks import (check_choice, check_flag, check_int, check_type, image_array, int_array, is_digits, parse_int,
                               path_list)
from cion_fast._io import atomic_directory, text_lines
from cion_fast.data._io import IMAGE_EXTENSIONS, outside_root, read_image, read_images, write_image
from cion_fast.data.tracklets import Tracklets

__all__ = ["ImageSet", "Market1501", "read_market1501", "write_market1501", "read_tracklet_folders"]

MARKET_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)(?:s(\d+))?(?:_(\d+))?", re.ASCII)  # \d alone also takes '０', '٣'


class ImageSet:
    """Person images with person ids (``pids``) and 0-based camera ids (``camids``).

    Args:
        images: uint8 [n, H, W, 3] RGB (exactly one of ``images`` / ``paths``).
        paths: n image paths (read lazily).
        pids: int64 [n], >= 0 except ``junk_pid``.
        camids: int64 [n], 0-based.
        frame_index: optional int64 [n] frame numbers (written into / parsed from Market names;
            -1 where unknown). Default: -1.
        distractor_pid: the pid of distractor images (people outside the identity set: not an
            identity, refused by :meth:`relabeled`), an int >= 0, or None when the set has none.
            Default 0, Market-1501's; MSMT17's reader passes None (its person 0 is an identity).
        junk_pid: the pid of junk images (not people), an int < 0, or None when the set has none
            (every pid must then be >= 0). Default -1, Market-1501's.

    Example:
        >>> import numpy as np
        >>> from cion_fast.data import ImageSet
        >>> rng = np.random.default_rng(0)
        >>> s = ImageSet(images=rng.integers(0, 256, (3, 16, 8, 3), dtype=np.uint8),
        ...              pids=[5, 5, 9], camids=[0, 2, 1])
        >>> len(s), s.relabeled().pids.tolist()
        (3, [0, 0, 1])
        >>> ImageSet(images=s.images, pids=[0, 0, 9], camids=[0, 2, 1])  # Market-1501's pid 0: distractors
        ImageSet(n=3, images [16, 8, 3], identities=1, cameras=3, distractors=2)
        >>> ImageSet(images=s.images, pids=[0, 0, 9], camids=[0, 2, 1], distractor_pid=None, junk_pid=None)  # MSMT17's
        ImageSet(n=3, images [16, 8, 3], identities=2, cameras=3, distractors=0)
    """

    def __init__(self, images=None, paths=None, pids=None, camids=None, frame_index=None,
                 distractor_pid: int | None = 0, junk_pid: int | None = -1):
        if (images is None) == (paths is None):
            raise TypeError("ImageSet needs exactly one of images (uint8 [n, H, W, 3]) or paths")
        if images is not None:
            if not isinstance(images, np.ndarray):
                raise TypeError(f"images must be a uint8 numpy array [n, H, W, 3], got {type(images).__name__}")
            self.images, self.paths = image_array(images, "images"), None
        else:
            self.images, self.paths = None, path_list(paths, "paths")
        n = len(self.images) if images is not None else len(self.paths)
        if pids is None or camids is None:
            raise TypeError("ImageSet needs pids and camids (int64 [n])")
        self.pids = int_array(pids, "pids", n)
        self.camids = int_array(camids, "camids", n)
        self.frame_index = np.full(n, -1, np.int64) if frame_index is None else int_array(frame_index, "frame_index", n)
        if n and self.camids.min() < 0:
            raise ValueError(f"camids must be >= 0 (0-based), got {int(self.camids.min())}")
        self.distractor_pid = None if distractor_pid is None else check_int(distractor_pid, "distractor_pid", 0)
        self.junk_pid = None if junk_pid is None else check_int(junk_pid, "junk_pid", high=-1)
        wrong = (self.pids < 0) & (self.pids != self.junk_pid)
        if wrong.any():
            junk = "" if self.junk_pid is None else f" or the junk pid {self.junk_pid}"
            raise ValueError(f"pids must be >= 0{junk}, got {int(self.pids[wrong][0])}")

    def __len__(self) -> int:
        return len(self.pids)

    def __repr__(self) -> str:
        kind = f"images {list(self.images.shape[1:])}" if self.images is not None else "paths"
        return (f"ImageSet(n={len(self)}, {kind}, identities={self.num_identities}, "
                f"cameras={len(np.unique(self.camids))}, distractors={int((self.pids == self.distractor_pid).sum())})")

    @property
    def identity_mask(self) -> np.ndarray:
        """bool [n]: True for images of the identity set, False for distractors and junk (as
        ``distractor_pid`` and ``junk_pid`` say)."""
        return (self.pids >= 0) & (self.pids != self.distractor_pid)

    @property
    def num_identities(self) -> int:
        """Distinct person ids, distractors and junk excluded."""
        return len(np.unique(self.pids[self.identity_mask]))

    def _pid_roles(self) -> dict:
        return {"distractor_pid": self.distractor_pid, "junk_pid": self.junk_pid}

    def load_images(self, index=None, size: tuple[int, int] | None = None) -> np.ndarray:
        """The pixels of images ``index`` (all by default) as uint8 [k, H, W, 3]; path sets read the
        files, which must then all have the same size unless ``size=(H, W)`` resizes them.

        Example:
            >>> import numpy as np
            >>> from cion_fast.data import ImageSet
            >>> ImageSet(images=np.zeros((2, 8, 4, 3), np.uint8), pids=[1, 2], camids=[0, 0]).load_images([1]).shape
            (1, 8, 4, 3)
        """
        idx = np.arange(len(self)) if index is None else np.atleast_1d(np.asarray(index))
        if self.images is not None:
            return self.images[idx]
        return read_images([self.paths[int(i)] for i in idx], size=size)

    def in_memory(self, size: tuple[int, int] | None = None) -> "ImageSet":
        """This set with its pixels in memory, as training needs them: a path set reads its files
        (:meth:`load_images`: crops of different sizes, as real datasets ship them, are resized to
        ``size=(H, W)``); a set already in memory is returned as it is.

        Example:
            >>> import numpy as np, tempfile, os
            >>> from cion_fast.data import ImageSet, write_image
            >>> paths = [os.path.join(tempfile.mkdtemp(), f"{i}.png") for i in range(2)]
            >>> for path, shape in zip(paths, [(16, 8, 3), (20, 10, 3)]):
            ...     write_image(path, np.zeros(shape, np.uint8))
            >>> s = ImageSet(paths=paths, pids=[1, 2], camids=[0, 0]).in_memory(size=(8, 4))
            >>> s.images.shape, s.paths, s.pids.tolist()
            ((2, 8, 4, 3), None, [1, 2])
        """
        if self.images is not None:
            return self
        return ImageSet(images=self.load_images(size=size), pids=self.pids, camids=self.camids, frame_index=self.frame_index,
                        **self._pid_roles())

    def subset(self, index) -> "ImageSet":
        """The images at ``index`` (int indices or a bool mask [n]), in that order.

        Example:
            >>> import numpy as np
            >>> from cion_fast.data import ImageSet
            >>> s = ImageSet(images=np.zeros((3, 4, 2, 3), np.uint8), pids=[1, 2, 1], camids=[0, 1, 2])
            >>> s.subset(s.pids == 1).camids.tolist()
            [0, 2]
        """
        idx = np.asarray(index)
        if idx.dtype == np.bool_:
            if idx.shape != (len(self),):
                raise ValueError(f"a bool index must have shape [{len(self)}], got {list(idx.shape)}")
            idx = np.flatnonzero(idx)
        kw = {"images": self.images[idx]} if self.images is not None else {"paths": [self.paths[int(i)] for i in idx]}
        return ImageSet(**kw, pids=self.pids[idx], camids=self.camids[idx], frame_index=self.frame_index[idx],
                        **self._pid_roles())

    def relabeled(self) -> "ImageSet":
        """A copy whose pids are 0..K-1 in order of sorted original pid (torchreid's
        ``relabel=True`` for training splits), all identities (no distractor or junk pid). The set
        must hold identities only: distractors and junk (Market-1501's pids 0 and -1) are refused.

        Example:
            >>> import numpy as np
            >>> from cion_fast.data import ImageSet
            >>> ImageSet(images=np.zeros((3, 2, 2, 3), np.uint8), pids=[40, 7, 40], camids=[0, 1, 0]).relabeled().pids.tolist()
            [1, 0, 1]
        """
        if not self.identity_mask.all():
            raise ValueError(f"relabeled() needs identities only; drop the distractors (pid {self.distractor_pid}) "
                             f"and junk (pid {self.junk_pid}) first")
        _, labels = np.unique(self.pids, return_inverse=True)
        kw = {"images": self.images} if self.images is not None else {"paths": self.paths}
        return ImageSet(**kw, pids=labels.astype(np.int64), camids=self.camids, frame_index=self.frame_index,
                        distractor_pid=None, junk_pid=None)

    def write_market1501(self, directory: str | os.PathLike, image_format: str = "png",
                         overwrite: bool = False) -> list[Path]:
        """Writes this set as one Market-1501 image folder (e.g. ``ROOT/query``), atomically.

        Names are ``{pid:04d}_c{camid + 1}s1_{frame:06d}_{k:02d}.{ext}`` (pid -1 is written as
        ``-1``; ``k`` numbers images sharing pid, camera and frame), so a set sorted by
        (pid, camid, frame) reads back in the same order. Path-based sets are read and re-encoded.
        The names carry Market-1501's pid roles (0 distractor, -1 junk), so a set in which a pid
        has another role (MSMT17's person 0, label 0 of a relabeled set) is refused.

        Args:
            directory: the folder to create.
            image_format: "png" (lossless, default) or "jpg".
            overwrite: replace an existing folder.

        Returns:
            The written file paths, in the set's order.

        Example:
            >>> import numpy as np, tempfile, os
            >>> from cion_fast.data import ImageSet
            >>> s = ImageSet(images=np.zeros((1, 8, 4, 3), np.uint8), pids=[2], camids=[0], frame_index=[451])
            >>> [p.name for p in s.write_market1501(os.path.join(tempfile.mkdtemp(), "query"))]
            ['0002_c1s1_000451_00.png']
        """
        ext = _format_ext(image_format)
        if (self.identity_mask != (self.pids >= 1)).any() or ((self.pids == self.distractor_pid) != (self.pids == 0)).any():
            raise ValueError(f"Market-1501 names make pid 0 a distractor and -1 junk; this set (distractor_pid="
                             f"{self.distractor_pid}, junk_pid={self.junk_pid}) gives some of its pids other roles")
        if len(self) and self.pids.max() > 9999:
            raise ValueError(f"Market-1501 names hold pids up to 9999, got {int(self.pids.max())}")
        frames = np.where(self.frame_index < 0, 0, self.frame_index)
        if len(self) and frames.max() > 999999:
            raise ValueError(f"Market-1501 names hold frame numbers up to 999999, got {int(frames.max())}")
        counter: Counter = Counter()
        names = []
        for pid, cam, frame in zip(self.pids.tolist(), self.camids.tolist(), frames.tolist()):
            key = (pid, cam, frame)
            pid_text = "-1" if pid == -1 else f"{pid:04d}"
            names.append(f"{pid_text}_c{cam + 1}s1_{frame:06d}_{counter[key]:02d}{ext}")
            counter[key] += 1
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            for i, name in enumerate(names):
                image = self.images[i] if self.images is not None else read_image(self.paths[i])
                write_image(tmp / name, image)
        return [Path(directory) / n for n in names]


def _format_ext(image_format: str) -> str:
    fmt = image_format.lower().lstrip(".")
    if fmt == "png":
        return ".png"
    if fmt in ("jpg", "jpeg"):
        return ".jpg"
    raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")


@dataclass
class Market1501:
    """The three Market-1501 splits as :class:`ImageSet` s (``train``, ``query``, ``gallery``),
    returned by :func:`read_market1501`; ``root`` is the folder they were read from.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import ImageSet, Market1501
        >>> s = ImageSet(images=np.zeros((1, 8, 4, 3), np.uint8), pids=[3], camids=[1])
        >>> root = Market1501(s, s, s).write(os.path.join(tempfile.mkdtemp(), "market"))
        >>> sorted(os.listdir(root))
        ['bounding_box_test', 'bounding_box_train', 'query']
    """

    train: ImageSet
    query: ImageSet
    gallery: ImageSet
    root: Path | None = None
    layout: str = "market1501"  # which reader made it: market1501, dukemtmc, cuhk03-labeled/-detected, msmt17

    def write(self, root: str | os.PathLike, image_format: str = "png", overwrite: bool = False) -> Path:
        """Writes the three folders under ``root``; same as :func:`write_market1501` (see the
        class example)."""
        return write_market1501(root, self.train, self.query, self.gallery, image_format, overwrite)


def write_market1501(root: str | os.PathLike, train: ImageSet, query: ImageSet, gallery: ImageSet,
                     image_format: str = "png", overwrite: bool = False) -> Path:
    """Writes ``root/bounding_box_train``, ``root/query`` and ``root/bounding_box_test`` (the whole
    ``root`` atomically). PNG by default, so :func:`read_market1501` returns identical pixels.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import ImageSet, read_market1501, write_market1501
        >>> rng = np.random.default_rng(0)
        >>> def make(pids, cams):
        ...     return ImageSet(images=rng.integers(0, 256, (len(pids), 16, 8, 3), dtype=np.uint8),
        ...                     pids=pids, camids=cams, frame_index=list(range(len(pids))))
        >>> root = write_market1501(os.path.join(tempfile.mkdtemp(), "m"), make([1, 1], [0, 1]),
        ...                         make([3], [0]), make([0, 3], [2, 1]))
        >>> m = read_market1501(root, load_images=True)
        >>> m.gallery.pids.tolist(), m.gallery.camids.tolist()
        ([0, 3], [2, 1])
    """
    for name, s in (("train", train), ("query", query), ("gallery", gallery)):
        if not isinstance(s, ImageSet):
            raise TypeError(f"{name} must be an ImageSet, got {type(s).__name__}")
    with atomic_directory(root, overwrite=overwrite) as tmp:
        for split, s in (("train", train), ("query", query), ("gallery", gallery)):
            s.write_market1501(tmp / MARKET_SPLITS[split], image_format=image_format)
    return Path(root)


def _market_root(root: Path) -> Path:
    if all((root / d).is_dir() for d in MARKET_SPLITS.values()):
        return root
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
    for d in subdirs:  # e.g. ROOT/Market-1501-v15.09.15
        if all((d / s).is_dir() for s in MARKET_SPLITS.values()):
            return d
    missing = [s for s in MARKET_SPLITS.values() if not (root / s).is_dir()]
    raise FileNotFoundError(f"{root} is not a Market-1501 root: missing folder(s) {missing} "
                            f"(expected bounding_box_train, query, bounding_box_test)")


def _read_market_folder(folder: Path, load_images: bool) -> ImageSet:
    rows = []
    for path in folder.iterdir():
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        m = _MARKET_NAME.match(path.name)
        if m is None:
            raise ValueError(f"{path}: not a Market-1501 image name (expected e.g. 0002_c1s1_000451_03.jpg)")
        pid, cam = parse_int(m.group(1), f"the person id of {path}"), parse_int(m.group(2), f"the camera of {path}")
        seq = parse_int(m.group(3), f"the sequence of {path}") if m.group(3) else 0
        frame = parse_int(m.group(4), f"the frame of {path}") if m.group(4) else -1
        if pid == -1:  # junk, dropped as torchreid does
            continue
        if pid < 0 or cam < 1:
            raise ValueError(f"{path}: pid must be >= -1 and camera >= 1, got pid {pid}, camera {cam}")
        rows.append((pid, cam - 1, seq, frame, path.name, path))
    rows.sort(key=lambda r: r[:5])
    paths = [str(r[5]) for r in rows]
    pids = np.array([r[0] for r in rows], np.int64)
    camids = np.array([r[1] for r in rows], np.int64)
    frames = np.array([r[3] for r in rows], np.int64)
    if load_images:
        images = read_images(paths, hint=f"read {folder} with load_images=False")
        return ImageSet(images=images, pids=pids, camids=camids, frame_index=frames)
    return ImageSet(paths=paths, pids=pids, camids=camids, frame_index=frames)


def read_market1501(root: str | os.PathLike, load_images: bool = False) -> Market1501:
    """Reads a Market-1501 layout: ``root`` (or its single dataset subfolder, e.g.
    ``Market-1501-v15.09.15``) holding ``bounding_box_train``, ``query`` and ``bounding_box_test``.

    Args:
        root: the dataset root.
        load_images: read the pixels into uint8 arrays (all images must have one size) instead of
            keeping paths.

    Returns:
        :class:`Market1501` with ``train``, ``query`` and ``gallery`` ImageSets: raw pids (junk -1
        dropped, distractors 0 kept), 0-based camids, frame numbers from the names.

    Raises:
        FileNotFoundError: a split folder is missing.
        ValueError: an image file name does not follow the Market-1501 pattern.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import ImageSet, read_market1501
        >>> s = ImageSet(images=np.zeros((2, 8, 4, 3), np.uint8), pids=[1, -1], camids=[0, 5])
        >>> root = tempfile.mkdtemp()
        >>> for split in ("bounding_box_train", "query", "bounding_box_test"):
        ...     _ = s.write_market1501(os.path.join(root, split))
        >>> m = read_market1501(root)
        >>> m.query.pids.tolist(), m.query.camids.tolist()
        ([1], [0])
    """
    base = _market_root(Path(root))
    sets = {split: _read_market_folder(base / folder, load_images) for split, folder in MARKET_SPLITS.items()}
    return Market1501(**sets, root=base)


def read_dukemtmc(root: str | os.PathLike, load_images: bool = False) -> Market1501:
    """Reads DukeMTMC-reID (``root`` or its ``DukeMTMC-reID`` subfolder): the Market-1501 layout
    with names like ``0001_c2_f0046182.jpg`` (cameras c1-c8, made 0-based), torchreid's rules.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import ImageSet, read_dukemtmc
        >>> s = ImageSet(images=np.zeros((1, 8, 4, 3), np.uint8), pids=[7], camids=[7])
        >>> root = tempfile.mkdtemp()
        >>> for split in ("bounding_box_train", "query", "bounding_box_test"):
        ...     _ = s.write_market1501(os.path.join(root, "DukeMTMC-reID", split))
        >>> d = read_dukemtmc(root)
        >>> d.layout, d.query.camids.tolist()
        ('dukemtmc', [7])
    """
    data = read_market1501(root, load_images)
    data.layout = "dukemtmc"
    return data


CUHK03_SUBSETS = ("labeled", "detected")


def read_cuhk03(root: str | os.PathLike, subset: str = "labeled", load_images: bool = False) -> Market1501:
    """Reads CUHK03-NP, the new protocol of Zhong et al. (767 training / 700 test identities):
    ``root/labeled`` and ``root/detected`` (or under a ``cuhk03-np`` subfolder), each a Market-1501
    layout (``bounding_box_train``, ``query``, ``bounding_box_test``, names like ``0001_c1_1.png``).

    Args:
        subset: ``"labeled"`` (hand-drawn boxes) or ``"detected"`` (DPM boxes).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import ImageSet, read_cuhk03
        >>> s = ImageSet(images=np.zeros((1, 8, 4, 3), np.uint8), pids=[3], camids=[1])
        >>> root = tempfile.mkdtemp()
        >>> for split in ("bounding_box_train", "query", "bounding_box_test"):
        ...     _ = s.write_market1501(os.path.join(root, "detected", split))
        >>> read_cuhk03(root, "detected").layout
        'cuhk03-detected'
    """
    check_choice(subset, "subset", CUHK03_SUBSETS)
    base = Path(root)
    if not (base / subset).is_dir() and (base / "cuhk03-np").is_dir():
        base = base / "cuhk03-np"
    if not (base / subset).is_dir():
        raise FileNotFoundError(f"{root} is not a CUHK03-NP root: no {subset}/ folder (expected labeled/ and detected/, "
                                "each with bounding_box_train, query, bounding_box_test)")
    data = read_market1501(base / subset, load_images)
    data.layout = f"cuhk03-{subset}"
    return data


# MSMT17 as it ships: V1 has train/ and test/, V2 mask_train_v2/ and mask_test_v2/; both have the
# four list files, lines "0000/0000_000_01_0303morning_0015_0.jpg 0" (path, pid).
_MSMT17_FOLDERS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
_MSMT17_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")


def _msmt17_root(root: Path) -> tuple[Path, str, str]:
    for base in [root] + [root / name for name in _MSMT17_FOLDERS]:
        for train, test in _MSMT17_FOLDERS.values():
            if (base / train).is_dir() and (base / test).is_dir() and all((base / f).is_file() for f in _MSMT17_LISTS):
                return base, train, test
    raise FileNotFoundError(f"{root} is not an MSMT17 root: expected train/ + test/ (V1) or mask_train_v2/ + "
                            f"mask_test_v2/ (V2) beside {', '.join(_MSMT17_LISTS)}")


def _read_msmt17_list(list_path: Path, folder: Path, load_images: bool, allow_outside_root: bool) -> ImageSet:
    paths, pids, camids, frames, relative, lines = [], [], [], [], [], []
    for number, line in text_lines(list_path, "MSMT17 list"):
        if not line.strip():
            continue
        parts, where = line.split(), f"{list_path}:{number}"
        if len(parts) != 2:
            raise ValueError(f"{where}: expected 'PATH PID', got {line!r}")
        fields = Path(parts[0]).name.split("_")
        if len(fields) < 5:
            raise ValueError(f"{where}: {parts[0]} is not an MSMT17 image name "
                             "(expected e.g. 0000/0000_000_01_0303morning_0015_0.jpg)")
        relative.append(parts[0])
        lines.append(number)
        paths.append(str(folder / parts[0]))
        pids.append(parse_int(parts[1], f"{where}: the PID", 0))
        # torchreid: the camera is the name's third field, made 0-based; the fifth is the frame
        camids.append(parse_int(fields[2], f"{where}: the camera field of {parts[0]}", 1) - 1)
        frames.append(parse_int(fields[4], f"{where}: the frame field of {parts[0]}") if is_digits(fields[4]) else -1)
    outside = np.flatnonzero(outside_root(np.array(relative, dtype=str)))  # one vectorised check
    if outside.shape[0] and not allow_outside_root:
        raise ValueError(f"{list_path}:{lines[outside[0]]}: {relative[outside[0]]} is outside the dataset's folder {folder} "
                         "(pass allow_outside_root=True if the list is meant to point there)")
    # MSMT17 numbers its people from 0 and marks no distractors or junk: every pid is an identity
    roles = {"distractor_pid": None, "junk_pid": None}
    if load_images:
        return ImageSet(images=read_images(paths, hint=f"read {list_path.parent} with load_images=False"), pids=pids,
                        camids=camids, frame_index=frames, **roles)
    return ImageSet(paths=paths, pids=pids, camids=camids, frame_index=frames, **roles)


def read_msmt17(root: str | os.PathLike, load_images: bool = False, keep_val: bool = False,
                allow_outside_root: bool = False) -> Market1501:
    """Reads MSMT17 as it ships, V1 (``train/``, ``test/``) or V2 (``mask_train_v2/``,
    ``mask_test_v2/``), beside ``list_train.txt``, ``list_val.txt``, ``list_query.txt`` and
    ``list_gallery.txt`` (``root`` or its ``MSMT17_V1`` / ``MSMT17_V2`` subfolder).

    As torchreid: the pid is the list's label (from 0; every pid is a person, so the sets have
    ``distractor_pid=None`` and ``junk_pid=None``: person 0 relabels and counts as an identity), the
    camera the image name's third field (0-based), and ``train`` holds the train and val lists merged (``keep_val=True`` keeps val apart: it is then
    returned as ``data.val``, an extra attribute). A list line whose path leaves the image folder
    (``../``, an absolute path) is refused unless ``allow_outside_root=True``: a list file from
    elsewhere must not make the reader open files outside the dataset without being asked to.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from pathlib import Path
        >>> from cion_fast.data import read_msmt17
        >>> from cion_fast.data._io import write_image
        >>> root = Path(tempfile.mkdtemp()) / "MSMT17_V1"
        >>> for folder, name in (("train", "0000/0000_000_01_0303morning_0015_0.jpg"),
        ...                      ("test", "0007/0007_004_14_0303noon_0602_1.jpg")):
        ...     (root / folder / name).parent.mkdir(parents=True)
        ...     write_image(root / folder / name, np.zeros((8, 4, 3), np.uint8))
        >>> for split, line in (("train", "0000/0000_000_01_0303morning_0015_0.jpg 0"), ("val", ""),
        ...                     ("query", "0007/0007_004_14_0303noon_0602_1.jpg 7"),
        ...                     ("gallery", "0007/0007_004_14_0303noon_0602_1.jpg 7")):
        ...     _ = (root / f"list_{split}.txt").write_text(line + "\\n")
        >>> m = read_msmt17(root.parent)
        >>> m.layout, m.train.camids.tolist(), m.query.pids.tolist(), m.query.camids.tolist()
        ('msmt17', [0], [7], [13])
        >>> m.train, m.train.relabeled().pids.tolist()
        (ImageSet(n=1, paths, identities=1, cameras=1, distractors=0), [0])
    """
    base, train_folder, test_folder = _msmt17_root(Path(root))
    allow_outside_root = check_flag(allow_outside_root, "allow_outside_root")
    sets = {name: _read_msmt17_list(base / f"list_{name}.txt", base / (test_folder if name in ("query", "gallery")
                                                                         else train_folder), load_images, allow_outside_root)
            for name in ("train", "val", "query", "gallery")}
    train = sets["train"] if keep_val else _concatenate(sets["train"], sets["val"])
    data = Market1501(train, sets["query"], sets["gallery"], root=base, layout="msmt17")
    if keep_val:
        data.val = sets["val"]
    return data


def _concatenate(a: ImageSet, b: ImageSet) -> ImageSet:
    if len(b) == 0:
        return a
    if (a.images is None) != (b.images is None):
        raise ValueError("cannot merge an image set held in memory with one held as paths")
    if a._pid_roles() != b._pid_roles():
        raise ValueError(f"cannot merge image sets whose pids have different roles: {a._pid_roles()} and {b._pid_roles()}")
    joined = {"pids": np.concatenate([a.pids, b.pids]), "camids": np.concatenate([a.camids, b.camids]),
              "frame_index": np.concatenate([a.frame_index, b.frame_index]), **a._pid_roles()}
    if a.images is not None:
        return ImageSet(images=np.concatenate([a.images, b.images]), **joined)
    return ImageSet(paths=list(a.paths) + list(b.paths), **joined)


DATASET_LAYOUTS = ("market1501", "dukemtmc", "cuhk03", "msmt17")


def read_dataset(root: str | os.PathLike, load_images: bool = False, cuhk03_subset: str = "labeled") -> Market1501:
    """Reads whichever of Market-1501, DukeMTMC-reID, CUHK03-NP or MSMT17 (V1/V2) ``root`` holds
    (``data.layout`` says which); an error names the layouts it knows when none matches.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import ImageSet, read_dataset
        >>> s = ImageSet(images=np.zeros((1, 8, 4, 3), np.uint8), pids=[3], camids=[1])
        >>> root = tempfile.mkdtemp()
        >>> for split in ("bounding_box_train", "query", "bounding_box_test"):
        ...     _ = s.write_market1501(os.path.join(root, split))
        >>> read_dataset(root).layout
        'market1501'
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    try:
        _msmt17_root(base)  # detection only: a missing image inside MSMT17 must not look like "not MSMT17"
        is_msmt17 = True
    except FileNotFoundError:
        is_msmt17 = False
    if is_msmt17:
        return read_msmt17(base, load_images)
    if any((d / "labeled").is_dir() and (d / "detected").is_dir() for d in (base, base / "cuhk03-np")):
        return read_cuhk03(base, cuhk03_subset, load_images)
    if base.name.lower().startswith("dukemtmc") or (base / "DukeMTMC-reID").is_dir():
        return read_dukemtmc(base, load_images)
    try:
        return read_market1501(base, load_images)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{root} holds none of the dataset layouts known here: Market-1501 / DukeMTMC-reID (bounding_box_train, "
            "query, bounding_box_test), CUHK03-NP (labeled/ and detected/, each Market-style), MSMT17 V1 (train/, "
            "test/, list_*.txt) or V2 (mask_train_v2/, mask_test_v2/, list_*.txt)") from None


def _sorted_names(names: list[str]) -> list[str]:
    """Numeric names in numeric order, then the others in string order."""
    return sorted(names, key=lambda n: (0, int(n), n) if is_digits(n) else (1, 0, n))


def _camera_of(cameras: Mapping[str, int] | Callable[[str], int] | None, video: int, name: str) -> int:
    """The camera of video folder ``name`` (video ``video``) as :func:`read_tracklet_folders`'
    ``cameras`` says."""
    if cameras is None:
        return video
    if callable(cameras):
        return check_int(cameras(name), f"cameras({name!r})")
    check_type(cameras, "cameras", (Mapping,))
    if name not in cameras:
        raise ValueError(f"cameras has no entry for video folder {name!r}")
    return check_int(cameras[name], f"cameras[{name!r}]")


def read_tracklet_folders(root: str | os.PathLike,
                          cameras: Mapping[str, int] | Callable[[str], int] | None = None) -> Tracklets:
    """Reads tracker output laid out as ``root/<video>/<track>/<frame>.jpg|png``.

    Videos are numbered 0.. in sorted folder-name order (numeric names numerically), tracks in
    sorted order inside each video, frames by the integer in their file stem. The result holds
    image paths (read lazily) and identity -1 (unknown).

    Args:
        root: the folder of video folders.
        cameras: the camera of each video, as a mapping or a function of the video folder name;
            by default each video is its own camera (camera = video id).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: an empty or odd layout (no videos, files where folders are expected, an empty
            track, a frame name whose stem is not an integer, two frames with one number, a
            non-image file), naming the offending path.
        TypeError: ``cameras`` is neither a mapping nor a function, or gives a camera that is not an
            integer.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import read_tracklet_folders, write_image
        >>> root = tempfile.mkdtemp()
        >>> for video, track, frame in [("cam1", "0", 3), ("cam1", "0", 4), ("cam1", "7", 4)]:
        ...     os.makedirs(os.path.join(root, video, track), exist_ok=True)
        ...     write_image(os.path.join(root, video, track, f"{frame:06d}.png"), np.zeros((8, 4, 3), np.uint8))
        >>> t = read_tracklet_folders(root)
        >>> t.offsets.tolist(), t.frame_index.tolist()
        ([0, 2, 3], [3, 4, 4])
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"tracklet root {root} does not exist or is not a folder")
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    stray = [p.name for p in entries if not p.is_dir()]
    if stray:
        raise ValueError(f"{root}: expected only video folders (<video>/<track>/<frame>.jpg), found files {stray[:5]}")
    video_names = _sorted_names([p.name for p in entries])
    if not video_names:
        raise ValueError(f"{root} holds no video folders (expected <video>/<track>/<frame>.jpg)")
    paths: list[str] = []
    frame_index: list[int] = []
    offsets = [0]
    video_ids: list[int] = []
    camera_ids: list[int] = []
    for v, vname in enumerate(video_names):
        vdir = root / vname
        cam = _camera_of(cameras, v, vname)
        tracks = [p for p in vdir.iterdir() if not p.name.startswith(".")]
        stray = [p.name for p in tracks if not p.is_dir()]
        if stray:
            raise ValueError(f"{vdir}: expected only track folders (<track>/<frame>.jpg), found files {stray[:5]}")
        if not tracks:
            raise ValueError(f"video folder {vdir} holds no track folders")
        for tname in _sorted_names([p.name for p in tracks]):
            tdir = vdir / tname
            frames = []
            for f in tdir.iterdir():
                if f.name.startswith("."):
                    continue
                if not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS:
                    raise ValueError(f"{f}: expected only image files <frame>.jpg|.png in track folders")
                frames.append((parse_int(f.stem, f"{f}: the file stem (the integer frame number, e.g. 000123.jpg)", 0), f))
            if not frames:
                raise ValueError(f"track folder {tdir} holds no frames")
            frames.sort()
            nums = [n for n, _ in frames]
            if len(set(nums)) != len(nums):
                dup = [n for n, c in Counter(nums).items() if c > 1][0]
                raise ValueError(f"track folder {tdir} has two files for frame {dup}")
            paths.extend(str(p) for _, p in frames)
            frame_index.extend(nums)
            offsets.append(len(paths))
            video_ids.append(v)
            camera_ids.append(cam)
    return Tracklets(paths, np.array(offsets, np.int64), np.array(video_ids, np.int64),
                     np.array(camera_ids, np.int64), np.array(frame_index, np.int64))
