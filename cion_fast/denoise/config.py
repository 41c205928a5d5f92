"""Configuration of the three denoising levels: every threshold of the method lives here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from cion_fast._checks import check_choice, check_flag, check_int, check_real, checked, validate_fields


THRESHOLD_MODES = ("fixed", "auto")


@dataclass(frozen=True)
class DenoiseConfig:
    """Thresholds and windows of CION's three denoising levels (cosine similarities in [-1, 1]).

    The paper gives no values; the fixed defaults were chosen on the default synthetic world as it
    was before its camera calibration (``camera_strength=1`` with a background per camera), with
    ground truth, for the training-free stripe descriptor and for oracle features at once: see
    ``DEFAULTS_CHOSEN`` in this module's package docstring (:mod:`cion_fast.denoise`). Thresholds
    depend on the features: ``thresholds="auto"`` chooses them from the data without ground truth
    (default world, stripe descriptor: final BCubed F 0.753 against 0.721 for the fixed values and
    0.768 for the best fixed values found with ground truth; within 0.03 of that best on 18 of 20
    worlds of docs/DENOISE_FAMILY.md), and is the right choice for any other features.

    Attributes:
        thresholds: ``"fixed"`` uses the four threshold fields as given; ``"auto"`` chooses them
            from the data, without ground truth (:func:`cion_fast.denoise.auto.auto_thresholds`:
            frames of one tracklet are positives, tracklets sharing a frame index of a video are
            certain negatives); the chosen values are in ``DenoiseResult.config`` and
            ``DenoiseResult.calibration``. Use "auto" for any features other than the stripe
            descriptor the fixed defaults were tuned on (e.g. a trained network's).
        false_merge_rate: with ``thresholds="auto"``, the expected number of wrong merges each
            decision may make (a pooled frame's reallocation, a tracklet's merges within its
            video, an identity's links within its sliding ranges): each threshold is set where
            the negatives that decision faces reach this count. Lower: purer identities, more
            of them; higher: fewer, more mixed.
        center_videos: before anything else, subtract from every (normalised) frame feature its
            video's mean feature (:func:`~cion_fast.denoise.center_videos`): removes the scene /
            camera component that two people of one video share.
        prune_threshold: level 1 (tau1). A frame whose cosine to the mean of the *other* frames
            of its tracklet is below this is removed (the worst first, then recomputed).
        min_frames: level 1 (and level 2's re-check): groups left with fewer frames are dropped.
        reallocation_threshold: level 2 (tau2). A pooled frame joins the most similar tracklet
            centroid of its video when the cosine reaches this; else it is discarded.
        merge_threshold: level 2 (tau3). Two tracklets of one video whose centroids reach this
            cosine are merged (connected components, under cannot-link).
        frame_window: level 2. A pooled frame may only join a tracklet whose kept frames span
            [first - frame_window, last + frame_window] around the pooled frame's index; None
            allows any tracklet of the same video.
        cannot_link: two groups of one video that share a frame index are different people:
            never merge them (level 2, also not through a chain) and split level-3 identities
            that would contain such a pair. Only the frames the tracker put in a group make constraints:
            a frame that level 2 reallocated may show a person whose own track runs at that
            moment (the tracker's box slid onto a neighbour), so its moment proves nothing.
        window: level 3. Number of consecutive videos in one sliding range (W).
        stride: level 3. Videos the range moves by (S, 1 <= S <= W; W/2 overlaps ranges by half).
        link_threshold: level 3 (tau4). Identities of different videos inside one range are linked
            when their centroid cosine reaches this; the chaining guard uses the same value: every
            part of a linked identity must have a cosine >= tau4 to the identity's centroid.
        mutual_k: level 3. When set, a link also needs both identities among each other's
            ``mutual_k`` most similar cross-video candidates in the range (k-reciprocal).
        min_images: after level 3, identities with fewer frames are dropped.

    Example:
        >>> config = DenoiseConfig(link_threshold=0.8)
        >>> config.window, config.link_threshold, config.prune_threshold
        (8, 0.8, 0.4)
        >>> DenoiseConfig(stride=9)
        Traceback (most recent call last):
        ...
        ValueError: stride must be in [1, window=8], got 9
    """

    # Each field's accepted values are declared once, here (cion_fast._checks.checked); the CLI's
    # help reads them too.
    thresholds: str = checked("fixed", check_choice, THRESHOLD_MODES, help="fixed: the four thresholds as given; auto: from the data")
    false_merge_rate: float = checked(0.02, check_real, 1e-9, 1.0, help="auto: expected wrong merges per decision (pooled frame, tracklet, identity)")
    center_videos: bool = checked(True, check_flag, help="first subtract each video's mean feature")
    prune_threshold: float = checked(0.4, check_real, -1.0, 1.0, help="level 1 (tau1): least cosine of a frame to the rest of its tracklet")
    min_frames: int = checked(2, check_int, 1, help="levels 1-2: groups with fewer frames are dropped")
    reallocation_threshold: float = checked(0.65, check_real, -1.0, 1.0, help="level 2 (tau2): least cosine for a pooled frame to join a tracklet")
    merge_threshold: float = checked(0.62, check_real, -1.0, 1.0, help="level 2 (tau3): least centroid cosine to merge two tracklets of a video")
    frame_window: int | None = checked(None, check_int, 0, optional=True, help="level 2: frames a pooled frame may be from a tracklet's span")
    cannot_link: bool = checked(True, check_flag, help="groups sharing a frame index of a video are never merged")
    window: int = checked(8, check_int, 1, help="level 3: videos per sliding range (W)")
    stride: int = checked(4, check_int, 1, help="level 3: videos the range moves by (S <= W)")
    link_threshold: float = checked(0.45, check_real, -1.0, 1.0, help="level 3 (tau4): least centroid cosine to link identities")
    mutual_k: int | None = checked(None, check_int, 1, optional=True, help="level 3: links also need mutual top-k")
    min_images: int = checked(4, check_int, 1, help="identities with fewer frames are dropped at the end")

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.stride > self.window:
            raise ValueError(f"stride must be in [1, window={self.window}], got {self.stride}")

    def as_dict(self) -> dict[str, Any]:
        """The configuration as a plain dict (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DenoiseConfig":
        """Builds a config from a dict such as :meth:`as_dict` returns (unknown keys: ValueError).

        Example:
            >>> DenoiseConfig.from_dict({"window": 4, "stride": 2}).stride
            2
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DenoiseConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)
