"""The three levels chained: :func:`denoise` on plain arrays, :func:`denoise_tracklets` on a
``cion_fast.data.Tracklets``."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cion_fast import _xp
from cion_fast._checks import check_flag
from cion_fast._progress import progress_bar
from cion_fast.ops import as_sorted_video_ids
from cion_fast.denoise.config import DenoiseConfig
from cion_fast.denoise.levels import (_center_videos, _centred_dtype, _check_features, _check_frame_index, _check_offsets,
                                      _level1, _level2, _level3)
from cion_fast.denoise.quality import Quality, quality

LEVEL_NAMES = ("level 1", "level 2", "level 3")


@dataclass
class DenoiseResult:
    """Labels after each level, and what each level did.

    Attributes:
        levels: three int64 [M] label arrays (after level 1, 2, 3) in the library and on the
            device of the features that were denoised; -1 = dropped frame; labels renumbered
            0..K-1 at every level.
        summary: one dict per level: ``images`` kept, ``identities``, ``seconds`` and the level's
            own counts (frames pooled, reallocated, merges refused by cannot-link, links cut by
            the guard, ...).
        tracklet_labels: int64 [M] the input: tracklet index of every frame (level "0"), where
            ``levels`` are.
        config: the :class:`DenoiseConfig` used (with ``thresholds="auto"``: the chosen values).
        calibration: with ``thresholds="auto"``, the report of
            :func:`~cion_fast.denoise.auto.auto_thresholds` (chosen thresholds, the similarity
            distributions they came from, the rules); None otherwise.
        estimate: the label-free quality estimate of the final labels
            (:func:`cion_fast.denoise.auto.label_free_estimate`: cannot-link violations inside
            identities, estimated false-merge rate, separation), JSON-ready; None when it could
            not be computed.

    Example:
        >>> features = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)   # 3 tracklets, 3 people
        >>> result = denoise(features, np.arange(0, 13, 4), np.arange(3), np.tile(np.arange(4), 3))
        >>> result.labels.tolist(), [s["identities"] for s in result.summary]
        ([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], [3, 3, 3])
    """

    levels: list[np.ndarray]
    summary: list[dict]
    tracklet_labels: np.ndarray
    config: DenoiseConfig = field(default_factory=DenoiseConfig)
    calibration: dict | None = None
    estimate: dict | None = None

    @property
    def labels(self) -> np.ndarray:
        """int64 [M] the final (level-3) pseudo-identity of every frame, -1 = dropped."""
        return self.levels[-1]

    def quality(self, true_identity: Any, video: Any = None) -> dict[str, Quality]:
        """Ground-truth quality of the input tracklets and of every level, in order.

        Args:
            true_identity: int64 [M] true identity per frame (-1 = unknown).
            video: optional int64 [M] video id per frame (for the cross-video column).

        Returns:
            ``{"tracklets": Quality, "level 1": ..., "level 2": ..., "level 3": ...}``.

        Example:
            >>> features = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
            >>> result = denoise(features, np.arange(0, 13, 4), np.arange(3), np.tile(np.arange(4), 3))
            >>> result.quality(np.repeat([5, 6, 7], 4))["level 3"].bcubed_f
            1.0
        """
        rows = {"tracklets": quality(self.tracklet_labels, true_identity, video)}
        for name, labels in zip(LEVEL_NAMES, self.levels):
            rows[name] = quality(labels, true_identity, video)
        return rows


def denoise(
    features: Any,
    offsets: Any,
    video_ids: Any,
    frame_index: Any,
    config: DenoiseConfig = DenoiseConfig(),
    progress: bool = False,
    scratch: str | os.PathLike | None = None,
) -> DenoiseResult:
    """CION's progressive denoising: tracklets -> identities consistent across videos.

    With ``config.center_videos``, :func:`~cion_fast.denoise.center_videos` first removes each
    video's common component; then :func:`~cion_fast.denoise.level1` (single tracklet),
    :func:`~cion_fast.denoise.level2` (short range, one video) and
    :func:`~cion_fast.denoise.level3` (long range, across videos) run in turn.

    Args:
        features: float16/bfloat16/float32/float64 [M, D] frame features: numpy, torch (CPU or
            CUDA) or cupy. They stay where they are: a CUDA tensor or cupy array is centred and
            denoised on its GPU (the kernels run there; index arrays and scores cross to the
            host, never the features; cupy needs torch installed).
        offsets: int64 [N+1] tracklet t is frames ``offsets[t]:offsets[t+1]``.
        video_ids: int64 [N] video of each tracklet, non-decreasing (tracklets grouped by video, videos
            in time order), as :func:`~cion_fast.ops.sliding_range_link` requires too.
        frame_index: int64 [M] frame index of each frame within its video, >= 0.
        config: thresholds and windows (:class:`DenoiseConfig`).
        progress: a progress bar over the levels (:mod:`cion_fast._progress`).
        scratch: a directory for the video-centred copy of host features (numpy or a torch CPU
            tensor), memory-mapped and removed at the end (None: in memory). With memory-mapped
            input features, memory then holds only the levels' working sets (LUPerson-NL: 5 GB of
            disk instead of 5 GB of RAM). GPU features are centred on their GPU: ``scratch`` is
            then a ValueError.

    Returns:
        :class:`DenoiseResult` (``.levels``: three int64 [M] label arrays in the features'
        library and device, ``.summary``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> people = rng.normal(size=(3, 16))
        >>> identity = np.repeat([0, 0, 1, 2, 1], 4)            # 5 tracklets of 4 frames
        >>> features = people[identity] + 0.1 * rng.normal(size=(20, 16))
        >>> result = denoise(features, np.arange(0, 21, 4), np.array([0, 0, 0, 1, 1]),
        ...                  np.tile(np.arange(4), 5) + np.repeat([0, 10, 0, 0, 10], 4))
        >>> [int(labels.max()) + 1 for labels in result.levels]
        [5, 4, 3]
        >>> bool((result.labels[identity == 1] == result.labels[8]).all())
        True
    """
    caller_features = features
    features = _check_features(features)  # the one validation of the [M, D] matrix
    num_frames = features.shape[0]
    offsets = _check_offsets(offsets, num_frames)
    video_ids = as_sorted_video_ids(video_ids, offsets.shape[0] - 1, "tracklets")
    frame_index = _check_frame_index(frame_index, num_frames)
    if not isinstance(config, DenoiseConfig):
        raise TypeError(f"config must be a DenoiseConfig, got {type(config).__name__}")
    progress = check_flag(progress, "progress")
    if scratch is not None and _xp.is_torch(features) and features.device.type != "cpu":
        raise ValueError("scratch: a scratch file holds host features; GPU features are centred on their GPU")
    scratch_file = None
    try:
        if config.center_videos:
            out = None
            if scratch is not None:
                handle, scratch_file = tempfile.mkstemp(prefix="centred-", suffix=".npy", dir=scratch)
                os.close(handle)
                mapped = np.lib.format.open_memmap(scratch_file, mode="w+", dtype=_centred_dtype(features), shape=tuple(features.shape))
                _reserve(scratch_file)
                out = _xp.host_view(features, mapped)
            features = _center_videos(features, offsets, video_ids, out=out)
        result = _levels(features, offsets, video_ids, frame_index, config, progress)
        result.levels = [_xp.to_caller(labels, caller_features) for labels in result.levels]
        result.tracklet_labels = _xp.to_caller(result.tracklet_labels, caller_features)
        return result
    finally:
        if scratch_file is not None:  # (POSIX keeps a mapped file's pages until the mapping goes)
            os.unlink(scratch_file)


def _reserve(path: str) -> None:
    """Allocates a (sparse) memory-mapped file's blocks now: on a full disk, writing its pages
    later would kill the process with SIGBUS; here it is an OSError naming the scratch space."""
    size = os.path.getsize(path)
    handle = os.open(path, os.O_RDWR)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(handle, 0, size)
    except OSError as error:
        raise OSError(error.errno, f"scratch: no room for the {size / 2**30:.2f} GiB centred copy in "
                                   f"{os.path.dirname(path)} ({error.strerror})") from None
    finally:
        os.close(handle)


def _levels(features: Any, offsets: np.ndarray, video_ids: np.ndarray, frame_index: np.ndarray, config: DenoiseConfig,
            progress: bool, estimate: bool = True) -> DenoiseResult:
    """Thresholds (when automatic), then the three levels on checked, centred (dense) features,
    then (``estimate``) the label-free estimate; host labels."""
    from cion_fast.denoise import auto

    calibration = cross_video = None
    if config.thresholds == "auto":
        samples = auto.similarity_distributions(features, offsets, video_ids, frame_index, config=config)
        config, calibration = auto.choose_thresholds(samples, video_ids, config)
        cross_video = samples["cross_video"]
    frame_video = np.repeat(video_ids, np.diff(offsets))
    tracklet_labels = np.repeat(np.arange(offsets.shape[0] - 1, dtype=np.int64), np.diff(offsets))

    steps = (
        lambda _: _level1(features, offsets, config),
        lambda labels: _level2(features, frame_video, frame_index, labels, config),
        # level 3's constraints: the frames level 1 kept in their tracklet (levels[0])
        lambda labels: _level3(features, frame_video, frame_index, labels, config, anchored=levels[0] >= 0),
    )
    levels, summary = [], []
    labels = tracklet_labels
    with progress_bar(len(steps), "denoise", "level", enabled=progress) as bar:
        for name, step in zip(LEVEL_NAMES, steps):
            bar.set_postfix_str(name)
            start = time.perf_counter()
            labels, info = step(labels)
            levels.append(labels)
            summary.append({"level": name, **info, "seconds": time.perf_counter() - start})
            bar.update(1)
    result = DenoiseResult(levels=levels, summary=summary, tracklet_labels=tracklet_labels, config=config, calibration=calibration)
    if estimate:
        result.estimate = _estimate(features, result, offsets, video_ids, frame_index, cross_video)
    return result


def _estimate(features: Any, result: DenoiseResult, offsets: np.ndarray, video_ids: np.ndarray, frame_index: np.ndarray,
              cross_video: np.ndarray | None) -> dict | None:
    """The label-free estimate of ``result``'s host labels (None without cross-video candidates);
    the cross-video sample is drawn here when the thresholds were fixed (None)."""
    from cion_fast.denoise import auto

    if cross_video is None:
        cross_video = auto.cross_video_sample(features, offsets, video_ids, result.config)
    if cross_video.shape[0] == 0:
        return None
    return auto.label_free_estimate(features, result.labels, np.repeat(video_ids, np.diff(offsets)), frame_index, cross_video,
                                    auto.candidates_per_decision(video_ids, result.config)["cross_video"],
                                    anchored=result.levels[0] >= 0)


def denoise_tracklets(
    tracklets: Any,
    features: Any = None,
    config: DenoiseConfig = DenoiseConfig(),
    progress: bool = False,
    scratch: str | os.PathLike | None = None,
) -> DenoiseResult:
    """:func:`denoise` on a ``cion_fast.data.Tracklets``.

    Args:
        tracklets: a ``Tracklets`` (``offsets``, ``video``, ``frame_index`` are used).
        features: float [M, D]; defaults to ``tracklets.features``.
        config, progress, scratch: as in :func:`denoise`.

    Example:
        >>> from cion_fast.data.synth import WorldConfig, generate      # doctest: +SKIP
        >>> from cion_fast.features import stripe_histogram             # doctest: +SKIP
        >>> world = generate(WorldConfig.quick())                       # doctest: +SKIP
        >>> result = denoise_tracklets(world.tracklets, stripe_histogram(world.tracklets.frames))  # doctest: +SKIP
        >>> result.quality(world.tracklets.identity)["level 3"].bcubed_f  # doctest: +SKIP
        0.8...
    """
    if features is None:
        features = getattr(tracklets, "features", None)
        if features is None:
            raise ValueError("features: none given and tracklets.features is None; extract features first")
    return denoise(features, tracklets.offsets, tracklets.video, tracklets.frame_index, config, progress, scratch)
