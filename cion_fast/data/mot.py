"""Tracker output in MOTChallenge text (ByteTrack, BoT-SORT, StrongSORT, FairMOT, ...) -> a tracklet
directory.

The text file has one row per box, ``frame,id,x,y,w,h[,conf,...]``: 1-based frame number, track
id, top-left corner and size in pixels, then the confidence (1 when absent); further columns are
ignored. The frames are a folder of images numbered as MOTChallenge numbers them (``img1/000001.jpg``
is frame 1), or a video file (frame 1 is its first decoded frame; needs PyAV, the ``video`` extra).

:func:`tracklets_from_mot` reads the frames one at a time, in order, cuts every kept box (edges
rounded to the nearest pixel, clipped at the frame border), resizes it and writes it straight into
the memory-mapped ``frames.npy`` of the new directory, so neither the video nor the crops are held
in memory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from cion_fast._checks import check_flag, check_int, check_real, check_type, parse_int
from cion_fast._io import atomic_directory, text_lines
from cion_fast._progress import progress_bar
from cion_fast.data._io import IMAGE_EXTENSIONS, read_image, resize_image
from cion_fast.data.tracklets import Tracklets

__all__ = ["tracklets_from_mot"]

_ROW = "frame,id,x,y,w,h[,conf,...]"


def _parse_row(fields: list[str], where: str, line: str) -> tuple:
    """(frame, track, x, y, w, h, conf) of one MOT row, or a ValueError naming ``where``."""
    if len(fields) < 6:
        raise ValueError(f"{where}: expected '{_ROW}' (at least 6 comma-separated numbers), got {line[:80]!r}")
    try:
        values = [float(v) for v in fields[:7]]
    except ValueError:
        raise ValueError(f"{where}: expected numbers in '{_ROW}', got {line[:80]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: expected finite numbers in '{_ROW}', got {line[:80]!r}")
    frame, track, x, y, w, h = values[:6]
    if frame != int(frame) or frame < 1:
        raise ValueError(f"{where}: the frame number must be an integer >= 1 (MOTChallenge counts from 1), got {fields[0].strip()!r}")
    if track != int(track) or track < 0:
        raise ValueError(f"{where}: the track id must be an integer >= 0 (a detection file's -1 is no track), "
                         f"got {fields[1].strip()!r}")
    if w <= 0 or h <= 0:
        raise ValueError(f"{where}: the box must have a positive size, got w={w:g}, h={h:g}")
    return int(frame), int(track), x, y, w, h, values[6] if len(values) > 6 else 1.0


def _read_rows(path: Path) -> dict:
    """The rows of a MOT file as arrays: frame, track, line (int64 [n]), box float64 [n, 4]
    (x, y, w, h), conf float64 [n]."""
    rows, lines, seen = [], [], {}
    for number, line in text_lines(path, "MOT tracks file"):
        if not line.strip():
            continue
        row = _parse_row(line.split(","), f"{path}:{number}", line)
        if row[:2] in seen:
            raise ValueError(f"{path}:{number}: track {row[1]} has a second box in frame {row[0]} (first on line {seen[row[:2]]})")
        seen[row[:2]] = number
        rows.append(row)
        lines.append(number)
    if not rows:
        raise ValueError(f"{path} holds no track rows (expected '{_ROW}' lines)")
    table = np.array(rows, dtype=np.float64)
    return {"frame": table[:, 0].astype(np.int64), "track": table[:, 1].astype(np.int64), "box": table[:, 2:6],
            "conf": table[:, 6], "line": np.array(lines, np.int64)}


def _folder_frames(folder: Path) -> tuple[tuple[int, int], Callable]:
    """(H, W) of the frame folder's first image and ``read(needed, where)``, which yields
    (number, uint8 [H, W, 3]) for the sorted frame numbers ``needed``."""
    files: dict[int, Path] = {}
    for f in folder.iterdir():
        if f.name.startswith(".") or not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        number = parse_int(f.stem, f"{f}: the file stem (the frame number, e.g. 000001.jpg)", 0)
        if number in files:
            raise ValueError(f"{folder}: {files[number].name} and {f.name} are both frame {number}")
        files[number] = f
    if not files:
        raise ValueError(f"frame folder {folder} holds no .jpg/.png images")
    size = read_image(files[min(files)]).shape[:2]  # read, not just its header: a damaged file is a ValueError

    def read(needed: np.ndarray, where: Callable[[int], str]) -> Iterator[tuple[int, np.ndarray]]:
        missing = [int(k) for k in needed if int(k) not in files]
        if missing:
            raise ValueError(f"{where(missing[0])}: frame {missing[0]} is not in {folder} (no image numbered {missing[0]}; "
                             f"it holds frames {min(files)}..{max(files)})")
        for k in needed:
            image = read_image(files[int(k)])
            if image.shape[:2] != size:
                raise ValueError(f"{files[int(k)]} is {image.shape[1]}x{image.shape[0]} pixels, the first frame of "
                                 f"{folder} {size[1]}x{size[0]}: a sequence has one frame size")
            yield int(k), image

    return size, read


def _video_frames(path: Path) -> tuple[tuple[int, int], Callable]:
    """As :func:`_folder_frames`, for a video file decoded by PyAV (frame 1 = the first frame)."""
    try:
        import av
    except ImportError:
        raise ImportError(f"reading the frames of video {path} needs PyAV: pip install 'cion_fast[video]' (or av); "
                          "or pass a folder of frames") from None
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise ValueError(f"cannot read video {path}: {error}") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} holds no video stream")
    stream = container.streams.video[0]
    size = (stream.codec_context.height, stream.codec_context.width)

    def read(needed: np.ndarray, where: Callable[[int], str]) -> Iterator[tuple[int, np.ndarray]]:
        wanted, count = iter(needed.tolist()), 0
        k = next(wanted)
        with container:
            frames = container.decode(stream)
            while True:
                try:  # a damaged stretch of the file fails in the decoder, mid-video
                    frame = next(frames, None)
                except av.error.FFmpegError as error:
                    raise ValueError(f"{where(k)}: video {path} cannot be decoded after frame {count}: {error}") from None
                if frame is None:
                    break
                count += 1
                if count == k:
                    image = frame.to_ndarray(format="rgb24")
                    if image.shape[:2] != size:
                        raise ValueError(f"frame {k} of video {path} is {image.shape[1]}x{image.shape[0]} pixels, its stream "
                                         f"says {size[1]}x{size[0]}: a sequence has one frame size")
                    yield k, image
                    k = next(wanted, None)
                    if k is None:
                        return
        raise ValueError(f"{where(k)}: frame {k} is beyond the end of video {path} ({count} frames)")

    return size, read


def _select(rows: dict, frame_size: tuple[int, int], min_height: int, min_length: int,
            min_confidence: float | None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The kept rows in (track, frame) order, int64 [m], their clipped boxes int64 [m, 4]
    (x0, y0, x1, y1), and how many boxes each filter dropped, in the order they apply
    (``outside``: nothing of the box inside the frame, then ``min_height``, ``min_confidence``,
    ``min_length``)."""
    height, width = frame_size
    x, y, w, h = rows["box"].T
    edges = np.rint(np.stack([x, y, x + w, y + h], axis=1))
    box = np.clip(edges, 0, [width, height, width, height]).astype(np.int64)
    visible_height = box[:, 3] - box[:, 1]
    stages = {"outside": (box[:, 2] > box[:, 0]) & (visible_height > 0), "min_height": visible_height >= min_height,
              "min_confidence": rows["conf"] >= min_confidence if min_confidence is not None else True}
    keep, dropped = np.ones(len(box), bool), {}
    for name, passes in stages.items():
        dropped[name] = int((keep & ~passes).sum())
        keep &= passes
    tracks, counts = np.unique(rows["track"][keep], return_counts=True)
    long_enough = np.isin(rows["track"], tracks[counts >= min_length])
    dropped["min_length"] = int((keep & ~long_enough).sum())
    kept = np.flatnonzero(keep & long_enough)
    kept = kept[np.lexsort((rows["frame"][kept], rows["track"][kept]))]
    return kept, box[kept], dropped


def _filter_summary(total: int, kept: int, dropped: dict[str, int]) -> str:
    """One line: boxes kept and what each filter dropped.

    Example:
        >>> _filter_summary(10, 6, {"outside": 1, "min_height": 2, "min_confidence": 0, "min_length": 1})
        'kept 6 of 10 boxes; dropped 1 outside the frame, 2 below min_height, 0 below min_confidence, 1 in tracks shorter than min_length'
    """
    what = {"outside": "outside the frame", "min_height": "below min_height", "min_confidence": "below min_confidence",
            "min_length": "in tracks shorter than min_length"}
    return f"kept {kept} of {total} boxes; dropped " + ", ".join(f"{dropped[k]} {what[k]}" for k in what)


def _crop_all(crops: np.ndarray, frames: np.ndarray, boxes: np.ndarray, lines: np.ndarray, read: Callable,
              where_file: Path, progress: bool) -> None:
    """Fills ``crops[i]`` with box ``i`` of frame ``frames[i]``, reading each needed frame once, in order."""
    by_frame = np.argsort(frames, kind="stable")
    needed, first = np.unique(frames[by_frame], return_index=True)
    bounds = np.append(first, len(by_frame))
    first_line = dict(zip(needed.tolist(), np.minimum.reduceat(lines[by_frame], first).tolist()))
    size = crops.shape[1:3]
    with progress_bar(len(needed), "cropping", "frame", enabled=progress) as bar:
        for j, (k, image) in enumerate(read(needed, lambda k: f"{where_file}:{first_line[k]}")):
            for i in by_frame[bounds[j]:bounds[j + 1]]:
                x0, y0, x1, y1 = boxes[i]
                crops[i] = resize_image(np.ascontiguousarray(image[y0:y1, x0:x1]), size)
            bar.update(1)


def tracklets_from_mot(tracks_path: str | os.PathLike, frames: str | os.PathLike, out_dir: str | os.PathLike,
                       size: tuple[int, int] = (256, 128), min_height: int = 0, min_length: int = 1,
                       min_confidence: float | None = None, video: int = 0, camera: int = 0, overwrite: bool = False,
                       progress: bool = True, log: Callable[[str], None] | None = None) -> Tracklets:
    """Crops the boxes of a MOTChallenge tracks file (see the module docstring) out of their frames
    and writes them as a tracklet directory (:meth:`Tracklets.save`'s format, written atomically).

    One tracklet per track id (ascending), its frames in frame order (gaps allowed); ``frame_index``
    holds the MOT frame numbers (1-based), ``identity`` is -1 (unknown). Boxes are clipped at the
    frame border; a box entirely outside the frame is dropped (trackers extrapolate boxes past the
    border). The filters apply in order: visible (clipped) height >= ``min_height`` pixels and
    confidence >= ``min_confidence``, then tracks with fewer than ``min_length`` boxes left are dropped.

    Args:
        tracks_path: the MOT text file.
        frames: a folder of frame images (``000001.jpg`` = frame 1) or a video file (needs PyAV).
        out_dir: the tracklet directory to write.
        size: (H, W) of the crops, each >= 1; every crop is resized (PIL bilinear) to it.
        min_height: minimum visible box height in pixels (>= 0).
        min_length: minimum boxes per track after the box filters (>= 1).
        min_confidence: minimum confidence (column 7); None keeps every box.
        video, camera: the video and camera (>= 0) of every tracklet.
        overwrite: replace an existing ``out_dir``.
        progress: show a progress bar over the frames read.
        log: None, or where one line goes saying how many boxes were kept and how many each
            filter dropped (``cion-fast tracklets`` prints it).

    Returns:
        The written :class:`Tracklets` (memory-mapped uint8 [M, H, W, 3] frames).

    Raises:
        ValueError: a row that is not numbers, a frame number < 1 or a track id < 0, a box of
            non-positive size, a second box of a track in one frame, a frame that a kept box needs
            missing or past the end of the video (each naming the file and line); frames of
            different sizes; a frame that is not a readable image; no box left after the filters.
        FileNotFoundError: ``tracks_path`` or ``frames`` does not exist.
        ImportError: ``frames`` is a video and PyAV is not installed.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import tracklets_from_mot, write_image
        >>> root = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(root, "img1"))
        >>> for k in (1, 2, 3):
        ...     write_image(os.path.join(root, "img1", f"{k:06d}.png"), np.full((40, 60, 3), 10 * k, np.uint8))
        >>> _ = open(os.path.join(root, "tracks.txt"), "w").write("1,5,10,4,8,16,0.9\\n2,5,12,4,8,16,0.8\\n3,7,0,0,4,4,0.9\\n")
        >>> t = tracklets_from_mot(os.path.join(root, "tracks.txt"), os.path.join(root, "img1"),
        ...                        os.path.join(root, "out"), size=(16, 8), min_height=8, progress=False)
        >>> t.offsets.tolist(), t.frame_index.tolist(), t.frames.shape, int(t.frames[1, 0, 0, 0])
        ([0, 2], [1, 2], (2, 16, 8, 3), 20)
    """
    tracks_path, frames = Path(tracks_path), Path(frames)
    check_type(size, "size", (tuple, list))
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {size!r}")
    size = (check_int(size[0], "size[0]", 1), check_int(size[1], "size[1]", 1))
    min_height, min_length = check_int(min_height, "min_height", 0), check_int(min_length, "min_length", 1)
    min_confidence = None if min_confidence is None else check_real(min_confidence, "min_confidence")
    video, camera = check_int(video, "video", 0), check_int(camera, "camera", 0)
    overwrite, progress = check_flag(overwrite, "overwrite"), check_flag(progress, "progress")
    if not tracks_path.is_file():
        raise FileNotFoundError(f"MOT tracks file {tracks_path} does not exist")
    if not frames.exists():
        raise FileNotFoundError(f"frames {frames} do not exist (expected a folder of images or a video file)")
    rows = _read_rows(tracks_path)
    frame_size, read = _folder_frames(frames) if frames.is_dir() else _video_frames(frames)
    kept, boxes, dropped = _select(rows, frame_size, min_height, min_length, min_confidence)
    summary = _filter_summary(len(rows["track"]), len(kept), dropped)
    if not len(kept):
        raise ValueError(f"{tracks_path}: no box is left after the filters (min_height={min_height}, "
                         f"min_length={min_length}, min_confidence={min_confidence}; frames {frame_size[1]}x{frame_size[0]}): "
                         + summary.split("; ", 1)[1])
    if log is not None:
        log(summary)
    track, frame_index = rows["track"][kept], rows["frame"][kept]
    starts = np.flatnonzero(np.r_[True, track[1:] != track[:-1]])
    offsets = np.append(starts, len(kept)).astype(np.int64)
    n = len(starts)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        crops = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.uint8, shape=(len(kept), *size, 3))
        _crop_all(crops, frame_index, boxes, rows["line"][kept], read, tracks_path, progress)
        crops.flush()
        written = Tracklets(crops, offsets, np.full(n, video), np.full(n, camera), frame_index)
        np.savez(tmp / "index.npz", **written._index_arrays("array"))
        del crops, written  # close the writable map first: some systems cannot rename a directory with a file mapped
    return Tracklets.load(out_dir)
